"""Nothing escapes its stack: every path a spec names stays where it belongs.

The corpus (tests/invalid/cases/140 to 154) holds the refusals that plain spec text can
produce; these tests cover what it cannot: symlinks on the way, files swapped after
validation, the renderer's and the tar stream's own fences (defence in depth, tested on
their own), the box script's guards, and the rules as properties over every name.
"""

from __future__ import annotations

import posixpath
import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import run_cli
from tests.test_invalid_corpus import INVENTORY, make_studio
from vpsctl.core import backupfiles
from vpsctl.core.render import Desired, DesiredFile
from vpsctl.host.remote import Session, Target
from vpsctl.local.files import UnsafePath, member_problem, safe_target
from vpsctl.ops.inputs import render_spec, write_tree
from vpsctl.spec.loader import load_spec
from vpsctl.spec.paths import ABSOLUTE_PATH, RELATIVE_NAME, absolute_problem, relative_problem
from vpsctl.spec.studio import network_alias

CONFIG = "stacks/files/blog/low-memory.cnf"


@pytest.fixture(autouse=True)
def backup_key(operator_home: Path) -> None:
    """The base studio's backup key (host.yaml names ~/.ssh/test_backup_ed25519): render
    installs it on the box, so it must exist here."""
    key = operator_home / ".ssh/test_backup_ed25519"
    if not key.exists():
        key.write_bytes(
            b"-----BEGIN OPENSSH PRIVATE KEY-----\ntest\n-----END OPENSSH PRIVATE KEY-----\n"
        )
        key.chmod(0o600)


def _validate(studio: Path) -> tuple[int, str]:
    result = run_cli(studio, "validate", "-i", INVENTORY)
    return result.code, result.err


@pytest.mark.parametrize(
    ("target", "said"),
    [
        ("inventory/test/secrets.env", "outside this stack's files directory"),
        ("inventory/test/host.yaml", "outside this stack's files directory"),
        ("stacks/files/shop", "outside this stack's files directory"),
        ("/etc/hostname", "outside this stack's files directory"),
    ],
)
def test_a_config_source_symlinked_out_of_the_files_directory_is_refused(
    tmp_path: Path, target: str, said: str
) -> None:
    studio = make_studio(tmp_path)
    (studio / "stacks/files/shop").mkdir(exist_ok=True)
    source = studio / CONFIG
    source.unlink()
    source.symlink_to(target if target.startswith("/") else studio / target)
    code, err = _validate(studio)
    assert code == 1
    assert "stacks/blog.yaml:65: configs.mysql/low-memory.cnf.source: " in err
    assert said in err


def test_a_files_directory_that_is_a_symlink_into_the_inventory_is_refused(
    tmp_path: Path,
) -> None:
    studio = make_studio(tmp_path)
    files = studio / "stacks/files/blog"
    (studio / "inventory/test/blog").mkdir()
    (studio / "inventory/test/blog/low-memory.cnf").write_text("[mysqld]\n")
    for child in files.iterdir():
        child.unlink()
    files.rmdir()
    files.symlink_to(studio / "inventory/test/blog")
    code, err = _validate(studio)
    assert code == 1
    assert "inside the inventory: never a config source" in err


def test_the_ssh_key_named_in_host_yaml_is_never_a_config(tmp_path: Path) -> None:
    studio = make_studio(tmp_path)
    key = studio / "stacks/files/blog/deploy_key"
    key.write_text("not recognisable as a key by its content\n")
    host = studio / "inventory/test/host.yaml"
    host.write_text(host.read_text().replace("~/.ssh/test_ed25519", str(key)))
    blog = studio / "stacks/blog.yaml"
    blog.write_text(blog.read_text().replace("files/blog/low-memory.cnf", "files/blog/deploy_key"))
    code, err = _validate(studio)
    assert code == 1
    assert "is a private key file named in host.yaml" in err


def test_render_refuses_a_source_swapped_after_validation(tmp_path: Path) -> None:
    studio = make_studio(tmp_path)
    spec = load_spec(studio / INVENTORY)
    source = studio / CONFIG
    source.unlink()
    source.symlink_to(studio / INVENTORY / "secrets.env")
    with pytest.raises(UnsafePath, match="outside this stack's files directory"):
        render_spec(spec)


def test_render_out_writes_nothing_for_a_config_that_climbs_out(tmp_path: Path) -> None:
    studio = make_studio(tmp_path)
    blog = studio / "stacks/blog.yaml"
    blog.write_text(
        blog.read_text().replace(
            "  mysql/low-memory.cnf:",
            "  ../../../../../../x: {source: files/blog/low-memory.cnf}\n  mysql/low-memory.cnf:",
        )
    )
    result = run_cli(studio, "render", "-i", INVENTORY, "--out", "out")
    assert result.code == 1
    assert "climbs out with '..'" in result.err
    assert not (studio / "out").exists()
    assert not list(tmp_path.rglob("x"))


# ── the fences of their own ──────────────────────────────────────────────────────────────


def _desired(path: str) -> Desired:
    desired = Desired()
    desired.files[path] = DesiredFile(path, b"data\n", 0o644, "shop", "config")
    return desired


@pytest.mark.parametrize(
    "path",
    [
        "/opt/vpsctl/stacks/shop/config/../../../../../tmp/escaped",
        "/opt/vpsctl/stacks/shop/config/./x",
        "/opt/vpsctl/stacks/shop//config",
        "/etc/cron.d/escaped",
        "opt/vpsctl/relative",
        "/opt/vpsctl/stacks/shop/config/line\nbreak",
    ],
)
def test_write_tree_refuses_a_member_outside_its_root(tmp_path: Path, path: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(UnsafePath):
        write_tree(_desired(path), out)
    assert not (tmp_path / "tmp").exists()
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


def test_write_tree_refuses_a_symlinked_directory_on_the_way(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "opt/vpsctl/stacks").mkdir(parents=True)
    (out / "opt/vpsctl/stacks/shop").symlink_to(elsewhere)
    with pytest.raises(UnsafePath, match="leads outside"):
        write_tree(_desired("/opt/vpsctl/stacks/shop/config/app.conf"), out)
    assert list(elsewhere.iterdir()) == []


def test_safe_target_accepts_a_plain_member(tmp_path: Path) -> None:
    target = safe_target(tmp_path, "/opt/vpsctl/stacks/shop/compose.yaml", "/opt/vpsctl")
    assert target == tmp_path.resolve() / "opt/vpsctl/stacks/shop/compose.yaml"


@pytest.mark.parametrize(
    "path", ["/etc/shadow", "/opt/vpsctl/../etc/shadow", "/opt/vpsctl-evil/x", "relative"]
)
def test_the_tar_stream_refuses_a_member_outside_vpsctls_tree(path: str) -> None:
    # refused before anything is sent: no connection is ever made
    session = Session(Target("nowhere", "192.0.2.1", 22, "root", Path("/nonexistent")))
    with pytest.raises(UnsafePath, match="refusing to send"):
        session.put_files([(path, b"x", 0o600)])


# ── the box script's guards ──────────────────────────────────────────────────────────────


def _functions(script: str, *names: str) -> str:
    """The bash definitions of ``names`` in ``script`` (each ends at a ``}`` of column 0)."""
    out = []
    for name in names:
        match = re.search(rf"^{name}\(\) \{{.*?^\}}\n", script, re.S | re.M)
        assert match, name
        out.append(match.group(0))
    return "".join(out)


@pytest.fixture
def guards(tmp_path: Path) -> str:
    studio = make_studio(tmp_path)
    script = render_spec(load_spec(studio / INVENTORY)).files[backupfiles.SCRIPT].content.decode()
    return "set -euo pipefail\nexec 3>&1\n" + _functions(
        script, "say", "fail", "sql_str", "in_volume"
    )


def _bash(program: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", program], check=False, capture_output=True, text=True)


def test_in_volume_keeps_a_path_inside_its_volume(guards: str, tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    (volume / "sub").mkdir(parents=True)
    ok = _bash(f"{guards}\nin_volume {volume} sub/app.db")
    assert ok.returncode == 0 and ok.stdout == f"{volume}/sub/app.db"
    for rel in ("../etc/shadow", "sub/../../x", "./x", "a//b"):
        refused = _bash(f"{guards}\nin_volume {volume} '{rel}'")
        assert refused.returncode == 3, rel
        assert refused.stdout.startswith("@@fail usage refusing"), rel
    (volume / "link").symlink_to("/etc")
    refused = _bash(f"{guards}\nin_volume {volume} link/shadow")
    assert refused.returncode == 3
    assert "outside the volume" in refused.stdout


def test_sql_str_quotes_quotes_and_backslashes(guards: str) -> None:
    quoted = _bash(guards + "\nsql_str \"/x'); DROP DATABASE d; SELECT ('\\\\\"")
    assert quoted.returncode == 0
    assert quoted.stdout == "'/x\\'); DROP DATABASE d; SELECT (\\'\\\\'"


# ── the rules, as properties over every name ────────────────────────────────────────────

NAME = st.from_regex(r"[a-z][a-z0-9]{0,4}(-[a-z0-9]{1,4}){0,2}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(a=st.tuples(NAME, NAME), b=st.tuples(NAME, NAME))
def test_different_stack_and_service_pairs_never_share_an_alias(
    a: tuple[str, str], b: tuple[str, str]
) -> None:
    if a != b:
        assert network_alias(*a) != network_alias(*b)


@settings(max_examples=500, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from(list("ab./_-:~% \n\\'$")), max_size=24).map(
        lambda t: "/" + t
    )
)
def test_an_accepted_absolute_path_is_already_normal(text: str) -> None:
    if absolute_problem(text) is None:
        assert ABSOLUTE_PATH.fullmatch(text)
        assert posixpath.normpath(text) == text
        assert ".." not in text.split("/")
        assert not set(text) & set(" \n\\'$:,")


@settings(max_examples=500, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab./_-:\n\\")), min_size=1, max_size=24))
def test_an_accepted_relative_name_stays_below_its_root(text: str) -> None:
    if relative_problem(text) is None:
        assert RELATIVE_NAME.fullmatch(text)
        joined = posixpath.normpath(posixpath.join("/root/config", text))
        assert joined.startswith("/root/config/")
        assert member_problem("/root/config/" + text, "/root/config") is None


def test_a_bind_mount_never_leaves_the_stacks_config_directory() -> None:
    from vpsctl.core.render import _config_bind  # noqa: PLC0415 - the renderer's own fence

    assert _config_bind("/opt/vpsctl/stacks/edge", "caddy") == "./config/caddy"
    for config in ("../../../../var/run/docker.sock", "../compose.yaml", "a/./b", "/etc"):
        with pytest.raises(UnsafePath):
            _config_bind("/opt/vpsctl/stacks/shop", config)
