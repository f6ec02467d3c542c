"""The audit's command: the one line that runs its read, which arrives on stdin."""

from __future__ import annotations

from vpsctl.host.commands import Argv


def read_from_stdin() -> Argv:
    """``sh`` reading a whole script from stdin, then running it with stdin from /dev/null:
    a script on a command line would be in every process listing for as long as it runs;
    read whole before it runs, no command in it can swallow the rest."""
    return ["sh", "-c", 'script=$(cat) && eval "$script" </dev/null']
