from __future__ import annotations

from vpsctl.spec.yamlsource import dotted, parse_yaml

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
