"""Applying a cluster (host.yaml's ``nodes``): one :class:`NodeApplier` per node, sequenced
across the nodes by :class:`ClusterApply`.

Each node is applied as one box is (its own facts, plan, files, images, health gates,
rollbacks, manifest and journal), with two differences: its stacks are Swarm services,
deployed on a manager from the files the node holds (:class:`SwarmRuntime`), and its
stacks' probes go through the edge node's Caddy. A stack placed by labels is deployed by
ONE of the nodes it may run on (:func:`vpsctl.core.cluster.stack_node`: planned against its
containers wherever Swarm put them, gated on the node that runs its task); the others hold
its files and images. The order across nodes:

1. every node's bootstrap (its firewall letting in the swarm's ports from the other nodes
   only), its network, its own files and those of the stacks placed by labels it holds
   (the previous version of those it replaces kept: the deploying node's rollback puts
   them back there too);
2. the swarm formed or converged (:func:`vpsctl.ops.swarm.form_swarm`): members, labels,
   the encrypted overlay;
3. every node's stacks, the edge node last (Caddy's first start finds every upstream); the
   stacks of the other nodes are probed through the edge once it has converged (a stack
   failing its probes is rolled back on its own node);
4. every node's prune, manifest and journal.

Health gates are vpsctl's own (each service's healthcheck on THIS deploy's container, then
the probes through Caddy), not Swarm's ``update_config.failure_action: rollback``: Swarm
judges one service's tasks alone, never a stack's probes through the edge nor a database
restored, and vpsctl's rollback also puts the stack's previous files back on its node (and
on every node holding them, for a stack placed by labels).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import IO, Any

from vpsctl.core import cluster, firewall
from vpsctl.core import swarm as swarm_core
from vpsctl.core.cluster import ClusterPlan
from vpsctl.core.facts import HostFacts, parse
from vpsctl.core.plan import StackChange
from vpsctl.core.render import Desired
from vpsctl.core.swarm import overlay_kind
from vpsctl.errors import VpsctlError
from vpsctl.host.remote import DeployReport, Remote, Session
from vpsctl.ops import swarm, targets
from vpsctl.ops.apply.applier import LOCK, Applier
from vpsctl.ops.apply.bootstrap import deploy_module, run_bootstrap
from vpsctl.ops.apply.move import Moves
from vpsctl.ops.apply.result import ApplyResult, StackOutcome
from vpsctl.ops.apply.runtime import ComposeRuntime, SwarmRuntime
from vpsctl.spec.studio import Spec

# a rebuild's steps on one node: before its stacks start, and after each is healthy
Hooks = tuple[Callable[[Applier], None] | None, Callable[[Applier, str], str] | None]


def node_settings(spec: Spec, node: str, peers: tuple[str, ...]) -> Any:
    """Node ``node``'s bootstrap: host.yaml's open ports on the edge node, only its SSH port
    elsewhere; the swarm's ports for ``peers`` (the other nodes' addresses). Its ``ports``
    are what the node's firewall lets in (what the audit expects to read back)."""
    host = spec.host
    box = (host.nodes or {})[node]
    edge = node == host.edge_node
    ports = host.open_ports if edge else [box.ssh_port]
    udp = firewall.ports_for(spec).udp if edge else ()
    return deploy_module("bootstrap").Settings(
        timezone=host.timezone,
        swap_bytes=host.swap,
        swappiness=host.swappiness,
        open_ports=tuple(ports),
        udp_ports=udp,
        swarm_peers=peers,
        swarm_node=True,
    )


class NodeApplier(Applier):
    """One node's part of a cluster's apply."""

    def __init__(
        self,
        spec: Spec,
        node: str,
        session: Remote,
        out: IO[str],
        *,
        manager: Remote,
        edge_session: Remote,
        peers: tuple[str, ...],
        sessions: Mapping[str, Remote] | None = None,
        destroy_data: bool = False,
        hooks: Hooks | None = None,
        override: Callable[[Desired], None] | None = None,
        backup_timers: bool = True,
    ) -> None:
        self.node = node
        self.manager = manager
        # every node's session, by name: the health gate of a stack placed by labels reads
        # its containers on the node Swarm put its task on
        self.sessions: Mapping[str, Remote] = sessions or {node: session}
        # every node's applier, by name (:class:`ClusterApply` sets it): a rollback of a
        # stack placed by labels puts its previous files back on the nodes holding it too
        self.nodes: Mapping[str, Applier] = {node: self}
        self.peers = peers
        self.is_edge_node = node == spec.host.edge_node
        # whether the edge (on its node) routes as the spec says, before this run changes it
        self.edge_steady_now = False
        self.stashed: list[StackOutcome] = []  # stacks to probe once the edge has converged
        self.swarm_facts: swarm_core.Facts | None = None  # read with its facts
        # stacks this run moves from this node to another (their volumes here go once they
        # serve there), the ones whose move failed (back here: not removed), what bringing
        # them back did, and the stacks arriving with data (:class:`Moves`)
        self.moved_away: dict[str, str] = {}  # stack → why its volumes here go
        self.kept: set[str] = set()
        self.returned: list[StackOutcome] = []
        self.arriving: dict[str, Moves] = {}
        # a rebuild's steps on this node (its files before its stacks, each stack's
        # databases once healthy), run with the moves' own (:meth:`restore_arriving`)
        self.rebuild_hooks: Hooks = hooks if hooks is not None else (None, None)
        super().__init__(
            spec,
            session,
            out,
            destroy_data=destroy_data,
            override=override,
            backup_timers=backup_timers,
        )
        self.edge_session = edge_session
        self.before_stacks = self.restore_arriving
        self.after_healthy = self.restore_arrived

    def read_facts(self) -> HostFacts:
        """The node's facts and its swarm's, in ONE command (the plan's read): the swarm's
        are kept for the cluster's plan (:attr:`swarm_facts`)."""
        result = self.session.run(
            targets.node_facts_script(), timeout=120, purpose="reading the node"
        )
        found = targets.node_facts(parse(result.stdout), result.stdout)
        self.swarm_facts = found.swarm
        return found.host

    @property
    def label(self) -> str:
        return f"{self.spec.host.name}/{self.node}"

    def share(self, desired: Desired) -> Desired:
        return cluster.node_view(self.spec, desired, self.node)

    def settings(self) -> Any:
        return node_settings(self.spec, self.node, self.peers)

    def make_runtime(self) -> ComposeRuntime:
        return SwarmRuntime(self, self.manager, self.sessions)

    @property
    def swarm_runtime(self) -> SwarmRuntime:
        runtime = self.runtime
        assert isinstance(runtime, SwarmRuntime)  # make_runtime's
        return runtime

    def removals(self) -> list[str]:
        return [name for name in super().removals() if name not in self.kept]

    def holding(self, name: str) -> list[Applier]:
        """When this node deploys ``name`` (placed by labels): the other nodes it may run
        on that replaced its files in this run (their begin, before any node's stacks) and
        keep the previous ones until this node's gate judges it."""
        held = cluster.holders(self.spec, name)
        if not held or cluster.stack_node(self.spec, name) != self.node:
            return []
        return [
            self.nodes[n] for n in held if n in self.nodes and name in self.nodes[n].held_created
        ]

    def finish(self, result: ApplyResult, started: float) -> None:
        """As one box's; first, the previous files this node kept of a stack it holds whose
        deploying node did not change it (nothing will put them back) are removed."""
        for name in list(self.held_created):
            self.discard_copy(self, name)
        super().finish(result, started)

    def placed_elsewhere(self, name: str) -> bool:
        spec = self.spec
        return (
            name in spec.host.stacks
            and name in spec.stacks
            and self.node not in cluster.candidates(spec, name)
        )

    def defers_backup_files(self) -> bool:
        """While stacks move away from this node, its backup script keeps knowing them
        (a move that fails brings a stack back here, backed up as before): the new backup
        files are installed once every move has served elsewhere (:meth:`ClusterApply.
        _apply`), and never when one came back."""
        return bool(self.moved_away)

    def keeps_stale_backup_files(self) -> bool:
        return bool(self.kept)

    def volumes_fate(self, name: str) -> str:
        """``--destroy-data``'s, or for a stack this run moved away, removed: its pre-move
        snapshot holds its data, restored and serving on its new node."""
        moved = self.moved_away.get(name)
        return f"removed: {moved}" if moved is not None else super().volumes_fate(name)

    def restore_arriving(self, applier: Applier) -> None:
        """Before any stack starts here: a rebuild's files, then those of the stacks moving
        here with data."""
        before = self.rebuild_hooks[0]
        if before is not None:
            before(applier)
        by_moves: dict[int, tuple[Moves, list[str]]] = {}
        for stack, moves in self.arriving.items():
            by_moves.setdefault(id(moves), (moves, []))[1].append(stack)
        for moves, stacks in by_moves.values():
            moves.restore_files(applier, stacks)

    def restore_arrived(self, applier: Applier, name: str) -> str:
        """Once stack ``name`` is healthy here: a rebuild's databases, or its own when it
        moved here with data. "" when done, else what failed."""
        after = self.rebuild_hooks[1]
        failed = after(applier, name) if after is not None else ""
        moves = self.arriving.get(name)
        if failed or moves is None:
            return failed
        return moves.restore_databases(applier, name)

    def edge_steady(self, changes: dict[str, StackChange]) -> bool:
        if self.is_edge_node:
            return super().edge_steady(changes)
        return self.edge_steady_now

    def probe_deferred(self, result: ApplyResult, deferred: list[StackOutcome]) -> None:
        """On the edge node: now (its edge has just converged). Elsewhere: kept until the
        edge node has converged (:meth:`probe_stashed`)."""
        if self.is_edge_node:
            super().probe_deferred(result, deferred)
        else:
            self.stashed = deferred

    def probe_stashed(self, result: ApplyResult) -> None:
        """The probes kept for the edge: through it now, a failing stack rolled back here."""
        if self.stashed:
            super().probe_deferred(result, self.stashed)
            self.stashed = []


class ClusterApply:
    """A cluster's apply over one session per node (``sessions``, by node name)."""

    def __init__(
        self,
        spec: Spec,
        sessions: dict[str, Remote],
        out: IO[str],
        *,
        destroy_data: bool = False,
        hooks: Mapping[str, Hooks] | None = None,
        overrides: Mapping[str, Callable[[Desired], None]] | None = None,
        backup_timers: bool = True,
    ) -> None:
        """``hooks``: a node's rebuild steps (its files restored before its stacks start,
        each stack's databases once healthy), by node; ``overrides``: a rollback's previous
        versions of a node's stacks, put in place of what the spec renders for them;
        ``backup_timers=False`` (a drill's nodes): every node's backup timers masked, never
        enabled."""
        self.spec = spec
        self.out = out
        self.names = cluster.node_names(spec)
        nodes = spec.host.nodes or {}
        addresses = {name: targets.node_address(spec, name) for name in self.names}
        manager = sessions[spec.host.managers[0]]
        edge = spec.host.edge_node
        assert edge is not None  # checks: exactly one edge node
        self.swarm_nodes = [
            swarm.SwarmNode(
                name,
                sessions[name],
                addresses[name],
                manager=name in spec.host.managers,
                labels=dict(nodes[name].labels),
            )
            for name in self.names
        ]
        self.appliers = {
            name: NodeApplier(
                spec,
                name,
                sessions[name],
                out,
                manager=manager,
                edge_session=sessions[edge],
                peers=tuple(a for n, a in addresses.items() if n != name),
                sessions=sessions,
                destroy_data=destroy_data,
                hooks=(hooks or {}).get(name),
                override=(overrides or {}).get(name),
                backup_timers=backup_timers,
            )
            for name in self.names
        }
        for applier in self.appliers.values():
            applier.nodes = self.appliers
        # a stack placed by labels is planned by its deploying node, wherever its task runs
        placed = cluster.placed_facts(spec, {name: a.facts for name, a in self.appliers.items()})
        for name, applier in self.appliers.items():
            if placed[name] is not applier.facts:
                applier.facts = placed[name]
                applier.plan = applier.planned(placed[name])
        plans = cluster.mark_moves(spec, {name: a.plan for name, a in self.appliers.items()})
        for name, applier in self.appliers.items():
            applier.plan = plans[name]
        found = cluster.moves(spec, plans)
        refused = cluster.move_refusals(spec, found)
        if refused:
            raise VpsctlError("; ".join(refused) + "; nothing was changed")
        self.moves = Moves(found, self.appliers)
        edge_applier = self.appliers[edge]
        changes = {s.stack: s for s in edge_applier.plan.stacks}
        steady = edge_applier.edge_steady(changes)
        for applier in self.appliers.values():
            applier.edge_steady_now = steady
        self.encrypted = spec.host.overlay == "encrypted"
        # strict: nodes that cannot form one swarm are refused here, before any change
        swarm_lines, notes = swarm.plan_lines(
            [n.node for n in self.swarm_nodes],
            {name: a.swarm_facts for name, a in self.appliers.items()},
            encrypted=self.encrypted,
            strict=True,
        )
        self.plan = ClusterPlan(
            spec.host.name,
            plans,
            swarm_lines,
            overlay_kind(self.encrypted),
            [
                *notes,
                *cluster.placement_notes(spec),
                *cluster.move_notes(spec, plans),
                cluster.visibility_note(spec),
            ],
        )

    def apply(self) -> dict[str, ApplyResult]:
        """Converge every node (see the module); every node's journal records the run."""
        locks = [a.session.hold_lock(LOCK, "apply") for a in self.appliers.values()]
        try:
            return self._apply()
        finally:
            for lock in locks:
                lock.close()

    def _apply(self) -> dict[str, ApplyResult]:
        started = time.monotonic()
        results = {name: ApplyResult(a.plan) for name, a in self.appliers.items()}
        # the moving stacks' data first, while their old nodes are as the last run left them
        self.moves.snapshot()
        try:
            for name, applier in self.appliers.items():
                applier.begin(results[name])
            # it says each change, the undeclared nodes and its warnings as it goes
            swarm.form_swarm(
                self.swarm_nodes,
                lambda line: print(f"swarm: {line}", file=self.out, flush=True),
                encrypted=self.encrypted,
            )
            for name in self.names:  # the edge node last
                self.appliers[name].stacks(results[name])
            for name, applier in self.appliers.items():
                applier.probe_stashed(results[name])
        except BaseException:
            # stopped half-way: a moving stack not yet serving on its new node serves on its
            # old one again
            self.moves.settle(self.arrived(results))
            raise
        self.moves.settle(self.arrived(results))
        for name, applier in self.appliers.items():
            results[name].outcomes += applier.returned
            if applier.moved_away and not applier.kept:  # every move away served there
                applier.setup.backup_files()
            applier.finish(results[name], started)
        return results

    def arrived(self, results: dict[str, ApplyResult]) -> dict[str, StackOutcome | None]:
        """Each moving stack's outcome on its new node (``None``: it never got that far)."""
        return {
            move.stack: next((o for o in results[move.new].outcomes if o.stack == move.stack), None)
            for move in self.moves.found
        }


def bootstrap_nodes(spec: Spec, out: IO[str]) -> dict[str, DeployReport]:
    """``apply --only bootstrap`` of a cluster: each node's bootstrap as a cluster's apply
    runs it (:func:`node_settings`: the edge node opens host.yaml's ports, every node its
    SSH port, and the swarm's ports to the other nodes' addresses only), one node after
    another in apply order; no swarm formed, no stack touched."""
    names = cluster.node_names(spec)
    addresses = {name: targets.node_address(spec, name) for name in names}
    reports: dict[str, DeployReport] = {}
    for name in names:
        peers = tuple(a for n, a in addresses.items() if n != name)
        with Session(targets.node_target(spec, name)) as session:
            reports[name] = run_bootstrap(
                session, spec, out, node_settings(spec, name, peers), f"{spec.host.name}/{name}"
            )
    return reports
