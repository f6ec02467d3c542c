"""What the host holds now, read in ONE batched remote command, and parsed into data.

The script prints sections that Python parses: the manifest vpsctl keeps of what it
manages, every managed file (mode, owner, size and sha256 on its ``@@file`` line; the
contents of the files up to 256 KiB all in one gzip-ed tar, base64 on the one line of
``@@contents``, so that a plan can show diffs without a second round trip), the timers'
states, the docker and compose versions, every container with its compose labels, and the
images present.

Env files come back with their secret values; they live only in memory, and every view of a
plan masks them (see :mod:`vpsctl.core.plan`).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from vpsctl.core import boxscripts, sections
from vpsctl.core.layout import HOST_FILES, HOST_ROOT, LABEL_STACK, STACKS_ROOT

MANIFEST = f"{HOST_ROOT}/manifest.json"
MAX_CONTENT = 256 * 1024

# Docker's Go templates for what :func:`parse` reads: one JSON object a line, and the words
# of a ``@@volume`` line.
DOCKER_FORMATS = {
    "version": "{{.Server.Version}}",
    "json": "{{json .}}",
    "project": '{{.Label "com.docker.compose.project"}}',
    "volume": '{{.Name}} {{index .Labels "com.docker.compose.project"}} {{.CreatedAt}} '
    "{{.Mountpoint}}",
}


@functools.cache
def facts_script() -> str:
    """The facts read (``templates/box/facts.sh.j2``), rendered once."""
    # imported here: parsing facts must not load the spec models (a plan served from the
    # plan cache reads the host without them)
    from vpsctl.core.backupfiles import TIMERS  # noqa: PLC0415

    return boxscripts.render(
        boxscripts.FACTS,
        manifest=MANIFEST,
        apps_root=f"{HOST_ROOT}/apps",
        managed=[STACKS_ROOT, HOST_FILES],
        max_content=MAX_CONTENT,
        systemd_dir=f"{HOST_FILES}/systemd",
        timers=TIMERS,
        formats=DOCKER_FORMATS,
    )


def __getattr__(name: str) -> str:
    # ``FACTS_SCRIPT``, the name callers (apply, remote, tests/scripted.py) import: rendered
    # on first use, so that importing this module never loads jinja2
    if name == "FACTS_SCRIPT":
        return facts_script()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
                [c.project, c.service, c.state, c.image, c.labels.get(LABEL_STACK, "")]
                for c in self.containers
            ),
            "images": sorted(self.images),
            "timers": sorted(self.timers.items()),
            # names only: a size moves all the time, and would make every saved plan stale
            "volumes": sorted([v.name, v.project] for v in self.volumes),
            "app_files": sorted([p, m, sha] for p, (m, sha) in self.app_files.items()),
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def fingerprint(self) -> str:
        """A hash of every fact, in the order the host printed it (a mapping's keys sorted:
        docker prints a container's labels in any order), but one: a container's
        ``status`` ("Up 3 minutes (healthy)"), which moves every minute and which neither a
        plan nor its views read (the audit does). Two reads with the same fingerprint give
        the same plan of the same inputs: what the plan cache (:mod:`vpsctl.spec.cache`)
        relies on. Unlike :meth:`digest` it covers the files' sizes and contents and the
        volumes' sizes and creation times, which a plan shows."""

        def sha(content: bytes | None) -> str | None:
            return None if content is None else hashlib.sha256(content).hexdigest()

        data = {
            "reachable": self.reachable,
            "error": self.error,
            "manifest": self.manifest,
            "files": [
                [p, f.path, f.mode, f.owner, f.size, f.sha256, sha(f.content)]
                for p, f in self.files.items()
            ],
            "docker": self.docker,
            "compose": self.compose,
            "containers": [
                [c.name, c.project, c.service, c.state, c.image, sorted(c.labels.items())]
                for c in self.containers
            ],
            "images": sorted(self.images),
            "timers": list(self.timers.items()),
            "volumes": [[v.name, v.project, v.created, v.size] for v in self.volumes],
            "app_files": [[p, m, s] for p, (m, s) in self.app_files.items()],
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def unreachable(error: str) -> HostFacts:
    """Facts of a host that could not be reached."""
    return HostFacts(reachable=False, error=error)


def parse(output: str) -> HostFacts:
    """Parse the facts script's stdout."""
    found = sections.split(output)
    if not found or (found[0].name, found[0].args.strip()) != ("vpsctl-facts", "1"):
        raise FactsError("the host's answer does not start with the facts header")
    if sections.first(found, "end") is None:
        raise FactsError("the host's answer was cut short (no @@end)")
    facts = HostFacts(reachable=True)
    contents = _contents(found)
    for section in found:
        _read(facts, section, contents)
    return facts


def _read(facts: HostFacts, section: sections.Section, contents: dict[str, bytes]) -> None:
    """Fold one section of the facts script's answer into ``facts`` (``contents``: the files'
    contents by path, from :func:`_contents`)."""
    name, args = section.name, section.args
    if name == "manifest":
        facts.manifest = json.loads(_b64(section.body) or b"null")
    elif name == "file":
        mode, owner, size, sha, path = args.split(" ", 4)
        # a file gone before tar read it is missing from the tar: empty, as when base64 read
        # each file on its own
        content = contents.get(path, b"") if int(size) <= MAX_CONTENT else None
        facts.files[path] = RemoteFile(path, int(mode, 8), owner, int(size), sha, content)
    elif name == "docker":
        facts.docker = None if args.strip() == "none" else args.strip()
    elif name == "compose":
        facts.compose = None if args.strip() == "none" else args.strip()
    elif name == "volume":
        facts.volumes.append(_volume(section.words))
    elif name == "appfile":
        mode, sha, path = args.split(" ", 2)
        facts.app_files[path] = (int(mode, 8), sha)
    elif name == "timer":
        unit, *state = section.words
        facts.timers[unit] = " ".join(state)
    elif name == "containers":
        facts.containers += [_container(json.loads(line)) for line in section.lines if line.strip()]
    elif name == "images":
        for line in filter(str.strip, section.lines):
            image = json.loads(line)
            if image.get("Repository") and image.get("Tag") and image["Tag"] != "<none>":
                facts.images.add(f"{image['Repository']}:{image['Tag']}")


def _contents(found: list[sections.Section]) -> dict[str, bytes]:
    """The managed files' contents by path: ``@@contents`` is one gzip-ed GNU tar, base64 on
    one line, of every file up to MAX_CONTENT. It is read from memory, never extracted: a
    member's name is only a key to look its ``@@file`` line up by, and a member that is not a
    regular file (a link, a directory) is nobody's content."""
    section = sections.first(found, "contents")
    if section is None:
        if sections.first(found, "file") is not None:
            raise FactsError("the host's answer lists files but has no @@contents")
        return {}
    packed = _b64(section.body)
    if not packed:  # the script runs no tar when no file is small enough
        if any(_small(file) for file in sections.named(found, "file")):
            raise FactsError("the host's answer has no tar of the files' contents")
        return {}
    # imported here: only a plan needs them, never `validate` or `render`
    import io  # noqa: PLC0415
    import tarfile  # noqa: PLC0415
    import zlib  # noqa: PLC0415

    # no more than the listed files can fill (each up to MAX_CONTENT, a header and padding,
    # room for one that grew meanwhile): a garbled answer cannot inflate without bound
    limit = (len(sections.named(found, "file")) + 1) * (MAX_CONTENT + 4096)
    contents: dict[str, bytes] = {}
    try:
        inflate = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)  # gzip
        data = inflate.decompress(packed, limit)
        if inflate.unconsumed_tail:
            raise FactsError("the host's tar of contents is larger than its files could be")
        if not inflate.eof:
            raise FactsError("the host's tar of contents was cut short")
        with tarfile.TarFile(fileobj=io.BytesIO(data), encoding="utf-8") as tar:
            for member in tar:
                body = tar.extractfile(member) if member.isreg() else None
                if body is not None:
                    contents[member.name] = body.read()
    except (zlib.error, tarfile.TarError, EOFError) as exc:
        raise FactsError(f"bad tar of contents in the host's answer: {exc}") from None
    return contents


def _small(file: sections.Section) -> bool:
    """Whether a ``@@file MODE OWNER SIZE SHA PATH`` line's file is one whose content is sent."""
    words = file.args.split(" ", 4)
    return len(words) == 5 and words[2].isdigit() and int(words[2]) <= MAX_CONTENT


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except binascii.Error as exc:
        raise FactsError(f"bad base64 in the host's answer: {exc}") from None


def _volume(words: list[str]) -> Volume:
    """``@@volume NAME PROJECT CREATED SIZE_KIB`` (size ``-`` when not measured)."""
    if len(words) != 4:
        raise FactsError(f"a volume line of the host's answer has {len(words)} fields, not 4")
    name, project, created, size = words
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
