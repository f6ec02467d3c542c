"""backup and rebuild of a cluster (host.yaml's ``nodes``): each node's stacks on their node.

Every node that holds a stack with backups carries the backup machinery for ITS stacks
(:func:`vpsctl.core.cluster.node_view`), and all of them write into ONE restic repository
(restic takes concurrent backups into one repository; a prune's exclusive lock is waited
for, ``--retry-lock``), each snapshot tagged ``node:NAME``.

- ``backup``: every node's stacks at once (a thread per node: the dumps are each node's own
  work, and the nodes wait on nothing of each other's), then the secrets store once, through
  the first node in host.yaml's order (it is the cluster's, not a node's).
- ``restore``: each stack's data put back on its node, from that node's snapshots, a
  safety snapshot first, its apps scaled to 0 on the manager meanwhile (one node after
  another: asked once, then node by node).
- ``rebuild --node``: a fresh box standing in for a lost node: its stale entry removed from
  the swarm's node list, the cluster applied (the fresh box bootstrapped, joined with its
  labels; the other nodes' plans find nothing to change, so none of their containers
  restarts) with the one-box rebuild's steps on that node only: its files restored from the
  node's newest snapshot before its stacks start, each stack's databases once healthy (its
  apps scaled to 0 on the manager meanwhile: ``SwarmRuntime.paused``), its stacks probed
  through the edge's Caddy.

Rebuilding the swarm's only manager is refused: a fresh manager is a new swarm, whose
workers must leave the old one and rejoin (every stack redeployed); that is not built.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

from vpsctl.cli import views
from vpsctl.core import cluster
from vpsctl.core import swarm as swarm_core
from vpsctl.errors import VpsctlError
from vpsctl.host.commands import stack as stackcmd
from vpsctl.host.commands import swarm as swarm_commands
from vpsctl.host.remote import Remote, Session
from vpsctl.ops import inputs, targets
from vpsctl.ops.apply import LOCK, count_rows
from vpsctl.ops.apply.cluster import ClusterApply
from vpsctl.ops.apply.runtime import swarm_paused
from vpsctl.ops.cluster_audit import audit_cluster
from vpsctl.ops.recovery import (
    BackupError,
    BackupReport,
    Backups,
    RebuildReport,
    Snapshot,
    _checked_stacks,
    _confirm,
    _RebuildSteps,
    _safety_snapshot,
    backed_up_stacks,
    said_counts,
)
from vpsctl.spec.studio import Spec

# how long a lost box the manager still lists as ready is waited for (Swarm marks a node
# down once its heartbeats time out: seconds after the box is gone)
STALE_WAIT = 90.0

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


def checked_node(spec: Spec, node: str | None) -> str | None:
    """``--node``, refused before any connection: on one box (there are no nodes), missing on
    a cluster, or not a node of it (the valid ones named, where host.yaml declares them)."""
    nodes = spec.host.nodes
    if nodes is None:
        if node is not None:
            raise VpsctlError(
                f"--node {node}: {spec.host_doc.file} declares one box, not `nodes:`; "
                f"`vpsctl rebuild -i {spec.inventory}` rebuilds it (without --node)"
            )
        return None
    line, _ = spec.host_doc.locate(("nodes",))
    where = f"{spec.host_doc.file}:{line}: nodes"
    if node is None:
        raise VpsctlError(
            f"{where}: a cluster is rebuilt one node at a time: name the lost one with "
            f"--node ({', '.join(nodes)})"
        )
    if node not in nodes:
        raise VpsctlError(
            f"--node {node}: {where} has no node {node}; its nodes: {', '.join(nodes)}"
        )
    if spec.host.managers == [node]:
        raise VpsctlError(
            f"--node {node}: {node} is the swarm's only manager ({where}): a fresh box in "
            "its place starts a NEW swarm, which the workers would have to leave theirs to "
            "join (every stack redeployed); vpsctl does not build that yet. Bring the box "
            "back if it can be; else make every node a fresh box and run `vpsctl apply -i "
            f"{spec.inventory}` then restore each stack's data from its snapshots. Declaring "
            "three managers (`manager: true`) keeps the swarm when one is lost"
        )
    return node


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


# ── restore ──────────────────────────────────────────────────────────────────────────────


def run_restore(
    spec: Spec,
    snapshot: str | None,
    stacks: list[str],
    yes: bool,
    out: IO[str],
    *,
    safety: bool = True,
) -> bool:
    """``vpsctl restore`` of a cluster: each stack's data put back on the node that holds it,
    from the newest snapshot holding it, whichever node took it (or ``snapshot``: one node's
    stacks only), a safety snapshot of the current data first (as on one box), asked once
    for every node; each stack's apps scaled to 0 on the manager meanwhile. Whether every
    table has its rows back (the CLI then runs the cluster's audit)."""
    chosen_stacks = _checked_stacks(spec, stacks) or backed_up_stacks(spec)
    placed = backup_nodes(spec, chosen_stacks)
    if snapshot is not None and len(placed) > 1:
        raise BackupError(
            f"--snapshot {snapshot}: a snapshot is one node's, and {', '.join(chosen_stacks)} "
            f"are on {', '.join(placed)}: name one node's stacks with --stack"
        )
    manager_name = spec.host.managers[0]
    with node_backups(spec, list(dict.fromkeys([*placed, manager_name]))) as found:
        backups = {node: found[node] for node in placed}
        chosen: dict[str, Snapshot] = {}
        for node, held in placed.items():
            chosen[node] = picked = backups[node].pick(snapshot, held)
            print(
                f"{node}: snapshot {picked.id[:8]} ({picked.kind}, {picked.time[:19]}): "
                f"restoring {', '.join(held)}; their current data is replaced",
                file=out,
            )
            if safety:
                _safety_snapshot(spec, backups[node], picked, held, out)
        if not safety:
            print(
                "no safety snapshot (--no-safety-snapshot): the current data is lost for good",
                file=out,
            )
        if not yes:
            _confirm("Restore?")
        manager = found[manager_name].session
        whole = True
        for node, held in placed.items():
            # no apply may change these stacks while their data is being replaced
            lock = backups[node].session.hold_lock(LOCK, "apply or restore")
            started = time.monotonic()
            try:
                with contextlib.ExitStack() as paused:
                    for name in held:
                        paused.enter_context(swarm_paused(spec, manager, name, wait=True))
                    # one restore of the node's stacks: one extraction of the snapshot
                    for line in backups[node].restore(chosen[node].id, "all", held):
                        print(f"  {node}: restored {line}", file=out)
            finally:
                lock.close()
            print(f"{node}: restored in {time.monotonic() - started:.1f}s", file=out)
            whole = said_counts(backups[node], held, out) and whole
    return whole


# ── rebuild of one node ──────────────────────────────────────────────────────────────────


@dataclass
class NodeRebuildReport(RebuildReport):
    """A node's rebuild: as one box's, judged by the apply (its stacks' health gates and
    their probes through the edge's Caddy), then by the cluster's audit."""

    stale: list[str] = field(default_factory=list)  # the swarm entries of the lost box

    @property
    def ok(self) -> bool:
        audited = self.report is None or self.report.ok
        return self.apply_ok and self.snapshot is not None and audited

    def verdict(self) -> str:
        if self.ok:
            return (
                f"rebuild of {self.host} done: its stacks healthy, probed through the edge; "
                "the cluster's audit green"
            )
        if self.apply_ok and self.report is not None:
            return f"rebuild of {self.host} FAILED: the cluster's audit is NOT green (above)"
        return f"rebuild of {self.host} FAILED: see its stacks' results above"

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "stale_swarm_entries": list(self.stale)}


def remove_stale(
    manager: Remote,
    facts: swarm_core.Facts,
    node: str,
    fresh_id: str,
    stacks: list[str],
    *,
    out: IO[str],
    wait: float = STALE_WAIT,
) -> list[str]:
    """Before the fresh box joins as ``node``: its ``stacks`` scaled to 0 (else Swarm would
    start their pending tasks on it the moment it carries the node's label, before their
    data is back; their deploy sets the replicas again), and the lost box's entries removed
    from the swarm (``docker node rm --force`` on the manager). A lost box the manager still
    lists as ready (lost seconds ago: its heartbeats have not yet timed out) is waited for,
    up to ``wait`` seconds, then refused."""
    deadline = time.monotonic() + wait
    while True:
        try:
            stale = swarm_core.stale_members(facts, node, fresh_id)
            break
        except swarm_core.SwarmError:
            if time.monotonic() >= deadline:
                raise
            print(f"swarm: waiting for the manager to list the lost {node} down …", file=out)
            time.sleep(5)
            read = manager.run(swarm_commands.read(), 60, purpose="reading the swarm's nodes")
            facts = swarm_core.parse(read.stdout)
    manager.run(stackcmd.stop_stacks(stacks), 300, purpose=f"stopping the stacks of {node}")
    if stale:
        ids = [m.id for m in stale]
        manager.run(swarm_commands.remove_nodes(ids), purpose=f"removing the lost {node}")
    return [f"{m.id} ({m.hostname}, {m.state})" for m in stale]


def run_node_rebuild(
    spec: Spec, node: str, snapshot: str | None, out: IO[str], force: bool = False
) -> NodeRebuildReport:
    """``vpsctl rebuild --node NODE``: a fresh box in the place of a lost node, its data back
    from the node's newest snapshot (or ``snapshot``), timed phase by phase."""
    checked_node(spec, node)
    rebuild = NodeRebuildReport(f"{spec.host.name}/{node}")
    if not backed_up_stacks(spec, node):
        raise BackupError(
            f"node {node} holds no stack with backups: nothing to restore; `vpsctl apply -i "
            f"{spec.inventory}` rebuilds it"
        )
    started = time.monotonic()
    names = cluster.node_names(spec)
    with contextlib.ExitStack() as stack:
        sessions = _sessions(spec, names, stack)
        connected = time.monotonic()
        manager_name = spec.host.managers[0]
        manager = sessions[manager_name]
        steps = _RebuildSteps(spec, sessions[node], snapshot, rebuild, out, node=node)
        run = ClusterApply(
            spec, sessions, out, hooks={node: (steps.restore_files, steps.restore_databases)}
        )
        applier = run.appliers[node]
        running = [n for n, cs in applier.facts.projects().items() if cs]
        if running and not force:
            raise BackupError(
                f"{node} already runs {', '.join(sorted(running))}: rebuild is for a fresh "
                "box standing in for a lost one (--force to go ahead anyway)"
            )
        mark = time.monotonic()
        facts = run.appliers[manager_name].swarm_facts
        fresh = applier.swarm_facts
        if facts is not None:
            held = [n for n in applier.desired.stacks]
            fresh_id = fresh.node_id if fresh else ""
            rebuild.stale = remove_stale(manager, facts, node, fresh_id, held, out=out)
            for line in rebuild.stale:
                print(f"swarm: removed the lost {node}'s entry {line}", file=out)
        rebuild.phases["connect"] = connected - started
        rebuild.phases["swarm entry"] = time.monotonic() - mark
        try:
            results = run.apply()
        finally:
            steps.release(applier)
        steps.account(applier, results[node])
        for name, other in results.items():
            print(f"── node {name} ──", file=out)
            print(views.apply_text(other), file=out, end="")
        rebuild.apply_ok = all(r.ok for r in results.values())
        if rebuild.snapshot is None:
            raise BackupError("the rebuild stopped before restoring anything")
        rebuild.recorded = count_rows(steps.recorded)
        mark = time.monotonic()
        rebuild.report = audit_cluster(spec, sessions=sessions)
        rebuild.phases["audit"] = time.monotonic() - mark
        print(views.cluster_audit_text(rebuild.report), file=out, end="")
        rebuild.wall = time.monotonic() - started
    return rebuild
