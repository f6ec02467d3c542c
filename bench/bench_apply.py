"""Plan and apply on a real box: the example studio on a fresh sandbox, then no-op runs.

Measured in one run, on one fresh sandbox box:
- the fresh-box apply (bootstrap, stand-ins shipped, every stack health-gated), once;
- a no-op plan and a no-op apply of the converged studio (in-process: load with a warm
  YAML cache, render, read the host, plan — and for apply, everything it then checks);
- a naive pyinfra deploy of the same rendered files, one ``files.put`` per file: its change
  detection in-process (the prepare phase, the commands counted), and a real no-op run of
  the pyinfra CLI (``pyinfra -y``: the files are identical, nothing changes). pyinfra 3's
  ``--dry`` skips change detection altogether ("Skipping change detection"), so a ``--dry``
  run measures nothing but connecting;
each at loopback latency and behind a proxy adding 25 ms each way (a 50 ms RTT VPS), with
the number of SSH commands each one sends.

Usage: python bench/bench_apply.py [--runs N] [--write bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyinfra.api.config import Config  # noqa: E402
from pyinfra.api.inventory import Inventory  # noqa: E402
from pyinfra.api.operation import add_op  # noqa: E402
from pyinfra.api.state import State  # noqa: E402
from pyinfra.connectors.ssh import SSHConnector  # noqa: E402
from pyinfra.operations import files  # noqa: E402

from bench.latency import DelayProxy  # noqa: E402
from bench.report import publish  # noqa: E402
from tests.e2e.conftest import studio_for  # noqa: E402
from vpsctl.core.facts import FACTS_SCRIPT, parse  # noqa: E402
from vpsctl.core.plan import make_plan  # noqa: E402
from vpsctl.core.render import Desired  # noqa: E402
from vpsctl.host.remote import Session, Target  # noqa: E402
from vpsctl.local import sandbox  # noqa: E402
from vpsctl.ops.apply import Applier  # noqa: E402
from vpsctl.ops.audit import audit  # noqa: E402
from vpsctl.ops.inputs import render_spec  # noqa: E402
from vpsctl.spec.loader import load_spec  # noqa: E402
from vpsctl.spec.studio import Spec  # noqa: E402

SECTION = "## apply and plan on a sandbox box"
COMMANDS = [0]
_original = SSHConnector.run_shell_command


def _counting(self: Any, *args: Any, **kwargs: Any) -> Any:
    COMMANDS[0] += 1
    return _original(self, *args, **kwargs)


SSHConnector.run_shell_command = _counting  # type: ignore[method-assign]


def timed(func: Callable[[], int], runs: int) -> tuple[list[float], int]:
    samples, commands = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        commands = func()
        samples.append(time.perf_counter() - start)
    return samples, commands


@contextmanager
def via(info: sandbox.SandboxInfo, one_way: float, tmp: Path) -> Iterator[Target]:
    """A Target for the box, directly or through the delay proxy (host keys re-keyed)."""
    if one_way == 0:
        yield Target(
            info.name, info.address, info.ssh_port, info.user, info.key_path, info.known_hosts_path
        )
        return
    with DelayProxy(info.ssh_port, one_way) as proxy:
        known = tmp / f"known_hosts_{proxy.port}"
        known.write_text(
            "".join(
                line.replace(f"[127.0.0.1]:{info.ssh_port}", f"[127.0.0.1]:{proxy.port}") + "\n"
                for line in info.host_keys
            )
        )
        yield Target(info.name, "127.0.0.1", proxy.port, info.user, info.key_path, known)


def noop_plan(inventory: Path, target: Target) -> int:
    spec = load_spec(inventory)
    desired = render_spec(spec)
    with Session(target) as session:
        facts = parse(session.run(FACTS_SCRIPT).stdout)
        plan = make_plan(spec.host.name, desired, facts)
        assert not plan.changes, plan.summary()
        return session.commands


def noop_apply(inventory: Path, target: Target) -> int:
    spec = load_spec(inventory)
    with Session(target) as session:
        applier = Applier(spec, session, io.StringIO())
        result = applier.apply()
        assert result.ok and not result.plan.changes
        return session.commands


def full_audit(inventory: Path, target: Target) -> int:
    spec = load_spec(inventory)
    with Session(target) as session:
        report = audit(spec, session)
        assert report.ok, report.summary()
        return session.commands


def naive_dry(desired: Desired, target: Target) -> int:
    """One files.put per rendered file, prepare phase only (what --dry runs)."""
    data = {
        "ssh_hostname": target.address,
        "ssh_port": target.port,
        "ssh_user": target.user,
        "ssh_key": str(target.key),
        "ssh_known_hosts_file": str(target.known_hosts),
        "ssh_strict_host_key_checking": "yes",
    }
    inventory = Inventory(([("box", data)], {}))  # type: ignore[no-untyped-call]
    state = State(inventory=inventory, config=Config())  # type: ignore[no-untyped-call]
    host = inventory.get_host("box")
    host.connect(raise_exceptions=True)
    state.activate_host(host)
    COMMANDS[0] = 0
    for f in desired.files.values():
        add_op(
            state,
            files.put,
            src=io.BytesIO(f.content),
            dest=f.path,
            mode=f"{f.mode:o}",
            user="root",
            group="root",
        )
    count = COMMANDS[0]
    host.disconnect()
    return count


def naive_cli(desired: Desired, target: Target, tmp: Path) -> float:
    tree = tmp / "tree"
    deploy = tmp / "naive_deploy.py"
    lines = ["from pyinfra.operations import files", ""]
    for f in desired.files.values():
        local = tree / f.path.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(f.content)
        lines.append(
            f"files.put(src={str(local)!r}, dest={f.path!r}, mode={f'{f.mode:o}'!r}, "
            "user='root', group='root')"
        )
    deploy.write_text("\n".join(lines) + "\n")
    cmd = [
        str(ROOT / ".venv/bin/pyinfra"),
        "-y",
        "--user",
        target.user,
        "--port",
        str(target.port),
        "--key",
        str(target.key),
        "--data",
        f"ssh_known_hosts_file={target.known_hosts}",
        "--data",
        "ssh_strict_host_key_checking=yes",
        target.address,
        str(deploy),
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        os.environ["VPSCTL_STATE_DIR"] = str(tmp / "state")
        name = "bench-apply"
        info = sandbox.up(name)
        try:
            inventory = studio_for(tmp, info) / "inventory/sandbox"  # no backup: not measured here
            spec: Spec = load_spec(inventory)
            start = time.perf_counter()
            with via(info, 0, tmp) as direct, Session(direct) as session:
                result = Applier(spec, session, sys.stderr).apply()
            fresh = time.perf_counter() - start
            assert result.ok
            rows.append(
                (
                    "fresh-box apply (bootstrap, 11 images shipped incl. the real Ghost 6.65, "
                    "8 stacks, first launches claimed)",
                    f"{fresh:.1f} s",
                    "1 run",
                    "-",
                )
            )
            desired = render_spec(spec)
            for one_way in (0.0, 0.025):
                rtt = "loopback" if one_way == 0 else f"{one_way * 2000:.0f} ms RTT"
                with via(info, one_way, tmp) as target:
                    plans, plan_cmds = timed(partial(noop_plan, inventory, target), args.runs)
                    applies, apply_cmds = timed(partial(noop_apply, inventory, target), args.runs)
                    naives, naive_cmds = timed(partial(naive_dry, desired, target), args.runs)
                    audits, audit_cmds = timed(partial(full_audit, inventory, target), args.runs)
                    cli = [naive_cli(desired, target, tmp) for _ in range(max(2, args.runs // 3))]
                median = statistics.median
                rows.append(
                    (
                        f"audit of the whole studio (~80 checks), {rtt}",
                        f"{median(audits) * 1000:.0f} ms",
                        f"{audit_cmds} SSH commands",
                        f"{median(audits) / median(plans):.1f}x",
                    )
                )
                rows += [
                    (
                        f"no-op plan, {rtt}",
                        f"{median(plans) * 1000:.0f} ms",
                        f"{plan_cmds} SSH command(s)",
                        "1x",
                    ),
                    (
                        f"no-op apply, {rtt}",
                        f"{median(applies) * 1000:.0f} ms",
                        f"{apply_cmds} SSH commands",
                        f"{median(applies) / median(plans):.1f}x",
                    ),
                    (
                        f"naive pyinfra, {len(desired.files)} x files.put, dry, in-process, {rtt}",
                        f"{median(naives) * 1000:.0f} ms",
                        f"{naive_cmds} SSH commands",
                        f"{median(naives) / median(plans):.1f}x",
                    ),
                    (
                        f"naive pyinfra CLI, a real no-op run of the same {len(desired.files)} "
                        f"files.put (process included), {rtt}",
                        f"{median(cli) * 1000:.0f} ms",
                        "-",
                        f"{median(cli) / median(plans):.1f}x",
                    ),
                ]
        finally:
            sandbox.down(name)
    lines = [
        SECTION,
        "",
        f"Command: `.venv/bin/python bench/bench_apply.py --runs {args.runs} --write "
        "bench/RESULTS.md`",
        f"Machine: {platform.machine()}, Python {platform.python_version()}; the box is a "
        "sandbox container on the same machine. One run; medians; ratios against the no-op "
        "plan of the same latency.",
        "",
        "| what | median | SSH commands | vs no-op plan |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
    ]
    report = "\n".join(lines)
    publish(args.write, SECTION, report)


if __name__ == "__main__":
    main()
