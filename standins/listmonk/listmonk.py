"""Stand-in for listmonk/listmonk:v6.2.0: ``./listmonk`` with the real binary's flags.

``--install [--idempotent] [--yes]`` creates the schema, the default lists, the settings
(``app.root_url`` = ``http://localhost:9000``) and the admin from LISTMONK_ADMIN_USER and
LISTMONK_ADMIN_PASSWORD — refusing when either is missing or empty (the real listmonk
would leave the admin to whoever reaches /admin first); ``--upgrade [--yes]`` records the
schema version; no command serves HTTP on ``app.address``. Configuration: the TOML files
of ``--config`` (default ``config.toml``; ``--config ''`` reads none) overridden by
``LISTMONK_<section>__<key>`` variables, as the real one does.

HTTP: ``GET /health`` → ``{"data": true}``; ``GET /subscription/form`` (an HTML form) and
``POST`` to it; the API under ``/api`` with the admin's basic auth (or ``Authorization:
token user:password``): subscribers (list with ``total``, create, get, delete), lists,
settings (``PUT /api/settings`` merges keys, e.g. ``app.root_url``), config.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import os
import re
import secrets
import sys
import tomllib
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlsplit

import psycopg2
import psycopg2.errors
import psycopg2.extras
from httpbase import Handler, HttpError, log, serve

VERSION = "v6.2.0"
UPLOADS = Path("/listmonk/uploads")
EMAIL = re.compile(r"[^\s@<>]+@[^\s@<>]+\.[^\s@<>]+")

SCHEMA = """
DROP TABLE IF EXISTS subscriber_lists, subscribers, lists, users, settings CASCADE;
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
DEFAULT_SETTINGS: dict[str, Any] = {
    "app.site_name": "Mailing list",
    "app.root_url": "http://localhost:9000",
    "app.logo_url": "",
    "app.favicon_url": "",
    "app.from_email": "listmonk <noreply@listmonk.yoursite.com>",
    "app.notify_emails": [],
    "app.enable_public_subscription_page": True,
    "app.lang": "en",
    "privacy.individual_tracking": False,
    "privacy.unsubscribe_header": True,
    "upload.provider": "filesystem",
    "upload.filesystem.upload_path": "uploads",
    "upload.filesystem.upload_uri": "/uploads",
    "migrations": [VERSION],
}


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
        for key, value in DEFAULT_SETTINGS.items():
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
            self.send_html(200, "<!doctype html><html><body><h1>listmonk</h1></body></html>\n")
        elif path in ("/admin", "/admin/"):
            self.send(302, "", headers={"Location": "/admin/login"})
        elif path == "/admin/login":
            self.send_html(200, LOGIN_PAGE)
        elif path.startswith("/uploads/") and method in ("GET", "HEAD"):
            self.upload(path.removeprefix("/uploads/"))
        elif path.startswith("/api/"):
            self.authenticate()
            self.api(path.removeprefix("/api/").strip("/"), method)
        else:
            raise HttpError(404, "Not found")

    def authenticate(self) -> None:
        auth = self.headers.get("Authorization", "")
        credentials = ""
        if auth.startswith("Basic "):
            try:
                credentials = base64.b64decode(auth[6:]).decode()
            except ValueError:
                credentials = ""
        elif auth.startswith("token "):
            credentials = auth[6:]
        user, _, password = credentials.partition(":")
        rows = self.rows(
            "SELECT password FROM users WHERE username = %s AND status = 'enabled'", (user,)
        )
        if not rows or not check_password(password, rows[0]["password"]):
            raise HttpError(403, "invalid API credentials")

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
        elif parts[0] == "config" and method == "GET":
            settings = self.current_settings()
            self.send_json(
                200,
                {
                    "data": {
                        "root_url": settings.get("app.root_url"),
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
            self.send_json(200, {"data": settings})
            return
        if method != "PUT":
            raise HttpError(405, "Method not allowed")
        data = self.json_body()
        if not isinstance(data, dict):
            raise HttpError(400, "Invalid settings")
        if "app.root_url" in data:
            root = str(data["app.root_url"]).rstrip("/")
            url = urlsplit(root)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise HttpError(400, "Invalid `app.root_url`")
            data["app.root_url"] = root
        for key, value in data.items():
            if key == "migrations":
                continue
            self.rows(
                "INSERT INTO settings (key, value) VALUES (%s, %s) ON CONFLICT (key) "
                "DO UPDATE SET value = EXCLUDED.value, updated_at = NOW()",
                (key, json.dumps(value)),
            )
        log("listmonk: settings updated; reloading app")
        self.send_json(200, {"data": True})

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
        self.send_html(
            200,
            page(
                "Subscribe",
                '<form method="post" action="/subscription/form">'
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


LOGIN_PAGE = page(
    "listmonk",
    '<form method="post" action="/admin/login"><input name="username">'
    '<input type="password" name="password"><button>Login</button></form>',
)


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
