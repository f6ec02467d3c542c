"""What vpsctl records of a sandbox: its names, its state files and :class:`SandboxInfo`.

Each sandbox's connection is recorded in ``.vpsctl/sandboxes/<name>.json`` (the directory is
``$VPSCTL_STATE_DIR/sandboxes`` when that is set), beside its key pair and a ``known_hosts``
file holding the box's host keys, against which every SSH connection to it is verified.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vpsctl.errors import VpsctlError, display_path
from vpsctl.host.target import Target
from vpsctl.local.files import write_atomic

LABEL = "io.vpsctl.local.sandbox"
ADDRESS = "127.0.0.1"
USER = "root"
SSH_PORT = 22
HTTP_PORT = 80
HTTPS_PORT = 443
# Published beside 22/80/443 only so that tests can show the box's firewall drops them.
PROBE_PORTS = (9000, 5432)
BOX_PORTS = (SSH_PORT, HTTP_PORT, HTTPS_PORT, *PROBE_PORTS)
STATE_FORMAT = 1

NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")  # fullmatch: `$` allows "\n"

Progress = Callable[[str], None]


class SandboxError(VpsctlError):
    """A sandbox could not be made, reached, read or removed."""


class SandboxNotFound(SandboxError):
    """No sandbox of that name is recorded."""


@dataclass(frozen=True)
class SandboxInfo:
    """A sandbox's recorded connection; ``running``/``ssh_ready`` are live (from status)."""

    name: str
    address: str
    user: str
    ssh_port: int
    # box port -> host port on ``address``: 22, 80, 443 and the PROBE_PORTS
    ports: dict[int, int] = field(hash=False)
    key_path: Path
    known_hosts_path: Path
    # known_hosts lines of every host key the box has, for ``[address]:ssh_port``
    host_keys: tuple[str, ...]
    container: str
    container_id: str
    volume: str
    hostname: str
    image: str
    created: str
    running: bool | None = field(default=None, compare=False)
    ssh_ready: bool | None = field(default=None, compare=False)

    @property
    def http_port(self) -> int:
        """The host port of the box's port 80."""
        return self.ports[HTTP_PORT]

    @property
    def https_port(self) -> int:
        """The host port of the box's port 443."""
        return self.ports[HTTPS_PORT]

    @property
    def probe_ports(self) -> dict[int, int]:
        """The host ports of :data:`PROBE_PORTS` (box port -> host port)."""
        return {port: self.ports[port] for port in PROBE_PORTS}

    def target(self, name: str = "") -> Target:
        """The SSH target of this box for :mod:`vpsctl.host.remote` (``name`` labels it in
        messages; the sandbox's name by default): its key, its recorded host keys only."""
        return Target(
            name=name or self.name,
            address=self.address,
            port=self.ssh_port,
            user=self.user,
            key=self.key_path,
            known_hosts=self.known_hosts_path,
        )

    def ssh_command(self, *remote: str) -> list[str]:
        """An ``ssh`` argv that logs in with the sandbox key and verifies the host key: for a
        person to copy (``sandbox status`` prints it), not for vpsctl's own connections."""
        return [
            "ssh",
            "-i",
            str(self.key_path),
            "-p",
            str(self.ssh_port),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts_path}",
            f"{self.user}@{self.address}",
            *remote,
        ]

    def to_json(self) -> dict[str, Any]:
        """The record as written to the state file (live fields left out)."""
        return {
            "format": STATE_FORMAT,
            "name": self.name,
            "address": self.address,
            "user": self.user,
            "ssh_port": self.ssh_port,
            "ports": {str(box): host for box, host in sorted(self.ports.items())},
            "key_path": str(self.key_path),
            "known_hosts_path": str(self.known_hosts_path),
            "host_keys": list(self.host_keys),
            "container": self.container,
            "container_id": self.container_id,
            "volume": self.volume,
            "hostname": self.hostname,
            "image": self.image,
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SandboxInfo:
        """Parse a state file's content; raise ``KeyError``/``TypeError``/``ValueError``."""
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown state format {data.get('format')!r}")
        ports = {int(box): int(host) for box, host in dict(data["ports"]).items()}
        missing = [p for p in BOX_PORTS if p not in ports]
        if missing:
            raise ValueError(f"ports {missing} are not recorded")
        return cls(
            name=str(data["name"]),
            address=str(data["address"]),
            user=str(data["user"]),
            ssh_port=int(data["ssh_port"]),
            ports=ports,
            key_path=Path(data["key_path"]),
            known_hosts_path=Path(data["known_hosts_path"]),
            host_keys=tuple(str(line) for line in data["host_keys"]),
            container=str(data["container"]),
            container_id=str(data["container_id"]),
            volume=str(data["volume"]),
            hostname=str(data["hostname"]),
            image=str(data["image"]),
            created=str(data["created"]),
        )


# --- names and paths -------------------------------------------------------------------------


def check_name(name: str) -> str:
    """``name`` if it is a valid sandbox name (it becomes part of container and host names)."""
    if not NAME_RE.fullmatch(name):
        raise SandboxError(
            f"invalid sandbox name {name!r}: use 1-32 lowercase letters, digits and '-' "
            "(not at either end)"
        )
    return name


def container_name(name: str) -> str:
    """The Docker container of sandbox ``name``."""
    return f"vpsctl-sandbox-{name}"


def volume_name(name: str) -> str:
    """The named volume holding the box's ``/var/lib/docker``."""
    return f"{container_name(name)}-docker"


def hostname(name: str) -> str:
    """The hostname the box reports."""
    return f"sandbox-{name}"


def state_dir() -> Path:
    """Where sandbox records live: ``$VPSCTL_STATE_DIR/sandboxes`` or ``./.vpsctl/sandboxes``."""
    base = os.environ.get("VPSCTL_STATE_DIR")
    root = Path(base) if base else Path.cwd() / ".vpsctl"
    return (root / "sandboxes").absolute()


def state_path(name: str) -> Path:
    """The JSON record of sandbox ``name``."""
    return state_dir() / f"{name}.json"


def key_path(name: str) -> Path:
    """The private SSH key of sandbox ``name`` (its public half is ``<key>.pub``)."""
    return state_dir() / f"{name}.key"


def public_key_path(name: str) -> Path:
    """The public half of :func:`key_path`."""
    key = key_path(name)
    return key.with_name(key.name + ".pub")


def known_hosts_path(name: str) -> Path:
    """The known_hosts file holding sandbox ``name``'s host keys."""
    return state_dir() / f"{name}.known_hosts"


def files(name: str) -> tuple[Path, ...]:
    """Every file vpsctl keeps for sandbox ``name`` (what ``down`` removes)."""
    return (state_path(name), key_path(name), public_key_path(name), known_hosts_path(name))


def say_as(name: str) -> Progress:
    """The default progress of sandbox ``name``: a line on stderr."""

    def say(message: str) -> None:
        print(f"sandbox {name}: {message}", file=sys.stderr, flush=True)

    return say


# --- the record ------------------------------------------------------------------------------


def write_known_hosts(path: Path, host_keys: tuple[str, ...]) -> None:
    """The known_hosts file every SSH connection to the box verifies against."""
    write_atomic(path, "".join(line + "\n" for line in host_keys).encode(), 0o644)


def write_record(info: SandboxInfo) -> None:
    """Record ``info`` (its known_hosts file, then its JSON record)."""
    write_known_hosts(info.known_hosts_path, info.host_keys)
    data = json.dumps(info.to_json(), indent=2) + "\n"
    write_atomic(state_path(info.name), data.encode(), 0o644)


def read_record(name: str) -> SandboxInfo | None:
    """The record of sandbox ``name``; None when there is none."""
    path = state_path(name)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return SandboxInfo.from_json(json.loads(text))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SandboxError(
            f"{display_path(path)} is not a sandbox record ({exc}); "
            f"remove it with `vpsctl sandbox down --name {name}`"
        ) from None


def recorded() -> list[str]:
    """The names of every sandbox recorded in :func:`state_dir`."""
    return sorted(p.stem for p in state_dir().glob("*.json"))


def load(name: str = "default") -> SandboxInfo:
    """The recorded connection of sandbox ``name`` (no live check)."""
    check_name(name)
    record = read_record(name)
    if record is None:
        raise SandboxNotFound(
            f"no sandbox {name!r} is recorded in {display_path(state_dir())}/: "
            f"start it with `vpsctl sandbox up --name {name}`"
        )
    return record
