"""How long `vpsctl validate` takes on the example studio (issue: "well under a second").

Measures, in one run on a private copy of the example with generated sandbox secrets:
- the whole CLI process, `vpsctl validate -i inventory/sandbox` (interpreter start included),
  in full: ``VPSCTL_NO_CACHE=1`` (bench_start.py measures the cache hit against `python -c pass`);
- `load_spec` in-process with a cold YAML cache (what one CLI run pays after imports);
- `load_spec` in-process with a warm cache (later loads in the same process).

Usage: python bench/bench_validate.py [--runs N] [--write bench/RESULTS.md]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import publish  # noqa: E402
from vpsctl.spec.generate import generate  # noqa: E402
from vpsctl.spec.loader import load_spec  # noqa: E402
from vpsctl.spec.yamlsource import _parse_cached  # noqa: E402

SECTION = "## validate: the example studio"


def timed(func: object, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        func()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("stacks", "inventory", "standins"):
            shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("secrets.env"))
        inventory = root / "inventory/sandbox"
        generate(inventory)
        vpsctl = Path(sys.executable).parent / "vpsctl"

        def cli() -> None:
            subprocess.run(
                [str(vpsctl), "validate", "-i", str(inventory)],
                check=True,
                env={**os.environ, "VPSCTL_NO_CACHE": "1"},
            )

        def cold() -> None:
            _parse_cached.cache_clear()
            load_spec(inventory)

        def warm() -> None:
            load_spec(inventory)

        def imports() -> None:
            subprocess.run([sys.executable, "-c", "import vpsctl.cli.main"], check=True)

        cli()
        results = {
            "`vpsctl validate` process (wall)": timed(cli, args.runs),
            "python -c 'import vpsctl.cli.main' (wall)": timed(imports, args.runs),
            "load_spec, cold YAML cache": timed(cold, args.runs),
            "load_spec, warm YAML cache": timed(warm, args.runs),
        }
        spec = load_spec(inventory)
        services = sum(len(s.services) for s in spec.stacks.values())

    lines = [
        SECTION,
        "",
        "Command: `.venv/bin/python bench/bench_validate.py "
        f"--runs {args.runs} --write bench/RESULTS.md`",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, "
        f"{len(spec.stacks)} stacks, {services} services. Medians of {args.runs} runs, one run.",
        "",
        "| what | median | min | max |",
        "|---|---|---|---|",
    ]
    for name, samples in results.items():
        lines.append(
            f"| {name} | {statistics.median(samples) * 1000:.0f} ms | "
            f"{min(samples) * 1000:.0f} ms | {max(samples) * 1000:.0f} ms |"
        )
    cli_ms = statistics.median(results["`vpsctl validate` process (wall)"]) * 1000
    imp_ms = statistics.median(results["python -c 'import vpsctl.cli.main' (wall)"]) * 1000
    cold_ms = statistics.median(results["load_spec, cold YAML cache"]) * 1000
    lines += [
        "",
        f"Of the {cli_ms:.0f} ms a full validate costs, {imp_ms:.0f} ms is interpreter start "
        f"and the CLI's own imports (the spec modules load lazily) and {cold_ms:.0f} ms is "
        "loading and checking in-process; the rest is importing pydantic, the models and "
        "ruamel. ruamel's pure-Python YAML parser is most of the loading.",
        "",
    ]
    report = "\n".join(lines)
    publish(args.write, SECTION, report)


if __name__ == "__main__":
    main()
