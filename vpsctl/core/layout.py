"""Where vpsctl keeps things on the host: one place, so that every module agrees; and the
check, on the text alone, that a file stays inside the directory it belongs to."""

from __future__ import annotations

import posixpath

from vpsctl.errors import VpsctlError

HOST_ROOT = "/opt/vpsctl"
STACKS_ROOT = f"{HOST_ROOT}/stacks"  # one directory per compose project
HOST_FILES = f"{HOST_ROOT}/host"  # managed files that belong to the box, not to a stack
# the label on every container of a stack vpsctl applied: its stack's name
LABEL_STACK = "dev.vpsctl.stack"


class UnsafePath(VpsctlError):
    """A file that would land outside the directory it belongs to."""


def member_problem(name: str, root: str = "/") -> str | None:
    """Why the file ``name`` (absolute, as it sits on the box) may not be written below
    ``root``; ``None`` when it may. Checked on the text alone: no `..`, `.` or empty parts,
    nothing outside ``root``, no control characters."""
    if not name.startswith("/"):
        return f"{name!r} is not an absolute path"
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        return f"{name!r} holds a control character"
    parts = name.split("/")[1:]
    if any(part in ("", ".", "..") for part in parts):
        return f"{name!r} has an empty, '.' or '..' part"
    normal = posixpath.normpath(name)
    root = posixpath.normpath(root)
    if root != "/" and not normal.startswith(root + "/"):
        return f"{name!r} lies outside {root}"
    return None
