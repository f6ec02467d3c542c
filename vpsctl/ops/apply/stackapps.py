"""A stack's app steps (first-launch claims, in-app settings: :mod:`vpsctl.ops.apps`), run
once its health gate passed and before its probes (so before the edge routes to it)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from vpsctl.host.remote import RemoteError
from vpsctl.ops import apps
from vpsctl.ops.apply.phase import Phase
from vpsctl.ops.apply.result import StackOutcome, StackResult

if TYPE_CHECKING:
    from vpsctl.ops.apply.applier import Applier

APP_STEPS = "app steps"  # the action of a stack whose only change is its app steps


class AppSteps(Phase):
    """The app steps the plan says to run, and the digests each one set (the manifest)."""

    def __init__(self, applier: Applier) -> None:
        super().__init__(applier)
        # app steps done in this run: stack → step → the digests it set (for the manifest)
        self.done: dict[str, dict[str, dict[str, str]]] = {}

    def pending(self, name: str) -> list[str]:
        """The app steps of ``name`` the plan says to run."""
        return [a.step for a in self.plan.apps if a.stack == name and a.action == "run"]

    def run(self, name: str) -> str:
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
                # through the module: tests put a fake run_step in its place
                done = apps.run_step(step, self.spec, self.session, self.facts, self.say, differ)
            except (apps.AppError, RemoteError) as exc:
                failed = f"{step.kind.replace('_', ' ')}: {self.clean(str(exc))}"
                self.say(f"{name}: {failed}")
                return failed
            self.say(f"{name}: {self.clean(done)}")
            self.record(f"{name}: {done}")
            self.done.setdefault(name, {})[step.kind] = dict(step.parts)
        return ""

    def only(self, name: str) -> StackOutcome:
        """A stack with nothing to change but its app steps (settings the spec changed, a
        key file missing on the box): run them; a failure changes nothing else."""
        started = time.monotonic()
        failures = self.run(name)
        seconds = time.monotonic() - started
        if failures:
            self.record(f"{name}: app steps failed")
            return StackOutcome(
                name,
                APP_STEPS,
                StackResult.FAILED,
                f"{failures}; the stack itself was not changed; the next apply tries again",
                seconds,
            )
        return StackOutcome(name, APP_STEPS, StackResult.APPLIED, "", seconds)
