"""pydantic's validation errors, restated for the operator: where, and what would be valid."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Union

from pydantic import BaseModel, StringConstraints, ValidationError
from pydantic_core import ErrorDetails

from vpsctl.errors import Problem, is_secret, masked
from vpsctl.spec.models import EnvKey, SecretName
from vpsctl.spec.yamlsource import YamlDoc


def problems_from(exc: ValidationError, doc: YamlDoc, root: type[BaseModel]) -> list[Problem]:
    """One :class:`Problem` per pydantic error of validating ``doc.data`` as ``root``.

    An input that may be a secret pasted where a name belongs (any input of a secret-name
    or variable-name field or key, and any input holding a loaded secret value) is never
    echoed, neither in the message nor as a key of the path: its length stands in for it.
    """
    out: list[Problem] = []
    for err in exc.errors():
        loc = _loc(err)
        hidden = _may_be_secret(err, root)
        line, path = doc.locate(loc)
        if hidden:
            key_at = _key_position(err)
            if key_at is not None:  # the path stops at the mapping; the line is the key's
                path = doc.locate(loc[:key_at])[1]
        out.append(Problem(doc.file, line, path, _message(err, root, hidden)))
    return out


# Fields and keys whose input is a NAME (of a secret, of a variable): the place a secret's
# value lands when pasted on the wrong side of `NAME: value`.
_NAME_PATTERNS = frozenset(
    m.pattern
    for name_type in (SecretName, EnvKey)
    for m in typing.get_args(name_type)[1:]
    if isinstance(m, StringConstraints)
)


def _may_be_secret(err: ErrorDetails, root: type[BaseModel]) -> bool:
    """Whether the input of ``err`` must not be echoed."""
    value = err["input"]
    if err["type"] == "extra_forbidden":
        value = err["loc"][-1]
    if isinstance(value, str) and (is_secret(value) or masked(value) != value):
        return True
    if err["type"] == "extra_forbidden":
        return False  # a typo of a key: naming it is the point
    pattern = (err.get("ctx") or {}).get("pattern")
    if pattern is not None:
        return pattern in _NAME_PATTERNS
    return any(
        isinstance(m, StringConstraints) and m.pattern in _NAME_PATTERNS
        for _tp, meta in _walk(root, tuple(err["loc"]))[0]
        for m in meta
    )


def _key_position(err: ErrorDetails) -> int | None:
    """Where in ``loc`` a mapping key that is the input itself sits, if it is one."""
    loc = tuple(err["loc"])
    if loc and loc[-1] == "[key]":
        return len(loc) - 2
    if err["type"] == "extra_forbidden":
        return len(loc) - 1
    return None


def _hidden_shown(value: Any) -> str:
    """How a message refers to an input it must not echo."""
    if isinstance(value, str):
        return f"a value of {len(value)} characters (not shown: it may be a secret)"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"a number of {len(str(value))} digits (not shown: it may be a secret)"
    return _shown(value)


def _loc(err: ErrorDetails) -> tuple[Any, ...]:
    """Where the error is; a bad union tag points at the tag field when it is present."""
    field = (err.get("ctx") or {}).get("field")
    if field is not None and isinstance(err["input"], dict) and field in err["input"]:
        return (*err["loc"], field)
    return tuple(err["loc"])


def _message(err: ErrorDetails, root: type[BaseModel], hidden: bool = False) -> str:
    kind = err["type"]
    loc = tuple(err["loc"])
    shown = _hidden_shown(err["input"]) if hidden else _shown(err["input"])
    if kind == "extra_forbidden":
        valid = _keys_at(root, loc[:-1])
        key = str(loc[-1])
        close = difflib.get_close_matches(key, valid, n=1) if not hidden else []
        hint = f"did you mean '{close[0]}'? " if close else ""
        what = f" ({len(key)} characters, not shown: it holds a secret value)" if hidden else ""
        return f"unknown key{what}; {hint}valid keys here: {', '.join(valid)}"
    if kind == "missing":
        return "required key is missing"
    if kind == "string_pattern_mismatch":
        description = _description_at(root, loc)
        expected = description or f"a value matching {err.get('ctx', {}).get('pattern')}"
        if hidden and err.get("ctx", {}).get("pattern") == _SECRET_NAME_PATTERN:
            expected += " (a secret's NAME goes here; its value goes in secrets.env)"
        return f"{shown} is not valid: expected {expected}"
    msg = err["msg"]
    if hidden:
        # pydantic's own messages may quote the input; ours say only what was expected
        return f"{shown} is not valid: {_expected(err, root)}"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"{msg} (got {shown})"
    return msg


_SECRET_NAME_PATTERN = next(
    m.pattern for m in typing.get_args(SecretName)[1:] if isinstance(m, StringConstraints)
)


def _expected(err: ErrorDetails, root: type[BaseModel]) -> str:
    description = _description_at(root, tuple(err["loc"]))
    if description:
        return f"expected {description}"
    return f"expected {err['type'].removesuffix('_type').replace('_', ' ')}"


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…'"


Typed = tuple[Any, tuple[Any, ...]]  # a type and the Annotated metadata it came with


def _unwrap(tp: Any, meta: tuple[Any, ...] = ()) -> list[Typed]:
    """The concrete types a field annotation may hold (Optional and unions flattened)."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0], meta + tuple(tp.__metadata__))
    if origin in (Union, types.UnionType):
        out: list[Typed] = []
        for arg in typing.get_args(tp):
            out.extend(_unwrap(arg, meta))
        return out
    return [(tp, meta)]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _walk(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[list[Typed], str | None]:
    """The types at ``loc``, and the description of the last field or key type on the way."""
    current: list[Typed] = [(root, ())]
    description: str | None = None
    for index, elem in enumerate(loc):
        if elem == "[key]":
            continue  # handled with the key before it
        # pydantic locates a bad mapping key as (…, the key, "[key]"): the key's own type
        is_key = index + 1 < len(loc) and loc[index + 1] == "[key]"
        nxt: list[Typed] = []
        is_tag = isinstance(elem, str) and elem.startswith("<")
        for tp, _meta in current:
            origin: Any = typing.get_origin(tp)
            if _is_model(tp):
                if is_tag:
                    if _tag_matches(tp, elem):
                        nxt.append((tp, ()))
                elif elem in tp.model_fields:
                    info = tp.model_fields[elem]
                    description = info.description or description
                    nxt.extend(_unwrap(info.annotation, tuple(info.metadata)))
            elif origin is dict:
                key_tp, value_tp = typing.get_args(tp)
                nxt.extend(_unwrap(key_tp) if is_key else _unwrap(value_tp))
            elif origin is list:
                nxt.extend(_unwrap(typing.get_args(tp)[0]))
        for _tp, meta in nxt:
            for item in meta:
                if getattr(item, "description", None):
                    description = str(item.description)
        current = nxt
    return current, description


def _tag_matches(model: type[BaseModel], tag: str) -> bool:
    value = tag[1:-1]
    kind = model.model_fields.get("kind")
    if kind is not None:
        return value in typing.get_args(kind.annotation)
    return value in model.model_fields


def _keys_at(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    keys: list[str] = []
    for tp, _meta in _walk(root, loc)[0]:
        if _is_model(tp):
            keys.extend(k for k in tp.model_fields if k not in keys)
    return keys


def _description_at(root: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    return _walk(root, loc)[1]
