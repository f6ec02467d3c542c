"""``vpsctl sandbox``: a disposable Debian 13 VPS as a container on this machine.

One box serves the whole module (booting one takes about two seconds once the image is
built); the tests that need more (a second box at once, a failed ``up``) make and remove
their own. Every sandbox has a name unique to this run and lives in a private state dir.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import stat
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vpsctl.cli import sandbox as sandbox_cli
from vpsctl.host import remote
from vpsctl.local import docker as localdocker
from vpsctl.local import sandbox
from vpsctl.local.sandbox import SandboxError, SandboxInfo, SandboxNotFound, keys

pytestmark = pytest.mark.e2e


def unique(prefix: str = "e2e") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def ssh(info: SandboxInfo, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``command`` on the box with the OpenSSH client, host key checked strictly."""
    return subprocess.run(
        info.ssh_command(command),
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def cli(*argv: str) -> int:
    """Run ``vpsctl sandbox ARGV`` through the parser that ``add_parser`` builds."""
    parser = argparse.ArgumentParser(prog="vpsctl")
    sub = parser.add_subparsers(dest="command", required=True)
    sandbox_cli.add_parser(sub)
    args = parser.parse_args(["sandbox", *argv])
    code: int = args.func(args)
    return code


def box_files(name: str) -> list[Path]:
    key = sandbox.key_path(name)
    return [
        sandbox.state_path(name),
        key,
        key.with_name(key.name + ".pub"),
        sandbox.known_hosts_path(name),
    ]


def assert_gone(name: str) -> None:
    assert localdocker.inspect_container(sandbox.container_name(name)) is None
    assert not localdocker.volume_exists(sandbox.volume_name(name))
    assert not any(path.exists() for path in box_files(name))


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("vpsctl-state")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VPSCTL_STATE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def box(state_dir: Path) -> Iterator[SandboxInfo]:
    name = unique()
    try:
        yield sandbox.up(name)
    finally:
        sandbox.down(name)


def test_box_answers_ssh_with_the_recorded_key(box: SandboxInfo) -> None:
    result = ssh(box, "systemctl is-system-running; id -u; hostname")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["running", "0", box.hostname]


def test_box_is_a_fresh_debian_13(box: SandboxInfo) -> None:
    release = ssh(box, "cat /etc/os-release")
    assert release.returncode == 0, release.stderr
    assert 'VERSION_ID="13"' in release.stdout
    assert "VERSION_CODENAME=trixie" in release.stdout
    # vpsctl's bootstrap installs docker, compose, caddy and ufw, as on a real VPS
    tools = ("docker", "docker-compose", "caddy", "ufw", "sshd", "python3", "curl", "ip", "sudo")
    found = ssh(box, f"for t in {' '.join(tools)}; do command -v $t >/dev/null && echo $t; done")
    assert found.stdout.split() == ["sshd", "python3", "curl", "ip", "sudo"], found.stderr
    keys = ssh(box, "stat -c %a /root/.ssh /root/.ssh/authorized_keys")
    assert keys.stdout.split() == ["700", "600"]


def test_box_runs_with_the_sandbox_recipe(box: SandboxInfo) -> None:
    inspected = localdocker.inspect_container(box.container)
    assert inspected is not None
    assert inspected["Id"] == box.container_id
    host = inspected["HostConfig"]
    assert host["Memory"] == 8 * 1024**3
    assert host["CgroupnsMode"] == "host"
    assert {"SYS_RESOURCE", "CAP_SYS_RESOURCE"} & set(host["CapDrop"])
    # the box must not set this machine's clock (timedatectl warped it once)
    assert {"SYS_TIME", "CAP_SYS_TIME"} & set(host["CapDrop"])
    mounts = {m["Destination"]: m for m in inspected["Mounts"]}
    assert mounts["/var/lib/docker"]["Name"] == box.volume
    assert mounts["/sys/fs/cgroup"]["RW"] is True
    checks = ssh(
        box,
        "systemctl is-enabled systemd-modules-load.service; "
        "cat /etc/systemd/system/docker.service.d/*.conf; "
        "findmnt -n -o FSTYPE /run; "
        # with --cgroupns=host the box's limit sits on its container's cgroup, not on the
        # root of /sys/fs/cgroup/memory (which is the machine's)
        "cg=$(dirname $(awk -F: '/:memory:/{print $3}' /proc/1/cgroup)); "
        'cat "/sys/fs/cgroup/memory$cg/memory.limit_in_bytes"',
    )
    assert checks.stdout.splitlines()[0] == "masked"
    assert "Environment=DOCKER_ALLOW_IPV6_ON_IPV4_INTERFACE=1" in checks.stdout
    assert checks.stdout.splitlines()[-2:] == ["tmpfs", str(8 * 1024**3)]


def test_host_key_is_recorded_and_verified(box: SandboxInfo, tmp_path: Path) -> None:
    recorded = sandbox.known_hosts_path(box.name).read_text().splitlines()
    assert tuple(recorded) == box.host_keys
    on_box = localdocker.docker_exec(box.container, ["sh", "-c", "cat /etc/ssh/*.pub"])
    expected = sorted(
        f"[127.0.0.1]:{box.ssh_port} {kind} {blob}"
        for kind, blob, *_ in (line.split() for line in on_box.stdout.splitlines())
    )
    assert sorted(recorded) == expected
    assert any(" ssh-ed25519 " in line for line in recorded)
    # vpsctl's one SSH stack (remote.Session, as apply uses it) accepts the recorded keys...
    with remote.Session(box.target()) as session:
        assert session.run("echo ok", timeout=10).stdout.strip() == "ok"
    assert sandbox.probe(box) is None
    # ...and refuses a box that presents a key other than the recorded one
    other = Ed25519PrivateKey.generate().public_key()
    blob = other.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    forged_known = tmp_path / "forged_known_hosts"
    forged_known.write_text(f"[127.0.0.1]:{box.ssh_port} {blob.decode()}\n")
    forged = dataclasses.replace(box, known_hosts_path=forged_known)
    with (
        pytest.raises(remote.HostKeyMismatch, match="does not match"),
        remote.Session(forged.target()),
    ):
        pass
    assert sandbox.probe(forged) == remote.HOST_KEY_CHANGED
    # a box whose key is recorded nowhere is refused too (no trust on first use), and the
    # rewritten file is read again (pyinfra would keep the first read for the process)
    forged_known.write_text("")
    assert sandbox.probe(forged, 5.0) not in (None, remote.HOST_KEY_CHANGED)


def test_up_again_is_idempotent(box: SandboxInfo) -> None:
    before = sandbox.state_path(box.name).read_text()
    again = sandbox.up(box.name)
    assert again == box
    assert again.container_id == box.container_id
    assert sandbox.state_path(box.name).read_text() == before
    labelled = localdocker.docker(
        "ps", "-a", "-q", "--filter", f"label={sandbox.LABEL}={box.name}"
    ).split()
    assert len(labelled) == 1


def test_state_file_records_the_connection(box: SandboxInfo, state_dir: Path) -> None:
    path = state_dir / "sandboxes" / f"{box.name}.json"
    data = json.loads(path.read_text())
    assert data["address"] == "127.0.0.1"
    assert data["user"] == "root"
    assert data["ssh_port"] == data["ports"]["22"] == box.ssh_port
    assert set(data["ports"]) == {"22", "80", "443", "9000", "5432"}
    assert len(set(data["ports"].values())) == 5
    assert data["container"] == box.container == f"vpsctl-sandbox-{box.name}"
    assert data["image"].startswith("vpsctl-sandbox:")
    assert data["image"] == sandbox.image_tag()
    assert data["created"].endswith("Z")
    assert Path(data["key_path"]).parent == state_dir / "sandboxes"
    assert stat.S_IMODE(Path(data["key_path"]).stat().st_mode) == 0o600
    assert sandbox.load(box.name) == box
    assert (box.http_port, box.https_port) == (data["ports"]["80"], data["ports"]["443"])


def test_extra_published_ports_reach_the_box(box: SandboxInfo) -> None:
    """What the firewall tests rely on: 9000 of the box answers on 127.0.0.1 from outside."""
    started = ssh(
        box,
        "cd /tmp && (setsid python3 -m http.server 9000 >/dev/null 2>&1 < /dev/null &) ; "
        "for i in $(seq 50); do curl -fs -o /dev/null http://127.0.0.1:9000/ && exit 0; "
        "sleep 0.1; done; exit 1",
    )
    assert started.returncode == 0, started.stderr
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{box.probe_ports[9000]}/", timeout=10
        ) as response:
            assert response.status == 200
    finally:
        ssh(box, "pkill -f 'http.server 9000'")


def test_apt_works_inside(box: SandboxInfo) -> None:
    result = ssh(box, "apt-get update -q", timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    policy = ssh(box, "apt-cache policy docker.io | grep Candidate")
    assert "(none)" not in policy.stdout, policy.stdout


def test_status_reports_the_box(box: SandboxInfo, capsys: pytest.CaptureFixture[str]) -> None:
    live = sandbox.status(box.name)
    assert live is not None
    assert (live.running, live.ssh_ready) == (True, True)
    assert live == box
    capsys.readouterr()
    assert cli("status", "--name", box.name, "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["container_id"] == box.container_id
    assert (shown["running"], shown["ssh_ready"]) == (True, True)
    assert cli("status", "--name", box.name) == 0
    text = capsys.readouterr().out
    assert f"root@127.0.0.1:{box.ssh_port} (answers)" in text


def test_two_boxes_at_once_then_down(box: SandboxInfo, capsys: pytest.CaptureFixture[str]) -> None:
    name = unique("e2e-two")
    try:
        second = sandbox.up(name)
        assert second.container_id != box.container_id
        assert not set(second.ports.values()) & set(box.ports.values())
        assert set(second.host_keys).isdisjoint(box.host_keys)
        ids = [ssh(info, "cat /etc/machine-id").stdout for info in (box, second)]
        assert ids[0] != ids[1]
        assert ssh(second, "hostname").stdout.strip() == second.hostname
        # a stopped box is reported down, and `up` starts it again (same container)
        localdocker.docker("stop", "-t", "10", second.container, timeout=60)
        stopped = sandbox.status(name)
        assert stopped is not None
        assert (stopped.running, stopped.ssh_ready) == (False, False)
        assert cli("status", "--name", name) == 1
        restarted = sandbox.up(name)
        assert restarted.container_id == second.container_id
        assert ssh(restarted, "systemctl is-system-running").stdout.strip() == "running"
        # the inner engine's volume goes with the box
        assert localdocker.volume_exists(second.volume)
        assert cli("down", "--name", name) == 0
        assert_gone(name)
        assert sandbox.status(name) is None
        capsys.readouterr()
        assert cli("status", "--name", name) == 1
        assert "absent" in capsys.readouterr().err
        assert cli("down", "--name", name) == 0  # idempotent
        # the module's box is untouched
        assert ssh(box, "true").returncode == 0
    finally:
        sandbox.down(name)


def test_failed_up_removes_the_half_made_box(monkeypatch: pytest.MonkeyPatch) -> None:
    name = unique("e2e-fail")

    def refuse(container: str, public_line: str) -> None:
        raise SandboxError("authorized_keys is read-only (simulated)")

    monkeypatch.setattr(keys, "install_key", refuse)
    started = time.monotonic()
    try:
        with pytest.raises(SandboxError) as caught:
            sandbox.up(name)
        message = str(caught.value)
        assert "failed while connecting over SSH" in message
        assert "authorized_keys is read-only (simulated)" in message
        assert "last lines of the box's journal" in message
        assert localdocker.inspect_container(sandbox.container_name(name)) is None
        assert not localdocker.volume_exists(sandbox.volume_name(name))
        assert not sandbox.state_path(name).exists()
        assert time.monotonic() - started < 120
    finally:
        sandbox.down(name)
    assert_gone(name)


def test_load_of_an_absent_sandbox_names_the_command(state_dir: Path) -> None:
    with pytest.raises(SandboxNotFound, match=r"`vpsctl sandbox up --name e2e-nobody`"):
        sandbox.load("e2e-nobody")
    assert sandbox.status("e2e-nobody") is None
    with pytest.raises(SandboxError, match="invalid sandbox name"):
        sandbox.load("Not_A_Name")
