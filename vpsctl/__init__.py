"""vpsctl: declarative infrastructure for a small software studio on one VPS."""

__version__ = "0.1.0"
