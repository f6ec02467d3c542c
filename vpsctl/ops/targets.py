"""Which box an inventory means, and how to reach it: host.yaml's `ssh`, or a sandbox's
recorded connection (``vpsctl sandbox up``)."""

from __future__ import annotations

from pathlib import Path

from vpsctl.core.facts import HostFacts, unreachable
from vpsctl.errors import VpsctlError
from vpsctl.host.remote import read_facts as _read_facts
from vpsctl.host.target import Target
from vpsctl.spec.studio import Spec

STATE_DIR = Path(".vpsctl")


class ClusterNotBuilt(VpsctlError):
    """A command that talks to the box, given an inventory of several nodes."""

    def __init__(self, host_file: str) -> None:
        super().__init__(
            f"{host_file} declares `nodes:` (a cluster): validate, show, schema and render "
            "take it; plan, apply, audit, backup and rebuild of several nodes are not built "
            "yet (issue 14 is under way), so nothing was sent to any node"
        )


def target(spec: Spec) -> Target:
    """The SSH target of ``spec``'s host; raises when a sandbox is not up."""
    host = spec.host
    if host.nodes is not None:
        raise ClusterNotBuilt(spec.host_doc.file)
    if host.sandbox is not None:
        from vpsctl.local import sandbox  # noqa: PLC0415 - docker helpers only for sandboxes

        return sandbox.load(host.sandbox.name).target(host.name)
    assert host.ssh is not None  # checks guarantee one of ssh/sandbox
    known_hosts = STATE_DIR / "known_hosts"
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    known_hosts.touch(mode=0o600, exist_ok=True)
    return Target(
        name=host.name,
        address=host.ssh.address,
        port=host.ssh.port,
        user=host.ssh.user,
        key=Path(host.ssh.key).expanduser(),
        known_hosts=known_hosts,
    )


def read_facts(spec: Spec) -> HostFacts:
    """The host's facts, or an unreachable-host fact saying why."""
    try:
        where = target(spec)
    except VpsctlError as exc:
        return unreachable(str(exc))
    return _read_facts(where)
