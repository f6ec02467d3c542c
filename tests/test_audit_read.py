"""The audit's one remote read: no secret on any command line, and what it reads is judged.

A process's command line is readable by every user of the box (``ps``, /proc/PID/cmdline):
the read travels on stdin, and the Ghost Content API key reaches curl as a config on
curl's stdin. Proven three ways: on the script's text, by running its parts here with a
fake curl and ``ps`` watching, and through :func:`vpsctl.audit.audit` with a session that
records every command it is asked to run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.helpers import ROOT, secret_values
from vpsctl import audit, firewall
from vpsctl.remote import DeployReport, Result, Target
from vpsctl.spec.loader import load_spec
from vpsctl.spec.studio import Spec

GOLDEN_SECRETS = ROOT / "tests/golden/prod.secrets.env.fixture"


@pytest.fixture
def spec(studio: Path) -> Iterator[Spec]:
    secrets = studio / "inventory/prod/secrets.env"
    shutil.copy(GOLDEN_SECRETS, secrets)
    secrets.chmod(0o600)
    yield load_spec(studio / "inventory/prod")


def ghost_key(spec: Spec) -> str:
    stack = spec.stacks["ghost"]
    assert stack.ghost_content is not None
    key = spec.secret(stack.ghost_content.content_api_key)
    assert key is not None and len(key.reveal()) >= 6
    return key.reveal()


def test_the_key_is_only_inside_curls_config_never_on_a_command_line(spec: Spec) -> None:
    key = ghost_key(spec)
    script = audit.read_script(spec)
    lines = script.splitlines()
    holding = [n for n, line in enumerate(lines) if key in line]
    assert holding, "the Content API total would not be read"
    for n in holding:
        assert lines[n].startswith('url = "https://'), lines[n]
        assert lines[n - 1].startswith("curl ") and "-K - <<'VPSCTL_CURL_CONFIG'" in lines[n - 1]
        assert key not in lines[n - 1]
        assert lines[n + 1] == "VPSCTL_CURL_CONFIG"
    for value in secret_values(GOLDEN_SECRETS.parent):
        assert value not in audit.RUN_FROM_STDIN


def test_curl_config_values_are_quoted() -> None:
    assert audit._curl_config_quote('a"b\\c\nd\te') == '"a\\"b\\\\c\\nd\\te"'


def fake_tools(tmp_path: Path) -> dict[str, str]:
    """PATH with a curl that records its argv and its stdin, and answers ``{}``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "cat", "base64", "ps"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    curl = bin_dir / "curl"
    curl.write_text(
        '#!/bin/sh\necho "$*" >> "$OUT/argv"\ncat >> "$OUT/stdin"\nps -eo args >> "$OUT/ps"\n'
        "echo '{}'\n"
    )
    curl.chmod(0o755)
    return {"PATH": str(bin_dir), "OUT": str(tmp_path)}


def test_run_here_curl_gets_the_key_on_stdin_and_ps_never_shows_it(
    spec: Spec, tmp_path: Path
) -> None:
    key = ghost_key(spec)
    result = subprocess.run(
        ["sh", "-c", audit.RUN_FROM_STDIN],
        input=audit._ghost_script(spec),
        env=fake_tools(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "@@ghost ghost api" in result.stdout
    assert f"key={quote(key, safe='')}" in (tmp_path / "stdin").read_text()
    argv = (tmp_path / "argv").read_text()
    assert "--resolve lumenstudio.dev:443:127.0.0.1 -K -" in argv
    assert key not in argv
    listing = (tmp_path / "ps").read_text()
    assert "curl" in listing  # ps saw the processes, the key on none of their lines
    assert key not in listing


class Recorder:
    """A :class:`vpsctl.remote.Remote` that records every command it is given and answers
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
        self, tags: list[str], progress: Callable[[int, int], None] | None = None
    ) -> int:
        raise AssertionError("the audit ships nothing")

    def deploy(self, func: Any, **kwargs: Any) -> DeployReport:
        raise AssertionError("the audit deploys nothing")


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
    assert ghost_key(spec) in session.stdin[0].decode()  # it does travel: on stdin
    for value in secret_values(GOLDEN_SECRETS.parent) | {ghost_key(spec)}:
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
