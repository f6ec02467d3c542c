"""Stacks converged at once, told one after another: each stack's lines (and the changes it
records for the journal) in a lane of its own, printed in the spec's stack order.

The first stack still running speaks live; a later one's lines wait in its lane until every
stack before it has finished, then come out at once. So the output of a run that converged
its stacks concurrently is the output the same run would have printed one stack at a time,
line for line, only sooner (timings aside).

Work that comes before every stack in that order but runs beside them (the run's images,
shipped while the stacks that already have theirs start; a rebuild's restore of files) has
a lane of its own ahead of the stacks' (``preludes``), run by :class:`Background`.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, TypeVar

T = TypeVar("T")


@dataclass
class Lane:
    """What one stack said and recorded while it converged."""

    name: str
    lines: list[str] = field(default_factory=list)  # said, not yet printed
    changed: list[str] = field(default_factory=list)  # for the journal, in order
    done: bool = False


class Lanes:
    """The lanes of one run's concurrent stacks, in the spec's order, printing to ``out``;
    ahead of them, the lanes of the ``preludes`` (work before every stack, in that order)."""

    def __init__(self, out: IO[str], names: Sequence[str], preludes: Sequence[str] = ()) -> None:
        self.out = out
        self.lanes = [Lane(name) for name in (*preludes, *names)]
        self.preludes = self.lanes[: len(preludes)]
        self.stacks = self.lanes[len(preludes) :]  # the ones run_in_lanes works
        self.head = 0  # the first lane not finished: the one that speaks live
        self.lock = threading.Lock()
        self.local = threading.local()  # .lane: the lane of the thread's stack

    def current(self) -> Lane | None:
        """The lane of the stack this thread converges (None outside any)."""
        lane: Lane | None = getattr(self.local, "lane", None)
        return lane

    def say(self, lane: Lane, line: str) -> None:
        with self.lock:
            if self.lanes[self.head] is lane:
                print(line, file=self.out, flush=True)
            else:
                lane.lines.append(line)

    def finish(self, lane: Lane) -> None:
        """``lane``'s stack is done: print every lane that may now speak, in order."""
        with self.lock:
            lane.done = True
            while self.head < len(self.lanes):
                head = self.lanes[self.head]
                for line in head.lines:
                    print(line, file=self.out, flush=True)
                head.lines.clear()
                if not head.done:
                    return
                self.head += 1

    def close(self) -> None:
        """Finish every lane not finished (work that never started has nothing to say, but
        the lanes after it may): every line said is printed."""
        for lane in self.lanes:
            if not lane.done:
                self.finish(lane)

    def changed(self) -> list[str]:
        """What every lane recorded, in the spec's order."""
        return [text for lane in self.lanes for text in lane.changed]

    @contextmanager
    def entered(self, lane: Lane) -> Iterator[None]:
        """This thread speaks in ``lane`` for the block; the lane is finished after it."""
        self.local.lane = lane
        try:
            yield
        finally:
            self.local.lane = None
            self.finish(lane)


def run_in_lanes(
    lanes: Lanes,
    work: Callable[[str], T],
    width: int,
    cancel: Callable[[], None],
    start: Sequence[int] | None = None,
) -> list[T]:
    """``work(name)`` for every lane's stack, ``width`` at a time, started in the order of
    ``start`` (lane indices; the lanes' order by default); the results in the lanes' order,
    whatever the start order. Every thread has ended when this returns or raises.

    A stack that raises stops no stack already running (each finishes its own gate or
    rollback, as it would have alone), but no stack starts after it; the first error (in
    the lanes' order) is raised once all have ended. An interrupt (Ctrl-C) of the waiting
    thread calls ``cancel`` (the session ends the workers' commands and refuses their next
    ones), waits for the workers to end, and is raised.

    Threads of its own, not a ``ThreadPoolExecutor``: an interrupt that lands while the
    pool starts a thread leaves that thread out of the pool's list, never joined."""
    stacks = lanes.stacks
    order = range(len(stacks)) if start is None else start
    todo = deque((index, stacks[index]) for index in order)
    results: dict[int, T] = {}
    errors: dict[int, BaseException] = {}
    guard = threading.Lock()
    stop = threading.Event()  # an error or an interrupt: no stack starts after it

    def worker() -> None:
        while True:
            with guard:
                if stop.is_set() or not todo:
                    return
                index, lane = todo.popleft()
            with lanes.entered(lane):
                try:
                    results[index] = work(lane.name)
                except BaseException as exc:  # noqa: BLE001 - raised by the waiting thread
                    errors[index] = exc
                    stop.set()

    count = max(1, min(width, len(stacks)))
    threads = [threading.Thread(target=worker, name=f"vpsctl-stack-{n}") for n in range(count)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    except BaseException:
        stop.set()
        cancel()
        raise
    finally:
        for thread in threads:
            with contextlib.suppress(RuntimeError):  # never started: it finds `stop` set
                thread.join()
        for lane in stacks:
            if not lane.done:
                lanes.finish(lane)  # never started: nothing to say, but later lanes may speak
    for index in sorted(errors):
        raise errors[index]
    return [results[index] for index in range(len(stacks))]


class Background:
    """``work()`` in a thread of its own, speaking in ``lane`` (a prelude's), started at
    once; :meth:`result` waits for it and raises what it raised."""

    def __init__(
        self, lanes: Lanes, lane: Lane, work: Callable[[], None], cancel: Callable[[], None]
    ) -> None:
        self.lanes = lanes
        self.lane = lane
        self.work = work
        self.cancel = cancel
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"vpsctl-{lane.name}")
        self.thread.start()

    def _run(self) -> None:
        with self.lanes.entered(self.lane):
            try:
                self.work()
            except BaseException as exc:  # noqa: BLE001 - raised by the waiting thread
                self.error = exc

    def join(self) -> None:
        """Wait for the work to end; an interrupt (Ctrl-C) meanwhile calls ``cancel`` (the
        session ends the work's commands), waits for it to end, and is raised."""
        try:
            self.thread.join()
        except BaseException:
            self.cancel()
            self.thread.join()
            raise

    def result(self) -> None:
        """Wait for the work to end; raise what it raised."""
        self.join()
        if self.error is not None:
            raise self.error
