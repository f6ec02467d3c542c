"""Applying a cluster (host.yaml's ``nodes``): one :class:`NodeApplier` per node, sequenced
across the nodes by :class:`ClusterApply`.

Each node is applied as one box is (its own facts, plan, files, images, health gates,
rollbacks, manifest and journal), with two differences: its stacks are Swarm services,
deployed on a manager from the files the node holds (:class:`SwarmRuntime`), and its
stacks' probes go through the edge node's Caddy. The order across nodes:

1. every node's bootstrap (its firewall letting in the swarm's ports from the other nodes
   only), its network and its own files;
2. the swarm formed or converged (:func:`vpsctl.ops.swarm.form_swarm`): members, labels,
   the encrypted overlay;
3. every node's stacks, the edge node last (Caddy's first start finds every upstream); the
   stacks of the other nodes are probed through the edge once it has converged (a stack
   failing its probes is rolled back on its own node);
4. every node's prune, manifest and journal.

Health gates are vpsctl's own (each service's healthcheck on THIS deploy's container, then
the probes through Caddy), not Swarm's ``update_config.failure_action: rollback``: Swarm
judges one service's tasks alone, never a stack's probes through the edge nor a database
restored, and vpsctl's rollback also puts the stack's previous files back on its node.
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
from vpsctl.host.remote import Remote
from vpsctl.ops import swarm, targets
from vpsctl.ops.apply.applier import LOCK, Applier
from vpsctl.ops.apply.bootstrap import deploy_module
from vpsctl.ops.apply.result import ApplyResult, StackOutcome
from vpsctl.ops.apply.runtime import ComposeRuntime, SwarmRuntime
from vpsctl.spec.studio import Spec

# a rebuild's steps on one node: before its stacks start, and after each is healthy
Hooks = tuple[Callable[[Applier], None] | None, Callable[[Applier, str], str] | None]


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
        destroy_data: bool = False,
        hooks: Hooks | None = None,
    ) -> None:
        self.node = node
        self.manager = manager
        self.peers = peers
        self.is_edge_node = node == spec.host.edge_node
        # whether the edge (on its node) routes as the spec says, before this run changes it
        self.edge_steady_now = False
        self.stashed: list[StackOutcome] = []  # stacks to probe once the edge has converged
        self.swarm_facts: swarm_core.Facts | None = None  # read with its facts
        before, after = hooks if hooks is not None else (None, None)
        super().__init__(
            spec, session, out, destroy_data=destroy_data, before_stacks=before, after_healthy=after
        )
        self.edge_session = edge_session

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
        """This node's bootstrap: host.yaml's open ports on the edge node, only its SSH port
        elsewhere; the swarm's ports for the other nodes' addresses."""
        host = self.spec.host
        node = (host.nodes or {})[self.node]
        ports = host.open_ports if self.is_edge_node else [node.ssh_port]
        udp = firewall.ports_for(self.spec).udp if self.is_edge_node else ()
        return deploy_module("bootstrap").Settings(
            timezone=host.timezone,
            swap_bytes=host.swap,
            swappiness=host.swappiness,
            open_ports=tuple(ports),
            udp_ports=udp,
            swarm_peers=self.peers,
            swarm_node=True,
        )

    def make_runtime(self) -> ComposeRuntime:
        return SwarmRuntime(self, self.manager)

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
    ) -> None:
        """``hooks``: a node's rebuild steps (its files restored before its stacks start,
        each stack's databases once healthy), by node."""
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
                destroy_data=destroy_data,
                hooks=(hooks or {}).get(name),
            )
            for name in self.names
        }
        moved = cluster.move_notes({name: a.plan for name, a in self.appliers.items()})
        if moved:
            raise VpsctlError("; ".join(moved) + "; nothing was changed")
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
            {name: applier.plan for name, applier in self.appliers.items()},
            swarm_lines,
            overlay_kind(self.encrypted),
            [*notes, cluster.visibility_note(spec)],
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
        for name, applier in self.appliers.items():
            applier.finish(results[name], started)
        return results
