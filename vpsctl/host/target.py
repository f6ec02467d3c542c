"""Where and how to reach a host over SSH: a plain record, importable without pyinfra or
paramiko (a sandbox record makes one; :mod:`vpsctl.host.remote` connects to it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Target:
    """Where and how to reach a host over SSH; ``known_hosts`` (when set) holds the only
    host keys the connection accepts."""

    name: str
    address: str
    port: int
    user: str
    key: Path
    known_hosts: Path | None = None
