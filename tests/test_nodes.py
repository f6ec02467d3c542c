"""Several boxes (host.yaml's `nodes`): what validates, where each stack may run, and that
nothing reaches a node while plan/apply of a cluster are not built. The invalid cases (one
rule each) are in the invalid-input corpus, tests/invalid/cases/360 to 377."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import run_cli
from vpsctl.errors import VpsctlError
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
    """A stateless stack ``status``, placed on the label both app nodes carry."""
    (studio / "stacks" / "status.yaml").write_text(
        "description: a stateless status page\n"
        "services:\n"
        "  web:\n"
        "    image: caddy:2.11.2-alpine\n"
        "    expose: [8080]\n"
        "    healthcheck:\n"
        "      test: [CMD, wget, -q, -O, /dev/null, http://127.0.0.1:8080/]\n"
        f"    mem_limit: {mem_limit}\n"
    )
    host = studio / CLUSTER / "host.yaml"
    text = host.read_text().replace(
        "  edge: {}\n", "  edge: {}\n  status:\n    placement: {tier: apps}\n"
    )
    host.write_text(text)


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
