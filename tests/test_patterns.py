"""Every pattern in the code matches the whole value, never "the value and a newline".

Python's ``$`` matches at the end of the text *and before a final newline*: with
``re.match(r"^[a-z.]+$", name)`` a host name ``"app.example.com\\n"`` passes and then breaks
the Caddyfile. So the code's Python patterns carry no bare ``$``: they are used with
``fullmatch`` (or end in ``\\Z``). The scan below reads every regex literal the code hands to
``re`` (directly, through a module constant, or compiled into a module constant) and fails
naming ``file:line``.

pydantic's ``StringConstraints(pattern=…)`` is the one place ``^…$`` stays: pydantic runs
those patterns on Rust's ``regex`` crate, where ``$`` is the end of the text, and the same
string becomes the JSON Schema's ``pattern`` (ECMAScript, where ``$`` is also the end of the
input, and where ``\\z`` would mean a literal ``z``). That is checked, not assumed: for every
such pattern, values hypothesis draws from it pass pydantic and the same values plus
``"\\n"`` are refused.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Annotated

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import StringConstraints, TypeAdapter, ValidationError

from tests.helpers import ROOT

SOURCES = sorted([*(ROOT / "vpsctl").rglob("*.py"), *(ROOT / "deploys").rglob("*.py")])
RE_FUNCTIONS = {
    "compile",
    "match",
    "fullmatch",
    "search",
    "sub",
    "subn",
    "split",
    "findall",
    "finditer",
}


@dataclass(frozen=True)
class Found:
    """A pattern the code uses: where, which engine, and its text."""

    where: str
    engine: str  # "re" (Python) or "pydantic" (Rust regex)
    pattern: str


def _constants(tree: ast.Module, known: dict[str, str]) -> dict[str, str]:
    """Module-level ``NAME = <string expression>`` assignments that evaluate to a string."""
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name):
            text = _string(value, {**known, **found})
            if text is not None:
                found[target.id] = text
    return found


def _string(node: ast.expr, names: dict[str, str]) -> str | None:
    """The string ``node`` evaluates to, if it is built from literals and known constants."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Constant) and isinstance(node.value, bytes):
        return node.value.decode("latin-1")
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _string(node.left, names), _string(node.right, names)
        return None if left is None or right is None else left + right
    if isinstance(node, ast.JoinedStr):
        parts: list[str] = []
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                if value.conversion != -1 or value.format_spec is not None:
                    return None
                part = _string(value.value, names)
            else:
                part = _string(value, names)
            if part is None:
                return None
            parts.append(part)
        return "".join(parts)
    return None


def _is_re_call(node: ast.Call) -> bool:
    func = node.func
    return (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and func.value.id == "re"
        and func.attr in RE_FUNCTIONS
    )


def _is_pydantic_pattern(node: ast.Call) -> bool:
    name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
    return name in {"StringConstraints", "Field", "constr"}


def patterns() -> list[Found]:
    """Every regex the code passes to Python's ``re`` or to a pydantic ``pattern=``."""
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in SOURCES}
    known: dict[str, str] = {}
    for _ in range(2):  # a constant may be built from another module's constant
        for tree in trees.values():
            known.update(_constants(tree, known))
    found: list[Found] = []
    for path, tree in trees.items():
        names = {**known, **_constants(tree, known)}
        for node, params in _calls(tree):
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if _is_re_call(node) and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Name) and arg.id in params and arg.id not in names:
                    continue  # the user's pattern (a `kind: regex` compile check), not code's
                text = _string(arg, names)
                assert text is not None, f"{where}: a pattern this test cannot read; use a literal"
                found.append(Found(where, "re", text))
            elif _is_pydantic_pattern(node):
                for keyword in node.keywords:
                    if keyword.arg == "pattern":
                        text = _string(keyword.value, names)
                        assert text is not None, (
                            f"{where}: pattern= must be a string (a compiled re.Pattern makes "
                            "pydantic use Python's re, where `$` accepts a trailing newline)"
                        )
                        found.append(Found(where, "pydantic", text))
    return found


def _calls(tree: ast.Module) -> list[tuple[ast.Call, frozenset[str]]]:
    """Every call in ``tree``, with the parameter names of the function it is in."""
    calls: list[tuple[ast.Call, frozenset[str]]] = []

    def visit(node: ast.AST, params: frozenset[str]) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            args = node.args
            every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
            params = params | {a.arg for a in every if a is not None}
        if isinstance(node, ast.Call):
            calls.append((node, params))
        for child in ast.iter_child_nodes(node):
            visit(child, params)

    visit(tree, frozenset())
    return calls


def bare_dollars(pattern: str) -> list[int]:
    """Offsets of every ``$`` in ``pattern`` that is an anchor (not escaped, not in a class)."""
    offsets: list[int] = []
    i, in_class = 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            if char == "]":
                in_class = False
        elif char == "[":
            in_class = True
            # `[]…]` and `[^]…]`: a `]` first in a class is a literal
            if pattern[i + 1 : i + 2] == "^":
                i += 1
            if pattern[i + 1 : i + 2] == "]":
                i += 1
        elif char == "$":
            offsets.append(i)
        i += 1
    return offsets


PATTERNS = patterns()
PYDANTIC = sorted({p.pattern for p in PATTERNS if p.engine == "pydantic"})


def test_the_scan_finds_the_patterns_it_is_about() -> None:
    """The scanner is not blind: it sees the image, host name and duration patterns, the
    compiled constants, and the pydantic ones."""
    wheres = {p.where.split(":")[0] for p in PATTERNS}
    assert {"vpsctl/spec/models.py", "vpsctl/spec/units.py", "vpsctl/spec/secrets.py"} <= wheres
    assert any(p.engine == "re" and "sha256:" in p.pattern for p in PATTERNS)  # the image
    assert any(p.engine == "re" and "ns|us|ms" in p.pattern for p in PATTERNS)  # durations
    assert len(PYDANTIC) >= 10


def test_the_dollar_finder() -> None:
    assert bare_dollars(r"^a+$") == [3]
    assert bare_dollars(r"a|b$|c") == [3]
    assert bare_dollars(r"a\$b") == []
    assert bare_dollars(r"[$]x[^$a]") == []
    assert bare_dollars(r"[]$]") == []
    assert bare_dollars(r"[\]$]$") == [5]
    assert bare_dollars(r"(?=.{1,253}\Z)x") == []


def test_no_python_pattern_has_a_bare_dollar() -> None:
    offenders = [
        f"{p.where}: {p.pattern!r} ends with `$`, which also matches before a final newline; "
        "use re.fullmatch without `$` (or `\\Z`)"
        for p in PATTERNS
        if p.engine == "re" and bare_dollars(p.pattern)
    ]
    assert not offenders, "\n".join(offenders)


def test_no_model_switches_pydantic_to_pythons_re() -> None:
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        assert "python-re" not in text, f"{path.relative_to(ROOT)}: regex_engine='python-re'"


@pytest.mark.parametrize("pattern", PYDANTIC)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_pydantic_patterns_refuse_a_trailing_newline(pattern: str, data: st.DataObject) -> None:
    adapter: TypeAdapter[str] = TypeAdapter(Annotated[str, StringConstraints(pattern=pattern)])
    value = data.draw(st.from_regex(re.compile(pattern), fullmatch=True))
    assert adapter.validate_python(value) == value
    for tail in ("\n", "\r\n"):
        with pytest.raises(ValidationError):
            adapter.validate_python(value + tail)
