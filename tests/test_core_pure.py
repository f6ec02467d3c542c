"""The core is pure (issue 12): it imports nothing that touches files, docker, SSH or local
state, and calls nothing that does; what it needs of this machine arrives as data
(:class:`vpsctl.core.render.RenderInputs`, gathered by :mod:`vpsctl.ops.inputs`).

An ast walk over every module of ``vpsctl/core/`` and the pure modules of the spec model holds
each import (top level or inside a function) to an allowlist and refuses calls that read or
write files or start processes. The jinja2 templates are vpsctl's own program text, located
once through :func:`vpsctl.resources.shipped` (see :mod:`vpsctl.core.templates`).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, copy_studio, run_cli

PACKAGE = ROOT / "vpsctl"

# The spec model modules the core builds on, held to the same rules.
PURE_SPEC = ("models", "base", "secrets", "units", "paths", "environment", "schema")
# The load boundary of the spec: not checked, each for its reason.
SPEC_BOUNDARY = {
    "loader": "reads the studio's YAML files and secrets.env",
    "envfile": "reads and writes secrets.env (its env_value_problem is pure: allowed by name)",
    "yamlsource": "parses YAML text read from files, with ruamel",
    "checks": "checks the loaded studio against files on disk (config sources, keys)",
    "generate": "writes new secret values into the secrets store",
    "store": "reads, decrypts and writes the secrets store (secrets.env or secrets.env.age)",
    "age": "age encryption (pyrage) and the identity file it reads",
    "cache": "reads and writes validate's and plan's content-hash caches under .vpsctl/cache/",
    "zones": "reads the machine's tz database (the one file a time zone name points to)",
    "pydantic_errors": "restates pydantic's errors against the YAML documents the loader read",
    "studio": "the loaded Spec: its config_source/files_root look at files on disk, called "
    "only at the boundary (vpsctl.ops.inputs, checks); the core uses it as data",
}

STDLIB = {
    "__future__",
    "abc",
    "base64",
    "binascii",
    "collections",
    "collections.abc",
    "copy",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "enum",
    "functools",
    "hashlib",
    "ipaddress",
    "itertools",
    "json",
    "math",
    "operator",
    "posixpath",  # path text only (os.path would stat)
    "re",
    "shlex",
    "string",
    "textwrap",
    "types",
    "typing",
    "unicodedata",
    "urllib.parse",
}
THIRD_PARTY = {"pydantic", "jinja2", "re2"}
# imports allowed in one module only, each with its reason
ONLY_IN = {
    # random bytes for `secrets generate`'s values: no file, no process
    ("vpsctl.spec.secrets", "secrets"),
    # timezone names are checked against the tz database (read-only, one file per name:
    # vpsctl.spec.zones, the boundary that reads it)
    ("vpsctl.spec.models", "vpsctl.spec.zones"),
    # the facts' file contents arrive as one gzip-ed tar in the script's answer: inflated and
    # read from memory (io.BytesIO), never opened as a file nor extracted
    ("vpsctl.core.facts", "io"),
    ("vpsctl.core.facts", "tarfile"),
    ("vpsctl.core.facts", "zlib"),
    # a stack's compose.yaml as its node holds it, parsed from the text the node sent (never
    # a file): the deploy document of a cluster's stack is built from it
    ("vpsctl.core.stackdoc", "ruamel.yaml"),
}
# vpsctl modules the core may import, and which names of them (None: any)
VPSCTL: dict[str, frozenset[str] | None] = {
    "vpsctl.errors": None,
    "vpsctl.spec.studio": None,  # the Spec as data (see SPEC_BOUNDARY)
    "vpsctl.spec.envfile": frozenset({"env_value_problem"}),
    # vpsctl's own templates directory: program text (vpsctl.core.templates)
    "vpsctl.resources": frozenset({"shipped"}),
    **{f"vpsctl.spec.{name}": None for name in PURE_SPEC},
}

# calls that read or write files, list directories or start processes
IO_CALLS = {"open", "exec", "eval", "__import__", "input"}
IO_METHODS = {
    "read_text",
    "read_bytes",
    "write_text",
    "write_bytes",
    "iterdir",
    "glob",
    "rglob",
    "is_file",
    "is_dir",
    "exists",
    "stat",
    "lstat",
    "mkdir",
    "unlink",
    "touch",
    # not `resolve`: pathlib is not importable here, and `Spec.resolve` looks up a domain
    "expanduser",
    "open",
    "urlopen",
}


def _allowed(module: str, target: str, names: list[str]) -> bool:
    if target in STDLIB or target.split(".", maxsplit=1)[0] in THIRD_PARTY:
        return True
    if (module, target) in ONLY_IN:
        return True
    if target == "vpsctl.core" or target.startswith("vpsctl.core."):
        return True
    if target in VPSCTL:
        allowed = VPSCTL[target]
        return allowed is None or set(names) <= allowed
    return False


def impurities(source: str, module: str) -> list[str]:
    """``line: what`` for every import outside the allowlist and every I/O call in
    ``source`` (the text of the module named ``module``)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not _allowed(module, alias.name, []):
                    found.append(f"{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = module.rsplit(".", node.level)[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            if not _allowed(module, target, names):
                found.append(f"{node.lineno}: from {target} import {', '.join(names)}")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in IO_CALLS:
                found.append(f"{node.lineno}: call {func.id}()")
            elif isinstance(func, ast.Attribute) and func.attr in IO_METHODS:
                found.append(f"{node.lineno}: call .{func.attr}()")
    return found


def _modules() -> list[tuple[str, Path]]:
    core = [(f"vpsctl.core.{p.stem}", p) for p in sorted((PACKAGE / "core").glob("*.py"))]
    spec = [(f"vpsctl.spec.{name}", PACKAGE / "spec" / f"{name}.py") for name in PURE_SPEC]
    return core + spec


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_the_module_is_pure(module: str, path: Path) -> None:
    assert impurities(path.read_text(encoding="utf-8"), module) == []


def test_every_spec_module_is_pure_or_named_as_the_boundary() -> None:
    modules = {p.stem for p in (PACKAGE / "spec").glob("*.py")} - {"__init__"}
    assert modules - set(PURE_SPEC) - set(SPEC_BOUNDARY) == set()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import subprocess\n", "1: import subprocess"),
        ("def f():\n    import os\n", "2: import os"),
        ("from vpsctl.local import sandbox\n", "1: from vpsctl.local import sandbox"),
        ("from vpsctl.resources import standins_root\n", "standins_root"),
        ("from ..ops import inputs\n", "1: from vpsctl.ops import inputs"),
        ("def f(p):\n    return open(p).read()\n", "2: call open()"),
        ("def f(p):\n    return p.read_bytes()\n", "2: call .read_bytes()"),
        ("def f(p):\n    p.write_text('x')\n", "2: call .write_text()"),
        ("import paramiko\n", "1: import paramiko"),
    ],
)
def test_the_checker_reports_a_violation(source: str, expected: str) -> None:
    found = impurities(source, "vpsctl.core.example")
    assert any(expected in line for line in found), found


def test_the_checker_passes_pure_code() -> None:
    source = "import hashlib\nfrom vpsctl.core.layout import HOST_ROOT\nx = {}.get('a')\n"
    assert impurities(source, "vpsctl.core.example") == []


def test_importing_render_and_plan_loads_no_boundary_module() -> None:
    # `socket` is not checked: pydantic's plugin loader (importlib.metadata → email.utils)
    # imports it, not vpsctl; the ast test above keeps the core from importing it itself
    code = (
        "import sys, vpsctl.core.render, vpsctl.core.plan\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('vpsctl.local', 'vpsctl.host', "
        "'vpsctl.ops', 'vpsctl.cli', 'paramiko', 'pyinfra', 'subprocess', 'docker')))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_render_of_the_sandbox_works_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No sandbox recorded, no docker on PATH: render writes every file, with a marked
    placeholder for what only a running sandbox gives, and says so."""
    studio = copy_studio(tmp_path / "studio")
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("VPSCTL_STATE_DIR", str(state))
    assert run_cli(studio, "secrets", "generate", "-i", "inventory/sandbox").code == 0
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # a `docker` call would fail
    result = run_cli(studio, "render", "-i", "inventory/sandbox", "--out", "out")
    assert result.code == 0, result.err
    out = studio / "out"
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert f"wrote {len(written)} files under out" in result.err
    assert "placeholder for the backup repository: " in result.err
    assert "`vpsctl sandbox up --name backup`" in result.err
    assert "placeholder for the ACME CA (Pebble): " in result.err
    script = (out / "opt/vpsctl/host/backup/vpsctl-backup").read_text()
    assert "unresolved.invalid:/srv/restic/lumen-sandbox" in script
    # no key of a box that does not exist, and no empty known_hosts
    assert "opt/vpsctl/host/backup/sftp_key" not in written
    assert "opt/vpsctl/host/backup/known_hosts" not in written
    caddyfile = (out / "opt/vpsctl/stacks/edge/config/caddy/Caddyfile").read_text()
    assert "acme_ca https://unresolved.invalid/dir" in caddyfile
    assert "opt/vpsctl/stacks/edge/compose.yaml" in written
    assert os.stat(out / "opt/vpsctl/host/backup/password").st_mode & 0o777 == 0o600


def test_plan_of_the_sandbox_never_goes_on_with_a_placeholder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    studio = copy_studio(tmp_path / "studio")
    monkeypatch.setenv("VPSCTL_STATE_DIR", str(tmp_path / "state"))
    assert run_cli(studio, "secrets", "generate", "-i", "inventory/sandbox").code == 0
    result = run_cli(studio, "plan", "-i", "inventory/sandbox")
    assert result.code == 1 and result.out == ""
    assert "backup.repository.sandbox:" in result.err
    assert "unresolved.invalid" not in result.err
