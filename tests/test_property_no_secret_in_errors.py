"""Property: no output ever contains a secret's value.

Hypothesis writes arbitrary values into secrets.env (shaped to hit every kind's checks:
Stripe prefixes, base64 of every length, short, padded, multi-byte) and validates the
whole example studio. A value that appears in the output only counts as a leak if it does
not also appear when the same secret holds a different value (some short values, such as
``sk_live_``, are also words of the messages themselves).

Hostile values (line breaks of every kind, backslashes, quotes, Unicode separators; quoted,
or pasted raw so that they wrap onto lines of their own) then go through validate and show,
render (every file others may read), plan (text and JSON, against synthesized host facts
that still hold the OLD value, also under a key that is no longer secret), and the summaries
of apply and restore driven through a scripted session (``tests/scripted.py``)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from dotenv import dotenv_values
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from tests import factsim, scripted
from tests.helpers import copy_studio, golden_prod_copy, run_cli
from tests.scripted import ScriptedSession
from vpsctl.cli.main import main
from vpsctl.cli.views import plan_text
from vpsctl.core.facts import parse
from vpsctl.core.plan import make_plan
from vpsctl.errors import SpecError
from vpsctl.host import remote
from vpsctl.ops import recovery
from vpsctl.ops.apply import Applier
from vpsctl.ops.inputs import render_spec, write_tree
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
        generate(copy_studio(root) / "inventory/sandbox")
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


# ── hostile values ──────────────────────────────────────────────────────────────────────

# every character str.splitlines() breaks at, and what env files, JSON and reprs escape
LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
HOSTILE = LINE_BREAKS + "\\'\"$#={}` \t\x00\x1b€é"
ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

markers = st.text(alphabet=ALNUM, min_size=8, max_size=12)
hostile_values = st.builds(
    lambda a, h, b: a + h + b,
    markers,
    st.text(alphabet=HOSTILE, min_size=1, max_size=6),
    markers,
)


# what a password kind and an env file line let through, so that render and plan see it
CARRIED = '\\"$#={}`%€é…'
valid_hostile_values = st.builds(
    lambda a, h, b: a + h + b,
    markers,
    st.one_of(
        st.text(alphabet=CARRIED, min_size=1, max_size=6),
        st.text(alphabet=CARRIED, min_size=1, max_size=6),
        st.text(alphabet=CARRIED, min_size=1, max_size=6),
        st.text(alphabet=HOSTILE, min_size=1, max_size=6),
    ),
    markers,
)


def pieces(value: str) -> list[str]:
    """The value, its escaped forms, and each of its lines that holds enough of a marker to
    be told from ordinary output (eight letters or digits)."""
    parts = [value]
    for brk in LINE_BREAKS:
        parts = [p for part in parts for p in part.split(brk)]
    found = [value, json.dumps(value)[1:-1], repr(value)[1:-1]]
    found += [p for p in parts if sum(c in ALNUM for c in p) >= 8]
    return found


def assert_hidden(value: str, *outputs: str) -> None:
    """No form or line of ``value`` in any output."""
    for piece in pieces(value):
        for output in outputs:
            assert piece not in output, f"{piece!r} of a secret value is in the output"


def write_secret(secrets: Path, original: str, name: str, value: str, raw: bool) -> None:
    """``name`` set to ``value`` in secrets.env: quoted (read back byte for byte), or pasted
    raw, so that a value with line breaks wraps onto lines of its own."""
    shown = value if raw else quoted(value)
    lines = [
        f"{name}={shown}" if line.startswith(f"{name}=") else line for line in original.splitlines()
    ]
    secrets.write_text("\n".join(lines) + "\n", encoding="utf-8")


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), value=hostile_values, raw=st.booleans())
def test_hostile_secret_is_never_printed_by_validate_or_show(
    sandbox: Path, data: st.DataObject, value: str, raw: bool
) -> None:
    secrets = sandbox / "inventory/sandbox/secrets.env"
    original = secrets.read_text()
    name = data.draw(st.sampled_from(sorted(dotenv_values(secrets, interpolate=False))))
    try:
        write_secret(secrets, original, name, value, raw)
        shown = {}
        for command in (["validate"], ["show"], ["show", "--json"]):
            out, err = io.StringIO(), io.StringIO()
            with (
                contextlib.chdir(sandbox),
                contextlib.redirect_stdout(out),
                contextlib.redirect_stderr(err),
            ):
                code = main([*command, "-i", "inventory/sandbox"])
            shown[" ".join(command)] = out.getvalue() + err.getvalue()
            if command == ["show", "--json"] and code == 0:
                json.loads(out.getvalue())  # masking never breaks the JSON
        assert_hidden(value, *shown.values())
    finally:
        secrets.write_text(original)


# ── render and plan ─────────────────────────────────────────────────────────────────────

TARGET = "GHOST_SMTP_PASSWORD"  # a password (16+): any character a kind lets through
GHOST = "stacks/ghost.yaml"
AUTH_PASS = "      mail__options__auth__pass: GHOST_SMTP_PASSWORD\n"


@pytest.fixture(scope="module")
def prod() -> Iterator[Path]:
    """The example studio with the golden (fake) prod secrets."""
    with tempfile.TemporaryDirectory() as tmp:
        yield golden_prod_copy(Path(tmp))


def loaded_or_refused(root: Path, value: str) -> bool:
    """Load the prod inventory; a refusal must not quote ``value``. Whether it loaded."""
    try:
        load_spec(root / "inventory/prod")
    except SpecError as exc:
        assert_hidden(value, str(exc), repr(exc.problems))
        return False
    return True


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    old=valid_hostile_values,
    new=valid_hostile_values,
    moved=st.booleans(),
    verbatim=st.booleans(),
    legacy=st.booleans(),
)
def test_hostile_secret_through_render_and_plan(
    prod: Path, old: str, new: str, moved: bool, verbatim: bool, legacy: bool
) -> None:
    """The host holds the OLD value (in an env file with or without vpsctl's header of
    secret keys); the spec has a NEW one, maybe with the variable moved from `secrets:` to
    plain `env:`, maybe with the new value pasted verbatim as a plain value too. Neither
    value is in any file others may read, nor in the plan's text or JSON."""
    if old == new:
        new = new[::-1]
    assume(old != new)
    secrets = prod / "inventory/prod/secrets.env"
    ghost = prod / GHOST
    original_secrets, original_ghost = secrets.read_text(), ghost.read_text()
    try:
        write_secret(secrets, original_secrets, TARGET, old, raw=False)
        if not loaded_or_refused(prod, old):
            return
        before = render_spec(load_spec(prod / "inventory/prod"))
        host = factsim.converged(before)
        if legacy:  # rendered before env files named their secret keys
            for path, (content, mode, owner) in list(host.files.items()):
                if "/env/" in path:
                    body = content.split(b"\n", 1)[1]
                    host.files[path] = (body, mode, owner)

        write_secret(secrets, original_secrets, TARGET, new, raw=False)
        edited = original_ghost
        if moved:  # the variable is plain config now; the secret goes to another name
            edited = edited.replace(AUTH_PASS, "      SMTP_PASS_V2: GHOST_SMTP_PASSWORD\n")
            edited = edited.replace(
                "      mail__options__port: 465\n",
                "      mail__options__port: 465\n      mail__options__auth__pass: plain-config\n",
            )
        if verbatim:  # the secret's value pasted as a plain value as well
            edited = edited.replace(
                "      mail__options__port: 465\n",
                f"      mail__options__port: 465\n      SMTP_COPY: {json.dumps(new)}\n",
            )
        ghost.write_text(edited)
        if not loaded_or_refused(prod, new):
            return
        spec = load_spec(prod / "inventory/prod")
        desired = render_spec(spec)
        with tempfile.TemporaryDirectory() as out:
            write_tree(desired, Path(out))
            readable = [
                p.read_text(errors="replace")
                for p in Path(out).rglob("*")
                if p.is_file() and p.stat().st_mode & 0o077
            ]
        assert_hidden(new, *readable)
        event("planned")
        plan = make_plan("lumen-prod", desired, parse(host.output()))
        text = plan_text(plan, verbose=True)
        data = json.dumps(plan.to_json())
        json.loads(data)
        for value in (old, new):
            assert_hidden(value, text, data)
        if moved:
            [env] = [f for f in plan.files if f.path.endswith("/ghost/env/ghost.env")]
            assert "mail__options__auth__pass: changed (sha256:" in env.diff
    finally:
        secrets.write_text(original_secrets)
        ghost.write_text(original_ghost)


# ── apply and restore summaries ─────────────────────────────────────────────────────────

INV = "inventory/prod"
HOSTILE_EXAMPLES = [  # valid passwords that JSON, Go and Python reprs all escape or quote
    'pass\\word"with-quotes$and\\back-0000',
    "braces{secret.X}and#hash=eq-0000",
    "unicode€é…and%41percent-0000",
]


def converged_session(root: Path) -> ScriptedSession:
    """A scripted session to a host that runs ``root``'s studio as declared now."""
    spec = load_spec(root / INV)
    host = factsim.converged(render_spec(spec))
    for c in host.containers:
        c["image"] = spec.stacks[c["project"]].services[c["service"]].image
    session = scripted.converged_session(spec, host)
    session.answer(re.escape("script=$(cat)"), stdout=host.output() + "@@audit-end\n")
    return session


@pytest.mark.parametrize("value", HOSTILE_EXAMPLES)
def test_apply_summary_masks_what_compose_quotes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """compose fails on the env file and quotes it, the old and the new secret with it
    (escaped as Go would print them, too): the summary, the progress and the journal line on
    the box show neither."""
    secrets = golden_prod_copy(tmp_path) / INV / "secrets.env"
    session = converged_session(tmp_path)
    old = load_spec(tmp_path / INV).secret(TARGET)
    assert old is not None
    write_secret(secrets, secrets.read_text(), TARGET, value, raw=False)
    quoted_env = (
        f"failed to read ghost.env: line 9: unexpected character in "
        f"mail__options__auth__pass='{value}' (was {old.reveal()!r}; {json.dumps(value)})"
    )
    session.fail(r"docker compose -p ghost up", quoted_env)
    monkeypatch.setattr(remote, "Session", lambda target: session)
    monkeypatch.setattr(Applier, "probe_deadline", 0)
    ran = run_cli(tmp_path, "apply", "-i", INV, "-y")
    assert ran.code == 1, ran.err
    assert "ghost: recreate" in ran.err
    journal = " ".join(session.ran(r">> /opt/vpsctl/journal.log"))
    for secret in (value, old.reveal()):
        assert_hidden(secret, ran.out, ran.err, journal)
    assert "<redacted>" in ran.err  # it was there, and masked


@pytest.mark.parametrize("value", HOSTILE_EXAMPLES)
def test_restore_failure_masks_what_restic_quotes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """The box's backup script fails quoting the repository password: `vpsctl restore`
    says what failed and shows no secret."""
    secrets = golden_prod_copy(tmp_path) / INV / "secrets.env"
    write_secret(secrets, secrets.read_text(), TARGET, value, raw=False)
    spec = load_spec(tmp_path / INV)
    desired = render_spec(spec)
    password = spec.secret("RESTIC_PASSWORD")
    assert password is not None
    session = converged_session(tmp_path)
    session.answer(
        r"^sha256sum",
        stdout="".join(f"{desired.files[p].sha256}  {p}\n" for p in desired.host_files),
    )
    session.fail(
        "^" + re.escape(recovery.SCRIPT) + " ",
        f"Fatal: unable to open repository with password {password.reveal()!r}; env: "
        f"GHOST_SMTP_PASSWORD={value}\n",
    )
    monkeypatch.setattr(recovery, "Session", lambda target: session)
    ran = run_cli(tmp_path, "restore", "-i", INV, "-y")
    assert ran.code == 1
    assert ran.err.startswith("vpsctl: ") or "failed" in ran.err, ran.err
    for secret in (value, password.reveal()):
        assert_hidden(secret, ran.out, ran.err)
    assert "<redacted>" in ran.err
