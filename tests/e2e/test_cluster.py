"""The example studio spread over THREE fresh sandbox boxes (inventory/sandbox-cluster: the
products and the edge on `front`, Ghost and Listmonk on `media`, Plausible with ClickHouse
on `stats`), end to end through the CLI: one `vpsctl apply` bootstraps the nodes, forms the
swarm, deploys every stack on its node with `docker stack deploy`, claims the first
launches, and probes every stack through Caddy on the edge node — across nodes, over the
overlay. A second plan and apply change nothing; the data written through Caddy before an
update survives it. `vpsctl audit` reads the three nodes in one command and is green; a
paused node fails it until put back. A worker is destroyed and rebuilt with its data; two
stacks move with theirs; a drill rebuilds every node from the repository on throwaway
boxes while the cluster runs on, untouched. (Forming the swarm, its firewall and the join token's
secrecy are tests/e2e/test_swarm.py's.)"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import make_box, on_box
from tests.e2e.rotation import signs_in, store_values
from tests.e2e.studio_data import (
    curl,
    ghost_first_post_command,
    ghost_post,
    listmonk_subscriber,
    pageviews_command,
    plausible_events,
    put_ghost_auth,
    subscriber_count_command,
)
from tests.helpers import (
    Result,
    assert_no_secrets,
    copy_studio,
    pin_stack,
    place_status,
    run_cli,
    secret_values,
)
from vpsctl.local import sandbox
from vpsctl.local.docker import docker
from vpsctl.local.sandbox import SandboxInfo
from vpsctl.spec.loader import load_spec

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
    # each node's bootstrap alone, in apply order: already in place everywhere
    booted = run_cli(cluster.root, "apply", "-i", INVENTORY, "--only", "bootstrap")
    assert booted.code == 0, booted.err[-4000:]
    said = [line for line in booted.err.splitlines() if line.startswith("bootstrap")]
    assert said[::2] == [f"bootstrap lumen-cluster/{n} …" for n in ("media", "stats", "front")]
    assert all(line.startswith("bootstrap: 0 changed, ") for line in said[1::2]), said
    after = {n: on_box(b, "docker ps -q --no-trunc | sort") for n, b in cluster.boxes.items()}
    assert after == ids  # no container restarted anywhere


def test_plan_json_has_every_node_and_the_swarm(cluster: Cluster) -> None:
    plan = run_cli(cluster.root, "plan", "-i", INVENTORY, "--json")
    assert plan.code == 0
    data = json.loads(plan.out)
    assert set(data["nodes"]) == set(NODES)
    assert data["swarm"] == [] and data["changes"] is False
    assert data["overlay"] == "plain (NOT encrypted)"


def test_database_passwords_are_swarm_secrets_in_no_service_spec(cluster: Cluster) -> None:
    """The official database images read their passwords from files (VAR_FILE): a manager's
    `docker service inspect` shows none of them; the databases run with them."""
    front = cluster.boxes["front"]
    values = secret_values(cluster.root)
    for service, variables in (
        ("listmonk_db", {"POSTGRES_PASSWORD"}),
        ("plausible_db", {"POSTGRES_PASSWORD"}),
        ("ghost_mysql", {"MYSQL_PASSWORD", "MYSQL_ROOT_PASSWORD"}),
    ):
        spec = on_box(front, f"docker service inspect {service}")
        leaked = [v[:4] + "…" for v in values if len(v) >= 8 and v in spec]
        assert not leaked, f"{service}: secret values in its service spec: {leaked}"
        env = json.loads(spec)[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
        names = {e.split("=", 1)[0] for e in env}
        assert {f"{v}_FILE" for v in variables} <= names and not variables & names, service
    secrets = on_box(front, "docker secret ls --format '{{.Name}}'").split()
    assert len(secrets) == 4 and all("password-" in s for s in secrets), secrets


def records(box: SandboxInfo, product: str) -> int:
    """How many records ``product`` holds, asked through Caddy as a visitor would."""
    answer = on_box(box, curl(f"{product}.lumen.test", f"https://{product}.lumen.test/api/records"))
    return int(json.loads(answer)["count"])


def post_record(box: SandboxInfo, product: str, n: int) -> None:
    """Record ``n`` written into ``product`` through Caddy (on the edge node ``box``)."""
    on_box(
        box,
        curl(
            f"{product}.lumen.test",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            json.dumps({"n": n, "product": product}),
            f"https://{product}.lumen.test/api/records",
        ),
    )


def test_an_env_change_updates_that_stack_only_and_its_data_stays(cluster: Cluster) -> None:
    front = cluster.boxes["front"]
    post_record(front, "cronping", 1)
    before = records(front, "cronping")
    assert before >= 1
    stack = cluster.root / "stacks" / "cronping.yaml"
    text = stack.read_text()
    changed = text.replace("PING_GRACE_SECONDS: 120", "PING_GRACE_SECONDS: 180", 1)
    assert changed != text
    ids = {n: on_box(b, "docker ps -q --no-trunc | sort") for n, b in cluster.boxes.items()}
    others = {n: found for n, found in ids.items() if n != "front"}
    # a saved plan, the stack edited once more after it: refused as stale, nothing changed
    stack.write_text(changed)
    planned = run_cli(cluster.root, "plan", "-i", INVENTORY, "--out", "plan.json")
    assert planned.code == 2, planned.err[-4000:]
    stack.write_text(changed.replace("PING_GRACE_SECONDS: 180", "PING_GRACE_SECONDS: 240", 1))
    refused = run_cli(cluster.root, "apply", "-i", INVENTORY, "plan.json")
    assert refused.code == 1, refused.err[-4000:]
    assert (
        "stale plan: node front: input changed: /opt/vpsctl/stacks/cronping/env/app.env "
        "renders differently than in the plan; nothing was changed. Run "
        f"`vpsctl plan -i {INVENTORY} --out plan.json` again" in refused.err
    ), refused.err[-4000:]
    assert {n: on_box(b, "docker ps -q --no-trunc | sort") for n, b in cluster.boxes.items()} == ids
    # the plan saved again, as the edit is meant: applied as saved, without asking
    stack.write_text(changed)
    planned = run_cli(cluster.root, "plan", "-i", INVENTORY, "--out", "plan.json")
    assert planned.code == 2, planned.err[-4000:]
    applied = run_cli(cluster.root, "apply", "-i", INVENTORY, "plan.json")
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


def test_history_lists_the_change_and_a_rollback_puts_the_old_version_back_on_its_node(
    cluster: Cluster,
) -> None:
    front = cluster.boxes["front"]
    before = records(front, "cronping")
    listed = run_cli(cluster.root, "history", "-i", INVENTORY, "--json", "cronping")
    assert listed.code == 0, listed.err[-3000:]
    versions = json.loads(listed.out)
    assert [(v["node"], v["current"]) for v in versions] == [("front", True), ("front", False)]
    refused = run_cli(cluster.root, "rollback", "-i", INVENTORY, "-y")
    assert refused.code == 1 and "is a cluster: name the stacks to put back" in refused.err
    others = {
        n: on_box(b, "docker ps -q --no-trunc | sort")
        for n, b in cluster.boxes.items()
        if n != "front"
    }
    back = run_cli(cluster.root, "rollback", "-i", INVENTORY, "-y", "cronping")
    assert_no_secrets(cluster.root, back.out, back.err)
    assert back.code == 0, back.err[-4000:]  # gated, probed through the edge, audit green
    old, new = versions[1]["version"], versions[0]["version"]
    assert f"rollback cronping on front: {new} → {old}" in back.err
    assert "cronping: recreate → applied" in back.err
    for node, box in cluster.boxes.items():
        if node != "front":
            assert on_box(box, "docker ps -q --no-trunc | sort") == others[node], node
    env = on_box(
        front,
        "docker inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "
        "$(docker ps -q --filter label=com.docker.compose.project=cronping)",
    )
    assert "PING_GRACE_SECONDS=120" in env.split()
    assert records(front, "cronping") == before
    now = json.loads(run_cli(cluster.root, "history", "-i", INVENTORY, "--json", "cronping").out)
    assert now[0]["current"] and now[0]["result"] == f"rollback to {old}"
    # the spec put back as the rollback left the box: nothing to change anywhere
    stack = cluster.root / "stacks" / "cronping.yaml"
    text = stack.read_text()
    stack.write_text(text.replace("PING_GRACE_SECONDS: 180", "PING_GRACE_SECONDS: 120", 1))
    planned = run_cli(cluster.root, "plan", "-i", INVENTORY)
    assert planned.code == 0 and "No changes." in planned.out, planned.out[-3000:]


# ── secrets rotated across the nodes ─────────────────────────────────────────────────────

# each database password rotated, and the node its database runs on
ROTATED_ON = {
    "GHOST_DB_ROOT_PASSWORD": "media",  # MySQL's root: a Swarm secret file on the node
    "LISTMONK_DB_PASSWORD": "media",  # Postgres: a Swarm secret file as well
    "PLAUSIBLE_DB_PASSWORD": "stats",
}


def test_secrets_rotated_on_a_cluster_change_each_database_on_its_node_and_rekey_once(
    cluster: Cluster,
) -> None:
    """Database passwords (held by the nodes as Swarm secrets) and the restic password of
    the one repository every node backs up into, rotated and applied: each database takes
    the new password and refuses the old, each node's journal records its share, every node
    backs up with the new key, and no value is printed."""
    inventory = cluster.root / INVENTORY
    keys = [*ROTATED_ON, "RESTIC_PASSWORD"]
    old = store_values(inventory)
    outputs: list[str] = []
    # the repository exists (with a snapshot under the old key): the rekey is a real one
    first = run_cli(cluster.root, "backup", "-i", INVENTORY, "--init")
    outputs += [first.out, first.err]
    assert first.code == 0, first.err[-3000:]
    rotated = run_cli(cluster.root, "secrets", "rotate", "-i", INVENTORY, *keys)
    outputs += [rotated.out, rotated.err]
    assert rotated.code == 0, rotated.err
    new = store_values(inventory)
    assert all(new[k] != old[k] for k in keys)
    plan = run_cli(cluster.root, "plan", "-i", INVENTORY)
    outputs += [plan.out, plan.err]
    assert plan.code == 2, plan.err[-3000:]
    for key in keys:
        assert f"~ {key} (" in plan.out, plan.out[-4000:]
    front = cluster.boxes["front"]
    products = on_box(front, "docker ps -q --no-trunc | sort")
    started = time.monotonic()
    applied = run_cli(cluster.root, "apply", "-i", INVENTORY, "-y")
    outputs += [applied.out, applied.err]
    assert applied.code == 0, applied.err[-6000:]
    print(f"cluster: rotation of {len(keys)} secrets applied in {time.monotonic() - started:.1f}s")
    for key, node in ROTATED_ON.items():
        box = cluster.boxes[node]
        assert signs_in(box, key, new[key]), f"{key}: the new value is refused on {node}"
        assert not signs_in(box, key, old[key]), f"{key}: the OLD value still signs in"
    # each node's journal: the restic key (every node holds backed-up stacks) and its databases
    for node, box in cluster.boxes.items():
        line = json.loads(on_box(box, "tail -n 1 /opt/vpsctl/journal.log"))
        outputs.append(json.dumps(line))
        entries = {e["key"]: e["result"] for e in line["rotations"]}
        mine = {k for k, n in ROTATED_ON.items() if n == node} | {"RESTIC_PASSWORD"}
        assert set(entries) == mine, (node, line["rotations"])
        assert all(result.startswith("ok") for result in entries.values()), (node, entries)
    # the products' node had no database to change: its containers are the same
    assert on_box(front, "docker ps -q --no-trunc | sort") == products
    # every node backs up into the one repository with the new password
    done = run_cli(cluster.root, "backup", "-i", INVENTORY)
    outputs += [done.out, done.err]
    assert done.code == 0, done.err[-3000:]
    again = run_cli(cluster.root, "plan", "-i", INVENTORY)
    outputs += [again.out, again.err]
    assert again.code == 0, again.out[-3000:]
    for key in keys:
        for value in (old[key], new[key]):
            assert not [o for o in outputs if value in o], f"a value of {key} was printed"
    assert_no_secrets(cluster.root, *outputs)


# ── the audit across the nodes ───────────────────────────────────────────────────────────


def audited(cluster: Cluster) -> tuple[Result, dict[str, Any]]:
    """``vpsctl audit --json`` of the cluster, its exit code and its report."""
    result = run_cli(cluster.root, "audit", "-i", INVENTORY, "--json")
    assert_no_secrets(cluster.root, result.out, result.err)
    return result, json.loads(result.out)


def test_the_audit_reads_every_node_in_one_command_and_is_green(cluster: Cluster) -> None:
    started = time.monotonic()
    result, report = audited(cluster)
    print(f"cluster: the audit of 3 nodes took {time.monotonic() - started:.1f}s")
    bad = [c for c in report["checks"] if c["status"] == "FAIL"]
    assert result.code == 0 and report["ok"], bad
    assert report["nodes"] == ["front", "media", "stats"]
    checks = {(c["node"], c["name"]): c for c in report["checks"]}
    for node in NODES:  # each node's share judged as one box's: its host and containers
        assert checks[(node, "config drift")]["status"] == "ok"
        assert checks[(node, "memory budget (sum of mem_limit + os_reserve)")]["status"] == "ok"
        assert checks[(node, f"node {node} availability")]["value"] == "active"
    assert checks[("media", "container ghost/ghost")]["status"] == "ok"
    assert checks[("stats", "container plausible/clickhouse")]["status"] == "ok"
    # every stack probed through the edge's Caddy, Ghost's content read from its own node
    for url in (
        "https://blog.lumen.test/",
        "https://lists.lumen.test/health",
        "https://stats.lumen.test/api/health",
        "https://documint.lumen.test/healthz",
    ):
        assert checks[("front", f"route GET {url}")]["status"] == "ok", url
    assert checks[("media", "ghost content API")]["status"] == "ok"
    assert checks[("stats", "first launch: plausible owner claimed")]["status"] == "ok"
    assert checks[("stats", "service plausible/clickhouse replicas")]["value"] == "1/1"
    assert checks[("media", "stack ghost on its node")]["status"] == "ok"
    text = run_cli(cluster.root, "audit", "-i", INVENTORY)
    assert text.code == 0 and "── node media ──" in text.out and "── cluster ──" in text.out


def test_a_paused_node_fails_the_audit_until_it_is_active_again(cluster: Cluster) -> None:
    # pausing changes no task (cheap to undo); a service below its replicas is judged from
    # real reads in tests/test_cluster_audit.py (a drained node, a node down)
    front = cluster.boxes["front"]
    media = on_box(cluster.boxes["media"], "hostname").strip()
    on_box(front, f"docker node update --availability pause {media}")
    try:
        result, report = audited(cluster)
        assert result.code == 1 and not report["ok"]
        bad = {c["name"]: c for c in report["checks"] if c["status"] == "FAIL"}
        assert list(bad) == ["node media availability"], bad
        paused = bad["node media availability"]
        assert paused["node"] == "media" and paused["value"].startswith("paused: ")
        assert f"`docker node update --availability active {media}`" in paused["value"]
        brief = run_cli(cluster.root, "audit", "-i", INVENTORY, "--brief")
        assert brief.code == 1 and "FAIL  node media availability" in brief.out
    finally:
        on_box(front, f"docker node update --availability active {media}")
    result, report = audited(cluster)
    assert result.code == 0, [c for c in report["checks"] if c["status"] == "FAIL"]


# ── restore, and a worker lost and rebuilt (it destroys a box, then rebuilds it) ────────


def on_node(cluster: Cluster, node: str, command: str) -> str:
    """``command`` run on ``node``, its curls sent to Caddy on front (the edge) as a
    visitor's: the keys and passwords they read stay on the node where their stack runs."""
    front = sandbox.internal_address(cluster.boxes["front"])
    return on_box(cluster.boxes[node], command.replace(":443:127.0.0.1", f":443:{front}"))


def on_media(cluster: Cluster, command: str) -> str:
    """``command`` run on media (:func:`on_node`)."""
    return on_node(cluster, "media", command)


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
    # without --node: the whole cluster's rebuild, refused over nodes that run stacks
    refused = run_cli(cluster.root, "rebuild", "-i", INVENTORY)
    assert refused.code == 1, refused.err[-3000:]
    assert "front runs cronping, documint, edge, flagbit, webhookvault; stats runs" in refused.err
    assert f"`vpsctl rebuild -i {INVENTORY} --node media` rebuilds the lost worker" in refused.err
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


# ── moving stacks between nodes, with their data ─────────────────────────────────────────

MOVED = {"documint": ("front", "stats"), "listmonk": ("media", "stats")}
SUBSCRIBERS = (
    "docker exec $(docker ps -q --filter label=com.docker.compose.project=listmonk "
    "--filter label=com.docker.compose.service=db) psql -U listmonk -d listmonk -At -c "
)


def test_two_stacks_move_with_their_data_and_no_record_is_lost(cluster: Cluster) -> None:
    front, media, stats = (cluster.boxes[n] for n in NODES)
    # records written before the move: documint's through Caddy, listmonk's in its database
    for n in range(3):
        post_record(front, "documint", n)
    on_box(
        media,
        SUBSCRIBERS + '"INSERT INTO subscribers (uuid, email, name, status) VALUES '
        "(gen_random_uuid(), 'moved@lumen.test', 'moved', 'enabled')\"",
    )
    documint = records(front, "documint")
    subscribers = on_box(media, SUBSCRIBERS + "'SELECT count(*) FROM subscribers'").strip()
    assert documint >= 3 and int(subscribers) >= 1
    for stack, (old, new) in MOVED.items():
        pin_stack(cluster.root / INVENTORY / "host.yaml", stack, old, new)
    plan = run_cli(cluster.root, "plan", "-i", INVENTORY)
    assert plan.code == 2, plan.out[-4000:]
    assert "move documint from front to stats with its data" in plan.out
    assert "move listmonk from media to stats with its data" in plan.out
    ghost = on_box(media, "docker ps -q --no-trunc --filter label=com.docker.compose.project=ghost")
    applied = run_cli(cluster.root, "apply", "-i", INVENTORY, "-y")
    assert applied.code == 0, applied.err[-6000:]
    for stack in MOVED:
        assert f"{stack}: pre-move snapshot " in applied.err
        assert f"{stack}: restoring its files from pre-move snapshot" in applied.err
    assert "listmonk: restoring its databases from pre-move snapshot" in applied.err
    # every record written before the move is served from the new node
    assert records(front, "documint") == documint
    assert on_box(stats, SUBSCRIBERS + "'SELECT count(*) FROM subscribers'").strip() == subscribers
    assert {"documint", "listmonk", "plausible"} <= stacks_on(stats)
    # nothing of them is left on the old nodes: no container (not even Swarm's exited
    # history), no files, no volume; Ghost on media was not touched
    for stack, (old, _) in MOVED.items():
        box = cluster.boxes[old]
        label = f"label=com.docker.compose.project={stack}"
        assert on_box(box, f"docker ps -aq --filter {label}").strip() == "", stack
        assert on_box(box, f"docker volume ls -q --filter {label}").strip() == "", stack
        assert on_box(box, f"test ! -e /opt/vpsctl/stacks/{stack} && echo gone").strip() == "gone"
    after = on_box(media, "docker ps -q --no-trunc --filter label=com.docker.compose.project=ghost")
    assert after == ghost
    again = run_cli(cluster.root, "plan", "-i", INVENTORY)
    assert again.code == 0 and "No changes. The 3 nodes match the spec." in again.out, again.out


# ── the whole cluster lost, rehearsed by a drill on throwaway boxes ───────────────────────


def placed_now(cluster: Cluster) -> dict[str, str]:
    """Each stack's node as host.yaml places it now (the move test moves two of them)."""
    spec = load_spec(cluster.root / INVENTORY)
    nodes = {stack: spec.nodes_of(stack) for stack in spec.host.stacks}
    assert all(len(n) == 1 for n in nodes.values()), nodes
    return {stack: n[0] for stack, n in nodes.items()}


def cluster_data(cluster: Cluster, where: dict[str, str]) -> dict[str, int]:
    """What a visitor sees through the edge: DocuMint's records, Ghost's posts, Listmonk's
    subscribers, Plausible's pageviews (each asked on the node that holds its keys)."""
    front = cluster.boxes["front"]
    posts = json.loads(on_node(cluster, where["ghost"], ghost_first_post_command()))
    subscribers = json.loads(on_node(cluster, where["listmonk"], subscriber_count_command()))
    pageviews = json.loads(on_box(front, pageviews_command()))
    return {
        "documint records": records(front, "documint"),
        "ghost posts": posts["meta"]["pagination"]["total"],
        "subscribers": subscribers["data"]["total"],
        "pageviews": pageviews["results"]["pageviews"]["value"],
    }


def snapshot_ids(cluster: Cluster) -> list[str]:
    """The repository's snapshots, as `vpsctl backup --list --json` gives them."""
    listed = run_cli(cluster.root, "backup", "-i", INVENTORY, "--list", "--json")
    assert listed.code == 0, listed.err[-3000:]
    return sorted(s["id"] for s in json.loads(listed.out))


def drill_boxes() -> list[str]:
    """The drill's sandbox containers on this machine, running or not."""
    out = docker("ps", "-a", "--filter", "name=vpsctl-sandbox-drill-", "--format", "{{.Names}}")
    return out.split()


def test_a_drill_rebuilds_the_whole_cluster_on_throwaway_boxes_and_leaves_it_untouched(
    cluster: Cluster,
) -> None:
    """The whole cluster lost, rehearsed: `vpsctl drill` rebuilds EVERY node from the
    repository onto a throwaway box of its own (a swarm of their own; one cluster apply
    with each node's files before its stacks and databases after health; the cluster's
    audit through the drill's edge), compares the row counts with the snapshots', and tears
    the boxes down. It is `vpsctl rebuild -i CLUSTER`'s own code (run_cluster_rebuild), on
    boxes named for the drill: the real cluster keeps running, unchanged, and the repository
    gains no snapshot (the drill boxes' backup timers are masked)."""
    front = cluster.boxes["front"]
    post_record(front, "documint", 1)
    on_box(front, " >/dev/null && ".join(plausible_events(3)) + " >/dev/null")
    where = placed_now(cluster)
    auth = put_ghost_auth(cluster.boxes[where["ghost"]])
    ghost = ghost_post(auth, "Written before the drill")
    on_node(cluster, where["ghost"], ghost + " >/dev/null")
    on_node(cluster, where["listmonk"], listmonk_subscriber("hamilton") + " >/dev/null")
    before = cluster_data(cluster, where)
    assert all(count >= 1 for count in before.values()), before
    started = time.monotonic()
    backup = run_cli(cluster.root, "backup", "-i", INVENTORY, "--init")
    assert backup.code == 0, backup.err[-3000:]
    took_backup = time.monotonic() - started
    # the one repository, checked once, through the manager (it holds backed-up stacks)
    checked = run_cli(cluster.root, "backup", "-i", INVENTORY, "--check")
    assert_no_secrets(cluster.root, checked.out, checked.err)
    assert checked.code == 0 and "repository check: ok" in checked.err, checked.err[-3000:]
    # the real rebuild of every node is for fresh boxes: over the live cluster, refused
    refused = run_cli(cluster.root, "rebuild", "-i", INVENTORY)
    assert refused.code == 1, refused.err[-3000:]
    assert "a rebuild without --node is for every node a fresh box" in refused.err
    snapshots = snapshot_ids(cluster)
    running = {n: on_box(b, "docker ps -q --no-trunc | sort") for n, b in cluster.boxes.items()}
    started = time.monotonic()
    drill = run_cli(cluster.root, "drill", "-i", INVENTORY)
    took_drill = time.monotonic() - started
    print(f"cluster: backup {took_backup:.1f}s, drill of every node {took_drill:.1f}s")
    assert_no_secrets(cluster.root, drill.out, drill.err)
    assert drill.code == 0, drill.err[-8000:] + drill.out[-3000:]
    boxes = drill.err.split("drill: throwaway boxes ", 1)[1].split(" …", 1)[0].split(", ")
    assert [b.rsplit("-", 1)[1] for b in boxes] == list(NODES), boxes
    assert f"drill passed (boxes {', '.join(boxes)} torn down)" in drill.out
    compared = drill.out.split("row counts: ", 1)[1].split("\n", 1)[0]
    assert compared.endswith("tables compared with the snapshot, 0 differ"), compared
    assert int(compared.split()[0]) >= 5, compared  # every node's databases
    for node in NODES:  # each node's own snapshot, restored on its own drill box
        assert f"  node {node}: snapshot " in drill.out, drill.out
    for line in (
        "swarm: init the swarm on front",
        "swarm: join media as a worker",
        "swarm: join stats as a worker",
        "host: timers masked (this box never backs up)",
        "probe ghost/home https://blog.lumen.test/: ok (200",
        "probe plausible/health https://stats.lumen.test/api/health: ok (200",
        "probe documint/health https://documint.lumen.test/healthz: ok (200",
    ):
        assert line in drill.err, line
    assert drill_boxes() == []  # every throwaway box torn down
    # the real cluster: the same containers, the same data, no snapshot added, audit green
    for node, box in cluster.boxes.items():
        assert on_box(box, "docker ps -q --no-trunc | sort") == running[node], node
    assert cluster_data(cluster, where) == before
    assert snapshot_ids(cluster) == snapshots
    result, audit = audited(cluster)
    assert result.code == 0, [c for c in audit["checks"] if c["status"] == "FAIL"]
    plan = run_cli(cluster.root, "plan", "-i", INVENTORY)
    assert plan.code == 0 and "No changes." in plan.out, plan.out[-4000:]


# ── a stateless stack placed by labels ───────────────────────────────────────────────────


def test_a_stack_placed_by_labels_is_held_by_both_its_nodes_and_gated_where_it_runs(
    cluster: Cluster,
) -> None:
    front, media, stats = (cluster.boxes[n] for n in NODES)
    place_status(cluster.root, INVENTORY)  # `status`, placed by {tier: apps}: media, stats
    plan = run_cli(cluster.root, "plan", "-i", INVENTORY)
    assert plan.code == 2, plan.out[-4000:]
    assert "status is placed by labels {tier: apps}: Swarm runs it on one of media, stats; " in (
        plan.out
    )
    assert plan.out.count("+ status: start") == 1  # one deploy, from stats
    # stats, the node that deploys it, is paused: Swarm must put its task on media, and
    # the health gate must read it there
    host = on_box(stats, "hostname").strip()
    on_box(front, f"docker node update --availability pause {host}")
    try:
        applied = run_cli(cluster.root, "apply", "-i", INVENTORY, "-y")
    finally:
        on_box(front, f"docker node update --availability active {host}")
    # every node applied; the apply's closing audit failed only the pause (undone above)
    assert applied.err.count("apply: ok in ") == 3, applied.err[-6000:]
    assert "status: start → applied" in applied.err
    fails = [
        line.split("FAIL", 1)[1].strip().split("  ")[0]
        for line in applied.err.splitlines()
        if "  FAIL  " in line
    ]
    assert applied.code == 1 and fails == ["node stats availability"], applied.err[-3000:]
    assert "status: 2 file(s) held here" in applied.err
    assert "status" in stacks_on(media) and "status" not in stacks_on(stats) | stacks_on(front)
    # it serves the page from media's own copy of its config file
    page = on_box(
        media,
        "docker exec $(docker ps -q --filter label=com.docker.compose.project=status) "
        "wget -qO- http://127.0.0.1:8080/",
    )
    assert page == "status: ok"
    caddyfile = "cat /opt/vpsctl/stacks/status/config/site/Caddyfile"
    assert on_box(media, caddyfile) == on_box(stats, caddyfile)
    assert on_box(front, "test ! -e /opt/vpsctl/stacks/status && echo gone").strip() == "gone"
    result, report = audited(cluster)
    assert result.code == 0, [c for c in report["checks"] if c["status"] == "FAIL"]
    placed = {c["name"]: c for c in report["checks"]}["stack status on its labels' nodes"]
    assert placed["value"] == "1 task on media"
    again = run_cli(cluster.root, "plan", "-i", INVENTORY)
    assert again.code == 0 and "No changes. The 3 nodes match the spec." in again.out, again.out
    # its way back, on both nodes: a new page applied; a page Caddy cannot load, whose
    # failed gate puts the previous files back on both; then `vpsctl rollback` of it
    site = cluster.root / "stacks" / "files" / "status" / "Caddyfile"
    first = site.read_text()
    second = first.replace("status: ok", "status: v2")
    site.write_text(second)
    changed = run_cli(cluster.root, "apply", "-i", INVENTORY, "-y")
    assert changed.code == 0, changed.err[-4000:]
    assert "status: recreate → applied" in changed.err
    assert on_box(media, caddyfile) == on_box(stats, caddyfile) == second.strip()
    site.write_text(':8080 {\n\tno_such_directive "status: broken"\n}\n')
    broken = run_cli(cluster.root, "apply", "-i", INVENTORY, "-y")
    assert broken.code == 1 and "status: recreate → rolled back" in broken.err, broken.err[-4000:]
    assert "status: its previous files are back on lumen-cluster/media" in broken.err
    assert on_box(media, caddyfile) == on_box(stats, caddyfile) == second.strip()
    site.write_text(second)  # the spec as the failed apply left the nodes
    listed = run_cli(cluster.root, "history", "-i", INVENTORY, "--json", "status")
    versions = json.loads(listed.out)
    assert [(v["node"], v["current"]) for v in versions][:2] == [("stats", True), ("stats", False)]
    back = run_cli(cluster.root, "rollback", "-i", INVENTORY, "-y", "status")
    assert_no_secrets(cluster.root, back.out, back.err)
    assert back.code == 0, back.err[-4000:]  # gated where it runs, the closing audit green
    assert f"rollback status on stats: {versions[0]['version']} → {versions[1]['version']}" in (
        back.err
    )
    assert on_box(media, caddyfile) == on_box(stats, caddyfile) == first.strip()
    (runs_on,) = [box for box in (media, stats) if "status" in stacks_on(box)]
    page = on_box(
        runs_on,
        "docker exec $(docker ps -q --filter label=com.docker.compose.project=status) "
        "wget -qO- http://127.0.0.1:8080/",
    )
    assert page == "status: ok"
    site.write_text(first)  # the spec as the rollback left the nodes
    result, report = audited(cluster)
    assert result.code == 0, [c for c in report["checks"] if c["status"] == "FAIL"]
    again = run_cli(cluster.root, "plan", "-i", INVENTORY)
    assert again.code == 0 and "No changes. The 3 nodes match the spec." in again.out, again.out
