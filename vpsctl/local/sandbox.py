"""Disposable Debian 13 VPS boxes on this machine: ``vpsctl sandbox up|down|status``.

A sandbox is a container that behaves like a fresh cloud VPS: systemd as PID 1, sshd, apt
working against Debian's mirror, nothing else (vpsctl's bootstrap installs Docker, compose,
Caddy and ufw, as on a real box). The recipe is the one verified in ``SANDBOX.md``:

* the image is a debootstrapped Debian 13 (``sandbox/packages.txt``) plus the build context
  ``sandbox/`` (masked units that cannot work in a container, first-boot SSH host keys, the
  Docker drop-in this machine needs). Its tag carries a hash of the context, so a change
  rebuilds it and an unchanged context never does;
* the container runs with exactly the flags that work here (all capabilities but
  SYS_RESOURCE, no seccomp/apparmor, the host's cgroup tree, a named volume for
  ``/var/lib/docker`` so the inner engine gets overlay2, ``--memory 8g``);
* the box's ports 22, 80 and 443 are published on 127.0.0.1, and so are 9000 and 5432
  (:data:`PROBE_PORTS`): traffic to them enters the box on eth0, so a test can prove from
  outside that the box's firewall drops everything but 22/80/443.

Beside the boxes of a state directory runs their ACME CA, Pebble (:mod:`vpsctl.local.pebble`):
``up`` starts it, the ``down`` of the last box removes it.

Each sandbox gets its own ed25519 key pair. Its connection is recorded in
``.vpsctl/sandboxes/<name>.json`` (the directory is ``$VPSCTL_STATE_DIR`` when set) with the
box's SSH host keys, read through ``docker exec`` (a channel that needs no trust on first
use) and written as a ``known_hosts`` file that every later SSH connection verifies against.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import re
import shlex
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # paramiko and cryptography load only when a box is used, not per command
    import paramiko

from vpsctl.errors import VpsctlError, display_path
from vpsctl.local import docker as localdocker
from vpsctl.local import pebble
from vpsctl.local.files import write_atomic
from vpsctl.resources import shipped

CONTEXT = shipped("sandbox")
SUITE = "trixie"
IMAGE_REPO = "vpsctl-sandbox"
BASE_REPO = "vpsctl-sandbox-base"
LABEL = "io.vpsctl.local.sandbox"
ADDRESS = "127.0.0.1"
USER = "root"
MEMORY = "8g"
SSH_PORT = 22
HTTP_PORT = 80
HTTPS_PORT = 443
# Published beside 22/80/443 only so that tests can show the box's firewall drops them.
PROBE_PORTS = (9000, 5432)
BOX_PORTS = (SSH_PORT, HTTP_PORT, HTTPS_PORT, *PROBE_PORTS)
STATE_FORMAT = 1

BOOT_TIMEOUT = 120.0
SSH_TIMEOUT = 60.0
# Machine-wide locks: one around image builds, one around creating/removing boxes (Docker
# names are machine-wide; each hold is a few seconds, or BOOT_TIMEOUT + SSH_TIMEOUT at worst).
LOCK_TIMEOUT = 1800.0
SANDBOXES_LOCK_TIMEOUT = 600.0
POLL = 0.25

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

    def ssh_command(self, *remote: str) -> list[str]:
        """An ``ssh`` argv that logs in with the sandbox key and verifies the host key."""
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

    def connect(self, timeout: float = 10.0) -> paramiko.SSHClient:
        """A paramiko client logged in as ``user``; the host key must match the recorded one."""
        return _ssh_connect(
            self.address,
            self.ssh_port,
            user=self.user,
            key_file=self.key_path,
            host_keys=self.host_keys,
            timeout=timeout,
        )

    def probe(self, timeout: float = 5.0) -> str | None:
        """None when sshd lets the sandbox key in (host key verified) and runs a command;
        otherwise why not."""
        return _ssh_probe(
            self.address,
            self.ssh_port,
            user=self.user,
            key_file=self.key_path,
            host_keys=self.host_keys,
            timeout=timeout,
        )

    def pyinfra_data(self) -> dict[str, Any]:
        """Host data for pyinfra's ``@ssh`` connector: this key, the recorded host keys only."""
        return {
            "ssh_hostname": self.address,
            "ssh_port": self.ssh_port,
            "ssh_user": self.user,
            "ssh_key": str(self.key_path),
            "ssh_known_hosts_file": str(self.known_hosts_path),
            "ssh_strict_host_key_checking": "yes",
            "ssh_allow_agent": False,
            "ssh_look_for_keys": False,
        }

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


def internal_address(info: SandboxInfo) -> str:
    """The box's address on the docker bridge: where another box reaches it (a backup host
    for SFTP); the published ports on 127.0.0.1 are this machine's only."""
    address = localdocker.docker(
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        info.container_id,
        timeout=60,
    ).split()
    if not address:
        raise SandboxError(f"sandbox {info.name} has no address on a docker network")
    return address[0]


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
    return f"vpsctl-sandbox-{name}-docker"


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


def known_hosts_path(name: str) -> Path:
    """The known_hosts file holding sandbox ``name``'s host keys."""
    return state_dir() / f"{name}.known_hosts"


def _say(name: str) -> Progress:
    def say(message: str) -> None:
        print(f"sandbox {name}: {message}", file=sys.stderr, flush=True)

    return say


@contextlib.contextmanager
def locked(what: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """An exclusive lock across processes of this machine (Docker names are machine-wide)."""
    path = Path(tempfile.gettempdir()) / f"vpsctl-{what}.lock"
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise SandboxError(
                        f"another vpsctl process held {path} for {timeout:.0f}s; "
                        "is a `vpsctl sandbox up` or `down` stuck?"
                    ) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# --- the image -------------------------------------------------------------------------------


def packages(context: Path = CONTEXT) -> list[str]:
    """The packages debootstrap adds to the base system (``packages.txt`` of the context)."""
    text = (context / "packages.txt").read_text(encoding="utf-8")
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


def base_tag(context: Path = CONTEXT) -> str:
    """The tag of the debootstrapped base image: Debian ``SUITE`` with :func:`packages`."""
    digest = hashlib.sha256(",".join(packages(context)).encode()).hexdigest()[:12]
    return f"{BASE_REPO}:{SUITE}-{digest}"


def image_tag(context: Path = CONTEXT) -> str:
    """The sandbox image's tag: a hash of every file (path, mode, bytes) of the context."""
    if not (context / "Dockerfile").is_file() or not (context / "packages.txt").is_file():
        raise SandboxError(
            f"the sandbox build context {context}/ (Dockerfile, packages.txt) is missing; "
            "run vpsctl from its source checkout"
        )
    digest = hashlib.sha256(f"{SUITE}\0".encode())
    # pebble/ is the context of another image (vpsctl.local.pebble), hashed into that one's tag
    files = (
        p for p in context.rglob("*") if p.is_file() and p.parts[len(context.parts)] != "pebble"
    )
    for path in sorted(files):
        mode = stat.S_IMODE(path.stat().st_mode)
        digest.update(f"{path.relative_to(context)}\0{mode:o}\0".encode())
        digest.update(path.read_bytes() + b"\0")
    return f"{IMAGE_REPO}:{digest.hexdigest()[:12]}"


def ensure_image(progress: Progress | None = None) -> str:
    """Build the sandbox image unless its tag exists; return the tag."""
    say = progress or _say("image")
    tag = image_tag()
    if localdocker.image_exists(tag):
        return tag
    with locked("sandbox-image"):
        if localdocker.image_exists(tag):
            return tag
        base = base_tag()
        if not localdocker.image_exists(base):
            say(f"debootstrapping Debian {SUITE} into {base} (about a minute, once)")
            started = time.monotonic()
            localdocker.debootstrap_image(base, include=packages(), suite=SUITE)
            say(f"base image ready in {time.monotonic() - started:.0f}s")
        say(f"building {tag} from {display_path(CONTEXT)}/")
        started = time.monotonic()
        localdocker.build_image(tag, CONTEXT, {"BASE": base})
        say(f"image built in {time.monotonic() - started:.1f}s")
        _prune_images(keep=tag)
    return tag


def _prune_images(keep: str) -> None:
    """Remove sandbox images of older contexts that no container uses (best effort)."""
    listed = localdocker.docker(
        "image", "ls", IMAGE_REPO, "--format", "{{.Repository}}:{{.Tag}}", check=False
    )
    for old in listed.split():
        if old != keep and old.startswith(f"{IMAGE_REPO}:"):
            # refused while a container (even a stopped one) still uses the image
            localdocker.docker("image", "rm", old, check=False, timeout=120)


# --- SSH -------------------------------------------------------------------------------------


def _ensure_key(name: str) -> str:
    """Create sandbox ``name``'s ed25519 key pair unless it exists; return the public line."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415

    path = key_path(name)
    comment = f"vpsctl-sandbox-{name}"
    if path.exists():
        try:
            key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
        except ValueError as exc:
            raise SandboxError(f"{display_path(path)} is not a usable SSH key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SandboxError(f"{display_path(path)} is not an ed25519 key")
    else:
        key = Ed25519PrivateKey.generate()
        write_atomic(
            path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            ),
        )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    line = f"{public.decode()} {comment}"
    write_atomic(path.with_name(path.name + ".pub"), (line + "\n").encode(), 0o644)
    return line


def _host_key_lines(host_pubs: str, address: str, port: int) -> tuple[str, ...]:
    """known_hosts lines for ``[address]:port`` from the box's ``ssh_host_*_key.pub`` files."""
    lines = []
    for raw in host_pubs.splitlines():
        parts = raw.split()
        if len(parts) >= 2:
            lines.append(f"[{address}]:{port} {parts[0]} {parts[1]}")
    return tuple(sorted(lines))


def _ssh_connect(
    address: str,
    port: int,
    *,
    user: str,
    key_file: Path,
    host_keys: tuple[str, ...],
    timeout: float,
) -> paramiko.SSHClient:
    import paramiko  # noqa: PLC0415

    client = paramiko.SSHClient()
    known = client.get_host_keys()
    for line in host_keys:
        entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
        if entry is not None and entry.key is not None:
            for host in entry.hostnames:
                known.add(host, entry.key.get_name(), entry.key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            address,
            port=port,
            username=user,
            pkey=paramiko.Ed25519Key.from_private_key_file(str(key_file)),
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
            allow_agent=False,
            look_for_keys=False,
        )
    except BaseException:
        client.close()
        raise
    return client


def _ssh_probe(
    address: str,
    port: int,
    *,
    user: str,
    key_file: Path,
    host_keys: tuple[str, ...],
    timeout: float,
) -> str | None:
    """None when sshd lets us in with the key (host key verified) and runs a command; else why."""
    import paramiko  # noqa: PLC0415

    try:
        client = _ssh_connect(
            address, port, user=user, key_file=key_file, host_keys=host_keys, timeout=timeout
        )
    except paramiko.BadHostKeyException:
        return "the box's SSH host key does not match the recorded one"
    except (paramiko.SSHException, EOFError) as exc:
        return f"ssh: {exc or exc.__class__.__name__}"
    except OSError as exc:
        return f"ssh: {exc.strerror or exc}"
    try:
        _, stdout, _ = client.exec_command("true", timeout=timeout)
        code = stdout.channel.recv_exit_status()
    except (paramiko.SSHException, EOFError, OSError) as exc:
        return f"ssh: running a command failed: {exc or exc.__class__.__name__}"
    finally:
        client.close()
    return None if code == 0 else f"ssh: `true` exited {code}"


# --- the container ---------------------------------------------------------------------------


def _is_running(inspected: Mapping[str, Any] | None) -> bool:
    return bool(inspected and inspected.get("State", {}).get("Running"))


def _inspect_existing(container: str) -> dict[str, Any]:
    inspected = localdocker.inspect_container(container)
    if inspected is None:
        raise SandboxError(f"the container {container} vanished")
    return inspected


def _published_ports(inspected: Mapping[str, Any]) -> dict[int, int]:
    found: dict[int, int] = {}
    published = inspected.get("NetworkSettings", {}).get("Ports") or {}
    for box in BOX_PORTS:
        for binding in published.get(f"{box}/tcp") or []:
            if binding.get("HostIp") == ADDRESS and binding.get("HostPort"):
                found[box] = int(binding["HostPort"])
    missing = [p for p in BOX_PORTS if p not in found]
    if missing:
        raise SandboxError(f"the container publishes no host port for box ports {missing}")
    return found


def _last_logs(container: str, lines: int = 25) -> str:
    """The container's last log lines and, while it runs, its journal's (systemd in a
    container without a tty writes to the journal, not to ``docker logs``)."""
    found = ""
    logs = localdocker.container_logs(container, tail=lines).rstrip()
    if logs:
        found += f"\nlast lines of the container's log:\n{logs}"
    with contextlib.suppress(localdocker.DockerError):
        journal = localdocker.docker_exec(
            container, ["journalctl", "-b", "--no-pager", "-q", "-n", str(lines)], timeout=15
        )
        if journal.returncode == 0 and journal.stdout.strip():
            found += f"\nlast lines of the box's journal:\n{journal.stdout.rstrip()}"
    return found


def _wait_booted(container: str, timeout: float, say: Progress) -> str:
    """Wait until systemd has finished booting the box; return its state (running/degraded)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        inspected = localdocker.inspect_container(container)
        if not _is_running(inspected):
            state = (inspected or {}).get("State", {})
            raise SandboxError(
                f"the container stopped while booting (exit code {state.get('ExitCode')})"
            )
        try:
            proc = localdocker.docker_exec(
                container, ["systemctl", "is-system-running"], timeout=10
            )
            last = (proc.stdout.strip() or proc.stderr.strip() or "no answer").splitlines()[-1]
        except localdocker.DockerError as exc:
            last = str(exc)
        if last in ("running", "degraded"):
            break
        if last in ("stopping", "maintenance"):
            raise SandboxError(f"systemd is {last} instead of booting")
        time.sleep(POLL)
    else:
        raise SandboxError(
            f"systemd did not finish booting within {timeout:.0f}s (last state: {last})"
        )
    if last == "degraded":
        failed = localdocker.docker_exec(
            container, ["systemctl", "--failed", "--plain", "--no-legend"], timeout=10
        ).stdout
        units = ", ".join(line.split()[0] for line in failed.splitlines() if line.split())
        say(f"warning: systemd is degraded; failed units: {units or '?'}")
    return last


def _install_key(container: str, public_line: str) -> None:
    script = (
        "set -e; umask 077; key=$(cat); mkdir -p /root/.ssh; touch /root/.ssh/authorized_keys; "
        'grep -qxF -- "$key" /root/.ssh/authorized_keys || '
        'printf "%s\\n" "$key" >> /root/.ssh/authorized_keys; '
        "chmod 700 /root/.ssh; chmod 600 /root/.ssh/authorized_keys"
    )
    proc = localdocker.docker_exec(
        container, ["sh", "-c", script], input_=public_line.encode() + b"\n", timeout=30
    )
    if proc.returncode != 0:
        raise SandboxError(f"writing /root/.ssh/authorized_keys failed: {proc.stderr.strip()}")


def _read_host_keys(container: str, port: int) -> tuple[str, ...]:
    proc = localdocker.docker_exec(
        container, ["sh", "-c", "cat /etc/ssh/ssh_host_*_key.pub"], timeout=30
    )
    lines = _host_key_lines(proc.stdout, ADDRESS, port)
    if proc.returncode != 0 or not lines:
        raise SandboxError(f"the box has no SSH host keys: {proc.stderr.strip()}")
    return lines


def _wait_ssh(
    address: str, port: int, key_file: Path, host_keys: tuple[str, ...], timeout: float
) -> float:
    """Wait until sshd accepts the key (host key verified); return the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    why = "no attempt"
    while time.monotonic() < deadline:
        remaining = max(1.0, min(10.0, deadline - time.monotonic()))
        found = _ssh_probe(
            address, port, user=USER, key_file=key_file, host_keys=host_keys, timeout=remaining
        )
        if found is None:
            return time.monotonic() - started
        why = found
        if "does not match" in why:
            break
        time.sleep(POLL)
    raise SandboxError(f"sshd on {address}:{port} did not accept the sandbox key: {why}")


def _record(info: SandboxInfo) -> None:
    known = "".join(line + "\n" for line in info.host_keys).encode()
    write_atomic(info.known_hosts_path, known, 0o644)
    data = json.dumps(info.to_json(), indent=2) + "\n"
    write_atomic(state_path(info.name), data.encode(), 0o644)


def _read_record(name: str) -> SandboxInfo | None:
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


def _connect_box(
    name: str, container: str, inspected: Mapping[str, Any], image: str, say: Progress
) -> SandboxInfo:
    """Install the key, read host keys, wait for sshd, record: the box is usable."""
    ports = _published_ports(inspected)
    public = _ensure_key(name)
    _install_key(container, public)
    host_keys = _read_host_keys(container, ports[SSH_PORT])
    took = _wait_ssh(ADDRESS, ports[SSH_PORT], key_path(name), host_keys, SSH_TIMEOUT)
    say(f"sshd accepted the key after {took:.1f}s")
    created = str(inspected.get("Created", ""))
    with contextlib.suppress(ValueError):
        stamp = dt.datetime.fromisoformat(created[:26].rstrip("Z") + "+00:00")
        created = stamp.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    info = SandboxInfo(
        name=name,
        address=ADDRESS,
        user=USER,
        ssh_port=ports[SSH_PORT],
        ports=ports,
        key_path=key_path(name),
        known_hosts_path=known_hosts_path(name),
        host_keys=host_keys,
        container=container,
        container_id=str(inspected["Id"]),
        volume=volume_name(name),
        hostname=hostname(name),
        image=image,
        created=created,
    )
    _record(info)
    return dataclasses.replace(info, running=True, ssh_ready=True)


def _run_argv(name: str, image: str) -> list[str]:
    argv = [
        "create",
        "--name",
        container_name(name),
        "--hostname",
        hostname(name),
        "--label",
        f"{LABEL}={name}",
        "--cap-add=ALL",
        "--cap-drop=SYS_RESOURCE",
        # The clock is the machine's, not the box's: with CAP_SYS_TIME, the box's first
        # `timedatectl set-timezone` warped this machine's clock by the zone's offset.
        "--cap-drop=SYS_TIME",
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "apparmor=unconfined",
        "--cgroupns=host",
        "-v",
        "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "--tmpfs",
        "/run",
        "--tmpfs",
        "/run/lock",
        "-v",
        f"{volume_name(name)}:/var/lib/docker",
        "--memory",
        MEMORY,
    ]
    for port in BOX_PORTS:
        argv += ["-p", f"{ADDRESS}::{port}"]
    return [*argv, image, "/sbin/init"]


def _create(name: str, say: Progress) -> SandboxInfo:
    image = ensure_image(say)
    container = container_name(name)
    volume = volume_name(name)
    started = time.monotonic()
    # No container of this name exists (we hold the lock): a volume left by a crash is stale.
    localdocker.remove_volume(volume)
    localdocker.docker("volume", "create", "--label", f"{LABEL}={name}", volume, timeout=60)
    step = "creating the container"
    created_id: str | None = None
    try:
        created_id = localdocker.docker(*_run_argv(name, image), timeout=120).strip()
        step = "starting the container"
        localdocker.docker("start", created_id, timeout=120)
        step = "waiting for systemd to boot the box"
        state = _wait_booted(created_id, BOOT_TIMEOUT, say)
        say(f"booted ({state}) in {time.monotonic() - started:.1f}s")
        step = "connecting over SSH"
        info = _connect_box(name, container, _inspect_existing(created_id), image, say)
    except BaseException as exc:
        logs = _last_logs(created_id) if created_id else ""
        with contextlib.suppress(localdocker.DockerError):
            if created_id:
                localdocker.remove_container(created_id)
            localdocker.remove_volume(volume)
        if isinstance(exc, Exception):
            raise SandboxError(
                f"`vpsctl sandbox up --name {name}` failed while {step}: {exc}{logs}\n"
                "(the half-made container and its volume were removed)"
            ) from None
        raise
    say(f"up in {time.monotonic() - started:.1f}s: {info.user}@{info.address}:{info.ssh_port}")
    return info


def _resume(name: str, inspected: Mapping[str, Any], say: Progress) -> SandboxInfo:
    """``up`` of a sandbox whose container exists: start it if stopped, re-verify, re-record."""
    container = container_name(name)
    if inspected.get("Config", {}).get("Labels", {}).get(LABEL) != name:
        raise SandboxError(
            f"a container named {container} exists but is not vpsctl sandbox {name!r}; "
            "remove or rename it"
        )
    image = str(inspected.get("Config", {}).get("Image", ""))
    record = _read_record(name)
    try:
        if not _is_running(inspected):
            say(f"starting the stopped container {container}")
            localdocker.docker("start", container, timeout=120)
            _wait_booted(container, BOOT_TIMEOUT, say)
            inspected = _inspect_existing(container)
        ports = _published_ports(inspected)
        if (
            record is not None
            and record.container_id == inspected.get("Id")
            and record.ports == ports
            and record.key_path.exists()
            and record.probe(10.0) is None
        ):
            say("already up")
            return dataclasses.replace(record, running=True, ssh_ready=True)
        say("re-recording the connection")
        info = _connect_box(name, container, inspected, image, say)
    except (SandboxError, localdocker.DockerError) as exc:
        raise SandboxError(
            f"sandbox {name} exists but is not usable: {exc}{_last_logs(container)}\n"
            f"Recreate it with `vpsctl sandbox down --name {name}` and "
            f"`vpsctl sandbox up --name {name}`."
        ) from None
    current = image_tag()
    if info.image != current:
        say(
            f"note: this box runs {info.image}; sandbox/ now builds {current} "
            "(down and up to use it)"
        )
    return info


# --- the API ---------------------------------------------------------------------------------


def up(name: str = "default", progress: Progress | None = None) -> SandboxInfo:
    """Make sandbox ``name`` run and answer SSH; record and return its connection.

    Idempotent: a running sandbox is verified and returned as it is; a stopped one is
    started. A failed creation removes the half-made container and its volume.
    """
    check_name(name)
    say = progress or _say(name)
    localdocker.ensure_engine()
    if localdocker.inspect_container(container_name(name)) is None:
        ensure_image(say)  # outside the sandboxes lock: the first build takes a minute
    with locked("sandboxes", SANDBOXES_LOCK_TIMEOUT):
        inspected = localdocker.inspect_container(container_name(name))
        info = _resume(name, inspected, say) if inspected is not None else _create(name, say)
    # the boxes' ACME CA (tls: pebble), one per state directory, beside its boxes
    pebble.ensure(say)
    return info


def down(name: str = "default", progress: Progress | None = None) -> None:
    """Remove sandbox ``name``'s container, its volume, key and record. Idempotent."""
    check_name(name)
    say = progress or _say(name)
    localdocker.ensure_engine()
    with locked("sandboxes", SANDBOXES_LOCK_TIMEOUT):
        inspected = localdocker.inspect_container(container_name(name))
        if inspected is not None:
            if inspected.get("Config", {}).get("Labels", {}).get(LABEL) != name:
                raise SandboxError(
                    f"a container named {container_name(name)} exists but is not vpsctl "
                    f"sandbox {name!r}; not removing it"
                )
            localdocker.remove_container(container_name(name))
            say(f"removed container {container_name(name)}")
        if localdocker.remove_volume(volume_name(name)):
            say(f"removed volume {volume_name(name)}")
        for path in (
            state_path(name),
            key_path(name),
            key_path(name).with_name(key_path(name).name + ".pub"),
            known_hosts_path(name),
        ):
            path.unlink(missing_ok=True)
        if not recorded():  # the last box of this state directory: its ACME CA goes too
            pebble.down(say)


def recorded() -> list[str]:
    """The names of every sandbox recorded in :func:`state_dir`."""
    return sorted(p.stem for p in state_dir().glob("*.json"))


def load(name: str = "default") -> SandboxInfo:
    """The recorded connection of sandbox ``name`` (no live check)."""
    check_name(name)
    record = _read_record(name)
    if record is None:
        raise SandboxNotFound(
            f"no sandbox {name!r} is recorded in {display_path(state_dir())}/: "
            f"start it with `vpsctl sandbox up --name {name}`"
        )
    return record


def status(name: str = "default") -> SandboxInfo | None:
    """The recorded connection with live ``running``/``ssh_ready``; None when not recorded."""
    check_name(name)
    record = _read_record(name)
    if record is None:
        return None
    running = False
    if localdocker.engine_running():
        inspected = localdocker.inspect_container(record.container)
        running = _is_running(inspected) and (inspected or {}).get("Id") == record.container_id
    ssh_ready = running and record.probe(5.0) is None
    return dataclasses.replace(record, running=running, ssh_ready=ssh_ready)


# --- the CLI ---------------------------------------------------------------------------------


def _show(info: SandboxInfo, as_json: bool) -> None:
    if as_json:
        data = info.to_json()
        data.update(running=info.running, ssh_ready=info.ssh_ready)
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    state = "running" if info.running else "not running"
    ssh = "answers" if info.ssh_ready else "does not answer"
    ports = ", ".join(f"{box}->{ADDRESS}:{host}" for box, host in sorted(info.ports.items()))
    rows = [
        ("name", info.name),
        ("container", f"{info.container} ({state}, {info.container_id[:12]})"),
        ("image", info.image),
        ("hostname", info.hostname),
        ("ssh", f"{info.user}@{info.address}:{info.ssh_port} ({ssh})"),
        ("ports", ports),
        ("key", str(info.key_path)),
        ("known_hosts", str(info.known_hosts_path)),
        ("created", info.created),
        ("login", shlex.join(info.ssh_command())),
    ]
    sys.stdout.write("".join(f"{key + ':':<13}{value}\n" for key, value in rows))


def cmd_up(args: argparse.Namespace) -> int:
    """``vpsctl sandbox up``: make the box run and answer SSH; print its connection."""
    _show(up(args.name), args.json)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """``vpsctl sandbox down``: remove the box, its volume and its record."""
    down(args.name)
    print(f"sandbox {args.name}: down", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """``vpsctl sandbox status``: the recorded connection; exit 1 unless it runs and answers."""
    info = status(args.name)
    if info is None:
        container = container_name(args.name)
        exists = localdocker.engine_running() and localdocker.inspect_container(container)
        hint = (
            f"its container {container} exists: `vpsctl sandbox up --name {args.name}` "
            "records it here"
            if exists
            else f"`vpsctl sandbox up --name {args.name}` makes it"
        )
        print(
            f"sandbox {args.name}: absent (nothing recorded in {display_path(state_dir())}/; "
            f"{hint})",
            file=sys.stderr,
        )
        return 1
    _show(info, args.json)
    if not info.running:
        print(f"sandbox {args.name}: the container is not running", file=sys.stderr)
        return 1
    if not info.ssh_ready:
        print(f"sandbox {args.name}: sshd does not accept the sandbox key", file=sys.stderr)
        return 1
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``vpsctl sandbox up|down|status`` to the CLI's subcommands."""
    p = sub.add_parser("sandbox", help="disposable Debian 13 VPS boxes as local containers")
    actions = p.add_subparsers(dest="sandbox_command", required=True, metavar="ACTION")

    def named(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument(
            "--name", default="default", type=_name_arg, help="sandbox name (default: default)"
        )
        return parser

    u = named(actions.add_parser("up", help="start the box (build its image once); idempotent"))
    u.add_argument("--json", action="store_true", help="print the connection as JSON")
    u.set_defaults(func=cmd_up)
    s = named(actions.add_parser("status", help="the recorded connection; exit 1 if not up"))
    s.add_argument("--json", action="store_true", help="print the connection as JSON")
    s.set_defaults(func=cmd_status)
    d = named(actions.add_parser("down", help="remove the box, its volume and record"))
    d.set_defaults(func=cmd_down)


def _name_arg(value: str) -> str:
    try:
        return check_name(value)
    except SandboxError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
