"""A fast start (issue 12): the CLI imports only what the command needs. Each test runs a
fresh interpreter, the only place where "what got imported" is a clean question."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import copy_studio, run_cli

HEAVY = ("pydantic", "ruamel", "vpsctl.core", "vpsctl.ops", "vpsctl.host", "vpsctl.local")


def _imported(code: str, cwd: Path | None = None) -> list[str]:
    """The heavy modules loaded by running ``code`` in a fresh interpreter."""
    probe = (
        f"{code}\nimport json, sys\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({HEAVY!r}))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True, check=True
    )
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_building_the_parser_imports_nothing_heavy() -> None:
    assert _imported("from vpsctl.cli.main import build_parser; build_parser()") == []


def test_a_cached_validate_loads_no_pydantic(tmp_path: Path) -> None:
    studio = copy_studio(tmp_path)
    assert run_cli(studio, "secrets", "generate", "-i", "inventory/sandbox").code == 0
    assert run_cli(studio, "validate", "-i", "inventory/sandbox").code == 0
    code = (
        "from vpsctl.cli.main import main\n"
        "assert main(['validate', '-i', 'inventory/sandbox']) == 0"
    )
    assert _imported(code, cwd=studio) == []
