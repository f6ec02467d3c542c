"""Bootstrap: a bare Debian 13 or Ubuntu 22.04/24.04 host → ready for the studio.

Packages (Docker and compose v2 from the distribution, sqlite3, restic, …), Docker enabled,
a swap file and ``vm.swappiness``, the time zone, unattended security upgrades, SSH keys
only, and a firewall that allows only the spec's open ports, docker-published ports
included (its rules come from :mod:`vpsctl.core.firewall`, which the audit compares the box
with); on a swarm node, also the swarm's ports and ESP from the other nodes' addresses only.
Every step is idempotent: a second run changes nothing. Any other OS is refused before
anything is changed, naming what was found and what is supported.

vpsctl runs it through its pyinfra adapter (``vpsctl apply --only bootstrap``). It also runs
with the pyinfra CLI by hand, reading the settings from host data::

    pyinfra --data vpsctl_bootstrap='{"timezone": "UTC", "swap_bytes": 1073741824, ...}' \\
        @ssh/203.0.113.24 deploys/bootstrap.py

Inside a container (the sandbox VPS), ``swapon`` and ``sysctl -w`` would change the kernel
of the machine hosting it, so there the swap file and the sysctl file are written but not
activated; a real VPS gets both.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyinfra.api.deploy import deploy
from pyinfra.context import ctx_host, host
from pyinfra.facts.files import File
from pyinfra.facts.server import Command, LinuxDistribution
from pyinfra.operations import apt, files, server, systemd

from vpsctl.core import firewall
from vpsctl.errors import VpsctlError

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
SWAPFILE = "/swapfile"
FIREWALL = "/usr/local/sbin/vpsctl-firewall"

# The Docker CLI and the compose v2 plugin, by os-release ID and VERSION_ID: what each
# release calls them (Debian 13 split the CLI out of docker.io; Ubuntu ships it inside).
# Debian 12's docker-compose is 1.29 (Python, compose v1): not what vpsctl drives.
DOCKER_PACKAGES = {
    ("debian", "13"): ["docker-cli", "docker-compose"],
    ("ubuntu", "24.04"): ["docker-compose-v2"],
    ("ubuntu", "22.04"): ["docker-compose-v2"],
}
SUPPORTED = "Debian 13, Ubuntu 22.04 or Ubuntu 24.04"

BASE_PACKAGES = [
    "ca-certificates",
    "curl",
    "docker.io",
    "iproute2",  # ss: the audit reads the listening sockets
    "iptables",
    "restic",
    "sqlite3",
    "unattended-upgrades",
]


@dataclass(frozen=True)
class Settings:
    """What the bootstrap needs from the spec."""

    timezone: str
    swap_bytes: int
    swappiness: int
    open_ports: tuple[int, ...]
    udp_ports: tuple[int, ...] = ()  # only what firewall.ports_for derives from the spec
    # The other swarm nodes' addresses: the swarm's ports and ESP are let in from them only.
    # Left out of the JSON when empty: a single box's settings (and their hash) stay as
    # they were before swarms.
    swarm_peers: tuple[str, ...] = ()
    # A swarm node (with or without peers: a cluster of one node). Left out when False.
    swarm_node: bool = False
    # The rendered firewall script's digest: part of the settings (and of the hash apply
    # records on the box), so a vpsctl with different rules bootstraps the box again.
    firewall_sha256: str = field(init=False, default="")

    def __post_init__(self) -> None:
        digest = hashlib.sha256(firewall.script(self.ports).encode()).hexdigest()
        object.__setattr__(self, "firewall_sha256", digest)

    @property
    def ports(self) -> firewall.Ports:
        """What the firewall lets in."""
        return firewall.Ports(
            tuple(sorted(set(self.open_ports))),
            tuple(sorted(self.udp_ports)),
            self.swarm_peers,
            self.swarm_node,
        )

    def as_data(self) -> dict[str, Any]:
        """The settings as plain data (``swarm_peers`` and ``swarm_node`` only when set)."""
        data = asdict(self)
        if not self.swarm_peers:
            del data["swarm_peers"]
        if not self.swarm_node:
            del data["swarm_node"]
        return data

    def to_json(self) -> str:
        """For ``pyinfra --data vpsctl_bootstrap=…``."""
        return json.dumps(self.as_data())

    @classmethod
    def from_data(cls, data: Any) -> Settings:
        """From host data (a JSON string or a mapping)."""
        raw = json.loads(data) if isinstance(data, str) else dict(data)
        raw["open_ports"] = tuple(raw["open_ports"])
        raw["udp_ports"] = tuple(raw.get("udp_ports", ()))
        raw["swarm_peers"] = tuple(raw.get("swarm_peers", ()))
        raw["swarm_node"] = bool(raw.get("swarm_node", False))
        raw.pop("firewall_sha256", None)  # derived, never taken from outside
        return cls(**raw)


def _asset(name: str) -> io.BytesIO:
    # In-memory bytes, never paths: pyinfra caches local checksums by path per process.
    return io.BytesIO((TEMPLATES / name).read_bytes())


class UnsupportedOS(VpsctlError):
    """The host runs an OS the bootstrap does not provision."""


def packages_for(distro: Any) -> list[str]:
    """The Docker CLI and compose v2 packages for pyinfra's ``LinuxDistribution`` fact (its
    ``release_meta`` holds /etc/os-release); :class:`UnsupportedOS` for anything else."""
    meta = (distro or {}).get("release_meta") or {}
    os_id = str(meta.get("ID") or "").strip().lower()
    version = str(meta.get("VERSION_ID") or "").strip()
    key = (os_id, version)
    if key in DOCKER_PACKAGES:
        return DOCKER_PACKAGES[key]
    name = (distro or {}).get("name")
    found = str(meta.get("PRETTY_NAME") or "").strip() or " ".join(
        str(part) for part in (name, version) if part
    )
    why = (
        ": its docker-compose is v1 (1.29), and vpsctl drives compose v2"
        if key == ("debian", "12")
        else ""
    )
    raise UnsupportedOS(
        f"unsupported host OS {found or 'unknown (no /etc/os-release)'}{why}; the bootstrap "
        f"supports {SUPPORTED}"
    )


def docker_packages() -> list[str]:
    """The Docker CLI and compose v2 packages of the host's distribution."""
    return packages_for(host.get_fact(LinuxDistribution))


def bootstrap_ops(settings: Settings) -> None:
    """Take the current host from bare to ready; changes nothing when it already is."""
    docker = docker_packages()  # first: an unsupported OS is refused before any change
    in_container = bool(
        host.get_fact(Command, command="systemd-detect-virt --container || true").strip()
        not in ("", "none")
    )

    apt.packages(
        name="Packages: docker, compose v2, restic, sqlite3, unattended-upgrades",
        packages=[*BASE_PACKAGES, *docker],
        update=True,
        cache_time=24 * 3600,
        no_recommends=True,
    )
    systemd.service(name="Docker enabled and running", service="docker", running=True, enabled=True)

    server.timezone(name=f"Time zone {settings.timezone}", timezone=settings.timezone)

    files.put(
        name="Unattended security upgrades",
        src=_asset("20auto-upgrades"),
        dest="/etc/apt/apt.conf.d/20auto-upgrades",
        mode="644",
    )

    _swap(settings, in_container)
    _ssh()
    _firewall(settings)


def _swap(settings: Settings, in_container: bool) -> None:
    if settings.swap_bytes > 0:
        existing = host.get_fact(File, path=SWAPFILE)
        if not existing or existing.get("size") != settings.swap_bytes:
            server.shell(
                name=f"Swap file of {settings.swap_bytes // 1024**2} MiB",
                commands=[
                    f"swapoff {SWAPFILE} 2>/dev/null || true",
                    f"rm -f {SWAPFILE}",
                    f"fallocate -l {settings.swap_bytes} {SWAPFILE} || "
                    f"dd if=/dev/zero of={SWAPFILE} bs=1M count={settings.swap_bytes // 1024**2}",
                    f"chmod 600 {SWAPFILE}",
                    f"mkswap {SWAPFILE} >/dev/null",
                ],
            )
        files.line(
            name="Swap file in fstab",
            path="/etc/fstab",
            line=f"{SWAPFILE} none swap sw 0 0",
        )
        if not in_container:
            active = host.get_fact(Command, command="cat /proc/swaps")
            if SWAPFILE not in active:
                server.shell(name="Swap on", commands=[f"swapon {SWAPFILE}"])
    sysctl = files.put(
        name=f"vm.swappiness = {settings.swappiness}",
        src=io.BytesIO(f"vm.swappiness = {settings.swappiness}\n".encode()),
        dest="/etc/sysctl.d/60-vpsctl.conf",
        mode="644",
    )
    if not in_container:
        server.shell(
            name="Apply sysctl settings",
            commands=["sysctl -p /etc/sysctl.d/60-vpsctl.conf"],
            _if=sysctl.did_change,
        )


def _ssh() -> None:
    config = files.put(
        name="SSH: keys only",
        src=_asset("sshd-vpsctl.conf"),
        dest="/etc/ssh/sshd_config.d/10-vpsctl.conf",
        mode="644",
    )
    server.shell(name="SSH config is valid", commands=["sshd -t"], _if=config.did_change)
    systemd.service(name="SSH reloaded", service="ssh", reloaded=True, _if=config.did_change)


def _firewall(settings: Settings) -> None:
    script = files.put(
        name=f"Firewall: only {settings.ports.describe()} from outside",
        src=io.BytesIO(firewall.script(settings.ports).encode()),
        dest=FIREWALL,
        mode="755",
    )
    unit = files.put(
        name="Firewall unit",
        src=_asset("vpsctl-firewall.service"),
        dest="/etc/systemd/system/vpsctl-firewall.service",
        mode="644",
    )
    dropin = files.put(
        name="Firewall re-applied after docker starts",
        src=_asset("docker-firewall.conf"),
        dest="/etc/systemd/system/docker.service.d/20-vpsctl-firewall.conf",
        mode="644",
    )
    systemd.daemon_reload(
        name="systemd reload", _if=lambda: unit.did_change() or dropin.did_change()
    )
    # The live rules, judged as the audit judges them: a box whose rules were changed by
    # hand gets them back, and one already right is left alone.
    live = firewall.parse(host.get_fact(Command, command=firewall.READ_SCRIPT))
    in_place = all(verdict.ok for verdict in firewall.judge(live, settings.ports))
    # Run by hand, not through systemctl: a failure (ip6tables missing while IPv6 is on, a
    # rule the kernel refuses) then fails the deploy with the script's own words.
    server.shell(
        name="Firewall applied",
        commands=[FIREWALL],
        _if=lambda: not in_place or script.did_change() or unit.did_change(),
    )
    systemd.service(
        name="Firewall enabled",
        service="vpsctl-firewall",
        running=True,
        enabled=True,
    )


# What vpsctl's adapter hands to pyinfra's add_deploy.
bootstrap: Any = deploy("vpsctl bootstrap")(bootstrap_ops)

if ctx_host.isset() and host.data.get("vpsctl_bootstrap") is not None:  # type: ignore[no-untyped-call]
    bootstrap_ops(Settings.from_data(host.data.get("vpsctl_bootstrap")))  # the pyinfra CLI
