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

The mailer, as runtime.exs reads it: MAILER_ADAPTER one of Bamboo's adapters (no
MAILER_ADAPTER: Bamboo.Mua, direct delivery on port 25, logged as a warning), booleans
strict (SMTP_HOST_SSL_ENABLED, SMTP_MX_LOOKUPS_ENABLED, SMTP_MIDDLEBOX_COMP_MODE), Mua's
SMTP_USER_NAME/SMTP_USER_PWD both or neither. Where the real release boots and then fails
every delivery, the stand-in refuses at boot (vpsctl stand-in checks): Bamboo.SMTPAdapter
without SMTP_HOST_ADDR, a non-numeric SMTP_HOST_PORT or SMTP_RETRIES, port 465 without
SSL, one of the SMTP credentials empty or missing, a MAILER_EMAIL that is no address. The
boot log names the mail route (``[notice] mailer: …``), never a credential.

HTTP: ``GET /api/health`` → ``{"postgres","clickhouse","sites_cache"}`` with real checks
(500 if one fails); ``POST /api/event`` → 202, stored in ClickHouse's ``events_v2`` when the
domain is a site (dropped otherwise, with ``x-plausible-dropped: 1``, like the real one);
the Sites API (``/api/v1/sites``) and ``/api/v1/stats/aggregate`` with any Bearer token
(the stand-in has no API keys).

Browser routes (``/``, ``/login``, ``/register``, ``/sites``, ``/sites/new``,
``/settings``, ``/logout``), as v3.2's ``:browser`` pipeline: while the ``users`` table
(in Postgres, so a restored database keeps its owner) is empty, every one but
``/register`` answers 302 → ``/register`` (FirstLaunchPlug), GET and POST alike;
``DISABLE_REGISTRATION=invite_only``/``true`` closes ``/register`` (302 → ``/login``) only
once a user exists. Sessions are the signed ``_plausible_<ENVIRONMENT>`` cookie (HttpOnly,
SameSite=Lax, ``secure`` with an https BASE_URL), CSRF tokens masked as Plug's; a POST
with a bad token answers 403. ``/register`` is the RegisterForm LiveView: its page carries
the csrf-token meta tag and signed ``data-phx-session``/``data-phx-static``; the websocket
``/live/websocket`` (RFC 6455, Phoenix V2 JSON messages, ``vsn=2.0.0`` required — a
stand-in check) refuses an Origin whose host is not BASE_URL's with 403 (check_origin; no
Origin is allowed, as Phoenix does); a join whose connect ``_csrf_token`` does not match
the cookie's session, or whose tokens are not signed by this SECRET_KEY_BASE, is answered
``stale``, a join URL off BASE_URL's host or not ``/register`` ``unauthorized``. The
``register`` form event validates as ``Auth.User.new/1`` (name, email, password required;
password 12..128 characters and not weak — a rough stand-in for zxcvbn; confirmation
required and equal; email taken; and, as the browser's type=email does, an address) and
renders the errors next to the fields as the real form does (the red "Min 12 characters"
hint, "Password is too weak", a red ``<p>`` after an input); on success it inserts the user
and sets ``phx-trigger-action`` on the form, whose action is ``POST /login`` with
``user[register_action]=register_form``: that logs the user in (302 → ``/sites/new``). A
POST alone creates nobody: there is no ``POST /register`` (404), and ``POST /login``
without a user redirects to ``/register``. Not modelled: login rate limits, email
verification codes (``ENABLE_EMAIL_VERIFICATION`` only changes the redirect to
``/activate``), invitations.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import html
import http.client
import http.cookies
import ipaddress
import json
import os
import re
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
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
HOSTNAME = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
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
        self.environment = self.var("ENVIRONMENT", "prod") or ""
        self.mailer_adapter = self.var("MAILER_ADAPTER", "Bamboo.Mua") or ""
        self.mailer_email = self.var("MAILER_EMAIL", f"plausible@{self.host}") or ""
        self.mailer_name = self.var("MAILER_NAME")
        self.ch_url = self.var("CLICKHOUSE_DATABASE_URL", DEFAULT_CH_URL) or ""
        for name, default in CH_INTS:
            value = self.var(name, default) or ""
            if not value.lstrip("-").isdigit():  # {n, ""} = Integer.parse(value)
                raise BootError("MatchError", "no match of right hand side value: :error")
        self._totp_vault_key()
        for name in BOOL_VARS:
            self.bool_var(name)
        self.email_verification = bool(self.bool_var("ENABLE_EMAIL_VERIFICATION"))
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
        self.secret_key_base = secret_key_base

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
        self.secure_cookie = secure_cookie == "true"

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
        self.mail_route = self.mailer_adapter
        if self.mailer_adapter == "Bamboo.SMTPAdapter":
            self._smtp_adapter()
        elif self.mailer_adapter == "Bamboo.Mua":
            self.bool_var("SMTP_MIDDLEBOX_COMP_MODE")
            relay = self.var("SMTP_HOST_ADDR")
            if relay is not None:
                port = self.int_var("SMTP_HOST_PORT") or 587
                self.bool_var("SMTP_HOST_SSL_ENABLED")
                self.mail_route = f"Bamboo.Mua via {relay}:{port}"
            else:
                self.mail_route = "Bamboo.Mua, direct to each recipient's MX on port 25"
            if (self.var("SMTP_USER_NAME") is None) != (self.var("SMTP_USER_PWD") is None):
                raise BootError(
                    "ArgumentError",
                    "Both SMTP_USER_NAME and SMTP_USER_PWD must be set for SMTP authentication.\n"
                    "Please provide values for both environment variables.",
                )
        if self.mailer_adapter in ("Bamboo.SMTPAdapter", "Bamboo.Mua") and not EMAIL.fullmatch(
            self.mailer_email
        ):
            # the real release boots and every delivery fails on the bad sender
            raise BootError(
                "ArgumentError",
                "MAILER_EMAIL must be an email address like noreply@example.com "
                "(vpsctl stand-in check)",
            )

    def _smtp_adapter(self) -> None:
        """runtime.exs's Bamboo.SMTPAdapter block; the real release reads SMTP_HOST_ADDR,
        SMTP_HOST_PORT, SMTP_USER_* and SMTP_RETRIES as plain strings and fails only at the
        first delivery: the stand-in refuses those at boot (vpsctl stand-in checks)."""
        ssl = self.bool_var("SMTP_HOST_SSL_ENABLED")  # get_bool_from_path_or_env: strict
        self.bool_var("SMTP_MX_LOOKUPS_ENABLED")
        relay = self.var("SMTP_HOST_ADDR")
        if not relay or not HOSTNAME.fullmatch(relay):
            raise BootError(
                "ArgumentError",
                "Bamboo.SMTPAdapter needs SMTP_HOST_ADDR, the SMTP relay's host name "
                "(unset, the release sends to a host named `mail`) (vpsctl stand-in check)",
            )
        port_text = self.var("SMTP_HOST_PORT", "25") or ""
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise BootError(
                "ArgumentError",
                "SMTP_HOST_PORT must be a port number, 1 to 65535 (vpsctl stand-in check)",
            )
        port = int(port_text)
        if port == 465 and not ssl:
            raise BootError(
                "ArgumentError",
                "SMTP_HOST_PORT 465 is implicit TLS: set SMTP_HOST_SSL_ENABLED=true, or use 587 "
                "(STARTTLS) (vpsctl stand-in check)",
            )
        retries = self.var("SMTP_RETRIES")
        if retries is not None and not retries.isdigit():
            raise BootError(
                "ArgumentError", "SMTP_RETRIES must be a whole number (vpsctl stand-in check)"
            )
        user, password = self.var("SMTP_USER_NAME"), self.var("SMTP_USER_PWD")
        if (not user or not password) and (user is not None or password is not None):
            raise BootError(
                "ArgumentError",
                "SMTP_USER_NAME and SMTP_USER_PWD must both be set and not empty for SMTP "
                "authentication (vpsctl stand-in check)",
            )
        self.mail_route = (
            f"Bamboo.SMTPAdapter via {relay}:{port}"
            f"{' (ssl)' if ssl else ''}{', authenticated' if user else ''}"
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


# ── sessions, CSRF, LiveView tokens ───────────────────────────────────────────────────────

# PlausibleWeb.Endpoint's @session_options: the cookie store signs with SECRET_KEY_BASE and
# this salt; the cookie is `_plausible_<ENVIRONMENT>`, SameSite=Lax, `secure` as SECURE_COOKIE.
SESSION_SALT = b"I45i0SKHEku2f3tJh6y4v8gztrb/eG5KGCOe/o/AwFb7VHeuvDOn7AAq6KsdmOFM"
LIVE_SALT = b"phoenix live view"
SESSION_MAX_AGE = 60 * 60 * 24 * 365 * 5
LIVE_MAX_AGE = 60 * 60 * 24 * 14  # Phoenix.LiveView's session token lifetime
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Plug.Crypto.MessageVerifier's shape: ``SFMyNTY.<payload>.<HMAC-SHA256>``, the key
    derived from SECRET_KEY_BASE and a salt (KeyGenerator: PBKDF2-SHA256, 1000 rounds)."""

    HEAD = "SFMyNTY"  # base64 of "HS256"

    def __init__(self, secret: str, salt: bytes) -> None:
        self.key = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, 1000, 32)

    def sign(self, value: Any) -> str:
        payload = b64url(json.dumps(value, separators=(",", ":")).encode())
        mac = hmac.new(self.key, f"{self.HEAD}.{payload}".encode(), hashlib.sha256).digest()
        return f"{self.HEAD}.{payload}.{b64url(mac)}"

    def verify(self, token: str) -> Any:
        """The signed value, or None if the token was not signed with this key."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != self.HEAD:
            return None
        mac = hmac.new(self.key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(mac, unb64url(parts[2])):
                return None
            return json.loads(unb64url(parts[1]))
        except (ValueError, binascii.Error):
            return None


def mask_token(token: str) -> str:
    """Plug.CSRFProtection's masked form of the session's token (a new mask each time)."""
    raw = unb64url(token)
    mask = os.urandom(len(raw))
    return b64url(bytes(a ^ b for a, b in zip(raw, mask, strict=True)) + mask)


def csrf_valid(session: dict[str, Any] | None, masked: str | None) -> bool:
    token = (session or {}).get("_csrf_token")
    if not isinstance(token, str) or not masked:
        return False
    try:
        raw, data = unb64url(token), unb64url(masked)
    except (ValueError, binascii.Error):
        return False
    if len(data) != 2 * len(raw):
        return False
    unmasked = bytes(a ^ b for a, b in zip(data[: len(raw)], data[len(raw) :], strict=True))
    return hmac.compare_digest(unmasked, raw)


# ── users (Plausible.Auth.User) ───────────────────────────────────────────────────────────


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 100_000)
    return f"pbkdf2-sha256$100000${b64url(salt)}${b64url(digest)}"


def password_matches(password: str, stored: str | None) -> bool:
    try:
        _, rounds, salt, digest = (stored or "").split("$")
        mine = hashlib.pbkdf2_hmac("sha256", password.encode(), unb64url(salt), int(rounds))
        return hmac.compare_digest(mine, unb64url(digest))
    except ValueError:
        return False


def weak_password(password: str, name: str, email: str) -> bool:
    """A rough stand-in for zxcvbn's score <= 2 (the real check): over 32 bytes is always
    strong; else weak when, once the user's own name and email parts are taken out, fewer
    than 10 characters or fewer than 6 distinct ones remain."""
    if len(password.encode()) > 32:
        return False
    rest = password.lower()
    parts = {p for p in re.split(r"[\s@.+_-]+", f"{name} {email}".lower()) if len(p) >= 3}
    for part in sorted(parts, key=len, reverse=True):
        rest = rest.replace(part, "")
    return len(rest) < 10 or len(set(rest)) < 6


def validate_user(params: dict[str, str]) -> dict[str, list[str]]:
    """Auth.User.new/1: required email/name/password, password 12..128 characters and
    strong, confirmation required and equal; and (vpsctl stand-in check, what the browser's
    type=email enforces before it sends) an email address."""
    errors: dict[str, list[str]] = {}

    def add(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    for field in ("email", "name", "password"):
        if not params.get(field, "").strip():
            add(field, "can't be blank")
    email, password = params.get("email", ""), params.get("password", "")
    if email.strip() and not EMAIL.fullmatch(email):
        add("email", "must be an email address (vpsctl stand-in check)")
    if password:
        if len(password) < 12:
            add("password", "has to be at least 12 characters")
        if len(password) > 128:
            add("password", "cannot be longer than 128 characters")
    confirmation = params.get("password_confirmation")
    if not confirmation:
        add("password_confirmation", "can't be blank")
    elif confirmation != password:
        add("password_confirmation", "does not match confirmation")
    if password and weak_password(password, params.get("name", ""), email):
        add("password", "is too weak")
    return errors


class Users:
    """The `users` table in Plausible's Postgres (so a restored database keeps its owner)."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def any(self) -> bool:
        conn = pg_connect(self.config)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT EXISTS (SELECT 1 FROM users)")
                row = cur.fetchone()
        finally:
            conn.close()
        return bool(row and row[0])

    def insert(self, name: str, email: str, password: str) -> bool:
        """False if the email is taken (unique_constraint(:email))."""
        conn = pg_connect(self.config)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO users (email, name, password_hash) VALUES (%s, %s, %s)",
                    (email, name, hash_password(password)),
                )
        except psycopg2.errors.UniqueViolation:
            return False
        finally:
            conn.close()
        return True

    def get(self, *, email: str | None = None, user_id: int | None = None) -> Any:
        conn = pg_connect(self.config)
        try:
            with conn.cursor() as cur:
                if email is not None:
                    cur.execute("SELECT id, password_hash FROM users WHERE email = %s", (email,))
                else:
                    cur.execute("SELECT id, password_hash FROM users WHERE id = %s", (user_id,))
                return cur.fetchone()
        finally:
            conn.close()


# ── the registration LiveView (PlausibleWeb.Live.RegisterForm) ───────────────────────────

ERROR_P = ('<p class="flex gap-3 text-sm leading-6 text-red-500">', "</p>")
# the form's statics, split around its dynamics 0..8 as HEEx would send them
FORM_STATICS = [
    '<form id="register-form" action="/login" method="post" phx-hook="Metrics" '
    'phx-change="validate" phx-submit="register"',
    '><input type="hidden" name="_csrf_token" value="',
    '"><input name="user[register_action]" type="hidden" value="register_form">'
    '<div class="my-4"><label for="user_name">Full name</label>'
    '<input type="text" name="user[name]" id="user_name" placeholder="Jane Doe" value="',
    '">',
    '</div><div class="my-4"><label for="user_email">Email</label>'
    '<input type="email" name="user[email]" id="user_email" value="',
    '">',
    '</div><div class="my-4"><div class="flex justify-between"><label for="user[password]">'
    'Password</label><p class="',
    '">Min 12 characters</p></div><input type="password" name="user[password]" '
    'id="user_password" autocomplete="new-password">',
    '</div><div class="my-4"><label for="user[password_confirmation]">Confirm password'
    '</label><input type="password" name="user[password_confirmation]" '
    'id="user_password_confirmation" autocomplete="new-password">',
    '</div><button id="register" type="submit" class="mt-4 w-full">Create my account'
    '</button><p>Already have an account? <a href="/login">Log in</a></p></form>',
]


def error_list(messages: list[str]) -> Any:
    if not messages:
        return ""
    return {"s": list(ERROR_P), "d": [[html.escape(m)] for m in messages]}


class RegisterForm:
    """One joined LiveView: its assigns and the dynamics last sent to the client."""

    def __init__(self, csrf: str) -> None:
        self.csrf = csrf
        self.values: dict[str, str] = {}
        self.errors: dict[str, list[str]] = {}
        self.trigger_submit = False
        self.sent: dict[str, Any] = {}

    def dynamics(self) -> dict[str, Any]:
        password_errors = list(self.errors.get("password", []))
        short = "has to be at least 12 characters" in password_errors
        weak = "is too weak" in password_errors
        shown = [
            m
            for m in password_errors
            if m not in ("has to be at least 12 characters", "is too weak", "can't be blank")
        ]
        meter = {"s": ['<p class="text-sm text-red-500">', "</p>"], "d": [["Password is too weak"]]}
        return {
            "0": " phx-trigger-action" if self.trigger_submit else "",
            "1": html.escape(self.csrf),
            "2": html.escape(self.values.get("name", "")),
            "3": error_list(self.errors.get("name", [])),
            "4": html.escape(self.values.get("email", "")),
            "5": error_list(self.errors.get("email", [])),
            "6": "text-red-500 text-xs mt-1" if short else "text-gray-500 text-xs mt-1",
            "7": meter if weak else error_list(shown),
            "8": error_list(self.errors.get("password_confirmation", [])),
        }

    def render(self) -> dict[str, Any]:
        self.sent = self.dynamics()
        return {**self.sent, "s": FORM_STATICS}

    def diff(self) -> dict[str, Any]:
        now = self.dynamics()
        changed = {k: v for k, v in now.items() if self.sent.get(k) != v}
        self.sent = now
        return changed

    def event(self, users: Users, name: str, params: dict[str, str]) -> None:
        self.values = {k: params.get(k, "") for k in ("name", "email")}
        self.errors = validate_user(params)
        if name != "register" or self.errors:
            return
        if users.insert(params["name"], params["email"], params["password"]):
            self.trigger_submit = True
            log("[info] RegisterForm: user created")
        else:
            self.errors = {"email": ["has already been taken"]}


def render_html(rendered: dict[str, Any]) -> str:
    """A rendered tree as HTML (the first, dead render)."""
    statics = rendered["s"]
    out = [statics[0]]
    for i, static in enumerate(statics[1:]):
        value = rendered[str(i)]
        if isinstance(value, dict):
            value = "".join(
                value["s"][0] + "".join(c + s for c, s in zip(row, value["s"][1:], strict=True))
                for row in value["d"]
            )
        out += [value, static]
    return "".join(out)


REGISTER_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="csrf-token" content="{csrf}">
<title>Register · Plausible Analytics</title></head>
<body><main><h1>Register your Plausible Analytics account</h1>
<div id="{id}" data-phx-main data-phx-session="{session}" data-phx-static="{static}">{form}</div>
<p>Plausible Analytics {version} (vpsctl stand-in)</p></main></body></html>
"""

LOGIN_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="csrf-token" content="{csrf}">
<title>Plausible · Login</title></head>
<body><main><h1>Enter your account credentials</h1>{error}
<form method="post" action="/login"><input type="hidden" name="_csrf_token" value="{csrf}">
<input type="hidden" name="user[register_action]" value="login_form">
<label>Email <input type="email" name="user[email]"></label>
<label>Password <input type="password" name="user[password]"></label>
<button type="submit">Log in</button></form>
<p>Plausible Analytics {version} (vpsctl stand-in)</p></main></body></html>
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · Plausible</title></head>
<body><main><h1>{title}</h1><p>Plausible Analytics {version} (vpsctl stand-in)</p></main>
</body></html>
"""


# ── the websocket (RFC 6455, Phoenix V2 JSON serializer) ─────────────────────────────────


class WsClosed(Exception):
    pass


class LiveSocket:
    """``/live/websocket``: Phoenix channels over a websocket, the LiveView topics only."""

    def __init__(self, app: App, session: dict[str, Any] | None) -> None:
        self.app = app
        self.session = session  # None: the cookie or the connect CSRF token was refused
        self.views: dict[str, RegisterForm] = {}

    # frames
    def read_exact(self, n: int) -> bytes:
        data = self.app.rfile.read(n)
        if len(data) != n:
            raise WsClosed
        return data

    def read_message(self) -> tuple[int, bytes]:
        opcode, chunks = 0, []
        while True:
            b0, b1 = self.read_exact(2)
            if not b1 & 0x80:
                self.close(1002)  # client frames must be masked (RFC 6455 5.1)
                raise WsClosed
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self.read_exact(2), "big")
            elif n == 127:
                n = int.from_bytes(self.read_exact(8), "big")
            if n > 1024 * 1024:
                self.close(1009)
                raise WsClosed
            mask = self.read_exact(4)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.read_exact(n)))
            op = b0 & 0x0F
            if op >= 0x8:  # control frames may come between fragments
                if op == 0x9:
                    self.send_frame(0xA, data)
                elif op == 0x8:
                    self.close(1000)
                    raise WsClosed
                continue
            if op:
                opcode = op
            chunks.append(data)
            if b0 & 0x80:
                return opcode, b"".join(chunks)

    def send_frame(self, opcode: int, data: bytes) -> None:
        n = len(data)
        if n < 126:
            head = bytes([0x80 | opcode, n])
        elif n < 65536:
            head = bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
        else:
            head = bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big")
        self.app.wfile.write(head + data)
        self.app.wfile.flush()

    def close(self, code: int) -> None:
        with contextlib.suppress(OSError):
            self.send_frame(0x8, code.to_bytes(2, "big"))

    def push(self, message: list[Any]) -> None:
        self.send_frame(0x1, json.dumps(message, separators=(",", ":")).encode())

    # channels
    def serve(self) -> None:
        try:
            while True:
                opcode, data = self.read_message()
                if opcode != 0x1:
                    continue
                try:
                    message = json.loads(data)
                    join_ref, ref, topic, event, payload = message
                except (ValueError, TypeError):
                    log("[error] Phoenix.Socket: could not decode a V2 message")
                    self.close(1003)
                    return
                self.handle(join_ref, ref, str(topic), str(event), payload)
        except (WsClosed, OSError, TimeoutError):
            return

    def reply(self, join_ref: Any, ref: Any, topic: str, status: str, response: Any) -> None:
        self.push([join_ref, ref, topic, "phx_reply", {"status": status, "response": response}])

    def handle(self, join_ref: Any, ref: Any, topic: str, event: str, payload: Any) -> None:
        if topic == "phoenix" and event == "heartbeat":
            self.reply(None, ref, topic, "ok", {})
        elif event == "phx_join" and topic.startswith("lv:"):
            self.join(join_ref, ref, topic, payload if isinstance(payload, dict) else {})
        elif topic in self.views and event == "event" and isinstance(payload, dict):
            self.event(join_ref, ref, topic, payload)
        elif topic in self.views and event == "phx_leave":
            del self.views[topic]
            self.reply(join_ref, ref, topic, "ok", {})
        else:
            self.reply(join_ref, ref, topic, "error", {"reason": "unmatched topic"})

    def join(self, join_ref: Any, ref: Any, topic: str, payload: dict[str, Any]) -> None:
        config = self.app.config
        signer = Signer(config.secret_key_base, LIVE_SALT)
        if "session" not in payload:
            self.reply(join_ref, ref, topic, "error", {"reason": "nosession"})
            return
        verified = signer.verify(str(payload.get("session")))
        static = signer.verify(str(payload.get("static") or ""))
        if (
            not isinstance(verified, dict)
            or not isinstance(static, dict)
            or verified.get("id") != topic[3:]
            or static.get("id") != topic[3:]
            or int(verified.get("exp", 0)) < time.time()
        ):
            log(f"[error] Mounting {topic} failed while verifying session")
            self.reply(join_ref, ref, topic, "error", {"reason": "stale"})
            return
        if self.session is None:
            log("[debug] LiveView session was misconfigured or the user token is outdated.")
            self.reply(join_ref, ref, topic, "error", {"reason": "stale"})
            return
        url = urlsplit(str(payload.get("url") or ""))
        if url.hostname != config.host or url.path != "/register":
            self.reply(join_ref, ref, topic, "error", {"reason": "unauthorized"})
            return
        view = RegisterForm(mask_token(self.session["_csrf_token"]))
        self.views[topic] = view
        self.reply(join_ref, ref, topic, "ok", {"rendered": view.render()})

    def event(self, join_ref: Any, ref: Any, topic: str, payload: dict[str, Any]) -> None:
        view = self.views[topic]
        name = str(payload.get("event"))
        raw = payload.get("value")
        if payload.get("type") != "form" or name not in ("validate", "register"):
            # no handle_event/3 clause: the LiveView crashes and the channel with it
            log(f"[error] RegisterForm: no handle_event clause for {name!r}")
            del self.views[topic]
            self.push([join_ref, ref, topic, "phx_error", {}])
            return
        fields = parse_qs(str(raw or ""), keep_blank_values=True)
        user = {k[5:-1]: v[0] for k, v in fields.items() if k.startswith("user[") and k[-1] == "]"}
        if not user:
            log(f"[error] RegisterForm: {name!r} without user params (FunctionClauseError)")
            del self.views[topic]
            self.push([join_ref, ref, topic, "phx_error", {}])
            return
        view.event(self.app.users, name, user)
        self.reply(join_ref, ref, topic, "ok", {"diff": view.diff()})


BROWSER_ROUTES = {
    *(("/", m) for m in ("GET", "HEAD")),
    ("/register", "GET"),
    ("/login", "GET"),
    ("/login", "POST"),
    ("/logout", "GET"),
    ("/sites", "GET"),
    ("/sites/new", "GET"),
    ("/settings", "GET"),
}
"""(path, method) of the browser routes the stand-in serves; POST /register is not one of
them (v3.2 has no such route: the register form posts to /login once the LiveView has
created the user)."""


class App(Handler):
    app_name = "plausible"
    config: Config
    cache: SitesCache
    ch: ClickHouse
    users: Users

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
        elif path == "/live/websocket" and method == "GET":
            self.websocket()
        elif (path, method) in BROWSER_ROUTES:
            self.browser(path)
        else:
            raise HttpError(404, "Not found")

    # ── the :browser pipeline ─────────────────────────────────────────────────────────
    def browser(self, path: str) -> None:
        if not self.config.cookie_store_ok:
            log(
                "[error] ** (ArgumentError) cookie store expects conn.secret_key_base "
                "to be at least 64 bytes"
            )
            self.send_html(500, "<html><body>Internal Server Error</body></html>\n")
            return
        self.session_in = self.read_session()
        self.session_out: dict[str, Any] | None = None
        # FirstLaunchPlug: while no user exists, every browser route but /register redirects
        if path != "/register" and not self.users.any():
            self.redirect("/register")
            return
        user_id = self.session_in.get("current_user_id")
        logged_in = isinstance(user_id, int) and self.users.get(user_id=user_id) is not None
        if self.command == "POST" and not csrf_valid(self.session_in, self.posted_csrf()):
            log("[error] ** (Plug.CSRFProtection.InvalidCSRFTokenError) invalid CSRF token")
            self.send_html(403, "<html><body>Forbidden</body></html>\n")
            return
        if path == "/register":
            self.register_page(logged_in)
        elif path == "/login":
            self.login(logged_in)
        elif path == "/logout":
            self.session_out = {}
            self.redirect("/")
        elif path == "/":
            self.redirect("/sites" if logged_in else "/login")
        elif not logged_in:  # RequireAccountPlug
            self.redirect("/login")
        else:
            title = {"/sites": "My sites", "/sites/new": "Add site"}.get(path, "Settings")
            self.send_page(200, PAGE.format(title=title, version=VERSION))

    def register_page(self, logged_in: bool) -> None:
        if logged_in:  # RequireLoggedOutPlug
            self.redirect("/sites")
            return
        # MaybeDisableRegistration: the first registration is always open
        if self.config.registration in ("true", "invite_only") and self.users.any():
            self.redirect("/login")
            return
        signer = Signer(self.config.secret_key_base, LIVE_SALT)
        view_id = "phx-" + b64url(os.urandom(12))
        session = self.csrf_session()
        view = RegisterForm(mask_token(session["_csrf_token"]))
        token = signer.sign(
            {
                "id": view_id,
                "view": "PlausibleWeb.Live.RegisterForm",
                "live_action": "register_form",
                "exp": int(time.time()) + LIVE_MAX_AGE,
            }
        )
        static = signer.sign({"id": view_id, "assign_new": [], "flash": {}})
        page = REGISTER_PAGE.format(
            csrf=mask_token(session["_csrf_token"]),
            id=view_id,
            session=token,
            static=static,
            form=render_html(view.render()),
            version=VERSION,
        )
        self.send_page(200, page)

    def login(self, logged_in: bool) -> None:
        if logged_in:  # RequireLoggedOutPlug
            self.redirect("/sites")
            return
        if self.command == "GET":
            self.login_page(200, "")
            return
        params = self.form()
        user = {k[5:-1]: v for k, v in params.items() if k.startswith("user[") and k[-1] == "]"}
        fields = user or params
        email, password = fields.get("email", ""), fields.get("password", "")
        row = self.users.get(email=email) if email else None
        if row is None or not password_matches(password, row[1]):
            self.login_page(
                200, '<p class="text-red-500">Wrong email or password. Please try again.</p>'
            )
            return
        action = fields.get("register_action")
        if action and self.config.email_verification:
            target = "/activate?flow=" + ("register" if action == "register_form" else "invitation")
        elif action == "register_form":
            target = "/sites/new"
        else:
            target = fields.get("return_to") or "/sites"
        # UserAuth.log_in_user renews the session
        self.session_out = {"current_user_id": int(row[0]), "_csrf_token": b64url(os.urandom(18))}
        self.redirect(target)

    def login_page(self, status: int, error: str) -> None:
        session = self.csrf_session()
        page = LOGIN_PAGE.format(
            csrf=mask_token(session["_csrf_token"]), error=error, version=VERSION
        )
        self.send_page(status, page)

    # session plumbing
    @property
    def cookie_name(self) -> str:
        return f"_plausible_{self.config.environment}"

    def read_session(self) -> dict[str, Any]:
        jar = http.cookies.SimpleCookie()
        try:
            jar.load(self.headers.get("Cookie", ""))
        except http.cookies.CookieError:
            return {}
        morsel = jar.get(self.cookie_name)
        value = (
            Signer(self.config.secret_key_base, SESSION_SALT).verify(morsel.value)
            if morsel
            else None
        )
        return value if isinstance(value, dict) else {}

    def csrf_session(self) -> dict[str, Any]:
        """The session with a CSRF token (get_csrf_token/0 puts one in when missing)."""
        session = self.session_out if self.session_out is not None else dict(self.session_in)
        if not isinstance(session.get("_csrf_token"), str):
            session["_csrf_token"] = b64url(os.urandom(18))
            self.session_out = session
        return session

    def posted_csrf(self) -> str | None:
        return self.form().get("_csrf_token") or self.headers.get("X-CSRF-Token")

    def form(self) -> dict[str, str]:
        if "urlencoded" not in self.headers.get("Content-Type", ""):
            return {}
        return {
            k: v[0]
            for k, v in parse_qs(
                self.body().decode(errors="replace"), keep_blank_values=True
            ).items()
        }

    def cookie_header(self) -> dict[str, str]:
        if self.session_out is None:
            return {}
        token = Signer(self.config.secret_key_base, SESSION_SALT).sign(self.session_out)
        flags = "; secure" if self.config.secure_cookie else ""
        return {
            "Set-Cookie": f"{self.cookie_name}={token}; path=/; max-age={SESSION_MAX_AGE}; "
            f"HttpOnly; SameSite=Lax{flags}"
        }

    def redirect(self, location: str) -> None:
        self.send(
            302, "", "text/html; charset=utf-8", {"Location": location, **self.cookie_header()}
        )

    def send_page(self, status: int, page: str) -> None:
        self.send_html(status, page, self.cookie_header())

    # ── /live/websocket: PlausibleWeb.Endpoint's `socket "/live", Phoenix.LiveView.Socket`
    def websocket(self) -> None:
        headers = self.headers
        key = headers.get("Sec-WebSocket-Key", "")
        if (
            headers.get("Upgrade", "").lower() != "websocket"
            or "upgrade" not in headers.get("Connection", "").lower()
            or headers.get("Sec-WebSocket-Version") != "13"
            or not key
        ):
            self.send(400, "", "text/plain")
            return
        origin = headers.get("Origin")
        # check_origin: true — the Origin's host must be BASE_URL's (no Origin: allowed)
        if origin is not None and urlsplit(origin).hostname != self.config.host:
            log(
                "[error] Could not check origin for Phoenix.Socket transport.\n\n"
                f"Origin of the request: {origin}\n\n"
                "This happens when you are attempting a socket connection to\n"
                "a different host than the one configured in your config/\n"
                "files (BASE_URL)."
            )
            self.send(403, "", "text/plain")
            return
        if self.param("vsn") != "2.0.0":
            # Phoenix would fall back to its V1 serializer; the stand-in speaks V2 only
            log("[error] websocket without vsn=2.0.0 (vpsctl stand-in check)")
            self.send(400, "vsn=2.0.0 required (vpsctl stand-in check)", "text/plain")
            return
        if not self.config.cookie_store_ok:
            self.send(500, "", "text/plain")
            return
        session = self.read_session()
        # connect_info session: nil unless the connect params' _csrf_token matches the session
        connected = session if csrf_valid(session, self.param("_csrf_token")) else None
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()  # noqa: S324
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        self.connection.settimeout(90)  # Phoenix drops a socket without heartbeats
        LiveSocket(self, connected).serve()

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
    App.users = Users(config)
    threading.Thread(target=App.cache.loop, name="sites-cache", daemon=True).start()
    address = f"{config.listen_ip}:{config.port}"
    log(f"[notice] Running PlausibleWeb.Endpoint with Bandit {VERSION} at {address} (http)")
    log(f"[notice] Access PlausibleWeb.Endpoint at {config.base_url}")
    log(f"[notice] mailer: {config.mail_route}")
    if config.mail_route.startswith("Bamboo.Mua, direct"):
        log(
            "[warning] no SMTP relay: Bamboo.Mua delivers straight to each recipient's MX on "
            "port 25, which most VPS providers block; invitations and password resets will "
            "not arrive (vpsctl stand-in note)"
        )
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
