"""A cluster's no-op `vpsctl plan` (issue 14): one node against three, at loopback and at
50 ms RTT, as a whole process.

The same studio twice, on fresh sandbox boxes brought up here (and torn down at the end,
unless ``--keep``): as a ONE-node cluster (every stack on box ``bc-one``) and as the
example's THREE-node cluster (``bc-front``, ``bc-media``, ``bc-stats``: products and edge,
Ghost and Listmonk, Plausible). Each is applied once, then its no-op plan (exit 0) is run in
interleaved rounds (every command once a round, in turn), directly and through
bench/latency.py's delay proxy in front of every node's SSH port (25 ms each way). Through
the proxies the TCP connections and client turns of each run are counted, summed over the
nodes. The plan reads every node at once (a thread, a connection and ONE command each), so
three nodes should cost about one node's round trips, not three.

Usage: python bench/bench_cluster.py [--runs N] [--keep] [--write bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_plan import (  # noqa: E402
    ONE_WAY,
    CountingProxy,
    Sample,
    boxes,
    child_env,
    proxied_state,
    run_child,
)
from bench.report import publish  # noqa: E402
from tests.helpers import copy_studio  # noqa: E402

SECTION = "## A cluster's no-op plan: one node vs three, loopback and 50 ms (issue 14)"
INV = "inventory/sandbox-cluster"
VPSCTL = ROOT / ".venv/bin/vpsctl"
THREE = {"front": "bc-front", "media": "bc-media", "stats": "bc-stats"}
ONE = "bc-one"


def three_nodes(root: Path) -> Path:
    """The example cluster, its nodes pointed at this bench's boxes."""
    copy_studio(root)
    host = root / INV / "host.yaml"
    text = host.read_text()
    for node, box in THREE.items():
        text = text.replace(f"sandbox: {{name: {node}}}", f"sandbox: {{name: {box}}}")
    host.write_text(text)
    return root


def one_node(root: Path) -> Path:
    """The same studio as a cluster of one node: every stack on it."""
    copy_studio(root)
    host = root / INV / "host.yaml"
    text = host.read_text()
    start, end = text.index("nodes:\n"), text.index("# The sandbox's kernel")
    nodes = f"nodes:\n  one:\n    sandbox: {{name: {ONE}}}\n    memory: 7800m\n    edge: true\n"
    text = text[:start] + nodes + text[end:]
    for node in THREE:
        text = text.replace(f"    node: {node}\n", "    node: one\n")
    host.write_text(text)
    return root


def converge(studio: Path, env: dict[str, str]) -> str:
    """Apply ``studio`` until its plan is a no-op (twice at most); how long the first apply
    took."""
    took = ""
    for _ in range(2):
        done = run_child([str(VPSCTL), "apply", "-i", INV, "-y"], studio, env)[0]
        took = took or f"{done.wall:.0f} s"
        out = run_child([str(VPSCTL), "plan", "-i", INV], studio, env, expect=(0, 2))[1]
        if out.rstrip().splitlines()[-1].startswith("No changes."):
            return took
    raise RuntimeError(f"{studio}: still not a no-op after two applies")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="leave the boxes up")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    state = work / "state"  # the boxes' records and keys: this run's own
    os.environ["VPSCTL_STATE_DIR"] = str(state)
    names = [ONE, *THREE.values()]
    with boxes(names, args.keep) as up, ExitStack() as stack:
        direct = child_env(state)
        studios = {"1 node": one_node(work / "one"), "3 nodes": three_nodes(work / "three")}
        applied = {}
        for label, studio in studios.items():
            run_child([str(VPSCTL), "secrets", "generate", "-i", INV], studio, direct)
            print(f"converging the {label} cluster …", file=sys.stderr)
            applied[label] = converge(studio, direct)
        proxies = {n: stack.enter_context(CountingProxy(up[n].ssh_port, ONE_WAY)) for n in names}
        far = work / "state-50ms"
        proxied_state(state, far, {n: (up[n], proxies[n].port) for n in names})
        far_env = child_env(far)
        nodes_of = {"1 node": [ONE], "3 nodes": list(THREE.values())}
        samples: dict[tuple[str, str], list[tuple[Sample, int, int]]] = {}
        for _ in range(args.runs):
            for rtt, env in (("loopback", direct), ("50 ms", far_env)):
                for label, studio in studios.items():
                    mine = [proxies[n] for n in nodes_of[label]] if rtt == "50 ms" else []
                    for proxy in mine:
                        proxy.reset()
                    sample, out, _ = run_child(
                        [str(VPSCTL), "plan", "-i", INV], studio, {**env, "VPSCTL_NO_CACHE": "1"}
                    )
                    assert out.rstrip().splitlines()[-1].startswith("No changes."), out[-400:]
                    connections = sum(p.connections for p in mine)
                    turns = max((p.turns for p in mine), default=0)
                    samples.setdefault((label, rtt), []).append((sample, connections, turns))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    publish(args.write, SECTION, report(samples, applied, args.runs))


def report(
    samples: dict[tuple[str, str], list[tuple[Sample, int, int]]],
    applied: dict[str, str],
    runs: int,
) -> str:
    def med(key: tuple[str, str]) -> float:
        return statistics.median(s.wall for s, _, _ in samples[key])

    lines = [
        SECTION,
        "",
        f"Command: `python bench/bench_cluster.py --runs {runs} --write bench/RESULTS.md` "
        "(fresh sandbox boxes; each cluster applied first: "
        + ", ".join(f"{k} {v}" for k, v in applied.items())
        + "). `vpsctl plan -i inventory/sandbox-cluster` as a whole process, plan cache off "
        "(`VPSCTL_NO_CACHE=1`: load, render, read, plan), exit 0 (no changes); medians of "
        f"{runs} interleaved rounds. Through the proxies (25 ms each way on every node's SSH "
        "port): TCP connections summed over the nodes, client turns of the busiest node.",
        "",
        "| cluster | RTT | wall (median) | CPU (median) | peak RSS | connections | turns |",
        "|---|---|---|---|---|---|---|",
    ]
    for rtt in ("loopback", "50 ms"):
        for label in ("1 node", "3 nodes"):
            got = samples[(label, rtt)]
            cpu = statistics.median(s.cpu for s, _, _ in got)
            rss = max(s.rss_kib for s, _, _ in got) // 1024
            conns = sorted({c for _, c, _ in got}) if rtt == "50 ms" else ["-"]
            turns = sorted({t for _, _, t in got}) if rtt == "50 ms" else ["-"]
            lines.append(
                f"| {label} | {rtt} | {med((label, rtt)):.2f} s | {cpu:.2f} s | {rss} MiB | "
                f"{'/'.join(map(str, conns))} | {'/'.join(map(str, turns))} |"
            )
    lines += [
        "",
        "Ratio 3 nodes / 1 node (medians, same rounds): "
        + "; ".join(
            f"{rtt} {med(('3 nodes', rtt)) / med(('1 node', rtt)):.2f}x"
            for rtt in ("loopback", "50 ms")
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
