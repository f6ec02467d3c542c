"""apply converges the stacks before the edge at once (none depends on another), and the run
reads as if it had converged them one by one: the same lines in the same order, the same
outcomes, the same journal; a stack that fails rolls back alone; an error or an interrupt
ends every worker before apply returns.

Overlap is proven without clocks: two stacks' ``compose up`` answers meet at a barrier,
which a run converging one stack at a time could never reach.
"""

from __future__ import annotations

import dataclasses
import io
import re
import signal
import tarfile
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import edit, golden_prod_copy
from tests.scripted import (
    ScriptedSession,
    converged_session,
    health_answer,
    journal_of,
    outcome_of,
    run_applier,
)
from vpsctl.host.remote import RemoteError, Result, _ChannelSink, _copy_archive
from vpsctl.local import docker as localdocker
from vpsctl.local import standins
from vpsctl.ops.apply import Applier, StackResult
from vpsctl.ops.apply.lanes import Lanes, run_in_lanes
from vpsctl.ops.inputs import render_spec
from vpsctl.spec.loader import load_spec
from vpsctl.spec.studio import Spec

INV = "inventory/prod"
PRODUCTS = ("documint", "cronping", "flagbit", "webhookvault")
MEMORY = {"documint": "512m", "cronping": "256m", "flagbit": "256m", "webhookvault": "256m"}


@pytest.fixture
def prod(tmp_path: Path) -> Path:
    return golden_prod_copy(tmp_path)


def products_changed(root: Path) -> tuple[Spec, ScriptedSession]:
    """A converged host, and a spec that recreates the four products (a memory limit each)."""
    session = converged_session(load_spec(root / INV))
    for name in PRODUCTS:
        edit(root / f"stacks/{name}.yaml", f"mem_limit: {MEMORY[name]}", "mem_limit: 300m")
    return load_spec(root / INV), session


def stacks_running() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("vpsctl-stack")]


def test_independent_stacks_converge_at_the_same_time(prod: Path) -> None:
    spec, session = products_changed(prod)
    met = threading.Barrier(len(PRODUCTS), timeout=20)
    inside: list[str] = []

    def up_together(command: str) -> Result:
        inside.append(re.findall(r"compose -p (\w+)", command)[0])
        met.wait()  # broken (raises) unless all four compose ups run at once
        return Result(True, "", "")

    session.answer(r"docker compose -p \w+ up ", up_together)
    result, said = run_applier(spec, session)
    assert result.ok, said
    assert sorted(inside) == sorted(PRODUCTS), session.log()
    assert [o.stack for o in result.outcomes if o.result == StackResult.APPLIED] == list(PRODUCTS)
    assert not stacks_running()


def slow_in_reverse(session: ScriptedSession) -> None:
    """Later stacks answer their health gate sooner: the run's threads finish out of order."""

    def gate(command: str) -> Result:
        for index, name in enumerate(PRODUCTS):
            if f"com.docker.compose.project={name} " in command:
                time.sleep(0.02 * (len(PRODUCTS) - index))
        return health_answer(command)

    session.answer(r"^echo @@health;", gate)


def timeless(text: str) -> str:
    return re.sub(r"\d+(\.\d+)?s\b", "Ns", text)


def test_the_output_and_the_journal_are_those_of_one_stack_at_a_time(
    prod: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = []
    for width in (1, 4):
        root = golden_prod_copy(prod / f"w{width}")
        spec, session = products_changed(root)
        slow_in_reverse(session)
        session.fail(r"docker compose -p cronping up ", "cronping-app-1 is unhealthy", times=1)
        monkeypatch.setattr(Applier, "stack_workers", width)
        result, said = run_applier(spec, session)
        journal = journal_of(session)
        outcomes = [(o.stack, o.action, o.result, o.detail) for o in result.outcomes]
        runs.append((timeless(said), journal["changed"], journal["result"], outcomes))
    one, four = runs
    assert one[0] == four[0]  # every line, in the same order
    assert one[1:] == four[1:]
    assert "cronping: FAILED" in four[0]


def test_a_failing_stack_rolls_back_alone(prod: Path) -> None:
    spec, session = products_changed(prod)
    session.fail(r"docker compose -p flagbit up ", "flagbit-app-1 is unhealthy", times=1)
    result, said = run_applier(spec, session)
    assert outcome_of(result, "flagbit").result == StackResult.ROLLED_BACK, said
    for name in PRODUCTS:
        if name != "flagbit":
            assert outcome_of(result, name).result == StackResult.APPLIED
            assert not session.ran(rf"/opt/vpsctl/previous/{name}/\. /")  # never put back
    assert session.ran(r"/opt/vpsctl/previous/flagbit/\. /")
    # its lines stay together, between the stacks before and after it
    lines = said.splitlines()
    starts = [next(i for i, s in enumerate(lines) if s.startswith(f"{n}: ")) for n in PRODUCTS]
    assert starts == sorted(starts)
    flagbit = lines[starts[2] : starts[3]]
    assert all(not line.startswith(("documint", "cronping", "webhookvault")) for line in flagbit)
    assert any("rolled back to the previous version" in line for line in flagbit)


def test_an_error_in_one_stack_ends_every_worker_and_is_raised(
    prod: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, session = products_changed(prod)

    def bug(command: str) -> Result:
        raise RuntimeError("a bug in cronping's step")

    session.answer(r"docker compose -p cronping up ", bug)
    monkeypatch.setattr(Applier, "stack_workers", 1)
    with pytest.raises(RuntimeError, match="a bug in cronping"):
        run_applier(spec, session)
    assert not stacks_running()
    # one at a time: the stacks after it never started, as in a run without threads
    assert session.ran(r"docker compose -p documint up ")
    assert not session.ran(r"docker compose -p (flagbit|webhookvault) ")


def test_an_interrupt_cancels_the_running_stacks_and_waits_for_them() -> None:
    cancelled = threading.Event()
    started: list[str] = []

    def work(name: str) -> str:
        started.append(name)
        if name == "a":
            # Ctrl-C, while the main thread waits for the stacks
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
            assert cancelled.wait(20), "cancel was not called"
            time.sleep(0.1)  # still running when the interrupt is handled: it is waited for
        return name

    lanes = Lanes(io.StringIO(), ["a", "b", "c"])
    with pytest.raises(KeyboardInterrupt):
        run_in_lanes(lanes, work, 1, cancelled.set)
    assert cancelled.is_set()
    assert not stacks_running()
    assert started == ["a"]  # the queued stacks never start


def test_lanes_print_in_order_the_first_one_live() -> None:
    out = io.StringIO()
    lanes = Lanes(out, ["a", "b", "c"])
    a, b, c = lanes.lanes
    lanes.say(b, "b1")
    lanes.say(c, "c1")
    lanes.say(a, "a1")
    assert out.getvalue() == "a1\n"  # the head speaks live, the others wait
    lanes.finish(c)
    assert out.getvalue() == "a1\n"
    lanes.finish(a)
    assert out.getvalue() == "a1\nb1\n"  # b is the head now, c waits for it
    lanes.say(b, "b2")
    assert out.getvalue() == "a1\nb1\nb2\n"
    lanes.finish(b)
    assert out.getvalue() == "a1\nb1\nb2\nc1\n"


def test_stacks_start_in_their_own_order_and_are_told_in_the_spec_s() -> None:
    out = io.StringIO()
    lanes = Lanes(out, ["a", "b", "c"])
    ran: list[str] = []

    def work(name: str) -> str:
        ran.append(name)
        lanes.say(lanes.lanes["abc".index(name)], f"{name} said")
        return name.upper()

    assert run_in_lanes(lanes, work, 1, lambda: None, start=[2, 0, 1]) == ["A", "B", "C"]
    assert ran == ["c", "a", "b"]
    assert out.getvalue() == "a said\nb said\nc said\n"


def test_the_stacks_with_most_services_start_first(prod: Path) -> None:
    spec = load_spec(prod / INV)
    session = converged_session(spec)
    applier = Applier(spec, session, io.StringIO())
    names = [n for n, s in applier.desired.stacks.items() if s.role != "edge"]
    changes = {c.stack: c for c in applier.plan.stacks}
    for name in names:  # every stack recreated
        changes[name] = dataclasses.replace(changes[name], action="recreate")
    order = [names[i] for i in applier.start_order(names, changes)]
    assert order == [
        "plausible",  # app, Postgres, ClickHouse
        "ghost",
        "listmonk",
        "documint",
        "cronping",
        "flagbit",
        "webhookvault",
    ]


# ── the images come while the stacks start ──────────────────────────────────────────────

STANDINS = {  # stack → (its image, the stand-in's PRODUCT)
    "documint": ("ghcr.io/lumen-studio/documint:2.4.1", "DocuMint"),
    "flagbit": ("ghcr.io/lumen-studio/flagbit:3.2.5", "FlagBit"),
}


def two_standins(root: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Spec, ScriptedSession]:
    """A converged host running the registry images of documint and flagbit, and a spec that
    maps both to stand-ins the box lacks: documint's light (10 bytes), flagbit's heavy."""
    session = converged_session(load_spec(root / INV))
    host = root / INV / "host.yaml"
    host.write_text(
        host.read_text()
        + "\nimages:\n"
        + "".join(
            f"  {ref}: {{standin: product, args: {{PRODUCT: {product}}}}}\n"
            for ref, product in STANDINS.values()
        )
    )
    spec = load_spec(root / INV)
    tags = {n: s.images[0].ref for n, s in render_spec(spec).stacks.items() if n in STANDINS}
    weights = {tags["documint"]: 10, tags["flagbit"]: 500_000_000}
    monkeypatch.setattr(standins, "build", lambda *_: None)
    monkeypatch.setattr(localdocker, "image_sizes", lambda refs: {r: weights[r] for r in refs})
    # an image change snapshots the stack's data first
    session.answer(r"vpsctl-backup backup pre-apply", stdout="@@snapshot 0123abcd\n")
    return spec, session


def test_a_stack_starts_as_soon_as_its_own_images_are_on_the_box(
    prod: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """documint's light image goes first and documint starts while flagbit's heavy one is
    still on its way; yet the run reads as if every image had come before any stack."""
    spec, session = two_standins(prod, monkeypatch)
    documint_up = threading.Event()

    def up(command: str) -> Result:
        documint_up.set()
        return Result(True, "", "")

    def heavy(command: str) -> Result:
        # answered only once documint has started: a run that brought every image before
        # any stack would wait here in vain
        return Result(documint_up.wait(10), "", "" if documint_up.is_set() else "never started")

    session.answer(r"-p documint up", up)
    session.answer(r"^ship .*flagbit", heavy)
    result, said = run_applier(spec, session)
    assert result.ok, session.log()
    assert documint_up.is_set()
    ships = [c.command for c in session.calls if c.kind == "ship"]
    assert [s.split("/")[-1].split(":")[0] for s in ships] == [
        "product-documint",
        "product-flagbit",
    ]
    lines = said.splitlines()
    last_image_line = max(i for i, line in enumerate(lines) if line.startswith("shipped "))
    first_stack_line = min(i for i, line in enumerate(lines) if line.startswith("documint: "))
    assert last_image_line < first_stack_line, said
    changed = [str(c) for c in journal_of(session)["changed"]]  # type: ignore[attr-defined]
    shipped = [i for i, c in enumerate(changed) if c.startswith("images shipped: ")]
    assert len(shipped) == 2 and max(shipped) < changed.index("documint: recreate → applied")


def test_images_that_fail_stop_the_run_and_only_their_stacks_wait(
    prod: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, session = two_standins(prod, monkeypatch)
    session.fail(r"^ship .*flagbit", "ssh: connection lost after 1.2 GB")
    with pytest.raises(RemoteError) as raised:
        run_applier(spec, session)
    assert str(raised.value) == (
        "shipping 1 image(s) failed on scripted: ssh: connection lost after 1.2 GB"
    )
    assert session.ran(r"-p documint up"), session.log()  # its image came
    assert not session.ran(r"-p flagbit up")
    assert str(journal_of(session)["result"]).startswith("error: shipping 1 image(s) failed")
    assert not [t for t in threading.enumerate() if t.name.startswith("vpsctl-")]


def archive(members: dict[str, bytes | None]) -> bytes:
    """A tar of ``members`` (None: a directory)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


class _Channel:
    def __init__(self) -> None:
        self.data = bytearray()

    def sendall(self, data: bytes) -> None:
        self.data += data


def test_an_archive_leaves_out_the_layers_an_earlier_one_sent() -> None:
    base = {"aaa": None, "aaa/layer.tar": b"base" * 20_000, "aaa/json": b"{}"}
    top = {"bbb": None, "bbb/layer.tar": b"top", "cfg.json": b"{}"}
    index = {"manifest.json": b"[]", "repositories": b"{}"}
    shipped: set[str] = set()
    first = _Channel()
    sent = _copy_archive(
        io.BytesIO(archive({**base, **index})), _ChannelSink(first, None, 1, None), shipped
    )
    assert sent == set(base)  # the archive's own index is never taken for a layer
    second = _Channel()
    sink = _ChannelSink(second, None, 1, None)
    sent = _copy_archive(io.BytesIO(archive({**base, **top, **index})), sink, sent)
    # the big layer goes once; small members (a layer's metadata, an image's config, which
    # docker load reads from the archive even for an image it holds) go again
    assert sent == set(top) | {"aaa", "aaa/json"}
    with tarfile.open(fileobj=io.BytesIO(bytes(second.data))) as tar:
        assert tar.getnames() == [
            "aaa",
            "aaa/json",
            "bbb",
            "bbb/layer.tar",
            "cfg.json",
            "manifest.json",
            "repositories",
        ]
        member = tar.extractfile("bbb/layer.tar")
        assert member is not None and member.read() == b"top"
    assert sink.sent == len(second.data) < len(first.data)


def test_an_image_config_sent_before_goes_again_for_a_second_ref_of_one_image() -> None:
    """Two refs of one stand-in (postgres 16 and 17) are one image: the second archive
    names the config the first one sent, and docker load fails without it."""
    layer = {"aaa": None, "aaa/layer.tar": b"x" * 100_000}
    config = {"cfg.json": b'{"config": {}}'}
    index = {"manifest.json": b"[]"}
    sent = _copy_archive(
        io.BytesIO(archive({**layer, **config, **index})),
        _ChannelSink(_Channel(), None, 1, None),
        set(),
    )
    again = _Channel()
    _copy_archive(
        io.BytesIO(archive({**layer, **config, **index})),
        _ChannelSink(again, None, 1, None),
        sent,
    )
    with tarfile.open(fileobj=io.BytesIO(bytes(again.data))) as tar:
        assert tar.getnames() == ["aaa", "cfg.json", "manifest.json"]
