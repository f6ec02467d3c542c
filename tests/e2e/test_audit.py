"""audit, end to end on a sandbox box: a healthy studio audits green, and each failure the
audit issue names is caught and named by its own test, then repaired.

The tests share one box with the studio applied and run in file order; each leaves the box
healthy again (most by running apply, which repairs drift). Every CLI output is scanned for
every secret value.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from dotenv import dotenv_values

from tests.e2e.conftest import on_box, running_box, studio_for, target_of
from tests.helpers import run_cli, secret_values
from vpsctl.host.remote import Command, Result, Session, Target, shell
from vpsctl.local.sandbox import SandboxInfo
from vpsctl.ops import audit as audit_module
from vpsctl.ops import targets
from vpsctl.ops.apps import Response, find_container, request
from vpsctl.spec.loader import load_spec

pytestmark = pytest.mark.e2e

INV = "inventory/sandbox"
PRODUCT = "vpsctl-standin/product-documint"


@pytest.fixture(scope="module")
def box(state_dir: Path) -> Iterator[SandboxInfo]:
    with running_box("audit") as info:
        yield info


@pytest.fixture(scope="module")
def studio(box: SandboxInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = studio_for(tmp_path_factory.mktemp("studio"), box)
    result = run_cli(root, "apply", "-i", INV, "-y")
    assert result.code == 0, result.err[-4000:]
    assert "audit lumen-sandbox: healthy:" in result.err  # apply ends with the audit
    return root


def audit(root: Path) -> tuple[int, dict[str, Any]]:
    result = run_cli(root, "audit", "-i", INV, "--json")
    assert result.code in (0, 1), result.err
    data: dict[str, Any] = json.loads(result.out)
    assert data["ok"] == (result.code == 0)
    return result.code, data


def failures(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(c["group"], c["name"], c["value"]) for c in data["checks"] if c["status"] == "FAIL"]


def assert_green(root: Path) -> None:
    code, data = audit(root)
    assert code == 0, failures(data)


def repair(root: Path) -> None:
    """apply puts the spec back (drift, stopped or extra services); the audit is then green."""
    result = run_cli(root, "apply", "-i", INV, "-y")
    assert result.code == 0, result.err[-3000:]
    assert_green(root)


def wait_healthy(box: SandboxInfo, container: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = on_box(box, f"docker inspect -f '{{{{.State.Health.Status}}}}' {container}")
        if status.strip() == "healthy":
            return
        time.sleep(1)
    raise AssertionError(f"{container} did not become healthy")


def compose_up(box: SandboxInfo, stack: str, extra: str = "") -> None:
    on_box(
        box,
        f"cd /opt/vpsctl/stacks/{stack} && env -i PATH=/usr/bin:/bin "
        f"docker compose -p {stack} up -d --wait {extra}",
        timeout=180,
    )


def test_healthy_studio_audits_green_in_seconds(box: SandboxInfo, studio: Path) -> None:
    code, data = audit(studio)
    assert code == 0, failures(data)
    assert data["counts"]["ok"] > 60
    assert data["seconds"] < 20
    groups = {c["group"] for c in data["checks"]}
    assert {"documint", "ghost", "plausible", "listmonk", "edge", "host"} <= groups
    text = run_cli(studio, "audit", "-i", INV)
    assert text.code == 0 and "audit lumen-sandbox: healthy:" in text.out


def test_stopped_container(box: SandboxInfo, studio: Path) -> None:
    on_box(box, "docker stop cronping-app-1")
    code, data = audit(studio)
    assert code == 1
    assert any(
        g == "cronping" and n == "container cronping/app" and v.startswith("exited")
        for g, n, v in failures(data)
    ), failures(data)
    repair(studio)


def test_crash_looping_container(box: SandboxInfo, studio: Path) -> None:
    for count in range(1, 4):
        # the app exits (as a crash would); its restart policy brings it back, counting
        on_box(
            box,
            "docker exec flagbit-app-1 python3 -c "
            "'import os, signal; os.kill(1, signal.SIGTERM)' || true",
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            restarts = on_box(box, "docker inspect -f '{{.RestartCount}}' flagbit-app-1")
            if int(restarts) >= count:
                break
            time.sleep(0.5)
        wait_healthy(box, "flagbit-app-1")
    code, data = audit(studio)
    assert code == 1
    assert any(
        n == "container flagbit/app restarts" and "crash-looping" in v for _, n, v in failures(data)
    ), failures(data)
    compose_up(box, "flagbit", "--force-recreate")  # a new container starts counting at 0
    assert_green(studio)


GHOST_HOST = "blog.lumen.test"
# the integration apply creates with Ghost's owner: its admin key signs the test's requests
ADMIN_KEY_QUERY = (
    "SELECT k.id, k.secret FROM api_keys k JOIN integrations i ON i.id = k.integration_id "
    "WHERE i.name = 'vpsctl audit' AND k.type = 'admin' LIMIT 1;\n"
)


def lexical(text: str) -> str:
    """A one-paragraph post body as Ghost's editor saves it (Lexical JSON)."""
    node = {
        "detail": 0, "format": 0, "mode": "normal", "style": "", "text": text,
        "type": "extended-text", "version": 1,
    }  # fmt: skip
    paragraph = {
        "children": [node], "direction": "ltr", "format": "", "indent": 0,
        "type": "paragraph", "version": 1,
    }  # fmt: skip
    root = {
        "children": [paragraph], "direction": "ltr", "format": "", "indent": 0,
        "type": "root", "version": 1,
    }  # fmt: skip
    return json.dumps({"root": root})


@contextlib.contextmanager
def ghost_admin(box: SandboxInfo, studio: Path) -> Iterator[Callable[..., Response]]:
    """Real Ghost's Admin API as a staff integration: the admin key of "vpsctl audit" read
    from Ghost's MySQL (root password from the studio's secrets.env, sent on stdin), and a
    fresh HS256 token (``kid`` = key id, ``aud`` /admin/, 5 minutes) for every request,
    sent straight to the Ghost container through the SSH session."""
    password = dotenv_values(studio / INV / "secrets.env")["GHOST_DB_ROOT_PASSWORD"]
    assert password
    read = "IFS= read -r MYSQL_PWD; export MYSQL_PWD; exec mysql -h 127.0.0.1 -uroot -N -B ghost"
    with Session(target_of(box)) as session:
        mysql, _ = find_container(session, "ghost", "mysql")
        rows = session.feed(
            shlex.join(["docker", "exec", "-i", mysql, "sh", "-c", read]),
            f"{password}\n{ADMIN_KEY_QUERY}".encode(),
            60,
        ).stdout.split()
        assert len(rows) == 2, "no admin key of the integration 'vpsctl audit'"
        key_id, secret = rows
        _, address = find_container(session, "ghost", "ghost")
        with session.forward(address, 2368) as (local, port):

            def call(method: str, path: str, body: dict[str, Any] | None = None) -> Response:
                now = int(time.time())
                token = jwt.encode(
                    {"iat": now, "exp": now + 300, "aud": "/admin/"},
                    bytes.fromhex(secret),
                    algorithm="HS256",
                    headers={"kid": key_id},
                )
                return request(
                    f"http://{local}:{port}",
                    GHOST_HOST,
                    method,
                    f"/ghost/api/admin/{path}",
                    body=None if body is None else json.dumps(body).encode(),
                    headers={"Authorization": f"Ghost {token}"},
                )

            yield call


def check(data: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        c for c in data["checks"] if c["group"] == "ghost" and c["name"] == name
    ]
    assert len(found) == 1, found
    return found[0]


def test_ghost_audit_on_real_ghost_pages_gates_and_sitemaps(box: SandboxInfo, studio: Path) -> None:
    """Real Ghost 6, written through its Admin API: more than 100 posts (two Content API
    pages), a members-only post (empty to a content key), a post whose canonical_url points
    elsewhere (left out of the sitemap), and a post sent with `markdown` only, which the
    Admin API publishes with NO body. The audit fails only on that one, by name; deleting
    it drops the count, named once."""
    with ghost_admin(box, studio) as admin:

        def publish(slug: str, **post: Any) -> str:
            post = {"title": slug, "slug": slug, "status": "published", **post}
            answer = admin("POST", "posts/", {"posts": [post]})
            assert answer.status == 201, answer.text()
            return str(answer.json()["posts"][0]["id"])

        before = admin("GET", "posts/?limit=1&filter=status:published").json()
        published = int(before["meta"]["pagination"]["total"])
        for n in range(max(0, 101 - published - 4)):
            publish(f"filler-{n:03d}", lexical=lexical(f"Filler post {n}."))
        publish("audit-public", lexical=lexical("Everyone may read this."))
        publish("audit-members", lexical=lexical("Members only."), visibility="members")
        publish(
            "audit-elsewhere",
            lexical=lexical("First published on another site."),
            canonical_url="https://medium.com/@lumen/audit-elsewhere-1234",
        )
        empty = publish("audit-markdown", markdown="# We launched")
        code, data = audit(studio)
        assert code == 1
        api = check(data, "ghost content API")
        assert api["status"] == "ok" and api["value"].endswith(" in 2 pages of 100"), api
        body = check(data, "ghost posts: no public post with an empty body")
        assert body["status"] == "FAIL", body
        assert body["value"].startswith("1 empty: audit-markdown; "), body
        assert "members-only or paid not judged" in body["value"], body
        sitemap = check(data, "ghost posts: the sitemap lists every post it should")
        assert sitemap["status"] == "ok", sitemap
        assert sitemap["value"].endswith(
            "; 1 with a canonical_url elsewhere, left out as Ghost does"
        ), sitemap
        assert [g for g, _, _ in failures(data)] == ["ghost"], failures(data)
        total = int(api["value"].split()[0])
        assert admin("DELETE", f"posts/{empty}/").status == 204
    code, data = audit(studio)
    assert code == 1
    assert ("ghost", "ghost posts: no drop since the last audit", f"{total} → {total - 1}") in (
        failures(data)
    )
    assert_green(studio)  # reported once: the next audit compares with the new count


def test_ghost_without_its_content_key_on_the_box(box: SandboxInfo, studio: Path) -> None:
    """A key Ghost does not know, then the box's copy of the derived key gone: the audit
    says what to do, and apply writes the key back from Ghost's own database."""
    key = "/opt/vpsctl/apps/ghost/ghost-content-key"
    assert on_box(box, f"stat -c '%a %U' {key}").strip() == "600 root"
    on_box(box, f"printf %s {'f' * 26} > {key}")
    code, data = audit(studio)
    assert code == 1
    [refused] = [v for g, n, v in failures(data) if n == "ghost content API"]
    assert refused == (
        f"Ghost refused the Content API key in {key} (401): delete the file, then "
        f"`vpsctl apply -i {INV}` derives it again"
    )
    on_box(box, f"rm {key}")
    code, data = audit(studio)
    assert code == 1
    [(group, value)] = [(g, v) for g, n, v in failures(data) if n == "ghost content API"]
    assert group == "ghost"
    assert (
        value == f"no Content API key on the box ({key}): `vpsctl apply -i {INV}` derives it again"
    )
    repair(studio)


def test_every_first_launch_is_claimed(box: SandboxInfo, studio: Path) -> None:
    """The claimed apps' setup pages answer through Caddy, and say they are set up."""
    code, data = audit(studio)
    assert code == 0, failures(data)
    claimed = {c["group"]: c for c in data["checks"] if c["name"].startswith("first launch:")}
    assert claimed["ghost"]["status"] == "ok"
    assert claimed["ghost"]["value"] == (
        "GET /ghost/api/admin/authentication/setup/ through Caddy answers 200: setup status "
        "true (already set up)"
    )
    assert claimed["plausible"]["status"] == "ok"
    assert claimed["plausible"]["value"] == "GET /login through Caddy answers 200 (an owner exists)"


def test_product_answering_200_with_an_empty_body(box: SandboxInfo, studio: Path) -> None:
    """The outage found hours later: the app answers, with nothing. A stand-in behind the
    product's network alias serves empty 200s."""
    on_box(box, "docker stop documint-app-1")
    server = (
        "import http.server as h\n"
        "class E(h.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.send_header('Content-Length', '0'); "
        "self.end_headers()\n"
        "h.HTTPServer(('', 8080), E).serve_forever()\n"
    )
    image = on_box(box, f"docker images --format '{{{{.Repository}}}}:{{{{.Tag}}}}' {PRODUCT}")
    on_box(box, f"cat > /root/empty.py <<'EOF'\n{server}EOF")
    on_box(
        box,
        "docker run -d --name empty-pages --network vpsctl-edge --network-alias documint--app "
        f"-v /root/empty.py:/empty.py:ro --entrypoint python3 {image.split()[0]} /empty.py "
        "&& sleep 2",
    )
    code, data = audit(studio)
    assert code == 1
    assert any(
        g == "documint" and n == "route GET https://documint.lumen.test/" and v == "empty body"
        for g, n, v in failures(data)
    ), failures(data)
    on_box(box, "docker rm -f empty-pages")
    repair(studio)


def test_webhook_route_that_redirects_and_the_edited_caddyfile(
    box: SandboxInfo, studio: Path
) -> None:
    caddyfile = "/opt/vpsctl/stacks/edge/config/caddy/Caddyfile"
    on_box(
        box,
        f"sed -i 's|^documint.lumen.test {{|documint.lumen.test {{\\n\\tredir /webhooks/* "
        f"https://documint.lumen.test/billing/stripe 308|' {caddyfile} && "
        "docker exec edge-caddy-1 caddy reload --config /etc/caddy/Caddyfile --adapter caddyfile",
    )
    code, data = audit(studio)
    assert code == 1
    found = failures(data)
    assert any(
        n == "route POST https://documint.lumen.test/webhooks/stripe" and "redirect" in v
        for _, n, v in found
    ), found
    assert any(n == f"file {caddyfile}" and v.startswith("differs") for _, n, v in found)
    repair(studio)


def test_file_edited_by_hand(box: SandboxInfo, studio: Path) -> None:
    compose = "/opt/vpsctl/stacks/listmonk/compose.yaml"
    on_box(box, f"echo '# tuned by hand' >> {compose}")
    code, data = audit(studio)
    assert code == 1
    assert any(n == "config drift" and v.startswith("1 of ") for _, n, v in failures(data)), (
        failures(data)
    )
    assert any(n == f"file {compose}" for _, n, _ in failures(data))
    repair(studio)


def test_extra_container_started_by_hand(box: SandboxInfo, studio: Path) -> None:
    image = on_box(box, f"docker images --format '{{{{.Repository}}}}:{{{{.Tag}}}}' {PRODUCT}")
    on_box(box, f"docker run -d --name intruder --entrypoint sleep {image.split()[0]} 600")
    code, data = audit(studio)
    assert code == 1
    assert any(g == "host" and n == "container intruder" for g, n, _ in failures(data))
    on_box(box, "docker rm -f intruder")
    assert_green(studio)


def test_service_with_an_empty_env_value(box: SandboxInfo, studio: Path) -> None:
    env = "/opt/vpsctl/stacks/cronping/env/app.env"
    on_box(box, f"echo \"FEATURE_FLAGS=''\" >> {env}")
    compose_up(box, "cronping")
    code, data = audit(studio)
    assert code == 1
    assert ("cronping", "container cronping/app environment", "empty: FEATURE_FLAGS") in (
        failures(data)
    )
    repair(studio)


def test_disk_past_its_threshold(box: SandboxInfo, studio: Path) -> None:
    """A file filling a test volume pushes disk use past a threshold set just above the
    current use (the box's disk is this machine's; a few GB are enough)."""
    total, used = (
        int(x) for x in on_box(box, "df -B1 --output=size,used /var/lib/docker | tail -n 1").split()
    )
    percent = -(-100 * used // total)  # rounded up, as df shows it
    host = studio / INV / "host.yaml"
    original = host.read_text()
    host.write_text(
        original + f"audit: {{disk_warn_percent: {percent + 1}, "
        f"disk_fail_percent: {percent + 1}}}\n"
    )
    fill = (percent + 1) * total // 100 - used + total // 200
    on_box(
        box,
        "docker volume create audit-filler >/dev/null && fallocate -l "
        f"{fill} /var/lib/docker/volumes/audit-filler/_data/fill",
    )
    try:
        code, data = audit(studio)
        assert code == 1
        assert any(n == "disk /var/lib/docker" for _, n, _ in failures(data)), failures(data)
    finally:
        on_box(box, "docker volume rm -f audit-filler >/dev/null")
        host.write_text(original)
    assert_green(studio)


def test_backup_older_than_its_threshold(box: SandboxInfo, studio: Path) -> None:
    on_box(
        box,
        "mkdir -p /opt/vpsctl/backup && echo $(( $(date +%s) - 30 * 3600 )) "
        "> /opt/vpsctl/backup/last-success",
    )
    code, data = audit(studio)
    assert code == 1
    assert any(
        n == "last successful backup" and v.startswith("30.0h") for _, n, v in failures(data)
    ), failures(data)
    on_box(box, "date +%s > /opt/vpsctl/backup/last-success")
    code, data = audit(studio)
    assert code == 0
    backup = next(c for c in data["checks"] if c["name"] == "last successful backup")
    assert backup["status"] == "ok"
    on_box(box, "rm -f /opt/vpsctl/backup/last-success")


def test_firewall_and_open_ports_checks_are_green_on_the_applied_box(
    box: SandboxInfo, studio: Path
) -> None:
    code, data = audit(studio)
    assert code == 0, failures(data)
    checks = {c["name"]: c for c in data["checks"]}
    for family in ("IPv4", "IPv6"):
        for hook in ("INPUT", "DOCKER-USER"):
            check = checks[f"firewall {family} {hook}"]
            assert check["status"] == "ok", check
            assert check["threshold"] == (
                "only tcp 22, 80, 443; udp 443 from outside, the rest dropped"
            )
    ports = checks["ports open to the outside"]
    assert ports["status"] == "ok"
    assert "80/tcp container edge-caddy-1" in ports["value"]
    assert "443/udp container edge-caddy-1" in ports["value"]
    assert "22/tcp process sshd" in ports["value"]
    text = run_cli(studio, "audit", "-i", INV)
    assert "firewall IPv4 INPUT" in text.out and "ports open to the outside" in text.out


def test_stray_container_publishing_a_port(box: SandboxInfo, studio: Path) -> None:
    image = on_box(box, f"docker images --format '{{{{.Repository}}}}:{{{{.Tag}}}}' {PRODUCT}")
    on_box(
        box,
        f"docker run -d --name stray -p 8081:8080 --entrypoint python3 {image.split()[0]} "
        "-m http.server 8080",
    )
    try:
        result = run_cli(studio, "audit", "-i", INV)
        assert result.code == 1
        assert "port 8081/tcp published by container stray" in result.out
        code, data = audit(studio)
        assert code == 1
        found = failures(data)
        stray = [v for g, n, v in found if n == "port 8081/tcp published by container stray"]
        assert len(stray) == 1, found
        assert stray[0].startswith("container stray on 0.0.0.0:8081"), stray
        assert stray[0].endswith(" (tcp): not declared by the spec"), stray
        assert ("host", "ports open to the outside", "1 not in the spec") in found, found
    finally:
        on_box(box, "docker rm -f stray")
    assert_green(studio)


def test_firewall_changed_by_hand(box: SandboxInfo, studio: Path) -> None:
    """A rule put ahead of vpsctl's, and docker's DOCKER-USER flushed: both named; the
    bootstrap, run again, puts the rules back."""
    on_box(box, "iptables -w -I INPUT -p tcp --dport 8081 -j ACCEPT && iptables -w -F DOCKER-USER")
    code, data = audit(studio)
    assert code == 1
    found = {n: v for g, n, v in failures(data) if g == "host"}
    assert (
        "ahead of VPSCTL-INPUT: -A INPUT -p tcp -m tcp --dport 8081 -j ACCEPT"
        in (found["firewall IPv4 INPUT"])
    )
    assert found["firewall IPv4 DOCKER-USER"].startswith(
        "DOCKER-USER does not jump to VPSCTL-FORWARD"
    )
    assert "vpsctl apply -i " in found["firewall IPv4 INPUT"]
    assert " --only bootstrap` re-applies the rules" in found["firewall IPv4 INPUT"]
    result = run_cli(studio, "apply", "-i", INV, "--only", "bootstrap", "-y")
    assert result.code == 0, result.err[-3000:]
    assert "changed: Firewall applied" in result.err
    assert_green(studio)


class RecordingSession(Session):
    """A real session that records every command line it sends to the box."""

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self.sent: list[str] = []

    def run(
        self, command: Command, timeout: int = 600, *, check: bool = True, purpose: str = ""
    ) -> Result:
        self.sent.append(shell(command))
        return super().run(command, timeout, check=check, purpose=purpose)

    def feed(
        self,
        command: Command,
        data: bytes,
        timeout: int = 600,
        *,
        check: bool = True,
        purpose: str = "",
    ) -> Result:
        self.sent.append(shell(command))
        return super().feed(command, data, timeout, check=check, purpose=purpose)


def test_no_secret_on_any_command_line_of_the_audit(box: SandboxInfo, studio: Path) -> None:
    """Every command the audit sends is recorded: none holds a secret value, while the
    Ghost checks (which need the Content API key) still pass."""
    with contextlib.chdir(studio):
        spec = load_spec(studio / INV)
        session = RecordingSession(targets.target(spec))
        with session:
            report = audit_module.audit(spec, session)
    assert report.ok, [c for c in report.checks if c.status == audit_module.FAIL]
    assert any(c.name.startswith("ghost posts") and c.status == "ok" for c in report.checks)
    assert session.sent
    secrets = secret_values(studio)
    assert secrets
    for command in session.sent:
        for value in secrets:
            assert value not in command, "a secret value is on a command line"


def test_kept_volumes_of_an_undeclared_stack_are_listed_then_deleted_on_request(
    box: SandboxInfo, studio: Path
) -> None:
    """A stack removed earlier left a volume (kept, as apply does): the audit lists it as
    info and stays green, `plan -v` lists it with its size, and `apply --destroy-data`
    deletes it although no stack is removed in that run."""
    on_box(
        box,
        "docker volume create --label com.docker.compose.project=oldstats "
        "oldstats_event-data >/dev/null && dd if=/dev/zero bs=1M count=3 status=none "
        "of=/var/lib/docker/volumes/oldstats_event-data/_data/parts.bin",
    )
    code, data = audit(studio)
    assert code == 0, failures(data)
    [kept] = [c for c in data["checks"] if c["name"] == "kept volume oldstats_event-data"]
    assert kept["status"] == "info"
    assert kept["value"].startswith("3 MiB since 20"), kept
    assert kept["value"].endswith("stack oldstats is no longer declared"), kept
    plan = run_cli(studio, "plan", "-i", INV, "-v")
    assert plan.code == 0, plan.out[-2000:]
    assert "  kept: oldstats_event-data 3 MiB since 20" in plan.out
    assert f"`vpsctl apply -i {INV} --destroy-data` deletes them" in plan.out
    destroy = run_cli(studio, "apply", "-i", INV, "-y", "--destroy-data")
    assert destroy.code == 0, destroy.err[-3000:]
    assert "  - delete oldstats_event-data 3 MiB since 20" in destroy.out
    assert "volumes: deleted oldstats_event-data" in destroy.err
    assert on_box(box, "docker volume ls -q --filter name=oldstats") == ""
    assert_green(studio)
