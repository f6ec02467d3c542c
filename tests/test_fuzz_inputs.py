"""Fuzz: no mutation of the example studio's files makes vpsctl answer "internal error".

"internal error" is vpsctl's bug report (cli.py's one catch-all), never an answer to input.
Hypothesis mutates one of the sandbox inventory's files — host.yaml, a stack file, or
secrets.env — the way a careless or hostile operator might: flipped and inserted characters,
YAML syntax dropped anywhere (``: [ { & * ! | >- \\t \\x00 \\u2028``), anchors and merge keys,
deep nesting, huge numbers, Unicode, duplicated and removed lines, a value replaced by a
list, a mapping, null, a boolean, a float, an int or a very long string, and truncation.
Then ``vpsctl validate`` runs in-process: it must exit 0 or 1 and never print "internal
error"; when the spec is still valid, ``vpsctl show`` must too. No secret may be printed
either (``run_cli`` checks every output for every secrets.env value).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dotenv import dotenv_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import Result, copy_studio
from vpsctl.cli.main import main
from vpsctl.spec.generate import generate

INVENTORY = "inventory/sandbox"

SYNTAX = [
    ": ",
    ":",
    "[",
    "]",
    "{",
    "}",
    ",",
    "&a ",
    "*a",
    "&a [1, 2]",
    "*a\n",
    "!",
    "!!str ",
    "!!int ",
    "!!float ",
    "!!binary ",
    "!!timestamp ",
    "!!set ",
    "!!omap ",
    "!foo ",
    "|",
    "|-\n",
    ">-",
    ">+\n",
    "\t",
    "\x00",
    "\u2028",
    "\u2029",
    "\x85",
    "\ufeff",
    "\r",
    "\r\n",
    "- ",
    "? ",
    "#",
    "'",
    '"',
    "\\",
    "%YAML 1.1\n",
    "%TAG ! tag:x,2000:\n",
    "---\n",
    "...\n",
    "<<: ",
    "<<: *a\n",
    "<<: {a: 1}\n",
    "~",
    "=",
    "$",
    "${X}",
    "{domain.",
    "{secret.",
    "}}",
    "@",
    "\n",
    "\n\n",
    "  ",
    "\n  - ",
    "\n    ",
    "é",
    "\U0001f600",
    "\u200b",
    "\x7f",
    "\x1b[0m",
]
VALUES = [
    "[]",
    "{}",
    "null",
    "~",
    "true",
    "false",
    "yes",
    "1.5",
    "-0.0",
    "42",
    "-1",
    "0",
    "0x1F",
    "0o17",
    "1e309",
    "-1e309",
    ".inf",
    "-.inf",
    ".nan",
    "9" * 5000,
    "9" * 30,
    "-" + "9" * 4400,
    "1" + "0" * 20 + "g",
    "2026-01-01",
    "2026-01-01T00:00:00Z",
    "12:30:00",
    '"' + "x" * 20000 + '"',
    "[a, [b, {c: d}]]",
    "{a: 1, b: [2, 3]}",
    "[[[]]]",
    "{a: {b: {c: {}}}}",
    '"\\n"',
    '"\\u2028"',
    '"a\\nb"',
    "'x\ny'",
    "|\n  line\n",
    ">-\n  folded\n",
    "!!python/object:os.system x",
    "&x 1",
    "*x",
    '"/data/../../etc/shadow"',
    '"../../secrets.env"',
    '"ghost:6.65.0\\n"',
    '"10s\\n"',
    '"app.example.com\\n"',
    "[" * 200 + "]" * 200,
    "{a: " * 200 + "1" + "}" * 200,
]
ENV_LINES = [
    "",
    "=",
    "A=",
    "A",
    "lower=x",
    "A B=x",
    "A=x y",
    "A='x",
    'A="x',
    "A=x\\",
    "export A=x",
    "A=${B}",
    "A=$B",
    "# comment",
    " A=x",
    "A =x",
    "A= x",
    "A=x#y",
    "A='x'y",
    "A=\x00",
    "A=\u2028",
    "A=" + "x" * 10000,
    "\ufeffA=x",
    "A=é",
    "A=\\n",
    "A=\r",
]


@dataclass(frozen=True)
class Mutation:
    """One edit of a file's text, at a position given as a fraction of its length."""

    kind: str
    at: float
    text: str = ""
    length: int = 0


def _line_bounds(text: str, at: float) -> tuple[int, int]:
    lines = text.split("\n")
    index = min(int(at * len(lines)), len(lines) - 1)
    start = sum(len(line) + 1 for line in lines[:index])
    return start, start + len(lines[index])


def apply(text: str, mutation: Mutation) -> str:
    """``text`` with ``mutation`` applied."""
    pos = min(int(mutation.at * len(text)), len(text))
    start, end = _line_bounds(text, mutation.at)
    line = text[start:end]
    match mutation.kind:
        case "insert":
            return text[:pos] + mutation.text + text[pos:]
        case "replace_chars":
            return text[:pos] + mutation.text + text[pos + mutation.length :]
        case "delete_chars":
            return text[:pos] + text[pos + mutation.length :]
        case "truncate":
            return text[:pos]
        case "remove_line":
            return text[:start] + text[end + 1 :]
        case "duplicate_line":
            return text[:end] + "\n" + line + text[end:]
        case "replace_line":
            return text[:start] + mutation.text + text[end:]
        case "replace_value":
            key, colon, _ = line.partition(": ")
            if not colon:
                key, colon, _ = line.partition("=")  # secrets.env
                colon = colon and "="
            if not colon:
                return text[:start] + line + " " + mutation.text + text[end:]
            return text[:start] + key + colon + mutation.text + text[end:]
        case "nest":
            return text[:pos] + mutation.text * mutation.length + text[pos:]
    raise AssertionError(mutation.kind)


fractions = st.floats(0, 1, allow_nan=False)
mutations = st.one_of(
    st.builds(Mutation, st.just("insert"), fractions, st.sampled_from(SYNTAX)),
    st.builds(Mutation, st.just("insert"), fractions, st.text(min_size=1, max_size=8)),
    st.builds(
        Mutation,
        st.just("replace_chars"),
        fractions,
        st.sampled_from(SYNTAX) | st.characters(),
        st.integers(1, 3),
    ),
    st.builds(Mutation, st.just("delete_chars"), fractions, st.just(""), st.integers(1, 20)),
    st.builds(Mutation, st.just("truncate"), fractions),
    st.builds(Mutation, st.just("remove_line"), fractions),
    st.builds(Mutation, st.just("duplicate_line"), fractions),
    st.builds(Mutation, st.just("replace_line"), fractions, st.sampled_from(ENV_LINES)),
    st.builds(Mutation, st.just("replace_value"), fractions, st.sampled_from(VALUES)),
    st.builds(
        Mutation,
        st.just("nest"),
        fractions,
        st.sampled_from(["[", "{", "{a: ", "- ", "[a, ", "\n" + " " * 2]),
        st.integers(2, 400),
    ),
)


@pytest.fixture(scope="module")
def studio() -> Iterator[Path]:
    """A private copy of the example studio with a generated sandbox secrets.env."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(copy_studio(root) / INVENTORY)
        assert run_cli(root, "validate", "-i", INVENTORY).code == 0
        yield root


def targets(root: Path) -> list[str]:
    """The files a mutation may hit, relative to ``root``."""
    stacks = sorted(str(p.relative_to(root)) for p in (root / "stacks").glob("*.yaml"))
    return [f"{INVENTORY}/host.yaml", f"{INVENTORY}/secrets.env", *stacks]


def secret_values(root: Path) -> set[str]:
    """The secrets.env values worth scanning output for, read even from a broken file."""
    text = (root / INVENTORY / "secrets.env").read_bytes().decode("utf-8", "replace")
    values = dotenv_values(stream=io.StringIO(text), interpolate=False).values()
    return {v for v in values if v is not None and len(v) >= 8}


def run_cli(root: Path, *args: str) -> Result:
    """``vpsctl ARGS`` in-process in ``root``; no output may hold a secrets.env value."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(root), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    for value in secret_values(root):
        assert value not in out.getvalue(), "a secret value leaked to stdout"
        assert value not in err.getvalue(), "a secret value leaked to stderr"
    return Result(code, out.getvalue(), err.getvalue())


def check_answers(root: Path) -> None:
    """validate (and show, when valid) answer with a result or user errors, not a bug."""
    result = run_cli(root, "validate", "-i", INVENTORY)
    assert "internal error" not in result.err, result.err
    assert result.code in (0, 1), result
    if result.code == 0:
        shown = run_cli(root, "show", "-i", INVENTORY)
        assert "internal error" not in shown.err, shown.err
        assert shown.code == 0, shown


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), edits=st.lists(mutations, min_size=1, max_size=3))
def test_mutated_files_never_give_an_internal_error(
    studio: Path, data: st.DataObject, edits: list[Mutation]
) -> None:
    name = data.draw(st.sampled_from(targets(studio)), label="file")
    path = studio / name
    original = path.read_bytes()
    text = original.decode()
    for mutation in edits:
        text = apply(text, mutation)
    try:
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        check_answers(studio)
    finally:
        path.write_bytes(original)


@pytest.mark.parametrize(
    "blob",
    [
        b"\xff\xfe not utf-8",
        b"a: \xc3\x28\n",
        b"\x00" * 100,
        b"\xef\xbb\xbfname: x\n",
        b"\xfe\xff\x00n\x00a",
    ],
)
@pytest.mark.parametrize("name", ["host.yaml", "secrets.env", "../../stacks/edge.yaml"])
def test_undecodable_files_never_give_an_internal_error(
    studio: Path, blob: bytes, name: str
) -> None:
    path = studio / INVENTORY / name
    original = path.read_bytes()
    try:
        path.write_bytes(blob)
        check_answers(studio)
    finally:
        path.write_bytes(original)
