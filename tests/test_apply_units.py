"""apply's failure paths without a box: an :class:`~vpsctl.ops.apply.Applier` driven through a
scripted session (``tests/scripted.py``) against a host of ``tests/factsim.py``, with chosen
commands failing. Each test says what the operator is told, and checks the commands that
ran (or did not): a rollback is claimed only when it was checked, and a failed one says
what failed, the state the stack is in, and what to run.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests import scripted
from tests.helpers import assert_no_secrets, edit, golden_prod_copy, run_cli
from tests.scripted import ScriptedSession, health_answer, journal_of, outcome_of
from vpsctl.cli.views import apply_text
from vpsctl.host import remote
from vpsctl.ops import apply
from vpsctl.ops.apply import Applier, StackResult
from vpsctl.ops.apply.bootstrap import deploy_module
from vpsctl.spec.loader import load_spec
from vpsctl.spec.studio import Spec

INV = "inventory/prod"
PREVIOUS = "/opt/vpsctl/previous/documint"
COMPOSE_UP = r"docker compose -p documint up -d"
CADDYFILE = "/opt/vpsctl/stacks/edge/config/caddy/Caddyfile"


@pytest.fixture
def prod(tmp_path: Path) -> Iterator[Path]:
    """A private copy of the example studio with the golden (fake) secrets."""
    yield golden_prod_copy(tmp_path)


def converged_session(root: Path) -> ScriptedSession:
    """A session to a host that runs the studio exactly as ``root`` declares it now, with
    every probe passing and Caddy running."""
    return scripted.converged_session(load_spec(root / INV))


def change_documint_env(root: Path) -> Spec:
    """One env value of documint changes: the plan recreates documint, nothing else."""
    edit(root / "stacks/documint.yaml", "PDF_RENDERER: builtin", "PDF_RENDERER: chromium")
    return load_spec(root / INV)


run_apply = scripted.run_applier


# ── a rollback that works ───────────────────────────────────────────────────────────────


def test_gate_failure_rolls_back_and_checks_the_previous_version(prod: Path) -> None:
    session = converged_session(prod)
    spec = change_documint_env(prod)
    session.fail(COMPOSE_UP, "container documint-app-1 is unhealthy", times=1)
    result, said = run_apply(spec, session)
    documint = outcome_of(result, "documint")
    assert documint.result == StackResult.ROLLED_BACK, session.log()
    assert documint.detail.startswith("recreate failed: container documint-app-1 is unhealthy")
    assert documint.detail.endswith(
        "rolled back to the previous version: it is up and healthy and its probes pass"
    )
    # the previous files were saved first, put back after, and the old version started again
    [save] = session.ran(r"cp -p --parents")
    assert "/opt/vpsctl/stacks/documint/env/app.env" in save
    assert session.ran(rf"^cp -a -- {PREVIOUS}/\. /$")
    assert len(session.ran(COMPOSE_UP)) == 2
    assert "app.env" in " ".join(session.written)  # the new env file went up
    assert not result.ok
    text = apply_text(result)
    assert "documint: recreate → rolled back" in text
    assert "apply: FAILED (see above; no stack was left half-changed)" in text
    assert journal_of(session)["result"] == "failed: documint (rolled back)"
    assert "documint: rolled back to the previous version" in said
    assert_no_secrets(prod, said, text)


def test_a_new_stack_that_fails_is_removed(prod: Path) -> None:
    session = converged_session(prod)
    assert session.host is not None
    session.host.containers = [c for c in session.host.containers if c["project"] != "cronping"]
    session.host.files = {
        p: f for p, f in session.host.files.items() if "/stacks/cronping/" not in p
    }
    session.fail(r"docker compose -p cronping up", "dependency failed to start")
    result, _ = run_apply(load_spec(prod / INV), session)
    cronping = outcome_of(result, "cronping")
    assert cronping.action == "start"
    assert cronping.result == StackResult.ROLLED_BACK, session.log()
    assert cronping.detail.endswith("rolled back: removed (it was new)")
    assert session.ran(r"docker compose -p cronping down --remove-orphans")
    [removed] = session.ran(r"^rm -f -- .*cronping")
    assert "/opt/vpsctl/stacks/cronping/compose.yaml" in removed


# ── rollbacks that fail, and say so ─────────────────────────────────────────────────────


def test_previous_version_that_cannot_start_is_a_failed_rollback(prod: Path) -> None:
    session = converged_session(prod)
    spec = change_documint_env(prod)
    session.fail(COMPOSE_UP, "Error response from daemon: No such image: documint:2.4.1")
    session.answer(
        r"docker ps -a --filter label=com.docker.compose.project=documint",
        stdout="app\texited\tvpsctl-standin/product:ab12\tExited (1) 3 seconds ago\n",
    )
    result, said = run_apply(spec, session)
    documint = outcome_of(result, "documint")
    assert documint.result == StackResult.ROLLBACK_FAILED, session.log()
    detail = documint.detail
    assert "rollback FAILED: the previous version did not start (compose up: " in detail
    assert "No such image: documint:2.4.1" in detail
    assert (
        "Now: the stack is DOWN (app: Exited (1) 3 seconds ago, image "
        "vpsctl-standin/product:ab12); the previous files are back in place." in detail
    )
    assert "To do: fix the cause, then run `vpsctl apply -i " in detail
    assert "rolled back to the previous version" not in said
    assert not result.ok and result.rollbacks_failed == [documint]
    text = apply_text(result)
    assert "documint: recreate → ROLLBACK FAILED" in text
    assert "apply: FAILED, and the rollback of documint FAILED too" in text
    assert journal_of(session)["result"] == "failed: documint (rollback failed)"
    # the manifest keeps the previous record of documint: the next plan shows it again
    manifest = json.loads(session.written["/opt/vpsctl/manifest.json"])
    assert session.host is not None and session.host.manifest is not None
    old_stacks = session.host.manifest["stacks"]
    assert isinstance(old_stacks, dict)
    assert manifest["stacks"]["documint"] == old_stacks["documint"]
    assert_no_secrets(prod, said, text)


def test_failed_rollback_exits_1_through_the_cli(
    prod: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = converged_session(prod)
    change_documint_env(prod)
    session.fail(COMPOSE_UP, "dependency failed to start: container documint-app-1 is unhealthy")
    assert session.host is not None
    # the audit that closes the apply reads a healthy-looking host: the exit code is the
    # apply's own
    session.answer(re.escape("script=$(cat)"), stdout=session.host.output() + "@@audit-end\n")
    monkeypatch.setattr(remote, "Session", lambda target: session)
    monkeypatch.setattr(Applier, "probe_deadline", 0)
    ran = run_cli(prod, "apply", "-i", INV, "-y")
    assert ran.code == 1, ran.err
    assert "documint: recreate → ROLLBACK FAILED" in ran.err
    assert "the previous version did not start (compose up: " in ran.err
    assert f"run `vpsctl apply -i {INV}`" in ran.err


def test_previous_files_that_cannot_be_restored_are_not_started(prod: Path) -> None:
    session = converged_session(prod)
    spec = change_documint_env(prod)
    session.fail(COMPOSE_UP, "container documint-app-1 is unhealthy", times=1)
    session.fail(rf"^cp -a -- {PREVIOUS}/\. /$", "cp: cannot create regular file: No space left")
    result, _ = run_apply(spec, session)
    documint = outcome_of(result, "documint")
    assert documint.result == StackResult.ROLLBACK_FAILED, session.log()
    assert (
        "putting the previous files of documint back failed on scripted: cp: cannot create "
        "regular file: No space left" in documint.detail
    )
    assert "the previous version was not started: its files are not all back" in documint.detail
    assert f"a copy is kept in {PREVIOUS}" in documint.detail
    assert len(session.ran(COMPOSE_UP)) == 1  # the mix of files was never started
    assert not session.ran(rf"^rm -rf -- {PREVIOUS}$")  # the copy is kept for the operator


def test_saving_the_previous_files_fails_and_nothing_changes(prod: Path) -> None:
    session = converged_session(prod)
    spec = change_documint_env(prod)
    session.fail(r"cp -p --parents", "cp: cannot stat: Input/output error")
    result, said = run_apply(spec, session)
    documint = outcome_of(result, "documint")
    assert documint.result == StackResult.FAILED
    assert documint.detail == (
        "saving the previous files of documint failed on scripted: cp: cannot stat: "
        "Input/output error; nothing was changed"
    )
    assert not [p for p in session.written if "/stacks/documint/" in p]  # no file went up
    assert not session.ran(COMPOSE_UP)
    assert "documint: FAILED before any change" in said
    assert "documint: recreate → failed" in apply_text(result)


def test_a_caddyfile_that_cannot_be_put_in_place_is_rolled_back(prod: Path) -> None:
    session = converged_session(prod)
    spec = load_spec(prod / INV)
    session.fail(r"^mv -f -- .*Caddyfile\.next", "mv: cannot move: Read-only file system")
    result, said = run_apply(spec, session, caddyfile=lambda b: b + b"\n# one more line\n")
    edge = outcome_of(result, "edge")
    assert edge.action == "reload"
    assert edge.result == StackResult.ROLLED_BACK, session.log()
    assert edge.detail.startswith(
        "putting the new Caddyfile in place failed on scripted: mv: cannot move: "
        "Read-only file system"
    )
    assert session.ran(r"caddy validate --config /etc/caddy/Caddyfile.next")
    assert session.ran(r"^cp -a -- /opt/vpsctl/previous/edge/\. /$")
    assert session.ran(rf"^rm -f -- {CADDYFILE}\.next$")
    # the old config is reloaded and the stacks behind it checked
    assert session.ran(r"(?m)^docker exec c4ddy caddy reload --config /etc/caddy/Caddyfile")
    assert edge.detail.endswith("its probes pass")
    assert "edge: rolled back to the previous version" in said


def test_a_failed_restore_of_the_pre_apply_snapshot_is_a_failed_rollback(prod: Path) -> None:
    session = converged_session(prod)
    edit(prod / "stacks/documint.yaml", "documint:2.4.1", "documint:2.4.2")
    spec = load_spec(prod / INV)
    snapshot = "0123456789abcdef" * 4
    session.answer(r"vpsctl-backup backup pre-apply documint", stdout=f"@@snapshot {snapshot}\n")
    session.answer(r"vpsctl-backup backup pre-rollback", stdout=f"@@snapshot {SNAP_COPY}\n")
    session.fail(COMPOSE_UP, "container documint-app-1 is unhealthy", times=1)
    session.fail(
        rf"vpsctl-backup restore {snapshot} all documint",
        "restic: repository is locked",
        stdout="@@fail restore documint: the repository is locked by another restic run\n",
    )
    result, _ = run_apply(spec, session)
    documint = outcome_of(result, "documint")
    assert documint.result == StackResult.ROLLBACK_FAILED, session.log()
    assert (
        "restoring its data from the pre-apply snapshot 01234567 failed (restore documint: "
        "the repository is locked by another restic run)" in documint.detail
    )
    assert (
        f"`vpsctl restore -i {INV} --snapshot {snapshot} --stack documint` puts its data back"
        in documint.detail
    ) or f"--snapshot {snapshot} --stack documint" in documint.detail
    assert session.ran(r"docker pull -q ghcr.io/lumen-studio/documint:2.4.2")
    assert len(session.ran(COMPOSE_UP)) == 2  # the previous version did start


def test_a_failed_prune_is_a_problem_of_the_run(prod: Path) -> None:
    session = converged_session(prod)
    assert session.host is not None
    stale = "/opt/vpsctl/stacks/documint/config/old.conf"
    session.host.files[stale] = (b"old\n", 0o644, "root:root")
    session.fail(rf"^rm -f -- {stale}$", "rm: cannot remove: Operation not permitted")
    result, _ = run_apply(load_spec(prod / INV), session)
    assert not result.ok
    assert result.problems == [
        "prune: deleting stale files failed on scripted: rm: cannot remove: Operation not "
        "permitted; the next apply tries again"
    ]
    assert "  problem: prune: deleting stale files failed" in apply_text(result)
    assert str(journal_of(session)["result"]).startswith("failed: prune: deleting stale files")


@pytest.mark.parametrize("gate_passes", [True, False])
def test_a_stale_file_of_a_stack_whose_change_did_not_hold_stays(
    prod: Path, gate_passes: bool
) -> None:
    """The new version of documint drops a file; its previous version, put back when the
    change fails its gate, may need it: the file is deleted only once the change holds
    (until then it is still on the box, under the stack's directory: the next plan shows
    it to delete again)."""
    session = converged_session(prod)
    assert session.host is not None
    stale = "/opt/vpsctl/stacks/documint/config/old.conf"
    session.host.files[stale] = (b"old\n", 0o644, "root:root")
    spec = change_documint_env(prod)
    if not gate_passes:
        session.fail(COMPOSE_UP, "container documint-app-1 is unhealthy", times=1)
    result, said = run_apply(spec, session)
    documint = outcome_of(result, "documint")
    deleted = session.ran(rf"^rm -f -- {stale}$")
    if gate_passes:
        assert documint.result == StackResult.APPLIED, session.log()
        assert deleted and result.ok
    else:
        assert documint.result == StackResult.ROLLED_BACK, session.log()
        assert not deleted
        assert "documint: its stale files stay (its previous version runs" in said
        assert not result.problems  # kept on purpose: not a failure of the prune


def test_an_error_before_the_stacks_is_journaled_and_raised(prod: Path) -> None:
    session = converged_session(prod)
    spec = change_documint_env(prod)
    session.fail(r"docker network inspect", "Cannot connect to the Docker daemon")
    with pytest.raises(remote.RemoteError) as raised:
        run_apply(spec, session)
    assert str(raised.value) == (
        "creating the docker network vpsctl-edge failed on scripted: Cannot connect to the "
        "Docker daemon"
    )
    assert str(journal_of(session)["result"]).startswith("error: creating the docker network")
    assert not session.ran(COMPOSE_UP)


def test_a_command_output_quoting_a_secret_is_masked(prod: Path) -> None:
    session = converged_session(prod)
    spec = change_documint_env(prod)
    secret = spec.secret("DOCUMINT_STRIPE_WEBHOOK_SECRET")
    assert secret is not None
    session.fail(COMPOSE_UP, f"invalid env line STRIPE_WEBHOOK_SECRET={secret.reveal()}")
    result, said = run_apply(spec, session)
    text = apply_text(result)
    assert "STRIPE_WEBHOOK_SECRET=<redacted>" in text
    assert secret.reveal() not in text + said + json.dumps(journal_of(session))


# ── a saved plan that is stale ──────────────────────────────────────────────────────────


def test_a_stale_plan_is_refused_before_anything_changes(prod: Path) -> None:
    session = converged_session(prod)
    spec = change_documint_env(prod)
    saved = Applier(spec, session, io.StringIO()).plan.to_json()
    assert session.host is not None
    compose = "/opt/vpsctl/stacks/ghost/compose.yaml"
    content, mode, owner = session.host.files[compose]
    session.host.files[compose] = (content + b"# edited by hand\n", mode, owner)
    applier = Applier(spec, session, io.StringIO())
    with pytest.raises(apply.StalePlan) as refused:
        apply.check_stale(saved, applier.plan, applier.desired, applier.facts)
    assert str(refused.value) == (
        f"stale plan: host changed: {compose} was edited on the host since the plan; nothing "
        f"was changed. Run `vpsctl plan -i {applier.plan.inventory} --out FILE` again and "
        "review it."
    )
    assert [c.kind for c in session.calls] == ["run", "run"]  # two reads, nothing else


# ── a drill box never backs up ──────────────────────────────────────────────────────────


@pytest.mark.parametrize("backup_timers", [True, False])
def test_a_drill_box_masks_its_backup_timers_before_any_is_linked(
    prod: Path, backup_timers: bool
) -> None:
    """A drill's box uses the real repository under the real host's name: its timers are
    masked (linked to /dev/null) before any unit could be linked or started."""
    session = converged_session(prod)
    assert session.host is not None
    session.host.files = {
        p: f for p, f in session.host.files.items() if not p.startswith("/opt/vpsctl/host/")
    }
    session.host.timers = {}
    result, said = run_apply(load_spec(prod / INV), session, backup_timers=backup_timers)
    assert result.ok, session.log()
    masked = session.ran(r"^systemctl mask -- vpsctl-backup\.timer vpsctl-backup-check\.timer ")
    started = session.ran(r"systemctl link .* systemctl enable --now")
    if backup_timers:
        assert started and not masked
    else:
        assert masked and not started
        assert not session.ran(r"systemctl (link|enable)")
        assert "host: timers masked (this box never backs up)" in said


def test_a_drill_audit_passes_a_backup_timer_only_when_masked() -> None:
    from vpsctl.ops import audit, recovery  # noqa: PLC0415

    def judged(value: str) -> str:
        check = audit.Check("host", "timer vpsctl-backup.timer", audit.FAIL, value, "")
        return recovery.masked_timer(check).status

    assert judged("masked inactive") == audit.OK
    assert judged("masked active") == audit.FAIL
    assert judged("enabled active") == audit.FAIL
    assert judged("not installed") == audit.FAIL
    disk = audit.Check("host", "disk /", audit.FAIL, "97%", "")
    assert recovery.masked_timer(disk) is disk


# ── data is put back only when the image changed, and never blindly ────────────────────

SNAP_BEFORE = "aaaa1111bbbb2222" * 4  # the pre-apply snapshot
SNAP_COPY = "cccc3333dddd4444" * 4  # the pre-rollback copy of the failed version's data


def with_standin(root: Path) -> None:
    """documint's image mapped to a local stand-in (as in a sandbox): its container runs the
    stand-in's local tag, never the registry ref the stack names."""
    host = root / INV / "host.yaml"
    host.write_text(
        host.read_text() + "\nimages:\n  ghcr.io/lumen-studio/documint:2.4.1: "
        "{standin: product, args: {PRODUCT: DocuMint}}\n"
    )


@pytest.mark.parametrize(
    ("what", "path", "old", "new"),
    [
        ("healthcheck", "stacks/documint.yaml", "8080/healthz]", "8080/livez]"),
        ("memory", "stacks/documint.yaml", "mem_limit: 512m", "mem_limit: 640m"),
        ("domain", f"{INV}/host.yaml", "app: documint.io,", "app: app.documint.io,"),
        ("env", "stacks/documint.yaml", "PDF_RENDERER: builtin", "PDF_RENDERER: chromium"),
    ],
)
def test_a_recreate_on_the_same_image_takes_no_snapshot_and_puts_no_data_back(
    prod: Path, what: str, path: str, old: str, new: str
) -> None:
    """Writes the new version accepted during its gate stay: no data is put back unless the
    image changed (here the image is a stand-in, as in a sandbox, where the old rule saw a
    change that was not there)."""
    with_standin(prod)
    session = converged_session(prod)  # its containers run the stand-in's local tag
    edit(prod / path, old, new)
    spec = load_spec(prod / INV)
    session.fail(COMPOSE_UP, "container documint-app-1 is unhealthy", times=1)
    result, said = run_apply(spec, session)
    documint = outcome_of(result, "documint")
    assert documint.result == StackResult.ROLLED_BACK, session.log()
    assert not session.ran(r"vpsctl-backup (backup|restore)"), session.log()
    assert "snapshot" not in said and "data restored" not in said
    assert "snapshot" not in documint.detail
    # and the plan said so
    [planned] = [s for s in result.plan.stacks if s.stack == "documint"]
    assert planned.action == "recreate" and not planned.snapshot, planned
    assert "snapshot" not in planned.reason


def image_change(root: Path, session: ScriptedSession) -> Spec:
    """documint's image changes; its pre-apply snapshot records 3 rows, the failed version's
    data holds 4 (one write accepted during its gate)."""
    edit(root / "stacks/documint.yaml", "documint:2.4.1", "documint:2.4.2")
    session.answer(
        r"vpsctl-backup backup pre-apply documint",
        stdout=f"@@snapshot {SNAP_BEFORE}\n@@counted documint\tapp\trecords\t3\n",
    )
    session.fail(COMPOSE_UP, "container documint-app-1 is unhealthy", times=1)
    return load_spec(root / INV)


def test_an_image_change_is_planned_with_its_snapshot(prod: Path) -> None:
    session = converged_session(prod)
    spec = image_change(prod, session)
    [planned] = [
        s for s in Applier(spec, session, io.StringIO()).plan.stacks if s.stack == "documint"
    ]
    assert planned.snapshot
    assert planned.reason.endswith(
        "image of app changes: a pre-apply snapshot of its data is taken first, and put back "
        "if the new version fails its gate"
    )


def test_a_rollback_keeps_a_copy_before_putting_the_snapshot_back_and_says_what_it_discards(
    prod: Path,
) -> None:
    session = converged_session(prod)
    spec = image_change(prod, session)
    session.answer(
        r"vpsctl-backup backup pre-rollback documint",
        stdout=f"@@snapshot {SNAP_COPY}\n@@counted documint\tapp\trecords\t4\n",
    )
    result, said = run_apply(spec, session)
    documint = outcome_of(result, "documint")
    assert documint.result == StackResult.ROLLED_BACK, session.log()
    assert (
        "documint: its image changes (app ghcr.io/lumen-studio/documint:2.4.1 → "
        "ghcr.io/lumen-studio/documint:2.4.2): snapshot of its data first" in said
    )
    # the copy is made first, then the pre-apply data goes back
    ran = session.ran(r"vpsctl-backup (backup|restore)")
    assert [c.split()[1:3] for c in ran] == [
        ["backup", "pre-apply"],
        ["backup", "pre-rollback"],
        ["restore", SNAP_BEFORE],
    ], ran
    for text in (said, documint.detail):
        assert f"the failed version's data is kept as snapshot {SNAP_COPY[:8]}" in text
        assert f"--snapshot {SNAP_COPY} --stack documint` gets it back" in text
        assert "discards documint/app/records: 1 row(s) written since (3 → 4)" in text
    assert f"data restored from the pre-apply snapshot {SNAP_BEFORE[:8]}" in documint.detail


def test_no_data_is_put_back_when_its_copy_cannot_be_made(prod: Path) -> None:
    session = converged_session(prod)
    spec = image_change(prod, session)
    session.fail(
        r"vpsctl-backup backup pre-rollback documint",
        "restic: unreachable",
        stdout="@@fail unreachable cannot reach the backup host\n",
    )
    result, _ = run_apply(spec, session)
    documint = outcome_of(result, "documint")
    assert documint.result == StackResult.ROLLBACK_FAILED, session.log()
    assert not session.ran(r"vpsctl-backup restore"), session.log()
    assert (
        f"its data was NOT put back from the pre-apply snapshot {SNAP_BEFORE[:8]}: a copy of "
        "the data the failed version holds could not be made first (unreachable cannot reach "
        "the backup host)" in documint.detail
    )
    assert "its data is as the failed version left it" in documint.detail


# ── the health gate says what it waits for, and why it failed ──────────────────────────

HEALTH_POLL = r"^echo @@health; for s in app; do .*project=documint "


def test_the_health_gate_says_each_state_while_waiting_and_the_healthchecks_last_output(
    prod: Path,
) -> None:
    session = converged_session(prod)
    spec = change_documint_env(prod)
    # starting twice, then unhealthy; the previous version (polled after) is healthy
    session.answer(
        HEALTH_POLL, lambda c: health_answer(c, {"app": ("running", "unhealthy")}), times=1
    )
    session.answer(
        HEALTH_POLL, lambda c: health_answer(c, {"app": ("running", "starting")}), times=2
    )
    log = {
        "Status": "unhealthy",
        "Log": [
            {"ExitCode": 0, "Output": "ok"},
            {"ExitCode": 1, "Output": "\x1b[31mwget: server returned error: HTTP/1.1 404\x1b[0m\n"},
        ],
    }
    session.answer(
        r"docker inspect --format '\{\{json \.State\.Health\}\}'",
        stdout=f"@@hlog app\n{json.dumps(log)}\n",
    )
    result, said = run_apply(spec, session)
    documint = outcome_of(result, "documint")
    assert documint.result == StackResult.ROLLED_BACK, session.log()
    assert "documint: waiting 0s: app starting" in said
    assert documint.detail.startswith(
        "recreate failed: after 0s: app unhealthy\napp's healthcheck said (exit 1): wget: "
        "server returned error: HTTP/1.1 404;"
    ), documint.detail
    assert "\x1b" not in said + documint.detail
    # one command a poll: three for the new version, one for the previous one
    assert len(session.ran(HEALTH_POLL)) == 4
    assert not session.ran(r"up -d --wait")  # compose's silent wait is not used


@pytest.mark.parametrize(
    ("state", "said"),
    [
        (("exited", "unhealthy", "0"), "app exited"),
        (("restarting", "starting", "3"), "app restarting (3 restarts)"),
    ],
)
def test_a_service_that_exits_or_crash_loops_fails_the_gate_at_once(
    prod: Path, state: tuple[str, ...], said: str
) -> None:
    session = converged_session(prod)
    spec = change_documint_env(prod)
    session.answer(HEALTH_POLL, lambda c: health_answer(c, {"app": state}), times=1)
    # a restart or two is waited for, as compose's --wait would
    session.answer(
        HEALTH_POLL, lambda c: health_answer(c, {"app": ("restarting", "starting", "2")}), times=1
    )
    result, _ = run_apply(spec, session)
    documint = outcome_of(result, "documint")
    assert documint.result == StackResult.ROLLED_BACK, session.log()
    assert documint.detail.startswith(f"recreate failed: after 0s: {said}"), documint.detail
    assert len(session.ran(HEALTH_POLL)) == 3  # waited once, failed, then the previous one


def test_probes_that_are_retried_say_what_they_wait_for(prod: Path) -> None:
    session = converged_session(prod)
    spec = change_documint_env(prod)
    session.fail_probes(spec, ("documint",), times=1)  # then they pass
    applier = Applier(spec, session, out := io.StringIO())
    applier.probe_deadline = 60
    applier.health_interval = 0
    applier.health_every = 0
    result = applier.apply()
    assert result.ok, session.log()
    said = out.getvalue()
    assert "  probes: waiting 0s of 60s: documint/health answered 503; expected 200" in said


# ── a failed apply's journal says what it had already changed ──────────────────────────


def test_a_run_that_stops_half_way_journals_what_it_had_changed(prod: Path) -> None:
    session = converged_session(prod)
    assert session.host is not None
    session.host.files = {
        p: f for p, f in session.host.files.items() if not p.startswith("/opt/vpsctl/host/")
    }
    session.host.timers = {}
    edit(prod / "stacks/documint.yaml", "documint:2.4.1", "documint:2.4.2")
    session.fail(r"docker pull", "Error response from daemon: toomanyrequests")
    with pytest.raises(remote.RemoteError):
        run_apply(load_spec(prod / INV), session)
    line = journal_of(session)
    assert str(line["result"]).startswith("error: docker pull ghcr.io/lumen-studio/documint")
    changed = line["changed"]
    assert isinstance(changed, list) and len(changed) == 2, changed
    assert str(changed[0]).startswith("backup files uploaded: vpsctl-backup, ")
    assert changed[1] == "timers enabled: vpsctl-backup.timer, vpsctl-backup-check.timer"


def test_a_failed_run_journals_each_stack_it_touched(prod: Path) -> None:
    session = converged_session(prod)
    spec = change_documint_env(prod)
    session.fail(COMPOSE_UP, "container documint-app-1 is unhealthy", times=1)
    run_apply(spec, session)
    changed = journal_of(session)["changed"]
    assert changed == [
        "documint: files uploaded: /opt/vpsctl/stacks/documint/env/app.env",
        "documint: recreate failed its gate; rolled back to its previous files",
        "documint: recreate → rolled back",
    ], changed


def test_the_bootstrap_deploy_loads_once_and_whole_from_many_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The nodes of a cluster are judged from threads: none may get the deploy module while
    another thread is still running it (it is in sys.modules before it has run). Running
    the module is slowed down here, so that the others ask meanwhile."""
    real = importlib.util.spec_from_file_location

    def slow(*args: Any, **kwargs: Any) -> Any:
        found = real(*args, **kwargs)
        assert found is not None and found.loader is not None
        run = found.loader.exec_module

        def exec_module(module: Any) -> None:
            time.sleep(0.3)
            run(module)

        monkeypatch.setattr(found.loader, "exec_module", exec_module)
        return found

    monkeypatch.setattr(importlib.util, "spec_from_file_location", slow)
    monkeypatch.delitem(sys.modules, "vpsctl_deploys.bootstrap", raising=False)
    with ThreadPoolExecutor(8) as pool:  # each uses it at once, as a node's judge does
        settings = list(
            pool.map(lambda _: getattr(deploy_module("bootstrap"), "Settings", None), range(16))
        )
    assert settings[0] is not None and all(s is settings[0] for s in settings)
