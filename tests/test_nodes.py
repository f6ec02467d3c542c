"""Several boxes (host.yaml's `nodes`): what validates, where each stack may run, and what
each node holds of the studio (a stack placed by labels: tests/test_cluster_labels.py). The
invalid cases (one rule each) are in the invalid-input corpus, tests/invalid/cases/360 to
377."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests import helpers
from tests.helpers import run_cli
from vpsctl.core import cluster
from vpsctl.core.plan import Plan, StackChange, plan_hash
from vpsctl.errors import VpsctlError
from vpsctl.ops.inputs import render_spec
from vpsctl.ops.targets import target
from vpsctl.spec.loader import load_spec

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = "inventory/sandbox-cluster"


@pytest.fixture
def studio(tmp_path: Path) -> Path:
    """The example studio with the three-node sandbox inventory and generated secrets."""
    root = tmp_path / "studio"
    root.mkdir()
    shutil.copytree(ROOT / "stacks", root / "stacks")
    shutil.copytree(ROOT / CLUSTER, root / CLUSTER, ignore=shutil.ignore_patterns("secrets.env"))
    result = run_cli(root, "secrets", "generate", "-i", CLUSTER)
    assert result.code == 0, result.err
    return root


def place_status(studio: Path, mem_limit: str) -> None:
    helpers.place_status(studio, CLUSTER, mem_limit)


def test_the_example_cluster_is_valid_and_places_every_stack(studio: Path) -> None:
    result = run_cli(studio, "validate", "-i", CLUSTER)
    assert result.code == 0, result.err
    spec = load_spec(studio / CLUSTER)
    assert spec.host.cluster and spec.is_sandbox
    assert spec.host.edge_node == "front" and spec.host.managers == ["front"]
    places = {name: spec.nodes_of(name) for name in spec.stacks}
    assert places == {
        "documint": ["front"],
        "cronping": ["front"],
        "flagbit": ["front"],
        "webhookvault": ["front"],
        "ghost": ["media"],
        "listmonk": ["media"],
        "plausible": ["stats"],
        "edge": ["front"],
    }


def test_a_stack_placed_by_labels_may_run_on_every_node_they_match(studio: Path) -> None:
    place_status(studio, "64m")
    result = run_cli(studio, "validate", "-i", CLUSTER)
    assert result.code == 0, result.err
    assert load_spec(studio / CLUSTER).nodes_of("status") == ["media", "stats"]


def test_a_label_placed_stack_counts_against_every_node_it_may_land_on(studio: Path) -> None:
    place_status(studio, "5g")
    result = run_cli(studio, "validate", "-i", CLUSTER)
    assert result.code == 1
    # media holds Ghost and Listmonk already: 5g more is over its budget; stats holds
    # Plausible: over too. Each node's error names that node.
    assert "over the memory budget of node media" in result.err
    assert "over the memory budget of node stats" in result.err
    assert "of node front" not in result.err


def test_no_command_reaches_a_node_of_a_cluster_yet(studio: Path) -> None:
    spec = load_spec(studio / CLUSTER)
    with pytest.raises(VpsctlError, match=r"declares `nodes:` \(a cluster\).*nothing was sent"):
        target(spec)


def plan_of(host: str, *stacks: StackChange) -> Plan:
    return Plan(host=host, reachable=True, note="", stacks=list(stacks))


def test_a_cluster_plan_without_changes_says_so_and_hashes_its_whole_body() -> None:
    plans = {"front": plan_of("c/front", StackChange("edge", "none", "unchanged"))}
    whole = cluster.ClusterPlan("c", plans, [], "encrypted", ["a note"])
    assert not whole.changes
    assert whole.summary() == "No changes. The node matches the spec."
    data = whole.to_json()
    assert data["notes"] == ["a note"] and data["overlay"] == "encrypted"
    assert data["plan_hash"] == plan_hash(data)
    assert cluster.ClusterPlan("c", plans, ["init the swarm on front"]).changes


def test_each_node_holds_the_files_of_its_own_stacks_only(studio: Path) -> None:
    spec = load_spec(studio / CLUSTER)
    desired = render_spec(spec, offline=True)
    shares = {node: cluster.node_view(spec, desired, node) for node in cluster.node_names(spec)}
    assert list(shares) == ["media", "stats", "front"]  # the edge node last
    assert set(shares["media"].stacks) == {"ghost", "listmonk"}
    for node, share in shares.items():
        for f in share.files.values():
            # a stack's file, or the node's own (its backup machinery: test_cluster_backup.py)
            assert f.stack in share.stacks or f.path in share.host_files, (node, f.path)
    every = [p for share in shares.values() for p in share.files if p not in share.host_files]
    assert sorted(every) == sorted(desired.files)  # each stack file on exactly one node


def test_a_sandbox_node_takes_its_address_from_its_record_not_from_host_yaml(
    studio: Path,
) -> None:
    host = studio / CLUSTER / "host.yaml"
    text = host.read_text()
    host.write_text(
        text.replace(
            "    sandbox: {name: media}\n", "    sandbox: {name: media}\n    address: 10.0.0.9\n"
        )
    )
    result = run_cli(studio, "validate", "-i", CLUSTER)
    assert result.code == 1
    assert (
        "nodes.media.address: a sandbox box's address comes from its record (`sandbox: media`): "
        "remove `address`"
    ) in result.err
