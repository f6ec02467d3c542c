"""A fast start (issue 12): `vpsctl validate` against a bare `python -c pass`, and the 10x
studio (71 stacks) against the example, all in one run, interleaved.

Every round runs each command once, in turn, so a busy machine slows them all alike; the
report gives medians and each one's ratio to `python -c pass` of the same run. Measured:
- `vpsctl validate` of the example (sandbox inventory, generated secrets): a cache hit (the
  usual case: the studio was validated before and nothing changed) and a full validation
  (`VPSCTL_NO_CACHE=1`: what the first run after an edit pays);
- the same two for the 10x studio (bench_render's generator: the example's app stacks
  copied nine times, with their own domains, secrets and files);
- with ``--before DIR`` (an export of an older tree, e.g. ``git archive HEAD | tar -x -C
  DIR``), the full validate of that tree too, for a before/after in one run;
- in-process `load_spec` with a cold YAML cache, example and 10x (no process, no imports).

Usage: python bench/bench_start.py [--runs N] [--before DIR] [--write bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_render import fill_secrets, make_tenfold  # noqa: E402
from bench.report import publish  # noqa: E402
from vpsctl.spec.loader import load_spec  # noqa: E402
from vpsctl.spec.yamlsource import _parse_cached  # noqa: E402

SECTION = "## A fast start: validate vs `python -c pass`, and the 10x studio (issue 12)"
PYTHON = Path(sys.executable)
VPSCTL = PYTHON.parent / "vpsctl"


def studios(tmp: Path) -> dict[str, Path]:
    """The example (sandbox inventory; its prod inventory too, the 10x's like) and the 10x
    studio (prod inventory), with secrets."""
    found: dict[str, Path] = {}
    for label in ("example", "example-prod", "10x"):
        root = tmp / label
        for name in ("stacks", "inventory"):
            shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("secrets.env"))
        if label != "example":
            inventory = make_tenfold(root) if label == "10x" else root / "inventory/prod"
            host = inventory / "host.yaml"  # test-shaped Stripe keys: no live mode
            host.write_text(host.read_text().replace("stripe_mode: live\n", ""))
            fill_secrets(inventory)
        else:
            inventory = root / "inventory/sandbox"
            subprocess.run(
                [VPSCTL, "secrets", "generate", "-i", inventory], check=True, capture_output=True
            )
        found[label] = inventory
    return found


def command(argv: list[str | Path], cwd: Path, env: dict[str, str]) -> Callable[[], None]:
    def run() -> None:
        subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)

    return run


def interleaved(commands: dict[str, Callable[[], None]], runs: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for run in commands.values():  # warm-up: page cache, .pyc files, the validate cache
        run()
    for _ in range(runs):
        for name, run in commands.items():
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    return samples


def importtime(env: dict[str, str], module: str, top: int = 6) -> list[str]:
    """The heaviest imports (cumulative) of ``module``, from ``python -X importtime``."""
    done = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", f"import {module}"],
        env=env,
        cwd="/",  # not the checkout: its vpsctl/ would come before PYTHONPATH's
        check=True,
        capture_output=True,
        text=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    rows.sort(reverse=True)
    return [f"{us / 1000:7.1f} ms {name}" for us, name in rows[:top]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--before", type=Path, help="an older source tree, for a before/after")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if k not in ("VPSCTL_NO_CACHE", "PYTHONPATH")}
    full_env = {**env, "VPSCTL_NO_CACHE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        found = studios(Path(tmp))
        example, prod, tenfold = found["example"], found["example-prod"], found["10x"]
        ex_root = example.parent.parent
        commands = {"`python -c pass`": command([PYTHON, "-c", "pass"], ex_root, env)}
        for label, inventory in (("example", example), ("example prod", prod), ("10x", tenfold)):
            root = inventory.parent.parent  # run from the studio, as an operator would
            argv: list[str | Path] = [VPSCTL, "validate", "-i", inventory.relative_to(root)]
            commands[f"validate, {label}, cache hit"] = command(argv, root, env)
            commands[f"validate, {label}, full (VPSCTL_NO_CACHE=1)"] = command(argv, root, full_env)
        before_env = {**env, "PYTHONPATH": str(args.before)} if args.before else env
        if args.before is not None:
            commands["validate, example, full, before (--before tree)"] = command(
                [PYTHON, "-m", "vpsctl.cli.main", "validate", "-i", "inventory/sandbox"],
                ex_root,
                before_env,
            )
            if not (args.before / "vpsctl/cli/main.py").is_file():
                raise SystemExit(f"{args.before}: no vpsctl/cli/main.py")
        samples = interleaved(commands, args.runs)

        def cold(inventory: Path) -> Callable[[], None]:
            def run() -> None:
                _parse_cached.cache_clear()
                load_spec(inventory)

            return run

        inproc = interleaved(
            {"load_spec cold, example prod": cold(prod), "load_spec cold, 10x": cold(tenfold)},
            max(3, args.runs // 3),
        )
        stacks = {label: len(load_spec(inv).stacks) for label, inv in found.items()}
    imports_now = importtime(env, "vpsctl.cli.main")
    imports_loader = importtime(env, "vpsctl.spec.loader")
    imports_before = importtime(before_env, "vpsctl.cli.main") if args.before else []

    med = {name: statistics.median(s) * 1000 for name, s in (samples | inproc).items()}
    bare = med["`python -c pass`"]
    lines = [
        SECTION,
        "",
        "Command: `.venv/bin/python bench/bench_start.py "
        f"--runs {args.runs}{' --before DIR' if args.before else ''} --write bench/RESULTS.md`"
        + (" (DIR: `git archive HEAD | tar -x -C DIR` of the tree before)" if args.before else ""),
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), Python "
        f"{platform.python_version()}; example: {stacks['example']} stacks, 10x: "
        f"{stacks['10x']} stacks. {args.runs} interleaved rounds, one run; medians.",
        "",
        "| what | median | min | max | vs `python -c pass` |",
        "|---|---|---|---|---|",
    ]
    for name, s in samples.items():
        lines.append(
            f"| {name} | {med[name]:.0f} ms | {min(s) * 1000:.0f} ms | {max(s) * 1000:.0f} ms "
            f"| {med[name] / bare:.1f}x |"
        )
    for name, s in inproc.items():
        lines.append(
            f"| {name} (in-process) | {med[name]:.0f} ms | {min(s) * 1000:.0f} ms | "
            f"{max(s) * 1000:.0f} ms | - |"
        )
    hit = med["validate, example, cache hit"]
    full = med["validate, example, full (VPSCTL_NO_CACHE=1)"]
    prod_full = med["validate, example prod, full (VPSCTL_NO_CACHE=1)"]
    lines += [
        "",
        f"- validate of the example: {hit:.0f} ms on a cache hit ({hit / bare:.1f}x a bare "
        f"Python start), {full:.0f} ms in full ({full / bare:.1f}x).",
        "- the 10x studio against the example (both prod inventories): "
        f"{med['validate, 10x, cache hit'] / med['validate, example prod, cache hit']:.1f}x "
        "on a hit, "
        f"{med['validate, 10x, full (VPSCTL_NO_CACHE=1)'] / prod_full:.1f}x in full "
        f"(process), {med['load_spec cold, 10x'] / med['load_spec cold, example prod']:.1f}x "
        "for the in-process cold load alone.",
    ]
    if args.before:
        old = med["validate, example, full, before (--before tree)"]
        lines.append(
            f"- before: a full validate of the example took {old:.0f} ms ({old / bare:.1f}x)."
        )
    lines += [
        "",
        "Heaviest imports (cumulative), `python -X importtime -c 'import vpsctl.cli.main'`:",
    ]
    if args.before:
        lines += ["", "before:", "", "```", *imports_before, "```", "", "now:"]
    lines += [
        "",
        "```",
        *imports_now,
        "```",
        "",
        "and what a full validate adds (`import vpsctl.spec.loader`):",
        "",
        "```",
        *imports_loader,
        "```",
        "",
    ]
    report = "\n".join(lines)
    publish(args.write, SECTION, report)


if __name__ == "__main__":
    main()
