"""``vpsctl restore`` without a box, through a scripted session (``tests/scripted.py``): the
data it is about to replace is snapshotted first and the rows written since the chosen
snapshot are counted, BEFORE anything is replaced (or asked)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.scripted import ScriptedSession
from tests.test_apply_units import INV, converged_session, prod  # noqa: F401 - a fixture
from vpsctl.ops import recovery
from vpsctl.ops.inputs import render_spec
from vpsctl.spec.loader import load_spec

CHOSEN = "1111aaaa2222bbbb" * 4  # the snapshot restored
SAFE = "3333cccc4444dddd" * 4  # the safety snapshot of the data it replaces
SCRIPT = re.escape(recovery.SCRIPT)


def restore_session(root: Path) -> ScriptedSession:
    """A converged box whose backup script answers: one nightly snapshot of documint with 3
    rows in `records`; 5 rows live now."""
    session = converged_session(root)
    desired = render_spec(load_spec(root / INV))
    session.answer(
        r"^sha256sum",
        stdout="".join(f"{desired.files[p].sha256}  {p}\n" for p in desired.host_files),
    )
    listed = [
        {
            "id": CHOSEN,
            "time": "2026-12-01T03:00:00Z",
            "tags": ["vpsctl", "run:nightly", "stack:documint"],
        }
    ]
    session.answer(rf"^{SCRIPT} snapshots", stdout=json.dumps(listed) + "\n")
    session.answer(
        rf"^{SCRIPT} recorded {CHOSEN} documint$", stdout="@@recorded documint\tapp\trecords\t3\n"
    )
    session.answer(
        rf"^{SCRIPT} backup pre-restore documint$",
        stdout=f"@@snapshot {SAFE}\n@@counted documint\tapp\trecords\t5\n",
    )
    session.answer(
        rf"^{SCRIPT} restore {CHOSEN} all documint$",
        stdout="@@restored documint sqlite documint.db\n@@recorded documint\tapp\trecords\t3\n",
    )
    session.answer(rf"^{SCRIPT} counts documint$", stdout="@@count documint\tapp\trecords\t3\n")
    assert session.host is not None
    session.answer(re.escape("script=$(cat)"), stdout=session.host.output() + "@@audit-end\n")
    return session


def test_restore_snapshots_what_it_replaces_and_counts_the_newer_rows_first(
    prod: Path,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session = restore_session(prod)
    monkeypatch.setattr(recovery, "Session", lambda target: session)
    ran = run_cli(prod, "restore", "-i", INV, "--stack", "documint", "-y")
    steps = [c.split()[1:3] for c in session.ran(rf"^{SCRIPT} (backup|recorded|restore)")]
    assert steps == [
        ["backup", "pre-restore"],
        ["recorded", CHOSEN],
        ["restore", CHOSEN],
    ], session.log()
    said = ran.err
    safety = said.index(f"safety snapshot {SAFE[:8]} (run:pre-restore) holds the current data")
    newer = said.index(
        f"replaced by snapshot {CHOSEN[:8]}'s data: documint/app/records: 2 row(s) written "
        "since (3 → 5)"
    )
    assert safety < newer < said.index("  restored documint sqlite"), said
    assert f"--snapshot {SAFE} --stack documint` goes back to it" in said


def test_restore_replaces_nothing_when_the_safety_snapshot_fails(
    prod: Path,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session = restore_session(prod)
    session.fail(
        rf"^{SCRIPT} backup pre-restore",
        "sqlite3: database disk image is malformed",
        stdout="@@fail integrity documint: the copy of /data/documint.db fails integrity_check\n",
    )
    monkeypatch.setattr(recovery, "Session", lambda target: session)
    ran = run_cli(prod, "restore", "-i", INV, "--stack", "documint", "-y")
    assert ran.code == 1
    assert not session.ran(rf"^{SCRIPT} restore"), session.log()
    assert "the safety snapshot of the current data failed, so nothing was replaced" in ran.err
    assert f"--snapshot {CHOSEN[:8]} --no-safety-snapshot` replaces it without a copy" in ran.err
    # the way out, when that data is beyond saving
    ran = run_cli(prod, "restore", "-i", INV, "--stack", "documint", "-y", "--no-safety-snapshot")
    assert session.ran(rf"^{SCRIPT} restore {CHOSEN} all documint$"), session.log()
    assert "no safety snapshot (--no-safety-snapshot): the current data is lost for good" in ran.err
