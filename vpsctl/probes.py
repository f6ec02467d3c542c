"""Probes: HTTP requests through Caddy, as a user reaches the studio, and their verdicts.

All probes of a run go to the box in ONE remote command: curl on the box calls Caddy on
127.0.0.1:443 with the real host name (``--resolve``, so SNI and Host are right), never
following redirects. The answers come back in base64 and are judged here: status, no
unexpected redirect, a non-empty body, the stack's content checks.
"""

from __future__ import annotations

import base64
import binascii
import json
import shlex
from dataclasses import dataclass
from typing import Any

from vpsctl.spec.models import Probe
from vpsctl.spec.studio import Spec

MARK = "@@probe"


@dataclass(frozen=True)
class ProbeTarget:
    """One probe of one stack, with the host name it goes to."""

    stack: str
    probe: Probe
    host: str

    @property
    def label(self) -> str:
        """``documint/health``."""
        return f"{self.stack}/{self.probe.name}"

    @property
    def url(self) -> str:
        """The URL a user would open."""
        return f"https://{self.host}{self.probe.path}"


@dataclass(frozen=True)
class ProbeResult:
    """A probe's verdict: ``ok``, what was measured, and why it failed."""

    target: ProbeTarget
    ok: bool
    status: int
    detail: str
    body: bytes = b""


def targets_for(spec: Spec, stacks: list[str] | None = None) -> list[ProbeTarget]:
    """Every probe of ``stacks`` (default: all), resolved to host names."""
    out: list[ProbeTarget] = []
    for name, stack in spec.stacks.items():
        if stacks is not None and name not in stacks:
            continue
        for probe in stack.probes:
            host = spec.domain(name, probe.domain)
            if host is not None:
                out.append(ProbeTarget(name, probe, host))
    return out


def script(targets: list[ProbeTarget], verify_tls: bool, port: int = 443) -> str:
    """The remote command that runs every probe once and prints its answers."""
    lines = ["set -u", "tmp=$(mktemp -d); trap 'rm -rf \"$tmp\"' EXIT"]
    insecure = "" if verify_tls else " -k"
    for index, target in enumerate(targets):
        method = target.probe.method
        data = " --data ''" if method == "POST" else ""
        head = " -I" if method == "HEAD" else ""
        cmd = (
            f"code=$(curl -s{insecure}{head} -o \"$tmp/{index}\" -w '%{{http_code}}' "
            f"--max-time 10 -X {method}{data} "
            f"--resolve {shlex.quote(f'{target.host}:{port}:127.0.0.1')} "
            f"{shlex.quote(f'https://{target.host}:{port}{target.probe.path}')} 2>/dev/null)"
        )
        lines += [
            cmd,
            f'echo "{MARK} {index} ${{code:-000}}"',
            f'base64 -w0 < "$tmp/{index}" 2>/dev/null; echo',
        ]
    return "\n".join(lines) + "\n"


def parse(output: str, targets: list[ProbeTarget]) -> list[ProbeResult]:
    """Judge every probe from the script's output."""
    answers: dict[int, tuple[int, bytes]] = {}
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(MARK + " "):
            _, number, code = line.split(" ", 2)
            body_line = lines[i + 1] if i + 1 < len(lines) else ""
            try:
                body = base64.b64decode(body_line.strip(), validate=True)
            except binascii.Error:
                body = b""
            answers[int(number)] = (int(code) if code.isdigit() else 0, body)
    return [judge(t, *answers.get(n, (0, b""))) for n, t in enumerate(targets)]


def judge(target: ProbeTarget, status: int, body: bytes) -> ProbeResult:
    """Whether one answer is what the probe expects, and if not, why."""
    probe = target.probe
    if status == 0:
        return ProbeResult(target, False, 0, "no answer (connection failed or timed out)")
    if 300 <= status < 400:
        return ProbeResult(
            target, False, status, f"answered {status}, a redirect; expected {probe.status}", body
        )
    if status != probe.status:
        return ProbeResult(
            target, False, status, f"answered {status}; expected {probe.status}", body
        )
    if not body.strip() and not probe.allow_empty_body and probe.method != "HEAD":
        return ProbeResult(target, False, status, "empty body", body)
    text = body.decode(errors="replace")
    for needle in probe.body_contains:
        if needle not in text:
            return ProbeResult(target, False, status, f"body lacks {needle!r}", body)
    if probe.json_fields:
        try:
            data = json.loads(text)
        except ValueError:
            return ProbeResult(target, False, status, "body is not JSON", body)
        for dotted in probe.json_fields:
            value = _field(data, dotted)
            if value in (None, "", [], {}):
                return ProbeResult(
                    target, False, status, f"JSON field {dotted} missing or empty", body
                )
    if probe.min_count is not None:
        count = text.count(probe.min_count.pattern)
        if count < probe.min_count.min:
            return ProbeResult(
                target,
                False,
                status,
                f"{probe.min_count.pattern!r} appears {count} times; expected at least "
                f"{probe.min_count.min}",
                body,
            )
    return ProbeResult(target, True, status, f"{status}, {len(body)} bytes", body)


def _field(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return None
    return data
