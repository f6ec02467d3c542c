"""``docker stack`` of a cluster's stack (run on a manager), and what its node is asked about
the stack's task containers (their compose labels make them read as one box's do)."""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from vpsctl.core.render import stack_dir
from vpsctl.core.stackdoc import LABEL_DEPLOYED
from vpsctl.core.swarm import NODE_LABEL
from vpsctl.host.commands import Argv, Script, words
from vpsctl.host.commands.docker import HEALTH_MARK, project_label

FILE_MARK = "@@file"
# a task container: its state, its health (docker's; "none" without a healthcheck)
TASK_FORMAT = "{{.State.Status}}\t{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"


def deploy(name: str, *, prune: bool) -> Argv:
    """``docker stack deploy`` of stack ``name`` from stdin (the document the deploy is fed:
    never written on the manager); ``prune`` removes services it no longer holds."""
    return [
        "docker", "stack", "deploy", "--detach=true", *(["--prune"] if prune else []),
        "-c", "-", name,
    ]  # fmt: skip


def remove(name: str) -> Argv:
    """``docker stack rm`` of stack ``name`` (its services, tasks and networks; volumes stay)."""
    return ["docker", "stack", "rm", name]


def read_files(name: str) -> Script:
    """The stack's compose.yaml and env files as its node holds them: ``@@file PATH`` (from
    the stack's directory) then the content in base64, one line."""
    return Script(
        f"cd {shlex.quote(stack_dir(name))} && for f in compose.yaml env/*.env; do "
        f'[ -f "$f" ] || continue; echo "{FILE_MARK} $f"; base64 -w0 "$f"; echo; done'
    )


def _each_task(name: str, expected: Mapping[str, str], body: str) -> Script:
    """A loop over ``expected`` (service → the hash its deployed containers carry): ``$s`` the
    service, ``$n`` how many containers of that deploy exist, ``$id`` the newest of them
    (``body`` runs only when there is one; else the line ``SERVICE\\tpending\\tnone\\t0``:
    Swarm has not started it yet)."""
    pairs = words(f"{service}={digest}" for service, digest in expected.items())
    project = shlex.quote(project_label(name))
    return Script(
        f"for p in {pairs}; do s=${{p%%=*}}; h=${{p#*=}}; "
        f"ids=$(docker ps -aq --filter {project} "
        f'--filter "label=com.docker.compose.service=$s" '
        f'--filter "label={LABEL_DEPLOYED}=$h"); '
        'n=$(printf "%s\\n" "$ids" | grep -c .); id=$(printf "%s\\n" "$ids" | head -n 1); '
        f'if [ -z "$id" ]; then printf \'%s\\tpending\\tnone\\t0\\n\' "$s"; else {body}; fi; done'
    )


def health(name: str, expected: Mapping[str, str]) -> Script:
    """ONE command reading each service's newest container of this deploy: ``SERVICE\\tSTATE
    \\tHEALTH\\tCOUNT`` lines after ``@@health`` (COUNT: its containers of this deploy, the
    ones Swarm replaced after they failed among them)."""
    inspect = (
        'printf "%s\\t" "$s"; printf "%s\\t%s\\n" '
        f'"$(docker inspect --format {shlex.quote(TASK_FORMAT)} "$id")" "$n"'
    )
    return Script(f"echo {HEALTH_MARK}; " + _each_task(name, expected, inspect))


def health_log(name: str, expected: Mapping[str, str]) -> Script:
    """Docker's health log of each service's newest container of this deploy (``@@hlog
    SERVICE`` then its JSON)."""
    inspect = 'echo "@@hlog $s"; docker inspect --format \'{{json .State.Health}}\' "$id"'
    return _each_task(name, expected, inspect)


def task_nodes(name: str, services: list[str]) -> Script:
    """Where Swarm wants each of ``services`` of stack ``name`` running (on a manager):
    ``SERVICE\tNODE`` lines, NODE the spec's name of the swarm node its task is on (its
    :data:`NODE_LABEL`); a task not placed yet gives no line."""
    node = shlex.quote(f'{{{{index .Spec.Labels "{NODE_LABEL}"}}}}')
    return Script(
        f"for s in {words(services)}; do "
        "for h in $(docker service ps --filter desired-state=running --format '{{.Node}}' "
        f'{shlex.quote(name + "_")}"$s" 2>/dev/null); do '
        f'printf \'%s\\t%s\\n\' "$s" "$(docker node inspect --format {node} "$h")"; '
        "done; done"
    )


def parse_task_nodes(output: str) -> list[tuple[str, str]]:
    """:func:`task_nodes`' answer: (service, node) pairs (a line without a node skipped)."""
    pairs: list[tuple[str, str]] = []
    for line in output.splitlines():
        service, _, node = line.partition("\t")
        if service.strip() and node.strip():
            pairs.append((service.strip(), node.strip()))
    return pairs


def logs(name: str, tail: int) -> Script:
    """The last ``tail`` log lines of each container of stack ``name`` on this node, newest
    container of each service first."""
    project = shlex.quote(project_label(name))
    return Script(
        f"for id in $(docker ps -aq --filter {project}); do "
        "echo \"== $(docker inspect --format '{{index .Config.Labels "
        '"com.docker.compose.service"}} {{.State.Status}}\' "$id")"; '
        f'docker logs --tail {int(tail)} "$id" 2>&1; done'
    )


def containers_gone(name: str) -> Script:
    """Exit 0 once no container of stack ``name`` is left on this node (``docker stack rm``
    returns before Swarm has stopped them)."""
    return Script(f'[ -z "$(docker ps -aq --filter {shlex.quote(project_label(name))})" ]')


def remove_volumes(name: str) -> Script:
    """Delete every volume of stack ``name`` on this node (labelled as one box's are)."""
    project = shlex.quote(project_label(name))
    return Script(
        f"for v in $(docker volume ls -q --filter {project}); do "
        'docker volume rm -- "$v" >/dev/null || exit 1; done'
    )


def replicas(name: str, services: list[str]) -> Argv:
    """Each of ``services`` of stack ``name`` (on a manager): ``SERVICE REPLICAS`` lines, the
    replicas its spec asks for."""
    return [
        "docker", "service", "inspect",
        "--format", "{{.Spec.Name}} {{.Spec.Mode.Replicated.Replicas}}",
        *(f"{name}_{s}" for s in services),
    ]  # fmt: skip


def parse_replicas(name: str, output: str) -> dict[str, int]:
    """:func:`replicas`' answer: the replicas by service (its name in the stack)."""
    found: dict[str, int] = {}
    for line in output.splitlines():
        service, _, count = line.strip().partition(" ")
        if service.startswith(f"{name}_") and count.isdigit():
            found[service.removeprefix(f"{name}_")] = int(count)
    return found


def scale(name: str, replicas: Mapping[str, int], *, wait: bool) -> Argv:
    """Scale services of stack ``name`` (on a manager) to ``replicas`` (service → count);
    ``wait``: until their tasks have converged (stopped, for 0), else return at once (a
    health gate judges the new tasks)."""
    return [
        "docker", "service", "scale", f"--detach={'false' if wait else 'true'}",
        *(f"{name}_{s}={n}" for s, n in sorted(replicas.items())),
    ]  # fmt: skip


def stop_stacks(names: list[str]) -> Script:
    """Every service of stacks ``names`` scaled to 0 (on a manager), at once: their tasks are
    started again by their next ``docker stack deploy`` (which sets the declared replicas)."""
    stacks = " ".join(shlex.quote(n) for n in names)
    return Script(
        f"for st in {stacks}; do "
        'for id in $(docker service ls -q --filter "label=com.docker.stack.namespace=$st"); do '
        'docker service scale --detach=true "$id=0" >/dev/null || exit 1; done; done'
    )


def services_stopped(name: str, services: list[str]) -> Script:
    """Exit 0 once no container of ``services`` of stack ``name`` runs on this node (Swarm
    keeps a stopped task's container, exited, as its history)."""
    project = shlex.quote(project_label(name))
    checks = " ".join(
        f'[ -z "$(docker ps -q --filter {project} '
        f'--filter {shlex.quote(f"label=com.docker.compose.service={service}")})" ] &&'
        for service in services
    )
    return Script(f"{checks} true")


def remove_containers(name: str) -> Script:
    """Remove every container of stack ``name`` left on this node once its tasks have gone
    elsewhere: the exited ones Swarm keeps as a moved service's history (none running)."""
    project = shlex.quote(project_label(name))
    return Script(
        f'ids=$(docker ps -aq --filter {project}); [ -z "$ids" ] || docker rm $ids >/dev/null'
    )


SECRET_LABEL = "dev.vpsctl.stack"  # noqa: S105 - the label naming a Swarm secret's stack


def secret_names(name: str) -> Argv:
    """The Swarm secrets vpsctl made for stack ``name`` (one name a line; run on a manager)."""
    return [
        "docker", "secret", "ls", "--filter", f"label={SECRET_LABEL}={name}",
        "--format", "{{.Name}}",
    ]  # fmt: skip


def create_secret(name: str, secret: str) -> Argv:
    """``docker secret create`` of ``secret`` for stack ``name``, its value read from stdin
    (never a command line, never a file on the manager)."""
    return ["docker", "secret", "create", "--label", f"{SECRET_LABEL}={name}", secret, "-"]


def prune_secrets(name: str, keep: list[str]) -> Script:
    """Remove stack ``name``'s Swarm secrets but ``keep``: the ones a task still uses are
    refused by Swarm and stay (best effort: a later deploy removes them)."""
    kept = " ".join(shlex.quote(k) for k in keep)
    listing = shlex.join(secret_names(name))
    return Script(
        f'for s in $({listing}); do case " {kept} " in *" $s "*) ;; '
        '*) docker secret rm "$s" >/dev/null 2>&1 || true ;; esac; done'
    )


def compose_made(name: str) -> Script:
    """Stop and remove what ``docker compose`` made for project ``name`` on this node (its
    containers carry compose's config hash, Swarm's tasks do not; its networks), the volumes
    kept: the stack is moving from one box's compose to Swarm on this node."""
    project = shlex.quote(project_label(name))
    return Script(
        f"ids=$(docker ps -aq --filter {project} --filter label=com.docker.compose.config-hash); "
        'if [ -n "$ids" ]; then docker stop -t 30 $ids >/dev/null && '
        "docker rm $ids >/dev/null; fi; "
        f"for n in $(docker network ls -q --filter {project}); do "
        'docker network rm "$n" >/dev/null || exit 1; done'
    )


def tasks_gone(name: str) -> Script:
    """Exit 0 once no container of a Swarm task of stack ``name`` is left on this node."""
    namespace = shlex.quote(f"label=com.docker.stack.namespace={name}")
    return Script(f'[ -z "$(docker ps -aq --filter {namespace})" ]')
