"""The box's backup script (``vpsctl-backup``, rendered by :mod:`vpsctl.core.backupfiles`)."""

from __future__ import annotations

from typing import Literal

from vpsctl.core.backupfiles import SCRIPT
from vpsctl.host.commands import Argv

# the ``run:KIND`` tag of a snapshot vpsctl takes (the timers' runs are tagged by the script)
BackupKind = Literal["manual", "pre-apply", "pre-rollback", "pre-restore", "pre-move"]
RestorePhase = Literal["files", "databases", "all"]


def script(verb: str, *args: str) -> Argv:
    """``vpsctl-backup VERB ARGS…`` (``init``, ``backup KIND STACK…``, ``restore SNAPSHOT
    PHASE STACK…``, ``release SNAPSHOT``, ``recorded``, ``counts``, ``snapshots``,
    ``secrets``, ``check``)."""
    return [SCRIPT, verb, *args]


def backup(kind: BackupKind, stacks: list[str]) -> Argv:
    """Back up ``stacks`` (all when empty) in one snapshot tagged ``run:KIND``."""
    return script("backup", kind, *stacks)


def restore(snapshot: str, phase: RestorePhase, stacks: list[str]) -> Argv:
    """Restore ``stacks`` from ``snapshot``: ``phase`` ``files``, ``databases`` or ``all``.
    ``files`` and ``databases`` keep the snapshot's extracted copy for the next call
    (:func:`release` removes it); ``all`` removes it."""
    return script("restore", snapshot, phase, *stacks)


def release(snapshot: str) -> Argv:
    """Remove the copy of ``snapshot`` that ``files``/``databases`` restores kept."""
    return script("release", snapshot)
