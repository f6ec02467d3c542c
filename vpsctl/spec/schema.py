"""JSON Schemas of the user's files, for editors (``# yaml-language-server: $schema=…``)."""

from __future__ import annotations

from typing import Any

from vpsctl.spec.models import Host, Stack


def schemas() -> dict[str, dict[str, Any]]:
    """``{"host": …, "stack": …}``: the JSON Schema of host.yaml and of a stack file."""
    out: dict[str, dict[str, Any]] = {}
    for name, model in (("host", Host), ("stack", Stack)):
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://vpsctl.dev/schemas/{name}.schema.json"
        out[name] = schema
    return out
