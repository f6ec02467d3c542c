"""A cluster's stack placed by labels (host.yaml's `placement:`), offline: every node it may
run on holds its files and images, ONE node (the last of them in apply order) deploys it and
plans it against its containers wherever Swarm put them, its health gate reads the node
Swarm put its task on, the audit accepts it on any of those nodes only, and a rollback of it
takes the versions its deploying node keeps (its way back on every node holding it:
tests/test_cluster_label_rollback.py). On real boxes: tests/e2e/test_cluster.py's last test."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from tests import factsim
from tests.helpers import ROOT, place_status, run_cli
from tests.scripted import ScriptedSession
from tests.test_cluster_audit import container
from tests.test_cluster_versions import kept
from vpsctl.core import cluster
from vpsctl.core import swarm as swarm_core
from vpsctl.core.facts import parse
from vpsctl.core.plan import Plan, make_plan
from vpsctl.core.render import Desired
from vpsctl.ops import audit
from vpsctl.ops.apply.host import HostSetup
from vpsctl.ops.apply.runtime import SwarmRuntime
from vpsctl.ops.audit import FAIL, OK, AuditFacts
from vpsctl.ops.cluster_audit import node_share, placement_checks
from vpsctl.ops.inputs import render_spec
from vpsctl.ops.versions import ByNode, choose_on_nodes
from vpsctl.spec.loader import load_spec
from vpsctl.spec.studio import Spec

CLUSTER = "inventory/sandbox-cluster"
NODES = ("media", "stats", "front")  # apply order: the edge node last
STATUS_FILES = {
    "/opt/vpsctl/stacks/status/compose.yaml",
    "/opt/vpsctl/stacks/status/config/site/Caddyfile",
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The example cluster with `status` placed by `{tier: apps}` (media and stats)."""
    return labelled(tmp_path)


def labelled(tmp_path: Path) -> Path:
    """:func:`root`'s studio, under ``tmp_path``."""
    shutil.copytree(ROOT / "stacks", tmp_path / "stacks")
    shutil.copytree(
        ROOT / CLUSTER, tmp_path / CLUSTER, ignore=shutil.ignore_patterns("secrets.env")
    )
    place_status(tmp_path, CLUSTER)
    result = run_cli(tmp_path, "secrets", "generate", "-i", CLUSTER)
    assert result.code == 0, result.err
    return tmp_path


@pytest.fixture
def spec(root: Path) -> Spec:
    return load_spec(root / CLUSTER)


def whole(spec: Spec) -> Desired:
    """The studio rendered offline, its placeholders taken as real (plans refuse them)."""
    return replace(render_spec(spec, offline=True), unresolved=())


def views(spec: Spec) -> dict[str, Desired]:
    desired = whole(spec)
    return {node: cluster.node_view(spec, desired, node) for node in NODES}


def plans(spec: Spec, hosts: dict[str, factsim.SimHost]) -> dict[str, Plan]:
    """Each node's plan as `vpsctl plan` makes it: its view, the facts placed."""
    shares = views(spec)
    facts = cluster.placed_facts(spec, {n: parse(hosts[n].output()) for n in NODES})
    return {n: make_plan(f"c/{n}", shares[n], facts[n]) for n in NODES}


def converged(spec: Spec, runs_on: str) -> dict[str, factsim.SimHost]:
    """Every node as the last apply left it, `status`'s task on node ``runs_on``."""
    shares = views(spec)
    hosts = {n: factsim.converged(shares[n]) for n in NODES}
    status = whole(spec).stacks["status"]
    for host in hosts.values():  # files and images are on every node that may run it
        host.containers = [c for c in host.containers if c["project"] != "status"]
        host.images = sorted({*host.images, *(i.ref for i in status.images)})
    hosts[runs_on].containers.append(
        {"project": "status", "service": "web", "image": status.service_images["web"]}
    )
    return hosts


def stack_actions(plan: Plan) -> dict[str, str]:
    return {s.stack: s.action for s in plan.stacks}


# ── where it is deployed from, and what each node holds ──────────────────────────────────


def test_every_node_it_may_run_on_holds_its_files_and_one_deploys_it(spec: Spec) -> None:
    assert cluster.candidates(spec, "status") == ["media", "stats"]
    assert cluster.stack_node(spec, "status") == "stats"  # the last of them in apply order
    assert cluster.holders(spec, "status") == ["media"]
    assert cluster.holders(spec, "ghost") == [] and cluster.stack_node(spec, "ghost") == "media"
    shares = views(spec)
    assert "status" in shares["stats"].stacks and "status" not in shares["stats"].held
    assert "status" in shares["media"].held and "status" not in shares["media"].stacks
    assert "status" not in shares["front"].stacks and "status" not in shares["front"].held
    for node in ("media", "stats"):
        held = {p for p, f in shares[node].files.items() if f.stack == "status"}
        assert held == STATUS_FILES, node
    assert not [f for f in shares["front"].files.values() if f.stack == "status"]
    assert "status" not in shares["media"].app_steps


def test_a_first_plan_ships_its_files_and_images_to_both_and_deploys_it_once(
    spec: Spec,
) -> None:
    bare = {n: factsim.SimHost(docker="26.1.5+dfsg1") for n in NODES}
    planned = plans(spec, bare)
    image = whole(spec).stacks["status"].service_images["web"]
    for node in ("media", "stats"):
        files = {f.path: f.action for f in planned[node].files if f.stack == "status"}
        assert files == dict.fromkeys(STATUS_FILES, "create"), node
        assert image in {i.ref for i in planned[node].images}, node
    assert stack_actions(planned["stats"])["status"] == "start"
    assert "status" not in stack_actions(planned["media"])  # holds it: no second deploy
    assert "status" not in stack_actions(planned["front"])
    notes = cluster.placement_notes(spec)
    assert notes == [
        "status is placed by labels {tier: apps}: Swarm runs it on one of media, stats; stats "
        "deploys it and keeps its versions; media holds its files and images (Swarm may "
        "start it there)"
    ]


@pytest.mark.parametrize("runs_on", ["media", "stats"])
def test_a_second_plan_is_empty_wherever_swarm_put_its_task(spec: Spec, runs_on: str) -> None:
    planned = plans(spec, converged(spec, runs_on))
    for node, plan in planned.items():
        assert not plan.changes, (node, plan.summary(), plan.stacks)
    assert stack_actions(planned["stats"])["status"] == "none"
    assert "status" not in stack_actions(planned["media"])  # not removed where it runs


def test_its_containers_are_its_deploying_nodes_only_where_it_may_run(spec: Spec) -> None:
    hosts = converged(spec, "media")
    read = {n: parse(hosts[n].output()) for n in NODES}
    placed = cluster.placed_facts(spec, read)
    assert "status" in placed["stats"].projects() and "status" not in placed["media"].projects()
    assert placed["front"] is read["front"]  # nothing of it there: untouched
    # on a node its labels do not match, its container stays there: that node removes it
    hosts = converged(spec, "stats")
    hosts["front"].containers.append({"project": "status", "service": "web", "image": "x"})
    planned = plans(spec, hosts)
    assert stack_actions(planned["front"])["status"] == "remove"
    assert stack_actions(planned["stats"])["status"] == "none"


def test_pinning_it_to_a_node_plans_a_move_without_data(root: Path, spec: Spec) -> None:
    hosts = converged(spec, "media")
    host = root / CLUSTER / "host.yaml"
    host.write_text(host.read_text().replace("placement: {tier: apps}", "node: front"))
    pinned = load_spec(root / CLUSTER)
    planned = plans(pinned, hosts)
    assert stack_actions(planned["front"])["status"] == "start"
    # removed where its task ran, and where it was deployed from (its manifest records it):
    # neither is one of its nodes now, so neither takes it off the swarm (front deploys it)
    assert stack_actions(planned["media"])["status"] == "remove"
    assert stack_actions(planned["stats"])["status"] == "remove"
    for node in ("media", "stats"):
        deleted = {f.path for f in planned[node].files if f.action == "delete"}
        assert deleted == STATUS_FILES, node
    (move,) = cluster.moves(pinned, planned)
    assert (move.stack, move.new, move.data) == ("status", "front", False)
    assert cluster.move_refusals(pinned, [move]) == []


def test_a_node_holding_it_uploads_its_changed_files_before_its_stacks(spec: Spec) -> None:
    share = views(spec)["media"]
    plan = make_plan("c/media", share, parse(factsim.SimHost(docker="26.1.5").output()))
    session = ScriptedSession()
    said: list[str] = []
    applier = SimpleNamespace(
        spec=spec, session=session, desired=share, plan=plan, say=said.append, record=said.append
    )
    applier.previous, applier.held_created = lambda name: f"/opt/vpsctl/previous/{name}", {}
    HostSetup(cast(Any, applier)).held_files()
    assert set(session.written) == STATUS_FILES
    assert applier.held_created == {"status": sorted(STATUS_FILES)}  # new here: none to keep
    assert said[0] == "status: 2 file(s) held here (Swarm may start it here)"


# ── its health gate follows the node Swarm put its task on ───────────────────────────────


def runtime(spec: Spec, manager: ScriptedSession, **nodes: ScriptedSession) -> SwarmRuntime:
    applier = SimpleNamespace(spec=spec, session=nodes.get("stats", ScriptedSession()))
    found = SwarmRuntime(cast(Any, applier), manager, nodes)
    found.expected["status"] = {"web": "abc123"}
    return found


def test_the_gate_reads_the_container_on_the_node_swarm_put_the_task_on(spec: Spec) -> None:
    manager = ScriptedSession().answer(r"docker service ps", stdout="web\tmedia\n")
    media = ScriptedSession().answer(r"@@health", stdout="@@health\nweb\trunning\thealthy\t1\n")
    stats = ScriptedSession().answer(r"@@health", stdout="@@health\nweb\tpending\tnone\t0\n")
    gate = runtime(spec, manager, media=media, stats=stats)
    assert gate.poll("status", ["web"]) == ({"web": ("running", "healthy", 0)}, "")
    asked = [c.command for c in manager.calls]
    assert len(asked) == 1 and "status_" in asked[0] and "vpsctl.node" in asked[0]
    assert [c for c in media.calls if "@@health" in c.command]
    assert not stats.calls  # the deploying node is not where the task runs: never read
    # not placed yet: waiting, as a pending task is
    manager.answer(r"docker service ps", stdout="")
    assert gate.poll("status", ["web"]) == ({"web": ("created", "none", 0)}, "")
    # a pinned stack is read on its own node, as before: the manager is not asked
    before = len(manager.calls)
    stats.answer(r"@@health", stdout="@@health\ndb\trunning\thealthy\t1\n")
    assert gate.poll("plausible", ["db"])[0] == {"db": ("running", "healthy", 0)}
    assert len(manager.calls) == before


def test_the_task_nodes_answer_is_read_line_by_line() -> None:
    from vpsctl.host.commands import stack  # noqa: PLC0415

    assert stack.parse_task_nodes("web\tmedia\napi\t\n\nweb\tstats\n") == [
        ("web", "media"),
        ("web", "stats"),
    ]


# ── the audit ────────────────────────────────────────────────────────────────────────────


def status_container(status: str = "running") -> dict[str, object]:
    return container(status, task=True, project="status", service="web")


def test_the_audit_judges_its_container_where_it_runs_and_fails_it_elsewhere(
    spec: Spec,
) -> None:
    def checks(node: str, *containers: dict[str, object]) -> dict[str, audit.Check]:
        found = audit._containers(node_share(spec, node), AuditFacts(containers=list(containers)))
        return {c.name: c for c in found}

    assert "status" in node_share(spec, "media").stacks  # its memory counts on both
    assert checks("stats", status_container())["container status/web"].status == OK
    # not on this one of its nodes (it runs on the other): nothing missing here, and the
    # exited container of a task Swarm ran here before is its history
    assert "container status/web" not in checks("media")
    assert "container status/web" not in checks("media", status_container("exited"))
    unhealthy = status_container()
    unhealthy["state"] = {"Status": "running", "Health": {"Status": "unhealthy"}}
    assert checks("media", unhealthy)["container status/web"].status == FAIL
    # on a node its labels do not match: a container the spec does not declare there
    front = checks("front", status_container())
    assert front["container status_web.1.running"].status == FAIL


def test_the_swarm_check_accepts_its_task_on_any_matching_node_only(spec: Spec) -> None:
    hosts = {"host-media": "media", "host-stats": "stats", "host-front": "front"}

    def check(host: str) -> audit.Check:
        task = swarm_core.Task("status_web", host, "Running 2 minutes ago")
        found = placement_checks(spec, swarm_core.Services((), (task,)), hosts)
        return next(c for c in found if "status" in c.name)

    good = check("host-media")
    assert (good.status, good.value) == (OK, "1 task on media")
    assert good.threshold == "on one of media, stats"
    bad = check("host-front")
    assert bad.status == FAIL and bad.name == "stack status on its labels' nodes"
    assert bad.value == (
        "runs web on front, not on media or stats where its labels {tier: apps} place it"
    )


# ── its rollback (carried out: tests/test_cluster_label_rollback.py) ─────────────────────


def test_a_rollback_of_it_takes_the_versions_its_deploying_node_keeps(spec: Spec) -> None:
    d = whole(spec)
    by_node: ByNode = {
        "stats": {"status": kept(d, "status", "2026-12-03T15:00:00Z", "2026-12-03T16:00:00Z")},
        "media": {},
        "front": {},
    }
    chosen = choose_on_nodes(spec, by_node, ["status"])  # no longer refused
    assert {node: [t.stack for t in ts] for node, ts in chosen.items()} == {"stats": ["status"]}
    (target,) = chosen["stats"]
    assert target.previous.plan_hash == "01" * 32 and target.current.plan_hash == "02" * 32


# ── refusals ─────────────────────────────────────────────────────────────────────────────


def test_a_first_launch_claimed_in_it_is_data_it_must_be_pinned(root: Path) -> None:
    stack = root / "stacks" / "status.yaml"
    stack.write_text(
        stack.read_text()
        + "secrets: {STATUS_OWNER_PASSWORD: {kind: password, min_length: 24}}\n"
        + "first_launch: {app: plausible, service: web, owner_name: Ops, "
        + "owner_email: ops@lumen.test, password_secret: STATUS_OWNER_PASSWORD}\n"
    )
    generated = run_cli(root, "secrets", "generate", "-i", CLUSTER)
    assert generated.code == 0, generated.err
    result = run_cli(root, "validate", "-i", CLUSTER)
    assert result.code == 1
    assert (
        "stacks.status.placement: status keeps data (its first launch, claimed once by vpsctl "
        "in web's data), and a volume lives on one node" in result.err
    )
