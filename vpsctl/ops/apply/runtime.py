"""How a stack is run: on one box by ``docker compose`` in its directory; on a node of a
cluster by ``docker stack deploy`` on a manager, fed the stack's files as the node holds
them. The rest of an apply (files, gates, rollbacks, probes, records) is the same for both:
it asks the runtime to bring a stack up, take it down, and say what its containers are."""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from vpsctl.core import backupfiles, sections
from vpsctl.core.render import EDGE_NETWORK, stack_dir
from vpsctl.core.stackdoc import Deploy, DocumentError, deploy_document
from vpsctl.host.commands import Argv, Script, compose, docker, files
from vpsctl.host.commands import stack as stackcmd
from vpsctl.host.remote import Remote, RemoteError, output_tail
from vpsctl.ops.apply.phase import Phase

if TYPE_CHECKING:
    from vpsctl.ops.apply.applier import Applier
    from vpsctl.spec.studio import Spec

State = tuple[str, str, int]  # (container state, health, restarts)
REMOVE_TIMEOUT = 120  # seconds a removed stack's containers may take to go


class ComposeRuntime(Phase):
    """One box: ``docker compose`` of each stack in its directory."""

    def network(self) -> None:
        """The docker network the edge and the stacks it routes to share."""
        self.session.run(
            docker.ensure_network(EDGE_NETWORK),
            purpose=f"creating the docker network {EDGE_NETWORK}",
        )

    def up(self, name: str) -> tuple[bool, str]:
        """Create or update the stack's containers: whether that worked, and the output (its
        health is the gate's to judge)."""
        result = self.session.run(
            compose.up(name),
            360,
            check=False,  # the health gate: its failure is judged by the caller
            purpose=f"compose up of {name}",
        )
        return result.ok, result.output

    def paused(self, name: str) -> contextlib.AbstractContextManager[None]:
        """While a restore replaces ``name``'s data: nothing to do here (the box's backup
        script stops and starts the stack's compose services itself)."""
        return contextlib.nullcontext()

    def health(self, name: str, services: list[str]) -> Script:
        """ONE command reading each service's state (see :meth:`states`)."""
        return docker.health(name, services)

    def states(self, output: str) -> dict[str, State]:
        """service → (state, health, restarts) from :meth:`health`'s output."""
        from vpsctl.ops.apply.health import parse_health  # noqa: PLC0415 - health imports us

        return parse_health(output)

    def health_log(self, name: str, services: list[str]) -> Script:
        """Docker's health log of each of ``services``."""
        return docker.health_log(name, services)

    def logs(self, name: str, tail: int) -> Script:
        """The last ``tail`` log lines of every service of the stack."""
        return compose.logs(name, tail)

    def down(self, name: str, *, volumes: bool = False) -> None:
        """Stop and remove the stack's containers (its volumes too with ``volumes``): by its
        compose file while it is there, else by the containers' labels. Raises on failure."""
        has_compose = self.session.run(
            files.is_file(f"{stack_dir(name)}/compose.yaml"),
            check=False,  # a question: is its compose file still there
            purpose=f"looking for {name}'s compose file",
        )
        command: Argv | Script = (
            compose.down(name, volumes=volumes)
            if has_compose.ok
            else docker.remove_project(name, volumes=volumes)
        )
        self.session.run(command, 300, purpose=f"stopping {name}")


class SwarmRuntime(ComposeRuntime):
    """A node of a cluster: its stacks are Swarm services, deployed on ``manager`` from the
    files this node holds, in waves (``depends_on``), each service gated on THIS deploy's
    containers (:data:`vpsctl.core.stackdoc.LABEL_DEPLOYED`)."""

    def __init__(self, applier: Applier, manager: Remote) -> None:
        super().__init__(applier)
        self.manager = manager
        self.expected: dict[str, dict[str, str]] = {}  # stack → service → deployed hash

    def network(self) -> None:
        """Nothing: the overlay the edge shares with the stacks is the swarm's own (created
        when the swarm is formed, on a manager)."""

    def up(self, name: str) -> tuple[bool, str]:
        """Deploy the stack from its files on this node: wave by wave, each gated healthy
        before the next is deployed; the last wave (every service, ``--prune``) is gated by
        the caller."""
        try:
            deploy = self.document(name)
        except (RemoteError, DocumentError) as exc:
            return False, self.clean(str(exc))
        self.expected[name] = dict(deploy.hashes)
        for index, (wave, document) in enumerate(zip(deploy.waves, deploy.documents, strict=True)):
            last = index == len(deploy.waves) - 1
            result = self.manager.feed(
                stackcmd.deploy(name, prune=last),
                document.encode(),
                300,
                check=False,  # judged below, as compose up's is
                purpose=f"docker stack deploy of {name}",
            )
            if not result.ok:
                return False, result.output
            if not last:
                self.say(f"{name}: deployed {', '.join(wave)}; the rest once they are healthy")
                ok, detail = self.applier.gate.wait_services(name, list(wave))
                if not ok:
                    return False, detail
        return True, ""

    def document(self, name: str) -> Deploy:
        """The stack's deploy, from its files as this node holds them."""
        result = self.session.run(
            stackcmd.read_files(name), purpose=f"reading the files of {name} for its deploy"
        )
        found: dict[str, bytes] = {}
        for section in sections.named(sections.split(result.stdout), stackcmd.FILE_MARK[2:]):
            found[section.args] = base64.b64decode(section.body.strip() or "")
        compose_text = found.pop("compose.yaml", None)
        if compose_text is None:
            raise DocumentError(f"{name}: no compose.yaml on the node")
        return deploy_document(name, compose_text.decode(), found)

    def paused(self, name: str) -> contextlib.AbstractContextManager[None]:
        """While a restore replaces ``name``'s data: see :func:`swarm_paused`."""
        return swarm_paused(self.applier.spec, self.manager, name)

    def health(self, name: str, services: list[str]) -> Script:
        expected = self.expected.get(name, {})
        return stackcmd.health(name, {s: expected.get(s, "unknown") for s in services})

    def states(self, output: str) -> dict[str, State]:
        """As one box's, but a task that exited is Swarm's to replace (it restarts the
        service in a new container): ``restarting``, with the containers of this deploy that
        failed before as its restarts (enough of them make a crash loop that fails the
        gate); one not started yet is ``created``."""
        states: dict[str, State] = {}
        for line in output.splitlines():
            parts = [p.strip() for p in line.split("\t")]
            if len(parts) != 4 or not parts[0] or parts[0].startswith("@@"):
                continue
            service, state, health, count = parts
            failed = int(count) - 1 if count.isdigit() and int(count) > 0 else 0
            if state == "pending":
                state = "created"
            elif state in ("exited", "dead"):
                state, failed = "restarting", failed + 1
            states[service] = (state, health, failed)
        return states

    def health_log(self, name: str, services: list[str]) -> Script:
        expected = self.expected.get(name, {})
        return stackcmd.health_log(name, {s: expected.get(s, "unknown") for s in services})

    def logs(self, name: str, tail: int) -> Script:
        return stackcmd.logs(name, tail)

    def down(self, name: str, *, volumes: bool = False) -> None:
        """``docker stack rm`` on the manager, then wait for the containers to go from this
        node (and delete the stack's volumes here with ``volumes``). Raises on failure."""
        self.manager.run(stackcmd.remove(name), 120, purpose=f"docker stack rm {name}")
        deadline = time.monotonic() + REMOVE_TIMEOUT
        while True:
            gone = self.session.run(
                stackcmd.containers_gone(name),
                check=False,  # a question, asked until yes
                purpose=f"waiting for the containers of {name} to go",
            )
            if gone.ok:
                break
            if time.monotonic() >= deadline:
                raise RemoteError(
                    f"{name}: its containers are still on the node {REMOVE_TIMEOUT}s after "
                    f"docker stack rm ({output_tail(gone, 2, 200)})"
                )
            time.sleep(1)
        if volumes:
            self.session.run(
                stackcmd.remove_volumes(name), 300, purpose=f"deleting the volumes of {name}"
            )


@contextlib.contextmanager
def swarm_paused(spec: Spec, manager: Remote, name: str, *, wait: bool = False) -> Iterator[None]:
    """While a restore replaces stack ``name``'s data on its node: its app services (all but
    its databases, which the restore loads) scaled to 0 on the ``manager``, then back to the
    replicas they had (``wait``: until their tasks run again; else a health gate that
    follows judges them). The node's script cannot: Swarm would start a stopped task again."""
    services = list(backupfiles.stack_view(name, spec.stacks[name])["app_services"])
    if not services:
        yield
        return
    read = manager.run(stackcmd.replicas(name, services), purpose=f"reading the replicas of {name}")
    replicas = stackcmd.parse_replicas(name, read.stdout)
    manager.run(
        stackcmd.scale(name, dict.fromkeys(replicas, 0), wait=True),
        300,
        purpose=f"stopping the apps of {name}",
    )
    try:
        yield
    finally:
        manager.run(
            stackcmd.scale(name, replicas, wait=wait),
            300,
            purpose=f"starting the apps of {name} again",
        )
