"""The one jinja2 environment the core renders with.

Decision (issue 12, "the core is pure"): the templates are vpsctl's own program text, not
the environment. They ship with vpsctl like its Python modules (:func:`vpsctl.resources.shipped`)
and never vary per studio or per machine, so loading them counts, for the core's purity, as
importing code: they are located and compiled lazily, once per process (the environment is
cached, jinja2 caches each template). Everything that does vary — a studio's config files,
stand-in tags, sandbox addresses, the sandbox's CA — reaches the core only as data
(:class:`vpsctl.core.render.RenderInputs`). ``StrictUndefined``: a missing value is an error,
never an empty string.
"""

from __future__ import annotations

import json
import shlex
from functools import cache
from typing import Any

import jinja2

from vpsctl.resources import shipped


def _q(value: Any) -> str:
    """A compose-safe YAML scalar: JSON (a subset of YAML) with ``$`` doubled."""
    return json.dumps(_dollars(value), ensure_ascii=False)


def _dollars(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, list):
        return [_dollars(v) for v in value]
    return value


@cache
def environment() -> jinja2.Environment:
    """The environment over vpsctl's shipped ``templates/`` (filters ``q``: compose-safe
    scalar, ``sh``: shell-quoted)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(shipped("templates")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - YAML, env files, shell and a Caddyfile, not HTML
    )
    env.filters["q"] = _q
    env.filters["sh"] = lambda value: shlex.quote(str(value))
    return env
