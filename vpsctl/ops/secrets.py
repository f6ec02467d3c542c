"""``vpsctl secrets edit | encrypt | recipients``: the operator's work on the secrets store.

The plaintext of an encrypted store is on disk only while ``$EDITOR`` runs, as one 0600 file
in a 0700 directory on tmpfs (``$XDG_RUNTIME_DIR`` or ``/dev/shm``; another directory only
when the operator says so), removed whatever happens: saved, discarded, refused, Ctrl-C.
An edit is validated with the whole inventory before it is sealed; the store either keeps
its old content or takes the new one, never half of it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from vpsctl.errors import Problem, SpecError, VpsctlError, display_path
from vpsctl.spec import age, store
from vpsctl.spec.loader import load_spec_with


class StoreError(VpsctlError):
    """A secrets store operation cannot go on (no tmpfs, no editor, a lock-out)."""


_RAM_FILESYSTEMS = ("tmpfs", "ramfs")
_SHM = "/dev/shm"  # noqa: S108 - a private 0700 directory is made inside it


def filesystem_of(path: Path) -> str:
    """The type of the filesystem ``path`` lies on (``/proc/mounts``, longest mount point)."""
    target = str(path.resolve())
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return kind
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def scratch_dir(chosen: Path | None, allow_disk: bool) -> Path:
    """Where the plaintext may sit during an edit: ``chosen``, else ``$XDG_RUNTIME_DIR``
    or ``/dev/shm``, refused unless on tmpfs (or ``allow_disk``)."""
    candidates = (
        [chosen]
        if chosen is not None
        else [Path(p) for p in (os.environ.get("XDG_RUNTIME_DIR", ""), _SHM) if p]
    )
    for place in candidates:
        if not place.is_dir():
            continue
        kind = filesystem_of(place)
        if kind in _RAM_FILESYSTEMS or allow_disk:
            return place
        if chosen is not None:
            raise StoreError(
                f"secrets edit: {place} is on {kind}, not tmpfs: the plaintext would reach a "
                "disk; choose a tmpfs directory, or pass --allow-disk to accept that"
            )
    raise StoreError(
        "secrets edit: no tmpfs directory for the plaintext ($XDG_RUNTIME_DIR and /dev/shm "
        "are missing or not tmpfs); pass --tmpdir DIR on tmpfs, or --allow-disk"
    )


@dataclass
class EditResult:
    """How an edit ended: ``saved``, ``unchanged`` or ``discarded``."""

    outcome: str
    file: str


def edit(
    inventory: Path,
    out: IO[str],
    ask: Callable[[str], str],
    *,
    tmpdir: Path | None = None,
    allow_disk: bool = False,
) -> EditResult:
    """Decrypt the store to a 0600 tmpfs file, run ``$EDITOR`` on it, validate, seal.

    A refused edit is offered again (``ask`` answers ``e``) or discarded; the plaintext
    file and its directory are removed on every way out, Ctrl-C included.
    """
    where = store.store_of(inventory)
    recipients = store.recipients_of(where) if where.encrypted else None
    before = store.read_text(where)
    if before is None:
        raise StoreError(
            f"secrets edit: {where.shown} does not exist yet; "
            f"`vpsctl secrets generate -i {inventory}` creates it"
        )
    baseline = _store_problems(inventory, where, before)
    editor = shlex.split(os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi")
    private = Path(tempfile.mkdtemp(prefix="vpsctl-secrets-", dir=scratch_dir(tmpdir, allow_disk)))
    try:
        plain = private / "secrets.env"
        fd = os.open(plain, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(before)
        while True:
            code = _run_editor(editor, plain)
            if code != 0:
                raise StoreError(
                    f"secrets edit: the editor exited with {code}; {where.shown} is unchanged"
                )
            after = plain.read_text(encoding="utf-8")
            if after == before:
                return EditResult("unchanged", where.shown)
            seen = {(p.path, p.message) for p in baseline}
            new = [
                p
                for p in _store_problems(inventory, where, after)
                if (p.path, p.message) not in seen
            ]
            if not new:
                store.write_text(where, after, recipients)
                return EditResult("saved", where.shown)
            for problem in new:
                print(problem, file=out)
            answer = ask(f"{len(new)} problem(s): [e]dit again or [d]iscard the edit? ")
            if answer.strip().lower() not in ("e", "edit"):
                return EditResult("discarded", where.shown)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _run_editor(editor: list[str], plain: Path) -> int:
    """Run the editor on ``plain``; its exit code. Ctrl-C belongs to the editor while it
    runs (vi and nano use it; it must not end vpsctl under them): noted here, and raised as
    :class:`KeyboardInterrupt` once the editor has exited, after which the plaintext goes."""
    interrupted: list[int] = []
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(1)) if main else None
    try:
        done = subprocess.run([*editor, str(plain)], check=False)
    except OSError as exc:
        raise StoreError(
            f"secrets edit: cannot run the editor {editor[0]} ({exc.__class__.__name__}); "
            "set $EDITOR"
        ) from None
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    if interrupted or done.returncode == -signal.SIGINT:
        raise KeyboardInterrupt
    return done.returncode


def _store_problems(inventory: Path, where: store.Store, text: str) -> list[Problem]:
    """The problems the inventory has with ``text`` as its secrets, in the store's file
    (compared by field and message: lines move in an edit). Problems of other files are not
    the edit's to judge."""
    try:
        load_spec_with(inventory, text)
    except SpecError as exc:
        return [p for p in exc.problems if p.file == where.shown]
    return []


def encrypt(inventory: Path) -> str:
    """Seal the plain ``secrets.env`` to the recipients; the plain file is removed only once
    the sealed file, read back from disk, opens to the very same bytes."""
    plain, sealed = inventory / store.PLAIN, inventory / age.SEALED
    encrypted = store.Store(inventory, True)
    if not plain.exists():
        raise StoreError(f"secrets encrypt: no {display_path(plain)} to encrypt")
    data = plain.read_text(encoding="utf-8")
    if sealed.exists():
        # both: the end of an encryption that stopped before removing the plain file?
        if store.read_text(encrypted) != data:
            store.store_of(inventory)  # raises: both files, naming both
        plain.unlink()
        return f"{encrypted.shown} already holds {display_path(plain)}: removed the plain file"
    store.write_text(encrypted, data)
    if store.read_text(encrypted) != data:
        raise StoreError(f"secrets encrypt: {encrypted.shown} does not read back; plain file kept")
    plain.unlink()
    return f"encrypted {display_path(plain)} into {encrypted.shown}; removed the plain file"


def recipients_list(inventory: Path) -> list[str]:
    """Each recipient, by fingerprint and label."""
    where = store.Store(inventory, True)
    return [r.describe() for r in store.recipients_of(where)]


def _parsed_key(key: str) -> age.Recipient:
    text = key
    path = Path(key).expanduser()
    if len(key) < 4096 and "\n" not in key and path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        text = next((ln for ln in lines if ln.strip() and not ln.startswith("#")), "")
    parsed = age.parse_recipient(text)
    if isinstance(parsed, str):
        raise StoreError(f"secrets recipients: {parsed}")
    return parsed


def recipients_change(inventory: Path, key: str, *, add: bool) -> str:
    """Add or remove one recipient (a public key, a .pub file, or a fingerprint to remove),
    then seal the store again to the new list (verified: the operator's identity opens it)."""
    where = store.store_of(inventory)
    path = where.recipients_path
    current, problems = age.read_recipients(path)
    if problems:
        raise SpecError(problems)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    if add:
        new = _parsed_key(key)
        twin = next((r for r in current if r.key == new.key), None)
        if twin is not None:
            raise StoreError(f"secrets recipients: {new.describe()} is already line {twin.line}")
        lines.append(new.key + (f" {new.label}" if new.label else ""))
        chosen, done = [*current, new], f"added {new.describe()}"
    else:
        gone = next((r for r in current if key in (r.fingerprint, r.key)), None)
        if gone is None:
            gone = next((r for r in current if r.key == _parsed_key(key).key), None)
        if gone is None:
            raise StoreError(
                f"secrets recipients: no such recipient in {display_path(path)} "
                f"(`vpsctl secrets recipients list -i {inventory}`)"
            )
        if len(current) == 1:
            raise StoreError("secrets recipients: cannot remove the last recipient")
        del lines[gone.line - 1]
        chosen = [r for r in current if r is not gone]
        done = (
            f"removed {gone.describe()}; what it could read before stays readable to it "
            "(in git's history too): rotate the secrets it saw"
        )
    from vpsctl.local.files import write_atomic  # noqa: PLC0415

    text = store.read_text(where) if where.encrypted else None
    if text is not None:
        # sealed to the new list first: a removed key no longer opens the file from here on
        store.write_text(where, text, chosen)
        done += f"; {where.shown} encrypted again to {len(chosen)} recipient(s)"
    write_atomic(path, ("\n".join(lines) + "\n").encode(), 0o644)
    return done
