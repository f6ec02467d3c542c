"""Moving stacks between the nodes of a cluster, with their data (host.yaml's ``node:`` of a
stack changed). The plan shows a move as a ``remove`` on the old node and a ``start`` on the
new one; :class:`Moves` carries it out around the cluster's apply, so that no record written
before the move is lost:

1. before anything else changes (the old node still holds the backup script that knows the
   stack): the stack's services that write (all but its databases, which a dump reads)
   are scaled to 0 on the old node, then a ``pre-move`` snapshot of its data is taken
   there, into the cluster's repository;
2. on the new node, the snapshot's files (volumes, SQLite) are restored before any of its
   stacks starts, the stack is deployed there (Swarm stops what is left of it on the old
   node), and its databases are restored once its services are healthy, before its app
   steps and probes — as a rebuild does;
3. once the stack has converged and answered its probes on the new node, its leftover
   containers, files and volumes on the old node are removed (the snapshot keeps them);
   if it failed there (rolled back: no longer deployed anywhere), it is deployed again
   from the files the old node still holds, onto its volumes there, untouched by the move.

A stack that keeps no data just starts on the new node; its files on the old one go.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from vpsctl.core.backupfiles import stack_view
from vpsctl.core.cluster import Move
from vpsctl.errors import VpsctlError
from vpsctl.host.commands import backup
from vpsctl.host.commands import stack as stackcmd
from vpsctl.host.remote import RemoteError, output_tail
from vpsctl.ops.apply.result import StackOutcome, StackResult
from vpsctl.ops.apply.snapshots import marked, snapshot_id

if TYPE_CHECKING:
    from vpsctl.ops.apply.applier import Applier
    from vpsctl.ops.apply.cluster import NodeApplier

STOP_TIMEOUT = 120  # seconds the writers of a moving stack may take to stop
DATABASES = frozenset({"postgres", "mysql", "clickhouse"})  # restored once healthy


class MoveError(VpsctlError):
    """A move failed before its stack left the old node: it serves there again."""


class Moves:
    """The moves of one cluster apply (``found``), over its node appliers (``appliers``)."""

    def __init__(self, found: list[Move], appliers: dict[str, NodeApplier]) -> None:
        self.found = found
        self.appliers = appliers
        self.snapshots: dict[str, str] = {}  # stack → its pre-move snapshot
        self.stopped: dict[str, list[str]] = {}  # stack → its services scaled to 0
        self.back: set[str] = set()  # stacks deployed again on their old node
        for move in found:
            appliers[move.old].moved_away[move.stack] = f"it moved to {move.new}"
            if move.data:
                appliers[move.new].arriving[move.stack] = self

    # ── 1. on the old node, before any change ───────────────────────────────────────────

    def snapshot(self) -> None:
        """Stop each moving stack's writers on its old node and take its pre-move snapshot
        there. On failure, the writers stopped so far start again and nothing else has
        changed (raises :class:`MoveError`)."""
        for move in self.found:
            if not move.data:
                continue
            old = self.appliers[move.old]
            try:
                self._stop_writers(old, move)
                self.snapshots[move.stack] = self._take(old, move)
            except (RemoteError, MoveError) as exc:
                restarted = self.restart_writers()
                raise MoveError(
                    f"move {move.stack} from {move.old} to {move.new}: "
                    f"{old.clean(str(exc))}; {restarted}nothing else was changed"
                ) from None

    def _stop_writers(self, old: NodeApplier, move: Move) -> None:
        view = stack_view(move.stack, old.spec.stacks[move.stack])
        writers: list[str] = list(view["app_services"])
        if not writers:
            return
        old.say(
            f"{move.stack}: moving to {move.new}: stopping {', '.join(writers)} on "
            f"{move.old} (no write may come after its snapshot)"
        )
        self.stopped[move.stack] = writers
        self._scale(old, move.stack, writers, 0)
        old.record(f"{move.stack}: {', '.join(writers)} stopped for its move to {move.new}")
        old.swarm_runtime.wait_until(
            stackcmd.services_stopped(move.stack, writers),
            STOP_TIMEOUT,
            f"{move.stack}: {', '.join(writers)} still run on {move.old} {STOP_TIMEOUT}s after "
            "they were scaled to 0",
            f"waiting for {', '.join(writers)} of {move.stack} to stop",
        )

    def _take(self, old: NodeApplier, move: Move) -> str:
        old.say(f"{move.stack}: pre-move snapshot of its data on {move.old} …")
        result = old.session.run(
            backup.backup("pre-move", [move.stack]),
            timeout=3600,
            check=False,  # judged below from its @@ lines
            purpose=f"the pre-move snapshot of {move.stack}",
        )
        snapshot = snapshot_id(result.output)
        if not result.ok or snapshot is None:
            why = marked(result.output, "fail") or old.last_lines(result.output, 4)
            raise MoveError(f"the pre-move snapshot failed: {old.clean(why)}")
        old.say(f"{move.stack}: pre-move snapshot {snapshot[:8]}")
        old.record(f"{move.stack}: pre-move snapshot {snapshot[:8]}")
        old.moved_away[move.stack] = (
            f"it moved to {move.new}; pre-move snapshot {snapshot[:8]} keeps them"
        )
        return snapshot

    def restart_writers(self) -> str:
        """Start again the writers :meth:`snapshot` stopped (a move that will not happen);
        what was done, in words ("" when nothing was stopped)."""
        said: list[str] = []
        for stack, writers in self.stopped.items():
            move = next(m for m in self.found if m.stack == stack)
            old = self.appliers[move.old]
            try:
                self._scale(old, stack, writers, 1)
                said.append(f"{stack} runs again on {move.old}")
            except RemoteError as exc:
                said.append(
                    f"{stack}'s {', '.join(writers)} could NOT be started again on "
                    f"{move.old} ({old.clean(str(exc))}): `docker service scale` them to 1 "
                    "on a manager"
                )
        self.stopped = {}
        return "".join(f"{s}; " for s in said)

    # ── 2. on the new node: its hooks ───────────────────────────────────────────────────

    def restore_files(self, applier: Applier, stacks: list[str]) -> None:
        """Before any stack of the new node starts: the files of its arriving ``stacks``."""
        for stack in stacks:
            snapshot = self.snapshots[stack]
            applier.say(f"{stack}: restoring its files from pre-move snapshot {snapshot[:8]} …")
            self._restore(applier, stack, snapshot, "files")

    def restore_databases(self, applier: Applier, stack: str) -> str:
        """Once ``stack`` is healthy on the new node: its databases, then its gate again. ""
        when done (or nothing to do), else what failed (its gate fails: rolled back)."""
        items = applier.spec.stacks[stack].backups
        if not any(i.kind in DATABASES for i in items):
            return ""
        snapshot = self.snapshots[stack]
        node = self.appliers[next(m.new for m in self.found if m.stack == stack)]
        applier.say(f"{stack}: restoring its databases from pre-move snapshot {snapshot[:8]} …")
        try:
            # its apps stopped by a manager meanwhile (a node's script cannot stop a service)
            with node.swarm_runtime.paused(stack):
                self._restore(applier, stack, snapshot, "databases")
        except (MoveError, RemoteError) as exc:
            return f"restoring its databases: {applier.clean(str(exc))}"
        ok, detail = applier.wait_healthy(stack)
        return "" if ok else f"after its databases were restored: {detail}"

    @staticmethod
    def _scale(node: NodeApplier, stack: str, services: list[str], replicas: int) -> None:
        node.manager.run(
            stackcmd.scale(stack, dict.fromkeys(services, replicas), wait=False),
            120,
            purpose=f"{'starting' if replicas else 'stopping'} {', '.join(services)} of {stack}",
        )

    def _restore(self, applier: Applier, stack: str, snapshot: str, phase: str) -> None:
        command = backup.restore(snapshot, "files" if phase == "files" else "databases", [stack])
        result = applier.session.run(
            command,
            timeout=3600,
            check=False,  # judged below from its @@ lines
            purpose=f"restoring the {phase} of {stack}",
        )
        if not result.ok:
            why = marked(result.output, "fail") or applier.last_lines(result.output, 4)
            raise MoveError(f"the restore of its {phase} failed: {applier.clean(why)}")
        applier.record(f"{stack}: {phase} restored from pre-move snapshot {snapshot[:8]}")

    def release(self) -> None:
        """Remove the snapshots' extracted copies on the new nodes (best effort: the next
        restore removes a copy left behind)."""
        for move in self.found:
            snapshot = self.snapshots.get(move.stack)
            if snapshot is None:
                continue
            new = self.appliers[move.new]
            done = new.session.run(
                backup.release(snapshot),
                600,
                check=False,  # reported below: the move itself is done
                purpose="removing the pre-move snapshot's copy",
            )
            if not done.ok:
                new.say(
                    f"{move.stack}: note: the pre-move snapshot's extracted copy stays on "
                    f"{move.new} until the next restore ({output_tail(done, 2, 200)})"
                )

    # ── 3. the old node, once the new one has judged ────────────────────────────────────

    def settle(self, arrived: dict[str, StackOutcome | None]) -> None:
        """For each move whose stack did not converge on its new node (``arrived``: the
        stack's outcome there, ``None`` when it never started): deploy it again on its old
        node from the files that node holds, gated and probed; its removal there is then
        skipped, and the copy of its data restored on the new node is deleted."""
        self.release()
        for move in self.found:
            outcome = arrived.get(move.stack)
            if outcome is not None and outcome.result == StackResult.APPLIED:
                continue
            self.back.add(move.stack)
            old = self.appliers[move.old]
            old.moved_away.pop(move.stack, None)
            old.kept.add(move.stack)
            old.returned.append(self._return(old, move))
            if move.data:
                self._discard_copy(move)

    def _return(self, old: NodeApplier, move: Move) -> StackOutcome:
        started = time.monotonic()
        old.say(f"{move.stack}: the move to {move.new} failed: starting it again on {move.old}")
        services = list(old.spec.stacks[move.stack].services)
        ok, detail = old.runtime.up(move.stack)
        if ok:
            ok, detail = old.gate.wait_services(move.stack, services)
        failures = old.prober.probe([move.stack]) if ok else ""
        seconds = time.monotonic() - started
        if ok and not failures:
            old.record(f"{move.stack}: back on {move.old} (its move to {move.new} failed)")
            return StackOutcome(
                move.stack,
                "move back",
                StackResult.ROLLED_BACK,
                f"its move to {move.new} failed; it serves again on {move.old}, its data as it was",
                seconds,
            )
        return StackOutcome(
            move.stack,
            "move back",
            StackResult.ROLLBACK_FAILED,
            f"its move to {move.new} failed, and starting it again on {move.old} failed too: "
            f"{old.clean(detail or failures)}",
            seconds,
        )

    def _discard_copy(self, move: Move) -> None:
        """Delete the copy of a failed move's data restored on its new node (its snapshot
        keeps it; a later move restores it afresh). Best effort: what is left is said."""
        new = self.appliers[move.new]
        done = new.session.run(
            stackcmd.remove_volumes(move.stack),
            300,
            check=False,  # reported below: the stack serves on its old node either way
            purpose=f"deleting the restored volumes of {move.stack}",
        )
        if not done.ok:
            new.say(
                f"{move.stack}: note: the volumes restored for its move stay on {move.new} "
                f"({output_tail(done, 2, 200)}); the next move replaces their content"
            )
