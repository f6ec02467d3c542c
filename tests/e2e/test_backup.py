"""Backups, restore and the disaster-recovery rebuild, end to end on three sandbox boxes:
the studio's box, a backup host reached over SFTP, and a fresh box to rebuild onto.

The tests run in file order and build on each other: data is written into every product,
Ghost, Listmonk and Plausible; backed up; damaged and restored; the source box destroyed and
rebuilt elsewhere. Every CLI output is scanned for every secret value (``run_cli``).
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    audit_ok,
    first_apply,
    issuer_name,
    make_box,
    on_box,
    running_box,
    served_certificate,
    studio_for,
)
from tests.e2e.studio_data import curl, visible_data, write_data
from tests.helpers import Result, run_cli
from vpsctl.core.rotation import RESTIC_PASSWORD_FILE
from vpsctl.local import pebble, sandbox
from vpsctl.local.sandbox import SandboxInfo

pytestmark = pytest.mark.e2e

INV = "inventory/sandbox"
PASSWORD_FILE = RESTIC_PASSWORD_FILE  # the box's copy of the repository password
SCRIPT = "/opt/vpsctl/host/backup/vpsctl-backup"
REPO = "/srv/restic/lumen-sandbox"


@pytest.fixture(scope="module")
def backup_host(state_dir: Path) -> Iterator[SandboxInfo]:
    with running_box("bkp") as info:
        yield info


@pytest.fixture(scope="module")
def source(state_dir: Path) -> Iterator[SandboxInfo]:
    """The studio's box; the rebuild test destroys it (and the finalizer makes sure)."""
    info = make_box("src")
    yield info
    sandbox.down(info.name)


@pytest.fixture(scope="module")
def studio(
    source: SandboxInfo, backup_host: SandboxInfo, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    root = studio_for(tmp_path_factory.mktemp("studio"), source, backup=backup_host)
    first_apply(root, "the studio's box")
    write_data(source)
    return root


def backup(root: Path, *args: str) -> Result:
    return run_cli(root, "backup", "-i", INV, *args)


def snapshots(root: Path) -> list[dict[str, Any]]:
    result = backup(root, "--list", "--json")
    assert result.code == 0, result.err
    found: list[dict[str, Any]] = json.loads(result.out)
    return found


def repository_files(host: SandboxInfo) -> str:
    """Every file of the repository on the backup host, with its size."""
    return on_box(host, f"cd {REPO} && find . -type f -printf '%p %s\\n' | sort")


def cert_digests(box: SandboxInfo) -> str:
    return on_box(
        box,
        "cd /var/lib/docker/volumes/edge_data/_data && "
        "find . -type f \\( -name '*.crt' -o -name '*.key' -o -name '*.json' \\) | sort | "
        "xargs sha256sum",
    )


# ── the tests, in order ──────────────────────────────────────────────────────────────────


def test_backup_without_a_repository_is_a_clear_error(
    studio: Path, backup_host: SandboxInfo
) -> None:
    result = backup(studio)
    assert result.code == 1
    assert "there is no restic repository at sftp:root@" in result.err
    assert "--init` creates one. Nothing was changed." in result.err
    assert "Traceback" not in result.err
    assert on_box(backup_host, f"test -e {REPO} && echo there || echo absent").strip() == "absent"


def test_backup_snapshots_every_kind_of_data_off_the_box(
    studio: Path, source: SandboxInfo, backup_host: SandboxInfo
) -> None:
    result = backup(studio, "--init", "--json")
    assert result.code == 0, result.err[-3000:]
    assert "repository sftp:root@" in result.err and ": created" in result.err
    report = json.loads(result.out)
    kinds = {item["item"].split("-")[0] for item in report["items"]}
    assert kinds == {"sqlite", "mysql", "postgres", "clickhouse", "volume"}
    sqlite = [i for i in report["items"] if i["item"] == "sqlite-app"]
    assert len(sqlite) == 4 and all(i["detail"] == "integrity_check ok" for i in sqlite)
    assert report["secrets_snapshot"]
    listed = snapshots(studio)
    assert [s["id"] for s in listed] == [report["snapshot"]]
    assert set(listed[0]["tags"]) >= {"vpsctl", "run:manual", "stack:ghost", "stack:edge"}
    # the repository is encrypted: no secret value of secrets.env is readable in it
    secrets = (studio / INV / "secrets.env").read_text()
    values = [line.split("=", 1)[1].strip("'") for line in secrets.splitlines() if "=" in line]
    hits = on_box(
        backup_host,
        f"grep -rlF {' '.join('-e ' + shlex.quote(v) for v in values)} {REPO} || echo none",
    )
    assert hits.strip() == "none"
    # sqlite3 ran as root beside apps running as uid 10001: it left them nothing of root's
    root_owned = on_box(
        source, "find /var/lib/docker/volumes/*_data/_data -name '*.db*' -user 0 | wc -l"
    )
    assert root_owned.strip() == "0"
    # the nightly timer and the record the audit reads
    assert on_box(source, "systemctl is-enabled vpsctl-backup.timer").strip() == "enabled"
    assert on_box(source, "systemctl is-active vpsctl-backup-check.timer").strip() == "active"
    data = audit_ok(studio)
    check = next(c for c in data["checks"] if c["name"] == "last successful backup")
    assert check["status"] == "ok" and check["value"].endswith("h ago")
    # a stopped nightly timer is caught now, not as a stale backup tomorrow; apply restarts it
    on_box(source, "systemctl disable --now vpsctl-backup.timer")
    result = run_cli(studio, "audit", "-i", INV, "--json")
    assert result.code == 1
    failed = [c for c in json.loads(result.out)["checks"] if c["status"] == "FAIL"]
    # (disabling a linked unit removes its link: systemd no longer knows it at all)
    assert [c["name"] for c in failed] == ["timer vpsctl-backup.timer"]
    assert failed[0]["value"] != "enabled active"
    plan = run_cli(studio, "plan", "-i", INV)
    assert plan.code == 2 and "~ enable vpsctl-backup.timer" in plan.out
    assert run_cli(studio, "apply", "-i", INV, "-y").code == 0
    assert on_box(source, "systemctl is-active vpsctl-backup.timer").strip() == "active"
    audit_ok(studio)


def test_backup_errors_are_clear_and_delete_nothing(
    studio: Path, source: SandboxInfo, backup_host: SandboxInfo
) -> None:
    before = repository_files(backup_host)
    secrets = studio / INV / "secrets.env"
    original = secrets.read_text()

    # a missing repository (moved away on the backup host)
    on_box(backup_host, f"mv {REPO} {REPO}.away")
    missing = backup(studio)
    on_box(backup_host, f"mv {REPO}.away {REPO}")
    assert missing.code == 1 and "there is no restic repository at" in missing.err

    # an unreachable backup host (the way to it refused, as by a firewall)
    rule = f"OUTPUT -p tcp -d {sandbox.internal_address(backup_host)} --dport 22 -j REJECT"
    on_box(source, f"iptables -I {rule} --reject-with tcp-reset")
    try:
        unreachable = backup(studio)
    finally:
        on_box(source, f"iptables -D {rule} --reject-with tcp-reset")
    assert unreachable.code == 1
    assert "cannot reach the backup host of sftp:root@" in unreachable.err
    assert "Nothing was changed." in unreachable.err

    # a wrong repository password: the box's password file and secrets.env agree on a value
    # the repository does not know (a store restored from an old copy, a box pointed at
    # another repository). Not made by an apply: a changed RESTIC_PASSWORD is a rotation,
    # which apply carries out by rekeying the repository (tests/e2e/rotation.py).
    wrong_password = "not-the-repository-password-0123456789"
    lines = [
        f"RESTIC_PASSWORD='{wrong_password}'" if line.startswith("RESTIC_PASSWORD=") else line
        for line in original.splitlines()
    ]
    secrets.write_text("\n".join(lines) + "\n")
    on_box(source, f"cp -p {PASSWORD_FILE} {PASSWORD_FILE}.right")
    on_box(source, f"printf '%s' '{wrong_password}' > {PASSWORD_FILE}")
    try:
        wrong = backup(studio)
    finally:
        secrets.write_text(original)
        on_box(source, f"mv {PASSWORD_FILE}.right {PASSWORD_FILE}")
    assert wrong.code == 1
    assert "rejects the password RESTIC_PASSWORD of secrets.env (sha256:" in wrong.err
    restored = run_cli(studio, "apply", "-i", INV, "-y")
    assert restored.code == 0, restored.err[-2000:]
    assert repository_files(backup_host) == before  # nothing deleted, nothing added
    assert len(snapshots(studio)) == 1


def test_a_symlink_planted_in_a_volume_is_never_followed_by_roots_backup(
    studio: Path, source: SandboxInfo
) -> None:
    """An app (root in its container) can plant `db-wal -> /some/host/file` in its volume;
    the backup runs as root on the box and must refuse it, never write or chown through it."""
    volume = "/var/lib/docker/volumes/documint_data/_data"
    # stopped, the app has checkpointed and closed its WAL: planting one disturbs nothing
    on_box(source, "docker stop documint-app-1 >/dev/null")
    on_box(
        source,
        "echo untouched > /root/victim && chmod 600 /root/victim && "
        f"test ! -e {volume}/documint.db-wal && ln -s /root/victim {volume}/documint.db-wal",
    )
    try:
        result = backup(studio, "--stack", "documint")
        assert result.code == 1
        assert f"refusing {volume}/documint.db-wal: it is a symlink (to /root/victim)" in result.err
        victim = on_box(source, "stat -c '%U %a %s' /root/victim; cat /root/victim")
        assert victim.split() == ["root", "600", "10", "untouched"]
    finally:
        on_box(source, f"rm -f {volume}/documint.db-wal /root/victim")
        on_box(source, "docker start documint-app-1 >/dev/null")
    assert backup(studio, "--stack", "documint").code == 0


def test_interrupted_backup_leaves_the_previous_snapshot_intact(
    studio: Path, source: SandboxInfo, backup_host: SandboxInfo
) -> None:
    before = snapshots(studio)
    # enough data in a volume that the upload is still running when it is killed
    big = "/var/lib/docker/volumes/ghost_content/_data/big.bin"
    on_box(source, f"head -c 600M /dev/urandom > {big}")
    try:
        on_box(
            source,
            f"setsid {SCRIPT} backup manual > /tmp/bk.out 2>&1 & pid=$!; "
            "for i in $(seq 1 600); do pgrep -f '^restic .* backup --host' >/dev/null && break; "
            "sleep 0.1; done; sleep 1; kill -9 -$pid; sleep 0.5; "
            "pgrep -x restic && exit 1 || true",
            timeout=180,
        )
        assert snapshots(studio) == before
        # killed mid-run: restic's lock is still in the repository (stale: its process is
        # gone), and the check below must get past it
        locks = on_box(backup_host, f"ls {REPO}/locks | wc -l")
        assert int(locks) >= 1
        check = backup(studio, "--check", "--check-subset", "100%")
        assert check.code == 0, check.err[-2000:]
        assert "repository check: ok" in check.err
    finally:
        on_box(source, f"rm -f {big}")
    again = backup(studio, "--json")  # the killed run's lock is stale: removed, not in the way
    assert again.code == 0, again.err[-2000:]
    assert len(snapshots(studio)) == len(before) + 1


def test_backup_under_continuous_writes_restores_a_consistent_database(
    studio: Path, source: SandboxInfo
) -> None:
    writer = (
        "end=$((SECONDS+20)); while [ $SECONDS -lt $end ]; do "
        + curl(
            "documint.lumen.test",
            "-o",
            "/dev/null",
            "-H",
            "Content-Type: application/json",
            "--data",
            json.dumps({"payload": "x" * 2000}),
            "https://documint.lumen.test/api/records",
        )
        + " || true; done"
    )
    on_box(source, f"(setsid bash -c {shlex.quote(writer)} > /dev/null 2>&1 &)")
    time.sleep(2)
    taken = [backup(studio, "--stack", "documint", "--json") for _ in range(2)]
    for result in taken:
        assert result.code == 0, result.err[-2000:]
    snapshot = json.loads(taken[-1].out)["snapshot"]
    time.sleep(20)  # the writer is done
    restore = run_cli(
        studio, "restore", "-i", INV, "--snapshot", snapshot[:8], "--stack", "documint", "-y"
    )
    assert restore.code == 0, restore.err[-3000:]
    db = "/var/lib/docker/volumes/documint_data/_data/documint.db"
    assert on_box(source, f"sqlite3 {db} 'PRAGMA integrity_check'").strip() == "ok"
    torn = on_box(source, f'sqlite3 {db} "SELECT count(*) FROM records WHERE json_valid(data) = 0"')
    assert torn.strip() == "0"
    assert "row counts match the snapshot" in restore.err
    live = on_box(source, f"{SCRIPT} counts documint")
    restored = int(next(ln.split("\t")[3] for ln in live.splitlines() if "\trecords\t" in ln))
    assert restored > 3  # the writer's rows up to the snapshot are there


def test_restore_puts_every_kind_of_data_back(studio: Path, source: SandboxInfo) -> None:
    result = backup(studio, "--json")
    assert result.code == 0, result.err[-2000:]
    snapshot = json.loads(result.out)["snapshot"]
    before = visible_data(source)
    # damage: a product's table emptied, a subscriber and a Ghost post gone, events dropped
    on_box(
        source,
        "sqlite3 /var/lib/docker/volumes/flagbit_data/_data/flagbit.db 'DELETE FROM records' && "
        "cd /opt/vpsctl/stacks/listmonk && docker compose -p listmonk exec -T db "
        "psql -U listmonk -d listmonk "
        "-c \"DELETE FROM subscribers WHERE email='ada@lumen.test'\" && "
        "cd /opt/vpsctl/stacks/plausible && docker compose -p plausible exec -T clickhouse "
        "clickhouse-client --query 'TRUNCATE TABLE plausible_events_db.events_v2'",
    )
    damaged = visible_data(source)
    assert damaged["flagbit"] == 0 and damaged["subscribers"] == before["subscribers"] - 1
    assert damaged["pageviews"] == 0
    restore = run_cli(studio, "restore", "-i", INV, "--snapshot", snapshot, "-y")
    assert restore.code == 0, restore.err[-3000:]
    # the damaged data is kept first, and what the restore replaces is said before it does
    assert "(run:pre-restore) holds the current data: `vpsctl restore -i " in restore.err
    assert "flagbit/sqlite-app/records: " in restore.err
    assert " row(s) fewer now, back again (" in restore.err
    assert "audit lumen-sandbox: healthy" in restore.err
    assert visible_data(source) == before


def test_image_change_snapshots_first_and_rollback_restores_the_data(
    studio: Path, source: SandboxInfo
) -> None:
    host = studio / INV / "host.yaml"
    original = host.read_text()
    before = visible_data(source)
    host.write_text(
        original.replace(
            "ghcr.io/lumen-studio/cronping:1.9.0: {standin: product, args: {PRODUCT: CronPing}}",
            "ghcr.io/lumen-studio/cronping:1.9.0: {standin: clickhouse}",
        )
    )
    try:
        result = run_cli(studio, "apply", "-i", INV, "-y")
    finally:
        host.write_text(original)
    assert result.code == 1, result.err[-6000:]
    # the real reason for the snapshot: the image the container runs changes
    said = result.err
    assert "cronping: its image changes (app vpsctl-standin/product-cronping:" in said, said
    assert " → vpsctl-standin/clickhouse:" in said
    assert "): snapshot of its data first" in said
    assert "cronping: waiting 0s: app starting" in said  # the gate says what it sees
    # the failed version's data is kept before the pre-apply data goes back
    assert "cronping: the failed version's data is kept as snapshot " in result.err
    assert "--stack cronping` gets it back); putting the pre-apply data back discards " in (
        result.err
    )
    assert "cronping: data restored from the pre-apply snapshot" in result.err
    found = snapshots(studio)
    pre = [s for s in found if "run:pre-apply" in s["tags"]]
    assert len(pre) == 1 and pre[0]["tags"].count("stack:cronping") == 1
    kept = [s for s in found if "run:pre-rollback" in s["tags"]]
    assert len(kept) == 1 and kept[0]["tags"].count("stack:cronping") == 1
    assert visible_data(source) == before
    assert run_cli(studio, "plan", "-i", INV).code == 0


def test_rebuild_onto_a_fresh_box_serves_yesterdays_data(
    studio: Path, source: SandboxInfo, state_dir: Path
) -> None:
    result = backup(studio)
    assert result.code == 0, result.err[-2000:]
    data = visible_data(source)
    certs = cert_digests(source)
    # tls: pebble: ACME certificates, stored under the name of Pebble's directory
    folder = pebble.endpoint().directory.split("//")[1].replace(":", "-").replace("/", "-")
    assert f"./caddy/certificates/{folder}/documint.lumen.test/" in certs, certs
    orders = pebble.orders()
    assert orders > 0  # the first apply placed them
    sandbox.down(source.name)  # the VPS dies
    fresh = make_box("new")
    try:
        host = studio / INV / "host.yaml"
        host.write_text(host.read_text().replace(f"name: {source.name}\n", f"name: {fresh.name}\n"))
        rebuild = run_cli(studio, "rebuild", "-i", INV, "--json")
        assert rebuild.code == 0, rebuild.err[-4000:]
        report = json.loads(rebuild.out)
        assert report["ok"] is True
        phases = report["phases"]
        assert list(phases) == [
            "connect",
            "bootstrap",
            "images",
            "restore files",
            "stacks up",
            "restore databases",
            "audit",
        ]
        assert all(seconds > 0 for seconds in phases.values())
        # the total is the wall clock: the images come while the files are restored and the
        # stacks start, so the phases add up to more than it, never less
        total = report["total_seconds"]
        assert total <= sum(phases.values()) + 0.1
        serial = phases["connect"] + phases["bootstrap"] + phases["audit"]
        assert total >= serial + max(phases["images"], phases["restore files"]) - 0.1
        assert visible_data(fresh) == data
        assert data["pageviews"] > 0  # ClickHouse's events are among the data back
        # ClickHouse runs as uid 101, as the real image: the restore gave it the backups
        # directory it made on the fresh volume, and the archive (root, umask 077, before)
        clickhouse = on_box(
            fresh,
            "cd /opt/vpsctl/stacks/plausible && docker compose -p plausible exec -T "
            "clickhouse cat /proc/1/status && stat -c 'dir %u:%g %a' "
            "/var/lib/docker/volumes/plausible_event-data/_data/backups",
        )
        assert "\nUid:\t101\t101\t101\t101\n" in clickhouse, clickhouse
        assert "dir 101:101 750" in clickhouse, clickhouse
        assert cert_digests(fresh) == certs  # the same files: Caddy never made new ones
        assert pebble.orders() == orders  # and placed no new ACME order for them
        served = served_certificate(fresh, "documint.lumen.test")  # verified: Pebble's root
        assert issuer_name(served).startswith("Pebble Intermediate CA ")
        # the products run as uid 10001: their restored database and fresh volume are theirs
        owners = on_box(
            fresh,
            "stat -c '%u %n' /var/lib/docker/volumes/documint_data/_data "
            "/var/lib/docker/volumes/documint_data/_data/documint.db*",
        )
        assert {line.split()[0] for line in owners.splitlines()} == {"10001"}, owners
        audit_ok(studio)
        # the files phase and the three database stacks read ONE extraction of the
        # snapshot, which the rebuild then released: nothing of it is left on the box
        left = on_box(fresh, "mkdir -p /var/lib/vpsctl/restore; ls -A /var/lib/vpsctl/restore")
        assert left.strip() == "", left
        again = run_cli(studio, "rebuild", "-i", INV)  # a live box is no rebuild target
        assert again.code == 1
        assert "already runs" in again.err and "use `vpsctl restore -i " in again.err
    finally:
        sandbox.down(fresh.name)
