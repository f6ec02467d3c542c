"""History and rollback of a cluster (host.yaml's `nodes`), offline: each node keeps the
versions of the stacks it ran; `history` lists them all with the node keeping each, and a
rollback takes a stack's way back from ITS node only. The rollback on real boxes is
tests/e2e/test_cluster.py's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_moves import CLUSTER, moved, studio
from vpsctl.cli.views import history_text
from vpsctl.core.render import Desired
from vpsctl.core.versions import StackVersion, parse_versions, version_record
from vpsctl.ops.inputs import render_spec
from vpsctl.ops.versions import (
    ByNode,
    RollbackError,
    choose_on_nodes,
    node_current,
    node_history,
)
from vpsctl.spec.loader import load_spec
from vpsctl.spec.studio import Spec


def kept(d: Desired, stack: str, *times: str) -> list[StackVersion]:
    """The versions of ``stack`` a node keeps, one per time (oldest first)."""
    records = [
        version_record(
            d.stacks[stack],
            [d.files[p] for p in d.stacks[stack].files],
            time=time,
            plan_hash=f"{n:02d}" * 32,
            result="applied",
            snapshot=None,
        )
        for n, time in enumerate(times, 1)
    ]
    return parse_versions("\n".join(json.dumps(r) for r in records))[stack]


@pytest.fixture
def cluster_spec(tmp_path: Path) -> Spec:
    return load_spec(studio(tmp_path, backup=True) / CLUSTER)


def test_history_lists_every_node_s_versions_with_the_node_keeping_each(
    cluster_spec: Spec,
) -> None:
    d = render_spec(cluster_spec, offline=True)
    by_node: ByNode = {
        "front": {"documint": kept(d, "documint", "2026-12-03T15:00:00Z", "2026-12-03T16:00:00Z")},
        "media": {"ghost": kept(d, "ghost", "2026-12-03T15:30:00Z")},
        "stats": {},
    }
    listed, where = node_history(by_node, [])
    assert [(v.stack, where[(v.stack, v.version)]) for v in listed] == [
        ("documint", "front"),
        ("ghost", "media"),
        ("documint", "front"),
    ]
    current = node_current(cluster_spec, by_node)
    assert current == {("documint", listed[0].version), ("ghost", listed[1].version)}
    head, newest, ghost, older = history_text(listed, current, where).splitlines()
    assert head.split() == ["STACK", "NODE", "VERSION", "TIME", "PLAN", "RESULT", "IMAGES"]
    assert newest.split()[:3] == ["*", "documint", "front"]
    assert ghost.split()[:3] == ["*", "ghost", "media"]
    assert older.split()[:2] == ["documint", "front"]  # kept, not run now
    assert history_text([], set(), {}).startswith("no applied version kept on any node")
    # one box's listing is as it was: no NODE column
    assert history_text(listed, current).splitlines()[0].split()[:2] == ["STACK", "VERSION"]


def test_a_moved_stack_s_versions_on_its_old_node_are_not_what_it_runs(tmp_path: Path) -> None:
    root = studio(tmp_path, backup=True)
    spec = moved(root, "documint", "front", "stats")
    d = render_spec(spec, offline=True)
    by_node: ByNode = {
        "front": {"documint": kept(d, "documint", "2026-12-03T15:00:00Z", "2026-12-03T16:00:00Z")},
        "stats": {"documint": kept(d, "documint", "2026-12-03T17:00:00Z")},
        "media": {},
    }
    (runs,) = node_current(spec, by_node)
    assert runs[1].startswith("20261203T170000Z")  # stats' newest, not front's
    with pytest.raises(
        RollbackError,
        match=r"rollback: documint runs on stats, which keeps 1 version\(s\) of it; its older "
        r"versions are kept on front, where it ran before: a way back across a move is not a "
        r"rollback",
    ):
        choose_on_nodes(spec, by_node, ["documint"])


def test_a_cluster_s_rollback_takes_each_stack_back_on_its_own_node(cluster_spec: Spec) -> None:
    d = render_spec(cluster_spec, offline=True)
    by_node: ByNode = {
        "front": {"documint": kept(d, "documint", "2026-12-03T15:00:00Z", "2026-12-03T16:00:00Z")},
        "media": {"ghost": kept(d, "ghost", "2026-12-03T15:00:00Z", "2026-12-03T16:00:00Z")},
        "stats": {},
    }
    chosen = choose_on_nodes(cluster_spec, by_node, ["ghost", "documint"])
    assert {node: [t.stack for t in ts] for node, ts in chosen.items()} == {
        "media": ["ghost"],
        "front": ["documint"],
    }
    (documint,) = chosen["front"]
    assert documint.previous.plan_hash == "01" * 32 and documint.current.plan_hash == "02" * 32
    with pytest.raises(RollbackError, match=r"is a cluster: name the stacks to put back"):
        choose_on_nodes(cluster_spec, by_node, [])
    with pytest.raises(
        RollbackError, match=r"rollback: plausible has no previous version to go back to: .* none"
    ):
        choose_on_nodes(cluster_spec, by_node, ["plausible"])
