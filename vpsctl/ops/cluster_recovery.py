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
- ``rebuild`` (no ``--node``): every node a fresh box (the whole cluster lost, its
  manager with it): ONE cluster apply bootstraps every node, forms a NEW swarm and deploys
  every stack, with the one-box rebuild's steps on every node holding backed-up stacks
  (a stale swarm cannot exist on fresh boxes: no entry to remove). Each node's snapshot is
  the newest holding its stacks, whichever node took it, or the ``--snapshot`` (one per
  such node) holding them: chosen for every node at once (:class:`SnapshotChoice`).
- ``backup --check``: the one repository checked once, through one node
  (:func:`repository_node`).

Rebuilding the swarm's only manager alone (``--node``) is refused: a fresh manager is a
new swarm, whose workers would have to leave the old one; the whole cluster's rebuild is
that case's way.
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
    ID,
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
    masked_timer,
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
        return None  # every node: the whole cluster's rebuild
    if node not in nodes:
        raise VpsctlError(
            f"--node {node}: {where} has no node {node}; its nodes: {', '.join(nodes)}"
        )
    if spec.host.managers == [node]:
        raise VpsctlError(
            f"--node {node}: {node} is the swarm's only manager ({where}): a fresh box in "
            "its place starts a NEW swarm, which the workers would have to leave theirs to "
            "join. Bring the box back if it can be; else make every node a fresh box and run "
            f"`vpsctl rebuild -i {spec.inventory}` (without --node: a new swarm on every "
            "node, each stack's data back from its newest snapshot). Declaring three "
            "managers (`manager: true`) keeps the swarm when one is lost"
        )
    return node


def checked_snapshots(snapshots: list[str], node: str | None, cluster_wide: bool) -> str | None:
    """``--snapshot`` values, refused before any connection: not an id (hex), or several
    where one box or one node is rebuilt (from one snapshot). The one given (or None) there;
    a whole cluster's are chosen per node (:class:`SnapshotChoice`)."""
    bad = [w for w in snapshots if not ID.fullmatch(w)]
    if bad:
        raise BackupError(f"--snapshot {', '.join(map(repr, bad))}: expected a snapshot id (hex)")
    if len(snapshots) > 1 and not cluster_wide:
        what = f"node {node}" if node is not None else "one box"
        raise BackupError(
            f"--snapshot {', '.join(snapshots)}: {what} is rebuilt from ONE snapshot; several "
            "(one per node) are for a whole cluster's rebuild"
        )
    return snapshots[0] if snapshots and not cluster_wide else None


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


def repository_node(spec: Spec) -> str:
    """The node through which the cluster's ONE repository is read (listed, checked): a
    manager that has the backup machinery (it holds stacks with backups), else the first
    node that has it."""
    nodes = list(backup_nodes(spec, []))
    if not nodes:
        raise BackupError(f"{spec.host_doc.file}: no node holds a stack with backups")
    return next((n for n in spec.host.managers if n in nodes), nodes[0])


@contextlib.contextmanager
def repository_backups(spec: Spec) -> Iterator[Backups]:
    """A checked :class:`Backups` on :func:`repository_node`: the cluster's repository."""
    node = repository_node(spec)
    with node_backups(spec, [node]) as found:
        yield found[node]


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
        rebuild.apply_ok = _apply_with_steps(run, {node: steps}, out)
        if rebuild.snapshot is None:
            raise BackupError("the rebuild stopped before restoring anything")
        rebuild.recorded = count_rows(steps.recorded)
        _audit(spec, rebuild, sessions, out)
        rebuild.wall = time.monotonic() - started
    return rebuild


def _apply_with_steps(run: ClusterApply, steps: dict[str, _RebuildSteps], out: IO[str]) -> bool:
    """Apply the cluster with each node's rebuild ``steps`` in its hooks, then account for
    them and print every node's result; whether every node's apply went through."""
    try:
        results = run.apply()
    finally:
        for node, node_steps in steps.items():
            node_steps.release(run.appliers[node])
    for node, node_steps in steps.items():
        node_steps.account(run.appliers[node], results[node])
    for name, result in results.items():
        print(f"── node {name} ──", file=out)
        print(views.apply_text(result), file=out, end="")
    return all(r.ok for r in results.values())


def _audit(
    spec: Spec,
    rebuild: RebuildReport,
    sessions: dict[str, Remote],
    out: IO[str],
    *,
    backup_timers: bool = True,
) -> None:
    """The cluster's audit closing a rebuild, timed as its last phase (a drill's nodes:
    their backup timers pass only masked)."""
    mark = time.monotonic()
    rebuild.report = audit_cluster(spec, sessions=sessions)
    if not backup_timers:
        rebuild.report.checks = [masked_timer(c) for c in rebuild.report.checks]
    rebuild.phases["audit"] = time.monotonic() - mark
    print(views.cluster_audit_text(rebuild.report), file=out, end="")


# ── rebuild of the whole cluster ─────────────────────────────────────────────────────────


@dataclass
class ClusterRebuildReport(RebuildReport):
    """The whole cluster's rebuild: its connect, apply and audit phases, each node's own
    report (its snapshot, its phases as one box's rebuild gives them), judged by the apply
    (every stack's gates, its probes through the edge) and then the cluster's audit."""

    nodes: dict[str, RebuildReport] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        restored = all(r.snapshot is not None for r in self.nodes.values())
        audited = self.report is not None and self.report.ok
        return self.apply_ok and restored and audited

    def verdict(self) -> str:
        if self.ok:
            return (
                f"rebuild of {self.host} done: {len(self.nodes)} node(s) restored, every stack "
                "healthy, probed through the edge; the cluster's audit green"
            )
        if self.apply_ok and self.report is not None:
            return f"rebuild of {self.host} FAILED: the cluster's audit is NOT green (above)"
        return f"rebuild of {self.host} FAILED: see the nodes' stacks' results above"

    def text(self) -> str:
        lines = super().text().splitlines()
        said = lines[:-2]  # the whole's phases; then each node's, the total, the verdict
        for node, report in self.nodes.items():
            chosen = report.snapshot
            said.append(
                f"  node {node}: snapshot {chosen.id[:8]} ({chosen.kind}, {chosen.time[:19]}, "
                f"taken on {chosen.node or '?'})"
                if chosen is not None
                else f"  node {node}: nothing restored"
            )
            said += [f"    {name:<17} {secs:6.1f}s" for name, secs in report.phases.items()]
        return "\n".join([*said, *lines[-2:]]) + "\n"

    def to_json(self) -> dict[str, Any]:
        found = super().to_json()
        del found["snapshot"]  # one per node
        found["nodes"] = {
            node: {
                "snapshot": report.snapshot.id if report.snapshot else None,
                "phases": {k: round(v, 2) for k, v in report.phases.items()},
            }
            for node, report in self.nodes.items()
        }
        return found


class SnapshotChoice:
    """The snapshot each node's rebuild restores, chosen for every node at once when the
    first node's files are due: the repository is first reachable then (a fresh box has
    no backup machinery before its apply installs it), and a ``--snapshot`` that fits no
    node, or a node none fits, stops the rebuild before any stack has started."""

    def __init__(self, given: list[str], placed: dict[str, list[str]]) -> None:
        self.given = given
        self.placed = placed  # node → its stacks with backups
        self.chosen: dict[str, Snapshot] | None = None

    def pick(self, node: str, backups: Backups) -> Snapshot:
        if self.chosen is None:
            self.chosen = choose_snapshots(backups, self.given, self.placed)
        return self.chosen[node]


def choose_snapshots(
    backups: Backups, given: list[str], placed: dict[str, list[str]]
) -> dict[str, Snapshot]:
    """Each node's snapshot, from ONE read of the repository's list: the newest holding its
    stacks, whichever node took it; with ``given`` (``--snapshot``s), the one among them
    holding all its stacks, each given one used by some node."""
    found = backups.snapshots()
    if not given:
        return {node: backups.pick(None, stacks, found) for node, stacks in placed.items()}
    chosen: dict[str, Snapshot] = {}
    for node, stacks in placed.items():
        fits = [
            w
            for w in given
            if any(s.id.startswith(w) and set(stacks) <= set(s.stacks) for s in found)
        ]
        if len(fits) != 1:
            raise BackupError(
                f"--snapshot {', '.join(given)}: "
                f"{'none holds' if not fits else ', '.join(fits) + ' each hold'} every stack "
                f"of node {node} ({', '.join(stacks)}); give one "
                f"snapshot per node holding backed-up stacks ({', '.join(placed)}), or none "
                f"for each node's newest (`vpsctl backup -i {backups.spec.inventory} --list` "
                "shows their nodes and stacks)"
            )
        chosen[node] = backups.pick(fits[0], stacks, found)
    unused = [w for w in given if not any(c.id.startswith(w) for c in chosen.values())]
    if unused:
        sets = "; ".join(f"{node}: {' '.join(stacks)}" for node, stacks in placed.items())
        raise BackupError(
            f"--snapshot {', '.join(unused)}: holds no node's whole set of stacks ({sets})"
        )
    return chosen


class _NodeSteps(_RebuildSteps):
    """A node's rebuild steps, its snapshot chosen with every other node's."""

    def __init__(
        self,
        choice: SnapshotChoice,
        spec: Spec,
        session: Remote,
        rebuild: RebuildReport,
        out: IO[str],
        *,
        node: str,
    ) -> None:
        super().__init__(spec, session, None, rebuild, out, node=node)
        self.choice = choice
        self.node_name = node

    def choose(self, backups: Backups) -> Snapshot:
        return self.choice.pick(self.node_name, backups)


def busy_refusal(spec: Spec, busy: dict[str, list[str]]) -> str:
    """Why a whole cluster's rebuild does not go ahead over nodes that run stacks (``busy``:
    node → its stacks), and the one-node rebuild of each fresh worker instead."""
    running = "; ".join(f"{node} runs {', '.join(stacks)}" for node, stacks in busy.items())
    fresh = [n for n in cluster.node_names(spec) if n not in busy and n not in spec.host.managers]
    instead = "".join(
        f"; `vpsctl rebuild -i {spec.inventory} --node {n}` rebuilds the lost worker {n} alone"
        for n in fresh
    )
    return (
        f"{running}: a rebuild without --node is for every node a fresh box (the whole "
        f"cluster lost){instead} (--force to go ahead anyway)"
    )


def run_cluster_rebuild(
    spec: Spec,
    snapshots: list[str],
    out: IO[str],
    force: bool = False,
    *,
    backup_timers: bool = True,
) -> ClusterRebuildReport:
    """``vpsctl rebuild`` of a cluster without ``--node``: every node a fresh box, ONE
    cluster apply (bootstrap, a new swarm, every stack) with, on each node holding stacks
    with backups, its snapshot's files restored before its stacks start and its databases
    once healthy; the cluster's audit; timed phase by phase.

    ``backup_timers=False`` (a drill): every node's backup timers masked instead of
    enabled, and the audit checks that they are masked."""
    checked_snapshots(snapshots, None, cluster_wide=True)
    if spec.host.backup is None:
        raise BackupError(
            f"{spec.host_doc.file}: no `backup:` section: no repository to rebuild the "
            f"cluster's data from; `vpsctl apply -i {spec.inventory}` rebuilds it empty"
        )
    placed = backup_nodes(spec, [])
    if not placed:
        raise BackupError(
            f"{spec.host_doc.file}: no node holds a stack with backups: nothing to restore; "
            f"`vpsctl apply -i {spec.inventory}` rebuilds the cluster"
        )
    rebuild = ClusterRebuildReport(f"{spec.host.name} (every node)")
    started = time.monotonic()
    names = cluster.node_names(spec)
    with contextlib.ExitStack() as stack:
        sessions = _sessions(spec, names, stack)
        connected = time.monotonic()
        choice = SnapshotChoice(snapshots, placed)
        steps: dict[str, _RebuildSteps] = {}
        for node in placed:
            rebuild.nodes[node] = RebuildReport(f"{spec.host.name}/{node}")
            steps[node] = _NodeSteps(
                choice, spec, sessions[node], rebuild.nodes[node], out, node=node
            )
        hooks = {n: (s.restore_files, s.restore_databases) for n, s in steps.items()}
        run = ClusterApply(spec, sessions, out, hooks=hooks, backup_timers=backup_timers)
        busy = {  # in host.yaml's order
            name: sorted(
                p for p, containers in run.appliers[name].facts.projects().items() if containers
            )
            for name in spec.host.nodes or {}
        }
        busy = {name: stacks for name, stacks in busy.items() if stacks}
        if busy and not force:
            raise BackupError(busy_refusal(spec, busy))
        rebuild.phases["connect"] = connected - started
        mark = time.monotonic()
        rebuild.apply_ok = _apply_with_steps(run, steps, out)
        rebuild.phases["apply (every node)"] = time.monotonic() - mark
        missing = [n for n, r in rebuild.nodes.items() if r.snapshot is None]
        if missing:
            raise BackupError(
                f"the rebuild stopped before restoring anything on {', '.join(missing)}"
            )
        rebuild.recorded = count_rows(row for s in steps.values() for row in s.recorded)
        _audit(spec, rebuild, sessions, out, backup_timers=backup_timers)
        rebuild.wall = time.monotonic() - started
    return rebuild


def live_counts(spec: Spec) -> dict[tuple[str, str, str], int]:
    """Every node's live row counts of its own backed-up stacks (one session each, read at
    once), keyed (stack, item, table) as one box's."""
    placed = backup_nodes(spec, [])
    with (
        node_backups(spec, list(placed)) as backups,
        ThreadPoolExecutor(max_workers=max(1, len(placed))) as pool,
    ):
        found = list(pool.map(lambda node: backups[node].counts(placed[node]), placed))
    return {key: count for node_counts in found for key, count in node_counts.items()}
