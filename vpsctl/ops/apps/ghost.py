"""Ghost's first launch, claimed by vpsctl, and the Content API key the audit uses.

Ghost's owner is whoever first completes its setup. vpsctl does it itself at the stack's
first start, before the edge routes to Ghost (Admin API, as the setup screen does):

1. ``GET /ghost/api/admin/authentication/setup/`` → ``{"setup": [{"status": false}]}``;
2. ``POST`` the same path with the owner's name, e-mail, password and the blog title;
3. ``POST /ghost/api/admin/session/`` (the owner's first sign-in: Ghost verifies no device
   for a user who never signed in, so no e-mailed code is needed) → a session cookie;
4. ``POST /ghost/api/admin/integrations/?include=api_keys`` with the integration
   ``vpsctl audit`` → its Content API key.

**Where the key is kept.** Nowhere in secrets.env: the key exists only once Ghost does. The
box keeps it in ``/opt/vpsctl/apps/<stack>/ghost-content-key`` (root, 0600, the key alone),
written only when it differs; ``vpsctl audit`` reads it there. Ghost itself keeps it in its
database (``api_keys`` of the integration ``vpsctl audit``), which the backups carry.

**How a rebuild gets it back.** Every later apply (a second one, or a rebuild whose
restored database holds the owner and the integration) finds Ghost set up and does NOT
claim again, nor sign in: in production Ghost verifies every staff sign-in from a new
device with a code it mails (``staffDeviceVerification``), so a script cannot sign in
twice. vpsctl reads the key from Ghost's own database instead, through the stack's MySQL
service, with the connection settings Ghost itself uses (the password travels on stdin,
never on a command line), and writes the box's copy again.

Only when Ghost is set up, its owner has never signed in, and the integration is missing
(a claim interrupted between steps 2 and 4) does vpsctl sign in to create it; when the
owner has signed in already, the error says to create the integration in Ghost admin.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING

from vpsctl.core.appsteps import GHOST_INTEGRATION, ghost_key_path
from vpsctl.errors import display_path, register_secrets
from vpsctl.host import commands
from vpsctl.host.remote import RemoteError
from vpsctl.ops.apps import (
    AppError,
    Response,
    StepContext,
    cookie_pair,
    find_container,
    owner_credentials,
    request,
)

if TYPE_CHECKING:
    from vpsctl.core.appsteps import AppStep

ADMIN = "/ghost/api/admin"
SESSION_COOKIE = "ghost-admin-api-session"
CONTENT_KEY = re.compile(r"[0-9a-f]{26}")


def setup_done(base: str, host: str, timeout: float = 30.0) -> bool:
    """Whether Ghost has an owner (its setup was completed)."""
    answer = request(base, host, "GET", f"{ADMIN}/authentication/setup/", timeout=timeout)
    data = answer.json()
    try:
        status = data["setup"][0]["status"]
    except (KeyError, IndexError, TypeError):
        raise AppError(
            f"Ghost's setup status: unexpected answer {answer.status}: {answer.text()}"
        ) from None
    if not isinstance(status, bool):
        raise AppError(f"Ghost's setup status: not true or false: {answer.text()}")
    return status


def setup_owner(base: str, host: str, *, name: str, email: str, password: str, title: str) -> None:
    """Complete Ghost's setup: the owner account (what the first visitor of /ghost/ does)."""
    body = {"setup": [{"name": name, "email": email, "password": password, "blogTitle": title}]}
    # Ghost answers once it has tried to mail the owner a welcome: an SMTP server that does
    # not answer holds the request for up to nodemailer's 2-minute connection timeout
    answer = request(
        base,
        host,
        "POST",
        f"{ADMIN}/authentication/setup/",
        body=json.dumps(body).encode(),
        timeout=180,
    )
    if answer.status not in (200, 201):
        raise AppError(f"Ghost refused the owner's setup ({answer.status}): {_errors(answer)}")


def sign_in(base: str, host: str, *, email: str, password: str) -> str:
    """A staff session (``NAME=VALUE`` of its cookie). Ghost answers 403 and mails a code
    when it wants the device verified (any sign-in but a user's very first)."""
    body = json.dumps({"username": email, "password": password}).encode()
    answer = request(base, host, "POST", f"{ADMIN}/session/", body=body)
    cookie = cookie_pair(answer.cookies, SESSION_COOKIE)
    if answer.status == 403:
        raise AppError(
            "Ghost wants this sign-in verified with a code it e-mailed to the owner (staff "
            "device verification): vpsctl signs in only as the owner's first sign-in"
        )
    if answer.status not in (200, 201) or not cookie:
        raise AppError(f"Ghost refused the owner's sign-in ({answer.status}): {_errors(answer)}")
    return cookie


def create_integration(base: str, host: str, cookie: str) -> str:
    """Create the integration ``vpsctl audit``; its Content API key."""
    body = json.dumps({"integrations": [{"name": GHOST_INTEGRATION}]}).encode()
    answer = request(
        base, host, "POST", f"{ADMIN}/integrations/?include=api_keys", body=body, cookie=cookie
    )
    if answer.status not in (200, 201):
        raise AppError(
            f"Ghost refused to create the integration {GHOST_INTEGRATION!r} "
            f"({answer.status}): {_errors(answer)}"
        )
    try:
        keys = answer.json()["integrations"][0]["api_keys"]
        key = next(k["secret"] for k in keys if k.get("type") == "content")
    except (KeyError, IndexError, TypeError, StopIteration):
        raise AppError("Ghost created the integration but sent no Content API key") from None
    if not isinstance(key, str) or not CONTENT_KEY.fullmatch(key):
        raise AppError("Ghost's Content API key is not 26 hex digits")
    register_secrets([key])
    return key


def _errors(answer: Response) -> str:
    data = answer.json()
    if isinstance(data, dict) and isinstance(data.get("errors"), list):
        said = [
            " ".join(str(e.get(k) or "") for k in ("message", "context")).strip()
            for e in data["errors"]
            if isinstance(e, dict)
        ]
        return "; ".join(s for s in said if s)[:300] or answer.text()
    return answer.text()


# ── Ghost's database, read through the stack's MySQL service ────────────────────────────

# the integration's name is GHOST_INTEGRATION (a test checks it)
KEY_QUERY = (
    "SELECT 'key', k.secret FROM api_keys k JOIN integrations i ON i.id = k.integration_id "
    "WHERE i.name = 'vpsctl audit' AND k.type = 'content' ORDER BY k.created_at LIMIT 1;\n"
    "SELECT 'owner_signed_in', IF(u.last_seen IS NULL, 'no', 'yes') FROM users u "
    "JOIN roles_users ru ON ru.user_id = u.id JOIN roles r ON r.id = ru.role_id "
    "WHERE r.name = 'Owner' LIMIT 1;\n"
)


def database_command(container: str, user: str, database: str) -> str:
    """``mysql`` in the database container, its password read from the first line of stdin
    (never on a command line), the query from the rest."""
    inner = 'IFS= read -r MYSQL_PWD; export MYSQL_PWD; exec mysql -h 127.0.0.1 -u "$1" -N -B "$2"'
    return commands.join(
        ["docker", "exec", "-i", container, "sh", "-c", inner, "sh", user, database]
    )


def read_database(ctx: StepContext, stack: str, service: str) -> tuple[str | None, bool]:
    """(the ``vpsctl audit`` integration's Content API key or None, whether the owner has
    ever signed in), read from Ghost's MySQL with Ghost's own connection settings."""
    svc = ctx.spec.stacks[stack].services[service]
    env = ctx.spec.environment(stack, service)
    db_service = str(env.get("database__connection__host", ""))
    user = str(env.get("database__connection__user", ""))
    database = str(env.get("database__connection__database", ""))
    secret_name = svc.secrets.get("database__connection__password")
    secret = ctx.spec.secret(secret_name) if secret_name else None
    if not (db_service and user and database and secret is not None):
        raise AppError(f"{stack}: Ghost's database connection settings are incomplete")
    container, _ = find_container(ctx.session, stack, db_service)
    try:
        result = ctx.session.feed(
            database_command(container, user, database),
            f"{secret.reveal()}\n{KEY_QUERY}".encode(),
            120,
            purpose=f"reading Ghost's integrations from {stack}/{db_service}",
        )
    except RemoteError as exc:
        raise AppError(f"{stack}: Ghost's database could not be read: {exc}") from None
    key: str | None = None
    signed_in = True  # unknown counts as signed in: never try a sign-in that mails a code
    for line in result.stdout.splitlines():
        words = line.split("\t")
        if len(words) == 2 and words[0] == "key" and CONTENT_KEY.fullmatch(words[1]):
            key = words[1]
            register_secrets([key])
        elif len(words) == 2 and words[0] == "owner_signed_in":
            signed_in = words[1] != "no"
    return key, signed_in


# ── the step ─────────────────────────────────────────────────────────────────────────────


def converge(ctx: StepContext, step: AppStep) -> str:
    """Claim Ghost's first launch if nobody has, find the Content API key of the integration
    ``vpsctl audit`` (creating it only as the owner's first sign-in), and keep it on the box
    when the box's copy differs. What it did, in words (never the key)."""
    name, email, password = owner_credentials(ctx.spec, step.stack)
    done: list[str] = []
    key: str | None
    if not setup_done(ctx.base, ctx.host):
        # the site's title until the owner names it in Ghost admin: its public host name
        setup_owner(ctx.base, ctx.host, name=name, email=email, password=password, title=ctx.host)
        ctx.say(f"{step.stack}: Ghost's owner {email} claimed by vpsctl (first launch)")
        done.append(f"owner {email} claimed")
        cookie = sign_in(ctx.base, ctx.host, email=email, password=password)
        key = create_integration(ctx.base, ctx.host, cookie)
        done.append(f"integration {GHOST_INTEGRATION!r} created")
    else:
        key, signed_in = read_database(ctx, step.stack, step.service)
        if key is None and signed_in:
            raise AppError(
                f"{step.stack}: Ghost is set up, but has no integration {GHOST_INTEGRATION!r} "
                "and its owner has signed in before (a new sign-in needs the code Ghost "
                "mails): in Ghost admin → Settings → Integrations → Add custom integration "
                f"named {GHOST_INTEGRATION!r}, then run `vpsctl apply -i "
                f"{display_path(ctx.spec.inventory)}` again (it reads the key from Ghost's "
                "database)"
            )
        if key is None:
            cookie = sign_in(ctx.base, ctx.host, email=email, password=password)
            key = create_integration(ctx.base, ctx.host, cookie)
            done.append(f"integration {GHOST_INTEGRATION!r} created")
        else:
            done.append("owner already set up (nothing claimed); key read from Ghost's database")
    assert key is not None
    done.append(keep_key(ctx, step.stack, key))
    return "Ghost: " + "; ".join(done)


def keep_key(ctx: StepContext, stack: str, key: str) -> str:
    """Write the key to the box's copy when it differs (root, 0600, no newline)."""
    path = ghost_key_path(stack)
    have = ctx.facts.app_files.get(path)
    sha = hashlib.sha256(key.encode()).hexdigest()
    if have is not None and have[1] == sha and not have[0] & 0o077:
        return f"key file {path} up to date"
    ctx.session.put_files([(path, key.encode(), 0o600)])
    ctx.facts.app_files[path] = (0o600, sha)
    return f"key written to {path}"
