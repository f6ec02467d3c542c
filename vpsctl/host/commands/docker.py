"""Docker itself: containers of a compose project, their health, networks, volumes."""

from __future__ import annotations

import shlex

from vpsctl.host.commands import Argv, Script, words

HEALTH_MARK = "@@health"
# A service's state as one poll reads it: container state, then docker's health status
# ("none" without a healthcheck, "missing" without a container).
HEALTH_FORMAT = (
    "{{.State.Status}}\t{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
    "\t{{.RestartCount}}"
)
NETWORKS_FORMAT = (
    "{{range $k, $v := .NetworkSettings.Networks}}@@net {{$k}} {{$v.IPAddress}}\n{{end}}"
)
GWBRIDGE = "docker_gwbridge"  # the bridge through which a Swarm task's container reaches out
STATE_FORMAT = '{{.Label "com.docker.compose.service"}}\t{{.State}}\t{{.Image}}\t{{.Status}}'


def project_label(name: str) -> str:
    """The filter selecting every container of compose project ``name``."""
    return f"label=com.docker.compose.project={name}"


def service_label(service: str) -> str:
    """The filter selecting the containers of compose service ``service``."""
    return f"label=com.docker.compose.service={service}"


def each_container(name: str, services: list[str], body: str) -> Script:
    """A loop over ``services`` of stack ``name``: ``$s`` the service, ``$id`` its container
    (``body`` runs only when it has one; else the line ``SERVICE\tmissing\tnone``). A Script:
    one round trip for every service, however many."""
    return Script(
        f"for s in {words(services)}; do "
        f"id=$(docker ps -aq --filter {shlex.quote(project_label(name))} "
        '--filter "label=com.docker.compose.service=$s" | head -n 1); '
        f'if [ -z "$id" ]; then printf \'%s\\tmissing\\tnone\\n\' "$s"; else {body}; fi; done'
    )


def health(name: str, services: list[str]) -> Script:
    """ONE command reading every service's state and health (``SERVICE\tSTATE\tHEALTH``
    lines after ``@@health``)."""
    inspect = f'printf "%s\\t" "$s"; docker inspect --format {shlex.quote(HEALTH_FORMAT)} "$id"'
    return Script(f"echo {HEALTH_MARK}; " + each_container(name, services, inspect))


def health_log(name: str, services: list[str]) -> Script:
    """Docker's health log of each of ``services`` (``@@hlog SERVICE`` then its JSON)."""
    inspect = 'echo "@@hlog $s"; docker inspect --format \'{{json .State.Health}}\' "$id"'
    return each_container(name, services, inspect)


def stack_state(name: str) -> Argv:
    """Every container of stack ``name``: service, state, image, status (tab-separated)."""
    return ["docker", "ps", "-a", "--filter", project_label(name), "--format", STATE_FORMAT]


def remove_project(name: str, *, volumes: bool = False) -> Script:
    """Remove every container of project ``name`` (its compose file is gone, so ``compose
    down`` cannot); a Script: the ids come from ``docker ps``, and there may be none."""
    return Script(
        f"ids=$(docker ps -aq --filter {shlex.quote(project_label(name))}); "
        f'[ -z "$ids" ] || docker rm -f{" -v" if volumes else ""} $ids'
    )


def ensure_network(network: str) -> Script:
    """Create the docker network ``network`` unless it exists (a Script: ``||``)."""
    quoted = shlex.quote(network)
    return Script(
        f"docker network inspect {quoted} >/dev/null 2>&1 || docker network create {quoted}"
    )


def remove_volumes(names: list[str]) -> Script:
    """Delete each volume of ``names`` that still exists (a Script: a loop that asks first,
    so one already gone is fine, and stops at the first that cannot be deleted)."""
    return Script(
        f"for v in {words(names)}; do "
        'if docker volume inspect -- "$v" >/dev/null 2>&1; then '
        'docker volume rm -- "$v" >/dev/null || exit 1; fi; done'
    )


def running_container(stack: str, service: str) -> Script:
    """The running container of ``service`` of ``stack``: ``@@id ID`` and one ``@@net
    NETWORK ADDRESS`` line per network it is on; exit 3 when none runs (a Script: the id
    found feeds the ``docker inspect``)."""
    project = shlex.quote(project_label(stack))
    label = shlex.quote(service_label(service))
    return Script(
        f"id=$(docker ps -q --filter {project} --filter {label} --filter status=running "
        '| head -n 1); [ -n "$id" ] || exit 3; echo "@@id $id"; '
        f'docker inspect --format {shlex.quote(NETWORKS_FORMAT)} "$id"; '
        # a Swarm task's networks are overlays, out of the host's reach; the host reaches it
        # through docker_gwbridge (none on one box: nothing printed)
        "full=$(docker inspect --format '{{.Id}}' \"$id\"); "
        f"docker network inspect {GWBRIDGE} --format "
        '"{{with index .Containers \\"$full\\"}}@@net '
        f'{GWBRIDGE} {{{{.IPv4Address}}}}{{{{end}}}}" 2>/dev/null || true'
    )
