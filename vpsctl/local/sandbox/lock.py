"""Machine-wide locks between vpsctl processes: Docker's names (containers, volumes, image
tags) are machine-wide, so two processes must not make or remove the same one at once."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from vpsctl.local.sandbox.records import SandboxError

# One lock around image builds, one around creating/removing boxes; each hold is a few
# seconds, or a box's boot and SSH waits at worst (an image build takes about a minute).
LOCK_TIMEOUT = 1800.0
SANDBOXES_LOCK_TIMEOUT = 600.0


@contextlib.contextmanager
def locked(what: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """An exclusive lock across processes of this machine (Docker names are machine-wide)."""
    path = Path(tempfile.gettempdir()) / f"vpsctl-{what}.lock"
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise SandboxError(
                        f"another vpsctl process held {path} for {timeout:.0f}s; "
                        "is a `vpsctl sandbox up` or `down` stuck?"
                    ) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
