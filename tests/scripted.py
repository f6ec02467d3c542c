"""A scripted session: the :class:`vpsctl.host.remote.Remote` interface with no box behind it.

It records every call and answers each command from a script of rules (a regular
expression searched in the command → a :class:`Result`), so that apply, backup and restore
can be driven through their failure paths in unit tests: a compose up that fails, a copy
that cannot be made, a restore that breaks half-way.

::

    session = ScriptedSession(factsim.converged(desired))   # answers the facts script
    session.fail(r"docker compose -p documint up", "dependency failed to start", times=1)
    session.pass_probes(spec)                               # every probe answers as expected
    applier = Applier(spec, session, io.StringIO())
    result = applier.apply()
    assert session.ran(r"cp -a -- /opt/vpsctl/previous/documint/\\. /")

How it answers, for ``run`` and ``feed``:

- the newest matching rule that still has uses left (``times``), else
- the facts script, with the :class:`~tests.factsim.SimHost`'s output (when one is given),
- the health gate's poll, with every service running and healthy (see :func:`healthy_answer`),
- else success with no output.

``forward`` is recorded as ``forward ADDRESS:PORT`` and leads to ``forward_to`` (a local
server a test runs in place of the app). ``put_files`` is matched as the text ``put_files
PATH…`` (so ``fail(r"put_files .*env")`` fails a file upload) and raises
:class:`~vpsctl.host.remote.CommandFailed` as the real one does;
``ship_images`` is matched as ``ship TAG…`` (and fails the same way); ``deploy`` (the
bootstrap) succeeds and is recorded. A failing rule
answers ``ok=False``: the session raises for it exactly as :class:`~vpsctl.host.remote.Session`
does (``CommandFailed`` unless the caller passed ``check=False``).

Secrets: rules can answer with any text, secret values included, to prove that a summary
or an error masks them (the masking under test is vpsctl's, not this module's).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.factsim import SimHost, converged
from vpsctl.core.facts import FACTS_SCRIPT
from vpsctl.host import probes
from vpsctl.host.remote import (
    Command,
    CommandFailed,
    DeployReport,
    Result,
    Target,
    purpose_of,
    shell,
)
from vpsctl.ops import apply
from vpsctl.ops.apply import HEALTH_MARK, Applier, ApplyResult, StackOutcome
from vpsctl.ops.inputs import render_spec
from vpsctl.spec.studio import Spec

Answer = Result | Callable[[str], Result]


@dataclass
class Rule:
    """Commands matching ``pattern`` (``re.search``) get ``answer``, ``times`` times (or
    always when None)."""

    pattern: re.Pattern[str]
    answer: Answer
    times: int | None = None
    used: int = 0

    def live(self) -> bool:
        """Whether the rule still answers."""
        return self.times is None or self.used < self.times


@dataclass
class Call:
    """One recorded call: its kind (run, feed, put_files, deploy, ship, lock), the command
    line (or a description), what it was for, and what it answered."""

    kind: str
    command: str
    purpose: str = ""
    ok: bool = True


class _Lock:
    def __init__(self, session: ScriptedSession) -> None:
        self.session = session

    def close(self) -> None:
        self.session.calls.append(Call("unlock", "release the lock"))


@dataclass
class ScriptedSession:
    """A stand-in for :class:`vpsctl.host.remote.Session` that runs nothing; see the module."""

    host: SimHost | None = None
    target: Target = field(
        default_factory=lambda: Target("scripted", "scripted.invalid", 22, "root", Path("/nokey"))
    )
    commands: int = 0
    calls: list[Call] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    written: dict[str, bytes] = field(default_factory=dict)  # what put_files wrote
    # where ``forward`` leads: a local server a test runs in place of the app (else a port
    # nothing listens on); every forward is recorded as a call ``forward ADDRESS:PORT``
    forward_to: tuple[str, int] = ("127.0.0.1", 9)
    # an apply converges stacks from several threads: one rule chosen at a time
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    cancelled: bool = False  # cancel() was called

    # ── the script ───────────────────────────────────────────────────────────────────────

    def answer(
        self,
        pattern: str,
        answer: Answer | None = None,
        *,
        stdout: str = "",
        stderr: str = "",
        ok: bool = True,
        times: int | None = None,
    ) -> ScriptedSession:
        """Answer commands matching ``pattern`` with ``answer`` (a Result, or a function of
        the command), or with ``stdout``/``stderr``/``ok``. Newer rules win."""
        result = answer if answer is not None else Result(ok, stdout, stderr)
        self.rules.append(Rule(re.compile(pattern), result, times))
        return self

    def fail(
        self, pattern: str, stderr: str = "failed", *, stdout: str = "", times: int | None = None
    ) -> ScriptedSession:
        """Make commands matching ``pattern`` exit non-zero with ``stderr``."""
        return self.answer(pattern, stdout=stdout, stderr=stderr, ok=False, times=times)

    def pass_probes(self, spec: Spec) -> ScriptedSession:
        """Answer every probe script as a healthy studio would (each probe's status, and a
        body holding what it checks for)."""
        return self.answer(re.escape(probes.MARK), probe_answer(spec, failing=()))

    def fail_probes(self, spec: Spec, stacks: tuple[str, ...], times: int | None = None) -> None:
        """Answer the probes of ``stacks`` with a 503 (the others pass)."""
        self.answer(re.escape(probes.MARK), probe_answer(spec, failing=stacks), times=times)

    # ── what happened ────────────────────────────────────────────────────────────────────

    def ran(self, pattern: str) -> list[str]:
        """Every command run (or fed) that matches ``pattern``, in order."""
        found = re.compile(pattern)
        return [
            c.command for c in self.calls if c.kind in ("run", "feed") and found.search(c.command)
        ]

    def in_order(self, *patterns: str) -> list[str]:
        """The commands run, fed, uploaded (``put_files …``) or shipped (``ship …``) as the
        first of ``patterns`` each matches, in the order they ran: ``in_order(A, B) == [A,
        B]`` says A ran once, then B once (a command matching none is left out)."""
        found: list[str] = []
        for call in self.calls:
            if call.kind in ("run", "feed", "put_files", "ship"):
                found += [p for p in patterns if re.search(p, call.command)][:1]
        return found

    def log(self) -> str:
        """Every call, one per line: for a failing test's message."""
        return "\n".join(
            f"{c.kind}{'' if c.ok else ' FAILED'}: {c.command[:160]}" for c in self.calls
        )

    # ── the Remote interface ─────────────────────────────────────────────────────────────

    def __enter__(self) -> ScriptedSession:
        """``with`` works as with a Session (a test may patch ``vpsctl.host.remote.Session``)."""
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def _answer(self, kind: str, text: str, purpose: str) -> Result:
        answer: Answer = Result(True, "", "")
        with self.lock:  # an apply converges stacks from several threads
            self.commands += 1
            for rule in reversed(self.rules):
                if rule.live() and rule.pattern.search(text):
                    rule.used += 1
                    answer = rule.answer
                    break
            else:
                if text == FACTS_SCRIPT and self.host is not None:
                    answer = Result(True, self.host.output(), "")
                elif text.startswith(f"echo {HEALTH_MARK};"):
                    answer = healthy_answer
        # outside the lock: an answer may wait for another thread's command
        result = answer(text) if callable(answer) else answer
        with self.lock:
            self.calls.append(Call(kind, text, purpose, result.ok))
        return result

    def run(
        self, command: Command, timeout: int = 600, *, check: bool = True, purpose: str = ""
    ) -> Result:
        """Answer ``command`` from the script; raise as Session.run does."""
        result = self._answer("run", shell(command), purpose)
        if check and not result.ok:
            raise CommandFailed(purpose or purpose_of(command), self.target.name, result)
        return result

    def feed(
        self,
        command: Command,
        data: bytes,
        timeout: int = 600,
        *,
        check: bool = True,
        purpose: str = "",
    ) -> Result:
        """Answer ``command`` from the script (``data`` is ignored); raise as Session.feed."""
        result = self._answer("feed", shell(command), purpose)
        if check and not result.ok:
            raise CommandFailed(purpose or purpose_of(command), self.target.name, result)
        return result

    def put_files(self, files: list[tuple[str, bytes, int]]) -> None:
        """Record the files (matched as ``put_files PATH…``); raise when a rule fails it."""
        if not files:
            return
        text = "put_files " + " ".join(path for path, _, _ in files)
        result = self._answer("put_files", text, f"writing {len(files)} file(s)")
        if not result.ok:
            raise CommandFailed(f"writing {len(files)} file(s)", self.target.name, result)
        self.written.update({path: content for path, content, _ in files})

    def hold_lock(self, path: str, what: str) -> Any:
        """Always granted; released by ``close()`` (recorded)."""
        self.calls.append(Call("lock", f"lock {path} for {what}"))
        return _Lock(self)

    def ship_images(
        self,
        tags: list[str],
        progress: Callable[[int, int], None] | None = None,
        shipped: set[str] | None = None,
    ) -> int:
        """Record the images (matched as ``ship TAG…``); nothing is sent. Raises when a rule
        fails it, as a transfer that breaks off does."""
        result = self._answer("ship", "ship " + " ".join(tags), f"shipping {len(tags)} image(s)")
        if not result.ok:
            raise CommandFailed(f"shipping {len(tags)} image(s)", self.target.name, result)
        return 0

    @contextlib.contextmanager
    def forward(self, address: str, port: int) -> Iterator[tuple[str, int]]:
        """Record the forward (``forward ADDRESS:PORT``) and lead it to ``forward_to``."""
        self.calls.append(Call("forward", f"forward {address}:{port}"))
        yield self.forward_to

    def cancel(self) -> None:
        """Recorded (an interrupted apply cancels its stack workers' commands)."""
        self.cancelled = True
        self.calls.append(Call("cancel", "cancel"))

    def deploy(self, func: Any, **kwargs: Any) -> DeployReport:
        """Record the deploy (the bootstrap); it changes nothing."""
        self.calls.append(Call("deploy", getattr(func, "__name__", str(func))))
        return DeployReport(())


# ── a converged host, and an apply over it ──────────────────────────────────────────────

CADDY_CONTAINER = "c4ddy"  # the id ``docker ps`` answers for the edge's running Caddy


def converged_session(spec: Spec, host: SimHost | None = None) -> ScriptedSession:
    """A session to a host that runs ``spec`` exactly as declared (or to ``host``, whose
    manifest gets ``spec``'s bootstrap settings), with every probe passing and the edge's
    Caddy running as :data:`CADDY_CONTAINER`."""
    host = host if host is not None else converged(render_spec(spec))
    assert isinstance(host.manifest, dict)
    # bootstrapped with these settings: an apply runs no bootstrap
    host.manifest["bootstrap"] = apply.settings_hash(apply.bootstrap_settings(spec))
    session = ScriptedSession(host)
    session.pass_probes(spec)
    session.answer(
        r"^docker ps -q --filter label=com.docker.compose.project=edge",
        stdout=CADDY_CONTAINER + "\n",
    )
    return session


def run_applier(spec: Spec, session: ScriptedSession, **kwargs: Any) -> tuple[ApplyResult, str]:
    """One apply of ``spec`` over ``session`` with no waits (probes are judged once, the
    health gate polls without sleeping): its result and everything it printed."""
    out = io.StringIO()
    applier = Applier(spec, session, out, **kwargs)
    applier.probe_deadline = 0
    applier.health_interval = 0
    return applier.apply(), out.getvalue()


def outcome_of(result: ApplyResult, stack: str) -> StackOutcome:
    """The one outcome of ``stack`` in ``result``."""
    [found] = [o for o in result.outcomes if o.stack == stack]
    return found


def journal_of(session: ScriptedSession) -> dict[str, object]:
    """The journal line the run appended on the host (as the shell command carried it)."""
    [command] = session.ran(r">> /opt/vpsctl/journal.log")
    match = re.search(r"printf '%s\\n' '(.*)' >>", command)
    assert match, command
    line: dict[str, object] = json.loads(match.group(1).replace("'\"'\"'", "'"))
    return line


# ── health and probe answers ───────────────────────────────────────────────────────────

_URL = re.compile(r"https://([^:/'\s]+):\d+([^'\s]*)")  # as probes.script writes it


def health_answer(command: str, states: dict[str, tuple[str, ...]] | None = None) -> Result:
    """An answer to the health gate's poll (:func:`vpsctl.ops.apply.health_command`): each
    service it asks for with its (state, health[, restarts]) from ``states``, else running
    and healthy."""
    match = re.search(r"for s in ([^;]*); do", command)
    assert match, command
    lines = [HEALTH_MARK]
    for service in match.group(1).split():
        answer = (states or {}).get(service.strip("'"), ("running", "healthy"))
        lines.append("\t".join([service.strip("'"), *answer]))
    return Result(True, "\n".join(lines) + "\n", "")


def healthy_answer(command: str) -> Result:
    """Every service the health gate polls is running and healthy."""
    return health_answer(command)


def probe_answer(spec: Spec, failing: tuple[str, ...]) -> Callable[[str], Result]:
    """A function answering a probe script: each probe of a stack in ``failing`` gets a
    503, every other one an answer that passes it."""
    targets = probes.targets_for(spec)

    def answer(script: str) -> Result:
        lines: list[str] = []
        for index, (host, path) in enumerate(_URL.findall(script)):
            target = next(t for t in targets if t.host == host and t.probe.path == path)
            if target.stack in failing:
                lines += [f"{probes.MARK} {index} 503", ""]
                continue
            body = passing_body(target)
            assert probes.judge(target, target.probe.status, body).ok, target.label
            lines += [
                f"{probes.MARK} {index} {target.probe.status}",
                base64.b64encode(body).decode(),
            ]
        return Result(True, "\n".join(lines) + "\n", "")

    return answer


def passing_body(target: probes.ProbeTarget) -> bytes:
    """A body that passes ``target``'s checks: its JSON fields, its needles, its counts."""
    probe = target.probe
    data: dict[str, Any] = {}
    for dotted in probe.json_fields:
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = "ok"
    words = list(probe.body_contains)
    if probe.min_count is not None:
        words += [probe.min_count.pattern] * probe.min_count.min
    if probe.json_fields:
        data["_text"] = " ".join(words)
        return json.dumps(data, ensure_ascii=False).encode()
    return (" ".join(words) or "ok").encode()
