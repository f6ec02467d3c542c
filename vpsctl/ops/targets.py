"""Which box an inventory means, and how to reach it: host.yaml's `ssh`, or a sandbox's
recorded connection (``vpsctl sandbox up``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from vpsctl.core import swarm as swarm_core
from vpsctl.core.facts import HostFacts, facts_script, unreachable
from vpsctl.errors import VpsctlError
from vpsctl.host.commands import swarm as swarm_commands
from vpsctl.host.remote import read_facts as _read_facts
from vpsctl.host.remote import read_facts_and as _read_facts_and
from vpsctl.host.target import Target
from vpsctl.spec.models import Sandbox, Ssh
from vpsctl.spec.studio import Spec

STATE_DIR = Path(".vpsctl")


class ClusterNotBuilt(VpsctlError):
    """A command that talks to the box, given an inventory of several nodes."""

    def __init__(self, host_file: str) -> None:
        super().__init__(
            f"{host_file} declares `nodes:` (a cluster): this command talks to one box and "
            "does not take a cluster (validate, show, schema, render, plan, apply, audit, "
            "backup, restore, rebuild, drill, secrets rotate, history and rollback do), so "
            "nothing was sent to any node"
        )


def target(spec: Spec) -> Target:
    """The SSH target of ``spec``'s host; raises when a sandbox is not up."""
    host = spec.host
    if host.nodes is not None:
        raise ClusterNotBuilt(spec.host_doc.file)
    return _box(host.name, host.ssh, host.sandbox)


def node_target(spec: Spec, node: str) -> Target:
    """The SSH target of node ``node`` of a cluster; raises when its sandbox is not up."""
    box = (spec.host.nodes or {})[node]
    return _box(f"{spec.host.name}/{node}", box.ssh, box.sandbox)


def _box(name: str, ssh: Ssh | None, sandbox: Sandbox | None) -> Target:
    if sandbox is not None:
        from vpsctl.local import sandbox as sandboxes  # noqa: PLC0415 - docker helpers only for sandboxes

        return sandboxes.load(sandbox.name).target(name)
    assert ssh is not None  # checks guarantee one of ssh/sandbox
    known_hosts = STATE_DIR / "known_hosts"
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    known_hosts.touch(mode=0o600, exist_ok=True)
    return Target(
        name=name,
        address=ssh.address,
        port=ssh.port,
        user=ssh.user,
        key=Path(ssh.key).expanduser(),
        known_hosts=known_hosts,
    )


def read_facts(spec: Spec) -> HostFacts:
    """The host's facts, or an unreachable-host fact saying why."""
    try:
        where = target(spec)
    except VpsctlError as exc:
        return unreachable(str(exc))
    return _read_facts(where)


@dataclass(frozen=True)
class NodeFacts:
    """One node as a cluster's plan reads it: its facts as one box's, and its swarm's
    (``None`` while it has no docker, or when its swarm could not be read: ``error``)."""

    host: HostFacts
    swarm: swarm_core.Facts | None = None
    error: str = ""


def node_facts_script() -> str:
    """A node's ONE read: the facts script, then the swarm's read (which fails alone, not
    the facts, on a node without docker)."""
    return f"{facts_script()}\n( {swarm_commands.read()} ) || echo '@@swarm-unread'\n"


def node_facts(facts: HostFacts, output: str) -> NodeFacts:
    """A node's facts, and its swarm's from the same answer (``output``)."""
    if facts.docker is None:
        return NodeFacts(facts)
    try:
        return NodeFacts(facts, swarm_core.parse(output))
    except swarm_core.SwarmFactsError as exc:
        return NodeFacts(facts, None, str(exc))


def read_node_facts(spec: Spec) -> dict[str, NodeFacts]:
    """Every node's facts and swarm facts, read at once: one thread, one connection and ONE
    command per node (the swarm's read follows the facts script in it), so three nodes
    cost about one node's round trips; an unreachable node's fact says why."""
    script = node_facts_script()

    def read(node: str) -> NodeFacts:
        try:
            where = node_target(spec, node)
        except VpsctlError as exc:
            return NodeFacts(unreachable(str(exc)))
        return node_facts(*_read_facts_and(where, script))

    nodes = list(spec.host.nodes or {})
    with ThreadPoolExecutor(max_workers=max(1, len(nodes)), thread_name_prefix="facts") as pool:
        return dict(zip(nodes, pool.map(read, nodes), strict=True))


def node_address(spec: Spec, node: str) -> str:
    """Where the other nodes reach node ``node``: its declared ``address``, else its SSH
    address, else (a sandbox box) its address on this machine's docker bridge."""
    box = (spec.host.nodes or {})[node]
    if box.address is not None:
        return box.address
    if box.ssh is not None:
        return box.ssh.address
    assert box.sandbox is not None  # checks guarantee one of ssh/sandbox
    from vpsctl.local import sandbox as sandboxes  # noqa: PLC0415 - docker helpers only for sandboxes

    return sandboxes.internal_address(sandboxes.load(box.sandbox.name))


def swarm_nodes(spec: Spec) -> list[swarm_core.Node]:
    """The declared nodes as the swarm's plan takes them (names, addresses, roles, labels)."""
    managers = spec.host.managers
    return [
        swarm_core.Node(name, node_address(spec, name), name in managers, dict(node.labels))
        for name, node in (spec.host.nodes or {}).items()
    ]
