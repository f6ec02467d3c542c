"""Stand-in for ghost:6.10.3-alpine: a blog on MySQL, HTTP on 2368.

What vpsctl sees of the real Ghost, kept here:

- configuration from ``url``, ``database__client=mysql``, ``database__connection__*`` and
  ``mail__*`` (the stand-in refuses to start, naming the variable, when one is missing;
  the real Ghost would boot and fail to send mail);
- first start creates the tables (a ``migrations`` table marks it) and seeds the real
  fixtures: one published post ("Coming soon") and one page ("About this site");
- with an https ``url``, every request not marked ``X-Forwarded-Proto: https`` is
  redirected (301) to the https url, as behind a proxy that terminated TLS;
- ``GET /ghost/api/admin/site/`` (no auth) → ``{"site": {"title", "url", "version": "6.10"}}``;
  ``GET /`` HTML; ``GET /sitemap-posts.xml`` one ``<loc>`` per published post;
  ``GET /ghost/api/content/posts/?key=…`` published posts with ``meta.pagination.total``
  (any non-empty key is accepted: the stand-in has no integrations);
- the Admin API's ``POST /ghost/api/admin/posts/`` (any ``Authorization: Ghost <token>``)
  drops unknown fields silently — a post sent with only ``markdown`` is created with an
  EMPTY body — and keeps ``html`` only with ``?source=html``; ``lexical`` and ``mobiledoc``
  carry content. ``GET``/``DELETE`` on admin posts too.
"""

from __future__ import annotations

import html
import json
import os
import re
import secrets
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pymysql
import pymysql.cursors
from httpbase import Handler, HttpError, log, refuse, serve

VERSION = "6.10.3"
CONTENT = Path(os.environ.get("GHOST_CONTENT", "/var/lib/ghost/content"))
CONTENT_DIRS = ("apps", "data", "files", "images", "logs", "media", "public", "settings", "themes")
DB_WAIT = 60.0  # seconds, like knex's acquireConnectionTimeout

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS migrations (
        id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(120) NOT NULL,
        version VARCHAR(70) NOT NULL, currentVersion VARCHAR(255) NULL)""",
    """CREATE TABLE IF NOT EXISTS migrations_lock (
        lock_key VARCHAR(191) PRIMARY KEY, locked TINYINT(1) DEFAULT 0,
        acquired_at DATETIME NULL, released_at DATETIME NULL)""",
    """CREATE TABLE IF NOT EXISTS settings (
        id VARCHAR(24) PRIMARY KEY, `group` VARCHAR(50) NOT NULL DEFAULT 'core',
        `key` VARCHAR(50) NOT NULL UNIQUE, value TEXT NULL, type VARCHAR(50) NOT NULL,
        created_at DATETIME NOT NULL, updated_at DATETIME NULL)""",
    """CREATE TABLE IF NOT EXISTS users (
        id VARCHAR(24) PRIMARY KEY, name VARCHAR(191) NOT NULL, slug VARCHAR(191) NOT NULL UNIQUE,
        email VARCHAR(191) NOT NULL UNIQUE, status VARCHAR(50) NOT NULL DEFAULT 'active',
        created_at DATETIME NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS posts (
        id VARCHAR(24) PRIMARY KEY, uuid VARCHAR(36) NOT NULL, title VARCHAR(2000) NOT NULL,
        slug VARCHAR(191) NOT NULL UNIQUE, mobiledoc LONGTEXT NULL, lexical LONGTEXT NULL,
        html LONGTEXT NULL, plaintext LONGTEXT NULL, type VARCHAR(50) NOT NULL DEFAULT 'post',
        status VARCHAR(50) NOT NULL DEFAULT 'draft',
        visibility VARCHAR(50) NOT NULL DEFAULT 'public', custom_excerpt VARCHAR(2000) NULL,
        created_at DATETIME NOT NULL, updated_at DATETIME NULL, published_at DATETIME NULL)""",
)
WELCOME = (
    "<p>This is Ghost, a professional publishing platform. The stand-in seeded this post "
    "the first time it started, as the real Ghost does.</p>"
)
ABOUT = "<p>Lumen Studio's blog.</p>"


def object_id() -> str:
    return secrets.token_hex(12)


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0, tzinfo=None)


def plaintext_of(markup: str) -> str:
    text = re.sub(r"<(br|/p|/h\d|/li)\s*/?>", "\n", markup or "", flags=re.IGNORECASE)
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def slugify(title: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return slug[:185] or "untitled"


# ── content formats ───────────────────────────────────────────────────────────────────────


def lexical_to_html(doc: Any) -> str:
    """The HTML of a Lexical document (paragraphs, headings, quotes, lists, html cards)."""

    def text_of(node: dict[str, Any]) -> str:
        if node.get("type") == "text" or "text" in node:
            return html.escape(str(node.get("text", "")))
        if node.get("type") == "linebreak":
            return "<br>"
        return "".join(text_of(c) for c in node.get("children", []) if isinstance(c, dict))

    parts = []
    root = doc.get("root", {}) if isinstance(doc, dict) else {}
    for node in root.get("children", []):
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        if kind == "heading":
            tag = node.get("tag") if re.fullmatch(r"h[1-6]", str(node.get("tag"))) else "h2"
            parts.append(f"<{tag}>{text_of(node)}</{tag}>")
        elif kind == "quote":
            parts.append(f"<blockquote>{text_of(node)}</blockquote>")
        elif kind == "list":
            tag = "ol" if node.get("listType") == "number" else "ul"
            items = "".join(f"<li>{text_of(i)}</li>" for i in node.get("children", []))
            parts.append(f"<{tag}>{items}</{tag}>")
        elif kind == "html":
            parts.append(str(node.get("html", "")))
        elif kind == "markdown":
            parts.append(f"<p>{html.escape(str(node.get('markdown', '')))}</p>")
        else:
            inner = text_of(node)
            if inner:
                parts.append(f"<p>{inner}</p>")
    return "".join(parts)


def mobiledoc_to_html(doc: Any) -> str:
    """The HTML of a Mobiledoc 0.3 document (markup sections, lists, html/markdown cards)."""
    if not isinstance(doc, dict):
        return ""
    cards = doc.get("cards", [])
    parts = []

    def markers(items: list[Any]) -> str:
        return "".join(html.escape(str(m[3])) for m in items if isinstance(m, list) and len(m) > 3)

    for section in doc.get("sections", []):
        if not isinstance(section, list) or not section:
            continue
        if section[0] == 1 and len(section) > 2:
            tag = str(section[1]).lower()
            tag = tag if re.fullmatch(r"p|h[1-6]|blockquote|aside", tag) else "p"
            parts.append(f"<{tag}>{markers(section[2])}</{tag}>")
        elif section[0] == 3 and len(section) > 2:
            tag = "ol" if str(section[1]).lower() == "ol" else "ul"
            items = "".join(f"<li>{markers(item)}</li>" for item in section[2])
            parts.append(f"<{tag}>{items}</{tag}>")
        elif section[0] == 10 and len(section) > 1 and section[1] < len(cards):
            name, payload = cards[section[1]][0], cards[section[1]][1]
            if name == "html":
                parts.append(str(payload.get("html", "")))
            elif name in ("markdown", "card-markdown"):
                parts.append(f"<p>{html.escape(str(payload.get('markdown', '')))}</p>")
    return "".join(parts)


# ── configuration and database ────────────────────────────────────────────────────────────


class Config:
    def __init__(self, env: dict[str, str]) -> None:
        self.problems: list[str] = []
        self.url = env.get("url", "http://localhost:2368")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.problems.append("url must be an http(s) URL with a host")
        self.url = self.url.rstrip("/") + "/"
        self.https = parts.scheme == "https"
        client = env.get("database__client", "")
        if client != "mysql":
            self.problems.append(
                "database__client must be mysql (Ghost 6 in production runs on MySQL 8)"
            )
        self.db: dict[str, Any] = {}
        for key in ("host", "user", "password", "database"):
            name = f"database__connection__{key}"
            value = env.get(name, "")
            if not value:
                self.problems.append(f"{name} is required but not set")
            self.db[key] = value
        port = env.get("database__connection__port", "3306")
        self.db["port"] = int(port) if port.isdigit() else 0
        if not self.db["port"]:
            self.problems.append("database__connection__port must be a port number")
        self.mail_problems(env)
        self.port = int(env.get("server__port", "2368"))
        self.host = env.get("server__host", "")  # the image's default: every address

    def mail_problems(self, env: dict[str, str]) -> None:
        transport = env.get("mail__transport", "")
        if not transport:
            self.problems.append("mail__transport is required but not set (SMTP for Mailgun)")
            return
        if not env.get("mail__from"):
            self.problems.append("mail__from is required but not set")
        if transport.upper() == "SMTP":
            for key in ("host", "port", "auth__user", "auth__pass"):
                if not env.get(f"mail__options__{key}"):
                    self.problems.append(f"mail__options__{key} is required but not set")
            secure = env.get("mail__options__secure")
            if secure is not None and secure not in ("true", "false"):
                self.problems.append("mail__options__secure must be true or false")


@dataclass
class Post:
    title: str
    slug: str
    html: str
    lexical: str | None = None
    mobiledoc: str | None = None
    kind: str = "post"
    status: str = "draft"


class Database:
    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.local = threading.local()

    def conn(self) -> Any:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = pymysql.connect(
                host=self.params["host"],
                port=self.params["port"],
                user=self.params["user"],
                password=self.params["password"],
                database=self.params["database"],
                charset="utf8mb4",
                autocommit=True,
                connect_timeout=5,
                cursorclass=pymysql.cursors.DictCursor,
            )
            self.local.conn = conn
        else:
            conn.ping(reconnect=True)
        return conn

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self.conn().cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.query("SELECT 1")
            except pymysql.err.OperationalError as exc:
                if time.monotonic() > deadline:
                    refuse(f"ghost: [ERROR] cannot connect to MySQL: {exc.args[-1]}", code=2)
                log(f"ghost: [WARN] waiting for MySQL: {exc.args[-1]}")
                time.sleep(2)
            else:
                return

    def migrate(self) -> None:
        tables = {next(iter(r.values())) for r in self.query("SHOW TABLES")}
        if "migrations" in tables and self.query("SELECT id FROM migrations LIMIT 1"):
            log("ghost: [INFO] Database is in a ready state.")
            return
        log("ghost: [INFO] Creating table: migrations, settings, users, posts ...")
        for statement in SCHEMA:
            self.query(statement)
        stamp = now()
        settings = {
            "title": "Ghost",
            "description": "Thoughts, stories and ideas.",
            "accent_color": "#FF1A75",
            "locale": "en",
        }
        for key, value in settings.items():
            self.query(
                "INSERT IGNORE INTO settings (id, `key`, value, type, created_at) "
                "VALUES (%s, %s, %s, 'string', %s)",
                (object_id(), key, value, stamp),
            )
        self.query(
            "INSERT IGNORE INTO users (id, name, slug, email, created_at) "
            "VALUES (%s, %s, %s, %s, %s)",
            ("1", "Ghost", "ghost", "ghost@example.com", stamp),
        )
        for title, slug, body, kind in (
            ("Coming soon", "coming-soon", WELCOME, "post"),
            ("About this site", "about", ABOUT, "page"),
        ):
            self.insert_post(Post(title, slug, body, kind=kind, status="published"))
        self.query(
            "INSERT INTO migrations (name, version, currentVersion) VALUES (%s, %s, %s)",
            ("1-create-tables.js", "init", "6.10"),
        )
        log("ghost: [INFO] Database is in a ready state.")

    def insert_post(self, post: Post) -> str:
        post_id, stamp = object_id(), now()
        slug = base = post.slug
        n = 1
        while self.query("SELECT id FROM posts WHERE slug = %s", (slug,)):
            n += 1
            slug = f"{base}-{n}"
        self.query(
            "INSERT INTO posts (id, uuid, title, slug, mobiledoc, lexical, html, plaintext, type, "
            "status, created_at, updated_at, published_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                post_id,
                str(uuid.uuid4()),
                post.title,
                slug,
                post.mobiledoc,
                post.lexical,
                post.html or None,
                plaintext_of(post.html) or None,
                post.kind,
                post.status,
                stamp,
                stamp,
                stamp if post.status == "published" else None,
            ),
        )
        return post_id


# ── HTTP ──────────────────────────────────────────────────────────────────────────────────

NO_PERMISSION = {
    "errors": [
        {
            "message": "Authorization failed",
            "context": "Unable to determine the authenticated user or integration. Check that "
            "cookies are being passed through if using session authentication.",
            "type": "NoPermissionError",
        }
    ]
}


def iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.000Z") if value else None


class App(Handler):
    app_name = "ghost"
    config: Config
    db: Database

    def error_body(self, error: HttpError) -> Any:
        kinds = {403: "NoPermissionError", 404: "NotFoundError", 422: "ValidationError"}
        return {"errors": [{"message": error.message, "type": kinds.get(error.status, "Error")}]}

    def route(self) -> None:
        if self.config.https and self.headers.get("X-Forwarded-Proto", "").lower() != "https":
            target = self.config.url.rstrip("/") + self.path
            self.send(
                301, f"Moved Permanently. Redirecting to {target}", headers={"Location": target}
            )
            return
        path, method = self.route_path, self.command
        api = re.sub(r"^/ghost/api/(v\d+(\.\d+)?/)?", "/api/", path)
        if api in ("/api/admin/site/", "/api/admin/site") and method in ("GET", "HEAD"):
            self.site()
        elif api.startswith("/api/content/posts"):
            self.content_posts(api.removeprefix("/api/content/posts").strip("/"))
        elif api.startswith("/api/admin/posts"):
            self.admin_posts(api.removeprefix("/api/admin/posts").strip("/"))
        elif path.startswith("/ghost/api/"):
            raise HttpError(404, "Resource not found")
        elif path in ("/ghost", "/ghost/"):
            self.send_html(
                200, "<!DOCTYPE html><html><head><title>Ghost Admin</title></head></html>\n"
            )
        elif path == "/sitemap.xml":
            self.sitemap_index()
        elif path == "/sitemap-posts.xml":
            self.sitemap("post")
        elif path == "/sitemap-pages.xml":
            self.sitemap("page")
        elif path == "/robots.txt":
            self.send(
                200, f"User-agent: *\nSitemap: {self.config.url}sitemap.xml\nDisallow: /ghost/\n"
            )
        elif path == "/" and method in ("GET", "HEAD"):
            self.home()
        elif method in ("GET", "HEAD") and re.fullmatch(r"/[a-z0-9-]+/?", path):
            self.post_page(path.strip("/"))
        else:
            self.not_found()

    def not_found(self) -> None:
        self.send_html(
            404, "<!DOCTYPE html><html><body><h1>404</h1><p>Page not found</p></body></html>\n"
        )

    def settings(self) -> dict[str, str]:
        return {r["key"]: r["value"] for r in self.db.query("SELECT `key`, value FROM settings")}

    def site(self) -> None:
        settings = self.settings()
        self.send_json(
            200,
            {
                "site": {
                    "title": settings.get("title", "Ghost"),
                    "description": settings.get("description", ""),
                    "logo": None,
                    "icon": None,
                    "accent_color": settings.get("accent_color"),
                    "locale": settings.get("locale", "en"),
                    "url": self.config.url,
                    "version": ".".join(VERSION.split(".")[:2]),
                }
            },
        )

    def published(self, kind: str) -> list[dict[str, Any]]:
        return self.db.query(
            "SELECT * FROM posts WHERE type = %s AND status = 'published' "
            "ORDER BY published_at DESC, id DESC",
            (kind,),
        )

    def home(self) -> None:
        settings = self.settings()
        title = html.escape(settings.get("title", "Ghost"))
        items = "".join(
            f'<li><a href="/{p["slug"]}/">{html.escape(p["title"])}</a></li>'
            for p in self.published("post")
        )
        self.send_html(
            200,
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f'<meta name="generator" content="Ghost 6.10"></head>\n<body><h1>{title}</h1>'
            f"<p>{html.escape(settings.get('description', ''))}</p>"
            f"<ul>{items}</ul></body></html>\n",
        )

    def post_page(self, slug: str) -> None:
        rows = self.db.query(
            "SELECT * FROM posts WHERE slug = %s AND status = 'published'", (slug,)
        )
        if not rows:
            self.not_found()
            return
        post = rows[0]
        self.send_html(
            200,
            f'<!DOCTYPE html>\n<html lang="en"><head><title>{html.escape(post["title"])}</title>'
            f"</head>\n<body><article><h1>{html.escape(post['title'])}</h1>"
            f"{post['html'] or ''}</article></body></html>\n",
        )

    def sitemap_index(self) -> None:
        base = self.config.url
        entries = "".join(
            f"<sitemap><loc>{base}sitemap-{kind}.xml</loc></sitemap>"
            for kind in ("pages", "posts", "authors", "tags")
        )
        self.send(
            200,
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{entries}</sitemapindex>\n',
            "text/xml; charset=utf-8",
        )

    def sitemap(self, kind: str) -> None:
        urls = "".join(
            f"<url><loc>{html.escape(self.post_url(p))}</loc>"
            f"<lastmod>{iso(p['updated_at'] or p['published_at'])}</lastmod></url>"
            for p in self.published(kind)
        )
        self.send(
            200,
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">' + urls + "</urlset>\n",
            "text/xml; charset=utf-8",
        )

    def post_url(self, post: dict[str, Any]) -> str:
        return f"{self.config.url}{post['slug']}/"

    def serialize(self, post: dict[str, Any], admin: bool, formats: set[str]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": post["id"],
            "uuid": post["uuid"],
            "title": post["title"],
            "slug": post["slug"],
            "url": self.post_url(post),
            "excerpt": (post["plaintext"] or "")[:500],
            "custom_excerpt": post["custom_excerpt"],
            "visibility": post["visibility"],
            "created_at": iso(post["created_at"]),
            "updated_at": iso(post["updated_at"]),
            "published_at": iso(post["published_at"]),
        }
        if "html" in formats:
            out["html"] = post["html"]
        if "plaintext" in formats:
            out["plaintext"] = post["plaintext"]
        if admin:
            out.update(status=post["status"], type=post["type"], lexical=post["lexical"])
            if "mobiledoc" in formats:
                out["mobiledoc"] = post["mobiledoc"]
        return out

    def page_of(self, total: int) -> tuple[int, int | None, dict[str, Any]]:
        limit_text, page_text = self.param("limit", "15"), self.param("page", "1")
        limit = None if limit_text == "all" else int(limit_text) if limit_text.isdigit() else 15
        page = int(page_text) if page_text.isdigit() and int(page_text) > 0 else 1
        pages = 1 if not limit else max(1, -(-total // limit))
        meta = {
            "page": page,
            "limit": "all" if limit is None else limit,
            "pages": pages,
            "total": total,
            "next": page + 1 if page < pages else None,
            "prev": page - 1 if page > 1 else None,
        }
        return page, limit, meta

    def content_posts(self, post_id: str) -> None:
        if self.command not in ("GET", "HEAD"):
            raise HttpError(405, "Method not allowed")
        if not self.param("key"):
            self.send_json(403, NO_PERMISSION)
            return
        formats = set(self.param("formats", "html").split(","))
        posts = self.published("post")
        if post_id:
            found = [p for p in posts if post_id in (p["id"], f"slug/{p['slug']}")]
            if not found:
                self.send_json(
                    404,
                    {
                        "errors": [
                            {
                                "message": "Resource not found error, cannot read post.",
                                "type": "NotFoundError",
                            }
                        ]
                    },
                )
                return
            self.send_json(200, {"posts": [self.serialize(found[0], False, formats)]})
            return
        page, limit, meta = self.page_of(len(posts))
        chosen = posts if limit is None else posts[(page - 1) * limit : page * limit]
        self.send_json(
            200,
            {
                "posts": [self.serialize(p, False, formats) for p in chosen],
                "meta": {"pagination": meta},
            },
        )

    def admin_posts(self, post_id: str) -> None:
        if not self.headers.get("Authorization", "").startswith("Ghost "):
            self.send_json(403, NO_PERMISSION)
            return
        formats = set(self.param("formats", "html,lexical").split(","))
        if self.command == "POST" and not post_id:
            self.create_post(formats)
        elif self.command in ("GET", "HEAD"):
            rows = self.db.query(
                "SELECT * FROM posts WHERE type = 'post' ORDER BY created_at DESC, id DESC"
            )
            if post_id:
                rows = [r for r in rows if r["id"] == post_id]
                if not rows:
                    raise HttpError(404, "Post not found.")
                self.send_json(200, {"posts": [self.serialize(rows[0], True, formats)]})
                return
            page, limit, meta = self.page_of(len(rows))
            chosen = rows if limit is None else rows[(page - 1) * limit : page * limit]
            self.send_json(
                200,
                {
                    "posts": [self.serialize(p, True, formats) for p in chosen],
                    "meta": {"pagination": meta},
                },
            )
        elif self.command == "DELETE" and post_id:
            self.db.query("DELETE FROM posts WHERE id = %s AND type = 'post'", (post_id,))
            self.send(204)
        else:
            raise HttpError(405, "Method not allowed")

    def create_post(self, formats: set[str]) -> None:
        body = self.json_body()
        items = body.get("posts") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items or not isinstance(items[0], dict):
            self.send_json(
                422,
                {
                    "errors": [
                        {
                            "message": "Validation error, cannot save post.",
                            "context": "No root key ('posts') provided.",
                            "type": "ValidationError",
                        }
                    ]
                },
            )
            return
        data = items[0]
        title = str(data.get("title") or "").strip()
        if not title:
            self.send_json(
                422,
                {
                    "errors": [
                        {
                            "message": "Validation error, cannot save post.",
                            "context": "Value in [posts.title] cannot be blank.",
                            "type": "ValidationError",
                        }
                    ]
                },
            )
            return
        # Unknown fields (markdown, …) are dropped silently, as by the real Admin API.
        lexical = data.get("lexical") if isinstance(data.get("lexical"), str) else None
        mobiledoc = data.get("mobiledoc") if isinstance(data.get("mobiledoc"), str) else None
        markup = ""
        if self.param("source") == "html" and isinstance(data.get("html"), str):
            markup = data["html"]
            lexical = json.dumps(
                {
                    "root": {
                        "children": [{"type": "html", "html": markup}],
                        "type": "root",
                        "version": 1,
                    }
                }
            )
        elif lexical:
            try:
                markup = lexical_to_html(json.loads(lexical))
            except ValueError:
                raise HttpError(422, "Invalid lexical structure.") from None
        elif mobiledoc:
            try:
                markup = mobiledoc_to_html(json.loads(mobiledoc))
            except ValueError:
                raise HttpError(422, "Invalid mobiledoc structure.") from None
        status = str(data.get("status") or "draft")
        if status not in ("draft", "published", "scheduled"):
            raise HttpError(422, "Validation error, cannot save post.")
        slug = slugify(str(data.get("slug") or title))
        post_id = self.db.insert_post(Post(title, slug, markup, lexical, mobiledoc, "post", status))
        post = self.db.query("SELECT * FROM posts WHERE id = %s", (post_id,))[0]
        self.send_json(201, {"posts": [self.serialize(post, True, formats)]})


def main() -> None:
    config = Config(dict(os.environ))
    if config.problems:
        for problem in config.problems:
            log(f"ghost: refusing to start: {problem}")
        sys.exit(1)
    for sub in CONTENT_DIRS:
        (CONTENT / sub).mkdir(parents=True, exist_ok=True)
    db = Database(config.db)
    db.wait(DB_WAIT)
    db.migrate()
    App.config, App.db = config, db
    log(
        f"ghost: [INFO] Ghost {VERSION} (vpsctl stand-in) booted; "
        f"your site is now available on {config.url}"
    )
    serve(App, config.host, config.port)


if __name__ == "__main__":
    main()
