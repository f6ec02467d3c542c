"""Rollback: bring the previous version of a stack back, and check it. ROLLED_BACK only when
every step succeeded and the previous version passed the gate the new one failed; anything
less is ROLLBACK_FAILED, with what failed, what the stack runs now, and what to run."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from vpsctl.core.plan import StackChange
from vpsctl.core.render import DesiredFile
from vpsctl.errors import display_path
from vpsctl.host import probes
from vpsctl.host.commands import Argv, Script, backup, docker, files
from vpsctl.host.remote import Remote, RemoteError, output_tail
from vpsctl.ops.apply.phase import Phase
from vpsctl.ops.apply.result import StackResult
from vpsctl.ops.apply.snapshots import counted_rows, discarded_rows, marked, snapshot_id

if TYPE_CHECKING:
    from vpsctl.ops.apply.applier import Applier

Verdict = tuple[StackResult, str]  # a rollback's result, and what to tell of it


class Steps(Phase):
    """The steps of one rollback: each one checked, its failure collected (a rollback goes
    on with what it can still do, then says everything that failed)."""

    def __init__(self, applier: Applier) -> None:
        super().__init__(applier)
        self.failed: list[str] = []

    def run(
        self,
        command: Argv | Script,
        purpose: str,
        timeout: int = 600,
        *,
        session: Remote | None = None,
    ) -> bool:
        """Run one step (on this run's host, or on ``session``: another node's); whether it
        succeeded."""
        try:
            (session or self.session).run(command, timeout, purpose=purpose)
        except RemoteError as exc:
            self.failed.append(self.clean(str(exc)))
            return False
        return True

    def act(self, action: Callable[[], None]) -> bool:
        """Run one step that is more than a command (the runtime's); whether it succeeded."""
        try:
            action()
        except RemoteError as exc:
            self.failed.append(self.clean(str(exc)))
            return False
        return True


class Rollback(Phase):
    """Puts a stack's previous version back after its change failed its gate."""

    def rollback(self, name: str, change: StackChange, reason: str, probe: bool) -> Verdict:
        """Bring the previous version of ``name`` back, and check it: ROLLED_BACK only when
        every step succeeded and the previous version passed the gate the new one failed
        (compose's healthchecks, and its probes when ``probe``); else ROLLBACK_FAILED, with
        what failed, the state the stack is in, and what to run."""
        self.say(f"{name}: FAILED ({reason}); rolling back")
        self.record(f"{name}: {change.action} failed its gate; rolled back to its previous files")
        self.show_logs(name)
        stack_files = self.applier.stack_files(name)
        actions = {c.path: c.action for c in self.plan.files}
        created = [f.path for f in stack_files if actions.get(f.path) == "create"]
        created += [f.path + ".next" for f in stack_files if f.kind == "caddyfile"]
        steps = Steps(self.applier)
        if change.action == "start" and not self.facts.projects().get(name):
            return self.remove_new(name, reason, created, steps)
        previous = self.applier.previous(name)
        kept: list[str] = []  # where a copy of the previous files stays
        files_back = steps.run(
            files.restore_previous(previous), f"putting the previous files of {name} back"
        )
        if files_back:
            self.applier.discard_copy(self.applier, name)
        else:
            kept.append(previous)
        if created and not steps.run(files.remove(created), f"removing the new files of {name}"):
            files_back = False
        # Swarm may start the previous version on any node holding its files: theirs too
        kept += self.holders_back(name, steps)
        files_back = files_back and not steps.failed
        snapshot = self.applier.snapshots.taken.get(name)
        data = "" if snapshot is None else "; " + self.restore_snapshot(name, snapshot, steps)
        if not files_back:
            # a mix of old and new files: starting it would run something nobody planned
            steps.failed.append("the previous version was not started: its files are not all back")
            files_state = "the previous files could not all be put back" + (
                f"; a copy is kept in {' and '.join(kept)}" if kept else ""
            )
            return self.failed(name, reason, steps.failed, files_state + data, snapshot)
        # a database password changed for the new version: the old one back first, or
        # the previous version could not sign in
        steps.failed += self.applier.rotations.undo(name)
        checked = self.start_previous(name, change, stack_files, probe, steps)
        if steps.failed:
            return self.failed(
                name, reason, steps.failed, "the previous files are back in place" + data, snapshot
            )
        self.say(f"{name}: rolled back to the previous version: {checked}")
        return (
            StackResult.ROLLED_BACK,
            f"{reason}; rolled back to the previous version: {checked}{data}",
        )

    def show_logs(self, name: str) -> None:
        """Say the last log lines of the failed version (to help; the rollback does not
        depend on them)."""
        logs = self.applier.runtime.read_logs(name, 15)
        if logs:
            self.say(
                "  last log lines:\n" + "\n".join("    " + line for line in logs.splitlines()[-15:])
            )

    def holders_back(self, name: str, steps: Steps) -> list[str]:
        """Put the previous files of ``name`` back on every node holding them for this
        run's deploy (:meth:`Applier.holding`: a stack placed by labels), and remove the
        ones this run created there; failures go to ``steps``. Returns where a copy of the
        previous files stays (the nodes whose files are not all back)."""
        kept: list[str] = []
        for holder in self.applier.holding(name):
            node, previous = holder.label, holder.previous(name)
            created = holder.held_created.get(name, [])
            holder.held_put_back.add(name)
            back = steps.run(
                files.restore_previous(previous),
                f"putting the previous files of {name} back on {node}",
                session=holder.session,
            )
            if back and created:
                back = steps.run(
                    files.remove(created),
                    f"removing the new files of {name} on {node}",
                    session=holder.session,
                )
            if back:
                self.applier.discard_copy(holder, name)
                self.say(f"{name}: its previous files are back on {node}")
            else:
                holder.held_created.pop(name, None)  # settled: a rollback's copy stays
                kept.append(f"{previous} on {node}")
        return kept

    def unhold(self, name: str) -> str:
        """A change of ``name`` refused before it began: the nodes holding its files have
        the new ones already (uploaded before any stack), so theirs go back. "" when they
        did (or none holds them), else what failed, in words."""
        steps = Steps(self.applier)
        kept = self.holders_back(name, steps)
        if not steps.failed:
            return ""
        return (
            f"; but its previous files could not all be put back on the nodes holding them "
            f"({'; '.join(steps.failed)}; a copy is kept in {' and '.join(kept)})"
        )

    def remove_new(self, name: str, reason: str, created: list[str], steps: Steps) -> Verdict:
        """A stack new in this run failed its first start: take it down, remove its files
        (on the nodes holding them as well)."""
        steps.act(lambda: self.applier.runtime.down(name))
        if created:
            steps.run(files.remove(created), f"removing the new files of {name}")
        self.holders_back(name, steps)
        if not steps.failed:
            self.say(f"{name}: rolled back (removed: it was new)")
            return StackResult.ROLLED_BACK, f"{reason}; rolled back: removed (it was new)"
        return self.failed(name, reason, steps.failed, "its new files may still be in place", None)

    def restore_snapshot(self, name: str, snapshot: str, steps: Steps) -> str:
        """Put back the data of the pre-apply snapshot (the new version may have migrated it,
        and the old version gets its own back), but never blindly: the failed version's data
        (the writes it accepted during its gate among it) is snapshotted first, and what
        putting the old data back discards is said, with how to get it back. Nothing is put
        back when that copy cannot be made. Returns what became of the data, in words."""
        inventory = display_path(self.spec.inventory)
        kept = self.session.run(
            backup.backup("pre-rollback", [name]),
            3600,
            check=False,  # judged here: its @@ lines say what it kept, or why it could not
            purpose=f"the pre-rollback snapshot of {name}",
        )
        copy = snapshot_id(kept.output)
        if not kept.ok or copy is None:
            fail = marked(kept.output, "fail") or ""
            steps.failed.append(
                f"its data was NOT put back from the pre-apply snapshot {snapshot[:8]}: a copy "
                f"of the data the failed version holds could not be made first "
                f"({self.clean(fail) or output_tail(kept, 4, 300)}), and putting the old data "
                "back without it would lose every write since"
            )
            return "its data is as the failed version left it"
        self.record(f"{name}: pre-rollback snapshot {copy[:8]} (the failed version's data)")
        counted = self.applier.snapshots.counted.get(name, {})
        discarded = discarded_rows(counted, counted_rows(kept.output))
        back = f"`vpsctl restore -i {inventory} --snapshot {copy} --stack {name}`"
        told = (
            f"the failed version's data is kept as snapshot {copy[:8]} ({back} gets it back); "
            f"putting the pre-apply data back discards {discarded}"
        )
        self.say(f"{name}: {told}")
        with self.applier.runtime.paused(name):  # a swarm node's: by its manager
            restored = self.session.run(
                backup.restore(snapshot, "all", [name]),
                3600,
                check=False,  # judged here: its @@fail line says why
                purpose=f"restoring the pre-apply snapshot of {name}",
            )
        if restored.ok:
            self.record(f"{name}: data restored from the pre-apply snapshot {snapshot[:8]}")
            self.say(
                f"{name}: data restored from the pre-apply snapshot {snapshot[:8]} (the new "
                "image may have changed it)"
            )
            return f"data restored from the pre-apply snapshot {snapshot[:8]}; {told}"
        fail = marked(restored.output, "fail") or ""
        steps.failed.append(
            f"restoring its data from the pre-apply snapshot {snapshot[:8]} failed "
            f"({self.clean(fail) or output_tail(restored, 4, 300)})"
        )
        return f"the failed version's data is kept as snapshot {copy[:8]} ({back} gets it back)"

    def start_previous(
        self, name: str, change: StackChange, files: list[DesiredFile], probe: bool, steps: Steps
    ) -> str:
        """Start the previous version (its files are back) and gate it as the new one was;
        failures go to ``steps``; returns what was checked, in words."""
        edge = self.applier.edge
        is_edge = edge.is_edge(name)
        if change.action == "reload":
            started, output = edge.reload(name)
            verb = "caddy reload"
        else:
            started, output = self.applier.gate.compose_up(name)
            verb = "compose up"
            if started and is_edge and any(f.kind == "caddyfile" for f in files):
                started, output = edge.reload(name)
                verb = "caddy reload"
        if not started:
            steps.failed.append(
                f"the previous version did not start ({verb}: {self.applier.last_lines(output, 6)})"
            )
            return ""
        checked = "it is up and healthy"
        if not probe:
            return checked + " (its probes run once the edge is up)"
        gate = self.applier.steady_stacks() if is_edge else [name]
        if not probes.targets_for(self.spec, gate):
            return checked + " (it has no probes)"
        failures = self.applier.prober.probe(gate)
        if failures:
            steps.failed.append(f"the previous version is up but fails its probes ({failures})")
        return checked + " and its probes pass"

    def failed(
        self, name: str, reason: str, failed: list[str], files_state: str, snapshot: str | None
    ) -> Verdict:
        """The outcome of a rollback that did not bring back a checked previous version:
        what failed, what the stack runs now, and what to run."""
        inventory = display_path(self.spec.inventory)
        todo = f"fix the cause, then run `vpsctl apply -i {inventory}`"
        if snapshot is not None:
            todo += (
                f"; `vpsctl restore -i {inventory} --snapshot {snapshot} --stack {name}` puts "
                "its data back as it was before this apply"
            )
        told = (
            f"rollback FAILED: {'; '.join(failed)}. Now: {self.stack_state(name)}; "
            f"{files_state}. To do: {todo}"
        )
        self.say(f"{name}: {told}")
        return StackResult.ROLLBACK_FAILED, f"{reason}; {told}"

    def stack_state(self, name: str) -> str:
        """What the box runs of stack ``name`` now, in words (asked, not assumed): read
        where its containers are (a cluster's stack placed by labels: on the nodes Swarm
        put it on, each service named with its node)."""
        where = self.applier.runtime.state_sessions(name)
        rows: list[list[str]] = []
        for node, session in where.items():
            on = f" on {node}" if node else ""
            result = session.run(
                docker.stack_state(name),
                60,
                check=False,  # its failure is itself the answer: the state is unknown
                purpose=f"the containers of {name}{on}",
            )
            if not result.ok:
                return f"its state is unknown (docker ps failed{on}: {output_tail(result, 2, 200)})"
            for line in result.stdout.splitlines():
                if line.strip():
                    row = line.split("\t")
                    rows.append([row[0] + on, *row[1:]])
        if not rows:
            return "the stack is DOWN (no containers)"
        rows = [row + [""] * (4 - len(row)) for row in rows]
        listed = ", ".join(
            f"{service}: {status or state}" + (f", image {image}" if image else "")
            for service, state, image, status, *_ in rows
        )
        running = sum(row[1] == "running" for row in rows)
        return self.state_words(name, rows, running, listed)

    def state_words(self, name: str, rows: list[list[str]], running: int, listed: str) -> str:
        """Which version runs, told by its images (when the change swapped them)."""
        images = {row[2] for row in rows}
        new = {i.ref for i in self.desired.stacks[name].images}
        old = {c.image for c in self.facts.projects().get(name, [])}
        if new == old or not images <= new | old:
            version = "unchecked"
        elif images <= new:
            version = "the NEW version, which failed its gate"
        elif images <= old:
            version = "the previous version, unchecked"
        else:
            version = "a mix of the previous and the new version"
        if not running:
            return f"the stack is DOWN ({listed})"
        if running < len(rows):
            return f"the stack is partly up, {version} ({listed})"
        return f"its containers run {version} ({listed})"
