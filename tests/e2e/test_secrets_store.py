"""The example studio applied onto a fresh sandbox box from its encrypted store
(secrets.env.age, issue 13): no plain secrets.env anywhere, the audit green, and a plan
cache that never serves a plan once the identity cannot open the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyrage
import pytest

from tests.e2e.conftest import SANDBOX_INV, audit_ok, first_apply, running_box, studio_for
from tests.helpers import run_cli
from vpsctl.local.sandbox import SandboxInfo
from vpsctl.spec import age

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def box(state_dir: Path) -> Iterator[SandboxInfo]:
    with running_box("sealed") as info:
        yield info


def _identity(path: Path) -> str:
    key = pyrage.x25519.Identity.generate()
    path.write_text(f"{key}\n", encoding="utf-8")
    path.chmod(0o600)
    return str(key.to_public())


def test_the_studio_applies_from_secrets_env_age(
    box: SandboxInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = studio_for(tmp_path / "studio", box)
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
    # another key in the same identity file (the plan cache's key is unchanged, even the
    # VPSCTL_* variables): no plan from the cache, the error a full run gives
    (tmp_path / "me.txt").write_bytes((tmp_path / "stranger.txt").read_bytes())
    refused = run_cli(root, "plan", "-i", SANDBOX_INV)
    assert refused.code == 1 and "cannot decrypt" in refused.err, refused.err[-2000:]
    assert age.fingerprint(public) in refused.err
