"""Paths a spec names, and where each must stay. Pure: string rules only, no file system.

Every path in a spec belongs somewhere: a config's name lies inside its stack's ``config/``
directory on the box, a config's source inside the stack's own files directory here, a
container path (a mount target, a database file) inside the container, and an SQLite
database or a ClickHouse backup directory inside one of the service's named volumes. A
``..`` segment, an empty or ``.`` segment, or a character that a shell, a compose volume
string (``volume:/target:ro``) or an SQL literal would read as syntax could carry it
elsewhere. These rules refuse such paths outright instead of trying to resolve them: what
passes is already normal, so the text written is the path used.
"""

from __future__ import annotations

import posixpath
import re

# One segment of a relative name: starts with a letter, digit or `_` (so never `.`, `..`,
# a hidden file or an option-looking `-x`), then letters, digits, `.`, `_`, `-`.
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9._-]*"
RELATIVE_NAME = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")
RELATIVE_HINT = (
    "a relative path of letters, digits, '.', '_' and '-' (each part starting with a letter, "
    "digit or '_'), like clickhouse/config.d/logs.xml; no '..', '.', empty parts or leading '/'"
)

# An absolute path: `/`, or `/` followed by segments of a restricted alphabet. `:` and `,`
# (compose's volume syntax), whitespace, quotes, `$` and backslashes (shells, SQL) are out.
_ABS_SEGMENT = r"[A-Za-z0-9_@+=~%][A-Za-z0-9._@+=~%-]*"
ABSOLUTE_PATH = re.compile(rf"/|(?:/{_ABS_SEGMENT})+")
ABSOLUTE_HINT = (
    "an absolute, normalised path of letters, digits and . _ - @ + = ~ % (like "
    "/var/lib/app/data.db): no '..' or '.' parts, no '//', no trailing '/', no spaces, "
    "quotes, ':' or ','"
)


def relative_problem(name: str) -> str | None:
    """Why ``name`` is not a safe relative path (``None`` when it is)."""
    if RELATIVE_NAME.fullmatch(name):
        return None
    parts = name.split("/")
    if ".." in parts:
        return f"'{_shown(name)}' climbs out with '..': expected {RELATIVE_HINT}"
    if name.startswith("/"):
        return f"'{_shown(name)}' is absolute: expected {RELATIVE_HINT}"
    return f"'{_shown(name)}' is not {RELATIVE_HINT}"


def absolute_problem(path: str) -> str | None:
    """Why ``path`` is not a safe absolute path (``None`` when it is)."""
    if ABSOLUTE_PATH.fullmatch(path):
        return None
    if not path.startswith("/"):
        return f"'{_shown(path)}' is not absolute: expected {ABSOLUTE_HINT}"
    if ".." in path.split("/"):
        normal = posixpath.normpath(path)
        return f"'{_shown(path)}' climbs with '..' (it means {normal}): expected {ABSOLUTE_HINT}"
    normal = posixpath.normpath(path)
    if normal != path and ABSOLUTE_PATH.fullmatch(normal):
        return f"'{_shown(path)}' is not normalised: write {normal}"
    return f"'{_shown(path)}' is not {ABSOLUTE_HINT}"


def within(path: str, root: str) -> bool:
    """Whether the absolute ``path`` is ``root`` or lies under it, after normalisation."""
    path, root = posixpath.normpath(path), posixpath.normpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def _shown(text: str) -> str:
    """A path as a message quotes it: control characters escaped, long ones cut."""
    escaped = text.encode("unicode_escape").decode("ascii")
    return escaped if len(escaped) <= 80 else escaped[:77] + "…"
