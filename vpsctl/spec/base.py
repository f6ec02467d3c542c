"""Shared pieces of every spec model: strictness and tagged unions that errors can locate."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Discriminator


class Model(BaseModel):
    """Base of every spec model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)


def tag(value: str) -> str:
    """The union tag of ``value``: bracketed so error locations can tell it from a key."""
    return f"<{value}>"


def discriminator(field: str, values: Iterable[str], what: str) -> Discriminator:
    """A discriminator on ``field`` whose error names the valid values.

    Returns ``tag(value)`` for a known value (see :func:`tag`), so that a pydantic error
    ``loc`` through the union holds ``<value>``, which :meth:`YamlDoc.locate` skips.
    """
    known = sorted(values)

    def pick(data: Any) -> str | None:
        value = data.get(field) if isinstance(data, dict) else getattr(data, field, None)
        return tag(value) if isinstance(value, str) and value in known else None

    return Discriminator(
        pick,
        custom_error_type="invalid_kind",
        custom_error_message=f"{what}: `{field}` must be one of {', '.join(known)}",
        custom_error_context={"field": field},
    )


def presence_discriminator(keys: Iterable[str], what: str) -> Discriminator:
    """A discriminator that picks the union member by which one of ``keys`` is present."""
    known = list(keys)

    def pick(data: Any) -> str | None:
        if isinstance(data, dict):
            present = [k for k in known if k in data]
            return tag(present[0]) if len(present) == 1 else None
        for k in known:
            if getattr(data, k, None) is not None:
                return tag(k)
        return None

    return Discriminator(
        pick,
        custom_error_type="invalid_kind",
        custom_error_message=f"{what}: give exactly one of {', '.join(known)}",
    )
