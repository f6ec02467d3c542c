"""The backup machinery's pure parts: what each stack's backup needs, the rendered script
and units, the masked plan of the box's secret files, restic's failures in words, and the
row-count comparison of restore and drill. (The real thing runs in tests/e2e/test_backup.py;
the drill in tests/e2e/test_secrets_store.py.)"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import golden_prod_copy, run_cli
from vpsctl.core import backupfiles
from vpsctl.core.facts import HostFacts, RemoteFile
from vpsctl.core.plan import make_plan
from vpsctl.ops import inputs
from vpsctl.ops.inputs import render_spec
from vpsctl.ops.recovery import Output, compare_counts, explain, grown_counts
from vpsctl.spec.loader import load_spec
from vpsctl.spec.studio import Spec


@pytest.fixture
def prod(tmp_path: Path) -> Iterator[Spec]:
    yield load_spec(golden_prod_copy(tmp_path) / "inventory/prod")


def test_each_stack_says_what_stops_for_files_and_what_for_databases(prod: Spec) -> None:
    ghost = backupfiles.stack_view("ghost", prod.stacks["ghost"])
    assert [i["kind"] for i in ghost["items"]] == ["mysql", "volume"]
    assert ghost["db_services"] == ["mysql"]
    assert ghost["app_services"] == ["ghost"]
    assert ghost["file_services"] == ["ghost"]  # it mounts the content volume
    mysql = ghost["items"][0]
    assert mysql["password_var"] == "MYSQL_ROOT_PASSWORD"  # read in the container, by name

    plausible = backupfiles.stack_view("plausible", prod.stacks["plausible"])
    clickhouse = next(i for i in plausible["items"] if i["kind"] == "clickhouse")
    assert (clickhouse["volume"], clickhouse["rel"]) == ("plausible_event-data", "backups")
    assert plausible["db_services"] == ["db", "clickhouse"]
    assert plausible["file_services"] == []

    documint = backupfiles.stack_view("documint", prod.stacks["documint"])
    assert documint["items"] == [
        {
            "kind": "sqlite",
            "id": "sqlite-app",
            "service": "app",
            "volume": "documint_data",
            "short": "data",
            "rel": "documint.db",
        }
    ]
    assert documint["file_services"] == ["app"]


def test_backup_files_are_private_where_they_hold_secrets(prod: Spec) -> None:
    desired = render_spec(prod)
    files = {p: desired.files[p] for p in desired.host_files}
    modes = {Path(p).name: f.mode for p, f in files.items()}
    assert modes["vpsctl-backup"] == 0o700
    assert modes["password"] == modes["sftp_key"] == 0o600
    assert {Path(p).name for p, f in files.items() if f.kind == "secret"} == {
        "password",
        "sftp_key",
    }
    script = files[backupfiles.SCRIPT].content.decode()
    password = prod.secret("RESTIC_PASSWORD")
    assert password is not None and password.reveal() not in script
    assert "RESTIC_PASSWORD_FILE=$CONF/password" in script
    assert "StrictHostKeyChecking=yes" in script and "BatchMode=yes" in script
    # every secret value of secrets.env is masked in output: the password file's too
    assert password.reveal() in desired.secret_values()
    timer = files[f"{backupfiles.SYSTEMD_DIR}/vpsctl-backup.timer"].content.decode()
    assert "OnCalendar=*-*-* 03:30:00" in timer and "Persistent=true" in timer


def test_the_rendered_script_is_valid_bash(prod: Spec, tmp_path: Path) -> None:
    script = tmp_path / "vpsctl-backup"
    script.write_bytes(render_spec(prod).files[backupfiles.SCRIPT].content)
    checked = subprocess.run(
        ["bash", "-n", str(script)], check=False, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    usage = subprocess.run(
        ["bash", str(script), "nonsense"], check=False, capture_output=True, text=True
    )
    assert usage.returncode == 3
    assert usage.stdout.startswith("@@fail usage ")


def test_plan_masks_the_password_and_the_key(prod: Spec) -> None:
    desired = render_spec(prod)
    password = prod.secret("RESTIC_PASSWORD")
    assert password is not None
    key = desired.files[f"{backupfiles.CONF_DIR}/sftp_key"].content.decode()
    old = b"the-previous-repository-password-0123456789"
    path = f"{backupfiles.CONF_DIR}/password"
    stale = f"{backupfiles.CONF_DIR}/old_key"  # a secret file the spec no longer declares
    facts = HostFacts(
        reachable=True,
        files={
            p: RemoteFile(p, 0o600, "root:root", len(old), hashlib.sha256(old).hexdigest(), old)
            for p in (path, stale)
        },
    )
    plan = make_plan(prod.host.name, desired, facts)
    diffs = {f.path: f.diff for f in plan.files}
    text = "".join(diffs.values())
    for value in (password.reveal(), key.splitlines()[1], old.decode()):
        assert value not in text
    assert diffs[path].startswith("~ (secret file: changed (sha256:")
    assert f"{len(old)}→{len(password.reveal())} bytes" in diffs[path]
    assert diffs[f"{backupfiles.CONF_DIR}/sftp_key"].startswith("+ (secret file: secret (sha256:")
    assert diffs[stale].startswith("- (secret file removed; was secret (sha256:")


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (
            "repository-missing",
            "there is no restic repository at sftp:lumen@backup.lumenstudio.dev:",
        ),
        ("wrong-password", "rejects the password RESTIC_PASSWORD of secrets.env (sha256:"),
        ("unreachable", "cannot reach the backup host of sftp:lumen@backup.lumenstudio.dev:"),
    ],
)
def test_restic_failures_are_said_in_words(prod: Spec, reason: str, expected: str) -> None:
    password = prod.secret("RESTIC_PASSWORD")
    assert password is not None
    repo = inputs.repository(prod)
    detail = f"ssh: connect to host refused (password was {password.reveal()})"
    message = explain(prod, repo, Output(False, [], "", (reason, detail)))
    assert expected in message
    assert "Nothing was changed." in message
    assert password.reveal() not in message


def test_row_counts_compare_with_absent_tables_as_empty() -> None:
    """Fewer rows than the snapshot is a loss; more rows were written since the apps
    started (real Ghost adds a ``milestones`` row on its own a while after it boots): named,
    never a failure."""
    recorded = {("ghost", "mysql-ghost", "posts"): 3, ("ghost", "mysql-ghost", "tags"): 2}
    live = {("ghost", "mysql-ghost", "posts"): 3, ("ghost", "mysql-ghost", "milestones"): 1}
    assert compare_counts(recorded, live) == [
        "ghost/mysql-ghost/tags: 2 rows in the snapshot, 0 now"
    ]
    assert grown_counts(recorded, live) == [
        "ghost/mysql-ghost/milestones: 0 rows in the snapshot, 1 now"
    ]
    assert compare_counts(recorded, {**recorded, ("ghost", "mysql-ghost", "posts"): 2}) == [
        "ghost/mysql-ghost/posts: 3 rows in the snapshot, 2 now"
    ]
    assert compare_counts(recorded, recorded) == grown_counts(recorded, recorded) == []


def test_an_unknown_stack_is_refused_before_any_connection(prod: Spec) -> None:
    root = prod.inventory.parent.parent
    for command in (["backup"], ["restore", "-y"]):
        result = run_cli(root, *command, "-i", "inventory/prod", "--stack", "nosuch")
        assert result.code == 1 and result.out == ""
        assert result.err.startswith(
            "--stack nosuch: not a stack with backups on lumen-prod; stacks with backups: "
            "documint, cronping"
        ), result.err
