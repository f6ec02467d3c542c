"""Backups of a cluster, offline: each node's backup machinery for ITS stacks (one
repository, snapshots tagged with their node), the snapshot list by node, ``--node``'s
refusals, the swarm entry of a lost node, and the commands that stop a node's stacks and
pause a stack's apps on the manager. (The real thing, with a worker box destroyed and
rebuilt: tests/e2e/test_cluster.py.)"""

from __future__ import annotations

import io
import shlex
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from tests.scripted import ScriptedSession
from tests.test_box_scripts import shellcheck
from tests.test_nodes import CLUSTER, studio  # noqa: F401 - the fixture
from vpsctl.cli import views
from vpsctl.core import backupfiles, cluster
from vpsctl.core import swarm as swarm_core
from vpsctl.core.render import Desired
from vpsctl.errors import VpsctlError
from vpsctl.host.commands import stack as stackcmd
from vpsctl.host.commands import swarm as swarm_commands
from vpsctl.ops import cluster_recovery
from vpsctl.ops.apply.applier import Applier
from vpsctl.ops.apply.runtime import SwarmRuntime
from vpsctl.ops.inputs import render_spec
from vpsctl.ops.recovery import BackupError, Snapshot, backed_up_stacks
from vpsctl.spec.loader import load_spec
from vpsctl.spec.studio import Spec

SCRIPT = backupfiles.SCRIPT


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


def test_node_is_refused_on_one_box_and_required_on_a_cluster(studio: Path) -> None:  # noqa: F811
    spec = load_spec(studio / CLUSTER)
    with pytest.raises(VpsctlError, match=r"^.*host\.yaml:8: nodes: a cluster is rebuilt one node"):
        cluster_recovery.checked_node(spec, None)
    with pytest.raises(
        VpsctlError,
        match=r"--node web: .*host\.yaml:8: nodes has no node web; its nodes: front, media, stats",
    ):
        cluster_recovery.checked_node(spec, "web")
    with pytest.raises(VpsctlError, match=r"front is the swarm's only manager .*NEW swarm"):
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
        r"docker service scale --detach=true ghost_ghost=1",
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
