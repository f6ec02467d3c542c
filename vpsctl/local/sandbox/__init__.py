"""Disposable Debian 13 VPS boxes on this machine: ``vpsctl sandbox up|down|status``.

A sandbox is a container that behaves like a fresh cloud VPS: systemd as PID 1, sshd, apt
working against Debian's mirror, nothing else (vpsctl's bootstrap installs Docker, compose,
Caddy and ufw, as on a real box). The recipe is the one verified in ``SANDBOX.md``. By concern:

* :mod:`.records`: names, the state directory, :class:`SandboxInfo` and its JSON record;
* :mod:`.image`: the box image (debootstrapped base + the ``sandbox/`` context), built once;
* :mod:`.box`: a box's life (create, boot, resume, remove) and ``up``/``down``/``status``;
* :mod:`.keys`: the box's key pair and its host keys, recorded as ``known_hosts``;
* :mod:`.lock`: the machine-wide locks around Docker's machine-wide names.

Every SSH connection to a box goes through :mod:`vpsctl.host.remote` (the tool's one SSH
stack), its host key checked against the recorded ``known_hosts``. The command line is
:mod:`vpsctl.cli.sandbox`. Callers use this package's names:
``from vpsctl.local import sandbox; sandbox.up(name)``.
"""

from vpsctl.local.sandbox.box import down, internal_address, probe, status, up
from vpsctl.local.sandbox.image import CONTEXT, base_tag, ensure_image, image_tag, packages
from vpsctl.local.sandbox.lock import locked
from vpsctl.local.sandbox.records import (
    ADDRESS,
    BOX_PORTS,
    HTTP_PORT,
    HTTPS_PORT,
    LABEL,
    PROBE_PORTS,
    SSH_PORT,
    USER,
    Progress,
    SandboxError,
    SandboxInfo,
    SandboxNotFound,
    check_name,
    container_name,
    hostname,
    key_path,
    known_hosts_path,
    load,
    recorded,
    state_dir,
    state_path,
    volume_name,
)

__all__ = [
    "ADDRESS",
    "BOX_PORTS",
    "CONTEXT",
    "HTTPS_PORT",
    "HTTP_PORT",
    "LABEL",
    "PROBE_PORTS",
    "SSH_PORT",
    "USER",
    "Progress",
    "SandboxError",
    "SandboxInfo",
    "SandboxNotFound",
    "base_tag",
    "check_name",
    "container_name",
    "down",
    "ensure_image",
    "hostname",
    "image_tag",
    "internal_address",
    "key_path",
    "known_hosts_path",
    "load",
    "locked",
    "packages",
    "probe",
    "recorded",
    "state_dir",
    "state_path",
    "status",
    "up",
    "volume_name",
]
