"""Bootstrap of a bare sandbox box, end to end: `vpsctl apply --only bootstrap` takes a fresh
Debian 13 box to one ready for the studio; a second run changes nothing; from this machine
only ports 22, 80 and 443 of the box answer, docker-published ports included; and a firewall
that cannot be installed fails the bootstrap, in the firewall script's own words."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import on_box, running_box, studio_for, target_of
from tests.helpers import run_cli
from vpsctl.host.remote import Session
from vpsctl.local import standins
from vpsctl.local.sandbox import SandboxInfo

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def box(state_dir: Path) -> Iterator[SandboxInfo]:
    with running_box("boot") as info:
        yield info


@pytest.fixture(scope="module")
def bootstrapped(box: SandboxInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = studio_for(tmp_path_factory.mktemp("studio"), box)
    assert "docker" not in on_box(box, "command -v docker || echo none; echo")  # a fresh VPS
    first = run_cli(root, "apply", "-i", "inventory/sandbox", "--only", "bootstrap", "-y")
    assert first.code == 0, first.err
    assert "changed: Packages: docker, compose v2" in first.err
    assert "changed: Firewall: only tcp 22, 80, 443; udp 443 from outside" in first.err
    return root


def test_second_bootstrap_changes_nothing(bootstrapped: Path) -> None:
    again = run_cli(bootstrapped, "apply", "-i", "inventory/sandbox", "--only", "bootstrap", "-y")
    assert again.code == 0, again.err
    assert "bootstrap: 0 changed," in again.err
    assert "changed:" not in again.err


def test_box_is_ready_for_the_studio(box: SandboxInfo, bootstrapped: Path) -> None:
    assert on_box(box, "docker version --format '{{.Server.Version}}'").startswith("26.")
    assert on_box(box, "docker compose version --short").startswith("2.")
    assert on_box(box, "systemctl is-enabled docker vpsctl-firewall").split() == [
        "enabled",
        "enabled",
    ]
    for tool in ("restic version", "sqlite3 --version", "curl --version"):
        on_box(box, tool)
    assert on_box(box, "stat -c '%a %s' /swapfile").split() == ["600", str(1024**3)]
    assert "/swapfile none swap sw 0 0" in on_box(box, "cat /etc/fstab")
    assert on_box(box, "cat /etc/sysctl.d/60-vpsctl.conf").strip() == "vm.swappiness = 10"
    assert on_box(box, "readlink /etc/localtime").strip().endswith("Europe/Berlin")
    sshd = on_box(box, "sshd -T")
    assert "passwordauthentication no" in sshd
    assert "kbdinteractiveauthentication no" in sshd
    assert "permitrootlogin without-password" in sshd
    assert 'APT::Periodic::Unattended-Upgrade "1";' in on_box(
        box, "cat /etc/apt/apt.conf.d/20auto-upgrades"
    )


def answers(port: int) -> bool:
    """Whether something answers HTTP on 127.0.0.1:port within a few seconds."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=4) as response:
            return bool(response.status)
    except OSError:
        return False


def test_only_22_80_443_answer_from_outside(box: SandboxInfo, bootstrapped: Path) -> None:
    """A docker-published port and a host listener both answer inside the box and are
    dropped from outside; a docker-published 80 answers from outside."""
    tag = standins.ensure_base()
    with Session(target_of(box)) as session:
        session.ship_image(tag)
    on_box(
        box,
        "docker rm -f fw80 fw9000 >/dev/null 2>&1; "
        f"docker run -d --name fw80 -p 80:8080 {tag} python3 -m http.server 8080 && "
        f"docker run -d --name fw9000 -p 9000:8080 {tag} python3 -m http.server 8080 && "
        "(setsid python3 -m http.server 5432 >/dev/null 2>&1 < /dev/null &) && sleep 2",
    )
    inside = on_box(
        box,
        "for p in 80 9000 5432; do curl -s -o /dev/null -w '%{http_code} ' "
        "http://127.0.0.1:$p/; done",
    )
    assert inside.split() == ["200", "200", "200"]  # all three really listen
    assert answers(box.ports[80])
    assert not answers(box.ports[9000])  # published by docker: DOCKER-USER drops it
    assert not answers(box.ports[5432])  # a plain listener on the box: INPUT drops it
    with socket.create_connection(("127.0.0.1", box.ssh_port), timeout=5) as conn:
        assert conn.recv(64).startswith(b"SSH-2.0-")
    # the rules survive a docker restart (docker rebuilds its chains; the drop-in re-applies)
    on_box(box, "systemctl restart docker && sleep 3 && docker start fw80 fw9000 >/dev/null")
    assert not answers(box.ports[9000])
    assert answers(box.ports[80])


def test_a_firewall_that_cannot_be_installed_fails_the_bootstrap(
    box: SandboxInfo, bootstrapped: Path
) -> None:
    """An iptables that refuses (first on root's PATH) fails the bootstrap, naming it; the
    box's rules are untouched, and once iptables works the next bootstrap passes."""
    on_box(box, "iptables -w -I INPUT -p tcp --dport 8081 -j ACCEPT")  # rules to repair
    on_box(
        box,
        "printf '#!/bin/sh\\necho \"iptables: refused\" >&2\\nexit 1\\n' "
        "> /usr/local/sbin/iptables && chmod 755 /usr/local/sbin/iptables",
    )
    try:
        failed = run_cli(
            bootstrapped, "apply", "-i", "inventory/sandbox", "--only", "bootstrap", "-y"
        )
    finally:
        on_box(box, "rm -f /usr/local/sbin/iptables")
    assert failed.code == 1
    assert "Firewall applied failed on" in failed.err, failed.err
    assert "vpsctl-firewall: iptables cannot list INPUT: IPv4 would stay open" in failed.err
    assert "internal error" not in failed.err
    repaired = run_cli(
        bootstrapped, "apply", "-i", "inventory/sandbox", "--only", "bootstrap", "-y"
    )
    assert repaired.code == 0, repaired.err
    assert "changed: Firewall applied" in repaired.err
    assert on_box(box, "iptables -w -S INPUT").splitlines()[1] == "-A INPUT -j VPSCTL-INPUT"


def test_an_unsupported_os_is_refused_by_name_and_nothing_changes(
    box: SandboxInfo, bootstrapped: Path
) -> None:
    """The box claims to be Debian 12 (its /etc/os-release replaced for the test): the
    bootstrap names it and what is supported, and changes nothing."""
    before = on_box(box, "sha256sum /usr/local/sbin/vpsctl-firewall /etc/fstab")
    on_box(
        box,
        "cp -P /etc/os-release /root/os-release.saved && rm /etc/os-release && printf '%s\\n' "
        "'PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"' 'NAME=\"Debian GNU/Linux\"' "
        "'VERSION_ID=\"12\"' 'ID=debian' > /etc/os-release",
    )
    try:
        result = run_cli(
            bootstrapped, "apply", "-i", "inventory/sandbox", "--only", "bootstrap", "-y"
        )
    finally:
        on_box(box, "rm -f /etc/os-release && mv /root/os-release.saved /etc/os-release")
    assert result.code == 1
    assert (
        "unsupported host OS Debian GNU/Linux 12 (bookworm): its docker-compose is v1 (1.29), "
        "and vpsctl drives compose v2; the bootstrap supports Debian 13, Ubuntu 22.04 or "
        "Ubuntu 24.04"
    ) in result.err
    assert "internal error" not in result.err
    assert on_box(box, "sha256sum /usr/local/sbin/vpsctl-firewall /etc/fstab") == before
