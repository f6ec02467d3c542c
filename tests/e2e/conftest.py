"""Fixtures for end-to-end tests on sandbox boxes: a private state dir, a box per module,
and a copy of the example studio pointed at it."""

from __future__ import annotations

import json
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Result, copy_studio, run_cli
from vpsctl.host.remote import Session, Target
from vpsctl.local import pebble, sandbox
from vpsctl.local.sandbox import SandboxInfo

SANDBOX_INV = "inventory/sandbox"


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
    copy_studio(root)
    host = root / SANDBOX_INV / "host.yaml"
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
    result = run_cli(root, "secrets", "generate", "-i", SANDBOX_INV)
    assert result.code == 0, result.err
    return root


def first_apply(root: Path, what: str) -> tuple[Result, int]:
    """``vpsctl apply -y`` of ``root``'s sandbox inventory onto its fresh box, which must
    succeed and order its certificates from Pebble over ACME; prints how long it took and
    how many orders it placed. The run's output, and that count."""
    before = pebble.orders()
    started = time.monotonic()
    result = run_cli(root, "apply", "-i", SANDBOX_INV, "-y")
    took = time.monotonic() - started
    assert result.code == 0, result.err[-6000:]
    placed = pebble.orders() - before
    assert placed > 0, "the first apply placed no ACME order with Pebble"
    print(f"{what}: apply {took:.1f}s, {placed} ACME orders placed with Pebble")
    return result, placed


def audit_ok(root: Path) -> dict[str, Any]:
    """``vpsctl audit --json`` of ``root``'s sandbox inventory, which must pass (the failed
    checks are the assertion's message)."""
    result = run_cli(root, "audit", "-i", SANDBOX_INV, "--json")
    data: dict[str, Any] = json.loads(result.out)
    bad = [(c["group"], c["name"], c["value"]) for c in data["checks"] if c["status"] == "FAIL"]
    assert result.code == 0, bad
    return data


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
