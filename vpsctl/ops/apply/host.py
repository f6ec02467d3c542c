"""The box's own things before any stack: the edge network, the backup files and timers,
and the images (stand-ins built and shipped, registry images pulled)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from vpsctl.core import backupfiles
from vpsctl.core.rotation import RESTIC_PASSWORD_FILE
from vpsctl.errors import VpsctlError
from vpsctl.host.commands import compose, systemd
from vpsctl.host.commands import files as file_commands
from vpsctl.local import docker as localdocker
from vpsctl.local import pebble, standins
from vpsctl.ops.apply.phase import Phase
from vpsctl.resources import standins_root

PROGRESS_EVERY = 2.0  # seconds between two lines of an image's shipping progress
PULL_TIMEOUT = 1800


class HostSetup(Phase):
    """The host's files, network and images."""

    def network(self) -> None:
        """The docker network the edge and the stacks it routes to share."""
        self.applier.runtime.network()

    def host_files(self) -> None:
        """The box's own files (the backup script, its password and key, the timers): upload
        what changed, and (re)link and enable the timers when a unit changed (or, on a drill
        box, mask them). With tls: pebble, the mock DNS first sends the names to this box."""
        pointed = pebble.point_spec(self.spec)  # every apply: the box applied is the one asking
        if pointed is not None:
            self.say(pointed)
        if not self.applier.defers_backup_files():
            self.backup_files()

    def held_files(self) -> None:
        """The files of the stacks another node deploys whose task Swarm may start here
        (:attr:`Desired.held`): upload what changed, the previous version of what it
        replaces kept first (a failed gate of the deploying node, later in the run, puts it
        back here too: Swarm may start the previous version here). Their images come with
        this node's."""
        for name, stack in self.desired.held.items():
            actions = {f.path: f.action for f in self.plan.files if f.stack == name}
            files = [
                self.desired.files[p]
                for p in stack.files
                if actions.get(p, "unchanged") != "unchanged"
            ]
            if not files:
                continue
            self.session.run(
                file_commands.save_previous(self.applier.previous(name), [f.path for f in files]),
                purpose=f"saving the previous files of {name}",
            )
            self.applier.held_created[name] = [
                f.path for f in files if actions.get(f.path) == "create"
            ]
            self.session.put_files([(f.path, f.content, f.mode) for f in files])
            self.say(f"{name}: {len(files)} file(s) held here (Swarm may start it here)")
            self.record(f"{name}: files held: {', '.join(f.path for f in files)}")

    def backup_files(self) -> None:
        """The backup machinery of :meth:`host_files`: upload what changed, then the timers."""
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

    def build(self, refs: list[str]) -> None:
        """Build here the stand-ins ``refs`` name (docker's cache makes an unchanged one
        quick); a failure names the host.yaml entry to fix."""
        standins_dir = standins_root(self.spec)
        stacks = [*self.desired.stacks.values(), *self.desired.held.values()]
        local = {i.ref: i for s in stacks for i in s.images if i.source == "local"}
        for ref in refs:
            image = local[ref]
            assert image.standin is not None
            started = time.monotonic()
            line, _ = self.spec.host_doc.locate(("images", ref))
            entry = f"{self.spec.host_doc.file}:{line}: images.{ref}"  # what to fix if it fails
            standins.build(
                standins_dir.resolve(), image.standin, dict(image.args), entry, image.declared
            )
            self.say(f"built {ref} ({time.monotonic() - started:.1f}s)")

    def ship(self, refs: list[str], shipped: set[str]) -> None:
        """Ship the stand-ins ``refs`` in one archive, without the layers ``shipped`` (an
        earlier archive of this run's) holds."""
        started = time.monotonic()
        sent = self.session.ship_images(refs, self.progress(f"{len(refs)} image(s)"), shipped)
        took = time.monotonic() - started
        self.say(f"shipped {len(refs)} image(s): {sent / 1e6:.1f} MB in {took:.1f}s")
        self.record(f"images shipped: {', '.join(refs)}")

    def pull(self, ref: str) -> None:
        self.say(f"pull {ref}")
        self.session.run(compose.pull(ref), PULL_TIMEOUT, purpose=f"docker pull {ref}")
        self.record(f"image pulled: {ref}")

    def progress(self, ref: str) -> Callable[[int, int], None]:
        """Print the bytes sent while shipping an image, every two seconds."""
        last = [0.0]

        def report(sent: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] > PROGRESS_EVERY or sent >= total:
                last[0] = now
                self.say(f"  ship {ref}: {sent / 1e6:.1f} MB sent (at most {total / 1e6:.0f} MB)")

        return report


class ImagesMissing(VpsctlError):
    """A stack's images never reached the box (the feed failed first: its error says why)."""


class ImageFeed:
    """The images the box lacks, brought in a thread of their own while the stacks start:
    every stand-in built first (:meth:`build`, before the thread), then one archive (and the
    pulls) per stack, each stack's as soon as possible, and each stack starts as soon as its
    own are on the box (:meth:`wait`) rather than after all of them.

    The stacks go in the order of what their images weigh, lightest first (a product's few
    KiB on top of a shared base, before Ghost's hundreds of MB), the edge's last (it starts
    after every other stack anyway); a layer several archives share goes in the first
    (see :meth:`Session.ship_images`). One stack's images failing stops the feed: a stack
    waiting for them raises :class:`ImagesMissing`, and the run raises the feed's error.
    """

    def __init__(self, setup: HostSetup) -> None:
        self.setup = setup
        self.actions = {c.ref: c.action for c in setup.plan.images if c.action in ("ship", "pull")}
        self.ready = {ref: threading.Event() for ref in self.actions}
        self.brought: set[str] = set()
        self.error: BaseException | None = None
        self.seconds = 0.0

    def build(self) -> None:
        """Build the stand-ins to ship, before the feed starts (on the main thread: Ctrl-C
        ends a long local build at once, as it always did)."""
        self.setup.build([r for r, a in self.actions.items() if a == "ship"])

    def run(self) -> None:
        """Ship and pull everything (in the feed's thread)."""
        started = time.monotonic()
        try:
            shipped: set[str] = set()
            for refs in self.batches():
                ship = [r for r in refs if self.actions[r] == "ship"]
                if ship:
                    self.setup.ship(ship, shipped)
                for ref in refs:
                    if self.actions[ref] == "pull":
                        self.setup.pull(ref)
                self.brought.update(refs)
                for ref in refs:
                    self.ready[ref].set()
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.seconds = time.monotonic() - started
            for event in self.ready.values():
                event.set()  # a stack still waiting wakes, and finds its images missing

    def batches(self) -> list[list[str]]:
        """The refs to bring, one list per stack in the order they go."""
        stacks = list(self.setup.desired.stacks.values())
        ships = [r for r, a in self.actions.items() if a == "ship"]
        try:
            sizes = localdocker.image_sizes(ships)
        except VpsctlError:
            sizes = {}  # no order by weight then: the spec's (the ship itself will say why)

        def weight(index: int) -> tuple[bool, int, int]:
            stack = stacks[index]
            refs = {i.ref for i in stack.images if i.ref in self.actions}
            return (stack.role == "edge", sum(sizes.get(r, 0) for r in refs), index)

        batches: list[list[str]] = []
        taken: set[str] = set()
        for index in sorted(range(len(stacks)), key=weight):
            refs = [i.ref for i in stacks[index].images if i.ref in self.actions]
            batch = list(dict.fromkeys(r for r in refs if r not in taken))
            if batch:
                batches.append(batch)
                taken.update(batch)
        rest = [r for r in self.actions if r not in taken]  # no stack runs it (kept as is)
        return [*batches, rest] if rest else batches

    def wait(self, stack: str) -> None:
        """Return once every image ``stack`` runs is on the box; raise
        :class:`ImagesMissing` when the feed failed before bringing one."""
        refs = [i.ref for i in self.setup.desired.stacks[stack].images if i.ref in self.ready]
        for ref in refs:
            self.ready[ref].wait()
        missing = [r for r in refs if r not in self.brought]
        if missing:
            raise ImagesMissing(
                f"{stack} was not started: its image(s) {', '.join(missing)} did not reach "
                f"{self.setup.spec.host.name}"
            )
