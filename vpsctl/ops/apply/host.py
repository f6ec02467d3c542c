"""The box's own things before any stack: the edge network, the backup files and timers,
and the images (stand-ins built and shipped, registry images pulled)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from vpsctl.core import backupfiles
from vpsctl.core.render import EDGE_NETWORK
from vpsctl.core.rotation import RESTIC_PASSWORD_FILE
from vpsctl.host.commands import compose, docker, systemd
from vpsctl.local import pebble, standins
from vpsctl.ops.apply.phase import Phase
from vpsctl.resources import standins_root

PROGRESS_EVERY = 2.0  # seconds between two lines of an image's shipping progress
PULL_TIMEOUT = 1800


class HostSetup(Phase):
    """The host's files, network and images."""

    def network(self) -> None:
        """The docker network the edge and the stacks it routes to share."""
        self.session.run(
            docker.ensure_network(EDGE_NETWORK),
            purpose=f"creating the docker network {EDGE_NETWORK}",
        )

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
        # a new restic password: the new key goes into the repository (by the script
        # uploaded first) before the box's password file is replaced
        password = [f for f in changed if f.path == RESTIC_PASSWORD_FILE]
        if password and self.applier.rotations.restic():
            changed = [f for f in changed if f.path != RESTIC_PASSWORD_FILE]
            self.session.put_files([(f.path, f.content, f.mode) for f in changed])
            self.applier.rotations.restic_rekey()
            changed += password
            self.session.put_files([(f.path, f.content, f.mode) for f in password])
        elif changed:
            self.session.put_files([(f.path, f.content, f.mode) for f in changed])
        if changed:
            self.say(f"host: {len(changed)} backup file(s) installed")
            self.record(f"backup files uploaded: {', '.join(Path(f.path).name for f in changed)}")
        if not self.desired.host_files:
            return
        timers = list(backupfiles.TIMERS)
        if not self.applier.backup_timers:
            # masked (linked to /dev/null) before any unit is linked: no timer of this box
            # can ever be started, by this run or a later one
            self.session.run(systemd.mask(timers), purpose="masking the backup timers")
            self.say(f"host: timers masked (this box never backs up): {' '.join(timers)}")
            self.record(f"timers masked: {' '.join(timers)}")
            return
        units = [f"{backupfiles.SYSTEMD_DIR}/{u}" for u in backupfiles.UNITS]
        if any(f.path in units for f in changed) or self.plan.host_actions:
            self.session.run(
                systemd.link_and_enable(units, timers), purpose="enabling the backup timers"
            )
            self.say(f"host: timers enabled: {', '.join(timers)}")
            self.record(f"timers enabled: {', '.join(timers)}")

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
                    compose.pull(change.ref), PULL_TIMEOUT, purpose=f"docker pull {change.ref}"
                )
                self.record(f"image pulled: {change.ref}")

    def progress(self, ref: str) -> Callable[[int, int], None]:
        """Print the bytes sent while shipping an image, every two seconds."""
        last = [0.0]

        def report(sent: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] > PROGRESS_EVERY or sent >= total:
                last[0] = now
                self.say(f"  ship {ref}: {sent / 1e6:.1f} MB sent (at most {total / 1e6:.0f} MB)")

        return report
