"""apply's phases without a box, beyond the rollbacks of ``test_apply_units.py``: the edge's
Caddyfile gate (Caddy validates, a rejected one is never loaded, a failed reload or a
failed gate of the stacks behind it brings the old config back), the routes of a new stack
whose first start failed withheld from the edge, the pre-apply snapshot that cannot be
taken, image shipping, the bootstrap, the prune of removed stacks and of kept volumes, the
manifest and the journal that cannot be written, and saved plans that went stale.

Each test drives the public :class:`~vpsctl.ops.apply.Applier` over a scripted session
(``tests/scripted.py``) to a host of ``tests/factsim.py`` and asserts what the operator
sees: the outcomes, the summary, what was said, and the commands run, in order.

What the e2e suite proves on a real box, and what this module takes over:

- ``e2e/test_apply.py::test_caddyfile_that_caddy_rejects_is_never_loaded``: complemented by
  the rejection's commands (validate in the running Caddy, ``Caddyfile.next`` removed, no
  move, no reload, no save) and by the one-off validating container when no Caddy runs;
  the e2e test keeps proving real Caddy's verdict.
- ``e2e/test_apply.py::test_removed_stack_is_stopped_and_its_volume_kept``: complemented by
  every branch of the removal (volumes kept or destroyed, no compose file left, a stop or
  a delete that fails); the e2e test keeps the real volume check.
- ``e2e/test_audit.py::test_kept_volumes_of_an_undeclared_stack_are_listed_then_deleted_…``
  (``on_request``): its apply half (``--destroy-data`` deletes them; a failure is a problem
  of the run).
- ``e2e/test_apply.py::test_saved_plan_is_refused_after_a_host_edit``: complemented by the
  other reasons a plan is stale (an input, the containers) and the fresh one accepted,
  through ``load_plan_file`` and ``check_stale`` as ``vpsctl apply PLANFILE`` calls them.
- ``e2e/test_backup.py::test_image_change_snapshots_first_and_rollback_restores_the_data``:
  complemented by the snapshot that cannot be taken (nothing is changed).
- ``e2e/test_bootstrap.py`` and the fresh-box apply of ``e2e/test_apply.py``: complemented
  by when the bootstrap runs (changed settings) and that it comes before anything else.
- Not covered anywhere else: a new stack's routes withheld from the edge (before the edge
  converges, and again after its deferred probes fail), a failed ``caddy reload`` or a
  failed gate of the stacks behind the edge, the ship of stand-in images (and its failure),
  a manifest or journal that cannot be written.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import pytest

from tests import factsim
from tests.helpers import edit, golden_prod_copy
from tests.scripted import (
    CADDY_CONTAINER,
    ScriptedSession,
    converged_session,
    journal_of,
    outcome_of,
    run_applier,
)
from tests.test_apply_units import change_documint_env
from vpsctl.cli.views import apply_text
from vpsctl.host import probes, remote
from vpsctl.local import standins
from vpsctl.ops import apply
from vpsctl.ops.apply import Applier, ApplyResult, StackResult
from vpsctl.ops.inputs import render_spec
from vpsctl.spec.loader import load_spec
from vpsctl.spec.studio import Spec

INV = "inventory/prod"
CADDYFILE = "/opt/vpsctl/stacks/edge/config/caddy/Caddyfile"
NEXT = CADDYFILE + ".next"
VALIDATE = rf"^docker exec {CADDY_CONTAINER} caddy validate --config /etc/caddy/Caddyfile\.next"
RELOAD = rf"(?m)^docker exec {CADDY_CONTAINER} caddy reload --config /etc/caddy/Caddyfile "
DOCUMINT_STANZA = "  documint:\n    domains: {app: documint.io, www: www.documint.io}\n"
FLAGBIT_STANZA = (
    "  flagbit:\n    domains: {app: flagbit.app, www: www.flagbit.app, api: api.flagbit.app}\n"
)


@pytest.fixture
def prod(tmp_path: Path) -> Path:
    """A private copy of the example studio with the golden (fake) secrets."""
    return golden_prod_copy(tmp_path)


def spec_of(root: Path) -> Spec:
    return load_spec(root / INV)


def outcomes(result: ApplyResult, stack: str) -> list[apply.StackOutcome]:
    return [o for o in result.outcomes if o.stack == stack]


def without_stack(root: Path, stanza: str) -> ScriptedSession:
    """A session to a host converged to the studio WITHOUT the stack of ``stanza`` in
    host.yaml (so its Caddyfile has no route to it); the studio keeps it."""
    host_yaml = root / INV / "host.yaml"
    full = host_yaml.read_text()
    edit(host_yaml, stanza, "")
    session = converged_session(spec_of(root))
    host_yaml.write_text(full)
    return session


# ── the edge: Caddy judges the Caddyfile before it is loaded ───────────────────────────


def broken(content: bytes) -> bytes:
    return content + b"\nbroken {\n\tno_such_directive\n}\n"


def test_a_caddyfile_caddy_rejects_is_never_loaded(prod: Path) -> None:
    session = converged_session(spec := spec_of(prod))
    session.fail(
        VALIDATE, "Error: adapting config using caddyfile: unrecognized directive: no_such"
    )
    result, said = run_applier(spec, session, caddyfile=broken)
    edge = outcome_of(result, "edge")
    assert (edge.action, edge.result) == ("reload", StackResult.FAILED), session.log()
    assert edge.detail == "the new Caddyfile was rejected by Caddy; the old config keeps serving"
    assert "edge: Caddy rejected the new Caddyfile; not loaded:" in said
    assert "    Error: adapting config using caddyfile: unrecognized directive: no_such" in said
    # uploaded beside the live one, judged by the running Caddy, removed: nothing else
    assert session.written[NEXT].endswith(b"no_such_directive\n}\n")
    assert session.in_order(r"^put_files .*Caddyfile\.next", VALIDATE, rf"^rm -f -- {NEXT}$") == [
        r"^put_files .*Caddyfile\.next",
        VALIDATE,
        rf"^rm -f -- {NEXT}$",
    ]
    assert not session.ran(r"^mv -f -- ")
    assert not session.ran(r"caddy reload")
    assert not session.ran(r"/opt/vpsctl/previous/edge")  # nothing saved: nothing changed
    assert not result.ok
    text = apply_text(result)
    assert "  edge: reload → failed (" in text
    assert "apply: FAILED (see above; no stack was left half-changed)" in text
    assert journal_of(session)["result"] == "failed: edge (failed)"


def test_without_a_running_caddy_a_one_off_container_validates_and_compose_starts_it(
    prod: Path,
) -> None:
    session = converged_session(spec := spec_of(prod))
    session.answer(r"^docker ps -q --filter label=com.docker.compose.project=edge", stdout="")
    caddy = render_spec(spec).stacks["edge"].images[0].ref
    result, _ = run_applier(spec, session, caddyfile=lambda b: b + b"# one more line\n")
    edge = outcome_of(result, "edge")
    assert edge.result == StackResult.APPLIED, session.log()
    [validated] = session.ran(r"caddy.* validate")
    assert validated == (
        "docker run --rm --network none -v /opt/vpsctl/stacks/edge/config/caddy:/etc/caddy:ro "
        f"--entrypoint caddy {caddy} validate --config /etc/caddy/Caddyfile.next --adapter "
        "caddyfile"
    )
    # no Caddy to reload: compose starts it with the new Caddyfile in place
    assert session.in_order(
        r"^docker run --rm", rf"^mv -f -- {NEXT} {CADDYFILE}$", "-p edge up"
    ) == [
        r"^docker run --rm",
        rf"^mv -f -- {NEXT} {CADDYFILE}$",
        "-p edge up",
    ]
    assert not session.ran(r"caddy reload")


@pytest.mark.parametrize("failing", ["reload", "probes"])
def test_a_failed_reload_or_gate_of_the_edge_brings_the_old_caddyfile_back(
    prod: Path, failing: str
) -> None:
    """The edge's gate: Caddy loads the new config, and the stacks it served before still
    pass their probes. Either failing puts the old Caddyfile back and reloads it."""
    session = converged_session(spec := spec_of(prod))
    if failing == "reload":
        session.fail(RELOAD, "Error: loading new config: http app module: start: listening")
    else:
        session.fail_probes(spec, ("cronping",), times=1)  # once: the old config passes
    result, said = run_applier(spec, session, caddyfile=lambda b: b + b"# one more line\n")
    edge = outcome_of(result, "edge")
    if failing == "reload":
        # the old config cannot be loaded either: the rollback says so
        assert edge.result == StackResult.ROLLBACK_FAILED, session.log()
        assert edge.detail.startswith("reload failed: Error: loading new config")
        assert "the previous version did not start (caddy reload: Error: loading" in edge.detail
        assert "the previous files are back in place" in edge.detail
        assert len(session.ran(RELOAD)) == 2
    else:
        assert edge.result == StackResult.ROLLED_BACK, session.log()
        assert edge.detail.startswith("cronping/health https://cronping.dev/healthz: ")
        assert edge.detail.endswith(
            "rolled back to the previous version: it is up and healthy and its probes pass"
        )
        assert "edge: rolled back to the previous version" in said
    # the old Caddyfile was kept, the new one moved in, then the old one copied back
    assert session.in_order(
        r"^rm -rf -- /opt/vpsctl/previous/edge && mkdir .*cp -p --parents",
        rf"^mv -f -- {NEXT} {CADDYFILE}$",
        RELOAD,
        r"^cp -a -- /opt/vpsctl/previous/edge/\. /$",
    ) == [
        r"^rm -rf -- /opt/vpsctl/previous/edge && mkdir .*cp -p --parents",
        rf"^mv -f -- {NEXT} {CADDYFILE}$",
        RELOAD,
        r"^cp -a -- /opt/vpsctl/previous/edge/\. /$",
        RELOAD,
    ], session.log()
    assert "edge: reload →" in apply_text(result) and not result.ok


# ── a new stack whose first start fails gets no route ──────────────────────────────────


def test_a_new_stack_that_fails_its_first_start_gets_no_route_at_the_edge(prod: Path) -> None:
    session = without_stack(prod, DOCUMINT_STANZA)
    spec = spec_of(prod)
    session.fail(r"docker compose -p documint up", "dependency failed to start")
    result, said = run_applier(spec, session)
    documint = outcome_of(result, "documint")
    assert (documint.action, documint.result) == ("start", StackResult.ROLLED_BACK)
    assert documint.detail.endswith("rolled back: removed (it was new)")
    assert (
        "edge: not routing to documint: its first start failed, so nothing of it runs; the "
        "next apply adds its routes" in said
    )
    # the edge converged, with a Caddyfile that does not name documint
    assert outcome_of(result, "edge").result == StackResult.APPLIED, session.log()
    uploaded = session.written[NEXT]
    assert b"documint.io" not in uploaded and b"cronping.dev" in uploaded
    # the manifest records the Caddyfile that was loaded: the next plan adds the routes
    manifest = json.loads(session.written["/opt/vpsctl/manifest.json"])
    assert manifest["files"][CADDYFILE]["sha256"] == hashlib.sha256(uploaded).hexdigest()
    assert "documint" not in manifest["stacks"]
    assert session.in_order("-p documint up", "-p documint down", VALIDATE) == [
        "-p documint up",
        "-p documint down",
        VALIDATE,
    ]
    assert not result.ok
    assert journal_of(session)["result"] == "failed: documint (rolled back)"


def test_a_new_stack_failing_its_probes_once_the_edge_is_up_loses_its_routes_again(
    prod: Path,
) -> None:
    """The edge changes in this run, so a new stack is probed only once it is up: a new
    stack failing then is removed, and the edge is loaded again without its routes."""
    session = without_stack(prod, DOCUMINT_STANZA)
    spec = spec_of(prod)
    session.fail_probes(spec, ("documint",))
    result, said = run_applier(spec, session)
    documint = outcome_of(result, "documint")
    assert documint.result == StackResult.ROLLED_BACK, session.log()
    assert documint.detail.startswith("documint/health https://documint.io/healthz: ")
    assert documint.detail.endswith("rolled back: removed (it was new)")
    first, again = outcomes(result, "edge")
    assert (first.action, first.result) == ("reload", StackResult.APPLIED)
    assert (again.action, again.result) == ("reload", StackResult.APPLIED)
    assert "edge: reload (routes of a failed new stack withheld)" in said
    # documint up, then the edge, then documint's probes, its removal, the edge again
    probe = re.escape(probes.MARK)
    assert session.in_order("-p documint up", RELOAD, probe, "-p documint down") == [
        "-p documint up",
        RELOAD,
        probe,  # the edge's gate: the stacks it served before
        probe,  # documint's, deferred until the edge routes to it: they fail
        "-p documint down",
        RELOAD,
        probe,
    ], session.log()
    assert b"documint.io" not in session.written[NEXT]
    assert len(session.ran(RELOAD)) == 2


# ── the pre-apply snapshot ──────────────────────────────────────────────────────────────


def test_a_pre_apply_snapshot_that_fails_changes_nothing(prod: Path) -> None:
    session = converged_session(spec_of(prod))
    edit(prod / "stacks/documint.yaml", "documint:2.4.1", "documint:2.4.2")
    spec = spec_of(prod)
    session.fail(
        r"vpsctl-backup backup pre-apply documint",
        "restic: unreachable",
        stdout="@@fail unreachable cannot reach the backup host\n",
    )
    result, said = run_applier(spec, session)
    documint = outcome_of(result, "documint")
    assert (documint.action, documint.result) == ("recreate", StackResult.FAILED)
    assert documint.detail == (
        "the pre-apply snapshot of its data failed, so nothing was changed: unreachable "
        "cannot reach the backup host"
    )
    assert "documint: its image changes (app ghcr.io/lumen-studio/documint:2.4.1 → " in said
    assert not session.ran(r"docker compose -p documint")
    assert not session.ran(r"/opt/vpsctl/previous/documint")
    assert not [p for p in session.written if "/stacks/documint/" in p]
    assert "  documint: recreate → failed" in apply_text(result)


# ── images ──────────────────────────────────────────────────────────────────────────────


def with_standin(root: Path) -> None:
    """documint's image mapped to a stand-in the box lacks: built here, shipped there."""
    host = root / INV / "host.yaml"
    host.write_text(
        host.read_text() + "\nimages:\n  ghcr.io/lumen-studio/documint:2.4.1: "
        "{standin: product, args: {PRODUCT: DocuMint}}\n"
    )


@pytest.mark.parametrize("ships", [True, False])
def test_a_stand_in_is_built_and_shipped_before_its_stack_starts(
    prod: Path, monkeypatch: pytest.MonkeyPatch, ships: bool
) -> None:
    session = converged_session(spec_of(prod))  # it runs the registry image
    with_standin(prod)
    spec = spec_of(prod)
    [tag] = [i.ref for i in render_spec(spec).stacks["documint"].images]
    built: list[tuple[str, dict[str, str]]] = []
    monkeypatch.setattr(standins, "build", lambda _d, name, args, *_: built.append((name, args)))
    # the image changes (registry → stand-in): its data is snapshotted first
    session.answer(r"vpsctl-backup backup pre-apply documint", stdout="@@snapshot 0123abcd\n")
    if not ships:
        session.fail(r"^ship ", "ssh: connection lost after 1.2 GB")
        with pytest.raises(remote.RemoteError) as raised:
            run_applier(spec, session)
        assert str(raised.value) == (
            "shipping 1 image(s) failed on scripted: ssh: connection lost after 1.2 GB"
        )
        assert not session.ran(r"docker compose -p documint")
        line = journal_of(session)
        assert str(line["result"]).startswith("error: shipping 1 image(s) failed")
        assert not [c for c in line["changed"] if "images shipped" in str(c)]  # type: ignore[attr-defined]
        return
    result, said = run_applier(spec, session)
    assert result.ok, session.log()
    assert built == [("product", {"PRODUCT": "DocuMint"})]
    assert f"built {tag} (" in said and "shipped 1 image(s): 0.0 MB in " in said
    assert session.in_order(rf"^ship {re.escape(tag)}$", "-p documint up") == [
        rf"^ship {re.escape(tag)}$",
        "-p documint up",
    ]
    assert f"images shipped: {tag}" in journal_of(session)["changed"]  # type: ignore[operator]


# ── the bootstrap ───────────────────────────────────────────────────────────────────────


def test_changed_bootstrap_settings_run_the_bootstrap_first_and_are_recorded(
    prod: Path,
) -> None:
    spec = spec_of(prod)
    session = converged_session(spec)
    assert session.host is not None and session.host.manifest is not None
    session.host.manifest["bootstrap"] = "settings of an older vpsctl"
    result, said = run_applier(spec, session)
    assert result.ok and result.bootstrapped, session.log()
    assert not result.plan.changes
    assert [c.kind for c in session.calls if c.kind in ("deploy", "run")][:3] == [
        "run",  # the facts
        "deploy",
        "run",  # the docker network
    ]
    assert f"bootstrap {spec.host.name} …" in said
    manifest = json.loads(session.written["/opt/vpsctl/manifest.json"])
    assert manifest["bootstrap"] != "settings of an older vpsctl"
    # a second run with that manifest bootstraps nothing
    session.host.manifest = manifest
    again = converged_session(spec, session.host)
    second, _ = run_applier(spec, again)
    assert not second.bootstrapped and not [c for c in again.calls if c.kind == "deploy"]


# ── prune: removed stacks, kept volumes ─────────────────────────────────────────────────


def removed_flagbit(root: Path) -> tuple[Spec, ScriptedSession]:
    """flagbit runs on the host; the studio no longer declares it."""
    session = converged_session(spec_of(root))
    edit(root / INV / "host.yaml", FLAGBIT_STANZA, "")
    return spec_of(root), session


DOWN = r"^cd /opt/vpsctl/stacks/flagbit && env -i .* docker compose -p flagbit down"


@pytest.mark.parametrize("destroy_data", [False, True])
def test_a_removed_stack_is_stopped_then_its_directory_deleted(
    prod: Path, destroy_data: bool
) -> None:
    spec, session = removed_flagbit(prod)
    result, said = run_applier(spec, session, destroy_data=destroy_data)
    flagbit = outcome_of(result, "flagbit")
    assert (flagbit.action, flagbit.result) == ("remove", StackResult.REMOVED), session.log()
    assert result.ok
    [down] = session.ran(DOWN)
    assert down.endswith("down --remove-orphans -v" if destroy_data else "down --remove-orphans")
    assert session.in_order(DOWN, r"^rm -rf -- /opt/vpsctl/stacks/flagbit$") == [
        DOWN,
        r"^rm -rf -- /opt/vpsctl/stacks/flagbit$",
    ]
    kept = "destroyed" if destroy_data else "kept"
    assert f"flagbit: remove (volumes {kept})" in said
    # its files went with its directory: not deleted one by one as stale files
    assert not session.ran(r"^rm -f -- .*/stacks/flagbit/")
    manifest = json.loads(session.written["/opt/vpsctl/manifest.json"])
    assert "flagbit" not in manifest["stacks"]
    assert not [p for p in manifest["files"] if "/stacks/flagbit/" in p]
    assert f"flagbit: removed (volumes {kept})" in journal_of(session)["changed"]  # type: ignore[operator]


def test_a_removed_stack_without_its_compose_file_is_removed_by_its_label(prod: Path) -> None:
    spec, session = removed_flagbit(prod)
    session.fail(r"^test -f /opt/vpsctl/stacks/flagbit/compose\.yaml$", "")
    result, _ = run_applier(spec, session, destroy_data=True)
    assert outcome_of(result, "flagbit").result == StackResult.REMOVED, session.log()
    assert not session.ran(DOWN)
    assert session.ran(
        r"^ids=\$\(docker ps -aq --filter label=com\.docker\.compose\.project=flagbit\); "
        r'\[ -z "\$ids" \] \|\| docker rm -f -v \$ids$'
    )


@pytest.mark.parametrize(
    ("failing", "detail"),
    [
        (
            DOWN,
            "stopping flagbit failed on scripted: Cannot connect to the Docker daemon; its "
            "files are kept",
        ),
        (
            r"^rm -rf -- /opt/vpsctl/stacks/flagbit$",
            "its containers are gone, but removing /opt/vpsctl/stacks/flagbit failed on "
            "scripted: Cannot connect to the Docker daemon",
        ),
    ],
)
def test_a_removal_that_fails_says_what_is_left(prod: Path, failing: str, detail: str) -> None:
    spec, session = removed_flagbit(prod)
    session.fail(failing, "Cannot connect to the Docker daemon")
    result, said = run_applier(spec, session)
    flagbit = outcome_of(result, "flagbit")
    assert (flagbit.result, flagbit.detail) == (StackResult.FAILED, detail), session.log()
    assert f"flagbit: remove FAILED: {detail}" in said
    if failing == DOWN:
        assert not session.ran(r"^rm -rf -- /opt/vpsctl/stacks/flagbit$")
    assert journal_of(session)["result"] == "failed: flagbit (failed)"


VOLUMES = r"^for v in oldshop_data oldshop_uploads; do if docker volume inspect"


def with_kept_volumes(root: Path) -> tuple[Spec, ScriptedSession]:
    """The host keeps two volumes of a stack removed in an earlier run."""
    spec = spec_of(root)
    session = converged_session(spec)
    assert session.host is not None
    session.host.volumes += [
        ("oldshop_data", "oldshop", "2026-01-02T03:04:05Z", 2048),
        ("oldshop_uploads", "oldshop", "2026-01-02T03:04:05Z", None),
    ]
    return spec, session


def test_kept_volumes_are_deleted_only_with_destroy_data(prod: Path) -> None:
    spec, session = with_kept_volumes(prod)
    kept, _ = run_applier(spec, session)
    assert kept.ok and not session.ran(r"docker volume rm")
    assert [v.action for v in kept.plan.volumes] == ["keep", "keep"]

    spec, session = with_kept_volumes(prod)
    result, said = run_applier(spec, session, destroy_data=True)
    assert result.ok, session.log()
    [deleted] = session.ran(VOLUMES)
    assert deleted.endswith('docker volume rm -- "$v" >/dev/null || exit 1; fi; done')
    assert "volumes: deleted oldshop_data, oldshop_uploads" in said


def test_kept_volumes_that_cannot_be_deleted_are_a_problem_of_the_run(prod: Path) -> None:
    spec, session = with_kept_volumes(prod)
    session.fail(VOLUMES, "Error response from daemon: remove oldshop_data: volume is in use")
    result, said = run_applier(spec, session, destroy_data=True)
    assert not result.ok
    assert result.problems == [
        "volumes: deleting the volumes of undeclared stacks failed on scripted: Error response "
        "from daemon: remove oldshop_data: volume is in use; the next apply tries again"
    ]
    assert "volumes: delete FAILED: " in said
    assert all(o.result != StackResult.FAILED for o in result.outcomes)


def test_stale_backup_units_are_stopped_before_they_are_deleted(prod: Path) -> None:
    session = converged_session(spec_of(prod))
    host_yaml = prod / INV / "host.yaml"
    text = host_yaml.read_text()
    start = text.index("\nbackup:\n")
    host_yaml.write_text(text[:start] + "\n")  # the backup is no longer declared
    result, _ = run_applier(spec_of(prod), session)
    assert result.ok, session.log()
    stop = r"^for u in vpsctl-backup\.service .*systemctl disable --now"
    delete = r"^rm -f -- .*/opt/vpsctl/host/systemd/vpsctl-backup\.timer"
    assert session.in_order(stop, delete) == [stop, delete], session.log()


# ── the record: manifest and journal ────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("failing", "error", "problem", "told"),
    [
        (
            r"^put_files /opt/vpsctl/manifest\.json$",
            "No space left on device",
            "the manifest could not be written (writing 1 file(s) failed on scripted: No space "
            "left on device): the next plan shows this run's changes again",
            "",
        ),
        (
            r">> /opt/vpsctl/journal\.log$",
            "printf: write error: No space left on device",
            "the journal line could not be written",
            "journal: FAILED to append to /opt/vpsctl/journal.log: printf: write error: No "
            "space left on device",
        ),
    ],
)
def test_a_record_that_cannot_be_written_is_a_problem_of_the_run(
    prod: Path, failing: str, error: str, problem: str, told: str
) -> None:
    """The stacks converged; the run still fails, saying which record is missing."""
    session = converged_session(spec_of(prod))
    spec = change_documint_env(prod)
    session.fail(failing, error)
    result, said = run_applier(spec, session)
    assert outcome_of(result, "documint").result == StackResult.APPLIED
    assert not result.ok and result.problems == [problem]
    assert f"  problem: {problem}" in apply_text(result)
    assert told in said
    # the manifest is written first, the journal last (and it names a failed manifest)
    assert session.in_order(r"^put_files /opt/vpsctl/manifest", r">> /opt/vpsctl/journal") == [
        r"^put_files /opt/vpsctl/manifest",
        r">> /opt/vpsctl/journal",
    ]
    if "manifest" in problem:
        assert str(journal_of(session)["result"]) == f"failed: {problem}"


# ── saved plans ─────────────────────────────────────────────────────────────────────────


def saved_plan(root: Path, spec: Spec, session: ScriptedSession) -> dict[str, object]:
    """The plan ``vpsctl plan --out`` saves now, read back as ``vpsctl apply PLANFILE``
    reads it."""
    path = root / "plan.json"
    path.write_text(json.dumps(Applier(spec, session, io.StringIO()).plan.to_json()))
    return apply.load_plan_file(path, INV)


def stale_reason(spec: Spec, session: ScriptedSession, saved: dict[str, object]) -> str:
    applier = Applier(spec, session, io.StringIO())
    with pytest.raises(apply.StalePlan) as refused:
        apply.check_stale(saved, applier.plan, applier.desired, applier.facts)
    return str(refused.value)


def test_a_fresh_saved_plan_is_accepted_and_applied(prod: Path) -> None:
    session = converged_session(spec_of(prod))
    spec = change_documint_env(prod)
    saved = saved_plan(prod, spec, session)
    applier = Applier(spec, session, io.StringIO())
    applier.probe_deadline = 0
    applier.health_interval = 0
    apply.check_stale(saved, applier.plan, applier.desired, applier.facts)  # no raise
    assert applier.apply().ok, session.log()
    assert session.ran(r"docker compose -p documint up")


def test_a_saved_plan_whose_inputs_changed_names_the_file(prod: Path) -> None:
    session = converged_session(spec_of(prod))
    saved = saved_plan(prod, change_documint_env(prod), session)
    edit(prod / "stacks/documint.yaml", "PDF_RENDERER: chromium", "PDF_RENDERER: wkhtml")
    reads = len(session.calls)
    said = stale_reason(spec_of(prod), session, saved)
    assert said.startswith(
        "stale plan: input changed: /opt/vpsctl/stacks/documint/env/app.env renders "
        "differently than in the plan; nothing was changed. Run `vpsctl plan -i "
    )
    assert said.endswith(f"{INV} --out FILE` again and review it."), said
    assert [c.kind for c in session.calls[reads:]] == ["run"]  # the facts, nothing else


def test_a_saved_plan_whose_containers_moved_is_stale(prod: Path) -> None:
    session = converged_session(spec_of(prod))
    spec = change_documint_env(prod)
    saved = saved_plan(prod, spec, session)
    assert session.host is not None
    cronping = next(c for c in session.host.containers if c["project"] == "cronping")
    cronping["state"] = "exited"  # stopped by hand since the plan
    assert stale_reason(spec, session, saved).startswith(
        "stale plan: host changed: containers, images or the manifest moved since the plan; "
        "nothing was changed."
    )


def test_a_converged_host_is_left_alone(prod: Path) -> None:
    spec = spec_of(prod)
    session = converged_session(spec, factsim.converged(render_spec(spec)))
    result, _ = run_applier(spec, session)
    assert result.ok and not result.plan.changes
    assert [o.result for o in result.outcomes] == [StackResult.UNCHANGED] * len(result.outcomes)
    assert not session.written  # no file, not even the manifest
    assert not session.ran(r"^cd .* docker compose|^docker exec|^rm |^mv ")
    assert journal_of(session)["result"] == "ok"
