"""apply, end to end on a sandbox box: the whole example studio converged onto a fresh box,
then every change the apply issue names, each against the live box.

The tests share one box and run in file order; each leaves the studio converged and
healthy for the next. Outputs of every CLI run are scanned for every secret value.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    first_apply,
    issuer_name,
    on_box,
    running_box,
    served_certificate,
    studio_for,
)
from tests.e2e.studio_data import curl, ghost_first_post_command
from tests.helpers import ROOT, Result, assert_no_secrets, edit, run_cli
from vpsctl.host.remote import Session
from vpsctl.local.sandbox import SandboxInfo
from vpsctl.ops import apply as apply_module
from vpsctl.ops.inputs import render_spec
from vpsctl.spec import loader
from vpsctl.spec.loader import load_spec

pytestmark = pytest.mark.e2e

INV = "inventory/sandbox"


@pytest.fixture(scope="module")
def box(state_dir: Path) -> Iterator[SandboxInfo]:
    with running_box("apply") as info:
        yield info


@pytest.fixture(scope="module")
def studio(box: SandboxInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example studio applied onto the fresh box (issue criterion 1)."""
    root = studio_for(tmp_path_factory.mktemp("studio"), box)
    FIRST["apply"], _ = first_apply(root, "fresh box")
    return root


FIRST: dict[str, Result] = {}  # the fresh box's apply


def containers(box: SandboxInfo) -> dict[str, tuple[str, str]]:
    """name → (id, started at) of every compose container on the box."""
    out = on_box(
        box,
        "docker ps -q --filter label=com.docker.compose.project | xargs -r docker inspect "
        "--format '{{.Name}} {{.Id}} {{.State.StartedAt}}'",
    )
    return {n.lstrip("/"): (i, s) for n, i, s in (line.split() for line in out.splitlines())}


def apply(root: Path, *args: str) -> Result:
    return run_cli(root, "apply", "-i", INV, "-y", *args)


def all_probes_pass(root: Path) -> None:
    """Every probe of the studio passes through Caddy (plan reads; the probes judge)."""
    spec = load_spec(root / INV)
    from vpsctl.host import probes  # noqa: PLC0415
    from vpsctl.ops import targets  # noqa: PLC0415

    found = probes.targets_for(spec)
    with Session(targets.target(spec)) as session:
        # judged by probes.parse: a missing answer is a failed probe
        # tls: pebble: curl trusts Pebble's recorded roots only (no -k)
        output = session.run(probes.script(found, probes.trust_for(spec)), check=False).stdout
    failed = [f"{r.target.label}: {r.detail}" for r in probes.parse(output, found) if not r.ok]
    assert not failed, failed


def test_fresh_box_every_stack_healthy_and_every_probe_passes(
    box: SandboxInfo, studio: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    status = on_box(box, "docker ps --format '{{.Names}} {{.Status}}'")
    names = {line.split()[0] for line in status.splitlines()}
    assert len(names) == 12, status
    assert all("(healthy)" in line for line in status.splitlines()), status
    all_probes_pass(studio)
    # every name's certificate came over ACME from Pebble and verifies against its root
    spec = load_spec(studio / INV)
    hosts = sorted({h for s in spec.host.stacks.values() for h in s.domains.values()})
    issuers = {issuer_name(served_certificate(box, host)) for host in hosts}
    assert len(issuers) == 1 and next(iter(issuers)).startswith("Pebble Intermediate CA "), issuers
    plan = run_cli(studio, "plan", "-i", INV)
    assert plan.code == 0, plan.out[-3000:]
    journal = on_box(box, "tail -n 1 /opt/vpsctl/journal.log")
    assert json.loads(journal)["result"] == "ok"
    # The plan cache (issue 15): the same plan again reads the box over paramiko alone and,
    # the box answering as before, prints the very same without loading the spec ...
    with monkeypatch.context() as patch:
        patch.setattr(loader, "load_spec", _not_loaded)
        again = run_cli(studio, "plan", "-i", INV)
    assert (again.code, again.out, again.err) == (plan.code, plan.out, plan.err)
    # ... and a box that answers otherwise is planned in full from that answer
    compose = "/opt/vpsctl/stacks/documint/compose.yaml"
    on_box(box, f"chmod 600 {compose}")
    try:
        drift = run_cli(studio, "plan", "-i", INV)
    finally:
        on_box(box, f"chmod 644 {compose}")
    assert drift.code == 2 and compose in drift.out, drift.out[-2000:]
    assert drift.err == plan.err  # the warnings and "reading …" once, as ever
    assert run_cli(studio, "plan", "-i", INV).out == plan.out


def test_the_fresh_box_got_its_images_a_stack_at_a_time_each_layer_once(studio: Path) -> None:
    """The images came in several archives (one per stack, as each stack's were needed),
    and docker on the box (Debian 13's) loaded each one without the layers an earlier
    archive had brought: together they weigh no more than ONE archive of every image."""
    said = FIRST["apply"].err  # apply speaks on stderr
    sent = [
        float(mb) for mb in re.findall(r"^shipped \d+ image\(s\): ([0-9.]+) MB in ", said, re.M)
    ]
    assert len(sent) > 1, said[-3000:]
    tags = sorted(
        {
            i.ref
            for s in render_spec(load_spec(studio / INV)).stacks.values()
            for i in s.images
            if i.source == "local"
        }
    )
    whole = 0
    with subprocess.Popen(["docker", "save", *tags], stdout=subprocess.PIPE) as save:
        assert save.stdout is not None
        while chunk := save.stdout.read(1 << 20):
            whole += len(chunk)
    assert save.returncode == 0
    print(
        f"{len(sent)} archives, {sum(sent):.1f} MB sent; one archive of all: {whole / 1e6:.1f} MB"
    )
    assert sum(sent) <= whole / 1e6 * 1.01 + 0.1 * len(sent), (sent, whole)


def _not_loaded(*_: object, **__: object) -> None:
    raise AssertionError("the spec was loaded: the plan cache missed")


def test_first_launches_claimed_and_listmonk_links_carry_the_public_url(
    box: SandboxInfo, studio: Path
) -> None:
    """The fresh-box apply claimed every first launch before the edge routed to it:
    Ghost's setup is done, Plausible's /login is its login page (not a redirect to
    /register), the Content API key vpsctl derived is on the box (root, 0600, the key alone)
    and Ghost answers it; Listmonk's links carry the public root URL, not localhost."""
    setup = on_box(
        box,
        curl("blog.lumen.test", "https://blog.lumen.test/ghost/api/admin/authentication/setup/"),
    )
    assert json.loads(setup)["setup"][0]["status"] is True
    login = on_box(
        box,
        "curl -sk -o /dev/null -w '%{http_code} %{redirect_url}' "
        "--resolve stats.lumen.test:443:127.0.0.1 https://stats.lumen.test/login",
    )
    assert login.split()[0] == "200", login
    kept = on_box(box, "stat -c '%a %U %s' /opt/vpsctl/apps/ghost/ghost-content-key").split()
    assert kept == ["600", "root", "26"], kept
    posts = on_box(box, ghost_first_post_command())
    assert "pagination" in json.loads(posts)["meta"]
    form = on_box(box, curl("lists.lumen.test", "https://lists.lumen.test/subscription/form"))
    assert 'href="https://lists.lumen.test/subscription/form"' in form, form[:2000]
    assert "localhost:9000" not in form
    journal = json.loads(on_box(box, "head -n 1 /opt/vpsctl/journal.log"))
    said = " ".join(journal["changed"])
    assert "owner studio@lumenstudio.dev claimed" in said, said
    assert "listmonk settings set: app.root_url" in said, said


def test_second_apply_changes_and_restarts_nothing(box: SandboxInfo, studio: Path) -> None:
    before = containers(box)
    again = apply(studio)
    assert again.code == 0, again.err
    assert "No changes. The host matches the spec." in again.out
    assert containers(box) == before  # same ids, same start times


def test_one_env_value_restarts_that_stack_only(box: SandboxInfo, studio: Path) -> None:
    before = containers(box)
    edit(studio / "stacks/cronping.yaml", "PING_GRACE_SECONDS: 120", "PING_GRACE_SECONDS: 90")
    secrets = studio / INV / "secrets.env"
    old = load_spec(studio / INV).secret("CRONPING_SESSION_SECRET")
    assert old is not None
    edit(secrets, old.reveal(), "S" * 80)
    plan = run_cli(studio, "plan", "-i", INV)
    assert plan.code == 2
    assert "~ update /opt/vpsctl/stacks/cronping/env/app.env" in plan.out
    assert "~ PING_GRACE_SECONDS: '120' → '90'" in plan.out
    assert "~ SESSION_SECRET: changed (sha256:" in plan.out
    assert "~ cronping: recreate [app]" in plan.out
    assert plan.out.count("update /opt/vpsctl") == 1
    assert_no_secrets(studio, plan.out, plan.err)
    assert old.reveal() not in plan.out and "S" * 80 not in plan.out
    result = apply(studio)
    assert result.code == 0, result.err
    after = containers(box)
    restarted = {name for name in before if before[name] != after.get(name)}
    assert restarted == {"cronping-app-1"}


def test_new_image_failing_its_health_check_is_rolled_back(box: SandboxInfo, studio: Path) -> None:
    before = containers(box)
    host = studio / INV / "host.yaml"
    original = host.read_text()
    # an image that never answers the product's health check (it serves ClickHouse's port)
    edit(
        host,
        "ghcr.io/lumen-studio/documint:2.4.1: {standin: product, args: {PRODUCT: DocuMint}}",
        "ghcr.io/lumen-studio/documint:2.4.1: {standin: clickhouse}",
    )
    result = apply(studio)
    assert result.code == 1, result.err[-3000:]
    assert "documint: recreate → rolled back" in result.err
    assert "documint: FAILED" in result.err
    host.write_text(original)
    after = containers(box)
    assert after["documint-app-1"][0] != before["documint-app-1"][0]  # back, recreated
    all_probes_pass(studio)  # the old version serves
    assert run_cli(studio, "plan", "-i", INV).code == 0  # and the host matches the spec


def test_a_rollback_whose_old_version_cannot_start_says_so_and_exits_1(
    box: SandboxInfo, studio: Path
) -> None:
    """The new documint fails its health gate, and its old image is gone from the box (the
    running container kept its layers, not its tag): compose cannot bring the old version
    back. apply must say so — not "rolled back" — name what to run, journal it, exit 1."""
    host = studio / INV / "host.yaml"
    original = host.read_text()
    [old_image] = [i.ref for i in render_spec(load_spec(studio / INV)).stacks["documint"].images]
    edit(
        host,
        "ghcr.io/lumen-studio/documint:2.4.1: {standin: product, args: {PRODUCT: DocuMint}}",
        "ghcr.io/lumen-studio/documint:2.4.1: {standin: clickhouse}",
    )
    on_box(box, f"docker rmi -f {old_image} >/dev/null")
    result = apply(studio)
    assert result.code == 1, result.err[-3000:]
    assert "documint: recreate → ROLLBACK FAILED" in result.err, result.err[-3000:]
    assert "rolled back to the previous version" not in result.err
    assert "rollback FAILED: the previous version did not start (compose up: " in result.err
    # what the box runs now, asked, not assumed: the new image (it failed its gate)
    assert re.search(r"Now: [^.]*, image vpsctl-standin/clickhouse:", result.err), result.err
    assert "the previous files are back in place. To do: fix the cause, then run " in result.err
    assert f"`vpsctl apply -i {INV}`" in result.err
    assert "apply: FAILED, and the rollback of documint FAILED too" in result.err
    journal = json.loads(on_box(box, "tail -n 1 /opt/vpsctl/journal.log"))
    assert journal["result"] == "failed: documint (rollback failed)"
    # and what the failed run had changed before it stopped
    assert "documint: recreate → rollback failed" in journal["changed"], journal
    # what it says it did: the previous compose file (naming the old image) is back
    assert old_image in on_box(box, "cat /opt/vpsctl/stacks/documint/compose.yaml")
    host.write_text(original)
    back = apply(studio)  # the old image is shipped again, and documint starts
    assert back.code == 0, back.err[-3000:]
    all_probes_pass(studio)
    assert run_cli(studio, "plan", "-i", INV).code == 0


def test_caddyfile_that_caddy_rejects_is_never_loaded(box: SandboxInfo, studio: Path) -> None:
    caddyfile = "/opt/vpsctl/stacks/edge/config/caddy/Caddyfile"
    served = on_box(box, f"sha256sum {caddyfile}")
    spec = load_spec(studio / INV)
    from vpsctl.ops import targets  # noqa: PLC0415

    with Session(targets.target(spec)) as session:
        applier = apply_module.Applier(
            spec,
            session,
            sys.stderr,
            caddyfile=lambda b: b + b"\nbroken {\n\tno_such_directive\n}\n",
        )
        result = applier.apply()
    edge = next(o for o in result.outcomes if o.stack == "edge")
    assert edge.result == "failed" and "rejected by Caddy" in edge.detail
    assert on_box(box, f"sha256sum {caddyfile}") == served
    assert on_box(box, f"ls {caddyfile}.next 2>/dev/null || echo gone").strip() == "gone"
    all_probes_pass(studio)


def test_removed_stack_is_stopped_and_its_volume_kept(box: SandboxInfo, studio: Path) -> None:
    host = studio / INV / "host.yaml"
    original = host.read_text()
    edit(
        host,
        "  flagbit:\n    domains: {app: flagbit.lumen.test, www: www.flagbit.lumen.test, "
        "api: api.flagbit.lumen.test}\n",
        "",
    )
    result = apply(studio)
    assert result.code == 0, result.err
    assert "flagbit: remove → removed" in result.err
    assert "flagbit" not in on_box(box, "docker ps -a --format '{{.Names}}'")
    assert on_box(box, "ls /opt/vpsctl/stacks").split().count("flagbit") == 0
    assert "flagbit_data" in on_box(box, "docker volume ls --format '{{.Name}}'")
    host.write_text(original)
    back = apply(studio)
    assert back.code == 0, back.err
    all_probes_pass(studio)


def test_saved_plan_is_refused_after_a_host_edit(box: SandboxInfo, studio: Path) -> None:
    edit(studio / "stacks/cronping.yaml", "PING_GRACE_SECONDS: 90", "PING_GRACE_SECONDS: 60")
    saved = run_cli(studio, "plan", "-i", INV, "--out", "plan.json")
    assert saved.code == 2
    compose = "/opt/vpsctl/stacks/ghost/compose.yaml"
    on_box(box, f"echo '# edited by hand' >> {compose}")
    edited = on_box(box, f"sha256sum {compose}")
    refused = run_cli(studio, "apply", "-i", INV, "plan.json")
    assert refused.code == 1
    assert (
        f"stale plan: host changed: {compose} was edited on the host since the plan" in refused.err
    )
    assert on_box(box, f"sha256sum {compose}") == edited  # nothing changed
    assert "PING_GRACE_SECONDS='90'" in on_box(box, "cat /opt/vpsctl/stacks/cronping/env/app.env")
    fresh = run_cli(studio, "plan", "-i", INV, "--out", "plan.json")
    assert fresh.code == 2
    applied = run_cli(studio, "apply", "-i", INV, "plan.json")
    assert applied.code == 0, applied.err
    assert "# edited by hand" not in on_box(box, f"cat {compose}")


def test_killed_connection_mid_apply_converges_next_time(box: SandboxInfo, studio: Path) -> None:
    edit(
        studio / "stacks/listmonk.yaml",
        "LISTMONK_db__ssl_mode: disable",
        "LISTMONK_db__ssl_mode: disable\n      TZ: Europe/Berlin",
    )
    proc = subprocess.Popen(
        [str(ROOT / ".venv/bin/vpsctl"), "apply", "-i", INV, "-y"],
        cwd=studio,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)
    deadline = time.monotonic() + 120
    seen = b""
    while time.monotonic() < deadline and b"listmonk: recreate" not in seen:
        seen += proc.stderr.read() or b""
        time.sleep(0.2)
    assert b"listmonk: recreate" in seen, seen.decode(errors="replace")[-2000:]
    time.sleep(1.5)  # mid-way: files uploaded, compose up running
    proc.send_signal(signal.SIGKILL)  # the SSH connection dies with the process
    proc.wait(timeout=30)
    proc.stderr.close()
    result = apply(studio)
    assert result.code == 0, result.err
    assert run_cli(studio, "plan", "-i", INV).code == 0
    all_probes_pass(studio)


def test_empty_export_in_the_login_shell_cannot_blank_a_secret(
    box: SandboxInfo, studio: Path
) -> None:
    on_box(
        box,
        "echo 'export STRIPE_WEBHOOK_SECRET=' >> /root/.profile; "
        "echo 'STRIPE_WEBHOOK_SECRET=' >> /etc/environment",
    )
    edit(studio / "stacks/documint.yaml", "PDF_RENDERER: builtin", "PDF_RENDERER: chromium")
    result = apply(studio)
    assert result.code == 0, result.err
    secret = load_spec(studio / INV).secret("DOCUMINT_STRIPE_WEBHOOK_SECRET")
    assert secret is not None
    inside = on_box(box, "docker exec documint-app-1 printenv STRIPE_WEBHOOK_SECRET | sha256sum")
    assert inside.split()[0] == hashlib.sha256((secret.reveal() + "\n").encode()).hexdigest()
    # and the product verifies a Stripe-signed webhook with it, through Caddy
    body = '{"id":"evt_e2e_1","object":"event","type":"checkout.session.completed"}'
    stamp = str(int(time.time()))
    signature = hmac.new(secret.reveal().encode(), f"{stamp}.{body}".encode(), "sha256").hexdigest()
    code = on_box(
        box,
        "curl -sk -o /dev/null -w '%{http_code}' --resolve documint.lumen.test:443:127.0.0.1 "
        f"-H 'Stripe-Signature: t={stamp},v1={signature}' -H 'Content-Type: application/json' "
        f"--data '{body}' https://documint.lumen.test/webhooks/stripe",
    )
    assert code == "200"


def test_env_files_are_private_and_only_the_edge_listens_outside(
    box: SandboxInfo, studio: Path
) -> None:
    modes = on_box(box, "stat -c '%a %U %G %n' /opt/vpsctl/stacks/*/env/*.env")
    lines = modes.splitlines()
    desired = render_spec(load_spec(studio / INV))
    assert len(lines) == sum(f.kind == "env" for f in desired.files.values())
    assert all(line.startswith("600 root root ") for line in lines), modes
    published = on_box(box, "docker ps --format '{{.Names}} {{.Ports}}'")
    for line in published.splitlines():
        name, _, ports = line.partition(" ")
        if "->" in ports:
            assert name == "edge-caddy-1", line
    listening = on_box(box, "ss -Htlnu | awk '{print $5}'")
    outside = {
        addr.rsplit(":", 1)[1]
        for addr in listening.split()
        if not addr.startswith(("127.", "[::1]"))
    }
    assert outside <= {"22", "80", "443"}, listening
    journal = on_box(box, "cat /opt/vpsctl/journal.log")
    assert_no_secrets(studio, journal)
    assert all(json.loads(line)["plan_hash"] for line in journal.splitlines())


def test_a_second_apply_is_refused_while_one_runs(box: SandboxInfo, studio: Path) -> None:
    """The lock lives as long as the holder's SSH connection: held, a second apply refuses
    and changes nothing; released (even by a dropped connection), applies run again."""
    from vpsctl.ops import targets  # noqa: PLC0415

    edit(studio / "stacks/cronping.yaml", "PING_GRACE_SECONDS: 60", "PING_GRACE_SECONDS: 45")
    spec = load_spec(studio / INV)
    with Session(targets.target(spec)) as holder:
        channel = holder.hold_lock(apply_module.LOCK, "apply")
        refused = apply(studio)
        assert refused.code == 1
        assert "another vpsctl apply is running" in refused.err
        assert "PING_GRACE_SECONDS='60'" in on_box(
            box, "cat /opt/vpsctl/stacks/cronping/env/app.env"
        )
        channel.close()
    result = apply(studio)
    assert result.code == 0, result.err
    assert "PING_GRACE_SECONDS='45'" in on_box(box, "cat /opt/vpsctl/stacks/cronping/env/app.env")
