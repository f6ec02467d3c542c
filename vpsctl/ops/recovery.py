"""backup, restore, rebuild and drill: the studio's data off the box, and back onto one.

The work happens on the box, in the rendered ``vpsctl-backup`` script (see
:mod:`vpsctl.core.backupfiles`): dumps are made where the data is, restic streams them to the
repository, and nothing passes through this machine but results. Python drives it over the
one SSH session, reads its ``@@`` lines, and turns restic's failures into sentences.

- ``backup``: every stack's dumps and volumes in ONE snapshot (tags ``vpsctl``,
  ``run:<kind>``, ``stack:<name>``), then secrets.env as its own snapshot (tag
  ``vpsctl-secrets``; it travels on stdin and is never written to the box), then
  ``forget --prune`` by the spec's retention.
- ``restore``: stop what uses the data, put files and databases back, start, audit.
- ``rebuild``: a fresh box: bootstrap, backup files, images, then the files of the latest
  snapshot (Caddy's certificates among them) BEFORE any stack first starts, the stacks,
  the databases, the audit; the recovery time of every phase.
- ``drill``: a rebuild onto a throwaway sandbox box from the real repository, row counts
  compared with the snapshot's, torn down afterwards.
"""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from vpsctl.cli import views
from vpsctl.core import backupfiles, sections
from vpsctl.core.plan import redact
from vpsctl.core.render import Desired
from vpsctl.errors import VpsctlError
from vpsctl.host.commands import Argv, files
from vpsctl.host.commands import backup as commands
from vpsctl.host.remote import Remote, RemoteError, Session
from vpsctl.ops import audit, inputs, targets
from vpsctl.ops.apply import LOCK, Applier, count_rows, counted_rows, discarded_rows
from vpsctl.ops.apply.result import ApplyResult
from vpsctl.resources import standins_root
from vpsctl.spec.loader import load_spec
from vpsctl.spec.secrets import fingerprint
from vpsctl.spec.studio import Spec

SCRIPT = backupfiles.SCRIPT
ID = re.compile(r"[0-9a-f]{4,64}")  # fullmatch: `$` would allow a trailing "\n"


class BackupError(VpsctlError):
    """A backup, restore or rebuild that could not be done; says why and what to do."""


@dataclass
class Output:
    """What one run of the box's script reported."""

    ok: bool
    lines: list[str]
    stderr: str
    fail: tuple[str, str] | None = None  # (reason, detail)

    def values(self, marker: str) -> list[str]:
        """The arguments of every ``@@marker`` line, in order."""
        found = sections.named(sections.split("\n".join(self.lines)), marker)
        return [section.args for section in found]


@dataclass
class Snapshot:
    """A snapshot of this host in the repository."""

    id: str
    time: str
    tags: list[str]

    @property
    def stacks(self) -> list[str]:
        return [t.removeprefix("stack:") for t in self.tags if t.startswith("stack:")]

    @property
    def kind(self) -> str:
        return next((t[4:] for t in self.tags if t.startswith("run:")), "?")

    @property
    def node(self) -> str:
        """The node of a cluster that took it (its ``node:NAME`` tag); "" on one box."""
        return next((t[5:] for t in self.tags if t.startswith("node:")), "")


@dataclass
class BackupReport:
    """What ``vpsctl backup`` did."""

    snapshot: str
    items: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    secrets_snapshot: str | None = None
    seconds: float = 0.0
    # the row counts the snapshot recorded, keyed (stack, item, table)
    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshot": self.snapshot,
            "items": self.items,
            "added_bytes": self.summary.get("data_added"),
            "total_bytes": self.summary.get("total_bytes_processed"),
            "files": self.summary.get("total_files_processed"),
            "secrets_snapshot": self.secrets_snapshot,
            "seconds": round(self.seconds, 2),
        }


class Backups:
    """The box's backup script, driven over one session."""

    def __init__(
        self,
        spec: Spec,
        session: Remote,
        desired: Desired | None = None,
        *,
        node: str | None = None,
    ) -> None:
        if spec.host.backup is None:
            raise BackupError(
                f"{spec.host_doc.file}: no `backup:` section: host.yaml declares no restic "
                "repository to back up to (see inventory/prod/host.yaml for one)"
            )
        self.spec = spec
        self.session = session
        self.desired = desired or inputs.render_spec(spec)
        self.repository = inputs.repository(spec)
        self.recorded: list[list[str]] = []  # the snapshot's row counts, from a restore
        # a node of a cluster: the box is named so (its snapshots: any node's, see pick)
        self.where = spec.host.name if node is None else f"{spec.host.name}/{node}"

    # ── the script ───────────────────────────────────────────────────────────────────────

    def call(self, command: Argv, timeout: int = 3600, stdin: bytes | None = None) -> Output:
        """Run the box's script (``command``: a :mod:`vpsctl.host.commands.backup` builder's);
        raise :class:`BackupError`, in words, when it fails."""
        purpose = f"vpsctl-backup {command[1]}"
        # check=False: a failure is explained below from the script's @@fail line
        result = (
            self.session.feed(command, stdin, timeout, check=False, purpose=purpose)
            if stdin is not None
            else self.session.run(command, timeout, check=False, purpose=purpose)
        )
        out = Output(result.ok, result.stdout.splitlines(), result.stderr)
        failed = out.values("fail")
        if failed:
            reason, _, detail = failed[-1].partition(" ")
            out.fail = (reason, detail)
        if not result.ok:
            raise BackupError(self.explain(out))
        return out

    def explain(self, out: Output) -> str:
        """restic's failure, in words, with what to do; never a secret."""
        return explain(self.spec, self.repository, out)

    def check_installed(self) -> None:
        """Refuse unless the box's backup files are exactly the rendered ones: a stale
        password or script would back up wrongly, or to the wrong place."""
        paths = list(self.desired.host_files)
        # check=False: sha256sum fails when a file is missing, which is judged below
        result = self.session.run(
            files.sha256(paths), check=False, purpose="reading the backup files' hashes"
        )
        have = {}
        for line in result.stdout.splitlines():
            digest, _, path = line.partition("  ")
            have[path] = digest
        stale = [p for p in paths if have.get(p) != self.desired.files[p].sha256]
        if stale:
            raise BackupError(
                f"the backup files on {self.where} are missing or differ from the "
                f"spec ({', '.join(Path(p).name for p in stale)}): run `vpsctl apply -i "
                f"{self.spec.inventory}` first"
            )

    # ── operations ───────────────────────────────────────────────────────────────────────

    def init_repository(self) -> bool:
        """Create the repository unless it exists; whether it was created."""
        out = self.call(commands.script("init"), timeout=300)
        return "@@created" in out.lines

    def backup(
        self,
        kind: commands.BackupKind = "manual",
        stacks: list[str] | None = None,
        *,
        secrets: bool = True,
    ) -> BackupReport:
        started = time.monotonic()
        out = self.call(commands.backup(kind, stacks or []))
        snapshot = out.values("snapshot")
        if not snapshot:
            raise BackupError(f"the backup printed no snapshot id: {out.stderr[-300:]}")
        report = BackupReport(snapshot[-1], counts=counted_rows("\n".join(out.lines)))
        for value in out.values("item"):
            stack, item, size, *detail = value.split(" ")
            report.items.append(
                {"stack": stack, "item": item, "bytes": int(size), "detail": " ".join(detail)}
            )
        summaries = out.values("summary")
        if summaries:
            report.summary = json.loads(summaries[-1])
        if not stacks and secrets:
            report.secrets_snapshot = self.backup_secrets()
        report.seconds = time.monotonic() - started
        return report

    def backup_secrets(self) -> str:
        """The secrets store, on stdin into its own snapshot: encrypted by restic, never on
        disk; an encrypted store goes as it is (secrets.env.age), never decrypted for it."""
        from vpsctl.spec.store import store_of  # noqa: PLC0415

        kept = store_of(self.spec.inventory).path
        out = self.call(commands.script("secrets", kept.name), timeout=600, stdin=kept.read_bytes())
        ids = out.values("snapshot")
        return ids[-1] if ids else ""

    def snapshots(self) -> list[Snapshot]:
        out = self.call(commands.script("snapshots"), timeout=300)
        text = "\n".join(line for line in out.lines if not line.startswith("@@"))
        data = json.loads(text or "[]")
        return [
            Snapshot(s["id"], s["time"], list(s.get("tags") or []))
            for s in data
            if "vpsctl" in (s.get("tags") or [])
        ]

    def pick(
        self, wanted: str | None, stacks: list[str], found: list[Snapshot] | None = None
    ) -> Snapshot:
        """The snapshot ``wanted`` (an id or its prefix), or the newest holding ``stacks``,
        among ``found`` (else the repository's, read now). On a cluster, any node's: a
        snapshot holds a stack's data whichever node took it (a stack that moved between
        nodes: its pre-move snapshot is its old node's)."""
        found = self.snapshots() if found is None else found
        if wanted is not None:
            if not ID.fullmatch(wanted):
                raise BackupError(f"--snapshot {wanted!r}: expected a snapshot id (hex)")
            matches = [s for s in found if s.id.startswith(wanted)]
            if len(matches) != 1:
                listed = ", ".join(s.id[:8] for s in found[-5:]) or "(none)"
                raise BackupError(
                    f"snapshot {wanted}: {'ambiguous' if matches else 'not found'} among the "
                    f"snapshots of {self.spec.host.name} (newest: {listed})"
                )
            chosen = matches[0]
        else:
            holding = [s for s in found if all(n in s.stacks for n in stacks)]
            if not holding:
                where = self.repository.display if self.repository else "the repository"
                raise BackupError(
                    f"no snapshot of {self.spec.host.name} holds "
                    f"{', '.join(stacks) or 'its stacks'} in {where}"
                )
            chosen = max(holding, key=lambda s: s.time)
        missing = [n for n in stacks if n not in chosen.stacks]
        if missing:
            raise BackupError(
                f"snapshot {chosen.id[:8]} ({chosen.kind}, {chosen.time[:19]}) holds no "
                f"{', '.join(missing)}; it holds {', '.join(chosen.stacks)}"
            )
        return chosen

    def restore(self, snapshot: str, phase: commands.RestorePhase, stacks: list[str]) -> list[str]:
        """Run one restore phase; the ``@@restored`` lines."""
        out = self.call(commands.restore(snapshot, phase, stacks))
        self.recorded = [v.split("\t") for v in out.values("recorded")]
        return out.values("restored")

    def recorded_counts(self, snapshot: str, stacks: list[str]) -> dict[tuple[str, str, str], int]:
        """The row counts ``snapshot`` recorded for ``stacks``, read without restoring it."""
        out = self.call(commands.script("recorded", snapshot, *stacks), timeout=600)
        return count_rows(v.split("\t") for v in out.values("recorded"))

    def counts(self, stacks: list[str]) -> dict[tuple[str, str, str], int]:
        """Live row counts of ``stacks``' databases, keyed (stack, item, table)."""
        out = self.call(commands.script("counts", *stacks), timeout=600)
        return count_rows(v.split("\t") for v in out.values("count"))

    def check(self, subset: str = "1/10") -> None:
        self.call(commands.script("check", subset), timeout=3600)


def explain(spec: Spec, repository: backupfiles.Repository | None, out: Output) -> str:
    """restic's failure, in words, with what to do; never a secret."""
    url = repository.display if repository else "?"
    settings = spec.host.backup
    assert settings is not None
    if out.fail is None:
        tail = redact(out.stderr.strip()[-400:], spec.secret_values())
        if "No such file" in tail and SCRIPT in tail:
            return (
                f"the box has no {SCRIPT}: run `vpsctl apply -i {spec.inventory}` "
                "first (it installs the backup script and timers)"
            )
        return f"the backup script failed on {spec.host.name}: {tail}"
    reason, detail = out.fail
    detail = redact(detail, spec.secret_values())
    password = spec.secret(settings.password_secret)
    said = {
        "repository-missing": f"there is no restic repository at {url}: "
        f"`vpsctl backup -i {spec.inventory} --init` creates one. Nothing was changed.",
        "wrong-password": f"the repository at {url} rejects the password "
        f"{settings.password_secret} of secrets.env "
        f"({fingerprint(password.reveal()) if password else 'missing'}): it is not this "
        "repository's password. Nothing was changed.",
        "unreachable": f"cannot reach the backup host of {url}: {detail}. Nothing was changed.",
        "locked": f"the repository at {url} is locked by another restic run: {detail}",
        "busy": detail,
    }
    return said.get(reason, f"{reason}: {detail}")


def compare_counts(
    recorded: dict[tuple[str, str, str], int], live: dict[tuple[str, str, str], int]
) -> list[str]:
    """Every table with FEWER rows now than the snapshot recorded (absent counts as 0):
    rows that did not come back."""
    return [
        f"{'/'.join(key)}: {recorded.get(key, 0)} rows in the snapshot, {live.get(key, 0)} now"
        for key in sorted(set(recorded) | set(live))
        if live.get(key, 0) < recorded.get(key, 0)
    ]


def grown_counts(
    recorded: dict[tuple[str, str, str], int], live: dict[tuple[str, str, str], int]
) -> list[str]:
    """Every table with MORE rows now than the snapshot: written since the app started
    (traffic, or the app's own background jobs — real Ghost records a ``milestones`` row a
    while after it boots), never a lost row; reported, not a failure."""
    return [
        f"{'/'.join(key)}: {recorded.get(key, 0)} rows in the snapshot, {live.get(key, 0)} now"
        for key in sorted(set(recorded) | set(live))
        if live.get(key, 0) > recorded.get(key, 0)
    ]


def backed_up_stacks(spec: Spec, node: str | None = None) -> list[str]:
    """The stacks with backups (on ``node`` only, of a cluster), in host.yaml's order."""
    return [
        n
        for n in spec.host.stacks
        if spec.stacks[n].backups and (node is None or spec.nodes_of(n) == [node])
    ]


def _checked_stacks(spec: Spec, stacks: list[str]) -> list[str]:
    """``--stack`` values, refused (before any connection) unless each has backups."""
    known = backed_up_stacks(spec)
    unknown = [s for s in stacks if s not in known]
    if unknown:
        raise BackupError(
            f"--stack {', '.join(unknown)}: not a stack with backups on {spec.host.name}; "
            f"stacks with backups: {', '.join(known)}"
        )
    return stacks


# ── the commands ─────────────────────────────────────────────────────────────────────────


def run_backup(spec: Spec, init: bool, stacks: list[str], out: IO[str]) -> BackupReport:
    """``vpsctl backup``: one snapshot of every stack's data (or of ``stacks``)."""
    _checked_stacks(spec, stacks)
    with Session(targets.target(spec)) as session:
        backups = Backups(spec, session)
        backups.check_installed()
        if init:
            created = backups.init_repository()
            print(
                f"repository {backups.repository and backups.repository.display}: "
                f"{'created' if created else 'exists'}",
                file=out,
            )
        print(f"backing up {', '.join(stacks) or 'every stack'} of {spec.host.name} …", file=out)
        return backups.backup("manual", stacks or None)


def run_restore(
    spec: Spec,
    snapshot: str | None,
    stacks: list[str],
    yes: bool,
    out: IO[str],
    *,
    safety: bool = True,
) -> tuple[Snapshot, audit.Report]:
    """``vpsctl restore``: put a snapshot's data back, then audit. Before asking, the data
    about to be replaced is snapshotted (``run:pre-restore``, its id printed: the way back)
    and the rows written since the chosen snapshot are counted, table by table; without
    that copy nothing is replaced unless ``safety`` is False (``--no-safety-snapshot``)."""
    chosen_stacks = _checked_stacks(spec, stacks) or backed_up_stacks(spec)
    with Session(targets.target(spec)) as session:
        backups = Backups(spec, session)
        backups.check_installed()
        chosen = backups.pick(snapshot, chosen_stacks)
        print(
            f"snapshot {chosen.id[:8]} ({chosen.kind}, {chosen.time[:19]}): restoring "
            f"{', '.join(chosen_stacks)} onto {spec.host.name}; their current data is replaced",
            file=out,
        )
        if safety:
            _safety_snapshot(spec, backups, chosen, chosen_stacks, out)
        else:
            print(
                "no safety snapshot (--no-safety-snapshot): the current data is lost for good",
                file=out,
            )
        if not yes:
            _confirm("Restore?")
        # no apply may change these stacks while their data is being replaced
        lock = session.hold_lock(LOCK, "apply or restore")
        started = time.monotonic()
        try:
            for line in backups.restore(chosen.id, "all", chosen_stacks):
                print(f"  restored {line}", file=out)
        finally:
            lock.close()
        print(f"restored in {time.monotonic() - started:.1f}s", file=out)
        said_counts(backups, chosen_stacks, out)
        print("auditing …", file=out)
        report = audit.audit(spec, session, backups.desired)
    return chosen, report


def said_counts(backups: Backups, stacks: list[str], out: IO[str]) -> bool:
    """Say how ``stacks``' live row counts compare with those the restore just read from its
    snapshot; whether none is missing."""
    recorded, live = count_rows(backups.recorded), backups.counts(stacks)
    differ = compare_counts(recorded, live)
    if differ:  # a restore that went wrong
        print("row counts differ from the snapshot (rows missing):", file=out)
        for line in differ:
            print(f"  {line}", file=out)
    else:
        print(f"row counts match the snapshot ({len(backups.recorded)} tables)", file=out)
    for line in grown_counts(recorded, live):
        print(f"  written since the restart (not a loss): {line}", file=out)
    return not differ


def _safety_snapshot(
    spec: Spec, backups: Backups, chosen: Snapshot, stacks: list[str], out: IO[str]
) -> None:
    """Snapshot the data a restore is about to replace, print its id (the way back) and the
    rows written since ``chosen`` (live counts, as that copy holds them, minus the ones
    ``chosen`` recorded). Raises, before anything is replaced, when the copy fails."""
    print(f"safety snapshot of the current data of {', '.join(stacks)} …", file=out)
    try:
        safe = backups.backup("pre-restore", stacks)
    except BackupError as exc:
        raise BackupError(
            f"the safety snapshot of the current data failed, so nothing was replaced: {exc}. "
            "If that data is beyond saving, `vpsctl restore -i "
            f"{spec.inventory} --snapshot {chosen.id[:8]} --no-safety-snapshot` replaces it "
            "without a copy"
        ) from None
    stack_args = " ".join(f"--stack {s}" for s in stacks)
    print(
        f"safety snapshot {safe.snapshot[:8]} (run:pre-restore) holds the current data: "
        f"`vpsctl restore -i {spec.inventory} --snapshot {safe.snapshot} {stack_args}` "
        "goes back to it",
        file=out,
    )
    recorded = backups.recorded_counts(chosen.id, stacks)
    print(
        f"replaced by snapshot {chosen.id[:8]}'s data: {discarded_rows(recorded, safe.counts)}",
        file=out,
    )


def _confirm(question: str) -> None:
    if not sys.stdin.isatty():
        raise VpsctlError("not a terminal to ask on; pass -y to go ahead")
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise VpsctlError("nothing changed")


@dataclass
class RebuildReport:
    """A rebuild: the snapshot, the recovery time of each phase, the audit."""

    host: str
    snapshot: Snapshot | None = None
    phases: dict[str, float] = field(default_factory=dict)
    restored: list[str] = field(default_factory=list)
    recorded: dict[tuple[str, str, str], int] = field(default_factory=dict)
    report: audit.Report | None = None
    apply_ok: bool = False
    wall: float | None = None  # seconds from start to end, once it has ended

    @property
    def total(self) -> float:
        """The rebuild's wall time: the images come while files are restored and stacks
        start, so the phases add up to more than it."""
        return self.wall if self.wall is not None else sum(self.phases.values())

    @property
    def ok(self) -> bool:
        return self.apply_ok and self.report is not None and self.report.ok

    def text(self) -> str:
        lines = [f"recovery time of {self.host}, by phase:"]
        lines += [f"  {name:<18} {secs:7.1f}s" for name, secs in self.phases.items()]
        lines.append(
            f"  {'total':<18} {self.total:7.1f}s (the images overlap the phases after them)"
        )
        lines.append(self.verdict())
        return "\n".join(lines) + "\n"

    def verdict(self) -> str:
        """The report's last line: whether the rebuilt box is green."""
        verdict = "green" if self.ok else "NOT green"
        return f"rebuild {'done' if self.ok else 'FAILED'}: audit {verdict}"

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "snapshot": self.snapshot.id if self.snapshot else None,
            "phases": {k: round(v, 2) for k, v in self.phases.items()},
            "total_seconds": round(self.total, 2),
            "ok": self.ok,
            "audit": self.report.to_json() if self.report else None,
        }


class _RebuildSteps:
    """What a rebuild adds to an apply: the snapshot's files before any stack starts, and
    each stack's databases once its services are healthy."""

    def __init__(
        self,
        spec: Spec,
        session: Remote,
        snapshot: str | None,
        rebuild: RebuildReport,
        out: IO[str],
        *,
        node: str | None = None,
    ) -> None:
        self.spec = spec
        self.session = session
        self.wanted = snapshot
        self.rebuild = rebuild
        self.out = out
        # a node of a cluster: its own stacks, from its own snapshots
        self.node = node
        self.stacks = backed_up_stacks(spec, node)
        self.recorded: list[list[str]] = []  # the snapshot's row counts, every stack
        # when each stack's databases were being restored: stacks converge at once, so
        # their restores overlap, and the phase is the time any of them ran (see covered)
        self.spans: list[tuple[float, float]] = []
        self.databases: dict[str, list[str]] = {}  # stack → its @@restored lines

    def restore_files(self, applier: Applier) -> None:
        rebuild = self.rebuild
        backups = Backups(self.spec, self.session, applier.desired, node=self.node)
        mark = time.monotonic()
        rebuild.snapshot = self.choose(backups)
        applier.say(  # in the run's lane for it: the images may be coming meanwhile
            f"restoring files of snapshot {rebuild.snapshot.id[:8]} "
            f"({rebuild.snapshot.kind}, {rebuild.snapshot.time[:19]}) before any stack "
            "starts …"
        )
        rebuild.restored += backups.restore(rebuild.snapshot.id, "files", self.stacks)
        # the snapshot's row counts of every stack (the files phase lists them all)
        self.recorded = list(backups.recorded)
        rebuild.phases["restore files"] = time.monotonic() - mark

    def choose(self, backups: Backups) -> Snapshot:
        """The snapshot whose data comes back: ``--snapshot``'s, else the newest holding the
        stacks."""
        return backups.pick(self.wanted, self.stacks)

    def restore_databases(self, applier: Applier, name: str) -> str:
        """One stack's databases, as soon as its services are healthy and before its app
        steps and probes: the app meets its own data (a Ghost or Plausible restored from the
        backup is found set up, never claimed afresh), then is healthy again. "" when done
        (or nothing to do), else what failed (the stack's gate fails)."""
        rebuild = self.rebuild
        items = self.spec.stacks[name].backups if name in self.stacks else []
        if rebuild.snapshot is None or not any(i.kind in DATABASES for i in items):
            return ""  # its files were restored before it started: nothing to do
        mark = time.monotonic()
        try:
            backups = Backups(self.spec, self.session, applier.desired, node=self.node)
            # a swarm node's apps are stopped by its manager (one box's: by the script)
            with applier.runtime.paused(name):
                self.databases[name] = backups.restore(rebuild.snapshot.id, "databases", [name])
            ok, detail = applier.wait_healthy(name)
        except (BackupError, RemoteError) as exc:
            ok, detail = False, str(exc)
        self.spans.append((mark, time.monotonic()))
        return "" if ok else f"restoring its databases: {applier.clean(detail)}"

    def account(self, applier: Applier, result: ApplyResult) -> None:
        """The apply's phases as the rebuild's (after ``connect``), and what it restored."""
        rebuild = self.rebuild
        rebuild.phases["bootstrap"] = result.phases.get("bootstrap", 0.0)
        rebuild.phases["images"] = result.phases.get("images", 0.0)
        rebuild.phases["restore files"] = rebuild.phases.pop("restore files", 0.0)
        # the databases were restored inside the stacks phase, each stack's once it was
        # healthy, while other stacks started: the phase is the time any restore ran
        databases = covered(self.spans)
        rebuild.phases["stacks up"] = result.phases.get("stacks", 0.0) - databases
        rebuild.phases["restore databases"] = databases
        rebuild.restored += [
            line for n in applier.desired.stacks for line in self.databases.get(n, [])
        ]

    def release(self, applier: Applier) -> None:
        """Remove the snapshot's copy on the box that the files phase extracted and every
        stack's databases phase then read (one ``restic restore`` per rebuild, not one per
        database stack). Best effort: the next restore removes a copy left behind."""
        if self.rebuild.snapshot is None:
            return
        try:
            backups = Backups(self.spec, self.session, applier.desired)
            backups.call(commands.release(self.rebuild.snapshot.id), timeout=600)
        except (BackupError, RemoteError) as exc:
            print(
                f"warning: the snapshot's extracted copy stays on the box until the next "
                f"restore: {applier.clean(str(exc))}",
                file=self.out,
            )


def run_rebuild(
    spec: Spec,
    snapshot: str | None,
    out: IO[str],
    force: bool = False,
    *,
    backup_timers: bool = True,
) -> RebuildReport:
    """``vpsctl rebuild``: a fresh box serving the latest backup, phase by phase, timed.

    ``backup_timers=False`` (a drill) masks the box's backup timers instead of enabling
    them, and the audit checks that they are masked."""
    rebuild = RebuildReport(spec.host.name)
    started = time.monotonic()
    with Session(targets.target(spec)) as session:
        connected = time.monotonic()
        steps = _RebuildSteps(spec, session, snapshot, rebuild, out)
        applier = Applier(
            spec,
            session,
            out,
            before_stacks=steps.restore_files,
            after_healthy=steps.restore_databases,
            backup_timers=backup_timers,
        )
        running = [n for n, cs in applier.facts.projects().items() if cs]
        if running and not force:
            raise BackupError(
                f"{spec.host.name} already runs {', '.join(sorted(running))}: rebuild is for "
                f"a fresh box (use `vpsctl restore -i {spec.inventory}` on a live one, or "
                "--force)"
            )
        try:
            result = applier.apply()
        finally:
            steps.release(applier)
        rebuild.phases["connect"] = connected - started
        steps.account(applier, result)
        print(views.apply_text(result), file=out, end="")
        rebuild.apply_ok = result.ok
        if rebuild.snapshot is None:
            raise BackupError("the rebuild stopped before restoring anything")
        rebuild.recorded = count_rows(steps.recorded)
        mark = time.monotonic()
        rebuild.report = audit.audit(spec, session, applier.desired)
        if not backup_timers:
            rebuild.report.checks = [masked_timer(c) for c in rebuild.report.checks]
        rebuild.phases["audit"] = time.monotonic() - mark
        rebuild.wall = time.monotonic() - started
    print(redact(views.audit_text(rebuild.report), spec.secret_values()), file=out, end="")
    return rebuild


def covered(spans: list[tuple[float, float]]) -> float:
    """How long at least one of ``spans`` (start, end) lasted: overlapping ones count once."""
    total, reached = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reached:
            total += end - max(start, reached)
            reached = end
    return total


# backup kinds restored into a running database (the rest are files, restored before start)
DATABASES = frozenset({"postgres", "mysql", "clickhouse"})


def masked_timer(check: audit.Check) -> audit.Check:
    """On a box that must never back up (a drill's), a backup timer passes only masked."""
    if check.group != "host" or not check.name.startswith("timer "):
        return check
    state = check.value.split()  # `systemctl is-enabled` and `is-active`, as the facts read them
    masked_ok = state[:1] == ["masked"] and "active" not in state[1:]
    return replace(
        check,
        status=audit.OK if masked_ok else audit.FAIL,
        threshold="masked: a drill box never backs up into the real repository",
    )


# ── drill ────────────────────────────────────────────────────────────────────────────────


@dataclass
class DrillReport:
    """A rehearsed rebuild: its recovery times, and the row counts compared."""

    rebuild: RebuildReport
    boxes: list[str]  # the throwaway boxes: one, or one per node of a cluster
    mismatches: list[str] = field(default_factory=list)  # rows that did not come back
    grown: list[str] = field(default_factory=list)  # rows written since the apps started
    compared: int = 0
    kept: bool = False  # --keep: the boxes are left up

    @property
    def ok(self) -> bool:
        return self.rebuild.ok and not self.mismatches and self.compared > 0

    def text(self) -> str:
        lines = [self.rebuild.text().rstrip("\n")]
        lines.append(
            f"row counts: {self.compared} tables compared with the snapshot, "
            f"{len(self.mismatches)} differ"
        )
        lines += [f"  {m}" for m in self.mismatches]
        lines += [f"  written since the apps started (not a loss): {g}" for g in self.grown]
        which = f"box{'es' if len(self.boxes) > 1 else ''} {', '.join(self.boxes)}"
        fate = "kept up (--keep)" if self.kept else "torn down"
        lines.append(f"drill {'passed' if self.ok else 'FAILED'} ({which} {fate})")
        return "\n".join(lines) + "\n"


def drill_boxes(spec: Spec, box: str) -> dict[str | None, str]:
    """The throwaway boxes a drill named ``box`` brings up: one for one box (key None), or
    ``BOX-NODE`` for each node of a cluster."""
    if spec.host.nodes is None:
        return {None: box}
    # a box's name has at most 32 characters: a node whose name does not fit is numbered
    # (digits alone: a node's name starts with a letter, so no other node's box is named so)
    return {
        node: f"{box}-{node}" if len(box) + 1 + len(node) <= 32 else f"{box}-{index}"
        for index, node in enumerate(spec.host.nodes, 1)
    }


@contextmanager
def throwaway_inventory(spec: Spec, boxes: dict[str | None, str], workdir: Path) -> Iterator[Path]:
    """A copy of ``spec``'s inventory whose host (or each node of a cluster: ``boxes``, by
    :func:`drill_boxes`) is a sandbox box (same stacks, domains, secrets, placement and
    backup repository; ``tls: acme`` becomes the sandbox's ACME CA, Pebble)."""
    from ruamel.yaml import YAML  # noqa: PLC0415

    inventory = workdir / "inventory"
    inventory.mkdir(parents=True)
    yaml = YAML()
    host_file = spec.inventory / "host.yaml"
    data = yaml.load(host_file.read_text(encoding="utf-8"))
    for node, box in boxes.items():
        # a node's declared address is the real node's: the drill's boxes are reached, and
        # reach each other, at their own
        entry = data if node is None else data["nodes"][node]
        entry.pop("ssh", None)
        entry.pop("address", None)
        entry["sandbox"] = {"name": box}
    data["name"] = spec.host.name  # snapshots are found by host name
    ports = data.get("open_ports")
    if isinstance(ports, list) and 22 not in ports:
        # a real box's sshd may listen elsewhere; a sandbox box's listens on 22, which its
        # firewall must let in
        ports.append(22)
    if data.get("tls") == "acme":
        # Let's Encrypt cannot reach a box on this machine: the sandbox's own ACME CA
        # issues the drill's certificates, by the same ACME flow
        data["tls"] = "pebble"
    base = host_file.resolve().parent
    data["stacks_dir"] = str((base / spec.host.stacks_dir).resolve())
    data["standins_dir"] = str(standins_root(spec))
    repo = data.get("backup", {}).get("repository", {})
    if isinstance(repo, dict) and repo.get("key"):
        repo["key"] = str(Path(repo["key"]).expanduser().resolve())
    with (inventory / "host.yaml").open("w", encoding="utf-8") as fh:
        yaml.dump(data, fh)
    from vpsctl.spec.store import store_of  # noqa: PLC0415

    kept = store_of(spec.inventory)  # the drill opens the encrypted store as it is
    for name in (kept.path.name, "recipients"):
        if (spec.inventory / name).exists():
            (inventory / name).write_bytes((spec.inventory / name).read_bytes())
            (inventory / name).chmod(0o600)
    yield inventory


def run_drill(spec: Spec, out: IO[str], keep: bool = False) -> DrillReport:
    """``vpsctl drill``: rebuild onto throwaway sandbox boxes from the real repository (one
    box, or a cluster's every node on a box of its own, forming a swarm of their own),
    audit, compare row counts with the snapshots', tear the boxes down, report. The real
    host or cluster is not touched; the drill's boxes never back up (timers masked)."""
    import tempfile  # noqa: PLC0415
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    from vpsctl.local import sandbox  # noqa: PLC0415 - docker helpers only for the drill

    if spec.host.backup is None:
        raise BackupError(f"{spec.host_doc.file}: no `backup:` section: nothing to drill")
    boxes = drill_boxes(spec, f"drill-{uuid.uuid4().hex[:6]}")
    names = list(boxes.values())
    print(f"drill: throwaway box{'es' if len(names) > 1 else ''} {', '.join(names)} …", file=out)
    made: list[str] = []

    def up(box: str) -> None:
        made.append(box)  # torn down even if it fails half-made (down is idempotent)
        sandbox.up(box, progress=lambda m: print(f"  {box}: {m}", file=out, flush=True))

    try:
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            list(pool.map(up, names))  # every box's failure raised here, after all tried
        with (
            tempfile.TemporaryDirectory(prefix="vpsctl-drill-") as tmp,
            throwaway_inventory(spec, boxes, Path(tmp)) as inventory,
        ):
            drill_spec = load_spec(inventory)
            rebuild, live = _drill_rebuild(drill_spec, out)
            report = DrillReport(rebuild, names, kept=keep)
            report.compared = len(set(rebuild.recorded) | set(live))
            report.mismatches = compare_counts(rebuild.recorded, live)
            report.grown = grown_counts(rebuild.recorded, live)
    finally:
        if not keep:
            for box in made:
                sandbox.down(box, progress=lambda m: print(f"  {m}", file=out))
    return report


def _drill_rebuild(
    spec: Spec, out: IO[str]
) -> tuple[RebuildReport, dict[tuple[str, str, str], int]]:
    """The drill's rebuild of ``spec`` (the throwaway inventory) and the live row counts on
    its boxes afterwards. The drill's boxes must never back up into the real repository
    under the real host's name: their timers are masked before any unit is linked."""
    if spec.host.nodes is not None:
        from vpsctl.ops import cluster_recovery  # noqa: PLC0415 - it imports this module

        whole = cluster_recovery.run_cluster_rebuild(spec, [], out, backup_timers=False)
        return whole, cluster_recovery.live_counts(spec)
    rebuild = run_rebuild(spec, None, out, backup_timers=False)
    with Session(targets.target(spec)) as session:
        return rebuild, Backups(spec, session).counts(backed_up_stacks(spec))
