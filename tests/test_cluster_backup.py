"""Backups of a cluster, offline: each node's backup machinery for ITS stacks (one
repository, snapshots tagged with their node), the snapshot list by node, ``--node``'s
refusals, the swarm entry of a lost node, and the commands that stop a node's stacks and
pause a stack's apps on the manager. (The real thing, with a worker box destroyed and
rebuilt: tests/e2e/test_cluster.py.)"""

from __future__ import annotations

from pathlib import Path

from tests.test_box_scripts import shellcheck
from tests.test_nodes import CLUSTER, studio  # noqa: F401 - the fixture
from vpsctl.cli import views
from vpsctl.core import backupfiles, cluster
from vpsctl.core.render import Desired
from vpsctl.ops import cluster_recovery
from vpsctl.ops.inputs import render_spec
from vpsctl.ops.recovery import Snapshot, backed_up_stacks
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
        assert "RESTIC_OPTS+=(--retry-lock 30m)" in script.decode()
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
