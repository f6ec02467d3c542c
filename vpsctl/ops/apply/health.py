"""The health gate: ``compose up``, then every service's state polled until all are
healthy, one fails, or the gate times out."""

from __future__ import annotations

import json
import time

from vpsctl.core import sections
from vpsctl.ops.apply.phase import Phase

WAIT_TIMEOUT = 300
CRASH_LOOP = 3  # restarts during one gate that fail it at once (it would never come up)
_WAITING = ("starting", "restarting", "created")
_PASSING = ("healthy", "running")


def parse_health(output: str) -> dict[str, tuple[str, str, int]]:
    """service → (state, health, restarts) from :func:`vpsctl.host.commands.docker.health`'s
    output."""
    states: dict[str, tuple[str, str, int]] = {}
    for line in output.splitlines():
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) in (3, 4) and parts[0]:
            restarts = int(parts[3]) if len(parts) == 4 and parts[3].isdigit() else 0
            states[parts[0]] = (parts[1], parts[2], restarts)
    return states


def health_words(state: str, health: str, restarts: int = 0) -> str:
    """``starting``, ``healthy``, ``running`` (no healthcheck), ``exited``, ``missing``,
    ``restarting``, or a crash loop (``restarting (3 restarts)``: it fails the gate)."""
    if state == "restarting" and restarts >= CRASH_LOOP:
        return f"restarting ({restarts} restarts)"
    if state != "running":
        return state
    return "running" if health == "none" else health


class HealthGate(Phase):
    """``compose up`` of one stack, gated by its services' healthchecks."""

    def compose_up(self, name: str) -> tuple[bool, str]:
        """``compose up``, then the health gate: whether every service came up healthy, and
        what to show (compose's output, or what the gate saw and the healthchecks said)."""
        ok, output = self.applier.runtime.up(name)
        if not ok:
            return False, output
        return self.wait_healthy(name)

    def wait_healthy(self, name: str) -> tuple[bool, str]:
        """Poll every service's state (one command a poll) until all run and pass their
        healthchecks, one fails (unhealthy, exited), or ``WAIT_TIMEOUT``; say the elapsed
        time and each state every few seconds. On failure: what each service is, and the
        last output of its healthcheck (docker's health log)."""
        return self.wait_services(name, list(self.desired.stacks[name].services))

    def wait_services(self, name: str, services: list[str]) -> tuple[bool, str]:
        """:meth:`wait_healthy` of some of the stack's services (a wave of a deploy)."""
        runtime = self.applier.runtime
        started = time.monotonic()
        told = -self.applier.health_every  # the first wait is said at once
        while True:
            states, unread = runtime.poll(name, services)
            words = {s: health_words(*states.get(s, ("unknown", "none", 0))) for s in services}
            elapsed = time.monotonic() - started
            if all(w in _PASSING for w in words.values()):
                if elapsed >= 1:
                    self.say(f"{name}: healthy after {elapsed:.0f}s")
                return True, ""
            # as compose's --wait: a container still being created or restarted may yet come
            # up; one that exited, died or turned unhealthy fails the gate now
            failed = [s for s, w in words.items() if w not in (*_PASSING, *_WAITING)]
            failed += [] if failed or elapsed < WAIT_TIMEOUT else list(words)
            listed = ", ".join(f"{s} {w}" for s, w in words.items())
            if failed:
                if unread:
                    listed += f" (docker inspect failed: {unread})"
                return False, f"after {elapsed:.0f}s: {listed}" + self.health_log(name, failed)
            if elapsed - told >= self.applier.health_every:
                told = elapsed
                self.say(f"{name}: waiting {elapsed:.0f}s: {listed}")
            time.sleep(self.applier.health_interval)

    def health_log(self, name: str, services: list[str]) -> str:
        """The last answer of each of ``services``' healthchecks, in words ("" when none)."""
        output = self.applier.runtime.read_health_log(name, services)
        said: list[str] = []
        for section in sections.named(sections.split(output), "hlog"):
            service = section.args
            try:
                health = json.loads(section.body)
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
