"""Prune: stacks, files and (with ``--destroy-data``) volumes the spec no longer declares."""

from __future__ import annotations

import time

from vpsctl.core import backupfiles
from vpsctl.core.render import stack_dir
from vpsctl.host.commands import docker, files, systemd
from vpsctl.host.remote import RemoteError
from vpsctl.ops.apply.phase import Phase
from vpsctl.ops.apply.result import CONVERGED, ApplyResult, StackOutcome, StackResult


class Prune(Phase):
    """Removes what the plan says is no longer declared."""

    def remove(self, name: str) -> StackOutcome:
        """Take stack ``name`` down (its volumes kept unless ``--destroy-data``) and remove
        its directory."""
        started = time.monotonic()
        fate = self.applier.volumes_fate(name)
        destroy = fate != "kept"
        directory = stack_dir(name)
        self.say(f"{name}: remove (volumes {fate})")

        def failed(detail: str) -> StackOutcome:
            self.say(f"{name}: remove FAILED: {detail}")
            return StackOutcome(
                name, "remove", StackResult.FAILED, detail, time.monotonic() - started
            )

        try:
            self.applier.runtime.down(name, volumes=destroy)
        except RemoteError as exc:
            return failed(f"{self.clean(str(exc))}; its files are kept")
        try:
            self.session.run(
                files.remove([directory], recursive=True), purpose=f"removing {directory}"
            )
        except RemoteError as exc:
            return failed(f"its containers are gone, but {self.clean(str(exc))}")
        self.record(f"{name}: removed (volumes {fate})")
        return StackOutcome(name, "remove", StackResult.REMOVED, "", time.monotonic() - started)

    def delete_volumes(self, result: ApplyResult) -> None:
        """``--destroy-data``: delete the volumes the plan lists to delete (those of stacks
        removed earlier, kept then); a removed stack's own went with ``compose down -v``, so
        a volume already gone is fine. A failure is one of the run's problems."""
        names = [v.name for v in self.plan.volumes if v.action == "delete"]
        if not names:
            return
        try:
            self.session.run(
                docker.remove_volumes(names),
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
        # a stack whose change did not hold runs its previous version, which may need the
        # files the new one dropped (put back by its rollback, or never touched); a stack
        # placed by labels whose deploying node put this node's copy back, likewise
        kept = {o.stack for o in result.outcomes if o.result not in CONVERGED}
        kept |= self.applier.held_put_back
        paths = [
            f.path
            for f in self.plan.files
            if f.action == "delete"
            and f.stack not in removed_stacks
            and f.stack not in kept
            and not (f.stack == "" and self.applier.keeps_stale_backup_files())
        ]
        for name in sorted({f.stack for f in self.plan.files if f.action == "delete"} & kept):
            self.say(
                f"{name}: its stale files stay (its previous version runs; the apply that "
                "lands its change removes them)"
            )
        try:
            if any(p.startswith(backupfiles.SYSTEMD_DIR + "/") for p in paths):
                # the backup is no longer declared: stop its timers before their units go
                # (a unit systemd does not know is already stopped)
                self.session.run(
                    systemd.disable_known(list(backupfiles.UNITS)),
                    purpose="stopping the backup timers",
                )
            if paths:
                self.session.run(files.remove(paths), purpose="deleting stale files")
                self.record(f"stale files deleted: {', '.join(paths)}")
        except RemoteError as exc:
            result.problems.append(f"prune: {self.clean(str(exc))}; the next apply tries again")
            self.say(f"prune FAILED: {self.clean(str(exc))}")
