"""Memory sizes and durations, parsed the way Docker and compose parse them."""

from __future__ import annotations

import re
from decimal import Decimal

# Docker's RAMInBytes: every unit is binary (``m`` is MiB), an optional ``i`` and ``b``.
# Matched with fullmatch, never `^…$`: Python's `$` also matches before a final newline.
# At most 15 digits: more is no memory size, and float() of 400 nines is infinity.
_SIZE = re.compile(r"(\d{1,15}(?:\.\d{1,15})?)\s*([kmgt]?)(i?b)?", re.IGNORECASE)
_FACTORS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}

SIZE_HINT = "a size like 256m, 2g or 1536MiB (units are binary, as in Docker)"


def parse_size(text: str | int) -> int:
    """``"256m"`` → 268435456. Raises ``ValueError`` with what would be valid."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"expected {SIZE_HINT}")
        return text
    if not isinstance(text, str):
        raise ValueError(f"expected {SIZE_HINT}")  # noqa: TRY004 - pydantic wants ValueError
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not {SIZE_HINT}")
    number, unit, _ = match.groups()
    return int(Decimal(number) * _FACTORS[unit.lower()])


def format_size(n: int) -> str:
    """Bytes as compose writes them: the largest binary unit that divides evenly."""
    for unit in ("g", "m", "k"):
        factor = _FACTORS[unit]
        if n and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


def human_size(n: int) -> str:
    """Bytes for people: ``1.5 GiB``, ``256 MiB``, ``12.4 KiB``, ``310 B``."""
    if n >= 1024**3:
        return f"{n / 1024**3:.2f} GiB".replace(".00 ", " ")
    if n >= 1024**2:
        return f"{n / 1024**2:.0f} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} B"


_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ns|us|ms|s|m|h))+")


def check_duration(text: str) -> str:
    """Validate a compose duration such as ``10s`` or ``1m30s``; return it unchanged."""
    if not _DURATION.fullmatch(text):
        raise ValueError(f"{text!r} is not a duration like 10s, 1m30s or 500ms")
    return text
