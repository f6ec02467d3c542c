"""Docker Swarm on a node: its state, init, join, node labels and roles, the overlay network.

The join token is a secret: no builder here ever puts it in a command line. :func:`join`
reads it from stdin (the caller feeds it), so it is never in the text the session sends,
logs or quotes in an error; :func:`init` sends the token ``docker swarm init`` prints to
/dev/null.
"""

from __future__ import annotations

import shlex

# re-exported: the builders' callers name them here
from vpsctl.core.swarm import NODE_LABEL as NODE_LABEL  # noqa: PLC0414
from vpsctl.core.swarm import OVERLAY as OVERLAY  # noqa: PLC0414
from vpsctl.host.commands import Argv, Script

MANAGER_PORT = 2377

MARK = "@@swarm"
# One line of JSON per node, as a manager sees the swarm (a worker sees nothing).
NODE_FORMAT = (
    '{"id":{{json .ID}},"hostname":{{json .Description.Hostname}},'
    '"role":{{json .Spec.Role}},"labels":{{json .Spec.Labels}},'
    '"state":{{json .Status.State}},"address":{{json .Status.Addr}},'
    '"availability":{{json .Spec.Availability}},'
    '"leader":{{if .ManagerStatus}}{{json .ManagerStatus.Leader}}{{else}}false{{end}}}'
)
NETWORK_FORMAT = (
    '{"driver":{{json .Driver}},"scope":{{json .Scope}},'
    '"attachable":{{json .Attachable}},"options":{{json .Options}}}'
)
# Whether the kernel can hold an IPsec ESP state (AES-GCM, as docker's encrypted overlay
# uses): tried in a network namespace of its own, so the box's own xfrm table is untouched.
ESP_PROBE = (
    "unshare -n ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x100 "
    "mode transport aead 'rfc4106(gcm(aes))' 0x" + "00" * 20 + " 128"
)


def read(network: str = OVERLAY) -> Script:
    """ONE command reading a node's swarm facts, in sections: ``@@swarm-info`` (docker
    info's ``.Swarm`` as JSON), ``@@swarm-nodes`` (:data:`NODE_FORMAT` lines, on a manager
    only), ``@@swarm-network`` (:data:`NETWORK_FORMAT` of ``network``; empty when it does not
    exist), ``@@swarm-esp yes|no``. A docker that does not answer fails the command."""
    quoted = shlex.quote(network)
    return Script(
        f"echo '{MARK}-info' && docker info --format '{{{{json .Swarm}}}}' || exit 1; "
        f"echo '{MARK}-nodes'; "
        'if ids=$(docker node ls -q 2>/dev/null) && [ -n "$ids" ]; then '
        f"docker node inspect --format {shlex.quote(NODE_FORMAT)} $ids || exit 1; fi; "
        f"echo '{MARK}-network'; "
        "names=$(docker network ls --format '{{.Name}}') || exit 1; "
        f"if printf '%s\\n' \"$names\" | grep -qx -- {quoted}; then "
        f"docker network inspect --format {shlex.quote(NETWORK_FORMAT)} {quoted} || exit 1; fi; "
        f"if {ESP_PROBE} >/dev/null 2>&1; then echo '{MARK}-esp yes'; "
        f"else echo '{MARK}-esp no'; fi"
    )


# One line of JSON per service and per task that should run (what a cluster's audit judges).
SERVICE_FORMAT = '{"name":{{json .Name}},"mode":{{json .Mode}},"replicas":{{json .Replicas}}}'
TASK_FORMAT = (
    '{"name":{{json .Name}},"node":{{json .Node}},"state":{{json .CurrentState}},'
    '"error":{{json .Error}}}'
)


def services_read() -> Script:
    """ONE command (on a manager) reading every service's replicas, running/desired
    (``@@swarm-services``, :data:`SERVICE_FORMAT` lines), and every task Swarm wants running
    with the node it is on (``@@swarm-tasks``, :data:`TASK_FORMAT` lines). A manager that
    does not answer fails the command."""
    return Script(
        f"echo '{MARK}-services'; "
        f"docker service ls --format {shlex.quote(SERVICE_FORMAT)} || exit 1; "
        f"echo '{MARK}-tasks'; ids=$(docker service ls -q) || exit 1; "
        'if [ -n "$ids" ]; then docker service ps --no-trunc --filter desired-state=running '
        f"--format {shlex.quote(TASK_FORMAT)} $ids || exit 1; fi"
    )


def init(address: str) -> Script:
    """Make this node the first manager of a new swarm, advertising ``address``. Its
    stdout (which prints the worker join token) goes to /dev/null."""
    return Script(f"docker swarm init --advertise-addr {shlex.quote(address)} >/dev/null")


def join_token(role: str) -> Argv:
    """The join token for ``role`` (``worker`` or ``manager``): run on a manager only, and
    never print its answer."""
    return ["docker", "swarm", "join-token", "-q", role]


def join(address: str, manager: str) -> Script:
    """Join the swarm whose manager listens on ``manager``, advertising ``address``; the
    token is the first line of stdin (feed it), never a word of this command.

    ``docker swarm join`` takes the token only as an argument: for the moment the command
    runs, it is visible in the box's process list to root (and to nobody else: it is this
    box's own root joining)."""
    target = f"{manager}:{MANAGER_PORT}" if ":" not in manager else f"[{manager}]:{MANAGER_PORT}"
    return Script(
        'IFS= read -r token && exec docker swarm join --token "$token" '
        f"--advertise-addr {shlex.quote(address)} {shlex.quote(target)}"
    )


def set_labels(node_id: str, add: dict[str, str], remove: list[str]) -> Argv:
    """Add (or change) ``add`` and remove ``remove`` of node ``node_id``'s labels (on a
    manager); docker prints the node's id."""
    argv = ["docker", "node", "update"]
    for key, value in sorted(add.items()):
        argv += ["--label-add", f"{key}={value}"]
    for key in sorted(remove):
        argv += ["--label-rm", key]
    return [*argv, node_id]


def set_role(node_id: str, manager: bool) -> Argv:
    """Promote node ``node_id`` to a manager, or demote it to a worker (on a manager)."""
    return ["docker", "node", "promote" if manager else "demote", node_id]


def create_overlay(network: str = OVERLAY, *, encrypted: bool = True) -> Argv:
    """An attachable overlay ``network`` (on a manager), encrypted unless told not to:
    containers of every stack, and ``docker run --network`` ones, meet on it across nodes."""
    return [
        "docker", "network", "create", "--driver", "overlay",
        *(["--opt", "encrypted"] if encrypted else []),
        "--attachable", network,
    ]  # fmt: skip


def remove_nodes(node_ids: list[str]) -> Argv:
    """Remove swarm nodes ``node_ids`` from the node list (on a manager), though they are
    down: the entries of boxes that were lost (``--force``: a down node cannot leave)."""
    return ["docker", "node", "rm", "--force", *node_ids]
