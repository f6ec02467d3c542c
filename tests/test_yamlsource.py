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


def test_duplicate_key_names_the_second_line() -> None:
    doc, problems = parse_yaml("a: 1\nb: 2\na: 3\n", "f.yaml")
    assert doc is None
    assert [str(p) for p in problems] == [
        'f.yaml:3: found duplicate key "a" with value "3" (original value: "1"); '
        "every key may appear once"
    ]


def test_tags_are_refused() -> None:
    doc, problems = parse_yaml("a:\n  b: !!python/object:os.system ls\n", "f.yaml")
    assert doc is None
    assert len(problems) == 1
    assert problems[0].line == 2
    assert problems[0].path == "a.b"
    assert "YAML tags are not allowed" in problems[0].message


def test_dates_are_not_silently_converted() -> None:
    doc, problems = parse_yaml("when: 2026-01-01\n", "f.yaml")
    assert doc is None
    assert "quote it" in problems[0].message


def test_yaml_12_keeps_yes_a_string_and_empty_is_a_mapping() -> None:
    doc, _ = parse_yaml("a: yes\nb: 0o17\n", "f.yaml")
    assert doc is not None and doc.data == {"a": "yes", "b": 15}
    empty, problems = parse_yaml("", "f.yaml")
    assert empty is not None and empty.data == {} and not problems


def test_malformed_yaml_has_a_line() -> None:
    doc, problems = parse_yaml("a: [1,\nb: 2\n", "f.yaml")
    assert doc is None
    assert problems[0].line >= 2
    assert problems[0].message.startswith("malformed YAML")


def test_dotted() -> None:
    assert dotted(("a", 0, "b", 2)) == "a[0].b[2]"
    assert dotted(()) == ""
