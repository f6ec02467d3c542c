"""backup and rebuild of a cluster (host.yaml's ``nodes``): each node's stacks on their node.

Every node that holds a stack with backups carries the backup machinery for ITS stacks
(:func:`vpsctl.core.cluster.node_view`), and all of them write into ONE restic repository
(restic takes concurrent backups into one repository; a prune's exclusive lock is waited
for, ``--retry-lock``), each snapshot tagged ``node:NAME``.

- ``backup``: every node's stacks at once (a thread per node: the dumps are each node's own
  work, and the nodes wait on nothing of each other's), then the secrets store once, through
  the first node in host.yaml's order (it is the cluster's, not a node's).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

from vpsctl.cli import views
from vpsctl.core import cluster
from vpsctl.host.remote import Remote, Session
from vpsctl.ops import inputs, targets
from vpsctl.ops.recovery import (
    BackupError,
    BackupReport,
    Backups,
    Snapshot,
    _checked_stacks,
    backed_up_stacks,
)
from vpsctl.spec.studio import Spec

# ── which nodes ──────────────────────────────────────────────────────────────────────────


def backup_nodes(spec: Spec, stacks: list[str]) -> dict[str, list[str]]:
    """The nodes holding ``stacks`` (every stack with backups when empty), each with its own
    among them, in host.yaml's order; a node holding none is left out."""
    wanted = stacks or backed_up_stacks(spec)
    found: dict[str, list[str]] = {}
    for node in spec.host.nodes or {}:
        held = [s for s in backed_up_stacks(spec, node) if s in wanted]
        if held:
            found[node] = held
    return found


# ── backup ───────────────────────────────────────────────────────────────────────────────


@dataclass
class ClusterBackupReport:
    """What ``vpsctl backup`` of a cluster did: a snapshot per node, the secrets' once."""

    nodes: dict[str, BackupReport]
    secrets_snapshot: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": {name: report.to_json() for name, report in self.nodes.items()},
            "secrets_snapshot": self.secrets_snapshot,
            "seconds": round(self.seconds, 2),
        }

    def text(self) -> str:
        lines = []
        for name, report in self.nodes.items():
            lines.append(f"── node {name} ──")
            lines.append(views.backup_text(report).rstrip("\n"))
        if self.secrets_snapshot:
            lines.append(
                f"secrets.env: snapshot {self.secrets_snapshot[:8]} (once for the cluster; "
                "encrypted by restic, tagged vpsctl-secrets)"
            )
        lines.append(f"{len(self.nodes)} node(s) backed up in {self.seconds:.1f}s")
        return "\n".join(lines) + "\n"


@contextlib.contextmanager
def node_backups(spec: Spec, nodes: list[str]) -> Iterator[dict[str, Backups]]:
    """A checked :class:`Backups` per node of ``nodes`` (one session each, opened at once),
    each with its node's share of ONE render of the studio."""
    desired = inputs.render_spec(spec)
    with contextlib.ExitStack() as stack:
        sessions = _sessions(spec, nodes, stack)
        found = {
            node: Backups(spec, sessions[node], cluster.node_view(spec, desired, node), node=node)
            for node in nodes
        }
        for backups in found.values():
            backups.check_installed()
        yield found


def _sessions(spec: Spec, nodes: list[str], stack: contextlib.ExitStack) -> dict[str, Remote]:
    """A session to each of ``nodes``, opened in parallel, closed with ``stack``."""
    sessions = {node: Session(targets.node_target(spec, node)) for node in nodes}
    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        opened = list(pool.map(stack.enter_context, sessions.values()))
    return dict(zip(nodes, opened, strict=True))


def run_backup(spec: Spec, init: bool, stacks: list[str], out: IO[str]) -> ClusterBackupReport:
    """``vpsctl backup`` of a cluster: each node backs its stacks (or its among ``stacks``)
    up at once, on itself; then the secrets store, once, when every stack was asked for."""
    _checked_stacks(spec, stacks)
    placed = backup_nodes(spec, stacks)
    started = time.monotonic()
    with node_backups(spec, list(placed)) as backups:
        first = next(iter(backups.values()))
        if init:  # one repository: created once, before any node writes into it
            created = first.init_repository()
            print(
                f"repository {first.repository and first.repository.display}: "
                f"{'created' if created else 'exists'}",
                file=out,
            )

        def backup(node: str) -> BackupReport:
            print(f"{node}: backing up {', '.join(placed[node])} …", file=out, flush=True)
            return backups[node].backup("manual", placed[node] if stacks else None, secrets=False)

        with ThreadPoolExecutor(max_workers=len(placed), thread_name_prefix="backup") as pool:
            reports = dict(zip(placed, pool.map(backup, placed), strict=True))
        report = ClusterBackupReport(reports)
        if not stacks:
            report.secrets_snapshot = first.backup_secrets()
    report.seconds = time.monotonic() - started
    return report


def list_snapshots(spec: Spec) -> list[Snapshot]:
    """The cluster's snapshots (every node's: one repository), read through the first node
    that backs something up."""
    nodes = list(backup_nodes(spec, []))
    if not nodes:
        raise BackupError(f"{spec.host_doc.file}: no node holds a stack with backups")
    with node_backups(spec, nodes[:1]) as backups:
        return backups[nodes[0]].snapshots()
