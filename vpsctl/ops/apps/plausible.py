"""Plausible CE's first launch, claimed the way a browser claims it.

While Plausible has no user, every browser route (``/login`` included) answers 302 to
``/register`` (``FirstLaunchPlug``), and ``DISABLE_REGISTRATION=invite_only`` does not close
that first registration: whoever completes it owns the instance. vpsctl completes it itself,
before the edge publishes the app.

The registration is a Phoenix LiveView (``PlausibleWeb.Live.RegisterForm``, v3.2), so this
module speaks its protocol, as ``phoenix_live_view.js`` does:

1. ``GET /register``: the session cookie (``_plausible_prod``), the CSRF token (``<meta
   name="csrf-token">``) and the LiveView's ``data-phx-session`` / ``data-phx-static``.
2. A websocket to ``/live/websocket?_csrf_token=…&vsn=2.0.0`` with the cookie and
   ``Origin: https://HOST`` (Phoenix's ``check_origin`` compares it with BASE_URL's host).
3. ``phx_join`` on ``lv:<id>`` (url, params ``_csrf_token``/``_mounts``, session, static);
   the reply carries the rendered form.
4. The ``register`` event (type ``form``, the form's fields url-encoded). The LiveView
   inserts the user and answers a diff that sets ``phx-trigger-action`` on the form; if
   Plausible refuses, the diff carries its error messages next to the fields.
5. The triggered form POST (to the form's ``action``: ``/login`` in v3.2, with
   ``user[register_action]=register_form``), which logs the new owner in.

Then ``GET /login`` must answer 200: the first launch is over. Every request goes to
``base`` (a local forward to the container) with ``Host: HOST``, ``X-Forwarded-Proto:
https`` and, where a browser sends one, ``Origin: https://HOST``. Errors name the step and
the field Plausible refused, never the password.
"""

from __future__ import annotations

import json
import re
import socket
import time
from dataclasses import dataclass, field
from html import unescape
from html.parser import HTMLParser
from http.client import HTTPConnection, HTTPException
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

from websockets.exceptions import InvalidHandshake, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from vpsctl.ops.apps import AppError

USER_AGENT = "vpsctl (Plausible first-launch claim)"
FIELDS = ("name", "email", "password", "password_confirmation")
LABELS = {
    "name": "owner name (user[name])",
    "email": "owner email (user[email])",
    "password": "password (user[password])",
    "password_confirmation": "password confirmation (user[password_confirmation])",
}
JOIN_REASONS = {
    "stale": "the session cookie or its CSRF token was not accepted",
    "unauthorized": "the join URL is not this instance's /register (BASE_URL's host?)",
    "nosession": "no LiveView session token was sent",
    "outdated": "the page's LiveView tokens are outdated",
}


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: str

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def cookies(self) -> dict[str, str]:
        jar: dict[str, str] = {}
        for key, value in self.headers:
            if key.lower() != "set-cookie":
                continue
            parsed: SimpleCookie = SimpleCookie()
            try:
                parsed.load(value)
            except CookieError:
                continue
            jar.update({name: morsel.value for name, morsel in parsed.items()})
        return jar


def _split_base(base: str) -> tuple[str, int]:
    url = urlsplit(base)
    if url.scheme != "http" or not url.hostname:
        raise AppError(f"Plausible: base {base!r} must be http://ADDRESS:PORT (a local forward)")
    return url.hostname, url.port or 80


def _request(
    base: str,
    host: str,
    method: str,
    path: str,
    *,
    timeout: float,
    cookies: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
) -> Answer:
    address, port = _split_base(base)
    headers = {
        "Host": host,
        "X-Forwarded-Proto": "https",
        "User-Agent": USER_AGENT,
        "Accept": "text/html",
    }
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    body = None
    if form is not None:
        body = urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        headers["Origin"] = f"https://{host}"
    conn = HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        text = response.read().decode(errors="replace")
        return Answer(response.status, response.getheaders(), text)
    except (OSError, HTTPException) as exc:
        raise AppError(
            f"Plausible at {host}: {method} {path} through {base} failed: {exc}"
        ) from None
    finally:
        conn.close()


def _location_path(answer: Answer) -> str:
    return urlsplit(answer.header("Location") or "").path


def first_launch_pending(base: str, host: str, timeout: float = 10.0) -> bool:
    """Whether Plausible still waits for its first user: ``GET /login`` answers 302 to
    ``/register`` (True) or the login page (False)."""
    answer = _request(base, host, "GET", "/login", timeout=timeout)
    if answer.status in (301, 302, 303, 307) and _location_path(answer) == "/register":
        return True
    if answer.status == 200:
        return False
    raise AppError(
        f"Plausible at {host}: GET /login answered {answer.status}"
        f"{' to ' + repr(answer.header('Location')) if answer.header('Location') else ''}; "
        "expected 200 (an owner exists) or 302 to /register (first launch pending)"
    )


# ── the page and the LiveView's rendered tree ─────────────────────────────────────────────


class _Page(HTMLParser):
    """The bits of a page the LiveView client reads: the CSRF meta tag, the main view's
    container, and (on a rendered form) the form's attributes and its inputs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.csrf: str | None = None
        self.view: dict[str, str] | None = None
        self.form: dict[str, str] | None = None
        self.inputs: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v if v is not None else "" for k, v in attrs}
        if tag == "meta" and values.get("name") == "csrf-token":
            self.csrf = values.get("content")
        elif "data-phx-session" in values and (self.view is None or "data-phx-main" in values):
            if self.view is None or "data-phx-main" not in self.view:
                self.view = values  # the main view, not a child (a flash LiveView, say)
        elif tag == "form" and self.form is None:
            self.form = values
        elif tag == "input":
            self.inputs.append(values)


def parse_page(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


@dataclass
class Rendered:
    """A LiveView's rendered tree: merged with each diff, rendered back to HTML, as
    ``phoenix_live_view.js``'s Rendered does (statics ``s``, dynamics ``"0"``…,
    comprehensions ``d`` with shared templates ``p``, components ``c``)."""

    tree: dict[str, Any] = field(default_factory=dict)

    def merge(self, diff: dict[str, Any]) -> None:
        diff = _resolve_templates(diff, diff.get("p"))
        components = diff.get("c")
        self.tree = _merge(self.tree, {k: v for k, v in diff.items() if k != "c"})
        if isinstance(components, dict):
            old = self.tree.setdefault("c", {})
            for cid, value in components.items():
                new = value
                if isinstance(new, dict) and isinstance(new.get("s"), int) and new["s"] < 0:
                    new = {**new, "s": old.get(str(-new["s"]), {}).get("s", [])}
                old[cid] = _merge(old.get(cid, {}), new) if isinstance(new, dict) else new

    def html(self) -> str:
        components = self.tree.get("c", {})
        return _to_html(self.tree, components, None)


def _resolve_templates(node: Any, templates: Any) -> Any:
    """Comprehensions whose statics are a template id (``"s": 3``) get the template's
    statics from the diff's ``p``, before merging (a later diff brings its own ``p``)."""
    if not isinstance(node, dict):
        return node
    templates = node.get("p", templates)
    out = {k: _resolve_templates(v, templates) for k, v in node.items() if k != "d"}
    if "d" in node:
        out["d"] = [[_resolve_templates(v, templates) for v in row] for row in node["d"]]
        statics = node.get("s")
        if isinstance(statics, int) and isinstance(templates, dict):
            out["s"] = list(templates.get(str(statics), []))
    return out


def _merge(old: Any, new: Any) -> Any:
    if not isinstance(new, dict) or "s" in new or not isinstance(old, dict):
        return new
    merged = dict(old)
    for key, value in new.items():
        merged[key] = _merge(old.get(key), value)
    return merged


def _statics(node: dict[str, Any], components: dict[str, Any], templates: Any) -> list[str]:
    statics = node.get("s", [])
    if isinstance(statics, int):  # a component sharing another one's statics
        if templates is not None and str(statics) in templates:
            return list(templates[str(statics)])
        return list(components.get(str(abs(statics)), {}).get("s", []))
    return list(statics)


def _to_html(node: Any, components: dict[str, Any], templates: Any) -> str:
    if isinstance(node, int):  # a component reference (cid)
        return _to_html(components.get(str(node), ""), components, templates)
    if not isinstance(node, dict):
        return "" if node is None else str(node)
    templates = node.get("p", templates)
    statics = _statics(node, components, templates)
    if "d" in node:
        rows = []
        for row in node["d"]:
            parts = [statics[0] if statics else ""]
            for i, value in enumerate(row):
                parts += [_to_html(value, components, templates), statics[i + 1]]
            rows.append("".join(parts))
        return "".join(rows)
    out = [statics[0] if statics else ""]
    for i, static in enumerate(statics[1:]):
        out += [_to_html(node.get(str(i), ""), components, templates), static]
    return "".join(out)


_ERROR_P = re.compile(r'<p\s+class="([^"]*)"[^>]*>(.*?)</p>', re.S)
_USER_INPUT = re.compile(r'<input\b[^>]*\bname="user\[(\w+)\]"', re.S)
_TAGS = re.compile(r"<[^>]+>")


def _text(fragment: str) -> str:
    return " ".join(unescape(_TAGS.sub("", fragment)).split())


def form_errors(html: str) -> dict[str, list[str]]:
    """Plausible's messages by field, read from the rendered form: the password's length
    hint turned red ("Min 12 characters"), its strength meter ("Password is too weak"), and
    the red ``<p>`` each input shows after it."""
    errors: dict[str, list[str]] = {}
    rest = html
    for match in _ERROR_P.finditer(html):
        classes, text = match[1].split(), _text(match[2])
        if "text-red-500" not in classes:
            continue
        hint = re.fullmatch(r"Min (\d+) characters", text)
        if hint:
            errors.setdefault("password", []).append(f"has to be at least {hint[1]} characters")
            rest = rest.replace(match[0], "")
        elif text == "Password is too weak":
            errors.setdefault("password", []).append("is too weak")
            rest = rest.replace(match[0], "")
    inputs = list(_USER_INPUT.finditer(rest))
    for n, match in enumerate(inputs):
        end = inputs[n + 1].start() if n + 1 < len(inputs) else len(rest)
        for p in _ERROR_P.finditer(rest, match.end(), end):
            if "text-red-500" in p[1].split():
                text = _text(p[2])
                errors.setdefault(match[1], []).append(text)
    return errors


# ── the claim ─────────────────────────────────────────────────────────────────────────────


class _Channel:
    """Phoenix channels over the websocket: V2 JSON arrays [join_ref, ref, topic, event,
    payload]; replies are matched by ref, anything else (diffs, heartbeats) skipped."""

    def __init__(self, ws: ClientConnection, topic: str, deadline: float) -> None:
        self.ws = ws
        self.topic = topic
        self.deadline = deadline
        self.ref = 0
        self.join_ref: str | None = None

    def call(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.ref += 1
        ref = str(self.ref)
        if event == "phx_join":
            self.join_ref = ref
        self.ws.send(json.dumps([self.join_ref, ref, self.topic, event, payload]))
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no reply to {event} in time")
            message = json.loads(self.ws.recv(timeout=left))
            if not isinstance(message, list) or len(message) != 5:
                continue
            _join_ref, reply_ref, topic, kind, body = message
            if topic != self.topic:
                continue
            if kind in ("phx_error", "phx_close"):
                raise AppError(f"the registration LiveView crashed or closed on {event!r} ({kind})")
            if kind == "phx_reply" and reply_ref == ref and isinstance(body, dict):
                return body


def _redact(text: str, password: str) -> str:
    return text.replace(password, "***") if password else text


@dataclass
class _Claim:
    base: str
    host: str
    name: str
    email: str
    password: str
    deadline: float

    @property
    def where(self) -> str:
        return f"Plausible at {self.host}"

    def left(self) -> float:
        return max(1.0, self.deadline - time.monotonic())

    def page(self) -> tuple[dict[str, str], _Page]:
        """GET /register: the session cookie and the parsed page."""
        page = _request(self.base, self.host, "GET", "/register", timeout=self.left())
        if page.status in (301, 302, 303) and _location_path(page) in ("/login", "/sites"):
            raise AppError(
                f"{self.where}: /register redirects to {_location_path(page)}: registration is "
                "closed because a user already exists (the first launch is not pending); "
                "nothing to claim"
            )
        if page.status != 200:
            raise AppError(f"{self.where}: GET /register answered {page.status}; expected 200")
        cookies = page.cookies()
        parsed = parse_page(page.body)
        if not parsed.csrf or not (parsed.view or {}).get("id") or not cookies:
            raise AppError(
                f"{self.where}: /register is not the registration LiveView (no csrf-token "
                "meta tag, data-phx-session container or session cookie)"
            )
        return cookies, parsed

    def live(self, cookies: dict[str, str], page: _Page) -> tuple[dict[str, str], str]:
        """Join the LiveView and send the register event: the form's fields as sent and
        the form as rendered after the reply."""
        view = page.view or {}
        address, port = _split_base(self.base)
        query = urlencode({"_csrf_token": page.csrf, "vsn": "2.0.0"})
        try:
            sock = socket.create_connection((address, port), timeout=self.left())
        except OSError as exc:
            raise AppError(
                f"{self.where}: cannot reach {self.base} for the LiveView socket: {exc}"
            ) from None
        rendered = Rendered()
        with connect(
            f"ws://{self.host}/live/websocket?{query}",
            sock=sock,
            proxy=None,  # the forward is local; never through an environment's proxy
            origin=Origin(f"https://{self.host}"),
            additional_headers={
                "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()),
                "X-Forwarded-Proto": "https",
            },
            user_agent_header=USER_AGENT,
            open_timeout=self.left(),
            compression=None,
        ) as ws:
            channel = _Channel(ws, "lv:" + view["id"], self.deadline)
            joined = channel.call(
                "phx_join",
                {
                    "url": f"https://{self.host}/register",
                    "params": {"_csrf_token": page.csrf, "_mounts": 0, "_mount_attempts": 0},
                    "session": view.get("data-phx-session", ""),
                    "static": view.get("data-phx-static", ""),
                },
            )
            if joined.get("status") != "ok":
                reason = str((joined.get("response") or {}).get("reason", joined))
                raise AppError(
                    f"{self.where}: joining the registration LiveView was refused ({reason}): "
                    f"{JOIN_REASONS.get(reason, 'unexpected reply')}"
                )
            rendered.merge(joined["response"]["rendered"])
            form = parse_page(rendered.html())
            if form.form is None:
                raise AppError(f"{self.where}: the registration LiveView rendered no form")
            fields = {
                i["name"]: i.get("value", "") for i in form.inputs if i.get("type") == "hidden"
            }
            fields.update(
                {
                    "user[name]": self.name,
                    "user[email]": self.email,
                    "user[password]": self.password,
                    "user[password_confirmation]": self.password,
                }
            )
            reply = channel.call(
                "event", {"type": "form", "event": "register", "value": urlencode(fields)}
            )
            if reply.get("status") != "ok":
                raise AppError(f"{self.where}: the register event was refused")
            rendered.merge((reply.get("response") or {}).get("diff") or {})
            return fields, rendered.html()

    def login(self, cookies: dict[str, str], fields: dict[str, str], action: str) -> None:
        """The triggered submit: the form POST that logs the new owner in; then /login
        must answer 200 (the first launch is over)."""
        login = _request(
            self.base, self.host, "POST", action, timeout=self.left(), cookies=cookies, form=fields
        )
        target = _location_path(login)
        if login.status not in (302, 303) or target in ("/login", "/register"):
            raise AppError(
                f"{self.where}: the owner was created, but logging in with the form POST "
                f"{action} answered {login.status}{' to ' + target if target else ''}; "
                "expected a redirect into the app"
            )
        check = _request(self.base, self.host, "GET", "/login", timeout=self.left())
        if check.status != 200:
            raise AppError(
                f"{self.where}: after the registration GET /login answered {check.status}; "
                "expected 200 (the first launch should be over)"
            )


def register_owner(
    base: str, host: str, *, name: str, email: str, password: str, timeout: float = 60.0
) -> None:
    """Register Plausible's first user (the owner) through its registration LiveView and
    log it in; raises :class:`AppError` naming the step or the refused field."""
    claim = _Claim(base, host, name, email, password, time.monotonic() + timeout)
    cookies, page = claim.page()
    try:
        fields, after = claim.live(cookies, page)
    except InvalidStatus as exc:
        status = exc.response.status_code
        hint = (
            f": Origin https://{host} is not BASE_URL's host (Phoenix check_origin); "
            "BASE_URL must be https://HOST"
            if status == 403
            else ""
        )
        raise AppError(
            f"{claim.where}: the LiveView websocket was refused with HTTP {status}{hint}"
        ) from None
    except (InvalidHandshake, WebSocketException, OSError, TimeoutError, ValueError) as exc:
        raise AppError(
            f"{claim.where}: the registration LiveView failed: {_redact(str(exc), password)}"
        ) from None
    submitted = parse_page(after).form or {}
    if "phx-trigger-action" not in submitted:
        errors = form_errors(after)
        if not errors:
            raise AppError(
                f"{claim.where}: Plausible did not create the owner and showed no field error"
            )
        detail = "; ".join(
            f"{LABELS.get(key, key)}: {', '.join(messages)}" for key, messages in errors.items()
        )
        raise AppError(_redact(f"{claim.where} refused the owner registration: {detail}", password))
    action = urlsplit(urljoin(f"https://{host}/register", submitted.get("action", ""))).path
    claim.login(cookies, fields, action)
