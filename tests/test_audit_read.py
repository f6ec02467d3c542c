"""The audit's one remote read: no secret on any command line nor in the read, and what it
reads is judged.

A process's command line is readable by every user of the box (``ps``, /proc/PID/cmdline):
the read travels on stdin. Ghost's Content API key never travels at all: the box reads it
from its root-only file (tests/test_audit_ghost.py runs that part here with ``ps``
watching). Proven on the script's text and through :func:`vpsctl.ops.audit.audit` with a
session that records every command it is asked to run.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import secret_values
from tests.test_audit_ghost import prod_spec
from vpsctl.core import firewall
from vpsctl.host.remote import DeployReport, Result, Target
from vpsctl.ops import audit
from vpsctl.spec.studio import Spec


@pytest.fixture
def spec(studio: Path) -> Iterator[Spec]:
    with contextlib.chdir(studio):
        yield prod_spec(studio)


def test_the_read_holds_no_secret_and_reads_the_key_on_the_box(spec: Spec) -> None:
    script = audit.read_script(spec)
    for value in secret_values(spec.inventory):
        assert value not in script
        assert value not in audit.RUN_FROM_STDIN
    # prod verifies TLS (acme): no -k
    assert "vpsctl_ghost ghost lumenstudio.dev /opt/vpsctl/apps/ghost/ghost-content-key ''" in (
        script
    )
    assert '&key=%s"' in script  # only the box fills it in


class Recorder:
    """A :class:`vpsctl.host.remote.Remote` that records every command it is given and answers
    the audit's read with ``answer``."""

    def __init__(self, answer: Callable[[str], str]) -> None:
        self.target = Target("recorded", "127.0.0.1", 22, "root", Path("/nonexistent"))
        self.commands = 0
        self.sent: list[str] = []  # every command line
        self.stdin: list[bytes] = []
        self.answer = answer

    def run(
        self, command: Any, timeout: int = 600, *, check: bool = True, purpose: str = ""
    ) -> Result:
        self.sent.append(str(command))
        return Result(True, "", "")

    def feed(
        self,
        command: Any,
        data: bytes,
        timeout: int = 600,
        *,
        check: bool = True,
        purpose: str = "",
    ) -> Result:
        self.sent.append(str(command))
        self.stdin.append(data)
        return Result(True, self.answer(data.decode()), "")

    def put_files(self, files: list[tuple[str, bytes, int]]) -> None:
        self.sent.append(f"put_files {[path for path, _, _ in files]}")

    def hold_lock(self, path: str, what: str) -> Any:
        raise AssertionError("the audit takes no lock")

    def ship_images(
        self,
        tags: list[str],
        progress: Callable[[int, int], None] | None = None,
        shipped: set[str] | None = None,
    ) -> int:
        raise AssertionError("the audit ships nothing")

    def deploy(self, func: Any, **kwargs: Any) -> DeployReport:
        raise AssertionError("the audit deploys nothing")

    def forward(self, address: str, port: int) -> Any:
        raise AssertionError("the audit opens no forward")

    def cancel(self) -> None:
        raise AssertionError("the audit cancels nothing")


def box_answer(ports: firewall.Ports, extra: str = "") -> Callable[[str], str]:
    """A box's answer to the read: nothing deployed, the firewall as the bootstrap set it,
    and ``extra`` lines in the containers section."""

    def answer(_script: str) -> str:
        listing = []
        for family in (4, 6):
            rules = firewall.chain_rules(family, ports)
            listing += [
                f"{firewall.MARK} {family}",
                "-N DOCKER-USER",
                "-N VPSCTL-FORWARD",
                "-N VPSCTL-INPUT",
                "-A INPUT -j VPSCTL-INPUT",
                "-A FORWARD -j DOCKER-USER",
                "-A DOCKER-USER -j VPSCTL-FORWARD",
                *rules[firewall.INPUT_CHAIN],
                *rules[firewall.FORWARD_CHAIN],
            ]
        return "\n".join(
            [
                "@@vpsctl-facts 1",
                "@@end",
                "@@audit 1",
                "@@audit-containers",
                extra,
                "@@audit-now 1700000000",
                "@@audit-listen",
                'LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=97,fd=6))',
                'LISTEN 0 5 0.0.0.0:8082 0.0.0.0:* users:(("python3",pid=98,fd=3))',
                *listing,
                f"{firewall.MARK}-ipv6 off",
                f"{firewall.MARK}-end",
                "@@audit-end",
                "",
            ]
        )

    return answer


STRAY = (
    '"/stray" {} {"Status":"running"} {"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8081"}]} 0 EMPTY='
)


def test_the_audit_sends_no_secret_on_any_command_and_names_strays(spec: Spec) -> None:
    session = Recorder(box_answer(firewall.ports_for(spec), STRAY))
    report = audit.audit(spec, session)
    assert session.sent[0] == audit.RUN_FROM_STDIN
    for value in secret_values(spec.inventory):
        assert value not in session.stdin[0].decode()
        for command in session.sent:
            assert value not in command
    checks = {c.name: c for c in report.checks}
    for name in ("firewall IPv4 INPUT", "firewall IPv4 DOCKER-USER", "firewall IPv6 INPUT"):
        assert checks[name].status == audit.OK, checks[name]
    stray = checks["port 8081/tcp published by container stray"]
    assert stray.status == audit.FAIL
    assert stray.value == "container stray on 0.0.0.0:8081 (tcp): not declared by the spec"
    assert checks["port 8082/tcp published by process python3"].status == audit.FAIL
    summary = checks["ports open to the outside"]
    assert (summary.status, summary.value) == (audit.FAIL, "2 not in the spec")
    assert summary.threshold == "only the spec's: tcp 22, 80, 443; udp 443"
    data = json.dumps(report.to_json())
    assert "port 8081/tcp published by container stray" in data


def test_a_box_whose_ss_cannot_run_is_not_passed(spec: Spec) -> None:
    def answer(script: str) -> str:
        text = box_answer(firewall.ports_for(spec))(script)
        return text.replace("@@audit-listen\n", "@@audit-listen\n@@audit-listen-error\n")

    report = audit.audit(spec, Recorder(answer))
    checks = {c.name: c for c in report.checks}
    assert checks["listening sockets"].status == audit.FAIL
    assert "port 8082/tcp published by process python3" not in checks


def test_the_whole_read_is_valid_shell(spec: Spec) -> None:
    """``sh -n`` parses the read as the box's shell would (dash on Debian)."""
    result = subprocess.run(
        ["sh", "-n"], input=audit.read_script(spec), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
