"""Moving a stack between the nodes of a cluster (host.yaml's `node:` of it changed): what
the plan finds and says, what is refused before any change, and how a move is carried out
and undone (:class:`vpsctl.ops.apply.move.Moves`, over scripted nodes). The move on real
boxes, with records written before it, is tests/e2e/test_cluster.py's."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import pin_stack, run_cli
from tests.scripted import ScriptedSession
from vpsctl.core import cluster
from vpsctl.core.plan import Plan, StackChange, VolumeChange
from vpsctl.ops.apply.move import MoveError, Moves
from vpsctl.ops.apply.result import StackOutcome, StackResult
from vpsctl.ops.inputs import render_spec
from vpsctl.ops.recovery import Backups
from vpsctl.spec.loader import load_spec
from vpsctl.spec.studio import Spec

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = "inventory/sandbox-cluster"
BACKUP = """
backup:
  repository:
    kind: sftp
    address: backup.example.test
    user: lumen
    key: ~/.ssh/lumen_backup_ed25519
    host_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKq7mZ0cYt3Wc1h8T2r9w0nE4bXzL5sV6uJpQyR1dFgA
    path: /srv/restic/lumen-cluster
"""


def studio(tmp_path: Path, *, backup: bool) -> Path:
    """The example cluster, with (or without) a `backup:` repository, and its secrets."""
    root = tmp_path / "studio"
    root.mkdir()
    shutil.copytree(ROOT / "stacks", root / "stacks")
    shutil.copytree(ROOT / CLUSTER, root / CLUSTER, ignore=shutil.ignore_patterns("secrets.env"))
    host = root / CLUSTER / "host.yaml"
    text = host.read_text()
    if "\nbackup:" in text:  # the example's own (a sandbox box): this one needs none up
        start = text.index("\nbackup:")
        end = text.index("\n\n", start + 1)
        text = text[:start] + text[end:]
    host.write_text(text + (BACKUP if backup else ""))
    result = run_cli(root, "secrets", "generate", "-i", CLUSTER)
    assert result.code == 0, result.err
    return root


def moved(root: Path, stack: str, old: str, new: str) -> Spec:
    """The spec with ``stack`` pinned to ``new`` instead of ``old``."""
    pin_stack(root / CLUSTER / "host.yaml", stack, old, new)
    return load_spec(root / CLUSTER)


def plan_of(host: str, *stacks: StackChange) -> Plan:
    return Plan(host=host, reachable=True, note="", stacks=list(stacks))


def plans_moving(stack: str, old: str, new: str) -> dict[str, Plan]:
    """The three nodes' plans as they are when ``stack`` moves from ``old`` to ``new``."""
    plans = {n: plan_of(f"c/{n}") for n in ("front", "media", "stats")}
    plans[old].stacks.append(StackChange(stack, "remove", "no longer declared"))
    plans[new].stacks.append(StackChange(stack, "start", "not running on the host"))
    return plans


def test_a_stack_one_node_removes_and_another_starts_is_a_move_with_its_data(
    tmp_path: Path,
) -> None:
    spec = moved(studio(tmp_path, backup=True), "listmonk", "media", "stats")
    plans = plans_moving("listmonk", "media", "stats")
    assert cluster.moves(spec, plans) == [cluster.Move("listmonk", "media", "stats", True)]
    assert cluster.move_refusals(spec, cluster.moves(spec, plans)) == []
    (note,) = cluster.move_notes(spec, plans)
    assert note.startswith("move listmonk from media to stats with its data: ")
    for said in ("pre-move snapshot", "restored on stats", "listmonk is down meanwhile"):
        assert said in note
    whole = cluster.ClusterPlan("c", plans)
    assert whole.summary() == "Plan: 1 to add, 0 to change, 1 to remove (over 3 nodes)."


def test_a_stack_removed_from_one_node_only_is_no_move(tmp_path: Path) -> None:
    spec = load_spec(studio(tmp_path, backup=True) / CLUSTER)
    plans = plans_moving("listmonk", "media", "stats")
    plans["stats"].stacks.clear()
    assert cluster.moves(spec, plans) == []
    assert cluster.move_notes(spec, plans) == []


def test_moving_data_without_a_backup_repository_is_refused_naming_the_line(
    tmp_path: Path,
) -> None:
    root = studio(tmp_path, backup=False)
    spec = moved(root, "documint", "front", "media")
    found = cluster.moves(spec, plans_moving("documint", "front", "media"))
    (refused,) = cluster.move_refusals(spec, found)
    host = root / CLUSTER / "host.yaml"
    line = next(
        n
        for n, text in enumerate(host.read_text().splitlines(), 1)
        if text.strip() == "node: media"
        and host.read_text().splitlines()[n - 2].strip() == "documint:"
    )
    assert refused.startswith(f"{host}:{line}: stacks.documint.node: moving documint from ")
    assert "declares no `backup:` repository" in refused
    assert "pin it back with `node: front`" in refused


def test_a_volume_no_backup_item_carries_refuses_the_move(tmp_path: Path) -> None:
    root = studio(tmp_path, backup=True)
    stack = root / "stacks" / "listmonk.yaml"
    stack.write_text(stack.read_text().replace("  - {kind: volume, volume: uploads}\n", ""))
    spec = moved(root, "listmonk", "media", "stats")
    assert cluster.uncovered_volumes(spec, "listmonk") == ["uploads"]
    (refused,) = cluster.move_refusals(
        spec, cluster.moves(spec, plans_moving("listmonk", "media", "stats"))
    )
    assert "would leave its volume uploads behind" in refused
    assert "add a `{kind: volume, volume: uploads}` item" in refused


def test_every_example_stack_with_data_is_carried_whole_by_its_backups(tmp_path: Path) -> None:
    spec = load_spec(studio(tmp_path, backup=True) / CLUSTER)
    for name, stack in spec.stacks.items():
        if stack.role != "edge":  # it goes where the edge node goes: its Caddy state is kept
            assert cluster.uncovered_volumes(spec, name) == [], name
    assert cluster.uncovered_volumes(spec, "edge") == ["config"]
    assert cluster.keeps_data(spec, "documint")


# ── carrying a move out, over scripted nodes ─────────────────────────────────────────────


@dataclass
class FakeRuntime:
    """A node's runtime as :class:`Moves` uses it."""

    up_ok: bool = True
    asked: list[str] = field(default_factory=list)

    def wait_until(self, question: Any, timeout: float, failure: str, purpose: str) -> None:
        self.asked.append(purpose)

    def up(self, name: str) -> tuple[bool, str]:
        return self.up_ok, "" if self.up_ok else "no such image"

    @contextlib.contextmanager
    def paused(self, name: str) -> Iterator[None]:
        self.asked.append(f"{name} paused")
        yield
        self.asked.append(f"{name} resumed")


@dataclass
class FakeGate:
    ok: bool = True

    def wait_services(self, name: str, services: list[str]) -> tuple[bool, str]:
        return self.ok, "" if self.ok else "app exited"


@dataclass
class FakeProber:
    failures: str = ""
    probed: list[list[str]] = field(default_factory=list)

    def probe(self, stacks: list[str]) -> str:
        self.probed.append(stacks)
        return self.failures


class FakeNode:
    """What :class:`Moves` asks of a node's applier: its session, its manager's, its
    runtime and gate, how it speaks and records."""

    def __init__(self, spec: Spec, name: str, manager: ScriptedSession) -> None:
        self.spec = spec
        self.node = name
        self.session = ScriptedSession()
        self.manager = manager
        self.swarm_runtime = FakeRuntime()
        self.runtime = self.swarm_runtime
        self.gate = FakeGate()
        self.prober = FakeProber()
        self.said: list[str] = []
        self.recorded: list[str] = []
        self.moved_away: dict[str, str] = {}
        self.kept: set[str] = set()
        self.returned: list[StackOutcome] = []
        self.arriving: dict[str, Moves] = {}

    def say(self, text: str) -> None:
        self.said.append(text)

    def record(self, text: str) -> None:
        self.recorded.append(text)

    def clean(self, text: str) -> str:
        return text

    def last_lines(self, output: str, count: int = 12) -> str:
        return "\n".join(output.splitlines()[-count:])

    def wait_healthy(self, name: str) -> tuple[bool, str]:
        return True, ""


def nodes(spec: Spec) -> tuple[ScriptedSession, dict[str, Any]]:
    manager = ScriptedSession()
    return manager, {n: FakeNode(spec, n, manager) for n in ("front", "media", "stats")}


SNAPSHOT = "0123456789abcdef" * 4


def test_a_move_stops_the_writers_then_snapshots_on_the_old_node(tmp_path: Path) -> None:
    spec = moved(studio(tmp_path, backup=True), "listmonk", "media", "stats")
    manager, appliers = nodes(spec)
    appliers["media"].session.answer(
        r"vpsctl-backup backup pre-move listmonk", stdout=f"@@snapshot {SNAPSHOT}\n"
    )
    moves = Moves([cluster.Move("listmonk", "media", "stats", True)], appliers)
    assert appliers["media"].moved_away == {"listmonk": "it moved to stats"}
    assert appliers["stats"].arriving == {"listmonk": moves}
    moves.snapshot()
    # the app (the writer) scaled to 0 on a manager, the database left to be dumped
    (scale,) = manager.ran("service scale")
    assert scale.endswith(" listmonk_listmonk=0")  # not listmonk_db
    assert appliers["media"].swarm_runtime.asked == ["waiting for listmonk of listmonk to stop"]
    # the snapshot was taken after the writers had stopped, on the old node
    assert moves.snapshots == {"listmonk": SNAPSHOT}
    # its volumes on media go once it serves on stats: what the removal will say of them
    assert appliers["media"].moved_away == {
        "listmonk": f"it moved to stats; pre-move snapshot {SNAPSHOT[:8]} keeps them"
    }
    assert appliers["media"].recorded[-1] == f"listmonk: pre-move snapshot {SNAPSHOT[:8]}"


def test_a_failed_pre_move_snapshot_starts_the_writers_again_and_changes_nothing_else(
    tmp_path: Path,
) -> None:
    spec = moved(studio(tmp_path, backup=True), "listmonk", "media", "stats")
    manager, appliers = nodes(spec)
    appliers["media"].session.answer(
        r"vpsctl-backup backup pre-move", stdout="@@fail restic repository locked\n", ok=False
    )
    moves = Moves([cluster.Move("listmonk", "media", "stats", True)], appliers)
    with pytest.raises(MoveError) as caught:
        moves.snapshot()
    message = str(caught.value)
    assert message.startswith("move listmonk from media to stats: the pre-move snapshot failed")
    assert "restic repository locked" in message
    assert message.endswith("listmonk runs again on media; nothing else was changed")
    scales = manager.ran("service scale")
    assert [s.rsplit(" ", 1)[1] for s in scales] == ["listmonk_listmonk=0", "listmonk_listmonk=1"]


def test_the_new_node_restores_files_before_and_databases_after_health(tmp_path: Path) -> None:
    spec = moved(studio(tmp_path, backup=True), "listmonk", "media", "stats")
    manager, appliers = nodes(spec)
    moves = Moves([cluster.Move("listmonk", "media", "stats", True)], appliers)
    moves.snapshots["listmonk"] = SNAPSHOT
    stats = appliers["stats"]
    moves.restore_files(stats, ["listmonk"])
    assert moves.restore_databases(stats, "listmonk") == ""
    ran = stats.session.ran("vpsctl-backup")
    assert [c.split("vpsctl-backup ", 1)[1] for c in ran] == [
        f"restore {SNAPSHOT} files listmonk",
        f"restore {SNAPSHOT} databases listmonk",
    ]
    # its apps paused by a manager while its database is loaded (the node's script cannot
    # stop a Swarm service): the restore ran in between
    assert stats.swarm_runtime.asked == ["listmonk paused", "listmonk resumed"]
    restore_at = stats.session.calls.index(
        next(c for c in stats.session.calls if "databases listmonk" in c.command)
    )
    assert restore_at >= 0 and not manager.ran("service scale")
    # a failed restore of its databases fails its gate (it is rolled back), in words
    stats.session.answer(r"restore .* databases", stdout="@@fail restore psql\n", ok=False)
    assert moves.restore_databases(stats, "listmonk").startswith(
        "restoring its databases: the restore of its databases failed: restore psql"
    )


def test_a_move_that_failed_on_the_new_node_serves_again_on_the_old_one(tmp_path: Path) -> None:
    spec = moved(studio(tmp_path, backup=True), "listmonk", "media", "stats")
    _, appliers = nodes(spec)
    moves = Moves([cluster.Move("listmonk", "media", "stats", True)], appliers)
    moves.snapshots["listmonk"] = SNAPSHOT
    failed = StackOutcome("listmonk", "start", StackResult.ROLLED_BACK, "probe failed")
    moves.settle({"listmonk": failed})
    media = appliers["media"]
    assert media.kept == {"listmonk"} and media.moved_away == {}
    (back,) = media.returned
    assert back.result == StackResult.ROLLED_BACK
    assert back.detail == "its move to stats failed; it serves again on media, its data as it was"
    assert media.prober.probed == [["listmonk"]]  # through the edge, before it is said back
    # the copy of its data restored on stats is deleted (the snapshot keeps it)
    assert appliers["stats"].session.ran(r"docker volume ls -q --filter .*listmonk")
    # and when starting it there fails too, nobody may assume it is fine
    _, appliers = nodes(spec)
    appliers["media"].prober.failures = "listmonk/health: 502"
    moves = Moves([cluster.Move("listmonk", "media", "stats", True)], appliers)
    moves.settle({"listmonk": None})
    (back,) = appliers["media"].returned
    assert back.result == StackResult.ROLLBACK_FAILED
    assert back.detail.endswith("starting it again on media failed too: listmonk/health: 502")


def test_a_move_that_converged_keeps_the_old_node_removing_it_with_its_volumes(
    tmp_path: Path,
) -> None:
    spec = moved(studio(tmp_path, backup=True), "listmonk", "media", "stats")
    _, appliers = nodes(spec)
    moves = Moves([cluster.Move("listmonk", "media", "stats", True)], appliers)
    moves.snapshots["listmonk"] = SNAPSHOT
    moves.settle({"listmonk": StackOutcome("listmonk", "start", StackResult.APPLIED)})
    media = appliers["media"]
    assert list(media.moved_away) == ["listmonk"] and media.kept == set() and not media.returned
    # the copy the restore extracted on the new node is released
    assert appliers["stats"].session.ran(f"vpsctl-backup release {SNAPSHOT}")


def test_remote_errors_of_the_writers_stop_are_a_move_error(tmp_path: Path) -> None:
    spec = moved(studio(tmp_path, backup=True), "documint", "front", "media")
    manager, appliers = nodes(spec)
    manager.fail(r"service scale .*=0", "no such service: documint_app", times=1)
    moves = Moves([cluster.Move("documint", "front", "media", True)], appliers)
    with pytest.raises(MoveError, match=r"no such service: documint_app.*documint runs again"):
        moves.snapshot()
    assert not manager.ran("=1$") or manager.ran("documint_app=1")


def test_both_ends_of_a_move_say_it_and_the_old_node_keeps_none_of_its_volumes(
    tmp_path: Path,
) -> None:
    spec = moved(studio(tmp_path, backup=True), "listmonk", "media", "stats")
    plans = plans_moving("listmonk", "media", "stats")
    plans["media"].stacks.append(StackChange("ghost", "none", "unchanged"))
    plans["media"].volumes = [
        VolumeChange("listmonk_uploads", "listmonk", "keep", "kept", 1024, "2026-12-01"),
        VolumeChange("old_data", "old", "keep", "kept", 2048, "2026-11-01"),
    ]
    marked = cluster.mark_moves(spec, plans)
    media = {c.stack: c.reason for c in marked["media"].stacks}
    assert media["listmonk"].startswith("moves to stats with its data: stopped, snapshotted")
    assert media["ghost"] == "unchanged"
    assert [c.reason for c in marked["stats"].stacks] == [
        "moves here from media with its data (pre-move snapshot restored)"
    ]
    # a volume of a stack the spec no longer declares stays listed as kept; the moving one's go
    assert [v.name for v in marked["media"].volumes] == ["old_data"]
    # nothing moves: the very same plans
    assert cluster.mark_moves(spec, {"media": plans["media"]})["media"] is plans["media"]


def test_a_moved_stack_is_restored_from_the_newest_snapshot_holding_it_whichever_node_took_it(
    tmp_path: Path,
) -> None:
    """Right after a move, the newest snapshot holding the stack is its old node's pre-move
    one: a restore (or a rebuild) on its new node takes it."""
    spec = moved(studio(tmp_path, backup=True), "listmonk", "media", "stats")
    snapshots = [
        {"id": "aa" * 32, "time": "2026-12-03T10:00:00Z", "tags": ["vpsctl", "run:manual",
            "node:stats", "stack:plausible"]},
        {"id": "bb" * 32, "time": "2026-12-03T11:00:00Z", "tags": ["vpsctl", "run:pre-move",
            "node:media", "stack:listmonk"]},
        {"id": "cc" * 32, "time": "2026-12-03T09:00:00Z", "tags": ["vpsctl", "run:manual",
            "node:media", "stack:listmonk", "stack:ghost"]},
    ]  # fmt: skip
    session = ScriptedSession()
    session.answer(r"vpsctl-backup snapshots", stdout=json.dumps(snapshots) + "\n")
    backups = Backups(spec, session, render_spec(spec, offline=True), node="stats")
    assert backups.pick(None, ["listmonk"]).id == "bb" * 32
    assert backups.pick("cccccccc", ["listmonk"]).kind == "manual"
