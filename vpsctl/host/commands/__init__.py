"""Commands as data: every shell command vpsctl's apply, recovery and app steps send to the
box is built here, by small functions grouped by what they drive (like Kamal's
``commands/*.rb``): :mod:`.compose`, :mod:`.docker`, :mod:`.caddy`, :mod:`.files`,
:mod:`.systemd`, :mod:`.backup`, :mod:`.swarm`. The orchestrators (the Applier, recovery)
only sequence these builders and a session; unit tests (``tests/test_commands.py``, and
``tests/test_swarm.py`` for the swarm's) assert the exact text.

A builder returns one of two things:

- an :data:`Argv` (a list of words), the default: :func:`join` quotes every word, so a
  hostile stack, service or path name is one word on the box, whatever it holds;
- a :class:`Script`, only when the command needs the shell itself: a loop over services or
  paths, a pipeline, ``cd DIR && …``, ``||``, a redirection. Its builder quotes every word it
  puts in (:func:`words`, :func:`chain`), so the same holds.

:func:`join` is the one place an argv list becomes the line the session sends
(:func:`vpsctl.host.remote.shell` hands every command to it).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence

Argv = list[str]


class Script(str):
    """A shell command line that needs the shell (a loop, a pipeline, ``&&``, a redirection),
    built only from words its builder quoted. A ``str``: a session sends it as it is."""

    __slots__ = ()


def join(command: str | Sequence[str]) -> str:
    """The line the session sends: a :class:`Script` (or any string) as it is, an argv list
    with every word quoted (``shlex.join``)."""
    return command if isinstance(command, str) else shlex.join(command)


def words(items: Iterable[str]) -> str:
    """``items`` as shell words, each quoted, space-separated (for a ``for x in …`` list)."""
    return " ".join(shlex.quote(item) for item in items)


def chain(*commands: Sequence[str]) -> Script:
    """Argv lists run one after the other, each only when the one before succeeded (``&&``)."""
    return Script(" && ".join(shlex.join(argv) for argv in commands))
