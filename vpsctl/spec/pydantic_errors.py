"""pydantic's validation errors, restated for the operator: where, and what would be valid."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Union

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from vpsctl.errors import Problem
from vpsctl.spec.yamlsource import YamlDoc


def problems_from(exc: ValidationError, doc: YamlDoc, root: type[BaseModel]) -> list[Problem]:
    """One :class:`Problem` per pydantic error of validating ``doc.data`` as ``root``."""
    return [doc.problem(_loc(err), _message(err, root)) for err in exc.errors()]


def _loc(err: ErrorDetails) -> tuple[Any, ...]:
    """Where the error is; a bad union tag points at the tag field when it is present."""
    field = (err.get("ctx") or {}).get("field")
    if field is not None and isinstance(err["input"], dict) and field in err["input"]:
        return (*err["loc"], field)
    return tuple(err["loc"])


def _message(err: ErrorDetails, root: type[BaseModel]) -> str:
    kind = err["type"]
    loc = tuple(err["loc"])
    if kind == "extra_forbidden":
        valid = _keys_at(root, loc[:-1])
        key = str(loc[-1])
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"unknown key; {hint}valid keys here: {', '.join(valid)}"
    if kind == "missing":
        return "required key is missing"
    if kind == "string_pattern_mismatch":
        description = _description_at(root, loc)
        expected = description or f"a value matching {err.get('ctx', {}).get('pattern')}"
        return f"{_shown(err['input'])} is not valid: expected {expected}"
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"{msg} (got {_shown(err['input'])})"
    return msg


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
    for elem in loc:
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
                nxt.extend(_unwrap(key_tp) if elem == "[key]" else _unwrap(value_tp))
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
