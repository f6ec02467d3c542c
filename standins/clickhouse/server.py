"""Stand-in for clickhouse/clickhouse-server:24.12-alpine: ClickHouse's HTTP interface on 8123.

- ``GET /ping`` (and ``/``) → ``Ok.``; queries by ``?query=`` and/or the POST body, in the
  database of ``?database=``/``X-ClickHouse-Database``; GET is read-only like the real one.
  The dialect is in ``sql.py``; rows live in SQLite under /var/lib/clickhouse.
- It refuses to start unless the low-memory files the studio's stack ships are in place:
  ``config.d/{logs,ipv4-only,low-resources}.xml`` and
  ``users.d/default-profile-low-resources-overrides.xml``, each a regular file of well-formed
  XML (a bind mount of a missing file arrives as a directory). ``listen_host`` and the
  ``backups``/``storage_configuration`` settings of config.d are honoured.
- Users, as the image's entrypoint sets them up: with ``CLICKHOUSE_PASSWORD`` the user
  ``CLICKHOUSE_USER`` (default ``default``) needs it; with ``CLICKHOUSE_SKIP_USER_SETUP=1``
  the password-less ``default`` user may connect from anywhere; otherwise only from
  localhost. ``CLICKHOUSE_DB`` is created at start.
- It runs as uid/gid 101 (``entrypoint.sh`` drops to it, as the real image's does) with the
  real server's umask 027 (config.xml ``<umask>``): what it cannot read or write on disk
  fails like the real one (``server.py --directories`` lists the directories the entrypoint
  creates and chowns, as ``clickhouse extract-from-config`` does for the real one).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
import time
import uuid
from pathlib import Path
from xml.etree import ElementTree

from httpbase import Handler, log, refuse, serve
from sql import VERSION, ChError, Engine, Settings, render, statement_format

CONFIG_DIR = Path(os.environ.get("CLICKHOUSE_CONFIG_DIR", "/etc/clickhouse-server"))
DATA_DIR = Path("/var/lib/clickhouse")
LOG_DIR = Path("/var/log/clickhouse-server")
REQUIRED = {
    "config.d": ("logs.xml", "ipv4-only.xml", "low-resources.xml"),
    "users.d": ("default-profile-low-resources-overrides.xml",),
}
LOCAL = ("127.0.0.1", "::1")


def parse_xml(path: Path) -> ElementTree.Element:
    # a config file on the server's own disk, like the real server reads it
    return ElementTree.parse(path).getroot()  # noqa: S314


def directories() -> list[str]:
    """The directories the image's entrypoint creates and chowns before the server starts:
    the data directory first, then logs, tmp, user files, format schemas and every storage
    disk's path (from config.d, where the studio's config declares them)."""
    found = [
        str(DATA_DIR),
        str(LOG_DIR),
        str(DATA_DIR / "tmp"),
        str(DATA_DIR / "user_files"),
        str(DATA_DIR / "format_schemas"),
    ]
    config = CONFIG_DIR / "config.d"
    for path in sorted(config.glob("*.xml")) if config.is_dir() else []:
        try:
            root = parse_xml(path)
        except (ElementTree.ParseError, OSError):
            continue  # the server itself refuses it, with the reason
        for disk in root.findall("storage_configuration/disks/*"):
            for key in ("path", "metadata_path"):
                value = (disk.findtext(key) or "").strip()
                if value:
                    found.append(value)
    return found


def check_config() -> tuple[list[str], Settings]:
    """(listen hosts, backup settings) from the config dirs, or refuse to start."""
    for sub, names in REQUIRED.items():
        for name in names:
            path = CONFIG_DIR / sub / name
            if not path.exists():
                refuse(
                    f"clickhouse: refusing to start: {path} is missing: ship the low-memory "
                    "config (config.d: logs.xml, ipv4-only.xml, low-resources.xml; users.d: "
                    "default-profile-low-resources-overrides.xml) before the first start"
                )
    hosts: list[str] = []
    settings = Settings()
    for sub in REQUIRED:
        for path in sorted((CONFIG_DIR / sub).iterdir()):
            if path.suffix not in (".xml", ".yaml", ".yml"):
                continue
            if not path.is_file():
                refuse(
                    f"clickhouse: refusing to start: {path} is a directory, not a file "
                    "(a bind mount of a file that did not exist on the host?)"
                )
            if path.suffix != ".xml":
                continue
            try:
                root = parse_xml(path)
            except ElementTree.ParseError as exc:
                refuse(f"clickhouse: refusing to start: cannot parse {path}: {exc}")
            if root.tag not in ("clickhouse", "yandex"):
                refuse(f"clickhouse: refusing to start: {path}: root element must be <clickhouse>")
            if sub == "config.d":
                hosts += [(e.text or "").strip() for e in root.findall("listen_host")]
                settings.allowed_paths += [
                    Path((e.text or "").strip()) for e in root.findall("backups/allowed_path")
                ]
                settings.allowed_disks += [
                    (e.text or "").strip() for e in root.findall("backups/allowed_disk")
                ]
                for disk in root.findall("storage_configuration/disks/*"):
                    disk_path = disk.findtext("path")
                    if disk_path:
                        settings.disks[disk.tag] = Path(disk_path.strip())
    return hosts, settings


class Users:
    """Who may run queries, from where (the image entrypoint's user setup)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.user = env.get("CLICKHOUSE_USER") or "default"
        self.password = env.get("CLICKHOUSE_PASSWORD", "")
        self.open_default = env.get("CLICKHOUSE_SKIP_USER_SETUP") == "1"
        if self.password:
            log(f"clickhouse: user {self.user!r} needs its password (CLICKHOUSE_PASSWORD)")
        elif self.open_default:
            log("clickhouse: CLICKHOUSE_SKIP_USER_SETUP=1: password-less default user, any network")
        else:
            log(
                "clickhouse: neither CLICKHOUSE_USER nor CLICKHOUSE_PASSWORD is set, "
                "disabling network access for user 'default'"
            )

    def check(self, user: str, password: str, client: str) -> None:
        if self.password and user == self.user:
            if secrets.compare_digest(password.encode(), self.password.encode()):
                return
        elif (
            user == "default"
            and password == ""
            and (self.open_default or client in LOCAL)
            and not (self.password and self.user == "default")
        ):
            return
        raise ChError(
            516,
            f"{user}: Authentication failed: password is incorrect, "
            "or there is no user with such name",
        )


class App(Handler):
    app_name = "clickhouse"
    engine: Engine
    users: Users

    def route(self) -> None:
        path = self.route_path
        has_query = "query" in self.query
        if path in ("/ping", "/replicas_status") or (
            path == "/" and not has_query and self.command in ("GET", "HEAD")
        ):
            self.send(200, "Ok.\n")
        elif path == "/" and self.command in ("GET", "POST", "HEAD"):
            self.run_query()
        elif path == "/play":
            self.send_html(200, "<html><body>ClickHouse stand-in: no play UI</body></html>\n")
        else:
            self.send(404, "There is no handle " + path + "\n")

    def credentials(self) -> tuple[str, str]:
        user = self.headers.get("X-ClickHouse-User")
        if user is not None:
            return user, self.headers.get("X-ClickHouse-Key", "")
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                decoded = base64.b64decode(auth[6:]).decode()
            except ValueError:
                decoded = ":"
            name, _, password = decoded.partition(":")
            return name or "default", password
        return self.param("user", "default"), self.param("password", "")

    def run_query(self) -> None:
        started = time.monotonic()
        query_id = self.param("query_id") or str(uuid.uuid4())
        headers = {"X-ClickHouse-Query-Id": query_id, "X-ClickHouse-Timezone": "UTC"}
        try:
            self.users.check(*self.credentials(), self.client_address[0])
            sql = self.param("query")
            body = self.body().decode() if self.command == "POST" else ""
            sql = f"{sql}\n{body}" if sql and body else sql or body
            database = self.param("database") or self.headers.get(
                "X-ClickHouse-Database", "default"
            )
            self.engine.require_database(database)
            readonly = self.command != "POST" and self.param("readonly", "2") != "0"
            result = self.engine.execute(sql, database, readonly=readonly)
            fmt = (
                statement_format(sql)
                or self.param("default_format")
                or self.headers.get("X-ClickHouse-Format")
                or "TabSeparated"
            )
            text, content_type = render(result, fmt, time.monotonic() - started)
        except ChError as exc:
            headers["X-ClickHouse-Exception-Code"] = str(exc.code)
            log(f"clickhouse: query failed: {exc.text().strip()}")
            self.send(exc.http_status, exc.text(), "text/plain; charset=UTF-8", headers)
            return
        headers["X-ClickHouse-Format"] = fmt
        headers["X-ClickHouse-Summary"] = json.dumps(
            {
                "read_rows": str(result.rows_read),
                "written_rows": "0",
                "result_rows": str(len(result.rows)),
            }
        )
        self.send(200, text, content_type, headers)


def main() -> None:
    if sys.argv[1:] == ["--directories"]:
        print("\n".join(directories()))
        return
    os.umask(0o027)
    hosts, settings = check_config()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    App.engine = Engine(DATA_DIR / "standin.sqlite3", settings)
    App.users = Users(dict(os.environ))
    database = os.environ.get("CLICKHOUSE_DB")
    if database:
        App.engine.execute(
            f"CREATE DATABASE IF NOT EXISTS `{database.replace('`', '``')}`", "default"
        )
    host = hosts[0] if hosts else ""
    log(
        f"clickhouse: version {VERSION} (vpsctl stand-in), data in {DATA_DIR}, "
        f"running as uid {os.getuid()} gid {os.getgid()}"
    )
    serve(App, host, int(os.environ.get("CLICKHOUSE_HTTP_PORT", "8123")))


if __name__ == "__main__":
    sys.exit(main())
