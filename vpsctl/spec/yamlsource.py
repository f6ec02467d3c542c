"""YAML files as plain data plus the line of every node, so errors point at the user's file.

ruamel.yaml's round-trip loader is a safe loader (it never constructs arbitrary Python
objects) that also records the line and column of every key and item. We convert its tree
to plain ``dict``/``list``/scalars for pydantic and keep a map from each node's path to its
line. Any explicit tag (``!!python/object``, ``!foo``) is refused: a spec is plain data.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from vpsctl.errors import Problem, display_path

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class YamlDoc:
    """A loaded YAML file: its plain data and the 1-based line of every node by path.

    Parsed documents are cached by content and shared: treat ``data`` as read-only.
    """

    file: str
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

    def locate(self, loc: tuple[Any, ...]) -> tuple[int, str]:
        """Map a pydantic-style ``loc`` to (line, dotted path) in this file.

        Elements of ``loc`` that are union tags (written ``<name>`` by our models) are
        skipped. An element that is not in the data (a missing key) still appears in the
        dotted path; the line is then the one of its parent.
        """
        node: Any = self.data
        walked: list[str | int] = []
        line = self.lines.get((), 1)
        descending = True
        for elem in loc:
            if isinstance(elem, str) and (
                (elem.startswith("<") and elem.endswith(">")) or elem == "[key]"
            ):
                continue
            walked.append(elem)
            if not descending:
                continue
            in_map = isinstance(node, dict) and elem in node
            in_seq = isinstance(node, list) and isinstance(elem, int) and 0 <= elem < len(node)
            if in_map or in_seq:
                node = node[elem]
            else:
                descending = False
                continue
            line = self.lines.get(tuple(walked), line)
        return line, dotted(walked)

    def problem(self, loc: tuple[Any, ...], message: str) -> Problem:
        """A :class:`Problem` at ``loc`` of this file."""
        line, path = self.locate(loc)
        return Problem(self.file, line, path, message)


def dotted(loc: tuple[str | int, ...] | list[str | int]) -> str:
    """``("services", "app", "volumes", 0)`` → ``services.app.volumes[0]``."""
    out = ""
    for elem in loc:
        if isinstance(elem, int):
            out += f"[{elem}]"
        else:
            out += f".{elem}" if out else str(elem)
    return out


class _Refused(Exception):
    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def load_yaml(path: Path) -> tuple[YamlDoc | None, list[Problem]]:
    """Load ``path``; return the document, or ``None`` and the problems that stopped it."""
    shown = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [Problem(shown, 0, "", "file not found")]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(shown, 0, "", f"cannot read: {exc.__class__.__name__}: {exc}")]
    return parse_yaml(text, shown)


@lru_cache(maxsize=128)
def _parse_cached(text: str, shown: str) -> tuple[YamlDoc | None, tuple[Problem, ...]]:
    doc, problems = _parse(text, shown)
    return doc, tuple(problems)


def parse_yaml(text: str, shown: str) -> tuple[YamlDoc | None, list[Problem]]:
    """Parse YAML ``text`` that came from the file named ``shown``.

    ruamel's pure-Python round-trip parser costs ~10 ms per stack file; the same text is
    parsed once per process (``plan`` and ``apply`` load the spec more than once).
    """
    doc, problems = _parse_cached(text, shown)
    return doc, list(problems)


def _parse(text: str, shown: str) -> tuple[YamlDoc | None, list[Problem]]:
    yaml = YAML(typ="rt")
    try:
        tree = yaml.load(text)
    except DuplicateKeyError as exc:
        return None, [_duplicate_key(text, shown, exc)]
    except MarkedYAMLError as exc:
        return None, [_malformed(shown, exc)]
    except YAMLError as exc:
        return None, [Problem(shown, 0, "", f"malformed YAML: {exc}")]
    lines: dict[Loc, int] = {(): 1}
    try:
        data = _plain(tree, (), lines, _Source(text.splitlines(), None))
    except _Refused as refused:
        line = lines.get(refused.loc, 1)
        return None, [Problem(shown, line, dotted(refused.loc), refused.message)]
    if isinstance(tree, CommentedMap) and tree:
        lines[()] = tree.lc.key(next(iter(tree)))[0] + 1  # the first key, not a comment above it
    return YamlDoc(file=shown, data={} if data is None else data, lines=lines), []


def _malformed(shown: str, exc: MarkedYAMLError) -> Problem:
    # The context mark is where the broken construct began (an unclosed `{`); the problem
    # mark is where the parser gave up, often lines later.
    mark = exc.context_mark or exc.problem_mark
    line = mark.line + 1 if mark is not None else 0
    what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
    context, problem = exc.context_mark, exc.problem_mark
    if context is not None and problem is not None and problem.line != context.line:
        what += f" (line {problem.line + 1})"
    return Problem(shown, line, "", f"malformed YAML: {what}")


def _duplicate_key(text: str, shown: str, exc: DuplicateKeyError) -> Problem:
    match = re.search(r'found duplicate key "(.*?)"', str(exc.problem))
    key = match.group(1) if match else "?"
    second = exc.problem_mark.line + 1 if exc.problem_mark is not None else 0
    start = exc.context_mark.line if exc.context_mark is not None else -1
    # Parse again, keeping the first occurrence, to name the mapping and the first line.
    lenient = YAML(typ="rt")
    lenient.allow_duplicate_keys = True
    found = _find_mapping(lenient.load(text), (), start, key)
    if found is None:
        return Problem(shown, second, "", f'duplicate key "{key}"; every key may appear once')
    loc, first = found
    return Problem(
        shown,
        second,
        dotted((*loc, key)),
        f'duplicate key "{key}" (first on line {first}); every key may appear once',
    )


def _find_mapping(node: Any, loc: Loc, start: int, key: str) -> tuple[Loc, int] | None:
    if isinstance(node, CommentedMap):
        if node.lc.line == start and key in node:
            return loc, node.lc.key(key)[0] + 1
        children: list[tuple[str | int, Any]] = list(node.items())
    elif isinstance(node, CommentedSeq):
        children = list(enumerate(node))
    else:
        return None
    for name, child in children:
        found = _find_mapping(child, (*loc, name), start, key)
        if found is not None:
            return found
    return None


@dataclass(frozen=True)
class _Source:
    """The source lines, and where the current scalar starts (for its literal text)."""

    lines: list[str]
    pos: tuple[int, int] | None

    def at(self, pos: tuple[int, int]) -> _Source:
        return _Source(self.lines, pos)

    def token(self) -> str | None:
        if self.pos is None or self.pos[0] >= len(self.lines):
            return None
        match = re.match(r"[^\s,\]}#]+", self.lines[self.pos[0]][self.pos[1] :])
        return match.group(0) if match else None


def _plain(node: Any, loc: Loc, lines: dict[Loc, int], src: _Source) -> Any:
    tag = getattr(node, "tag", None)
    if tag is not None and getattr(tag, "value", None):
        raise _Refused(loc, f"YAML tags are not allowed (found {tag.value}); write plain data")
    if isinstance(node, CommentedMap):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise _Refused(loc, f"keys must be strings, got {type(key).__name__}")
            lines[(*loc, key)] = node.lc.key(key)[0] + 1
            out[key] = _plain(value, (*loc, key), lines, src.at(node.lc.value(key)))
        return out
    if isinstance(node, CommentedSeq):
        items: list[Any] = []
        for index, value in enumerate(node):
            lines[(*loc, index)] = node.lc.item(index)[0] + 1
            items.append(_plain(value, (*loc, index), lines, src.at(node.lc.item(index))))
        return items
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        written = src.token()
        if written is not None and written != str(float(node)):
            raise _Refused(
                loc,
                f"{written} is read as the number {float(node)}; quote it if you mean a string",
            )
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, dt.date | dt.datetime):
        raise _Refused(loc, "this is read as a date; quote it if you mean a string")
    raise _Refused(loc, f"unsupported YAML value of type {type(node).__name__}")
