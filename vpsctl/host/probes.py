"""Probes: HTTP requests through Caddy, as a user reaches the studio, and their verdicts.

All probes of a run go to the box in ONE remote command: curl on the box calls Caddy on
127.0.0.1:443 with the real host name (``--resolve``, so SNI and Host are right), never
following redirects. The answers come back in base64 and are judged here: status, no
unexpected redirect, a non-empty body, the stack's content checks.

How curl trusts Caddy's certificates follows host.yaml's ``tls`` (:func:`trust_for`): the
system's roots for Let's Encrypt (``acme``); not at all for Caddy's own CA (``internal``,
``-k``); for the sandbox's Pebble (``pebble``), only the issuing roots that Pebble has had,
kept on this machine and sent with the script (:data:`ROOTS_ON_BOX`). A probe that fails
on TLS says so, and against which roots (curl's exit code comes back with its answer).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Literal

from vpsctl.core import boxscripts, sections
from vpsctl.errors import display_path
from vpsctl.spec.models import Probe
from vpsctl.spec.studio import Spec

MARK = "@@probe"
TRUST_MARK = "@@probe-trust"
# Where the script puts the roots curl trusts for tls: pebble (public certificates only;
# written whole and renamed, so two reads at once never see half a file).
ROOTS_ON_BOX = "/run/vpsctl/acme-roots.pem"
_ROOTS_EOF = "VPSCTL_ACME_ROOTS"  # a PEM bundle never holds this line


@dataclass(frozen=True)
class Trust:
    """How curl on the box checks Caddy's certificates."""

    mode: Literal["system", "insecure", "roots"]
    roots_pem: str = ""  # mode "roots": the only roots trusted
    source: str = ""  # mode "roots": where they come from, for a failure's message

    @property
    def curl_flag(self) -> str:
        """The curl option (with its leading space), or "" for the system's roots."""
        if self.mode == "insecure":
            return " -k"
        if self.mode == "roots":
            return f" --cacert {ROOTS_ON_BOX}"
        return ""

    def prelude(self) -> str:
        """Shell lines that put the roots at :data:`ROOTS_ON_BOX` (mode "roots" only)."""
        if self.mode != "roots":
            return ""
        pem = self.roots_pem
        return boxscripts.render(
            boxscripts.ACME_ROOTS,
            directory=ROOTS_ON_BOX.rsplit("/", 1)[0],
            path=ROOTS_ON_BOX,
            eof=_ROOTS_EOF,
            pem=pem if pem.endswith("\n") or not pem else pem + "\n",
        )

    def describe(self) -> str:
        """What the certificates are checked against, in words."""
        if self.mode == "insecure":
            return "not verified (tls: internal)"
        if self.mode == "roots":
            return self.source
        return "the system's roots"


SYSTEM_ROOTS = Trust("system")
INSECURE = Trust("insecure")


def trust_for(spec: Spec) -> Trust:
    """How the probes (and the audit's other reads through Caddy) trust ``spec``'s
    certificates: see the module's docstring. For ``tls: pebble`` this reads the running
    Pebble's current root first (a restarted Pebble has a new one) and keeps it."""
    if spec.host.tls == "acme":
        return SYSTEM_ROOTS
    if spec.host.tls == "internal":
        return INSECURE
    from vpsctl.local import pebble  # noqa: PLC0415 - the sandbox's CA only for tls: pebble

    found = pebble.roots(refresh=True)
    where = display_path(found.path)
    if not found.count:
        source = (
            f"no Pebble root is recorded in {where} (`vpsctl sandbox up` starts Pebble and "
            "records its root)"
        )
    else:
        source = f"Pebble's {found.count} issuing root(s) kept in {where}"
    if found.note:
        source += f"; {found.note}"
    return Trust("roots", found.pem, source)


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


def script(targets: list[ProbeTarget], verify_tls: bool | Trust, port: int = 443) -> str:
    """The remote command that runs every probe once and prints its answers (and curl's
    exit code): ``templates/box/probes.sh.j2``. ``verify_tls``: a :class:`Trust`, or
    True/False for the system's roots or none."""
    trust = (
        verify_tls if isinstance(verify_tls, Trust) else (SYSTEM_ROOTS if verify_tls else INSECURE)
    )
    probes = [
        {
            "index": index,
            "method": target.probe.method,
            "head": " -I" if target.probe.method == "HEAD" else "",
            "data": " --data ''" if target.probe.method == "POST" else "",
            "resolve": f"{target.host}:{port}:127.0.0.1",
            "url": f"https://{target.host}:{port}{target.probe.path}",
        }
        for index, target in enumerate(targets)
    ]
    return boxscripts.render(
        boxscripts.PROBES,
        tls=trust.curl_flag,
        roots=trust.prelude(),
        # one line: what a TLS failure was judged against
        trusted=f"{TRUST_MARK} {trust.describe()}".replace("\n", " "),
        mark=MARK,
        probes=probes,
    )


def parse(output: str, targets: list[ProbeTarget]) -> list[ProbeResult]:
    """Judge every probe from the script's output."""
    answers: dict[int, tuple[int, bytes]] = {}
    failures: dict[int, str] = {}
    trusted = ""
    for section in sections.split(output):
        if section.name == TRUST_MARK[2:]:
            trusted = section.args
        elif section.name == MARK[2:] and len(section.words) >= 2:
            number, code, *rest = section.args.split(" ")
            try:
                body = base64.b64decode(section.body.strip(), validate=True)
            except binascii.Error:
                body = b""
            if not number.isdigit():
                continue
            answers[int(number)] = (int(code) if code.isdigit() else 0, body)
            if rest and rest[0].isdigit() and rest[0] != "0":
                failures[int(number)] = curl_failure(int(rest[0]), trusted)
    return [
        judge(t, *answers.get(n, (0, b"")), failure=failures.get(n, ""))
        for n, t in enumerate(targets)
    ]


def curl_failure(rc: int, trusted: str = "") -> str:
    """Why curl got no answer, from its exit code; TLS failures name the roots used."""
    against = f" against {trusted}" if trusted else ""
    if rc == 60:
        return f"the certificate does not verify{against} (curl exit 60)"
    if rc == 77:
        return f"no usable roots to verify with: {trusted or 'the CA file'} (curl exit 77)"
    if rc in (35, 51, 53, 54, 58, 59, 66, 80, 83, 90, 91):
        return (
            f"the TLS handshake failed (curl exit {rc}): no certificate for this name yet, "
            "or Caddy could not get one"
        )
    if rc == 7:
        return "connection refused: nothing listens on the box's port 443 (curl exit 7)"
    if rc == 28:
        return "no answer within 10s (curl exit 28)"
    return f"no answer (curl exit {rc})"


def judge(target: ProbeTarget, status: int, body: bytes, failure: str = "") -> ProbeResult:
    """Whether one answer is what the probe expects, and if not, why (``failure``: why
    curl got no answer at all, when it said)."""
    probe = target.probe
    if status == 0:
        return ProbeResult(
            target, False, 0, failure or "no answer (connection failed or timed out)"
        )
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
