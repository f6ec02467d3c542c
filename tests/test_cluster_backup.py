"""Backups of a cluster, offline: each node's backup machinery for ITS stacks (one
repository, snapshots tagged with their node), the snapshot list by node, ``--node``'s
refusals, the swarm entry of a lost node, and the commands that stop a node's stacks and
pause a stack's apps on the manager. (The real thing, with a worker box destroyed and
rebuilt: tests/e2e/test_cluster.py.)"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any, ClassVar, cast

import pytest

from tests.helpers import pin_stack, run_cli
from tests.scripted import ScriptedSession
from tests.test_box_scripts import shellcheck
from tests.test_moves import studio as moves_studio
from tests.test_nodes import CLUSTER, studio  # noqa: F401 - the fixture
from vpsctl.cli import views
from vpsctl.core import backupfiles, cluster
from vpsctl.core import swarm as swarm_core
from vpsctl.core.plan import Plan
from vpsctl.core.render import Desired
from vpsctl.errors import VpsctlError
from vpsctl.host.commands import stack as stackcmd
from vpsctl.host.commands import swarm as swarm_commands
from vpsctl.ops import audit, cluster_recovery, inputs
from vpsctl.ops.apply.applier import Applier
from vpsctl.ops.apply.result import ApplyResult
from vpsctl.ops.apply.runtime import SwarmRuntime
from vpsctl.ops.inputs import render_spec
from vpsctl.ops.recovery import BackupError, Backups, Snapshot, backed_up_stacks
from vpsctl.spec.loader import load_spec
from vpsctl.spec.studio import Spec

SCRIPT = backupfiles.SCRIPT
NODES = ("front", "media", "stats")


def shares(studio: Path) -> tuple[Spec, dict[str, Desired]]:  # noqa: F811
    spec = load_spec(studio / CLUSTER)
    desired = render_spec(spec, offline=True)
    return spec, {n: cluster.node_view(spec, desired, n) for n in cluster.node_names(spec)}


def line_of(script: bytes, prefix: str) -> str:
    return next(line for line in script.decode().splitlines() if line.startswith(prefix))


def test_each_node_backs_up_its_own_stacks_only_into_one_repository(studio: Path) -> None:  # noqa: F811
    _, nodes = shares(studio)
    held = {
        "front": "(documint cronping flagbit webhookvault edge)",
        "media": "(ghost listmonk)",
        "stats": "(plausible)",
    }
    for node, share in nodes.items():
        script = share.files[SCRIPT].content
        assert line_of(script, "ALL_STACKS=") == f"ALL_STACKS={held[node]}", node
        assert line_of(script, "NODE=") == f"NODE={node}"
        # one repository for the cluster, each snapshot tagged with its node
        assert line_of(script, "HOST=") == "HOST=lumen-cluster"
        assert line_of(script, "export RESTIC_REPOSITORY=") == (
            "export RESTIC_REPOSITORY=sftp:root@unresolved.invalid:/srv/restic/lumen-cluster"
        )
        assert '--tag "node:$NODE"' in script.decode()
        assert "then RESTIC_OPTS+=(--retry-lock 30m); fi" in script.decode()
        # the box's files: script, password, key (no key offline), timers
        assert share.host_files[0] == SCRIPT
        assert f"{backupfiles.SYSTEMD_DIR}/vpsctl-backup.timer" in share.host_files
        timer = share.files[f"{backupfiles.SYSTEMD_DIR}/vpsctl-backup.service"].content
        assert f"lumen-cluster/{node}".encode() in timer
    passwords = {
        share.files[f"{backupfiles.CONF_DIR}/password"].content for share in nodes.values()
    }
    assert len(passwords) == 1  # the one repository's


def test_a_node_script_reaches_swarm_tasks_and_passes_shellcheck(
    studio: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    _, nodes = shares(studio)
    text = nodes["media"].files[SCRIPT].content.decode()
    assert "label=com.docker.swarm.service.name=$1_$2" in text
    assert "docker compose -p" not in text  # a swarm node runs no compose project
    shellcheck({"vpsctl-backup-media": text}, tmp_path / "checked")


def test_a_node_holding_no_stack_with_backups_gets_no_backup_files(studio: Path) -> None:  # noqa: F811
    host = studio / CLUSTER / "host.yaml"
    host.write_text(
        host.read_text().replace("  plausible:\n    node: stats", "  plausible:\n    node: media")
    )
    spec, nodes = shares(studio)
    assert nodes["stats"].host_files == ()
    assert not any(p.startswith("/opt/vpsctl/host/") for p in nodes["stats"].files)
    assert "plausible" in line_of(nodes["media"].files[SCRIPT].content, "ALL_STACKS=")
    # and a cluster backup leaves it out
    assert list(cluster_recovery.backup_nodes(spec, [])) == ["front", "media"]


def test_backup_nodes_takes_each_asked_stack_on_its_node(studio: Path) -> None:  # noqa: F811
    spec = load_spec(studio / CLUSTER)
    assert cluster_recovery.backup_nodes(spec, ["ghost", "documint"]) == {
        "front": ["documint"],
        "media": ["ghost"],
    }
    assert backed_up_stacks(spec, "media") == ["ghost", "listmonk"]


def test_a_snapshot_says_its_node_and_the_list_shows_it_for_a_cluster_only() -> None:
    tags = ["vpsctl", "run:manual", "node:media", "stack:ghost", "stack:listmonk"]
    ours = Snapshot("a1b2c3d4e5", "2026-12-03T10:00:00Z", tags)
    assert ours.node == "media" and ours.stacks == ["ghost", "listmonk"]
    listed = views.snapshot_list([ours])
    assert listed.splitlines()[0].split() == ["ID", "TIME", "(UTC)", "KIND", "NODE", "STACKS"]
    assert listed.splitlines()[1].split()[-3:] == ["media", "ghost", "listmonk"]
    one_box = Snapshot(
        "a1b2c3d4e5", "2026-12-03T10:00:00Z", ["vpsctl", "run:manual", "stack:ghost"]
    )
    assert one_box.node == ""
    assert "NODE" not in views.snapshot_list([one_box])


def test_node_is_refused_on_one_box_and_the_only_manager_points_at_the_whole_rebuild(
    studio: Path,  # noqa: F811
) -> None:
    spec = load_spec(studio / CLUSTER)
    assert cluster_recovery.checked_node(spec, None) is None  # every node: the whole cluster
    with pytest.raises(
        VpsctlError,
        match=r"--node web: .*host\.yaml:8: nodes has no node web; its nodes: front, media, stats",
    ):
        cluster_recovery.checked_node(spec, "web")
    with pytest.raises(
        VpsctlError,
        match=r"front is the swarm's only manager .*NEW swarm.*make every node a fresh box and "
        r"run `vpsctl rebuild -i \S*inventory/sandbox-cluster` \(without --node",
    ):
        cluster_recovery.checked_node(spec, "front")
    assert cluster_recovery.checked_node(spec, "media") == "media"
    one_box = load_spec(
        Path(__file__).resolve().parent.parent / "inventory" / "prod", secrets=False
    )
    with pytest.raises(VpsctlError, match=r"--node media: .*declares one box"):
        cluster_recovery.checked_node(one_box, "media")
    assert cluster_recovery.checked_node(one_box, None) is None


def member(id_: str, node: str, state: str) -> swarm_core.Member:
    labels = {swarm_core.NODE_LABEL: node}
    return swarm_core.Member(id_, f"sandbox-{node}", "worker", labels, state, "10.0.0.2", "active")


def manager_facts(*members: swarm_core.Member) -> swarm_core.Facts:
    return swarm_core.Facts("m1", "active", True, "c1", "10.0.0.1", members=members)


def test_the_lost_node_s_entry_is_found_by_its_label_and_a_ready_one_refused() -> None:
    facts = manager_facts(member("old1", "media", "down"), member("s1", "stats", "ready"))
    assert [m.id for m in swarm_core.stale_members(facts, "media", "")] == ["old1"]
    # the fresh box, once joined, is not stale
    joined = manager_facts(member("old1", "media", "down"), member("new1", "media", "ready"))
    assert [m.id for m in swarm_core.stale_members(joined, "media", "new1")] == ["old1"]
    alive = manager_facts(member("old1", "media", "ready"))
    with pytest.raises(
        swarm_core.SwarmError, match=r"node media: the swarm still lists old1 .*not lost"
    ):
        swarm_core.stale_members(alive, "media", "")


def test_the_commands_that_stop_scale_and_remove_are_exact() -> None:
    assert swarm_commands.remove_nodes(["old1"]) == ["docker", "node", "rm", "--force", "old1"]
    assert stackcmd.scale("ghost", {"ghost": 0}, wait=True) == [
        "docker", "service", "scale", "--detach=false", "ghost_ghost=0",
    ]  # fmt: skip
    assert stackcmd.replicas("ghost", ["ghost"])[-1] == "ghost_ghost"
    stop = str(stackcmd.stop_stacks(["ghost", "listmonk"]))
    assert stop.startswith("for st in ghost listmonk; do ")
    assert 'docker service scale --detach=true "$id=0"' in stop
    shlex.split(stop)  # well quoted


def test_a_rebuild_removes_the_lost_entry_after_stopping_its_stacks() -> None:
    manager = ScriptedSession()
    facts = manager_facts(member("old1", "media", "down"))
    said = cluster_recovery.remove_stale(
        manager, facts, "media", "", ["ghost", "listmonk"], out=io.StringIO()
    )
    assert said == ["old1 (sandbox-media, down)"]
    order = (r"for st in ghost listmonk", r"docker node rm --force old1")
    assert manager.in_order(*order) == list(order)


def test_a_stack_s_apps_are_paused_on_the_manager_around_its_database_restore(
    studio: Path,  # noqa: F811
) -> None:
    spec = load_spec(studio / CLUSTER)
    manager = ScriptedSession()
    manager.answer(r"docker service inspect", stdout="ghost_ghost 1\n")
    applier = cast("Applier", SimpleNamespace(spec=spec))  # what the runtime reads of it
    pause = SwarmRuntime(applier, manager).paused
    with pause("ghost"):
        manager.run(["restore-here"])
    order = (
        r"docker service inspect .* ghost_ghost$",
        r"docker service scale --detach=false ghost_ghost=0",
        r"restore-here",
        r"docker service scale --detach=false ghost_ghost=1",
    )
    assert manager.in_order(*order) == list(order)


def test_a_restore_from_one_snapshot_of_stacks_on_several_nodes_is_refused_before_connecting(
    studio: Path,  # noqa: F811
) -> None:
    spec = load_spec(studio / CLUSTER)
    with pytest.raises(
        BackupError, match=r"--snapshot ab12: a snapshot is one node's.*on front, media"
    ):
        cluster_recovery.run_restore(spec, "ab12", ["documint", "ghost"], True, io.StringIO())
    with pytest.raises(BackupError, match=r"--stack nope: not a stack with backups"):
        cluster_recovery.run_restore(spec, None, ["nope"], True, io.StringIO())


def test_a_lost_box_still_listed_ready_is_refused_after_the_wait_and_nothing_changed() -> None:
    manager = ScriptedSession()
    alive = manager_facts(member("old1", "media", "ready"))
    with pytest.raises(swarm_core.SwarmError, match=r"still lists old1 .*not lost"):
        cluster_recovery.remove_stale(
            manager, alive, "media", "", ["ghost"], out=io.StringIO(), wait=0
        )
    assert manager.calls == []  # no stack stopped, no entry removed


# ── the whole cluster's rebuild, and the repository read through one node ────────────────

MEDIA_SNAP, STATS_SNAP, FRONT_SNAP, OLD_MEDIA = ("a1" * 32, "b2" * 32, "c3" * 32, "d4" * 32)
LISTED = [
    {"id": OLD_MEDIA, "time": "2026-12-03T09:00:00Z",
     "tags": ["vpsctl", "run:nightly", "node:media", "stack:ghost", "stack:listmonk"]},
    {"id": MEDIA_SNAP, "time": "2026-12-03T10:00:00Z",
     "tags": ["vpsctl", "run:manual", "node:media", "stack:ghost", "stack:listmonk"]},
    {"id": STATS_SNAP, "time": "2026-12-03T10:00:01Z",
     "tags": ["vpsctl", "run:manual", "node:stats", "stack:plausible"]},
    {"id": FRONT_SNAP, "time": "2026-12-03T10:00:02Z",
     "tags": ["vpsctl", "run:manual", "node:front", "stack:documint", "stack:cronping",
              "stack:flagbit", "stack:webhookvault", "stack:edge"]},
]  # fmt: skip


def listing(session: ScriptedSession) -> ScriptedSession:
    session.answer(rf"^{SCRIPT} snapshots$", stdout=json.dumps(LISTED) + "\n")
    return session


def backups_of(spec: Spec, node: str) -> Backups:
    return Backups(spec, listing(ScriptedSession()), render_spec(spec, offline=True), node=node)


def test_snapshots_are_checked_before_connecting() -> None:
    check = cluster_recovery.checked_snapshots
    assert check([], None, cluster_wide=True) is None
    assert check(["ab12"], "media", cluster_wide=False) == "ab12"
    assert check(["ab12", "cd34"], None, cluster_wide=True) is None  # chosen per node
    with pytest.raises(BackupError, match=r"--snapshot 'xyz!': expected a snapshot id \(hex\)"):
        check(["ab12", "xyz!"], None, cluster_wide=True)
    with pytest.raises(
        BackupError, match=r"--snapshot ab12, cd34: node media is rebuilt from ONE snapshot"
    ):
        check(["ab12", "cd34"], "media", cluster_wide=False)


def test_each_node_s_snapshot_is_the_newest_holding_its_stacks_or_the_given_one_fitting_it(
    tmp_path: Path,
) -> None:
    spec = load_spec(moves_studio(tmp_path, backup=True) / CLUSTER)
    placed = cluster_recovery.backup_nodes(spec, [])
    backups = backups_of(spec, "media")
    newest = cluster_recovery.choose_snapshots(backups, [], placed)
    assert {n: s.id for n, s in newest.items()} == {
        "front": FRONT_SNAP,
        "media": MEDIA_SNAP,
        "stats": STATS_SNAP,
    }
    given = cluster_recovery.choose_snapshots(backups, ["d4d4", "b2b2", "c3c3"], placed)
    assert given["media"].id == OLD_MEDIA and given["media"].kind == "nightly"
    with pytest.raises(
        BackupError,
        match=r"^--snapshot d4d4, a1a1, b2b2, c3c3: d4d4, a1a1 each hold every stack of node "
        r"media \(ghost, listmonk\); give one snapshot per node holding backed-up stacks "
        r"\(front, media, stats\), or none for each node's newest",
    ):
        cluster_recovery.choose_snapshots(backups, ["d4d4", "a1a1", "b2b2", "c3c3"], placed)
    with pytest.raises(
        BackupError, match=r"^--snapshot d4d4, b2b2: none holds every stack of node front \("
    ):
        cluster_recovery.choose_snapshots(backups, ["d4d4", "b2b2"], placed)
    media_only = {"media": placed["media"]}
    with pytest.raises(
        BackupError, match=r"--snapshot b2b2: holds no node's whole set of stacks \(media: ghost"
    ):
        cluster_recovery.choose_snapshots(backups, ["a1a1", "b2b2"], media_only)


class FakeRuntime:
    def __init__(self) -> None:
        self.asked: list[str] = []

    @contextlib.contextmanager
    def paused(self, name: str) -> Iterator[None]:
        self.asked.append(f"{name} paused")
        yield
        self.asked.append(f"{name} resumed")


class FakeNodeApplier:
    """What a rebuild's steps and the refusal read of a node's applier."""

    def __init__(self, spec: Spec, node: str, session: ScriptedSession, running: list[str]):
        self.node = node
        self.session = session
        self.desired = cluster.node_view(spec, render_spec(spec, offline=True), node)
        self.facts = SimpleNamespace(projects=lambda: {n: ["c1"] for n in running})
        self.runtime = FakeRuntime()
        self.said: list[str] = []

    def say(self, text: str) -> None:
        self.said.append(text)

    def clean(self, text: str) -> str:
        return text

    def wait_healthy(self, name: str) -> tuple[bool, str]:
        return True, ""


class FakeClusterApply:
    """The cluster's apply as a rebuild drives it: each node's hooks run, in the nodes'
    order, as the real one runs them (files before its stacks, databases after each)."""

    running: ClassVar[dict[str, list[str]]] = {}
    made: ClassVar[list[FakeClusterApply]] = []

    def __init__(
        self,
        spec: Spec,
        sessions: dict[str, Any],
        out: IO[str],
        *,
        hooks: Any,
        backup_timers: bool = True,
    ):
        self.hooks = dict(hooks)
        self.backup_timers = backup_timers
        self.applied = False
        self.appliers = {
            n: FakeNodeApplier(spec, n, sessions[n], self.running.get(n, []))
            for n in cluster.node_names(spec)
        }
        self.made.append(self)

    def apply(self) -> dict[str, ApplyResult]:
        self.applied = True
        results = {}
        for name, applier in self.appliers.items():
            before, after = self.hooks.get(name, (None, None))
            if before is not None:
                before(applier)
            for stack in applier.desired.stacks:
                assert after is None or after(applier, stack) == ""
            phases = {"bootstrap": 1.0, "images": 2.0, "stacks": 3.0}
            results[name] = ApplyResult(Plan(f"lumen-cluster/{name}", True, ""), phases=phases)
        return results


def node_sessions(spec: Spec) -> dict[str, ScriptedSession]:
    """A scripted session per node: the repository's list, each restore's lines."""
    sessions = {}
    for node in cluster.node_names(spec):
        session = listing(ScriptedSession())
        session.answer(
            rf"^{SCRIPT} restore \S+ files",
            stdout=f"@@restored {node} files\n@@recorded {node}\tdb\tt\t7\n",
        )
        session.answer(rf"^{SCRIPT} restore \S+ databases (\S+)", stdout="@@restored db\n")
        sessions[node] = session
    return sessions


@pytest.fixture
def rebuilding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Spec, dict[str, ScriptedSession]]]:
    spec = load_spec(moves_studio(tmp_path, backup=True) / CLUSTER)
    sessions = node_sessions(spec)
    monkeypatch.setattr(cluster_recovery, "_sessions", lambda spec, names, stack: sessions)
    monkeypatch.setattr(cluster_recovery, "ClusterApply", FakeClusterApply)
    report = audit.Report("lumen-cluster", [audit.Check("cluster", "x", audit.OK, "")])
    monkeypatch.setattr(cluster_recovery, "audit_cluster", lambda spec, sessions: report)
    FakeClusterApply.made.clear()
    FakeClusterApply.running = {}
    yield spec, sessions


def test_a_whole_cluster_rebuild_restores_every_node_s_snapshot_through_its_hooks(
    rebuilding: tuple[Spec, dict[str, ScriptedSession]],
) -> None:
    spec, sessions = rebuilding
    out = io.StringIO()
    rebuild = cluster_recovery.run_cluster_rebuild(spec, [], out)
    assert rebuild.ok, out.getvalue()
    # the list read ONCE, through the first node whose files were due (media), for all
    assert [len(sessions[n].ran(rf"^{SCRIPT} snapshots")) for n in NODES] == [0, 1, 0]
    chosen = {"front": FRONT_SNAP, "media": MEDIA_SNAP, "stats": STATS_SNAP}
    databases = {"front": [], "media": ["ghost", "listmonk"], "stats": ["plausible"]}
    for node in NODES:
        session, snap = sessions[node], chosen[node]
        held = " ".join(backed_up_stacks(spec, node))
        expected = [
            rf"^{SCRIPT} restore {snap} files {held}$",
            *(rf"^{SCRIPT} restore {snap} databases {s}$" for s in databases[node]),
            rf"^{SCRIPT} release {snap}$",
        ]
        assert session.in_order(*expected) == expected, node
        picked = rebuild.nodes[node].snapshot
        assert picked is not None and picked.id == snap
        applier = FakeClusterApply.made[0].appliers[node]
        paused = [f"{s} {w}" for s in databases[node] for w in ("paused", "resumed")]
        assert applier.runtime.asked == paused
    # every node's row counts, the phases of the whole and of each node
    assert rebuild.recorded == {(n, "db", "t"): 7 for n in NODES}
    assert list(rebuild.phases) == ["connect", "apply (every node)", "audit"]
    assert set(rebuild.nodes["media"].phases) == {
        "bootstrap", "images", "restore files", "stacks up", "restore databases",
    }  # fmt: skip
    text = rebuild.text()
    said = f"  node stats: snapshot {STATS_SNAP[:8]} (manual, 2026-12-03T10:00:01, taken on stats)"
    assert said in text.splitlines()
    assert "    restore databases    0.0s" in text.splitlines()
    assert text.splitlines()[-2].startswith("  total ")
    assert text.splitlines()[-1].startswith("rebuild of lumen-cluster (every node) done: 3 node")
    data = rebuild.to_json()
    assert data["ok"] is True and "snapshot" not in data
    assert data["nodes"]["media"]["snapshot"] == MEDIA_SNAP
    assert "── node front ──" in out.getvalue()


def test_a_whole_cluster_rebuild_takes_the_given_snapshots_each_on_its_node(
    rebuilding: tuple[Spec, dict[str, ScriptedSession]],
) -> None:
    spec, sessions = rebuilding
    given = [OLD_MEDIA[:8], STATS_SNAP[:8], FRONT_SNAP[:8]]
    rebuild = cluster_recovery.run_cluster_rebuild(spec, given, io.StringIO())
    assert rebuild.ok
    assert sessions["media"].ran(rf"^{SCRIPT} restore {OLD_MEDIA} files ghost listmonk$")


def test_a_whole_cluster_rebuild_over_nodes_running_stacks_is_refused_unless_forced(
    rebuilding: tuple[Spec, dict[str, ScriptedSession]],
) -> None:
    spec, sessions = rebuilding
    # media lost alone: front and stats still run theirs
    FakeClusterApply.running = {"front": ["documint", "edge"], "stats": ["plausible"]}
    with pytest.raises(
        BackupError,
        match=r"^front runs documint, edge; stats runs plausible: a rebuild without --node is "
        r"for every node a fresh box \(the whole cluster lost\); `vpsctl rebuild -i "
        r"\S*inventory/sandbox-cluster --node media` rebuilds the lost worker media alone "
        r"\(--force to go ahead anyway\)$",
    ):
        cluster_recovery.run_cluster_rebuild(spec, [], io.StringIO())
    assert not FakeClusterApply.made[-1].applied
    assert all(s.ran(rf"^{SCRIPT}") == [] for s in sessions.values())
    forced = cluster_recovery.run_cluster_rebuild(spec, [], io.StringIO(), force=True)
    assert forced.ok and FakeClusterApply.made[-1].applied


def test_a_cluster_without_a_backup_repository_is_refused_before_connecting(
    tmp_path: Path,
) -> None:
    spec = load_spec(moves_studio(tmp_path, backup=False) / CLUSTER)
    with pytest.raises(
        BackupError,
        match=r"host\.yaml: no `backup:` section: no repository to rebuild the cluster's data "
        r"from; `vpsctl apply -i \S+` rebuilds it empty$",
    ):
        cluster_recovery.run_cluster_rebuild(spec, [], io.StringIO())


def test_the_repository_is_read_through_a_manager_with_backups_else_the_first_node(
    tmp_path: Path,
) -> None:
    root = moves_studio(tmp_path, backup=True)
    assert cluster_recovery.repository_node(load_spec(root / CLUSTER)) == "front"
    host = root / CLUSTER / "host.yaml"
    text = host.read_text()
    host.write_text(
        text.replace(
            "    sandbox: {name: stats}\n", "    sandbox: {name: stats}\n    manager: true\n"
        )
    )
    assert cluster_recovery.repository_node(load_spec(root / CLUSTER)) == "stats"
    host.write_text(
        text.replace(
            "    sandbox: {name: media}\n", "    sandbox: {name: media}\n    manager: true\n"
        )
    )
    for stack in ("ghost", "listmonk"):
        pin_stack(host, stack, "media", "stats")
    spec = load_spec(root / CLUSTER)
    assert spec.host.managers == ["media"] and "media" not in cluster_recovery.backup_nodes(
        spec, []
    )
    assert cluster_recovery.repository_node(spec) == "front"


def test_backup_check_of_a_cluster_runs_once_through_the_repository_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = moves_studio(tmp_path, backup=True)
    spec = load_spec(root / CLUSTER)
    share = cluster.node_view(spec, render_spec(spec, offline=True), "front")
    session = ScriptedSession()
    session.answer(
        r"^sha256sum",
        stdout="".join(f"{share.files[p].sha256}  {p}\n" for p in share.host_files),
    )
    opened: list[list[str]] = []

    def sessions(spec: Spec, names: list[str], stack: object) -> dict[str, ScriptedSession]:
        opened.append(names)
        return {n: session for n in names}

    monkeypatch.setattr(cluster_recovery, "_sessions", sessions)
    monkeypatch.setattr(inputs, "render_spec", lambda spec: render_spec(spec, offline=True))
    checked = run_cli(root, "backup", "-i", CLUSTER, "--check", "--check-subset", "1/5")
    assert checked.code == 0, checked.err
    assert opened == [["front"]]
    assert session.ran(rf"^{SCRIPT} check 1/5$") and len(session.ran(rf"^{SCRIPT}")) == 1
    assert checked.err.splitlines() == [
        "restic check (reading 1/5 of the data) …",
        "repository check: ok",
    ]


def test_rebuild_s_snapshots_are_refused_by_the_cli_before_any_connection(
    studio: Path,  # noqa: F811
) -> None:
    several = ("--snapshot", "ab12", "--snapshot", "cd34")
    refused = run_cli(studio, "rebuild", "-i", CLUSTER, "--node", "media", *several)
    assert refused.code == 1
    assert "--snapshot ab12, cd34: node media is rebuilt from ONE snapshot" in refused.err
    refused = run_cli(studio, "rebuild", "-i", CLUSTER, "--snapshot", "ab12", "--snapshot", "no")
    assert refused.code == 1
    assert "--snapshot 'no': expected a snapshot id (hex)" in refused.err
