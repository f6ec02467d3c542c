"""Backup, restore and the disaster-recovery rebuild of the example studio, on sandbox boxes.

Measured in one run: a studio box with data written through Caddy (records in every product,
Ghost posts, Listmonk subscribers, Plausible events), a backup host reached over SFTP, and a
fresh box to rebuild onto:
- the first backup (repository created, every dump and volume, secrets.env): time, bytes
  read, bytes added, the repository's size on the backup host;
- repeated backups of the unchanged studio (dumps are made again; restic adds only what
  changed): median time and bytes added;
- a restore of every stack (stop, put back, start, row counts compared): median time;
- the rebuild onto the fresh box: the recovery time of each phase and in total.

Usage: python bench/bench_backup.py [--runs N] [--rebuilds N] [--records N]
[--write bench/RESULTS.md]

The boxes are named ``bench-src``, ``bench-bkp`` and ``bench-new``; docker's container names
are global to the machine, so a second checkout running this bench beside the first sets
``VPSCTL_BENCH_BOXES=PREFIX`` to name them ``PREFIX-src`` … instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from tests.e2e.conftest import on_box, studio_for  # noqa: E402
from tests.e2e.studio_data import visible_data, write_data  # noqa: E402
from tests.helpers import run_cli  # noqa: E402
from vpsctl.errors import VpsctlError  # noqa: E402
from vpsctl.local import sandbox  # noqa: E402
from vpsctl.spec.units import human_size  # noqa: E402

SECTION = "## backup, restore and rebuild on sandbox boxes"
INV = "inventory/sandbox"


def cli(root: Path, *args: str) -> tuple[float, str, str]:
    started = time.perf_counter()
    result = run_cli(root, *args)
    took = time.perf_counter() - started
    if result.code != 0:
        raise SystemExit(f"vpsctl {' '.join(args)} failed:\n{result.err[-3000:]}")
    return took, result.out, result.err


class PeakMemory:
    """The highest resident memory (cgroup v1 ``total_rss``: page cache left out) of a sandbox
    box while the block runs, sampled every second: its container's, plus the containers its
    own docker runs (with the host's cgroup namespace their cgroups sit beside the box's, not
    under it: they are listed by the box's ``docker ps``)."""

    ROOT = Path("/sys/fs/cgroup/memory/docker")

    def __init__(self, box: sandbox.SandboxInfo) -> None:
        self.box = box
        self.peak = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def rss(self, container_id: str) -> int:
        try:
            text = (self.ROOT / container_id / "memory.stat").read_text()
        except OSError:
            return 0  # gone, or no cgroup v1 here
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "total_rss":
                return int(value)
        return 0

    def sample(self) -> None:
        inner: list[str] = []
        while not self.done.wait(1.0):
            with contextlib.suppress(AssertionError, OSError, VpsctlError):
                inner = on_box(self.box, "docker ps -q --no-trunc 2>/dev/null; true").split()
            total = self.rss(self.box.container_id) + sum(self.rss(i) for i in inner)
            self.peak = max(self.peak, total)

    def __enter__(self) -> PeakMemory:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


def spread(values: list[float]) -> str:
    """Every value of a median of several, or "" for one."""
    return "runs: " + ", ".join(f"{v:.1f}" for v in values) if len(values) > 1 else ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--records", type=int, default=300, help="rows per product")
    parser.add_argument("--write", type=Path)
    parser.add_argument("--rebuilds", type=int, default=1, help="rebuilds, each onto a fresh box")
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        os.environ["VPSCTL_STATE_DIR"] = str(tmp / "state")
        prefix = os.environ.get("VPSCTL_BENCH_BOXES", "bench")
        names = [f"{prefix}-src", f"{prefix}-bkp", f"{prefix}-new"]
        source, backup_host = sandbox.up(names[0]), sandbox.up(names[1])
        try:
            root = studio_for(tmp / "studio", source, backup=backup_host)
            cli(root, "apply", "-i", INV, "-y")
            write_data(source, records=args.records)
            seen = visible_data(source)

            took, out, _ = cli(root, "backup", "-i", INV, "--init", "--json")
            first = json.loads(out)
            repo = on_box(backup_host, "du -sb /srv/restic | cut -f1")
            rows.append(
                (
                    f"first backup ({len(first['items'])} items, repository created)",
                    f"{took:.1f} s",
                    f"{human_size(first['total_bytes'])} read, "
                    f"{human_size(first['added_bytes'])} new before compression; the "
                    f"repository on the backup host: {human_size(int(repo))} (zstd)",
                )
            )
            again: list[float] = []
            added: list[int] = []
            for _ in range(args.runs):
                took, out, _ = cli(root, "backup", "-i", INV, "--json")
                again.append(took)
                added.append(json.loads(out)["added_bytes"])
            rows.append(
                (
                    f"backup of the unchanged studio (median of {args.runs})",
                    f"{statistics.median(again):.1f} s",
                    f"{human_size(int(statistics.median(added)))} new (dumps re-made, "
                    "deduplicated; forget --prune each time)",
                )
            )
            restores: list[float] = []
            for _ in range(max(1, args.runs // 2)):
                took, _, err = cli(root, "restore", "-i", INV, "-y")
                assert "row counts match the snapshot" in err, err[-2000:]
                restores.append(took)
            rows.append(
                (
                    f"restore of every stack, audit included (median of {len(restores)})",
                    f"{statistics.median(restores):.1f} s",
                    "stop, put back, start, row counts compared",
                )
            )
            sandbox.down(names[0])
            host = root / INV / "host.yaml"
            host.write_text(host.read_text().replace(f"name: {names[0]}\n", f"name: {names[2]}\n"))
            phases: dict[str, list[float]] = {}
            totals: list[float] = []
            commands: list[float] = []
            peak = 0
            for _ in range(args.rebuilds):  # each onto a fresh box
                sandbox.down(names[2])
                fresh = sandbox.up(names[2])
                with PeakMemory(fresh) as memory:
                    took, out, _ = cli(root, "rebuild", "-i", INV, "--json")
                report = json.loads(out)
                assert report["ok"] and visible_data(fresh) == seen
                for phase, seconds in report["phases"].items():
                    phases.setdefault(phase, []).append(seconds)
                totals.append(report["total_seconds"])
                commands.append(took)
                peak = max(peak, memory.peak)
            for phase, seconds in phases.items():
                rows.append(
                    (f"rebuild: {phase}", f"{statistics.median(seconds):.1f} s", spread(seconds))
                )
            rows.append(
                (
                    "rebuild: total recovery time (fresh box → audit green)"
                    + (f" (median of {len(totals)})" if len(totals) > 1 else ""),
                    f"{statistics.median(totals):.1f} s",
                    f"whole command {statistics.median(commands):.1f} s; data identical; "
                    + spread(totals),
                )
            )
            if peak:
                rows.append(
                    (
                        "rebuild: peak resident memory of the box",
                        human_size(peak),
                        "cgroup total_rss of the box and of the containers it runs (page "
                        "cache left out), sampled every second; stand-in images, not the real "
                        "apps",
                    )
                )
        finally:
            for name in names:
                sandbox.down(name)
    lines = [
        SECTION,
        "",
        "Command: `.venv/bin/python bench/bench_backup.py "
        f"--runs {args.runs} --rebuilds {args.rebuilds} --records {args.records} "
        "--write bench/RESULTS.md`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; three sandbox boxes on this machine (studio, SFTP "
        "backup host, rebuild target); stand-in images; "
        f"{args.records} records per product, Ghost posts, Listmonk subscribers, Plausible "
        "events written through Caddy first.",
        "",
        "| what | time | notes |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.write, SECTION, text)


if __name__ == "__main__":
    main()
