"""Upgrades without a dropped request (issue 16), end to end on one sandbox box: the studio
converged, then image upgrades of the four products and a config change of Caddy itself,
each under a bounded loop of requests through the box's Caddy that counts every answer.

The tests share one box and run in file order; each leaves the studio converged.
Outputs of every CLI run are scanned for every secret value.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.conftest import audit_ok, first_apply, on_box, running_box, studio_for
from tests.helpers import Result, assert_no_secrets, run_cli
from vpsctl.host.commands.caddy import HOLD_COMMENT
from vpsctl.local import pebble
from vpsctl.local.sandbox import SandboxInfo

pytestmark = pytest.mark.e2e

INV = "inventory/sandbox"
RATE = 20  # requests per second, as the issue measured
LIMIT = 3000  # requests at most per loop (bounded in count ...)
SECONDS = 300  # ... and in time
IMAGE_OF = "docker inspect --format '{{{{.Config.Image}}}}' {}-app-1"
PRODUCTS = {  # stack → (its image ref in the example, the bumped one, its app's host)
    "documint": ("ghcr.io/lumen-studio/documint:2.4.1", "2.4.2", "documint.lumen.test"),
    "cronping": ("ghcr.io/lumen-studio/cronping:1.9.0", "1.9.1", "cronping.lumen.test"),
    "flagbit": ("ghcr.io/lumen-studio/flagbit:3.2.5", "3.2.6", "flagbit.lumen.test"),
    "webhookvault": (
        "ghcr.io/lumen-studio/webhookvault:1.6.3",
        "1.6.4",
        "webhookvault.lumen.test",
    ),
}


def get_healthz(box: SandboxInfo, host: str, context: ssl.SSLContext) -> int:
    """``GET /healthz`` of ``host`` through the box's published 443, SNI and Host as a
    visitor sends them, TLS verified against Pebble's roots: the answer's status."""
    request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    with (
        socket.create_connection((box.address, box.https_port), timeout=15) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.sendall(request.encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


def stamp() -> str:
    """Now, to the millisecond (UTC), to lay a failure beside Caddy's log."""
    now = time.time()
    return time.strftime("%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}"


@dataclass
class RequestLoop:
    """``/healthz`` of ``hosts`` in turn, ``RATE`` a second, each on a fresh connection,
    from a thread until stopped or its bounds (``LIMIT`` requests, ``SECONDS``) are reached.
    Every answer but a 200 and every error is a failure."""

    box: SandboxInfo
    hosts: list[str]
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    slowest: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        context = ssl.create_default_context(cafile=str(pebble.roots_path()))
        deadline = time.monotonic() + SECONDS
        next_at = time.monotonic()
        while not self.stop.is_set() and self.sent < LIMIT and time.monotonic() < deadline:
            host = self.hosts[self.sent % len(self.hosts)]
            self.sent += 1
            started = time.monotonic()
            try:
                status = get_healthz(self.box, host, context)
            except (OSError, ValueError, IndexError) as exc:
                self.failures.append(f"{stamp()} {host}: {type(exc).__name__}: {exc}")
            else:
                if status != 200:
                    self.failures.append(f"{stamp()} {host}: HTTP {status}")
            self.slowest = max(self.slowest, time.monotonic() - started)
            next_at += 1 / RATE
            time.sleep(max(0.0, next_at - time.monotonic()))

    def report(self, what: str) -> str:
        return (
            f"{what}: {self.sent} requests through Caddy at {RATE}/s, "
            f"{len(self.failures)} failed, slowest answer {self.slowest:.2f}s"
        )


@contextmanager
def request_loop(box: SandboxInfo, hosts: list[str]) -> Iterator[RequestLoop]:
    """A :class:`RequestLoop` running for the ``with`` block (and one second more: a
    request held by Caddy at the block's end is counted too)."""
    loop = RequestLoop(box, hosts)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        time.sleep(1)
        loop.stop.set()
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def box(state_dir: Path) -> Iterator[SandboxInfo]:
    with running_box("upgrades") as info:
        yield info


@pytest.fixture(scope="module")
def studio(box: SandboxInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = studio_for(tmp_path_factory.mktemp("studio"), box)
    first_apply(root, "upgrades: fresh box")
    return root


def cli(root: Path, *args: str) -> Result:
    result = run_cli(root, *args)
    assert_no_secrets(root, result.out + result.err)
    return result


def bump(root: Path, stack: str, *, back: bool = False) -> None:
    """Bump ``stack``'s image tag in its stack file and in the sandbox's mapping (or, with
    ``back``, return it to the example's)."""
    ref, new, _ = PRODUCTS[stack]
    old, bumped = ref, ref.rsplit(":", 1)[0] + ":" + new
    if back:
        old, bumped = bumped, old
    for path in (root / "stacks" / f"{stack}.yaml", root / INV / "host.yaml"):
        text = path.read_text()
        assert old in text, path
        path.write_text(text.replace(old, bumped))


def recreated(plan: str) -> set[str]:
    """The stacks a plan's text recreates."""
    return set(re.findall(r"^\s+~ (\S+): recreate", plan, re.M))


def upgrade_under_load(box: SandboxInfo, root: Path, stacks: list[str], what: str) -> None:
    """Plan the upgrade of ``stacks`` (exactly those recreated), apply it under the request
    loop through Caddy, and require zero failed requests."""
    plan = cli(root, "plan", "-i", INV)
    assert plan.code == 2, plan.err[-3000:]
    assert recreated(plan.out) == set(stacks), plan.out
    hosts = [PRODUCTS[s][2] for s in stacks]
    with request_loop(box, hosts) as loop:
        time.sleep(2)  # the loop runs before the apply starts
        result = cli(root, "apply", "-i", INV, "-y")
    print(loop.report(what))
    assert result.code == 0, result.err[-6000:]
    assert loop.sent > 100, loop.report(what)
    assert not loop.failures, (loop.report(what), loop.failures[:20])
    again = cli(root, "plan", "-i", INV)
    assert again.code == 0, again.out[-3000:]


def test_a_tag_bump_rehearsed_in_the_sandbox_recreates_exactly_that_stack_without_a_drop(
    box: SandboxInfo, studio: Path
) -> None:
    # the stand-in's bytes stay the same; its tag on the box follows the declared ref
    bump(studio, "documint")
    upgrade_under_load(box, studio, ["documint"], "documint 2.4.1 → 2.4.2")


def test_upgrading_the_other_three_products_at_once_drops_no_request(
    box: SandboxInfo, studio: Path
) -> None:
    stacks = ["cronping", "flagbit", "webhookvault"]
    for stack in stacks:
        bump(studio, stack)
    upgrade_under_load(box, studio, stacks, "cronping, flagbit, webhookvault upgraded")


RELOAD: dict[str, RequestLoop] = {}  # the loop that ran through Caddy's reload


def test_a_config_change_of_caddy_is_a_graceful_reload_in_the_running_caddy(
    box: SandboxInfo, studio: Path
) -> None:
    host = studio / INV / "host.yaml"
    host.write_text(
        host.read_text().replace("\ntls: pebble\n", "\ntls: pebble\nacme_email: ops@lumen.test\n")
    )
    plan = cli(studio, "plan", "-i", INV)
    assert plan.code == 2, plan.err[-3000:]
    assert re.search(r"^\s+~ edge: reload", plan.out, re.M), plan.out
    assert not recreated(plan.out), plan.out
    caddy = on_box(box, "docker inspect --format '{{.Id}}' edge-caddy-1").strip()
    with request_loop(box, [p[2] for p in PRODUCTS.values()]) as loop:
        time.sleep(2)
        result = cli(studio, "apply", "-i", INV, "-y")
    RELOAD["loop"] = loop
    print(loop.report("Caddy reloaded with a new config"), loop.failures)
    assert result.code == 0, result.err[-6000:]
    assert "edge: reload → applied" in result.err
    # the same Caddy process serves on: its container was not recreated
    assert on_box(box, "docker inspect --format '{{.Id}}' edge-caddy-1").strip() == caddy
    assert loop.sent > 40, loop.report("caddy reload")
    # the new connections were held in Docker's chain during the reload, and are no more
    chains = on_box(box, "iptables -w -S DOCKER-USER && iptables -w -S OUTPUT")
    assert "-N DOCKER-USER" in chains and HOLD_COMMENT not in chains, chains


def test_the_reload_of_caddy_lost_no_request() -> None:
    # Go's Shutdown of the old server closes every connection that has not yet sent its
    # request: without the hold (caddy.held_reload) one was lost per reload at this rate
    loop = RELOAD["loop"]
    assert not loop.failures, (loop.report("caddy reload"), loop.failures)


def history(root: Path, *stacks: str) -> list[dict[str, object]]:
    result = cli(root, "history", "-i", INV, "--json", *stacks)
    assert result.code == 0, result.err[-3000:]
    found: list[dict[str, object]] = json.loads(result.out)
    return found


def test_rollback_puts_the_previous_version_back_without_a_drop_and_the_audit_is_green(
    box: SandboxInfo, studio: Path
) -> None:
    versions = history(studio, "documint")
    assert [v["current"] for v in versions] == [True, False], versions  # newest first
    new, old = versions
    assert new["images"] == {"app": on_box(box, IMAGE_OF.format("documint")).strip()}
    with request_loop(box, [PRODUCTS["documint"][2]]) as loop:
        time.sleep(2)
        result = cli(studio, "rollback", "-i", INV, "-y", "documint")
    print(loop.report("documint rolled back"))
    assert result.code == 0, result.err[-6000:]
    assert re.findall(r"^\s+~ (\S+): recreate", result.out, re.M) == ["documint"], result.out
    assert f"rollback documint: {new['version']} → {old['version']}" in result.err
    assert "audit lumen-sandbox: healthy" in result.err, result.err[-3000:]
    assert on_box(box, IMAGE_OF.format("documint")).strip() == old["images"]["app"]  # type: ignore[index]
    assert not loop.failures, (loop.report("rollback"), loop.failures[:20])
    newest = history(studio, "documint")[0]
    assert newest["current"] and newest["result"] == f"rollback to {old['version']}"
    assert newest["images"] == old["images"]
    # the spec still says 2.4.2: the next plan would take it forward again ...
    plan = cli(studio, "plan", "-i", INV)
    assert recreated(plan.out) == {"documint"}, plan.out
    # ... and once the stack file says 2.4.1 again, the box is exactly the old version
    # (files, env, images): nothing to change, and the audit of the spec is green
    bump(studio, "documint", back=True)
    plan = cli(studio, "plan", "-i", INV)
    assert plan.code == 0, plan.out[-3000:]
    audit_ok(studio)


def test_a_rollback_with_nothing_to_go_back_to_is_a_clear_error(studio: Path) -> None:
    before = history(studio)
    result = cli(studio, "rollback", "-i", INV, "-y", "ghost")
    assert result.code == 1
    assert (
        "rollback: ghost has no previous version to go back to: the box keeps only " in result.err
    )
    assert "`vpsctl history -i inventory/sandbox ghost` lists them" in result.err
    unknown = cli(studio, "rollback", "-i", INV, "-y", "nosuch")
    assert unknown.code == 1
    assert "rollback: no stack 'nosuch' in inventory/sandbox (declared: documint, " in unknown.err
    assert history(studio) == before  # nothing was applied


def test_caddy_holds_a_request_while_the_upstreams_name_does_not_resolve(
    box: SandboxInfo, studio: Path
) -> None:
    """What the edge's Caddy does while a recreated container is gone from the Docker
    network (its name no longer resolves), verified on the box: a request that arrives then
    is held and answered once the container is back; one held longer than 5 s gets a 502."""
    host = PRODUCTS["documint"][2]
    context = ssl.create_default_context(cafile=str(pebble.roots_path()))
    print("edge:", on_box(box, "docker exec edge-caddy-1 caddy version").split()[0])
    on_box(box, "docker stop documint-app-1")
    try:
        resolved = on_box(
            box, "docker exec edge-caddy-1 getent hosts documint--app || echo unresolved"
        )
        assert resolved.strip() == "unresolved"  # Docker's DNS has no such name now
        started = time.monotonic()
        assert get_healthz(box, host, context) == 502
        held = time.monotonic() - started
        assert 4.5 < held < 9, held  # lb_try_duration 5s, then Caddy's 502
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(get_healthz, box, host, context)
            time.sleep(0.5)
            started = time.monotonic()
            on_box(box, "docker start documint-app-1")
            assert answer.result(timeout=30) == 200  # held, then answered by the new one
        print(
            f"held 502 after {held:.1f}s; answered 200 {time.monotonic() - started:.1f}s "
            "after the container was started again"
        )
    finally:
        on_box(box, "docker start documint-app-1")


# ── last: the one box becomes the first node of a cluster ────────────────────────────────


def one_node_inventory(root: Path) -> str:
    """``inventory/one-node``: the sandbox inventory declared as a cluster of one node (the
    same box, the edge), every stack pinned to it, its secrets the same."""
    source = root / INV
    target = root / "inventory" / "one-node"
    target.mkdir()
    text = (source / "host.yaml").read_text()
    box = re.search(r"\nsandbox:\n  name: (\S+)\n", text)
    assert box is not None
    text = text.replace(box.group(0), "\n", 1).replace("\nmemory: 7800m\n", "\n", 1)
    text = text.replace(
        "\nstacks:\n",
        f"\nnodes:\n  box:\n    sandbox: {{name: {box.group(1)}}}\n    memory: 7800m\n"
        "    edge: true\noverlay: plain\n\nstacks:\n",
        1,
    )
    for stack in ("documint", "cronping", "flagbit", "webhookvault", "ghost", "plausible"):
        text = text.replace(f"\n  {stack}:\n", f"\n  {stack}:\n    node: box\n", 1)
    text = text.replace("\n  listmonk:\n", "\n  listmonk:\n    node: box\n", 1)
    (target / "host.yaml").write_text(text)
    secrets = target / "secrets.env"
    secrets.write_bytes((source / "secrets.env").read_bytes())
    secrets.chmod(0o600)
    return "inventory/one-node"


def test_the_one_box_studio_becomes_a_one_node_cluster_with_its_data(
    box: SandboxInfo, studio: Path
) -> None:
    """README's way from one box to several: the same box declared as the first node. The
    plan shows every stack going from compose to Swarm there; apply converts them (compose's
    containers and networks go, the volumes stay), the records are served as before."""
    records = (
        "curl -sk --resolve documint.lumen.test:443:127.0.0.1 "
        "https://documint.lumen.test/api/records"
    )
    on_box(
        box,
        "curl -sk --resolve documint.lumen.test:443:127.0.0.1 -H 'Content-Type: "
        "application/json' --data '{\"n\": 1}' https://documint.lumen.test/api/records",
    )
    before = json.loads(on_box(box, records))["count"]
    assert before >= 1
    inventory = one_node_inventory(studio)
    plan = cli(studio, "plan", "-i", inventory)
    assert plan.code == 2, plan.out[-3000:]
    assert "Cluster lumen-sandbox: 1 node;" in plan.out and "init the swarm on box" in plan.out
    assert len(re.findall(r"^  ~ \S+: recreate", plan.out, re.M)) == 8
    applied = cli(studio, "apply", "-i", inventory, "-y")
    assert applied.code == 0, applied.err[-6000:]
    services = on_box(box, "docker service ls --format '{{.Name}} {{.Replicas}}'").split("\n")
    assert len([s for s in services if s.endswith(" 1/1")]) == 12, services
    # nothing of compose is left running beside Swarm's tasks
    made = "docker ps -q --filter label=com.docker.compose.config-hash"
    assert on_box(box, made).strip() == ""
    assert json.loads(on_box(box, records))["count"] == before
    again = cli(studio, "plan", "-i", inventory)
    assert again.code == 0 and "No changes. The node matches the spec." in again.out
