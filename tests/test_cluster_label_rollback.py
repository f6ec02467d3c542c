"""The way back of a cluster's stack placed by labels (host.yaml's `placement:`), offline:
the nodes holding its files keep the previous version of those they replace, a failed gate
of its deploying node puts them back on every one of them before its previous version
starts (or says where it could not), a passed gate discards them; and `vpsctl rollback` of
it takes its deploying node's versions and puts its previous files on every node it may run
on. Over real NodeAppliers on scripted nodes; on real boxes: tests/e2e/test_cluster.py's
last test."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests import factsim
from tests.helpers import edit
from tests.scripted import ScriptedSession
from tests.test_cluster_labels import CLUSTER, NODES, converged, labelled, whole
from tests.test_upgrades import tar_of
from vpsctl.core import cluster
from vpsctl.core.facts import MANIFEST
from vpsctl.core.render import Desired, render
from vpsctl.core.versions import version_record
from vpsctl.host.remote import Result
from vpsctl.ops import inputs, versions
from vpsctl.ops.apply import applier as applier_module  # its render and gather patched
from vpsctl.ops.apply.cluster import NodeApplier
from vpsctl.ops.apply.result import ApplyResult, StackOutcome, StackResult
from vpsctl.spec.loader import load_spec
from vpsctl.spec.studio import Spec

SITE = "/opt/vpsctl/stacks/status/config/site"
CADDYFILE = f"{SITE}/Caddyfile"
EXTRA = f"{SITE}/extra.html"  # a file the new version adds
PREVIOUS = "/opt/vpsctl/previous/status"
RESTORE = rf"^cp -a -- {PREVIOUS}/\. /$"
REMOVE_NEW = rf"^rm -f -- {EXTRA}$"
DISCARD = rf"^rm -rf -- {PREVIOUS}$"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The example cluster with `status` placed by `{tier: apps}` (media and stats)."""
    return labelled(tmp_path)


@pytest.fixture
def spec(root: Path) -> Spec:
    return load_spec(root / CLUSTER)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The appliers render the studio offline (no sandbox is up here), its placeholders
    taken as real, as :func:`whole` does."""
    real = render
    monkeypatch.setattr(applier_module, "gather", lambda s: inputs.gather(s, offline=True))
    monkeypatch.setattr(
        applier_module, "render", lambda s, found: replace(real(s, found), unresolved=())
    )


def new_version(root: Path) -> Spec:
    """`status` changed: its page says something else, and it gains a file."""
    edit(root / "stacks/files/status/Caddyfile", '"status: ok"', '"status: v2"')
    (root / "stacks/files/status/extra.html").write_text("<p>v2</p>\n")
    edit(
        root / "stacks/status.yaml",
        "configs:\n",
        "configs:\n  site/extra.html: {source: files/status/extra.html}\n",
    )
    return load_spec(root / CLUSTER)


def appliers(
    spec: Spec,
    hosts: dict[str, factsim.SimHost],
    overrides: dict[str, Callable[[Desired], None]] | None = None,
) -> dict[str, NodeApplier]:
    """Every node's applier over a scripted session to ``hosts``, planned as a cluster's
    apply plans them (the containers of `status` are its deploying node's)."""
    sessions = {n: ScriptedSession(hosts[n]) for n in NODES}
    for node, session in sessions.items():  # the node's one read: facts, then the swarm's
        session.answer(r"@@swarm-unread", stdout=hosts[node].output())
    made = {
        n: NodeApplier(
            spec,
            n,
            sessions[n],
            io.StringIO(),
            manager=sessions["front"],
            edge_session=sessions["front"],
            peers=(),
            sessions=sessions,
            override=(overrides or {}).get(n),
        )
        for n in NODES
    }
    placed = cluster.placed_facts(spec, {n: a.facts for n, a in made.items()})
    for node, applier in made.items():
        applier.nodes = made
        applier.facts = placed[node]
        applier.plan = applier.planned(placed[node])
        applier.probe_deadline, applier.health_interval = 0, 0
    return made


class Runtime:
    """The deploying node's runtime: each deploy of `status` is an event; the first
    ``failing`` deploys fail; every service is healthy."""

    def __init__(self, events: list[str], failing: int, where: dict[str, Any]) -> None:
        self.events = events
        self.failing = failing
        self.where = where  # the sessions of the nodes Swarm put its task on

    def state_sessions(self, name: str) -> dict[str, Any]:
        return self.where

    def up(self, name: str) -> tuple[bool, str]:
        self.events.append(f"deploy {name}")
        if self.failing:
            self.failing -= 1
            return False, "docker stack deploy: the new config broke it"
        return True, ""

    def poll(self, name: str, services: list[str]) -> tuple[dict[str, Any], str]:
        return {s: ("running", "healthy", 0) for s in services}, ""

    def down(self, name: str) -> None:
        self.events.append(f"down {name}")

    def read_logs(self, name: str, tail: int) -> str:
        return ""

    def read_health_log(self, name: str, services: list[str]) -> str:
        return ""

    def paused(self, name: str) -> AbstractContextManager[None]:
        return nullcontext()


def noted(events: list[str], what: str) -> Callable[[str], Result]:
    """A scripted answer that notes ``what`` happened (in one list over every node)."""

    def answer(command: str) -> Result:
        events.append(what)
        return Result(True, "", "")

    return answer


Changing = tuple[dict[str, NodeApplier], list[str]]  # every node's applier, what happened


@pytest.fixture
def changing(root: Path, spec: Spec) -> Iterator[Changing]:
    """The new version of `status` applied over nodes the last apply left with the old one
    (its task on media): each node's applier, and one list of what happened where."""
    hosts = converged(spec, "media")
    made = appliers(new_version(root), hosts)
    events: list[str] = []
    for node in ("media", "stats"):
        session = made[node].session
        assert isinstance(session, ScriptedSession)
        session.answer(RESTORE, noted(events, f"{node}: previous files back"))
        session.answer(REMOVE_NEW, noted(events, f"{node}: new files removed"))
    yield made, events


def converge(changing: Changing, failing: int, action: str = "recreate") -> StackOutcome:
    """Its holder's files uploaded (the nodes' begin), then its deploying node's converge,
    whose first ``failing`` deploys fail."""
    made, events = changing
    media, stats = made["media"], made["stats"]
    where = {"media": media.session}  # Swarm runs its task on media
    stats.runtime = Runtime(events, failing, where)  # type: ignore[assignment]
    media.setup.held_files()
    change = next(s for s in stats.plan.stacks if s.stack == "status")
    assert change.action == action, stats.plan.stacks
    return stats.converge("status", change, probe_now=True)


def scripted(applier: NodeApplier) -> ScriptedSession:
    session = applier.session
    assert isinstance(session, ScriptedSession)
    return session


# ── the nodes holding it keep the previous version of what they replace ──────────────────


def test_a_holder_keeps_the_previous_files_before_it_uploads_the_new_ones(
    changing: Changing,
) -> None:
    made, _ = changing
    media = made["media"]
    actions = {f.path: f.action for f in media.plan.files if f.stack == "status"}
    assert actions[CADDYFILE] == "update" and actions[EXTRA] == "create"
    media.setup.held_files()
    session = scripted(media)
    save, upload = r"^rm -rf -- /opt/vpsctl/previous/status && mkdir -p", r"^put_files "
    assert session.in_order(save, upload) == [save, upload], session.log()
    (saved,) = session.ran(save)
    assert CADDYFILE in saved and EXTRA in saved  # what exists of them is copied
    assert media.held_created == {"status": [EXTRA]}  # nothing to copy: removed on the way back
    assert session.written[CADDYFILE] == b':8080 {\n\trespond "status: v2"\n}\n'


def test_an_unchanged_holder_saves_nothing(spec: Spec) -> None:
    made = appliers(spec, converged(spec, "stats"))
    made["media"].setup.held_files()
    assert not scripted(made["media"]).calls[1:]  # its one read only
    assert made["media"].held_created == {}


# ── a failed gate puts the previous files back on every node before the previous version ─


def test_a_failed_gate_puts_the_previous_files_back_on_every_node_then_starts_it(
    changing: Changing,
) -> None:
    made, events = changing
    outcome = converge(changing, failing=1)
    assert outcome.result == StackResult.ROLLED_BACK, outcome.detail
    assert events == [
        "deploy status",  # the new version: failed
        "stats: previous files back",
        "stats: new files removed",
        "media: previous files back",
        "media: new files removed",
        "deploy status",  # the previous version, its files back wherever Swarm starts it
    ]
    media = made["media"]
    assert scripted(media).ran(DISCARD) and scripted(made["stats"]).ran(DISCARD)
    assert media.held_created == {} and media.held_put_back == {"status"}
    assert not scripted(made["front"]).ran(RESTORE)  # its labels do not match front
    # the holder's manifest keeps the record of the files it holds again, not the new ones
    media.finish(ApplyResult(media.plan, phases={"stacks": 0.0}), 0.0)
    manifest = json.loads(scripted(media).written[MANIFEST])["files"]
    assert manifest[CADDYFILE]["sha256"] == media.facts.files[CADDYFILE].sha256
    assert manifest[CADDYFILE]["sha256"] != media.desired.files[CADDYFILE].sha256
    assert EXTRA not in manifest


def test_a_holder_that_cannot_put_its_files_back_fails_the_rollback_naming_it(
    changing: Changing,
) -> None:
    made, events = changing
    scripted(made["media"]).fail(RESTORE, "cp: cannot create regular file: No space left")
    ps = r"^docker ps -a --filter label=com.docker.compose.project=status "
    scripted(made["media"]).answer(ps, stdout="site\trunning\tstatus:1\tUp 2 minutes\n")
    outcome = converge(changing, failing=1)
    assert outcome.result == StackResult.ROLLBACK_FAILED
    assert events.count("deploy status") == 1  # the previous version was NOT started
    detail = outcome.detail
    assert (
        "putting the previous files of status back on lumen-cluster/media failed on scripted: "
        "cp: cannot create regular file: No space left" in detail
    ), detail
    assert "the previous version was not started: its files are not all back" in detail
    assert f"a copy is kept in {PREVIOUS} on lumen-cluster/media" in detail
    # what runs now is read where Swarm put its task (media), not on its deploying node
    assert scripted(made["media"]).ran(ps) and not scripted(made["stats"]).ran(ps)
    assert "Now: its containers run unchecked (site on media: Up 2 minutes" in detail, detail
    assert not scripted(made["media"]).ran(DISCARD)  # the copy stays
    assert events[:3] == ["deploy status", "stats: previous files back", "stats: new files removed"]


def test_a_passed_gate_discards_the_copies_on_every_node_holding_it(changing: Changing) -> None:
    made, events = changing
    outcome = converge(changing, failing=0)
    assert outcome.result == StackResult.APPLIED, outcome.detail
    assert events == ["deploy status"]
    media = made["media"]
    assert scripted(media).ran(DISCARD) and scripted(made["stats"]).ran(DISCARD)
    assert media.held_created == {} and media.held_put_back == set()


def test_a_new_stack_failing_its_first_start_leaves_no_file_on_any_node(spec: Spec) -> None:
    hosts = converged(spec, "media")
    for node in ("media", "stats"):  # never applied: nothing of it anywhere
        hosts[node].containers = [c for c in hosts[node].containers if c["project"] != "status"]
        hosts[node].files = {p: f for p, f in hosts[node].files.items() if "/status/" not in p}
    made = appliers(spec, hosts)
    events: list[str] = []
    outcome = converge((made, events), failing=1, action="start")
    media, stats = made["media"], made["stats"]
    assert outcome.result == StackResult.ROLLED_BACK, outcome.detail
    assert events == ["deploy status", "down status"]
    for holding in (media, stats):
        (removed,) = scripted(holding).ran(r"^rm -f -- ")
        assert CADDYFILE in removed and "compose.yaml" in removed, holding.node
    assert scripted(media).ran(DISCARD) and media.held_created == {}


def test_a_change_refused_before_it_began_puts_the_holders_files_back(changing: Changing) -> None:
    made, events = changing
    scripted(made["stats"]).fail(r"^rm -rf -- /opt/vpsctl/previous/status && mkdir", "disk full")
    outcome = converge(changing, failing=0)
    assert outcome.result == StackResult.FAILED
    assert "nothing was changed" in outcome.detail
    assert events == ["media: previous files back", "media: new files removed"]


def test_a_holder_s_copy_its_deploying_node_never_used_is_removed_at_its_end(
    spec: Spec,
) -> None:
    hosts = converged(spec, "stats")
    del hosts["media"].files[CADDYFILE]  # lost on media alone: only media changes
    made = appliers(spec, hosts)
    media = made["media"]
    media.setup.held_files()
    assert media.held_created == {"status": [CADDYFILE]}
    assert not [s for s in made["stats"].plan.stacks if s.action != "none"]
    media.finish(ApplyResult(media.plan, phases={"stacks": 0.0}), 0.0)
    assert scripted(media).ran(DISCARD) and media.held_created == {}


# ── `vpsctl rollback` of it ──────────────────────────────────────────────────────────────


def listed(d: Desired, time: str, plan_hash: str) -> str:
    """The record of `status` as ``d`` has it, as the box lists a kept version."""
    files = [d.files[p] for p in d.stacks["status"].files]
    record = version_record(
        d.stacks["status"], files, time=time, plan_hash=plan_hash, result="applied", snapshot=None
    )
    return json.dumps(record)


def test_a_rollback_of_it_puts_its_previous_files_on_every_node_and_redeploys_once(
    root: Path, spec: Spec, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = whole(spec)
    new_spec = new_version(root)
    new = whole(new_spec)
    hosts = {n: factsim.converged(cluster.node_view(new_spec, new, n)) for n in NODES}
    for host in hosts.values():  # the new version runs, its task on media
        host.containers = [c for c in host.containers if c["project"] != "status"]
    image = new.stacks["status"].service_images["web"]
    hosts["media"].containers.append({"project": "status", "service": "web", "image": image})
    made: dict[str, dict[str, NodeApplier]] = {}

    def cluster_apply(s: Spec, sessions: Any, out: Any, *, overrides: Any, hooks: Any) -> Any:
        made["run"] = appliers(s, hosts, overrides)
        return SimpleNamespace(plan=SimpleNamespace(swarm=[]), appliers=made["run"])

    monkeypatch.setattr(versions, "ClusterApply", cluster_apply)
    sessions = {n: ScriptedSession() for n in NODES}
    stats = sessions["stats"]  # the node deploying it keeps its versions
    previous = "20261203T150000Z-aaaaaaaa"
    stats.answer(
        r"/opt/vpsctl/versions/\*/\*/version\.json",
        stdout=listed(old, "2026-12-03T15:00:00Z", "aa" * 32)
        + "\n"
        + listed(new, "2026-12-03T16:00:00Z", "bb" * 32)
        + "\n",
    )
    stats.answer(
        rf"base64 -w0 -- /opt/vpsctl/versions/status/{previous}/files\.tar",
        stdout=tar_of(old, "status"),
    )
    planned = versions.cluster_rollback(new_spec, sessions, io.StringIO(), ["status"])
    assert {n: [t.stack for t in ts] for n, ts in planned.chosen.items()} == {"stats": ["status"]}
    assert planned.chosen["stats"][0].previous.version == previous
    for node in ("media", "front"):  # read, nothing more: stats keeps its versions
        assert [c.purpose for c in sessions[node].calls] == ["reading the applied versions"]
    nodes = made["run"]
    for node in ("media", "stats"):  # its previous files go back on both
        files = {f.path: f.action for f in nodes[node].plan.files if f.stack == "status"}
        compose = "/opt/vpsctl/stacks/status/compose.yaml"
        assert files == {compose: "update", CADDYFILE: "update", EXTRA: "delete"}, node
        want = old.files[CADDYFILE].content
        assert nodes[node].desired.files[CADDYFILE].content == want, node
    media = nodes["media"].desired
    assert media.held["status"] == old.stacks["status"] and "status" not in media.stacks
    assert not [f for f in nodes["front"].plan.files if f.stack == "status"]
    redeploys = {
        n: [s.stack for s in a.plan.stacks if s.action != "none"] for n, a in nodes.items()
    }
    assert redeploys == {"media": [], "stats": ["status"], "front": []}  # once, from stats
    assert nodes["stats"].version_results == {"status": f"rollback to {previous}"}
    # the closing audit compares every node with the previous version
    assert (
        cluster.node_view(new_spec, planned.desired, "media").held["status"] == old.stacks["status"]
    )
