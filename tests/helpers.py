"""Test helpers: a CLI runner that scans every output for every secret value it could see."""

from __future__ import annotations

import contextlib
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

from vpsctl.cli.main import main
from vpsctl.spec import age

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    """What one CLI run printed and returned."""

    code: int
    out: str
    err: str


def secret_values(root: Path) -> set[str]:
    """Every value of every secrets.env below ``root``, and of every secrets.env.age the
    current identity opens (values under 6 bytes are too short to scan for without false
    alarms)."""
    values: set[str] = set()
    texts = [path.read_text(encoding="utf-8") for path in root.rglob("secrets.env")]
    for path in root.rglob("secrets.env.age"):
        with contextlib.suppress(age.AgeFailure, OSError):
            texts.append(age.decrypt(path.read_bytes(), age.load_identity()).decode())
    for text in texts:
        for value in dotenv_values(stream=io.StringIO(text), interpolate=False).values():
            if value and len(value) >= 6:
                values.add(value)
    return values


def assert_no_secrets(root: Path, *outputs: str) -> None:
    """Fail if any output contains any secret value found below ``root``."""
    for value in secret_values(root):
        for output in outputs:
            assert value not in output, "a secret value leaked into the output"


def run_cli(root: Path, *args: str) -> Result:
    """Run ``vpsctl ARGS`` in-process with ``root`` as the working directory, then check
    that neither stdout nor stderr holds a secret value (before or after the run)."""
    before = secret_values(root)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(root), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    for value in before | secret_values(root):
        assert value not in out.getvalue(), "a secret value leaked to stdout"
        assert value not in err.getvalue(), "a secret value leaked to stderr"
    return Result(code, out.getvalue(), err.getvalue())


GOLDEN_SECRETS = ROOT / "tests" / "golden" / "prod.secrets.env.fixture"


def copy_studio(root: Path, *extra: str) -> Path:
    """A private copy of the example studio under ``root``: its ``stacks/`` and
    ``inventory/`` (and the top-level directories named in ``extra``, e.g. ``schemas``),
    without any secrets.env; returns ``root``.

    Stand-ins are vpsctl's own (``vpsctl.resources.standins_root``): a test that edits one
    copies ``standins`` here AND sets ``standins_dir`` in host.yaml, else its copy is unused.
    """
    for name in ("stacks", "inventory", *extra):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("secrets.env"))
    return root


def golden_prod_copy(root: Path) -> Path:
    """A private copy of the example studio under ``root`` whose inventory/prod holds the
    golden (fake) secrets; returns ``root``."""
    copy_studio(root)
    secrets = root / "inventory/prod/secrets.env"
    shutil.copy(GOLDEN_SECRETS, secrets)
    secrets.chmod(0o600)
    return root


def edit(path: Path, old: str, new: str) -> None:
    """Replace ``old``, which must occur exactly once in ``path``, by ``new``."""
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def pin_stack(host: Path, stack: str, old: str, new: str) -> None:
    """In a cluster's ``host`` (host.yaml), pin ``stack`` to node ``new`` (it was on ``old``)."""
    text = host.read_text()
    block = text.index(f"\n  {stack}:\n")
    at = text.index(f"node: {old}", block)
    host.write_text(text[:at] + f"node: {new}" + text[at + len(f"node: {old}") :])


def place_status(root: Path, inventory: str, mem_limit: str = "64m") -> None:
    """Add to the studio under ``root`` a stateless stack ``status`` (Caddy answering on
    8080 from its own config file), placed in ``inventory``'s host.yaml by the label
    ``tier: apps`` (the example cluster's media and stats carry it)."""
    files = root / "stacks" / "files" / "status"
    files.mkdir(parents=True, exist_ok=True)
    (files / "Caddyfile").write_text(':8080 {\n\trespond "status: ok"\n}\n')
    (root / "stacks" / "status.yaml").write_text(
        "description: a stateless status page, placed by labels\n"
        "services:\n"
        "  web:\n"
        "    image: caddy:2.11.2-alpine\n"
        "    expose: [8080]\n"
        "    volumes:\n"
        "      - {config: site, target: /etc/caddy}\n"
        "    healthcheck:\n"
        "      test: [CMD, wget, -q, -O, /dev/null, http://127.0.0.1:8080/]\n"
        f"    mem_limit: {mem_limit}\n"
        "configs:\n"
        "  site/Caddyfile: {source: files/status/Caddyfile}\n"
    )
    edit(
        root / inventory / "host.yaml",
        "  edge: {}\n",
        "  edge: {}\n  status:\n    placement: {tier: apps}\n",
    )
