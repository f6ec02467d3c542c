"""The one exception tree of vpsctl.

::

    VpsctlError                 a user-facing failure: the CLI prints it and exits 1
     ├── SpecError              the inventory/stack files are invalid; carries every Problem
     ├── RemoteError            (remote) the host is unreachable or a remote step failed
     │    └── CommandFailed     a remote command exited non-zero (its purpose, its output's tail)
     ├── StalePlan              (apply) a saved plan no longer matches the inputs or the host
     ├── PlanFileError          (apply) a saved plan file is unreadable, malformed or edited
     ├── DockerError            (localdocker) this machine's engine, builds, images
     │    └── StandinError      (standins) a stand-in cannot be prepared or built
     ├── StoreError             (ops.secrets) a secrets store edit, encryption or recipients change
     ├── SandboxError           (sandbox) a sandbox box cannot be made or reached
     │    └── SandboxNotFound   no such sandbox: `vpsctl sandbox up --name N`
     └── PebbleError            (pebble) the sandboxes' ACME CA cannot be made, reached or read

Anything else that escapes to the CLI is a bug: the CLI prints a pointer to it (and a
traceback with ``VPSCTL_DEBUG=1``), never a secret, since secret values only ever live in
:class:`vpsctl.spec.secrets.Secret` objects whose ``repr`` is masked.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO


class VpsctlError(Exception):
    """A failure the user can act on; its message is safe to print."""


@dataclass(frozen=True, order=True)
class Problem:
    """One error in the user's files: where it is and what would be valid."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class SpecError(VpsctlError):
    """The spec is invalid. ``problems`` holds all of them, sorted by file and line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(set(problems))
        super().__init__("\n".join(str(p) for p in self.problems))


def display_path(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when possible."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# ── the one redacting boundary ──────────────────────────────────────────────────────────
#
# Every secret value this process has seen is registered here as soon as it is read: the
# values of secrets.env (on reading the file, before anything else is validated), the
# values rendered into env files, and the values the host's env files held under secret
# keys. ``masked`` replaces any of them in any text; the CLI runs every command with
# stdout and stderr behind :class:`RedactingStream`, so whatever layer prints a value (a
# remote command's stderr quoted in a failure, compose's error quoting an env file, a
# traceback) prints ``<redacted>`` instead. Files vpsctl writes for the operator (a saved
# plan) and JSON go through :func:`masked_data`.

MASK = "<redacted>"
# A value shorter than this is not searched for: it occurs in ordinary words (a 4-digit
# PIN in a port number, "admin" in a path) and masking it would garble every output. No
# message quotes a value of any length; this floor only bounds the second line of defence.
MIN_SECRET_LENGTH = 6
# Characters that end a line for some reader: a registered value holding one is also
# registered line by line, so a line-buffered stream can never print half of it.
_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"

_KNOWN_SECRETS: set[str] = set()
_forms: list[str] | None = None  # every registered value's printable forms, longest first
_lock = threading.Lock()


def forget_secrets() -> None:
    """Start a new command with no registered secrets."""
    global _forms  # noqa: PLW0603 - the process's one registry
    with _lock:
        _KNOWN_SECRETS.clear()
        _forms = None


def register_secrets(values: Iterable[str]) -> None:
    """Remember ``values`` as secrets to mask in any output from now on."""
    global _forms  # noqa: PLW0603 - the process's one registry
    with _lock:
        new = {v for v in values if len(v) >= MIN_SECRET_LENGTH} - _KNOWN_SECRETS
        if new:
            _KNOWN_SECRETS.update(new)
            _forms = None


def is_secret(value: str) -> bool:
    """Whether ``value`` is one of the registered secret values."""
    return value in _KNOWN_SECRETS


def _printed_forms(value: str) -> set[str]:
    """How ``value`` can appear in output: as itself, escaped in JSON (ASCII or not), in a
    Python repr (the plan's diffs of plain values), with every ``$`` doubled (the escape of
    a document the docker CLI interpolates: a cluster's deploy, whose errors may quote it),
    and, when it spans lines, each line."""
    forms = {
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        repr(value)[1:-1],
        value.replace("$", "$$"),
    }
    pieces = [value]
    for brk in _LINE_BREAKS:
        pieces = [part for piece in pieces for part in piece.split(brk)]
    forms.update(p for p in pieces if len(p.strip()) >= MIN_SECRET_LENGTH)
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


def _all_forms() -> list[str]:
    global _forms  # noqa: PLW0603 - a cache of the registry
    with _lock:
        if _forms is None:
            found: set[str] = set()
            for value in _KNOWN_SECRETS:
                found |= _printed_forms(value)
            _forms = sorted(found, key=len, reverse=True)
        return _forms


def masked(text: str) -> str:
    """``text`` with every registered secret value (in any form it can be printed in)
    replaced by ``<redacted>``; overlapping occurrences become one mask, so no part of
    either is left."""
    forms = _all_forms()
    if not forms or not text:
        return text
    spans: list[tuple[int, int]] = []
    for form in forms:
        start = text.find(form)
        while start != -1:
            spans.append((start, start + len(form)))
            start = text.find(form, start + 1)
    if not spans:
        return text
    spans.sort()
    out: list[str] = []
    pos = 0
    begin, end = spans[0]
    for s, e in spans[1:]:
        if s <= end:
            end = max(end, e)
            continue
        out += [text[pos:begin], MASK]
        pos, begin, end = end, s, e
    out += [text[pos:begin], MASK, text[end:]]
    return "".join(out)


def masked_data(data: Any) -> Any:
    """Plain data (JSON's kinds) with :func:`masked` applied to every string, keys too: the
    JSON printed from it stays valid whatever characters a secret holds."""
    if isinstance(data, str):
        return masked(data)
    if isinstance(data, dict):
        return {masked_data(k): masked_data(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [masked_data(v) for v in data]
    return data


class RedactingStream(io.TextIOBase):
    """A text stream that passes what is written to ``target`` through :func:`masked`.

    Text is held until a line ends (or ``flush``): a secret is never split between two
    writes and so never escapes the mask in halves (a value spanning lines is registered
    line by line too).
    """

    def __init__(self, target: TextIO) -> None:
        super().__init__()
        self.target = target
        self._pending = ""
        self._write_lock = threading.Lock()

    def writable(self) -> bool:
        """Always: this is an output stream."""
        return True

    def write(self, text: str) -> int:
        """Queue ``text``; pass on, masked, every line it completes."""
        with self._write_lock:
            self._pending += text
            cut = self._pending.rfind("\n") + 1
            if cut:
                ready, self._pending = self._pending[:cut], self._pending[cut:]
                self.target.write(masked(ready))
        return len(text)

    def flush(self) -> None:
        """Pass on, masked, whatever is queued (a prompt, a progress line without newline)."""
        with self._write_lock:
            if self._pending:
                self.target.write(masked(self._pending))
                self._pending = ""
            self.target.flush()

    def isatty(self) -> bool:
        """Whether the real stream is a terminal."""
        return self.target.isatty()

    def fileno(self) -> int:
        """The real stream's descriptor (a child process writing to it is not masked)."""
        return self.target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        """The real stream's encoding."""
        return getattr(self.target, "encoding", None) or "utf-8"


@contextlib.contextmanager
def redacted_output() -> Iterator[None]:
    """Run the block with ``sys.stdout`` and ``sys.stderr`` behind :class:`RedactingStream`;
    whatever is still queued is flushed (masked) at the end."""
    real_out, real_err = sys.stdout, sys.stderr
    out, err = RedactingStream(real_out), RedactingStream(real_err)
    sys.stdout, sys.stderr = out, err
    try:
        yield
    finally:
        try:
            out.flush()
            err.flush()
        finally:
            sys.stdout, sys.stderr = real_out, real_err
