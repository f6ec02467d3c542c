"""Host facts as the facts script prints them, synthesized for plan tests.

The format is the one :data:`vpsctl.core.facts.FACTS_SCRIPT` prints; ``tests/e2e`` runs the
real script on a sandbox box and checks it parses to the same facts as this does.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field

from vpsctl.core.backupfiles import TIMERS
from vpsctl.core.facts import MANIFEST, MAX_CONTENT
from vpsctl.core.render import Desired


@dataclass
class SimHost:
    """A host's managed files, manifest, containers and images."""

    files: dict[str, tuple[bytes, int, str]] = field(default_factory=dict)  # content, mode, owner
    manifest: dict[str, object] | None = None
    containers: list[dict[str, str]] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    docker: str | None = None
    timers: dict[str, str] = field(default_factory=dict)  # unit → "enabled active"
    # docker volumes: name, compose project, created (RFC 3339), size in KiB or None
    volumes: list[tuple[str, str, str, int | None]] = field(default_factory=list)
    # files the app steps keep (a derived key): path → (content, mode)
    app_files: dict[str, tuple[bytes, int]] = field(default_factory=dict)

    def output(self) -> str:
        """What the facts script would print on this host."""
        lines = ["@@vpsctl-facts 1"]
        if self.manifest is not None:
            lines += ["@@manifest", base64.b64encode(json.dumps(self.manifest).encode()).decode()]
        for path, (content, mode) in sorted(self.app_files.items()):
            lines.append(f"@@appfile {mode:o} {hashlib.sha256(content).hexdigest()} {path}")
        for path in sorted(self.files):
            content, mode, owner = self.files[path]
            sha = hashlib.sha256(content).hexdigest()
            lines.append(f"@@file {mode:o} {owner} {len(content)} {sha} {path}")
        small = {p: c for p, (c, _, _) in sorted(self.files.items()) if len(c) <= MAX_CONTENT}
        lines += ["@@contents", contents_line(small)]
        for unit, state in self.timers.items():
            lines.append(f"@@timer {unit} {state}")
        if self.docker is not None:
            lines += [f"@@docker {self.docker}", "@@compose 2.26.1", "@@containers"]
            for c in self.containers:
                labels = ",".join(
                    f"{k}={v}"
                    for k, v in {
                        "com.docker.compose.project": c["project"],
                        "com.docker.compose.service": c["service"],
                        "dev.vpsctl.stack": c.get("stack", c["project"]),
                    }.items()
                )
                lines.append(
                    json.dumps(
                        {
                            "Names": f"{c['project']}-{c['service']}-1",
                            "Labels": labels,
                            "State": c.get("state", "running"),
                            "Status": c.get("status", "Up 5 minutes (healthy)"),
                            "Image": c.get("image", ""),
                        }
                    )
                )
            lines.append("@@images")
            for ref in self.images:
                repo, _, tag = ref.rpartition(":")
                lines.append(json.dumps({"Repository": repo, "Tag": tag, "ID": "sha256:x"}))
            for name, project, created, kib in self.volumes:
                size = "-" if kib is None else str(kib)
                lines.append(f"@@volume {name} {project} {created} {size}")
        lines.append("@@end")
        return "\n".join(lines) + "\n"


def contents_line(files: dict[str, bytes]) -> str:
    """The ``@@contents`` line the script prints for these files: one gzip-ed GNU tar of them
    under their absolute names, base64; "" for none (the script then runs no tar)."""
    if not files:
        return ""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path, content in files.items():
            member = tarfile.TarInfo(path)
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))
    return base64.b64encode(gzip.compress(raw.getvalue(), mtime=0)).decode()


def bare() -> SimHost:
    """A fresh VPS: nothing of vpsctl's, no docker."""
    return SimHost()


def converged(desired: Desired) -> SimHost:
    """A host where the last apply put exactly ``desired`` in place and everything runs."""
    host = SimHost(docker="26.1.5+dfsg1")
    for path, f in desired.files.items():
        host.files[path] = (f.content, f.mode, "root:root")
    host.manifest = manifest_of(desired)
    for steps in desired.app_steps.values():  # the app steps kept their files
        for step in steps:
            for path in step.files:
                host.app_files[path] = (b"0123456789abcdef0123456789", 0o600)
    if desired.host_files:  # apply linked and enabled the backup timers
        host.timers = dict.fromkeys(TIMERS, "enabled active")
    for name, stack in desired.stacks.items():
        for service in stack.services:
            # each runs the image the spec wants (no image change, no pre-apply snapshot)
            host.containers.append(
                {"project": name, "service": service, "image": stack.service_images[service]}
            )
        host.images += [i.ref for i in stack.images]
    return host


def manifest_of(desired: Desired) -> dict[str, object]:
    """The manifest apply writes after converging to ``desired``."""
    return {
        "format": 1,
        "files": {
            p: {"sha256": f.sha256, "mode": f"{f.mode:04o}"} for p, f in desired.files.items()
        },
        "stacks": {
            n: {
                "hash": s.hash,
                "services": s.services,
                "files": list(s.files),
                "domains": s.domains,
            }
            for n, s in desired.stacks.items()
        },
        # every app step done: owners claimed, settings set
        "apps": {
            name: {step.kind: dict(step.parts) for step in steps}
            for name, steps in desired.app_steps.items()
        },
        "path": MANIFEST,
    }
