"""A content-hash cache of ``vpsctl validate``'s successes: a studio validated before, with
every input unchanged, is not parsed and checked again (issue 12, "A fast start").

What a validation reads is what the entry records, each file by the SHA-256 of its content
and its mode: every file under the inventory (secrets.env included: its permissions are
checked too), every file under the stacks directory (stack files, config sources), and the
stand-ins' Dockerfiles. Any file added, removed, edited or chmod-ed is a miss; so is any change
of vpsctl's own code (each module the validation ran, by mtime and size), of the working
directory or of ``$HOME`` (paths in messages, ``~`` in key paths). A miss validates in full.
Only successes are stored, with the warnings they printed.

The entry never holds a secret value: the warnings are stored masked, and an entry whose text
still holds a registered secret value is not written at all. It does hold a SHA-256 of
secrets.env (of the whole file, never of one value), and lives in ``.vpsctl/cache/`` of the
studio, which the studio's ``.gitignore`` keeps out of git; files are written 0600.

``VPSCTL_NO_CACHE=1`` validates in full without reading or writing the cache.

Stdlib only, and nothing of the spec models at import time: a hit costs no pydantic.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vpsctl.spec.studio import Spec

CACHE_DIR = Path(".vpsctl/cache")  # relative to the studio: the working directory (or --root)
FORMAT = 1  # bump when an entry's shape changes
_PACKAGE = Path(__file__).resolve().parent.parent


def _loaded_code() -> list[str]:
    """vpsctl's modules this process has loaded: the code a validation ran (and more)."""
    found = set()
    for module in list(sys.modules.values()):
        name = getattr(module, "__file__", None)
        if name and Path(name).is_relative_to(_PACKAGE):
            found.add(name)
    return sorted(found)


def _code(files: list[str]) -> dict[str, str]:
    """``files`` by mtime and size: an upgrade of vpsctl, or an edit of a check, is a miss."""
    found = {}
    for name in files:
        info = Path(name).stat()
        found[name] = f"{info.st_mtime_ns} {info.st_size}"
    return found


def _entry_path(inventory: Path) -> Path:
    """Where the entry of ``inventory`` (as given, from here) lives."""
    context = json.dumps(
        [
            FORMAT,
            str(Path.cwd()),
            str(inventory),
            str(inventory.absolute()),
            os.environ.get("HOME", ""),
            sys.version,
            str(_PACKAGE),
        ]
    )
    return CACHE_DIR / f"validate-{hashlib.sha256(context.encode()).hexdigest()[:32]}.json"


def _digest(path: Path) -> str:
    """``path``'s content hash and mode; a symlink also by its target."""
    mark = f"{path.lstat().st_mode:o}"
    if path.is_symlink():
        mark += f" -> {path.readlink()}"
        if not path.is_file():
            return mark
    with path.open("rb") as handle:
        return f"{mark} {hashlib.file_digest(handle, 'sha256').hexdigest()}"


def _tree(root: Path, pattern: str) -> dict[str, str]:
    """Every file under ``root`` (symlinks included, not followed), or only ``*/pattern``."""
    if pattern:
        return {str(path): _digest(path) for path in sorted(root.glob(f"*/{pattern}"))}
    found: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        here = Path(folder)
        linked = [d for d in dirs if (here / d).is_symlink()]  # not walked: recorded
        for name in [*sorted(files), *linked]:
            found[str(here / name)] = _digest(here / name)
    return found


def _inputs(dirs: list[list[str]]) -> dict[str, str]:
    """The digests of every input, from the recorded ``[directory, pattern]`` pairs."""
    inputs: dict[str, str] = {}
    for root, pattern in dirs:
        present = Path(root).is_dir()
        inputs[f"dir {root} {pattern}"] = "present" if present else "missing"
        if present:
            inputs.update(_tree(Path(root), pattern))
    return inputs


def lookup(inventory: Path) -> list[str] | None:
    """The warnings of the last successful validation of ``inventory``, when nothing it read
    has changed since; ``None`` (validate in full) otherwise."""
    try:
        entry = json.loads(_entry_path(inventory).read_text(encoding="utf-8"))
        if entry["code"] != _code(list(entry["code"])) or entry["inputs"] != _inputs(entry["dirs"]):
            return None
        return [str(line) for line in entry["warnings"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(spec: Spec) -> None:
    """Remember that ``spec`` validated, with its warnings (masked). Best effort: a studio
    on a read-only disk validates in full every time."""
    from vpsctl.errors import masked  # noqa: PLC0415 - loaded with the spec already
    from vpsctl.resources import standins_root  # noqa: PLC0415

    stacks_dir = (spec.inventory / "host.yaml").parent / spec.host.stacks_dir
    roots = {str(stacks_dir.resolve())} | {str(p.parent) for p in spec.stack_files.values()}
    dirs = [[str(spec.inventory), ""], *([root, ""] for root in sorted(roots))]
    dirs.append([str(standins_root(spec)), "Dockerfile"])
    try:
        entry = {
            "code": _code(_loaded_code()),
            "dirs": dirs,
            "inputs": _inputs(dirs),
            "warnings": [masked(str(problem)) for problem in spec.warnings],
        }
        text = json.dumps(entry, indent=1)
        if masked(text) != text:  # a secret value in a path: never written to disk
            return
        path = _entry_path(spec.inventory)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        temporary.replace(path)
    except OSError:
        return
