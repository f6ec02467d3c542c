"""The scripts vpsctl runs on the box, as templates in one place: ``templates/box/``.

The facts read, the audit's read (its host checks, Ghost's Content API and sitemap, first
launches), the probes through Caddy and the Pebble roots they trust are jinja2 templates that
only lay the script out: every decision is made in Python, which hands the templates plain
values. Every value that lands in a shell word goes through the ``sh`` filter
(``shlex.quote``); undefined values are errors (StrictUndefined). ``tests/test_box_scripts.py``
renders each one and runs ``shellcheck`` on it. What the scripts print is read by
:mod:`vpsctl.core.sections`.

The backup script is a template too, under ``templates/backup/`` next to the units it
ships with (rendered into a file by :mod:`vpsctl.core.backupfiles`); the firewall script is
``templates/vpsctl-firewall.sh.j2`` (:mod:`vpsctl.core.firewall`).
"""

from __future__ import annotations

import functools
import shlex
from typing import TYPE_CHECKING, Any

from vpsctl.resources import shipped

if TYPE_CHECKING:
    import jinja2

BOX = "box"  # the directory under templates/

FACTS = "facts.sh.j2"
AUDIT = "audit.sh.j2"
GHOST = "ghost.sh.j2"
FIRST_LAUNCH = "first-launch.sh.j2"
PROBES = "probes.sh.j2"
ACME_ROOTS = "acme-roots.sh.j2"
ALL = (FACTS, AUDIT, GHOST, FIRST_LAUNCH, PROBES, ACME_ROOTS)


@functools.cache
def _environment() -> jinja2.Environment:
    # imported here: jinja2 is only needed once a script is sent, never to validate a spec
    import jinja2  # noqa: PLC0415

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(shipped("templates") / BOX),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,  # a {% %} line leaves no line behind: one shell line per line
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - shell scripts, not HTML
    )
    env.filters["sh"] = lambda value: shlex.quote(str(value))
    return env


def render(name: str, **values: Any) -> str:
    """The script ``templates/box/NAME`` filled in with ``values``. Templates are loaded once
    (jinja2 caches them in the environment)."""
    return _environment().get_template(name).render(**values)
