"""The time zone names a spec may use: the IANA names of this machine's tz database, as
:func:`zoneinfo.available_timezones` lists them.

Listing them all opens every one of the database's ~600 files (25 ms, on every load of a
spec); :func:`is_zone` opens the one file a name points to and applies the same rules, so
it answers the same; the whole list is read only for an unknown name's suggestions.
"""

from __future__ import annotations

import importlib.util
import zoneinfo
from functools import cache
from pathlib import Path


@cache
def names() -> frozenset[str]:
    """Every available time zone name."""
    return frozenset(zoneinfo.available_timezones())


def is_zone(zone: str) -> bool:
    """``zone in names()``, found the way :func:`zoneinfo.available_timezones` finds names:
    a file that starts with ``TZif`` under a TZPATH root, reached without a linked
    directory (``os.walk`` does not follow one), not under ``right/`` or ``posix/``, not
    ``posixrules``; or a name of the tzdata package's list, when it is installed."""
    parts = zone.split("/")
    if zone == "posixrules" or parts[0] in ("right", "posix") or {"", ".", ".."} & set(parts):
        return False
    for root in zoneinfo.TZPATH:
        folder = Path(root)
        if any((folder / "/".join(parts[:n])).is_symlink() for n in range(1, len(parts))):
            continue
        try:
            with (folder / zone).open("rb") as handle:
                if handle.read(4) == b"TZif":
                    return True
        except (OSError, ValueError):
            continue
    return zone in names() if importlib.util.find_spec("tzdata") is not None else False
