from __future__ import annotations

import pytest

from vpsctl.spec.yamlsource import MAX_DEPTH, dotted, parse_yaml

DOC = """\
name: x
services:
  app:
    image: a:1
    volumes:
      - {volume: data, target: /data}
      - volume: logs
        target: /logs
"""


def test_lines_of_keys_and_items() -> None:
    doc, problems = parse_yaml(DOC, "f.yaml")
    assert not problems and doc is not None
    assert doc.locate(("name",)) == (1, "name")
    assert doc.locate(("services", "app", "image")) == (4, "services.app.image")
    assert doc.locate(("services", "app", "volumes", 1, "target")) == (
        8,
        "services.app.volumes[1].target",
    )


def test_missing_key_points_at_parent_and_union_tags_are_skipped() -> None:
    doc, _ = parse_yaml(DOC, "f.yaml")
    assert doc is not None
    assert doc.locate(("services", "app", "mem_limit")) == (3, "services.app.mem_limit")
    assert doc.locate(("services", "app", "volumes", 0, "<volume>", "target")) == (
        6,
        "services.app.volumes[0].target",
    )
    assert doc.locate(("services", "[key]")) == (2, "services")


def test_duplicate_key_names_both_lines_and_the_path() -> None:
    doc, problems = parse_yaml("a: 1\nb: 2\na: 3\n", "f.yaml")
    assert doc is None
    assert [str(p) for p in problems] == [
        'f.yaml:3: a: duplicate key "a" (first on line 1); every key may appear once'
    ]
    doc, problems = parse_yaml("s:\n  x:\n    k: 1\n  y: 2\n  x:\n    k: 2\n", "f.yaml")
    assert [str(p) for p in problems] == [
        'f.yaml:5: s.x: duplicate key "x" (first on line 2); every key may appear once'
    ]


def test_tags_are_refused() -> None:
    doc, problems = parse_yaml("a:\n  b: !!python/object:os.system ls\n", "f.yaml")
    assert doc is None
    assert len(problems) == 1
    assert problems[0].line == 2
    assert problems[0].path == "a.b"
    assert "YAML tags are not allowed" in problems[0].message
    for text in ("a: !!python/object/apply:os.system [x]\n", "a: !!python/object:X {k: 1}\n"):
        doc, problems = parse_yaml(text, "f.yaml")
        assert doc is None and problems[0].path == "a", text


def test_dates_are_not_silently_converted() -> None:
    doc, problems = parse_yaml("when: 2026-01-01\n", "f.yaml")
    assert doc is None
    assert "quote it" in problems[0].message


def test_yaml_12_keeps_yes_a_string_and_empty_is_a_mapping() -> None:
    doc, _ = parse_yaml("a: yes\nb: 0o17\n", "f.yaml")
    assert doc is not None and doc.data == {"a": "yes", "b": 15}
    empty, problems = parse_yaml("", "f.yaml")
    assert empty is not None and empty.data == {} and not problems


def test_malformed_yaml_points_at_where_the_construct_began() -> None:
    doc, problems = parse_yaml("a: [1,\nb: 2\n", "f.yaml")
    assert doc is None
    assert problems[0].line == 1  # the unclosed `[`, not where the parser gave up
    assert problems[0].message.startswith("malformed YAML: while parsing a flow sequence")
    assert problems[0].message.endswith("(line 3)")


def test_numbers_that_lose_their_spelling_are_refused() -> None:
    doc, problems = parse_yaml("v: 2.10\nw: [1e3]\nok: 2.5\n", "f.yaml")
    assert doc is None
    assert str(problems[0]) == (
        "f.yaml:1: v: 2.10 is read as the number 2.1; quote it if you mean a string"
    )
    doc, problems = parse_yaml("ok: 2.5\nalso: [0.25, 3]\n", "f.yaml")
    assert doc is not None and doc.data == {"ok": 2.5, "also": [0.25, 3]}


def test_dotted() -> None:
    assert dotted(("a", 0, "b", 2)) == "a[0].b[2]"
    assert dotted(()) == ""
    assert dotted(("stacks", "edge\n", "x")) == "stacks['edge\\n'].x"
    assert dotted(("a", "", "b c")) == "a['']['b c']"


LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)


def test_an_alias_bomb_is_refused_at_its_first_anchor_before_any_expansion() -> None:
    """A billion `lol`s in 400 bytes: expanded, this is gigabytes and minutes."""
    assert len(LAUGHS) < 600 and LAUGHS.count("*h") == 9
    doc, problems = parse_yaml(LAUGHS, "f.yaml")
    assert doc is None
    assert [str(p) for p in problems] == [
        "f.yaml:1: a: YAML anchors and aliases (found &a) are not allowed: a spec is plain "
        "data; write the value out in full where it is used"
    ]


def test_every_anchor_and_alias_is_refused_with_its_line_and_path() -> None:
    cases = {
        "a: 1\nb:\n  - &x {k: 1}\n  - *x\n": (3, "b[0]", "&x"),
        "a: &only 1\n": (1, "a", "&only"),
        "s:\n  k: *undefined\n": (2, "s.k", "*undefined"),
        "? &k key\n: 1\n": (1, "", "&k"),
    }
    for text, (line, path, found) in cases.items():
        doc, problems = parse_yaml(text, "f.yaml")
        assert doc is None, text
        assert (problems[0].line, problems[0].path) == (line, path), text
        assert f"(found {found}) are not allowed" in problems[0].message


def test_merge_keys_are_refused_with_or_without_an_alias() -> None:
    for text in ("a: &b {x: 1}\nc:\n  <<: *b\n", "c:\n  y: 2\n  <<: {x: 1}\n"):
        doc, problems = parse_yaml(text, "f.yaml")
        assert doc is None
        assert problems[0].path in ("a", "c")
    doc, problems = parse_yaml("c:\n  y: 2\n  <<: {x: 1}\n", "f.yaml")
    assert [str(p) for p in problems] == [
        "f.yaml:3: c: YAML merge keys (<<) are not allowed: a spec is plain data; write the "
        "keys out in full"
    ]
    doc, problems = parse_yaml('c: {"<<": 1}\n', "f.yaml")  # quoted: a plain string key
    assert doc is not None and doc.data == {"c": {"<<": 1}} and not problems


def _nested(kind: str, depth: int) -> str:
    if kind == "flow-list":
        return "x: " + "[" * depth + "1" + "]" * depth + "\n"
    if kind == "flow-map":
        return "x: " + "{a: " * depth + "1" + "}" * depth + "\n"
    if kind == "block":
        return "".join("  " * i + "a:\n" for i in range(depth)) + "  " * depth + "1\n"
    return "x:\n" + "".join("  " * i + "-\n" for i in range(1, depth)) + "  " * depth + "- 1\n"


@pytest.mark.parametrize("kind", ["flow-list", "flow-map", "block", "block-list"])
def test_nesting_up_to_the_limit_loads(kind: str) -> None:
    doc, problems = parse_yaml(_nested(kind, MAX_DEPTH - 2), "f.yaml")
    assert doc is not None and not problems


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 400, 5000, 100_000])
@pytest.mark.parametrize("kind", ["flow-list", "flow-map", "block", "block-list"])
def test_deep_nesting_is_a_problem_at_a_line_not_a_recursion_error(kind: str, depth: int) -> None:
    if kind.startswith("block"):
        depth = min(depth, 400)  # the indentation makes the file quadratic in size
    doc, problems = parse_yaml(_nested(kind, depth), "f.yaml")
    assert doc is None
    assert len(problems) == 1
    problem = problems[0]
    assert problem.message.startswith(f"nested more than {MAX_DEPTH} levels deep")
    assert problem.path in ("x", "a")  # the top-level key the nesting is under
    assert 1 <= problem.line <= MAX_DEPTH + 1


@pytest.mark.parametrize("text", ["[" * 100_000, "{" * 100_000, "- [" + "{a: [" * 50_000])
def test_deep_nesting_at_the_top_of_the_file(text: str) -> None:
    doc, problems = parse_yaml(text, "f.yaml")
    assert doc is None
    assert [(p.line, p.message.split(";")[0]) for p in problems] == [
        (1, f"nested more than {MAX_DEPTH} levels deep")
    ]


def test_explicit_tags_are_refused_before_construction() -> None:
    """``!!int "x"`` or ``!!binary`` would otherwise reach ruamel's constructors."""
    for text in ('a: !!int "x"\n', "a: !!binary AAAA\n", "a: !!set {x}\n", "a: ! x\n"):
        doc, problems = parse_yaml(text, "f.yaml")
        assert doc is None, text
        assert problems[0].path == "a"
        assert "YAML tags are not allowed" in problems[0].message
