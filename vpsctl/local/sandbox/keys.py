"""A sandbox's SSH keys: its own ed25519 key pair, installed through ``docker exec``, and the
box's host keys, read through ``docker exec`` too (a channel that needs no trust on first
use) and recorded as the ``known_hosts`` every later SSH connection verifies against."""

from __future__ import annotations

from vpsctl.errors import display_path
from vpsctl.local import docker as localdocker
from vpsctl.local.files import write_atomic
from vpsctl.local.sandbox.records import (
    ADDRESS,
    SandboxError,
    container_name,
    key_path,
    public_key_path,
)


def ensure_key(name: str) -> str:
    """Create sandbox ``name``'s ed25519 key pair unless it exists; return the public line."""
    # cryptography loads only when a box is made, not per command
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415

    path = key_path(name)
    if path.exists():
        try:
            key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
        except ValueError as exc:
            raise SandboxError(f"{display_path(path)} is not a usable SSH key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SandboxError(f"{display_path(path)} is not an ed25519 key")
    else:
        key = Ed25519PrivateKey.generate()
        write_atomic(
            path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            ),
        )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    line = f"{public.decode()} {container_name(name)}"
    write_atomic(public_key_path(name), (line + "\n").encode(), 0o644)
    return line


def install_key(container: str, public_line: str) -> None:
    """Let ``public_line`` log in as root on the box (``authorized_keys``, once)."""
    script = (
        "set -e; umask 077; key=$(cat); mkdir -p /root/.ssh; touch /root/.ssh/authorized_keys; "
        'grep -qxF -- "$key" /root/.ssh/authorized_keys || '
        'printf "%s\\n" "$key" >> /root/.ssh/authorized_keys; '
        "chmod 700 /root/.ssh; chmod 600 /root/.ssh/authorized_keys"
    )
    proc = localdocker.docker_exec(
        container, ["sh", "-c", script], input_=public_line.encode() + b"\n", timeout=30
    )
    if proc.returncode != 0:
        raise SandboxError(f"writing /root/.ssh/authorized_keys failed: {proc.stderr.strip()}")


def host_key_lines(host_pubs: str, address: str, port: int) -> tuple[str, ...]:
    """known_hosts lines for ``[address]:port`` from the box's ``ssh_host_*_key.pub`` files."""
    lines = []
    for raw in host_pubs.splitlines():
        parts = raw.split()
        if len(parts) >= 2:
            lines.append(f"[{address}]:{port} {parts[0]} {parts[1]}")
    return tuple(sorted(lines))


def read_host_keys(container: str, port: int) -> tuple[str, ...]:
    """The box's host keys as known_hosts lines for ``[ADDRESS]:port``."""
    proc = localdocker.docker_exec(
        container, ["sh", "-c", "cat /etc/ssh/ssh_host_*_key.pub"], timeout=30
    )
    lines = host_key_lines(proc.stdout, ADDRESS, port)
    if proc.returncode != 0 or not lines:
        raise SandboxError(f"the box has no SSH host keys: {proc.stderr.strip()}")
    return lines
