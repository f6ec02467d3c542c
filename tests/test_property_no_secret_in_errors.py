"""Property: no error message ever contains a secret's value.

Hypothesis writes arbitrary values into secrets.env (shaped to hit every kind's checks:
Stripe prefixes, base64 of every length, short, padded, multi-byte) and validates the
whole example studio. A value that appears in the output only counts as a leak if it does
not also appear when the same secret holds a different value (some short values, such as
``sk_live_``, are also words of the messages themselves)."""

from __future__ import annotations

import base64
import contextlib
import io
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from dotenv import dotenv_values
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from tests.helpers import ROOT
from vpsctl.cli import main
from vpsctl.errors import SpecError
from vpsctl.spec.generate import generate
from vpsctl.spec.loader import load_spec
from vpsctl.spec.secrets import KINDS, SecretKind

PREFIXES = ["", "sk_live_", "sk_test_", "pk_live_", "pk_test_", "rk_live_", "whsec_", "https://"]

values = st.one_of(
    st.builds(
        lambda prefix, body: prefix + body,
        st.sampled_from(PREFIXES),
        st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), min_size=4, max_size=80),
    ),
    st.binary(min_size=1, max_size=80).map(lambda b: base64.b64encode(b).decode()),
    st.binary(min_size=1, max_size=80).map(lambda b: base64.b64encode(b).decode().rstrip("=")),
)


def quoted(value: str) -> str:
    """A single-quoted secrets.env value that python-dotenv reads back byte for byte."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("stacks", "inventory"):
            shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("secrets.env"))
        generate(root / "inventory/sandbox")
        yield root


def validate_output(root: Path) -> str:
    """Everything `validate` (or, for a valid spec, `show`) prints, and the loader's
    exception with every problem's repr."""
    out, err = io.StringIO(), io.StringIO()
    try:
        load_spec(root / "inventory/sandbox")
        command = "show"
        text = ""
    except SpecError as exc:
        command = "validate"
        text = str(exc) + repr(exc.problems) + repr(exc)
    with contextlib.chdir(root), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        main([command, "-i", "inventory/sandbox"])
    return text + out.getvalue() + err.getvalue()


def output_with(root: Path, original: str, name: str, value: str) -> str:
    secrets = root / "inventory/sandbox/secrets.env"
    lines = [
        f"{name}={quoted(value)}" if line.startswith(f"{name}=") else line
        for line in original.splitlines()
    ]
    secrets.write_text("\n".join(lines) + "\n")
    return validate_output(root)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), value=values)
def test_no_output_contains_a_secret_value(sandbox: Path, data: st.DataObject, value: str) -> None:
    assume(len(value.encode()) >= 6 and value.strip() == value and "\n" not in value)
    secrets = sandbox / "inventory/sandbox/secrets.env"
    original = secrets.read_text()
    names = sorted(dotenv_values(secrets, interpolate=False))
    name = data.draw(st.sampled_from(names))
    try:
        leaked = output_with(sandbox, original, name, value)
        # only values that secrets.env can hold exactly say anything
        assume(dotenv_values(secrets, interpolate=False)[name] == value)
        if value in leaked:  # a leak, unless the text is there whatever the value
            baseline = output_with(sandbox, original, name, "Z" * 40 + "9")
            assert value in baseline, f"the value of {name} appears in vpsctl's output"
    finally:
        secrets.write_text(original)


@settings(max_examples=300, deadline=None)
@given(kind_name=st.sampled_from(KINDS), value=values, bytes_=st.integers(1, 64))
def test_no_kind_message_quotes_the_value(kind_name: str, value: str, bytes_: int) -> None:
    fields: dict[str, object] = {"kind": kind_name}
    if kind_name in ("base64_bytes", "min_bytes"):
        fields["bytes"] = bytes_
    if kind_name == "password":
        fields["min_length"] = bytes_
    if kind_name == "regex":
        fields.update(pattern="[a-z]{3,}", hint="three or more lowercase letters")
    kind: SecretKind = TypeAdapter(SecretKind).validate_python(fields)
    message = kind.check(value)
    assume(len(value) >= 6 and value not in kind.spec_text())
    assert message is None or value not in message
