"""The one redacting boundary (``vpsctl.errors``), and what an env file line can carry,
checked against Debian 13's docker compose (2.26) itself."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_cli
from tests.test_invalid_corpus import make_studio
from vpsctl.cli import main as cli
from vpsctl.core.plan import _env_diff
from vpsctl.core.render import _environment, env_file_secret_keys, parse_env_file
from vpsctl.errors import (
    MASK,
    RedactingStream,
    forget_secrets,
    masked,
    masked_data,
    redacted_output,
    register_secrets,
)
from vpsctl.spec.envfile import LINE_BREAKS, env_value_problem
from vpsctl.spec.loader import load_spec

COMPOSE = ROOT / ".venv" / "tools" / "docker-compose"
SECRET = 'pa"ss\\wörd-0123456789'


@pytest.fixture(autouse=True)
def registry() -> Iterator[None]:
    forget_secrets()
    register_secrets([SECRET])
    yield
    forget_secrets()


def test_a_secret_written_in_pieces_is_still_masked() -> None:
    target = io.StringIO()
    stream = RedactingStream(target)
    stream.write("compose: KEY=" + SECRET[:5])
    assert target.getvalue() == ""  # held until the line ends
    stream.write(SECRET[5:] + " failed\nnext")
    assert target.getvalue() == f"compose: KEY={MASK} failed\n"
    stream.flush()
    assert target.getvalue().endswith("\nnext")


def test_a_prompt_without_newline_appears_on_flush() -> None:
    target = io.StringIO()
    with redacted_output():
        real = sys.stderr
        assert isinstance(real, RedactingStream)
        real.target = target
        print("Apply these changes? [y/N] ", end="", file=sys.stderr, flush=True)
        assert target.getvalue() == "Apply these changes? [y/N] "


def test_every_printed_form_of_a_secret_is_masked() -> None:
    for shown in (SECRET, json.dumps(SECRET), json.dumps(SECRET, ensure_ascii=False), repr(SECRET)):
        assert SECRET[8:] not in masked(f"x {shown} y"), shown


def test_a_secret_with_dollars_is_masked_as_a_deploy_document_escapes_it() -> None:
    # a cluster's deploy document doubles every `$` (the docker CLI interpolates it): an
    # error of `docker stack deploy` quoting the document shows the value in that form
    register_secrets(["pa$$word-with-$-signs"])
    shown = masked("error near 'pa$$$$word-with-$$-signs' in the document")
    assert "word-with" not in shown and MASK in shown


def test_overlapping_values_leave_no_part_of_either() -> None:
    register_secrets(["abcdef123456", "123456ghijkl"])
    assert masked("<abcdef123456ghijkl>") == f"<{MASK}>"


def test_masked_json_stays_valid_whatever_the_secret_holds() -> None:
    data = {"diff": f"~ KEY: {SECRET!r}", SECRET: [SECRET, 1, None]}
    text = json.dumps(masked_data(data))
    assert SECRET not in text and json.dumps(SECRET)[1:-1] not in text
    assert json.loads(text) == {"diff": f"~ KEY: '{MASK}'", MASK: [MASK, 1, None]}


def test_a_value_spanning_lines_is_masked_line_by_line() -> None:
    pem = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\n-----END KEY-----"
    register_secrets([pem])
    assert "MIIEvQIBADANBgkqhkiG9w0B" not in masked("line 2 was MIIEvQIBADANBgkqhkiG9w0B")


# ── env files ────────────────────────────────────────────────────────────────────────────


def env_file(entries: list[tuple[str, str]], secret: list[str]) -> bytes:
    text = (
        _environment()
        .get_template("service.env.j2")
        .render(entries=entries, secret_keys=secret, raw=False)
    )
    return text.encode()


def test_the_header_names_the_secret_keys_and_parsing_splits_on_newline_only() -> None:
    content = env_file([("A", "x\u2028y"), ("B", "plain")], ["A"])
    assert content.startswith(b"# vpsctl secret keys: A\n")
    assert env_file_secret_keys(content) == frozenset({"A"})
    assert env_file_secret_keys(env_file([("B", "plain")], [])) == frozenset()
    assert env_file_secret_keys(b"B='plain'\n") is None  # rendered before the header
    assert parse_env_file(content) == {"A": "x\u2028y", "B": "plain"}


def test_a_key_moved_from_secrets_to_env_keeps_its_old_value_masked() -> None:
    old = env_file([("TOKEN", "old-secret-value-0001")], ["TOKEN"])
    new = env_file([("TOKEN", "now-plain-config")], [])
    diff = _env_diff(old, new, frozenset(), deleting=False, secrets=[])
    assert "old-secret-value-0001" not in diff and "now-plain-config" not in diff
    assert diff.startswith("~ TOKEN: changed (sha256:")
    plain = _env_diff(
        env_file([("MODE", "a")], []), env_file([("MODE", "b")], []), frozenset(), False, []
    )
    assert plain == "~ MODE: 'a' → 'b'\n"
    # no header: the host's file may hold a secret under any key
    legacy = _env_diff(b"MODE='a'\n", env_file([("MODE", "b")], []), frozenset(), False, [])
    assert legacy.startswith("~ MODE: changed (sha256:")


CARRIED = [
    "plain",
    "back\\slash",
    "two\\\\backslashes",
    'double"quote',
    "dollar$HOME${X}",
    "hash # not a comment",
    " spaces around ",
    "tab\there",
    "escape\x1bchar",
    "unicode €é…",
]
REFUSED = ["quote'", "ends\\", "ends\\\\\\", *(f"a{c}b" for c in LINE_BREAKS), "nul\x00"]


def compose_environment(tmp_path: Path, content: bytes) -> tuple[int, str, dict[str, str]]:
    assert COMPOSE.exists(), "docker compose v2 is missing: run `make install`"
    (tmp_path / "compose.yaml").write_text(
        "services:\n  app:\n    image: x\n    env_file: ./app.env\n"
    )
    (tmp_path / "app.env").write_bytes(content)
    result = subprocess.run(
        [str(COMPOSE), "config", "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
        timeout=60,
    )
    if result.returncode:
        return result.returncode, result.stderr, {}
    env: dict[str, str] = json.loads(result.stdout)["services"]["app"].get("environment", {})
    return 0, "", {k: v.replace("$$", "$") for k, v in env.items()}


def test_compose_reads_back_every_value_the_rule_lets_through(tmp_path: Path) -> None:
    entries = [(f"V{i}", v) for i, v in enumerate(CARRIED)] + [("NEXT", "next-secret")]
    assert all(env_value_problem(v) is None for _, v in entries)
    code, err, env = compose_environment(tmp_path, env_file(entries, ["NEXT"]))
    assert code == 0, err
    assert env == dict(entries)  # the header is a comment to compose


def test_compose_misreads_what_the_rule_refuses(tmp_path: Path) -> None:
    """Each refused value, rendered anyway: compose fails (quoting the NEXT line: a secret)
    or reads something else than the value, or the value holds a character some reader
    takes for a line break."""
    for value in REFUSED:
        assert env_value_problem(value) is not None, repr(value)
        content = f"A='{value}'\nNEXT='next-secret'\n".encode()
        code, err, env = compose_environment(tmp_path, content)
        splits = len(value.splitlines()) > 1 or "\n" in value
        assert code != 0 or env.get("A") != value or splits or "\x00" in value, repr(value)
        if value.endswith("\\") and value.count("\\") % 2:
            assert "next-secret" in err  # what the check spares the operator


# ── the CLI's boundary ──────────────────────────────────────────────────────────────────


def test_the_cli_masks_whatever_any_layer_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A layer that prints a secret (a remote error, a debug traceback) prints it through
    the boundary: the secret is masked as soon as secrets.env is read."""
    studio = make_studio(tmp_path)
    secret = "fixtureRootPassword0123456789"  # BLOG_DB_ROOT_PASSWORD of the corpus base

    def leaky(inventory: Path) -> None:
        load_spec(inventory)
        print(f"remote said: MYSQL_ROOT_PASSWORD={secret}")
        sys.stderr.write(f"half a line {secret[:10]}")
        sys.stderr.write(f"{secret[10:]} and the rest\n")
        raise RuntimeError(f"bug quoting {json.dumps(secret)}")

    monkeypatch.setattr(cli, "load_spec", leaky)
    monkeypatch.setenv("VPSCTL_DEBUG", "1")
    result = run_cli(studio, "validate", "-i", "inventory/test")
    assert result.code == 1
    assert result.out == f"remote said: MYSQL_ROOT_PASSWORD={MASK}\n"
    assert f"half a line {MASK} and the rest\n" in result.err
    assert f'RuntimeError: bug quoting "{MASK}"' in result.err  # the traceback, masked
