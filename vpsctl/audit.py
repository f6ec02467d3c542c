"""audit: prove the whole box healthy, in seconds, and fail loudly when it is not.

Everything is read in ONE remote command (the facts script, the audit script and every
probe through Caddy), then judged here against the spec and its thresholds:

- every route through Caddy, as a user reaches it (status, no redirect, non-empty body,
  content checks; webhook routes answer an unsigned POST with the app's own 4xx);
- Ghost's content: the Content API's post total equals the sitemap's ``<loc>`` count, has
  not dropped since the last audit (a state file on the box), and no published post is
  empty;
- containers: every declared service running and healthy, restart counts and OOM kills, no
  container the spec does not declare, no empty value in any container's environment
  (names only: values never leave the box);
- the host: disk and inodes, memory and swap, load, the age of the last backup, days left
  on each TLS certificate in Caddy's storage;
- the firewall as the kernel has it: INPUT and DOCKER-USER, IPv4 and IPv6, hold exactly the
  rules the bootstrap installs for the spec's open ports (:mod:`vpsctl.firewall`, the one
  source of both), with nothing ahead of them;
- ports open to the outside: every public port a container publishes must be one the spec
  declares for that service, and every TCP socket listening on a non-loopback address must
  be on one of ``open_ports`` (a stray ``docker run -p 8081:80`` is named, with its port);
- config drift: managed files whose content differs from the rendered spec.

No secret travels on a command line: the whole read goes to the box on stdin, and the
Ghost Content API key reaches curl as a config on curl's stdin (``-K -``), never in argv.
"""

from __future__ import annotations

import base64
import binascii
import json
import shlex
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote

from vpsctl import backupfiles, firewall, probes
from vpsctl.errors import display_path
from vpsctl.facts import FACTS_SCRIPT, HostFacts, parse
from vpsctl.layout import HOST_ROOT
from vpsctl.remote import Remote, RemoteError, output_tail
from vpsctl.render import Desired, render
from vpsctl.spec.studio import Spec
from vpsctl.spec.units import human_size

STATE = f"{HOST_ROOT}/audit/state.json"
BACKUP_RECORD = backupfiles.RECORD  # written by the box's vpsctl-backup
OK, WARN, FAIL = "ok", "warn", "FAIL"
INFO = "info"  # listed for the operator, never a verdict: leftovers to decide about


@dataclass(frozen=True)
class Check:
    """One line of the audit: what was checked, its verdict, the measured value, the bar."""

    group: str  # a stack's name, or "host"
    name: str
    status: str  # ok | warn | FAIL | info
    value: str
    threshold: str = ""


@dataclass
class Report:
    """The whole audit."""

    host: str
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Nothing failed (warnings allowed)."""
        return not any(c.status == FAIL for c in self.checks)

    def counts(self) -> dict[str, int]:
        """How many checks of each verdict (and how many info lines)."""
        return {s: sum(c.status == s for c in self.checks) for s in (OK, WARN, FAIL, INFO)}

    def summary(self) -> str:
        """``audit: 61 ok, 1 warn, 0 FAIL in 1.4s`` (``, 2 info`` when there are any)."""
        n = self.counts()
        verdict = "healthy" if self.ok else "FAILING"
        info = f", {n[INFO]} info" if n[INFO] else ""
        return (
            f"audit {self.host}: {verdict}: {n[OK]} ok, {n[WARN]} warn, {n[FAIL]} FAIL{info} "
            f"({self.seconds:.1f}s)"
        )

    def to_json(self) -> dict[str, Any]:
        """The report as JSON data."""
        return {
            "host": self.host,
            "ok": self.ok,
            "summary": self.summary(),
            "counts": self.counts(),
            "seconds": round(self.seconds, 2),
            "checks": [asdict(c) for c in self.checks],
        }


# ── the remote read ──────────────────────────────────────────────────────────────────────

# Names of empty variables are found ON the box: a container's values never travel.
AUDIT_SCRIPT = f"""\
echo '@@audit 1'
if command -v docker >/dev/null 2>&1; then
  echo '@@audit-containers'
  for id in $(docker ps -aq); do
    docker inspect --format '{{{{json .Name}}}} {{{{json .Config.Labels}}}} {{{{json .State}}}} \
{{{{json .NetworkSettings.Ports}}}} {{{{.RestartCount}}}}' "$id" | tr '\\n' ' '
    empties=$(docker inspect --format '{{{{range .Config.Env}}}}{{{{println .}}}}{{{{end}}}}' \
      "$id" | grep -E '^[^=]+=$' | cut -d= -f1 | tr '\\n' ',')
    echo " EMPTY=$empties"
  done
  echo '@@audit-certs'
  certs=/var/lib/docker/volumes/*/_data/caddy/certificates
  for crt in $(find $certs -name '*.crt' 2>/dev/null); do
    end=$(openssl x509 -enddate -noout -in "$crt" 2>/dev/null | cut -d= -f2)
    echo "$(date -d "$end" +%s 2>/dev/null || echo 0) $crt"
  done
fi
echo "@@audit-now $(date +%s)"
echo "@@audit-nproc $(nproc)"
echo "@@audit-load $(cut -d' ' -f1 /proc/loadavg)"
echo '@@audit-meminfo'; grep -E '^(MemTotal|MemAvailable|SwapTotal|SwapFree):' /proc/meminfo
echo '@@audit-df'; df -P / /var/lib/docker 2>/dev/null | tail -n +2
echo '@@audit-dfi'; df -Pi / /var/lib/docker 2>/dev/null | tail -n +2
echo "@@audit-backup $(cat {BACKUP_RECORD} 2>/dev/null || echo none)"
echo "@@audit-state $(base64 -w0 < {STATE} 2>/dev/null)"
echo '@@audit-listen'; ss -Hltnp 2>/dev/null || echo '@@audit-listen-error'
{firewall.READ_SCRIPT}echo '@@audit-end'
"""

# The read goes to the box on stdin, not as ``sh -c SCRIPT``: a script on a command line is
# in every process listing for as long as it runs. It is read whole before it runs, so no
# command in it can swallow the rest, and runs with stdin from /dev/null.
RUN_FROM_STDIN = "sh -c 'script=$(cat) && eval \"$script\" </dev/null'"


def _curl_config_quote(text: str) -> str:
    """``text`` as a double-quoted value of a curl config file (``-K``)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


_EOF = "VPSCTL_CURL_CONFIG"  # the config is one quoted line: it can never be this line


def _ghost_script(spec: Spec) -> str:
    """Curl Ghost's Content API and sitemap through Caddy, per stack that asks for it.

    The Content API key is in the URL Ghost wants, so the URL is handed to curl as a config
    on its stdin (a quoted here-document): never on curl's command line, where ``ps`` shows
    it to every user of the box.
    """
    lines = []
    for name, stack in spec.stacks.items():
        ghost = stack.ghost_content
        if ghost is None:
            continue
        host = spec.domain(name, ghost.domain)
        key = spec.secret(ghost.content_api_key)
        if host is None or key is None:
            continue
        insecure = "" if spec.host.tls == "acme" else " -k"
        resolve = shlex.quote(f"{host}:443:127.0.0.1")
        api = (
            f"https://{host}/ghost/api/content/posts/?key={quote(key.reveal(), safe='')}"
            "&limit=all&fields=id,title,slug&formats=plaintext"
        )
        sitemap = f"https://{host}/sitemap-posts.xml"
        for what, url in (("api", api), ("sitemap", sitemap)):
            lines.append(f"echo '@@ghost {name} {what}'")
            lines.append(
                f"curl -s{insecure} --max-time 10 --resolve {resolve} -K - <<'{_EOF}' "
                "| base64 -w0; echo"
            )
            lines.append(f"url = {_curl_config_quote(url)}")
            lines.append(_EOF)
    return "\n".join(lines) + "\n"


@dataclass
class AuditFacts:
    """What the audit script printed, parsed."""

    containers: list[dict[str, Any]] = field(default_factory=list)
    certs: list[tuple[int, str]] = field(default_factory=list)
    now: int = 0
    nproc: int = 1
    load: float = 0.0
    meminfo: dict[str, int] = field(default_factory=dict)
    df: list[tuple[str, int]] = field(default_factory=list)  # mount, percent
    dfi: list[tuple[str, int]] = field(default_factory=list)
    backup: int | None = None
    state: dict[str, Any] = field(default_factory=dict)
    ghost: dict[tuple[str, str], bytes] = field(default_factory=dict)
    listening: list[str] | None = None  # ``ss -Hltnp`` lines; None: ss could not run
    firewall: firewall.FirewallFacts = field(
        default_factory=lambda: firewall.FirewallFacts(listings={})
    )


def parse_audit(output: str) -> AuditFacts:
    """Parse the audit script's and the Ghost script's sections."""
    facts = AuditFacts(firewall=firewall.parse(output))
    section = ""
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("@@audit-now "):
            facts.now = int(line.split()[1])
        elif line.startswith("@@audit-nproc "):
            facts.nproc = max(1, int(line.split()[1]))
        elif line.startswith("@@audit-load "):
            facts.load = float(line.split()[1])
        elif line.startswith("@@audit-backup "):
            value = line.split(" ", 1)[1].strip()
            facts.backup = int(value) if value.isdigit() else None
        elif line.startswith("@@audit-state"):
            raw = line.split(" ", 1)[1].strip() if " " in line else ""
            try:
                facts.state = json.loads(base64.b64decode(raw)) if raw else {}
            except (binascii.Error, ValueError):
                facts.state = {}
        elif line.startswith("@@ghost "):
            _, stack, what = line.split()
            body = lines[index + 1] if index + 1 < len(lines) else ""
            try:
                facts.ghost[(stack, what)] = base64.b64decode(body.strip())
            except binascii.Error:
                facts.ghost[(stack, what)] = b""
        elif line.startswith("@@audit-listen"):
            section = line.strip()
            facts.listening = None if section == "@@audit-listen-error" else []
        elif line.startswith("@@"):
            section = line.strip()
        elif section == "@@audit-listen" and facts.listening is not None and line.strip():
            facts.listening.append(line)
        elif section == "@@audit-containers" and line.strip():
            facts.containers.append(_container(line))
        elif section == "@@audit-certs" and line.strip():
            end, path = line.split(" ", 1)
            facts.certs.append((int(end) if end.isdigit() else 0, path))
        elif section == "@@audit-meminfo" and ":" in line:
            key, value = line.split(":", 1)
            facts.meminfo[key] = int(value.split()[0]) * 1024
        elif section in ("@@audit-df", "@@audit-dfi") and line.strip():
            parts = line.split()
            percent = int(parts[4].rstrip("%")) if parts[4].rstrip("%").isdigit() else 0
            target = facts.df if section == "@@audit-df" else facts.dfi
            if (parts[5], percent) not in target:
                target.append((parts[5], percent))
    return facts


def _container(line: str) -> dict[str, Any]:
    decoder = json.JSONDecoder()
    name, pos = decoder.raw_decode(line)
    labels, pos2 = decoder.raw_decode(line, pos + 1)
    state, pos3 = decoder.raw_decode(line, pos2 + 1)
    ports, pos4 = decoder.raw_decode(line, pos3 + 1)
    rest = line[pos4:].split()
    restarts = int(rest[0]) if rest and rest[0].isdigit() else 0
    empty = next((r[len("EMPTY=") :] for r in rest if r.startswith("EMPTY=")), "")
    return {
        "name": str(name).lstrip("/"),
        "labels": labels or {},
        "state": state or {},
        "restarts": restarts,
        "empty": [e for e in empty.split(",") if e],
        "ports": ports if isinstance(ports, dict) else {},
    }


# ── the judging ──────────────────────────────────────────────────────────────────────────


def read_script(spec: Spec) -> str:
    """The audit's whole read: facts, containers, host, firewall, Ghost and every probe.

    It holds the Ghost Content API key: send it on stdin (:data:`RUN_FROM_STDIN`), never as
    a command line.
    """
    targets = probes.targets_for(spec)
    verify = spec.host.tls == "acme"
    return FACTS_SCRIPT + AUDIT_SCRIPT + _ghost_script(spec) + probes.script(targets, verify)


def audit(spec: Spec, session: Remote, desired: Desired | None = None) -> Report:
    """Read the box in one command and judge everything."""
    started = time.monotonic()
    desired = desired or render(spec)
    targets = probes.targets_for(spec)
    # the read judges its own output (its end marker): a failing probe's exit is no error
    result = session.feed(
        RUN_FROM_STDIN,
        read_script(spec).encode(),
        timeout=180,
        check=False,
        purpose="the audit read",
    )
    if "@@audit-end" not in result.stdout:
        raise RemoteError(f"the audit read failed: {output_tail(result, 4, 300)}")
    facts_part, _, rest = result.stdout.partition("@@end\n")
    facts = parse(facts_part + "@@end\n")
    audit_facts = parse_audit(rest)
    report = Report(spec.host.name)
    report.checks += _routes(probes.parse(rest, targets))
    ghost_checks, totals = _ghost(spec, audit_facts)
    report.checks += ghost_checks
    report.checks += _containers(spec, audit_facts)
    report.checks += _drift(desired, facts)
    report.checks += _host(spec, audit_facts)
    report.checks += _firewall(spec, audit_facts)
    report.checks += _exposed(spec, audit_facts)
    report.checks += _timers(spec, facts)
    report.checks += kept_volumes(spec, facts)
    _save_state(session, audit_facts, totals)
    report.seconds = time.monotonic() - started
    return report


def _routes(results: list[probes.ProbeResult]) -> list[Check]:
    return [
        Check(
            r.target.stack,
            f"route {r.target.probe.method} {r.target.url}",
            OK if r.ok else FAIL,
            r.detail,
            f"{r.target.probe.status}, no redirect"
            + ("" if r.target.probe.allow_empty_body else ", non-empty body"),
        )
        for r in results
    ]


def _ghost(spec: Spec, facts: AuditFacts) -> tuple[list[Check], dict[str, int]]:
    checks: list[Check] = []
    totals: dict[str, int] = {}
    previous: dict[str, Any] = facts.state.get("ghost_posts", {})
    for name, stack in spec.stacks.items():
        if stack.ghost_content is None:
            continue
        api = facts.ghost.get((name, "api"), b"")
        sitemap = facts.ghost.get((name, "sitemap"), b"").decode(errors="replace")
        try:
            data = json.loads(api)
            posts = data["posts"]
            total = int(data["meta"]["pagination"]["total"])
        except (ValueError, KeyError, TypeError):
            checks.append(Check(name, "ghost content API", FAIL, "no JSON posts answer"))
            continue
        totals[name] = total
        locs = sitemap.count("<loc>")
        checks.append(
            Check(
                name,
                "ghost posts: Content API total = sitemap <loc> count",
                OK if total == locs else FAIL,
                f"{total} vs {locs}",
                "equal",
            )
        )
        before = previous.get(name)
        if before is not None and total < int(before):
            checks.append(
                Check(
                    name,
                    "ghost posts: no drop since the last audit",
                    FAIL,
                    f"{before} → {total}",
                    "not fewer",
                )
            )
        else:
            checks.append(
                Check(
                    name,
                    "ghost posts: no drop since the last audit",
                    OK,
                    f"{total} (last audit: {before if before is not None else '-'})",
                    "not fewer",
                )
            )
        empty = [
            p.get("slug", p.get("id", "?"))
            for p in posts
            if not str(p.get("plaintext") or "").strip()
        ]
        checks.append(
            Check(
                name,
                "ghost posts: none published with an empty body",
                FAIL if empty else OK,
                f"{len(empty)} empty: {', '.join(empty)}" if empty else f"{len(posts)} with text",
                "0 empty",
            )
        )
    return checks, totals


def _containers(spec: Spec, facts: AuditFacts) -> list[Check]:
    checks: list[Check] = []
    limits = spec.host.audit
    by_service: dict[tuple[str, str], dict[str, Any]] = {}
    for c in facts.containers:
        labels = c["labels"]
        project = labels.get("com.docker.compose.project", "")
        service = labels.get("com.docker.compose.service", "")
        if project in spec.stacks and service in spec.stacks[project].services:
            by_service[(project, service)] = c
        else:
            checks.append(
                Check(
                    "host",
                    f"container {c['name']}",
                    FAIL,
                    f"not declared by the spec ({c['state'].get('Status', '?')})",
                    "only declared containers",
                )
            )
    for name, stack in spec.stacks.items():
        for service in stack.services:
            found = by_service.get((name, service))
            label = f"container {name}/{service}"
            if found is None:
                checks.append(Check(name, label, FAIL, "missing", "running, healthy"))
                continue
            c = found
            state = c["state"]
            health = (state.get("Health") or {}).get("Status", "none")
            status = state.get("Status", "?")
            good = status == "running" and health == "healthy"
            checks.append(
                Check(name, label, OK if good else FAIL, f"{status}, {health}", "running, healthy")
            )
            restarts = c["restarts"]
            looping = restarts >= limits.restarts_fail
            checks.append(
                Check(
                    name,
                    f"{label} restarts",
                    FAIL if looping else OK,
                    f"{restarts}" + (" (crash-looping)" if looping else ""),
                    f"< {limits.restarts_fail} since it was created",
                )
            )
            if state.get("OOMKilled"):
                checks.append(Check(name, f"{label} OOM", FAIL, "killed for memory", "never"))
            empty = c["empty"]
            checks.append(
                Check(
                    name,
                    f"{label} environment",
                    FAIL if empty else OK,
                    f"empty: {', '.join(empty)}" if empty else "no empty values",
                    "no empty values",
                )
            )
    return checks


def _drift(desired: Desired, facts: HostFacts) -> list[Check]:
    checks: list[Check] = []
    for path, f in desired.files.items():
        have = facts.files.get(path)
        if have is None:
            checks.append(Check(f.stack, f"file {path}", FAIL, "missing", "as rendered"))
        elif have.sha256 != f.sha256:
            checks.append(
                Check(
                    f.stack,
                    f"file {path}",
                    FAIL,
                    f"differs (sha256:{have.sha256[:8]}, rendered {f.sha256[:8]})",
                    "as rendered",
                )
            )
    drifted = len(checks)
    extra = sorted(set(facts.files) - set(desired.files))
    for path in extra:
        checks.append(
            Check("host", f"file {path}", WARN, "not declared by the spec", "only declared files")
        )
    checks.append(
        Check(
            "host",
            "config drift",
            FAIL if drifted else OK,
            f"{drifted} of {len(desired.files)} managed files differ",
            "0 differ",
        )
    )
    return checks


def _firewall(spec: Spec, facts: AuditFacts) -> list[Check]:
    """The live rules against the ones the bootstrap installs for this spec."""
    return [
        Check("host", v.name, OK if v.ok else FAIL, v.value, v.threshold)
        for v in firewall.judge(facts.firewall, firewall.ports_for(spec), str(spec.inventory))
    ]


def _exposed(spec: Spec, facts: AuditFacts) -> list[Check]:
    """Every port reachable on a non-loopback address, against what the spec declares: one
    FAIL per stray port (naming its container or process), then the summary."""
    ports = firewall.ports_for(spec)
    bar = f"only the spec's: {ports.describe()}"
    declared: list[firewall.Exposure] = []
    stray: list[firewall.Exposure] = []
    for c in facts.containers:
        ours, theirs = firewall.container_exposures(c["name"], c["labels"], c["ports"], spec)
        declared += ours
        stray += theirs
    checks: list[Check] = []
    if facts.listening is None:
        checks.append(
            Check("host", "listening sockets", FAIL, "ss could not list them (iproute2?)", bar)
        )
    else:
        ours, theirs = firewall.listener_exposures(facts.listening, ports)
        declared += ours
        stray += theirs
    for e in stray:
        checks.append(
            Check(
                "host",
                f"port {e.port}/{e.protocol} published by {e.owner}",
                FAIL,
                f"{e.owner} on {e.where()}: not declared by the spec",
                bar,
            )
        )
    found = sorted({(e.port, e.protocol, e.owner) for e in declared})
    checks.append(
        Check(
            "host",
            "ports open to the outside",
            FAIL if stray else OK,
            f"{len(stray)} not in the spec"
            if stray
            else ", ".join(f"{port}/{proto} {owner}" for port, proto, owner in found) or "none",
            bar,
        )
    )
    return checks


def _timers(spec: Spec, facts: HostFacts) -> list[Check]:
    """With a backup declared, its timers must be enabled and waiting: a stopped nightly
    timer would otherwise show only as a stale backup, a day later."""
    if spec.host.backup is None:
        return []
    return [
        Check(
            "host",
            f"timer {timer}",
            OK if facts.timers.get(timer) == "enabled active" else FAIL,
            facts.timers.get(timer) or "not installed",
            "enabled active",
        )
        for timer in backupfiles.TIMERS
    ]


def _host(spec: Spec, facts: AuditFacts) -> list[Check]:
    limits = spec.host.audit
    checks: list[Check] = []
    for mount, percent in facts.df:
        status = (
            FAIL
            if percent >= limits.disk_fail_percent
            else (WARN if percent >= limits.disk_warn_percent else OK)
        )
        checks.append(
            Check(
                "host",
                f"disk {mount}",
                status,
                f"{percent}% used",
                f"warn {limits.disk_warn_percent}%, fail {limits.disk_fail_percent}%",
            )
        )
    for mount, percent in facts.dfi:
        checks.append(
            Check(
                "host",
                f"inodes {mount}",
                FAIL if percent >= limits.inode_fail_percent else OK,
                f"{percent}% used",
                f"fail {limits.inode_fail_percent}%",
            )
        )
    mem = facts.meminfo
    if mem.get("MemTotal"):
        available = 100 * mem.get("MemAvailable", 0) // mem["MemTotal"]
        checks.append(
            Check(
                "host",
                "memory available",
                WARN if available < limits.memory_available_warn_percent else OK,
                f"{available}% of {mem['MemTotal'] // 1024**2} MiB",
                f"warn below {limits.memory_available_warn_percent}%",
            )
        )
        limits_sum = sum(
            s.mem_limit or 0 for st in spec.stacks.values() for s in st.services.values()
        )
        checks.append(
            Check(
                "host",
                "memory budget (sum of mem_limit + os_reserve)",
                OK if limits_sum + spec.host.os_reserve <= spec.host.memory else FAIL,
                f"{(limits_sum + spec.host.os_reserve) // 1024**2} MiB",
                f"≤ {spec.host.memory // 1024**2} MiB",
            )
        )
    if mem.get("SwapTotal"):
        used = 100 * (mem["SwapTotal"] - mem.get("SwapFree", 0)) // mem["SwapTotal"]
        checks.append(
            Check(
                "host",
                "swap used",
                WARN if used >= limits.swap_used_warn_percent else OK,
                f"{used}%",
                f"warn {limits.swap_used_warn_percent}%",
            )
        )
    per_core = facts.load / facts.nproc
    checks.append(
        Check(
            "host",
            "load (1 min, per core)",
            WARN if per_core >= limits.load_warn_per_core else OK,
            f"{per_core:.2f} ({facts.load:.2f} on {facts.nproc})",
            f"warn {limits.load_warn_per_core}",
        )
    )
    if facts.backup is None and spec.host.backup is None:
        checks.append(
            Check(
                "host",
                "last successful backup",
                WARN,
                "no backup in host.yaml",
                f"within {limits.backup_max_age_hours}h",
            )
        )
    elif facts.backup is None:
        checks.append(
            Check(
                "host",
                "last successful backup",
                WARN,
                "none recorded",
                f"within {limits.backup_max_age_hours}h",
            )
        )
    else:
        hours = (facts.now - facts.backup) / 3600
        checks.append(
            Check(
                "host",
                "last successful backup",
                FAIL if hours > limits.backup_max_age_hours else OK,
                f"{hours:.1f}h ago",
                f"within {limits.backup_max_age_hours}h",
            )
        )
    served = served_names(spec)
    for end, path in facts.certs:
        internal = "/certificates/local/" in path
        days = (end - facts.now) / 86400
        name = path.rsplit("/", 1)[-1].removesuffix(".crt")
        if name not in served:
            # a name the spec no longer serves: Caddy keeps its certificate in storage and
            # stops renewing it; its expiry is nobody's problem, so it is only listed
            checks.append(
                Check(
                    "host",
                    f"TLS certificate {name}",
                    INFO,
                    f"{days:.1f} days left; no longer served by the spec (left in Caddy's "
                    "storage, not renewed)",
                    "not judged",
                )
            )
            continue
        if internal:  # Caddy's own CA issues 12-hour certificates and renews them itself
            status = OK if days > 0 else FAIL
            bar = "valid (internal CA, renewed by Caddy)"
        else:
            status = (
                FAIL
                if days < limits.cert_min_days / 2
                else (WARN if days < limits.cert_min_days else OK)
            )
            bar = f"≥ {limits.cert_min_days} days"
        checks.append(
            Check("host", f"TLS certificate {name}", status, f"{days:.1f} days left", bar)
        )
    return checks


def served_names(spec: Spec) -> set[str]:
    """Every host name the edge serves for ``spec``: its routes' and redirects' domains."""
    names: set[str] = set()
    for name, stack in spec.stacks.items():
        for domain in [r.domain for r in stack.routes] + [r.domain for r in stack.redirects]:
            host = spec.domain(name, domain)
            if host:
                names.add(host)
    return names


def kept_volumes(spec: Spec, facts: HostFacts) -> list[Check]:
    """The volumes of compose projects the spec does not declare (a removed stack's, kept
    by apply): listed as info, with their size and age and the command that deletes them."""
    inventory = display_path(spec.inventory)
    checks: list[Check] = []
    for v in sorted(facts.volumes, key=lambda v: (v.project, v.name)):
        if v.project in spec.stacks:
            continue
        size = human_size(v.size) if v.size is not None else "size not measured"
        since = f" since {v.created[:10]}" if v.created else ""
        checks.append(
            Check(
                "host",
                f"kept volume {v.name}",
                INFO,
                f"{size}{since}; stack {v.project} is no longer declared",
                f"`vpsctl apply -i {inventory} --destroy-data` deletes it",
            )
        )
    return checks


def _save_state(session: Remote, facts: AuditFacts, totals: dict[str, int]) -> None:
    """Remember Ghost post totals for the next audit's drop check (a drop is reported once,
    by the audit that sees it)."""
    posts = {**facts.state.get("ghost_posts", {}), **totals}
    state = {"ghost_posts": posts, "audited_at": facts.now}
    session.put_files([(STATE, json.dumps(state).encode(), 0o600)])
