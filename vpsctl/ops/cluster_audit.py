"""A cluster's audit (host.yaml's ``nodes``): every node read at once, each node's share of
the studio judged as one box is, then what only the swarm knows — in one command.

The reads: one thread, one SSH connection and ONE command per node (on stdin, as one box's
read goes), which carries

- the node's facts and its swarm's (:func:`vpsctl.ops.targets.node_facts_script`) and the
  audit's read of the box (containers, memory, disk, load, firewall, listening sockets);
- on a manager, every service's replicas and the node each task Swarm wants running is on
  (:func:`vpsctl.host.commands.swarm.services_read`);
- on the edge node, the probes of EVERY stack through its Caddy (Caddy reaches the other
  nodes' stacks over the overlay, as a visitor's request does);
- on the node that holds a Ghost (its Content API key is kept there, root-only) or an app
  with a first launch, those reads — through the edge node's Caddy at the edge node's
  address, as a stranger meets them, so the key never leaves its node.

The judging: each node's share (:func:`vpsctl.core.cluster.node_view`) by
:func:`vpsctl.ops.audit.judge`, against that node's own memory, os_reserve and firewall
(:func:`vpsctl.ops.apply.cluster.node_settings`); then the cluster's own checks (group
``cluster``): each declared node a member of the swarm, ``ready`` and ``active``; each
service at its desired replicas; each stack's running tasks on the node the spec pins it
to (a stack placed by labels: on a node they match, its container judged on the node that
runs it); a member the spec does not declare (a warning). A node that cannot be read is a failing
check naming it and why, never a crash. Every check carries its node.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from vpsctl.core import cluster
from vpsctl.core import swarm as swarm_core
from vpsctl.core.render import Desired
from vpsctl.errors import VpsctlError, display_path
from vpsctl.host import probes
from vpsctl.host.commands import swarm as swarm_commands
from vpsctl.host.remote import Remote, Session, output_tail
from vpsctl.ops import audit, targets
from vpsctl.ops.apply.cluster import node_settings
from vpsctl.ops.audit import FAIL, OK, WARN, Check, Report
from vpsctl.ops.inputs import render_spec
from vpsctl.spec.studio import Spec

CLUSTER = "cluster"  # the group of the swarm's own checks
SERVICES_UNREAD = "@@swarm-services-unread"


def node_share(spec: Spec, node: str) -> Spec:
    """Node ``node``'s share of ``spec``: the stacks that may run on it (a stack placed by
    labels on each of its candidates: its containers are judged where Swarm put them), its
    own ``memory`` and ``os_reserve`` (what one box's memory budget is judged against)."""
    box = (spec.host.nodes or {})[node]
    stacks = {n: s for n, s in spec.stacks.items() if node in cluster.candidates(spec, n)}
    update: dict[str, Any] = {"memory": box.memory, "os_reserve": spec.host.node_os_reserve(node)}
    if not any(s.backups for s in stacks.values()):
        update["backup"] = None  # a node holding no stack with backups has no backup machinery
    return replace(spec, host=spec.host.model_copy(update=update), stacks=stacks)


def swarm_name(stack: str, service: str) -> str:
    """A stack's service as ``docker stack deploy`` names it on the swarm."""
    return f"{stack}_{service}"


@dataclass(frozen=True)
class NodeRead:
    """One node's audit: its share's checks, and its whole answer ("" when not read)."""

    node: str
    checks: list[Check]
    output: str = ""


class ClusterAudit:
    """The audit of ``spec``'s nodes, over ``sessions`` (by node name) when given (an apply's),
    else a connection of its own per node."""

    def __init__(
        self,
        spec: Spec,
        desired: Desired | None = None,
        sessions: Mapping[str, Remote] | None = None,
    ) -> None:
        self.spec = spec
        self.desired = desired or render_spec(spec)
        self.sessions = dict(sessions or {})
        self.names = list(spec.host.nodes or {})
        self.addresses: dict[str, str] = {}
        self.unknown: dict[str, str] = {}  # node → why its address is not known
        for name in self.names:
            try:
                self.addresses[name] = targets.node_address(spec, name)
            except VpsctlError as exc:
                self.unknown[name] = str(exc)
        self.trust = probes.trust_for(spec)  # tls: pebble: Pebble's roots, read here once
        # what each node's firewall lets in; before the threads (the bootstrap's settings
        # load a module: once, not raced by one thread per node)
        self.ports = {
            name: node_settings(
                spec, name, tuple(a for n, a in self.addresses.items() if n != name)
            ).ports
            for name in self.names
        }
        self.probes = probes.targets_for(spec)
        self.served = audit.served_names(spec)

    def script(self, node: str) -> str:
        """Node ``node``'s ONE read (see the module)."""
        spec = self.spec
        script = targets.node_facts_script() + audit.audit_script()
        if node in spec.host.managers:
            script += f"( {swarm_commands.services_read()} ) || echo '{SERVICES_UNREAD}'\n"
        is_edge = node == spec.host.edge_node
        edge = audit.LOCAL if is_edge else self.addresses.get(spec.host.edge_node or "", "")
        through = self.probes if is_edge else []
        return script + audit.caddy_reads(node_share(spec, node), self.trust, through, edge)

    def read(self, node: str) -> NodeRead:
        """Read node ``node`` and judge its share; a node that cannot be read is a failing
        check saying why."""
        if node in self.unknown:
            return self.unread(node, self.unknown[node])
        try:
            with contextlib.ExitStack() as stack:
                session = self.sessions.get(node) or stack.enter_context(
                    Session(targets.node_target(self.spec, node))
                )
                return self.judge(node, session)
        except VpsctlError as exc:
            return self.unread(node, str(exc))

    def judge(self, node: str, session: Remote) -> NodeRead:
        """One node's read over ``session``, judged; Ghost's totals kept on the node."""
        result = session.feed(
            audit.RUN_FROM_STDIN,
            self.script(node).encode(),
            timeout=180,
            check=False,  # the read judges its own output (its end marker)
            purpose=f"the audit read of node {node}",
        )
        if "@@audit-end" not in result.stdout:
            return self.unread(node, f"its audit read failed: {output_tail(result, 4, 300)}")
        spec = self.spec
        judged = audit.judge(
            node_share(spec, node),
            cluster.node_view(spec, self.desired, node),
            result.stdout,
            self.probes if node == spec.host.edge_node else [],
            ports=self.ports[node],
            served=self.served,
        )
        if judged.totals:  # the next audit's drop check, on the node that holds the Ghost
            audit.save_state(session, judged.facts, judged.totals)
        return NodeRead(node, [replace(c, node=node) for c in judged.checks], result.stdout)

    def unread(self, node: str, why: str) -> NodeRead:
        """The failing check of a node that could not be read."""
        value = f"node {node} could not be read: {why}"
        bar = "reachable over SSH, its read answered"
        return NodeRead(node, [Check("host", f"node {node} read", FAIL, value, bar, node)])

    def run(self) -> Report:
        """Every node read at once, then judged (see the module)."""
        started = time.monotonic()
        workers = max(1, len(self.names))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="audit") as pool:
            reads = list(pool.map(self.read, self.names))
        report = Report(self.spec.host.name, nodes=list(self.names))
        for node_read in reads:
            report.checks += node_read.checks
        report.checks += self.cluster_checks({r.node: r.output for r in reads})
        report.seconds = time.monotonic() - started
        return report

    def cluster_checks(self, outputs: Mapping[str, str]) -> list[Check]:
        """The swarm's checks, from the first manager whose read answered."""
        managers = self.spec.host.managers
        problems: list[str] = []
        for manager in managers:
            output = outputs.get(manager, "")
            if not output:
                problems.append(f"{manager} was not read")
                continue
            try:
                facts = swarm_core.parse(output)
                services = swarm_core.parse_services(output)
            except swarm_core.SwarmFactsError as exc:
                problems.append(f"{manager}: {exc}")
                continue
            if not facts.members:
                problems.append(f"{manager} lists no swarm node (is it a manager of one?)")
                continue
            return swarm_checks(self.spec, facts.members, services, manager)
        value = "no manager's swarm read: " + "; ".join(problems)
        bar = f"a manager ({', '.join(managers)}) lists the swarm"
        return [Check(CLUSTER, "swarm read", FAIL, value, bar, ",".join(managers))]


def audit_cluster(
    spec: Spec, desired: Desired | None = None, sessions: Mapping[str, Remote] | None = None
) -> Report:
    """Audit every node of ``spec`` in one command (see the module)."""
    return ClusterAudit(spec, desired, sessions).run()


# ── the swarm's own checks (pure) ────────────────────────────────────────────────────────


def swarm_checks(
    spec: Spec,
    members: tuple[swarm_core.Member, ...],
    services: swarm_core.Services | None,
    manager: str,
) -> list[Check]:
    """The declared nodes against the members ``manager`` lists, then each service's
    replicas and where its tasks run (``services`` None: the manager's services read
    failed)."""
    checks = member_checks(spec, members)
    if services is None:
        value = f"{manager} could not list the services (`docker service ls` failed)"
        bar = "every service's replicas read"
        return [*checks, Check(CLUSTER, "services read", FAIL, value, bar, manager)]
    hosts = {m.hostname: m.labels.get(swarm_core.NODE_LABEL, m.hostname) for m in members}
    return checks + replica_checks(spec, services) + placement_checks(spec, services, hosts)


def member_checks(spec: Spec, members: tuple[swarm_core.Member, ...]) -> list[Check]:
    """Each declared node a member, ``ready`` and ``active``; a member no node is: a
    warning."""
    inventory = display_path(spec.inventory)
    by_node = {m.labels.get(swarm_core.NODE_LABEL, ""): m for m in members}
    checks: list[Check] = []
    for node in spec.host.nodes or {}:
        member = by_node.get(node)
        label = f"node {node} in the swarm"
        if member is None:
            value = (
                f"not a member (no swarm node is labelled {swarm_core.NODE_LABEL}={node}): "
                f"`vpsctl apply -i {inventory}` joins it"
            )
            checks.append(Check(CLUSTER, label, FAIL, value, "a member", node))
            continue
        value = f"{member.role} {member.hostname} at {member.address}"
        checks.append(Check(CLUSTER, label, OK, value, "a member", node))
        checks.append(_ready(node, member))
        checks.append(_active(node, member))
    declared = set(spec.host.nodes or {})
    for member in members:
        if member.labels.get(swarm_core.NODE_LABEL, "") in declared:
            continue
        value = (
            f"{member.role} at {member.address} ({member.state}, {member.availability}) is not "
            "a node of host.yaml: declare it, or on it `docker swarm leave`, then "
            f"`docker node rm {member.hostname}` on a manager"
        )
        label = f"swarm member {member.hostname}"
        checks.append(Check(CLUSTER, label, WARN, value, "only declared nodes", member.hostname))
    return checks


def _ready(node: str, member: swarm_core.Member) -> Check:
    label, bar = f"node {node} status", "ready"
    if member.state == "ready":
        return Check(CLUSTER, label, OK, "ready", bar, node)
    value = (
        f"{member.state or 'unknown'}: the managers lost it (is the box up, its docker running, "
        "the swarm's ports open between the nodes?); its tasks are not served"
    )
    return Check(CLUSTER, label, FAIL, value, bar, node)


AVAILABILITY = {
    "pause": "paused: Swarm starts no new task there (a failing one is not replaced)",
    "drain": "drained: Swarm moved its tasks away and places none there (its pinned stacks "
    "run nowhere)",
}


def _active(node: str, member: swarm_core.Member) -> Check:
    label, bar = f"node {node} availability", "active"
    if member.availability == "active":
        return Check(CLUSTER, label, OK, "active", bar, node)
    said = AVAILABILITY.get(member.availability, member.availability or "unknown")
    value = (
        f"{said}: `docker node update --availability active {member.hostname}` on a manager "
        "puts it back"
    )
    return Check(CLUSTER, label, FAIL, value, bar, node)


def replica_checks(spec: Spec, services: swarm_core.Services) -> list[Check]:
    """Each declared service running as many replicas as Swarm wants, at least one."""
    inventory = display_path(spec.inventory)
    found = {s.name: s for s in services.services}
    checks: list[Check] = []
    for stack, declared in spec.stacks.items():
        node = cluster.stack_node(spec, stack)
        for service in declared.services:
            name = swarm_name(stack, service)
            label, bar = f"service {stack}/{service} replicas", "running = desired, ≥ 1"
            have = found.get(name)
            if have is None:
                value = f"no service {name} on the swarm: `vpsctl apply -i {inventory}` deploys it"
                checks.append(Check(CLUSTER, label, FAIL, value, bar, node))
                continue
            good = have.running == have.desired and have.desired > 0
            value = f"{have.running}/{have.desired}"
            if not good:
                errors = sorted({t.error for t in services.tasks if t.service == name and t.error})
                value += f" ({'; '.join(errors)})" if errors else ""
                value += (
                    f": stack {stack}'s {service} is not at its desired replicas "
                    f"(`docker service ps {name}` on a manager says why)"
                )
            checks.append(Check(CLUSTER, label, OK if good else FAIL, value, bar, node))
    return checks


def placement_checks(
    spec: Spec, services: swarm_core.Services, hosts: Mapping[str, str]
) -> list[Check]:
    """Each stack's running tasks on the node the spec pins it to, or for a stack placed by
    labels on a node they match (``hosts``: a member's host name → its node's name)."""
    checks: list[Check] = []
    for stack, declared in spec.stacks.items():
        want = cluster.candidates(spec, stack)
        names = {swarm_name(stack, service) for service in declared.services}
        running = [t for t in services.tasks if t.service in names and t.running]
        on = sorted({hosts.get(t.node, t.node) for t in running})
        node = cluster.stack_node(spec, stack)
        if cluster.by_labels(spec, stack):
            label, bar = f"stack {stack} on its labels' nodes", f"on one of {', '.join(want)}"
            why = f"where its labels {cluster.placement_text(spec, stack)} place it"
        else:
            label, bar = f"stack {stack} on its node", f"on {node}"
            why = f"where the spec pins it (its volumes are on {node})"
        elsewhere = sorted(
            {
                f"{t.service.removeprefix(stack + '_')} on {hosts.get(t.node, t.node)}"
                for t in running
                if hosts.get(t.node, t.node) not in want
            }
        )
        if elsewhere:
            value = f"runs {', '.join(elsewhere)}, not on {' or '.join(want)} {why}"
            checks.append(Check(CLUSTER, label, FAIL, value, bar, node))
        elif not running:
            value = "no task running to place (see its replicas)"
            checks.append(Check(CLUSTER, label, WARN, value, bar, node))
        else:
            value = f"{len(running)} task{'s' if len(running) != 1 else ''} on {', '.join(on)}"
            checks.append(Check(CLUSTER, label, OK, value, bar, node))
    return checks
