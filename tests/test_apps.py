"""The app steps: vpsctl claims Ghost's first launch (owner, integration, Content API key),
sets Listmonk's settings, and the Applier runs them after a stack's health gate and before
its probes, once (a second apply makes no app call).

Real Ghost 6 and listmonk cannot run in a unit test (Ghost needs Node and MySQL, listmonk
Postgres): the client tests here talk to small local HTTP servers that answer as the
upstream sources say the real apps do (Ghost's ``authentication``/``session``/
``integrations`` endpoints and staff device verification; listmonk v6.2's session login,
masked settings and full-object PUT). The e2e flow (tests/e2e/test_apply.py) runs the
same clients against real Ghost and the strict listmonk stand-in on a sandbox box.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from tests import factsim
from tests.helpers import assert_no_secrets, edit, golden_prod_copy
from tests.scripted import Call, ScriptedSession, converged_session, run_applier
from vpsctl.cli.views import plan_text
from vpsctl.core.appsteps import GHOST_INTEGRATION, ghost_key_path
from vpsctl.core.facts import MANIFEST, HostFacts
from vpsctl.core.plan import make_plan
from vpsctl.host import probes
from vpsctl.ops import apps
from vpsctl.ops.apply import Applier, StackResult
from vpsctl.ops.apps import AppError, StepContext, ghost, listmonk
from vpsctl.ops.inputs import render_spec
from vpsctl.spec.loader import load_spec
from vpsctl.spec.studio import Spec

INV = "inventory/prod"
BLOG = "blog.lumenstudio.dev"
KEY = "6f1c2d3e4a5b6c7d8e9f0a1b2c"


@pytest.fixture
def prod(tmp_path: Path) -> Iterator[Path]:
    yield golden_prod_copy(tmp_path)


def spec_of(root: Path) -> Spec:
    return load_spec(root / INV)


# ── a Ghost that answers as Ghost 6 does ────────────────────────────────────────────────


class FakeGhost:
    """Ghost 6's setup, session and integrations endpoints, behind a proxy that says https."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.owner: dict[str, Any] | None = None  # name, email, password, signed_in
        self.integrations: list[dict[str, Any]] = []
        self.requests: list[str] = []
        self.sessions: set[str] = set()

    def handle(self, h: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str], Any]:
        self.requests.append(f"{h.command} {h.path}")
        if h.headers.get("Host") != self.host:
            return 404, {}, {"errors": [{"message": "unknown site"}]}
        if h.headers.get("X-Forwarded-Proto") != "https":
            return 301, {"Location": f"https://{self.host}{h.path}"}, None
        if h.command != "GET" and h.headers.get("Origin") != f"https://{self.host}":
            return 400, {}, {"errors": [{"message": "Request made from incorrect origin."}]}
        if h.path == "/ghost/api/admin/authentication/setup/":
            if h.command == "GET":
                return 200, {}, {"setup": [{"status": self.owner is not None}]}
            if self.owner is not None:
                return 403, {}, {"errors": [{"message": "Setup has already been completed."}]}
            data = json.loads(body)["setup"][0]
            assert len(data["password"]) >= 10 and data["blogTitle"]
            self.owner = {**data, "signed_in": False}
            return 201, {}, {"users": [{"email": data["email"]}]}
        if h.path == "/ghost/api/admin/session/":
            data = json.loads(body)
            owner = self.owner
            if owner is None or (data["username"], data["password"]) != (
                owner["email"],
                owner["password"],
            ):
                return 401, {}, {"errors": [{"message": "Your password is incorrect."}]}
            if owner["signed_in"]:  # staff device verification: a code is mailed
                return 403, {}, {"errors": [{"message": "User must verify session to login."}]}
            owner["signed_in"] = True
            self.sessions.add("s3ss10n")
            cookie = "ghost-admin-api-session=s3ss10n; Path=/ghost; HttpOnly; Secure"
            return 201, {"Set-Cookie": cookie}, None
        if h.path == "/ghost/api/admin/integrations/?include=api_keys":
            if "ghost-admin-api-session=s3ss10n" not in h.headers.get("Cookie", ""):
                return 403, {}, {"errors": [{"message": "Authorization failed"}]}
            name = json.loads(body)["integrations"][0]["name"]
            keys = [{"type": "content", "secret": KEY}, {"type": "admin", "secret": "ab" * 32}]
            self.integrations.append({"name": name, "api_keys": keys})
            return 201, {}, {"integrations": [self.integrations[-1]]}
        return 404, {}, {"errors": [{"message": "not found"}]}


def serve(app: Any) -> tuple[ThreadingHTTPServer, str]:
    """Run ``app.handle`` on a local port; (server, base URL)."""

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, headers, data = app.handle(self, body)
            payload = data if isinstance(data, bytes) else json.dumps(data).encode()
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload) if data is not None else 0))
            self.end_headers()
            if data is not None:
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = _any

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def fake_ghost() -> Iterator[tuple[FakeGhost, str]]:
    app = FakeGhost(BLOG)
    server, base = serve(app)
    yield app, base
    server.shutdown()
    server.server_close()


def ghost_ctx(spec: Spec, session: ScriptedSession, base: str, facts: HostFacts) -> StepContext:
    return StepContext(spec, session, facts, lambda _text: None, base, BLOG)


def ghost_step(spec: Spec) -> Any:
    return render_spec(spec).app_steps["ghost"][0]


def answer_database(session: ScriptedSession, key: str | None, signed_in: bool) -> None:
    session.answer(
        r"com\.docker\.compose\.service=mysql",
        stdout="@@id c0ffee\n@@net ghost_default 172.18.0.5\n",
    )
    rows = ([f"key\t{key}"] if key else []) + [f"owner_signed_in\t{'yes' if signed_in else 'no'}"]
    session.answer(r"^docker exec -i c0ffee sh -c", stdout="\n".join(rows) + "\n")


def test_ghost_first_launch_is_claimed_and_the_key_kept_on_the_box(
    prod: Path, fake_ghost: tuple[FakeGhost, str]
) -> None:
    app, base = fake_ghost
    spec = spec_of(prod)
    session = ScriptedSession()
    facts = HostFacts(reachable=True)
    said = ghost.converge(ghost_ctx(spec, session, base, facts), ghost_step(spec))
    assert app.owner is not None and app.owner["email"] == "studio@lumenstudio.dev"
    assert app.owner["blogTitle"] == BLOG  # the site's name until the owner sets a title
    assert [i["name"] for i in app.integrations] == [GHOST_INTEGRATION]
    assert session.written[ghost_key_path("ghost")] == KEY.encode()  # the key alone
    assert not session.ran("mysql")  # a fresh Ghost: nothing to read from its database
    assert KEY not in said and "claimed" in said
    password = spec.secret("GHOST_OWNER_PASSWORD")
    assert password is not None and password.reveal() not in said


def test_ghost_set_up_is_not_claimed_again_and_the_key_comes_from_its_database(
    prod: Path, fake_ghost: tuple[FakeGhost, str]
) -> None:
    """A rebuild: the restored database holds the owner (who has signed in) and the
    integration: no setup, no sign-in (it would need Ghost's mailed code)."""
    app, base = fake_ghost
    app.owner = {"email": "studio@lumenstudio.dev", "password": "x" * 24, "signed_in": True}
    spec = spec_of(prod)
    session = ScriptedSession()
    answer_database(session, KEY, signed_in=True)
    facts = HostFacts(reachable=True)
    said = ghost.converge(ghost_ctx(spec, session, base, facts), ghost_step(spec))
    assert app.requests == ["GET /ghost/api/admin/authentication/setup/"]
    assert session.written[ghost_key_path("ghost")] == KEY.encode()
    assert "nothing claimed" in said
    [command] = session.ran(r"^docker exec -i c0ffee")
    db_password = spec.secret("GHOST_DB_PASSWORD")
    assert db_password is not None and db_password.reveal() not in command  # stdin only
    # the box's copy is right already: not written again
    again = ScriptedSession()
    answer_database(again, KEY, signed_in=True)
    import hashlib  # noqa: PLC0415

    facts.app_files[ghost_key_path("ghost")] = (0o600, hashlib.sha256(KEY.encode()).hexdigest())
    assert "up to date" in ghost.converge(ghost_ctx(spec, again, base, facts), ghost_step(spec))
    assert not again.written


def test_ghost_without_the_integration_after_a_sign_in_says_what_to_do(
    prod: Path, fake_ghost: tuple[FakeGhost, str]
) -> None:
    app, base = fake_ghost
    app.owner = {"email": "studio@lumenstudio.dev", "password": "x" * 24, "signed_in": True}
    spec = spec_of(prod)
    session = ScriptedSession()
    answer_database(session, None, signed_in=True)
    with pytest.raises(AppError, match="Settings → Integrations"):
        ghost.converge(ghost_ctx(spec, session, base, HostFacts(reachable=True)), ghost_step(spec))
    assert not any("session" in r for r in app.requests)  # no sign-in: it would mail a code


def test_ghost_sign_in_that_ghost_wants_verified_is_an_error_not_a_hang(
    fake_ghost: tuple[FakeGhost, str],
) -> None:
    app, base = fake_ghost
    app.owner = {"email": "o@x.dev", "password": "p" * 24, "signed_in": True}
    with pytest.raises(AppError, match="e-mailed"):
        ghost.sign_in(base, BLOG, email="o@x.dev", password="p" * 24)


def test_the_key_query_names_the_integration_vpsctl_creates() -> None:
    assert f"i.name = '{GHOST_INTEGRATION}'" in ghost.KEY_QUERY


# ── a listmonk that answers as listmonk v6.2 does ───────────────────────────────────────

MASK = "•"


class FakeListmonk:
    """listmonk v6.2's login, settings GET (masked) and full-object PUT, and its restart."""

    KEYS = ("app.site_name", "app.root_url", "app.from_email", "smtp", "bounce.mailboxes",
            "upload.s3.aws_secret_access_key")  # fmt: skip

    def __init__(self, password: str) -> None:
        self.password = password
        self.settings: dict[str, Any] = {
            "app.site_name": "Mailing list",
            "app.root_url": "http://localhost:9000",
            "app.from_email": "listmonk <noreply@listmonk.yoursite.com>",
            "smtp": [
                {"uuid": "u1", "enabled": True, "host": "smtp.yoursite.com", "port": 25,
                 "auth_protocol": "cram", "tls_type": "STARTTLS", "username": "username",
                 "password": "password", "max_conns": 10},
            ],
            "bounce.mailboxes": [{"uuid": "b1", "host": "pop.x", "password": "bounce-secret"}],
            "upload.s3.aws_secret_access_key": "s3-secret-key",
        }  # fmt: skip
        self.puts = 0
        self.down_until = 0.0

    @staticmethod
    def masked(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: FakeListmonk.masked(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [FakeListmonk.masked(v, key) for v in value]
        if key in ("password", "upload.s3.aws_secret_access_key") and isinstance(value, str):
            return MASK * len(value)
        return value

    def handle(self, h: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str], Any]:
        if time.monotonic() < self.down_until:
            return 502, {}, {"message": "restarting"}
        if h.path == "/health":
            return 200, {}, {"data": True}
        if h.path == "/admin/login" and h.command == "POST":
            form = parse_qs(body.decode())
            if form.get("username") == ["studio-admin"] and form.get("password") == [self.password]:
                return 302, {"Location": "/admin", "Set-Cookie": "session=abc; HttpOnly"}, None
            return 200, {}, b"<p>Invalid login or password</p>"
        if h.path.startswith("/api/"):
            if "session=abc" not in h.headers.get("Cookie", ""):
                # v6: an Authorization header is an API user's token, never the admin's
                return 403, {}, {"message": "invalid API credentials"}
            if h.command == "GET":
                return 200, {}, {"data": self.masked(self.settings)}
            data = json.loads(body)
            if not any(b.get("enabled") for b in data.get("smtp") or []):
                return 400, {}, {"message": "At least one SMTP block should be enabled"}
            missing = [k for k in self.KEYS if k not in data]
            if missing:
                return 400, {}, {"message": f"partial settings: {missing}"}
            for group in ("smtp", "bounce.mailboxes"):
                for block in data[group]:
                    if block.get("password") == "":
                        old = [b for b in self.settings[group] if b["uuid"] == block.get("uuid")]
                        block["password"] = old[0]["password"] if old else ""
            if data["upload.s3.aws_secret_access_key"] == "":
                data["upload.s3.aws_secret_access_key"] = self.settings[
                    "upload.s3.aws_secret_access_key"
                ]
            data["app.root_url"] = data["app.root_url"].rstrip("/")
            self.settings = data
            self.puts += 1
            self.down_until = time.monotonic() + 1.0  # it re-executes itself
            return 200, {}, {"data": True}
        return 404, {}, {"message": "not found"}


@pytest.fixture
def fake_listmonk(prod: Path) -> Iterator[tuple[FakeListmonk, str, Spec]]:
    spec = spec_of(prod)
    secret = spec.secret("LISTMONK_ADMIN_PASSWORD")
    assert secret is not None
    app = FakeListmonk(secret.reveal())
    server, base = serve(app)
    yield app, base, spec
    server.shutdown()
    server.server_close()


def listmonk_ctx(spec: Spec, base: str, differ: tuple[str, ...] = ()) -> StepContext:
    return StepContext(
        spec, ScriptedSession(), HostFacts(True), lambda _t: None, base, "lists.lumenstudio.dev",
        differ,
    )  # fmt: skip


def test_listmonk_settings_are_put_whole_and_only_when_they_differ(
    fake_listmonk: tuple[FakeListmonk, str, Spec],
) -> None:
    app, base, spec = fake_listmonk
    step = render_spec(spec).app_steps["listmonk"][0]
    said = listmonk.converge(listmonk_ctx(spec, base, ("smtp",)), step)
    assert app.puts == 1 and "app.root_url" in said and "smtp" in said
    assert app.settings["app.root_url"] == "https://lists.lumenstudio.dev"
    [smtp] = app.settings["smtp"]
    secret = spec.secret("LISTMONK_SMTP_PASSWORD")
    assert secret is not None and smtp["password"] == secret.reveal()
    assert smtp["uuid"] == "u1" and smtp["max_conns"] == 10  # the block kept what it had
    # the masked secrets went back blank and were kept, never stored as bullets
    assert app.settings["bounce.mailboxes"][0]["password"] == "bounce-secret"
    assert app.settings["upload.s3.aws_secret_access_key"] == "s3-secret-key"
    assert secret.reveal() not in said
    # nothing differs now: no PUT
    assert "nothing changed" in listmonk.converge(listmonk_ctx(spec, base), step)
    assert app.puts == 1
    # the spec's SMTP password changed since the last apply: sent again
    listmonk.converge(listmonk_ctx(spec, base, ("smtp",)), step)
    assert app.puts == 2


def test_listmonk_refuses_the_admin_password_as_an_api_credential(
    fake_listmonk: tuple[FakeListmonk, str, Spec],
) -> None:
    _app, base, _spec = fake_listmonk
    with pytest.raises(AppError, match="sign-in"):
        listmonk.sign_in(base, "lists.lumenstudio.dev", "studio-admin", "wrong-password")


def test_masked_values_go_back_blank() -> None:
    current = {"smtp": [{"password": "•••"}], "x": {"secret": "••"}, "y": "keep•"}
    assert listmonk.unmasked(current) == {
        "smtp": [{"password": ""}],
        "x": {"secret": ""},
        "y": "keep•",
    }


# ── the Applier: health gate, then the app steps, then the probes; once ─────────────────


def record_steps(monkeypatch: pytest.MonkeyPatch, session: ScriptedSession) -> list[str]:
    ran: list[str] = []

    def fake(step: Any, spec: Spec, sess: Any, facts: Any, say: Any, differ: Any = ()) -> str:
        ran.append(f"{step.stack}:{step.kind}")
        session.calls.append(Call("app", f"app {step.stack} {step.kind}"))
        return f"{step.stack}: done"

    monkeypatch.setattr(apps, "run_step", fake)
    return ran


run = run_applier


def test_app_step_runs_after_the_health_gate_and_before_the_probes_then_never_again(
    prod: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = spec_of(prod)
    host = factsim.converged(render_spec(before))
    assert isinstance(host.manifest, dict)
    host.manifest["apps"] = {}  # a box of an older vpsctl: nothing claimed yet
    edit(prod / "stacks/ghost.yaml", "mem_limit: 768m", "mem_limit: 700m")
    spec = spec_of(prod)
    session = converged_session(spec, host)
    ran = record_steps(monkeypatch, session)
    result, out = run(spec, session)
    assert result.ok, out
    # each stack's own step (the stacks converge at once: in no set order between them)
    assert sorted(ran) == [
        "ghost:first_launch",
        "listmonk:listmonk_settings",
        "plausible:first_launch",
    ]
    kinds = [
        (c.kind, c.command)
        for c in session.calls
        if c.command == "app ghost first_launch" or "docker compose -p ghost up" in c.command
        or (c.command.startswith("echo @@health") and "ghost" in c.command)
        or probes.MARK in c.command
    ]  # fmt: skip
    order = [k for k, _ in kinds]
    first_app = order.index("app")
    assert any("@@health" in c for _, c in kinds[:first_app])  # the gate came first
    assert any(probes.MARK in c for _, c in kinds[first_app:])  # the probes after
    assert not any(probes.MARK in c for _, c in kinds[:first_app])
    manifest = json.loads(session.written[MANIFEST])
    assert set(manifest["apps"]) == {"ghost", "plausible", "listmonk"}

    # the next plan and apply: nothing to do, no app call
    host.manifest = manifest
    host.files = {p: (f.content, f.mode, "root:root") for p, f in render_spec(spec).files.items()}
    host.app_files[ghost_key_path("ghost")] = (KEY.encode(), 0o600)
    again = converged_session(spec, host)
    ran.clear()
    second, out = run(spec, again)
    assert second.ok and not second.plan.changes, plan_text(second.plan)
    assert ran == []


def test_a_failed_app_step_fails_the_stack_and_is_not_recorded(
    prod: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = spec_of(prod)
    host = factsim.converged(render_spec(spec))
    assert isinstance(host.manifest, dict)
    del host.manifest["apps"]["listmonk"]  # type: ignore[attr-defined]
    session = converged_session(spec, host)

    def refuse(step: Any, *args: Any, **kwargs: Any) -> str:
        raise AppError("listmonk refused the settings (400): At least one SMTP block")

    monkeypatch.setattr(apps, "run_step", refuse)
    result, _out = run(spec, session)
    outcome = next(o for o in result.outcomes if o.stack == "listmonk")
    assert outcome.result == StackResult.FAILED and "SMTP block" in outcome.detail
    assert not session.ran(r"docker compose -p listmonk")  # the stack itself untouched
    manifest = json.loads(session.written[MANIFEST])
    assert "listmonk" not in manifest["apps"]


def test_plan_shows_the_app_steps_and_no_value(prod: Path) -> None:
    spec = spec_of(prod)
    desired = render_spec(spec)
    host = factsim.converged(desired)
    assert isinstance(host.manifest, dict)
    host.manifest["apps"] = {}
    host.app_files.clear()
    from vpsctl.core.facts import parse  # noqa: PLC0415

    plan = make_plan("lumen-prod", desired, parse(host.output()))
    text = plan_text(plan)
    assert "ghost: first launch of Ghost: owner claimed by vpsctl (studio@lumenstudio.dev)" in text
    assert "plausible: first launch of Plausible: owner registered by vpsctl" in text
    assert re.search(r"listmonk settings: app\.root_url, app\.from_email, smtp", text)
    assert_no_secrets(prod, text, json.dumps(plan.to_json()))
    # recorded, but the key file is gone from the box: the ghost step runs again
    host.manifest = factsim.manifest_of(desired)
    plan = make_plan("lumen-prod", desired, parse(host.output()))
    [ghost_change] = [a for a in plan.apps if a.action == "run"]
    assert ghost_change.stack == "ghost" and "missing" in ghost_change.reason


def test_a_rebuild_restores_the_databases_before_the_app_steps_and_probes(
    prod: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rebuild's hook (restore this stack's databases) runs once the stack is healthy
    and before its app steps: a Ghost restored from the backup is found set up, never claimed
    afresh; a failed restore fails the stack's gate."""
    before = spec_of(prod)
    host = factsim.converged(render_spec(before))
    assert isinstance(host.manifest, dict)
    host.manifest["apps"] = {}
    edit(prod / "stacks/ghost.yaml", "mem_limit: 768m", "mem_limit: 700m")
    spec = spec_of(prod)
    session = converged_session(spec, host)
    ran = record_steps(monkeypatch, session)

    def restore(applier: Applier, name: str) -> str:
        session.calls.append(Call("restore", f"restore {name}"))
        return ""

    applier = Applier(spec, session, io.StringIO(), after_healthy=restore)
    applier.probe_deadline = 0
    applier.health_interval = 0
    assert applier.apply().ok
    order = [c.command for c in session.calls if c.kind in ("restore", "app")]
    assert order.index("restore ghost") < order.index("app ghost first_launch"), order
    assert ran[0] == "ghost:first_launch"

    session = converged_session(spec, factsim.converged(render_spec(before)))
    failing = Applier(spec, session, io.StringIO(), after_healthy=lambda a, n: "mysql: no dump")
    failing.probe_deadline = 0
    failing.health_interval = 0
    result = failing.apply()
    ghost = next(o for o in result.outcomes if o.stack == "ghost")
    assert ghost.result != StackResult.APPLIED and "no dump" in ghost.detail
