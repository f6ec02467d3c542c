"""vpsctl as its users get it: `pip wheel .`, installed into a fresh venv, run from a studio
written by `vpsctl init` outside this checkout — secrets, validate, render, and an apply onto
a sandbox box made by the installed tool itself.

The apply places two of the example's stacks (edge and documint: Caddy, one product and
their stand-in images) and no backup repository: that proves the installed templates,
deploys, stand-in and sandbox contexts work without this checkout; the full example's apply
is test_apply.py's. Dependency wheels are cached in ~/.cache/vpsctl/wheels for re-runs.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import unique
from tests.helpers import ROOT, assert_no_secrets

pytestmark = pytest.mark.e2e

CACHE = Path.home() / ".cache" / "vpsctl" / "wheels"
INV = "inventory/sandbox"
# what a source checkout holds that is not source: never copied into the build
NOT_SOURCE = shutil.ignore_patterns(
    ".venv", ".git", "build", "dist", "*.egg-info", ".vpsctl", "__pycache__", ".*_cache",
    ".hypothesis", "tests", "bench",
)  # fmt: skip
# planted in the copy the wheel is built from (the demo writes the first)
PLANTED_SECRETS = (
    "inventory/sandbox/secrets.env",
    "inventory/sandbox/secrets.env.bak",
    "inventory/prod/prod.secrets.env",
    "stacks/files/secrets.env.orig",
)
# files that must keep their x bit: the entrypoints the images run as they are copied
EXECUTABLES = (
    "vpsctl/_data/standins/ghost/docker-entrypoint.sh",
    "vpsctl/_data/standins/mysql/docker-entrypoint.sh",
    "vpsctl/_data/standins/postgres/docker-entrypoint.sh",
    "vpsctl/_data/sandbox/pebble/entrypoint.sh",
)


@dataclass
class Installed:
    """The wheel, and the fresh venv it is installed in."""

    wheel: Path
    venv: Path

    def run(self, cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``vpsctl ARGS`` of the venv, in ``cwd``, with nothing of this checkout on its path."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return subprocess.run(
            [str(self.venv / "bin" / "vpsctl"), *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _pip(python: Path | str, *args: str) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "-q", "--disable-pip-version-check", *args], check=True
    )


def _forget_own_wheels() -> None:
    for stale in CACHE.glob("vpsctl-*.whl"):
        stale.unlink()


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("wheel")
    started = time.monotonic()
    # built from a copy: a stale build/ in the checkout would leak old files into the wheel,
    # and the copy keeps inventory/sandbox/secrets.env when the demo made one (never shipped)
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    # an operator's secrets and copies of them, beside the example's files: none may ship
    for planted in PLANTED_SECRETS:
        (source / planted).write_text("STRIPE_SECRET_KEY=sk_live_planted\n", encoding="utf-8")
    _pip(sys.executable, "wheel", "--no-deps", "-w", str(work / "dist"), str(source))
    (wheel,) = (work / "dist").glob("vpsctl-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    CACHE.mkdir(parents=True, exist_ok=True)
    try:  # from the cache alone: no index consulted
        _pip(python, "install", "--no-index", "--find-links", str(CACHE), str(wheel))
    except subprocess.CalledProcessError:
        # a vpsctl wheel of the same version left in the cache would stand in for this one
        # (its older dependencies resolved, a new one never fetched): only dependencies stay
        _forget_own_wheels()
        _pip(python, "wheel", "--find-links", str(CACHE), "-w", str(CACHE), str(wheel))
        _pip(python, "install", "--no-index", "--find-links", str(CACHE), str(wheel))
    finally:
        _forget_own_wheels()
    print(f"wheel built and installed in {time.monotonic() - started:.1f}s")
    return Installed(wheel, venv)


@pytest.fixture(scope="module")
def studio(installed: Installed, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("outside") / "studio"
    assert not root.resolve().is_relative_to(ROOT)
    result = installed.run(root.parent, "init", "studio")
    assert result.returncode == 0, result.stderr
    return root


def test_the_wheel_ships_vpsctls_files_and_no_secret(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        modes = {i.filename: i.external_attr >> 16 for i in wheel.infolist()}
    for name in (
        "vpsctl/_data/templates/Caddyfile.j2",
        "vpsctl/_data/templates/backup/vpsctl-backup.sh.j2",
        "vpsctl/_data/deploys/bootstrap.py",
        "vpsctl/_data/standins/_shared/httpbase.py",
        "vpsctl/_data/standins/product/Dockerfile",
        "vpsctl/_data/sandbox/Dockerfile",
        "vpsctl/_data/sandbox/rootfs/etc/ssh/sshd_config.d/sandbox.conf",
        "vpsctl/_data/sandbox/pebble/config.json",
        "vpsctl/_data/inventory/sandbox/host.yaml",
        "vpsctl/_data/stacks/files/plausible/clickhouse/logs.xml",
        "vpsctl/_data/schemas/stack.schema.json",
    ):
        assert name in names, name
    leaked = [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    leaked += [n for n in names if "secrets.env" in n and not n.endswith("secrets.env.example")]
    assert not leaked, f"the wheel ships an operator's secrets or caches: {leaked}"
    assert "vpsctl/_data/inventory/prod/secrets.env.example" in names
    packages = {str(p.relative_to(ROOT)) for p in (ROOT / "vpsctl").rglob("__init__.py")}
    assert packages <= names, f"sub-packages missing from the wheel: {packages - names}"
    site = next((installed.venv / "lib").glob("python3*/site-packages"))
    for name in EXECUTABLES:
        assert modes[name] & stat.S_IXUSR, f"{name} lost its x bit in the wheel"
        assert (site / name).stat().st_mode & stat.S_IXUSR, f"{name} lost its x bit on install"


def test_the_installed_vpsctl_is_the_venvs(installed: Installed, studio: Path) -> None:
    python = installed.venv / "bin" / "python"
    assert (installed.venv / "bin" / "vpsctl").read_text().startswith(f"#!{python}")
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import sys, vpsctl; print(vpsctl.__file__); print(*sys.path, sep='\\n')",
        ],
        cwd=studio,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        check=True,
    )
    where, *path = probe.stdout.splitlines()
    assert Path(where).resolve().is_relative_to(installed.venv.resolve())
    assert not [p for p in path if p and Path(p).resolve().is_relative_to(ROOT)]


def test_init_secrets_validate_render_from_the_studio(installed: Installed, studio: Path) -> None:
    assert (studio / ".gitignore").is_file()
    assert (studio / "schemas/host.schema.json").is_file()
    generated = installed.run(studio, "secrets", "generate", "-i", INV)
    assert generated.returncode == 0, generated.stderr
    validated = installed.run(studio, "validate", "-i", INV)
    assert validated.returncode == 0, validated.stderr
    rendered = installed.run(studio, "render", "-i", INV, "--out", "rendered")
    assert rendered.returncode == 0, rendered.stderr
    assert (studio / "rendered/opt/vpsctl/stacks/ghost/compose.yaml").is_file()
    assert_no_secrets(studio, generated.stdout, generated.stderr, rendered.stdout, rendered.stderr)


def _place_only(host_yaml: Path, box: str) -> None:
    """Two stacks on box ``box``, no backup repository (no second box needed)."""
    text = host_yaml.read_text()
    text = text.replace("  name: default\n", f"  name: {box}\n")
    start = text.index("\nstacks:\n")
    end = text.index("\n\n", start + 1)
    documint = "{app: documint.lumen.test, www: www.documint.lumen.test}"
    placed = f"\nstacks:\n  documint:\n    domains: {documint}\n  edge: {{}}"
    text = text[:start] + placed + text[end:]
    start = text.index("\nbackup:\n")
    text = text[:start] + text[text.index("\n\n", start + 1) :]
    host_yaml.write_text(text)


@pytest.fixture
def box(installed: Installed, studio: Path, state_dir: Path) -> Iterator[str]:
    """A sandbox box made (and removed) by the installed tool."""
    name = unique("wheel")
    result = installed.run(studio, "sandbox", "up", "--name", name, timeout=900)
    try:
        assert result.returncode == 0, result.stderr[-3000:]
        yield name
    finally:
        installed.run(studio, "sandbox", "down", "--name", name, timeout=300)


def test_sandbox_apply_with_the_installed_tool(
    installed: Installed, studio: Path, box: str
) -> None:
    _place_only(studio / INV / "host.yaml", box)
    generated = installed.run(studio, "secrets", "generate", "-i", INV)
    assert generated.returncode == 0, generated.stderr
    started = time.monotonic()
    applied = installed.run(studio, "apply", "-i", INV, "-y", timeout=1200)
    took = time.monotonic() - started
    assert applied.returncode == 0, applied.stderr[-6000:]
    assert "documint" in applied.stdout
    # a fresh box: the bootstrap deploy ran, loaded from the installed vpsctl/_data/deploys
    assert "bootstrap lumen-sandbox" in applied.stderr
    # converged: a second plan finds nothing left to do (exit 0, not 2)
    planned = installed.run(studio, "plan", "-i", INV, timeout=300)
    assert planned.returncode == 0, planned.stdout[-3000:] + planned.stderr[-3000:]
    assert_no_secrets(studio, applied.stdout, applied.stderr, planned.stdout, planned.stderr)
    print(f"installed-tool apply: {took:.1f}s")
