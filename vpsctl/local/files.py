"""Writing files on this machine: atomically, and with their final mode from the first byte
(a secrets.env or a private key is never readable by others, not even for a moment)."""

from __future__ import annotations

import os
from pathlib import Path

from vpsctl.core.layout import UnsafePath, member_problem  # the pure check lives in the core

# UnsafePath and member_problem are re-exported: callers that write files import them here
__all__ = ["UnsafePath", "member_problem", "safe_target", "write_atomic"]


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
