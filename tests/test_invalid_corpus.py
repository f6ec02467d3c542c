"""The invalid-input corpus: every case breaks one rule of a valid studio and names the exact
errors `vpsctl validate` must print.

``tests/invalid/base/`` is a small valid studio (an edge, a Stripe-billed product on SQLite,
a Ghost blog on MySQL). Each ``tests/invalid/cases/NN_slug.yaml`` holds::

    rule: the rule the case exercises (one line, unique)
    edits:  # applied in order to a fresh copy of base/
      - {file: stacks/shop.yaml, old: "text occurring exactly once", new: "replacement"}
      - {file: inventory/test/secrets.env, delete: true}
      - {file: stacks/new.yaml, write: "the whole content"}
      - {file: inventory/test/secrets.env, mode: "0644"}
    expect: |
      the complete stderr, paths relative to the copy's root

The base's secrets live in ``secrets.env.fixture`` (fake test values): real ``secrets.env``
files are git-ignored, so the test copies it to ``secrets.env`` (mode 0600, as vpsctl
requires) before editing.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from dotenv import dotenv_values
from ruamel.yaml import YAML

from vpsctl.cli.main import main

CORPUS = Path(__file__).resolve().parent / "invalid"
BASE = CORPUS / "base"
CASES = sorted((CORPUS / "cases").glob("*.yaml"))
INVENTORY = "inventory/test"
SECRETS = Path(INVENTORY) / "secrets.env"


def load_case(path: Path) -> dict[str, Any]:
    """A case file as plain data, its shape checked."""
    data = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name}: a case is a mapping"
    assert set(data) == {"rule", "edits", "expect"}, f"{path.name}: keys rule, edits, expect"
    assert isinstance(data["rule"], str) and "\n" not in data["rule"].strip()
    assert isinstance(data["edits"], list) and data["edits"], f"{path.name}: edits is a list"
    assert isinstance(data["expect"], str) and data["expect"].endswith("\n")
    return data


def make_studio(root: Path) -> Path:
    """A fresh copy of the base studio under ``root``, with its secrets.env in place."""
    studio = root / "studio"
    shutil.copytree(BASE, studio)
    fixture = studio / INVENTORY / "secrets.env.fixture"
    fixture.rename(studio / SECRETS)
    (studio / SECRETS).chmod(0o600)
    return studio


def apply_edit(studio: Path, edit: dict[str, Any]) -> None:
    """Apply one edit of a case to the copy at ``studio``."""
    path = studio / edit["file"]
    if edit.get("delete"):
        assert set(edit) == {"file", "delete"}, edit
        path.unlink()
    elif "mode" in edit:
        assert set(edit) == {"file", "mode"}, edit
        path.chmod(int(edit["mode"], 8))
    elif "write" in edit:
        assert set(edit) == {"file", "write"}, edit
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(edit["write"], encoding="utf-8")
    else:
        assert set(edit) == {"file", "old", "new"}, edit
        text = path.read_text(encoding="utf-8")
        count = text.count(edit["old"])
        assert count == 1, f"{edit['file']}: {edit['old']!r} occurs {count} times, not once"
        path.write_text(text.replace(edit["old"], edit["new"]), encoding="utf-8")


def secret_values(path: Path) -> list[str]:
    """The values of ``path`` (a secrets.env) long enough to search output for."""
    if not path.is_file():
        return []
    values = dotenv_values(path, interpolate=False).values()
    return [v for v in values if v is not None and len(v) >= 6]


def validate(
    studio: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """``vpsctl validate -i inventory/test`` run in ``studio``: code, stdout, stderr."""
    monkeypatch.chdir(studio)
    code = main(["validate", "-i", INVENTORY])
    out, err = capsys.readouterr()
    return code, out, err


def test_base_is_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    studio = make_studio(tmp_path)
    assert validate(studio, monkeypatch, capsys) == (0, "", "")


def test_corpus_is_large_and_each_rule_is_named_once() -> None:
    assert len(CASES) >= 30
    rules = [load_case(path)["rule"].strip() for path in CASES]
    assert len(set(rules)) == len(rules), "two cases exercise the same rule"
    stems = [path.stem.split("_", 1)[0] for path in CASES]
    assert len(set(stems)) == len(stems), "two cases share a number"


@pytest.mark.parametrize("case", CASES, ids=[path.stem for path in CASES])
def test_invalid_case(
    case: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = load_case(case)
    studio = make_studio(tmp_path)
    for edit in data["edits"]:
        apply_edit(studio, edit)
    code, out, err = validate(studio, monkeypatch, capsys)
    for value in secret_values(studio / SECRETS):
        assert value not in err, "a secret value leaked into the error output"
    assert (code, out) == (1, "")
    assert err == data["expect"]
