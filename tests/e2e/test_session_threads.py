"""One SSH session used from several threads at once, end to end (an apply converges stacks
concurrently): off the main thread a command runs over a channel of its own and answers
exactly as from the main thread (pyinfra's path: one trailing newline dropped), both of its
streams read as they come, never more at once than sshd lets one connection open; a timeout
still raises; ``cancel`` ends the other threads' commands and refuses their next."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import running_box, target_of
from vpsctl.host.remote import Command, CommandFailed, RemoteError, Result, Session
from vpsctl.local.sandbox import SandboxInfo

pytestmark = pytest.mark.e2e

COMMANDS: list[Command] = [
    "echo $0; printf 'out-1\\n'; printf 'err-1\\n' >&2",  # run by sh, as pyinfra runs it
    "printf 'a\\n\\n'; printf 'b\\r\\nc' >&2",  # pyinfra keeps all but the last newline
    ["printf", "%s|", "a b", "it's", "$HOME"],  # an argv: every word quoted
    "printf 'x\\n'; exit 3",
    "cd /tmp && pwd && printf '%s\\n' \"$(id -un)\"",
]


@pytest.fixture(scope="module")
def box(state_dir: Path) -> Iterator[SandboxInfo]:
    with running_box("threads") as info:
        yield info


def in_threads(session: Session, commands: list[Command]) -> list[Result | BaseException]:
    answers: list[Result | BaseException] = [RuntimeError("not run")] * len(commands)

    def one(index: int) -> None:
        try:
            answers[index] = session.run(commands[index], timeout=60, check=False)
        except BaseException as exc:  # noqa: BLE001 - compared by the test
            answers[index] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(commands))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return answers


def test_commands_from_several_threads_answer_as_from_the_main_thread(box: SandboxInfo) -> None:
    with Session(target_of(box)) as session:
        main = [session.run(c, timeout=60, check=False) for c in COMMANDS]
        # 15 at once: more than sshd's MaxSessions (10) lets one connection open; they queue
        threaded = in_threads(session, COMMANDS * 3)
    assert main[0].stdout == "sh\nout-1" and main[0].stderr == "err-1"
    assert main[1].stdout == "a\n" and main[1].stderr == "b\r\nc"
    assert not main[3].ok
    assert threaded == main * 3


def test_a_command_filling_stderr_first_does_not_stall(box: SandboxInfo) -> None:
    command = "head -c 3000000 /dev/zero | tr '\\0' x >&2; echo done"
    with Session(target_of(box)) as session:
        [answer] = in_threads(session, [command])
    assert isinstance(answer, Result), answer
    assert answer.stdout == "done" and len(answer.stderr) == 3_000_000


def test_a_failure_and_a_timeout_raise_from_a_thread(box: SandboxInfo) -> None:
    with Session(target_of(box)) as session:
        caught: list[BaseException] = []

        def run() -> None:
            try:
                session.run("exit 4", purpose="a step that fails")
            except CommandFailed as exc:
                caught.append(exc)
            try:
                session.run("sleep 20", timeout=1, purpose="a slow step")
            except RemoteError as exc:
                caught.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(60)
    assert [str(e).split(" on ")[0] for e in caught] == [
        "a step that fails failed",
        "a slow step timed out",
    ]
    assert str(caught[1]).endswith("after 1s")


def test_cancel_ends_the_other_threads_commands_and_refuses_their_next(box: SandboxInfo) -> None:
    with Session(target_of(box)) as session:
        started = threading.Event()
        caught: list[BaseException] = []

        def run() -> None:
            started.set()
            for command in ("sleep 60", "true"):
                try:
                    session.run(command, timeout=120, purpose=command)
                except RemoteError as exc:
                    caught.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        assert started.wait(10)
        for _ in range(100):  # the sleep runs on the box before it is cancelled
            if session.run("pgrep -fx 'sleep 60'", timeout=30, check=False).ok:
                break
        session.cancel()
        thread.join(30)  # far less than the sleep: cancelled, not waited out
        assert not thread.is_alive()
        assert session.run("echo main", timeout=30).stdout == "main"  # the main thread goes on
    assert [str(e) for e in caught] == [
        f"sleep 60 on {box.name} was cancelled",
        f"true was not run on {box.name}: the run was cancelled",
    ]
