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


# Docker's daemon refuses a container memory limit under 6 MiB ("Minimum memory limit
# allowed is 6MB", moby's linuxMinMemory); compose passes a smaller one through and the
# refusal comes mid-apply. Refused here instead.
MIN_MEM_LIMIT = 6 * 1024**2


def parse_memory(text: str | int, *, minimum: int = 0, zero_ok: bool = False) -> int:
    """A memory size that must carry its unit: ``256`` is 256 BYTES to Docker, never what
    anyone means, so a bare number is refused (``0`` too unless ``zero_ok``: ``swap: 0`` is
    "none"). ``minimum`` is the smallest size accepted. Raises ``ValueError`` saying what
    would be valid."""
    size = parse_size(text)
    bare = isinstance(text, int) or (isinstance(text, str) and text.strip().isdigit())
    if zero_ok and size == 0:
        return 0
    if bare:
        shown = str(text).strip()
        raise ValueError(
            f"{shown} has no unit, and a bare number is bytes (as Docker reads it): "
            f"write {shown}m (MiB) or {shown}g (GiB)" + (", or 0 for none" if zero_ok else "")
        )
    if size < minimum:
        raise ValueError(
            f"{text!s} is below {format_size(minimum)}, the smallest memory limit Docker "
            f"accepts; write {format_size(minimum)} or more (e.g. 64m)"
        )
    return size


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
