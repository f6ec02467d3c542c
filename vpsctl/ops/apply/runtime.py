"""How a stack is run: on one box by ``docker compose`` in its directory; on a node of a
cluster by ``docker stack deploy`` on a manager, fed the stack's files as the node holds
them. The rest of an apply (files, gates, rollbacks, probes, records) is the same for both:
it asks the runtime to bring a stack up, take it down, and say what its containers are."""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from vpsctl.core import backupfiles, cluster, sections
from vpsctl.core.render import EDGE_NETWORK, stack_dir
from vpsctl.core.stackdoc import DocumentError, deploy_document, one_box_compose
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

    def state_sessions(self, name: str) -> dict[str, Remote]:
        """Where ``name``'s containers are, by node ("": this box): what a failed rollback
        reads to say what runs now."""
        return {"": self.session}

    def poll(self, name: str, services: list[str]) -> tuple[dict[str, State], str]:
        """Each of ``services``' state (:meth:`health`, read where its containers are), and
        "" or why it could not be read."""
        polled = self.session.run(
            self.health(name, services),
            60,
            check=False,  # judged by the gate: an unreadable state is a failed gate
            purpose=f"the health of {name}",
        )
        if not polled.ok:
            return {}, output_tail(polled, 2, 200)
        return self.states(polled.stdout), ""

    def read_health_log(self, name: str, services: list[str]) -> str:
        """:meth:`health_log`'s answer, read where the containers are (shown to help: a
        failed read is an empty answer)."""
        result = self.session.run(
            self.health_log(name, services),
            60,
            check=False,  # shown to help: the gate has already failed
            purpose=f"the healthcheck log of {name}",
        )
        return result.stdout

    def read_logs(self, name: str, tail: int) -> str:
        """:meth:`logs`' answer, read where the containers are ("" when not read)."""
        logs = self.session.run(
            self.logs(name, tail),
            60,
            check=False,  # shown to help; the rollback does not depend on it
            purpose=f"the logs of {name}",
        )
        return logs.output if logs.ok else ""

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

    def __init__(
        self, applier: Applier, manager: Remote, sessions: Mapping[str, Remote] | None = None
    ) -> None:
        super().__init__(applier)
        self.manager = manager
        # every node's session by name: a stack placed by labels is read on the node Swarm
        # put its task on (:meth:`where`)
        self.sessions = dict(sessions or {})
        self.expected: dict[str, dict[str, str]] = {}  # stack → service → deployed hash
        # stacks whose files on this node are one box's compose file: a rollback of a stack
        # that was moving from compose to Swarm here (they run by compose, as before)
        self.by_compose: set[str] = set()

    def network(self) -> None:
        """Nothing: the overlay the edge shares with the stacks is the swarm's own (created
        when the swarm is formed, on a manager)."""

    def up(self, name: str) -> tuple[bool, str]:
        """Deploy the stack from its files on this node: wave by wave, each gated healthy
        before the next is deployed; the last wave (every service, ``--prune``) is gated by
        the caller."""
        try:
            compose_text, env_files = self.read_files(name)
            if one_box_compose(compose_text):
                return self.back_to_compose(name)
            self.by_compose.discard(name)
            deploy = deploy_document(name, compose_text, env_files)
            # a stack that ran by compose on this box before (one box becoming a node):
            # its containers and networks go (its volumes stay, the deploy takes them)
            self.session.run(
                stackcmd.compose_made(name), 120, purpose=f"stopping {name} as compose ran it"
            )
        except (RemoteError, DocumentError) as exc:
            return False, self.clean(str(exc))
        self.expected[name] = dict(deploy.hashes)
        try:
            self.make_secrets(name, deploy.secrets)
        except RemoteError as exc:
            return False, self.clean(str(exc))
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
            if last:  # the previous deploy's secrets: gone once no task uses them
                self.manager.run(
                    stackcmd.prune_secrets(name, sorted(deploy.secrets)),
                    120,
                    check=False,  # best effort (see prune_secrets)
                    purpose=f"removing the unused Swarm secrets of {name}",
                )
            if not last:
                self.say(f"{name}: deployed {', '.join(wave)}; the rest once they are healthy")
                ok, detail = self.applier.gate.wait_services(name, list(wave))
                if not ok:
                    return False, detail
        return True, ""

    def make_secrets(self, name: str, secrets: dict[str, str]) -> None:
        """Create on the manager each of ``secrets`` (name → value) it does not hold yet, the
        value on stdin. Raises :class:`RemoteError` (its values masked by the caller)."""
        if not secrets:
            return
        held = self.manager.run(
            stackcmd.secret_names(name), 60, purpose=f"listing the Swarm secrets of {name}"
        )
        have = set(held.stdout.split())
        for secret, value in secrets.items():
            if secret not in have:
                self.manager.feed(
                    stackcmd.create_secret(name, secret),
                    value.encode(),
                    60,
                    purpose=f"creating the Swarm secret {secret}",
                )
                self.applier.record(f"{name}: Swarm secret {secret} created")

    def read_files(self, name: str) -> tuple[str, dict[str, bytes]]:
        """The stack's compose.yaml text and env files (by path), as this node holds them."""
        result = self.session.run(
            stackcmd.read_files(name), purpose=f"reading the files of {name} for its deploy"
        )
        found: dict[str, bytes] = {}
        for section in sections.named(sections.split(result.stdout), stackcmd.FILE_MARK[2:]):
            found[section.args] = base64.b64decode(section.body.strip() or "")
        compose_text = found.pop("compose.yaml", None)
        if compose_text is None:
            raise DocumentError(f"{name}: no compose.yaml on the node")
        return compose_text.decode(), found

    def back_to_compose(self, name: str) -> tuple[bool, str]:
        """The stack's files here are one box's compose file again (the rollback of its move
        from compose to Swarm): its Swarm services go, then compose brings it up as before."""
        self.by_compose.add(name)
        self.manager.run(stackcmd.remove(name), 120, purpose=f"docker stack rm {name}")
        self.wait_until(
            stackcmd.tasks_gone(name),
            REMOVE_TIMEOUT,
            f"{name}: its Swarm tasks are still on the node {REMOVE_TIMEOUT}s after docker "
            "stack rm",
            f"waiting for the Swarm tasks of {name} to go",
        )
        return super().up(name)

    def paused(self, name: str) -> contextlib.AbstractContextManager[None]:
        """While a restore replaces ``name``'s data: see :func:`swarm_paused`. Its apps'
        tasks are waited for when they start again: the health gate that follows reads the
        newest container, and right after a detached scale that can be the scaled-down one
        Swarm is removing (its inspect fails: the gate saw `unknown` and failed at 0 s, in a
        whole-cluster rebuild's Plausible)."""
        return swarm_paused(self.applier.spec, self.manager, name, wait=True)

    def health(self, name: str, services: list[str]) -> Script:
        if name in self.by_compose:
            return super().health(name, services)
        expected = self.expected.get(name, {})
        return stackcmd.health(name, {s: expected.get(s, "unknown") for s in services})

    def follows(self, name: str) -> bool:
        """Whether ``name``'s containers are read where Swarm put its tasks, not here: a
        stack placed by labels (any of its candidate nodes may run it)."""
        return cluster.by_labels(self.spec, name) and name not in self.by_compose

    def state_sessions(self, name: str) -> dict[str, Remote]:
        """As one box's; for a stack placed by labels, the nodes Swarm wants its tasks on
        (:meth:`where`), or every node it may run on when none is placed."""
        if not self.follows(name):
            return super().state_sessions(name)
        placed = self.where(name, list(self.applier.desired.stacks[name].services))
        nodes = list(placed) or cluster.candidates(self.spec, name)
        return {node: self.sessions[node] for node in nodes if node in self.sessions}

    def where(self, name: str, services: list[str]) -> dict[str, list[str]]:
        """node → the services of ``name`` whose tasks Swarm wants running there, as the
        manager says (a service it has not placed yet is on none)."""
        answer = self.manager.run(
            stackcmd.task_nodes(name, services),
            60,
            check=False,  # a question: an unanswered one is "not placed yet" (the gate waits)
            purpose=f"where Swarm runs {name}",
        )
        found: dict[str, list[str]] = {}
        for service, node in stackcmd.parse_task_nodes(answer.stdout):
            if service in services and node in self.sessions:
                found.setdefault(node, []).append(service)
        return found

    def poll(self, name: str, services: list[str]) -> tuple[dict[str, State], str]:
        """As one box's; for a stack placed by labels, each service read on the node Swarm
        put its task on (:meth:`where`): one not placed yet is ``created``."""
        if not self.follows(name):
            return super().poll(name, services)
        states: dict[str, State] = {}
        for node, here in self.where(name, services).items():
            polled = self.sessions[node].run(
                self.health(name, here),
                60,
                check=False,  # judged by the gate: an unreadable state is a failed gate
                purpose=f"the health of {name} on {node}",
            )
            if not polled.ok:
                return {}, f"on {node}: {output_tail(polled, 2, 200)}"
            for service, state in self.states(polled.stdout).items():
                if service not in states or states[service][0] == "created":
                    states[service] = state  # an old task still listed: the new one wins
        return {s: states.get(s, ("created", "none", 0)) for s in services}, ""

    def read_health_log(self, name: str, services: list[str]) -> str:
        if not self.follows(name):
            return super().read_health_log(name, services)
        said = []
        for node, here in self.where(name, services).items():
            result = self.sessions[node].run(
                self.health_log(name, here),
                60,
                check=False,  # shown to help: the gate has already failed
                purpose=f"the healthcheck log of {name} on {node}",
            )
            said.append(result.stdout)
        return "\n".join(said)

    def read_logs(self, name: str, tail: int) -> str:
        """As one box's; for a stack placed by labels, from every node that may run it
        (Swarm may have tried its task on several)."""
        if not self.follows(name):
            return super().read_logs(name, tail)
        said = []
        for node in cluster.candidates(self.spec, name):
            if node not in self.sessions:
                continue
            logs = self.sessions[node].run(
                self.logs(name, tail),
                60,
                check=False,  # shown to help; the rollback does not depend on it
                purpose=f"the logs of {name} on {node}",
            )
            if logs.ok and logs.output:
                said.append(f"(on {node})\n{logs.output}")
        return "\n".join(said)

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
        if name in self.by_compose:
            return super().health_log(name, services)
        expected = self.expected.get(name, {})
        return stackcmd.health_log(name, {s: expected.get(s, "unknown") for s in services})

    def logs(self, name: str, tail: int) -> Script:
        return super().logs(name, tail) if name in self.by_compose else stackcmd.logs(name, tail)

    def down(self, name: str, *, volumes: bool = False) -> None:
        """``docker stack rm`` on the manager, then wait for the containers to go from this
        node (and delete the stack's volumes here with ``volumes``). A stack the spec now
        places on another node (it moved) is never removed from the swarm: its tasks have
        gone there; what Swarm left here (exited containers) is removed. Raises on failure."""
        if self.applier.placed_elsewhere(name):
            self.wait_until(
                stackcmd.services_stopped(name, list(self.spec.stacks[name].services)),
                REMOVE_TIMEOUT,
                f"{name}: its containers still run on the node {REMOVE_TIMEOUT}s after it moved",
                f"waiting for the containers of {name} to stop",
            )
            self.session.run(
                stackcmd.remove_containers(name), 120, purpose=f"removing what {name} left here"
            )
        else:
            self.manager.run(stackcmd.remove(name), 120, purpose=f"docker stack rm {name}")
            self.wait_until(
                stackcmd.containers_gone(name),
                REMOVE_TIMEOUT,
                f"{name}: its containers are still on the node {REMOVE_TIMEOUT}s after "
                "docker stack rm",
                f"waiting for the containers of {name} to go",
            )
            self.manager.run(
                stackcmd.prune_secrets(name, []),
                120,
                check=False,  # best effort: a later deploy of the stack tries again
                purpose=f"removing the Swarm secrets of {name}",
            )
        if volumes:
            self.session.run(
                stackcmd.remove_volumes(name), 300, purpose=f"deleting the volumes of {name}"
            )

    def wait_until(self, question: Script, timeout: float, failure: str, purpose: str) -> None:
        """Ask this node ``question`` (exit 0: yes) every second until yes; raise
        :class:`RemoteError` (``failure`` and the last answer) after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            answer = self.session.run(
                question,
                check=False,  # a question, asked until yes
                purpose=purpose,
            )
            if answer.ok:
                return
            if time.monotonic() >= deadline:
                raise RemoteError(f"{failure} ({output_tail(answer, 2, 200)})")
            time.sleep(1)


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
