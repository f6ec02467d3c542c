"""Writing a benchmark's section into bench/RESULTS.md, replacing an older one."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, section: str, report: str) -> None:
    """Put ``report`` (which starts with the ``section`` heading) into ``path``."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if section in text:
        head, _, rest = text.partition(section)
        tail = rest.split("\n## ", 1)
        text = head + report + ("\n## " + tail[1] if len(tail) > 1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + report
    path.write_text(text)


def publish(path: Path | None, section: str, report: str) -> None:
    """Print ``report``; with ``--write PATH``, also put it into that file."""
    print(report)
    if path is not None:
        write_section(path, section, report)
