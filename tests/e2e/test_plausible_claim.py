"""Plausible's first launch, claimed by :mod:`vpsctl.ops.apps.plausible` against the stand-in
(its Postgres and ClickHouse stand-ins too), on this machine's Docker engine — no box.

The stand-in is as strict as Plausible CE v3.2 where vpsctl touches it: while no user
exists every browser route redirects to /register (so the stack's ``login`` probe fails on
an unclaimed instance), ``invite_only`` leaves that first registration open, the
registration works only through the LiveView (session cookie, CSRF token, ``check_origin``,
the form's validations) and a form POST alone creates no user. The tests below run in file
order on one instance: refusals first (each leaves it unclaimed), then the claim.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest
from ruamel.yaml import YAML
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from tests.e2e.test_standins import (
    DOMAINS,
    STACKS,
    Kit,
    http,
    image,
    plausible_secrets,
    stack_service,
    start_plausible,
)
from vpsctl.host.probes import ProbeTarget, judge
from vpsctl.local import docker as localdocker
from vpsctl.ops.apps import AppError
from vpsctl.ops.apps import plausible as app
from vpsctl.spec.models import Probe

pytestmark = pytest.mark.e2e

HOST = DOMAINS["site"]
OWNER = {"name": "Studio Owner", "email": "owner@lumen.test"}


@dataclass
class Instance:
    kit: Kit
    app: str
    db: str
    port: int
    secret_values: list[str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, **headers: str) -> tuple[int, str, str]:
        answer = http(self.port, path, headers={"Host": HOST, **headers})
        return answer.status, answer.headers.get("location", ""), answer.text

    def users(self) -> int:
        out = self.kit.exec(
            self.db,
            "psql",
            "-U",
            "postgres",
            "-d",
            "plausible_db",
            "-tAc",
            "SELECT count(*) FROM users",
        )
        assert out.code == 0, out.err
        return int(out.out.strip())


@pytest.fixture(scope="module")
def plausible(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    localdocker.ensure_engine()
    kit = Kit()
    try:
        run = start_plausible(kit, plausible_secrets(), tmp_path_factory.mktemp("ch"))
        yield Instance(kit, run.app, run.db, run.port, run.app_svc.secret_values)
    finally:
        kit.cleanup()


def login_probe() -> ProbeTarget:
    data = YAML(typ="safe").load((STACKS / "plausible.yaml").read_text())
    spec = next(p for p in data["probes"] if p["name"] == "login")
    return ProbeTarget("plausible", Probe(**spec), HOST)


def strong_password() -> str:
    return secrets.token_urlsafe(24)


def test_a_fresh_instance_sends_every_browser_route_to_register(plausible: Instance) -> None:
    for path in ("/login", "/", "/sites", "/settings"):
        status, location, _ = plausible.get(path)
        assert (status, location) == (302, "/register"), path
    # the API is not part of the browser pipeline
    assert http(plausible.port, "/api/health").status == 200
    assert app.first_launch_pending(plausible.base, HOST) is True
    # so the stack's login probe (no redirects followed) fails an unclaimed instance
    status, _, body = plausible.get("/login")
    verdict = judge(login_probe(), status, body.encode())
    assert not verdict.ok and "redirect" in verdict.detail
    # invite_only (the stack's setting) leaves the first registration open
    status, _, page = plausible.get("/register")
    assert status == 200 and "data-phx-session" in page


def test_a_form_post_alone_creates_no_user(plausible: Instance) -> None:
    form = urlencode(
        {
            "user[name]": "Stranger",
            "user[email]": "stranger@lumen.test",
            "user[password]": "a-long-enough-passw0rd",
            "user[password_confirmation]": "a-long-enough-passw0rd",
            "user[register_action]": "register_form",
        }
    ).encode()
    headers = {"Host": HOST, "Content-Type": "application/x-www-form-urlencoded"}
    # v3.2 has no POST /register; POST /login is still behind FirstLaunchPlug
    assert http(plausible.port, "/register", "POST", form, headers).status == 404
    login = http(plausible.port, "/login", "POST", form, headers)
    assert (login.status, login.headers.get("location")) == (302, "/register")
    assert plausible.users() == 0


def test_the_websocket_refuses_another_origin(plausible: Instance) -> None:
    query = urlencode({"vsn": "2.0.0"})
    with pytest.raises(InvalidStatus) as refused:
        connect(
            f"ws://127.0.0.1:{plausible.port}/live/websocket?{query}",
            origin=Origin("https://evil.example"),
            additional_headers={"Host": HOST},
            open_timeout=10,
        ).close()
    assert refused.value.response.status_code == 403


def test_a_wrong_public_host_is_refused_by_check_origin(plausible: Instance) -> None:
    # vpsctl sending Origin https://<another host> (a BASE_URL/domain mix-up) is refused
    with pytest.raises(AppError) as refused:
        app.register_owner(
            plausible.base,
            "other.lumen.test",
            name="Owner",
            email="o@lumen.test",
            password=strong_password(),
            timeout=30,
        )
    assert "check_origin" in str(refused.value) and "403" in str(refused.value)
    assert plausible.users() == 0


def test_a_join_without_the_session_cookie_is_stale(plausible: Instance) -> None:
    status, _, page = plausible.get("/register")
    parsed = app.parse_page(page)
    assert status == 200 and parsed.view and parsed.csrf
    query = urlencode({"_csrf_token": parsed.csrf, "vsn": "2.0.0"})
    with connect(
        f"ws://127.0.0.1:{plausible.port}/live/websocket?{query}",
        origin=Origin(f"https://{HOST}"),
        open_timeout=10,
    ) as ws:  # no Cookie: the CSRF token matches no session
        channel = app._Channel(ws, "lv:" + parsed.view["id"], deadline=time.monotonic() + 30)
        reply = channel.call(
            "phx_join",
            {
                "url": f"https://{HOST}/register",
                "params": {"_csrf_token": parsed.csrf, "_mounts": 0},
                "session": parsed.view["data-phx-session"],
                "static": parsed.view["data-phx-static"],
            },
        )
    assert reply == {"status": "error", "response": {"reason": "stale"}}


@pytest.mark.parametrize(
    ("password", "field", "message"),
    [
        ("Sh0rt-pass", "password (user[password])", "has to be at least 12 characters"),
        ("aaaaaaaaaaaaaaaa", "password (user[password])", "is too weak"),
    ],
)
def test_plausible_s_refusals_name_the_field_never_the_password(
    plausible: Instance, password: str, field: str, message: str
) -> None:
    with pytest.raises(AppError) as refused:
        app.register_owner(plausible.base, HOST, **OWNER, password=password, timeout=30)
    text = str(refused.value)
    assert field in text and message in text, text
    assert password not in text
    assert plausible.users() == 0
    assert app.first_launch_pending(plausible.base, HOST) is True


def test_vpsctl_claims_the_first_launch_once(plausible: Instance) -> None:
    password = strong_password()
    app.register_owner(plausible.base, HOST, **OWNER, password=password, timeout=60)
    assert plausible.users() == 1
    assert app.first_launch_pending(plausible.base, HOST) is False
    status, _, body = plausible.get("/login")
    assert judge(login_probe(), status, body.encode()).ok
    # invite_only now closes /register; a second claim is refused, not a second owner
    status, location, _ = plausible.get("/register")
    assert (status, location) == (302, "/login")
    with pytest.raises(AppError) as again:
        app.register_owner(plausible.base, HOST, **OWNER, password=password, timeout=30)
    assert "already exists" in str(again.value) and password not in str(again.value)
    assert plausible.users() == 1
    # the owner lives in Postgres: a restarted app is still claimed
    plausible.kit.docker("restart", plausible.app)
    app_svc = stack_service("plausible", "plausible", plausible_secrets())
    plausible.kit.wait_healthy(plausible.app, app_svc.healthcheck, timeout=60)
    plausible.port = plausible.kit.port(plausible.app, 8000)  # a new ephemeral port
    assert app.first_launch_pending(plausible.base, HOST) is False
    logs = plausible.kit.logs(plausible.app)
    assert password not in logs


def test_without_a_mailer_adapter_plausible_mails_direct_and_says_so() -> None:
    """No MAILER_ADAPTER: Bamboo.Mua, straight to each recipient's MX on port 25 (blocked
    on most VPSes): the stand-in boots, as the real one does, and logs why mail won't come."""
    localdocker.ensure_engine()
    kit = Kit()
    try:
        svc = stack_service("plausible", "plausible", plausible_secrets())
        for name in [k for k in svc.env if k.startswith(("MAILER_", "SMTP_"))]:
            del svc.env[name]
        container = kit.start("plausible", image("plausible"), ["run"], env=svc.env)
        deadline = time.monotonic() + 30
        while "mailer:" not in kit.logs(container):
            assert time.monotonic() < deadline, kit.logs(container)
            time.sleep(0.5)
        logs = kit.logs(container)
        assert "mailer: Bamboo.Mua, direct to each recipient's MX on port 25" in logs
        assert "invitations and password resets will not arrive" in logs
    finally:
        kit.cleanup()
