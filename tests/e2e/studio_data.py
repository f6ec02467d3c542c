"""Data a user puts into the example studio, and what a user sees of it: through Caddy, on
the box, for the backup tests and benchmarks."""

from __future__ import annotations

import json
import shlex
import time

import jwt

from tests.e2e.conftest import on_box, target_of
from vpsctl.host.remote import Session
from vpsctl.local.sandbox import SandboxInfo

PRODUCTS = ("documint", "cronping", "flagbit", "webhookvault")


def curl(host: str, *args: str) -> str:
    """A curl on the box, through Caddy, as a visitor reaches ``host``."""
    return shlex.join(
        ["curl", "-sk", "--fail-with-body", "--resolve", f"{host}:443:127.0.0.1", *args]
    )


# The integration vpsctl creates in Ghost when it claims the first launch (its content key
# is what the audit reads; its admin key lets a test act as staff through the Admin API).
GHOST_KEY_QUERY = (
    "SELECT k.type, k.id, k.secret FROM api_keys k JOIN integrations i "
    "ON i.id = k.integration_id WHERE i.name = 'vpsctl audit'"
)


def ghost_keys(box: SandboxInfo, stack: str = "ghost") -> dict[str, tuple[str, str]]:
    """The ``vpsctl audit`` integration's keys, read from Ghost's database on the box (the
    root password stays inside the mysql container): ``{"admin"|"content": (id, secret)}``."""
    query = shlex.quote(GHOST_KEY_QUERY)
    # the variable on one box, its file (a Swarm secret: MYSQL_ROOT_PASSWORD_FILE) on a node
    password = '"${MYSQL_ROOT_PASSWORD:-$(cat "${MYSQL_ROOT_PASSWORD_FILE:-/dev/null}")}"'
    inner = f"MYSQL_PWD={password} mysql -uroot -N -B -e {query} ghost"
    # by compose's labels, which a cluster's task containers carry too (their names differ)
    mysql = (
        f"$(docker ps -q --filter label=com.docker.compose.project={stack} "
        "--filter label=com.docker.compose.service=mysql)"
    )
    out = on_box(box, f"docker exec {mysql} sh -c {shlex.quote(inner)}")
    keys: dict[str, tuple[str, str]] = {}
    for line in out.splitlines():
        kind, key_id, secret = line.split("\t")
        keys[kind] = (key_id, secret)
    assert {"admin", "content"} <= set(keys), "no 'vpsctl audit' integration in Ghost"
    return keys


def ghost_admin_token(box: SandboxInfo, stack: str = "ghost") -> str:
    """A short-lived Ghost Admin API token (HS256, kid = key id, aud /admin/), as Ghost's
    own Admin API clients make it."""
    key_id, secret = ghost_keys(box, stack)["admin"]
    now = int(time.time())
    return jwt.encode(
        {"iat": now, "exp": now + 300, "aud": "/admin/"},
        bytes.fromhex(secret),
        algorithm="HS256",
        headers={"kid": key_id},
    )


GHOST_AUTH_FILE = "/root/.e2e-ghost-admin-header"


def put_ghost_auth(box: SandboxInfo, stack: str = "ghost") -> str:
    """Put a fresh ``Authorization: Ghost <token>`` header into a root-only file on the box,
    through stdin (never in a command line, so no failure message can print it); return
    the file, for ``curl -H @FILE``."""
    header = f"Authorization: Ghost {ghost_admin_token(box, stack)}\n"
    with Session(target_of(box)) as session:
        session.feed(
            f"umask 077; cat > {GHOST_AUTH_FILE}", header.encode(), purpose="Ghost admin header"
        )
    return GHOST_AUTH_FILE


def ghost_content_key_shell(stack: str = "ghost") -> str:
    """Shell that sets ``KEY`` on the box to the content key vpsctl derived (never in this
    test's argv)."""
    return f"KEY=$(cat /opt/vpsctl/apps/{stack}/ghost-content-key); "


def ghost_first_post_command() -> str:
    """Shell asking Ghost's Content API (with the key vpsctl derived, read on the box) for
    one post's id: its JSON holds ``meta.pagination.total``."""
    return ghost_content_key_shell() + curl(
        "blog.lumen.test",
        "https://blog.lumen.test/ghost/api/content/posts/?key=@KEY@&limit=1&fields=id",
    ).replace("@KEY@", "'\"$KEY\"'")


def listmonk_auth() -> str:
    """Shell that signs in to listmonk as its admin and keeps the session cookie in the jar
    ``$LJ`` (listmonk v6: the admin's password is no API credential; callers use
    ``curl -b "$LJ"``). The password is read on the box: it never leaves it, not even into
    this test's argv."""
    login = (
        curl(
            "lists.lumen.test",
            "-o",
            "/dev/null",
            "-c",
            "@JAR@",
            "--data-urlencode",
            "username=studio-admin",
            "--data-urlencode",
            "password@-",
            "https://lists.lumen.test/admin/login",
        )
        .replace("'@JAR@'", '"$LJ"')
        .replace("@JAR@", '"$LJ"')
    )
    # the env file quotes a value only when it needs quotes: both forms are read
    return (
        "LJ=$(mktemp); PW=$(sed -n 's/^LISTMONK_ADMIN_PASSWORD=//p' "
        "/opt/vpsctl/stacks/listmonk/env/listmonk.env); PW=${PW#\\'}; PW=${PW%\\'}; "
        f'printf %s "$PW" | {login.replace("--fail-with-body", "")}; '
    )


def ghost_post(auth: str, title: str) -> str:
    """Shell publishing a Ghost post through Caddy, as staff (``auth``: :func:`put_ghost_auth`)."""
    post = {"posts": [{"title": title, "html": f"<p>{title}</p>", "status": "published"}]}
    return curl(
        "blog.lumen.test",
        "-H",
        f"@{auth}",
        "-H",
        "Content-Type: application/json",
        "--data",
        json.dumps(post),
        "https://blog.lumen.test/ghost/api/admin/posts/?source=html",
    )


def listmonk_subscriber(who: str) -> str:
    """Shell adding the subscriber ``who`` to Listmonk through Caddy, as its admin."""
    subscriber = {"email": f"{who}@lumen.test", "name": who, "lists": [1]}
    return listmonk_auth() + curl(
        "lists.lumen.test",
        "-H",
        "Content-Type: application/json",
        "--data",
        json.dumps(subscriber),
        "https://lists.lumen.test/api/subscribers",
    ).replace("curl ", 'curl -b "$LJ" ', 1)


def subscriber_count_command() -> str:
    """Shell printing Listmonk's subscribers as JSON (``data.total``), asked through Caddy."""
    return listmonk_auth() + curl(
        "lists.lumen.test", "https://lists.lumen.test/api/subscribers"
    ).replace("curl ", 'curl -b "$LJ" ', 1)


def write_data(box: SandboxInfo, records: int = 3) -> None:
    """Records into every product, posts into Ghost, subscribers into Listmonk, events into
    Plausible: through Caddy, as users would; ``records`` rows per product."""
    commands = []
    for product in PRODUCTS:
        # a loop on the box: one command line, however many records
        one = curl(
            f"{product}.lumen.test",
            "-H",
            "Content-Type: application/json",
            "--data",
            "@DATA@",
            f"https://{product}.lumen.test/api/records",
        ).replace("@DATA@", f'"{{\\"n\\": $n, \\"product\\": \\"{product}\\"}}"')
        commands.append(f"for n in $(seq 1 {records}); do {one} >/dev/null || exit 1; done")
    auth = put_ghost_auth(box)
    commands += [ghost_post(auth, t) for t in ("Backups matter", "Restores matter more")]
    commands += [listmonk_subscriber(who) for who in ("ada", "grace", "linus")]
    commands += plausible_events()
    on_box(box, " >/dev/null && ".join(commands) + " >/dev/null", timeout=600)


def plausible_events(count: int = 5) -> list[str]:
    """Commands that add the site blog.lumen.test to Plausible and send it ``count``
    pageviews, through Caddy."""
    commands = [
        curl(
            "stats.lumen.test",
            "-H",
            "Authorization: Bearer e2e",
            "-H",
            "Content-Type: application/json",
            "--data",
            json.dumps({"domain": "blog.lumen.test"}),
            "https://stats.lumen.test/api/v1/sites",
        )
    ]
    for n in range(count):
        event = {
            "name": "pageview",
            "url": f"https://blog.lumen.test/{n}/",
            "domain": "blog.lumen.test",
        }
        commands.append(
            curl(
                "stats.lumen.test",
                "-A",
                "Mozilla/5.0 (X11; Linux x86_64) e2e",
                "-H",
                "Content-Type: application/json",
                "--data",
                json.dumps(event),
                "https://stats.lumen.test/api/event",
            )
        )
    return commands


def pageviews_command() -> str:
    """Shell printing Plausible's pageviews of blog.lumen.test as JSON, asked through Caddy."""
    return curl(
        "stats.lumen.test",
        "-H",
        "Authorization: Bearer e2e",
        "https://stats.lumen.test/api/v1/stats/aggregate?site_id=blog.lumen.test&metrics=pageviews",
    )


def visible_data(box: SandboxInfo) -> dict[str, int]:
    """What a user sees through Caddy: records per product, Ghost posts, subscribers, and
    Plausible pageviews."""
    out: dict[str, int] = {}
    for product in PRODUCTS:
        answer = on_box(
            box, curl(f"{product}.lumen.test", f"https://{product}.lumen.test/api/records")
        )
        out[product] = json.loads(answer)["count"]
    posts = on_box(box, ghost_first_post_command())
    out["ghost posts"] = json.loads(posts)["meta"]["pagination"]["total"]
    subscribers = on_box(box, subscriber_count_command())
    out["subscribers"] = json.loads(subscribers)["data"]["total"]
    stats = on_box(box, pageviews_command())
    out["pageviews"] = json.loads(stats)["results"]["pageviews"]["value"]
    return out
