"""Plan logic against host facts: a bare host, a converged one, a hand-edited file, a
removed stack, secret changes (masked), drift in modes and containers, and the CLI's exit
codes and outputs (scanned for every secret value)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import factsim
from tests.helpers import ROOT, assert_no_secrets, golden_prod_copy, run_cli
from vpsctl.cli.views import plan_text
from vpsctl.core.facts import HostFacts, parse, unreachable
from vpsctl.core.plan import Plan, make_plan
from vpsctl.core.render import Desired
from vpsctl.ops import targets
from vpsctl.ops.inputs import render_spec
from vpsctl.spec.loader import load_spec

DOCUMINT_ENV = "/opt/vpsctl/stacks/documint/env/app.env"
GHOST_COMPOSE = "/opt/vpsctl/stacks/ghost/compose.yaml"
CADDYFILE = "/opt/vpsctl/stacks/edge/config/caddy/Caddyfile"


@pytest.fixture
def prod(tmp_path: Path) -> Iterator[Path]:
    yield golden_prod_copy(tmp_path)


def desired_of(root: Path) -> Desired:
    return render_spec(load_spec(root / "inventory/prod"))


def plan_for(root: Path, host: factsim.SimHost) -> Plan:
    return make_plan("lumen-prod", desired_of(root), parse(host.output()))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def outputs(plan: Plan) -> str:
    return plan_text(plan, verbose=True) + json.dumps(plan.to_json())


def test_bare_host_plans_everything_as_create(prod: Path) -> None:
    plan = plan_for(prod, factsim.bare())
    desired = desired_of(prod)
    assert plan.note.startswith("host is bare")
    assert {f.path for f in plan.files} == set(desired.files)
    assert all(f.action == "create" for f in plan.files)
    assert [s.action for s in plan.stacks] == ["start"] * len(desired.stacks)
    assert [s.stack for s in plan.stacks][-1] == "edge"  # Caddy starts last
    assert {i.action for i in plan.images} == {"pull"}
    assert len(plan.images) == 12
    # the app steps (Ghost's and Plausible's first launches, Listmonk's settings) change apps
    steps = sum(len(v) for v in desired.app_steps.values())
    assert steps == 3 and {a.action for a in plan.apps} == {"run"}
    assert (
        plan.summary()
        == f"Plan: {len(desired.files) + 8 + 12} to add, {steps} to change, 0 to remove."
    )
    assert plan.changes
    assert_no_secrets(prod, outputs(plan))


def test_unreachable_host_is_a_note_not_a_crash(prod: Path) -> None:
    plan = make_plan("lumen-prod", desired_of(prod), unreachable("connection refused"))
    assert plan.note == "host unreachable (connection refused); showing everything as to-create"
    assert all(f.action == "create" for f in plan.files)
    assert {s.action for s in plan.stacks} == {"start"}


def test_converged_host_has_no_changes_and_says_why(prod: Path) -> None:
    desired = desired_of(prod)
    plan = plan_for(prod, factsim.converged(desired))
    assert not plan.changes
    assert plan.summary() == "No changes. The host matches the spec."
    assert {f.reason for f in plan.files} == {"sha256, mode and owner match"}
    assert all(s.action == "none" and s.reason.startswith("unchanged:") for s in plan.stacks)
    text = plan_text(plan)
    assert f"Unchanged: {len(desired.files)} files" in text


def test_a_stopped_backup_timer_is_planned_to_be_enabled_again(prod: Path) -> None:
    desired = desired_of(prod)
    host = factsim.converged(desired)
    host.timers["vpsctl-backup.timer"] = "disabled inactive"
    plan = plan_for(prod, host)
    assert plan.changes
    assert plan.host_actions == ["enable vpsctl-backup.timer (on the box: disabled inactive)"]
    assert plan.summary() == "Plan: 0 to add, 1 to change, 0 to remove."
    assert "Host:\n  ~ enable vpsctl-backup.timer" in plan_text(plan)
    assert plan.to_json()["host_actions"] == plan.host_actions


def test_hand_edited_file_is_shown_with_its_diff(prod: Path) -> None:
    desired = desired_of(prod)
    host = factsim.converged(desired)
    content, mode, owner = host.files[GHOST_COMPOSE]
    host.files[GHOST_COMPOSE] = (
        content.replace(b'mem_limit: "768m"', b'mem_limit: "2g"'),
        mode,
        owner,
    )
    plan = plan_for(prod, host)
    [change] = [f for f in plan.files if f.action != "unchanged"]
    assert change.path == GHOST_COMPOSE
    assert change.action == "update"
    assert change.reason == "edited on the host since the last apply"
    assert '-    mem_limit: "2g"' in change.diff
    assert '+    mem_limit: "768m"' in change.diff
    assert change.diff.startswith(f"--- host:{GHOST_COMPOSE}\n+++ spec:{GHOST_COMPOSE}\n")
    [ghost] = [s for s in plan.stacks if s.stack == "ghost"]
    assert ghost.action == "recreate" and ghost.reason == "1 file(s) changed"
    assert [s.stack for s in plan.stacks if s.action != "none"] == ["ghost"]
    assert plan.summary() == "Plan: 0 to add, 2 to change, 0 to remove."


def test_removed_stack_is_stopped_and_its_files_deleted(prod: Path) -> None:
    desired = desired_of(prod)
    host = factsim.converged(desired)
    edit(
        prod / "inventory/prod/host.yaml",
        "  cronping:\n    domains: {app: cronping.dev, www: www.cronping.dev}\n",
        "",
    )
    plan = plan_for(prod, host)
    deleted = sorted(f.path for f in plan.files if f.action == "delete")
    assert deleted == [
        "/opt/vpsctl/stacks/cronping/compose.yaml",
        "/opt/vpsctl/stacks/cronping/env/app.env",
    ]
    [removed] = [s for s in plan.stacks if s.action == "remove"]
    assert removed.stack == "cronping"
    assert "volumes are kept" in removed.reason
    [caddy] = [f for f in plan.files if f.path == CADDYFILE]
    assert caddy.action == "update" and "-cronping.dev {" in caddy.diff
    [edge] = [s for s in plan.stacks if s.stack == "edge"]
    assert edge.action == "reload"
    env_delete = next(f for f in plan.files if f.path.endswith("cronping/env/app.env"))
    assert "- STRIPE_SECRET_KEY (removed; was secret (sha256:" in env_delete.diff
    assert_no_secrets(prod, outputs(plan))


def test_changed_secret_is_masked_and_plain_config_is_shown(prod: Path) -> None:
    desired = desired_of(prod)
    host = factsim.converged(desired)
    secrets = prod / "inventory/prod/secrets.env"
    old = load_spec(prod / "inventory/prod").secret("DOCUMINT_STRIPE_WEBHOOK_SECRET")
    assert old is not None
    edit(secrets, old.reveal(), "whsec_" + "N" * 32)
    edit(prod / "stacks/documint.yaml", "PDF_RENDERER: builtin", "PDF_RENDERER: chromium")
    plan = plan_for(prod, host)
    [change] = [f for f in plan.files if f.action != "unchanged"]
    assert change.path == DOCUMINT_ENV
    assert change.reason == "content differs"
    lines = change.diff.splitlines()
    assert "~ PDF_RENDERER: 'builtin' → 'chromium'" in lines
    [secret_line] = [line for line in lines if "STRIPE_WEBHOOK_SECRET" in line]
    assert secret_line.startswith("~ STRIPE_WEBHOOK_SECRET: changed (sha256:")
    assert secret_line.endswith(", 38→38 bytes)")
    text = outputs(plan)
    assert old.reveal() not in text and "N" * 32 not in text
    assert_no_secrets(prod, text)
    [documint] = [s for s in plan.stacks if s.action != "none"]
    assert (documint.stack, documint.action, documint.services) == (
        "documint",
        "recreate",
        ("app",),
    )


def test_only_the_caddyfile_changed_means_reload_not_restart(prod: Path) -> None:
    host = factsim.converged(desired_of(prod))
    edit(
        prod / "inventory/prod/host.yaml",
        "site: stats.lumenstudio.dev",
        "site: analytics.lumenstudio.dev",
    )
    plan = plan_for(prod, host)
    changed = {f.path: f for f in plan.files if f.action != "unchanged"}
    assert set(changed) == {CADDYFILE, "/opt/vpsctl/stacks/plausible/env/plausible.env"}
    actions = {s.stack: s.action for s in plan.stacks if s.action != "none"}
    assert actions == {"plausible": "recreate", "edge": "reload"}


def test_mode_drift_and_stopped_containers_are_converged(prod: Path) -> None:
    desired = desired_of(prod)
    host = factsim.converged(desired)
    content, _, owner = host.files[DOCUMINT_ENV]
    host.files[DOCUMINT_ENV] = (content, 0o644, owner)
    for container in host.containers:
        if container["project"] == "listmonk" and container["service"] == "db":
            container["state"] = "exited"
    plan = plan_for(prod, host)
    [mode] = [f for f in plan.files if f.action != "unchanged"]
    assert mode.reason == "mode/owner 0644 root:root → 0600 root:root" and mode.diff == ""
    listmonk = next(s for s in plan.stacks if s.stack == "listmonk")
    assert listmonk.action == "recreate"
    assert listmonk.reason == "not running: db"
    assert listmonk.services == ("db",)


def test_missing_image_triggers_its_stack(prod: Path) -> None:
    host = factsim.converged(desired_of(prod))
    host.images.remove("mysql:8.4.7")
    plan = plan_for(prod, host)
    assert [(i.ref, i.action) for i in plan.images] == [("mysql:8.4.7", "pull")]
    ghost = next(s for s in plan.stacks if s.stack == "ghost")
    assert ghost.action == "recreate" and "image(s) missing: mysql:8.4.7" in ghost.reason


def test_plan_json_carries_what_apply_needs(prod: Path) -> None:
    desired = desired_of(prod)
    plan = plan_for(prod, factsim.converged(desired))
    data = plan.to_json()
    assert data["format"] == "vpsctl-plan/1"
    assert data["inputs_hash"] == desired.inputs_hash
    assert len(data["plan_hash"]) == 64 and len(data["facts_hash"]) == 64
    assert all(f["old_sha256"] == f["new_sha256"] for f in data["files"])


def fake_facts(monkeypatch: pytest.MonkeyPatch, facts: HostFacts) -> None:
    monkeypatch.setattr(targets, "read_facts", lambda spec: facts)


def test_cli_exit_codes_json_and_saved_plan(prod: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    desired = desired_of(prod)
    fake_facts(monkeypatch, parse(factsim.converged(desired).output()))
    same = run_cli(prod, "plan", "-i", "inventory/prod")
    assert same.code == 0, same.err
    assert same.out.endswith("No changes. The host matches the spec.\n")

    fake_facts(monkeypatch, parse(factsim.bare().output()))
    bare = run_cli(prod, "plan", "-i", "inventory/prod", "--json", "--out", "plan.json")
    assert bare.code == 2
    data = json.loads(bare.out)  # stdout is pure JSON
    saved = json.loads((prod / "plan.json").read_text())
    assert saved == data
    assert f"saved plan {data['plan_hash'][:12]} to plan.json" in bare.err
    assert_no_secrets(prod, (prod / "plan.json").read_text())

    broken = prod / "stacks/ghost.yaml"
    broken.write_text(broken.read_text().replace("mem_limit: 768m", "mem_limit: lots"))
    invalid = run_cli(prod, "plan", "-i", "inventory/prod")
    assert invalid.code == 1 and invalid.out == ""
    assert "stacks/ghost.yaml:" in invalid.err


def test_plan_of_a_sandbox_that_is_not_up_says_so(
    studio: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VPSCTL_STATE_DIR", str(studio / "state"))
    run_cli(studio, "secrets", "generate", "-i", "inventory/sandbox")
    host = studio / "inventory/sandbox/host.yaml"
    # the backup sandbox first: without it, no backup file can be rendered
    no_backup = run_cli(studio, "plan", "-i", "inventory/sandbox")
    assert no_backup.code == 1 and no_backup.out == ""
    assert "host.yaml: backup.repository.sandbox:" in no_backup.err
    assert "`vpsctl sandbox up --name backup`" in no_backup.err
    text = host.read_text()
    start = text.index("backup:\n")
    host.write_text(text[:start] + text[text.index("\n\n", start) + 2 :])
    # then the sandbox's ACME CA (tls: pebble): its directory is part of the Caddyfile
    no_pebble = run_cli(studio, "plan", "-i", "inventory/sandbox")
    assert no_pebble.code == 1 and no_pebble.out == ""
    assert "host.yaml:18: tls: pebble: no Pebble is recorded in state/sandboxes/pebble/" in (
        no_pebble.err
    )
    assert "`vpsctl sandbox up` starts it" in no_pebble.err
    host.write_text(host.read_text().replace("tls: pebble\n", "tls: internal\n"))
    result = run_cli(studio, "plan", "-i", "inventory/sandbox")
    assert result.code == 2, result.err
    assert "host unreachable" in result.out
    assert "vpsctl sandbox up" in result.out


FIXTURES = ROOT / "tests" / "fixtures" / "facts"


def test_recorded_facts_of_a_fresh_debian13_box(prod: Path) -> None:
    """The facts script's real output on a fresh sandbox box (recorded), planned against."""
    facts = parse((FIXTURES / "debian13-bare.txt").read_text())
    assert facts.bare and facts.docker is None and facts.compose is None
    plan = make_plan("lumen-prod", desired_of(prod), facts)
    assert plan.note.startswith("host is bare")
    assert {f.action for f in plan.files} == {"create"}
    assert {s.action for s in plan.stacks} == {"start"}


def test_recorded_facts_of_a_bootstrapped_box(prod: Path) -> None:
    """Recorded right after the bootstrap deploy: docker and compose v2 from Debian 13, the
    edge network, nothing of the studio yet."""
    facts = parse((FIXTURES / "debian13-bootstrapped.txt").read_text())
    assert facts.docker is not None and facts.docker.startswith("26.")
    assert facts.compose is not None and facts.compose.startswith("2.")
    assert facts.containers == [] and facts.manifest is None and facts.bare
    plan = make_plan("lumen-prod", desired_of(prod), facts)
    assert {i.action for i in plan.images} == {"pull"}
    assert plan.summary().startswith("Plan: ")
