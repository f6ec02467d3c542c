"""The plan cache's read of a host: the facts script over paramiko alone.

A plan whose every input is unchanged (:mod:`vpsctl.spec.cache`) needs one thing of the host:
its answer to the facts script. This reads it the way :func:`vpsctl.host.remote.read_facts`
does (the same key, host keys only from the target's known_hosts file and an unknown or
changed one refused, the same one command run with ``sh -c``, its output decoded and joined
the way pyinfra joins it) without importing pyinfra and gevent, a fifth of a cached plan's
time. Anything unusual at all (no known_hosts file, a refused key, a failed command, an
answer that does not parse) answers ``None``: the caller then reads through
:mod:`vpsctl.host.remote`, so every error a plan prints still comes from there.
"""

from __future__ import annotations

import shlex
import socket

from vpsctl.core.facts import FactsError, HostFacts, parse
from vpsctl.host.target import Target


def read_facts(
    target: Target, script: str, connect_timeout: float = 10, timeout: float = 120
) -> HostFacts | None:
    """The host's facts in ONE remote command over ONE connection, or ``None``."""
    if target.known_hosts is None:
        return None
    import paramiko  # noqa: PLC0415 - only a plan cache hit reads this way

    client = paramiko.SSHClient()
    try:
        client.load_host_keys(str(target.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(
            target.address,
            port=target.port,
            username=target.user,
            key_filename=str(target.key.expanduser()),
            allow_agent=False,
            look_for_keys=False,
            timeout=connect_timeout,
            banner_timeout=30,
        )
        transport = client.get_transport()
        if transport is None:
            return None
        transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
        channel = transport.open_session(timeout=connect_timeout)
        channel.settimeout(timeout)
        channel.exec_command(f"sh -c {shlex.quote(script)}")
        channel.shutdown_write()
        stdout = channel.makefile("rb").read()
        channel.makefile_stderr("rb").read()
        if channel.recv_exit_status() != 0:
            return None
        # strict, as pyinfra decodes it (a UnicodeDecodeError is a ValueError)
        text = stdout.decode("utf-8")
        return parse(text.removesuffix("\n"))
    except (paramiko.SSHException, OSError, EOFError, ValueError, FactsError):
        return None
    finally:
        client.close()
