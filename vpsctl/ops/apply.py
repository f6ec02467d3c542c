"""apply: converge the host to the spec — only what changed, health-gated, rolled back on
failure, pruned — exactly as the plan says.

Phases, over ONE SSH session:

1. read the host's facts and compute the plan (or check a saved plan is not stale);
2. bootstrap the box when it lacks docker or its bootstrap settings changed;
3. ship local images (stand-ins) the box lacks, pull registry ones;
4. per stack, dependencies first and the edge last: keep the previous version of every file
   that changes, upload the new files in one tar stream, ``docker compose up -d --wait
   --remove-orphans`` with a scrubbed environment, then its app steps (claim a first
   launch, set in-app settings: :mod:`vpsctl.ops.apps`), before the edge routes to a new
   stack, then the stack's probes through Caddy; on failure restore the previous files and
   bring the previous version back;
5. the edge's Caddyfile is validated by Caddy itself before it is loaded with
   ``caddy reload``; an invalid one is never loaded and the old config keeps serving;
6. prune stacks and files the spec no longer declares (volumes kept unless asked);
7. write the manifest of what vpsctl manages, and append a journal line.

Every remote command is checked (``Session.run`` raises unless a call site says
``check=False`` and judges the result itself). A rollback is claimed only once checked:
the previous files are back, the previous version came up healthy and passed the probes
the new one failed. Anything less is ``rollback failed``: what failed, what the stack runs
now, and what to run; the journal records it and ``vpsctl apply`` exits 1.

A saved plan file (``apply PLANFILE``) is checked before anything connects: its shape, and
its whole body against its ``plan_hash`` (see :func:`load_plan_file`).
"""

from __future__ import annotations

import getpass
import hashlib
import importlib.util
import json
import re
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import IO, Any

from vpsctl.core import backupfiles, firewall
from vpsctl.core.facts import FACTS_SCRIPT, MANIFEST, HostFacts, parse
from vpsctl.core.layout import HOST_ROOT
from vpsctl.core.plan import (
    PLAN_FORMAT,
    Plan,
    StackChange,
    image_changes,
    make_plan,
    plan_hash,
    redact,
)
from vpsctl.core.render import (
    EDGE_NETWORK,
    Desired,
    DesiredFile,
    render,
    render_caddyfile,
    stack_dir,
)
from vpsctl.errors import VpsctlError, display_path, masked, masked_data
from vpsctl.host import probes
from vpsctl.host.remote import Command, DeployReport, Remote, RemoteError, Session, output_tail
from vpsctl.local import pebble, standins
from vpsctl.ops import apps, targets
from vpsctl.resources import shipped, standins_root
from vpsctl.spec.studio import Spec

DEPLOYS = shipped("deploys")
JOURNAL = f"{HOST_ROOT}/journal.log"
LOCK = "/run/vpsctl/apply.lock"  # held while an apply runs (see Session.hold_lock)
PREVIOUS = f"{HOST_ROOT}/previous"  # outside the stacks tree: never mistaken for a managed file
# compose runs with nothing from the login shell: a variable exported empty there (the
# outage) cannot reach a container, even through a future `${…}`.
SCRUBBED_ENV = [
    "env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"
]  # fmt: skip
WAIT_TIMEOUT = 300
# ANSI escape sequences and other control characters (newline and tab stay)
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")
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
        udp_ports=firewall.ports_for(spec).udp,
    )


def _settings_hash(settings: Any) -> str:
    return hashlib.sha256(json.dumps(asdict(settings), sort_keys=True).encode()).hexdigest()


def run_bootstrap(session: Remote, spec: Spec, out: IO[str]) -> DeployReport:
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


class StackResult(StrEnum):
    """What became of one stack in a run."""

    APPLIED = "applied"  # converged, its gate passed
    UNCHANGED = "unchanged"
    REMOVED = "removed"
    FAILED = "failed"  # refused before any change (or a removal failed): it is as it was
    ROLLED_BACK = "rolled back"  # the change failed; the previous version is back, checked
    ROLLBACK_FAILED = "rollback failed"  # ... and putting the previous version back failed too


CONVERGED = (StackResult.APPLIED, StackResult.UNCHANGED, StackResult.REMOVED)


@dataclass
class StackOutcome:
    """What happened to one stack."""

    stack: str
    action: str
    result: StackResult
    detail: str = ""
    seconds: float = 0.0


@dataclass
class ApplyResult:
    """The whole run."""

    plan: Plan
    outcomes: list[StackOutcome] = field(default_factory=list)
    # failures outside any one stack's gate: the prune, the manifest, the journal
    problems: list[str] = field(default_factory=list)
    bootstrapped: bool = False
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # phase → seconds

    @property
    def ok(self) -> bool:
        """Whether every stack converged and nothing else failed."""
        return not self.problems and all(o.result in CONVERGED for o in self.outcomes)

    @property
    def rollbacks_failed(self) -> list[StackOutcome]:
        """The stacks left in a state nobody checked: the ones to look at first."""
        return [o for o in self.outcomes if o.result == StackResult.ROLLBACK_FAILED]


# ── plan files ───────────────────────────────────────────────────────────────────────────


class PlanFileError(VpsctlError):
    """A saved plan file that cannot be trusted: unreadable, malformed, or edited."""


# The shape of a saved plan (``Plan.to_json``): key → the JSON types its value may take.
_OPTIONAL_STR = (str, type(None))
_PLAN_KEYS: dict[str, tuple[type, ...]] = {
    "format": (str,),
    "host": (str,),
    "reachable": (bool,),
    "note": (str,),
    "inputs_hash": (str,),
    "facts_hash": (str,),
    "summary": (str,),
    "changes": (bool,),
    "files": (list,),
    "stacks": (list,),
    "images": (list,),
    "host_actions": (list,),
    "plan_hash": (str,),
}
_ITEM_KEYS: dict[str, dict[str, tuple[type, ...]]] = {
    "files": {
        "path": (str,),
        "stack": (str,),
        "action": (str,),
        "reason": (str,),
        "old_sha256": _OPTIONAL_STR,
        "new_sha256": _OPTIONAL_STR,
        "mode": _OPTIONAL_STR,
        "diff": (str,),
    },
    "stacks": {
        "stack": (str,),
        "action": (str,),
        "reason": (str,),
        "services": (list,),
        "snapshot": (bool,),
    },
    "images": {"ref": (str,), "stack": (str,), "action": (str,), "reason": (str,)},
}
_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    bool: "true or false",
    list: "a list",
    dict: "a mapping",
    int: "a number",
    float: "a number",
    type(None): "null",
}


def _expect(value: object, types: tuple[type, ...], where: str, problems: list[str]) -> bool:
    # bool is an int in Python, and JSON has no other distinction to make here
    if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
        return True
    wanted = " or ".join(_TYPE_NAMES[t] for t in types)
    problems.append(f"{where}: expected {wanted}, found {_TYPE_NAMES.get(type(value), 'other')}")
    return False


def plan_file_problems(data: object) -> list[str]:
    """Every way ``data`` (a parsed plan file) differs from the shape ``vpsctl plan --out``
    writes: a missing key, a wrong type. Empty when it has that shape."""
    problems: list[str] = []
    if not _expect(data, (dict,), "the plan", problems):
        return problems
    assert isinstance(data, dict)
    for key, types in _PLAN_KEYS.items():
        if key not in data:
            problems.append(f"{key}: missing")
        elif _expect(data[key], types, key, problems) and key in _ITEM_KEYS:
            for index, item in enumerate(data[key]):
                where = f"{key}[{index}]"
                if not _expect(item, (dict,), where, problems):
                    continue
                for name, item_types in _ITEM_KEYS[key].items():
                    if name not in item:
                        problems.append(f"{where}.{name}: missing")
                    else:
                        _expect(item[name], item_types, f"{where}.{name}", problems)
    for index, value in enumerate(data.get("host_actions") or []):
        _expect(value, (str,), f"host_actions[{index}]", problems)
    for index, item in enumerate(data.get("stacks") or []):
        if isinstance(item, dict) and isinstance(item.get("services"), list):
            for n, service in enumerate(item["services"]):
                _expect(service, (str,), f"stacks[{index}].services[{n}]", problems)
    return problems


def load_plan_file(path: Path, inventory: str = "INVENTORY") -> dict[str, Any]:
    """A saved plan, checked before anything connects: readable JSON, the shape ``vpsctl
    plan --out`` writes, and its whole body bound to its ``plan_hash`` (an edit to any of
    it, a diff's text or the summary included, is refused). ``inventory`` goes into the
    command the errors suggest."""
    where = display_path(path)
    again = (
        f"nothing was changed. Run `vpsctl plan -i {inventory} --out {where}` again and review it."
    )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise PlanFileError(f"{where}: not a readable plan file ({reason})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanFileError(
            f"{where}:{exc.lineno}: not a vpsctl plan: not JSON ({exc.msg}); {again}"
        ) from None
    except RecursionError:
        raise PlanFileError(f"{where}: not a vpsctl plan: nested too deeply; {again}") from None
    if isinstance(data, dict) and "format" in data and data["format"] != PLAN_FORMAT:
        shown = data["format"] if isinstance(data["format"], str) else type(data["format"])
        raise PlanFileError(
            f"{where}: format: not a vpsctl plan (format {str(shown)[:40]!r}, expected "
            f"{PLAN_FORMAT!r}); {again}"
        )
    problems = plan_file_problems(data)
    if problems:
        lines = [f"{where}: {problem}" for problem in problems[:10]]
        if len(problems) > 10:
            lines.append(f"{where}: … and {len(problems) - 10} more")
        lines.append(f"{where}: not a plan as `vpsctl plan -i … --out` writes it; {again}")
        raise PlanFileError("\n".join(lines))
    assert isinstance(data, dict)
    if plan_hash(data) != data["plan_hash"]:
        raise PlanFileError(
            f"{where}: the plan file was edited after it was saved: its content no longer "
            f"matches its plan_hash {data['plan_hash'][:12]}, so what it shows is not what "
            f"was planned; {again}"
        )
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
            f"`vpsctl plan -i {plan.inventory or 'INVENTORY'} --out FILE` again and review it."
        )


# ── commands (as data: the orchestration below only sequences them) ───────────────────


def compose_command(name: str, *args: str) -> str:
    """``docker compose`` of stack ``name``, in its directory, with a scrubbed environment."""
    argv = [*SCRUBBED_ENV, "docker", "compose", "-p", name, *args]
    return f"cd {shlex.quote(stack_dir(name))} && {shlex.join(argv)}"


def compose_up_args() -> list[str]:
    """``up``: create and start; the health gate is then watched by :meth:`Applier.wait_healthy`
    (``--wait`` would be silent for minutes)."""
    return ["up", "-d", "--remove-orphans", "--quiet-pull"]


HEALTH_MARK = "@@health"
# A service's state as one poll reads it: container state, then docker's health status
# ("none" without a healthcheck, "missing" without a container).
_HEALTH_FORMAT = (
    "{{.State.Status}}\t{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
    "\t{{.RestartCount}}"
)
CRASH_LOOP = 3  # restarts during one gate that fail it at once (it would never come up)


def _each_container(name: str, services: list[str], body: str) -> str:
    """A loop over ``services`` of stack ``name``: ``$s`` the service, ``$id`` its container
    (``body`` runs only when it has one; else the line ``SERVICE\tmissing\tnone``)."""
    project = shlex.quote(f"label=com.docker.compose.project={name}")
    return (
        f"for s in {' '.join(shlex.quote(s) for s in services)}; do "
        f"id=$(docker ps -aq --filter {project} "
        '--filter "label=com.docker.compose.service=$s" | head -n 1); '
        f'if [ -z "$id" ]; then printf \'%s\\tmissing\\tnone\\n\' "$s"; else {body}; fi; done'
    )


def health_command(name: str, services: list[str]) -> str:
    """ONE command reading every service's state and health (``SERVICE\tSTATE\tHEALTH``)."""
    inspect = f'printf "%s\\t" "$s"; docker inspect --format {shlex.quote(_HEALTH_FORMAT)} "$id"'
    return f"echo {HEALTH_MARK}; " + _each_container(name, services, inspect)


def health_log_command(name: str, services: list[str]) -> str:
    """Docker's health log of each of ``services`` (``@@hlog SERVICE`` then its JSON)."""
    inspect = 'echo "@@hlog $s"; docker inspect --format \'{{json .State.Health}}\' "$id"'
    return _each_container(name, services, inspect)


def parse_health(output: str) -> dict[str, tuple[str, str, int]]:
    """service → (state, health, restarts) from :func:`health_command`'s output."""
    states: dict[str, tuple[str, str, int]] = {}
    for line in output.splitlines():
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) in (3, 4) and parts[0]:
            restarts = int(parts[3]) if len(parts) == 4 and parts[3].isdigit() else 0
            states[parts[0]] = (parts[1], parts[2], restarts)
    return states


_WAITING = ("starting", "restarting", "created")


def health_words(state: str, health: str, restarts: int = 0) -> str:
    """``starting``, ``healthy``, ``running`` (no healthcheck), ``exited``, ``missing``,
    ``restarting``, or a crash loop (``restarting (3 restarts)``: it fails the gate)."""
    if state == "restarting" and restarts >= CRASH_LOOP:
        return f"restarting ({restarts} restarts)"
    if state != "running":
        return state
    return "running" if health == "none" else health


def save_previous_command(previous: str, paths: list[str]) -> str:
    """Copy each of ``paths`` that exists into a fresh ``previous`` (mode, owner and parent
    directories kept); fails if any copy fails, so a rollback never trusts a partial copy."""
    directory = shlex.quote(previous)
    prepare = f"rm -rf -- {directory} && mkdir -p -- {directory}"
    if not paths:
        return prepare
    words = " ".join(shlex.quote(p) for p in paths)
    return (
        f"{prepare} && for f in {words}; do "
        f'if [ -e "$f" ]; then cp -p --parents -- "$f" {directory}/ || exit 1; fi; done'
    )


def restore_previous_command(previous: str) -> list[str]:
    """Put the saved files back where they were."""
    return ["cp", "-a", "--", f"{previous}/.", "/"]


def remove_command(paths: list[str], recursive: bool = False) -> list[str]:
    """``rm`` of ``paths`` (absent ones are fine)."""
    return ["rm", "-rf" if recursive else "-f", "--", *paths]


def caddy_container_command(name: str) -> list[str]:
    """The id of the running Caddy container of the edge stack ``name``, if any."""
    return [
        "docker", "ps", "-q",
        "--filter", f"label=com.docker.compose.project={name}",
        "--filter", "label=com.docker.compose.service=caddy",
        "--filter", "status=running",
    ]  # fmt: skip


def caddy_command(container: str, verb: str, config: str) -> list[str]:
    """``caddy validate`` or ``caddy reload`` of ``config`` inside the running Caddy."""
    return ["docker", "exec", container, "caddy", verb, "--config", config, "--adapter",
            "caddyfile"]  # fmt: skip


def stack_state_command(name: str) -> list[str]:
    """Every container of stack ``name``: service, state, image, status (tab-separated)."""
    return [
        "docker", "ps", "-a",
        "--filter", f"label=com.docker.compose.project={name}",
        "--format", '{{.Label "com.docker.compose.service"}}\t{{.State}}\t{{.Image}}\t{{.Status}}',
    ]  # fmt: skip


def counted_rows(output: str) -> dict[tuple[str, str, str], int]:
    """The row counts a ``vpsctl-backup backup`` recorded in its snapshot (its ``@@counted
    STACK ITEM TABLE ROWS`` lines, tab-separated), keyed (stack, item, table)."""
    counts: dict[tuple[str, str, str], int] = {}
    for line in output.splitlines():
        if line.startswith("@@counted "):
            row = line[len("@@counted ") :].split("\t")
            if len(row) == 4 and row[3].strip().isdigit():
                counts[(row[0], row[1], row[2])] = int(row[3])
    return counts


def discarded_rows(
    before: dict[tuple[str, str, str], int], now: dict[tuple[str, str, str], int]
) -> str:
    """What putting the ``before`` data back in place of ``now`` discards, table by table,
    in words (rows written since, rows that would come back)."""
    said: list[str] = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key, 0), now.get(key, 0)
        if new > old:
            said.append(f"{'/'.join(key)}: {new - old} row(s) written since ({old} → {new})")
        elif new < old:
            said.append(
                f"{'/'.join(key)}: {old - new} row(s) fewer now, back again ({old} → {new})"
            )
    if said:
        return "; ".join(said)
    if not now:
        return "its files as they are now (no table rows to count)"
    return (
        f"no row: every table's count matches ({len(now)} tables; a row changed in place "
        "would only be in the kept copy)"
    )


class _Steps:
    """The steps of a rollback: each one checked, its failure collected (a rollback goes
    on with what it can still do, then says everything that failed)."""

    def __init__(self, applier: Applier) -> None:
        self.applier = applier
        self.failed: list[str] = []

    def run(self, command: Command, purpose: str, timeout: int = 600) -> bool:
        """Run one step; whether it succeeded."""
        try:
            self.applier.session.run(command, timeout, purpose=purpose)
        except RemoteError as exc:
            self.failed.append(self.applier.clean(str(exc)))
            return False
        return True


# ── apply ────────────────────────────────────────────────────────────────────────────────


class Applier:
    """One apply run over one session to the host (a :class:`~vpsctl.host.remote.Session`, or
    any :class:`~vpsctl.host.remote.Remote`: tests drive it with a scripted one).

    Every remote command is checked: one expected to fail says ``check=False`` and judges
    its result; anything else that fails raises, and a stack whose change or rollback
    failed says so in its :class:`StackOutcome`.
    """

    probe_deadline = PROBE_DEADLINE  # seconds a failing probe is retried (tests: 0)
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
        self.snapshots: dict[str, str] = {}  # stack → its pre-apply snapshot
        self.counted: dict[str, dict[tuple[str, str, str], int]] = {}  # … and its row counts
        # what this run has changed on the box so far, in words: the journal lists it, a
        # failed run's too (the operator sees what is no longer as it was)
        self.changed: list[str] = []
        self.caddyfile_hook = caddyfile
        self.withheld: frozenset[str] = frozenset()  # stacks the edge does not route to
        # app steps done in this run: stack → step → the digests it set (for the manifest)
        self.apps_done: dict[str, dict[str, dict[str, str]]] = {}
        self.secrets = spec.secret_values()
        self.desired = render(spec)
        if caddyfile is not None:  # tests inject a Caddyfile Caddy rejects
            for path, f in list(self.desired.files.items()):
                if f.kind == "caddyfile":
                    self.desired.files[path] = DesiredFile(
                        f.path, caddyfile(f.content), f.mode, f.stack, f.kind
                    )
        self.facts = self.read_facts()
        self.plan = make_plan(
            spec.host.name,
            self.desired,
            self.facts,
            destroy_data=destroy_data,
            inventory=display_path(spec.inventory),
        )

    def say(self, text: str) -> None:
        print(self.clean(text), file=self.out, flush=True)

    def record(self, text: str) -> None:
        """Note one change made to the box (for the journal)."""
        self.changed.append(self.clean(text))

    def clean(self, text: str) -> str:
        """``text`` (a command's output, an error) with every secret value masked, and no
        terminal control sequence a container's log could carry to the operator's screen."""
        return _CONTROL.sub("", masked(redact(text, self.secrets)))

    def read_facts(self) -> HostFacts:
        result = self.session.run(FACTS_SCRIPT, timeout=120, purpose="reading the host")
        return parse(result.stdout)

    # ── the phases ───────────────────────────────────────────────────────────────────────

    def apply(self) -> ApplyResult:
        """Converge the host to the plan; the journal records the run, even a failed one."""
        lock = self.session.hold_lock(LOCK, "apply")
        try:
            return self._apply()
        except VpsctlError as exc:
            # stopped before any stack's gate could judge (bootstrap, images, a hook): the
            # stacks are as they were; the journal still says this run happened and failed
            self.append_journal("error: " + self.clean(str(exc))[-300:], 0.0)
            raise
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
            report = run_bootstrap(self.session, self.spec, self.out)
            result.bootstrapped = True
            if report.changed:
                self.record(f"bootstrap: {len(report.changed)} change(s)")
        self.session.run(
            f"docker network inspect {EDGE_NETWORK} >/dev/null 2>&1 || "
            f"docker network create {EDGE_NETWORK}",
            purpose=f"creating the docker network {EDGE_NETWORK}",
        )
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
        deferred: list[StackOutcome] = []
        # A stack is probed through Caddy right away only when Caddy already routes to it as
        # the spec says: the edge runs and has nothing to change in this run.
        edge_up = self.edge_running() and all(
            changes[n].action == "none" for n, s in self.desired.stacks.items() if s.role == "edge"
        )
        for name, stack in self.desired.stacks.items():
            change = changes[name]
            if change.action == "none":
                if self.pending_apps(name):
                    result.outcomes.append(self.apps_only(name))
                    continue
                result.outcomes.append(
                    StackOutcome(name, "none", StackResult.UNCHANGED, change.reason)
                )
                continue
            self.withhold_routes(result, name)  # no route to a stack whose first start failed
            probe_now = edge_up or stack.role == "edge"
            outcome = self.converge(name, change, probe_now=probe_now)
            result.outcomes.append(outcome)
            if stack.role == "edge" and outcome.result == StackResult.APPLIED:
                edge_up = True
            if outcome.result == StackResult.APPLIED and not probe_now:
                deferred.append(outcome)
        self.probe_deferred(result, deferred)
        for change in self.plan.stacks:
            if change.action == "remove":
                result.outcomes.append(self.remove(change.stack))
        self.delete_stale_files(result)
        if self.plan.changes or result.bootstrapped:
            try:
                self.write_manifest(result, settings_hash)
            except RemoteError as exc:
                result.problems.append(
                    f"the manifest could not be written ({self.clean(str(exc))}): the next "
                    "plan shows this run's changes again"
                )
        result.phases["stacks"] = time.monotonic() - mark
        result.seconds = time.monotonic() - started
        self.journal(result)
        return result

    def probe_deferred(self, result: ApplyResult, deferred: list[StackOutcome]) -> None:
        """Probe, through the edge now up, the stacks applied before it first came up (their
        previous files were kept until then, for a rollback); a new one rolled back here
        loses its routes at the edge again."""
        changes = {s.stack: s for s in self.plan.stacks}
        for outcome in deferred:
            failures = self.probe([outcome.stack])
            if failures:
                change = changes[outcome.stack]
                outcome.result, outcome.detail = self.rollback(
                    outcome.stack, change, failures, probe=True
                )
            else:
                self.discard_previous(outcome.stack)
        self.reroute_edge(result)

    def host_files(self) -> None:
        """The box's own files (the backup script, its password and key, the timers): upload
        what changed, and (re)link and enable the timers when a unit changed (or, on a drill
        box, mask them). With tls: pebble, the mock DNS first sends the names to this box."""
        pointed = pebble.point_spec(self.spec)  # every apply: the box applied is the one asking
        if pointed is not None:
            self.say(pointed)
        changed = [
            self.desired.files[f.path]
            for f in self.plan.files
            if f.stack == "" and f.action in ("create", "update")
        ]
        if changed:
            self.session.put_files([(f.path, f.content, f.mode) for f in changed])
            self.say(f"host: {len(changed)} backup file(s) installed")
            self.record(f"backup files uploaded: {', '.join(Path(f.path).name for f in changed)}")
        if not self.desired.host_files:
            return
        timers = " ".join(backupfiles.TIMERS)
        if not self.backup_timers:
            # masked (linked to /dev/null) before any unit is linked: no timer of this box
            # can ever be started, by this run or a later one
            self.session.run(
                f"systemctl mask -- {timers} >/dev/null && systemctl daemon-reload",
                purpose="masking the backup timers",
            )
            self.say(f"host: timers masked (this box never backs up): {timers}")
            self.record(f"timers masked: {timers}")
            return
        units = [f"{backupfiles.SYSTEMD_DIR}/{u}" for u in backupfiles.UNITS]
        if any(f.path in units for f in changed) or self.plan.host_actions:
            self.session.run(
                f"systemctl link {' '.join(units)} >/dev/null && systemctl daemon-reload && "
                f"systemctl enable --now {timers} 2>&1",
                purpose="enabling the backup timers",
            )
            self.say(f"host: timers enabled: {', '.join(backupfiles.TIMERS)}")
            self.record(f"timers enabled: {', '.join(backupfiles.TIMERS)}")

    def images(self) -> None:
        """Build and ship the stand-ins the box lacks (one archive: shared layers go once),
        and pull the registry images it lacks."""
        standins_dir = standins_root(self.spec)
        local = {
            i.ref: i for s in self.desired.stacks.values() for i in s.images if i.source == "local"
        }
        ship = [c.ref for c in self.plan.images if c.action == "ship"]
        for ref in ship:
            image = local[ref]
            assert image.standin is not None
            started = time.monotonic()
            line, _ = self.spec.host_doc.locate(("images", ref))
            entry = f"{self.spec.host_doc.file}:{line}: images.{ref}"  # what to fix if it fails
            standins.build(standins_dir.resolve(), image.standin, dict(image.args), entry)
            self.say(f"built {ref} ({time.monotonic() - started:.1f}s)")
        if ship:
            started = time.monotonic()
            sent = self.session.ship_images(ship, self.progress(f"{len(ship)} image(s)"))
            took = time.monotonic() - started
            self.say(f"shipped {len(ship)} image(s): {sent / 1e6:.1f} MB in {took:.1f}s")
            self.record(f"images shipped: {', '.join(ship)}")
        for change in self.plan.images:
            if change.action == "pull":
                self.say(f"pull {change.ref}")
                self.session.run(
                    shlex.join([*SCRUBBED_ENV, "docker", "pull", "-q", change.ref]),
                    1800,
                    purpose=f"docker pull {change.ref}",
                )
                self.record(f"image pulled: {change.ref}")

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
        """Change one stack, gate it (compose's healthchecks, then its probes when Caddy can
        reach it now), and roll it back when the gate fails."""
        started = time.monotonic()

        def outcome(result: StackResult, detail: str = "") -> StackOutcome:
            self.record(f"{name}: {change.action} → {result}")
            return StackOutcome(name, change.action, result, detail, time.monotonic() - started)

        files = self.stack_files(name)
        self.say(f"{name}: {change.action} ({change.reason})")
        caddyfile = next((f for f in files if f.kind == "caddyfile"), None)
        others = [f for f in files if f.kind != "caddyfile"]
        # Before any change: a failure here leaves the stack exactly as it was.
        try:
            if caddyfile is not None and not self.validate_caddyfile(name, caddyfile):
                return outcome(
                    StackResult.FAILED,
                    "the new Caddyfile was rejected by Caddy; the old config keeps serving",
                )
            if self.needs_snapshot(name, change):
                ok, detail = self.pre_apply_snapshot(name)
                if not ok:
                    return outcome(
                        StackResult.FAILED,
                        "the pre-apply snapshot of its data failed, so nothing was changed: "
                        + detail,
                    )
            # the previous version of every file that changes, kept until the stack is
            # healthy (a rollback puts it back)
            self.session.run(
                save_previous_command(self.previous(name), [f.path for f in files]),
                purpose=f"saving the previous files of {name}",
            )
        except RemoteError as exc:
            leftover = self.remove_next_caddyfile(caddyfile)
            detail = f"{self.clean(str(exc))}; nothing was changed{leftover}"
            self.say(f"{name}: FAILED before any change: {detail}")
            return outcome(StackResult.FAILED, detail)
        is_edge = self.desired.stacks[name].role == "edge"
        try:
            self.session.put_files([(f.path, f.content, f.mode) for f in others])
            if others:
                self.record(f"{name}: files uploaded: {', '.join(f.path for f in others)}")
            if caddyfile is not None:
                self.place_caddyfile(caddyfile)
                self.record(f"{name}: Caddyfile replaced")
            if change.action == "reload":
                ok, output = self.reload_caddy(name)
            else:
                ok, output = self.compose_up(name)
                if ok and caddyfile is not None and is_edge:
                    ok, output = self.reload_caddy(name)  # compose may not have restarted Caddy
            failures = "" if ok else f"{change.action} failed: {self.last_lines(output)}"
        except RemoteError as exc:
            failures = self.clean(str(exc))
        if not failures and self.after_healthy is not None:
            failures = self.after_healthy(self, name)
        if not failures:
            # healthy, not yet probed: a new stack is not routed yet, so a first launch is
            # claimed before anyone else can reach it
            failures = self.run_apps(name)
        if not failures and probe_now:
            # The edge's own gate: the stacks that were serving before still serve.
            failures = self.probe(self.steady_stacks() if is_edge else [name])
        if failures:
            return outcome(*self.rollback(name, change, failures, probe=probe_now))
        if probe_now:
            self.discard_previous(name)
        seconds = time.monotonic() - started
        self.say(f"{name}: {change.action} done in {seconds:.1f}s")
        return outcome(StackResult.APPLIED)

    # ── app steps ────────────────────────────────────────────────────────────────────────

    def pending_apps(self, name: str) -> list[str]:
        """The app steps of ``name`` the plan says to run."""
        return [a.step for a in self.plan.apps if a.stack == name and a.action == "run"]

    def run_apps(self, name: str) -> str:
        """Run the app steps the plan says for ``name`` (its health gate passed, its probes
        not yet run): "" when all succeeded, else what failed."""
        pending = {a.step: a for a in self.plan.apps if a.stack == name and a.action == "run"}
        recorded = ((self.facts.manifest or {}).get("apps") or {}).get(name) or {}
        for step in self.desired.app_steps.get(name, ()):
            change = pending.get(step.kind)
            if change is None:
                continue
            before = recorded.get(step.kind) if isinstance(recorded, dict) else None
            before = before if isinstance(before, dict) else {}
            differ = tuple(p for p, digest in step.parts.items() if before.get(p) != digest)
            self.say(f"{name}: {change.label} …")
            try:
                done = apps.run_step(step, self.spec, self.session, self.facts, self.say, differ)
            except (apps.AppError, RemoteError) as exc:
                failed = f"{step.kind.replace('_', ' ')}: {self.clean(str(exc))}"
                self.say(f"{name}: {failed}")
                return failed
            self.say(f"{name}: {self.clean(done)}")
            self.record(f"{name}: {done}")
            self.apps_done.setdefault(name, {})[step.kind] = dict(step.parts)
        return ""

    def apps_only(self, name: str) -> StackOutcome:
        """A stack with nothing to change but its app steps (settings the spec changed, a
        key file missing on the box): run them; a failure changes nothing else."""
        started = time.monotonic()
        failures = self.run_apps(name)
        seconds = time.monotonic() - started
        if failures:
            self.record(f"{name}: app steps failed")
            return StackOutcome(
                name,
                "app steps",
                StackResult.FAILED,
                f"{failures}; the stack itself was not changed; the next apply tries again",
                seconds,
            )
        return StackOutcome(name, "app steps", StackResult.APPLIED, "", seconds)

    def previous(self, name: str) -> str:
        """Where the previous version of ``name``'s changed files waits during its change."""
        return f"{PREVIOUS}/{name}"

    def discard_previous(self, name: str) -> None:
        """The change held: its previous files are no longer needed (the next save starts
        afresh, so a copy left behind does no harm; it is only reported)."""
        result = self.session.run(
            remove_command([self.previous(name)], recursive=True),
            check=False,
            purpose=f"removing the previous files of {name}",
        )
        if not result.ok:
            self.say(
                f"{name}: note: {self.previous(name)} could not be removed: "
                f"{output_tail(result, 2, 200)}"
            )

    def needs_snapshot(self, name: str, change: StackChange) -> bool:
        """Whether this change takes a pre-apply snapshot: as the plan said, only when the
        image a running container of a backed-up stack runs differs from the one the spec
        wants (see :func:`vpsctl.core.plan.needs_snapshot`). Only then may the new version change
        the data, so only then does a rollback put data back."""
        return change.action == "recreate" and change.snapshot

    def pre_apply_snapshot(self, name: str) -> tuple[bool, str]:
        """Snapshot ``name``'s data before its image changes; (ok, snapshot id or why not).
        The row counts it records are kept: a rollback says what putting it back discards."""
        swapped = image_changes(self.desired.stacks[name], self.facts.projects().get(name, []))
        told = ", ".join(f"{service} {old} → {new}" for service, old, new in swapped)
        self.say(f"{name}: its image changes ({told}): snapshot of its data first")
        # judged below from its @@ lines: a failure is the stack's outcome, not a crash
        result = self.session.run(
            shlex.join([backupfiles.SCRIPT, "backup", "pre-apply", name]),
            timeout=3600,
            check=False,
            purpose=f"the pre-apply snapshot of {name}",
        )
        output = result.output
        snapshot = next(
            (line.split()[1] for line in output.splitlines() if line.startswith("@@snapshot ")),
            None,
        )
        if not result.ok or snapshot is None:
            fail = next((ln[7:] for ln in output.splitlines() if ln.startswith("@@fail ")), "")
            return False, self.clean(fail or self.last_lines(output, 4))
        self.snapshots[name] = snapshot
        self.counted[name] = counted_rows(output)
        self.record(f"{name}: pre-apply snapshot {snapshot[:8]}")
        self.say(f"{name}: pre-apply snapshot {snapshot[:8]}")
        return True, snapshot

    def steady_stacks(self) -> list[str]:
        """Stacks this run leaves as they were (their probes judge a change of the edge)."""
        return [s.stack for s in self.plan.stacks if s.action == "none"]

    def compose_up(self, name: str) -> tuple[bool, str]:
        """``compose up``, then the health gate: whether every service came up healthy, and
        what to show (compose's output, or what the gate saw and the healthchecks said)."""
        result = self.session.run(
            compose_command(name, *compose_up_args()),
            WAIT_TIMEOUT + 60,
            check=False,  # the health gate: its failure is judged by the caller
            purpose=f"compose up of {name}",
        )
        if not result.ok:
            return False, result.output
        return self.wait_healthy(name)

    def wait_healthy(self, name: str) -> tuple[bool, str]:
        """Poll every service's state (one command a poll) until all run and pass their
        healthchecks, one fails (unhealthy, exited), or ``WAIT_TIMEOUT``; say the elapsed
        time and each state every few seconds. On failure: what each service is, and the
        last output of its healthcheck (docker's health log)."""
        services = list(self.desired.stacks[name].services)
        started = time.monotonic()
        told = -self.health_every  # the first wait is said at once
        while True:
            polled = self.session.run(
                health_command(name, services),
                60,
                check=False,  # judged below: an unreadable state is a failed gate
                purpose=f"the health of {name}",
            )
            states = parse_health(polled.stdout) if polled.ok else {}
            words = {s: health_words(*states.get(s, ("unknown", "none", 0))) for s in services}
            elapsed = time.monotonic() - started
            if all(w in ("healthy", "running") for w in words.values()):
                if elapsed >= 1:
                    self.say(f"{name}: healthy after {elapsed:.0f}s")
                return True, ""
            # as compose's --wait: a container still being created or restarted may yet come
            # up; one that exited, died or turned unhealthy fails the gate now
            failed = [s for s, w in words.items() if w not in ("healthy", "running", *_WAITING)]
            failed += [] if failed or elapsed < WAIT_TIMEOUT else list(words)
            listed = ", ".join(f"{s} {w}" for s, w in words.items())
            if failed:
                if not polled.ok:
                    listed += f" (docker inspect failed: {output_tail(polled, 2, 200)})"
                return False, f"after {elapsed:.0f}s: {listed}" + self.health_log(name, failed)
            if elapsed - told >= self.health_every:
                told = elapsed
                self.say(f"{name}: waiting {elapsed:.0f}s: {listed}")
            time.sleep(self.health_interval)

    def health_log(self, name: str, services: list[str]) -> str:
        """The last answer of each of ``services``' healthchecks, in words ("" when none)."""
        result = self.session.run(
            health_log_command(name, services),
            60,
            check=False,  # shown to help: the gate has already failed
            purpose=f"the healthcheck log of {name}",
        )
        said: list[str] = []
        service = ""
        for line in result.stdout.splitlines():
            if line.startswith("@@hlog "):
                service = line[len("@@hlog ") :]
                continue
            try:
                health = json.loads(line)
            except ValueError:
                continue
            log = (health or {}).get("Log") or []
            if service and log and isinstance(log[-1], dict):
                last = log[-1]
                output = " ".join(str(last.get("Output", "")).split())[:400]
                said.append(
                    f"{service}'s healthcheck said (exit {last.get('ExitCode', '?')}): "
                    f"{output or '(no output)'}"
                )
        return "".join(f"\n{self.clean(line)}" for line in said)

    def last_lines(self, output: str, count: int = 12) -> str:
        return self.clean("\n".join(output.splitlines()[-count:]))

    def probe(self, stacks: list[str] | None) -> str:
        """Run the probes of ``stacks`` (all when None) through Caddy until they pass or the
        deadline; return a description of the failures, or "" when all pass."""
        found = probes.targets_for(self.spec, stacks)
        if not found:
            return ""
        verify = probes.trust_for(self.spec)  # tls: pebble: Pebble's roots, read once
        started = time.monotonic()
        deadline = started + self.probe_deadline
        told = 0.0  # the first retry is said after a few seconds: most probes pass at once
        while True:
            try:
                # judged by probes.parse: an answer missing from its output is a failed probe
                result = self.session.run(
                    probes.script(found, verify_tls=verify),
                    timeout=120,
                    check=False,
                    purpose="the probes",
                )
            except RemoteError as exc:
                return f"the probes could not run: {self.clean(str(exc))}"
            results = probes.parse(result.stdout, found)
            failed = [r for r in results if not r.ok]
            if not failed or time.monotonic() >= deadline:
                break
            elapsed = time.monotonic() - started
            if elapsed - told >= self.health_every:
                told = elapsed
                waiting = ", ".join(f"{r.target.label} {r.detail}" for r in failed)
                self.say(
                    f"  probes: waiting {elapsed:.0f}s of {self.probe_deadline:.0f}s: {waiting}"
                )
            time.sleep(2)  # certificates and upstreams settle after a start
        for r in results:
            self.say(
                f"  probe {r.target.label} {r.target.url}: {'ok' if r.ok else 'FAIL'} ({r.detail})"
            )
        return self.clean("; ".join(f"{r.target.label} {r.target.url}: {r.detail}" for r in failed))

    # ── rollback ─────────────────────────────────────────────────────────────────────────

    def rollback(
        self, name: str, change: StackChange, reason: str, probe: bool
    ) -> tuple[StackResult, str]:
        """Bring the previous version of ``name`` back, and check it: ROLLED_BACK only when
        every step succeeded and the previous version passed the gate the new one failed
        (compose's healthchecks, and its probes when ``probe``); else ROLLBACK_FAILED, with
        what failed, the state the stack is in, and what to run."""
        self.say(f"{name}: FAILED ({reason}); rolling back")
        self.record(f"{name}: {change.action} failed its gate; rolled back to its previous files")
        logs = self.session.run(
            compose_command(name, "logs", "--no-color", "--tail", "15"),
            60,
            check=False,  # shown to help; the rollback does not depend on it
            purpose=f"the logs of {name}",
        )
        if logs.ok and logs.output:
            self.say(
                "  last log lines:\n"
                + "\n".join("    " + line for line in logs.output.splitlines()[-15:])
            )
        files = self.stack_files(name)
        actions = {c.path: c.action for c in self.plan.files}
        created = [f.path for f in files if actions.get(f.path) == "create"]
        created += [f.path + ".next" for f in files if f.kind == "caddyfile"]
        steps = _Steps(self)
        if change.action == "start" and not self.facts.projects().get(name):
            steps.run(compose_command(name, "down", "--remove-orphans"), f"stopping new {name}")
            if created:
                steps.run(remove_command(created), f"removing the new files of {name}")
            if not steps.failed:
                self.say(f"{name}: rolled back (removed: it was new)")
                return StackResult.ROLLED_BACK, f"{reason}; rolled back: removed (it was new)"
            return self.rollback_failed(
                name, reason, steps.failed, "its new files may still be in place", None
            )
        previous = self.previous(name)
        files_back = steps.run(
            restore_previous_command(previous), f"putting the previous files of {name} back"
        )
        if files_back:
            self.discard_previous(name)
        if created and not steps.run(remove_command(created), f"removing the new files of {name}"):
            files_back = False
        snapshot = self.snapshots.get(name)
        data = "" if snapshot is None else "; " + self.restore_snapshot(name, snapshot, steps)
        if not files_back:
            # a mix of old and new files: starting it would run something nobody planned
            steps.failed.append("the previous version was not started: its files are not all back")
            files_state = (
                f"the previous files could not all be put back; a copy is kept in {previous}"
            )
            return self.rollback_failed(name, reason, steps.failed, files_state + data, snapshot)
        checked = self.start_previous(name, change, files, probe, steps)
        if steps.failed:
            return self.rollback_failed(
                name, reason, steps.failed, "the previous files are back in place" + data, snapshot
            )
        self.say(f"{name}: rolled back to the previous version: {checked}")
        return (
            StackResult.ROLLED_BACK,
            f"{reason}; rolled back to the previous version: {checked}{data}",
        )

    def restore_snapshot(self, name: str, snapshot: str, steps: _Steps) -> str:
        """Put back the data of the pre-apply snapshot (the new version may have migrated it,
        and the old version gets its own back), but never blindly: the failed version's data
        (the writes it accepted during its gate among it) is snapshotted first, and what
        putting the old data back discards is said, with how to get it back. Nothing is put
        back when that copy cannot be made. Returns what became of the data, in words."""
        inventory = display_path(self.spec.inventory)
        kept = self.session.run(
            shlex.join([backupfiles.SCRIPT, "backup", "pre-rollback", name]),
            3600,
            check=False,  # judged here: its @@ lines say what it kept, or why it could not
            purpose=f"the pre-rollback snapshot of {name}",
        )
        copy = next(
            (ln.split()[1] for ln in kept.output.splitlines() if ln.startswith("@@snapshot ")),
            None,
        )
        if not kept.ok or copy is None:
            fail = next((ln[7:] for ln in kept.output.splitlines() if ln.startswith("@@fail ")), "")
            steps.failed.append(
                f"its data was NOT put back from the pre-apply snapshot {snapshot[:8]}: a copy "
                f"of the data the failed version holds could not be made first "
                f"({self.clean(fail) or output_tail(kept, 4, 300)}), and putting the old data "
                "back without it would lose every write since"
            )
            return "its data is as the failed version left it"
        self.record(f"{name}: pre-rollback snapshot {copy[:8]} (the failed version's data)")
        discarded = discarded_rows(self.counted.get(name, {}), counted_rows(kept.output))
        back = f"`vpsctl restore -i {inventory} --snapshot {copy} --stack {name}`"
        told = (
            f"the failed version's data is kept as snapshot {copy[:8]} ({back} gets it back); "
            f"putting the pre-apply data back discards {discarded}"
        )
        self.say(f"{name}: {told}")
        restored = self.session.run(
            shlex.join([backupfiles.SCRIPT, "restore", snapshot, "all", name]),
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
        fail = next((ln[7:] for ln in restored.output.splitlines() if ln.startswith("@@fail ")), "")
        steps.failed.append(
            f"restoring its data from the pre-apply snapshot {snapshot[:8]} failed "
            f"({self.clean(fail) or output_tail(restored, 4, 300)})"
        )
        return f"the failed version's data is kept as snapshot {copy[:8]} ({back} gets it back)"

    def start_previous(
        self, name: str, change: StackChange, files: list[DesiredFile], probe: bool, steps: _Steps
    ) -> str:
        """Start the previous version (its files are back) and gate it as the new one was;
        failures go to ``steps``; returns what was checked, in words."""
        is_edge = self.desired.stacks[name].role == "edge"
        if change.action == "reload":
            started, output = self.reload_caddy(name)
            verb = "caddy reload"
        else:
            started, output = self.compose_up(name)
            verb = "compose up"
            if started and is_edge and any(f.kind == "caddyfile" for f in files):
                started, output = self.reload_caddy(name)
                verb = "caddy reload"
        if not started:
            steps.failed.append(
                f"the previous version did not start ({verb}: {self.last_lines(output, 6)})"
            )
            return ""
        checked = "it is up and healthy"
        if not probe:
            return checked + " (its probes run once the edge is up)"
        gate = self.steady_stacks() if is_edge else [name]
        if not probes.targets_for(self.spec, gate):
            return checked + " (it has no probes)"
        failures = self.probe(gate)
        if failures:
            steps.failed.append(f"the previous version is up but fails its probes ({failures})")
        return checked + " and its probes pass"

    def rollback_failed(
        self,
        name: str,
        reason: str,
        failed: list[str],
        files_state: str,
        snapshot: str | bool | None,
    ) -> tuple[StackResult, str]:
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
        """What the box runs of stack ``name`` now, in words (asked, not assumed)."""
        result = self.session.run(
            stack_state_command(name),
            60,
            check=False,  # its failure is itself the answer: the state is unknown
            purpose=f"the containers of {name}",
        )
        if not result.ok:
            return f"its state is unknown (docker ps failed: {output_tail(result, 2, 200)})"
        rows = [line.split("\t") for line in result.stdout.splitlines() if line.strip()]
        if not rows:
            return "the stack is DOWN (no containers)"
        rows = [row + [""] * (4 - len(row)) for row in rows]
        listed = ", ".join(
            f"{service}: {status or state}" + (f", image {image}" if image else "")
            for service, state, image, status, *_ in rows
        )
        running = sum(row[1] == "running" for row in rows)
        # which version runs, told by its images (when the change swapped them)
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

    # ── the edge ─────────────────────────────────────────────────────────────────────────

    def caddy_container(self, name: str) -> str | None:
        result = self.session.run(
            caddy_container_command(name), purpose=f"finding the running Caddy of {name}"
        )
        lines = result.stdout.split()
        return lines[0] if lines else None

    def caddy_image(self, name: str) -> str:
        for image in self.desired.stacks[name].images:
            return image.ref
        raise VpsctlError(f"stack {name} has no image")

    def validate_caddyfile(self, name: str, f: DesiredFile) -> bool:
        """Upload the Caddyfile as ``Caddyfile.next`` and let Caddy judge it: the running one
        when there is one, else a one-off container of the same image."""
        nxt = f.path + ".next"
        # the files this Caddyfile loads (tls: pebble's CA root, named by its hash) first:
        # Caddy reads them while it validates
        assets = [a for a in self.desired.files.values() if a.kind == "caddy-asset"]
        self.session.put_files(
            [(nxt, f.content, f.mode)] + [(a.path, a.content, a.mode) for a in assets]
        )
        inside = f"/etc/caddy/{Path(nxt).name}"
        container = self.caddy_container(name)
        if container is not None:
            command = caddy_command(container, "validate", inside)
        else:
            command = [
                "docker", "run", "--rm", "--network", "none",
                "-v", f"{Path(f.path).parent}:/etc/caddy:ro",
                "--entrypoint", "caddy", self.caddy_image(name),
                "validate", "--config", inside, "--adapter", "caddyfile",
            ]  # fmt: skip
        # Caddy's verdict: a rejection is this stack's outcome, not an error
        result = self.session.run(
            command, timeout=120, check=False, purpose="caddy validate of the new Caddyfile"
        )
        if not result.ok:
            self.say(
                f"{name}: Caddy rejected the new Caddyfile; not loaded:\n"
                + "\n".join("    " + line for line in result.output.splitlines()[-8:])
                + self.remove_next_caddyfile(f)
            )
        return result.ok

    def remove_next_caddyfile(self, f: DesiredFile | None) -> str:
        """Remove an uploaded ``Caddyfile.next``; "" or a note saying it is left behind."""
        if f is None:
            return ""
        result = self.session.run(
            remove_command([f.path + ".next"]),
            check=False,  # reported, not raised: the old config serves either way
            purpose="removing Caddyfile.next",
        )
        return "" if result.ok else f" ({f.path}.next is left behind: {output_tail(result, 2)})"

    def place_caddyfile(self, f: DesiredFile) -> None:
        """Move the validated ``Caddyfile.next`` in place (raises when it cannot)."""
        self.session.run(
            ["mv", "-f", "--", f.path + ".next", f.path],
            purpose="putting the new Caddyfile in place",
        )

    def reload_caddy(self, name: str) -> tuple[bool, str]:
        """``caddy reload`` in the running Caddy (or ``compose up`` when none runs): whether
        it loaded, and its output."""
        container = self.caddy_container(name)
        if container is None:
            return self.compose_up(name)
        result = self.session.run(
            caddy_command(container, "reload", "/etc/caddy/Caddyfile"),
            check=False,  # a gate: judged by the caller
            purpose=f"caddy reload of {name}",
        )
        return result.ok, result.output

    def withhold_routes(self, result: ApplyResult, edge: str) -> bool:
        """Before the edge stack ``edge`` converges (any other stack: nothing to do): leave
        out of its Caddyfile the routes of every stack whose first start failed in this run:
        nothing of it runs, so its routes would only answer 502. The Caddyfile is rendered
        again without them, and the manifest records that one, so the next plan shows those
        routes as still to add. Whether anything more was withheld."""
        if self.desired.stacks[edge].role != "edge":
            return False
        projects = self.facts.projects()
        failed = {
            o.stack
            for o in result.outcomes
            if o.result not in CONVERGED and o.action == "start" and not projects.get(o.stack)
        }
        new = frozenset(failed) - self.withheld
        if not new:
            return False
        self.withheld |= new
        content = render_caddyfile(self.spec, without=self.withheld).encode()
        if self.caddyfile_hook is not None:
            content = self.caddyfile_hook(content)
        for path, f in list(self.desired.files.items()):
            if f.kind == "caddyfile":
                self.desired.files[path] = DesiredFile(f.path, content, f.mode, f.stack, f.kind)
        names = ", ".join(sorted(new))
        self.say(
            f"edge: not routing to {names}: its first start failed, so nothing of it runs; "
            "the next apply adds its routes"
        )
        return True

    def reroute_edge(self, result: ApplyResult) -> None:
        """After the probes deferred until the edge was up: a new stack rolled back there
        had its routes loaded with the edge; load the edge's Caddyfile again without them."""
        edges = [
            o.stack
            for o in result.outcomes
            if o.result == StackResult.APPLIED and self.desired.stacks[o.stack].role == "edge"
        ]
        if not edges or not self.withhold_routes(result, edges[0]):
            return
        for name in edges:
            change = StackChange(name, "reload", "routes of a failed new stack withheld")
            result.outcomes.append(self.converge(name, change, probe_now=True))

    # ── prune ────────────────────────────────────────────────────────────────────────────

    def remove(self, name: str) -> StackOutcome:
        started = time.monotonic()
        volumes = ["-v"] if self.destroy_data else []
        directory = stack_dir(name)
        self.say(f"{name}: remove (volumes {'destroyed' if self.destroy_data else 'kept'})")

        def failed(detail: str) -> StackOutcome:
            self.say(f"{name}: remove FAILED: {detail}")
            return StackOutcome(
                name, "remove", StackResult.FAILED, detail, time.monotonic() - started
            )

        has_compose = self.session.run(
            ["test", "-f", f"{directory}/compose.yaml"],
            check=False,  # a question: is its compose file still there
            purpose=f"looking for {name}'s compose file",
        )
        if has_compose.ok:
            command = compose_command(name, "down", "--remove-orphans", *volumes)
        else:
            command = (
                f"ids=$(docker ps -aq --filter label=com.docker.compose.project={name}); "
                f'[ -z "$ids" ] || docker rm -f{" -v" if volumes else ""} $ids'
            )
        try:
            self.session.run(command, 300, purpose=f"stopping {name}")
        except RemoteError as exc:
            return failed(f"{self.clean(str(exc))}; its files are kept")
        try:
            self.session.run(
                remove_command([directory], recursive=True), purpose=f"removing {directory}"
            )
        except RemoteError as exc:
            return failed(f"its containers are gone, but {self.clean(str(exc))}")
        self.record(f"{name}: removed (volumes {'destroyed' if self.destroy_data else 'kept'})")
        return StackOutcome(name, "remove", StackResult.REMOVED, "", time.monotonic() - started)

    def delete_volumes(self, result: ApplyResult) -> None:
        """``--destroy-data``: delete the volumes the plan lists to delete (those of stacks
        removed earlier, kept then); a removed stack's own went with ``compose down -v``, so
        a volume already gone is fine. A failure is one of the run's problems."""
        names = [v.name for v in self.plan.volumes if v.action == "delete"]
        if not names:
            return
        words = " ".join(shlex.quote(n) for n in names)
        try:
            self.session.run(
                f"for v in {words}; do "
                'if docker volume inspect -- "$v" >/dev/null 2>&1; then '
                'docker volume rm -- "$v" >/dev/null || exit 1; fi; done',
                300,
                purpose="deleting the volumes of undeclared stacks",
            )
        except RemoteError as exc:
            result.problems.append(f"volumes: {self.clean(str(exc))}; the next apply tries again")
            self.say(f"volumes: delete FAILED: {self.clean(str(exc))}")
            return
        self.say(f"volumes: deleted {', '.join(names)}")

    def delete_stale_files(self, result: ApplyResult) -> None:
        """Delete the files the spec no longer declares; a failure is one of the run's
        problems (the files stay, and the next plan shows them again)."""
        self.delete_volumes(result)  # --destroy-data: the volumes of undeclared stacks
        removed_stacks = {s.stack for s in self.plan.stacks if s.action == "remove"}
        paths = [
            f.path
            for f in self.plan.files
            if f.action == "delete" and f.stack not in removed_stacks
        ]
        try:
            if any(p.startswith(backupfiles.SYSTEMD_DIR + "/") for p in paths):
                # the backup is no longer declared: stop its timers before their units go
                # (a unit systemd does not know is already stopped)
                self.session.run(
                    f"for u in {' '.join(backupfiles.UNITS)}; do "
                    'if systemctl cat -- "$u" >/dev/null 2>&1; then '
                    'systemctl disable --now -- "$u" >/dev/null || exit 1; fi; done; '
                    "systemctl daemon-reload",
                    purpose="stopping the backup timers",
                )
            if paths:
                self.session.run(remove_command(paths), purpose="deleting stale files")
                self.record(f"stale files deleted: {', '.join(paths)}")
        except RemoteError as exc:
            result.problems.append(f"prune: {self.clean(str(exc))}; the next apply tries again")
            self.say(f"prune FAILED: {self.clean(str(exc))}")

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
            if outcome.get(name) in (StackResult.APPLIED, StackResult.UNCHANGED):
                stacks[name] = {
                    "hash": stack.hash,
                    "services": stack.services,
                    "files": list(stack.files),
                    "domains": stack.domains,  # names a later rename by its domain key
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
        # what the app steps set: the record of earlier runs, and this run's
        found = old.get("apps")
        old_apps: dict[str, Any] = found if isinstance(found, dict) else {}
        apps_record: dict[str, Any] = {}
        for name in self.desired.stacks:
            record = dict(old_apps.get(name) or {})
            record.update(self.apps_done.get(name, {}))
            if record:
                apps_record[name] = record
        manifest = {
            "format": 1,
            "host": self.spec.host.name,
            "bootstrap": settings_hash,
            "files": files,
            "stacks": stacks,
            "apps": apps_record,
            "plan_hash": result.plan.to_json()["plan_hash"],
            "applied_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.session.put_files([(MANIFEST, json.dumps(manifest, indent=1).encode(), 0o600)])

    def journal(self, result: ApplyResult) -> None:
        """One line for this run in the host's journal: ok, or what failed (a failed
        rollback by name: the stack nobody should assume is fine)."""
        failed = [f"{o.stack} ({o.result})" for o in result.outcomes if o.result not in CONVERGED]
        failed += result.problems[:3]
        verdict = "ok" if result.ok else "failed: " + ", ".join(failed)
        if not self.append_journal(verdict, result.seconds):
            result.problems.append("the journal line could not be written")

    def append_journal(self, verdict: str, seconds: float) -> bool:
        """Append one JSON line to the host's journal; whether it was written (a failure is
        printed, never raised: the run's own result matters more)."""
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "user": getpass.getuser(),
            "host": self.spec.host.name,
            "plan_hash": self.plan.to_json()["plan_hash"],
            "summary": self.plan.summary(),
            "result": self.clean(verdict),
            "seconds": round(seconds, 1),
            # what this run changed, in order: a failed run's too
            "changed": self.changed[:200],
        }
        text = json.dumps(masked_data(line))  # the box's journal holds no secret either
        written = self.session.run(
            f"mkdir -p {HOST_ROOT} && printf '%s\\n' {shlex.quote(text)} >> {JOURNAL}",
            check=False,  # reported below: the run's own result is what matters
            purpose="appending to the journal",
        )
        if not written.ok:
            self.say(f"journal: FAILED to append to {JOURNAL}: {output_tail(written, 2, 200)}")
        return written.ok
