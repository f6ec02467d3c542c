"""Talking to the apps themselves: first-launch claims and in-app settings.

::

    VpsctlError
     └── AppError      (apps) an app's own API refused or failed a step vpsctl needs

The Applier runs a stack's app steps (:mod:`vpsctl.core.appsteps`) after its health gate and
before its probes, so before the edge routes to it (stacks start before ``edge``): a first
launch is claimed while nobody else can reach the app. :func:`run_step` finds the service's
container address on the box, opens a TCP forward to it through the SSH session
(:meth:`vpsctl.host.remote.Session.forward`; nothing is published), and runs the app's client:
``vpsctl.ops.apps.ghost``, ``vpsctl.ops.apps.plausible``, ``vpsctl.ops.apps.listmonk``. Clients take
``base`` (``http://127.0.0.1:PORT``) and ``host`` (the public name, sent as ``Host`` and as
``Origin: https://HOST``, with ``X-Forwarded-Proto: https``, as Caddy would).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from vpsctl.core import sections
from vpsctl.errors import VpsctlError, masked
from vpsctl.host.commands import docker

if TYPE_CHECKING:
    from vpsctl.core.appsteps import AppStep
    from vpsctl.core.facts import HostFacts
    from vpsctl.host.remote import Remote
    from vpsctl.spec.studio import Spec


class AppError(VpsctlError):
    """An app's API refused or failed a step (claim, key, settings); the message is safe."""


# ── HTTP, as Caddy would send it ─────────────────────────────────────────────────────────


@dataclass
class Response:
    """An HTTP answer: status, headers (lower-case names; ``set-cookie`` all of them), body."""

    status: int
    headers: dict[str, str]
    body: bytes
    cookies: list[str] = field(default_factory=list)

    def json(self) -> Any:
        """The body as JSON (``None`` when it is not JSON)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def text(self, limit: int = 300) -> str:
        """The start of the body, for an error message (secrets masked)."""
        return masked(" ".join(self.body.decode(errors="replace").split())[:limit])


def request(
    base: str,
    host: str,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    content_type: str = "application/json",
    cookie: str = "",
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
) -> Response:
    """One request to ``base`` (``http://127.0.0.1:PORT``) as the edge would pass it on:
    ``Host: HOST``, ``Origin: https://HOST``, ``X-Forwarded-Proto: https``. Redirects are
    answers, never followed. A connection failure raises :class:`AppError`."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    sent = {
        "Host": host,
        "Origin": f"https://{host}",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": host,
        "Accept": "application/json, text/html",
        "User-Agent": "vpsctl",
    }
    if body is not None:
        sent["Content-Type"] = content_type
    if cookie:
        sent["Cookie"] = cookie
    sent.update(headers or {})
    try:
        conn.request(method, path, body=body, headers=sent)
        answer = conn.getresponse()
        data = answer.read()
    except (OSError, http.client.HTTPException) as exc:
        raise AppError(f"{method} {path} on {host} failed: {exc}") from None
    finally:
        conn.close()
    return Response(
        answer.status,
        {k.lower(): v for k, v in answer.getheaders()},
        data,
        [v for k, v in answer.getheaders() if k.lower() == "set-cookie"],
    )


def cookie_pair(set_cookies: list[str], name: str) -> str:
    """``NAME=VALUE`` of cookie ``name`` from ``Set-Cookie`` headers ("" when absent)."""
    for header in set_cookies:
        pair = header.split(";", 1)[0].strip()
        if pair.split("=", 1)[0] == name:
            return pair
    return ""


# ── the dispatcher ───────────────────────────────────────────────────────────────────────


def find_container(session: Remote, stack: str, service: str) -> tuple[str, str]:
    """(container id, address on the stack's own network) of the running ``service``."""
    result = session.run(
        docker.running_container(stack, service),
        60,
        check=False,  # judged here: no running container is the step's failure, said so
        purpose=f"finding the container of {stack}/{service}",
    )
    ident = ""
    networks: dict[str, str] = {}
    for section in sections.split(result.stdout):
        words = section.words
        if section.name == "id" and len(words) == 1:
            ident = words[0]
        elif section.name == "net" and len(words) == 2:
            networks[words[0]] = words[1]
    if not result.ok or not ident:
        raise AppError(f"{stack}: no running container of service {service} to talk to")
    # a Swarm task (a cluster's node): only its docker_gwbridge address is the host's to reach
    gateway = networks.get(docker.GWBRIDGE, "").partition("/")[0]
    address = (
        gateway or networks.get(f"{stack}_default") or next((a for a in networks.values() if a), "")
    )
    if not address:
        raise AppError(f"{stack}: the container of {service} has no network address")
    return ident, address


@dataclass
class StepContext:
    """What a step's client gets: the spec, the session, the host facts (for files the
    step keeps), how to say progress, and the local forward's ``base`` and public ``host``."""

    spec: Spec
    session: Remote
    facts: HostFacts
    say: Callable[[str], None]
    base: str
    host: str
    differ: tuple[str, ...] = ()  # the parts that differ from what the last apply set


def run_step(  # noqa: PLR0917 - the Applier's whole context, passed on as it is
    step: AppStep,
    spec: Spec,
    session: Remote,
    facts: HostFacts,
    say: Callable[[str], None],
    differ: tuple[str, ...] = (),
) -> str:
    """Run one app step against the live app (see the module); what it did, in words.
    Raises :class:`AppError` when the app refuses or cannot be reached."""
    from vpsctl.core.appsteps import FIRST_LAUNCH, public_host  # noqa: PLC0415

    host = public_host(spec, step.stack, step.service)
    if host is None or not step.port:
        raise AppError(f"{step.stack}: no public host name or port for service {step.service}")
    _ident, address = find_container(session, step.stack, step.service)
    with session.forward(address, step.port) as (local, port):
        ctx = StepContext(spec, session, facts, say, f"http://{local}:{port}", host, differ)
        if step.kind == FIRST_LAUNCH and step.app == "ghost":
            from vpsctl.ops.apps import ghost  # noqa: PLC0415

            return ghost.converge(ctx, step)
        if step.kind == FIRST_LAUNCH and step.app == "plausible":
            return _plausible(ctx, step)
        from vpsctl.ops.apps import listmonk  # noqa: PLC0415

        return listmonk.converge(ctx, step)


def owner_credentials(spec: Spec, stack: str) -> tuple[str, str, str]:
    """(name, email, password) of the owner ``first_launch`` of ``stack`` declares."""
    first = spec.stacks[stack].first_launch
    assert first is not None
    secret = spec.secret(first.password_secret)
    if secret is None:
        raise AppError(f"{stack}: secret {first.password_secret} is missing from secrets.env")
    return first.owner_name, first.owner_email, secret.reveal()


def _plausible(ctx: StepContext, step: AppStep) -> str:
    from vpsctl.ops.apps import plausible  # noqa: PLC0415 - websockets loads only for Plausible

    if not plausible.first_launch_pending(ctx.base, ctx.host):
        return "Plausible has an owner already (nothing claimed)"
    name, email, password = owner_credentials(ctx.spec, step.stack)
    plausible.register_owner(ctx.base, ctx.host, name=name, email=email, password=password)
    if plausible.first_launch_pending(ctx.base, ctx.host):
        raise AppError(f"{step.stack}: Plausible still redirects to /register after registering")
    return f"Plausible's owner {email} registered by vpsctl"
