"""Stand-in for listmonk/listmonk:v6.2.0: ``./listmonk`` with the real binary's flags.

``--install [--idempotent] [--yes]`` creates the schema, the default lists, the settings
(``app.root_url`` = ``http://localhost:9000``) and the admin from LISTMONK_ADMIN_USER and
LISTMONK_ADMIN_PASSWORD — refusing when either is missing or empty (the real listmonk
would leave the admin to whoever reaches /admin first); ``--upgrade [--yes]`` records the
schema version; no command serves HTTP on ``app.address``. Configuration: the TOML files
of ``--config`` (default ``config.toml``; ``--config ''`` reads none) overridden by
``LISTMONK_<section>__<key>`` variables, as the real one does.

HTTP: ``GET /health`` → ``{"data": true}``; ``GET /subscription/form`` (an HTML form whose
links start with ``app.root_url``, as the real templates' ``{{ .RootURL }}``) and ``POST`` to
it; ``POST /admin/login`` (form ``username``, ``password``) → 302 and a ``session`` cookie
(sessions in Postgres); the API under ``/api``: subscribers (list with ``total``, create,
get, delete), lists, settings, config.

As strict as listmonk v6.2 where vpsctl touches it (``internal/auth/auth.go``,
``cmd/settings.go``):

- an ``Authorization`` header (``Basic`` or ``token user:token``) is checked against API
  users only (their token's sha256); the admin's password there is refused with 403
  ``invalid API credentials``: the admin signs in at /admin/login. A ``session`` cookie wins
  over the header. No credentials → 403 ``invalid session``.
- ``GET /api/settings`` answers the whole object, every password replaced by one ``•`` per
  character; ``PUT /api/settings`` takes the whole object: without an enabled SMTP block
  400 ``At least one SMTP block should be enabled`` (``settings.errorNoSMTP``), a password
  ``""`` keeps the stored one (SMTP blocks matched by ``uuid``), bullets are stored as
  bullets. Stricter than the real one: a body missing any key is refused with 400 (the
  real one resets the missing settings to zero values: vpsctl must never send one).
- ``app.root_url`` is read at start; after a settings change the process re-executes
  itself 500 ms later (as listmonk's SIGHUP reload does), so links carry a new root URL
  only once it has restarted.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import html
import json
import os
import re
import secrets
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qs
from uuid import uuid4

import psycopg2
import psycopg2.errors
import psycopg2.extras
from httpbase import Handler, HttpError, log, serve

VERSION = "v6.2.0"
UPLOADS = Path("/listmonk/uploads")
EMAIL = re.compile(r"[^\s@<>]+@[^\s@<>]+\.[^\s@<>]+")

SCHEMA = """
DROP TABLE IF EXISTS subscriber_lists, subscribers, lists, users, settings, sessions CASCADE;
CREATE TABLE sessions (
    id TEXT NOT NULL PRIMARY KEY, data JSONB DEFAULT '{}'::jsonb NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW() NOT NULL);
CREATE TABLE settings (
    key TEXT PRIMARY KEY, value JSONB NOT NULL DEFAULT '{}',
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW());
CREATE TABLE users (
    id SERIAL PRIMARY KEY, username TEXT NOT NULL UNIQUE, password TEXT, name TEXT NOT NULL,
    email TEXT NOT NULL, type TEXT NOT NULL DEFAULT 'user', status TEXT NOT NULL DEFAULT 'enabled',
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW());
CREATE TABLE lists (
    id SERIAL PRIMARY KEY, uuid UUID NOT NULL UNIQUE DEFAULT gen_random_uuid(), name TEXT NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('public', 'private', 'temporary')),
    optin TEXT NOT NULL DEFAULT 'single' CHECK (optin IN ('single', 'double')),
    tags TEXT[], description TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW());
CREATE TABLE subscribers (
    id SERIAL PRIMARY KEY, uuid UUID NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    email TEXT NOT NULL, name TEXT NOT NULL, attribs JSONB NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'enabled'
        CHECK (status IN ('enabled', 'disabled', 'blocklisted')),
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW());
CREATE UNIQUE INDEX idx_subs_email ON subscribers (LOWER(email));
CREATE TABLE subscriber_lists (
    subscriber_id INTEGER NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    list_id INTEGER NOT NULL REFERENCES lists (id) ON DELETE CASCADE,
    status TEXT NOT NULL DEFAULT 'unconfirmed'
        CHECK (status IN ('unconfirmed', 'confirmed', 'unsubscribed')),
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    PRIMARY KEY (subscriber_id, list_id));
INSERT INTO lists (name, type, optin, tags) VALUES
    ('Default list', 'private', 'single', '{test}'),
    ('Opt-in list', 'public', 'double', '{test}');
"""
_SMTP_DEFAULTS = {
    "name": "", "hello_hostname": "", "max_conns": 10, "idle_timeout": "15s",
    "wait_timeout": "5s", "max_msg_retries": 2, "msg_retry_delay": "10ms",
    "tls_skip_verify": False, "email_headers": [], "from_addresses": [],
}  # fmt: skip
# schema.sql of listmonk v6.2: every setting, as a fresh install stores it
DEFAULT_SETTINGS: dict[str, Any] = {
    "app.site_name": "Mailing list",
    "app.root_url": "http://localhost:9000",
    "app.favicon_url": "",
    "app.from_email": "listmonk <noreply@listmonk.yoursite.com>",
    "app.logo_url": "",
    "app.concurrency": 10,
    "app.message_rate": 10,
    "app.batch_size": 1000,
    "app.max_send_errors": 1000,
    "app.message_sliding_window": False,
    "app.message_sliding_window_duration": "1h",
    "app.message_sliding_window_rate": 10000,
    "app.cache_slow_queries": False,
    "app.cache_slow_queries_interval": "0 3 * * *",
    "app.enable_public_archive": True,
    "app.enable_public_subscription_page": True,
    "app.show_optin_page": True,
    "app.enable_public_archive_rss_content": True,
    "app.send_optin_confirmation": True,
    "app.check_updates": True,
    "app.notify_emails": [],
    "app.lang": "en",
    "privacy.individual_tracking": False,
    "privacy.disable_tracking": False,
    "privacy.unsubscribe_header": True,
    "privacy.allow_blocklist": True,
    "privacy.allow_export": True,
    "privacy.allow_wipe": True,
    "privacy.allow_preferences": True,
    "privacy.exportable": ["profile", "subscriptions", "campaign_views", "link_clicks"],
    "privacy.domain_blocklist": [],
    "privacy.domain_allowlist": [],
    "privacy.record_optin_ip": False,
    "security.captcha": {
        "altcha": {"enabled": False, "complexity": 300000},
        "hcaptcha": {"enabled": False, "key": "", "secret": ""},
    },
    "security.oidc": {
        "enabled": False, "provider_url": "", "provider_name": "", "client_id": "",
        "client_secret": "", "auto_create_users": False, "default_user_role_id": None,
        "default_list_role_id": None,
    },
    "security.trusted_urls": [],
    "upload.provider": "filesystem",
    "upload.max_file_size": 5000,
    "upload.extensions": ["jpg", "jpeg", "png", "gif", "svg", "*"],
    "upload.filesystem.upload_path": "uploads",
    "upload.filesystem.upload_uri": "/uploads",
    "upload.s3.url": "https://ap-south-1.s3.amazonaws.com",
    "upload.s3.public_url": "",
    "upload.s3.aws_access_key_id": "",
    "upload.s3.aws_secret_access_key": "",
    "upload.s3.aws_default_region": "ap-south-1",
    "upload.s3.bucket": "",
    "upload.s3.bucket_domain": "",
    "upload.s3.bucket_path": "/",
    "upload.s3.bucket_type": "public",
    "upload.s3.expiry": "167h",
    "smtp": [
        {**_SMTP_DEFAULTS, "enabled": True, "host": "smtp.yoursite.com", "port": 25,
         "auth_protocol": "cram", "username": "username", "password": "password",
         "tls_type": "STARTTLS"},
        {**_SMTP_DEFAULTS, "enabled": False, "host": "smtp.gmail.com", "port": 465,
         "auth_protocol": "login", "username": "username@gmail.com", "password": "password",
         "tls_type": "TLS"},
    ],
    "messengers": [],
    "bounce.enabled": False,
    "bounce.webhooks_enabled": False,
    "bounce.actions": {
        "soft": {"count": 2, "action": "none"},
        "hard": {"count": 1, "action": "blocklist"},
        "complaint": {"count": 1, "action": "blocklist"},
    },
    "bounce.ses_enabled": False,
    "bounce.azure": {"enabled": False, "shared_secret": "", "shared_secret_header": ""},
    "bounce.sendgrid_enabled": False,
    "bounce.sendgrid_key": "",
    "bounce.postmark": {"enabled": False, "username": "", "password": ""},
    "bounce.forwardemail": {"enabled": False, "key": ""},
    "bounce.lettermint": {"enabled": False, "key": ""},
    "bounce.mailboxes": [
        {"enabled": False, "type": "pop", "host": "pop.yoursite.com", "port": 995,
         "auth_protocol": "userpass", "username": "username", "password": "password",
         "return_path": "bounce@listmonk.yoursite.com", "scan_interval": "15m",
         "tls_enabled": True, "tls_skip_verify": False},
    ],
    "appearance.admin.custom_css": "",
    "appearance.admin.custom_js": "",
    "appearance.public.custom_css": "",
    "appearance.public.custom_js": "",
    "maintenance.db": {"vacuum": False, "vacuum_cron_interval": "0 2 * * *"},
}  # fmt: skip
# the settings GET masks (cmd/settings.go GetSettings): (key, list-of-blocks?, field)
MASKED = (
    ("smtp", True, "password"),
    ("bounce.mailboxes", True, "password"),
    ("messengers", True, "password"),
    ("upload.s3.aws_secret_access_key", False, ""),
    ("bounce.sendgrid_key", False, ""),
    ("bounce.azure", False, "shared_secret"),
    ("bounce.postmark", False, "password"),
    ("bounce.forwardemail", False, "key"),
    ("bounce.lettermint", False, "key"),
    ("security.captcha", False, "hcaptcha.secret"),
    ("security.oidc", False, "client_secret"),
)
PASSWORD_MASK = "•"  # noqa: S105 - what a password is shown as, not one
NO_SMTP = "At least one SMTP block should be enabled"  # i18n settings.errorNoSMTP
RELOAD_AFTER = 0.5  # seconds: listmonk sends itself SIGHUP this long after a change


def die(message: str) -> NoReturn:
    log(message)
    sys.exit(1)


# ── configuration ─────────────────────────────────────────────────────────────────────────


def parse_flags(argv: list[str]) -> tuple[set[str], list[str]]:
    """pflag-style flags: ``--install``, ``--config FILE``/``--config=FILE`` (repeatable)."""
    flags: set[str] = set()
    configs: list[str] = []
    known = {"install", "idempotent", "yes", "upgrade", "version", "new-config", "help"}
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.lstrip("-").partition("=")
        if not arg.startswith("-"):
            die(f"unknown argument {arg!r}")
        if name == "config":
            if not eq:
                i += 1
                if i >= len(argv):
                    die("flag needs an argument: --config")
                value = argv[i]
            configs.append(value)
        elif name in known:
            flags.add(name)
        else:
            die(f"unknown flag: --{name}")
        i += 1
    return flags, configs or ["config.toml"]


def load_config(paths: list[str], env: dict[str, str]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for path in paths:
        if not path:
            continue
        try:
            with Path(path).open("rb") as file:
                data = tomllib.load(file)
        except OSError as exc:
            die(f"error loading config from file: {path}: {exc.strerror}.")
        except tomllib.TOMLDecodeError as exc:
            die(f"error loading config from file: {path}: {exc}.")
        log(f"reading config: {path}")
        for section, values in data.items():
            if isinstance(values, dict):
                for key, value in values.items():
                    config[f"{section}.{key}"] = value
    for name, value in env.items():
        if name.startswith("LISTMONK_") and "__" in name:
            config[name.removeprefix("LISTMONK_").lower().replace("__", ".")] = value
    return config


def connect(config: dict[str, Any]) -> Any:
    params = {
        "host": config.get("db.host", "localhost"),
        "port": int(config.get("db.port", 5432)),
        "user": config.get("db.user", "listmonk"),
        "password": config.get("db.password", ""),
        "dbname": config.get("db.database", "listmonk"),
        "sslmode": config.get("db.ssl_mode", "disable"),
        "connect_timeout": 5,
    }
    log(f"connecting to db: {params['host']}:{params['port']}/{params['dbname']}")
    try:
        conn = psycopg2.connect(**params)
    except psycopg2.Error as exc:
        die(f"error connecting to DB: {str(exc).strip()}")
    conn.autocommit = True
    return conn


def installed(conn: Any) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('public.settings') IS NOT NULL")
        return bool(cur.fetchone()[0])


def hash_password(password: str) -> str:
    salt = secrets.token_hex(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 200_000).hex()
    return f"pbkdf2_sha256$200000${salt}${digest}"


def check_password(password: str, stored: str | None) -> bool:
    try:
        _, rounds, salt, digest = (stored or "").split("$")
    except ValueError:
        return False
    computed = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), int(rounds)).hex()
    return hmac.compare_digest(computed, digest)


def install(conn: Any, flags: set[str], env: dict[str, str]) -> None:
    if installed(conn):
        if "idempotent" in flags:
            log("skipping install as database appears to be already setup")
            return
        log("** IMPORTANT: This will wipe existing listmonk tables and types in the DB **")
        if "yes" not in flags:
            die("install cancelled: pass --yes to continue")
    log("** first time installation **")
    user = env.get("LISTMONK_ADMIN_USER", "")
    password = env.get("LISTMONK_ADMIN_PASSWORD", "")
    if not user or not password:
        missing = [
            name
            for name, value in (
                ("LISTMONK_ADMIN_USER", user),
                ("LISTMONK_ADMIN_PASSWORD", password),
            )
            if not value
        ]
        die(
            f"refusing to install: {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
            "not set or empty; without them no admin is created and whoever reaches /admin "
            "first claims it (vpsctl stand-in check)"
        )
    if len(user) < 3:
        die("LISTMONK_ADMIN_USER: the username should be at least 3 characters")
    if len(password) < 8:
        die("LISTMONK_ADMIN_PASSWORD: the password should be at least 8 characters")
    with conn.cursor() as cur:
        cur.execute(SCHEMA)
        for key, value in {**DEFAULT_SETTINGS, "migrations": [VERSION]}.items():
            cur.execute(
                "INSERT INTO settings (key, value) VALUES (%s, %s)", (key, json.dumps(value))
            )
        cur.execute(
            "INSERT INTO users (username, password, name, email, type) "
            "VALUES (%s, %s, %s, %s, 'user')",
            (user, hash_password(password), user, f"{user}@listmonk"),
        )
    log(f"created admin user {user!r}")
    log("setup complete")
    log(f"run the program and access the dashboard at {DEFAULT_SETTINGS['app.root_url']}")


def upgrade(conn: Any) -> None:
    if not installed(conn):
        die("the database does not appear to be setup. Run --install.")
    with conn.cursor() as cur:
        cur.execute("SELECT value FROM settings WHERE key = 'migrations'")
        row = cur.fetchone()
        done = row[0] if row else []
        if VERSION in done:
            log(f"no upgrades to run. Database is up-to-date: {VERSION}")
            return
        cur.execute(
            "INSERT INTO settings (key, value) VALUES ('migrations', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = NOW()",
            (json.dumps([*done, VERSION]),),
        )
    log(f"upgrade complete: {VERSION}")


# ── HTTP ──────────────────────────────────────────────────────────────────────────────────


class App(Handler):
    app_name = "listmonk"
    config: dict[str, Any]
    root_url: str = DEFAULT_SETTINGS["app.root_url"]  # read at start, like urlCfg

    def db(self) -> Any:
        conn = getattr(self, "_conn", None)
        if conn is None or conn.closed:
            conn = psycopg2.connect(
                host=self.config.get("db.host", "localhost"),
                port=int(self.config.get("db.port", 5432)),
                user=self.config.get("db.user", "listmonk"),
                password=self.config.get("db.password", ""),
                dbname=self.config.get("db.database", "listmonk"),
                sslmode=self.config.get("db.ssl_mode", "disable"),
                connect_timeout=5,
            )
            conn.autocommit = True
            self._conn = conn
        return conn

    def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self.db().cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(sql, args)
            return [dict(r) for r in cur.fetchall()] if cur.description else []

    def finish(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()
        super().finish()

    def error_body(self, error: HttpError) -> Any:
        return {"message": error.message}

    def route(self) -> None:
        path, method = self.route_path, self.command
        if path == "/health":
            self.send_json(200, {"data": True})
        elif path == "/subscription/form":
            self.subscription_form()
        elif path in ("/", ""):
            root = html.escape(self.root_url)
            self.send_html(
                200,
                page("listmonk", f'<a href="{root}/subscription/form">Subscribe</a>'),
            )
        elif path in ("/admin", "/admin/"):
            self.send(302, "", headers={"Location": "/admin/login"})
        elif path == "/admin/login" and method == "POST":
            self.login()
        elif path == "/admin/login":
            self.send_html(200, login_page(""))
        elif path.startswith("/uploads/") and method in ("GET", "HEAD"):
            self.upload(path.removeprefix("/uploads/"))
        elif path.startswith("/api/"):
            self.authenticate()
            self.api(path.removeprefix("/api/").strip("/"), method)
        else:
            raise HttpError(404, "Not found")

    def authenticate(self) -> None:
        """listmonk v6's auth middleware: a ``session`` cookie (a signed-in user) wins over
        an ``Authorization`` header, which is checked against API users only."""
        session = self.session_id()
        if session:
            rows = self.rows(
                "SELECT u.id FROM sessions s JOIN users u ON u.id = (s.data->>'user_id')::int "
                "WHERE s.id = %s AND u.status = 'enabled'",
                (session,),
            )
            if not rows:
                raise HttpError(403, "invalid session")
            return
        auth = self.headers.get("Authorization", "").strip()
        if not auth:
            raise HttpError(403, "invalid session")
        if auth.startswith("token"):
            pair = auth[len("token") :].strip()
        elif auth.startswith("Basic"):
            try:
                pair = base64.b64decode(auth[len("Basic") :].strip()).decode()
            except ValueError:
                raise HttpError(400, "invalid Base64 value in Basic Authorization header") from None
        else:
            raise HttpError(400, "unknown Authorization scheme")
        user, _, token = pair.partition(":")
        if not user or not token:
            raise HttpError(400, "empty `api_key` or `token`")
        digest = hashlib.sha256(token.encode()).hexdigest()
        rows = self.rows(
            "SELECT password FROM users WHERE username = %s AND type = 'api' "
            "AND status = 'enabled'",
            (user,),
        )
        if not rows or not hmac.compare_digest(str(rows[0]["password"] or ""), digest):
            raise HttpError(403, "invalid API credentials")

    def session_id(self) -> str:
        for part in self.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == "session" and value:
                return value
        return ""

    def login(self) -> None:
        """``POST /admin/login``: the form's username and password → a session and a 302
        to ``next``; a failure renders the login page with the error (as listmonk does)."""
        form = parse_qs(self.body().decode(errors="replace"))
        username = (form.get("username") or [""])[0].strip()
        password = (form.get("password") or [""])[0].strip()
        target = (form.get("next") or ["/admin"])[0]
        target = target if target.startswith("/") and not target.startswith("//") else "/admin"
        time.sleep(0.1)  # listmonk's timing mitigation
        if not 3 <= len(username) <= 200:
            self.send_html(200, login_page("Invalid fields: username"))
            return
        if not 8 <= len(password) <= 200:
            self.send_html(200, login_page("Invalid fields: password"))
            return
        rows = self.rows(
            "SELECT id, password FROM users WHERE username = %s AND type = 'user' "
            "AND status = 'enabled'",
            (username,),
        )
        if not rows or not check_password(password, rows[0]["password"]):
            self.send_html(200, login_page("Invalid login or password"))
            return
        session = secrets.token_urlsafe(48)[:64]
        self.rows(
            "INSERT INTO sessions (id, data) VALUES (%s, %s)",
            (session, json.dumps({"user_id": rows[0]["id"]})),
        )
        cookie = f"session={session}; Path=/; Max-Age=604800; HttpOnly"
        self.send(302, "", headers={"Location": target, "Set-Cookie": cookie})

    def api(self, path: str, method: str) -> None:
        parts = path.split("/")
        if parts[0] == "subscribers":
            self.subscribers(parts[1] if len(parts) > 1 else "", method)
        elif parts[0] == "lists" and method == "GET":
            lists = self.rows(
                "SELECT id, uuid::text, name, type, optin, tags, description FROM lists ORDER BY id"
            )
            self.send_json(
                200,
                {
                    "data": {
                        "results": lists,
                        "total": len(lists),
                        "per_page": len(lists),
                        "page": 1,
                    }
                },
            )
        elif parts[0] == "lists" and method == "POST":
            self.create_list()
        elif parts[0] == "settings":
            self.settings(method)
        elif parts[0] == "logout" and method == "POST":
            # listmonk v6 handleLogout: the session is destroyed in the store (its row gone)
            self.rows("DELETE FROM sessions WHERE id = %s", (self.session_id(),))
            self.send_json(200, {"data": True}, headers={"Set-Cookie": "session=; Max-Age=0"})
        elif parts[0] == "config" and method == "GET":
            self.send_json(
                200,
                {
                    "data": {
                        "root_url": self.root_url,
                        "version": VERSION,
                        "lang": "en",
                        "needs_restart": False,
                    }
                },
            )
        else:
            raise HttpError(404, "Not found")

    def current_settings(self) -> dict[str, Any]:
        return {r["key"]: r["value"] for r in self.rows("SELECT key, value FROM settings")}

    def settings(self, method: str) -> None:
        if method == "GET":
            settings = self.current_settings()
            settings.pop("migrations", None)
            self.send_json(200, {"data": masked_settings(settings)})
            return
        if method != "PUT":
            raise HttpError(405, "Method not allowed")
        data = self.json_body()
        if not isinstance(data, dict):
            raise HttpError(400, "Invalid settings")
        current = self.current_settings()
        smtp = data.get("smtp")
        blocks = [b for b in smtp if isinstance(b, dict)] if isinstance(smtp, list) else []
        if not any(b.get("enabled") is True for b in blocks):
            raise HttpError(400, NO_SMTP)
        missing = sorted(set(DEFAULT_SETTINGS) - set(data))
        if missing:
            shown = ", ".join(missing[:5]) + (
                f" … ({len(missing)} keys)" if len(missing) > 5 else ""
            )
            raise HttpError(
                400,
                f"partial settings: missing {shown} (vpsctl stand-in: the real listmonk binds "
                "the whole object and resets every missing setting to its zero value)",
            )
        for block in blocks:
            block["host"] = str(block.get("host", "")).strip()
        data["smtp"] = blocks
        keep_secrets(data, current)
        data["app.root_url"] = str(data.get("app.root_url", "")).rstrip("/")
        for key, value in data.items():
            if key not in DEFAULT_SETTINGS:
                continue  # the real one binds a struct: unknown keys are dropped
            self.rows(
                "INSERT INTO settings (key, value) VALUES (%s, %s) ON CONFLICT (key) "
                "DO UPDATE SET value = EXCLUDED.value, updated_at = NOW()",
                (key, json.dumps(value)),
            )
        log("listmonk: settings updated; reloading app")
        self.send_json(200, {"data": True})
        threading.Timer(RELOAD_AFTER, reexec).start()

    def subscribers(self, sub_id: str, method: str) -> None:
        if method == "GET" and not sub_id:
            per_page_text = self.param("per_page", "20")
            per_page = (
                0
                if per_page_text == "all"
                else int(per_page_text)
                if per_page_text.isdigit()
                else 20
            )
            page = int(self.param("page", "1")) if self.param("page", "1").isdigit() else 1
            total = self.rows("SELECT count(*) AS n FROM subscribers")[0]["n"]
            limit = per_page or max(total, 1)
            results = self.rows(
                "SELECT id, uuid::text, email, name, attribs, status, created_at::text, "
                "updated_at::text FROM subscribers ORDER BY id LIMIT %s OFFSET %s",
                (limit, (page - 1) * limit),
            )
            for sub in results:
                sub["lists"] = self.subscriber_lists(sub["id"])
            self.send_json(
                200,
                {
                    "data": {
                        "results": results,
                        "query": "",
                        "total": total,
                        "per_page": per_page or "all",
                        "page": page,
                    }
                },
            )
        elif method == "POST" and not sub_id:
            self.create_subscriber()
        elif method == "GET" and sub_id.isdigit():
            rows = self.rows(
                "SELECT id, uuid::text, email, name, attribs, status, created_at::text, "
                "updated_at::text FROM subscribers WHERE id = %s",
                (int(sub_id),),
            )
            if not rows:
                raise HttpError(404, "Subscriber not found.")
            rows[0]["lists"] = self.subscriber_lists(rows[0]["id"])
            self.send_json(200, {"data": rows[0]})
        elif method == "DELETE" and sub_id.isdigit():
            self.rows("DELETE FROM subscribers WHERE id = %s", (int(sub_id),))
            self.send_json(200, {"data": True})
        else:
            raise HttpError(405, "Method not allowed")

    def subscriber_lists(self, sub_id: int) -> list[dict[str, Any]]:
        return self.rows(
            "SELECT l.id, l.uuid::text, l.name, l.type, sl.status AS subscription_status "
            "FROM subscriber_lists sl JOIN lists l ON l.id = sl.list_id "
            "WHERE sl.subscriber_id = %s ORDER BY l.id",
            (sub_id,),
        )

    def create_subscriber(self) -> None:
        data = self.json_body()
        if not isinstance(data, dict):
            raise HttpError(400, "Invalid JSON")
        email = str(data.get("email") or "").strip()
        if not EMAIL.fullmatch(email):
            raise HttpError(400, "Invalid email.")
        name = str(data.get("name") or email.split("@")[0]).strip()
        status = str(data.get("status") or "enabled")
        if status not in ("enabled", "disabled", "blocklisted"):
            raise HttpError(400, "Invalid status.")
        attribs = data.get("attribs") or {}
        if not isinstance(attribs, dict):
            raise HttpError(400, "Invalid attributes.")
        lists = [int(x) for x in data.get("lists") or [] if str(x).isdigit()]
        sub_status = "confirmed" if data.get("preconfirm_subscriptions") else "unconfirmed"
        sub_id = self.insert_subscriber(
            email=email,
            name=name,
            status=status,
            attribs=attribs,
            lists=lists,
            sub_status=sub_status,
        )
        if sub_id is None:
            raise HttpError(409, "E-mail already exists.")
        self.subscribers(str(sub_id), "GET")

    def insert_subscriber(
        self,
        *,
        email: str,
        name: str,
        status: str,
        attribs: dict[str, Any],
        lists: list[int],
        sub_status: str,
    ) -> int | None:
        try:
            rows = self.rows(
                "INSERT INTO subscribers (email, name, status, attribs) "
                "VALUES (%s, %s, %s, %s) RETURNING id",
                (email, name, status, json.dumps(attribs)),
            )
        except psycopg2.errors.UniqueViolation:
            return None
        sub_id = int(rows[0]["id"])
        for list_id in lists:
            self.rows(
                "INSERT INTO subscriber_lists (subscriber_id, list_id, status) "
                "SELECT %s, id, %s FROM lists WHERE id = %s ON CONFLICT DO NOTHING",
                (sub_id, sub_status, list_id),
            )
        return sub_id

    def create_list(self) -> None:
        data = self.json_body()
        if not isinstance(data, dict) or not str(data.get("name") or "").strip():
            raise HttpError(400, "Invalid name.")
        kind = str(data.get("type") or "private")
        optin = str(data.get("optin") or "single")
        if kind not in ("public", "private", "temporary") or optin not in ("single", "double"):
            raise HttpError(400, "Invalid list type or optin.")
        rows = self.rows(
            "INSERT INTO lists (name, type, optin, tags, description) VALUES (%s, %s, %s, %s, %s) "
            "RETURNING id, uuid::text, name, type, optin, tags, description",
            (
                str(data["name"]).strip(),
                kind,
                optin,
                list(data.get("tags") or []),
                str(data.get("description") or ""),
            ),
        )
        self.send_json(200, {"data": rows[0]})

    def subscription_form(self) -> None:
        lists = self.rows(
            "SELECT uuid::text AS uuid, name FROM lists WHERE type = 'public' ORDER BY id"
        )
        if self.command == "POST":
            form = {k: v for k, v in parse_qs(self.body().decode(errors="replace")).items()}
            email = (form.get("email") or [""])[0].strip()
            name = (form.get("name") or [""])[0].strip() or email.split("@")[0]
            wanted = set(form.get("l") or [])
            if not EMAIL.fullmatch(email):
                self.send_html(400, page("Invalid email.", ""))
                return
            ids = [
                r["id"]
                for r in self.rows("SELECT id, uuid::text AS uuid FROM lists WHERE type = 'public'")
                if r["uuid"] in wanted
            ]
            if not ids:
                self.send_html(400, page("No lists to subscribe to.", ""))
                return
            self.insert_subscriber(
                email=email,
                name=name,
                status="enabled",
                attribs={},
                lists=ids,
                sub_status="unconfirmed",
            )
            self.send_html(200, page("Subscribed", "<p>Check your e-mail to confirm.</p>"))
            return
        boxes = "".join(
            f'<p><label><input type="checkbox" name="l" value="{html.escape(lst["uuid"])}"> '
            f"{html.escape(lst['name'])}</label></p>"
            for lst in lists
        )
        root = html.escape(self.root_url)
        self.send_html(
            200,
            page(
                "Subscribe",
                # the real template's header: links start with {{ .RootURL }}
                f'<header><a href="{root}/subscription/form">Mailing list</a> '
                f'<a href="{root}/archive">Archive</a></header>'
                '<form method="post" action="">'
                '<p><input type="email" name="email" required placeholder="E-mail"></p>'
                '<p><input type="text" name="name" placeholder="Name"></p>'
                f'{boxes}<p><button type="submit">Subscribe</button></p></form>',
            ),
        )

    def upload(self, name: str) -> None:
        target = (UPLOADS / name).resolve()
        if not target.is_relative_to(UPLOADS.resolve()) or not target.is_file():
            raise HttpError(404, "Not found")
        self.send(200, target.read_bytes(), "application/octet-stream")


def page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
        f"</title></head><body><h2>{html.escape(title)}</h2>{body}</body></html>\n"
    )


def login_page(error: str) -> str:
    said = f'<p class="error">{html.escape(error)}</p>' if error else ""
    return page(
        "Login",
        f'{said}<form method="post" action="/admin/login"><input name="username">'
        '<input type="password" name="password"><input type="hidden" name="next" '
        'value="/admin"><button>Login</button></form>',
    )


def _mask(value: Any) -> Any:
    return PASSWORD_MASK * len(value) if isinstance(value, str) else value


def masked_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """What GET /api/settings shows: every password replaced by one bullet a character."""
    out = copy.deepcopy(settings)
    for key, blocks, name in MASKED:
        value = out.get(key)
        if blocks and isinstance(value, list):
            for block in value:
                if isinstance(block, dict) and name in block:
                    block[name] = _mask(block[name])
        elif not blocks and not name:
            out[key] = _mask(value)
        elif isinstance(value, dict):
            *parents, last = name.split(".")
            node = value
            for part in parents:
                node = node.get(part) if isinstance(node.get(part), dict) else {}
            if last in node:
                node[last] = _mask(node[last])
    return out


def keep_secrets(data: dict[str, Any], current: dict[str, Any]) -> None:
    """As UpdateSettings: an empty password keeps the stored one of the block whose uuid
    equals the incoming one — compared BEFORE a missing uuid is assigned, so a block without
    one matches a stored block without one (schema.sql's defaults have none), the last
    match winning — then a block without a uuid gets a new one; single secrets: an empty
    one keeps the stored one."""
    for key, blocks, name in MASKED:
        value, old = data.get(key), current.get(key)
        if blocks and isinstance(value, list):
            for block in value:
                if not isinstance(block, dict):
                    continue
                incoming = str(block.get("uuid") or "")
                if block.get(name, "") == "":
                    for stored in old or []:
                        if isinstance(stored, dict) and str(stored.get("uuid") or "") == incoming:
                            block[name] = stored.get(name, "")
                if not incoming:
                    block["uuid"] = str(uuid4())
        elif not blocks and not name:
            if value == "":
                data[key] = old or ""
        elif isinstance(value, dict) and isinstance(old, dict):
            *parents, last = name.split(".")
            node, was = value, old
            for part in parents:
                node, was = node.get(part) or {}, was.get(part) or {}
            if node.get(last, "") == "":
                node[last] = was.get(last, "")


def reexec() -> None:
    """listmonk's reload: the process replaces itself (same PID), reading its settings anew."""
    log("reloading on signal ...")
    os.execv(sys.executable, [sys.executable, *sys.argv])  # noqa: S606 - itself, anew


def main(argv: list[str]) -> None:
    flags, config_paths = parse_flags(argv)
    if "version" in flags:
        print(f"{VERSION} (vpsctl stand-in)")
        return
    env = dict(os.environ)
    config = load_config(config_paths, env)
    log(f"listmonk {VERSION} (vpsctl stand-in)")
    conn = connect(config)
    if "install" in flags:
        install(conn, flags, env)
        return
    if "upgrade" in flags:
        upgrade(conn)
        return
    if not installed(conn):
        die("the database does not appear to be setup. Run --install.")
    with conn.cursor() as cur:
        cur.execute("SELECT value FROM settings WHERE key = 'migrations'")
        row = cur.fetchone()
    if not row or VERSION not in row[0]:
        die(f"there are pending database upgrades: {VERSION}. Run --upgrade.")
    with conn.cursor() as cur:
        # an install of an older stand-in has no sessions table yet (the real schema has)
        cur.execute(
            "CREATE TABLE IF NOT EXISTS sessions (id TEXT NOT NULL PRIMARY KEY, "
            "data JSONB DEFAULT '{}'::jsonb NOT NULL, "
            "created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW() NOT NULL)"
        )
        # … nor every setting of v6.2's schema (a real upgrade's migrations add new ones)
        for key, value in DEFAULT_SETTINGS.items():
            cur.execute(
                "INSERT INTO settings (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                (key, json.dumps(value)),
            )
        cur.execute("SELECT value FROM settings WHERE key = 'app.root_url'")
        found = cur.fetchone()
    App.root_url = str(found[0]) if found else DEFAULT_SETTINGS["app.root_url"]
    conn.close()
    address = str(config.get("app.address") or "")
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        die("app.address is not set or not host:port (LISTMONK_app__address)")
    UPLOADS.mkdir(parents=True, exist_ok=True)
    App.config = config
    log(f"http server started on {address}")
    serve(App, host, int(port))


if __name__ == "__main__":
    main(sys.argv[1:])
