"""Files on the box: keep the previous version, put it back, move, remove, hash, append."""

from __future__ import annotations

import shlex

from vpsctl.host.commands import Argv, Script, words


def save_previous(previous: str, paths: list[str]) -> Script:
    """Copy each of ``paths`` that exists into a fresh ``previous`` (mode, owner and parent
    directories kept); fails if any copy fails, so a rollback never trusts a partial copy.
    A Script: a loop that skips the paths not there yet (a new file has no previous)."""
    directory = shlex.quote(previous)
    prepare = f"rm -rf -- {directory} && mkdir -p -- {directory}"
    if not paths:
        return Script(prepare)
    return Script(
        f"{prepare} && for f in {words(paths)}; do "
        f'if [ -e "$f" ]; then cp -p --parents -- "$f" {directory}/ || exit 1; fi; done'
    )


def restore_previous(previous: str) -> Argv:
    """Put the files :func:`save_previous` kept back where they were."""
    return ["cp", "-a", "--", f"{previous}/.", "/"]


def remove(paths: list[str], *, recursive: bool = False) -> Argv:
    """``rm`` of ``paths`` (absent ones are fine)."""
    return ["rm", "-rf" if recursive else "-f", "--", *paths]


def move(source: str, target: str) -> Argv:
    """Move ``source`` over ``target``."""
    return ["mv", "-f", "--", source, target]


def is_file(path: str) -> Argv:
    """Succeeds when ``path`` is a regular file (a question: run it with ``check=False``)."""
    return ["test", "-f", path]


def sha256(paths: list[str]) -> Argv:
    """``sha256sum`` of ``paths`` (fails when one is missing; the rest are still listed)."""
    return ["sha256sum", "--", *paths]


def append_line(directory: str, path: str, line: str) -> Script:
    """Append ``line`` to ``path`` (creating ``directory`` first); a Script: ``>>``."""
    return Script(
        f"mkdir -p {shlex.quote(directory)} && "
        f"printf '%s\\n' {shlex.quote(line)} >> {shlex.quote(path)}"
    )
