"""The record of a run: the manifest of what vpsctl manages on the box, and the journal."""

from __future__ import annotations

import getpass
import json
import time
from typing import Any

from vpsctl.core import sections
from vpsctl.core.facts import MANIFEST
from vpsctl.core.layout import HOST_ROOT
from vpsctl.core.render import stack_dir
from vpsctl.core.versions import VERSIONS, version_record
from vpsctl.errors import masked_data
from vpsctl.host.commands import files, versions
from vpsctl.host.remote import output_tail
from vpsctl.ops.apply.phase import Phase
from vpsctl.ops.apply.result import CONVERGED, ApplyResult, StackResult

JOURNAL = f"{HOST_ROOT}/journal.log"
MANIFEST_FORMAT = 1


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Record(Phase):
    """Writes the manifest and the journal line of the run."""

    def write_manifest(self, result: ApplyResult, settings_hash: str) -> None:
        """Record what is on the host now: the desired state of every stack that converged,
        and the previous record of any that was rolled back."""
        old = self.facts.manifest or {}
        found = old.get("apps")
        manifest = {
            "format": MANIFEST_FORMAT,
            "host": self.spec.host.name,
            "bootstrap": settings_hash,
            **self.stacks_and_files(result, old),
            "apps": self.apps_record(found if isinstance(found, dict) else {}),
            "plan_hash": result.plan.to_json()["plan_hash"],
            "applied_at": _now(),
        }
        self.session.put_files([(MANIFEST, json.dumps(manifest, indent=1).encode(), 0o600)])

    def stacks_and_files(self, result: ApplyResult, old: dict[str, Any]) -> dict[str, Any]:
        """The manifest's ``files`` and ``stacks``: the desired record of each stack that
        converged, the old record of the others, the host's own files."""
        old_files: dict[str, Any] = dict(old.get("files", {}))
        old_stacks: dict[str, Any] = dict(old.get("stacks", {}))
        files_record: dict[str, Any] = {}
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
                    files_record[path] = {"sha256": f.sha256, "mode": f"{f.mode:04o}"}
            elif name in old_stacks:
                stacks[name] = old_stacks[name]
                for path in old_stacks[name].get("files", []):
                    if path in old_files:
                        files_record[path] = old_files[path]
        put_back = self.applier.held_put_back  # its deploy rolled back: previous files here
        held = [p for n, s in self.desired.held.items() if n not in put_back for p in s.files]
        for path in [*self.desired.host_files, *held]:  # uploaded in begin
            f = self.desired.files[path]
            files_record[path] = {"sha256": f.sha256, "mode": f"{f.mode:04o}"}
        for name in put_back:
            directory = stack_dir(name) + "/"
            files_record |= {p: r for p, r in old_files.items() if p.startswith(directory)}
        return {"files": files_record, "stacks": stacks}

    def keep_versions(self, result: ApplyResult) -> None:
        """Keep on the box the version of every stack this run changed and that holds (its
        files and their record: what ``vpsctl history`` lists and ``vpsctl rollback`` puts
        back), in one command. A failure is noted, never raised: the run itself succeeded."""
        plan_hash = str(result.plan.to_json()["plan_hash"])
        now = _now()
        kept: list[tuple[str, str, list[str], str]] = []
        for o in result.outcomes:
            stack = self.desired.stacks.get(o.stack)
            if o.result != StackResult.APPLIED or stack is None:
                continue
            if o.action not in ("start", "recreate", "reload"):
                continue
            record = version_record(
                stack,
                [self.desired.files[p] for p in stack.files],
                time=now,
                plan_hash=plan_hash,
                result=self.applier.version_results.get(o.stack, "applied"),
                snapshot=self.applier.snapshots.taken.get(o.stack),
            )
            kept.append((o.stack, str(record["version"]), list(stack.files), json.dumps(record)))
        if not kept:
            return
        done = self.session.run(
            versions.record_all(kept),
            check=False,  # judged below: the run's own result is what matters
            purpose="keeping the applied versions",
        )
        unkept = [s.args for s in sections.named(sections.split(done.stdout), "unkept")]
        if not done.ok or unkept:
            names = ", ".join(unkept) or ", ".join(k[0] for k in kept)
            said = self.clean(" ".join(done.stderr.split()[-30:])) or "no error output"
            result.problems.append(
                f"the applied version of {names} could not be kept under {VERSIONS} for a "
                f"rollback ({said}); the stacks themselves are applied"
            )

    def apps_record(self, old_apps: dict[str, Any]) -> dict[str, Any]:
        """What the app steps set: the record of earlier runs, and this run's."""
        record: dict[str, Any] = {}
        for name in self.desired.stacks:
            entry = dict(old_apps.get(name) or {})
            entry.update(self.applier.apps.done.get(name, {}))
            if entry:
                record[name] = entry
        return record

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
            "time": _now(),
            "user": getpass.getuser(),
            "host": self.spec.host.name,
            "plan_hash": self.plan.to_json()["plan_hash"],
            "summary": self.plan.summary(),
            "result": self.clean(verdict),
            "seconds": round(seconds, 1),
            # what this run changed, in order: a failed run's too
            "changed": self.applier.changed[:200],
            # each secret rotation carried out: key, fingerprints, time, result (no value)
            # (by key: stacks converge at once, so the order they ended in is no order)
            "rotations": sorted(self.applier.rotations.entries, key=lambda e: e["key"]),
        }
        text = json.dumps(masked_data(line))  # the box's journal holds no secret either
        written = self.session.run(
            files.append_line(HOST_ROOT, JOURNAL, text),
            check=False,  # reported below: the run's own result is what matters
            purpose="appending to the journal",
        )
        if not written.ok:
            self.say(f"journal: FAILED to append to {JOURNAL}: {output_tail(written, 2, 200)}")
        return written.ok
