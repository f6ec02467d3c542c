"""`vpsctl plan` as the operator feels it (issue 15): the whole process, on a real box.

One run, on fresh sandbox boxes brought up here and torn down at the end (even on failure):

- box 1 gets the example studio applied once; then, in interleaved rounds (every command
  once a round, in turn, so a busy machine slows them all alike): `python -c pass`;
  `vpsctl plan -i inventory/sandbox` of the converged studio as a whole process (exit 0: no
  changes) with each vpsctl executable given (``--vpsctl PATH``, repeatable; this tree's
  ``.venv/bin/vpsctl`` first), at loopback and at 50 ms RTT (bench/latency.py's DelayProxy
  in front of the box's SSH port: a copy of the sandbox record points at the proxy);
  ansible-core's ``ansible-playbook --check --diff`` of the same rendered files (one
  ``ansible.builtin.copy`` per file, mode and owner), cold (no SSH master running) and warm
  (right after, its ControlPersist master still up); a no-op ``vpsctl apply -y``;
- box 2 holds the 10x studio (bench_render's ``make_tenfold``: 71 stacks) staged, not
  applied (see :func:`stage_tenfold` and the report for exactly what): its no-op plan is
  measured in the same rounds.

Each process is started with ``Popen`` and reaped with ``os.wait4``: wall time, the
child's CPU (user + sys, its reaped children included) and its peak RSS (``ru_maxrss``).
Through the delay proxy, the TCP connections the process opened to the box and its client
turns (the times it spoke again after hearing the box: about the round trips it waited on)
are counted. Then: the memory of the box-side facts script, ``python -X importtime`` of the
plan process, its phases timed in-process, and a cProfile of one whole plan process.

Usage: python bench/bench_plan.py [--runs N] [--vpsctl PATH]... [--write bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import platform
import pstats
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_render import make_tenfold  # noqa: E402
from bench.latency import DelayProxy  # noqa: E402
from bench.report import publish  # noqa: E402
from tests import factsim  # noqa: E402
from tests.e2e.conftest import studio_for  # noqa: E402
from vpsctl.core.facts import facts_script  # noqa: E402
from vpsctl.core.layout import LABEL_STACK  # noqa: E402
from vpsctl.core.render import Desired  # noqa: E402
from vpsctl.host.remote import Session  # noqa: E402
from vpsctl.local import sandbox  # noqa: E402
from vpsctl.local.sandbox import SandboxInfo  # noqa: E402
from vpsctl.ops.inputs import render_spec  # noqa: E402
from vpsctl.spec.loader import load_spec  # noqa: E402

SECTION = "## `vpsctl plan` as a whole process: loopback, 50 ms, Ansible, 10x (issue 15)"
INV = "inventory/sandbox"
PLAN = ["plan", "-i", INV]
PYTHON = ROOT / ".venv/bin/python"
THIS_VPSCTL = ROOT / ".venv/bin/vpsctl"
ANSIBLE_PIN = "ansible-core==2.19.14"
ANSIBLE_VENV = Path.home() / ".cache/vpsctl/bench-ansible"
ONE_WAY = 0.025  # seconds each way: a 50 ms RTT VPS
CHILD_TIMEOUT = 900.0
GNU_TIME = "/usr/bin/time"
RECAP = re.compile(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)")


# ── counting what a process sends through the delay proxy ────────────────────────────────


class CountingProxy(DelayProxy):
    """DelayProxy that counts TCP connections, bytes each way and client turns (a chunk
    from the client after the last thing the proxy saw came from the box: about one round
    trip the client waited on)."""

    def __init__(self, target_port: int, one_way: float) -> None:
        super().__init__(target_port, one_way)
        self.connections = 0
        self.turns = 0
        self.up = 0
        self.down = 0
        self._last = "box"

    def __enter__(self) -> CountingProxy:
        super().__enter__()
        return self

    def reset(self) -> None:
        self.connections = self.turns = self.up = self.down = 0

    def connected(self) -> None:
        self.connections += 1
        self._last = "box"  # the client speaks first: its first chunk is a turn

    def seen(self, side: str, chunk: bytes) -> None:
        if side == "client":
            self.up += len(chunk)
            if self._last == "box":
                self.turns += 1
        else:
            self.down += len(chunk)
        self._last = side


# ── running a whole process ──────────────────────────────────────────────────────────────


@dataclasses.dataclass
class Sample:
    wall: float  # seconds
    cpu: float  # user + sys of the child and its reaped children, seconds
    rss_kib: int  # ru_maxrss: the largest of the child and its reaped children
    connections: int | None = None
    turns: int | None = None
    up: int | None = None
    down: int | None = None


def run_child(
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
    proxy: CountingProxy | None = None,
    expect: tuple[int, ...] = (0,),
) -> tuple[Sample, str, str]:
    """Run ``argv`` to its end; its Sample, stdout and stderr (never printed whole here:
    the callers print only what holds no secret)."""
    if proxy is not None:
        proxy.reset()
    # A child's ru_maxrss starts at its parent's RSS when it forked (Linux keeps the
    # high-water mark across exec): the bench's own ~80 MiB would hide the child's. GNU time
    # (a ~2 MiB process) forks it and reports its ru_maxrss; wall and CPU are taken here
    # (wait4 of time: the child plus time's own ~1 ms).
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r") as rss,
    ):
        wrapped = [GNU_TIME, "-q", "-o", rss.name, "-f", "%M", *argv]
        start = time.perf_counter()
        proc = subprocess.Popen(
            wrapped, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
        watchdog = threading.Timer(CHILD_TIMEOUT, proc.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            watchdog.cancel()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        maxrss = rss.read().split()
    if proc.returncode not in expect:
        tail = "\n".join(stderr.splitlines()[-15:])
        raise RuntimeError(f"{shlex.join(argv)}: exit {proc.returncode} in {cwd}\n{tail}")
    sample = Sample(wall, usage.ru_utime + usage.ru_stime, int(maxrss[-1]))
    if proxy is not None:
        time.sleep(ONE_WAY * 2 + 0.05)  # the last delayed bytes
        sample.connections, sample.turns = proxy.connections, proxy.turns
        sample.up, sample.down = proxy.up, proxy.down
    return sample, stdout, stderr


def python_env(pycache: Path) -> dict[str, str]:
    """This environment for a child, with bytecode cached as an installed package has it:
    not PYTHONDONTWRITEBYTECODE (which this machine's sessions set: every vpsctl module
    would be compiled from source at every start), but a cache directory of the bench's own
    (PYTHONPYCACHEPREFIX), so nothing is written into the trees measured."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VPSCTL_NO_CACHE", "PYTHONDONTWRITEBYTECODE")
        and not k.startswith("ANSIBLE_")
    }
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def child_env(state: Path) -> dict[str, str]:
    env = python_env(state.parent / "pycache")
    env["VPSCTL_STATE_DIR"] = str(state)
    return env


# ── the boxes, directly and behind the proxy ─────────────────────────────────────────────


def proxied_state(state: Path, proxied: Path, boxes: dict[str, tuple[SandboxInfo, int]]) -> None:
    """A sandbox state directory whose records of ``boxes`` (name → (info, proxy port))
    point at their proxies, with the host keys re-keyed to the proxy's port; Pebble's record
    and CA are copied (render reads them for ``tls: pebble``; nothing here starts or stops
    a Pebble)."""
    records = proxied / "sandboxes"
    (records / "pebble").mkdir(parents=True, exist_ok=True)
    for name in ("pebble.json", "tls-ca.pem", "roots.pem"):
        source = state / "sandboxes/pebble" / name
        if source.is_file():
            shutil.copy2(source, records / "pebble" / name)
    for name, (info, port) in boxes.items():
        keys = tuple(
            line.replace(f"[{info.address}]:{info.ssh_port}", f"[127.0.0.1]:{port}")
            for line in info.host_keys
        )
        moved = dataclasses.replace(
            info,
            address="127.0.0.1",
            ssh_port=port,
            host_keys=keys,
            known_hosts_path=records / f"{name}.known_hosts",
        )
        moved.known_hosts_path.write_text("".join(line + "\n" for line in keys))
        (records / f"{name}.json").write_text(json.dumps(moved.to_json(), indent=2) + "\n")


def box_run(info: SandboxInfo, script: str, timeout: int = 600) -> str:
    """``script`` on the box (on stdin of ``sh -s``); its stdout."""
    with Session(info.target()) as session:
        return session.feed(["sh", "-s"], script.encode(), timeout, purpose="bench").stdout


# ── Ansible ──────────────────────────────────────────────────────────────────────────────


def ansible_venv() -> Path:
    """A venv of its own with the pinned ansible-core (made once, reused)."""
    playbook = ANSIBLE_VENV / "bin/ansible-playbook"
    stamp = ANSIBLE_VENV / "bench-pin.txt"
    if playbook.is_file() and stamp.is_file() and stamp.read_text().strip() == ANSIBLE_PIN:
        return playbook
    shutil.rmtree(ANSIBLE_VENV, ignore_errors=True)
    ANSIBLE_VENV.parent.mkdir(parents=True, exist_ok=True)
    base = Path(sys.base_prefix) / "bin/python3"
    subprocess.run([str(base), "-m", "venv", str(ANSIBLE_VENV)], check=True, timeout=300)
    subprocess.run(
        [str(ANSIBLE_VENV / "bin/pip"), "install", "-q", ANSIBLE_PIN],
        check=True,
        timeout=600,
    )
    stamp.write_text(ANSIBLE_PIN + "\n")
    return playbook


@dataclasses.dataclass
class AnsibleSetup:
    playbook: Path  # the ansible-playbook executable
    play: Path
    inventories: dict[str, Path]  # latency label → inventory file
    files: int
    control_dir: Path  # ControlPath directory (default ~/.ansible/cp, moved here to end it)
    workdir: Path
    env: dict[str, str]


def ansible_setup(
    work: Path, rendered: Path, targets: dict[str, tuple[int, Path]], key: Path, user: str
) -> AnsibleSetup:
    """A playbook of one ``copy`` per rendered file and an inventory per latency."""
    tasks = []
    for path in sorted(p for p in rendered.rglob("*") if p.is_file()):
        dest = "/" + str(path.relative_to(rendered))
        tasks.append(
            {
                "name": dest,
                "ansible.builtin.copy": {
                    "src": str(path),
                    "dest": dest,
                    "mode": f"{path.stat().st_mode & 0o7777:04o}",
                    "owner": "root",
                    "group": "root",
                },
            }
        )
    work.mkdir(parents=True, exist_ok=True)
    play = work / "play.yml"  # JSON is YAML
    play.write_text(json.dumps([{"hosts": "box", "gather_facts": False, "tasks": tasks}]))
    inventories = {}
    for label, (port, known_hosts) in targets.items():
        inventory = work / f"inventory-{label.replace(' ', '')}.ini"
        common = f"-o UserKnownHostsFile={known_hosts} -o IdentitiesOnly=yes"
        inventory.write_text(
            f"box ansible_host=127.0.0.1 ansible_port={port} ansible_user={user} "
            f"ansible_ssh_private_key_file={key} ansible_ssh_common_args='{common}'\n"
        )
        inventories[label] = inventory
    control = Path(tempfile.mkdtemp(prefix="cp", dir="/tmp"))  # a short socket path
    env = python_env(work.parent / "pycache")
    env.update(ANSIBLE_SSH_CONTROL_PATH_DIR=str(control), ANSIBLE_NOCOLOR="1")
    return AnsibleSetup(ansible_venv(), play, inventories, len(tasks), control, work, env)


def ansible_argv(setup: AnsibleSetup, label: str, *extra: str) -> list[str]:
    return [
        str(setup.playbook),
        "-i",
        str(setup.inventories[label]),
        "--check",
        "--diff",
        *extra,
        str(setup.play),
    ]


def ansible_checked(setup: AnsibleSetup, stdout: str) -> None:
    """The run connected and found every file as it should be: ok for all, nothing changed
    (only the recap is ever shown: a diff would hold file contents)."""
    recap = RECAP.search(stdout)
    if recap is None:
        raise RuntimeError("ansible-playbook printed no PLAY RECAP")
    ok, changed, unreachable, failed, _ = (int(g) for g in recap.groups())
    if (ok, changed, unreachable, failed) != (setup.files, 0, 0, 0):
        raise RuntimeError(f"ansible was not a no-op check: {recap.group(0)}")


def ansible_masters_exit(setup: AnsibleSetup) -> None:
    """End the ControlPersist masters our runs left (ours, in our control directory)."""
    for sock in setup.control_dir.iterdir():
        subprocess.run(
            ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "box"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    deadline = time.monotonic() + 10
    while any(setup.control_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)


# ── the 10x studio on box 2 ──────────────────────────────────────────────────────────────


def tenfold_studio(root: Path, box: SandboxInfo) -> Path:
    """The example studio for ``box`` made 10x (bench_render's make_tenfold, applied to the
    sandbox inventory), with secrets; its root."""
    studio_for(root, box)
    prod = root / "inventory/prod"
    shutil.rmtree(prod)
    prod.symlink_to("sandbox")  # make_tenfold edits inventory/prod: let it edit this one
    try:
        make_tenfold(root)
    finally:
        prod.unlink()
    subprocess.run(
        [str(THIS_VPSCTL), "secrets", "generate", "-i", INV],
        cwd=root,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return root


def original_of(name: str, originals: set[str]) -> str:
    match = re.fullmatch(r"(.*?)(\d+)", name)
    return match.group(1) if match and name not in originals else name


def stage_tenfold(
    root: Path, box: SandboxInfo, source: SandboxInfo, env: dict[str, str]
) -> dict[str, int]:
    """Put the 10x studio on ``box`` as far as a plan can see, without running its apps.

    Bootstrap by vpsctl (``apply --only bootstrap``); the stand-in images shipped by
    vpsctl's own ``ship_images``; every rendered file written by vpsctl's ``put_files``
    (the same tar upload apply uses), the manifest apply would record (factsim's, with the
    host and bootstrap of the applied example's), the app steps' key files; and for every
    service of every stack a container named and labelled as compose names and labels it
    (the labels and volume mounts of the same service on the applied example box, the
    project renamed), with the service's image, its volumes created with compose's labels,
    but running ``sleep`` (no network of its own) instead of the app."""
    run_child([str(THIS_VPSCTL), "apply", "-i", INV, "--only", "bootstrap", "-y"], root, env)
    spec = load_spec(root / INV)
    desired: Desired = render_spec(spec)
    refs = sorted({i.ref for s in desired.stacks.values() for i in s.images})
    with Session(box.target()) as session:
        session.ship_images(refs)
    # the example box's containers and volumes, as compose made them
    listing = box_run(
        source,
        "for c in $(docker ps -aq --filter label=com.docker.compose.project); do\n"
        "  docker inspect --format '{{json .Config.Labels}}\t{{json .Mounts}}' \"$c\"\n"
        "done\n"
        "echo @@volumes\n"
        "for v in $(docker volume ls -q --filter label=com.docker.compose.project); do\n"
        "  docker volume inspect --format '{{.Name}}\t{{json .Labels}}' \"$v\"\n"
        "done\n"
        "echo @@manifest\n"
        'python3 -c \'import json; m = json.load(open("/opt/vpsctl/manifest.json")); '
        'print(json.dumps({"host": m["host"], "bootstrap": m["bootstrap"]}))\'\n',
    )
    containers_part, _, rest = listing.partition("@@volumes\n")
    volumes_part, _, manifest_part = rest.partition("@@manifest\n")
    services: dict[tuple[str, str], tuple[dict[str, str], list[dict[str, Any]]]] = {}
    for line in containers_part.splitlines():
        labels_json, mounts_json = line.split("\t")
        labels = json.loads(labels_json)
        key = (labels["com.docker.compose.project"], labels["com.docker.compose.service"])
        services[key] = (labels, json.loads(mounts_json))
    volumes: dict[str, dict[str, str]] = {}
    for line in volumes_part.splitlines():
        name, labels_json = line.split("\t")
        volumes[name] = json.loads(labels_json)
    head = json.loads(manifest_part.strip().splitlines()[-1])
    originals = {project for project, _ in services}

    manifest = {**head, **factsim.manifest_of(desired), "plan_hash": "0" * 64}
    manifest["applied_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest.pop("path", None)
    files = [(p, f.content, f.mode) for p, f in desired.files.items()]
    files.append(("/opt/vpsctl/manifest.json", json.dumps(manifest, indent=1).encode(), 0o600))
    for steps in desired.app_steps.values():
        for step in steps:
            files += [(path, os.urandom(13).hex().encode(), 0o600) for path in step.files]
    lines = ["set -eu"]
    made_volumes: set[str] = set()
    count = 0
    for name, stack in desired.stacks.items():
        orig = original_of(name, originals)
        for service, image in stack.service_images.items():
            labels, mounts = services[(orig, service)]
            renamed = {}
            for k, value in labels.items():
                v = value
                if v == orig and k in ("com.docker.compose.project", LABEL_STACK):
                    v = name
                elif k.startswith("com.docker.compose.project."):
                    v = v.replace(f"/{orig}/", f"/{name}/").replace(f"/{orig},", f"/{name},")
                    v = re.sub(rf"/{orig}$", f"/{name}", v)
                renamed[k] = v
            argv = ["docker", "run", "-d", "-q", "--name", f"{name}-{service}-1"]
            argv += ["--network", "none", "--entrypoint", "sleep"]
            for k, v in sorted(renamed.items()):
                argv += ["--label", f"{k}={v}"]
            for mount in mounts:
                if mount.get("Type") != "volume":
                    continue
                vol = str(mount["Name"]).replace(f"{orig}_", f"{name}_", 1)
                if vol not in made_volumes:
                    made_volumes.add(vol)
                    vlabels = volumes.get(str(mount["Name"]), {})
                    create = ["docker", "volume", "create"]
                    for k, v in sorted(vlabels.items()):
                        create += ["--label", f"{k}={name if v == orig else v}"]
                    lines.append(shlex.join([*create, vol]) + " >/dev/null")
                argv += ["-v", f"{vol}:{mount['Destination']}"]
            lines.append(shlex.join([*argv, image, "86400"]) + " >/dev/null")
            count += 1
    with Session(box.target()) as session:
        session.put_files(files)
        session.feed(["sh", "-s"], "\n".join(lines).encode(), 1800, purpose="staging")
    return {
        "stacks": len(desired.stacks),
        "files": len(desired.files),
        "containers": count,
        "volumes": len(made_volumes),
    }


NETWORK_ROOM = """n=0
while [ $n -lt 100 ] && docker network create "vpsctl-bench-room-$n" >/dev/null 2>&1; do
  n=$((n + 1))
done
echo "$n"
i=0
while [ $i -lt $n ]; do docker network rm "vpsctl-bench-room-$i" >/dev/null; i=$((i + 1)); done
"""


def network_room(info: SandboxInfo) -> int:
    """How many more docker networks the box's daemon can make (then removed again)."""
    return int(box_run(info, NETWORK_ROOM).split()[-1])


# ── the box-side facts script's memory ───────────────────────────────────────────────────

FACTS_MEMORY = """set -u
cat > /tmp/vpsctl-bench-facts.sh <<'VPSCTL_BENCH_EOF'
{script}
VPSCTL_BENCH_EOF
python3 - <<'PY'
import resource, subprocess, time
t = time.monotonic()
p = subprocess.run(["sh", "/tmp/vpsctl-bench-facts.sh"], stdout=subprocess.PIPE,
                   stderr=subprocess.DEVNULL)
took = time.monotonic() - t
print("proc", p.returncode, len(p.stdout), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
      round(took * 1000))
PY
own=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {{print $3}}' /proc/self/cgroup)
cg="/sys/fs/cgroup/memory$own/vpsctl-bench-facts"
if [ -n "$own" ] && mkdir "$cg" 2>/dev/null; then
  sh -c 'echo $$ > "$1/cgroup.procs" && exec sh /tmp/vpsctl-bench-facts.sh' sh "$cg" \
    >/dev/null 2>&1
  echo "cgroup $(cat "$cg/memory.max_usage_in_bytes")"
  rmdir "$cg" 2>/dev/null || true
fi
rm -f /tmp/vpsctl-bench-facts.sh
"""


def facts_memory(info: SandboxInfo) -> dict[str, int]:
    """Peak memory of the facts script on the box: the largest single process of it (RSS,
    from python3's RUSAGE_CHILDREN over the script and what it reaped) and, when the box
    lets a memory cgroup be made under its own, the whole process tree's peak charge."""
    found: dict[str, int] = {}
    for line in box_run(info, FACTS_MEMORY.format(script=facts_script())).splitlines():
        words = line.split()
        if words[:1] == ["proc"]:
            if words[1] != "0":
                raise RuntimeError("the facts script failed on the box")
            found.update(bytes=int(words[2]), rss_kib=int(words[3]), ms=int(words[4]))
        elif words[:1] == ["cgroup"] and len(words) == 2:
            found["cgroup_bytes"] = int(words[1])
    return found


# ── the plan process's profile ───────────────────────────────────────────────────────────

# the full plan (VPSCTL_NO_CACHE=1): every function `vpsctl plan` calls, wrapped with a timer
FULL = r"""
@START@
import vpsctl.cli.views as views
import vpsctl.core.plan as coreplan
import vpsctl.host.remote as remote
import vpsctl.ops.inputs as inputs
import vpsctl.ops.targets as targets
T1 = time.perf_counter()
spent = {}
@TIMED@
timed(m, "load_spec", "load + validate")
timed(inputs, "render_spec", "render")
timed(targets, "target", "find the box (sandbox record)")
timed(remote.Session, "__enter__", "SSH connect + handshake + auth")
timed(remote.Session, "run", "facts command (remote script + transfer)")
timed(remote.Session, "__exit__", "disconnect")
timed(remote, "parse", "parse facts")
timed(coreplan, "make_plan", "make_plan")
timed(coreplan.Plan, "to_json", "plan to_json (mask, hash)")
timed(views, "plan_text", "output (plan_text)")
@MAIN@
"""
# a plan cache hit: only what such a plan imports, and the calls it makes
HIT = r"""
@START@
import vpsctl.spec.cache as cache
import vpsctl.host.quick as quick
import paramiko
T1 = time.perf_counter()
spent = {}
@TIMED@
timed(cache, "plan_lookup", "plan cache: look up (hash the inputs, stat the code)")
timed(paramiko.SSHClient, "connect", "SSH connect + handshake + auth (paramiko)")
timed(paramiko.Channel, "exec_command", "facts command: channel request + exec")
timed(quick, "parse", "parse facts")
timed(quick, "read_facts", "quick read in all (connect, command, transfer, parse)")
@MAIN@
"""
_TIMED = """
def timed(owner, attr, label):
    func = getattr(owner, attr)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0.0) + time.perf_counter() - start
    setattr(owner, attr, wrapper)
"""
_MAIN = """
T2 = time.perf_counter()
code = m.main(sys.argv[1:])
T3 = time.perf_counter()
spent["imports (those above)"] = T1 - T0
spent["command total"] = T3 - T2
with open(OUT, "w") as f:
    json.dump({"code": code, "spent": spent}, f)
"""
_START = """import json, sys, time
T0 = time.perf_counter()
import vpsctl.cli.main as m"""
FULL, HIT = (
    script.replace("@START@", _START).replace("@TIMED@", _TIMED).replace("@MAIN@", _MAIN)
    for script in (FULL, HIT)
)


def phases(
    env: dict[str, str], studio: Path, runs: int, out: Path, script: str
) -> dict[str, float]:
    """Medians (ms) of the plan's phases, timed inside one process per run."""
    samples: dict[str, list[float]] = {}
    code = script.replace("OUT", repr(str(out)))
    for _ in range(runs):
        run_child([str(PYTHON), "-c", code, "plan", "-i", INV], studio, env)
        data = json.loads(out.read_text())
        if data["code"] != 0:
            raise RuntimeError(f"the plan in the phase run exited {data['code']}")
        for label, seconds in data["spent"].items():
            samples.setdefault(label, []).append(seconds * 1000)
    return {label: statistics.median(v) for label, v in samples.items()}


def importtime(env: dict[str, str], studio: Path, top: int = 12) -> tuple[float, list[str]]:
    """The whole plan process under ``-X importtime``: total import time and the heaviest
    top-level imports."""
    _, _, stderr = run_child(
        [str(PYTHON), "-X", "importtime", "-m", "vpsctl.cli.main", "plan", "-i", INV],
        studio,
        env,
    )
    rows = []
    for line in stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            rows.append((int(parts[1]), name))
    top_level = [(us, name) for us, name in rows if not name.startswith("  ")]
    total = sum(us for us, _ in top_level) / 1000
    top_level.sort(reverse=True)
    return total, [f"{us / 1000:7.1f} ms {name}" for us, name in top_level[:top]]


def cprofile(
    env: dict[str, str], studio: Path, out: Path, top: int = 15
) -> tuple[list[str], list[str]]:
    """cProfile of one whole plan process: the top lines by cumulative and by own time."""
    run_child(
        [str(PYTHON), "-m", "cProfile", "-o", str(out), "-m", "vpsctl.cli.main", *PLAN],
        studio,
        env,
    )
    found = []
    for key in ("cumulative", "tottime"):
        stream = io.StringIO()
        stats = pstats.Stats(str(out), stream=stream)
        stats.strip_dirs().sort_stats(key).print_stats(top)
        lines = stream.getvalue().splitlines()
        start = next(i for i, line in enumerate(lines) if "ncalls" in line)
        found.append([line.rstrip() for line in lines[start : start + top + 1]])
    return found[0], found[1]


# ── the measurement ──────────────────────────────────────────────────────────────────────


@dataclasses.dataclass
class Command:
    label: str
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    proxy: CountingProxy | None = None
    expect: tuple[int, ...] = (0,)
    ansible: AnsibleSetup | None = None
    after: str = ""  # "masters": end the ansible SSH masters after this one
    optional: bool = False  # another tree's vpsctl: a failure is reported, not fatal


def run_command(command: Command) -> Sample:
    sample, stdout, _ = run_child(
        command.argv, command.cwd, command.env, command.proxy, command.expect
    )
    if command.ansible is not None:
        ansible_checked(command.ansible, stdout)
        if command.after == "masters":
            ansible_masters_exit(command.ansible)
    return sample


@contextmanager
def boxes(names: list[str], keep: bool) -> Iterator[dict[str, SandboxInfo]]:
    """Sandbox boxes ``names`` up; down at the end, even on failure (unless ``keep``)."""
    up: dict[str, SandboxInfo] = {}
    try:
        for name in names:
            up[name] = sandbox.up(name)
        yield up
    finally:
        if not keep:
            for name in reversed(names):
                try:
                    sandbox.down(name)
                except Exception as exc:  # noqa: BLE001 - the others still go down
                    print(f"sandbox down {name}: {exc}", file=sys.stderr)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fmt_count(samples: list[Sample], attr: str) -> str:
    values = [getattr(s, attr) for s in samples if getattr(s, attr) is not None]
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{low}" if low == high else f"{low}-{high}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--vpsctl",
        type=Path,
        action="append",
        default=[],
        help="another vpsctl executable (e.g. the tree before a change), measured beside "
        "this tree's .venv/bin/vpsctl in the same rounds; repeatable",
    )
    parser.add_argument("--no-tenfold", action="store_true", help="skip the 10x studio")
    parser.add_argument(
        "--workdir", type=Path, help="keep studios and state here, boxes up (development)"
    )
    parser.add_argument(
        "--ansible-warm",
        action="store_true",
        help="also run Ansible right after its cold run, through the master it left",
    )
    parser.add_argument(
        "--no-warmup", dest="warmup", action="store_false", help="no warm-up round (development)"
    )
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    executables = [THIS_VPSCTL, *[p.resolve() for p in args.vpsctl]]
    for exe in executables:
        if not os.access(exe, os.X_OK):
            raise SystemExit(f"{exe}: not an executable")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with ExitStack() as stack:
        if args.workdir is not None:
            work = args.workdir.resolve()
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        state = work / "state"
        os.environ["VPSCTL_STATE_DIR"] = str(state)
        names = ["bench-plan"] + ([] if args.no_tenfold else ["bench-plan-10x"])
        up = stack.enter_context(boxes(names, keep=args.workdir is not None))
        report = measure(args, work, state, up, executables)
    report = report.replace("@STARTED@", started)
    publish(args.write, SECTION, report)


def measure(
    args: argparse.Namespace,
    work: Path,
    state: Path,
    up: dict[str, SandboxInfo],
    executables: list[Path],
) -> str:
    direct = child_env(state)
    info = up["bench-plan"]
    studio = work / "example"
    if not (studio / INV / "secrets.env").is_file():
        studio_for(studio, info)
    plan_argv = ["plan", "-i", INV]
    fresh = "-"
    probe = subprocess.run(
        [str(THIS_VPSCTL), *plan_argv],
        cwd=studio,
        env=direct,
        capture_output=True,
        timeout=600,
        check=False,
    )
    if probe.returncode != 0:
        print("applying the example studio to the fresh box …", file=sys.stderr)
        applied, _, _ = run_child([str(THIS_VPSCTL), "apply", "-i", INV, "-y"], studio, direct)
        fresh = f"{applied.wall:.0f} s"
    rendered = work / "rendered"
    shutil.rmtree(rendered, ignore_errors=True)
    run_child([str(THIS_VPSCTL), "render", "-i", INV, "--out", str(rendered)], studio, direct)

    tenfold: Path | None = None
    staged: dict[str, int] = {}
    if "bench-plan-10x" in up:
        tenfold = work / "tenfold"
        marker = work / "tenfold-staged.json"
        if not marker.is_file():
            if tenfold.exists():
                shutil.rmtree(tenfold)
            tenfold_studio(tenfold, up["bench-plan-10x"])
            print("staging the 10x studio on its box …", file=sys.stderr)
            staged = stage_tenfold(tenfold, up["bench-plan-10x"], info, direct)
            marker.write_text(json.dumps(staged))
        staged = json.loads(marker.read_text())
        staged["networks"] = network_room(up["bench-plan-10x"])
        check = subprocess.run(
            [str(THIS_VPSCTL), *plan_argv],
            cwd=tenfold,
            env=direct,
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            summary = [line for line in check.stdout.splitlines() if not line.startswith(" ")]
            raise RuntimeError("the staged 10x plan is not a no-op:\n" + "\n".join(summary[-30:]))

    with ExitStack() as stack:
        proxies = {
            name: stack.enter_context(CountingProxy(box.ssh_port, ONE_WAY))
            for name, box in up.items()
        }
        far = work / "state-50ms"
        shutil.rmtree(far, ignore_errors=True)
        proxied_state(state, far, {n: (up[n], proxies[n].port) for n in up})
        far_env = child_env(far)
        ansible = ansible_setup(
            work / "ansible",
            rendered,
            {
                "loopback": (info.ssh_port, info.known_hosts_path),
                "50 ms": (proxies["bench-plan"].port, far / "sandboxes/bench-plan.known_hosts"),
            },
            info.key_path,
            info.user,
        )
        stack.callback(shutil.rmtree, ansible.control_dir, True)  # after the masters end
        stack.callback(ansible_masters_exit, ansible)
        commands = [Command("`python -c pass`", [str(PYTHON), "-c", "pass"], studio, direct)]
        for rtt, env, proxy in (
            ("loopback", direct, None),
            ("50 ms", far_env, proxies["bench-plan"]),
        ):
            full_env = {**env, "VPSCTL_NO_CACHE": "1"}
            for i, exe in enumerate(executables):
                who = "" if i == 0 else f" [{exe}]"
                command = Command(
                    f"plan, example, {rtt}{who}", [str(exe), *plan_argv], studio, env, proxy
                )
                command.optional = i > 0
                commands.append(command)
                if i == 0:  # the plan cache off: load, render, plan, as after any edit
                    commands.append(
                        Command(
                            f"plan, example, {rtt}, full",
                            [str(exe), *plan_argv],
                            studio,
                            full_env,
                            proxy,
                        )
                    )
            if tenfold is not None:
                for label, tenfold_env in (("", env), (", full", full_env)):
                    commands.append(
                        Command(
                            f"plan, 10x, {rtt}{label}",
                            [str(THIS_VPSCTL), *plan_argv],
                            tenfold,
                            tenfold_env,
                            proxies["bench-plan-10x"] if proxy else None,
                        )
                    )
            argv = ansible_argv(ansible, rtt)
            commands += [
                Command(
                    f"ansible, cold, {rtt}",
                    argv,
                    ansible.workdir,
                    ansible.env,
                    proxy,
                    (0,),
                    ansible,
                    "" if args.ansible_warm else "masters",
                )
            ]
            if args.ansible_warm:
                commands.append(
                    Command(
                        f"ansible, warm, {rtt}",
                        argv,
                        ansible.workdir,
                        ansible.env,
                        proxy,
                        (0,),
                        ansible,
                        "masters",
                    )
                )
        commands.append(
            Command(
                "no-op apply -y, example, loopback",
                [str(THIS_VPSCTL), "apply", "-i", INV, "-y"],
                studio,
                direct,
            )
        )
        samples: dict[str, list[Sample]] = {c.label: [] for c in commands}
        failures: dict[str, int] = {}
        for round_ in range(args.runs + args.warmup):  # round 0: warm-up, not recorded
            print(f"round {round_ + 1 - args.warmup}/{args.runs}", file=sys.stderr)
            for command in commands:
                try:
                    sample = run_command(command)
                except RuntimeError as exc:
                    if not command.optional:
                        raise
                    print(f"{command.label}: {exc}", file=sys.stderr)
                    failures[command.label] = failures.get(command.label, 0) + 1
                    continue
                if round_ >= args.warmup:
                    samples[command.label].append(sample)
        # how many SSH commands ansible sends: one verbose run (not timed)
        _, verbose, _ = run_child(
            ansible_argv(ansible, "loopback", "-vvv"), ansible.workdir, ansible.env
        )
        ansible_masters_exit(ansible)
        ansible_exec = sum("SSH: EXEC ssh" in line for line in verbose.splitlines())
        ansible_sftp = sum("SSH: EXEC sftp" in line for line in verbose.splitlines())
        phase_ms = {}
        for rtt, env in (("loopback", direct), ("50 ms", far_env)):
            phase_ms[f"{rtt}, cache hit"] = phases(env, studio, 5, work / "phases.json", HIT)
            full = {**env, "VPSCTL_NO_CACHE": "1"}
            phase_ms[f"{rtt}, full"] = phases(full, studio, 5, work / "phases.json", FULL)

    memory = {"example": facts_memory(info)}
    if tenfold is not None:
        memory["10x"] = facts_memory(up["bench-plan-10x"])
    prof = work / "plan.prof"
    full_env = {**direct, "VPSCTL_NO_CACHE": "1"}
    imports = {"cache hit": importtime(direct, studio), "full": importtime(full_env, studio)}
    profiles = {
        "cache hit": cprofile(direct, studio, prof),
        "full": cprofile(full_env, studio, prof),
    }
    return write_report(
        args,
        executables,
        samples,
        failures,
        fresh,
        ansible,
        (ansible_exec, ansible_sftp),
        staged,
        memory,
        phase_ms,
        imports,
        profiles,
    )


def write_report(
    args: argparse.Namespace,
    executables: list[Path],
    samples: dict[str, list[Sample]],
    failures: dict[str, int],
    fresh: str,
    ansible: AnsibleSetup,
    ansible_commands: tuple[int, int],
    staged: dict[str, int],
    memory: dict[str, dict[str, int]],
    phase_ms: dict[str, dict[str, float]],
    imports: dict[str, tuple[float, list[str]]],
    profiles: dict[str, tuple[list[str], list[str]]],
) -> str:
    samples = {k: v for k, v in samples.items() if v}  # an optional one may have failed
    wall = {k: median([s.wall for s in v]) * 1000 for k, v in samples.items()}
    cpu = {k: median([s.cpu for s in v]) * 1000 for k, v in samples.items()}
    rss = {k: median([s.rss_kib for s in v]) / 1024 for k, v in samples.items()}
    bare = wall["`python -c pass`"]
    flags = "".join(f" --vpsctl {p}" for p in args.vpsctl)
    flags += " --ansible-warm" if args.ansible_warm else ""
    flags += " --no-tenfold" if args.no_tenfold else ""
    command = (
        f"`.venv/bin/python bench/bench_plan.py --runs {args.runs}{flags} --write bench/RESULTS.md`"
    )
    lines = [
        SECTION,
        "",
        f"Command: {command} (started @STARTED@)",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), Python "
        f"{platform.python_version()}, {ANSIBLE_PIN} in its own venv, OpenSSH client "
        f"{ssh_version()}; the boxes are sandbox containers on this machine. "
        f"{args.runs} interleaved rounds after {'one' if args.warmup else 'no'} warm-up "
        "round, one run; medians "
        f"(min-max for counts). The example applied to its fresh box once first ({fresh}).",
        "",
        "| what | wall | CPU (user+sys) | max RSS | TCP conns | client turns (≈RTs) | "
        "bytes up/down | vs `python -c pass` |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, values in samples.items():
        ups = [s.up for s in values if s.up is not None]
        downs = [s.down for s in values if s.down is not None]
        traffic = f"{median(ups) / 1024:.0f}/{median(downs) / 1024:.0f} KiB" if ups else "-"
        lines.append(
            f"| {label} | {wall[label]:.0f} ms | {cpu[label]:.0f} ms | {rss[label]:.0f} MiB | "
            f"{fmt_count(values, 'connections')} | {fmt_count(values, 'turns')} | {traffic} | "
            f"{wall[label] / bare:.1f}x |"
        )
    for label, count in failures.items():
        lines.append(f"| {label}: FAILED in {count} round(s) (not in the medians) | | | | | | | |")
    lines += ["", "Ratios (medians of this run):", ""]
    for rtt in ("loopback", "50 ms"):
        plan = wall[f"plan, example, {rtt}"]
        full = wall[f"plan, example, {rtt}, full"]
        cold = wall[f"ansible, cold, {rtt}"]
        warm = wall.get(f"ansible, warm, {rtt}")
        lines.append(
            f"- {rtt}: ansible-playbook --check --diff takes **{cold / plan:.1f}x** the time of "
            f"`vpsctl plan` (a plan cache hit), **{cold / full:.1f}x** that of the full plan "
            "(`VPSCTL_NO_CACHE=1`: as after any edit of an input), cold (no SSH master up)"
            + (
                f", {warm / plan:.1f}x warm (its ControlPersist master from the run just before)"
                if warm is not None
                else ""
            )
            + f"; {cpu[f'ansible, cold, {rtt}'] / cpu[f'plan, example, {rtt}']:.1f}x the CPU."
        )
        for exe in executables[1:]:
            if f"plan, example, {rtt} [{exe}]" not in wall:
                continue
            other = wall[f"plan, example, {rtt} [{exe}]"]
            lines.append(
                f"- {rtt}: this tree's plan / `{exe}`'s plan: {plan / other:.2f}x wall, "
                f"{cpu[f'plan, example, {rtt}'] / cpu[f'plan, example, {rtt} [{exe}]']:.2f}x CPU."
            )
        for kind in ("", ", full"):
            if f"plan, 10x, {rtt}{kind}" not in wall:
                continue
            lines.append(
                f"- {rtt}: plan of the 10x studio / plan of the example"
                f"{' (both full)' if kind else ' (both cache hits)'}: "
                f"{wall[f'plan, 10x, {rtt}{kind}'] / wall[f'plan, example, {rtt}{kind}']:.2f}x "
                f"wall, {cpu[f'plan, 10x, {rtt}{kind}'] / cpu[f'plan, example, {rtt}{kind}']:.2f}x "
                "CPU."
            )
    lines += [
        "",
        "How each number was taken:",
        "",
        "- Every row is a whole process, started under GNU time (`/usr/bin/time -f %M`) and "
        "reaped with `os.wait4`: wall from start to reaping; CPU (user + sys) from that "
        "`rusage`, which includes the child's reaped children (Ansible's forks and `ssh` "
        "clients) but not Ansible's ControlPersist master, which outlives the run; max RSS "
        "is GNU time's `%M`, the child's `ru_maxrss` (the largest of it and its reaped "
        "children): GNU time forks it because Linux carries a parent's RSS at fork into the "
        "child's high-water mark, and the bench's own 80 MiB would hide the child's. vpsctl "
        "runs with the studio as its cwd and `VPSCTL_STATE_DIR` naming the sandbox records; "
        "every plan exits 0 (no changes). A plain `plan` row is what the operator gets from "
        "the second plan on: a plan cache hit (its entry written in the warm-up round); a "
        "`full` row runs with `VPSCTL_NO_CACHE=1`: load, validate, render, plan, as after "
        "any edit of an input. Children run without this machine's "
        "`PYTHONDONTWRITEBYTECODE=1` and with `PYTHONPYCACHEPREFIX` in the bench's temp "
        "directory: bytecode is compiled in the warm-up round and loaded after, as from an "
        "installed wheel (with the variable set, vpsctl's ~50 modules were compiled from "
        "source at every start: ~90 ms of a plan under cProfile).",
        f"- 50 ms: bench/latency.py's proxy adds {ONE_WAY * 1000:.0f} ms each way in front of "
        "the box's SSH port; vpsctl reaches it through a copy of the sandbox record whose "
        "port (and known_hosts) is the proxy's, Ansible through an inventory naming the proxy's "
        "port. Connections, client turns and bytes are counted by the proxy (so only at "
        "50 ms; loopback runs the same exchanges). A client turn is a chunk from the client "
        "after the last thing the proxy saw came from the box: about one round trip waited on.",
        f"- Ansible: {ANSIBLE_PIN}, `ansible-playbook --check --diff` of a playbook of "
        f"{ansible.files} `ansible.builtin.copy` tasks (src: `vpsctl render` of the same "
        "inventory, i.e. the files as they sit on the box; mode, owner root, group root), "
        "`gather_facts: false` (an operator's default gathers facts, which would only add "
        "to Ansible's time). Otherwise Ansible's defaults: the ssh connection plugin with "
        "`-C -o ControlMaster=auto -o ControlPersist=60s`, pipelining off, Python "
        "interpreter discovery `auto`, host key checking on (the box's known_hosts by "
        "`ansible_ssh_common_args`, with `IdentitiesOnly=yes` and the sandbox key). Each run "
        f"must report `ok={ansible.files} changed=0 unreachable=0 failed=0`. 'cold' runs "
        "with no master up (the state after a minute of quiet), "
        + (
            "'warm' right after it, through the master it left; the master is then ended "
            "(`ssh -O exit`). "
            if args.ansible_warm
            else "and the master it leaves is ended after it (`ssh -O exit`). "
        )
        + "One "
        f"untimed `-vvv` run counts {ansible_commands[0]} `ssh` and {ansible_commands[1]} "
        "`sftp` invocations over the master (vpsctl plan: 1 SSH command).",
    ]
    if staged:
        lines.append(
            f"- 10x: a second box holds the 10x studio ({staged['stacks']} stacks, "
            f"{staged['files']} rendered files) **staged, not applied**: applying it would "
            "start ~10 real Ghosts with MariaDB and ~100 containers on this 2-core machine "
            "(the example's fresh apply alone takes ~3 min), and its 71 compose projects "
            "each want a network of their own, more than Docker's default address pools "
            f"give: on the fresh 10x box, {staged['networks']} `docker network create` "
            "succeeded and the next failed (`could not find an available, non-overlapping "
            "IPv4 address pool`), so a real apply of the 10x studio would fail at about "
            "its 30th stack unless the box's daemon.json widens `default-address-pools`. "
            "What is on the box: the bootstrap (`vpsctl apply --only bootstrap`), "
            "the stand-in images (vpsctl's `ship_images`), every rendered file (vpsctl's "
            "`put_files`, apply's own upload), the manifest apply records (factsim's "
            "`manifest_of`, with the applied example's host and bootstrap), the app steps' "
            f"key files, {staged['containers']} containers named and labelled as compose "
            "does (each copied from the same service's container on the applied example "
            f"box, project renamed) with {staged['volumes']} compose-labelled volumes "
            "mounted — but each container runs `sleep`, with no network of its own. The "
            "plan process and the facts script do exactly their real work on it: every "
            "file hashed and sent, every container and volume listed."
        )
    lines += ["", "Peak memory:", ""]
    for label in samples:
        if label.startswith(("plan, example, loopback", "plan, 10x, loopback", "no-op apply")):
            lines.append(f"- `{label}`: max RSS {rss[label]:.0f} MiB (median over the rounds).")
    for label, found in memory.items():
        extra = (
            f"; the whole process tree's peak cgroup charge {found['cgroup_bytes'] / 2**20:.1f} "
            "MiB (a memory cgroup made under the box's own for one run of it; page cache "
            "it brings in included)"
            if "cgroup_bytes" in found
            else ""
        )
        lines.append(
            f"- the box-side facts script, {label}: largest single process "
            f"{found['rss_kib'] / 1024:.1f} MiB RSS (python3 on the box runs it and reads "
            f"`RUSAGE_CHILDREN`: the max over `sh` and everything it reaped){extra}; it ran "
            f"{found['ms']} ms on the box and printed {found['bytes'] / 1024:.0f} KiB. The work "
            "`docker ps`/`docker image ls` ask of dockerd is dockerd's, not counted."
        )
    lines += [
        "",
        "Where a plan's time goes: phases timed inside the plan process (this tree; the "
        "functions `vpsctl plan` calls wrapped with a timer; medians of 5 runs each):",
        "",
        "| phase | " + " | ".join(phase_ms) + " |",
        "|---|" + "---|" * len(phase_ms),
    ]
    labels = list(dict.fromkeys(label for found in phase_ms.values() for label in found))
    for label in labels:
        cells = [f"{found[label]:.0f} ms" if label in found else "-" for found in phase_ms.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", f"(Plus the interpreter's own start, `python -c pass`: {bare:.0f} ms.)"]
    for kind, (total, heaviest) in imports.items():
        lines += [
            "",
            f"`python -X importtime` of one whole plan process ({kind}): {total:.0f} ms of "
            "imports in all (the top-level ones summed); the heaviest:",
            "",
            "```",
            *heaviest,
            "```",
        ]
    for kind, (cumulative, own) in profiles.items():
        lines += [
            "",
            f"cProfile of one whole `vpsctl plan` process at loopback ({kind}; `python -m "
            "cProfile -m vpsctl.cli.main plan …`; main thread only — paramiko's transport "
            "thread is not profiled, so waits on it show as lock waits; cProfile adds its own "
            "overhead), top 15 by cumulative time:",
            "",
            "```",
            *cumulative,
            "```",
            "",
            "and by own time (tottime), top 15:",
            "",
            "```",
            *own,
            "```",
        ]
    lines.append("")
    return "\n".join(lines)


def ssh_version() -> str:
    done = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
    return (done.stderr or done.stdout).split(",")[0].strip()


if __name__ == "__main__":
    main()
