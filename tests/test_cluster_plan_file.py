"""A cluster's saved plan (``vpsctl plan -i CLUSTER --out F``, ``vpsctl apply -i CLUSTER
F``), offline: the file checked before anything connects (its shape, each node's plan shaped
as one box's, the whole body bound to its hash, a plan of this cluster and its nodes), then
checked against every node once connected (each node as one box's, the swarm, the whole).
The plans here are made from fake facts (tests/factsim.py); the apply of a saved plan on
real boxes is tests/e2e/test_cluster.py's env-change test."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import factsim
from tests.helpers import edit, golden_prod_copy, run_cli
from tests.test_cluster_labels import NODES, whole
from tests.test_plan_file import edited
from vpsctl.core import cluster
from vpsctl.core.facts import HostFacts, parse
from vpsctl.core.plan import make_plan, plan_hash
from vpsctl.core.render import Desired
from vpsctl.ops import apply
from vpsctl.spec.loader import load_spec

CLUSTER = "inventory/sandbox-cluster"
AGAIN = f"nothing was changed. Run `vpsctl plan -i {CLUSTER} --out plan.json` again and review it."
CRONPING_ENV = "/opt/vpsctl/stacks/cronping/env/app.env"
Hosts = dict[str, factsim.SimHost]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The example studio: its one box (golden secrets) and its cluster (secrets made)."""
    golden_prod_copy(tmp_path)
    made = run_cli(tmp_path, "secrets", "generate", "-i", CLUSTER)
    assert made.code == 0, made.err
    return tmp_path


def converged(root: Path) -> Hosts:
    """Every node as the last apply of the cluster left it."""
    spec = load_spec(root / CLUSTER)
    desired = whole(spec)
    return {n: factsim.converged(cluster.node_view(spec, desired, n)) for n in NODES}


def planned(
    root: Path, hosts: Hosts, swarm: tuple[str, ...] = ()
) -> tuple[cluster.ClusterPlan, dict[str, tuple[Desired, HostFacts]]]:
    """The cluster's plan as `vpsctl plan` makes it against ``hosts`` now, and each node's
    share of the studio and facts (what the apply's check is given)."""
    spec = load_spec(root / CLUSTER)
    desired = whole(spec)
    shares = {n: cluster.node_view(spec, desired, n) for n in NODES}
    facts = cluster.placed_facts(spec, {n: parse(hosts[n].output()) for n in NODES})
    plans = {
        n: make_plan(f"{spec.host.name}/{n}", shares[n], facts[n], inventory=CLUSTER) for n in NODES
    }
    notes = [cluster.visibility_note(spec)]
    whole_plan = cluster.ClusterPlan(spec.host.name, plans, list(swarm), "encrypted", notes)
    return whole_plan, {n: (shares[n], facts[n]) for n in NODES}


def grace(root: Path, seconds: int) -> None:
    """cronping's (on node front) grace period set to ``seconds`` (120 as the example has)."""
    stack = root / "stacks/cronping.yaml"
    text = stack.read_text()
    stack.write_text(text.replace("PING_GRACE_SECONDS: 120", f"PING_GRACE_SECONDS: {seconds}"))


def saved(root: Path) -> tuple[dict[str, Any], Hosts]:
    """The cluster's plan of one change (cronping's env on front) as `vpsctl plan --out`
    writes it, and the nodes it was planned against."""
    hosts = converged(root)
    grace(root, 180)
    plan, _ = planned(root, hosts)
    assert plan.changes and plan.nodes["front"].changes
    assert not plan.nodes["media"].changes
    return plan.to_json(), hosts


def save(root: Path, data: Any) -> Path:
    path = root / "plan.json"
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def refused(root: Path, inventory: str = CLUSTER) -> str:
    """``vpsctl apply -i INVENTORY plan.json``: it must fail before connecting."""
    result = run_cli(root, "apply", "-i", inventory, "plan.json")
    assert result.code == 1
    assert result.out == ""
    return result.err


def rehashed(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its hash computed again over what it holds now."""
    data["plan_hash"] = plan_hash(data)
    return data


def front_file(data: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(
        f for f in data["nodes"]["front"]["files"] if f["path"] == CRONPING_ENV
    )
    return found


# ── loaded before anything connects ─────────────────────────────────────────────────────


def test_a_saved_cluster_plan_loads_as_saved_and_says_its_kind(root: Path) -> None:
    data, _ = saved(root)
    assert data["format"] == cluster.CLUSTER_PLAN_FORMAT
    loaded = apply.load_plan_file(save(root, data), CLUSTER)
    assert loaded == data and apply.is_cluster_plan(loaded)
    apply.check_target(loaded, Path("plan.json"), load_spec(root / CLUSTER), CLUSTER)


EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "a node's diff": lambda d: front_file(d).update(diff=front_file(d)["diff"].replace("180", "1")),
    "a node's summary": lambda d: d["nodes"]["media"].update(summary="Plan: 1 to add."),
    "the swarm": lambda d: d.update(swarm=["init the swarm on front"]),
    "a note": lambda d: d["notes"].append("reviewed"),
    "the summary": lambda d: d.update(summary="No changes. The 3 nodes match the spec."),
}


@pytest.mark.parametrize("what", list(EDITS))
def test_an_edit_anywhere_in_a_cluster_plan_is_refused(root: Path, what: str) -> None:
    data, _ = saved(root)
    EDITS[what](data)
    save(root, data)
    assert refused(root) == edited(data["plan_hash"], AGAIN)


def test_a_node_edited_under_a_whole_hash_made_again_is_refused_naming_it(root: Path) -> None:
    data, _ = saved(root)
    front_file(data)["diff"] = "      (nothing to see)"
    save(root, rehashed(data))
    node_hash = data["nodes"]["front"]["plan_hash"]
    assert refused(root) == edited(node_hash, AGAIN, "nodes.front: ")


MALFORMED: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "missing key": (lambda d: d.pop("cluster"), "plan.json: cluster: missing\n"),
    "nodes not a mapping": (
        lambda d: d.update(nodes=list(d["nodes"].values())),
        "plan.json: nodes: expected a mapping, found a list\n",
    ),
    "a swarm line not a string": (
        lambda d: d.update(swarm=[1]),
        "plan.json: swarm[0]: expected a string, found a number\n",
    ),
    "a node's plan not a mapping": (
        lambda d: d["nodes"].update(media="fine"),
        "plan.json: nodes.media: expected a mapping, found a string\n",
    ),
    "a node's missing key": (
        lambda d: d["nodes"]["media"].pop("facts_hash"),
        "plan.json: nodes.media.facts_hash: missing\n",
    ),
    "a node's nested wrong type": (
        lambda d: d["nodes"]["front"]["stacks"][0].update(services="app"),
        "plan.json: nodes.front.stacks[0].services: expected a list, found a string\n",
    ),
    "a node's plan of another kind": (
        lambda d: d["nodes"]["stats"].update(format=cluster.CLUSTER_PLAN_FORMAT),
        "plan.json: nodes.stats.format: expected 'vpsctl-plan/1', a node's plan\n",
    ),
}


@pytest.mark.parametrize("what", list(MALFORMED))
def test_a_malformed_cluster_plan_names_the_key(root: Path, what: str) -> None:
    data, _ = saved(root)
    change, expect = MALFORMED[what]
    change(data)
    save(root, data)
    assert refused(root) == expect + (
        f"plan.json: not a plan as `vpsctl plan -i … --out` writes it; {AGAIN}\n"
    )


def test_one_boxs_plan_given_to_a_cluster_is_refused_saying_which(root: Path) -> None:
    data, _ = saved(root)
    save(root, data["nodes"]["front"])  # a plan of one box, as one box's is shaped
    assert refused(root) == (
        "plan.json: a saved plan of one box (lumen-cluster/front), and "
        f"{CLUSTER} is a cluster (lumen-cluster: nodes front, media, stats): its apply takes a "
        f"cluster's plan; {AGAIN}\n"
    )


def test_a_clusters_plan_given_to_one_box_is_refused_saying_which(root: Path) -> None:
    data, _ = saved(root)
    save(root, data)
    again = AGAIN.replace(CLUSTER, "inventory/prod")
    assert refused(root, "inventory/prod") == (
        "plan.json: a saved plan of a cluster (lumen-cluster: nodes media, stats, front), and "
        f"inventory/prod is one box (lumen-prod): its apply takes a plan of that box; {again}\n"
    )


def test_a_plan_of_another_cluster_is_refused(root: Path) -> None:
    data, _ = saved(root)
    data["cluster"] = "lumen-staging"
    save(root, rehashed(data))
    assert refused(root) == (
        f"plan.json: cluster: a plan of cluster lumen-staging, and {CLUSTER} is cluster "
        f"lumen-cluster; {AGAIN}\n"
    )


def test_a_plan_whose_nodes_are_not_host_yamls_is_refused(root: Path) -> None:
    data, _ = saved(root)
    del data["nodes"]["stats"]
    save(root, rehashed(data))
    assert refused(root) == (
        "plan.json: nodes: the plan's nodes (front, media) are not host.yaml's (front, media, "
        f"stats); {AGAIN}\n"
    )


def test_an_unknown_format_names_both_kinds(root: Path) -> None:
    (root / "plan.json").write_text('{"format": "vpsctl-cluster-plan/9"}', encoding="utf-8")
    assert refused(root) == (
        "plan.json: format: not a vpsctl plan (format 'vpsctl-cluster-plan/9', expected "
        "'vpsctl-plan/1' (one box) or 'vpsctl-cluster-plan/1' (a cluster)); "
        f"{AGAIN}\n"
    )


def test_only_bootstrap_of_a_cluster_with_a_saved_plan_is_refused(root: Path) -> None:
    plan, _ = planned(root, converged(root))
    path = save(root, plan.to_json())
    result = run_cli(root, "apply", "-i", CLUSTER, str(path), "--only", "bootstrap")
    assert result.code == 1
    assert result.err.startswith("apply --only bootstrap runs each node's bootstrap, which")
    assert "nothing was changed" in result.err


# ── checked against every node once connected ───────────────────────────────────────────


def stale(root: Path, data: dict[str, Any], hosts: Hosts, swarm: tuple[str, ...] = ()) -> str:
    """Why the saved ``data`` is refused against ``hosts`` now ("" when it is not)."""
    plan, shares = planned(root, hosts, swarm)
    loaded = apply.load_plan_file(save(root, data), CLUSTER)
    try:
        apply.check_cluster_stale(loaded, plan, shares, Path("plan.json"), CLUSTER)
    except apply.StalePlan as exc:
        return str(exc)
    return ""


def test_a_fresh_cluster_plan_is_not_stale(root: Path) -> None:
    data, hosts = saved(root)
    assert stale(root, data, hosts) == ""


def test_an_input_changed_since_the_plan_is_named_on_its_node(root: Path) -> None:
    data, hosts = saved(root)
    edit(root / "stacks/cronping.yaml", "PING_GRACE_SECONDS: 180", "PING_GRACE_SECONDS: 240")
    # the other nodes' inputs changed too (the studio's), but nothing of theirs renders
    # differently: they are not named
    assert stale(root, data, hosts) == (
        f"stale plan: node front: input changed: {CRONPING_ENV} renders differently than in "
        f"the plan; {AGAIN}"
    )


def test_a_file_edited_on_a_node_is_named_with_the_node(root: Path) -> None:
    data, hosts = saved(root)
    compose = "/opt/vpsctl/stacks/ghost/compose.yaml"
    content, mode, owner = hosts["media"].files[compose]
    hosts["media"].files[compose] = (content + b"# edited by hand\n", mode, owner)
    assert stale(root, data, hosts) == (
        f"stale plan: node media: host changed: {compose} was edited on the host since the "
        f"plan; {AGAIN}"
    )


def test_a_container_stopped_on_a_node_is_stale(root: Path) -> None:
    data, hosts = saved(root)
    plausible = next(c for c in hosts["stats"].containers if c["project"] == "plausible")
    plausible["state"] = "exited"
    assert stale(root, data, hosts) == (
        "stale plan: node stats: host changed: containers, images or the manifest moved since "
        f"the plan; {AGAIN}"
    )


def test_the_swarm_changed_since_the_plan_is_named(root: Path) -> None:
    data, hosts = saved(root)
    line = "join stats as a worker (advertising 10.0.0.3)"
    assert stale(root, data, hosts, (line,)) == (
        f"stale plan: swarm changed: {line!r} is to do now; {AGAIN}"
    )


def test_a_whole_plan_that_differs_otherwise_is_stale(root: Path) -> None:
    """Nothing any node or the swarm says moved, and the plan computed now still is not
    the saved one (here: its notes, rehashed): refused."""
    data, hosts = saved(root)
    data["notes"] = ["nothing to see"]
    assert stale(root, rehashed(data), hosts) == (
        f"stale plan: the plan computed now differs from the saved one; {AGAIN}"
    )


def test_a_node_edited_with_both_hashes_made_again_is_stale_on_that_node(root: Path) -> None:
    data, hosts = saved(root)
    front_file(data)["diff"] = "      (nothing to see)"
    rehashed(data["nodes"]["front"])
    assert stale(root, rehashed(data), hosts) == (
        f"stale plan: node front: the plan computed now differs from the saved one; {AGAIN}"
    )
