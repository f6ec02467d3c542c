"""Forming the Docker Swarm of the declared nodes, over their SSH sessions.

:func:`read_facts` reads every node at once (one command each, in threads);
:func:`vpsctl.core.swarm.plan` says what would change; :func:`form_swarm` makes it so:
init the first manager unless a manager already runs the swarm, join the others with the
token of their role, promote or demote, label every node ``vpsctl.node=NAME`` plus its
declared labels (others removed), and create the encrypted overlay. Convergent: run again,
it changes nothing.

The join tokens are secrets. One is read on a manager, registered with
:func:`vpsctl.errors.register_secrets` at once (so any output quoting it is masked), and
fed to the joining node on stdin: it is never a word of a command line vpsctl sends, logs
or names in an error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from vpsctl.core import swarm as core
from vpsctl.errors import register_secrets
from vpsctl.host.commands import swarm as commands
from vpsctl.host.remote import Remote

Say = Callable[[str], None]


@dataclass(frozen=True)
class SwarmNode:
    """A declared node and the session that reaches it."""

    name: str
    session: Remote
    address: str  # its advertise address: where the other nodes reach it
    manager: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def node(self) -> core.Node:
        """The node as :mod:`vpsctl.core.swarm` plans with it."""
        return core.Node(self.name, self.address, self.manager, dict(self.labels))


@dataclass(frozen=True)
class Formed:
    """What :func:`form_swarm` did: its changes (lines for a human, empty when the swarm
    was already as declared), the swarm nodes not declared, and warnings."""

    changes: list[str]
    undeclared: list[str]
    warnings: list[str]


def read_node(node: SwarmNode, network: str = commands.OVERLAY) -> core.Facts:
    """One node's swarm facts (one command)."""
    result = node.session.run(
        commands.read(network), timeout=60, purpose=f"reading the swarm state of {node.name}"
    )
    return core.parse(result.stdout)


def read_facts(
    nodes: Sequence[SwarmNode], network: str = commands.OVERLAY
) -> dict[str, core.Facts]:
    """Every node's swarm facts, by name, read at once (a thread per node)."""
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(nodes)))) as pool:
        futures = {n.name: pool.submit(read_node, n, network) for n in nodes}
        return {name: future.result() for name, future in futures.items()}


def form_swarm(
    nodes: Sequence[SwarmNode],
    say: Say,
    network: str = commands.OVERLAY,
    *,
    encrypted: bool = True,
) -> Formed:
    """Form (or converge) the swarm of ``nodes``; :class:`vpsctl.core.swarm.SwarmError`,
    before anything changes, when they cannot form one. Each change is said as it is made."""
    facts = read_facts(nodes, network)
    wanted = [n.node for n in nodes]
    core.plan(wanted, facts, network, encrypted=encrypted)  # refuses before any change
    changes: list[str] = []

    def done(line: str) -> None:
        changes.append(line)
        say(line)

    leader = next((n for n in nodes if n.manager and facts[n.name].control), None)
    if leader is None:
        leader = next(n for n in nodes if n.manager)
        leader.session.run(
            commands.init(leader.address), timeout=120, purpose=f"swarm init on {leader.name}"
        )
        done(f"init the swarm on {leader.name} (advertising {leader.address})")
        facts[leader.name] = read_node(leader, network)
    members = {m.id for m in facts[leader.name].members}
    joining = [
        n
        for n in nodes
        if n is not leader and not (facts[n.name].active and facts[n.name].node_id in members)
    ]
    tokens: dict[str, str] = {}
    for node in joining:
        role = "manager" if node.manager else "worker"
        if role not in tokens:
            tokens[role] = read_join_token(leader, role)
        node.session.feed(
            commands.join(node.address, leader.address),
            (tokens[role] + "\n").encode(),
            timeout=120,
            purpose=f"{node.name} joining the swarm as a {role}",
        )
        done(f"join {node.name} as a {role} (advertising {node.address})")
    if joining:
        facts = read_facts(nodes, network)
    listed = {m.id: m for m in facts[leader.name].members}
    for node in nodes:
        member = listed.get(facts[node.name].node_id)
        if member is None:  # joined, yet its manager does not list it: say so, never guess
            raise core.SwarmError(
                f"node {node.name} ({facts[node.name].node_id or 'no node id'}) is not in the "
                f"node list of {leader.name} after joining"
            )
        role = "manager" if node.manager else "worker"
        if member.role != role:
            leader.session.run(
                commands.set_role(member.id, node.manager),
                purpose=f"making {node.name} a {role}",
            )
            done(f"{'promote' if node.manager else 'demote'} {node.name} to a {role}")
        add, remove = core.label_delta(node.node, member.labels)
        if add or remove:
            leader.session.run(
                commands.set_labels(member.id, add, remove),
                purpose=f"labelling swarm node {node.name}",
            )
            for line in core.label_changes(node.node, member.labels):
                done(line)
    if facts[leader.name].network is None:
        leader.session.run(
            commands.create_overlay(network, encrypted=encrypted),
            purpose=f"creating the overlay network {network}",
        )
        done(f"create the {core.overlay_kind(encrypted)} overlay network {network}")
    final = core.plan(wanted, read_facts(nodes, network), network, encrypted=encrypted)
    for line in final.undeclared + final.warnings:
        say(line)
    if final.changes:  # made, yet not so: never claim it
        raise core.SwarmError(
            "the swarm is still not as declared after forming it: " + "; ".join(final.changes)
        )
    return Formed(changes, final.undeclared, final.warnings)


def read_join_token(manager: SwarmNode, role: str) -> str:
    """The swarm's join token for ``role``, registered as a secret before anything else
    sees it."""
    result = manager.session.run(
        commands.join_token(role),
        timeout=60,
        purpose=f"reading the swarm's {role} join token on {manager.name}",
    )
    token = result.stdout.strip()
    register_secrets([token, token.rsplit("-", 1)[-1]])
    if not token.startswith("SWMTKN-"):
        raise core.SwarmError(
            f"the {role} join token read on {manager.name} is not a swarm token (SWMTKN-…)"
        )
    return token


def plan_lines(
    nodes: Sequence[core.Node],
    facts: Mapping[str, core.Facts | None],
    *,
    encrypted: bool = True,
    strict: bool = False,
) -> tuple[list[str], list[str]]:
    """What a cluster's plan says of its swarm, from the nodes' swarm facts read with their
    facts: (the changes forming it makes, what it says without changing: the swarm nodes
    left alone, warnings, why it cannot form). A node without docker yet: the swarm forms
    after its bootstrap. ``strict`` (an apply): why it cannot form is raised
    (:class:`vpsctl.core.swarm.SwarmError`), not said."""
    kind = core.overlay_kind(encrypted)
    missing = [n.name for n in nodes if facts.get(n.name) is None]
    if missing:
        return [
            f"form the swarm (overlay {kind}) after the bootstrap of {', '.join(missing)} "
            "(no docker there yet)"
        ], []
    known = {name: f for name, f in facts.items() if f is not None}
    try:
        found = core.plan(nodes, known, encrypted=encrypted)
    except core.SwarmError as exc:
        if strict:
            raise
        return [], [f"cannot form the swarm: {exc}"]
    return found.changes, [*found.undeclared, *(f"warning: {w}" for w in found.warnings)]
