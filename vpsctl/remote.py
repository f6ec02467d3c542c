"""The one pyinfra adapter: every SSH connection and remote command of vpsctl goes through here.

pyinfra's API moves between releases; this module (and ``deploys/``) is the only place that
imports it. A fresh ``Inventory`` and ``State`` per session (an Inventory cannot serve a
second State), ``TCP_NODELAY`` on the SSH socket (a Nagle stall otherwise costs ~40 ms per
command), and host keys checked against a known_hosts file vpsctl records.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from pyinfra.api.command import StringCommand
from pyinfra.api.config import Config
from pyinfra.api.exceptions import ConnectError
from pyinfra.api.inventory import Inventory
from pyinfra.api.state import State

from vpsctl.errors import VpsctlError
from vpsctl.facts import FACTS_SCRIPT, FactsError, HostFacts, parse, unreachable


class RemoteError(VpsctlError):
    """The host could not be reached, or a remote command failed."""


@dataclass(frozen=True)
class Target:
    """Where and how to reach a host over SSH."""

    name: str
    address: str
    port: int
    user: str
    key: Path
    known_hosts: Path | None = None


@dataclass(frozen=True)
class Result:
    """What a remote command returned."""

    ok: bool
    stdout: str
    stderr: str


class Session:
    """An SSH session to one host, through pyinfra's connector.

    ::

        with Session(target) as session:
            result = session.run("uname -a")
    """

    def __init__(self, target: Target, connect_timeout: int = 10) -> None:
        self.target = target
        self.commands = 0
        data: dict[str, Any] = {
            "ssh_hostname": target.address,
            "ssh_port": target.port,
            "ssh_user": target.user,
            "ssh_key": str(target.key.expanduser()),
            "ssh_allow_agent": False,
            "ssh_look_for_keys": False,
            "ssh_paramiko_connect_kwargs": {"timeout": connect_timeout, "banner_timeout": 30},
        }
        if target.known_hosts is not None:
            data["ssh_known_hosts_file"] = str(target.known_hosts)
            data["ssh_strict_host_key_checking"] = "yes"
        self._inventory = Inventory(([(target.name, data)], {}))  # type: ignore[no-untyped-call]
        self._state = State(inventory=self._inventory, config=Config())  # type: ignore[no-untyped-call]
        self._host = self._inventory.get_host(target.name)

    def __enter__(self) -> Session:
        try:
            self._host.connect(show_errors=False, raise_exceptions=True)
        except ConnectError as exc:
            raise RemoteError(
                f"cannot reach {self.target.user}@{self.target.address}:{self.target.port}: "
                f"{exc.args[0] if exc.args else exc}"
            ) from None
        client = getattr(self._host.connector, "client", None)
        transport = client.get_transport() if client is not None else None
        if transport is not None:
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._host.disconnect()

    def run(self, command: str, timeout: int = 600) -> Result:
        """Run ``command`` with ``sh -c`` on the host; never raises for a non-zero exit."""
        self.commands += 1
        ok, output = self._host.run_shell_command(
            StringCommand(command), _timeout=timeout, print_output=False
        )
        return Result(bool(ok), output.stdout, output.stderr)


def read_facts(target: Target) -> HostFacts:
    """The host's facts in ONE remote command; an unreachable host is a fact, not a crash."""
    started = time.monotonic()
    try:
        with Session(target) as session:
            result = session.run(FACTS_SCRIPT, timeout=120)
    except RemoteError as exc:
        return unreachable(str(exc))
    if not result.ok:
        return unreachable(f"the facts command failed: {result.stderr.strip()[-300:]}")
    try:
        facts = parse(result.stdout)
    except FactsError as exc:
        return unreachable(str(exc))
    facts.seconds = time.monotonic() - started
    return facts
