"""audit: prove the whole box healthy, in seconds, and fail loudly when it is not.

Everything is read in ONE remote command (the facts script, the audit script and every
probe through Caddy), then judged here against the spec and its thresholds:

- every route through Caddy, as a user reaches it (status, no redirect, non-empty body,
  content checks; webhook routes answer an unsigned POST with the app's own 4xx);
- Ghost's content, as Ghost 6 really serves it: every published post, paged through the
  Content API (100 a page, ``limit=all`` is capped); the sitemap lists exactly the posts
  Ghost puts in it (all but those whose ``canonical_url`` points elsewhere), missing and
  extra ones named; the post count has not dropped since the last audit (a state file on
  the box); no PUBLIC post is empty (members-only and paid posts come back empty to a
  content key by design, so they are not judged);
- first launches: an app that declares ``first_launch`` and still waits for its owner
  (Ghost's setup status false, Plausible's ``/login`` → ``/register``) fails, read through
  Caddy as a stranger would find it;
- containers: every declared service running and healthy, restart counts and OOM kills, no
  container the spec does not declare, no empty value in any container's environment
  (names only: values never leave the box);
- the host: disk and inodes, memory and swap, load, the age of the last backup, days left
  on each TLS certificate in Caddy's storage;
- the firewall as the kernel has it: INPUT and DOCKER-USER, IPv4 and IPv6, hold exactly the
  rules the bootstrap installs for the spec's open ports (:mod:`vpsctl.core.firewall`, the one
  source of both), with nothing ahead of them;
- ports open to the outside: every public port a container publishes must be one the spec
  declares for that service, and every TCP socket listening on a non-loopback address must
  be on one of ``open_ports`` (a stray ``docker run -p 8081:80`` is named, with its port);
- config drift: managed files whose content differs from the rendered spec.

No secret travels on a command line, nor in the read at all: the read goes to the box on
stdin, and Ghost's Content API key (derived by apply, kept root-only on the box) is read
there and reaches curl as a config on curl's stdin (``-K -``), never in argv.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import html
import json
import re
import shlex
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from vpsctl.core import backupfiles, firewall
from vpsctl.core.appsteps import APPS_ROOT
from vpsctl.core.facts import FACTS_SCRIPT, HostFacts, parse
from vpsctl.core.layout import HOST_ROOT
from vpsctl.core.render import Desired, render
from vpsctl.errors import display_path
from vpsctl.host import probes
from vpsctl.host.remote import Remote, RemoteError, output_tail
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


GHOST_KEY_FILE = "ghost-content-key"  # the Content API key alone, root 0600 (apply writes it)
# Ghost 6 caps every Content API page at 100 posts (``limit=all`` included): page through.
GHOST_PAGE = 100
GHOST_MAX_PAGES = 1000  # 100,000 posts; a loop that never ends would hold the audit
# What the audit needs of each post; ``url`` is what the sitemap lists.
GHOST_FIELDS = "id,slug,url,visibility,canonical_url,plaintext"

# Defined once, called per Ghost stack: pages through the Content API and reads the posts
# sitemap (every page of it Ghost's index lists). The key is read ON the box from its
# root-only file and reaches curl as a config on curl's stdin, written by the shell's own
# printf (a builtin: no process, no argv): it never crosses the wire and is never on a
# command line. Bodies come back gzipped: every post carries its plaintext.
GHOST_FUNCTION = (
    r"""vpsctl_ghost() {
  g_stack=$1 g_host=$2 g_keyfile=$3 g_insecure=$4
  g_tmp=$(mktemp -d)
  if [ ! -s "$g_keyfile" ]; then
    echo "@@ghost $g_stack key missing"
  else
    g_key=$(cat "$g_keyfile")
    case $g_key in
      *[!0-9a-f]*) echo "@@ghost $g_stack key malformed" ;;
      *)
        g_page=1 g_pages=1
        while [ "$g_page" -le "$g_pages" ] && [ "$g_page" -le @MAX_PAGES@ ]; do
          g_url="https://$g_host/ghost/api/content/posts/?limit=@PAGE@&page=$g_page"
          g_code=$(printf 'url = "%s&fields=@FIELDS@&key=%s"\n' "$g_url" "$g_key" \
            | curl -s$g_insecure --max-time 20 --resolve "$g_host:443:127.0.0.1" \
              -o "$g_tmp/body" -w '%{http_code}' -K - 2>/dev/null)
          echo "@@ghost $g_stack api $g_page ${g_code:-000}"
          gzip -c < "$g_tmp/body" 2>/dev/null | base64 -w0; echo
          [ "$g_code" = 200 ] || break
          g_pages=$(grep -oE '"pages": *[0-9]+' "$g_tmp/body" | tail -n 1 | tr -dc 0-9)
          g_pages=${g_pages:-1}
          g_page=$((g_page + 1))
          rm -f "$g_tmp/body"
        done
        ;;
    esac
    g_key=
  fi
  curl -s$g_insecure --max-time 10 --resolve "$g_host:443:127.0.0.1" -o "$g_tmp/index" \
    "https://$g_host/sitemap.xml" 2>/dev/null
  g_files=$(grep -oE 'sitemap-posts(-[0-9]+)?[.]xml' "$g_tmp/index" 2>/dev/null \
    | sort -u | head -n 100)
  for g_file in ${g_files:-sitemap-posts.xml}; do
    g_code=$(curl -s$g_insecure --max-time 10 --resolve "$g_host:443:127.0.0.1" \
      -o "$g_tmp/sitemap" -w '%{http_code}' "https://$g_host/$g_file" 2>/dev/null)
    echo "@@ghost $g_stack sitemap $g_file ${g_code:-000}"
    gzip -c < "$g_tmp/sitemap" 2>/dev/null | base64 -w0; echo
    rm -f "$g_tmp/sitemap"
  done
  rm -rf "$g_tmp"
}
""".replace("@MAX_PAGES@", str(GHOST_MAX_PAGES))
    .replace("@PAGE@", str(GHOST_PAGE))
    .replace("@FIELDS@", GHOST_FIELDS)
)

# A first launch is read as a stranger would meet it: through Caddy, under the public name.
FIRST_LAUNCH_PATHS = {
    "ghost": "/ghost/api/admin/authentication/setup/",
    "plausible": "/login",
}


def ghost_key_path(stack: str, root: str = APPS_ROOT) -> str:
    """Where apply keeps ``stack``'s derived Content API key on the box."""
    return f"{root}/{stack}/{GHOST_KEY_FILE}"


def _ghost_script(spec: Spec, trust: probes.Trust | None = None, apps_root: str = APPS_ROOT) -> str:
    """Page through Ghost's Content API and read its sitemap through Caddy, per stack that
    asks for it; the key stays on the box (:data:`GHOST_FUNCTION`)."""
    trust = trust or probes.trust_for(spec)
    insecure = trust.curl_flag  # "", " -k" or " --cacert <Pebble's roots>"
    calls = []
    for name, stack in spec.stacks.items():
        if stack.ghost_content is None:
            continue
        host = spec.domain(name, stack.ghost_content.domain)
        if host is not None:
            args = [name, host, ghost_key_path(name, apps_root), insecure]
            calls.append(f"vpsctl_ghost {shlex.join(args)}")
    if not calls:
        return ""
    return GHOST_FUNCTION + "\n".join(calls) + "\n"


def first_launch_host(spec: Spec, name: str) -> str | None:
    """The public host name of the service a stack's ``first_launch`` names: the domain of
    the first route to it."""
    claim = spec.stacks[name].first_launch
    if claim is None:
        return None
    for route in spec.stacks[name].routes:
        if route.service == claim.service:
            return spec.domain(name, route.domain)
    return None


def _first_launch_script(spec: Spec, trust: probes.Trust | None = None) -> str:
    """One request per stack that declares a first launch, to the page that tells whether
    the app still waits for its owner: status, redirect target and the body's start."""
    insecure = (trust or probes.trust_for(spec)).curl_flag
    lines = []
    for name, stack in spec.stacks.items():
        host = first_launch_host(spec, name)
        if stack.first_launch is None or host is None:
            continue
        app = stack.first_launch.app
        url = f"https://{host}{FIRST_LAUNCH_PATHS[app]}"
        lines += [
            f"fl_code=$(curl -s{insecure} --max-time 10 "
            f'--resolve {shlex.quote(f"{host}:443:127.0.0.1")} -o "$fl_tmp" '
            f"-w '%{{http_code}} %{{redirect_url}}' {shlex.quote(url)} 2>/dev/null)",
            f'echo "@@first-launch {name} {app} ${{fl_code:-000}}"',
            'head -c 4096 "$fl_tmp" | base64 -w0; echo',
            ': > "$fl_tmp"',
        ]
    if not lines:
        return ""
    return "fl_tmp=$(mktemp)\n" + "\n".join(lines) + '\nrm -f "$fl_tmp"\n'


@dataclass
class GhostRead:
    """What the box read of one Ghost: the key's state, each Content API page and each
    posts sitemap file, as (status, body)."""

    key: str = "ok"  # ok | missing | malformed
    pages: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    sitemaps: dict[str, tuple[int, bytes]] = field(default_factory=dict)


@dataclass(frozen=True)
class FirstLaunchRead:
    """One app's first-launch page as Caddy served it."""

    app: str
    status: int
    redirect: str
    body: bytes


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
    ghost: dict[str, GhostRead] = field(default_factory=dict)
    first_launch: dict[str, FirstLaunchRead] = field(default_factory=dict)
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
            _ghost_line(facts, line.split(), lines[index + 1] if index + 1 < len(lines) else "")
        elif line.startswith("@@first-launch "):
            parts = line.split()
            body = lines[index + 1] if index + 1 < len(lines) else ""
            if len(parts) >= 4:
                facts.first_launch[parts[1]] = FirstLaunchRead(
                    parts[2],
                    int(parts[3]) if parts[3].isdigit() else 0,
                    parts[4] if len(parts) > 4 else "",
                    _unbase64(body),
                )
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


def _unbase64(line: str, gzipped: bool = False) -> bytes:
    try:
        data = base64.b64decode(line.strip(), validate=True)
        return gzip.decompress(data) if gzipped and data else data
    except (binascii.Error, OSError, EOFError):
        return b""


def _ghost_line(facts: AuditFacts, parts: list[str], body: str) -> None:
    """``@@ghost STACK key missing|malformed``, ``@@ghost STACK api PAGE STATUS`` and
    ``@@ghost STACK sitemap FILE STATUS``, the last two followed by their gzipped body."""
    if len(parts) < 4:
        return
    read = facts.ghost.setdefault(parts[1], GhostRead())
    what, arg = parts[2], parts[3]
    status = int(parts[4]) if len(parts) > 4 and parts[4].isdigit() else 0
    if what == "key":
        read.key = arg
    elif what == "api" and arg.isdigit():
        read.pages[int(arg)] = (status, _unbase64(body, gzipped=True))
    elif what == "sitemap":
        read.sitemaps[arg] = (status, _unbase64(body, gzipped=True))


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
    """The audit's whole read: facts, containers, host, firewall, Ghost, first launches and
    every probe. It holds no secret (Ghost's key is read on the box); it still goes on stdin
    (:data:`RUN_FROM_STDIN`), never as a command line.
    """
    targets = probes.targets_for(spec)
    trust = probes.trust_for(spec)  # tls: pebble: Pebble's roots, on the box before any curl
    return (
        FACTS_SCRIPT
        + AUDIT_SCRIPT
        + trust.prelude()
        + _ghost_script(spec, trust)
        + _first_launch_script(spec, trust)
        + probes.script(targets, trust)
    )


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
    report.checks += _first_launch(spec, audit_facts)
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


def _few(items: list[str], shown: int = 5) -> str:
    """``a, b, c`` or ``a, b, c, d, e and 7 more``."""
    if len(items) <= shown:
        return ", ".join(items)
    return ", ".join(items[:shown]) + f" and {len(items) - shown} more"


def _url_key(url: str) -> str:
    """A URL as Ghost's sitemap compares it: its path without trailing slashes."""
    parts = urlsplit(url.strip())
    return urlunsplit(
        (parts.scheme, parts.netloc.lower(), parts.path.rstrip("/"), parts.query, parts.fragment)
    )


def _sitemap_worthy(post: dict[str, Any]) -> bool:
    """Whether Ghost lists ``post`` in its sitemap: not when its canonical_url points at
    another address (a post first published elsewhere)."""
    canonical = str(post.get("canonical_url") or "")
    return not canonical or _url_key(canonical) == _url_key(str(post.get("url") or ""))


_SITEMAP_LOC = re.compile(r"<url>\s*<loc>([^<]*)</loc>")


def _sitemap_urls(read: GhostRead) -> tuple[list[str], list[str]]:
    """The posts sitemap's URLs over all its files, and what went wrong reading them."""
    urls: list[str] = []
    problems: list[str] = []
    for name, (status, body) in sorted(read.sitemaps.items()):
        if status == 200:
            text = body.decode(errors="replace")
            urls += [html.unescape(loc) for loc in _SITEMAP_LOC.findall(text)]
        else:
            problems.append(f"/{name} answered {status or 'nothing'}")
    return urls, problems


def _ghost_posts(
    name: str, read: GhostRead, keyfile: str, fix: str
) -> tuple[list[dict[str, Any]], int, Check]:
    """Every published post the Content API lists over all its pages, the API's total, and
    the check on reading them (posts ``[]`` and total -1 when it failed)."""
    label, bar = "ghost content API", "the box's key accepted, every page read"
    if read.key == "missing":
        value = f"no Content API key on the box ({keyfile}): {fix}"
        return [], -1, Check(name, label, FAIL, value, bar)
    if read.key == "malformed":
        value = (
            f"the key in {keyfile} is not a Content API key (26 hex digits): delete the file, "
            f"then {fix}"
        )
        return [], -1, Check(name, label, FAIL, value, bar)
    if read.key != "ok":
        return [], -1, Check(name, label, FAIL, "nothing read (the read stopped before)", bar)
    posts: dict[str, dict[str, Any]] = {}
    total, pages = -1, 1
    for number, (status, body) in sorted(read.pages.items()):
        if status in (401, 403):
            # apply rewrites the box's copy only when it is missing: deleting it is the way
            value = (
                f"Ghost refused the Content API key in {keyfile} ({status}): delete the file, "
                f"then {fix}"
            )
            return [], -1, Check(name, label, FAIL, value, bar)
        if status != 200:
            value = f"page {number} answered {status or 'nothing'}"
            return [], -1, Check(name, label, FAIL, value, bar)
        try:
            data = json.loads(body)
            pagination = data["meta"]["pagination"]
            if number == 1:
                total, pages = int(pagination["total"]), int(pagination["pages"])
            for post in data["posts"]:
                posts.setdefault(str(post.get("id", len(posts))), post)
        except (ValueError, KeyError, TypeError, AttributeError):
            value = f"page {number} is no JSON posts answer"
            return [], -1, Check(name, label, FAIL, value, bar)
    if not read.pages:
        return [], -1, Check(name, label, FAIL, "no answer", bar)
    if len(read.pages) < pages:
        value = f"read {len(read.pages)} of {pages} pages (at most {GHOST_MAX_PAGES})"
        return [], -1, Check(name, label, FAIL, value, bar)
    unit = "page" if pages == 1 else "pages"
    value = f"{len(posts)} published posts in {pages} {unit} of {GHOST_PAGE}"
    return list(posts.values()), total, Check(name, label, OK, value, bar)


def _ghost(spec: Spec, facts: AuditFacts) -> tuple[list[Check], dict[str, int]]:
    """Ghost's content as a reader meets it: every published post (paged, 100 at a time),
    the sitemap listing exactly the posts Ghost puts in it, no drop in the post count since
    the last audit, and no PUBLIC post with an empty body (members-only and paid posts come
    back empty to a content key by design)."""
    checks: list[Check] = []
    totals: dict[str, int] = {}
    previous: dict[str, Any] = facts.state.get("ghost_posts", {})
    fix = f"`vpsctl apply -i {display_path(spec.inventory)}` derives it again"
    for name, stack in spec.stacks.items():
        if stack.ghost_content is None or spec.domain(name, stack.ghost_content.domain) is None:
            continue
        read = facts.ghost.get(name, GhostRead(key="unread"))
        posts, total, api = _ghost_posts(name, read, ghost_key_path(name), fix)
        checks.append(api)
        if api.status != OK:
            continue
        totals[name] = total
        checks.append(_ghost_sitemap(name, read, posts))
        before = previous.get(name)
        dropped = before is not None and total < int(before)
        checks.append(
            Check(
                name,
                "ghost posts: no drop since the last audit",
                FAIL if dropped else OK,
                f"{before} → {total}"
                if dropped
                else f"{total} (last audit: {before if before is not None else '-'})",
                "not fewer",
            )
        )
        public = [p for p in posts if str(p.get("visibility") or "public") == "public"]
        gated = len(posts) - len(public)
        empty = [
            str(p.get("slug") or p.get("id") or "?")
            for p in public
            if not str(p.get("plaintext") or "").strip()
        ]
        not_judged = (
            f"; {gated} members-only or paid not judged (a content key gets them empty)"
            if gated
            else ""
        )
        checks.append(
            Check(
                name,
                "ghost posts: no public post with an empty body",
                FAIL if empty else OK,
                (f"{len(empty)} empty: {_few(empty)}" if empty else f"{len(public)} with text")
                + not_judged,
                "0 empty",
            )
        )
    return checks, totals


def _ghost_sitemap(name: str, read: GhostRead, posts: list[dict[str, Any]]) -> Check:
    """The sitemap against the API, post by post: Ghost lists every published post of any
    visibility, except one whose canonical_url points elsewhere."""
    label = "ghost posts: the sitemap lists every post it should"
    bar = "every published post without a canonical_url elsewhere, no other"
    urls, problems = _sitemap_urls(read)
    worthy = [p for p in posts if _sitemap_worthy(p)]
    if problems and (worthy or not all(" answered 404" in p for p in problems)):
        return Check(name, label, FAIL, "; ".join(problems), bar)
    listed = {_url_key(u) for u in urls}
    known = {_url_key(str(p.get("url") or "")) for p in posts}
    missing = [
        str(p.get("slug") or p.get("url") or "?")
        for p in worthy
        if _url_key(str(p.get("url") or "")) not in listed
    ]
    extra = sorted({urlsplit(u).path or u for u in urls if _url_key(u) not in known})
    elsewhere = len(posts) - len(worthy)
    left_out = f"; {elsewhere} with a canonical_url elsewhere, left out as Ghost does"
    if missing or extra:
        found = []
        if missing:
            found.append(f"{len(missing)} missing from the sitemap: {_few(missing)}")
        if extra:
            found.append(f"{len(extra)} listed but not published: {_few(extra)}")
        return Check(name, label, FAIL, "; ".join(found), bar)
    value = f"{len(worthy)} of {len(posts)} posts listed" + (left_out if elsewhere else "")
    return Check(name, label, OK, value, bar)


def _first_launch(spec: Spec, facts: AuditFacts) -> list[Check]:
    """An app still waiting for its owner is open to whoever finds it first: FAIL it. The
    page that tells is read through Caddy, and what it answered is the check's value."""
    checks: list[Check] = []
    fix = f"`vpsctl apply -i {display_path(spec.inventory)}` claims it"
    for name, stack in spec.stacks.items():
        claim = stack.first_launch
        if claim is None:
            continue
        app, path = claim.app, FIRST_LAUNCH_PATHS[claim.app]
        label = f"first launch: {app} owner claimed"
        host = first_launch_host(spec, name)
        if host is None:
            value = f"no route of this stack reaches {claim.service}: the page cannot be read"
            checks.append(Check(name, label, FAIL, value, "an owner exists"))
            continue
        read = facts.first_launch.get(name, FirstLaunchRead(app, 0, "", b""))
        if app == "ghost":
            checks.append(_ghost_claimed(name, label, host, path, read=read, fix=fix))
        else:
            checks.append(_plausible_claimed(name, label, host, path, read=read, fix=fix))
    return checks


def _ghost_claimed(
    name: str, label: str, host: str, path: str, *, read: FirstLaunchRead, fix: str
) -> Check:
    bar = "an owner exists (setup status true)"
    try:
        status = json.loads(read.body)["setup"][0]["status"] if read.status == 200 else None
    except (ValueError, KeyError, IndexError, TypeError):
        status = None
    if status is True:
        value = f"GET {path} through Caddy answers 200: setup status true (already set up)"
        return Check(name, label, OK, value, bar)
    if status is False:
        value = (
            f"first-launch state: GET {path} answers setup status false; whoever opens "
            f"https://{host}/ghost/ first becomes the owner: {fix}"
        )
        return Check(name, label, FAIL, value, bar)
    return Check(name, label, FAIL, f"GET {path} {_answered(read)}: cannot tell", bar)


def _plausible_claimed(
    name: str, label: str, host: str, path: str, *, read: FirstLaunchRead, fix: str
) -> Check:
    bar = f"GET {path} answers 200, not a redirect to /register"
    if read.status == 200:
        return Check(
            name, label, OK, f"GET {path} through Caddy answers 200 (an owner exists)", bar
        )
    if 300 <= read.status < 400 and urlsplit(read.redirect).path.rstrip("/") == "/register":
        value = (
            f"first-launch state: GET {path} redirects to /register; whoever registers at "
            f"https://{host}/register first becomes the owner: {fix}"
        )
        return Check(name, label, FAIL, value, bar)
    return Check(name, label, FAIL, f"GET {path} {_answered(read)}: cannot tell", bar)


def _answered(read: FirstLaunchRead) -> str:
    if read.status == 0:
        return "got no answer"
    return f"answered {read.status}" + (f" → {read.redirect}" if read.redirect else "")


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
