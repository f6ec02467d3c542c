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
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from vpsctl.core import backupfiles, boxscripts, cluster, firewall, sections
from vpsctl.core.appsteps import APPS_ROOT
from vpsctl.core.facts import HostFacts, facts_script, parse
from vpsctl.core.layout import HOST_ROOT
from vpsctl.core.render import Desired
from vpsctl.errors import display_path
from vpsctl.host import commands, probes
from vpsctl.host.commands import audit as commands_audit
from vpsctl.host.remote import Remote, RemoteError, output_tail
from vpsctl.ops.inputs import render_spec
from vpsctl.spec.studio import Spec
from vpsctl.spec.units import human_size

STATE = f"{HOST_ROOT}/audit/state.json"
BACKUP_RECORD = backupfiles.RECORD  # written by the box's vpsctl-backup


class Status(StrEnum):
    """A check's verdict; its value is what the report prints."""

    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"
    INFO = "info"  # listed for the operator, never a verdict: leftovers to decide about


OK, WARN, FAIL, INFO = Status.OK, Status.WARN, Status.FAIL, Status.INFO


@dataclass(frozen=True)
class Check:
    """One line of the audit: what was checked, its verdict, the measured value, the bar."""

    group: str  # a stack's name, or "host" (a cluster's own checks: "cluster")
    name: str
    status: Status
    value: str
    threshold: str = ""
    node: str = ""  # a cluster's node the check is about ("" on one box)

    def to_json(self) -> dict[str, Any]:
        """The check as JSON data (``node`` only on a cluster: one box's stays as it was)."""
        data = asdict(self)
        if not self.node:
            del data["node"]
        return data


@dataclass
class Report:
    """The whole audit."""

    host: str
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0
    nodes: list[str] = field(default_factory=list)  # a cluster's, in the order it reads them

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
        data: dict[str, Any] = {
            "host": self.host,
            "ok": self.ok,
            "summary": self.summary(),
            "counts": self.counts(),
            "seconds": round(self.seconds, 2),
            "checks": [c.to_json() for c in self.checks],
        }
        if self.nodes:
            data["nodes"] = list(self.nodes)
        return data


# ── the remote read ──────────────────────────────────────────────────────────────────────

# Docker's Go templates for what :func:`_container` reads: four JSON values and a count on
# one line, then the container's environment one variable a line (read on the box only).
DOCKER_FORMATS = {
    "container": "{{json .Name}} {{json .Config.Labels}} {{json .State}} "
    "{{json .NetworkSettings.Ports}} {{.RestartCount}}",
    "env": "{{range .Config.Env}}{{println .}}{{end}}",
}


def audit_script() -> str:
    """The audit's own read of the box (``templates/box/audit.sh.j2``)."""
    return boxscripts.render(
        boxscripts.AUDIT,
        formats=DOCKER_FORMATS,
        backup_record=BACKUP_RECORD,
        state=STATE,
        firewall_read=firewall.READ_SCRIPT,
    )


# The read goes to the box on stdin, not as ``sh -c SCRIPT``: a script on a command line is
# in every process listing for as long as it runs (:func:`commands.audit.read_from_stdin`).
RUN_FROM_STDIN = commands.join(commands_audit.read_from_stdin())


GHOST_KEY_FILE = "ghost-content-key"  # the Content API key alone, root 0600 (apply writes it)
# Ghost 6 caps every Content API page at 100 posts (``limit=all`` included): page through.
GHOST_PAGE = 100
GHOST_MAX_PAGES = 1000  # 100,000 posts; a loop that never ends would hold the audit
# What the audit needs of each post; ``url`` is what the sitemap lists.
GHOST_FIELDS = "id,slug,url,visibility,canonical_url,plaintext"

# Where the box's reads through Caddy reach it: on one box, itself (a cluster's other nodes
# reach the edge node's address).
LOCAL = "127.0.0.1"

# A first launch is read as a stranger would meet it: through Caddy, under the public name.
FIRST_LAUNCH_PATHS = {
    "ghost": "/ghost/api/admin/authentication/setup/",
    "plausible": "/login",
}


def ghost_key_path(stack: str, root: str = APPS_ROOT) -> str:
    """Where apply keeps ``stack``'s derived Content API key on the box."""
    return f"{root}/{stack}/{GHOST_KEY_FILE}"


def _ghost_script(
    spec: Spec, trust: probes.Trust | None = None, apps_root: str = APPS_ROOT, edge: str = LOCAL
) -> str:
    """Page through Ghost's Content API and read its sitemap through Caddy (at ``edge``),
    per stack that asks for it (``templates/box/ghost.sh.j2``); the key stays on the box."""
    trust = trust or probes.trust_for(spec)
    calls = []
    for name, stack in spec.stacks.items():
        if stack.ghost_content is None:
            continue
        host = spec.domain(name, stack.ghost_content.domain)
        if host is not None:
            # curl_flag: "", " -k" or " --cacert <Pebble's roots>", one argument of the call
            calls.append([name, host, ghost_key_path(name, apps_root), trust.curl_flag, edge])
    if not calls:
        return ""
    return boxscripts.render(
        boxscripts.GHOST,
        max_pages=GHOST_MAX_PAGES,
        page=GHOST_PAGE,
        fields=GHOST_FIELDS,
        calls=calls,
    )


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


def _first_launch_script(spec: Spec, trust: probes.Trust | None = None, edge: str = LOCAL) -> str:
    """One request per stack that declares a first launch, to the page that tells whether
    the app still waits for its owner (``templates/box/first-launch.sh.j2``), through Caddy
    at ``edge``."""
    checks = []
    for name, stack in spec.stacks.items():
        host = first_launch_host(spec, name)
        if stack.first_launch is None or host is None:
            continue
        app = stack.first_launch.app
        checks.append(
            {
                "stack": name,
                "app": app,
                "resolve": f"{host}:443:{edge}",
                "url": f"https://{host}{FIRST_LAUNCH_PATHS[app]}",
            }
        )
    if not checks:
        return ""
    tls = (trust or probes.trust_for(spec)).curl_flag
    return boxscripts.render(boxscripts.FIRST_LAUNCH, tls=tls, checks=checks)


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
    for section in sections.split(output):
        _read(facts, section)
    return facts


def _read(facts: AuditFacts, section: sections.Section) -> None:
    """Fold one section of the audit's answer into ``facts`` (others are left alone)."""
    name, words, body = section.name, section.words, section.lines
    if name == "audit-now":
        facts.now = int(words[0])
    elif name == "audit-nproc":
        facts.nproc = max(1, int(words[0]))
    elif name == "audit-load":
        facts.load = float(words[0])
    elif name == "audit-backup":
        facts.backup = int(words[0]) if words and words[0].isdigit() else None
    elif name == "audit-state":
        facts.state = _state(section.args.strip())
    elif name == "ghost":
        _ghost_line(facts, words, section.body)
    elif name == "first-launch" and len(words) >= 3:
        facts.first_launch[words[0]] = FirstLaunchRead(
            words[1],
            int(words[2]) if words[2].isdigit() else 0,
            words[3] if len(words) > 3 else "",
            _unbase64(section.body),
        )
    elif name == "audit-listen":
        facts.listening = [line for line in body if line.strip()]
    elif name == "audit-listen-error":
        facts.listening = None
    elif name == "audit-containers":
        facts.containers += [_container(line) for line in body if line.strip()]
    elif name == "audit-certs":
        for line in filter(str.strip, body):
            end, path = line.split(" ", 1)
            facts.certs.append((int(end) if end.isdigit() else 0, path))
    elif name == "audit-meminfo":
        for key, value in (line.split(":", 1) for line in body if ":" in line):
            facts.meminfo[key] = int(value.split()[0]) * 1024
    elif name in ("audit-df", "audit-dfi"):
        target = facts.df if name == "audit-df" else facts.dfi
        for parts in (line.split() for line in body if line.strip()):
            percent = int(parts[4].rstrip("%")) if parts[4].rstrip("%").isdigit() else 0
            if (parts[5], percent) not in target:
                target.append((parts[5], percent))


def _state(raw: str) -> dict[str, Any]:
    """The audit's state file, as the box sent it in base64 ({} when absent or unreadable)."""
    try:
        data = json.loads(base64.b64decode(raw)) if raw else {}
    except (binascii.Error, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _unbase64(line: str, gzipped: bool = False) -> bytes:
    try:
        data = base64.b64decode(line.strip(), validate=True)
        return gzip.decompress(data) if gzipped and data else data
    except (binascii.Error, OSError, EOFError):
        return b""


def _ghost_line(facts: AuditFacts, words: list[str], body: str) -> None:
    """``@@ghost STACK key missing|malformed``, ``@@ghost STACK api PAGE STATUS`` and
    ``@@ghost STACK sitemap FILE STATUS``, the last two followed by their gzipped body."""
    if len(words) < 3:
        return
    read = facts.ghost.setdefault(words[0], GhostRead())
    what, arg = words[1], words[2]
    status = int(words[3]) if len(words) > 3 and words[3].isdigit() else 0
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
    return facts_script() + audit_script() + caddy_reads(spec, trust, targets)


def caddy_reads(
    spec: Spec, trust: probes.Trust, targets: list[probes.ProbeTarget], edge: str = LOCAL
) -> str:
    """The reads through Caddy at ``edge``: Ghost's content and first launches of ``spec``'s
    stacks, then ``targets``' probes (always through this box's own Caddy: the edge's); ""
    when there is nothing to read. Pebble's roots go on the box first."""
    through = _ghost_script(spec, trust, edge=edge) + _first_launch_script(spec, trust, edge)
    if targets:
        through += probes.script(targets, trust)
    return trust.prelude() + through if through else ""


def audit(spec: Spec, session: Remote, desired: Desired | None = None) -> Report:
    """Read the box in one command and judge everything."""
    started = time.monotonic()
    desired = desired or render_spec(spec)
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
    judged = judge(spec, desired, result.stdout, targets)
    report = Report(spec.host.name, judged.checks)
    save_state(session, judged.facts, judged.totals)
    report.seconds = time.monotonic() - started
    return report


@dataclass(frozen=True)
class Judged:
    """One read's checks, and what the next audit remembers of it (:func:`save_state`)."""

    checks: list[Check]
    facts: AuditFacts
    totals: dict[str, int]  # Ghost's post totals, by stack


def judge(
    spec: Spec,
    desired: Desired,
    output: str,
    targets: list[probes.ProbeTarget],
    *,
    ports: firewall.Ports | None = None,
    served: set[str] | None = None,
) -> Judged:
    """Judge one box's read (``output``: the facts, the audit's read, then the reads through
    Caddy of ``targets``) against ``spec`` and ``desired``: one box's whole studio, or a
    cluster node's share of it (then ``ports``: what that node's firewall lets in, and
    ``served``: the names the whole studio's edge serves)."""
    facts_part, _, rest = output.partition("@@end\n")
    facts = parse(facts_part + "@@end\n")
    audit_facts = parse_audit(rest)
    checks = _routes(probes.parse(rest, targets))
    ghost_checks, totals = _ghost(spec, audit_facts)
    checks += ghost_checks
    checks += _first_launch(spec, audit_facts)
    checks += _containers(spec, audit_facts)
    checks += _drift(desired, facts)
    checks += _host(spec, audit_facts, served)
    checks += _firewall(spec, audit_facts, ports)
    checks += _exposed(spec, audit_facts, ports)
    checks += _timers(spec, facts)
    checks += kept_volumes(spec, facts)
    return Judged(checks, audit_facts, totals)


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


def _ghost_key_problem(key: str, keyfile: str, fix: str) -> str:
    """What is wrong with the box's Content API key, as the read found it ("" when it was
    there to use)."""
    if key == "missing":
        return f"no Content API key on the box ({keyfile}): {fix}"
    if key == "malformed":
        return (
            f"the key in {keyfile} is not a Content API key (26 hex digits): delete the file, "
            f"then {fix}"
        )
    if key != "ok":
        return "nothing read (the read stopped before)"
    return ""


def _ghost_posts(
    name: str, read: GhostRead, keyfile: str, fix: str
) -> tuple[list[dict[str, Any]], int, Check]:
    """Every published post the Content API lists over all its pages, the API's total, and
    the check on reading them (posts ``[]`` and total -1 when it failed)."""
    label, bar = "ghost content API", "the box's key accepted, every page read"
    problem = _ghost_key_problem(read.key, keyfile, fix)
    if problem:
        return [], -1, Check(name, label, FAIL, problem, bar)
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
        checks.append(_ghost_drop(name, total, previous.get(name)))
        checks.append(_ghost_empty(name, posts))
    return checks, totals


def _ghost_drop(name: str, total: int, before: Any) -> Check:
    """The post count against the last audit's (None: no audit counted them before)."""
    dropped = before is not None and total < int(before)
    value = (
        f"{before} → {total}"
        if dropped
        else f"{total} (last audit: {before if before is not None else '-'})"
    )
    label = "ghost posts: no drop since the last audit"
    return Check(name, label, FAIL if dropped else OK, value, "not fewer")


def _ghost_empty(name: str, posts: list[dict[str, Any]]) -> Check:
    """No PUBLIC post without text: members-only and paid posts come back empty to a
    content key by design, so they are counted, not judged."""
    public = [p for p in posts if str(p.get("visibility") or "public") == "public"]
    gated = len(posts) - len(public)
    empty = [
        str(p.get("slug") or p.get("id") or "?")
        for p in public
        if not str(p.get("plaintext") or "").strip()
    ]
    value = f"{len(empty)} empty: {_few(empty)}" if empty else f"{len(public)} with text"
    if gated:
        value += f"; {gated} members-only or paid not judged (a content key gets them empty)"
    label = "ghost posts: no public post with an empty body"
    return Check(name, label, FAIL if empty else OK, value, "0 empty")


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
    """Every container the spec does not declare FAILs; every declared service is judged
    (:func:`_service`)."""
    checks: list[Check] = []
    by_service: dict[tuple[str, str], dict[str, Any]] = {}
    # a cluster's stacks placed by labels: their task runs on ONE of the nodes they match
    # (the cluster's own checks judge which and its replicas); here, only a container there
    floating = {name for name in spec.stacks if cluster.by_labels(spec, name)}
    for c in facts.containers:
        labels = c["labels"]
        project = labels.get("com.docker.compose.project", "")
        service = labels.get("com.docker.compose.service", "")
        if project in spec.stacks and service in spec.stacks[project].services:
            if project in floating and _history(c):
                continue  # a task Swarm has since run elsewhere (docker keeps its container)
            if not _replaced(c, by_service.get((project, service))):
                by_service[(project, service)] = c
        else:
            value = f"not declared by the spec ({c['state'].get('Status', '?')})"
            bar = "only declared containers"
            checks.append(Check("host", f"container {c['name']}", FAIL, value, bar))
    for name, stack in spec.stacks.items():
        for service in stack.services:
            found = by_service.get((name, service))
            if found is None and name in floating:
                continue  # its task runs on another node its labels match
            checks += _service(spec, name, f"container {name}/{service}", found)
    return checks


def _history(c: dict[str, Any]) -> bool:
    """Whether ``c`` is a stopped Swarm task's container (docker keeps it as history)."""
    return c["state"].get("Status") != "running" and "com.docker.swarm.task.id" in c["labels"]


def _replaced(c: dict[str, Any], kept: dict[str, Any] | None) -> bool:
    """Whether ``c`` is a stopped Swarm task's container while ``kept`` (of the same service)
    runs: Swarm replaced it, and docker keeps the old one (its task history); one box's
    compose has one container per service."""
    return _history(c) and kept is not None and kept["state"].get("Status") == "running"


def _service(spec: Spec, name: str, label: str, c: dict[str, Any] | None) -> list[Check]:
    """One declared service's container: running and healthy, not crash-looping, never
    killed for memory, no empty value in its environment."""
    if c is None:
        return [Check(name, label, FAIL, "missing", "running, healthy")]
    restarts_fail = spec.host.audit.restarts_fail
    state = c["state"]
    health = (state.get("Health") or {}).get("Status", "none")
    status = state.get("Status", "?")
    good = status == "running" and health == "healthy"
    checks = [Check(name, label, OK if good else FAIL, f"{status}, {health}", "running, healthy")]
    restarts = c["restarts"]
    looping = restarts >= restarts_fail
    checks.append(
        Check(
            name,
            f"{label} restarts",
            FAIL if looping else OK,
            f"{restarts}" + (" (crash-looping)" if looping else ""),
            f"< {restarts_fail} since it was created",
        )
    )
    if state.get("OOMKilled"):
        checks.append(Check(name, f"{label} OOM", FAIL, "killed for memory", "never"))
    empty = c["empty"]
    value = f"empty: {', '.join(empty)}" if empty else "no empty values"
    checks.append(
        Check(name, f"{label} environment", FAIL if empty else OK, value, "no empty values")
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


def _firewall(spec: Spec, facts: AuditFacts, ports: firewall.Ports | None = None) -> list[Check]:
    """The live rules against the ones the bootstrap installs for this spec (``ports``: a
    cluster node's, else the spec's)."""
    ports = ports or firewall.ports_for(spec)
    return [
        Check("host", v.name, OK if v.ok else FAIL, v.value, v.threshold)
        for v in firewall.judge(facts.firewall, ports, str(spec.inventory))
    ]


def _exposed(spec: Spec, facts: AuditFacts, ports: firewall.Ports | None = None) -> list[Check]:
    """Every port reachable on a non-loopback address, against what the spec declares (and
    ``ports``, a cluster node's, lets in): one FAIL per stray port (naming its container or
    process), then the summary."""
    ports = ports or firewall.ports_for(spec)
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


def _host(spec: Spec, facts: AuditFacts, served: set[str] | None = None) -> list[Check]:
    """The host's own numbers, one family of checks after the other (``served``: the names
    the edge serves, when ``spec`` is only a cluster node's share of the studio)."""
    return [
        *_disk(spec, facts),
        *_memory(spec, facts),
        _load(spec, facts),
        _backup_age(spec, facts),
        *_certificates(spec, facts, served),
    ]


def _disk(spec: Spec, facts: AuditFacts) -> list[Check]:
    """Space and inodes used on / and docker's storage."""
    limits = spec.host.audit
    checks = [
        Check(
            "host",
            f"disk {mount}",
            _level(percent, limits.disk_warn_percent, limits.disk_fail_percent),
            f"{percent}% used",
            f"warn {limits.disk_warn_percent}%, fail {limits.disk_fail_percent}%",
        )
        for mount, percent in facts.df
    ]
    checks += [
        Check(
            "host",
            f"inodes {mount}",
            FAIL if percent >= limits.inode_fail_percent else OK,
            f"{percent}% used",
            f"fail {limits.inode_fail_percent}%",
        )
        for mount, percent in facts.dfi
    ]
    return checks


def _level(value: float, warn: float, fail: float) -> Status:
    """FAIL at ``fail`` or above, warn at ``warn`` or above, else ok."""
    return FAIL if value >= fail else (WARN if value >= warn else OK)


def _memory(spec: Spec, facts: AuditFacts) -> list[Check]:
    """Memory available, the spec's memory budget against the box, and swap in use."""
    limits = spec.host.audit
    mem = facts.meminfo
    checks: list[Check] = []
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
        budget = spec.host.os_reserve + sum(
            s.mem_limit or 0 for st in spec.stacks.values() for s in st.services.values()
        )
        memory = spec.host.memory
        if memory is not None:  # one box (a cluster's budgets are per node)
            checks.append(
                Check(
                    "host",
                    "memory budget (sum of mem_limit + os_reserve)",
                    OK if budget <= memory else FAIL,
                    f"{budget // 1024**2} MiB",
                    f"≤ {memory // 1024**2} MiB",
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
    return checks


def _load(spec: Spec, facts: AuditFacts) -> Check:
    """The 1-minute load average per core."""
    limits = spec.host.audit
    per_core = facts.load / facts.nproc
    return Check(
        "host",
        "load (1 min, per core)",
        WARN if per_core >= limits.load_warn_per_core else OK,
        f"{per_core:.2f} ({facts.load:.2f} on {facts.nproc})",
        f"warn {limits.load_warn_per_core}",
    )


def _backup_age(spec: Spec, facts: AuditFacts) -> Check:
    """How long ago the box's vpsctl-backup last succeeded."""
    bar = f"within {spec.host.audit.backup_max_age_hours}h"
    label = "last successful backup"
    if facts.backup is None:
        said = "no backup in host.yaml" if spec.host.backup is None else "none recorded"
        return Check("host", label, WARN, said, bar)
    hours = (facts.now - facts.backup) / 3600
    late = hours > spec.host.audit.backup_max_age_hours
    return Check("host", label, FAIL if late else OK, f"{hours:.1f}h ago", bar)


def _certificates(spec: Spec, facts: AuditFacts, served: set[str] | None = None) -> list[Check]:
    """Days left on each certificate in Caddy's storage: judged for the names the spec
    serves (``served``, else :func:`served_names`), listed for the others."""
    cert_min_days = spec.host.audit.cert_min_days
    served = served_names(spec) if served is None else served
    checks: list[Check] = []
    for end, path in facts.certs:
        days = (end - facts.now) / 86400
        name = path.rsplit("/", 1)[-1].removesuffix(".crt")
        label = f"TLS certificate {name}"
        if name not in served:
            # a name the spec no longer serves: Caddy keeps its certificate in storage and
            # stops renewing it; its expiry is nobody's problem, so it is only listed
            value = (
                f"{days:.1f} days left; no longer served by the spec (left in Caddy's "
                "storage, not renewed)"
            )
            checks.append(Check("host", label, INFO, value, "not judged"))
        elif "/certificates/local/" in path:
            # Caddy's own CA issues 12-hour certificates and renews them itself
            status = OK if days > 0 else FAIL
            bar = "valid (internal CA, renewed by Caddy)"
            checks.append(Check("host", label, status, f"{days:.1f} days left", bar))
        else:
            status = FAIL if days < cert_min_days / 2 else (WARN if days < cert_min_days else OK)
            bar = f"≥ {cert_min_days} days"
            checks.append(Check("host", label, status, f"{days:.1f} days left", bar))
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


def save_state(session: Remote, facts: AuditFacts, totals: dict[str, int]) -> None:
    """Remember Ghost post totals for the next audit's drop check (a drop is reported once,
    by the audit that sees it)."""
    posts = {**facts.state.get("ghost_posts", {}), **totals}
    state = {"ghost_posts": posts, "audited_at": facts.now}
    session.put_files([(STATE, json.dumps(state).encode(), 0o600)])
