"""Rendering the example studio: golden files, purity, and real validators (Caddy 2.11,
Debian 13's docker compose v2) on the output."""

from __future__ import annotations

import difflib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, golden_prod_copy, run_cli
from vpsctl.core.render import Desired
from vpsctl.ops.inputs import render_spec
from vpsctl.spec.loader import load_spec
from vpsctl.spec.secrets import Secret

GOLDEN = ROOT / "tests" / "golden"
COMPOSE = ROOT / ".venv" / "tools" / "docker-compose"
CADDY = ROOT / ".venv" / "bin" / "caddy"


@pytest.fixture
def prod(tmp_path: Path) -> Iterator[Path]:
    """A copy of the example studio with the golden (fake, deterministic) prod secrets."""
    yield golden_prod_copy(tmp_path)


def rendered(root: Path) -> Desired:
    return render_spec(load_spec(root / "inventory/prod"))


def test_golden_tree_of_the_example_studio(prod: Path) -> None:
    """A template change shows up here as a readable diff; UPDATE_GOLDEN=1 accepts it."""
    desired = rendered(prod)
    golden_root = GOLDEN / "prod"
    if os.environ.get("UPDATE_GOLDEN"):
        shutil.rmtree(golden_root, ignore_errors=True)
        for f in desired.files.values():
            target = golden_root / f.path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(f.content)
    expected = {
        "/" + str(p.relative_to(golden_root)): p.read_bytes()
        for p in golden_root.rglob("*")
        if p.is_file()
    }
    problems = []
    for path in sorted(set(expected) | set(desired.files)):
        want = expected.get(path, b"").decode().splitlines(keepends=True)
        got = desired.files[path].content.decode() if path in desired.files else ""
        if want != got.splitlines(keepends=True):
            problems.append(
                "".join(
                    difflib.unified_diff(
                        want, got.splitlines(keepends=True), f"golden{path}", f"rendered{path}"
                    )
                )
            )
    assert not problems, (
        "rendered files differ from tests/golden (UPDATE_GOLDEN=1 accepts):\n" + "\n".join(problems)
    )


def test_render_is_a_pure_function_of_the_spec(prod: Path) -> None:
    first, second = rendered(prod), rendered(prod)
    assert {p: f.content for p, f in first.files.items()} == {
        p: f.content for p, f in second.files.items()
    }
    assert first.inputs_hash == second.inputs_hash
    (prod / "stacks/cronping.yaml").write_text(
        (prod / "stacks/cronping.yaml")
        .read_text()
        .replace("PING_GRACE_SECONDS: 120", "PING_GRACE_SECONDS: 90")
    )
    changed = rendered(prod)
    assert changed.inputs_hash != first.inputs_hash
    differing = [p for p in first.files if first.files[p].content != changed.files[p].content]
    assert differing == ["/opt/vpsctl/stacks/cronping/env/app.env"]
    assert changed.stacks["cronping"].services != first.stacks["cronping"].services
    assert changed.stacks["documint"] == first.stacks["documint"]


def test_compose_files_interpolate_nothing_and_no_environment_is_empty(prod: Path) -> None:
    desired = rendered(prod)
    for f in desired.files.values():
        if f.kind != "compose":
            continue
        text = f.content.decode()
        assert "${" not in text.replace("$$", ""), f.path
        assert "$" not in text.replace("$$", ""), f.path
        assert "environment:" not in text, f.path  # values only through env files
        for value in desired.secret_values():
            assert value not in text


def test_env_files_hold_every_value_and_are_private(prod: Path) -> None:
    desired = rendered(prod)
    spec = load_spec(prod / "inventory/prod")
    env = desired.files["/opt/vpsctl/stacks/documint/env/app.env"]
    assert env.mode == 0o600
    assert env.secret_keys == {
        "STRIPE_SECRET_KEY",
        "STRIPE_PUBLISHABLE_KEY",
        "STRIPE_WEBHOOK_SECRET",
        "SESSION_SECRET",
    }
    text = env.content.decode()
    webhook = spec.secret("DOCUMINT_STRIPE_WEBHOOK_SECRET")
    assert webhook is not None
    assert f"STRIPE_WEBHOOK_SECRET='{webhook.reveal()}'\n" in text
    assert "APP_URL='https://documint.io'\n" in text
    assert all(not line.endswith("=''") for line in text.splitlines())


def test_render_command_writes_the_host_tree_with_modes(prod: Path) -> None:
    result = run_cli(prod, "render", "-i", "inventory/prod", "--out", "out")
    assert result.code == 0, result.err
    assert result.out == ""
    env = prod / "out/opt/vpsctl/stacks/ghost/env/mysql.env"
    compose = prod / "out/opt/vpsctl/stacks/ghost/compose.yaml"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert stat.S_IMODE(compose.stat().st_mode) == 0o644
    assert (prod / "out/opt/vpsctl/stacks/edge/config/caddy/Caddyfile").is_file()
    assert (
        prod / "out/opt/vpsctl/stacks/plausible/config/clickhouse/users.d/"
        "default-profile-low-resources-overrides.xml"
    ).is_file()


def caddy_validate(caddyfile: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
    }
    return subprocess.run(
        [str(CADDY), "validate", "--config", str(caddyfile), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )


def test_caddyfile_passes_caddy_validate(prod: Path, tmp_path: Path) -> None:
    desired = rendered(prod)
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_bytes(desired.files["/opt/vpsctl/stacks/edge/config/caddy/Caddyfile"].content)
    result = caddy_validate(caddyfile, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Valid configuration" in result.stdout + result.stderr
    # the same harness rejects a broken config: the check can fail
    caddyfile.write_text(caddyfile.read_text().replace("reverse_proxy", "reverse_proxi", 1))
    assert caddy_validate(caddyfile, tmp_path).returncode != 0


def compose_config(directory: Path, env: dict[str, str]) -> dict[str, object]:
    assert COMPOSE.exists(), (
        "docker compose v2 is missing: run `make install` (tools/get-compose.sh)"
    )
    result = subprocess.run(
        [str(COMPOSE), "config", "--format", "json"],
        cwd=directory,
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_compose_v2_accepts_every_stack_and_sees_exactly_our_environment(
    prod: Path, tmp_path: Path
) -> None:
    """`docker compose config` (Debian 13's compose 2.26) resolves env files the way
    containers will get them. Even with every variable exported EMPTY in the shell — the
    outage — each container gets exactly the spec's values, and the limits hold."""
    desired = rendered(prod)
    spec = load_spec(prod / "inventory/prod")
    out = tmp_path / "host"
    for f in desired.files.values():
        target = out / f.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.content)
    hostile = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    for stack in spec.stacks.values():
        for service in stack.services.values():
            for key in [*service.env, *service.secrets]:
                hostile[key] = ""
    for name, stack in spec.stacks.items():
        model = compose_config(out / "opt/vpsctl/stacks" / name, hostile)
        services = model["services"]
        assert isinstance(services, dict)
        assert set(services) == set(stack.services)
        for service_name, service in stack.services.items():
            got = services[service_name]
            want = {
                k: v.reveal() if isinstance(v, Secret) else v
                for k, v in spec.environment(name, service_name).items()
            }
            assert got.get("environment", {}) == want, f"{name}/{service_name}"
            assert got["healthcheck"]["test"] == service.healthcheck.test
            assert got["mem_limit"] == got["memswap_limit"]
            if service.command:
                assert got["command"] == service.command
            for port in got.get("ports", []):
                assert name == "edge" and port["published"] in ("80", "443")
