"""apply: converge the host to the spec — only what changed, health-gated, rolled back on
failure, pruned — exactly as the plan says.

Phases, over ONE SSH session:

1. read the host's facts and compute the plan (or check a saved plan is not stale);
2. bootstrap the box when it lacks docker or its bootstrap settings changed;
3. ship local images (stand-ins) the box lacks, pull registry ones;
4. per stack, dependencies first and the edge last: keep the previous version of every file
   that changes, upload the new files in one tar stream, ``docker compose up -d --wait
   --remove-orphans`` with a scrubbed environment, then the stack's probes through Caddy;
   on failure restore the previous files and bring the previous version back;
5. the edge's Caddyfile is validated by Caddy itself before it is loaded with
   ``caddy reload``; an invalid one is never loaded and the old config keeps serving;
6. prune stacks and files the spec no longer declares (volumes kept unless asked);
7. write the manifest of what vpsctl manages, and append a journal line.
"""

from __future__ import annotations

import getpass
import hashlib
import importlib.util
import json
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Any

from vpsctl import backupfiles, probes, standins, targets
from vpsctl.errors import VpsctlError
from vpsctl.facts import FACTS_SCRIPT, MANIFEST, HostFacts, parse
from vpsctl.layout import HOST_ROOT
from vpsctl.plan import Plan, StackChange, make_plan, redact
from vpsctl.remote import DeployReport, RemoteError, Session
from vpsctl.render import (
    EDGE_NETWORK,
    Desired,
    DesiredFile,
    render,
    stack_dir,
)
from vpsctl.spec.studio import Spec

DEPLOYS = Path(__file__).resolve().parent.parent / "deploys"
JOURNAL = f"{HOST_ROOT}/journal.log"
LOCK = "/run/vpsctl/apply.lock"  # held while an apply runs (see Session.hold_lock)
PREVIOUS = f"{HOST_ROOT}/previous"  # outside the stacks tree: never mistaken for a managed file
# compose runs with nothing from the login shell: a variable exported empty there (the
# outage) cannot reach a container, even through a future `${…}`.
SCRUBBED = "env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root"
WAIT_TIMEOUT = 300
PROBE_DEADLINE = 90.0


class StalePlan(VpsctlError):
    """A saved plan no longer matches the inputs or the host."""


def _deploy_module(name: str) -> ModuleType:
    """Load ``deploys/<name>.py`` (a pyinfra deploy file, also runnable by the pyinfra CLI)."""
    qualified = f"vpsctl_deploys.{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, DEPLOYS / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load deploys/{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    return module


def bootstrap_settings(spec: Spec) -> Any:
    """The bootstrap deploy's settings for ``spec``'s host."""
    host = spec.host
    return _deploy_module("bootstrap").Settings(
        timezone=host.timezone,
        swap_bytes=host.swap,
        swappiness=host.swappiness,
        open_ports=tuple(host.open_ports),
    )


def _settings_hash(settings: Any) -> str:
    return hashlib.sha256(json.dumps(asdict(settings), sort_keys=True).encode()).hexdigest()


def run_bootstrap(session: Session, spec: Spec, out: IO[str]) -> DeployReport:
    """Run the bootstrap deploy; print each change."""
    started = time.monotonic()
    print(f"bootstrap {spec.host.name} …", file=out)
    report = session.deploy(
        _deploy_module("bootstrap").bootstrap, settings=bootstrap_settings(spec)
    )
    for name in report.changed:
        print(f"  changed: {name.removeprefix('vpsctl bootstrap | ')}", file=out)
    unchanged = len(report.ops) - len(report.changed)
    print(
        f"bootstrap: {len(report.changed)} changed, {unchanged} already in place "
        f"({time.monotonic() - started:.1f}s)",
        file=out,
    )
    return report


def bootstrap(spec: Spec, out: IO[str]) -> DeployReport:
    """``apply --only bootstrap``."""
    with Session(targets.target(spec)) as session:
        return run_bootstrap(session, spec, out)


# ── the result ───────────────────────────────────────────────────────────────────────────


@dataclass
class StackOutcome:
    """What happened to one stack."""

    stack: str
    action: str
    result: str  # applied | rolled back | failed | unchanged | removed
    detail: str = ""
    seconds: float = 0.0


@dataclass
class ApplyResult:
    """The whole run."""

    plan: Plan
    outcomes: list[StackOutcome] = field(default_factory=list)
    bootstrapped: bool = False
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # phase → seconds

    @property
    def ok(self) -> bool:
        """Whether every stack converged."""
        return all(o.result in ("applied", "unchanged", "removed") for o in self.outcomes)


# ── plan files ───────────────────────────────────────────────────────────────────────────


def load_plan_file(path: Path) -> dict[str, Any]:
    """A saved plan, checked for format."""
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VpsctlError(f"{path}: not a readable plan file ({exc.__class__.__name__})") from None
    if data.get("format") != "vpsctl-plan/1":
        raise VpsctlError(f"{path}: not a vpsctl plan (format {data.get('format')!r})")
    return data


def check_stale(saved: dict[str, Any], plan: Plan, desired: Desired, facts: HostFacts) -> None:
    """Refuse, naming what moved, unless the plan would be computed exactly again now."""
    moved: list[str] = []
    if saved["inputs_hash"] != desired.inputs_hash:
        wanted = {f["path"]: f["new_sha256"] for f in saved["files"] if f["new_sha256"]}
        current = {p: f.sha256 for p, f in desired.files.items()}
        for path in sorted(set(wanted) | set(current)):
            if wanted.get(path) != current.get(path):
                moved.append(f"input changed: {path} renders differently than in the plan")
        if not moved:
            moved.append("inputs changed since the plan")
    if saved["facts_hash"] != plan.facts_hash:
        for f in saved["files"]:
            have = facts.files.get(f["path"])
            now = have.sha256 if have else None
            if now != f["old_sha256"]:
                moved.append(f"host changed: {f['path']} was edited on the host since the plan")
        if not any(m.startswith("host changed") for m in moved):
            moved.append("host changed: containers, images or the manifest moved since the plan")
    if not moved and saved["plan_hash"] != plan.to_json()["plan_hash"]:
        moved.append("the plan computed now differs from the saved one")
    if moved:
        raise StalePlan(
            "stale plan: " + "; ".join(moved) + "; nothing was changed. Run "
            "`vpsctl plan --out FILE` again and review it."
        )


# ── apply ────────────────────────────────────────────────────────────────────────────────


class Applier:
    """One apply run over one SSH session."""

    def __init__(
        self,
        spec: Spec,
        session: Session,
        out: IO[str],
        *,
        destroy_data: bool = False,
        caddyfile: Callable[[bytes], bytes] | None = None,
        before_stacks: Callable[[Applier], None] | None = None,
    ) -> None:
        self.spec = spec
        self.session = session
        self.out = out
        self.destroy_data = destroy_data
        # a rebuild restores files (volumes, SQLite, Caddy's certificates) here: after the
        # bootstrap and the backup files, before any stack first starts
        self.before_stacks = before_stacks
        self.snapshots: dict[str, str] = {}  # stack → its pre-apply snapshot
        self.secrets = spec.secret_values()
        self.desired = render(spec)
        if caddyfile is not None:  # tests inject a Caddyfile Caddy rejects
            for path, f in list(self.desired.files.items()):
                if f.kind == "caddyfile":
                    self.desired.files[path] = DesiredFile(
                        f.path, caddyfile(f.content), f.mode, f.stack, f.kind
                    )
        self.facts = self.read_facts()
        self.plan = make_plan(spec.host.name, self.desired, self.facts)

    def say(self, text: str) -> None:
        print(redact(text, self.secrets), file=self.out, flush=True)

    def run(self, command: str, timeout: int = 600) -> tuple[bool, str]:
        result = self.session.run(command, timeout=timeout)
        return result.ok, (result.stdout + "\n" + result.stderr).strip()

    def read_facts(self) -> HostFacts:
        result = self.session.run(FACTS_SCRIPT, timeout=120)
        if not result.ok:
            raise RemoteError(f"reading the host failed: {result.stderr[-300:]}")
        return parse(result.stdout)

    # ── the phases ───────────────────────────────────────────────────────────────────────

    def apply(self) -> ApplyResult:
        lock = self.session.hold_lock(LOCK, "apply")
        try:
            return self._apply()
        finally:
            lock.close()

    def _apply(self) -> ApplyResult:
        started = time.monotonic()
        result = ApplyResult(self.plan)
        settings_hash = _settings_hash(bootstrap_settings(self.spec))
        manifest = self.facts.manifest or {}
        if (
            self.facts.docker is None
            or self.facts.compose is None
            or manifest.get("bootstrap") != settings_hash
        ):
            run_bootstrap(self.session, self.spec, self.out)
            result.bootstrapped = True
        ok, output = self.run(
            f"docker network inspect {EDGE_NETWORK} >/dev/null 2>&1 || "
            f"docker network create {EDGE_NETWORK}"
        )
        if not ok:
            raise RemoteError(f"cannot create the docker network {EDGE_NETWORK}: {output}")
        self.host_files()
        result.phases["bootstrap"] = time.monotonic() - started
        mark = time.monotonic()
        self.images()
        result.phases["images"] = time.monotonic() - mark
        if self.before_stacks is not None:
            mark = time.monotonic()
            self.before_stacks(self)
            result.phases["before stacks"] = time.monotonic() - mark
        mark = time.monotonic()
        changes = {s.stack: s for s in self.plan.stacks}
        deferred: list[str] = []
        # A stack is probed through Caddy right away only when Caddy already routes to it as
        # the spec says: the edge runs and has nothing to change in this run.
        edge_up = self.edge_running() and all(
            changes[n].action == "none" for n, s in self.desired.stacks.items() if s.role == "edge"
        )
        for name, stack in self.desired.stacks.items():
            change = changes[name]
            if change.action == "none":
                result.outcomes.append(StackOutcome(name, "none", "unchanged", change.reason))
                continue
            outcome = self.converge(name, change, probe_now=edge_up or stack.role == "edge")
            result.outcomes.append(outcome)
            if stack.role == "edge" and outcome.result == "applied":
                edge_up = True
            if outcome.result == "applied" and not edge_up and stack.role != "edge":
                deferred.append(name)
        # stacks applied before the edge first came up are probed now, through it
        for name in deferred:
            failures = self.probe([name])
            if failures:
                outcome = next(o for o in result.outcomes if o.stack == name)
                self.rollback(name, changes[name], failures)
                outcome.result, outcome.detail = "rolled back", failures
        for change in self.plan.stacks:
            if change.action == "remove":
                result.outcomes.append(self.remove(change.stack))
        self.delete_stale_files()
        if self.plan.changes or result.bootstrapped:
            self.write_manifest(result, settings_hash)
        result.phases["stacks"] = time.monotonic() - mark
        result.seconds = time.monotonic() - started
        self.journal(result)
        return result

    def host_files(self) -> None:
        """The box's own files (the backup script, its password and key, the timers): upload
        what changed, and (re)link and enable the timers when a unit changed."""
        changed = [
            self.desired.files[f.path]
            for f in self.plan.files
            if f.stack == "" and f.action in ("create", "update")
        ]
        if changed:
            self.session.put_files([(f.path, f.content, f.mode) for f in changed])
            self.say(f"host: {len(changed)} backup file(s) installed")
        units = [f"{backupfiles.SYSTEMD_DIR}/{u}" for u in backupfiles.UNITS]
        if any(f.path in units for f in changed) or self.plan.host_actions:
            ok, output = self.run(
                f"systemctl link {' '.join(units)} >/dev/null && systemctl daemon-reload && "
                f"systemctl enable --now {' '.join(backupfiles.TIMERS)} 2>&1"
            )
            if not ok:
                raise RemoteError(f"enabling the backup timers failed: {output[-400:]}")
            self.say(f"host: timers enabled: {', '.join(backupfiles.TIMERS)}")

    def images(self) -> None:
        """Build and ship the stand-ins the box lacks (one archive: shared layers go once),
        and pull the registry images it lacks."""
        standins_dir = (self.spec.inventory / "host.yaml").parent / self.spec.host.standins_dir
        local = {
            i.ref: i for s in self.desired.stacks.values() for i in s.images if i.source == "local"
        }
        ship = [c.ref for c in self.plan.images if c.action == "ship"]
        for ref in ship:
            image = local[ref]
            assert image.standin is not None
            started = time.monotonic()
            standins.build(standins_dir.resolve(), image.standin, dict(image.args))
            self.say(f"built {ref} ({time.monotonic() - started:.1f}s)")
        if ship:
            started = time.monotonic()
            sent = self.session.ship_images(ship, self.progress(f"{len(ship)} image(s)"))
            took = time.monotonic() - started
            self.say(f"shipped {len(ship)} image(s): {sent / 1e6:.1f} MB in {took:.1f}s")
        for change in self.plan.images:
            if change.action == "pull":
                self.say(f"pull {change.ref}")
                ok, output = self.run(f"{SCRUBBED} docker pull -q {shlex.quote(change.ref)}", 1800)
                if not ok:
                    raise RemoteError(f"docker pull {change.ref} failed: {output[-500:]}")

    def progress(self, ref: str) -> Callable[[int, int], None]:
        """Print the bytes sent while shipping an image, every two seconds."""
        last = [0.0]

        def report(sent: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] > 2 or sent >= total:
                last[0] = now
                self.say(f"  ship {ref}: {sent / 1e6:.1f} MB sent (at most {total / 1e6:.0f} MB)")

        return report

    def edge_running(self) -> bool:
        edges = [n for n, s in self.desired.stacks.items() if s.role == "edge"]
        projects = self.facts.projects()
        return any(c.state == "running" for name in edges for c in projects.get(name, []))

    def stack_files(self, name: str) -> list[DesiredFile]:
        changed = {
            f.path for f in self.plan.files if f.stack == name and f.action in ("create", "update")
        }
        return [self.desired.files[p] for p in self.desired.stacks[name].files if p in changed]

    def converge(self, name: str, change: StackChange, probe_now: bool) -> StackOutcome:
        started = time.monotonic()
        files = self.stack_files(name)
        previous = f"{PREVIOUS}/{name}"
        self.say(f"{name}: {change.action} ({change.reason})")
        caddyfile = [f for f in files if f.kind == "caddyfile"]
        others = [f for f in files if f.kind != "caddyfile"]
        if caddyfile and not self.validate_caddyfile(name, caddyfile[0]):
            return StackOutcome(
                name,
                change.action,
                "failed",
                "the new Caddyfile was rejected by Caddy; the old config keeps serving",
                time.monotonic() - started,
            )
        if self.needs_snapshot(name, change):
            ok, detail = self.pre_apply_snapshot(name)
            if not ok:
                return StackOutcome(
                    name,
                    change.action,
                    "failed",
                    f"the pre-apply snapshot of its data failed, so nothing was changed: {detail}",
                    time.monotonic() - started,
                )
        # keep the previous version of every file that changes, until the stack is healthy
        paths = " ".join(shlex.quote(f.path) for f in files)
        self.run(
            f"rm -rf {previous}; mkdir -p {previous}; for f in {paths}; do "
            f'[ -e "$f" ] && cp -p --parents "$f" {previous}/ || true; done'
        )
        self.session.put_files([(f.path, f.content, f.mode) for f in others])
        if caddyfile:
            self.place_caddyfile(name, caddyfile[0])
        is_edge = self.desired.stacks[name].role == "edge"
        if change.action == "reload":
            ok, output = self.reload_caddy(name)
        else:
            ok, output = self.compose_up(name)
            if ok and caddyfile and is_edge:
                ok, output = self.reload_caddy(name)  # compose may not have restarted Caddy
        failures = "" if ok else f"{change.action} failed: {self.last_lines(output)}"
        if ok and probe_now:
            # The edge's own gate: the stacks that were serving before still serve.
            failures = self.probe(self.steady_stacks() if is_edge else [name])
        if failures:
            self.rollback(name, change, failures)
            return StackOutcome(
                name, change.action, "rolled back", failures, time.monotonic() - started
            )
        self.run(f"rm -rf {previous}")
        seconds = time.monotonic() - started
        self.say(f"{name}: {change.action} done in {seconds:.1f}s")
        return StackOutcome(name, change.action, "applied", "", seconds)

    def needs_snapshot(self, name: str, change: StackChange) -> bool:
        """Whether this change swaps the image of a running stack whose data is backed up:
        then its data is snapshotted first, and a rollback puts that data back too."""
        if self.spec.host.backup is None or not self.spec.stacks[name].backups:
            return False
        running = self.facts.projects().get(name, [])
        if change.action != "recreate" or not any(c.state == "running" for c in running):
            return False
        if any(i.stack == name for i in self.plan.images):
            return True
        services = self.spec.stacks[name].services
        return any(c.service in services and c.image != services[c.service].image for c in running)

    def pre_apply_snapshot(self, name: str) -> tuple[bool, str]:
        self.say(f"{name}: its image changes: snapshot of its data first")
        ok, output = self.run(f"{backupfiles.SCRIPT} backup pre-apply {name}", timeout=3600)
        snapshot = next(
            (line.split()[1] for line in output.splitlines() if line.startswith("@@snapshot ")),
            None,
        )
        if not ok or snapshot is None:
            fail = next((ln[7:] for ln in output.splitlines() if ln.startswith("@@fail ")), "")
            return False, fail or self.last_lines(output, 4)
        self.snapshots[name] = snapshot
        self.say(f"{name}: pre-apply snapshot {snapshot[:8]}")
        return True, snapshot

    def steady_stacks(self) -> list[str]:
        """Stacks this run leaves as they were (their probes judge a change of the edge)."""
        return [s.stack for s in self.plan.stacks if s.action == "none"]

    def compose(self, name: str, args: str, timeout: int = WAIT_TIMEOUT + 60) -> tuple[bool, str]:
        return self.run(
            f"cd {stack_dir(name)} && {SCRUBBED} docker compose -p {name} {args}", timeout
        )

    def compose_up(self, name: str) -> tuple[bool, str]:
        return self.compose(
            name, f"up -d --wait --wait-timeout {WAIT_TIMEOUT} --remove-orphans --quiet-pull"
        )

    def last_lines(self, output: str, count: int = 12) -> str:
        return "\n".join(output.splitlines()[-count:])

    def probe(self, stacks: list[str] | None) -> str:
        """Run the probes of ``stacks`` (all when None) through Caddy until they pass or the
        deadline; return a description of the failures, or "" when all pass."""
        found = probes.targets_for(self.spec, stacks)
        if not found:
            return ""
        verify = self.spec.host.tls == "acme"
        deadline = time.monotonic() + PROBE_DEADLINE
        while True:
            _, output = self.run(probes.script(found, verify_tls=verify), timeout=120)
            results = probes.parse(output, found)
            failed = [r for r in results if not r.ok]
            if not failed or time.monotonic() > deadline:
                break
            time.sleep(2)  # certificates and upstreams settle after a start
        for r in results:
            self.say(
                f"  probe {r.target.label} {r.target.url}: {'ok' if r.ok else 'FAIL'} ({r.detail})"
            )
        return "; ".join(f"{r.target.label} {r.target.url}: {r.detail}" for r in failed)

    def rollback(self, name: str, change: StackChange, reason: str) -> None:
        previous = f"{PREVIOUS}/{name}"
        self.say(f"{name}: FAILED ({reason}); rolling back")
        ok, logs = self.compose(name, "logs --no-color --tail 15", timeout=60)
        if ok and logs:
            self.say(
                "  last log lines:\n" + "\n".join("    " + line for line in logs.splitlines()[-15:])
            )
        created = [
            f.path
            for f in self.stack_files(name)
            if next(c for c in self.plan.files if c.path == f.path).action == "create"
        ]
        if change.action == "start" and not self.facts.projects().get(name):
            self.compose(name, "down --remove-orphans", timeout=180)
            if created:
                self.run("rm -f " + " ".join(shlex.quote(p) for p in created))
            self.say(f"{name}: rolled back (removed: it was new)")
            return
        self.run(f"cp -a {previous}/. / && rm -rf {previous}")
        if created:
            self.run("rm -f " + " ".join(shlex.quote(p) for p in created))
        snapshot = self.snapshots.get(name)
        if snapshot is not None:
            # the new version may have migrated the data: the old one gets its own back
            ok, output = self.run(
                f"{backupfiles.SCRIPT} restore {snapshot} all {name}", timeout=3600
            )
            self.say(
                f"{name}: data restored from the pre-apply snapshot {snapshot[:8]}"
                if ok
                else f"{name}: restoring the pre-apply snapshot {snapshot[:8]} FAILED: "
                f"{self.last_lines(output, 4)}; `vpsctl restore --snapshot {snapshot} "
                f"--stack {name}` retries"
            )
        if change.action == "reload":
            self.reload_caddy(name)
        else:
            self.compose_up(name)
        self.say(f"{name}: rolled back to the previous version")

    # ── the edge ─────────────────────────────────────────────────────────────────────────

    def caddy_container(self, name: str) -> str | None:
        ok, output = self.run(
            f"docker ps -q --filter label=com.docker.compose.project={name} "
            "--filter label=com.docker.compose.service=caddy --filter status=running"
        )
        return output.splitlines()[0] if ok and output else None

    def caddy_image(self, name: str) -> str:
        for image in self.desired.stacks[name].images:
            return image.ref
        raise VpsctlError(f"stack {name} has no image")

    def validate_caddyfile(self, name: str, f: DesiredFile) -> bool:
        """Upload the Caddyfile as ``Caddyfile.next`` and let Caddy judge it: the running one
        when there is one, else a one-off container of the same image."""
        nxt = f.path + ".next"
        self.session.put_files([(nxt, f.content, f.mode)])
        inside = f"/etc/caddy/{Path(nxt).name}"
        container = self.caddy_container(name)
        if container is not None:
            command = (
                f"docker exec {container} caddy validate --config {inside} --adapter caddyfile"
            )
        else:
            command = (
                f"docker run --rm --network none -v {Path(f.path).parent}:/etc/caddy:ro "
                f"--entrypoint caddy {shlex.quote(self.caddy_image(name))} "
                f"validate --config {inside} --adapter caddyfile"
            )
        ok, output = self.run(command, timeout=120)
        if not ok:
            self.run(f"rm -f {shlex.quote(nxt)}")
            self.say(
                f"{name}: Caddy rejected the new Caddyfile; not loaded:\n"
                + "\n".join("    " + line for line in output.splitlines()[-8:])
            )
        return ok

    def place_caddyfile(self, name: str, f: DesiredFile) -> None:
        self.run(f"mv -f {shlex.quote(f.path + '.next')} {shlex.quote(f.path)}")

    def reload_caddy(self, name: str) -> tuple[bool, str]:
        container = self.caddy_container(name)
        if container is None:
            return self.compose_up(name)
        return self.run(
            f"docker exec {container} caddy reload --config /etc/caddy/Caddyfile "
            "--adapter caddyfile"
        )

    # ── prune ────────────────────────────────────────────────────────────────────────────

    def remove(self, name: str) -> StackOutcome:
        started = time.monotonic()
        volumes = " -v" if self.destroy_data else ""
        directory = stack_dir(name)
        self.say(f"{name}: remove (volumes {'destroyed' if self.destroy_data else 'kept'})")
        if self.run(f"test -f {directory}/compose.yaml")[0]:
            ok, output = self.compose(name, f"down --remove-orphans{volumes}", timeout=300)
        else:
            ok, output = self.run(
                f"ids=$(docker ps -aq --filter label=com.docker.compose.project={name}); "
                f'[ -z "$ids" ] || docker rm -f{volumes} $ids'
            )
        if not ok:
            return StackOutcome(name, "remove", "failed", output[-300:], time.monotonic() - started)
        self.run(f"rm -rf {shlex.quote(directory)}")
        return StackOutcome(name, "remove", "removed", "", time.monotonic() - started)

    def delete_stale_files(self) -> None:
        removed_stacks = {s.stack for s in self.plan.stacks if s.action == "remove"}
        paths = [
            f.path
            for f in self.plan.files
            if f.action == "delete" and f.stack not in removed_stacks
        ]
        if any(p.startswith(backupfiles.SYSTEMD_DIR + "/") for p in paths):
            # the backup is no longer declared: stop its timers before their units go
            units = " ".join(backupfiles.UNITS)
            self.run(f"systemctl disable --now {units} >/dev/null 2>&1; systemctl daemon-reload")
        if paths:
            self.run("rm -f " + " ".join(shlex.quote(p) for p in paths))

    # ── record ───────────────────────────────────────────────────────────────────────────

    def write_manifest(self, result: ApplyResult, settings_hash: str) -> None:
        """Record what is on the host now: the desired state of every stack that converged,
        and the previous record of any that was rolled back."""
        old = self.facts.manifest or {}
        old_files: dict[str, Any] = dict(old.get("files", {}))
        old_stacks: dict[str, Any] = dict(old.get("stacks", {}))
        files: dict[str, Any] = {}
        stacks: dict[str, Any] = {}
        outcome = {o.stack: o.result for o in result.outcomes}
        for name, stack in self.desired.stacks.items():
            if outcome.get(name) in ("applied", "unchanged"):
                stacks[name] = {
                    "hash": stack.hash,
                    "services": stack.services,
                    "files": list(stack.files),
                }
                for path in stack.files:
                    f = self.desired.files[path]
                    files[path] = {"sha256": f.sha256, "mode": f"{f.mode:04o}"}
            elif name in old_stacks:
                stacks[name] = old_stacks[name]
                for path in old_stacks[name].get("files", []):
                    if path in old_files:
                        files[path] = old_files[path]
        for path in self.desired.host_files:
            f = self.desired.files[path]
            files[path] = {"sha256": f.sha256, "mode": f"{f.mode:04o}"}
        manifest = {
            "format": 1,
            "host": self.spec.host.name,
            "bootstrap": settings_hash,
            "files": files,
            "stacks": stacks,
            "plan_hash": result.plan.to_json()["plan_hash"],
            "applied_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.session.put_files([(MANIFEST, json.dumps(manifest, indent=1).encode(), 0o600)])

    def journal(self, result: ApplyResult) -> None:
        failed = [o.stack for o in result.outcomes if o.result in ("rolled back", "failed")]
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "user": getpass.getuser(),
            "host": self.spec.host.name,
            "plan_hash": result.plan.to_json()["plan_hash"],
            "summary": result.plan.summary(),
            "result": "ok" if result.ok else "failed: " + ", ".join(failed),
            "seconds": round(result.seconds, 1),
        }
        self.run(f"mkdir -p {HOST_ROOT} && echo {shlex.quote(json.dumps(line))} >> {JOURNAL}")
