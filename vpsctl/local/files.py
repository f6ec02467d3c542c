"""Writing files on this machine: atomically, and with their final mode from the first byte
(a secrets.env or a private key is never readable by others, not even for a moment)."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from vpsctl.errors import VpsctlError


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


def safe_target(out: Path, name: str, root: str = "/") -> Path:
    """Where the box's file ``name`` goes below the local directory ``out``; raises
    :class:`UnsafePath` when ``name`` or a symlink on the way would leave ``out``."""
    problem = member_problem(name, root)
    if problem is not None:
        raise UnsafePath(f"refusing to write {problem}")
    base = out.resolve()
    target = base / name.lstrip("/")
    # a directory on the way may already exist as a symlink pointing elsewhere
    parent = target.parent
    while not parent.exists() and parent != base:
        parent = parent.parent
    if not parent.resolve().is_relative_to(base):
        raise UnsafePath(f"refusing to write {name}: {parent} leads outside {out}")
    if target.is_symlink():
        raise UnsafePath(f"refusing to write {name}: {target} is a symlink")
    return target


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    tmp.replace(path)
