"""YAML files as plain data plus the line of every node, so errors point at the user's file.

ruamel.yaml's round-trip loader is a safe loader (it never constructs arbitrary Python
objects) that also records the line and column of every key and item. We convert its tree
to plain ``dict``/``list``/scalars for pydantic and keep a map from each node's path to its
line. A spec is plain data: an explicit tag (``!!python/object``, ``!foo``), an anchor or
alias (``&x``, ``*x``), a merge key (``<<``) or nesting deeper than :data:`MAX_DEPTH` is
refused while the file is composed, before any of it is built: an alias bomb of a few hundred
bytes, or a hundred thousand ``[``, costs no more than reading its first lines.
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
from ruamel.yaml.composer import Composer
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, ScalarEvent
from ruamel.yaml.nodes import MappingNode, ScalarNode
from ruamel.yaml.parser import Parser
from ruamel.yaml.scanner import Scanner

from vpsctl.errors import Problem, display_path

Loc = tuple[str | int, ...]

MAX_DEPTH = 64
"""How deeply mappings and lists may nest; a spec needs five or six levels."""

MAX_NUMBER = 100
"""The longest number, in characters: Python refuses to read ints over 4300 digits."""


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
    """``("services", "app", "volumes", 0)`` → ``services.app.volumes[0]``.

    A key that is empty or holds whitespace or an unprintable character is shown quoted
    (``stacks['edge\\n']``): an error stays one line, and shows what is wrong with the key.
    """
    out = ""
    for elem in loc:
        if isinstance(elem, int):
            out += f"[{elem}]"
        elif not elem or not elem.isprintable() or any(c.isspace() for c in elem):
            out += f"[{elem!r}]"
        else:
            out += f".{elem}" if out else str(elem)
    return out


class _Refused(Exception):
    def __init__(self, loc: Loc, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message
        self.line = line


class _TooDeep(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


_TOO_DEEP = (
    f"nested more than {MAX_DEPTH} levels deep; a spec needs only a few "
    "(look for unclosed brackets)"
)


class _PlainScanner(Scanner):
    """ruamel's scanner, stopping at the first ``[`` or ``{`` nested too deeply.

    The scanner reads up to 1024 characters ahead of the composer, and in a run of ``[``
    each one is a pending key it re-checks at every step: without this, ``[[[[…`` costs
    seconds before the composer's own depth limit is reached.
    """

    def fetch_flow_collection_start(self, TokenClass: Any, to_push: str) -> None:
        if self.flow_level >= MAX_DEPTH:
            raise _TooDeep(self.reader.get_mark().line + 1)
        super().fetch_flow_collection_start(TokenClass, to_push)


class _PlainComposer(Composer):
    """ruamel's composer, refusing what plain data never needs before anything is built.

    Refusing here (not after loading) matters: ruamel shares an aliased node, and a walk
    over the loaded tree expands every alias, exponentially in a file's size. Checking
    depth here also keeps ruamel's recursive composer and constructor, and :func:`_plain`,
    far from Python's recursion limit.
    """

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self._locs: list[Loc] = []

    def compose_node(self, parent: Any, index: Any) -> Any:
        loc = self._loc_of(parent, index)
        try:
            event = self.parser.peek_event()
        except _TooDeep as deep:
            raise _Refused(loc[:1], _TOO_DEEP, deep.line) from None
        line = event.start_mark.line + 1
        if isinstance(event, AliasEvent):
            raise _Refused(loc, _ALIASES.format(f"*{event.anchor}"), line)
        if event.anchor is not None:
            raise _Refused(loc, _ALIASES.format(f"&{event.anchor}"), line)
        if event.ctag is not None:
            raise _Refused(
                loc, f"YAML tags are not allowed (found {event.ctag}); write plain data", line
            )
        if parent is None and self.loader.version not in (None, (1, 2)):
            version = ".".join(str(part) for part in self.loader.version)
            raise _Refused(
                loc,
                f"a %YAML {version} directive changes how values are read (in YAML 1.1, yes "
                "is true and 1:30 is 90); remove it: spec files are YAML 1.2",
                1,
            )
        if isinstance(event, ScalarEvent):
            self._check_scalar(event, loc, line)
        is_key = isinstance(parent, MappingNode) and index is None
        if (
            is_key
            and isinstance(event, ScalarEvent)
            and event.style is None
            and event.value == "<<"
        ):
            raise _Refused(
                loc,
                "YAML merge keys (<<) are not allowed: a spec is plain data; "
                "write the keys out in full",
                line,
            )
        if len(self._locs) >= MAX_DEPTH:
            raise _Refused(loc[:1], _TOO_DEEP, line)
        self._locs.append(loc)
        try:
            return super().compose_node(parent, index)
        except _TooDeep as deep:
            raise _Refused(loc[:1], _TOO_DEEP, deep.line) from None
        finally:
            self._locs.pop()

    def _check_scalar(self, event: ScalarEvent, loc: Loc, line: int) -> None:
        try:
            event.value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Refused(
                loc,
                "holds an escaped lone surrogate (\\ud800-\\udfff), which is not a character",
                line,
            ) from None
        if event.style is None and len(event.value) > MAX_NUMBER:
            tag = str(self.resolver.resolve(ScalarNode, event.value, event.implicit))
            if tag.endswith((":int", ":float")):
                raise _Refused(
                    loc,
                    f"a number {len(event.value)} characters long; no field takes one "
                    "(quote it if you mean a string)",
                    line,
                )

    def _loc_of(self, parent: Any, index: Any) -> Loc:
        if not self._locs:
            return ()
        here = self._locs[-1]
        if isinstance(index, int):
            return (*here, index)
        if isinstance(index, ScalarNode):
            return (*here, str(index.value))
        return here  # a mapping's key: errors about it name the mapping


_ALIASES = (
    "YAML anchors and aliases (found {}) are not allowed: a spec is plain data; "
    "write the value out in full where it is used"
)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    # the plain scanner and parser, not the round-trip ones: those gather every comment
    # (a third of the load time) for a dump we never make; the round-trip constructor still
    # gives every key and item its line
    yaml.Scanner = _PlainScanner
    yaml.Parser = Parser
    yaml.Composer = _PlainComposer
    return yaml


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
    try:
        tree = _yaml().load(text)
    except _Refused as refused:
        return None, [Problem(shown, refused.line or 1, dotted(refused.loc), refused.message)]
    except _TooDeep as deep:  # before the first node: `[[[[…` at the top of the file
        return None, [Problem(shown, deep.line, "", _TOO_DEEP)]
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
    lenient = _yaml()
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
