"""A drill of a cluster, offline: every node on a throwaway box of its own (the inventory
the drill writes), the boxes brought up and torn down whatever happens, and the drill's
rebuild masking every node's backup timers (its audit passes a timer only masked). (The
real thing, three throwaway boxes rebuilt from the repository while the cluster runs on:
tests/e2e/test_cluster.py.)"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from tests.scripted import ScriptedSession
from tests.test_cluster_backup import FakeClusterApply, rebuilding  # noqa: F401 - the fixture
from tests.test_moves import studio as moves_studio
from tests.test_nodes import CLUSTER
from vpsctl.ops import audit, cluster_recovery, recovery
from vpsctl.ops.recovery import BackupError, RebuildReport, drill_boxes, throwaway_inventory
from vpsctl.spec.loader import load_spec
from vpsctl.spec.studio import Spec

NODES = ("front", "media", "stats")


def timers(status: dict[str, str]) -> audit.Report:
    """A cluster audit whose only checks are each node's backup timer, read as ``status``."""
    checks = [
        audit.Check("host", "timer vpsctl-backup.timer", audit.FAIL, value, "", node=node)
        for node, value in status.items()
    ]
    return audit.Report("lumen-cluster", checks)


@pytest.mark.parametrize("backup_timers", [True, False])
def test_a_drill_s_rebuild_masks_every_node_s_timers_and_passes_them_only_masked(
    rebuilding: tuple[Spec, dict[str, ScriptedSession]],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    backup_timers: bool,
) -> None:
    spec, _ = rebuilding
    report = timers({"media": "masked inactive", "stats": "enabled active"})
    monkeypatch.setattr(cluster_recovery, "audit_cluster", lambda spec, sessions: report)
    rebuild = cluster_recovery.run_cluster_rebuild(
        spec, [], io.StringIO(), backup_timers=backup_timers
    )
    assert FakeClusterApply.made[0].backup_timers is backup_timers  # every node's applier
    assert rebuild.report is not None
    judged = {c.node: (c.status, c.threshold) for c in rebuild.report.checks}
    if backup_timers:  # a real rebuild: the audit's own verdicts, untouched
        assert judged == {"media": (audit.FAIL, ""), "stats": (audit.FAIL, "")}
    else:  # a drill: masked passes, enabled fails, each still on its node
        masked = "masked: a drill box never backs up into the real repository"
        assert judged == {"media": (audit.OK, masked), "stats": (audit.FAIL, masked)}
        assert not rebuild.ok


def real_boxes(root: Path) -> Path:
    """The example cluster on real boxes: SSH and a declared swarm address for each node,
    certificates from Let's Encrypt."""
    host = root / CLUSTER / "host.yaml"
    text = host.read_text()
    for index, node in enumerate(NODES, 10):
        real = (
            f"ssh: {{address: 203.0.113.{index}, port: 2222, user: root, key: ~/.ssh/id_ed25519}}\n"
            f"    address: 10.0.0.{index}"
        )
        text = text.replace(f"sandbox: {{name: {node}}}", real, 1)
    text = text.replace("tls: pebble", "tls: acme\nacme_email: ops@lumen.test", 1)
    text = text.replace("open_ports: [22, 80, 443]", "open_ports: [2222, 80, 443]", 1)
    host.write_text(text)
    return root / CLUSTER


def test_the_drill_s_inventory_puts_every_node_on_its_own_throwaway_box(tmp_path: Path) -> None:
    inventory = real_boxes(moves_studio(tmp_path, backup=True))
    spec = load_spec(inventory)
    front = (spec.host.nodes or {})["front"]
    assert front.ssh is not None and front.address == "10.0.0.10"  # the real node's
    assert spec.host.tls == "acme"
    boxes = drill_boxes(spec, "drill-0a1b2c")
    assert boxes == {n: f"drill-0a1b2c-{n}" for n in NODES}
    with throwaway_inventory(spec, boxes, tmp_path / "drill") as copied:
        drill = load_spec(copied)
    nodes = drill.host.nodes or {}
    for node in NODES:
        box = nodes[node]
        assert box.sandbox is not None and box.sandbox.name == f"drill-0a1b2c-{node}"
        assert box.ssh is None and box.address is None  # reached at the drill box's own
    # everything else as the real cluster's: name (its snapshots), placement, roles, labels,
    # stacks, the repository and the secrets
    assert drill.host.name == spec.host.name
    assert drill.host.edge_node == spec.host.edge_node == "front"
    assert drill.host.managers == spec.host.managers
    assert {n: b.labels for n, b in nodes.items()} == {
        n: b.labels for n, b in (spec.host.nodes or {}).items()
    }
    assert {s: drill.nodes_of(s) for s in drill.host.stacks} == {
        s: spec.nodes_of(s) for s in spec.host.stacks
    }
    # the same repository (its key file's path made absolute: the copy lives elsewhere)
    assert drill.host.backup is not None and spec.host.backup is not None
    key = str(Path("~/.ssh/lumen_backup_ed25519").expanduser().resolve())
    repository = spec.host.backup.repository.model_copy(update={"key": key})
    assert drill.host.backup == spec.host.backup.model_copy(update={"repository": repository})
    assert drill.host.tls == "pebble"  # Let's Encrypt cannot reach a drill box
    assert spec.host.open_ports == [2222, 80, 443]  # the real boxes' sshd
    assert drill.host.open_ports == [2222, 80, 443, 22]  # and the drill boxes'
    assert drill.secret_values() == spec.secret_values()


def test_a_node_whose_name_would_make_too_long_a_box_name_is_numbered(tmp_path: Path) -> None:
    root = moves_studio(tmp_path, backup=True)
    host = root / CLUSTER / "host.yaml"
    long = "analytics-and-statistics"  # drill-xxxxxx- + 24 characters: 37 > 32
    # a node named as a numbered box might be: `n3` (a node's name starts with a letter)
    host.write_text(host.read_text().replace("stats", long).replace("media", "n3"))
    boxes = drill_boxes(load_spec(root / CLUSTER), "drill-0a1b2c")
    assert boxes == {"front": "drill-0a1b2c-front", "n3": "drill-0a1b2c-n3",
                     long: "drill-0a1b2c-3"}  # fmt: skip
    assert len(set(boxes.values())) == 3


class Boxes:
    """The sandbox's up/down, recorded (no docker)."""

    def __init__(self, fail_on: str = "") -> None:
        self.fail_on = fail_on
        self.up: list[str] = []
        self.down: list[str] = []

    def make(self, name: str, progress: Any = None) -> None:
        self.up.append(name)
        if self.fail_on and name.endswith(self.fail_on):
            raise BackupError(f"{name} did not answer SSH")

    def remove(self, name: str, progress: Any = None) -> None:
        self.down.append(name)


@pytest.fixture
def boxes(monkeypatch: pytest.MonkeyPatch) -> Boxes:
    from vpsctl.local import sandbox  # noqa: PLC0415

    made = Boxes()
    monkeypatch.setattr(sandbox, "up", made.make)
    monkeypatch.setattr(sandbox, "down", made.remove)
    return made


def test_a_drill_of_a_cluster_brings_up_a_box_per_node_and_tears_every_one_down(
    tmp_path: Path, boxes: Boxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = load_spec(moves_studio(tmp_path, backup=True) / CLUSTER)
    seen: list[Spec] = []

    def rebuilt(drill: Spec, out: Any) -> tuple[RebuildReport, dict[tuple[str, str, str], int]]:
        seen.append(drill)
        report = RebuildReport("lumen-cluster (every node)", apply_ok=True)
        report.report = audit.Report("lumen-cluster", [audit.Check("cluster", "x", audit.OK, "")])
        report.recorded = {("ghost", "mysql", "posts"): 3, ("plausible", "pg", "users"): 1}
        live = {("ghost", "mysql", "posts"): 4, ("plausible", "pg", "users"): 1}
        return report, live

    monkeypatch.setattr(recovery, "_drill_rebuild", rebuilt)
    out = io.StringIO()
    drill = recovery.run_drill(spec, out)
    assert sorted(boxes.up) == sorted(boxes.down) and len(boxes.up) == 3
    assert [b.rsplit("-", 1)[1] for b in drill.boxes] == list(NODES)
    nodes = seen[0].host.nodes or {}
    assert [getattr(nodes[n].sandbox, "name", None) for n in NODES] == drill.boxes
    assert drill.ok and drill.compared == 2 and not drill.mismatches
    assert drill.grown == ["ghost/mysql/posts: 3 rows in the snapshot, 4 now"]
    assert drill.text().splitlines()[-1] == (
        f"drill passed (boxes {', '.join(drill.boxes)} torn down)"
    )
    assert f"drill: throwaway boxes {', '.join(drill.boxes)} …" in out.getvalue()


def test_a_drill_whose_box_fails_to_come_up_tears_down_every_box_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vpsctl.local import sandbox  # noqa: PLC0415

    made = Boxes(fail_on="-media")
    monkeypatch.setattr(sandbox, "up", made.make)
    monkeypatch.setattr(sandbox, "down", made.remove)
    spec = load_spec(moves_studio(tmp_path, backup=True) / CLUSTER)
    with pytest.raises(BackupError, match=r"-media did not answer SSH"):
        recovery.run_drill(spec, io.StringIO())
    assert sorted(made.down) == sorted(made.up) and len(made.up) == 3


def test_a_kept_drill_says_its_boxes_are_kept(
    tmp_path: Path, boxes: Boxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = load_spec(moves_studio(tmp_path, backup=True) / CLUSTER)

    def rebuilt(drill: Spec, out: Any) -> tuple[RebuildReport, dict[tuple[str, str, str], int]]:
        return RebuildReport("lumen-cluster (every node)"), {}

    monkeypatch.setattr(recovery, "_drill_rebuild", rebuilt)
    drill = recovery.run_drill(spec, io.StringIO(), keep=True)
    assert boxes.down == [] and len(boxes.up) == 3
    assert not drill.ok  # nothing compared, the rebuild not green
    assert drill.text().splitlines()[-1].endswith("kept up (--keep))")
