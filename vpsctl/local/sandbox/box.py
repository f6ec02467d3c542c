"""A sandbox box's life: create, boot, connect, resume, remove; ``up``/``down``/``status``.

The container runs with exactly the flags that work here (all capabilities but
SYS_RESOURCE and SYS_TIME, no seccomp/apparmor, the host's cgroup tree, a named volume for
``/var/lib/docker`` so the inner engine gets overlay2, ``--memory 8g``). Its ports 22, 80
and 443 are published on 127.0.0.1, and so are the probe ports (9000, 5432): traffic to them
enters the box on eth0, so a test can prove from outside that the box's firewall drops
everything but 22/80/443.

Beside the boxes of a state directory runs their ACME CA, Pebble (:mod:`vpsctl.local.pebble`):
``up`` starts it, the ``down`` of the last box removes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import time
from collections.abc import Mapping
from typing import Any

from vpsctl.local import docker as localdocker
from vpsctl.local import pebble
from vpsctl.local.sandbox import keys
from vpsctl.local.sandbox.image import ensure_image, image_tag
from vpsctl.local.sandbox.lock import SANDBOXES_LOCK_TIMEOUT, locked
from vpsctl.local.sandbox.records import (
    ADDRESS,
    BOX_PORTS,
    LABEL,
    SSH_PORT,
    USER,
    Progress,
    SandboxError,
    SandboxInfo,
    check_name,
    container_name,
    files,
    hostname,
    key_path,
    known_hosts_path,
    read_record,
    recorded,
    say_as,
    volume_name,
    write_known_hosts,
    write_record,
)

MEMORY = "8g"
BOOT_TIMEOUT = 120.0
SSH_TIMEOUT = 60.0
POLL = 0.25


# --- the API ---------------------------------------------------------------------------------


def up(name: str = "default", progress: Progress | None = None) -> SandboxInfo:
    """Make sandbox ``name`` run and answer SSH; record and return its connection.

    Idempotent: a running sandbox is verified and returned as it is; a stopped one is
    started. A failed creation removes the half-made container and its volume.
    """
    check_name(name)
    say = progress or say_as(name)
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
    say = progress or say_as(name)
    localdocker.ensure_engine()
    with locked("sandboxes", SANDBOXES_LOCK_TIMEOUT):
        inspected = localdocker.inspect_container(container_name(name))
        if inspected is not None:
            if not _is_sandbox(inspected, name):
                raise SandboxError(
                    f"a container named {container_name(name)} exists but is not vpsctl "
                    f"sandbox {name!r}; not removing it"
                )
            localdocker.remove_container(container_name(name))
            say(f"removed container {container_name(name)}")
        if localdocker.remove_volume(volume_name(name)):
            say(f"removed volume {volume_name(name)}")
        for path in files(name):
            path.unlink(missing_ok=True)
        if not recorded():  # the last box of this state directory: its ACME CA goes too
            pebble.down(say)


def status(name: str = "default") -> SandboxInfo | None:
    """The recorded connection with live ``running``/``ssh_ready``; None when not recorded."""
    check_name(name)
    record = read_record(name)
    if record is None:
        return None
    running = False
    if localdocker.engine_running():
        inspected = localdocker.inspect_container(record.container)
        running = _is_running(inspected) and (inspected or {}).get("Id") == record.container_id
    ssh_ready = running and probe(record, 5.0) is None
    return dataclasses.replace(record, running=running, ssh_ready=ssh_ready)


def probe(info: SandboxInfo, timeout: float = 5.0) -> str | None:
    """None when sshd lets the sandbox key in (host key checked against the recorded
    known_hosts) and runs a command; otherwise why not."""
    from vpsctl.host import remote  # noqa: PLC0415 - pyinfra loads only when a box is reached

    return remote.probe(info.target(), timeout)


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


# --- making and resuming a box ---------------------------------------------------------------


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
        info = _connect_box(name, _inspect_existing(created_id), image, say)
    except BaseException as exc:
        logs = _last_logs(created_id) if created_id else ""
        _remove_half_made(created_id, volume)
        if isinstance(exc, Exception):
            raise SandboxError(
                f"`vpsctl sandbox up --name {name}` failed while {step}: {exc}{logs}\n"
                "(the half-made container and its volume were removed)"
            ) from None
        raise
    say(f"up in {time.monotonic() - started:.1f}s: {info.user}@{info.address}:{info.ssh_port}")
    return info


def _remove_half_made(container_id: str | None, volume: str) -> None:
    with contextlib.suppress(localdocker.DockerError):
        if container_id:
            localdocker.remove_container(container_id)
        localdocker.remove_volume(volume)


def _resume(name: str, inspected: Mapping[str, Any], say: Progress) -> SandboxInfo:
    """``up`` of a sandbox whose container exists: start it if stopped, re-verify, re-record."""
    container = container_name(name)
    if not _is_sandbox(inspected, name):
        raise SandboxError(
            f"a container named {container} exists but is not vpsctl sandbox {name!r}; "
            "remove or rename it"
        )
    image = str(inspected.get("Config", {}).get("Image", ""))
    record = read_record(name)
    try:
        if not _is_running(inspected):
            say(f"starting the stopped container {container}")
            localdocker.docker("start", container, timeout=120)
            _wait_booted(container, BOOT_TIMEOUT, say)
            inspected = _inspect_existing(container)
        if record is not None and _record_holds(record, inspected):
            say("already up")
            return dataclasses.replace(record, running=True, ssh_ready=True)
        say("re-recording the connection")
        info = _connect_box(name, inspected, image, say)
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


def _record_holds(record: SandboxInfo, inspected: Mapping[str, Any]) -> bool:
    """Whether ``record`` still describes the running container and its key still logs in."""
    return (
        record.container_id == inspected.get("Id")
        and record.ports == _published_ports(inspected)
        and record.key_path.exists()
        and probe(record, 10.0) is None
    )


def _connect_box(name: str, inspected: Mapping[str, Any], image: str, say: Progress) -> SandboxInfo:
    """Install the key, read host keys, wait for sshd, record: the box is usable."""
    container = container_name(name)
    ports = _published_ports(inspected)
    keys.install_key(container, keys.ensure_key(name))
    info = SandboxInfo(
        name=name,
        address=ADDRESS,
        user=USER,
        ssh_port=ports[SSH_PORT],
        ports=ports,
        key_path=key_path(name),
        known_hosts_path=known_hosts_path(name),
        host_keys=keys.read_host_keys(container, ports[SSH_PORT]),
        container=container,
        container_id=str(inspected["Id"]),
        volume=volume_name(name),
        hostname=hostname(name),
        image=image,
        created=_created(inspected),
    )
    # the SSH wait checks the host key against this file: it is written first
    write_known_hosts(info.known_hosts_path, info.host_keys)
    took = _wait_ssh(info, SSH_TIMEOUT)
    say(f"sshd accepted the key after {took:.1f}s")
    write_record(info)
    return dataclasses.replace(info, running=True, ssh_ready=True)


def _created(inspected: Mapping[str, Any]) -> str:
    """The container's creation time as ``YYYY-MM-DDTHH:MM:SSZ`` (Docker's text if odd)."""
    created = str(inspected.get("Created", ""))
    with contextlib.suppress(ValueError):
        stamp = dt.datetime.fromisoformat(created[:26].rstrip("Z") + "+00:00")
        created = stamp.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return created


# --- waiting for the box ---------------------------------------------------------------------


def _wait_booted(container: str, timeout: float, say: Progress) -> str:
    """Wait until systemd has finished booting the box; return its state (running/degraded)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        last = _system_state(container)
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


def _system_state(container: str) -> str:
    """``systemctl is-system-running`` of the box; raise when its container stopped."""
    inspected = localdocker.inspect_container(container)
    if not _is_running(inspected):
        state = (inspected or {}).get("State", {})
        raise SandboxError(
            f"the container stopped while booting (exit code {state.get('ExitCode')})"
        )
    try:
        proc = localdocker.docker_exec(container, ["systemctl", "is-system-running"], timeout=10)
    except localdocker.DockerError as exc:
        return str(exc)
    return (proc.stdout.strip() or proc.stderr.strip() or "no answer").splitlines()[-1]


def _wait_ssh(info: SandboxInfo, timeout: float) -> float:
    """Wait until sshd accepts the key (host key verified); return the seconds it took."""
    from vpsctl.host.remote import HOST_KEY_CHANGED  # noqa: PLC0415 - pyinfra only when needed

    started = time.monotonic()
    deadline = started + timeout
    why = "no attempt"
    while time.monotonic() < deadline:
        found = probe(info, max(1.0, min(10.0, deadline - time.monotonic())))
        if found is None:
            return time.monotonic() - started
        why = found
        if found == HOST_KEY_CHANGED:
            break
        time.sleep(POLL)
    raise SandboxError(
        f"sshd on {info.address}:{info.ssh_port} did not accept the sandbox key: {why}"
    )


# --- reading the container -------------------------------------------------------------------


def _is_running(inspected: Mapping[str, Any] | None) -> bool:
    return bool(inspected and inspected.get("State", {}).get("Running"))


def _is_sandbox(inspected: Mapping[str, Any], name: str) -> bool:
    """Whether the container carries vpsctl's label for sandbox ``name``."""
    return bool(inspected.get("Config", {}).get("Labels", {}).get(LABEL) == name)


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
