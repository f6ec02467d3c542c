"""`vpsctl apply -i CLUSTER --only bootstrap`, offline: each node's bootstrap with the
settings a cluster's apply gives it (the edge's open ports, the swarm's ports to the other
nodes only), one node after another in apply order, and nothing else. (On real boxes:
tests/e2e/test_cluster.py's second-apply test.)"""

from __future__ import annotations

import io
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import pytest

from tests.test_nodes import CLUSTER, studio  # noqa: F401 - the fixture
from vpsctl.host.remote import DeployReport
from vpsctl.host.target import Target
from vpsctl.ops import targets
from vpsctl.ops.apply import cluster as cluster_apply
from vpsctl.spec.loader import load_spec

ADDRESSES = {"front": "10.0.0.1", "media": "10.0.0.2", "stats": "10.0.0.3"}


class FakeSession:
    """A node's session: its deploys recorded, nothing run."""

    deploys: ClassVar[list[tuple[str, Any]]] = []

    def __init__(self, target: Target) -> None:
        self.target = target

    def __enter__(self) -> FakeSession:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def deploy(self, func: Any, **kwargs: Any) -> DeployReport:
        self.deploys.append((self.target.name, kwargs["settings"]))
        return DeployReport(())


def test_each_node_is_bootstrapped_as_the_cluster_s_apply_would_and_nothing_else(
    studio: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = load_spec(studio / CLUSTER)

    def node_target(spec_: Any, node: str) -> Target:
        return Target(f"lumen-cluster/{node}", ADDRESSES[node], 22, "root", Path("/k"), None)

    monkeypatch.setattr(targets, "node_target", node_target)
    monkeypatch.setattr(targets, "node_address", lambda spec_, node: ADDRESSES[node])
    monkeypatch.setattr(cluster_apply, "Session", FakeSession)
    FakeSession.deploys = []
    out = io.StringIO()
    reports = cluster_apply.bootstrap_nodes(spec, out)
    # apply order: the edge node (front) last; one deploy each, and only the bootstrap
    assert [name for name, _ in FakeSession.deploys] == [
        "lumen-cluster/media", "lumen-cluster/stats", "lumen-cluster/front",
    ]  # fmt: skip
    assert list(reports) == ["media", "stats", "front"]
    settings = {name.split("/")[1]: s for name, s in FakeSession.deploys}
    for node, given in settings.items():
        assert given.swarm_node is True
        assert set(given.swarm_peers) == {a for n, a in ADDRESSES.items() if n != node}
    assert settings["front"].open_ports == tuple(spec.host.open_ports)  # the edge: public
    assert settings["media"].open_ports == (22,)  # elsewhere: SSH only
    said = out.getvalue()
    assert "bootstrap lumen-cluster/media …" in said
    assert said.count("bootstrap: 0 changed, 0 already in place") == 3
