"""The app steps a spec asks for, as data: what vpsctl does inside an app after its health
gate (claim a first launch, set in-app settings). Pure: no I/O here (render and plan use it).

Each step carries a digest per part of what it sets; the manifest records the digests a
successful apply set, so a plan shows a step only when something differs from that record
(or a file the step keeps on the box is missing), and a second apply changes nothing. A
digest covers secret values too, hashed with the rest: a new SMTP password re-applies the
settings, and no value is ever shown.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from vpsctl.core.layout import HOST_ROOT
from vpsctl.spec.models import Stack
from vpsctl.spec.studio import Spec

APPS_ROOT = f"{HOST_ROOT}/apps"  # files the app steps keep on the box, one directory a stack
StepKind = Literal["first_launch", "listmonk_settings"]  # as plans and the manifest name it
FIRST_LAUNCH: Final = "first_launch"
LISTMONK_SETTINGS: Final = "listmonk_settings"
# The Ghost integration whose Content API key vpsctl uses: a name, not a command (joined so
# that the scan for suggested commands without `-i` does not take it for one).
GHOST_INTEGRATION = " ".join(("vpsctl", "audit"))


def ghost_key_path(stack: str) -> str:
    """Where the box keeps the Ghost Content API key of ``stack`` (root, 0600, the key
    alone): vpsctl writes it at apply, the audit reads it there."""
    return f"{APPS_ROOT}/{stack}/ghost-content-key"


@dataclass(frozen=True)
class AppStep:
    """One step inside an app: which stack and service, what it does (``label``, safe to
    print), and a digest per part it sets (``parts``: part → sha256)."""

    stack: str
    kind: StepKind
    app: str  # ghost | plausible | listmonk
    service: str
    port: int
    label: str
    parts: dict[str, str] = field(default_factory=dict)
    files: tuple[str, ...] = ()  # files on the box the step keeps (must exist once done)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def service_port(stack: Stack, service: str) -> int | None:
    """The port ``service`` serves on: a route's upstream port, else its first ``expose``."""
    for route in stack.routes:
        if route.service == service:
            return route.port
    svc = stack.services.get(service)
    return svc.expose[0] if svc is not None and svc.expose else None


def public_host(spec: Spec, stack: str, service: str) -> str | None:
    """The public host name the edge serves ``service`` of ``stack`` under (sent as Host)."""
    for route in spec.stacks[stack].routes:
        if route.service == service:
            return spec.domain(stack, route.domain)
    domains = spec.host.stacks[stack].domains
    return next(iter(domains.values()), None)


def listmonk_wanted(spec: Spec, stack: str) -> dict[str, Any]:
    """The listmonk settings the spec sets, as listmonk names them (the SMTP password
    included: never print this)."""
    settings = spec.stacks[stack].listmonk
    assert settings is not None
    smtp = settings.smtp
    secret = spec.secret(smtp.password_secret)
    wanted: dict[str, Any] = {"app.root_url": spec.resolve(stack, settings.root_url)}
    if settings.from_email is not None:
        wanted["app.from_email"] = settings.from_email
    wanted["smtp"] = {
        "enabled": True,
        "host": smtp.host,
        "port": smtp.port,
        "auth_protocol": smtp.auth,
        "tls_type": smtp.tls,
        "username": smtp.username,
        "password": secret.reveal() if secret is not None else "",
    }
    return wanted


def desired_steps(spec: Spec) -> dict[str, tuple[AppStep, ...]]:
    """Every stack's app steps, in the order they run."""
    out: dict[str, tuple[AppStep, ...]] = {}
    for name, stack in spec.stacks.items():
        steps: list[AppStep] = []
        first = stack.first_launch
        if first is not None:
            port = service_port(stack, first.service) or 0
            if first.app == "ghost":
                label = (
                    f"first launch of Ghost: owner claimed by vpsctl ({first.owner_email}); "
                    f'Content API key of the integration "{GHOST_INTEGRATION}" kept in '
                    f"{ghost_key_path(name)}"
                )
                files: tuple[str, ...] = (ghost_key_path(name),)
            else:
                label = (
                    f"first launch of Plausible: owner registered by vpsctl ({first.owner_email})"
                )
                files = ()
            steps.append(
                AppStep(
                    name,
                    FIRST_LAUNCH,
                    first.app,
                    first.service,
                    port,
                    label,
                    {"owner": _digest([first.app, first.service])},
                    files,
                )
            )
        if stack.listmonk is not None:
            wanted = listmonk_wanted(spec, name)
            steps.append(
                AppStep(
                    name,
                    LISTMONK_SETTINGS,
                    "listmonk",
                    stack.listmonk.service,
                    service_port(stack, stack.listmonk.service) or 0,
                    "listmonk settings",
                    {key: _digest(value) for key, value in wanted.items()},
                )
            )
        if steps:
            out[name] = tuple(steps)
    return out
