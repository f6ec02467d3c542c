"""Stand-in for ghcr.io/plausible/community-edition:v3.2.0 (``/entrypoint.sh`` runs it).

Commands, as the real release's scripts: ``createdb`` (the Postgres database of
DATABASE_URL and the ClickHouse database of CLICKHOUSE_DATABASE_URL), ``migrate`` (their
tables), ``run`` (HTTP on $HTTP_PORT/$PORT, default 8000). Every command first evaluates the
configuration the way the real ``runtime.exs`` does, in its order, and crashes boot at the
first bad value with the real message: BASE_URL required and http(s) (here also: no path),
SECRET_KEY_BASE at least 32 bytes (below 64 the app boots but every browser page answers
500, as the real cookie store does), TOTP_VAULT_KEY padded base64 of exactly 32 bytes,
DISABLE_REGISTRATION true/false/invite_only, and an EMPTY optional variable is a value, not
"unset" (``DISABLE_REGISTRATION=""``, an empty boolean or integer crash boot). Values come
from ``$CONFIG_DIR/<NAME>`` files (default /run/secrets) before the environment.

HTTP: ``GET /api/health`` → ``{"postgres","clickhouse","sites_cache"}`` with real checks
(500 if one fails); ``GET /login`` names Plausible; ``POST /api/event`` → 202, stored in
ClickHouse's ``events_v2`` when the domain is a site (dropped otherwise, with
``x-plausible-dropped: 1``, like the real one); the Sites API (``/api/v1/sites``) and
``/api/v1/stats/aggregate`` with any Bearer token (the stand-in has no API keys).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import ipaddress
import json
import os
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import psycopg2
import psycopg2.errors
from httpbase import Handler, HttpError, log, serve
from psycopg2 import sql as pgsql

VERSION = "3.2.0"
WIKI = "https://github.com/plausible/community-edition/wiki/configuration"
DEFAULT_CH_URL = "http://plausible_events_db:8123/plausible_events_db"
CH_INTS = (
    ("CLICKHOUSE_INGEST_POOL_SIZE", "5"),
    ("CLICKHOUSE_FLUSH_INTERVAL_MS", "5000"),
    ("CLICKHOUSE_MAX_BUFFER_SIZE_BYTES", "100000"),
)
TOTP_MESSAGE = "TOTP_VAULT_KEY must be Base64 encoded 32 bytes, e.g. `openssl rand -base64 32`"
BOOLS = ("1", "0", "t", "f", "true", "false", "y", "n", "yes", "no", "on", "off")
BOOL_VARS = (
    "ENABLE_SESSION_TRANSFER",
    "ENABLE_EMAIL_VERIFICATION",
    "SELFHOST",
    "DISABLE_CRON",
    "LOG_FAILED_LOGIN_ATTEMPTS",
    "SSO_ENABLED",
)
LOG_LEVELS = (
    *("emergency", "alert", "critical", "error", "warning", "warn", "notice", "info", "debug"),
    *("all", "none"),
)
MAILERS = (
    "Bamboo.PostmarkAdapter",
    "Bamboo.MailgunAdapter",
    "Bamboo.MandrillAdapter",
    "Bamboo.SendGridAdapter",
    "Bamboo.SMTPAdapter",
    "Bamboo.Mua",
    "Bamboo.LocalAdapter",
    "Bamboo.TestAdapter",
)


# ── configuration, in runtime.exs order ───────────────────────────────────────────────────


class BootError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class Config:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.config_dir = Path(env.get("CONFIG_DIR", "/run/secrets"))
        self._logging_and_listen()
        self._base_url()
        self._secret_key_base()
        self.mailer_adapter = self.var("MAILER_ADAPTER", "Bamboo.Mua") or ""
        self.ch_url = self.var("CLICKHOUSE_DATABASE_URL", DEFAULT_CH_URL) or ""
        for name, default in CH_INTS:
            value = self.var(name, default) or ""
            if not value.lstrip("-").isdigit():  # {n, ""} = Integer.parse(value)
                raise BootError("MatchError", "no match of right hand side value: :error")
        self._totp_vault_key()
        for name in BOOL_VARS:
            self.bool_var(name)
        self._registration_and_cookies()
        if self.https_port:
            self._https_checks()
        self.bool_var("ECTO_IPV6")
        self._database_url()
        self.int_var("IMPORTED_MAX_BUFFER_SIZE")
        self.bool_var("ECTO_CH_IPV6")
        self._mailer()
        self.bool_var("PROMEX_DISABLED")
        self.bool_var("S3_DISABLED")
        ch = urlsplit(self.ch_url)
        if ch.scheme not in ("http", "https") or not ch.hostname or not ch.path.strip("/"):
            raise BootError(
                "ArgumentError",
                "CLICKHOUSE_DATABASE_URL must be an http(s) URL with a database path",
            )

    def _logging_and_listen(self) -> None:
        log_format = self.var("LOG_FORMAT", "standard") or ""
        if log_format.lower() not in ("standard", "json"):
            raise BootError("CaseClauseError", f"no case clause matching: {log_format!r}")
        if self.var("LOG_LEVEL", "notice") not in LOG_LEVELS:
            raise BootError(
                "ArgumentError", f"invalid LOG_LEVEL: the logger level must be one of {LOG_LEVELS}"
            )
        listen_ip = self.var("LISTEN_IP")
        if listen_ip is None:
            listen_ip = "127.0.0.1"
        try:
            self.listen_ip = str(ipaddress.ip_address(listen_ip))
        except ValueError:
            raise BootError(
                "RuntimeError", f"Invalid LISTEN_IP '{listen_ip}' error: :einval"
            ) from None
        self.port = self.int_var("HTTP_PORT") or self.int_var("PORT") or 8000
        self.https_port = self.int_var("HTTPS_PORT")

    def _base_url(self) -> None:
        base_url = self.var("BASE_URL")
        if base_url is None:
            raise BootError(
                "RuntimeError",
                f"BASE_URL configuration option is required. See {WIKI}#base_url",
            )
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https"):
            raise BootError(
                "RuntimeError",
                "BASE_URL must start with `http` or `https`. "
                f"Currently configured as `{self.env.get('BASE_URL', '')}`",
            )
        if url.path not in ("", "/") or url.query or not url.hostname:
            # the real release boots and then builds broken links: refused here
            raise BootError(
                "RuntimeError",
                "BASE_URL must be a scheme and host (and port) without a path "
                f"(vpsctl stand-in check). Currently configured as `{base_url}`",
            )
        self.base_url = base_url.rstrip("/")
        self.scheme = url.scheme
        self.host = url.hostname

    def _secret_key_base(self) -> None:
        secret_key_base = self.var("SECRET_KEY_BASE")
        if secret_key_base is None:
            raise BootError(
                "RuntimeError",
                f"SECRET_KEY_BASE configuration option is required. See {WIKI}#secret_key_base",
            )
        if len(secret_key_base.encode()) < 32:
            raise BootError(
                "RuntimeError",
                f"SECRET_KEY_BASE must be at least 32 bytes long. See {WIKI}#secret_key_base",
            )
        # boots, but Plug's cookie store refuses every session below 64 bytes
        self.cookie_store_ok = len(secret_key_base.encode()) >= 64

    def _totp_vault_key(self) -> None:
        totp = self.var("TOTP_VAULT_KEY")
        if totp is None:
            return  # derived from SECRET_KEY_BASE
        try:
            key = base64.b64decode(totp, validate=True)
        except (binascii.Error, ValueError):
            raise BootError(
                "ArgumentError", f"{TOTP_MESSAGE}\nMore info: {WIKI}#totp_vault_key"
            ) from None
        if len(key) != 32:
            raise BootError(
                "ArgumentError",
                f"{TOTP_MESSAGE}.\nGot Base64 encoded {len(key)} bytes.\n"
                f"More info: {WIKI}#totp_vault_key",
            )

    def _registration_and_cookies(self) -> None:
        registration = self.var("DISABLE_REGISTRATION", "invite_only")
        if registration not in ("true", "false", "invite_only"):
            raise BootError(
                "RuntimeError",
                "DISABLE_REGISTRATION must be one of `true`, `false`, or `invite_only`. "
                f"See {WIKI}#disable_registration",
            )
        self.registration = registration
        websocket_url = self.var("WEBSOCKET_URL", "") or ""
        if websocket_url and not (urlsplit(websocket_url).hostname or "").endswith(self.host):
            raise BootError(
                "RuntimeError",
                "Cross-domain websocket authentication is not supported for this server.",
            )
        secure_cookie = self.var("SECURE_COOKIE", "true" if self.scheme == "https" else "false")
        if secure_cookie not in ("true", "false"):
            raise BootError("ArgumentError", "SECURE_COOKIE must be true or false")

    # ConfigHelpers
    def var(self, name: str, default: str | None = None) -> str | None:
        path = self.config_dir / name
        if path.is_file():
            return path.read_text().strip()
        return self.env.get(name, default)

    def int_var(self, name: str) -> int | None:
        value = self.var(name)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise BootError(
                "RuntimeError", f"Config variable {name} must be an integer. Got {value}"
            ) from None

    def bool_var(self, name: str) -> bool | None:
        value = self.var(name)
        if value is None:
            return None
        if value.lower() not in BOOLS:
            raise BootError(
                "ArgumentError",
                f"Invalid boolean value: {json.dumps(value)}. Expected one of: {', '.join(BOOLS)}",
            )
        return BOOLS.index(value.lower()) % 2 == 0

    def _https_checks(self) -> None:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            pass
        else:
            raise BootError(
                "ArgumentError", f"Cannot generate TLS certificates for IP address {self.host!r}"
            )
        if self.host == "localhost" or "." not in self.host:
            raise BootError(
                "ArgumentError", f"Cannot generate TLS certificates for local domain {self.host!r}"
            )
        log("[warning] HTTPS_PORT is set: Plausible would serve TLS itself (the stand-in does not)")

    def _database_url(self) -> None:
        raw = self.var(
            "DATABASE_URL", "postgres://postgres:postgres@plausible_db:5432/plausible_db"
        )
        url = urlsplit(raw or "")
        if not url.hostname or url.scheme not in ("postgres", "postgresql"):
            # the real release crashes in String.starts_with?/2 on the missing host
            raise BootError(
                "FunctionClauseError",
                "no function clause matching in String.starts_with?/2 (DATABASE_URL has no host)",
            )
        sslmode = parse_qs(url.query).get("sslmode", [None])[0]
        if sslmode not in (None, "disable", "require", "verify-ca", "verify-full"):
            raise BootError(
                "ArgumentError",
                f"PostgreSQL SSL mode `sslmode={sslmode}` is not supported, use `disable`, "
                "`require`, `verify-ca` or `verify-full` instead",
            )
        self.pg = {
            "host": url.hostname,
            "port": url.port or 5432,
            "user": unquote(url.username or "postgres"),
            "password": unquote(url.password or ""),
            "dbname": url.path.strip("/") or "plausible_db",
            "sslmode": sslmode or "disable",
            "connect_timeout": 5,
        }

    def _mailer(self) -> None:
        if self.mailer_adapter not in MAILERS:
            raise BootError(
                "ArgumentError",
                f"Unknown mailer_adapter: {json.dumps(self.mailer_adapter)}\n\n"
                "Please see https://hexdocs.pm/bamboo/readme.html#available-adapters\n"
                "for the list of available adapters that ship with Bamboo",
            )
        if self.mailer_adapter == "Bamboo.Mua":
            self.bool_var("SMTP_MIDDLEBOX_COMP_MODE")
            if self.var("SMTP_HOST_ADDR") is not None:
                self.int_var("SMTP_HOST_PORT")
                self.bool_var("SMTP_HOST_SSL_ENABLED")
            if (self.var("SMTP_USER_NAME") is None) != (self.var("SMTP_USER_PWD") is None):
                raise BootError(
                    "ArgumentError",
                    "Both SMTP_USER_NAME and SMTP_USER_PWD must be set for SMTP authentication.\n"
                    "Please provide values for both environment variables.",
                )

    @property
    def ch_database(self) -> str:
        return urlsplit(self.ch_url).path.strip("/")


def boot_failure(error: BootError) -> NoReturn:
    log("ERROR! Config provider Config.Reader failed with:")
    log(f"** ({error.kind}) {error.message}")
    log(f"    /app/releases/{VERSION}/runtime.exs: (file)")
    log(f"\nRuntime terminating during boot ({error.kind})")
    log("\nCrash dump is being written to: erl_crash.dump...done")
    sys.exit(1)


# ── the two databases ─────────────────────────────────────────────────────────────────────


def pg_connect(config: Config, dbname: str | None = None) -> Any:
    params = dict(config.pg)
    if dbname is not None:
        params["dbname"] = dbname
    return psycopg2.connect(**params)


class ClickHouse:
    """Plausible's ClickHouse connection: HTTP, database from the URL's path."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 8123
        self.https = parts.scheme == "https"
        self.database = parts.path.strip("/")
        user, password = unquote(parts.username or "default"), unquote(parts.password or "")
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def query(self, sql: str, database: str | None = None, data: bytes = b"") -> str:
        params = {"query": sql}
        if database is None:
            database = self.database
        if database:
            params["database"] = database
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=10)
        try:
            conn.request(
                "POST", "/?" + urlencode(params), body=data, headers={"Authorization": self.auth}
            )
            response = conn.getresponse()
            text = response.read().decode(errors="replace")
        finally:
            conn.close()
        if response.status != 200:
            raise ClickHouseError(text.strip())
        return text


class ClickHouseError(Exception):
    pass


CH_TABLES = (
    """CREATE TABLE IF NOT EXISTS events_v2 (
        timestamp DateTime, name LowCardinality(String), site_id UInt64, user_id UInt64,
        session_id UInt64, hostname String, pathname String, referrer String,
        referrer_source String, country_code LowCardinality(String),
        `meta.key` Array(String), `meta.value` Array(String)
    ) ENGINE = MergeTree PARTITION BY toYYYYMM(timestamp)
      ORDER BY (site_id, toDate(timestamp), name, user_id, timestamp)""",
    """CREATE TABLE IF NOT EXISTS sessions_v2 (
        session_id UInt64, sign Int8, site_id UInt64, user_id UInt64, hostname String,
        start DateTime, timestamp DateTime, entry_page String, exit_page String,
        pageviews Int32, events Int32, is_bounce UInt8
    ) ENGINE = VersionedCollapsingMergeTree(sign, events)
      ORDER BY (site_id, toDate(start), user_id, session_id)""",
    """CREATE TABLE IF NOT EXISTS schema_migrations (version Int64, inserted_at DateTime)
       ENGINE = TinyLog""",
)
PG_TABLES = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version bigint PRIMARY KEY, inserted_at timestamp(0) without time zone);
CREATE TABLE IF NOT EXISTS users (
    id bigserial PRIMARY KEY, email text UNIQUE NOT NULL, name text,
    password_hash text, inserted_at timestamp(0) NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS sites (
    id bigserial PRIMARY KEY, domain text UNIQUE NOT NULL,
    timezone text NOT NULL DEFAULT 'Etc/UTC', inserted_at timestamp(0) NOT NULL DEFAULT now());
INSERT INTO schema_migrations (version, inserted_at)
    VALUES (20250101000000, now()) ON CONFLICT DO NOTHING;
"""


def createdb(config: Config) -> None:
    log("Loading plausible..")
    log("Starting dependencies..")
    dbname = config.pg["dbname"]
    try:
        conn = pg_connect(config, "postgres")
    except psycopg2.Error as exc:
        log(f"** (DBConnection.ConnectionError) connection to Postgres failed: {exc}".strip())
        sys.exit(1)
    conn.autocommit = True
    with conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
        if cur.fetchone():
            log("The database for Plausible.Repo has already been created")
        else:
            cur.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(dbname)))
            log("The database for Plausible.Repo has been created")
    conn.close()
    ch = ClickHouse(config.ch_url)
    try:
        ch.query(f"CREATE DATABASE IF NOT EXISTS `{config.ch_database}`", database="default")
    except (OSError, ClickHouseError) as exc:
        log(f"** (Mint.TransportError) ClickHouse: {exc}")
        sys.exit(1)
    log("The database for Plausible.IngestRepo has been created")
    log("Creation of Db successful!")


def migrate(config: Config) -> None:
    log("Loading plausible..")
    log("Starting dependencies..")
    log("Starting repos..")
    try:
        conn = pg_connect(config)
    except psycopg2.Error as exc:
        log(f"** (DBConnection.ConnectionError) connection to Postgres failed: {exc}".strip())
        sys.exit(1)
    with conn, conn.cursor() as cur:
        cur.execute(PG_TABLES)
    conn.close()
    log("Running migrations for Plausible.Repo")
    ch = ClickHouse(config.ch_url)
    try:
        for statement in CH_TABLES:
            ch.query(" ".join(statement.split()))
        if ch.query("SELECT count() FROM schema_migrations").strip() == "0":
            ch.query("INSERT INTO schema_migrations VALUES (20250101000000, now())")
    except (OSError, ClickHouseError) as exc:
        log(f"** (Ch.Error) ClickHouse: {exc}")
        sys.exit(1)
    log("Running migrations for Plausible.IngestRepo")
    log("Migrations successful!")


# ── the app ───────────────────────────────────────────────────────────────────────────────


class SitesCache:
    """domain → site id, refreshed from Postgres (the real Plausible.Site.Cache)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.sites: dict[str, int] = {}
        self.ready = False
        self.lock = threading.Lock()

    def refresh(self) -> None:
        try:
            conn = pg_connect(self.config)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT domain, id FROM sites")
                    sites = {row[0]: int(row[1]) for row in cur.fetchall()}
            finally:
                conn.close()
        except psycopg2.Error as exc:
            log(f"[error] sites cache refresh failed: {str(exc).strip()}")
            return
        with self.lock:
            self.sites = sites
            self.ready = True

    def loop(self) -> None:
        while True:
            self.refresh()
            time.sleep(15 if self.ready else 2)


LOGIN_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Plausible · Login</title></head>
<body><main><h1>Enter your account credentials</h1>
<form method="post" action="/login">
<label>Email <input type="email" name="email"></label>
<label>Password <input type="password" name="password"></label>
<button type="submit">Log in</button></form>
<p>Plausible Analytics {version} (vpsctl stand-in)</p></main></body></html>
"""


class App(Handler):
    app_name = "plausible"
    config: Config
    cache: SitesCache
    ch: ClickHouse

    def route(self) -> None:
        path, method = self.route_path.rstrip("/") or "/", self.command
        if path == "/api/health" and method in ("GET", "HEAD"):
            self.health()
        elif path == "/api/event" and method == "POST":
            self.event()
        elif path == "/api/v1/sites":
            self.sites()
        elif path == "/api/v1/stats/aggregate" and method == "GET":
            self.aggregate()
        elif path == "/api/system/health/live":
            self.send_json(200, {"status": "ok"})
        elif path in ("/js/script.js", "/js/plausible.js") and method in ("GET", "HEAD"):
            script = SCRIPT.replace("{base}", self.config.base_url)
            self.send(200, script, "application/javascript")
        elif path in ("/", "/login", "/register", "/sites", "/settings"):
            self.browser(path)
        else:
            raise HttpError(404, "Not found")

    def browser(self, path: str) -> None:
        if not self.config.cookie_store_ok:
            log(
                "[error] ** (ArgumentError) cookie store expects conn.secret_key_base "
                "to be at least 64 bytes"
            )
            self.send_html(500, "<html><body>Internal Server Error</body></html>\n")
            return
        if path == "/login":
            self.send_html(200, LOGIN_PAGE.format(version=VERSION))
        else:
            self.send(302, "", headers={"Location": "/login"})

    def health(self) -> None:
        try:
            conn = pg_connect(self.config)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
            finally:
                conn.close()
            postgres = "ok"
        except psycopg2.Error as exc:
            postgres = f"error: {str(exc).strip().splitlines()[0]}"
        try:
            self.ch.query("SELECT 1")
            clickhouse = "ok"
        except (OSError, ClickHouseError) as exc:
            text = str(exc).strip()
            clickhouse = f"error: {text.splitlines()[0] if text else type(exc).__name__}"
        sites_cache = "ok" if postgres == "ok" and self.cache.ready else None
        healthy = postgres == clickhouse == sites_cache == "ok"
        self.send_json(
            200 if healthy else 500,
            {"postgres": postgres, "clickhouse": clickhouse, "sites_cache": sites_cache},
        )

    def event(self) -> None:
        try:
            payload = json.loads(self.body() or b"{}")
        except ValueError:
            raise HttpError(400, "Unable to parse request body as json") from None
        if not isinstance(payload, dict):
            raise HttpError(400, "Unable to parse request body as json")
        name = payload.get("name", payload.get("n"))
        page = payload.get("url", payload.get("u"))
        domains = payload.get("domain", payload.get("d"))
        errors = {
            key: ["can't be blank"]
            for key, value in (("event_name", name), ("url", page), ("domain", domains))
            if not value
        }
        if errors:
            self.send_json(400, {"errors": errors})
            return
        url = urlsplit(str(page))
        if url.scheme not in ("http", "https") or not url.hostname:
            self.send_json(400, {"errors": {"url": ["is invalid"]}})
            return
        with self.cache.lock:
            sites = dict(self.cache.sites)
        dropped = True
        for domain in str(domains).split(","):
            site_id = sites.get(domain.strip().removeprefix("www."))
            if site_id is None:
                continue
            self.store_event(site_id, str(name), url.hostname, url.path or "/", payload)
            dropped = False
        self.send(202, "ok", "text/plain", {"x-plausible-dropped": "1"} if dropped else None)

    def store_event(
        self, site_id: int, name: str, hostname: str, pathname: str, payload: dict[str, Any]
    ) -> None:
        client = self.headers.get("X-Forwarded-For", self.client_address[0]).split(",")[0].strip()
        agent = self.headers.get("User-Agent", "")
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        user = hashlib.sha256(f"{day}|{agent}|{client}|{site_id}".encode()).digest()
        user_id = int.from_bytes(user[:8], "big")
        session_id = int.from_bytes(
            hashlib.sha256(user + str(int(time.time()) // 1800).encode()).digest()[:8], "big"
        )
        props = payload.get("props", payload.get("p")) or {}
        if isinstance(props, str):
            try:
                props = json.loads(props)
            except ValueError:
                props = {}
        referrer = str(payload.get("referrer", payload.get("r")) or "")
        row = {
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "name": name,
            "site_id": site_id,
            "user_id": user_id,
            "session_id": session_id,
            "hostname": hostname,
            "pathname": pathname,
            "referrer": referrer,
            "referrer_source": urlsplit(referrer).hostname or "",
            "country_code": "",
            "meta.key": [str(k) for k in props] if isinstance(props, dict) else [],
            "meta.value": [str(v) for v in props.values()] if isinstance(props, dict) else [],
        }
        self.ch.query("INSERT INTO events_v2 FORMAT JSONEachRow", data=json.dumps(row).encode())

    def has_api_key(self) -> bool:
        """Any Bearer token will do (the stand-in has no API keys); else answer 401."""
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth[7:].strip():
            return True
        self.send_json(
            401,
            {"error": "Missing API key. Please use a valid Plausible API key as a Bearer Token."},
        )
        return False

    def sites(self) -> None:
        if not self.has_api_key():
            return
        conn = pg_connect(self.config)
        try:
            with conn, conn.cursor() as cur:
                if self.command == "POST":
                    body = self.body()
                    ctype = self.headers.get("Content-Type", "")
                    if "json" in ctype:
                        data = json.loads(body or b"{}")
                    else:
                        data = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                    domain = str(data.get("domain") or "").strip()
                    if not domain:
                        self.send_json(400, {"error": "domain: can't be blank"})
                        return
                    timezone = str(data.get("timezone") or "Etc/UTC")
                    try:
                        cur.execute(
                            "INSERT INTO sites (domain, timezone) VALUES (%s, %s) RETURNING id",
                            (domain, timezone),
                        )
                    except psycopg2.errors.UniqueViolation:
                        self.send_json(
                            400,
                            {"error": "domain: This domain has already been taken"},
                        )
                        return
                    conn.commit()
                    self.cache.refresh()
                    self.send_json(200, {"domain": domain, "timezone": timezone})
                elif self.command == "GET":
                    cur.execute("SELECT domain, timezone FROM sites ORDER BY id")
                    sites = [{"domain": d, "timezone": tz} for d, tz in cur.fetchall()]
                    self.send_json(
                        200, {"sites": sites, "meta": {"limit": 100, "after": None, "before": None}}
                    )
                else:
                    raise HttpError(405, "method not allowed")
        finally:
            conn.close()

    def aggregate(self) -> None:
        if not self.has_api_key():
            return
        domain = self.param("site_id")
        with self.cache.lock:
            site_id = self.cache.sites.get(domain)
        if site_id is None:
            self.send_json(
                401,
                {
                    "error": "Invalid API key or site ID. Please make sure you're using a valid "
                    "API key with access to the site you've requested."
                },
            )
            return
        metrics = [m.strip() for m in self.param("metrics", "visitors").split(",") if m.strip()]
        queries = {
            "visitors": "SELECT uniq(user_id) FROM events_v2 WHERE site_id = {id}",
            "pageviews": "SELECT count() FROM events_v2 WHERE site_id = {id} AND name = 'pageview'",
            "events": "SELECT count() FROM events_v2 WHERE site_id = {id}",
            "visits": "SELECT uniq(session_id) FROM events_v2 WHERE site_id = {id}",
        }
        results = {}
        for metric in metrics:
            if metric not in queries:
                self.send_json(400, {"error": f"The metric `{metric}` is not recognized."})
                return
            value = self.ch.query(queries[metric].format(id=int(site_id))).strip()
            results[metric] = {"value": int(value or 0)}
        self.send_json(200, {"results": results})


SCRIPT = """(function(){var e="{base}/api/event";function t(t){var n=new XMLHttpRequest;
n.open("POST",e,!0);n.setRequestHeader("Content-Type","text/plain");
n.send(JSON.stringify({n:t,u:location.href,d:document.currentScript&&
document.currentScript.getAttribute("data-domain")||location.hostname,r:document.referrer||null}))}
t("pageview")})();
"""


def run(config: Config) -> None:
    App.config = config
    App.cache = SitesCache(config)
    App.ch = ClickHouse(config.ch_url)
    threading.Thread(target=App.cache.loop, name="sites-cache", daemon=True).start()
    address = f"{config.listen_ip}:{config.port}"
    log(f"[notice] Running PlausibleWeb.Endpoint with Bandit {VERSION} at {address} (http)")
    log(f"[notice] Access PlausibleWeb.Endpoint at {config.base_url}")
    serve(App, config.listen_ip, config.port)


def main(argv: list[str]) -> None:
    command = argv[0] if argv else "run"
    try:
        config = Config(dict(os.environ))
    except BootError as exc:
        boot_failure(exc)
    if command == "createdb":
        createdb(config)
    elif command == "migrate":
        migrate(config)
    elif command == "run":
        run(config)
    else:
        log(f"unknown command {command!r}: createdb, migrate or run")
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
