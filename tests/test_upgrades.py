"""Upgrades (issue 16), offline: Caddy holds requests while an upstream is recreated, a
database's recreate is planned as downtime, a stand-in's tag follows the declared ref, and
an applied version's record round-trips into the desired state a rollback puts back."""

from __future__ import annotations

import base64
import io
import json
import re
import shlex
import tarfile
from pathlib import Path

import pytest

from tests import factsim, scripted
from tests.helpers import ROOT, assert_no_secrets, golden_prod_copy, run_cli
from tests.scripted import outcome_of
from vpsctl.cli.views import history_text, plan_text
from vpsctl.core.facts import parse
from vpsctl.core.plan import make_plan
from vpsctl.core.render import UPSTREAM_TRY_DURATION, Desired
from vpsctl.core.versions import desired_of, needs_data, parse_versions, version_record
from vpsctl.local import standins
from vpsctl.ops.apply import StackResult
from vpsctl.ops.inputs import render_spec
from vpsctl.ops.versions import (
    RollbackError,
    checked_stacks,
    choose,
    history,
    rollback_applier,
)
from vpsctl.spec.loader import load_spec

CADDYFILE = "/opt/vpsctl/stacks/edge/config/caddy/Caddyfile"


@pytest.fixture
def prod(tmp_path: Path) -> Path:
    return golden_prod_copy(tmp_path)


def desired(root: Path) -> Desired:
    return render_spec(load_spec(root / "inventory/prod"))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def test_every_proxied_route_holds_requests_while_its_upstream_is_recreated(prod: Path) -> None:
    text = desired(prod).files[CADDYFILE].content.decode()
    proxies = re.findall(r"reverse_proxy (\S+) \{\n([^}]*)\}", text)
    assert len(proxies) == text.count("reverse_proxy ") > 4
    for upstream, block in proxies:
        assert f"lb_try_duration {UPSTREAM_TRY_DURATION}\n" in block, upstream
        assert "lb_try_interval 250ms\n" in block, upstream
    # under the probes' 10 s curl limit: a service that stays down still answers 502
    assert int(UPSTREAM_TRY_DURATION.rstrip("s")) < 10


def test_a_database_recreate_is_planned_as_downtime_and_an_app_behind_caddy_is_not(
    prod: Path,
) -> None:
    host = factsim.converged(desired(prod))
    edit(prod / "stacks/ghost.yaml", "    mem_limit: 512m\n", "    mem_limit: 640m\n")
    plan = make_plan("lumen-prod", desired(prod), parse(host.output()))
    [ghost] = [s for s in plan.stacks if s.stack == "ghost"]
    assert ghost.action == "recreate" and ghost.services == ("mysql",)
    assert ghost.reason.endswith(
        "mysql is down while recreated (no second copy of it can run): until healthy, at "
        "most 60s (its healthcheck's start period)"
    ), ghost.reason
    # the app itself is behind Caddy: requests are held while it restarts, no downtime line
    prod2 = prod / "again"
    golden_prod_copy(prod2)
    host = factsim.converged(desired(prod2))
    edit(prod2 / "stacks/ghost.yaml", "    mem_limit: 768m\n", "    mem_limit: 800m\n")
    plan = make_plan("lumen-prod", desired(prod2), parse(host.output()))
    [ghost] = [s for s in plan.stacks if s.stack == "ghost"]
    assert ghost.services == ("ghost",)
    assert "down while recreated" not in ghost.reason, ghost.reason


def test_a_stand_ins_tag_follows_the_ref_it_stands_in_for() -> None:
    root = ROOT / "standins"
    args = {"PRODUCT": "DocuMint"}
    old = standins.local_tag(root, "product", args, "ghcr.io/lumen-studio/documint:2.4.1")
    new = standins.local_tag(root, "product", args, "ghcr.io/lumen-studio/documint:2.4.2")
    assert old != new  # a tag bump is a new image on the box: the sandbox recreates
    assert old == standins.local_tag(root, "product", args, "ghcr.io/lumen-studio/documint:2.4.1")
    assert old.rsplit(":", 1)[0] == new.rsplit(":", 1)[0] == "vpsctl-standin/product-documint"
    # the build's own tag (no ref) is the one both are tagged from
    assert standins.local_tag(root, "product", args) not in (old, new)


def test_a_sandbox_tag_bump_changes_exactly_that_stack(tmp_path: Path) -> None:
    """The stand-in's bytes stay the same; its tag follows the declared ref, so documint's
    container definition changes (the plan recreates it) and nothing else does."""
    golden_prod_copy(tmp_path)
    assert run_cli(tmp_path, "secrets", "generate", "-i", "inventory/sandbox").code == 0
    inventory = tmp_path / "inventory/sandbox"
    before = render_spec(load_spec(inventory), offline=True)
    for path in (tmp_path / "stacks/documint.yaml", inventory / "host.yaml"):
        edit(path, "ghcr.io/lumen-studio/documint:2.4.1", "ghcr.io/lumen-studio/documint:2.4.2")
    after = render_spec(load_spec(inventory), offline=True)
    changed = [n for n in after.stacks if after.stacks[n].services != before.stacks[n].services]
    assert changed == ["documint"]
    old, new = before.stacks["documint"], after.stacks["documint"]
    assert old.service_images["app"] != new.service_images["app"]
    assert new.images[0].declared == "ghcr.io/lumen-studio/documint:2.4.2"


def record_of(d: Desired, stack: str, time: str, plan_hash: str) -> dict[str, object]:
    files = [d.files[p] for p in d.stacks[stack].files]
    return version_record(
        d.stacks[stack], files, time=time, plan_hash=plan_hash, result="applied", snapshot=None
    )


def test_a_versions_record_holds_no_value_and_gives_back_the_desired_stack(prod: Path) -> None:
    d = desired(prod)
    record = record_of(d, "documint", "2026-12-03T15:00:00Z", "ab" * 32)
    text = json.dumps(record)
    env = next(d.files[p] for p in d.stacks["documint"].files if d.files[p].kind == "env")
    values = [line.split("=", 1)[1] for line in env.content.decode().splitlines() if "=" in line]
    assert any(len(v) > 40 for v in values)  # the secrets are there to be leaked
    for value in values:
        if len(value) > 8:
            assert value not in text  # hashes, refs and names only
    [version] = parse_versions(text + "\nnot json\n")["documint"]
    assert version.version == "20261203T150000Z-abababab"
    contents = {p: (d.files[p].content, d.files[p].mode) for p in d.stacks["documint"].files}
    stack, files = desired_of(version, contents)
    assert stack == d.stacks["documint"]
    assert files == [d.files[p] for p in sorted(d.stacks["documint"].files)]
    with pytest.raises(ValueError, match=r"documint: /opt/vpsctl/stacks/documint/\S+ is not kept"):
        desired_of(version, {})


def test_going_back_across_an_image_change_of_backed_up_data_needs_its_snapshot(
    prod: Path,
) -> None:
    old = record_of(desired(prod), "documint", "2026-12-03T15:00:00Z", "aa" * 32)
    edit(prod / "stacks/documint.yaml", "documint:2.4.1", "documint:2.4.2")
    edit(prod / "inventory/prod/host.yaml", "name: lumen-prod", "name: lumen-prod")
    new = record_of(desired(prod), "documint", "2026-12-03T16:00:00Z", "bb" * 32)
    lines = "\n".join(json.dumps(r) for r in (new, old))
    first, second = parse_versions(lines)["documint"]  # oldest first, whatever the order
    assert (first.plan_hash, second.plan_hash) == ("aa" * 32, "bb" * 32)
    assert second.backed_up and needs_data(second, first)
    assert not needs_data(first, first)


def test_a_rollback_refuses_clearly_when_it_cannot_go_back(prod: Path) -> None:
    spec = load_spec(prod / "inventory/prod")
    with pytest.raises(RollbackError, match="the box keeps no applied version of any stack"):
        choose(spec, {}, [])
    one = parse_versions(
        json.dumps(record_of(desired(prod), "documint", "2026-12-03T15:00:00Z", "aa" * 32))
    )
    with pytest.raises(
        RollbackError,
        match=r"rollback: documint has no previous version to go back to: the box keeps only "
        r"20261203T150000Z-aaaaaaaa, the one it runs \(`vpsctl history -i \S+ documint`",
    ):
        choose(spec, one, ["documint"])
    with pytest.raises(
        RollbackError, match=r"rollback: ghost has no previous version .* keeps none"
    ):
        choose(spec, one, ["ghost"])
    with pytest.raises(RollbackError, match=r"history: no stack 'nosuch' in \S+ \(declared: "):
        checked_stacks(spec, ["nosuch"], "history")


def test_a_rollback_across_an_image_change_needs_the_snapshot_taken_before_it(
    prod: Path,
) -> None:
    spec = load_spec(prod / "inventory/prod")
    old = record_of(desired(prod), "documint", "2026-12-03T15:00:00Z", "aa" * 32)
    edit(prod / "stacks/documint.yaml", "documint:2.4.1", "documint:2.4.2")
    new = record_of(desired(prod), "documint", "2026-12-03T16:00:00Z", "bb" * 32)
    found = parse_versions("\n".join(json.dumps(r) for r in (old, new)))
    with pytest.raises(
        RollbackError,
        match=r"documint: going back from 20261203T160000Z-bbbbbbbb \(app "
        r"ghcr.io/lumen-studio/documint:2.4.2\) to 20261203T150000Z-aaaaaaaa .* recorded no "
        r"pre-apply snapshot: refusing",
    ):
        choose(spec, found, [])  # the last apply's stacks
    new["snapshot"] = "5e" * 32
    found = parse_versions("\n".join(json.dumps(r) for r in (old, new)))
    [target] = choose(spec, found, [])
    assert (target.stack, target.previous.plan_hash, target.data) == (
        "documint",
        "aa" * 32,
        "5e" * 32,
    )


def test_history_lists_newest_first_and_marks_what_runs(prod: Path) -> None:
    d = desired(prod)
    lines = [
        record_of(d, "documint", "2026-12-03T15:00:00Z", "aa" * 32),
        record_of(d, "ghost", "2026-12-03T15:00:00Z", "aa" * 32),
        record_of(d, "documint", "2026-12-03T16:00:00Z", "bb" * 32),
    ]
    found = parse_versions("\n".join(json.dumps(r) for r in lines))
    listed = history(found, ["documint"])
    assert [v.version for v in listed] == [
        "20261203T160000Z-bbbbbbbb",
        "20261203T150000Z-aaaaaaaa",
    ]
    text = history_text(listed, {(n, vs[-1].version) for n, vs in found.items()})
    first, newest, older = text.splitlines()
    assert first.split() == ["STACK", "VERSION", "TIME", "PLAN", "RESULT", "IMAGES"]
    assert newest.startswith("* documint 20261203T160000Z-bbbbbbbb 2026-12-03T16:00:00Z ")
    assert newest.endswith(" applied app=ghcr.io/lumen-studio/documint:2.4.1")
    assert older.startswith("  documint 20261203T150000Z-aaaaaaaa ")
    assert len(history(found, [])) == 3


def tar_of(d: Desired, stack: str) -> str:
    """The ``files.tar`` of a version, base64 (as the box hands it over)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in d.stacks[stack].files:
            f = d.files[path]
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(f.content), f.mode
            tar.addfile(info, io.BytesIO(f.content))
    return base64.b64encode(buffer.getvalue()).decode()


def test_a_rollback_plans_and_applies_the_previous_version_of_that_stack_only(
    prod: Path,
) -> None:
    old = desired(prod)
    old_record = record_of(old, "documint", "2026-12-03T15:00:00Z", "aa" * 32)
    edit(prod / "stacks/documint.yaml", "PDF_RENDERER: builtin", "PDF_RENDERER: chromium")
    spec = load_spec(prod / "inventory/prod")
    new_record = record_of(desired(prod), "documint", "2026-12-03T16:00:00Z", "bb" * 32)
    session = scripted.converged_session(spec)  # the box runs the newer version
    session.answer(
        r"/opt/vpsctl/versions/\*/\*/version\.json",
        stdout="\n".join(json.dumps(r) for r in (old_record, new_record)) + "\n",
    )
    session.answer(
        r"base64 -w0 -- /opt/vpsctl/versions/documint/20261203T150000Z-aaaaaaaa/files\.tar",
        stdout=tar_of(old, "documint"),
    )
    out = io.StringIO()
    applier, [target] = rollback_applier(spec, session, out, ["documint"])
    assert target.previous.version == "20261203T150000Z-aaaaaaaa" and target.data is None
    changed = [s.stack for s in applier.plan.stacks if s.action != "none"]
    assert changed == ["documint"]
    [env] = [f for f in applier.plan.files if f.action != "unchanged"]
    assert env.path.startswith("/opt/vpsctl/stacks/documint/") and env.path.endswith(".env")
    assert env.diff == "~ PDF_RENDERER: 'chromium' → 'builtin'\n"
    applier.probe_deadline, applier.health_interval = 0, 0
    result = applier.apply()
    assert result.ok, out.getvalue()
    assert outcome_of(result, "documint").result == StackResult.APPLIED
    [kept] = session.ran(r"tar -C / -cf /opt/vpsctl/versions/documint/\d{8}T\d{6}Z-\w{8}/")
    assert '"result": "rollback to 20261203T150000Z-aaaaaaaa"' in kept
    assert_no_secrets(prod, out.getvalue(), plan_text(applier.plan), kept)


def test_a_rollback_refuses_when_the_spec_also_changes_another_stack(prod: Path) -> None:
    old = desired(prod)
    old_record = record_of(old, "documint", "2026-12-03T15:00:00Z", "aa" * 32)
    edit(prod / "stacks/documint.yaml", "PDF_RENDERER: builtin", "PDF_RENDERER: chromium")
    session = scripted.converged_session(load_spec(prod / "inventory/prod"))
    new_record = record_of(desired(prod), "documint", "2026-12-03T16:00:00Z", "bb" * 32)
    edit(prod / "stacks/ghost.yaml", "    mem_limit: 768m\n", "    mem_limit: 800m\n")
    session.answer(
        r"/opt/vpsctl/versions/\*/\*/version\.json",
        stdout="\n".join(json.dumps(r) for r in (old_record, new_record)) + "\n",
    )
    session.answer(r"base64 -w0 -- /opt/vpsctl/versions/documint/", stdout=tar_of(old, "documint"))
    with pytest.raises(
        RollbackError,
        match=r"rollback: the spec also changes what the rollback of documint does not touch "
        r"\(ghost: recreate; .*\): apply those changes first, or revert them, then roll back",
    ):
        rollback_applier(load_spec(prod / "inventory/prod"), session, io.StringIO(), [])
    assert not session.ran(r"^docker compose")  # nothing touched
    assert not session.in_order(r"^put_files ")


def test_a_rollback_across_an_image_change_puts_the_data_back_from_its_snapshot(
    prod: Path,
) -> None:
    """The newer image may have changed documint's data: once the old version is healthy
    again, its data goes back from the pre-apply snapshot the newer version recorded, after
    a copy of the data as the newer version left it."""
    old = desired(prod)
    old_record = record_of(old, "documint", "2026-12-03T15:00:00Z", "aa" * 32)
    edit(prod / "stacks/documint.yaml", "documint:2.4.1", "documint:2.4.2")
    spec = load_spec(prod / "inventory/prod")
    new_record = record_of(desired(prod), "documint", "2026-12-03T16:00:00Z", "bb" * 32)
    new_record["snapshot"] = "5e" * 32
    session = scripted.converged_session(spec)
    session.answer(
        r"/opt/vpsctl/versions/\*/\*/version\.json",
        stdout="\n".join(json.dumps(r) for r in (old_record, new_record)) + "\n",
    )
    session.answer(r"base64 -w0 -- /opt/vpsctl/versions/documint/", stdout=tar_of(old, "documint"))
    for phase, snapshot in (("pre-apply", "1a" * 32), ("pre-rollback", "2b" * 32)):
        session.answer(
            rf"vpsctl-backup backup {phase} documint",
            stdout=f"@@snapshot {snapshot}\n@@counted documint\tapp\trecords\t3\n",
        )
    out = io.StringIO()
    applier, [target] = rollback_applier(spec, session, out, ["documint"])
    assert target.data == "5e" * 32
    [planned] = [s for s in applier.plan.stacks if s.action != "none"]
    assert (planned.stack, planned.snapshot) == ("documint", True)
    applier.probe_deadline, applier.health_interval = 0, 0
    result = applier.apply()
    assert result.ok, out.getvalue()
    assert session.in_order(
        r"vpsctl-backup backup pre-apply documint",
        r"docker compose -p documint",
        r"vpsctl-backup backup pre-rollback documint",
        r"vpsctl-backup restore " + "5e" * 32 + " all documint",
    ) == [
        r"vpsctl-backup backup pre-apply documint",
        r"docker compose -p documint",
        r"vpsctl-backup backup pre-rollback documint",
        r"vpsctl-backup restore " + "5e" * 32 + " all documint",
    ], session.log()
    assert "documint: data restored from the pre-apply snapshot 5e5e5e5e" in out.getvalue()


def test_an_apply_keeps_the_version_of_each_stack_it_changed_and_says_when_it_cannot(
    prod: Path,
) -> None:
    session = scripted.converged_session(load_spec(prod / "inventory/prod"))
    edit(prod / "stacks/documint.yaml", "PDF_RENDERER: builtin", "PDF_RENDERER: chromium")
    session.answer(r"/opt/vpsctl/versions/documint/", stdout="@@unkept documint\n")
    result, said = scripted.run_applier(load_spec(prod / "inventory/prod"), session)
    [kept] = session.ran(r"/opt/vpsctl/versions/")  # one command, documint's only
    assert "tar -C / -cf /opt/vpsctl/versions/documint/" in kept
    assert "/opt/vpsctl/versions/ghost/" not in kept  # unchanged: no new version
    record = json.loads(shlex.split(kept.split("printf '%s\\n' ", 1)[1])[0])
    assert record["result"] == "applied" and record["images"] == {
        "app": "ghcr.io/lumen-studio/documint:2.4.1"
    }
    assert not result.ok
    assert result.problems == [
        "the applied version of documint could not be kept under /opt/vpsctl/versions for "
        "a rollback (no error output); the stacks themselves are applied"
    ]
    assert_no_secrets(prod, said, kept)
