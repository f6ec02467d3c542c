"""The one exception tree of vpsctl.

::

    VpsctlError                 a user-facing failure: the CLI prints it and exits 1
     ├── SpecError              the inventory/stack files are invalid; carries every Problem
     ├── RemoteError            (remote) the host is unreachable or a remote step failed
     ├── StalePlan              (apply) a saved plan no longer matches the inputs or the host
     ├── DockerError            (localdocker) this machine's engine, builds, images
     │    └── StandinError      (standins) a stand-in cannot be prepared or built
     └── SandboxError           (sandbox) a sandbox box cannot be made or reached
          └── SandboxNotFound   no such sandbox: `vpsctl sandbox up --name N`

Anything else that escapes to the CLI is a bug: the CLI prints a pointer to it (and a
traceback with ``VPSCTL_DEBUG=1``), never a secret, since secret values only ever live in
:class:`vpsctl.spec.secrets.Secret` objects whose ``repr`` is masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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


# Every secret value loaded in this process (registered by the loaded Spec): the CLI's one
# error boundary masks them in any message, whatever layer built it (a remote command's
# stderr, a log line quoted in a failure).
_KNOWN_SECRETS: set[str] = set()


def forget_secrets() -> None:
    """Start a new command with no registered secrets."""
    _KNOWN_SECRETS.clear()


def register_secrets(values: list[str]) -> None:
    """Remember ``values`` as secrets to mask in any error message."""
    _KNOWN_SECRETS.update(v for v in values if len(v) >= 6)


def masked(text: str) -> str:
    """``text`` with every registered secret value replaced by ``<redacted>``."""
    for value in sorted(_KNOWN_SECRETS, key=len, reverse=True):
        text = text.replace(value, "<redacted>")
    return text
