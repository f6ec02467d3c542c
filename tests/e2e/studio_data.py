"""Data a user puts into the example studio, and what a user sees of it: through Caddy, on
the box, for the backup tests and benchmarks."""

from __future__ import annotations

import json
import shlex

from tests.e2e.conftest import on_box
from vpsctl.sandbox import SandboxInfo

PRODUCTS = ("documint", "cronping", "flagbit", "webhookvault")


def curl(host: str, *args: str) -> str:
    """A curl on the box, through Caddy, as a visitor reaches ``host``."""
    return shlex.join(
        ["curl", "-sk", "--fail-with-body", "--resolve", f"{host}:443:127.0.0.1", *args]
    )


def listmonk_auth() -> str:
    # read on the box: the password never leaves it, not even into this test's argv
    return (
        "PW=$(grep -o \"LISTMONK_ADMIN_PASSWORD='[^']*'\" "
        '/opt/vpsctl/stacks/listmonk/env/listmonk.env | cut -d"\'" -f2); '
    )


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
    for title in ("Backups matter", "Restores matter more"):
        post = {"posts": [{"title": title, "html": f"<p>{title}</p>", "status": "published"}]}
        commands.append(
            curl(
                "blog.lumen.test",
                "-H",
                "Authorization: Ghost e2e",
                "-H",
                "Content-Type: application/json",
                "--data",
                json.dumps(post),
                "https://blog.lumen.test/ghost/api/admin/posts/?source=html",
            )
        )
    for who in ("ada", "grace", "linus"):
        subscriber = {"email": f"{who}@lumen.test", "name": who, "lists": [1]}
        commands.append(
            listmonk_auth()
            + curl(
                "lists.lumen.test",
                "-H",
                "Content-Type: application/json",
                "--data",
                json.dumps(subscriber),
                "https://lists.lumen.test/api/subscribers",
            ).replace("curl ", 'curl -u "studio-admin:$PW" ', 1)
        )
    commands.append(
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
    )
    for n in range(5):
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
    on_box(box, " >/dev/null && ".join(commands) + " >/dev/null", timeout=600)


def visible_data(box: SandboxInfo) -> dict[str, int]:
    """What a user sees through Caddy: records per product, Ghost posts, subscribers, and
    Plausible pageviews."""
    out: dict[str, int] = {}
    for product in PRODUCTS:
        answer = on_box(
            box, curl(f"{product}.lumen.test", f"https://{product}.lumen.test/api/records")
        )
        out[product] = json.loads(answer)["count"]
    posts = on_box(
        box,
        curl(
            "blog.lumen.test",
            "https://blog.lumen.test/ghost/api/content/posts/?key=e2e0123456789&limit=all",
        ),
    )
    out["ghost posts"] = json.loads(posts)["meta"]["pagination"]["total"]
    subscribers = on_box(
        box,
        listmonk_auth()
        + curl("lists.lumen.test", "https://lists.lumen.test/api/subscribers").replace(
            "curl ", 'curl -u "studio-admin:$PW" ', 1
        ),
    )
    out["subscribers"] = json.loads(subscribers)["data"]["total"]
    stats = on_box(
        box,
        curl(
            "stats.lumen.test",
            "-H",
            "Authorization: Bearer e2e",
            "https://stats.lumen.test/api/v1/stats/aggregate?site_id=blog.lumen.test&metrics=pageviews",
        ),
    )
    out["pageviews"] = json.loads(stats)["results"]["pageviews"]["value"]
    return out
