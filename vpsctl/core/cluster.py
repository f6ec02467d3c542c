"""A cluster (host.yaml's ``nodes``) as vpsctl plans it: each node is a box of its own,
holding the directories of the stacks that run on it, planned against its own facts.

The whole studio renders once (the edge's Caddyfile routes to every node's stacks); each
node's share of it is a :class:`~vpsctl.core.render.Desired` of its own, so a node is read,
diffed and shown exactly as one box is. What only the cluster knows (the swarm itself: who
is a member, the overlay) comes on top. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from vpsctl.core.plan import Plan, plan_hash
from vpsctl.core.render import Desired
from vpsctl.errors import VpsctlError
from vpsctl.spec.studio import Spec


class NotPlannable(VpsctlError):
    """A valid cluster spec that plan and apply cannot take yet."""


def node_names(spec: Spec) -> list[str]:
    """The nodes in host.yaml's order, the edge node last (it converges after the others:
    Caddy's first start finds every upstream)."""
    nodes = list(spec.host.nodes or {})
    edge = spec.host.edge_node
    return [n for n in nodes if n != edge] + [n for n in nodes if n == edge]


def stack_node(spec: Spec, stack: str) -> str:
    """The one node ``stack`` runs on; refuses a stack placed by labels (Swarm chooses among
    several nodes: its plan and apply are not built yet)."""
    placed = spec.host.stacks[stack]
    if placed.placement is not None and spec.stacks[stack].role != "edge":
        line, _ = spec.host_doc.locate(("stacks", stack, "placement"))
        raise NotPlannable(
            f"{spec.host_doc.file}:{line}: stacks.{stack}.placement: a stack placed by labels "
            "validates, but plan and apply of one are not built yet: pin it with `node: NAME` "
            f"(one of {', '.join(spec.nodes_of(stack))}) for now"
        )
    nodes = spec.nodes_of(stack)
    assert len(nodes) == 1, f"checks pin {stack} to one node"
    return nodes[0]


def node_view(spec: Spec, desired: Desired, node: str) -> Desired:
    """What node ``node`` holds of the whole studio's ``desired``: the stacks that run on it,
    their files and app steps, and its own files (its backup machinery, rendered for its
    stacks with the studio: :attr:`Desired.node_host_files`)."""
    stacks = {name: s for name, s in desired.stacks.items() if stack_node(spec, name) == node}
    own = desired.node_host_files.get(node, ())
    files = {f.path: f for f in own}
    files |= {path: f for path, f in desired.files.items() if f.stack in stacks}
    return replace(
        desired,
        files=files,
        stacks=stacks,
        host_files=tuple(f.path for f in own),
        node_host_files={},
        app_steps={name: steps for name, steps in desired.app_steps.items() if name in stacks},
    )


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
            f"(over {len(self.nodes)} nodes)."
        )

    def to_json(self) -> dict[str, Any]:
        """Every node's plan (each with its own hash), the swarm's changes, and a hash over
        the whole."""
        data: dict[str, Any] = {
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
    return (
        "secrets: each stack's env values, secrets among them, are part of its Swarm service "
        f"spec: root on a manager ({managers}) can read them (`docker service inspect`), as "
        "root on the stack's own node can read its env files"
    )


def moves(plans: dict[str, Plan]) -> list[tuple[str, str, str]]:
    """(stack, from node, to node) of each stack one node's plan removes while another's
    starts it: a stack moving between nodes."""
    removed = {s.stack: n for n, plan in plans.items() for s in plan.stacks if s.action == "remove"}
    return [
        (s.stack, removed[s.stack], node)
        for node, plan in plans.items()
        for s in plan.stacks
        if s.action == "start" and s.stack in removed
    ]


def move_notes(plans: dict[str, Plan]) -> list[str]:
    """What a cluster's plan says of the stacks that move (see :func:`moves`)."""
    return [
        f"move {stack} from {old} to {new}: its volumes stay on {old}; apply refuses it until "
        "moving a stack with its data is built (pin it back with `node: "
        f"{old}`)"
        for stack, old, new in moves(plans)
    ]
