"""The probes of a gate: each stack's HTTP checks, through Caddy, retried until a deadline."""

from __future__ import annotations

import time

from vpsctl.host import probes
from vpsctl.host.remote import RemoteError
from vpsctl.ops.apply.phase import Phase

PROBE_DEADLINE = 90.0
PROBE_RETRY = 2.0  # seconds between two runs of failing probes


class Prober(Phase):
    """Runs the probes of some stacks until they pass or the run's ``probe_deadline``."""

    def probe(self, stacks: list[str] | None) -> str:
        """Run the probes of ``stacks`` (all when None) through Caddy until they pass or the
        deadline; return a description of the failures, or "" when all pass."""
        found = probes.targets_for(self.spec, stacks)
        if not found:
            return ""
        verify = probes.trust_for(self.spec)  # tls: pebble: Pebble's roots, read once
        deadline_seconds = self.applier.probe_deadline
        started = time.monotonic()
        deadline = started + deadline_seconds
        told = 0.0  # the first retry is said after a few seconds: most probes pass at once
        while True:
            try:
                # judged by probes.parse: an answer missing from its output is a failed probe
                result = self.applier.edge_session.run(
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
            if elapsed - told >= self.applier.health_every:
                told = elapsed
                waiting = ", ".join(f"{r.target.label} {r.detail}" for r in failed)
                self.say(f"  probes: waiting {elapsed:.0f}s of {deadline_seconds:.0f}s: {waiting}")
            time.sleep(PROBE_RETRY)  # certificates and upstreams settle after a start
        for r in results:
            self.say(
                f"  probe {r.target.label} {r.target.url}: {'ok' if r.ok else 'FAIL'} ({r.detail})"
            )
        return self.clean("; ".join(f"{r.target.label} {r.target.url}: {r.detail}" for r in failed))
