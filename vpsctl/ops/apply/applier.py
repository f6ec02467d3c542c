"""The Applier: one apply run over one session, sequencing the phases (see the package)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import IO, Any

from vpsctl.core.facts import FACTS_SCRIPT, HostFacts, parse
from vpsctl.core.layout import HOST_ROOT
from vpsctl.core.plan import Plan, StackChange, make_plan, redact
from vpsctl.core.render import Desired, DesiredFile, render
from vpsctl.errors import VpsctlError, display_path, masked
from vpsctl.host.commands import files as file_commands
from vpsctl.host.remote import Remote, RemoteError, output_tail
from vpsctl.ops.apply.bootstrap import bootstrap_settings, run_bootstrap, settings_hash
from vpsctl.ops.apply.edge import Edge
from vpsctl.ops.apply.health import HealthGate
from vpsctl.ops.apply.host import HostSetup, ImageFeed, ImagesMissing
from vpsctl.ops.apply.lanes import Background, Lanes, run_in_lanes
from vpsctl.ops.apply.probe import PROBE_DEADLINE, Prober
from vpsctl.ops.apply.prune import Prune
from vpsctl.ops.apply.record import Record
from vpsctl.ops.apply.result import ApplyResult, StackOutcome, StackResult
from vpsctl.ops.apply.rollback import Rollback
from vpsctl.ops.apply.rotations import Rotations
from vpsctl.ops.apply.runtime import ComposeRuntime
from vpsctl.ops.apply.snapshots import Snapshots
from vpsctl.ops.apply.stackapps import APP_STEPS, AppSteps
from vpsctl.ops.inputs import gather
from vpsctl.spec.studio import Spec

LOCK = "/run/vpsctl/apply.lock"  # held while an apply runs (see Session.hold_lock)
PREVIOUS = f"{HOST_ROOT}/previous"  # outside the stacks tree: never mistaken for a managed file
# ANSI escape sequences and other control characters (newline and tab stay)
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")


class Applier:
    """One apply run over one session to the host (a :class:`~vpsctl.host.remote.Session`, or
    any :class:`~vpsctl.host.remote.Remote`: tests drive it with a scripted one).

    It sequences the phases (:class:`HostSetup`, per stack :meth:`converge` with its
    :class:`HealthGate`, :class:`AppSteps`, :class:`Prober` and :class:`Rollback`, the
    :class:`Edge`, :class:`Prune`, :class:`Record`); each phase builds its commands with
    :mod:`vpsctl.host.commands` and runs them over this run's session.

    Every remote command is checked: one expected to fail says ``check=False`` and judges
    its result; anything else that fails raises, and a stack whose change or rollback
    failed says so in its :class:`StackOutcome`.
    """

    probe_deadline = PROBE_DEADLINE  # seconds a failing probe is retried (tests: 0)
    # stacks converged at once (the edge waits for all of them): none depends on another
    # (a service's depends_on stays inside its stack), and 4 keep an 8 GB box's peak modest
    stack_workers = 4
    health_interval = 2.0  # seconds between two polls of the health gate (tests: 0)
    health_every = 5.0  # seconds between two "waiting" lines of a gate or the probes

    def __init__(
        self,
        spec: Spec,
        session: Remote,
        out: IO[str],
        *,
        destroy_data: bool = False,
        caddyfile: Callable[[bytes], bytes] | None = None,
        before_stacks: Callable[[Applier], None] | None = None,
        after_healthy: Callable[[Applier, str], str] | None = None,
        backup_timers: bool = True,
        override: Callable[[Desired], None] | None = None,
    ) -> None:
        self.spec = spec
        self.session = session
        self.out = out
        self.destroy_data = destroy_data
        # a rebuild restores files (volumes, SQLite, Caddy's certificates) here: after the
        # bootstrap and the backup files, before any stack first starts
        self.before_stacks = before_stacks
        # a rebuild restores each stack's databases here: once its services are healthy,
        # before its app steps and probes (so a restored app is never claimed afresh);
        # returns what failed, "" when all went well
        self.after_healthy = after_healthy
        # False on a drill box: its timers are masked, never enabled, so that it can never
        # back up into the real repository under the real host's name
        self.backup_timers = backup_timers
        # what this run has changed on the box so far, in words: the journal lists it, a
        # failed run's too (the operator sees what is no longer as it was)
        self.changed: list[str] = []
        self.caddyfile_hook = caddyfile
        self.withheld: frozenset[str] = frozenset()  # stacks the edge does not route to
        # stack → the result its kept version records ("applied" unless set: a rollback)
        self.version_results: dict[str, str] = {}
        # a cluster node's, for the stacks another node deploys that it holds (placed by
        # labels): the files this run created among them, by stack, once the previous
        # version of the others is kept (:meth:`HostSetup.held_files`), until the deploying
        # node's gate passed or put them back; and the stacks whose held files went back
        self.held_created: dict[str, list[str]] = {}
        self.held_put_back: set[str] = set()
        self.lanes: Lanes | None = None  # while stacks converge at once: who says what
        self.feed: ImageFeed | None = None  # the run's images, while they come
        self.setup = HostSetup(self)
        self.gate = HealthGate(self)
        self.prober = Prober(self)
        self.snapshots = Snapshots(self)
        self.apps = AppSteps(self)
        self.edge = Edge(self)
        self.rollbacks = Rollback(self)
        self.prune = Prune(self)
        self.records = Record(self)
        self.rotations = Rotations(self)
        self.runtime = self.make_runtime()
        self.secrets = spec.secret_values()
        # where the edge's Caddy runs: probes go through it (one box: this one)
        self.edge_session: Remote = session
        self.inputs = gather(spec)  # strict: a sandbox not up fails here, named
        self.desired = self.share(render(spec, self.inputs))
        if override is not None:  # a rollback: some stacks as an earlier version had them
            override(self.desired)
        if caddyfile is not None:  # tests inject a Caddyfile Caddy rejects
            for path, f in list(self.desired.files.items()):
                if f.kind == "caddyfile":
                    self.desired.files[path] = DesiredFile(
                        f.path, caddyfile(f.content), f.mode, f.stack, f.kind
                    )
        self.facts = self.read_facts()
        self.plan = self.planned(self.facts)

    def planned(self, facts: HostFacts) -> Plan:
        """This run's plan against ``facts`` (a cluster's apply plans a node again once
        every node is read: :func:`vpsctl.core.cluster.placed_facts`)."""
        return make_plan(
            self.label,
            self.desired,
            facts,
            destroy_data=self.destroy_data,
            inventory=display_path(self.spec.inventory),
        )

    @property
    def label(self) -> str:
        """The host as plans and messages name it."""
        return self.spec.host.name

    def share(self, desired: Desired) -> Desired:
        """What this run's host holds of the studio (one box: all of it)."""
        return desired

    def settings(self) -> Any:
        """The bootstrap's settings for this run's host."""
        return bootstrap_settings(self.spec)

    def make_runtime(self) -> ComposeRuntime:
        """How this run brings stacks up and down (one box: docker compose)."""
        return ComposeRuntime(self)

    def removals(self) -> list[str]:
        """The stacks this run removes from the host: the plan's."""
        return [s.stack for s in self.plan.stacks if s.action == "remove"]

    def defers_backup_files(self) -> bool:
        """Whether this run installs the box's backup files after its stacks, not before
        (one box: never)."""
        return False

    def keeps_stale_backup_files(self) -> bool:
        """Whether the backup files the spec no longer declares stay this run (one box:
        never)."""
        return False

    def placed_elsewhere(self, name: str) -> bool:
        """Whether stack ``name``, no longer on this host, runs on another node of its
        cluster (one box: never)."""
        return False

    def volumes_fate(self, name: str) -> str:
        """What removing stack ``name`` does with its volumes, in words: ``destroyed``
        (``--destroy-data``) or ``kept``; anything else but ``kept`` deletes them."""
        return "destroyed" if self.destroy_data else "kept"

    def say(self, text: str) -> None:
        """Print one line (in a stack's lane while stacks converge at once)."""
        lanes = self.lanes
        lane = lanes.current() if lanes is not None else None
        if lanes is not None and lane is not None:
            lanes.say(lane, self.clean(text))
        else:
            print(self.clean(text), file=self.out, flush=True)

    def record(self, text: str) -> None:
        """Note one change made to the box (for the journal, in the spec's stack order)."""
        lane = self.lanes.current() if self.lanes is not None else None
        (lane.changed if lane is not None else self.changed).append(self.clean(text))

    def clean(self, text: str) -> str:
        """``text`` (a command's output, an error) with every secret value masked, and no
        terminal control sequence a container's log could carry to the operator's screen."""
        return _CONTROL.sub("", masked(redact(text, self.secrets)))

    def last_lines(self, output: str, count: int = 12) -> str:
        return self.clean("\n".join(output.splitlines()[-count:]))

    def read_facts(self) -> HostFacts:
        result = self.session.run(FACTS_SCRIPT, timeout=120, purpose="reading the host")
        return parse(result.stdout)

    def wait_healthy(self, name: str) -> tuple[bool, str]:
        """The health gate of stack ``name`` (a rebuild gates again after its databases)."""
        return self.gate.wait_healthy(name)

    # ── the run ──────────────────────────────────────────────────────────────────────────

    def apply(self) -> ApplyResult:
        """Converge the host to the plan; the journal records the run, even a failed one."""
        lock = self.session.hold_lock(LOCK, "apply")
        try:
            return self._apply()
        except VpsctlError as exc:
            # stopped before any stack's gate could judge (bootstrap, images, a hook): the
            # stacks are as they were; the journal still says this run happened and failed
            self.records.append_journal("error: " + self.clean(str(exc))[-300:], 0.0)
            raise
        finally:
            lock.close()

    def _apply(self) -> ApplyResult:
        started = time.monotonic()
        result = ApplyResult(self.plan)
        self.begin(result)
        self.stacks(result)
        self.finish(result, started)
        return result

    def begin(self, result: ApplyResult) -> None:
        """The host before any stack: the bootstrap (when due), the network, its own files."""
        started = time.monotonic()
        self.bootstrap(result, settings_hash(self.settings()))
        self.setup.network()
        self.setup.host_files()
        self.setup.held_files()
        result.phases["bootstrap"] = time.monotonic() - started

    def finish(self, result: ApplyResult, started: float) -> None:
        """After the stacks: what is no longer declared goes, the manifest and the journal
        record the run (``started``: when it began)."""
        bootstrap_hash = settings_hash(self.settings())
        mark = time.monotonic()
        for name in self.removals():
            result.outcomes.append(self.prune.remove(name))
        self.prune.delete_stale_files(result)
        if self.plan.changes or result.bootstrapped:
            try:
                self.records.write_manifest(result, bootstrap_hash)
            except RemoteError as exc:
                result.problems.append(
                    f"the manifest could not be written ({self.clean(str(exc))}): the next "
                    "plan shows this run's changes again"
                )
            self.records.keep_versions(result)
        result.phases["stacks"] += time.monotonic() - mark
        for outcome in result.outcomes:
            if outcome.result == StackResult.APPLIED:
                self.rotations.settled(outcome.stack)
        result.seconds = time.monotonic() - started
        self.records.journal(result)

    def bootstrap(self, result: ApplyResult, bootstrap_hash: str) -> None:
        """Run the bootstrap when the box lacks docker or its bootstrap settings changed."""
        manifest = self.facts.manifest or {}
        if (
            self.facts.docker is None
            or self.facts.compose is None
            or manifest.get("bootstrap") != bootstrap_hash
        ):
            report = run_bootstrap(self.session, self.spec, self.out, self.settings(), self.label)
            result.bootstrapped = True
            if report.changed:
                self.record(f"bootstrap: {len(report.changed)} change(s)")

    def stacks(self, result: ApplyResult) -> None:
        """Bring the images the box lacks and converge every stack, the edge last; then probe
        the ones applied before the edge was up.

        The images come in a thread of their own (:class:`ImageFeed`), while (a rebuild)
        the snapshot's files are restored, and while the stacks before the edge converge
        (``stack_workers`` at a time: none depends on another), each as soon as its own
        images are on the box. Each speaks in its lane (:mod:`.lanes`): the run prints and
        records exactly what bringing the images, then converging the stacks one by one,
        would have."""
        changes = {s.stack: s for s in self.plan.stacks}
        # A stack is probed through Caddy right away only when Caddy already routes to it as
        # the spec says: the edge runs and has nothing to change in this run.
        edge_up = self.edge_steady(changes)
        others = [n for n, s in self.desired.stacks.items() if s.role != "edge"]
        mark = time.monotonic()
        self.feed = ImageFeed(self.setup)
        self.feed.build()
        built = time.monotonic() - mark
        mark = time.monotonic()
        self.lanes = Lanes(self.out, others, preludes=("images", "before stacks"))
        images, before = self.lanes.preludes
        feed = Background(self.lanes, images, self.feed.run, self.session.cancel)
        try:
            if self.before_stacks is not None:
                hook = self.before_stacks
                prelude = Background(self.lanes, before, lambda: hook(self), self.session.cancel)
                prelude.result()
                result.phases["before stacks"] = time.monotonic() - mark
            self.lanes.finish(before)
            mark = time.monotonic()
            try:
                outcomes = run_in_lanes(
                    self.lanes,
                    lambda name: self.step(name, changes[name], probe_now=edge_up),
                    self.stack_workers,
                    self.session.cancel,
                    start=self.start_order(others, changes),
                )
            except ImagesMissing:
                feed.result()  # the feed's own error says why
                raise
            feed.result()  # the edge's images too, before it converges
        except BaseException:
            self.session.cancel()  # the run is over: the feed's commands end
            feed.join()
            raise
        finally:
            result.phases["images"] = built + self.feed.seconds
            self.lanes.close()
            self.changed += self.lanes.changed()
            self.lanes = None
        deferred: list[StackOutcome] = []
        for outcome in outcomes:
            result.outcomes.append(outcome)
            converged = outcome.result == StackResult.APPLIED and outcome.action != APP_STEPS
            if converged and not edge_up:
                deferred.append(outcome)
        for name, stack in self.desired.stacks.items():
            if stack.role != "edge":
                continue
            if changes[name].action != "none":
                self.edge.withhold_routes(result, name)  # no route to a stack whose start failed
            result.outcomes.append(self.step(name, changes[name], probe_now=True))
        self.probe_deferred(result, deferred)
        result.phases["stacks"] = time.monotonic() - mark

    def edge_steady(self, changes: dict[str, StackChange]) -> bool:
        """Whether Caddy already routes to the stacks as the spec says (the edge runs and has
        nothing to change in this run): then a stack is probed through it right away."""
        return self.edge.running() and all(
            changes[n].action == "none" for n, s in self.desired.stacks.items() if s.role == "edge"
        )

    def start_order(self, names: list[str], changes: dict[str, StackChange]) -> list[int]:
        """The order the stacks start in (their lines keep the spec's): the ones with the
        most services to bring up first (a database to start, and in a rebuild to restore,
        makes the longest gate), so that no long one waits for a slot behind quick ones;
        ties in the spec's order, stacks with nothing to change last."""

        def weight(index: int) -> int:
            name = names[index]
            return 0 if changes[name].action == "none" else len(self.desired.stacks[name].services)

        return sorted(range(len(names)), key=lambda index: -weight(index))

    def step(self, name: str, change: StackChange, probe_now: bool) -> StackOutcome:
        """One stack's part of the run: converge it (once its images are on the box), or
        only its app steps, or nothing."""
        if change.action != "none":
            if self.feed is not None:
                self.feed.wait(name)
            return self.converge(name, change, probe_now=probe_now)
        if self.apps.pending(name):
            return self.apps.only(name)
        return StackOutcome(name, "none", StackResult.UNCHANGED, change.reason)

    def probe_deferred(self, result: ApplyResult, deferred: list[StackOutcome]) -> None:
        """Probe, through the edge now up, the stacks applied before it first came up (their
        previous files were kept until then, for a rollback); a new one rolled back here
        loses its routes at the edge again."""
        changes = {s.stack: s for s in self.plan.stacks}
        for outcome in deferred:
            failures = self.prober.probe([outcome.stack])
            if failures:
                change = changes[outcome.stack]
                outcome.result, outcome.detail = self.rollbacks.rollback(
                    outcome.stack, change, failures, probe=True
                )
            else:
                self.discard_previous(outcome.stack)
        self.reroute_edge(result)

    def reroute_edge(self, result: ApplyResult) -> None:
        """After the probes deferred until the edge was up: a new stack rolled back there
        had its routes loaded with the edge; load the edge's Caddyfile again without them."""
        edges = [
            o.stack
            for o in result.outcomes
            if o.result == StackResult.APPLIED and self.edge.is_edge(o.stack)
        ]
        if not edges or not self.edge.withhold_routes(result, edges[0]):
            return
        for name in edges:
            change = StackChange(name, "reload", "routes of a failed new stack withheld")
            result.outcomes.append(self.converge(name, change, probe_now=True))

    # ── one stack ────────────────────────────────────────────────────────────────────────

    def stack_files(self, name: str) -> list[DesiredFile]:
        """The files of stack ``name`` this run creates or updates."""
        changed = {
            f.path for f in self.plan.files if f.stack == name and f.action in ("create", "update")
        }
        return [self.desired.files[p] for p in self.desired.stacks[name].files if p in changed]

    def steady_stacks(self) -> list[str]:
        """Stacks this run leaves as they were (their probes judge a change of the edge)."""
        return [s.stack for s in self.plan.stacks if s.action == "none"]

    def previous(self, name: str) -> str:
        """Where the previous version of ``name``'s changed files waits during its change."""
        return f"{PREVIOUS}/{name}"

    def holding(self, name: str) -> list[Applier]:
        """The nodes that hold the files of ``name`` for this run's deploy of it and kept
        the previous version of those this run replaced there (a cluster's stack placed by
        labels: :class:`~vpsctl.ops.apply.cluster.NodeApplier`); one box: none."""
        return []

    def discard_previous(self, name: str) -> None:
        """The change held: its previous files are no longer needed, here and on the nodes
        holding them (:meth:`holding`)."""
        self.discard_copy(self, name)
        for holder in self.holding(name):
            self.discard_copy(holder, name)

    def discard_copy(self, where: Applier, name: str) -> None:
        """Remove the previous files of ``name`` kept on ``where`` (this run's host, or a
        node holding them): the next save starts afresh, so a copy left behind does no
        harm; it is only reported."""
        where.held_created.pop(name, None)
        result = where.session.run(
            file_commands.remove([where.previous(name)], recursive=True),
            check=False,
            purpose=f"removing the previous files of {name}",
        )
        if not result.ok:
            on = "" if where is self else f" on {where.label}"
            self.say(
                f"{name}: note: {where.previous(name)} could not be removed{on}: "
                f"{output_tail(result, 2, 200)}"
            )

    def converge(self, name: str, change: StackChange, probe_now: bool) -> StackOutcome:
        """Change one stack, gate it (compose's healthchecks, then its probes when Caddy can
        reach it now), and roll it back when the gate fails."""
        started = time.monotonic()

        def outcome(result: StackResult, detail: str = "") -> StackOutcome:
            self.record(f"{name}: {change.action} → {result}")
            return StackOutcome(name, change.action, result, detail, time.monotonic() - started)

        files = self.stack_files(name)
        self.say(f"{name}: {change.action} ({change.reason})")
        caddyfile = next((f for f in files if f.kind == "caddyfile"), None)
        refused = self.prepare(name, change, files, caddyfile)
        if refused:
            # the nodes holding it have its new files already: theirs go back
            refused += self.rollbacks.unhold(name)
        else:
            # a rotated database password: changed in the running database first
            refused = self.rotations.databases(name)
            if refused:
                undone = self.rotations.undo(name)
                refused += self.rollbacks.unhold(name)  # before the copies are discarded
                self.discard_previous(name)
                self.edge.remove_next(caddyfile)
                refused += "".join(f"; {u}" for u in undone)
        if refused:
            return outcome(StackResult.FAILED, refused)
        failures = self.change(name, change, files, caddyfile)
        if not failures and self.after_healthy is not None:
            failures = self.after_healthy(self, name)
        if not failures:
            # healthy, not yet probed: a new stack is not routed yet, so a first launch is
            # claimed before anyone else can reach it
            failures = self.apps.run(name)
        if not failures and probe_now:
            # The edge's own gate: the stacks that were serving before still serve.
            failures = self.prober.probe(
                self.steady_stacks() if self.edge.is_edge(name) else [name]
            )
        if failures:
            return outcome(*self.rollbacks.rollback(name, change, failures, probe=probe_now))
        if probe_now:
            self.discard_previous(name)
        seconds = time.monotonic() - started
        self.say(f"{name}: {change.action} done in {seconds:.1f}s")
        return outcome(StackResult.APPLIED)

    def prepare(
        self,
        name: str,
        change: StackChange,
        files: list[DesiredFile],
        caddyfile: DesiredFile | None,
    ) -> str:
        """Before any change (a failure here leaves the stack exactly as it was): Caddy
        judges a new Caddyfile, the pre-apply snapshot, and the previous version of every
        file that changes is kept. "" when the change may go ahead, else why not."""
        try:
            if caddyfile is not None and not self.edge.validate(name, caddyfile):
                return "the new Caddyfile was rejected by Caddy; the old config keeps serving"
            if self.snapshots.needed(change):
                ok, detail = self.snapshots.take(name)
                if not ok:
                    return (
                        "the pre-apply snapshot of its data failed, so nothing was changed: "
                        + detail
                    )
            # the previous version of every file that changes, kept until the stack is
            # healthy (a rollback puts it back)
            self.session.run(
                file_commands.save_previous(self.previous(name), [f.path for f in files]),
                purpose=f"saving the previous files of {name}",
            )
        except RemoteError as exc:
            leftover = self.edge.remove_next(caddyfile)
            detail = f"{self.clean(str(exc))}; nothing was changed{leftover}"
            self.say(f"{name}: FAILED before any change: {detail}")
            return detail
        return ""

    def change(
        self,
        name: str,
        change: StackChange,
        files: list[DesiredFile],
        caddyfile: DesiredFile | None,
    ) -> str:
        """Upload the new files, put the validated Caddyfile in place, and start (or reload)
        the stack through its health gate: "" when it came up, else what failed."""
        others = [f for f in files if f.kind != "caddyfile"]
        try:
            self.session.put_files([(f.path, f.content, f.mode) for f in others])
            if others:
                self.record(f"{name}: files uploaded: {', '.join(f.path for f in others)}")
            if caddyfile is not None:
                self.edge.place(caddyfile)
                self.record(f"{name}: Caddyfile replaced")
            if change.action == "reload":
                ok, output = self.edge.reload(name)
            else:
                ok, output = self.gate.compose_up(name)
                if ok and caddyfile is not None and self.edge.is_edge(name):
                    ok, output = self.edge.reload(name)  # compose may not have restarted Caddy
        except RemoteError as exc:
            return self.clean(str(exc))
        return "" if ok else f"{change.action} failed: {self.last_lines(output)}"
