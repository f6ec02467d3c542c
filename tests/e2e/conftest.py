"""Fixtures for end-to-end tests on sandbox boxes: a private state dir, a box per module,
and a copy of the example studio pointed at it."""

from __future__ import annotations

import shutil
import socket
import ssl
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, run_cli
from vpsctl.host.remote import Session, Target
from vpsctl.local import pebble, sandbox
from vpsctl.local.sandbox import SandboxInfo


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Sandbox state for this test run only (``VPSCTL_STATE_DIR``)."""
    path = tmp_path_factory.mktemp("vpsctl-state")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VPSCTL_STATE_DIR", str(path))
        yield path


def make_box(prefix: str) -> SandboxInfo:
    return sandbox.up(unique(prefix))


@contextmanager
def running_box(prefix: str) -> Iterator[SandboxInfo]:
    """A fresh box for one test module, removed with its volumes afterwards."""
    info = make_box(prefix)
    try:
        yield info
    finally:
        sandbox.down(info.name)


def target_of(info: SandboxInfo) -> Target:
    return Target(
        info.name, info.address, info.ssh_port, info.user, info.key_path, info.known_hosts_path
    )


def on_box(info: SandboxInfo, command: str, timeout: int = 120) -> str:
    """Run ``command`` on the box; fail the test if it fails."""
    with Session(target_of(info)) as session:
        result = session.run(command, timeout=timeout, check=False)  # asserted below
    assert result.ok, f"{command}: {result.stderr[-800:]}"
    return result.stdout


def studio_for(root: Path, box: SandboxInfo, backup: SandboxInfo | None = None) -> Path:
    """A copy of the example studio whose sandbox inventory points at ``box``, with fresh
    secrets; its backups go to the sandbox ``backup``, or the copy declares none."""
    for name in ("stacks", "inventory", "standins"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("secrets.env"))
    host = root / "inventory/sandbox/host.yaml"
    text = host.read_text().replace("  name: default\n", f"  name: {box.name}\n")
    start = text.index("\nbackup:\n")
    end = text.index("\n\n", start + 1)
    if backup is None:
        text = text[:start] + text[end:]
    else:
        section = text[start:end].replace("sandbox: backup,", f"sandbox: {backup.name},")
        assert backup.name in section
        text = text[:start] + section + text[end:]
    host.write_text(text)
    result = run_cli(root, "secrets", "generate", "-i", "inventory/sandbox")
    assert result.code == 0, result.err
    return root


def served_certificate(box: SandboxInfo, host: str) -> dict[str, Any]:
    """The certificate Caddy on ``box`` serves for ``host`` (SNI, through the box's published
    443), verified by Python against Pebble's recorded roots only (tls: pebble) — chain and
    name — or the handshake fails the test."""
    context = ssl.create_default_context(cafile=str(pebble.roots_path()))
    with (
        socket.create_connection((box.address, box.https_port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        cert = tls.getpeercert()
    assert cert is not None
    return dict(cert)


def issuer_name(cert: dict[str, Any]) -> str:
    """The issuer's common name of a certificate from :func:`served_certificate`."""
    return str(next(value for rdn in cert["issuer"] for key, value in rdn if key == "commonName"))
