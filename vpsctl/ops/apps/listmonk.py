"""Listmonk's database settings (``app.root_url``, ``app.from_email``, SMTP), set through
its API as its own settings page does (listmonk v6.2, ``cmd/settings.go``):

- **auth**: v6 checks an ``Authorization`` header (Basic or ``token``) against API users
  only; the admin that ``LISTMONK_ADMIN_USER``/``LISTMONK_ADMIN_PASSWORD`` create at install
  is a *user* who signs in at ``POST /admin/login`` (form ``username``, ``password``) and
  gets a ``session`` cookie (sessions live in Postgres). vpsctl signs in as that admin.
- ``GET /api/settings`` answers the WHOLE settings object with every password replaced by
  ``•`` (one per character); ``PUT /api/settings`` binds the whole object: a key left out
  becomes its zero value, a password sent as ``""`` keeps the stored one (matched by the
  block's ``uuid``), a password sent as ``•••`` is stored as bullets; without an enabled
  SMTP block it answers 400 ``settings.errorNoSMTP``. So: GET, blank every masked value,
  change what the spec sets, PUT it all back — only when something differs.
- after a change listmonk re-executes itself (500 ms later): vpsctl waits until
  ``/health`` answers again, and reads the settings back to check them.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from vpsctl.core.appsteps import listmonk_wanted
from vpsctl.errors import register_secrets
from vpsctl.ops.apps import AppError, StepContext, cookie_pair, request

if TYPE_CHECKING:
    from vpsctl.core.appsteps import AppStep

MASK = "•"
SMTP_FIELDS = ("enabled", "host", "port", "auth_protocol", "tls_type", "username")


def sign_in(base: str, host: str, username: str, password: str) -> str:
    """The admin's session cookie (``session=…``) from listmonk's login form."""
    form = urlencode({"username": username, "password": password, "next": "/admin"}).encode()
    answer = request(
        base,
        host,
        "POST",
        "/admin/login",
        body=form,
        content_type="application/x-www-form-urlencoded",
    )
    cookie = cookie_pair(answer.cookies, "session")
    if answer.status != 302 or not cookie:
        raise AppError(
            f"listmonk refused the admin's sign-in ({answer.status}): check that "
            "LISTMONK_ADMIN_USER/LISTMONK_ADMIN_PASSWORD are what the first install used"
        )
    return cookie


def get_settings(base: str, host: str, cookie: str) -> dict[str, Any]:
    """The whole settings object (passwords masked by listmonk)."""
    answer = request(base, host, "GET", "/api/settings", cookie=cookie)
    data = answer.json()
    if answer.status != 200 or not isinstance(data, dict) or not isinstance(data.get("data"), dict):
        raise AppError(f"listmonk's GET /api/settings answered {answer.status}: {answer.text()}")
    settings: dict[str, Any] = data["data"]
    return settings


def unmasked(value: Any) -> Any:
    """``value`` with every masked password (``•…``) blanked: listmonk keeps the stored one
    for a blank, and would store the bullets themselves."""
    if isinstance(value, str) and value and set(value) == {MASK}:
        return ""
    if isinstance(value, dict):
        return {k: unmasked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unmasked(v) for v in value]
    return value


def differences(current: dict[str, Any], wanted: dict[str, Any], force: bool) -> list[str]:
    """The settings of ``wanted`` the app does not hold (the SMTP password by its masked
    length, or ``force``: the spec's password changed since the last apply)."""
    out = [key for key in wanted if key != "smtp" and current.get(key) != wanted[key]]
    if force or not _smtp_holds(current.get("smtp"), wanted["smtp"]):
        out.append("smtp")
    return out


def _smtp_holds(smtp: Any, want: dict[str, Any]) -> bool:
    """Whether listmonk's SMTP blocks are the one the spec wants (its password compared by
    the length of its mask: all listmonk shows)."""
    if not isinstance(smtp, list) or len(smtp) != 1 or not isinstance(smtp[0], dict):
        return False
    block = smtp[0]
    if any(block.get(k) != want[k] for k in SMTP_FIELDS):
        return False
    return len(str(block.get("password", ""))) == len(want["password"])


def new_settings(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The whole object to PUT: the current one, masked values blanked, the spec's keys
    set; one SMTP block (the spec's), keeping the first block's uuid and its other fields."""
    body: dict[str, Any] = unmasked(current)
    for key, value in wanted.items():
        if key != "smtp":
            body[key] = value
    blocks = body.get("smtp") if isinstance(body.get("smtp"), list) else []
    first = dict(blocks[0]) if blocks and isinstance(blocks[0], dict) else {}
    first.update(wanted["smtp"])
    first.setdefault("name", "")
    body["smtp"] = [first]
    return body


def put_settings(base: str, host: str, cookie: str, body: dict[str, Any]) -> None:
    """PUT the whole settings object."""
    answer = request(
        base, host, "PUT", "/api/settings", body=json.dumps(body).encode(), cookie=cookie
    )
    if answer.status != 200:
        data = answer.json()
        said = data.get("message") if isinstance(data, dict) else None
        raise AppError(f"listmonk refused the settings ({answer.status}): {said or answer.text()}")


def wait_restarted(base: str, host: str, timeout: float = 60.0) -> float:
    """After a settings change listmonk re-executes itself: wait until it has (its /health
    stops answering, or a few seconds pass) and answers again; the seconds it took."""
    started = time.monotonic()
    went_down = False
    while time.monotonic() - started < timeout:
        try:
            ok = request(base, host, "GET", "/health", timeout=2).status == 200
        except AppError:
            ok = False
        if not ok:
            went_down = True
        elif went_down or time.monotonic() - started > 4:
            return time.monotonic() - started
        time.sleep(0.25)
    raise AppError(f"listmonk did not answer /health again within {timeout:.0f}s of the change")


def admin_credentials(ctx: StepContext, step: AppStep) -> tuple[str, str]:
    """The admin the first install created: LISTMONK_ADMIN_USER and its password secret."""
    env = ctx.spec.environment(step.stack, step.service)
    user, password = env.get("LISTMONK_ADMIN_USER"), env.get("LISTMONK_ADMIN_PASSWORD")
    if not isinstance(user, str) or password is None or isinstance(password, str):
        raise AppError(
            f"{step.stack}: service {step.service} needs LISTMONK_ADMIN_USER in `env` and "
            "LISTMONK_ADMIN_PASSWORD in `secrets`: vpsctl signs in as that admin"
        )
    return user, password.reveal()


def converge(ctx: StepContext, step: AppStep) -> str:
    """Set the spec's listmonk settings when the app's differ; what changed, in words. The
    SMTP password cannot be read back (listmonk masks it): it is sent again when the spec's
    differs from what the last apply set (``ctx.differ``)."""
    force = "smtp" in ctx.differ
    wanted = listmonk_wanted(ctx.spec, step.stack)
    register_secrets([wanted["smtp"]["password"]])
    user, password = admin_credentials(ctx, step)
    cookie = sign_in(ctx.base, ctx.host, user, password)
    try:
        current = get_settings(ctx.base, ctx.host, cookie)
        changed = differences(current, wanted, force)
        if not changed:
            return "listmonk settings: already as the spec says (nothing changed)"
        put_settings(ctx.base, ctx.host, cookie, new_settings(current, wanted))
        took = wait_restarted(ctx.base, ctx.host)
        ctx.say(f"{step.stack}: listmonk restarted after its settings change ({took:.1f}s)")
        after = get_settings(ctx.base, ctx.host, cookie)
        still = differences(after, wanted, False)
        if still:
            raise AppError(
                f"listmonk does not hold the settings after the change: {', '.join(still)}"
            )
        return f"listmonk settings set: {', '.join(changed)}"
    finally:
        sign_out(ctx.base, ctx.host, cookie)


def sign_out(base: str, host: str, cookie: str) -> None:
    """End vpsctl's session (listmonk deletes it from its store): an apply leaves no login
    behind, and a rebuild's restored tables keep the snapshot's row counts."""
    # a session left behind expires on its own; the settings step itself succeeded
    with contextlib.suppress(AppError):
        request(base, host, "POST", "/api/logout", cookie=cookie)
