"""Stand-in for the studio's four SaaS products (DocuMint, CronPing, FlagBit, WebhookVault).

One program, four faces (``PRODUCT``, set from the image's build arg). What it shares with
the real products, at every interface vpsctl touches:

- it refuses to start, with one line on stderr naming the variable (never its value), when
  a required variable is missing or malformed, or when test and live Stripe keys are mixed;
- SQLite at ``DATABASE_PATH`` in WAL mode with ``busy_timeout=5000``;
- ``GET /healthz`` → ``{"status": "ok", "database": "ok", ...}``; ``GET /`` names the product;
- ``POST/GET /api/records``: a record store, so a deploy or restore can be checked for data;
- ``POST /webhooks/stripe`` verifies ``Stripe-Signature`` exactly like Stripe's libraries
  (HMAC-SHA256 of ``{t}.{body}`` keyed with the whole ``whsec_…`` secret, 300 s tolerance):
  400 without or with a wrong signature, 200 with a right one;
- WebhookVault: any method on ``/h/<bin>`` is captured (202); ``/h/`` without a bin is 400;
- CronPing: ``GET/POST /ping/<uuid>`` records a ping (200).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import os
import re
import sqlite3
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from httpbase import Handler, HttpError, log, refuse, serve

PRODUCTS = ("DocuMint", "CronPing", "FlagBit", "WebhookVault")
STRIPE_SECRET = re.compile(r"(sk|rk)_(test|live)_[A-Za-z0-9]{16,}")
STRIPE_PUBLISHABLE = re.compile(r"pk_(test|live)_[A-Za-z0-9]{16,}")
STRIPE_WEBHOOK = re.compile(r"whsec_[A-Za-z0-9+/=]{16,}")
SIGNATURE_TOLERANCE = 300  # seconds, as in Stripe's libraries
VERSION = "standin"

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT, data TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stripe_events (
    id TEXT PRIMARY KEY, type TEXT NOT NULL, livemode INTEGER NOT NULL, received_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS captures (
    id INTEGER PRIMARY KEY AUTOINCREMENT, bin TEXT NOT NULL, method TEXT NOT NULL,
    path TEXT NOT NULL, headers TEXT NOT NULL, body BLOB NOT NULL, received_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pings (
    id INTEGER PRIMARY KEY AUTOINCREMENT, check_id TEXT NOT NULL, method TEXT NOT NULL,
    received_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS flags (key TEXT PRIMARY KEY, enabled INTEGER NOT NULL);
"""

COUNTS = {
    "records": "SELECT count(*) FROM records",
    "stripe_events": "SELECT count(*) FROM stripe_events",
}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ── configuration ─────────────────────────────────────────────────────────────────────────


class Config:
    """The environment, checked once at start; every problem names its variable only."""

    def __init__(self, env: dict[str, str]) -> None:
        self.problems: list[str] = []
        self.product = env.get("PRODUCT_NAME", "")
        if self.product not in PRODUCTS:
            self.problems.append(f"PRODUCT_NAME must be one of {', '.join(PRODUCTS)}")
        self.app_url = self._https_url(env, "APP_URL", required=True)
        self.port = self._port(env)
        self.database_path = self._database_path(env)
        self.stripe_secret_key = self._match(env, "STRIPE_SECRET_KEY", STRIPE_SECRET, "sk_…/rk_…")
        self.stripe_publishable_key = self._match(
            env, "STRIPE_PUBLISHABLE_KEY", STRIPE_PUBLISHABLE, "pk_test_…/pk_live_…"
        )
        self.webhook_secret = self._match(
            env, "STRIPE_WEBHOOK_SECRET", STRIPE_WEBHOOK, "whsec_ and at least 16 characters"
        )
        self.session_secret = self._session_secret(env)
        self._modes_agree()
        # optional, per product: checked only when present (an empty value is malformed)
        self.api_url = self._https_url(env, "API_URL", required=False)
        self.capture_url = self._https_url(env, "CAPTURE_URL", required=False)
        self.ping_grace = self._positive_int(env, "PING_GRACE_SECONDS", default=60)
        renderer = env.get("PDF_RENDERER")
        if renderer is not None and renderer not in ("builtin", "chromium"):
            self.problems.append("PDF_RENDERER must be builtin or chromium")

    def _missing(self, env: dict[str, str], name: str) -> bool:
        if name not in env:
            self.problems.append(f"{name} is required but not set")
            return True
        if env[name] == "":
            self.problems.append(f"{name} is set but empty")
            return True
        return False

    def _https_url(self, env: dict[str, str], name: str, required: bool) -> str:
        if name not in env and not required:
            return ""
        if self._missing(env, name):
            return ""
        value = env[name]
        try:
            url = urlsplit(value)
            port_ok = url.port is None or url.port > 0
        except ValueError:
            url, port_ok = None, False
        if (
            url is None
            or not port_ok
            or url.scheme != "https"
            or not url.hostname
            or url.username is not None
            or url.path not in ("", "/")
            or url.query
            or url.fragment
        ):
            self.problems.append(f"{name} must be an https:// URL with a host and no path")
            return ""
        return value.rstrip("/")

    def _port(self, env: dict[str, str]) -> int:
        if self._missing(env, "PORT"):
            return 0
        value = env["PORT"]
        if not value.isdigit() or not 0 < int(value) < 65536:
            self.problems.append("PORT must be a TCP port number (1-65535)")
            return 0
        return int(value)

    def _database_path(self, env: dict[str, str]) -> Path:
        if self._missing(env, "DATABASE_PATH"):
            return Path()
        path = Path(env["DATABASE_PATH"])
        if not path.is_absolute() or path.name in ("", ".", ".."):
            self.problems.append("DATABASE_PATH must be an absolute path to a file")
        elif not path.parent.is_dir():
            self.problems.append("DATABASE_PATH must be in an existing directory (a volume)")
        elif path.is_dir():
            self.problems.append("DATABASE_PATH is a directory, not a database file")
        return path

    def _match(self, env: dict[str, str], name: str, pattern: re.Pattern[str], what: str) -> str:
        if self._missing(env, name):
            return ""
        value = env[name]
        if pattern.fullmatch(value) is None:
            self.problems.append(f"{name} is malformed: expected {what}")
            return ""
        return value

    def _session_secret(self, env: dict[str, str]) -> bytes:
        if self._missing(env, "SESSION_SECRET"):
            return b""
        value = env["SESSION_SECRET"].encode()
        if len(value) < 64:
            self.problems.append(f"SESSION_SECRET is too short: {len(value)} bytes, need 64")
            return b""
        return value

    def _modes_agree(self) -> None:
        secret = STRIPE_SECRET.fullmatch(self.stripe_secret_key)
        public = STRIPE_PUBLISHABLE.fullmatch(self.stripe_publishable_key)
        if secret and public and secret.group(2) != public.group(1):
            self.problems.append(
                f"STRIPE_SECRET_KEY is a {secret.group(2)} key but STRIPE_PUBLISHABLE_KEY is a "
                f"{public.group(1)} key: test and live keys cannot be mixed"
            )

    def _positive_int(self, env: dict[str, str], name: str, default: int) -> int:
        if name not in env:
            return default
        value = env[name]
        if not value.isdigit() or int(value) == 0:
            self.problems.append(f"{name} must be a positive whole number of seconds")
            return default
        return int(value)

    @property
    def livemode(self) -> bool:
        return self.stripe_secret_key.split("_")[1:2] == ["live"]


# ── database ──────────────────────────────────────────────────────────────────────────────


class Database:
    """One SQLite connection per thread, each with busy_timeout=5000; the file is WAL."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        conn = self.conn()
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"journal_mode is {mode}, not wal")
        conn.executescript(SCHEMA)

    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            conn.execute("PRAGMA busy_timeout=5000")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    def count(self, table: str) -> int:
        return int(self.conn().execute(COUNTS[table]).fetchone()[0])


# ── HTTP ──────────────────────────────────────────────────────────────────────────────────


class App(Handler):
    config: Config
    db: Database

    def route(self) -> None:
        path, method = self.route_path, self.command
        product = self.config.product
        if path == "/healthz" and method in ("GET", "HEAD"):
            self.healthz()
        elif path == "/" and method in ("GET", "HEAD"):
            self.home()
        elif path == "/api/records" and method == "POST":
            self.create_record()
        elif path == "/api/records" and method in ("GET", "HEAD"):
            self.list_records()
        elif path == "/webhooks/stripe":
            if method != "POST":
                raise HttpError(405, "use POST")
            self.stripe_webhook()
        elif product == "WebhookVault" and (path == "/h" or path.startswith("/h/")):
            self.capture()
        elif product == "WebhookVault" and path.startswith("/api/bins/"):
            self.list_captures(path.removeprefix("/api/bins/"))
        elif product == "CronPing" and path.startswith("/api/checks/") and method == "GET":
            self.check_status(path.removeprefix("/api/checks/"))
        elif product == "CronPing" and path.startswith("/ping/"):
            if method not in ("GET", "POST", "HEAD"):
                raise HttpError(405, "use GET or POST")
            self.ping(path.removeprefix("/ping/"))
        elif product == "FlagBit" and path == "/api/flags":
            self.flags()
        else:
            raise HttpError(404, "not found")

    def healthz(self) -> None:
        try:
            records = self.db.count("records")
        except sqlite3.Error as exc:
            log(f"{self.app_name}: health check: database error: {exc}")
            self.send_json(503, {"status": "error", "database": "error"})
            return
        self.send_json(
            200,
            {
                "status": "ok",
                "database": "ok",
                "product": self.config.product,
                "version": VERSION,
                "records": records,
                "stripe_mode": "live" if self.config.livemode else "test",
                "app_url": self.config.app_url,
            },
        )

    def home(self) -> None:
        name = html.escape(self.config.product)
        count = self.db.count("records")
        extra = ""
        if self.config.capture_url:
            extra = (
                f"<p>Send webhooks to {html.escape(self.config.capture_url)}/h/&lt;bin&gt;</p>\n"
            )
        elif self.config.api_url:
            extra = f"<p>SDKs poll {html.escape(self.config.api_url)}/api/flags</p>\n"
        elif self.config.product == "CronPing":
            extra = f"<p>Pings are late after {self.config.ping_grace} seconds.</p>\n"
        self.send_html(
            200,
            f"<!doctype html>\n<html><head><title>{name}</title></head><body>\n"
            f"<h1>{name}</h1>\n<p>Welcome to {name}.</p>\n{extra}"
            f'<p id="records">{count} records</p>\n</body></html>\n',
        )

    def create_record(self) -> None:
        data = self.json_body()
        if not isinstance(data, dict):
            raise HttpError(400, "a record is a JSON object")
        cur = self.db.conn().execute(
            "INSERT INTO records (data, created_at) VALUES (?, ?)", (json.dumps(data), now())
        )
        self.send_json(201, {"id": cur.lastrowid})

    def list_records(self) -> None:
        limit = self.param("limit", "100")
        if not limit.isdigit():
            raise HttpError(400, "limit must be a number")
        rows = self.db.conn().execute(
            "SELECT id, data, created_at FROM records ORDER BY id DESC LIMIT ?", (int(limit),)
        )
        records = [
            {"id": r["id"], "data": json.loads(r["data"]), "created_at": r["created_at"]}
            for r in rows
        ]
        self.send_json(200, {"count": self.db.count("records"), "records": records})

    def stripe_webhook(self) -> None:
        header = self.headers.get("Stripe-Signature")
        if not header:
            raise HttpError(400, "missing Stripe-Signature header")
        payload = self.body()
        timestamp, signatures = parse_signature_header(header)
        if timestamp is None or not signatures:
            raise HttpError(400, "Unable to extract timestamp and signatures from header")
        expected = hmac.new(
            self.config.webhook_secret.encode(),
            str(timestamp).encode() + b"." + payload,
            hashlib.sha256,
        ).hexdigest()
        if not any(hmac.compare_digest(expected, sig) for sig in signatures):
            raise HttpError(400, "No signatures found matching the expected signature for payload")
        if abs(time.time() - timestamp) > SIGNATURE_TOLERANCE:
            raise HttpError(400, "Timestamp outside the tolerance zone")
        try:
            event = json.loads(payload)
            event_id, event_type = str(event["id"]), str(event["type"])
        except (ValueError, KeyError, TypeError):
            raise HttpError(400, "the payload is not a Stripe event") from None
        self.db.conn().execute(
            "INSERT OR IGNORE INTO stripe_events (id, type, livemode, received_at) "
            "VALUES (?, ?, ?, ?)",
            (event_id, event_type, int(bool(event.get("livemode"))), now()),
        )
        log(f"{self.app_name}: stripe event {event_type} accepted")
        self.send_json(200, {"received": True})

    def capture(self) -> None:
        bin_id = self.route_path.removeprefix("/h").strip("/")
        if not bin_id:
            raise HttpError(400, "a capture needs a bin: /h/<bin>")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", bin_id):
            raise HttpError(400, "a bin id is 1-64 letters, digits, - or _")
        headers = json.dumps(dict(self.headers.items()))
        cur = self.db.conn().execute(
            "INSERT INTO captures (bin, method, path, headers, body, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (bin_id, self.command, self.path, headers, self.body(), now()),
        )
        self.send_json(202, {"captured": cur.lastrowid, "bin": bin_id})

    def list_captures(self, bin_id: str) -> None:
        rows = self.db.conn().execute(
            "SELECT id, method, path, received_at, length(body) AS size FROM captures "
            "WHERE bin = ? ORDER BY id",
            (bin_id,),
        )
        captures = [dict(r) for r in rows]
        self.send_json(200, {"bin": bin_id, "count": len(captures), "captures": captures})

    def ping(self, check: str) -> None:
        try:
            check_id = str(uuid.UUID(check.strip("/")))
        except ValueError:
            raise HttpError(404, "not a check: /ping/<uuid>") from None
        self.db.conn().execute(
            "INSERT INTO pings (check_id, method, received_at) VALUES (?, ?, ?)",
            (check_id, self.command, now()),
        )
        self.send(200, "OK\n")

    def check_status(self, check: str) -> None:
        """A check's last ping and whether it is late (PING_GRACE_SECONDS, default 60)."""
        try:
            check_id = str(uuid.UUID(check.strip("/")))
        except ValueError:
            raise HttpError(404, "not a check: /api/checks/<uuid>") from None
        row = (
            self.db.conn()
            .execute(
                "SELECT max(received_at) AS last, count(*) AS n FROM pings WHERE check_id = ?",
                (check_id,),
            )
            .fetchone()
        )
        status = "new"
        if row["last"]:
            age = time.time() - datetime.fromisoformat(row["last"]).timestamp()
            status = "late" if age > self.config.ping_grace else "up"
        self.send_json(
            200,
            {
                "check": check_id,
                "pings": row["n"],
                "last_ping": row["last"],
                "grace_seconds": self.config.ping_grace,
                "status": status,
            },
        )

    def flags(self) -> None:
        rows = self.db.conn().execute("SELECT key, enabled FROM flags ORDER BY key")
        self.send_json(200, {"flags": {r["key"]: bool(r["enabled"]) for r in rows}})


def parse_signature_header(header: str) -> tuple[int | None, list[str]]:
    """``t=…,v1=…[,v1=…]`` → (timestamp, v1 signatures), as Stripe's libraries read it."""
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return None, []
        elif key == "v1":
            signatures.append(value)
    return timestamp, signatures


def main() -> None:
    config = Config(dict(os.environ))
    if config.problems:
        name = config.product if config.product in PRODUCTS else "product"
        for problem in config.problems:
            log(f"{name}: refusing to start: {problem}")
        raise SystemExit(1)
    try:
        db = Database(config.database_path)
    except sqlite3.Error as exc:
        refuse(f"{config.product}: refusing to start: cannot open DATABASE_PATH: {exc}")
    App.config = config
    App.db = db
    App.app_name = config.product.lower()
    log(
        f"{App.app_name}: database ready (WAL, busy_timeout=5000); "
        f"stripe {'live' if config.livemode else 'test'} mode"
    )
    serve(App, "", config.port)


if __name__ == "__main__":
    main()
