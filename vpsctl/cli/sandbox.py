"""``vpsctl sandbox up|down|status``: the command line of :mod:`vpsctl.local.sandbox`.

The sandbox package (docker helpers, the ACME CA) loads only when one of these commands
runs, not for every ``vpsctl`` command that builds the parser.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vpsctl.local.sandbox import SandboxInfo


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``vpsctl sandbox up|down|status`` to the CLI's subcommands."""
    p = sub.add_parser("sandbox", help="disposable Debian 13 VPS boxes as local containers")
    actions = p.add_subparsers(dest="sandbox_command", required=True, metavar="ACTION")

    def named(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument(
            "--name", default="default", type=_name_arg, help="sandbox name (default: default)"
        )
        return parser

    u = named(actions.add_parser("up", help="start the box (build its image once); idempotent"))
    u.add_argument("--json", action="store_true", help="print the connection as JSON")
    u.set_defaults(func=cmd_up)
    s = named(actions.add_parser("status", help="the recorded connection; exit 1 if not up"))
    s.add_argument("--json", action="store_true", help="print the connection as JSON")
    s.set_defaults(func=cmd_status)
    d = named(actions.add_parser("down", help="remove the box, its volume and record"))
    d.set_defaults(func=cmd_down)


def cmd_up(args: argparse.Namespace) -> int:
    """``vpsctl sandbox up``: make the box run and answer SSH; print its connection."""
    from vpsctl.local import sandbox  # noqa: PLC0415 - see the module docstring

    _show(sandbox.up(args.name), args.json)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """``vpsctl sandbox down``: remove the box, its volume and its record."""
    from vpsctl.local import sandbox  # noqa: PLC0415 - see the module docstring

    sandbox.down(args.name)
    print(f"sandbox {args.name}: down", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """``vpsctl sandbox status``: the recorded connection; exit 1 unless it runs and answers."""
    from vpsctl.local import sandbox  # noqa: PLC0415 - see the module docstring

    info = sandbox.status(args.name)
    if info is None:
        _say_absent(args.name)
        return 1
    _show(info, args.json)
    if not info.running:
        print(f"sandbox {args.name}: the container is not running", file=sys.stderr)
        return 1
    if not info.ssh_ready:
        print(f"sandbox {args.name}: sshd does not accept the sandbox key", file=sys.stderr)
        return 1
    return 0


def _say_absent(name: str) -> None:
    from vpsctl.errors import display_path  # noqa: PLC0415
    from vpsctl.local import docker as localdocker  # noqa: PLC0415
    from vpsctl.local import sandbox  # noqa: PLC0415

    container = sandbox.container_name(name)
    exists = localdocker.engine_running() and localdocker.inspect_container(container)
    hint = (
        f"its container {container} exists: `vpsctl sandbox up --name {name}` records it here"
        if exists
        else f"`vpsctl sandbox up --name {name}` makes it"
    )
    print(
        f"sandbox {name}: absent (nothing recorded in {display_path(sandbox.state_dir())}/; "
        f"{hint})",
        file=sys.stderr,
    )


def _show(info: SandboxInfo, as_json: bool) -> None:
    if as_json:
        data = info.to_json()
        data.update(running=info.running, ssh_ready=info.ssh_ready)
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    state = "running" if info.running else "not running"
    ssh = "answers" if info.ssh_ready else "does not answer"
    ports = ", ".join(f"{box}->{info.address}:{host}" for box, host in sorted(info.ports.items()))
    rows = [
        ("name", info.name),
        ("container", f"{info.container} ({state}, {info.container_id[:12]})"),
        ("image", info.image),
        ("hostname", info.hostname),
        ("ssh", f"{info.user}@{info.address}:{info.ssh_port} ({ssh})"),
        ("ports", ports),
        ("key", str(info.key_path)),
        ("known_hosts", str(info.known_hosts_path)),
        ("created", info.created),
        ("login", shlex.join(info.ssh_command())),
    ]
    sys.stdout.write("".join(f"{key + ':':<13}{value}\n" for key, value in rows))


def _name_arg(value: str) -> str:
    from vpsctl.local.sandbox import SandboxError, check_name  # noqa: PLC0415

    try:
        return check_name(value)
    except SandboxError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
