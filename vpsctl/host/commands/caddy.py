"""Caddy of the edge stack: find it, validate and reload a Caddyfile inside it."""

from __future__ import annotations

import shlex

from vpsctl.host.commands import Argv, Script
from vpsctl.host.commands.docker import project_label, service_label

CONFIG_DIR = "/etc/caddy"  # where the edge's Caddy sees its config directory
CONFIG = f"{CONFIG_DIR}/Caddyfile"


def running_container(name: str) -> Argv:
    """The id of the running Caddy container of the edge stack ``name``, if any."""
    return [
        "docker", "ps", "-q",
        "--filter", project_label(name),
        "--filter", service_label("caddy"),
        "--filter", "status=running",
    ]  # fmt: skip


def caddy(container: str, verb: str, config: str) -> Argv:
    """``caddy validate`` or ``caddy reload`` of ``config`` inside the running Caddy."""
    return ["docker", "exec", container, "caddy", verb, "--config", config, "--adapter",
            "caddyfile"]  # fmt: skip


def validate_oneoff(directory: str, image: str, config: str) -> Argv:
    """``caddy validate`` of ``config`` in a one-off container of ``image`` (no network,
    ``directory`` mounted read-only as the config directory): when no Caddy runs yet."""
    return [
        "docker", "run", "--rm", "--network", "none",
        "-v", f"{directory}:{CONFIG_DIR}:ro",
        "--entrypoint", "caddy", image,
        "validate", "--config", config, "--adapter", "caddyfile",
    ]  # fmt: skip


HOLD_SECONDS = "0.5"  # how long in-flight connections get to send their request
HOLD_COMMENT = "vpsctl-caddy-reload-hold"  # marks the rules, so that they are found again
_ADDRESSES = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"


def held_reload(container: str, config: str = CONFIG) -> Script:
    """``caddy reload`` of ``config`` in the running Caddy ``container``, new connections to
    it held meanwhile: no connection is lost to the reload.

    Why: a config-changing reload shuts the old HTTP server down, and Go's ``Shutdown``
    closes every connection that has not yet sent its request (accepted, TLS handshake done
    or under way) with no answer; one is lost per reload at a steady 20 requests a second
    (bench/RESULTS.md, issue 16). So first the new connections' SYNs to the container's
    addresses are dropped (``DOCKER-USER`` for what Docker's DNAT forwards, ``OUTPUT`` for its
    userland proxy): their clients send the SYN again after a second, as TCP does. Then
    ``HOLD_SECONDS`` for the connections already open to send their request (a request
    under way is served to its end by the old server), then the reload, then the SYNs pass
    again. The rules are removed on any exit (a trap), and any left by a run that was
    killed are removed first (found by their comment). On a box whose Docker manages no
    ``DOCKER-USER`` chain (``iptables: false``), or where a rule cannot be added, it is a
    plain reload. Exit status: the reload's."""
    return Script(
        f"c={shlex.quote(container)}\n"
        f'ips=$(docker inspect --format {shlex.quote(_ADDRESSES)} "$c") || exit 1\n'
        'hold() { iptables -w "$1" "$2" -d "$3" -p tcp --syn -m comment --comment '
        f"{HOLD_COMMENT} -j DROP; }}\n"
        'release() { for chain in DOCKER-USER OUTPUT; do iptables -w -S "$chain" | '
        f"grep -e '--comment {HOLD_COMMENT} ' | sed 's/^-A /-D /' | "
        "while read -r rule; do iptables -w $rule; done; done; }\n"
        "if iptables -w -n -L DOCKER-USER >/dev/null 2>&1; then\n"
        "  release\n"
        "  trap release EXIT\n"
        "  trap 'exit 129' HUP INT TERM\n"
        "  for ip in $ips; do\n"
        '    hold -I DOCKER-USER "$ip" && hold -I OUTPUT "$ip" || { release; break; }\n'
        "  done\n"
        f"  sleep {HOLD_SECONDS}\n"
        "fi\n"
        f"{shlex.join(caddy(container, 'reload', config))}\n"
        "exit $?"
    )
