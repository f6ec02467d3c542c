"""The example studio spread over THREE fresh sandbox boxes (inventory/sandbox-cluster: the
products and the edge on `front`, Ghost and Listmonk on `media`, Plausible with ClickHouse
on `stats`), end to end through the CLI: one `vpsctl apply` bootstraps the nodes, forms the
swarm, deploys every stack on its node with `docker stack deploy`, claims the first
launches, and probes every stack through Caddy on the edge node — across nodes, over the
overlay. A second plan and apply change nothing; the data written through Caddy before an
update survives it. (Forming the swarm, its firewall and the join token's secrecy are
tests/e2e/test_swarm.py's.)"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import make_box, on_box
from tests.e2e.studio_data import (
    curl,
    ghost_first_post_command,
    ghost_post,
    listmonk_subscriber,
    put_ghost_auth,
    subscriber_count_command,
)
from tests.helpers import Result, copy_studio, run_cli
from vpsctl.local import sandbox
from vpsctl.local.sandbox import SandboxInfo

pytestmark = pytest.mark.e2e

INVENTORY = "inventory/sandbox-cluster"
NODES = ("front", "media", "stats")
# where each stack runs, as the inventory places it
PLACES = {
    "front": {"documint", "cronping", "flagbit", "webhookvault", "edge"},
    "media": {"ghost", "listmonk"},
    "stats": {"plausible"},
}


@dataclass
class Cluster:
    """The studio's copy, its three boxes by node name, and its first apply."""

    root: Path
    boxes: dict[str, SandboxInfo]
    first: Result
    took: float


@pytest.fixture(scope="module")
def cluster(state_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three fresh boxes and the backup box (made at once), the example cluster pointed at
    them, applied."""
    made: dict[str, SandboxInfo] = {}
    lock = threading.Lock()

    def make(node: str) -> SandboxInfo:
        info = make_box(f"cl-{node}")
        with lock:
            made[node] = info
        return info

    try:
        with ThreadPoolExecutor(4) as pool:
            made_all = dict(
                zip((*NODES, "backup"), pool.map(make, (*NODES, "backup")), strict=True)
            )
        storage = made_all.pop("backup")
        boxes = made_all
        root = copy_studio(tmp_path_factory.mktemp("cluster"))
        host = root / INVENTORY / "host.yaml"
        text = host.read_text()
        for node, info in boxes.items():
            text = text.replace(f"sandbox: {{name: {node}}}", f"sandbox: {{name: {info.name}}}")
        text = text.replace("sandbox: backup,", f"sandbox: {storage.name},")
        assert storage.name in text
        host.write_text(text)
        generated = run_cli(root, "secrets", "generate", "-i", INVENTORY)
        assert generated.code == 0, generated.err
        started = time.monotonic()
        first = run_cli(root, "apply", "-i", INVENTORY, "-y")
        took = time.monotonic() - started
        print(f"cluster: the studio applied onto 3 fresh nodes in {took:.1f}s")
        yield Cluster(root, boxes, first, took)
    finally:
        for info in made.values():
            sandbox.down(info.name)


def stacks_on(box: SandboxInfo) -> set[str]:
    """The stacks whose containers run on ``box`` (their compose project label)."""
    out = on_box(
        box,
        "docker ps --filter status=running --format '{{.Label \"com.docker.compose.project\"}}'",
    )
    return {line for line in out.split() if line}


def test_one_apply_forms_the_swarm_and_places_every_stack_on_its_node(cluster: Cluster) -> None:
    err = cluster.first.err
    assert cluster.first.code == 0, err[-6000:]
    for line in (
        "swarm: init the swarm on front",
        "swarm: join media as a worker",
        "swarm: join stats as a worker",
        "swarm: create the plain (NOT encrypted) overlay network vpsctl-overlay",
    ):
        assert line in err
    # the plan said plainly how traffic between the nodes travels
    assert "traffic between them: plain (NOT encrypted) overlay" in cluster.first.out
    for node, box in cluster.boxes.items():
        assert stacks_on(box) == PLACES[node], node
    services = on_box(
        cluster.boxes["front"], "docker service ls --format '{{.Name}} {{.Replicas}}'"
    )
    replicas = dict(line.split() for line in services.splitlines())
    assert len(replicas) == 12 and set(replicas.values()) == {"1/1"}, replicas


def test_caddy_on_the_edge_node_serves_the_stacks_of_the_other_nodes(cluster: Cluster) -> None:
    # the apply's gates probed every stack through the edge: Ghost's and Plausible's from
    # their own nodes, over the overlay
    for probe in (
        "probe ghost/home https://blog.lumen.test/: ok (200",
        "probe listmonk/health https://lists.lumen.test/health: ok (200",
        "probe plausible/health https://stats.lumen.test/api/health: ok (200",
        "probe documint/health https://documint.lumen.test/healthz: ok (200",
    ):
        assert probe in cluster.first.err
    # and a visitor's request, through the edge node's port 443, reaches Ghost on media
    front = cluster.boxes["front"]
    status = on_box(
        front,
        "curl -sk -o /dev/null -w '%{http_code}' --resolve blog.lumen.test:443:127.0.0.1 "
        "https://blog.lumen.test/ghost/api/admin/site/",
    )
    assert status == "200"


def test_the_first_launches_were_claimed_on_their_nodes(cluster: Cluster) -> None:
    err = cluster.first.err
    assert "ghost: first launch of Ghost: owner claimed by vpsctl" in err
    assert "plausible: first launch" in err


def test_a_second_plan_and_apply_change_nothing(cluster: Cluster) -> None:
    ids = {n: on_box(b, "docker ps -q --no-trunc | sort") for n, b in cluster.boxes.items()}
    plan = run_cli(cluster.root, "plan", "-i", INVENTORY)
    assert plan.code == 0, plan.out[-4000:]
    assert "No changes. The 3 nodes match the spec." in plan.out
    again = run_cli(cluster.root, "apply", "-i", INVENTORY, "-y")
    assert again.code == 0, again.err[-4000:]
    after = {n: on_box(b, "docker ps -q --no-trunc | sort") for n, b in cluster.boxes.items()}
    assert after == ids  # no container restarted anywhere


def test_plan_json_has_every_node_and_the_swarm(cluster: Cluster) -> None:
    plan = run_cli(cluster.root, "plan", "-i", INVENTORY, "--json")
    assert plan.code == 0
    data = json.loads(plan.out)
    assert set(data["nodes"]) == set(NODES)
    assert data["swarm"] == [] and data["changes"] is False
    assert data["overlay"] == "plain (NOT encrypted)"


def records(box: SandboxInfo, product: str) -> int:
    """How many records ``product`` holds, asked through Caddy as a visitor would."""
    answer = on_box(box, curl(f"{product}.lumen.test", f"https://{product}.lumen.test/api/records"))
    return int(json.loads(answer)["count"])


def test_an_env_change_updates_that_stack_only_and_its_data_stays(cluster: Cluster) -> None:
    front = cluster.boxes["front"]
    body = json.dumps({"n": 1, "product": "cronping"})
    url = "https://cronping.lumen.test/api/records"
    on_box(
        front,
        curl(
            "cronping.lumen.test",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            body,
            url,
        ),
    )
    before = records(front, "cronping")
    assert before >= 1
    stack = cluster.root / "stacks" / "cronping.yaml"
    text = stack.read_text()
    stack.write_text(text.replace("PING_GRACE_SECONDS: 120", "PING_GRACE_SECONDS: 180", 1))
    assert stack.read_text() != text
    others = {
        n: on_box(b, "docker ps -q --no-trunc | sort")
        for n, b in cluster.boxes.items()
        if n != "front"
    }
    applied = run_cli(cluster.root, "apply", "-i", INVENTORY, "-y")
    assert applied.code == 0, applied.err[-4000:]
    assert "~ cronping: recreate [app]" in applied.out  # the plan it showed
    assert "cronping: recreate → applied" in applied.err
    assert "documint: recreate" not in applied.out + applied.err
    for node, box in cluster.boxes.items():
        if node != "front":
            assert on_box(box, "docker ps -q --no-trunc | sort") == others[node], node
    # the new container serves the records the old one wrote (its volume stayed on front)
    assert records(front, "cronping") == before
    env = on_box(
        front,
        "docker inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "
        "$(docker ps -q --filter label=com.docker.compose.project=cronping)",
    )
    assert "PING_GRACE_SECONDS=180" in env.split()


# ── a worker lost and rebuilt (LAST: it destroys a box) ──────────────────────────────────


def on_media(cluster: Cluster, command: str) -> str:
    """``command`` run on media, its curls sent to Caddy on front (the edge) as a visitor's:
    the keys and passwords they read stay on media, where their stack runs."""
    front = sandbox.internal_address(cluster.boxes["front"])
    return on_box(cluster.boxes["media"], command.replace(":443:127.0.0.1", f":443:{front}"))


def media_data(cluster: Cluster) -> dict[str, int]:
    """Ghost's posts and Listmonk's subscribers, as a visitor sees them through the edge."""
    posts = json.loads(on_media(cluster, ghost_first_post_command()))
    subscribers = json.loads(on_media(cluster, subscriber_count_command()))
    return {
        "ghost posts": posts["meta"]["pagination"]["total"],
        "subscribers": subscribers["data"]["total"],
    }


def test_a_restore_puts_a_stack_s_data_back_on_its_node(cluster: Cluster) -> None:
    backup = run_cli(cluster.root, "backup", "-i", INVENTORY, "--init", "--stack", "listmonk")
    assert backup.code == 0, backup.err[-3000:]
    before = media_data(cluster)["subscribers"]
    on_media(cluster, listmonk_subscriber("lovelace") + " >/dev/null")
    assert media_data(cluster)["subscribers"] == before + 1
    restored = run_cli(cluster.root, "restore", "-i", INVENTORY, "--stack", "listmonk", "-y")
    assert restored.code == 0, restored.err[-4000:]
    assert "safety snapshot" in restored.err and "row counts match the snapshot" in restored.err
    assert media_data(cluster)["subscribers"] == before  # the one written since is gone


def test_a_lost_worker_is_rebuilt_on_a_fresh_box_with_its_data_back(cluster: Cluster) -> None:
    auth = put_ghost_auth(cluster.boxes["media"])
    on_media(cluster, ghost_post(auth, "Written before media was lost") + " >/dev/null")
    on_media(cluster, listmonk_subscriber("hopper") + " >/dev/null")
    before = media_data(cluster)
    assert before["ghost posts"] >= 1 and before["subscribers"] >= 1
    started = time.monotonic()
    backup = run_cli(cluster.root, "backup", "-i", INVENTORY, "--init")
    assert backup.code == 0, backup.err[-3000:]
    assert "secrets.env: snapshot" in backup.out and backup.out.count("── node ") == 3
    listed = run_cli(cluster.root, "backup", "-i", INVENTORY, "--list")
    assert listed.code == 0 and "NODE" in listed.out
    assert any(line.split()[3:5] == ["media", "ghost"] for line in listed.out.splitlines())
    took_backup = time.monotonic() - started
    others = {
        n: on_box(b, "docker ps -q --no-trunc | sort")
        for n, b in cluster.boxes.items()
        if n != "media"
    }
    # the box is lost; a fresh one stands in for it under the same name
    name = cluster.boxes["media"].name
    sandbox.down(name)
    cluster.boxes["media"] = sandbox.up(name)
    refused = run_cli(cluster.root, "rebuild", "-i", INVENTORY)
    assert (
        refused.code == 1 and "name the lost one with --node (front, media, stats)" in refused.err
    )
    started = time.monotonic()
    rebuilt = run_cli(cluster.root, "rebuild", "-i", INVENTORY, "--node", "media", "--json")
    took_rebuild = time.monotonic() - started
    print(f"cluster: backup {took_backup:.1f}s, rebuild of media {took_rebuild:.1f}s")
    assert rebuilt.code == 0, rebuilt.err[-6000:]
    report = json.loads(rebuilt.out)
    assert report["ok"] is True and report["host"] == "lumen-cluster/media"
    assert report["stale_swarm_entries"], report  # the lost box's entry was removed
    assert {"restore files", "restore databases", "stacks up"} <= set(report["phases"])
    assert "swarm: join media as a worker" in rebuilt.err
    for probe in (
        "probe ghost/home https://blog.lumen.test/: ok (200",
        "probe listmonk/health https://lists.lumen.test/health: ok (200",
    ):
        assert probe in rebuilt.err
    assert media_data(cluster) == before  # the post and the subscriber came back
    for node, box in cluster.boxes.items():
        if node != "media":  # nothing restarted on the other nodes
            assert on_box(box, "docker ps -q --no-trunc | sort") == others[node], node
    # the swarm lists three nodes, all ready: the lost box's entry is gone
    nodes = on_box(cluster.boxes["front"], "docker node ls --format '{{.Status}}'")
    assert nodes.split() == ["Ready"] * 3, nodes
    plan = run_cli(cluster.root, "plan", "-i", INVENTORY)
    assert plan.code == 0, plan.out[-4000:]
