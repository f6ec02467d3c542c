"""The Ghost audit as real Ghost 6 answers, and the first-launch checks.

Two levels: the box-side shell (``vpsctl_ghost``) run here against a fake curl that serves
a Ghost the way Ghost 6.65 does (100 posts a page at most, ``meta.pagination``, gated
bodies, a sitemap index), with ``ps`` watching for the key; and the judging, on parsed
facts built by hand.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT
from vpsctl.core import appsteps as steps
from vpsctl.ops import audit
from vpsctl.spec.loader import load_spec
from vpsctl.spec.studio import Spec

GOLDEN_SECRETS = ROOT / "tests/golden/prod.secrets.env.fixture"
KEY = "0a1b2c3d4e5f60718293a4b5c6"  # 26 hex digits, as Ghost makes them
HOST = "lumenstudio.dev"  # inventory/prod's ghost site


def prod_spec(studio: Path) -> Spec:
    """inventory/prod of ``studio`` with the golden (fake) secrets; a secret a stack declares
    that the golden file does not hold yet gets a fresh sandbox value."""
    secrets = studio / "inventory/prod/secrets.env"
    text = GOLDEN_SECRETS.read_text()
    for stack in load_spec(studio / "inventory/prod", secrets=False).stacks.values():
        for name, kind in stack.secrets.items():
            value = kind.generate(sandbox=True)
            if f"\n{name}=" not in f"\n{text}" and value is not None:
                text += f"{name}={shlex.quote(value)}\n"
    secrets.write_text(text)
    secrets.chmod(0o600)
    return load_spec(studio / "inventory/prod")


@pytest.fixture
def spec(studio: Path) -> Iterator[Spec]:
    with contextlib.chdir(studio):  # errors name the inventory as the operator typed it
        yield prod_spec(studio)


def post(
    slug: str, visibility: str = "public", text: str = "Words.", **more: Any
) -> dict[str, Any]:
    """A post as the Content API returns it with ``fields=``: an empty body has no
    ``plaintext`` key at all, a gated one has ``plaintext: ''``."""
    data: dict[str, Any] = {
        "id": f"id-{slug}",
        "slug": slug,
        "url": f"https://{HOST}/{slug}/",
        "visibility": visibility,
        "canonical_url": None,
    }
    if visibility != "public":
        data["plaintext"] = ""
    elif text:
        data["plaintext"] = text
    data.update(more)
    return data


def pages(posts: list[dict[str, Any]], per_page: int = 100) -> list[bytes]:
    """The Content API's answers, page by page."""
    count = max(1, -(-len(posts) // per_page))
    out = []
    for page in range(1, count + 1):
        pagination = {
            "page": page,
            "limit": per_page,
            "pages": count,
            "total": len(posts),
            "next": page + 1 if page < count else None,
            "prev": page - 1 if page > 1 else None,
        }
        chunk = posts[(page - 1) * per_page : page * per_page]
        out.append(json.dumps({"posts": chunk, "meta": {"pagination": pagination}}).encode())
    return out


def urlset(urls: list[str]) -> bytes:
    """A posts sitemap as Ghost renders it (image entries carry an ``image:loc``)."""
    entries = "".join(
        f"<url><loc>{u}</loc><lastmod>2026-12-01T10:00:00.000Z</lastmod><image:image>"
        f"<image:loc>https://{HOST}/content/images/x.png</image:loc></image:image></url>"
        for u in urls
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/'
        f'schemas/sitemap/0.9">{entries}</urlset>'
    ).encode()


def ghost_read(
    posts: list[dict[str, Any]], sitemap: list[str] | None = None, key: str = "ok"
) -> audit.GhostRead:
    """What the box would have read of a Ghost holding ``posts`` whose sitemap lists
    ``sitemap`` (default: what Ghost lists)."""
    if sitemap is None:
        sitemap = [p["url"] for p in posts if audit._sitemap_worthy(p)]
    return audit.GhostRead(
        key=key,
        pages={n: (200, body) for n, body in enumerate(pages(posts), start=1)},
        sitemaps={"sitemap-posts.xml": (200, urlset(sitemap))},
    )


def judged(
    spec: Spec, read: audit.GhostRead, state: dict[str, Any] | None = None
) -> dict[str, audit.Check]:
    facts = audit.AuditFacts(ghost={"ghost": read}, state=state or {})
    checks, _ = audit._ghost(spec, facts)
    return {c.name: c for c in checks}


API = "ghost content API"
SITEMAP = "ghost posts: the sitemap lists every post it should"
EMPTY = "ghost posts: no public post with an empty body"
DROP = "ghost posts: no drop since the last audit"


# ── the judging, on parsed facts ─────────────────────────────────────────────────────────


def test_a_healthy_ghost_passes_every_check(spec: Spec) -> None:
    checks = judged(spec, ghost_read([post("hello"), post("launch")]))
    assert {n: c.status for n, c in checks.items()} == {
        API: "ok",
        SITEMAP: "ok",
        DROP: "ok",
        EMPTY: "ok",
    }
    assert checks[API].value == "2 published posts in 1 page of 100"
    assert checks[SITEMAP].value == "2 of 2 posts listed"


def test_members_and_paid_posts_with_empty_plaintext_are_not_failed(spec: Spec) -> None:
    read = ghost_read(
        [post("open"), post("club", "members"), post("gold", "paid"), post("vip", "tiers")]
    )
    check = judged(spec, read)[EMPTY]
    assert check.status == audit.OK
    assert (
        check.value
        == "1 with text; 3 members-only or paid not judged (a content key gets them empty)"
    )


def test_a_public_post_with_an_empty_body_fails_and_is_named(spec: Spec) -> None:
    # what the Admin API makes of a post sent with `markdown`: no body, so no plaintext key
    read = ghost_read([post("hello"), post("launch", text=""), post("club", "members")])
    check = judged(spec, read)[EMPTY]
    assert check.status == audit.FAIL
    assert check.value.startswith("1 empty: launch; 1 members-only or paid not judged")


def test_a_post_whose_plaintext_is_only_whitespace_is_empty(spec: Spec) -> None:
    check = judged(spec, ghost_read([post("blank", text=" \n ")]))[EMPTY]
    assert (check.status, check.value) == (audit.FAIL, "1 empty: blank")


def test_a_post_with_a_canonical_url_elsewhere_may_be_missing_from_the_sitemap(spec: Spec) -> None:
    repost = post("repost", canonical_url="https://medium.com/@lumen/repost-1234")
    read = ghost_read([post("hello"), repost], sitemap=[f"https://{HOST}/hello/"])
    check = judged(spec, read)[SITEMAP]
    assert check.status == audit.OK
    assert check.value == (
        "1 of 2 posts listed; 1 with a canonical_url elsewhere, left out as Ghost does"
    )


def test_a_canonical_url_pointing_at_the_post_itself_keeps_it_in_the_sitemap(spec: Spec) -> None:
    """Ghost compares the canonical_url with the post's own URL (trailing slashes aside)."""
    own = post("own", canonical_url=f"https://{HOST}/own")
    check = judged(spec, ghost_read([own], sitemap=[]))[SITEMAP]
    assert (check.status, check.value) == (audit.FAIL, "1 missing from the sitemap: own")


def test_a_public_post_missing_from_the_sitemap_fails_and_is_named(spec: Spec) -> None:
    read = ghost_read(
        [post("hello"), post("launch"), post("club", "members")],
        sitemap=[f"https://{HOST}/hello/", f"https://{HOST}/club/"],
    )
    check = judged(spec, read)[SITEMAP]
    assert (check.status, check.value) == (audit.FAIL, "1 missing from the sitemap: launch")


def test_many_missing_posts_are_named_a_few_then_counted(spec: Spec) -> None:
    posts = [post(f"post-{n:02d}") for n in range(12)]
    check = judged(spec, ghost_read(posts, sitemap=[]))[SITEMAP]
    assert check.status == audit.FAIL
    assert check.value == (
        "12 missing from the sitemap: post-00, post-01, post-02, post-03, post-04 and 7 more"
    )


def test_a_sitemap_entry_the_api_does_not_publish_fails(spec: Spec) -> None:
    read = ghost_read([post("hello")], sitemap=[f"https://{HOST}/hello/", f"https://{HOST}/gone/"])
    check = judged(spec, read)[SITEMAP]
    assert (check.status, check.value) == (audit.FAIL, "1 listed but not published: /gone/")


def test_the_same_total_with_different_posts_is_caught(spec: Spec) -> None:
    """Counting ``<loc>`` alone passes this: two posts each side, not the same two."""
    read = ghost_read([post("a"), post("b")], sitemap=[f"https://{HOST}/a/", f"https://{HOST}/c/"])
    check = judged(spec, read)[SITEMAP]
    assert check.status == audit.FAIL
    assert check.value == "1 missing from the sitemap: b; 1 listed but not published: /c/"


def test_an_unreadable_sitemap_fails(spec: Spec) -> None:
    read = ghost_read([post("hello")])
    read.sitemaps = {"sitemap-posts.xml": (503, b"")}
    check = judged(spec, read)[SITEMAP]
    assert (check.status, check.value) == (audit.FAIL, "/sitemap-posts.xml answered 503")


def test_a_ghost_without_posts_has_no_posts_sitemap_and_passes(spec: Spec) -> None:
    """Ghost serves no empty sitemap: /sitemap-posts.xml is a 404 while there is no post."""
    read = ghost_read([])
    read.sitemaps = {"sitemap-posts.xml": (404, b"")}
    checks = judged(spec, read)
    assert checks[SITEMAP].status == audit.OK
    assert checks[SITEMAP].value == "0 of 0 posts listed"


def test_posts_are_read_over_three_pages_and_a_sitemap_in_two_files(spec: Spec) -> None:
    posts = [post(f"p{n}", "members" if n % 7 == 0 else "public") for n in range(250)]
    read = ghost_read(posts)
    urls = [p["url"] for p in posts]
    read.sitemaps = {
        "sitemap-posts.xml": (200, urlset(urls[:200])),
        "sitemap-posts-2.xml": (200, urlset(urls[200:])),
    }
    assert len(read.pages) == 3
    checks = judged(spec, read)
    assert checks[API].value == "250 published posts in 3 pages of 100"
    assert checks[SITEMAP].value == "250 of 250 posts listed"
    assert checks[EMPTY].value.startswith("214 with text; 36 members-only or paid not judged")
    assert all(c.status == audit.OK for c in checks.values()), checks


def test_a_page_left_unread_fails_rather_than_judging_a_part(spec: Spec) -> None:
    read = ghost_read([post(f"p{n}") for n in range(250)])
    del read.pages[3]
    checks = judged(spec, read)
    assert (checks[API].status, checks[API].value) == (
        audit.FAIL,
        f"read 2 of 3 pages (at most {audit.GHOST_MAX_PAGES})",
    )
    assert SITEMAP not in checks and EMPTY not in checks


def test_a_missing_key_fails_and_says_to_run_apply(spec: Spec) -> None:
    checks = judged(spec, audit.GhostRead(key="missing"))
    assert list(checks) == [API]
    assert checks[API].status == audit.FAIL
    assert checks[API].value == (
        "no Content API key on the box (/opt/vpsctl/apps/ghost/ghost-content-key): "
        "`vpsctl apply -i inventory/prod` derives it again"
    )


def test_a_malformed_key_fails_and_says_to_run_apply(spec: Spec) -> None:
    check = judged(spec, audit.GhostRead(key="malformed"))[API]
    assert check.status == audit.FAIL
    assert check.value.startswith("the key in /opt/vpsctl/apps/ghost/ghost-content-key is not")
    assert check.value.endswith(
        "delete the file, then `vpsctl apply -i inventory/prod` derives it again"
    )


def test_a_key_ghost_refuses_fails_and_says_to_run_apply(spec: Spec) -> None:
    refused = b'{"errors":[{"message":"Unknown Content API Key","type":"UnauthorizedError"}]}'
    check = judged(spec, audit.GhostRead(pages={1: (401, refused)}))[API]
    assert check.status == audit.FAIL
    assert check.value == (
        "Ghost refused the Content API key in /opt/vpsctl/apps/ghost/ghost-content-key (401): "
        "delete the file, then `vpsctl apply -i inventory/prod` derives it again"
    )


def test_nothing_read_at_all_fails(spec: Spec) -> None:
    facts = audit.AuditFacts()
    checks, totals = audit._ghost(spec, facts)
    assert [(c.name, c.status, c.value) for c in checks] == [
        (API, audit.FAIL, "nothing read (the read stopped before)")
    ]
    assert totals == {}


def test_a_drop_in_the_post_count_is_reported_once(spec: Spec) -> None:
    read = ghost_read([post("a"), post("b")])
    assert judged(spec, read, {"ghost_posts": {"ghost": 2}})[DROP].status == audit.OK
    check = judged(spec, read, {"ghost_posts": {"ghost": 3}})[DROP]
    assert (check.status, check.value) == (audit.FAIL, "3 → 2")
    _, totals = audit._ghost(spec, audit.AuditFacts(ghost={"ghost": read}))
    assert totals == {"ghost": 2}  # remembered for the next audit


# ── first launches ───────────────────────────────────────────────────────────────────────


def first_launch(spec: Spec, **reads: audit.FirstLaunchRead) -> dict[str, audit.Check]:
    return {c.group: c for c in audit._first_launch(spec, audit.AuditFacts(first_launch=reads))}


def test_a_ghost_without_owner_fails_as_first_launch(spec: Spec) -> None:
    body = b'{"setup":[{"status":false}]}'
    check = first_launch(spec, ghost=audit.FirstLaunchRead("ghost", 200, "", body))["ghost"]
    assert check.name == "first launch: ghost owner claimed"
    assert check.status == audit.FAIL
    assert check.value == (
        "first-launch state: GET /ghost/api/admin/authentication/setup/ answers setup status "
        f"false; whoever opens https://{HOST}/ghost/ first becomes the owner: "
        "`vpsctl apply -i inventory/prod` claims it"
    )


def test_a_claimed_ghost_passes_and_says_what_the_setup_page_answered(spec: Spec) -> None:
    body = b'{"setup":[{"status":true,"title":"Lumen"}]}'
    check = first_launch(spec, ghost=audit.FirstLaunchRead("ghost", 200, "", body))["ghost"]
    assert check.status == audit.OK
    assert check.value == (
        "GET /ghost/api/admin/authentication/setup/ through Caddy answers 200: setup status "
        "true (already set up)"
    )


def test_a_plausible_without_owner_fails_as_first_launch(spec: Spec) -> None:
    read = audit.FirstLaunchRead("plausible", 302, "https://stats.lumenstudio.dev/register", b"")
    check = first_launch(spec, plausible=read)["plausible"]
    assert check.name == "first launch: plausible owner claimed"
    assert check.status == audit.FAIL
    assert check.value.startswith("first-launch state: GET /login redirects to /register;")
    assert check.value.endswith("`vpsctl apply -i inventory/prod` claims it")


def test_a_claimed_plausible_passes(spec: Spec) -> None:
    read = audit.FirstLaunchRead("plausible", 200, "", b"<html>Plausible login")
    check = first_launch(spec, plausible=read)["plausible"]
    assert (check.status, check.value) == (
        audit.OK,
        "GET /login through Caddy answers 200 (an owner exists)",
    )


def test_a_first_launch_page_that_cannot_be_read_fails(spec: Spec) -> None:
    checks = first_launch(
        spec,
        plausible=audit.FirstLaunchRead("plausible", 302, "https://stats.lumenstudio.dev/x", b""),
    )
    assert checks["plausible"].status == audit.FAIL
    assert checks["plausible"].value == (
        "GET /login answered 302 → https://stats.lumenstudio.dev/x: cannot tell"
    )
    assert checks["ghost"].status == audit.FAIL  # nothing read at all
    assert checks["ghost"].value.endswith("got no answer: cannot tell")


# ── the box-side shell, run here ─────────────────────────────────────────────────────────

FAKE_CURL = r"""
import json, os, subprocess, sys
from urllib.parse import parse_qs, urlsplit

args, url, out, fmt = sys.argv[1:], "", "/dev/stdout", ""
with open(os.environ["OUT"] + "/argv", "a") as log:
    log.write(" ".join(args) + "\n")
with open(os.environ["OUT"] + "/ps", "a") as log:
    log.write(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout)
i = 0
while i < len(args):
    a = args[i]
    if a in ("-o", "-w", "--max-time", "--resolve", "-K"):
        value = args[i + 1]
        if a == "-o":
            out = value
        elif a == "-w":
            fmt = value
        elif a == "-K" and value == "-":
            config = sys.stdin.read()
            with open(os.environ["OUT"] + "/config", "a") as log:
                log.write(config)
            url = config.split('"')[1]
        i += 2
        continue
    if not a.startswith("-"):
        url = a
    i += 1
site = json.load(open(os.environ["SITE"]))
parts = urlsplit(url)
query = parse_qs(parts.query)
code, body, location = 404, "", ""
if parts.path == "/ghost/api/content/posts/":
    if query.get("key") != [site["key"]]:
        code, body = 401, '{"errors":[{"message":"Unknown Content API Key"}]}'
    else:
        assert query["limit"] == ["100"], query
        assert query["fields"] == ["id,slug,url,visibility,canonical_url,plaintext"], query
        pages = site["pages"]
        page = int(query["page"][0])
        code, body = (200, pages[page - 1]) if page <= len(pages) else (200, pages[-1])
elif parts.path.lstrip("/") in site["files"]:
    entry = site["files"][parts.path.lstrip("/")]
    code, body, location = entry["code"], entry["body"], entry.get("location", "")
with open(out, "w") as f:
    f.write(body)
sys.stdout.write(fmt.replace("%{http_code}", str(code)).replace("%{redirect_url}", location))
"""


def run_here(script: str, tmp_path: Path, site: dict[str, Any]) -> str:
    """Run ``script`` as the box would (stdin, :data:`audit.RUN_FROM_STDIN`) with the fake
    curl first on PATH, serving ``site``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    curl = bin_dir / "curl"
    curl.write_text(f"#!{sys.executable}\n{FAKE_CURL}")
    curl.chmod(0o755)
    (tmp_path / "site.json").write_text(json.dumps(site))
    result = subprocess.run(
        ["sh", "-c", audit.RUN_FROM_STDIN],
        input=script,
        env={
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "OUT": str(tmp_path),
            "SITE": str(tmp_path / "site.json"),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def site_of(posts: list[dict[str, Any]], **files: dict[str, Any]) -> dict[str, Any]:
    return {"key": KEY, "pages": [p.decode() for p in pages(posts)], "files": files}


def apps_with_key(tmp_path: Path, key: str = KEY) -> str:
    apps = tmp_path / "apps"
    (apps / "ghost").mkdir(parents=True)
    keyfile = apps / "ghost" / audit.GHOST_KEY_FILE
    keyfile.write_text(key)
    keyfile.chmod(0o600)
    return str(apps)


def test_the_box_pages_through_three_pages_and_every_sitemap_file(
    spec: Spec, tmp_path: Path
) -> None:
    posts = [post(f"p{n:03d}") for n in range(250)]
    urls = [p["url"] for p in posts]
    index = (
        f"<sitemapindex><sitemap><loc>https://{HOST}/sitemap-pages.xml</loc></sitemap>"
        f"<sitemap><loc>https://{HOST}/sitemap-posts.xml</loc></sitemap>"
        f"<sitemap><loc>https://{HOST}/sitemap-posts-2.xml</loc></sitemap></sitemapindex>"
    )
    site = site_of(
        posts,
        **{
            "sitemap.xml": {"code": 200, "body": index},
            "sitemap-posts.xml": {"code": 200, "body": urlset(urls[:180]).decode()},
            "sitemap-posts-2.xml": {"code": 200, "body": urlset(urls[180:]).decode()},
        },
    )
    output = run_here(audit._ghost_script(spec, apps_root=apps_with_key(tmp_path)), tmp_path, site)
    facts = audit.parse_audit(output)
    read = facts.ghost["ghost"]
    assert sorted(read.pages) == [1, 2, 3]
    assert sorted(read.sitemaps) == ["sitemap-posts-2.xml", "sitemap-posts.xml"]
    checks, totals = audit._ghost(spec, facts)
    assert all(c.status == audit.OK for c in checks), checks
    assert totals == {"ghost": 250}
    config = (tmp_path / "config").read_text()
    assert config.count(f"&key={KEY}") == 3
    for page in (1, 2, 3):
        assert f"limit=100&page={page}&" in config
    # the key was on no command line: not curl's, not any process's ps saw
    assert KEY not in (tmp_path / "argv").read_text()
    listing = (tmp_path / "ps").read_text()
    assert "curl" in listing and KEY not in listing
    assert KEY not in audit._ghost_script(spec, apps_root=apps_with_key(tmp_path / "again"))


def test_the_box_reports_a_missing_key_and_still_reads_the_sitemap(
    spec: Spec, tmp_path: Path
) -> None:
    site = site_of([post("a")], **{"sitemap-posts.xml": {"code": 200, "body": urlset([]).decode()}})
    output = run_here(audit._ghost_script(spec, apps_root=str(tmp_path / "none")), tmp_path, site)
    read = audit.parse_audit(output).ghost["ghost"]
    assert read.key == "missing" and read.pages == {}
    assert read.sitemaps["sitemap-posts.xml"][0] == 200  # no index: the first file is read


def test_the_box_refuses_a_key_that_is_not_hex(spec: Spec, tmp_path: Path) -> None:
    """A key file holding anything but hex digits could break curl's config: never used."""
    apps = apps_with_key(tmp_path, key='abc"\nurl = "https://evil.example/')
    output = run_here(audit._ghost_script(spec, apps_root=apps), tmp_path, site_of([]))
    assert audit.parse_audit(output).ghost["ghost"].key == "malformed"
    assert "evil" not in (tmp_path / "argv").read_text()


def test_the_box_stops_at_a_refused_key(spec: Spec, tmp_path: Path) -> None:
    site = site_of([post("a")])
    site["key"] = "f" * 26  # the box holds another key than Ghost knows
    output = run_here(audit._ghost_script(spec, apps_root=apps_with_key(tmp_path)), tmp_path, site)
    facts = audit.parse_audit(output)
    assert [(n, s) for n, (s, _) in facts.ghost["ghost"].pages.items()] == [(1, 401)]
    checks, _ = audit._ghost(spec, facts)
    assert checks[0].value.startswith("Ghost refused the Content API key")


def test_the_box_reads_each_first_launch_page_through_caddy(spec: Spec, tmp_path: Path) -> None:
    site = site_of(
        [],
        **{
            "ghost/api/admin/authentication/setup/": {
                "code": 200,
                "body": '{"setup":[{"status":false}]}',
            },
            "login": {
                "code": 302,
                "body": "",
                "location": "https://stats.lumenstudio.dev/register",
            },
        },
    )
    script = audit._first_launch_script(spec)
    assert "--resolve lumenstudio.dev:443:127.0.0.1" in script
    output = run_here(script, tmp_path, site)
    facts = audit.parse_audit(output)
    assert facts.first_launch["ghost"] == audit.FirstLaunchRead(
        "ghost", 200, "", b'{"setup":[{"status":false}]}'
    )
    assert facts.first_launch["plausible"].redirect == "https://stats.lumenstudio.dev/register"
    checks = audit._first_launch(spec, facts)
    assert [(c.group, c.status) for c in checks] == [
        ("ghost", audit.FAIL),
        ("plausible", audit.FAIL),
    ]


def test_bodies_travel_gzipped_and_a_garbled_one_reads_as_empty() -> None:
    body = base64.b64encode(gzip.compress(b'{"posts":[]}')).decode()
    facts = audit.parse_audit(
        f"@@ghost ghost api 1 200\n{body}\n@@ghost ghost sitemap sitemap-posts.xml 200\n!!\n"
    )
    read = facts.ghost["ghost"]
    assert read.pages[1] == (200, b'{"posts":[]}')
    assert read.sitemaps["sitemap-posts.xml"] == (200, b"")


def test_the_audit_reads_the_key_where_apply_writes_it() -> None:
    assert audit.ghost_key_path("ghost") == steps.ghost_key_path("ghost")
    assert audit.ghost_key_path("blog") == "/opt/vpsctl/apps/blog/ghost-content-key"
