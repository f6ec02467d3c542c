"""Leftovers (issue 17 §4) and plan lines (§5): the routes of a new stack whose first start
failed are withheld from the edge; kept volumes of undeclared stacks are listed and can be
deleted; certificates of names no longer served are only listed; a domain rename is one
line of the plan. Driven through a scripted session and synthesized host facts."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import factsim
from tests.helpers import ROOT, edit, golden_prod_copy
from tests.scripted import ScriptedSession
from vpsctl.cli.views import audit_text, plan_text
from vpsctl.core.facts import FACTS_SCRIPT, MANIFEST, Volume, parse
from vpsctl.core.plan import SiteRename, make_plan
from vpsctl.core.render import render_caddyfile
from vpsctl.ops import apply, audit
from vpsctl.ops.apply import Applier, ApplyResult, StackResult
from vpsctl.ops.inputs import render_spec
from vpsctl.spec.loader import load_spec
from vpsctl.spec.studio import Spec

INV = "inventory/prod"
CADDYFILE = "/opt/vpsctl/stacks/edge/config/caddy/Caddyfile"


@pytest.fixture
def prod(tmp_path: Path) -> Iterator[Path]:
    """A private copy of the example studio with the golden (fake) secrets."""
    yield golden_prod_copy(tmp_path)


def run_apply(spec: Spec, session: ScriptedSession, **kwargs: object) -> tuple[ApplyResult, str]:
    out = io.StringIO()
    applier = Applier(spec, session, out, **kwargs)  # type: ignore[arg-type]
    applier.probe_deadline = 0
    result = applier.apply()
    return result, out.getvalue()


# ── §4: the rollback of a first start reverts the edge too ─────────────────────────────


def host_without_cronping(root: Path) -> tuple[Spec, ScriptedSession]:
    """The studio runs, except cronping, which this apply starts for the first time: the
    host's Caddyfile has no route to it yet."""
    spec = load_spec(root / INV)
    desired = render_spec(spec)
    host = factsim.converged(desired)
    assert isinstance(host.manifest, dict)
    host.manifest["bootstrap"] = apply._settings_hash(apply.bootstrap_settings(spec))
    host.containers = [c for c in host.containers if c["project"] != "cronping"]
    for c in host.containers:
        c["image"] = spec.stacks[c["project"]].services[c["service"]].image
    host.files = {p: f for p, f in host.files.items() if "/stacks/cronping/" not in p}
    old_caddyfile = render_caddyfile(spec, without=frozenset({"cronping"})).encode()
    host.files[CADDYFILE] = (old_caddyfile, 0o644, "root:root")
    files = host.manifest["files"]
    assert isinstance(files, dict)
    files[CADDYFILE] = {"sha256": hashlib.sha256(old_caddyfile).hexdigest(), "mode": "0644"}
    for path in [p for p in files if "/stacks/cronping/" in p]:
        del files[path]
    stacks = host.manifest["stacks"]
    assert isinstance(stacks, dict)
    del stacks["cronping"]
    session = ScriptedSession(host)
    session.pass_probes(spec)
    session.answer(
        r"^docker ps -q --filter label=com.docker.compose.project=edge", stdout="c4ddy\n"
    )
    return spec, session


def manifest_written(session: ScriptedSession) -> dict[str, object]:
    data: dict[str, object] = json.loads(session.written[MANIFEST])
    return data


def test_a_new_stack_that_fails_to_start_gets_no_route_at_the_edge(prod: Path) -> None:
    spec, session = host_without_cronping(prod)
    session.fail(r"docker compose -p cronping up", "dependency failed to start")
    result, said = run_apply(spec, session)
    cronping = next(o for o in result.outcomes if o.stack == "cronping")
    assert cronping.result == StackResult.ROLLED_BACK, session.log()
    # the Caddyfile the edge validated and loaded has no site of cronping
    loaded = session.written[CADDYFILE + ".next"].decode()
    assert "cronping.dev {" not in loaded
    assert "lumenstudio.dev {" in loaded
    assert "edge: not routing to cronping: its first start failed" in said
    # the manifest records the Caddyfile that was loaded, not the full desired one: the next
    # plan shows the routes of cronping as still to add
    manifest = manifest_written(session)
    files = manifest["files"]
    assert isinstance(files, dict)
    assert files[CADDYFILE]["sha256"] == hashlib.sha256(loaded.encode()).hexdigest()
    assert session.host is not None
    session.host.files[CADDYFILE] = (loaded.encode(), 0o644, "root:root")
    session.host.manifest = manifest
    again = make_plan("lumen-prod", render_spec(spec), parse(session.host.output()))
    [caddy] = [f for f in again.files if f.path == CADDYFILE]
    assert caddy.action == "update" and caddy.reason == "content differs"
    assert "+cronping.dev {" in caddy.diff


def test_a_new_stack_rolled_back_after_the_edge_is_unrouted_again(prod: Path) -> None:
    spec, session = host_without_cronping(prod)
    # cronping comes up healthy, the edge loads its routes, then its probes fail
    session.fail_probes(spec, ("cronping",))
    result, said = run_apply(spec, session)
    cronping = next(o for o in result.outcomes if o.stack == "cronping")
    assert cronping.result == StackResult.ROLLED_BACK, session.log()
    assert cronping.detail.endswith("rolled back: removed (it was new)")
    edge = [o for o in result.outcomes if o.stack == "edge"]
    assert [o.result for o in edge] == [StackResult.APPLIED, StackResult.APPLIED], said
    # the Caddyfile loaded last has no route to cronping
    assert len(session.ran(r"caddy reload")) == 2
    loaded = session.written[CADDYFILE + ".next"].decode()
    assert "cronping.dev {" not in loaded
    assert "edge: not routing to cronping" in said


# ── §4: kept volumes of stacks no longer declared ──────────────────────────────────────

OLD_VOLUME = ("oldstats_event-data", "oldstats", "2026-11-02T09:14:03Z", 1572864)  # 1.5 GiB


def converged_host(spec: Spec) -> factsim.SimHost:
    host = factsim.converged(render_spec(spec))
    assert isinstance(host.manifest, dict)
    host.manifest["bootstrap"] = apply._settings_hash(apply.bootstrap_settings(spec))
    # the declared stacks' volumes (in use: not measured), and one of a stack removed before
    host.volumes = [
        ("ghost_mysql", "ghost", "2026-10-01T08:00:00Z", None),
        OLD_VOLUME,
        ("oldstats_db-data", "oldstats", "2026-11-02T09:14:03Z", None),
    ]
    return host


def test_facts_read_volumes_and_recorded_answers_without_them_still_parse() -> None:
    host = factsim.SimHost(docker="26.1.5+dfsg1", volumes=[OLD_VOLUME])
    [volume] = parse(host.output()).volumes
    assert volume == Volume(
        "oldstats_event-data", "oldstats", "2026-11-02T09:14:03Z", 1572864 * 1024
    )
    for recorded in sorted((ROOT / "tests/fixtures/facts").glob("*.txt")):
        assert parse(recorded.read_text()).volumes == []
    assert "@@volume $name $project $created" in FACTS_SCRIPT


def test_kept_volumes_are_listed_by_plan_v_and_counted_without_v(prod: Path) -> None:
    spec = load_spec(prod / INV)
    facts = parse(converged_host(spec).output())
    plan = make_plan("lumen-prod", render_spec(spec), facts, inventory="inventory/prod")
    assert not plan.changes and plan.summary() == "No changes. The host matches the spec."
    assert [(v.name, v.action) for v in plan.volumes] == [
        ("oldstats_db-data", "keep"),
        ("oldstats_event-data", "keep"),
    ]
    verbose = plan_text(plan, verbose=True)
    assert "  kept: oldstats_event-data 1.50 GiB since 2026-11-02\n" in verbose
    assert "  kept: oldstats_db-data size not measured since 2026-11-02\n" in verbose
    assert "`vpsctl apply -i inventory/prod --destroy-data` deletes them" in verbose
    assert "ghost_mysql" not in verbose
    brief = plan_text(plan)
    assert (
        "Kept: 2 volume(s) of stacks the spec no longer declares, 1.50 GiB; "
        "`vpsctl plan -i inventory/prod -v` lists them" in brief
    )
    assert plan.to_json()["volumes"][1]["size"] == 1572864 * 1024


def test_destroy_data_plans_and_deletes_kept_volumes_with_no_stack_removed(prod: Path) -> None:
    spec = load_spec(prod / INV)
    host = converged_host(spec)
    plan = make_plan("lumen-prod", render_spec(spec), parse(host.output()), destroy_data=True)
    assert plan.changes
    assert plan.summary() == "Plan: 0 to add, 0 to change, 2 to remove."
    assert "  - delete oldstats_event-data 1.50 GiB since 2026-11-02" in plan_text(plan)
    session = ScriptedSession(host)
    session.pass_probes(spec)
    result, said = run_apply(spec, session, destroy_data=True)
    assert result.ok, said
    [deleted] = session.ran(r"docker volume rm")
    assert "oldstats_event-data oldstats_db-data" in deleted or (
        "oldstats_db-data oldstats_event-data" in deleted
    )
    assert "ghost_mysql" not in deleted
    assert "volumes: deleted oldstats_db-data, oldstats_event-data" in said
    # without --destroy-data the same host has nothing to do, and nothing is deleted
    session = ScriptedSession(host)
    result, said = run_apply(spec, session)
    assert result.ok and not session.ran(r"docker volume rm")


def test_the_audit_lists_kept_volumes_as_info_never_failing(
    prod: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(prod)  # the inventory is named as the operator would type it
    spec = load_spec(prod / INV)
    facts = parse(converged_host(spec).output())
    checks = audit.kept_volumes(spec, facts)
    assert [(c.name, c.status) for c in checks] == [
        ("kept volume oldstats_db-data", "info"),
        ("kept volume oldstats_event-data", "info"),
    ]
    assert checks[1].value == "1.50 GiB since 2026-11-02; stack oldstats is no longer declared"
    assert checks[1].threshold == "`vpsctl apply -i inventory/prod --destroy-data` deletes it"
    report = audit.Report("lumen-prod", checks)
    assert report.ok
    assert report.summary().startswith("audit lumen-prod: healthy: 0 ok, 0 warn, 0 FAIL, 2 info")
    assert "  info  kept volume oldstats_event-data  1.50 GiB" in audit_text(report)


# ── §4: certificates of names no longer served ─────────────────────────────────────────

CERTS = "/var/lib/docker/volumes/edge_data/_data/caddy/certificates/acme-v02.api.letsencrypt.org"


def test_certificates_are_judged_only_for_the_names_the_spec_serves(prod: Path) -> None:
    spec = load_spec(prod / INV)
    now = 1_800_000_000
    facts = audit.AuditFacts(
        now=now,
        certs=[
            (now + 60 * 86400, f"{CERTS}/lumenstudio.dev/lumenstudio.dev.crt"),
            # stats.… was renamed away: Caddy no longer renews it, and it runs out in 2 days
            (now + 2 * 86400, f"{CERTS}/stats.old-lumen.dev/stats.old-lumen.dev.crt"),
        ],
    )
    checks = {c.name: c for c in audit._host(spec, facts) if c.name.startswith("TLS")}
    served = checks["TLS certificate lumenstudio.dev"]
    assert served.status == "ok" and served.value == "60.0 days left"
    stale = checks["TLS certificate stats.old-lumen.dev"]
    assert stale.status == "info"
    assert stale.value.startswith("2.0 days left; no longer served by the spec")
    assert "lumenstudio.dev" in audit.served_names(spec)
    assert "www.cronping.dev" in audit.served_names(spec)  # a redirect's name is served too


# ── §5: a domain rename is one line of the plan ────────────────────────────────────────


def rename_plausible(root: Path) -> None:
    edit(
        root / "inventory/prod/host.yaml",
        "site: stats.lumenstudio.dev",
        "site: analytics.lumenstudio.dev",
    )


def test_a_domain_rename_is_one_line_above_the_caddyfile_diff(prod: Path) -> None:
    host = factsim.converged(render_spec(load_spec(prod / INV)))
    rename_plausible(prod)
    plan = make_plan("lumen-prod", render_spec(load_spec(prod / INV)), parse(host.output()))
    assert plan.renames == [
        SiteRename("plausible", "site", "stats.lumenstudio.dev", "analytics.lumenstudio.dev")
    ]
    text = plan_text(plan)
    line = (
        "  ~ plausible site stats.lumenstudio.dev → analytics.lumenstudio.dev; "
        "the old name stops being served\n"
    )
    assert line in text
    assert text.index(line) < text.index(f"update {CADDYFILE}")
    assert plan.to_json()["renames"] == [
        {
            "stack": "plausible",
            "key": "site",
            "old": "stats.lumenstudio.dev",
            "new": "analytics.lumenstudio.dev",
        }
    ]
    # a manifest of an older vpsctl records no domains: the one name gone and the one added
    # are still paired
    assert isinstance(host.manifest, dict)
    stacks = host.manifest["stacks"]
    assert isinstance(stacks, dict)
    for record in stacks.values():
        record.pop("domains")
    plan = make_plan("lumen-prod", render_spec(load_spec(prod / INV)), parse(host.output()))
    assert [(r.stack, r.key, r.new) for r in plan.renames] == [
        ("plausible", "site", "analytics.lumenstudio.dev")
    ]


def test_two_names_of_one_stack_renamed_are_paired_by_their_keys(prod: Path) -> None:
    host = factsim.converged(render_spec(load_spec(prod / INV)))
    edit(
        prod / "inventory/prod/host.yaml",
        "domains: {app: cronping.dev, www: www.cronping.dev}",
        "domains: {app: cronping.io, www: www.cronping.io}",
    )
    plan = make_plan("lumen-prod", render_spec(load_spec(prod / INV)), parse(host.output()))
    assert sorted((r.key, r.old, r.new) for r in plan.renames) == [
        ("app", "cronping.dev", "cronping.io"),
        ("www", "www.cronping.dev", "www.cronping.io"),
    ]
    unchanged = factsim.converged(render_spec(load_spec(prod / INV)))
    assert (
        make_plan(
            "lumen-prod", render_spec(load_spec(prod / INV)), parse(unchanged.output())
        ).renames
        == []
    )
