"""``docker compose`` of one stack, in its directory, with a scrubbed environment."""

from __future__ import annotations

from vpsctl.core.render import stack_dir
from vpsctl.host.commands import Argv, Script, chain

# compose runs with nothing from the login shell: a variable exported empty there (the
# outage) cannot reach a container, even through a future `${…}`.
SCRUBBED_ENV = [
    "env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"
]  # fmt: skip


def compose(name: str, *args: str) -> Script:
    """``docker compose -p NAME ARGS`` in the stack's directory (a Script: compose reads
    ``compose.yaml`` and ``.env`` from where it runs, hence ``cd DIR &&``)."""
    return chain(["cd", stack_dir(name)], [*SCRUBBED_ENV, "docker", "compose", "-p", name, *args])


def up_args() -> list[str]:
    """``up``: create and start; the health gate is then watched by the Applier's health
    gate (``--wait`` would be silent for minutes)."""
    return ["up", "-d", "--remove-orphans", "--quiet-pull"]


def up(name: str) -> Script:
    """Create and start stack ``name`` (removing services it no longer declares)."""
    return compose(name, *up_args())


def down(name: str, *, volumes: bool = False) -> Script:
    """Stop and remove stack ``name``'s containers (and its volumes with ``volumes``)."""
    return compose(name, "down", "--remove-orphans", *(["-v"] if volumes else []))


def logs(name: str, tail: int = 15) -> Script:
    """The last ``tail`` log lines of every service of stack ``name``."""
    return compose(name, "logs", "--no-color", "--tail", str(tail))


def pull(ref: str) -> Argv:
    """``docker pull`` of a registry image, with the same scrubbed environment."""
    return [*SCRUBBED_ENV, "docker", "pull", "-q", ref]
