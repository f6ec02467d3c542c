"""The one parser of the ``@@`` result lines that vpsctl's box scripts print.

Every script that runs on the box (facts, audit, probes, backup) answers on stdout in the
same shape: a marker line ``@@NAME ARGS…`` opens a section, and the lines up to the next
marker are its body (a base64 payload, JSON lines, a listing). Base64, JSON and the
listings read never start with ``@@``, so a marker is never mistaken for a body line.

The rule for repeated names: nothing is merged. :func:`split` returns every section in the
order the box printed them (``@@file`` and ``@@probe`` repeat once per file or probe);
:func:`first` and :func:`named` pick from that list.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

MARK = "@@"


@dataclass(frozen=True)
class Section:
    """One ``@@NAME ARGS`` line and the lines after it, up to the next marker."""

    name: str  # "" for lines printed before the first marker
    args: str = ""  # the rest of the marker line after ``NAME `` (as printed)
    lines: list[str] = field(default_factory=list)

    @property
    def words(self) -> list[str]:
        """The marker's arguments split on whitespace."""
        return self.args.split()

    @property
    def body(self) -> str:
        """The first body line ("" when there is none): a one-line payload such as base64."""
        return self.lines[0] if self.lines else ""


def split(output: str) -> list[Section]:
    """Every section of ``output`` in order. Lines before the first marker come back as a
    section named "" (only when there are any), so a caller can tell a header that is not
    first."""
    found: list[Section] = []
    preamble: list[str] = []
    body = preamble
    for line in output.splitlines():
        if line.startswith(MARK):
            head, _, args = line[len(MARK) :].partition(" ")
            section = Section(head.strip(), args, [])
            found.append(section)
            body = section.lines
        else:
            body.append(line)
    return ([Section("", "", preamble)] if preamble else []) + found


def first(sections: Iterable[Section], name: str) -> Section | None:
    """The first section called ``name``, or None."""
    return next((s for s in sections if s.name == name), None)


def named(sections: Iterable[Section], name: str) -> list[Section]:
    """Every section called ``name``, in order."""
    return [s for s in sections if s.name == name]
