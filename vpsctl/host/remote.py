"""The one pyinfra adapter: every SSH connection and remote command of vpsctl goes through here.

pyinfra's API moves between releases; this module (and ``deploys/``) is the only place that
imports it. A fresh ``Inventory`` and ``State`` per session (an Inventory cannot serve a
second State), ``TCP_NODELAY`` on the SSH socket (a Nagle stall otherwise costs ~40 ms per
command), and host keys checked against a known_hosts file vpsctl records.
"""

from __future__ import annotations

import contextlib
import io
import logging
import select
import shlex
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

from paramiko import BadHostKeyException, SSHException
from pyinfra.api.command import StringCommand
from pyinfra.api.config import Config
from pyinfra.api.deploy import add_deploy
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.inventory import Inventory
from pyinfra.api.operations import run_ops
from pyinfra.api.state import State
from pyinfra.connectors.sshuserclient.client import get_host_keys

from vpsctl.core.facts import FactsError, HostFacts, facts_script, parse, unreachable
from vpsctl.core.layout import HOST_ROOT, UnsafePath, member_problem
from vpsctl.errors import VpsctlError, masked
from vpsctl.host import commands
from vpsctl.host.target import Target as Target  # noqa: PLC0414 - re-exported (mypy)
from vpsctl.local import docker as localdocker

THREAD_CHANNELS = 6  # commands of threads other than the main one, at once (see Session)

# A remote command: a shell string, or an argv list that :func:`shell` joins (quoted).
Command = str | Sequence[str]


class RemoteError(VpsctlError):
    """The host could not be reached, or a remote command failed."""


class HostKeyMismatch(RemoteError):
    """The host presented a key other than the ones its known_hosts file records."""


class CommandFailed(RemoteError):
    """A remote command exited non-zero (or timed out).

    The message names what the command was for, on which host, and the tail of what it
    printed, with every known secret value masked; ``result`` keeps the whole output for a
    caller that parses it (it is never printed as is).
    """

    def __init__(self, purpose: str, host: str, result: Result) -> None:
        self.purpose = purpose
        self.result = result
        tail = output_tail(result)
        super().__init__(f"{purpose} failed on {host}" + (f": {tail}" if tail else ""))


def shell(command: Command) -> str:
    """The line sent for ``command``: :func:`vpsctl.host.commands.join`, the one place an
    argv list becomes a shell command line (every word quoted)."""
    return commands.join(command)


def output_tail(result: Result, lines: int = 8, chars: int = 600) -> str:
    """The last lines a command printed (stderr, else stdout), secrets masked: what an
    error message may quote."""
    text = (result.stderr.strip() or result.stdout.strip()).splitlines()[-lines:]
    return masked("\n".join(text)[-chars:])


def purpose_of(command: Command) -> str:
    """A name for a command when its caller gave none: its first words."""
    first = shell(command).strip().splitlines()[0] if shell(command).strip() else "a command"
    return masked(f"`{first[:60]}{'…' if len(first) > 60 else ''}`")


@dataclass(frozen=True)
class OpResult:
    """One pyinfra operation of a deploy: its name and whether it changed the host."""

    name: str
    changed: bool
    ok: bool
    error: str = ""


@dataclass(frozen=True)
class DeployReport:
    """What a deploy did, operation by operation."""

    ops: tuple[OpResult, ...]

    @property
    def changed(self) -> list[str]:
        """Names of the operations that changed the host."""
        return [op.name for op in self.ops if op.changed]


@dataclass(frozen=True)
class Result:
    """What a remote command returned."""

    ok: bool
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout then stderr, stripped: what a command printed, for parsing or a log."""
        return (self.stdout + "\n" + self.stderr).strip()


class Remote(Protocol):
    """What apply, backup and restore need of a connection to the host: :class:`Session`,
    or a scripted stand-in in tests (``tests/scripted.py``)."""

    target: Target
    commands: int

    def run(
        self, command: Command, timeout: int = 600, *, check: bool = True, purpose: str = ""
    ) -> Result:
        """Run ``command`` on the host; raise :class:`CommandFailed` unless ``check=False``."""
        ...

    def feed(
        self,
        command: Command,
        data: bytes,
        timeout: int = 600,
        *,
        check: bool = True,
        purpose: str = "",
    ) -> Result:
        """Run ``command`` with ``data`` on its stdin; raise like :meth:`run`."""
        ...

    def put_files(self, files: list[tuple[str, bytes, int]]) -> None:
        """Write ``(path, content, mode)`` files; raise :class:`RemoteError` on failure."""
        ...

    def hold_lock(self, path: str, what: str) -> Any:
        """Take the host's lock; an object whose ``close()`` releases it."""
        ...

    def ship_images(
        self,
        tags: list[str],
        progress: Callable[[int, int], None] | None = None,
        shipped: set[str] | None = None,
    ) -> int:
        """Ship local images to the host; bytes sent (``shipped``: see :class:`Session`)."""
        ...

    def deploy(self, func: Any, **kwargs: Any) -> DeployReport:
        """Run a pyinfra deploy on the host."""
        ...

    def forward(
        self, address: str, port: int
    ) -> contextlib.AbstractContextManager[tuple[str, int]]:
        """A local ``("127.0.0.1", PORT)`` that reaches ``address:port`` as seen from the
        host, for as long as the context lasts."""
        ...

    def cancel(self) -> None:
        """End the commands other threads are running now, and refuse their later ones (an
        apply's stack workers, when the run is interrupted)."""
        ...


class Session:
    """An SSH session to one host, through pyinfra's connector.

    ::

        with Session(target) as session:
            result = session.run("uname -a")
    """

    def __init__(
        self, target: Target, connect_timeout: float = 10, banner_timeout: float = 30
    ) -> None:
        self.target = target
        self.commands = 0
        connect_kwargs: dict[str, float] = {
            "timeout": connect_timeout,
            "banner_timeout": banner_timeout,
        }
        if banner_timeout < connect_timeout:  # a probe: every wait as short as the connect
            connect_kwargs.update(auth_timeout=banner_timeout, channel_timeout=banner_timeout)
        data: dict[str, Any] = {
            "ssh_hostname": target.address,
            "ssh_port": target.port,
            "ssh_user": target.user,
            "ssh_key": str(target.key.expanduser()),
            "ssh_allow_agent": False,
            "ssh_look_for_keys": False,
            "ssh_paramiko_connect_kwargs": connect_kwargs,
        }
        if target.known_hosts is not None:
            data["ssh_known_hosts_file"] = str(target.known_hosts)
            data["ssh_strict_host_key_checking"] = "yes"
        self._inventory = Inventory(([(target.name, data)], {}))  # type: ignore[no-untyped-call]
        self._state = State(inventory=self._inventory, config=Config())  # type: ignore[no-untyped-call]
        self._host = self._inventory.get_host(target.name)
        self._cancelled = threading.Event()  # see cancel()
        # sshd's MaxSessions (10 by default) bounds the open sessions of one connection: the
        # apply's lock holds one, the main thread's command another; other threads share these
        self._channels = threading.BoundedSemaphore(THREAD_CHANNELS)
        self._counting = threading.Lock()

    def __enter__(self) -> Session:
        _forget_known_hosts()
        try:
            self._host.connect(show_errors=False, raise_exceptions=True)
        except PyinfraError as exc:  # ConnectError, or a key file that cannot be read
            self._close()
            where = f"{self.target.user}@{self.target.address}:{self.target.port}"
            if _caused_by(exc, BadHostKeyException):
                raise HostKeyMismatch(
                    f"cannot reach {where}: its SSH host key does not match the one recorded "
                    f"in {self.target.known_hosts}"
                ) from None
            raise RemoteError(f"cannot reach {where}: {exc.args[0] if exc.args else exc}") from None
        client = getattr(self._host.connector, "client", None)
        transport = client.get_transport() if client is not None else None
        if transport is not None:
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._state.activate_host(self._host)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._host.disconnect()
        self._close()

    def _close(self) -> None:
        # pyinfra's disconnect leaves paramiko's client (and its transport thread) open
        client = getattr(self._host.connector, "client", None)
        if client is not None:
            client.close()

    def run(
        self, command: Command, timeout: int = 600, *, check: bool = True, purpose: str = ""
    ) -> Result:
        """Run ``command`` with ``sh -c`` on the host.

        A non-zero exit raises :class:`CommandFailed` naming ``purpose`` (what the command
        is for) and the tail of its output, masked; a caller that expects failure and
        judges the result itself says so with ``check=False``. A timeout always raises.

        Safe from several threads: any thread but the main one runs its command over a
        channel of its own (:meth:`_run_on_channel`).
        """
        if threading.current_thread() is not threading.main_thread():
            return self._run_on_channel(command, timeout, check=check, purpose=purpose)
        self._count()
        try:
            ok, output = self._host.run_shell_command(
                StringCommand(shell(command)), _timeout=timeout, print_output=False
            )
        except TimeoutError:
            raise RemoteError(
                f"{purpose or purpose_of(command)} timed out on {self.target.name} after {timeout}s"
            ) from None
        result = Result(bool(ok), output.stdout, output.stderr)
        if check and not result.ok:
            raise CommandFailed(purpose or purpose_of(command), self.target.name, result)
        return result

    def _count(self) -> None:
        with self._counting:  # `+=` on an attribute is not atomic between threads
            self.commands += 1

    def _run_on_channel(
        self, command: Command, timeout: int, *, check: bool, purpose: str
    ) -> Result:
        """:meth:`run` from a thread other than the main one. pyinfra reads a command's output
        in gevent greenlets, and a gevent hub belongs to one thread: here the command goes
        as pyinfra would send it (``sh -c``, no stdin) over a paramiko channel of its own
        (paramiko's transport serves channels from any thread), and both streams are read
        as they come (a command filling stderr never stalls on an unread pipe)."""
        self._count()
        what = purpose or purpose_of(command)
        while not self._channels.acquire(timeout=0.2):
            self._refuse_if_cancelled(what)
        try:
            return self._on_channel(command, what, timeout, check=check)
        finally:
            self._channels.release()

    def _on_channel(self, command: Command, what: str, timeout: int, *, check: bool) -> Result:
        self._refuse_if_cancelled(what)
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        try:
            channel = self._transport().open_session()
        except (SSHException, EOFError, OSError) as exc:
            raise RemoteError(f"{what} could not start on {self.target.name}: {exc}") from None
        try:
            channel.exec_command(commands.join(["sh", "-c", shell(command)]))
            channel.shutdown_write()
            while True:
                while channel.recv_ready():
                    out += channel.recv(1 << 16)
                while channel.recv_stderr_ready():
                    err += channel.recv_stderr(1 << 16)
                if channel.eof_received or channel.closed:
                    if not (channel.recv_ready() or channel.recv_stderr_ready()):
                        break
                    continue
                if self._cancelled.is_set():
                    raise RemoteError(f"{what} on {self.target.name} was cancelled")
                if time.monotonic() >= deadline:
                    raise RemoteError(f"{what} timed out on {self.target.name} after {timeout}s")
                select.select([channel], [], [], 0.2)
            status = channel.recv_exit_status()
        except (SSHException, EOFError, OSError) as exc:
            raise RemoteError(f"{what} failed on {self.target.name}: {exc}") from None
        finally:
            channel.close()
        result = Result(status == 0, _as_pyinfra_reads(out), _as_pyinfra_reads(err))
        if check and not result.ok:
            raise CommandFailed(what, self.target.name, result)
        return result

    def _refuse_if_cancelled(self, what: str) -> None:
        if self._cancelled.is_set() and threading.current_thread() is not threading.main_thread():
            raise RemoteError(f"{what} was not run on {self.target.name}: the run was cancelled")

    def cancel(self) -> None:
        """End the commands other threads are running now (within 0.2 s: they raise
        :class:`RemoteError`), and refuse their later ones. The main thread is unaffected."""
        self._cancelled.set()

    def _transport(self) -> Any:
        client = getattr(self._host.connector, "client", None)
        transport = client.get_transport() if client is not None else None
        if transport is None:
            raise RemoteError(f"no SSH transport to {self.target.name}")
        return transport

    def feed(
        self,
        command: Command,
        data: bytes,
        timeout: int = 600,
        *,
        check: bool = True,
        purpose: str = "",
    ) -> Result:
        """Run ``command`` on the host with ``data`` on its stdin; raises like :meth:`run`."""
        self._count()
        self._refuse_if_cancelled(purpose or purpose_of(command))
        channel = self._transport().open_session()
        try:
            channel.settimeout(timeout)
            channel.exec_command(shell(command))
            channel.sendall(data)
            channel.shutdown_write()
            stdout = channel.makefile("rb").read().decode(errors="replace")
            stderr = channel.makefile_stderr("rb").read().decode(errors="replace")
            status = channel.recv_exit_status()
        except TimeoutError:  # socket.timeout is a TimeoutError
            raise RemoteError(
                f"{purpose or purpose_of(command)} timed out on {self.target.name} after {timeout}s"
            ) from None
        finally:
            channel.close()
        result = Result(status == 0, stdout, stderr)
        if check and not result.ok:
            raise CommandFailed(purpose or purpose_of(command), self.target.name, result)
        return result

    def put_files(self, files: list[tuple[str, bytes, int]]) -> None:
        """Write ``(path, content, mode)`` files owned by root, in ONE command.

        The files travel as one tar stream; each lands with its mode from the start (an
        env file is never readable by others, not even for a moment).
        """
        if not files:
            return
        for path, _content, _mode in files:
            # every member lands under vpsctl's own tree on the box, whatever built its name
            problem = member_problem(path, HOST_ROOT)
            if problem is not None:
                raise UnsafePath(f"refusing to send {problem} to {self.target.name}")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for path, content, mode in files:
                info = tarfile.TarInfo(path.lstrip("/"))
                info.size = len(content)
                info.mode = mode
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = int(time.time())
                tar.addfile(info, io.BytesIO(content))
        self.feed(
            ["tar", "-x", "-p", "-f", "-", "-C", "/", "--no-overwrite-dir"],
            buffer.getvalue(),
            purpose=f"writing {len(files)} file(s)",
        )

    def hold_lock(self, path: str, what: str) -> Any:
        """Take an exclusive lock on the host for as long as this SSH connection lives.

        ``flock`` holds it while ``cat`` reads this channel's stdin: when vpsctl ends, or
        its connection dies mid-way, the channel closes, cat sees EOF and the lock is
        released. Returns the channel (close it to release); raises when someone holds it.
        """
        channel = self._transport().open_session()
        channel.exec_command(
            f"mkdir -p {shlex.quote(str(Path(path).parent))} && flock -n {shlex.quote(path)} "
            "sh -c 'echo locked; exec cat >/dev/null'"
        )
        answer = channel.makefile("rb").readline().decode().strip()
        if answer != "locked":
            channel.close()
            raise RemoteError(
                f"another vpsctl {what} is running on {self.target.name} (it holds {path}); "
                "wait for it, or find it in the journal"
            )
        return channel

    def ship_image(self, tag: str, progress: Callable[[int, int], None] | None = None) -> int:
        """Ship one image; see :meth:`ship_images`."""
        return self.ship_images([tag], progress)

    def ship_images(
        self,
        tags: list[str],
        progress: Callable[[int, int], None] | None = None,
        shipped: set[str] | None = None,
    ) -> int:
        """``docker save TAGS`` here, piped into ``docker load`` on the host; bytes sent.

        For boxes that cannot reach a registry: the images travel over this SSH connection
        as ONE archive, so layers they share are sent once; ``progress(sent,
        estimated_total)`` is called as bytes go out. Safe from any thread (a channel of its
        own; :meth:`cancel` ends it within a chunk).

        ``shipped``: the archive members that earlier calls of this run have sent and the
        box has loaded; they are left out of this archive, and this call's are added. A
        layer's member is named by its content (or, below an image's top layer, by its
        chain of layers), so a name sent once is the same bytes, and ``docker load`` takes a
        layer it already holds from its store without looking for the archive's copy: a
        run's images can go in several archives, and their shared layers still go once.
        """
        transport = self._transport()
        size = sum(localdocker.image_sizes(tags).values())
        names = ", ".join(tags)
        save = subprocess.Popen(["docker", "save", *tags], stdout=subprocess.PIPE)
        off_main = threading.current_thread() is not threading.main_thread()
        if off_main:
            while not self._channels.acquire(timeout=0.2):
                self._refuse_if_cancelled(f"shipping {names}")
        channel = transport.open_session()
        sink = _ChannelSink(channel, progress, max(size, 1), self._cancelled if off_main else None)
        try:
            channel.exec_command("docker load")
            assert save.stdout is not None
            sent_now = _copy_archive(save.stdout, sink, shipped if shipped is not None else set())
            channel.shutdown_write()
            status = channel.recv_exit_status()
            output = channel.makefile_stderr("rb").read().decode(errors="replace")
        except _Cancelled:
            raise RemoteError(f"shipping {names} to {self.target.name} was cancelled") from None
        finally:
            channel.close()
            if off_main:
                self._channels.release()
            if save.stdout is not None:
                save.stdout.close()
            save.wait()
        if save.returncode != 0:
            raise RemoteError(f"docker save {names} failed here (exit {save.returncode})")
        if status != 0:
            raise RemoteError(
                f"docker load of {names} failed on {self.target.name}: {masked(output[-500:])}"
            )
        if shipped is not None:
            shipped.update(sent_now)
        return sink.sent

    @contextlib.contextmanager
    def forward(self, address: str, port: int) -> Iterator[tuple[str, int]]:
        """A local TCP port that reaches ``address:port`` as the host sees it (a container's
        address on a docker network), through this SSH connection (``direct-tcpip``, as
        ``ssh -L``): nothing is published on the host, and the port listens on 127.0.0.1
        only while the block runs. Yields ``("127.0.0.1", PORT)``."""
        transport = self._transport()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(0.2)
        stop = threading.Event()
        threads: list[threading.Thread] = []

        def accept() -> None:
            while not stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                thread = threading.Thread(
                    target=_pump, args=(transport, (address, port), client, stop), daemon=True
                )
                thread.start()
                threads.append(thread)

        acceptor = threading.Thread(target=accept, daemon=True)
        acceptor.start()
        try:
            yield ("127.0.0.1", listener.getsockname()[1])
        finally:
            stop.set()
            acceptor.join(2)
            listener.close()
            for thread in threads:
                thread.join(2)

    def deploy(self, func: Any, **kwargs: Any) -> DeployReport:
        """Run a pyinfra deploy (``deploys/``) on the host; raise naming a failed operation."""
        add_deploy(self._state, func, **kwargs)
        try:
            run_ops(self._state)
        except PyinfraError as exc:
            # pyinfra stops at a failed operation with only "No hosts remaining!": the
            # operation and its output are named below, from the state's own record
            stopped: PyinfraError | None = exc
        else:
            stopped = None
        ops: list[OpResult] = []
        for op_hash in self._state.get_op_order():  # type: ignore[no-untyped-call]
            names = sorted(self._state.get_op_meta(op_hash).names) or [op_hash]
            data = self._state.get_op_data_for_host(self._host, op_hash)
            meta = data.operation_meta
            finished = meta.is_complete()
            ok = finished and meta.did_succeed()
            error = ""
            if finished and not ok:
                error = "\n".join(meta.stderr_lines[-15:] or meta.stdout_lines[-15:])
            ops.append(OpResult(names[0], finished and ok and meta.did_change(), ok, error))
            if finished and not ok:
                raise RemoteError(f"{names[0]} failed on {self.target.name}:\n{masked(error)}")
        if stopped is not None:
            raise RemoteError(f"the deploy stopped on {self.target.name}: {masked(str(stopped))}")
        return DeployReport(tuple(ops))


# the members of a `docker save` archive that describe it as a whole (every archive has its
# own); every other member is a layer's or an image's, named by what it holds
_ARCHIVE_INDEX = frozenset({"manifest.json", "repositories", "index.json", "oci-layout"})
_ALWAYS_SENT = 64 * 1024  # bytes: archive members smaller than this are never left out


class _Cancelled(Exception):
    """The run was cancelled while an archive was going out."""


class _ChannelSink(io.RawIOBase):
    """Bytes written go out on ``channel``; ``progress(sent, total)`` after each write."""

    def __init__(
        self,
        channel: Any,
        progress: Callable[[int, int], None] | None,
        total: int,
        cancelled: threading.Event | None,
    ) -> None:
        super().__init__()
        self.channel = channel
        self.progress = progress
        self.total = total
        self.cancelled = cancelled
        self.sent = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.cancelled is not None and self.cancelled.is_set():
            raise _Cancelled
        chunk = bytes(data)
        self.channel.sendall(chunk)
        self.sent += len(chunk)
        if self.progress is not None:
            self.progress(self.sent, max(self.total, self.sent))
        return len(chunk)


def _copy_archive(source: IO[bytes], sink: _ChannelSink, shipped: set[str]) -> set[str]:
    """Copy the tar stream ``source`` into ``sink`` without the members named in
    ``shipped``; the names of the layer and image members copied."""
    sent: set[str] = set()
    out = io.BufferedWriter(sink, buffer_size=1 << 20)
    with (
        tarfile.open(fileobj=source, mode="r|", bufsize=1 << 20) as archive,
        tarfile.open(fileobj=out, mode="w|", bufsize=1 << 20) as copy,
    ):
        copy.copybufsize = 1 << 20  # type: ignore[attr-defined]  # 1 MiB reads, not 16 KiB
        for member in archive:
            # a small member (an image's config, a layer's metadata) goes again: ``docker
            # load`` reads an image's config from the archive even when the box holds the
            # image, and two refs of one stand-in (postgres 16 and 17) share one config
            if member.name in shipped and member.size >= _ALWAYS_SENT:
                continue
            copy.addfile(member, archive.extractfile(member) if member.isfile() else None)
            if member.name not in _ARCHIVE_INDEX:
                sent.add(member.name)
    out.flush()
    return sent


class _RefusedChannels(logging.Filter):
    """paramiko logs a refused ``direct-tcpip`` channel at ERROR ("Secsh channel N open
    FAILED: Connection refused"), and with no handler configured Python prints it raw on
    stderr: a forward whose app is restarting is expected to be refused for a moment, and the
    client's own error says so when it matters."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "open FAILED" not in record.getMessage()


logging.getLogger("paramiko.transport").addFilter(_RefusedChannels())


def _pump(
    transport: Any, target: tuple[str, int], client: socket.socket, stop: threading.Event
) -> None:
    """Carry one forwarded connection both ways until either side closes (or ``stop``)."""
    try:
        channel = transport.open_channel("direct-tcpip", target, client.getpeername(), timeout=15)
    except (SSHException, OSError, EOFError):
        client.close()  # the client reads a closed connection: its own error says so
        return
    try:
        while not stop.is_set():
            ready, _, _ = select.select([client, channel], [], [], 0.2)
            if client in ready:
                data = client.recv(65536)
                if not data:
                    break
                channel.sendall(data)
            if channel in ready:
                data = channel.recv(65536)
                if not data:
                    break
                client.sendall(data)
    except OSError:
        pass  # either side went away: the connection ends, as with `ssh -L`
    finally:
        channel.close()
        client.close()


def _as_pyinfra_reads(data: bytes | bytearray) -> str:
    """A stream as pyinfra's ``run_shell_command`` gives it: its lines, each without its
    ``\n``, joined by ``\n``, so one trailing newline goes (``"a\n\n"`` → ``"a\n"``)."""
    text = data.decode(errors="replace")
    return text[:-1] if text.endswith("\n") else text


def _forget_known_hosts() -> None:
    """pyinfra reads each known_hosts file once per process (memoized): a sandbox made again
    under the same name rewrites its file, and the next connection must check the new keys."""
    cache = getattr(get_host_keys, "cache", None)
    if isinstance(cache, dict):
        cache.clear()


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``exc`` was raised while handling a ``kind`` (pyinfra raises its own
    ``ConnectError`` from inside paramiko's exception handler)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def probe(target: Target, timeout: float = 5.0) -> str | None:
    """None when the host lets ``target``'s key in (its host key checked against
    ``target.known_hosts``) and runs a command; otherwise why not, in one line.

    The same connection as :class:`Session`'s, with every wait bounded by ``timeout``: what
    a caller polls while a box boots (``vpsctl sandbox up``) or asks of a box's health
    (``vpsctl sandbox status``)."""
    wait = max(1.0, timeout)
    try:
        with Session(target, connect_timeout=wait, banner_timeout=wait) as session:
            result = session.run("true", timeout=max(1, round(wait)), check=False)
    except HostKeyMismatch:
        return HOST_KEY_CHANGED
    except RemoteError as exc:
        return f"ssh: {exc}"
    except (SSHException, EOFError, OSError) as exc:  # the connection died after the login
        return f"ssh: running a command failed: {exc or exc.__class__.__name__}"
    return None if result.ok else f"ssh: `true` failed: {output_tail(result, 2, 200)}"


# what :func:`probe` answers when the host key changed: a caller stops polling on it
HOST_KEY_CHANGED = "the SSH host key does not match the recorded one"


def read_facts(target: Target, script: str | None = None) -> HostFacts:
    """The host's facts in ONE remote command (``script``: the facts script as a plan
    cache entry recorded it, else :func:`facts_script`'s); an unreachable host is a fact,
    not a crash."""
    return read_facts_and(target, script or facts_script())[0]


def read_facts_and(target: Target, script: str) -> tuple[HostFacts, str]:
    """:func:`read_facts` with ``script`` (the facts script, and more after it), and the
    whole answer for whoever reads the rest ("" when the host was not read)."""
    try:
        with Session(target) as session:
            # judged below: a failed read is a fact of the plan ("unreachable"), not a crash
            result = session.run(script, timeout=120, check=False)
    except RemoteError as exc:
        return unreachable(str(exc)), ""
    if not result.ok:
        return unreachable(f"the facts command failed: {output_tail(result, 4, 300)}"), ""
    try:
        facts = parse(result.stdout)
    except FactsError as exc:
        return unreachable(str(exc)), ""
    return facts, result.stdout
