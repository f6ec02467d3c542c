"""`vpsctl init DIR` writes a studio that works from where it is; `--root` points at one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_cli
from vpsctl import resources
from vpsctl.cli import init
from vpsctl.cli.init import GITIGNORE, STUDIO_DIRS
from vpsctl.cli.main import main

MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$", re.MULTILINE)


def _init(tmp_path: Path, name: str = "studio") -> Path:
    result = run_cli(tmp_path, "init", name)
    assert result.code == 0, result.err
    return tmp_path / name


def test_init_writes_the_example_studio(tmp_path: Path) -> None:
    studio = _init(tmp_path)
    assert sorted(p.name for p in studio.iterdir()) == sorted(
        [*STUDIO_DIRS, ".gitignore", "README.md"]
    )
    for rel in (
        "inventory/prod/host.yaml",
        "inventory/prod/secrets.env.example",
        "inventory/sandbox/host.yaml",
        "inventory/sandbox/secrets.env.example",
        "stacks/ghost.yaml",
        "stacks/files/plausible/clickhouse/logs.xml",
        "schemas/host.schema.json",
        "schemas/stack.schema.json",
    ):
        assert (studio / rel).read_bytes() == (ROOT / rel).read_bytes(), rel
    # the example's own secrets (a checkout that ran the demo has them) are never copied
    assert not list(studio.rglob("secrets.env"))
    assert "secrets generate" in (studio / "README.md").read_text()


def test_gitignore_keeps_secrets_and_local_state_out(tmp_path: Path) -> None:
    studio = _init(tmp_path)
    lines = (studio / ".gitignore").read_text().splitlines()
    assert (studio / ".gitignore").read_text() == GITIGNORE
    assert "secrets.env" in lines
    assert ".vpsctl/" in lines


def test_init_creates_missing_parents(tmp_path: Path) -> None:
    studio = _init(tmp_path, "a/b/studio")
    assert (studio / "inventory/prod/host.yaml").is_file()


def test_init_into_an_empty_existing_dir(tmp_path: Path) -> None:
    (tmp_path / "studio").mkdir()
    studio = _init(tmp_path)
    assert (studio / "stacks/edge.yaml").is_file()


@pytest.mark.parametrize("existing", ["notes.txt", ".git"])
def test_init_refuses_a_non_empty_dir_and_writes_nothing(tmp_path: Path, existing: str) -> None:
    target = tmp_path / "studio"
    target.mkdir()
    (target / existing).write_text("mine\n")
    result = run_cli(tmp_path, "init", "studio")
    assert result.code == 1
    assert "studio is not empty" in result.err
    assert [p.name for p in target.iterdir()] == [existing]


def test_init_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "studio").write_text("mine\n")
    result = run_cli(tmp_path, "init", "studio")
    assert result.code == 1
    assert "is a file" in result.err
    assert (tmp_path / "studio").read_text() == "mine\n"


def test_modelines_point_at_the_written_schemas(tmp_path: Path) -> None:
    studio = _init(tmp_path)
    found = 0
    for path in studio.rglob("*.yaml"):
        for target in MODELINE.findall(path.read_text()):
            schema = (path.parent / target).resolve()
            assert schema.is_relative_to(studio.resolve()), path
            assert schema.is_file(), f"{path}: {target}"
            found += 1
    # every host.yaml and every stack file carries one
    expected = len(list(studio.glob("inventory/*/host.yaml"))) + len(
        list(studio.glob("stacks/*.yaml"))
    )
    assert found == expected > 2


def test_the_written_studio_validates_after_secrets_generate(tmp_path: Path) -> None:
    studio = _init(tmp_path)
    generated = run_cli(studio, "secrets", "generate", "-i", "inventory/sandbox")
    assert generated.code == 0, generated.err
    assert (studio / "inventory/sandbox/secrets.env").is_file()
    validated = run_cli(studio, "validate", "-i", "inventory/sandbox")
    assert validated.code == 0, validated.err


def test_root_finds_the_studio_from_elsewhere(tmp_path: Path) -> None:
    studio = _init(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert (
        run_cli(
            elsewhere, "--root", str(studio), "secrets", "generate", "-i", "inventory/sandbox"
        ).code
        == 0
    )
    assert (studio / "inventory/sandbox/secrets.env").is_file()
    assert not (elsewhere / "inventory").exists()
    # without --root, the current directory is the studio: there is none in `elsewhere`
    assert run_cli(elsewhere, "validate", "-i", "inventory/sandbox").code == 1
    assert (
        run_cli(elsewhere, "--root", str(studio), "validate", "-i", "inventory/sandbox").code == 0
    )


def test_root_must_be_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--root", str(tmp_path / "missing"), "validate"])
    assert exc.value.code == 2
    assert "missing: no such directory" in capsys.readouterr().err


def test_shipped_files_are_found_in_the_checkout() -> None:
    # an editable install has no vpsctl/_data: the checkout's top level is used
    for name in ("templates", "deploys", "standins", "sandbox", *STUDIO_DIRS):
        assert resources.shipped(name).is_dir(), name


def test_init_copies_no_secrets_file_nor_a_copy_of_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = tmp_path / "example"
    for name in STUDIO_DIRS:
        (example / name).mkdir(parents=True)
    kept = ["inventory/prod/host.yaml", "inventory/prod/secrets.env.example", "stacks/a.yaml"]
    secret = [
        "inventory/prod/secrets.env",
        "inventory/prod/secrets.env.bak",
        "inventory/prod/prod.secrets.env",
        "stacks/secrets.env.orig",
    ]
    for rel in kept + secret:
        (example / rel).parent.mkdir(parents=True, exist_ok=True)
        (example / rel).write_text("X=1\n", encoding="utf-8")
    monkeypatch.setattr(init, "shipped", lambda name: example / name)
    studio = tmp_path / "studio"
    init.init_studio(studio)
    for rel in kept:
        assert (studio / rel).is_file(), rel
    copied = sorted(str(p.relative_to(studio)) for p in studio.rglob("*secrets.env*"))
    assert copied == ["inventory/prod/secrets.env.example"]
