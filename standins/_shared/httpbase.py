"""The HTTP plumbing every Python stand-in shares (stdlib only).

Each build context carries an identical copy of this file (contexts are self-contained);
tests/e2e/test_standins.py checks the copies stay identical. It gives: one log line per
request on stderr (path only: query strings can carry API keys), HTTP/1.1 with keep-alive,
request bodies (Content-Length or chunked), JSON and HTML answers, and a server that stops
at once on SIGTERM/SIGINT (``docker stop``) even as PID 1.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 16 * 1024 * 1024
_logger = logging.getLogger("standin")
_logger.addHandler(logging.StreamHandler(sys.stderr))
_logger.propagate = False


def log(message: str) -> None:
    """One line on stderr, flushed (containers' logs are stderr/stdout)."""
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()


def refuse(message: str, code: int = 1) -> NoReturn:
    """Print why the program cannot start (never a secret value) and exit non-zero."""
    log(message)
    sys.exit(code)


class HttpError(Exception):
    """Raised by a handler to answer ``status`` with a JSON error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Handler(BaseHTTPRequestHandler):
    """Subclasses implement :meth:`route`; ``self.route_path`` and ``self.query`` are set."""

    protocol_version = "HTTP/1.1"
    server_version = "standin"
    sys_version = ""
    app_name = "standin"
    route_path = "/"
    query: dict[str, list[str]]
    _body: bytes | None = None
    _started = 0.0

    # ── plumbing ──────────────────────────────────────────────────────────────────────
    def _dispatch(self) -> None:
        self._started = time.monotonic()
        self._body = None
        url = urlsplit(self.path)
        self.route_path = url.path or "/"
        self.query = parse_qs(url.query, keep_blank_values=True)
        try:
            self.route()
        except HttpError as exc:
            self.send_json(exc.status, self.error_body(exc))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:  # a stand-in answers 500 and keeps serving, like an app
            _logger.exception("%s: error on %s %s", self.app_name, self.command, self.route_path)
            self.send_json(500, self.error_body(HttpError(500, "internal error")))

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch

    def route(self) -> None:
        raise HttpError(404, "not found")

    def error_body(self, error: HttpError) -> Any:
        """The JSON body of an error answer (apps override it with their own shape)."""
        return {"error": error.message}

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        took = (time.monotonic() - self._started) * 1000 if self._started else 0.0
        log(
            f"{self.app_name}: {self.client_address[0]} "
            f'"{self.command} {self.route_path}" {code} {took:.1f}ms'
        )

    def log_message(self, fmt: str, *args: Any) -> None:
        log(f"{self.app_name}: {self.client_address[0]} {fmt % args}")

    # ── request ───────────────────────────────────────────────────────────────────────
    def body(self) -> bytes:
        """The request body (read once, then cached)."""
        if self._body is not None:
            return self._body
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY:
                    raise HttpError(413, "request body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self._body = b"".join(chunks)
        else:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise HttpError(400, "bad Content-Length") from None
            if length > MAX_BODY:
                raise HttpError(413, "request body too large")
            self._body = self.rfile.read(length) if length > 0 else b""
        return self._body

    def json_body(self) -> Any:
        """The request body parsed as JSON, or a 400."""
        try:
            return json.loads(self.body() or b"null")
        except (ValueError, UnicodeDecodeError):
            raise HttpError(400, "request body is not valid JSON") from None

    def param(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0] if values else default

    # ── response ──────────────────────────────────────────────────────────────────────
    def send(
        self,
        status: int,
        body: bytes | str = b"",
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        if self._body is None and self.command not in ("GET", "HEAD"):
            try:
                self.body()  # drain an unread body, or the next keep-alive request breaks
            except HttpError:
                self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self.send(status, json.dumps(obj, indent=None) + "\n", "application/json", headers)

    def send_html(self, status: int, html: str, headers: dict[str, str] | None = None) -> None:
        self.send(status, html, "text/html; charset=utf-8", headers)


def _stop(signum: int, _frame: object) -> NoReturn:
    log(f"received {signal.Signals(signum).name}, shutting down")
    sys.exit(0)


# listen addresses that mean "everywhere" (the stand-ins listen on IPv4 only, like the
# docker networks they run on)
WILDCARDS = ("", "*", "0.0.0.0", "::", "[::]")  # noqa: S104


def serve(handler: type[Handler], host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT; a wildcard ``host`` means every IPv4 address."""
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    host = "" if host in WILDCARDS else host
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    log(f"{handler.app_name}: listening on {host or '*'}:{port}")
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
