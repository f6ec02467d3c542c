"""The example studio applied onto a fresh sandbox box from its encrypted store
(secrets.env.age, issue 13): no plain secrets.env anywhere, the audit green, the backup
keeping the store encrypted, every database password and the restic password rotated
(tests/e2e/rotation.py), a drill from it, and a plan cache that never serves a plan
once the identity cannot open the store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyrage
import pytest

from tests.e2e.conftest import (
    SANDBOX_INV,
    audit_ok,
    first_apply,
    on_box,
    running_box,
    studio_for,
)
from tests.e2e.rotation import rotate_and_check
from tests.helpers import run_cli
from vpsctl.core.backupfiles import SCRIPT
from vpsctl.local import pebble, sandbox
from vpsctl.local.docker import docker
from vpsctl.local.sandbox import SandboxInfo
from vpsctl.spec import age

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def boxes(state_dir: Path) -> Iterator[tuple[SandboxInfo, SandboxInfo]]:
    """The studio's box and its backup box."""
    with running_box("sealed") as box, running_box("sealedbkp") as backup:
        yield box, backup


def _identity(path: Path) -> str:
    key = pyrage.x25519.Identity.generate()
    path.write_text(f"{key}\n", encoding="utf-8")
    path.chmod(0o600)
    return str(key.to_public())


def test_the_studio_applies_backs_up_and_drills_from_secrets_env_age(
    boxes: tuple[SandboxInfo, SandboxInfo], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box, backup_host = boxes
    root = studio_for(tmp_path / "studio", box, backup=backup_host)
    inventory = root / SANDBOX_INV
    public = _identity(tmp_path / "me.txt")
    _identity(tmp_path / "stranger.txt")
    monkeypatch.setenv(age.IDENTITY_ENV, str(tmp_path / "me.txt"))
    monkeypatch.delenv("VPSCTL_NO_CACHE", raising=False)
    (inventory / "recipients").write_text(f"{public} # the operator\n")
    sealed = run_cli(root, "secrets", "encrypt", "-i", SANDBOX_INV)
    assert sealed.code == 0, sealed.err
    assert not list(root.rglob("secrets.env"))
    first_apply(root, "from secrets.env.age")
    audit_ok(root)
    plan = run_cli(root, "plan", "-i", SANDBOX_INV)
    assert plan.code == 0, plan.out[-3000:]
    # the backup keeps the store as it is: the secrets snapshot holds secrets.env.age, the
    # very bytes of the studio's file
    done = run_cli(root, "backup", "-i", SANDBOX_INV, "--init", "--json")
    assert done.code == 0, done.err[-3000:]
    snapshot = json.loads(done.out)["secrets_snapshot"]
    assert snapshot
    answer = on_box(box, f"{SCRIPT} snapshots").splitlines()
    listed = json.loads("\n".join(line for line in answer if not line.startswith("@@")))
    kept = next(s for s in listed if s["id"] == snapshot or s.get("short_id") == snapshot)
    assert kept["paths"] == ["/secrets.env.age"]
    # issue 13's rotation, on this box: every database password and the restic password
    rotate_and_check(root, box, json.loads(done.out)["snapshot"])
    # the drill rebuilds a throwaway box from the encrypted store (its rotated values) and
    # the repository (opened with the new restic password)
    # (the one-box drill's e2e; a cluster's: tests/e2e/test_cluster.py)
    orders = pebble.orders()
    assert orders > 0  # the first apply's
    drill = run_cli(root, "drill", "-i", SANDBOX_INV)
    assert drill.code == 0, drill.err[-3000:] + drill.out[-2000:]
    assert pebble.orders() == orders  # the drill box served the restored certificates
    assert "rebuild done: audit green" in drill.out
    # the drill box never backs up into the real repository: its timers were masked before
    # any could be linked, and the drill's audit passed them only as masked
    assert "host: timers masked (this box never backs up)" in drill.err
    assert "host: timers enabled" not in drill.err
    assert ", 0 differ" in drill.out and "drill passed (box drill-" in drill.out
    compared = int(drill.out.split("row counts: ")[1].split(" ")[0])
    assert compared >= 20, drill.out
    assert not [p.stem for p in sandbox.state_dir().glob("drill-*.json")]  # torn down
    assert not docker("ps", "-aq", "--filter", "name=vpsctl-sandbox-drill-").split()
    # another key in the same identity file (the plan cache's key is unchanged, even the
    # VPSCTL_* variables): no plan from the cache, the error a full run gives
    (tmp_path / "me.txt").write_bytes((tmp_path / "stranger.txt").read_bytes())
    refused = run_cli(root, "plan", "-i", SANDBOX_INV)
    assert refused.code == 1 and "cannot decrypt" in refused.err, refused.err[-2000:]
    assert age.fingerprint(public) in refused.err
