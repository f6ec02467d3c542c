"""The applied versions of each stack, kept on the box: record one, list them, read one's
files (see :mod:`vpsctl.core.versions` for what a version holds)."""

from __future__ import annotations

import shlex

from vpsctl.core.versions import KEEP, VERSIONS
from vpsctl.host.commands import Script, words


def record(stack: str, version: str, paths: list[str], record_json: str) -> Script:
    """Keep version ``version`` of ``stack``: its files as they are on the box now (a tar,
    0600 root in a 0700 directory: env files hold secrets) and its record (no value, only
    hashes and refs); then only the newest :data:`KEEP` versions of the stack stay."""
    stack_dir = shlex.quote(f"{VERSIONS}/{stack}")
    directory = shlex.quote(f"{VERSIONS}/{stack}/{version}")
    relative = words(p.lstrip("/") for p in paths)
    return Script(
        f"umask 077 && mkdir -p -- {directory} && chmod 700 -- {shlex.quote(VERSIONS)} "
        f"{stack_dir} {directory} && tar -C / -cf {directory}/files.tar -- {relative} && "
        f"printf '%s\\n' {shlex.quote(record_json)} > {directory}/version.json && "
        f"ls -1 -- {stack_dir} | sort | head -n -{KEEP} | "
        f'while read -r old; do rm -rf -- {stack_dir}/"$old"; done'
    )


def record_all(kept: list[tuple[str, str, list[str], str]]) -> Script:
    """:func:`record` of each ``(stack, version, paths, record_json)`` in ONE command (a
    run's stacks, one round trip): each in a subshell of its own, a failed one says
    ``@@unkept STACK`` and the others still go."""
    return Script(
        "; ".join(
            f"( {record(*item)} ) || printf '@@unkept %s\\n' {shlex.quote(item[0])}"
            for item in kept
        )
    )


def list_all() -> Script:
    """Every recorded version's record, one JSON line each (nothing when none is kept)."""
    return Script(
        f"for f in {shlex.quote(VERSIONS)}/*/*/version.json; do "
        '[ -f "$f" ] && head -n 1 -- "$f"; done; true'
    )


def files_of(stack: str, version: str) -> Script:
    """The tar of one version's files, base64 on one line (it holds env files: read into
    memory by the caller, never printed)."""
    return Script(f"base64 -w0 -- {shlex.quote(f'{VERSIONS}/{stack}/{version}/files.tar')}")
