"""A cluster's audit, judged from reads recorded on three real sandbox nodes (a manager's
swarm read and services read, tests/fixtures/swarm/audit-*.txt): all green, a node paused,
a node drained (its pinned stack runs nowhere), a node down (its docker stopped); and
from those, edited where a box cannot be made to do it cheaply (noted at each): a task on
the wrong node, a service scaled to 0, an undeclared member, a declared node missing. A node
that cannot be read, the text and JSON views, and what one box's audit keeps as it was."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_cli
from vpsctl.cli import views
from vpsctl.core import firewall
from vpsctl.core import swarm as core
from vpsctl.core.render import Desired
from vpsctl.ops import audit
from vpsctl.ops.apply.cluster import node_settings
from vpsctl.ops.audit import FAIL, OK, WARN, AuditFacts, Check, Report
from vpsctl.ops.cluster_audit import ClusterAudit, node_share, swarm_checks
from vpsctl.ops.inputs import render_spec
from vpsctl.spec.loader import load_spec
from vpsctl.spec.studio import Spec

FIXTURES = ROOT / "tests/fixtures/swarm"
CLUSTER = "inventory/sandbox-cluster"


def studio(root: Path, edit: Callable[[str], str] = lambda text: text) -> Spec:
    """The example cluster copied under ``root`` (host.yaml through ``edit``), secrets
    generated, loaded."""
    shutil.copytree(ROOT / "stacks", root / "stacks")
    shutil.copytree(ROOT / CLUSTER, root / CLUSTER, ignore=shutil.ignore_patterns("secrets.env"))
    host = root / CLUSTER / "host.yaml"
    host.write_text(edit(host.read_text()))
    result = run_cli(root, "secrets", "generate", "-i", CLUSTER)
    assert result.code == 0, result.err
    return load_spec(root / CLUSTER)


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Spec:
    return studio(tmp_path_factory.mktemp("cluster-audit"))


def recorded(name: str, edit: Callable[[str], str] = lambda text: text) -> str:
    return edit((FIXTURES / f"audit-{name}.txt").read_text())


def judged(spec: Spec, output: str) -> list[Check]:
    """The swarm's checks of a manager's read, as the audit judges them."""
    facts = core.parse(output)
    return swarm_checks(spec, facts.members, core.parse_services(output), "front")


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def failing(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks if c.status != OK}


# ── the swarm's checks ───────────────────────────────────────────────────────────────────


def test_all_green_every_node_service_and_stack_checked(spec: Spec) -> None:
    checks = judged(spec, recorded("green"))
    assert failing(checks) == {}
    names = by_name(checks)
    for node in ("front", "media", "stats"):
        assert names[f"node {node} status"].value == "ready"
        assert names[f"node {node} availability"].value == "active"
    # 12 services over 8 stacks: each at 1/1, each stack's tasks on its pinned node
    replicas = [c for c in checks if c.name.endswith(" replicas")]
    assert len(replicas) == 12 and {c.value for c in replicas} == {"1/1"}
    assert names["stack plausible on its node"].value == "3 tasks on stats"
    assert names["stack ghost on its node"].node == "media"
    assert all(c.group == "cluster" and c.node for c in checks)


def test_a_paused_node_fails_with_the_command_that_puts_it_back(spec: Spec) -> None:
    bad = failing(judged(spec, recorded("paused")))
    assert list(bad) == ["node media availability"]
    check = bad["node media availability"]
    assert check.status == FAIL and check.node == "media"
    assert check.value.startswith("paused: ")
    assert "`docker node update --availability active sandbox-aud-media`" in check.value


def test_a_drained_node_fails_and_so_do_its_pinned_services(spec: Spec) -> None:
    bad = failing(judged(spec, recorded("drained")))
    assert bad["node stats availability"].value.startswith("drained: ")
    db = bad["service plausible/db replicas"]
    assert db.status == FAIL and db.node == "stats"
    # docker's reason, without the quotes docker wraps it in
    assert db.value.startswith("0/1 (no suitable node (scheduling constraints")
    assert "stack plausible's db" in db.value
    assert bad["stack plausible on its node"].status == WARN
    assert set(bad) == {
        "node stats availability",
        "service plausible/plausible replicas",
        "service plausible/db replicas",
        "service plausible/clickhouse replicas",
        "stack plausible on its node",
    }


def test_a_node_down_fails_naming_it(spec: Spec) -> None:
    bad = failing(judged(spec, recorded("down")))
    down = bad["node stats status"]
    assert down.status == FAIL and down.node == "stats" and down.value.startswith("down: ")
    assert "node stats availability" not in bad  # still active: only its state says it
    assert bad["service plausible/clickhouse replicas"].value.startswith("0/1 ")


def test_a_service_scaled_to_zero_fails(spec: Spec) -> None:
    # edited from the green read: `docker service scale plausible_clickhouse=0` answers so
    def scaled(text: str) -> str:
        text = text.replace(
            '"plausible_clickhouse","mode":"replicated","replicas":"1/1"',
            '"plausible_clickhouse","mode":"replicated","replicas":"0/0"',
        )
        return "\n".join(x for x in text.split("\n") if "plausible_clickhouse.1" not in x)

    bad = failing(judged(spec, recorded("green", scaled)))
    assert list(bad) == ["service plausible/clickhouse replicas"]
    assert bad["service plausible/clickhouse replicas"].value.startswith("0/0: ")


def test_a_task_on_the_wrong_node_fails_naming_both(spec: Spec) -> None:
    # edited from the green read: plausible's db task reported on media instead of stats
    def moved(text: str) -> str:
        return text.replace(
            '"plausible_db.1","node":"sandbox-aud-stats"',
            '"plausible_db.1","node":"sandbox-aud-media"',
        )

    bad = failing(judged(spec, recorded("green", moved)))
    assert list(bad) == ["stack plausible on its node"]
    check = bad["stack plausible on its node"]
    assert check.status == FAIL and check.node == "stats"
    assert check.value.startswith("runs db on media, not on stats where the spec pins it")


def test_an_undeclared_member_warns_and_a_missing_node_fails(spec: Spec) -> None:
    # edited from the green read: stats's label gone (a box the spec does not know)
    def stranger(text: str) -> str:
        return text.replace('{"tier":"apps","vpsctl.node":"stats"}', '{"tier":"apps"}')

    checks = judged(spec, recorded("green", stranger))
    bad = failing(checks)
    member = bad["swarm member sandbox-aud-stats"]
    assert member.status == WARN and member.node == "sandbox-aud-stats"
    assert "is not a node of host.yaml" in member.value
    missing = bad["node stats in the swarm"]
    assert missing.status == FAIL and "`vpsctl apply -i" in missing.value


def test_a_failed_services_read_is_a_failing_check(spec: Spec) -> None:
    output = recorded("green").split("@@swarm-services")[0] + "@@swarm-services-unread\n"
    checks = judged(spec, output)
    assert failing(checks)["services read"].status == FAIL
    assert sum(c.name.endswith(" availability") for c in checks) == 3  # members still judged


def test_the_services_read_is_docker_json_or_an_error() -> None:
    assert core.parse_services("@@swarm-info\n{}\n") is None
    with pytest.raises(core.SwarmFactsError, match="replicas 'lots' of 'a_b' are no R/D"):
        core.parse_services(
            '@@swarm-services\n{"name":"a_b","mode":"replicated","replicas":"lots"}\n@@swarm-tasks\n'
        )


# ── a node's share, judged as one box ────────────────────────────────────────────────────


def test_a_nodes_share_holds_its_stacks_and_its_memory(spec: Spec) -> None:
    share = node_share(spec, "stats")
    assert list(share.stacks) == ["plausible"]
    assert share.host.memory == spec.host.nodes["stats"].memory  # type: ignore[index]
    assert spec.host.memory is None  # the whole cluster's spec is untouched


def test_a_node_holding_no_stack_with_backups_is_judged_without_backup_timers(
    tmp_path: Path,
) -> None:
    """It gets no backup machinery (render): its audit must not ask for the timers."""

    def quiet_node(text: str) -> str:  # (called once the stacks are copied)
        (tmp_path / "stacks" / "status.yaml").write_text(
            "description: a stateless status page\n"
            "services:\n  web:\n    image: caddy:2.11.2-alpine\n    expose: [8080]\n"
            "    healthcheck:\n      test: [CMD, wget, -q, -O, /dev/null, http://127.0.0.1:8080/]\n"
            "    mem_limit: 64m\n"
        )
        text = text.replace(
            "\n  stats:\n", "\n  quiet:\n    sandbox: {name: quiet}\n    memory: 2g\n  stats:\n", 1
        )
        return text.replace("  edge: {}\n", "  edge: {}\n  status:\n    node: quiet\n", 1)

    spec = studio(tmp_path, quiet_node)
    assert node_share(spec, "quiet").host.backup is None
    assert list(node_share(spec, "quiet").stacks) == ["status"]
    assert node_share(spec, "stats").host.backup == spec.host.backup is not None


def test_swarm_ports_listening_are_declared_on_a_swarm_node_only() -> None:
    lines = ['LISTEN 0 4096 *:7946 *:* users:(("dockerd",pid=738,fd=29))']
    one_box = firewall.Ports((22,), ())
    node = firewall.Ports((22,), (), ("172.17.0.2",), swarm=True)
    assert [e.port for e in firewall.listener_exposures(lines, one_box)[1]] == [7946]
    assert firewall.listener_exposures(lines, node)[1] == []


def container(
    status: str, task: bool, project: str = "plausible", service: str = "db"
) -> dict[str, object]:
    """A container as the audit reads it (a Swarm task's with ``task``)."""
    labels = {"com.docker.compose.project": project, "com.docker.compose.service": service}
    if task:
        labels["com.docker.swarm.task.id"] = "t"
    health = {"Status": "healthy" if status == "running" else "unhealthy"}
    return {
        "name": f"{project}_{service}.1.{status}",
        "labels": labels,
        "state": {"Status": status, "Health": health},
        "restarts": 0,
        "empty": [],
        "ports": {},
    }


def test_a_task_swarm_replaced_is_not_judged_beside_the_one_running(spec: Spec) -> None:
    share = node_share(spec, "stats")
    running, old = container("running", task=True), container("exited", task=True)
    for containers in ([running, old], [old, running]):
        checks = by_name(audit._containers(share, AuditFacts(containers=containers)))
        assert checks["container plausible/db"].value == "running, healthy"
    # one box's compose containers are judged as before: the last one read
    plain = [container("running", task=False), container("exited", task=False)]
    checks = by_name(audit._containers(share, AuditFacts(containers=plain)))
    assert checks["container plausible/db"].status == FAIL


# ── a node that cannot be read ───────────────────────────────────────────────────────────


def nowhere(text: str) -> str:
    """host.yaml's nodes as sandboxes none of which is up, its TLS Caddy's own."""
    for node in ("front", "media", "stats"):
        text = text.replace(f"sandbox: {{name: {node}}}", f"sandbox: {{name: gone-{node}}}")
    return text.replace("tls: pebble", "tls: internal")


def test_nodes_that_cannot_be_read_fail_naming_each_never_crash(tmp_path: Path) -> None:
    spec = studio(tmp_path / "studio", nowhere)
    desired: Desired = render_spec(spec, offline=True)
    report = ClusterAudit(spec, desired).run()
    assert not report.ok and report.nodes == ["front", "media", "stats"]
    bad = failing(report.checks)
    for node in ("front", "media", "stats"):
        check = bad[f"node {node} read"]
        assert check.node == node and check.value.startswith(f"node {node} could not be read: ")
        assert f"no sandbox 'gone-{node}' is recorded" in check.value
    assert bad["swarm read"].value.startswith("no manager's swarm read: front was not read")


# ── the views ────────────────────────────────────────────────────────────────────────────


def report() -> Report:
    return Report(
        "lumen-cluster",
        [
            Check("ghost", "container ghost/ghost", OK, "running, healthy", "", "media"),
            Check("host", "disk /", WARN, "85% used", "warn 80%", "media"),
            Check("host", "disk /", OK, "10% used", "warn 80%", "front"),
            Check("cluster", "node media availability", FAIL, "paused: …", "active", "media"),
            Check("cluster", "node front availability", OK, "active", "active", "front"),
        ],
        1.0,
        ["front", "media"],
    )


def test_the_text_groups_by_node_then_the_cluster() -> None:
    text = views.cluster_audit_text(report(), verbose=False)
    assert text.split("\n") == [
        "── node front ──",
        "host: ok (1 checks)",
        "── node media ──",
        "ghost: ok (1 checks)",
        "host:",
        "  warn  disk /  85% used  [warn 80%]",
        "── cluster ──",
        "cluster:",
        "  FAIL  node media availability  paused: …  [active]",
        "  ok    … and 1 more checks",
        "audit lumen-cluster: FAILING: 3 ok, 1 warn, 1 FAIL (1.0s)",
        "",
    ]


def test_the_json_is_one_report_every_check_with_its_node() -> None:
    data = json.loads(json.dumps(report().to_json()))
    assert data["ok"] is False and data["nodes"] == ["front", "media"]
    assert [c["node"] for c in data["checks"]] == ["media", "media", "front", "media", "front"]
    # one box's report carries no node: its JSON is as it was
    one = Report("lumen", [Check("host", "disk /", OK, "10% used")]).to_json()
    assert "nodes" not in one and one["checks"] == [
        {"group": "host", "name": "disk /", "status": "ok", "value": "10% used", "threshold": ""}
    ]


# ── each node's ONE read ─────────────────────────────────────────────────────────────────


def test_each_node_reads_its_share_and_only_the_edge_probes_every_stack(tmp_path: Path) -> None:
    spec = studio(tmp_path / "studio", nowhere)
    run = ClusterAudit(spec, render_spec(spec, offline=True))
    # where the nodes reach each other (a sandbox's comes from its record: none is up here)
    run.addresses = {"front": "10.0.0.1", "media": "10.0.0.2", "stats": "10.0.0.3"}
    front, media, stats = (run.script(node) for node in ("front", "media", "stats"))
    # the manager alone reads the services; every node its facts, swarm and the box, once
    assert "@@swarm-services" in front and "@@swarm-services" not in media + stats
    for script in (front, media, stats):
        assert script.count("@@swarm-info") == 1 and script.count("echo '@@audit-end'") == 1
    # the edge probes every stack's routes, the other nodes' included, through itself
    for host in ("documint.lumen.test", "lists.lumen.test", "stats.lumen.test"):
        assert f"{host}:443:127.0.0.1" in front and host not in media
    assert "stats.lumen.test:443:127.0.0.1" not in stats
    # Ghost's content and the first launches are read where the stack (and Ghost's key)
    # is, through the edge node's Caddy at its address
    ghost = "vpsctl_ghost ghost blog.lumen.test /opt/vpsctl/apps/ghost/ghost-content-key"
    assert f"{ghost} ' -k' 10.0.0.1" in media and "vpsctl_ghost ghost" not in front + stats
    assert "blog.lumen.test:443:10.0.0.1" in media
    assert "stats.lumen.test:443:10.0.0.1" in stats
    # the firewall each node is judged against: the edge's open ports, SSH elsewhere
    assert node_settings(spec, "front", ("10.0.0.2",)).ports.tcp == (22, 80, 443)
    assert node_settings(spec, "media", ("10.0.0.1",)).ports.tcp == (22,)
