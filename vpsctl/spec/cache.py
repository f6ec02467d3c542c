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

An encrypted secrets store (``secrets.env.age``) is hashed as a file like any other; the age
identity that opens it is no input of the key (no hash of a private key is stored): a hit
decrypts the store first, and is a miss when the identity no longer opens it.

``VPSCTL_NO_CACHE=1`` validates in full without reading or writing the cache.

Stdlib only, and nothing of the spec models at import time: a hit costs no pydantic.

**The plan cache** (issue 15, "a no-op plan in half a second") memoizes ``vpsctl plan``, a
pure function of two things: the inputs (what the validation reads, the templates and every
other file the load, the render and the plan opened or listed, vpsctl's code, the command's
flags, ``VPSCTL_*`` and the working directory) and the facts the host answered. A plan whose
inputs are unchanged still reads the host, with the same one command over the same one
connection (the inputs validated when the entry was stored, so connecting before loading
breaks no rule), and when the facts' :meth:`~vpsctl.core.facts.HostFacts.fingerprint`
equals the entry's, prints the entry's output: the very bytes the full plan printed then,
masked. Anything else (an input changed, another answer from the host, an unreachable
host) runs the plan in full, with the facts already read. The files it opened are found by
an audit hook (:func:`sys.addaudithook`: every ``open``, ``os.listdir`` and ``os.scandir``)
while the full plan ran, so an input outside the known directories is still hashed; a
command it ran (``subprocess.Popen``: a sandbox studio's ``docker inspect`` of its backup
box, whose address the render writes into the repository URL) is run again at each lookup
and its output compared. What no hook sees, and so no key holds: a path only stat-ed
(never opened or listed) outside the studio's directories, and environment variables
other than ``VPSCTL_*`` and ``HOME``; vpsctl's plan reads neither.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vpsctl.host.target import Target
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


def _entry_path(inventory: Path, kind: str = "validate", *context: object) -> Path:
    """Where the entry of ``inventory`` (as given, from here) lives; ``context`` (a plan's
    flags and environment) is part of its name."""
    key = json.dumps(
        [
            FORMAT,
            str(Path.cwd()),
            str(inventory),
            str(inventory.absolute()),
            os.environ.get("HOME", ""),
            sys.version,
            str(_PACKAGE),
            *context,
        ]
    )
    return CACHE_DIR / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


# what a file holding a private key starts with (an SSH or PEM key, an age identity): such a
# file is known by its mtime and size, never by a hash of its content
_PRIVATE = (b"-----BEGIN", b"AGE-SECRET-KEY-", b"# created: ")


def _digest(path: Path) -> str:
    """``path``'s content hash and mode; a symlink also by its target; a private key by its
    mtime and size instead (no cache entry holds a hash of key material)."""
    mark = f"{path.lstat().st_mode:o}"
    if path.is_symlink():
        mark += f" -> {path.readlink()}"
        if not path.is_file():
            return mark
    with path.open("rb") as handle:
        if handle.read(64).lstrip().startswith(_PRIVATE):
            info = path.stat()
            return f"{mark} private key {info.st_mtime_ns} {info.st_size}"
        handle.seek(0)
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
        if not _store_opens(inventory):
            return None
        return [str(line) for line in entry["warnings"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(spec: Spec) -> None:
    """Remember that ``spec`` validated, with its warnings (masked). Best effort: a studio
    on a read-only disk validates in full every time."""
    from vpsctl.errors import masked  # noqa: PLC0415 - loaded with the spec already

    dirs = _spec_dirs(spec)
    try:
        entry = {
            "code": _code(_loaded_code()),
            "dirs": dirs,
            "inputs": _inputs(dirs),
            "warnings": [masked(str(problem)) for problem in spec.warnings],
        }
        _write(_entry_path(spec.inventory), entry)
    except OSError:
        return


def _store_opens(inventory: Path) -> bool:
    """Whether the inventory's secrets store opens now: an encrypted one is decrypted at
    each hit (the identity is no input the key holds, and so no hash of a private key is
    stored), so a hit never succeeds where a full run would fail to decrypt."""
    from vpsctl.spec.age import opens  # noqa: PLC0415 - pyrage, only for an encrypted store

    return opens(inventory)


def _spec_dirs(spec: Spec) -> list[list[str]]:
    """The ``[directory, pattern]`` pairs a validation of ``spec`` reads: the inventory,
    the stacks' directories, the stand-ins' Dockerfiles."""
    from vpsctl.resources import standins_root  # noqa: PLC0415

    stacks_dir = (spec.inventory / "host.yaml").parent / spec.host.stacks_dir
    roots = {str(stacks_dir.resolve())} | {str(p.parent) for p in spec.stack_files.values()}
    dirs = [[str(spec.inventory), ""], *([root, ""] for root in sorted(roots))]
    dirs.append([str(standins_root(spec)), "Dockerfile"])
    return dirs


def _write(path: Path, entry: dict[str, Any]) -> None:
    """Write ``entry`` to ``path`` (0600, atomically); never when its text holds a
    registered secret value (in a path, say)."""
    from vpsctl.errors import masked  # noqa: PLC0415 - loaded with the spec already

    text = json.dumps(entry, indent=1)
    if masked(text) != text:
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    temporary.replace(path)


# ── the plan cache ───────────────────────────────────────────────────────────────────────

_reads: set[str] | None = None  # "file:PATH" / "dir:PATH" while a plan records its reads
_hooked = False  # an audit hook cannot be removed: installed once, idle when not recording


def _hook(event: str, args: tuple[Any, ...]) -> None:
    """The audit hook: note every path opened or listed, and every command run, while
    :func:`recording`."""
    reads = _reads
    if reads is None or event not in ("open", "os.listdir", "os.scandir", "subprocess.Popen"):
        return
    try:
        if event == "subprocess.Popen":  # (executable, args, cwd, env): args a list here
            reads.add("run:" + json.dumps([os.fsdecode(word) for word in args[1]]))
            return
        path = args[0] if args and args[0] is not None else "."
        if isinstance(path, int):  # an open file descriptor: its path was noted already
            return
        kind = "file" if event == "open" else "dir"
        reads.add(f"{kind}:{os.path.abspath(os.fsdecode(path))}")  # noqa: PTH100 - no symlink resolved
    except Exception:  # noqa: BLE001, S110 - a hook that raises would break the open itself
        pass


@contextmanager
def recording() -> Iterator[set[str]]:
    """Note every file opened and every directory listed, by any thread, in the block."""
    global _reads, _hooked  # noqa: PLW0603 - the hook's one slot
    if not _hooked:
        sys.addaudithook(_hook)
        _hooked = True
    reads: set[str] = set()
    _reads = reads
    try:
        yield reads
    finally:
        _reads = None


# code is hashed by mtime and size, like Python's own bytecode cache; everything else by
# content
_CODE_SUFFIXES = (".py", ".pyc", ".so")
_CODE_ROOTS = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})


def _read_digest(key: str) -> str:
    kind, _, name = key.partition(":")
    if kind == "run":
        return _run_digest(json.loads(name))
    path = Path(name)
    try:
        if kind == "dir":
            listing = "\0".join(sorted(entry.name for entry in path.iterdir()))
            return "dir " + hashlib.sha256(listing.encode(errors="surrogateescape")).hexdigest()
        if path.is_dir():
            return "a directory"
        if name.endswith(_CODE_SUFFIXES) or name.startswith(_CODE_ROOTS):
            info = path.stat()
            return f"{info.st_mtime_ns} {info.st_size}"
        return _digest(path)
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except OSError as exc:
        return f"unreadable {exc.errno}"


def _run_digest(argv: list[str]) -> str:
    """A command the plan ran (``docker inspect`` of a sandbox backup host, whose address
    the render puts in the repository's URL), run again: its exit code and output."""
    import subprocess  # noqa: PLC0415 - only a studio whose plan runs a command pays for it

    try:
        done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"failed {exc.__class__.__name__}"
    return f"exit {done.returncode} {hashlib.sha256(done.stdout).hexdigest()}"


def _read_digests(keys: list[str]) -> dict[str, str]:
    return {key: _read_digest(key) for key in sorted(keys)}


@dataclass(frozen=True)
class PlanEntry:
    """A plan printed before, and what it was printed for."""

    target: Target  # the host the plan read
    script: str  # the facts script it ran
    facts: str  # the fingerprint of the host's answer
    stderr: str  # what it printed before reading the host (warnings), masked
    stdout: str  # the plan, masked
    code: int  # its exit code
    # the commands it ran ("run:" + argv as JSON → exit code and output hash): checked by
    # :func:`commands_unchanged`
    commands: dict[str, str] = field(default_factory=dict)


def plan_lookup(inventory: Path, context: list[str]) -> PlanEntry | None:
    """The plan of ``inventory`` under ``context`` (its flags and environment) when nothing
    it read has changed since; ``None`` (plan in full) otherwise."""
    try:
        entry = json.loads(_entry_path(inventory, "plan", *context).read_text(encoding="utf-8"))
        reads: dict[str, str] = entry["reads"]
        files = [key for key in reads if not key.startswith("run:")]
        if (
            entry["code"] != _code(list(entry["code"]))
            or entry["inputs"] != _inputs(entry["dirs"])
            or {key: reads[key] for key in files} != _read_digests(files)
            or not _store_opens(inventory)
        ):
            return None
        from vpsctl.host.target import Target  # noqa: PLC0415 - a dataclass, no SSH

        where = entry["target"]
        known = where["known_hosts"]
        return PlanEntry(
            Target(
                str(where["name"]),
                str(where["address"]),
                int(where["port"]),
                str(where["user"]),
                Path(where["key"]),
                None if known is None else Path(known),
            ),
            str(entry["script"]),
            str(entry["facts"]),
            str(entry["stderr"]),
            str(entry["stdout"]),
            int(entry["exit"]),
            {key: str(value) for key, value in reads.items() if key.startswith("run:")},
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def commands_unchanged(entry: PlanEntry) -> bool:
    """Whether the commands the entry's plan ran answer as they did. Not part of
    :func:`plan_lookup`: what they answer (a sandbox backup box's address) goes into the
    render, not into the spec's validity, so the host may be read meanwhile."""
    return _read_digests(list(entry.commands)) == entry.commands


def plan_store(spec: Spec, context: list[str], reads: set[str], entry: PlanEntry) -> None:
    """Remember the plan ``entry`` of ``spec`` under ``context``, with the digests of
    everything the plan read. Best effort, like :func:`store`."""
    from vpsctl.resources import shipped  # noqa: PLC0415

    dirs = [*_spec_dirs(spec), [str(shipped("templates")), ""]]
    ours = str(CACHE_DIR.absolute())
    from vpsctl.spec.age import identity_file  # noqa: PLC0415

    # nor the age identity: its hash is no business of a cache (a hit decrypts instead)
    reads = reads - {f"file:{os.path.abspath(identity_file())}"}  # noqa: PTH100 - as the hook
    try:
        record = {
            "code": _code(_loaded_code()),
            "dirs": dirs,
            "inputs": _inputs(dirs),
            # never the cache's own files: an entry written is not an input
            "reads": _read_digests([r for r in reads if not r.partition(":")[2].startswith(ours)]),
            "target": {
                "name": entry.target.name,
                "address": entry.target.address,
                "port": entry.target.port,
                "user": entry.target.user,
                "key": str(entry.target.key),
                "known_hosts": None
                if entry.target.known_hosts is None
                else str(entry.target.known_hosts),
            },
            "script": entry.script,
            "facts": entry.facts,
            "stderr": entry.stderr,
            "stdout": entry.stdout,
            "exit": entry.code,
        }
        _write(_entry_path(spec.inventory, "plan", *context), record)
    except OSError:
        return
