"""The content-hash cache of `vpsctl validate` (vpsctl.spec.cache): a hit prints what the
full validation printed, any edit of an input is a miss, and no secret value is stored."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from dotenv import dotenv_values

from tests.helpers import copy_studio, run_cli, secret_values
from vpsctl.spec import loader

INVENTORY = "inventory/sandbox"


@pytest.fixture
def studio(tmp_path: Path) -> Path:
    """The example studio with generated sandbox secrets and one stack file no host.yaml
    places (a warning: a hit must print it too)."""
    root = copy_studio(tmp_path)
    shutil.copy(root / "stacks/cronping.yaml", root / "stacks/spare.yaml")
    assert run_cli(root, "secrets", "generate", "-i", INVENTORY).code == 0
    return root


def _no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the spec was loaded: not a cache hit")

    monkeypatch.setattr(loader, "load_spec", refuse)


def test_a_hit_prints_the_warnings_without_loading(
    studio: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run_cli(studio, "validate", "-i", INVENTORY)
    assert first.code == 0 and "warning: " in first.err and "spare" in first.err
    assert list((studio / ".vpsctl/cache").glob("validate-*.json"))
    _no_loading(monkeypatch)
    second = run_cli(studio, "validate", "-i", INVENTORY)
    assert (second.code, second.out, second.err) == (first.code, first.out, first.err)


def _break_stack(root: Path) -> None:
    path = root / "stacks/cronping.yaml"
    path.write_text(path.read_text().replace("services:", "services:\n  Bad_Name: {}", 1))


def _drop_secret(root: Path) -> None:
    path = root / INVENTORY / "secrets.env"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(line for line in lines if not line.startswith("RESTIC_PASSWORD=")))


def _open_secrets(root: Path) -> None:
    (root / INVENTORY / "secrets.env").chmod(0o644)


def _secret_in_config(root: Path) -> None:
    value = dotenv_values(root / INVENTORY / "secrets.env")["PLAUSIBLE_DB_PASSWORD"]
    config = next((root / "stacks/files/plausible").rglob("*.xml"))
    config.write_text(config.read_text() + f"<!-- {value} -->\n")


def _remove_spare(root: Path) -> None:
    (root / "stacks/spare.yaml").unlink()


@pytest.mark.parametrize(
    "edit", [_break_stack, _drop_secret, _open_secrets, _secret_in_config, _remove_spare]
)
def test_an_edit_of_any_input_is_a_miss(
    studio: Path, monkeypatch: pytest.MonkeyPatch, edit: Callable[[Path], None]
) -> None:
    assert run_cli(studio, "validate", "-i", INVENTORY).code == 0
    edit(studio)
    cached = run_cli(studio, "validate", "-i", INVENTORY)
    monkeypatch.setenv("VPSCTL_NO_CACHE", "1")
    full = run_cli(studio, "validate", "-i", INVENTORY)
    assert (cached.code, cached.out, cached.err) == (full.code, full.out, full.err)
    # each edit changes the outcome: a stale hit would have printed the first run's
    assert full.code == 1 or "spare" not in full.err


def test_the_cache_holds_no_secret_value(studio: Path) -> None:
    assert run_cli(studio, "validate", "-i", INVENTORY).code == 0
    entries = list((studio / ".vpsctl/cache").glob("validate-*.json"))
    assert entries
    values = secret_values(studio)
    assert values
    for entry in entries:
        assert entry.stat().st_mode & 0o077 == 0
        text = entry.read_text()
        assert not [v for v in values if v in text]
