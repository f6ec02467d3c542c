"""A Docker Swarm across the declared nodes: what each node says of it, and what forming it
would change. Pure: the facts come from :func:`vpsctl.host.commands.swarm.read`'s output,
and :func:`plan` only compares them with the declared nodes (``vpsctl.ops.swarm`` reads
the nodes and carries the plan out).

A node is a member of THIS swarm when its node id is in the node list of the swarm's
managers; a node active in a swarm whose managers do not list it is in another swarm, an
error naming it (never left, never forced). A swarm node none of the declared nodes is
(one no longer declared) is reported, never removed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vpsctl.core import sections
from vpsctl.errors import VpsctlError

OVERLAY = "vpsctl-overlay"  # the encrypted overlay every stack's services meet on
NODE_LABEL = "vpsctl.node"  # each node's name in the spec, as a swarm node label
INFO, NODES, NETWORK, ESP = "swarm-info", "swarm-nodes", "swarm-network", "swarm-esp"
SERVICES, TASKS = "swarm-services", "swarm-tasks"


class SwarmError(VpsctlError):
    """The declared nodes cannot form one swarm as they are (each problem named)."""


class SwarmFactsError(VpsctlError):
    """A node's answer to the swarm read is not what it prints."""


@dataclass(frozen=True)
class Node:
    """A declared node, as forming the swarm needs it."""

    name: str
    address: str  # where the other nodes reach it (its advertise address)
    manager: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)

    def wanted_labels(self) -> dict[str, str]:
        """Its labels on the swarm: ``vpsctl.node=NAME`` and the declared ones."""
        return {**self.labels, NODE_LABEL: self.name}


@dataclass(frozen=True)
class Member:
    """A swarm node as a manager lists it."""

    id: str
    hostname: str
    role: str  # manager | worker
    labels: dict[str, str]
    state: str  # ready | down | unknown …
    address: str
    availability: str  # active | pause | drain
    leader: bool = False


@dataclass(frozen=True)
class Network:
    """The overlay network as a manager inspects it."""

    driver: str
    scope: str
    attachable: bool
    encrypted: bool

    def problems(self, encrypted: bool = True) -> list[str]:
        """What keeps it from being vpsctl's overlay, encrypted or not as declared (each as
        ``not …``)."""
        found = []
        if self.driver != "overlay":
            found.append(f"its driver is {self.driver}, not overlay")
        if encrypted and not self.encrypted:
            found.append("it is not encrypted")
        if self.encrypted and not encrypted:
            found.append("it is encrypted (host.yaml's overlay: plain)")
        if not self.attachable:
            found.append("it is not attachable")
        return found


@dataclass(frozen=True)
class Facts:
    """One node's swarm, as it answered :func:`vpsctl.host.commands.swarm.read`."""

    node_id: str
    local_state: str  # inactive | pending | active | error | locked
    control: bool  # a manager that can manage the swarm
    cluster_id: str  # on a manager only
    address: str
    error: str = ""
    managers: tuple[str, ...] = ()  # the manager addresses it knows (host:port)
    members: tuple[Member, ...] = ()  # on a manager only
    network: Network | None = None  # on a manager only; None when it does not exist
    esp: bool = True  # the kernel can hold IPsec ESP states (the overlay's encryption)

    @property
    def active(self) -> bool:
        """Whether it is in a swarm."""
        return self.local_state == "active"


def parse(output: str) -> Facts:
    """A node's facts from the read's output; :class:`SwarmFactsError` when it is not
    the read's shape."""
    found = {s.name: s for s in sections.split(output)}
    if INFO not in found:
        raise SwarmFactsError(f"no @@{INFO} section in the swarm read: {output[-300:]!r}")
    try:
        info = json.loads("\n".join(found[INFO].lines).strip() or "null")
        members = tuple(_member(json.loads(line)) for line in _body(found.get(NODES)))
        network_lines = _body(found.get(NETWORK))
        network = _network(json.loads(network_lines[0])) if network_lines else None
    except (ValueError, KeyError, TypeError) as exc:
        raise SwarmFactsError(f"the swarm read is not docker's JSON: {exc}") from None
    if not isinstance(info, dict):
        raise SwarmFactsError(f"docker info's .Swarm is not an object: {info!r}")
    cluster = info.get("Cluster") or {}
    esp = found.get(ESP)
    return Facts(
        node_id=str(info.get("NodeID") or ""),
        local_state=str(info.get("LocalNodeState") or ""),
        control=bool(info.get("ControlAvailable")),
        cluster_id=str(cluster.get("ID") or "") if isinstance(cluster, dict) else "",
        address=str(info.get("NodeAddr") or ""),
        error=str(info.get("Error") or ""),
        managers=tuple(str(m.get("Addr", "")) for m in info.get("RemoteManagers") or []),
        members=members,
        network=network,
        esp=esp is None or esp.words[:1] == ["yes"],
    )


@dataclass(frozen=True)
class Service:
    """A swarm service as a manager lists it: its replicas running and desired."""

    name: str  # STACK_SERVICE, as ``docker stack deploy`` names it
    mode: str
    running: int
    desired: int


@dataclass(frozen=True)
class Task:
    """A task Swarm wants running, and the node (by host name) it is on."""

    service: str
    node: str
    state: str  # docker's CurrentState: ``Running 5 minutes ago``, ``Pending …``
    error: str = ""

    @property
    def running(self) -> bool:
        """Whether it runs now (not pending, preparing or starting)."""
        return self.state.split(" ", 1)[0] == "Running"


@dataclass(frozen=True)
class Services:
    """Every service and task, as a manager answered :func:`vpsctl.host.commands.swarm.
    services_read`."""

    services: tuple[Service, ...]
    tasks: tuple[Task, ...]


_REPLICAS = re.compile(r"^(\d+)/(\d+)")


def parse_services(output: str) -> Services | None:
    """A manager's services and tasks from the read's output (``None`` when the output holds
    no such read); :class:`SwarmFactsError` when it is not the read's shape."""
    found = {s.name: s for s in sections.split(output)}
    if SERVICES not in found or TASKS not in found:
        return None
    try:
        services = tuple(_service(json.loads(line)) for line in _body(found[SERVICES]))
        tasks = tuple(_task(json.loads(line)) for line in _body(found[TASKS]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SwarmFactsError(f"the services read is not docker's JSON: {exc}") from None
    return Services(services, tasks)


def _service(data: dict[str, Any]) -> Service:
    replicas = _REPLICAS.match(str(data.get("replicas") or ""))
    if replicas is None:
        raise ValueError(f"replicas {data.get('replicas')!r} of {data['name']!r} are no R/D")
    return Service(
        str(data["name"]), str(data.get("mode") or ""), int(replicas[1]), int(replicas[2])
    )


def _task(data: dict[str, Any]) -> Task:
    # a replicated task is SERVICE.SLOT, a global one SERVICE.NODEID
    return Task(
        str(data["name"]).rsplit(".", 1)[0],
        str(data.get("node") or ""),
        str(data.get("state") or ""),
        # docker quotes a task's error ("\"no suitable node …\"")
        str(data.get("error") or "").strip('"'),
    )


def _body(section: sections.Section | None) -> list[str]:
    return [line for line in (section.lines if section else []) if line.strip()]


def _member(data: dict[str, Any]) -> Member:
    return Member(
        id=str(data["id"]),
        hostname=str(data.get("hostname") or ""),
        role=str(data.get("role") or ""),
        labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
        state=str(data.get("state") or ""),
        address=str(data.get("address") or ""),
        availability=str(data.get("availability") or ""),
        leader=bool(data.get("leader")),
    )


def _network(data: dict[str, Any]) -> Network:
    options = data.get("options") or {}
    return Network(
        driver=str(data.get("driver") or ""),
        scope=str(data.get("scope") or ""),
        attachable=bool(data.get("attachable")),
        encrypted="encrypted" in options,
    )


# ── what forming the swarm would change ──────────────────────────────────────────────────


@dataclass(frozen=True)
class Plan:
    """What forming the swarm changes, in order, as lines for a human; the swarm nodes no
    declared node is (reported, never removed); warnings (a node whose kernel cannot
    encrypt the overlay)."""

    changes: list[str]
    undeclared: list[str]
    warnings: list[str]


def problems(nodes: Sequence[Node], facts: Mapping[str, Facts]) -> list[str]:
    """Why ``nodes`` cannot form one swarm as they are; empty when they can."""
    found: list[str] = []
    names = [n.name for n in nodes]
    addresses = [n.address for n in nodes]
    found += [f"node {n!r} is declared twice" for n in sorted(set(names)) if names.count(n) > 1]
    found += [
        f"address {a} is given to more than one node"
        for a in sorted(set(addresses))
        if addresses.count(a) > 1
    ]
    if nodes and not any(n.manager for n in nodes):
        found.append("no node is a manager: declare at least one (an odd number: 1, 3 or 5)")
    for node in nodes:
        state = facts[node.name]
        if state.local_state not in ("inactive", "active"):
            said = f": {state.error}" if state.error else ""
            found.append(
                f"node {node.name}: its swarm state is {state.local_state or 'unknown'}{said}; "
                "it must be inactive (not in a swarm) or active in this one"
            )
    clusters = {facts[n.name].cluster_id for n in nodes if n.manager and facts[n.name].control} - {
        ""
    }
    if len(clusters) > 1:
        found.append(
            "the declared managers are in different swarms ("
            + ", ".join(
                f"{n.name}: {facts[n.name].cluster_id}" for n in nodes if facts[n.name].cluster_id
            )
            + "); a node leaves a swarm only by hand (`docker swarm leave`)"
        )
        return found
    ours = _member_ids(nodes, facts)
    for node in nodes:
        state = facts[node.name]
        if state.active and state.node_id not in ours:
            found.append(
                f"node {node.name} is in another swarm (its managers: "
                f"{', '.join(state.managers) or 'unknown'}); vpsctl does not take it out: "
                f"run `docker swarm leave` on it (`--force` on a manager) if it should join "
                "this one"
            )
    return found


def _leader(nodes: Sequence[Node], facts: Mapping[str, Facts]) -> Node | None:
    """The declared manager that speaks for the swarm: the first one able to manage it."""
    return next((n for n in nodes if n.manager and facts[n.name].control), None)


def _member_ids(nodes: Sequence[Node], facts: Mapping[str, Facts]) -> set[str]:
    leader = _leader(nodes, facts)
    return {m.id for m in facts[leader.name].members} if leader else set()


def plan(
    nodes: Sequence[Node],
    facts: Mapping[str, Facts],
    network: str = OVERLAY,
    *,
    encrypted: bool = True,
) -> Plan:
    """What forming the swarm of ``nodes`` would change, given each node's ``facts`` (by
    name): nothing is run. :class:`SwarmError` when they cannot form one (see
    :func:`problems`)."""
    found = problems(nodes, facts)
    if found:
        raise SwarmError("cannot form the swarm:\n  " + "\n  ".join(found))
    changes: list[str] = []
    leader = _leader(nodes, facts)
    first = leader or next(n for n in nodes if n.manager)
    members = {m.id: m for m in facts[first.name].members} if leader else {}
    if leader is None:
        changes.append(f"init the swarm on {first.name} (advertising {first.address})")
    for node in nodes:
        state = facts[node.name]
        member = members.get(state.node_id) if state.active else None
        role = "manager" if node.manager else "worker"
        if node is first:
            pass
        elif member is None:
            changes.append(f"join {node.name} as a {role} (advertising {node.address})")
        elif member.role != role:
            verb = "promote" if node.manager else "demote"
            changes.append(f"{verb} {node.name} to a {role}")
        changes += label_changes(node, member.labels if member else {})
    net = facts[first.name].network if leader else None
    kind = overlay_kind(encrypted)
    if net is None:
        changes.append(f"create the {kind} overlay network {network}")
    elif net.problems(encrypted):
        raise SwarmError(
            f"a network named {network} exists but {' and '.join(net.problems(encrypted))}: "
            f"remove it (`docker network rm {network}` on a manager, once nothing uses it) "
            f"and vpsctl creates it {kind}, attachable, overlay"
        )
    declared = {facts[n.name].node_id for n in nodes if facts[n.name].active}
    undeclared = [
        f"swarm node {m.hostname} ({m.id}, {m.role}, {m.state}"
        + (f", {NODE_LABEL}={m.labels[NODE_LABEL]}" if NODE_LABEL in m.labels else "")
        + ") is not declared; vpsctl leaves it in the swarm: remove it by hand "
        f"(`docker node rm {m.id}` once it left)"
        for m in members.values()
        if m.id not in declared
    ]
    warnings = [
        f"node {n.name}: its kernel cannot do IPsec ESP (AES-GCM): containers on the "
        f"encrypted overlay {network} will not reach other nodes from it"
        for n in nodes
        if encrypted and not facts[n.name].esp
    ]
    return Plan(changes, undeclared, warnings)


def overlay_kind(encrypted: bool) -> str:
    """``encrypted`` or ``plain (NOT encrypted)``: how the overlay is said everywhere."""
    return "encrypted" if encrypted else "plain (NOT encrypted)"


def label_delta(node: Node, current: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The labels to add (or change) on a node, and those to remove: declared labels only,
    ``vpsctl.node`` among them."""
    wanted = node.wanted_labels()
    add = {k: v for k, v in wanted.items() if current.get(k) != v}
    return add, sorted(k for k in current if k not in wanted)


def label_changes(node: Node, current: Mapping[str, str]) -> list[str]:
    """:func:`label_delta` as lines for a human."""
    add, remove = label_delta(node, current)
    lines = [f"label {node.name}: {k}={v}" for k, v in sorted(add.items())]
    return lines + [f"label {node.name}: remove {k}" for k in remove]


def stale_members(manager: Facts, node: str, fresh_id: str) -> list[Member]:
    """The swarm's entries of node ``node`` (by its ``vpsctl.node`` label) other than the
    box now standing in for it (``fresh_id``, "" while it has not joined): a lost box's, to
    remove before the fresh one joins. :class:`SwarmError` when one is still ready (the old
    box answers the swarm: it is not lost, and a second one would split the node)."""
    stale = [m for m in manager.members if m.labels.get(NODE_LABEL) == node and m.id != fresh_id]
    alive = [m for m in stale if m.state == "ready"]
    if alive:
        raise SwarmError(
            f"node {node}: the swarm still lists {', '.join(m.id for m in alive)} "
            f"({alive[0].hostname}) as ready: the box it rebuilds is not lost (take it down "
            "first, or wait until the manager lists it down)"
        )
    return stale
