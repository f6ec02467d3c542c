"""Applied versions of a stack: what ``vpsctl history`` lists and ``vpsctl rollback`` puts
back. Pure: the record of a version, its parsing, and the desired state it describes.

Each apply that changes a stack keeps, on the box, one version of it under
``VERSIONS/STACK/ID/``: ``files.tar`` (every file of the stack as applied: compose file, env
files, configs; 0600 root in 0700 directories, as env files hold secrets) and
``version.json``, its record: when, the run's plan hash, the image of each service, the
result, the stack's desired record (service hashes, images, domains) and each file's
sha256, mode and kind, and the pre-apply snapshot of its data when one was taken. The record
holds no value: hashes, refs and names only. The newest :data:`KEEP` versions stay.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from vpsctl.core.layout import HOST_ROOT
from vpsctl.core.render import DesiredFile, DesiredStack, Image

VERSIONS = f"{HOST_ROOT}/versions"
KEEP = 10  # versions kept per stack
FORMAT = 1


@dataclass(frozen=True)
class StackVersion:
    """One applied version of one stack, as its record on the box says."""

    stack: str
    version: str  # its id: the time it was applied and the run's plan hash (sorts by time)
    time: str
    plan_hash: str
    result: str  # "applied", or "rollback to ID"
    images: dict[str, str]  # service → image ref
    snapshot: str | None  # the pre-apply snapshot taken before this version replaced the last
    record: dict[str, Any]  # the DesiredStack and its files' metadata

    def to_json(self) -> dict[str, Any]:
        """What ``vpsctl history --json`` shows of it."""
        return {
            "stack": self.stack,
            "version": self.version,
            "time": self.time,
            "plan_hash": self.plan_hash,
            "result": self.result,
            "images": self.images,
            "snapshot": self.snapshot,
        }

    @property
    def backed_up(self) -> bool:
        return bool(self.record.get("backed_up"))


def version_id(time: str, plan_hash: str) -> str:
    """A version's id: ``20261203T153012Z-ab12cd34`` (sorts by time)."""
    return time.replace("-", "").replace(":", "") + "-" + plan_hash[:8]


def version_record(
    stack: DesiredStack,
    files: list[DesiredFile],
    *,
    time: str,
    plan_hash: str,
    result: str,
    snapshot: str | None,
) -> dict[str, Any]:
    """The record of a version of ``stack`` applied now with ``files`` (no value in it)."""
    return {
        "format": FORMAT,
        "stack": stack.name,
        "version": version_id(time, plan_hash),
        "time": time,
        "plan_hash": plan_hash,
        "result": result,
        "images": dict(stack.service_images),
        "snapshot": snapshot,
        "role": stack.role,
        "services": dict(stack.services),
        "hash": stack.hash,
        "image_sources": [
            {
                "ref": i.ref,
                "source": i.source,
                "standin": i.standin,
                "args": [list(a) for a in i.args],
                "declared": i.declared,
            }
            for i in stack.images
        ],
        "backed_up": stack.backed_up,
        "domains": dict(stack.domains),
        "unrouted": dict(stack.unrouted),
        "files": {
            f.path: {
                "sha256": f.sha256,
                "mode": f.mode,
                "kind": f.kind,
                "secret_keys": sorted(f.secret_keys),
            }
            for f in files
        },
    }


def parse_versions(output: str) -> dict[str, list[StackVersion]]:
    """Every version's record (one JSON line each), by stack, oldest first; a line that is
    not a record of this format is skipped."""
    found: dict[str, list[StackVersion]] = {}
    for line in output.splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            continue
        version = StackVersion(
            stack=str(data["stack"]),
            version=str(data["version"]),
            time=str(data["time"]),
            plan_hash=str(data["plan_hash"]),
            result=str(data["result"]),
            images={str(k): str(v) for k, v in dict(data["images"]).items()},
            snapshot=data.get("snapshot") or None,
            record=data,
        )
        found.setdefault(version.stack, []).append(version)
    for versions in found.values():
        versions.sort(key=lambda v: v.version)
    return found


def desired_of(
    version: StackVersion, contents: dict[str, tuple[bytes, int]]
) -> tuple[DesiredStack, list[DesiredFile]]:
    """The desired state ``version`` describes: its stack and its files, whose bytes and
    modes ``contents`` gives by path (read from its ``files.tar``). A file the tar lacks is
    an error that names it."""
    record = version.record
    files: list[DesiredFile] = []
    for path, meta in sorted(dict(record["files"]).items()):
        if path not in contents:
            raise ValueError(f"version {version.version} of {version.stack}: {path} is not kept")
        content, _ = contents[path]
        files.append(
            DesiredFile(
                path,
                content,
                int(meta["mode"]),
                version.stack,
                str(meta["kind"]),
                frozenset(meta.get("secret_keys", [])),
            )
        )
    images = tuple(
        Image(
            ref=str(i["ref"]),
            source=str(i["source"]),
            standin=i.get("standin"),
            args=tuple((str(a[0]), str(a[1])) for a in i.get("args", [])),
            declared=str(i.get("declared", "")),
        )
        for i in record["image_sources"]
    )
    stack = DesiredStack(
        name=version.stack,
        role=str(record["role"]),
        files=tuple(f.path for f in files),
        images=images,
        services={str(k): str(v) for k, v in dict(record["services"]).items()},
        hash=str(record["hash"]),
        service_images=dict(version.images),
        backed_up=bool(record["backed_up"]),
        domains={str(k): str(v) for k, v in dict(record["domains"]).items()},
        unrouted={str(k): str(v) for k, v in dict(record.get("unrouted", {})).items()},
    )
    return stack, files


def needs_data(current: StackVersion, previous: StackVersion) -> bool:
    """Whether going back from ``current`` to ``previous`` needs the data as it was before
    ``current`` was applied: the stack's data is backed up and an image changes (the newer
    version may have migrated its data; a config or env change never does)."""
    return current.backed_up and current.images != previous.images
