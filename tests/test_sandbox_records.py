"""The sandbox package without a box: its record, the target it hands to the one SSH stack
(:mod:`vpsctl.host.remote`), a probe's answer when nothing listens, and a command line that
loads neither docker helpers nor pyinfra until a sandbox command runs."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vpsctl.host import remote
from vpsctl.local import sandbox
from vpsctl.local.sandbox import keys, records


def info(tmp_path: Path, port: int = 2222) -> sandbox.SandboxInfo:
    return sandbox.SandboxInfo(
        name="unit",
        address=sandbox.ADDRESS,
        user=sandbox.USER,
        ssh_port=port,
        ports={22: port, 80: 8080, 443: 8443, 9000: 9000, 5432: 5432},
        key_path=tmp_path / "unit.key",
        known_hosts_path=tmp_path / "unit.known_hosts",
        host_keys=(f"[127.0.0.1]:{port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA",),
        container="vpsctl-sandbox-unit",
        container_id="0" * 64,
        volume="vpsctl-sandbox-unit-docker",
        hostname="sandbox-unit",
        image="vpsctl-sandbox:000000000000",
        created="2026-12-02T00:00:00Z",
    )


def test_the_record_round_trips_and_names_its_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VPSCTL_STATE_DIR", str(tmp_path))
    box = info(tmp_path)
    records.write_record(box)
    assert sandbox.load("unit") == box
    assert sandbox.recorded() == ["unit"]
    assert json.loads(sandbox.state_path("unit").read_text())["ports"]["22"] == 2222
    # the known_hosts file holds exactly the recorded host keys: what every connection checks
    assert box.known_hosts_path.read_text().splitlines() == list(box.host_keys)
    assert records.files("unit") == (
        tmp_path / "sandboxes" / "unit.json",
        tmp_path / "sandboxes" / "unit.key",
        tmp_path / "sandboxes" / "unit.key.pub",
        tmp_path / "sandboxes" / "unit.known_hosts",
    )


def test_the_target_is_the_recorded_connection(tmp_path: Path) -> None:
    target = info(tmp_path).target("lumen-sandbox")
    assert target == remote.Target(
        name="lumen-sandbox",
        address="127.0.0.1",
        port=2222,
        user="root",
        key=tmp_path / "unit.key",
        known_hosts=tmp_path / "unit.known_hosts",
    )
    assert info(tmp_path).target().name == "unit"


@pytest.mark.parametrize("name", ["", "-a", "a-", "A", "a_b", "a\n", "x" * 33])
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(sandbox.SandboxError, match="invalid sandbox name"):
        sandbox.check_name(name)


def test_a_probe_says_why_it_got_no_answer_within_its_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VPSCTL_STATE_DIR", str(tmp_path))
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    box = info(tmp_path, port)
    # no key file yet: an error naming it, not a traceback from pyinfra
    missing = sandbox.probe(box, timeout=2.0)
    assert missing == (
        f"ssh: cannot reach root@127.0.0.1:{port}: No such private key file: {box.key_path}"
    )
    box = dataclasses.replace(box, key_path=sandbox.key_path("unit"))
    keys.ensure_key("unit")
    started = time.monotonic()
    why = sandbox.probe(box, timeout=2.0)  # nothing listens on the port
    assert time.monotonic() - started < 10
    assert why is not None and why.startswith(f"ssh: cannot reach root@127.0.0.1:{port}: ")
    assert f"Unable to connect to port {port}" in why


def test_the_sandbox_command_line_loads_no_docker_or_ssh_until_a_command_runs() -> None:
    code = (
        "import sys, argparse, vpsctl.cli.sandbox as s\n"
        "p = argparse.ArgumentParser(); s.add_parser(p.add_subparsers())\n"
        "print(sorted(m for m in ('vpsctl.local.sandbox', 'vpsctl.local.docker', 'pyinfra',"
        " 'paramiko') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
