"""What the host holds now, read in ONE batched remote command, and parsed into data.

The script prints sections that Python parses: the manifest vpsctl keeps of what it
manages, every managed file (mode, owner, sha256 and, for files up to 256 KiB, the content
in base64, so that a plan can show diffs without a second round trip), the docker and
compose versions, every container with its compose labels, and the images present.

Env files come back with their secret values; they live only in memory, and every view of a
plan masks them (see :mod:`vpsctl.core.plan`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from vpsctl.core.backupfiles import TIMERS
from vpsctl.core.layout import HOST_FILES, HOST_ROOT, STACKS_ROOT

MANIFEST = f"{HOST_ROOT}/manifest.json"
MAX_CONTENT = 256 * 1024

# POSIX sh (dash) + coreutils + findutils: all a fresh Debian or Ubuntu VPS is sure to have.
# Paths under the managed tree are vpsctl's own, so one path per line is safe.
FACTS_SCRIPT = f"""\
set -u
echo '@@vpsctl-facts 1'
if [ -f {MANIFEST} ]; then echo '@@manifest'; base64 -w0 < {MANIFEST}; echo; fi
for f in {HOST_ROOT}/apps/*/*; do
  [ -f "$f" ] && printf '@@appfile %s %s %s\\n' "$(stat -c %a "$f")" \
    "$(sha256sum < "$f" | cut -d' ' -f1)" "$f"
done
for d in {STACKS_ROOT} {HOST_FILES}; do [ -d "$d" ] && echo "$d"; done | while read -r d; do
  find "$d" -type f 2>/dev/null | sort | while IFS= read -r f; do
    size=$(stat -c %s "$f")
    printf '@@file %s %s %s %s %s\\n' "$(stat -c %a "$f")" "$(stat -c %U:%G "$f")" "$size" \
      "$(sha256sum < "$f" | cut -d' ' -f1)" "$f"
    if [ "$size" -le {MAX_CONTENT} ]; then base64 -w0 < "$f"; fi
    echo
  done
done
if [ -d {HOST_FILES}/systemd ]; then
  for t in {" ".join(TIMERS)}; do
    echo "@@timer $t $(systemctl is-enabled "$t" 2>/dev/null || true) \
$(systemctl is-active "$t" 2>/dev/null || true)"
  done
fi
if command -v docker >/dev/null 2>&1; then
  echo "@@docker $(docker version --format '{{{{.Server.Version}}}}' 2>/dev/null || echo none)"
  echo "@@compose $(docker compose version --short 2>/dev/null || echo none)"
  echo '@@containers'
  docker ps -a --no-trunc --filter label=com.docker.compose.project \
    --format '{{{{json .}}}}' 2>/dev/null
  echo '@@images'
  docker image ls --no-trunc --format '{{{{json .}}}}' 2>/dev/null
  # compose volumes; sized (du) only when no container of their project exists: the kept
  # volumes of a removed stack, whose size a reviewer wants, not the live data's
  projects=$(docker ps -a --format '{{{{.Label "com.docker.compose.project"}}}}' 2>/dev/null \
    | sort -u)
  vols=$(docker volume ls -q --filter label=com.docker.compose.project 2>/dev/null)
  if [ -n "$vols" ]; then
    docker volume inspect --format '{{{{.Name}}}} \
{{{{index .Labels "com.docker.compose.project"}}}} {{{{.CreatedAt}}}} {{{{.Mountpoint}}}}' \
      $vols 2>/dev/null | while read -r name project created mount; do
      size=-
      if ! printf '%s\\n' "$projects" | grep -qxF -- "$project"; then
        size=$(timeout 20 du -sk -- "$mount" 2>/dev/null | cut -f1)
      fi
      echo "@@volume $name $project $created ${{size:--}}"
    done
  fi
fi
echo '@@end'
"""


class FactsError(ValueError):
    """The output of the facts script could not be understood."""


@dataclass(frozen=True)
class RemoteFile:
    """A file under the managed tree as the host has it."""

    path: str
    mode: int
    owner: str
    size: int
    sha256: str
    content: bytes | None  # None when larger than MAX_CONTENT


@dataclass(frozen=True)
class Container:
    """A compose-managed container on the host."""

    name: str
    project: str
    service: str
    state: str  # running, exited, restarting, …
    status: str  # "Up 3 minutes (healthy)"
    image: str
    labels: dict[str, str]


@dataclass(frozen=True)
class Volume:
    """A docker volume of a compose project on the host."""

    name: str
    project: str
    created: str  # RFC 3339, as docker reports it
    size: int | None  # bytes; None when not measured (its project has containers)


@dataclass
class HostFacts:
    """The host's state as far as a plan cares. ``reachable`` False: nothing else is known."""

    reachable: bool
    error: str | None = None
    manifest: dict[str, Any] | None = None
    files: dict[str, RemoteFile] = field(default_factory=dict)
    docker: str | None = None
    compose: str | None = None
    containers: list[Container] = field(default_factory=list)
    images: set[str] = field(default_factory=set)
    timers: dict[str, str] = field(default_factory=dict)  # unit → "enabled active"
    volumes: list[Volume] = field(default_factory=list)  # compose projects' volumes
    # files the app steps keep on the box (a derived key): path → (mode, sha256); never
    # their content
    app_files: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def bare(self) -> bool:
        """Never provisioned by vpsctl: no manifest and no managed files."""
        return self.reachable and self.manifest is None and not self.files

    def projects(self) -> dict[str, list[Container]]:
        """Containers by compose project."""
        out: dict[str, list[Container]] = {}
        for container in self.containers:
            out.setdefault(container.project, []).append(container)
        return out

    def digest(self) -> str:
        """A hash of everything a plan was computed against (for stale-plan checks)."""
        data = {
            "manifest": self.manifest,
            "files": {p: [f.mode, f.owner, f.sha256] for p, f in sorted(self.files.items())},
            "containers": sorted(
                [c.project, c.service, c.state, c.image, c.labels.get("dev.vpsctl.stack", "")]
                for c in self.containers
            ),
            "images": sorted(self.images),
            "timers": sorted(self.timers.items()),
            # names only: a size moves all the time, and would make every saved plan stale
            "volumes": sorted([v.name, v.project] for v in self.volumes),
            "app_files": sorted([p, m, sha] for p, (m, sha) in self.app_files.items()),
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def unreachable(error: str) -> HostFacts:
    """Facts of a host that could not be reached."""
    return HostFacts(reachable=False, error=error)


def parse(output: str) -> HostFacts:
    """Parse the facts script's stdout."""
    lines = output.splitlines()
    if not lines or lines[0].strip() != "@@vpsctl-facts 1":
        raise FactsError("the host's answer does not start with the facts header")
    if "@@end" not in (line.strip() for line in lines):
        raise FactsError("the host's answer was cut short (no @@end)")
    facts = HostFacts(reachable=True)
    section = ""
    index = 1
    while index < len(lines):
        line = lines[index]
        index += 1
        if line.startswith("@@manifest"):
            facts.manifest = json.loads(_b64(lines[index]) or b"null")
            index += 1
        elif line.startswith("@@file "):
            mode, owner, size, sha, path = line[len("@@file ") :].split(" ", 4)
            body = lines[index] if index < len(lines) else ""
            index += 1
            content = _b64(body) if int(size) <= MAX_CONTENT else None
            facts.files[path] = RemoteFile(path, int(mode, 8), owner, int(size), sha, content)
        elif line.startswith("@@docker "):
            value = line.split(" ", 1)[1].strip()
            facts.docker = None if value == "none" else value
        elif line.startswith("@@compose "):
            value = line.split(" ", 1)[1].strip()
            facts.compose = None if value == "none" else value
        elif line.startswith("@@volume "):
            facts.volumes.append(_volume(line))
        elif line.startswith("@@appfile "):
            mode, sha, path = line[len("@@appfile ") :].split(" ", 2)
            facts.app_files[path] = (int(mode, 8), sha)
        elif line.startswith("@@timer "):
            name, *state = line.split()[1:]
            facts.timers[name] = " ".join(state)
        elif line.startswith("@@"):
            section = line.strip()
        elif section == "@@containers" and line.strip():
            facts.containers.append(_container(json.loads(line)))
        elif section == "@@images" and line.strip():
            image = json.loads(line)
            if image.get("Repository") and image.get("Tag") and image["Tag"] != "<none>":
                facts.images.add(f"{image['Repository']}:{image['Tag']}")
    return facts


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except binascii.Error as exc:
        raise FactsError(f"bad base64 in the host's answer: {exc}") from None


def _volume(line: str) -> Volume:
    """``@@volume NAME PROJECT CREATED SIZE_KIB`` (size ``-`` when not measured)."""
    parts = line.split()
    if len(parts) != 5:
        raise FactsError(f"a volume line of the host's answer has {len(parts) - 1} fields, not 4")
    _, name, project, created, size = parts
    return Volume(name, project, created, int(size) * 1024 if size.isdigit() else None)


def _container(data: dict[str, Any]) -> Container:
    labels = dict(
        item.split("=", 1) for item in str(data.get("Labels", "")).split(",") if "=" in item
    )
    return Container(
        name=str(data.get("Names", "")),
        project=labels.get("com.docker.compose.project", ""),
        service=labels.get("com.docker.compose.service", ""),
        state=str(data.get("State", "")),
        status=str(data.get("Status", "")),
        image=str(data.get("Image", "")),
        labels=labels,
    )
