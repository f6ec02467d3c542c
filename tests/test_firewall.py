"""The firewall: derived from the spec alone, installed by a script that fails rather than
leave a family open, and read back by the audit against the same rules.

The script is run for real here: with fake ``iptables``/``ip6tables`` on PATH (to make
them fail, or vanish) and, where this machine allows it, with the real ones inside a
private network namespace (``unshare -n``), whose listing the audit's judge then reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyinfra.facts.server import LinuxDistribution

from tests.helpers import ROOT
from vpsctl.core import firewall
from vpsctl.errors import VpsctlError
from vpsctl.ops import apply
from vpsctl.spec.loader import load_spec
from vpsctl.spec.studio import Spec

GOLDEN_SECRETS = ROOT / "tests/golden/prod.secrets.env.fixture"
STUDIO = firewall.Ports((22, 80, 443), (443,))


@pytest.fixture
def prod(studio: Path) -> Iterator[Path]:
    """The example studio's prod inventory with the golden (fake) secrets."""
    secrets = studio / "inventory/prod/secrets.env"
    shutil.copy(GOLDEN_SECRETS, secrets)
    secrets.chmod(0o600)
    yield studio


def edited(root: Path, open_ports: str, edge_udp: bool) -> Spec:
    """The prod spec with host.yaml's ``open_ports`` and the edge's HTTP/3 port changed."""
    host = root / "inventory/prod/host.yaml"
    text = host.read_text()
    assert "open_ports: [22, 80, 443]" in text
    host.write_text(text.replace("open_ports: [22, 80, 443]", f"open_ports: {open_ports}"))
    edge = root / "stacks/edge.yaml"
    text = edge.read_text()
    udp = "      - {published: 443, target: 443, protocol: udp}   # HTTP/3\n"
    assert udp in text
    if not edge_udp:
        text = text.replace(udp, "")
    if "443" not in open_ports:
        text = text.replace("      - {published: 443, target: 443}\n", "")
    edge.write_text(text)
    return load_spec(root / "inventory/prod")


# ── what is open: from the spec, never a default ─────────────────────────────────────────


def test_the_studio_opens_udp_443_because_its_edge_publishes_http3(prod: Path) -> None:
    spec = load_spec(prod / "inventory/prod")
    assert firewall.ports_for(spec) == STUDIO
    settings = apply.bootstrap_settings(spec)
    assert (settings.open_ports, settings.udp_ports) == ((22, 80, 443), (443,))
    script = firewall.script(settings.ports)
    assert "-A VPSCTL-INPUT -p udp -m udp --dport 443 -j RETURN" in script
    assert "-A VPSCTL-FORWARD -p udp -m conntrack --ctorigdstport 443 -j RETURN" in script


@pytest.mark.parametrize(
    ("open_ports", "edge_udp"),
    [("[22, 80]", False), ("[22, 80, 443]", False)],
    ids=["443-not-open", "443-open-but-no-http3"],
)
def test_no_udp_is_opened_unless_the_spec_asks(prod: Path, open_ports: str, edge_udp: bool) -> None:
    spec = edited(prod, open_ports, edge_udp)
    ports = firewall.ports_for(spec)
    assert ports.udp == ()
    settings = apply.bootstrap_settings(spec)
    assert settings.udp_ports == ()
    script = firewall.script(settings.ports)
    assert "-p udp" not in script
    assert not any(
        "udp" in rule for rules in firewall.chain_rules(6, ports).values() for rule in rules
    )
    tcp = [int(p) for p in open_ports.strip("[]").split(", ")]
    assert ports.tcp == tuple(tcp)
    for port in tcp:
        assert f"-A VPSCTL-INPUT -p tcp -m tcp --dport {port} -j RETURN" in script


def test_bootstrap_settings_from_cli_data_default_to_no_udp() -> None:
    bootstrap = apply._deploy_module("bootstrap")
    data = '{"timezone": "UTC", "swap_bytes": 0, "swappiness": 10, "open_ports": [22, 443]}'
    settings = bootstrap.Settings.from_data(data)
    assert settings.udp_ports == ()
    # the script's digest is part of the settings: a changed rule set re-bootstraps the box
    again = bootstrap.Settings.from_data(settings.to_json())
    assert again == settings and len(settings.firewall_sha256) == 64
    other = bootstrap.Settings.from_data(data.replace("[22, 443]", "[22, 443, 8443]"))
    assert other.firewall_sha256 != settings.firewall_sha256


# ── the script: fails rather than leave a family open ────────────────────────────────────

FAKE = """#!/bin/sh
echo "$(basename "$0") $*" >> "$LOG"
case " $* " in
  *" -S "*) exit 0 ;;
esac
{fail}
exit 0
"""


def tools(tmp_path: Path, fake: dict[str, str]) -> dict[str, str]:
    """An environment whose PATH holds only the fakes and the few tools the script uses."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "cat", "grep", "cut", "tail", "basename"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    for name, fail in fake.items():
        path = bin_dir / name
        path.write_text(FAKE.format(fail=fail))
        path.chmod(0o755)
    return {"PATH": str(bin_dir), "LOG": str(tmp_path / "calls.log")}


def proc_tree(tmp_path: Path, ipv6: str) -> Path:
    """A fake /proc: ``ipv6`` is ``on``, ``disabled`` (sysctl everywhere) or ``absent``."""
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    if ipv6 == "absent":
        return proc
    (proc / "net/if_inet6").write_text("")
    for interface in ("all", "default", "lo", "eth0"):
        conf = proc / "sys/net/ipv6/conf" / interface
        conf.mkdir(parents=True)
        (conf / "disable_ipv6").write_text("1\n" if ipv6 == "disabled" else "0\n")
    return proc


def run_script(
    tmp_path: Path, fake: dict[str, str], ipv6: str, ports: firewall.Ports = STUDIO
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "vpsctl-firewall"
    script.write_text(firewall.script(ports, proc=str(proc_tree(tmp_path, ipv6))))
    return subprocess.run(
        ["sh", str(script)],
        env=tools(tmp_path, fake),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def calls(tmp_path: Path, tool: str) -> list[str]:
    log = tmp_path / "calls.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line.removeprefix(f"{tool} -w ") for line in lines if line.startswith(f"{tool} ")]


def test_the_script_installs_exactly_the_rules_the_audit_expects(tmp_path: Path) -> None:
    result = run_script(tmp_path, {"iptables": "", "ip6tables": ""}, "on")
    assert result.returncode == 0, result.stderr
    for tool, family in (("iptables", 4), ("ip6tables", 6)):
        appended = [c for c in calls(tmp_path, tool) if c.startswith("-A ")]
        expected = firewall.chain_rules(family, STUDIO)
        assert appended == expected[firewall.INPUT_CHAIN] + expected[firewall.FORWARD_CHAIN]
        assert "-I INPUT 1 -j VPSCTL-INPUT" in calls(tmp_path, tool)
        assert "-I DOCKER-USER 1 -j VPSCTL-FORWARD" in calls(tmp_path, tool)


def test_a_failing_ip6tables_fails_the_script_when_ipv6_is_on(tmp_path: Path) -> None:
    result = run_script(
        tmp_path,
        {"iptables": "", "ip6tables": 'case "$*" in *" -A "*) exit 1 ;; esac'},
        "on",
    )
    assert result.returncode != 0
    assert "vpsctl-firewall: ip6tables -A VPSCTL-INPUT -i lo -j RETURN: failed" in result.stderr
    assert "IPv6 is on and its rules could not be installed" in result.stderr


def test_a_missing_ip6tables_fails_the_script_when_ipv6_is_on(tmp_path: Path) -> None:
    result = run_script(tmp_path, {"iptables": ""}, "on")
    assert result.returncode != 0
    assert "ip6tables is not installed: IPv6 would stay open" in result.stderr
    assert calls(tmp_path, "iptables")  # IPv4 was done first, then the failure said so


@pytest.mark.parametrize("ipv6", ["absent", "disabled"])
def test_no_ip6tables_is_fine_only_when_ipv6_is_off_in_the_kernel(
    tmp_path: Path, ipv6: str
) -> None:
    result = run_script(tmp_path, {"iptables": "", "ip6tables": "exit 1"}, ipv6)
    assert result.returncode == 0, result.stderr
    assert "no IPv6 rules, and none needed: IPv6 is off in the kernel" in result.stderr


def test_one_interface_with_ipv6_on_is_ipv6_on(tmp_path: Path) -> None:
    proc = proc_tree(tmp_path / "p", "disabled")
    (proc / "sys/net/ipv6/conf/eth0/disable_ipv6").write_text("0\n")
    script = tmp_path / "vpsctl-firewall"
    script.write_text(firewall.script(STUDIO, proc=str(proc)))
    result = subprocess.run(
        ["sh", str(script)],
        env=tools(tmp_path, {"iptables": "", "ip6tables": "exit 1"}),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "IPv6 is on" in result.stderr


def test_a_failing_iptables_fails_the_script(tmp_path: Path) -> None:
    result = run_script(
        tmp_path, {"iptables": 'case "$*" in *DROP*) exit 1 ;; esac', "ip6tables": ""}, "absent"
    )
    assert result.returncode != 0
    assert "vpsctl-firewall: iptables -A VPSCTL-INPUT -j DROP: failed" in result.stderr


# ── the audit's judge ────────────────────────────────────────────────────────────────────


def listing_text(ports: firewall.Ports = STUDIO, tamper: dict[int, list[str]] | None = None) -> str:
    """What READ_SCRIPT prints on a box the bootstrap set up for ``ports`` (plus docker's
    own FORWARD and DOCKER-USER rules), with ``tamper`` lines appended per family."""
    out = []
    for family in (4, 6):
        rules = firewall.chain_rules(family, ports)
        out += [
            f"{firewall.MARK} {family}",
            "-P INPUT ACCEPT",
            "-P FORWARD ACCEPT",
            "-N DOCKER-USER",
            "-N VPSCTL-FORWARD",
            "-N VPSCTL-INPUT",
            "-A INPUT -j VPSCTL-INPUT",
            "-A FORWARD -j DOCKER-USER",
            "-A FORWARD -o docker0 -j DOCKER",
            "-A DOCKER-USER -j VPSCTL-FORWARD",
            "-A DOCKER-USER -j RETURN",
            *rules[firewall.FORWARD_CHAIN],
            *rules[firewall.INPUT_CHAIN],
            *(tamper or {}).get(family, []),
        ]
    return "\n".join([*out, f"{firewall.MARK}-ipv6 on", f"{firewall.MARK}-end", ""])


def verdicts(text: str, ports: firewall.Ports = STUDIO) -> dict[str, firewall.Verdict]:
    return {v.name: v for v in firewall.judge(firewall.parse(text), ports)}


def test_the_rules_the_bootstrap_installs_pass() -> None:
    found = verdicts(listing_text())
    assert set(found) == {
        "firewall IPv4 INPUT",
        "firewall IPv4 DOCKER-USER",
        "firewall IPv6 INPUT",
        "firewall IPv6 DOCKER-USER",
    }
    assert all(v.ok for v in found.values()), found
    assert found["firewall IPv4 INPUT"].threshold == (
        "only tcp 22, 80, 443; udp 443 from outside, the rest dropped"
    )


def test_a_rule_ahead_of_vpsctls_chain_fails_naming_it() -> None:
    text = listing_text().replace(
        "-A INPUT -j VPSCTL-INPUT",
        "-A INPUT -p tcp -m tcp --dport 8081 -j ACCEPT\n-A INPUT -j VPSCTL-INPUT",
        1,
    )
    found = verdicts(text)
    bad = found["firewall IPv4 INPUT"]
    assert not bad.ok
    assert "ahead of VPSCTL-INPUT: -A INPUT -p tcp -m tcp --dport 8081 -j ACCEPT" in bad.value
    assert firewall.REAPPLY.format(inventory="INVENTORY") in bad.value
    assert found["firewall IPv6 INPUT"].ok


def test_a_flushed_docker_user_and_an_extra_port_fail() -> None:
    lines = listing_text().splitlines()
    first_v6 = lines.index(f"{firewall.MARK} 6")
    v4, v6 = lines[:first_v6], lines[first_v6:]
    v4 = [line for line in v4 if not line.startswith("-A DOCKER-USER")]
    extra = "-A VPSCTL-INPUT -p tcp -m tcp --dport 5432 -j RETURN"
    v6.insert(v6.index("-A VPSCTL-INPUT -j DROP"), extra)
    found = verdicts("\n".join(v4 + v6))
    assert found["firewall IPv4 DOCKER-USER"].value.startswith(
        "DOCKER-USER does not jump to VPSCTL-FORWARD"
    )
    assert not found["firewall IPv6 INPUT"].ok
    assert f"not in the spec: {extra}" in found["firewall IPv6 INPUT"].value


def test_missing_rules_a_bypassed_docker_user_and_a_closed_port() -> None:
    text = listing_text().replace(
        "-A FORWARD -j DOCKER-USER", "-A FORWARD -j ACCEPT\n-A FORWARD -j DOCKER-USER", 1
    )
    text = text.replace("-A VPSCTL-INPUT -p udp -m udp --dport 443 -j RETURN\n", "")
    found = verdicts(text)
    assert "ahead of DOCKER-USER: -A FORWARD -j ACCEPT" in found["firewall IPv4 DOCKER-USER"].value
    assert (
        "missing: -A VPSCTL-INPUT -p udp -m udp --dport 443 -j RETURN"
        in found["firewall IPv4 INPUT"].value
    )
    # the same box judged against a spec without HTTP/3: the udp rule is then the stray one
    no_udp = verdicts(listing_text(), firewall.Ports((22, 80, 443), ()))
    assert "not in the spec: -A VPSCTL-FORWARD -p udp" in no_udp["firewall IPv4 DOCKER-USER"].value


def test_no_ip6tables_fails_unless_ipv6_is_off() -> None:
    text = listing_text().split(f"{firewall.MARK} 6")[0] + (
        f"{firewall.MARK} 6\nsh: 1: ip6tables: not found\n{firewall.MARK}-error 6\n"
        f"{firewall.MARK}-ipv6 on\n{firewall.MARK}-end\n"
    )
    found = verdicts(text)
    assert found["firewall IPv6"] == firewall.Verdict(
        "firewall IPv6",
        False,
        "ip6tables -S failed: sh: 1: ip6tables: not found",
        "only tcp 22, 80, 443; udp 443 from outside, the rest dropped",
    )
    off = verdicts(text.replace(f"{firewall.MARK}-ipv6 on", f"{firewall.MARK}-ipv6 off"))
    assert off["firewall IPv6"].ok and off["firewall IPv6"].value == "IPv6 is off in the kernel"


def test_a_read_cut_short_is_a_failure() -> None:
    text = listing_text().replace(f"{firewall.MARK}-end\n", "")
    assert not any(v.ok for v in verdicts(text).values())


def netns_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("iptables") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-n", "iptables", "-w", "-S"], capture_output=True, timeout=30, check=False
    )
    return probe.returncode == 0


@pytest.mark.skipif(not netns_available(), reason="needs root, unshare and iptables")
def test_the_real_iptables_in_a_private_network_namespace(tmp_path: Path) -> None:
    """The script with the real iptables and ip6tables, in a network namespace of its own
    (this machine's firewall is never touched): the audit's read of it passes; a rule put
    ahead and a flushed DOCKER-USER fail, named; the script run again repairs both."""
    script = tmp_path / "fw.sh"
    script.write_text(firewall.script(STUDIO))
    read = tmp_path / "read.sh"
    read.write_text(firewall.READ_SCRIPT)
    steps = (
        f"sh {script} && sh {script} && sh {read} && echo @@step && "
        "iptables -w -I INPUT -p tcp --dport 8081 -j ACCEPT && iptables -w -F DOCKER-USER && "
        f"sh {read} && echo @@step && sh {script} && sh {read}"
    )
    env = {**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", steps],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    installed, tampered, repaired = result.stdout.split("@@step\n")
    assert all(v.ok for v in verdicts(installed).values()), verdicts(installed)
    bad = verdicts(tampered)
    assert "ahead of VPSCTL-INPUT: -A INPUT -p tcp -m tcp --dport 8081 -j ACCEPT" in (
        bad["firewall IPv4 INPUT"].value
    )
    assert "does not jump to VPSCTL-FORWARD" in bad["firewall IPv4 DOCKER-USER"].value
    assert bad["firewall IPv6 INPUT"].ok
    assert all(v.ok for v in verdicts(repaired).values()), verdicts(repaired)


# ── ports open to the outside ────────────────────────────────────────────────────────────


def test_a_stray_container_publishing_a_port_is_named(prod: Path) -> None:
    spec = load_spec(prod / "inventory/prod")
    edge = {"com.docker.compose.project": "edge", "com.docker.compose.service": "caddy"}
    bindings: dict[str, Any] = {
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "80"}],
        "443/tcp": [{"HostIp": "0.0.0.0", "HostPort": "443"}],
        "443/udp": [{"HostIp": "0.0.0.0", "HostPort": "443"}],
        "2019/tcp": None,
    }
    ours, stray = firewall.container_exposures("edge-caddy-1", edge, bindings, spec)
    assert [(e.port, e.protocol) for e in ours] == [(443, "tcp"), (443, "udp"), (80, "tcp")]
    assert stray == []
    ours, stray = firewall.container_exposures(
        "stray",
        {},
        {
            "80/tcp": [
                {"HostIp": "0.0.0.0", "HostPort": "8081"},
                {"HostIp": "::", "HostPort": "8081"},
            ],
            "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],  # loopback: not outside
        },
        spec,
    )
    assert ours == []
    assert stray == [firewall.Exposure(8081, "tcp", ("0.0.0.0", "::"), "container stray")]
    assert stray[0].where() == "0.0.0.0:8081, [::]:8081 (tcp)"
    # a declared service publishing a port the spec does not give it is stray too
    _, stray = firewall.container_exposures(
        "edge-caddy-1", edge, {"8443/tcp": [{"HostIp": "", "HostPort": "8443"}]}, spec
    )
    assert stray == [firewall.Exposure(8443, "tcp", ("*",), "container edge-caddy-1")]


def test_listening_sockets_outside_open_ports_are_named() -> None:
    lines = [
        'LISTEN 0 4096 0.0.0.0:443 0.0.0.0:* users:(("docker-proxy",pid=3654,fd=4))',
        'LISTEN 0 4096 0.0.0.0:8081 0.0.0.0:* users:(("docker-proxy",pid=3655,fd=4))',
        'LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=97,fd=6))',
        'LISTEN 0 128 [::]:22 [::]:* users:(("sshd",pid=97,fd=7))',
        'LISTEN 0 4096 127.0.0.1:37645 0.0.0.0:* users:(("containerd",pid=601,fd=10))',
        'LISTEN 0 4096 127.0.0.53%lo:53 0.0.0.0:* users:(("systemd-resolve",pid=5,fd=1))',
        'LISTEN 0 5 [::1]:631 [::]:* users:(("cupsd",pid=7,fd=7))',
        'LISTEN 0 5 *:5432 *:* users:(("python3",pid=900,fd=3))',
        "LISTEN 0 5 10.0.0.5:9000 0.0.0.0:*",
    ]
    ours, stray = firewall.listener_exposures(lines, STUDIO)
    assert {(e.port, e.owner) for e in ours} == {(22, "process sshd")}
    assert stray == [
        firewall.Exposure(5432, "tcp", ("*",), "process python3"),
        firewall.Exposure(9000, "tcp", ("10.0.0.5",), "process ?"),
    ]
    assert [e.addresses for e in ours] == [("0.0.0.0", "::")]


# ── an unsupported OS: a clear error before anything changes ─────────────────────────────


def distro(os_release: str) -> Any:
    """pyinfra's LinuxDistribution fact, from an /etc/os-release as the host would print it."""
    output = f"/etc/os-release\n{os_release}\n---".splitlines()
    return LinuxDistribution().process(output)


DEBIAN_12 = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian'  # noqa: E501


@pytest.mark.parametrize(
    ("os_release", "found"),
    [
        (DEBIAN_12, "Debian GNU/Linux 12 (bookworm): its docker-compose is v1 (1.29)"),
        (
            'PRETTY_NAME="Rocky Linux 9.3 (Blue Onyx)"\nNAME="Rocky Linux"\nVERSION_ID="9.3"\n'
            'ID="rocky"\nID_LIKE="rhel centos fedora"',
            "Rocky Linux 9.3 (Blue Onyx)",
        ),
        (
            'PRETTY_NAME="Ubuntu 23.10"\nNAME="Ubuntu"\nVERSION_ID="23.10"\nID=ubuntu',
            "Ubuntu 23.10",
        ),
        (
            'NAME="Ubuntu"\nVERSION_ID="24.10"\nID=ubuntu',  # same major as a supported one
            "Ubuntu 24.10",
        ),
        (
            'PRETTY_NAME="Debian GNU/Linux trixie/sid"\nNAME="Debian GNU/Linux"\nID=debian',
            "Debian GNU/Linux trixie/sid",
        ),
    ],
    ids=["debian-12", "rocky-9", "ubuntu-23.10", "ubuntu-24.10", "debian-sid"],
)
def test_an_unsupported_os_is_named_with_what_is_supported(os_release: str, found: str) -> None:
    bootstrap = apply._deploy_module("bootstrap")
    with pytest.raises(VpsctlError) as caught:  # a user-facing error, not "internal error"
        bootstrap.packages_for(distro(os_release))
    assert isinstance(caught.value, bootstrap.UnsupportedOS)
    assert str(caught.value).startswith(f"unsupported host OS {found}")
    assert str(caught.value).endswith(
        "the bootstrap supports Debian 13, Ubuntu 22.04 or Ubuntu 24.04"
    )


def test_no_os_release_at_all_is_named_too() -> None:
    bootstrap = apply._deploy_module("bootstrap")
    with pytest.raises(bootstrap.UnsupportedOS, match=r"unknown \(no /etc/os-release\)"):
        bootstrap.packages_for(LinuxDistribution().process([]))


@pytest.mark.parametrize(
    ("os_release", "packages"),
    [
        (
            'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nVERSION_ID="13"\nID=debian',
            ["docker-cli", "docker-compose"],
        ),
        ('NAME="Ubuntu"\nVERSION_ID="22.04"\nID=ubuntu', ["docker-compose-v2"]),
        ('NAME="Ubuntu"\nVERSION_ID="24.04"\nID=ubuntu', ["docker-compose-v2"]),
    ],
)
def test_the_supported_systems(os_release: str, packages: list[str]) -> None:
    assert apply._deploy_module("bootstrap").packages_for(distro(os_release)) == packages


# ── swarm peers: the swarm's ports and ESP from the other nodes only ─────────────────────

PEERS = firewall.Ports((22, 80, 443), (443,), ("172.17.0.5", "fd00::4", "172.17.0.4"))
# what the script and the settings were before swarm peers existed (the commit before them)
SINGLE_BOX_SCRIPT_SHA256 = "5dfcaee8c9f35ea579ef332a4608654a3cb1fc6ebd3592b819d515af1748a4ee"
SINGLE_BOX_SETTINGS_JSON = (
    '{"timezone": "UTC", "swap_bytes": 1024, "swappiness": 10, "open_ports": [22, 80, 443], '
    '"udp_ports": [443], "firewall_sha256": "' + SINGLE_BOX_SCRIPT_SHA256 + '"}'
)
SINGLE_BOX_SETTINGS_HASH = "335a4fef8d7cd68273d6172fb887a4f8535f7e84452f0a8de2280e5db417af9a"


def test_without_peers_the_script_and_the_settings_are_as_before() -> None:
    assert hashlib.sha256(firewall.script(STUDIO).encode()).hexdigest() == (
        SINGLE_BOX_SCRIPT_SHA256
    )
    bootstrap = apply._deploy_module("bootstrap")
    settings = bootstrap.Settings(
        timezone="UTC", swap_bytes=1024, swappiness=10, open_ports=(22, 80, 443), udp_ports=(443,)
    )
    assert settings.to_json() == SINGLE_BOX_SETTINGS_JSON
    assert apply.settings_hash(settings) == SINGLE_BOX_SETTINGS_HASH
    assert "docker_gwbridge" not in firewall.script(STUDIO)


def test_peers_get_the_swarm_ports_and_esp_in_their_own_family_only() -> None:
    assert PEERS.peers == ("172.17.0.4/32", "172.17.0.5/32", "fd00::4/128")
    v4 = firewall.chain_rules(4, PEERS)[firewall.INPUT_CHAIN]
    v6 = firewall.chain_rules(6, PEERS)[firewall.INPUT_CHAIN]
    assert firewall.swarm_rules(4, PEERS)[:5] == [
        "-A VPSCTL-INPUT -s 172.17.0.4/32 -p tcp -m tcp --dport 2377 -j RETURN",
        "-A VPSCTL-INPUT -s 172.17.0.4/32 -p tcp -m tcp --dport 7946 -j RETURN",
        "-A VPSCTL-INPUT -s 172.17.0.4/32 -p udp -m udp --dport 7946 -j RETURN",
        "-A VPSCTL-INPUT -s 172.17.0.4/32 -p udp -m udp --dport 4789 -j RETURN",
        "-A VPSCTL-INPUT -s 172.17.0.4/32 -p esp -j RETURN",
    ]
    assert len(firewall.swarm_rules(4, PEERS)) == 10
    assert firewall.swarm_rules(6, PEERS)[-1] == "-A VPSCTL-INPUT -s fd00::4/128 -p esp -j RETURN"
    assert not any("fd00" in rule for rule in v4) and not any("172.17" in rule for rule in v6)
    assert v4[-1] == "-A VPSCTL-INPUT -j DROP" and v4[-2].endswith("-p esp -j RETURN")
    # overlay-attached containers go out through docker_gwbridge, like docker's bridges
    assert "-A VPSCTL-INPUT -i docker_gwbridge -j RETURN" in v4
    forward = firewall.chain_rules(4, PEERS)[firewall.FORWARD_CHAIN]
    assert "-A VPSCTL-FORWARD -i docker_gwbridge -j RETURN" in forward
    assert not any("2377" in rule or "esp" in rule for rule in forward)  # all of it is INPUT's
    assert PEERS.describe() == (
        "tcp 22, 80, 443; udp 443; swarm from 172.17.0.4, 172.17.0.5, fd00::4"
    )


def test_a_bad_peer_and_a_swarm_port_open_to_anyone_are_refused() -> None:
    with pytest.raises(firewall.BadPeer, match=r"swarm peer 'node-2:2377' is not an IP address"):
        firewall.Ports((22,), (), ("node-2:2377",))
    with pytest.raises(firewall.BadPeer, match=r"^2377/tcp, 4789/udp would be open to anyone"):
        firewall.Ports((22, 2377), (4789,), ("10.0.0.2",))
    assert firewall.Ports((22, 2377), (), ()).tcp == (22, 2377)  # one box: no swarm to guard


def test_the_script_installs_the_peer_rules_the_audit_expects(tmp_path: Path) -> None:
    result = run_script(tmp_path, {"iptables": "", "ip6tables": ""}, "on", PEERS)
    assert result.returncode == 0, result.stderr
    for tool, family in (("iptables", 4), ("ip6tables", 6)):
        appended = [c for c in calls(tmp_path, tool) if c.startswith("-A ")]
        expected = firewall.chain_rules(family, PEERS)
        assert appended == expected[firewall.INPUT_CHAIN] + expected[firewall.FORWARD_CHAIN]
    assert all(v.ok for v in verdicts(listing_text(PEERS), PEERS).values())


def test_a_swarm_port_open_to_anyone_and_a_missing_peer_rule_fail_naming_them() -> None:
    lines = listing_text(PEERS).splitlines()
    drop = lines.index("-A VPSCTL-INPUT -j DROP")
    lines.insert(drop, "-A VPSCTL-INPUT -p tcp -m tcp --dport 2377 -j RETURN")
    lines.insert(drop, "-A VPSCTL-INPUT -p esp -j RETURN")
    lines.remove("-A VPSCTL-INPUT -s 172.17.0.5/32 -p udp -m udp --dport 4789 -j RETURN")
    found = verdicts("\n".join(lines), PEERS)["firewall IPv4 INPUT"]
    assert not found.ok
    assert (
        "swarm port 2377/tcp open to anyone: -A VPSCTL-INPUT -p tcp -m tcp --dport 2377 -j RETURN"
        in found.value
    )
    assert "swarm ESP open to anyone: -A VPSCTL-INPUT -p esp -j RETURN" in found.value
    assert (
        "missing: -A VPSCTL-INPUT -s 172.17.0.5/32 -p udp -m udp --dport 4789 -j RETURN"
        in found.value
    )
    # the box of a single host judged against peers: every peer rule is missing
    single = verdicts(listing_text(STUDIO), PEERS)["firewall IPv4 INPUT"]
    assert "missing: -A VPSCTL-INPUT -s 172.17.0.4/32 -p esp -j RETURN" in single.value


# what docker 26 puts first in INPUT on a node with an encrypted overlay (seen on a box)
DOCKER_ESP_DROP = (
    "-A INPUT -p udp -m policy --dir in --pol none -m udp --dport 4789 -m bpf --bytecode "
    '"7,32 0 0 4294963252,7 0 0 0,64 0 0 4,116 0 0 8,21 1 0 4097,6 0 0 0,6 0 0 4294967295" '
    "-j DROP"
)


def test_dockers_drop_of_unencrypted_vxlan_may_stand_ahead_on_a_swarm_node_only() -> None:
    text = listing_text(PEERS).replace(
        "-A INPUT -j VPSCTL-INPUT", f"{DOCKER_ESP_DROP}\n-A INPUT -j VPSCTL-INPUT", 1
    )
    assert verdicts(text, PEERS)["firewall IPv4 INPUT"].ok
    single = listing_text().replace(
        "-A INPUT -j VPSCTL-INPUT", f"{DOCKER_ESP_DROP}\n-A INPUT -j VPSCTL-INPUT", 1
    )
    assert not verdicts(single)["firewall IPv4 INPUT"].ok  # a single box: as before


@pytest.mark.skipif(not netns_available(), reason="needs root, unshare and iptables")
def test_the_real_iptables_prints_the_peer_rules_as_the_audit_expects(tmp_path: Path) -> None:
    """``-s ADDRESS/32``, ``-p esp``: the real iptables's ``-S`` reads back what was added."""
    script = tmp_path / "fw.sh"
    script.write_text(firewall.script(PEERS))
    read = tmp_path / "read.sh"
    read.write_text(firewall.READ_SCRIPT)
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", f"sh {script} && sh {read}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    found = verdicts(result.stdout, PEERS)
    assert all(v.ok for v in found.values()), found


def test_bootstrap_settings_carry_the_peers_through_their_json() -> None:
    bootstrap = apply._deploy_module("bootstrap")
    single = bootstrap.Settings(
        timezone="UTC", swap_bytes=1024, swappiness=10, open_ports=(22, 80, 443), udp_ports=(443,)
    )
    settings = bootstrap.Settings(
        timezone="UTC",
        swap_bytes=1024,
        swappiness=10,
        open_ports=(22, 80, 443),
        udp_ports=(443,),
        swarm_peers=("10.0.0.3", "10.0.0.2"),
    )
    data = json.loads(settings.to_json())
    assert data["swarm_peers"] == ["10.0.0.3", "10.0.0.2"]
    assert bootstrap.Settings.from_data(settings.to_json()) == settings
    assert settings.ports.peers == ("10.0.0.2/32", "10.0.0.3/32")
    assert settings.firewall_sha256 != single.firewall_sha256
    assert apply.settings_hash(settings) != apply.settings_hash(single)  # re-bootstraps the box


def test_a_swarm_node_without_peers_still_lets_its_containers_out_through_docker_gwbridge() -> None:
    """A cluster of one node: no peer to let in, but its Swarm tasks (Caddy reaching its
    ACME CA, an app its API) go out through docker_gwbridge, which the firewall must treat
    like docker's other bridges (found when a one-node cluster's Caddy got no certificate)."""
    alone = firewall.Ports((22, 80, 443), (443,), (), swarm=True)
    assert alone.in_swarm and not firewall.Ports((22,), ()).in_swarm
    rules = firewall.chain_rules(4, alone)
    assert "-A VPSCTL-INPUT -i docker_gwbridge -j RETURN" in rules[firewall.INPUT_CHAIN]
    assert "-A VPSCTL-FORWARD -i docker_gwbridge -j RETURN" in rules[firewall.FORWARD_CHAIN]
    assert not any("2377" in rule for rule in rules[firewall.INPUT_CHAIN])  # no peer: none in
    bootstrap = apply._deploy_module("bootstrap")
    settings = bootstrap.Settings(
        timezone="UTC", swap_bytes=1024, swappiness=10, open_ports=(22, 80, 443), swarm_node=True
    )
    assert json.loads(settings.to_json())["swarm_node"] is True
    assert bootstrap.Settings.from_data(settings.to_json()) == settings
    assert "docker_gwbridge" in firewall.script(settings.ports)
