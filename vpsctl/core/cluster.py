"""A cluster (host.yaml's ``nodes``) as vpsctl plans it: each node is a box of its own,
holding the directories of the stacks that run on it, planned against its own facts.

The whole studio renders once (the edge's Caddyfile routes to every node's stacks); each
node's share of it is a :class:`~vpsctl.core.render.Desired` of its own, so a node is read,
diffed and shown exactly as one box is. What only the cluster knows (the swarm itself: who
is a member, the overlay) comes on top. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from vpsctl.core.facts import Container, HostFacts
from vpsctl.core.plan import Plan, StackChange, plan_hash
from vpsctl.core.render import Desired
from vpsctl.core.rotation import file_secret_vars
from vpsctl.spec.models import (
    ClickhouseBackup,
    MysqlBackup,
    PostgresBackup,
    SqliteBackup,
    VolumeBackup,
    VolumeMount,
    volume_holding,
)
from vpsctl.spec.studio import Spec

# what a saved cluster plan says it is (one box's plan says ``vpsctl.core.plan.PLAN_FORMAT``)
CLUSTER_PLAN_FORMAT = "vpsctl-cluster-plan/1"


def node_names(spec: Spec) -> list[str]:
    """The nodes in host.yaml's order, the edge node last (it converges after the others:
    Caddy's first start finds every upstream)."""
    nodes = list(spec.host.nodes or {})
    edge = spec.host.edge_node
    return [n for n in nodes if n != edge] + [n for n in nodes if n == edge]


def by_labels(spec: Spec, stack: str) -> bool:
    """Whether ``stack`` is placed by labels (host.yaml's ``placement:``): Swarm puts its
    task on any node they match (checks: such a stack keeps no data)."""
    placed = spec.host.stacks.get(stack)
    definition = spec.stacks.get(stack)
    return (
        spec.host.nodes is not None
        and placed is not None
        and placed.placement is not None
        and definition is not None
        and definition.role != "edge"
    )


def placement_text(spec: Spec, stack: str) -> str:
    """The labels placing ``stack``, as host.yaml writes them: ``{tier: apps}``."""
    placement = spec.host.stacks[stack].placement or {}
    return "{" + ", ".join(f"{key}: {value}" for key, value in placement.items()) + "}"


def candidates(spec: Spec, stack: str) -> list[str]:
    """The nodes ``stack`` may run on (:meth:`Spec.nodes_of`), in apply order
    (:func:`node_names`): one for a pinned stack, every node its labels match for one placed
    by labels."""
    may = set(spec.nodes_of(stack))
    return [n for n in node_names(spec) if n in may]


def stack_node(spec: Spec, stack: str) -> str:
    """The node that deploys ``stack`` and keeps its versions and journal: its own node, or
    for a stack placed by labels the last of its :func:`candidates` in apply order (the
    others hold its files and images first, so that Swarm may start its task on any of
    them)."""
    nodes = candidates(spec, stack)
    assert nodes, f"checks place {stack} on a node"
    return nodes[-1]


def holders(spec: Spec, stack: str) -> list[str]:
    """The nodes that hold the files and images of ``stack`` placed by labels for the deploy
    of :func:`stack_node` (none for a pinned stack)."""
    return candidates(spec, stack)[:-1] if by_labels(spec, stack) else []


def node_view(spec: Spec, desired: Desired, node: str) -> Desired:
    """What node ``node`` holds of the whole studio's ``desired``: the stacks it deploys,
    their files and app steps, the files and images of the stacks placed by labels it may
    run for another node's deploy (:attr:`Desired.held`), and its own files (its backup
    machinery, rendered for its stacks with the studio: :attr:`Desired.node_host_files`)."""
    stacks = {name: s for name, s in desired.stacks.items() if stack_node(spec, name) == node}
    held = {name: s for name, s in desired.stacks.items() if node in holders(spec, name)}
    own = desired.node_host_files.get(node, ())
    files = {f.path: f for f in own}
    files |= {path: f for path, f in desired.files.items() if f.stack in stacks or f.stack in held}
    return replace(
        desired,
        files=files,
        stacks=stacks,
        held=held,
        host_files=tuple(f.path for f in own),
        node_host_files={},
        app_steps={name: steps for name, steps in desired.app_steps.items() if name in stacks},
    )


def placed_facts(spec: Spec, facts: Mapping[str, HostFacts]) -> dict[str, HostFacts]:
    """Each node's ``facts`` as its plan reads them: the containers of a stack placed by
    labels, on whichever of its candidates Swarm put them, are its deploying node's
    (:func:`stack_node`: it plans the stack as one box plans its own); a node it may not run
    on keeps them (there, they are to remove)."""
    moved: dict[str, list[Container]] = {}
    kept: dict[str, list[Container]] = {}
    for node, found in facts.items():
        for container in found.containers:
            name = container.project
            if name in spec.stacks and by_labels(spec, name) and node in candidates(spec, name):
                moved.setdefault(stack_node(spec, name), []).append(container)
            else:
                kept.setdefault(node, []).append(container)
    out: dict[str, HostFacts] = {}
    for node, found in facts.items():
        containers = kept.get(node, []) + moved.get(node, [])
        if containers == found.containers:
            out[node] = found
        else:
            out[node] = replace(found, containers=containers)
    return out


def placement_notes(spec: Spec) -> list[str]:
    """What a cluster's plan says of each stack placed by labels: where Swarm may run it,
    which node deploys it and which only hold its files and images."""
    notes: list[str] = []
    for name in spec.stacks:
        if not by_labels(spec, name):
            continue
        held = holders(spec, name)
        holding = (
            f"; {', '.join(held)} hold{'s' if len(held) == 1 else ''} its files and images "
            "(Swarm may start it there)"
            if held
            else ""
        )
        notes.append(
            f"{name} is placed by labels {placement_text(spec, name)}: Swarm runs it on one of "
            f"{', '.join(candidates(spec, name))}; {stack_node(spec, name)} deploys it and keeps "
            f"its versions{holding}"
        )
    return notes


@dataclass
class ClusterPlan:
    """One plan per node (in :func:`node_names` order), and the swarm's own changes."""

    cluster: str
    nodes: dict[str, Plan]
    swarm: list[str] = field(default_factory=list)  # what forming the swarm would change
    overlay: str = "encrypted"  # how traffic between the nodes travels, in words
    notes: list[str] = field(default_factory=list)  # said of the swarm, changing nothing

    @property
    def changes(self) -> bool:
        """Whether applying would change anything on any node, or the swarm (its warnings
        and the nodes it leaves alone are said, not changes)."""
        return bool(self.swarm) or any(plan.changes for plan in self.nodes.values())

    def summary(self) -> str:
        """The nodes' counts added up, as one box's plan says them."""
        if not self.changes:
            if len(self.nodes) == 1:
                return "No changes. The node matches the spec."
            return f"No changes. The {len(self.nodes)} nodes match the spec."
        add = change = remove = 0
        for plan in self.nodes.values():
            a, c, r = plan.counts()
            add, change, remove = add + a, change + c, remove + r
        change += len(self.swarm)
        return (
            f"Plan: {add} to add, {change} to change, {remove} to remove "
            f"(over {len(self.nodes)} node{'' if len(self.nodes) == 1 else 's'})."
        )

    def to_json(self) -> dict[str, Any]:
        """Every node's plan (each with its own hash), the swarm's changes, and a hash over
        the whole."""
        data: dict[str, Any] = {
            "format": CLUSTER_PLAN_FORMAT,
            "cluster": self.cluster,
            "overlay": self.overlay,
            "summary": self.summary(),
            "changes": self.changes,
            "swarm": list(self.swarm),
            "notes": list(self.notes),
            "nodes": {name: plan.to_json() for name, plan in self.nodes.items()},
        }
        data["plan_hash"] = plan_hash(data)
        return data


def visibility_note(spec: Spec) -> str:
    """Where a secret value of a cluster is visible, said in every plan of one."""
    managers = ", ".join(spec.host.managers)
    as_files = [
        f"{stack}/{service} {var}"
        for stack, definition in spec.stacks.items()
        for service, declared in definition.services.items()
        for var in file_secret_vars(declared)
    ]
    files = (
        f"; but {', '.join(as_files)} reach their (official database) images as Swarm "
        "secrets, files under /run/secrets read through VAR_FILE, in no service spec (the "
        "apps' own copies of those passwords are env values like the others)"
        if as_files
        else ""
    )
    return (
        "secrets: each stack's env values, secrets among them, are part of its Swarm service "
        f"spec: root on a manager ({managers}) can read them (`docker service inspect`), as "
        f"root on the stack's own node can read its env files{files}"
    )


@dataclass(frozen=True)
class Move:
    """Stack ``stack`` moving from node ``old`` to node ``new`` (host.yaml's ``node:`` of it
    changed): ``data`` whether it keeps data that must come along (named volumes)."""

    stack: str
    old: str
    new: str
    data: bool


def keeps_data(spec: Spec, stack: str) -> bool:
    """Whether ``stack`` keeps data on its node: a named volume mounted by a service."""
    return bool(volumes_of(spec, stack))


def volumes_of(spec: Spec, stack: str) -> list[str]:
    """The named volumes ``stack``'s services mount, in the order they first appear."""
    found = [
        m.volume
        for s in spec.stacks[stack].services.values()
        for m in s.volumes
        if isinstance(m, VolumeMount)
    ]
    return list(dict.fromkeys(found))


def moves(spec: Spec, plans: dict[str, Plan]) -> list[Move]:
    """Each stack one node's plan removes while another's starts it: a stack moving between
    nodes (in the order of the plans that start them)."""
    removed = {s.stack: n for n, plan in plans.items() for s in plan.stacks if s.action == "remove"}
    return [
        Move(s.stack, removed[s.stack], node, keeps_data(spec, s.stack))
        for node, plan in plans.items()
        for s in plan.stacks
        if s.action == "start" and s.stack in removed and s.stack in spec.stacks
    ]


def mark_moves(spec: Spec, plans: dict[str, Plan]) -> dict[str, Plan]:
    """``plans`` saying each move on both of its nodes (see :func:`moves`): the old node's
    ``remove`` and the new node's ``start`` give the move as their reason, and the old node
    no longer lists a moving stack's volumes as kept (they go once it serves elsewhere)."""
    found = {m.stack: m for m in moves(spec, plans)}
    if not found:
        return plans
    marked: dict[str, Plan] = {}
    for node, plan in plans.items():
        stacks = [_moving(change, found.get(change.stack), node) for change in plan.stacks]
        volumes = [
            v
            for v in plan.volumes
            if not (v.stack in found and found[v.stack].old == node and found[v.stack].data)
        ]
        marked[node] = replace(plan, stacks=stacks, volumes=volumes)
    return marked


def _moving(change: StackChange, move: Move | None, node: str) -> StackChange:
    """``change`` on ``node``, its reason the move when it is one end of ``move``."""
    if move is None:
        return change
    if change.action == "start" and node == move.new:
        with_data = " with its data (pre-move snapshot restored)" if move.data else ""
        return replace(change, reason=f"moves here from {move.old}{with_data}")
    if change.action != "remove" or node != move.old:
        return change
    if not move.data:
        return replace(change, reason=f"moves to {move.new}: its containers and files here go")
    return replace(
        change,
        reason=f"moves to {move.new} with its data: stopped, snapshotted, then its containers, "
        "files and volumes here are removed once it serves there (the pre-move snapshot keeps "
        "them)",
    )


def uncovered_volumes(spec: Spec, stack: str) -> list[str]:
    """The named volumes of ``stack`` no backup item carries: a move would leave them behind.
    A volume is carried by a ``volume`` item, by the volume under a ``sqlite`` or
    ``clickhouse`` item's path, or by being mounted by a database a dump item reads."""
    definition = spec.stacks[stack]
    carried: set[str] = set()
    for item in definition.backups:
        if isinstance(item, VolumeBackup):
            carried.add(item.volume)
            continue
        service = definition.services[item.service]
        if isinstance(item, SqliteBackup | ClickhouseBackup):
            inside = item.path if isinstance(item, SqliteBackup) else item.dir
            held = volume_holding(service.volumes, inside)
            if held is not None:
                carried.add(held[0].volume)
        if isinstance(item, PostgresBackup | MysqlBackup | ClickhouseBackup):
            carried.update(m.volume for m in service.volumes if isinstance(m, VolumeMount))
    return [v for v in volumes_of(spec, stack) if v not in carried]


def move_refusals(spec: Spec, found: list[Move]) -> list[str]:
    """Why each of ``found`` cannot be carried out (before any change): data to move needs
    host.yaml's ``backup:`` repository (the pre-move snapshot goes there), and every one of
    its volumes carried by a backup item."""
    refused: list[str] = []
    for move in found:
        if not move.data:
            continue
        line, _ = spec.host_doc.locate(("stacks", move.stack, "node"))
        where = f"{spec.host_doc.file}:{line}: stacks.{move.stack}.node"
        back = f"or pin it back with `node: {move.old}`"
        if spec.host.backup is None:
            refused.append(
                f"{where}: moving {move.stack} from {move.old} to {move.new} takes its data "
                "along through a pre-move snapshot, and host.yaml declares no `backup:` "
                f"repository to take it to: declare one (see inventory/prod/host.yaml), {back}"
            )
            continue
        left = uncovered_volumes(spec, move.stack)
        if left:
            refused.append(
                f"{where}: moving {move.stack} from {move.old} to {move.new} would leave its "
                f"volume{'s' if len(left) > 1 else ''} {', '.join(left)} behind: no item of "
                f"stacks/{move.stack}.yaml's `backups:` carries "
                f"{'them' if len(left) > 1 else 'it'}: add a `{{kind: volume, volume: "
                f"{left[0]}}}` item, {back}"
            )
    return refused


def move_notes(spec: Spec, plans: dict[str, Plan]) -> list[str]:
    """What a cluster's plan says of the stacks that move (see :func:`moves`): how, and
    what cannot be done."""
    found = moves(spec, plans)
    notes: list[str] = []
    for move in found:
        if move.data:
            notes.append(
                f"move {move.stack} from {move.old} to {move.new} with its data: its services "
                f"but its databases stop on {move.old}, a pre-move snapshot of its data is "
                f"taken there and restored on {move.new}, where it starts; once it is healthy "
                f"and answers its probes, its containers and volumes on {move.old} are "
                f"removed (the snapshot keeps them). {move.stack} is down meanwhile; if it "
                f"fails on {move.new}, it starts again on {move.old} with its data as it was"
            )
        else:
            notes.append(
                f"move {move.stack} from {move.old} to {move.new}: it keeps no data; it starts "
                f"on {move.new} and its containers and files on {move.old} are removed"
            )
    return notes + [f"refused: {why}" for why in move_refusals(spec, found)]
