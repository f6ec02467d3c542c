"""Caddy of the edge stack: find it, validate and reload a Caddyfile inside it."""

from __future__ import annotations

from vpsctl.host.commands import Argv
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
