"""The rendered backup script's ownership and permission steps for ClickHouse, run for real.

The real ClickHouse server runs as uid/gid 101 (the image's entrypoint drops to it); the
backup script runs as root with ``umask 077``. Here the script's own functions
(``dump_clickhouse``, ``load_clickhouse`` and what they call) run in bash, as root, against a
directory standing in for the data volume; the only stubs are docker (which names a real
process running as uid 101) and the ClickHouse query, which does what the server does with
the files — as uid 101, so that a directory or an archive it may not use fails exactly as it
fails the server. Needs root (chown, setpriv), as the script itself does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.helpers import ROOT
from vpsctl.core import backupfiles
from vpsctl.core.render import _environment
from vpsctl.spec.models import Stack

SERVER = 101  # the clickhouse-server image's uid and gid (DEFAULT_UID/DEFAULT_GID)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="runs the script's chown/install steps: needs root and setpriv",
)

# The server, as far as files go: RESTORE reads the archive, BACKUP writes it, both as 101.
HARNESS = r"""
set -euo pipefail
source "$FUNCTIONS"
STAGE=$T/stage
TARGET=$T/target
volume_dir() { printf '%s' "$VOL"; }
compose_in() {
  if [ "$2" = ps ]; then echo fake-container-id; return 0; fi
  echo "unexpected: compose $*" >&2; return 1
}
docker() { if [ "$1" = inspect ]; then echo "$SERVER_PID"; else return 1; fi; }
as_server() { setpriv --reuid=101 --regid=101 --clear-groups -- "$@"; }
ch() { # STACK SERVICE QUERY
  local file host
  file=$(printf '%s' "$3" | sed -n "s/.*File('\([^']*\)').*/\1/p")
  host="$VOL/${file#/var/lib/clickhouse/}"
  case "$3" in
    RESTORE*)
      stat -c '%u:%g %a' "$host" > "$T/archive-seen" 2>/dev/null || true
      as_server head -c 2 -- "$host" > /dev/null \
        || { echo "Code: 76. DB::Exception: Cannot open file $file" >&2; return 76; } ;;
    BACKUP*)
      as_server sh -c 'umask 027; printf PK > "$1"' sh "$host" \
        || { echo "Code: 76. DB::Exception: Cannot open file $file" >&2; return 76; } ;;
  esac
}
"""


@pytest.fixture
def functions(tmp_path: Path) -> Path:
    """The script rendered for the plausible stack file, without its command dispatch: its
    functions. (The stack alone, parsed as the spec parses it: no whole studio needed.)"""
    stack = Stack.model_validate(
        YAML(typ="safe").load((ROOT / "stacks/plausible.yaml").read_text())
    )
    env = _environment().overlay(trim_blocks=True, lstrip_blocks=True)  # as render_files
    text = env.get_template("backup/vpsctl-backup.sh.j2").render(
        host="lumen-test",
        node=None,  # one box (a cluster's node: tests/test_cluster_backup.py)
        conf_dir=backupfiles.CONF_DIR,
        stage=backupfiles.STAGE,
        record=backupfiles.RECORD,
        stacks_root="/opt/vpsctl/stacks",
        repository="/srv/restic",
        sftp_command=None,
        keep={"last": 1, "daily": 1, "weekly": 1, "monthly": 1},
        stacks=[backupfiles.stack_view("plausible", stack)],
    )
    dispatch = text.index('\ncase "${1:-}" in\n')
    path = tmp_path / "functions.sh"
    path.write_text(text[:dispatch] + "\n")
    return path


@pytest.fixture
def server() -> Iterator[int]:
    """A process running as uid/gid 101, as the ClickHouse server's container process."""
    proc = subprocess.Popen(
        ["setpriv", f"--reuid={SERVER}", f"--regid={SERVER}", "--clear-groups", "sleep", "120"]
    )
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def volume() -> Iterator[Path]:
    """A fresh ClickHouse data volume: its top is the server's (docker copies the image's
    /var/lib/clickhouse, 101:101; the entrypoint chowns it too). Outside pytest's root-only
    temporary directory, so that uid 101 can reach it, as it reaches its mount."""
    parent = Path(tempfile.mkdtemp(prefix="vpsctl-test-chvol-"))
    parent.chmod(0o755)
    vol = parent / "vol"
    vol.mkdir()
    os.chown(vol, SERVER, SERVER)
    vol.chmod(0o777)
    try:
        yield vol
    finally:
        shutil.rmtree(parent)


def run(
    functions: Path, tmp: Path, vol: Path, pid: int, body: str
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "FUNCTIONS": str(functions),
        "T": str(tmp),
        "VOL": str(vol),
        "SERVER_PID": str(pid),
    }
    return subprocess.run(
        ["bash", "-c", HARNESS + body],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


LOAD = (
    "load_clickhouse plausible clickhouse-plausible_events_db clickhouse plausible_events_db "
    "plausible_event-data event-data backups /var/lib/clickhouse/backups"
)
DUMP = (
    ': > "$STAGE/counts.tsv" 2>/dev/null || { mkdir -p "$STAGE"; : > "$STAGE/counts.tsv"; }\n'
    "dump_clickhouse plausible clickhouse-plausible_events_db clickhouse plausible_events_db "
    "plausible_event-data event-data backups /var/lib/clickhouse/backups"
)


def snapshot_archive(tmp: Path) -> None:
    """The archive as `restic restore` left it under the restore target: root's, 0600."""
    src = tmp / f"target{tmp}/stage/plausible/clickhouse-plausible_events_db.zip"
    src.parent.mkdir(parents=True)
    src.write_bytes(b"PK\x03\x04 archive")
    src.chmod(0o600)


def owner_mode(path: Path) -> str:
    info = path.stat()
    return f"{info.st_uid}:{info.st_gid} {info.st_mode & 0o777:o}"


def test_a_restore_onto_a_fresh_volume_hands_the_directory_and_archive_to_the_server(
    functions: Path, tmp_path: Path, volume: Path, server: int
) -> None:
    snapshot_archive(tmp_path)
    result = run(functions, tmp_path, volume, server, LOAD)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "@@restored plausible clickhouse plausible_events_db" in result.stdout
    assert owner_mode(volume / "backups") == "101:101 750"
    # the server read an archive of its own (root's 0600 copy would have failed the RESTORE)
    assert (tmp_path / "archive-seen").read_text().strip() == "101:101 640"
    assert not (volume / "backups/vpsctl-restore.zip").exists()


def test_a_root_0700_backups_dir_left_by_an_older_script_is_given_to_the_server(
    functions: Path, tmp_path: Path, volume: Path, server: int
) -> None:
    (volume / "backups").mkdir(mode=0o700)  # root's: what `mkdir -p` under umask 077 made
    snapshot_archive(tmp_path)
    result = run(functions, tmp_path, volume, server, LOAD)
    assert result.returncode == 0, result.stdout + result.stderr
    assert owner_mode(volume / "backups") == "101:101 750"
    # and the next BACKUP, which the server writes into it itself, works too
    result = run(functions, tmp_path, volume, server, DUMP)
    assert result.returncode == 0, result.stdout + result.stderr
    archive = tmp_path / "stage/plausible/clickhouse-plausible_events_db.zip"
    assert archive.read_bytes() == b"PK" and owner_mode(archive) == "101:101 640"


def test_a_backup_into_a_root_0700_backups_dir_works(
    functions: Path, tmp_path: Path, volume: Path, server: int
) -> None:
    (volume / "backups").mkdir(mode=0o700)
    result = run(functions, tmp_path, volume, server, DUMP)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "@@item plausible clickhouse-plausible_events_db 2 BACKUP DATABASE" in result.stdout


def test_the_harness_catches_the_old_steps(
    functions: Path, tmp_path: Path, volume: Path, server: int
) -> None:
    """Control: with the old steps (root's `mkdir -p` under umask 077, no hand-over) the
    same run fails the way the real server fails it, and says the server's words."""
    snapshot_archive(tmp_path)
    old = 'ch_dir() { mkdir -p "$2/$3"; }\n' + LOAD
    result = run(functions, tmp_path, volume, server, old)
    assert result.returncode == 3
    assert "@@fail restore plausible: ClickHouse RESTORE of plausible_events_db failed: " in (
        result.stdout
    )
    assert "Cannot open file /var/lib/clickhouse/backups/vpsctl-restore.zip" in result.stdout


def test_a_symlink_where_the_backups_dir_belongs_is_refused(
    functions: Path, tmp_path: Path, volume: Path, server: int
) -> None:
    (volume / "elsewhere").mkdir()
    (volume / "backups").symlink_to(volume / "elsewhere")
    snapshot_archive(tmp_path)
    result = run(functions, tmp_path, volume, server, LOAD)
    assert result.returncode == 3
    assert "@@fail integrity refusing " in result.stdout and "a symlink" in result.stdout
    assert owner_mode(volume / "elsewhere") != "101:101 750"


def test_no_running_server_is_a_clear_failure_before_anything_is_made(
    functions: Path, tmp_path: Path, volume: Path
) -> None:
    snapshot_archive(tmp_path)
    result = run(functions, tmp_path, volume, 0, LOAD)  # docker inspect: no process
    assert result.returncode == 3
    assert "@@fail clickhouse plausible: clickhouse is not running" in result.stdout
    assert not (volume / "backups").exists()
