"""tls: pebble end to end: Caddy on a fresh sandbox box orders its certificates over ACME
from the sandbox's Pebble, HTTP-01 through the box's port 80; the audit verifies them
against Pebble's roots only; a second apply orders nothing; a Pebble restart (a new issuing
root) leaves the certificates served and verified.

A small studio (the edge and two products) keeps this module to one box and about a
minute; the whole studio's first apply, rebuild and drill count orders in test_apply.py
and test_backup.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.e2e.conftest import (
    audit_ok,
    first_apply,
    issuer_name,
    on_box,
    running_box,
    served_certificate,
    studio_for,
)
from tests.helpers import run_cli
from vpsctl.local import docker as localdocker
from vpsctl.local import pebble
from vpsctl.local.sandbox import SandboxInfo

pytestmark = pytest.mark.e2e

INV = "inventory/sandbox"
KEPT = ("documint", "cronping", "edge")
HOSTS = ("cronping.lumen.test", "documint.lumen.test", "www.cronping.lumen.test")


@pytest.fixture(scope="module")
def box(state_dir: Path) -> Iterator[SandboxInfo]:
    with running_box("acme") as info:
        yield info


def small_studio(root: Path, box: SandboxInfo) -> Path:
    """The example studio on ``box`` with only the stacks of :data:`KEPT`."""
    studio_for(root, box)
    host = root / INV / "host.yaml"
    yaml = YAML()
    data = yaml.load(host.read_text())
    for name in [n for n in data["stacks"] if n not in KEPT]:
        del data["stacks"][name]
    with host.open("w") as fh:
        yaml.dump(data, fh)
    result = run_cli(root, "secrets", "generate", "-i", INV)
    assert result.code == 0, result.err
    return root


@pytest.fixture(scope="module")
def studio(box: SandboxInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = small_studio(tmp_path_factory.mktemp("studio"), box)
    result, placed = first_apply(root, "small studio, fresh box")
    assert placed >= len(HOSTS)  # one per name at least (more names are redirects' too)
    assert "pebble: the mock DNS answers" in result.out + result.err
    return root


def test_fresh_box_serves_pebble_certificates_verified_against_its_root(
    box: SandboxInfo, studio: Path
) -> None:
    for host in HOSTS:
        cert = served_certificate(box, host)  # verified: Pebble's recorded roots only
        assert issuer_name(cert).startswith("Pebble Intermediate CA "), cert
        assert ("DNS", host) in cert["subjectAltName"]
    # Caddy keeps them under the name of Pebble's directory, not its own CA's
    stored = on_box(box, "ls /var/lib/docker/volumes/edge_data/_data/caddy/certificates/")
    directory = pebble.endpoint().directory  # https://172.17.0.1:PORT/dir
    assert stored.split() == [directory.split("//")[1].replace(":", "-").replace("/", "-")]
    caddyfile = on_box(box, "cat /opt/vpsctl/stacks/edge/config/caddy/Caddyfile")
    assert f"\tacme_ca {directory}\n" in caddyfile and "local_certs" not in caddyfile
    # the audit's probes verified them: against Pebble's roots, without -k
    data = audit_ok(studio)
    routes = [c for c in data["checks"] if c["name"].startswith("route ")]
    assert routes and all(c["status"] == "ok" for c in routes), routes


def test_second_apply_places_no_order(box: SandboxInfo, studio: Path) -> None:
    before = pebble.orders()
    result = run_cli(studio, "apply", "-i", INV, "-y")
    assert result.code == 0, result.err[-3000:]
    assert "No changes. The host matches the spec." in result.out
    assert pebble.orders() == before


def test_a_pebble_restart_keeps_the_certificates_verified(box: SandboxInfo, studio: Path) -> None:
    """Pebble makes a new issuing root at each start: the old one stays recorded, so the
    certificates Caddy keeps (the directory URL did not move) still verify."""
    directory = pebble.endpoint().directory
    old = pebble.roots(refresh=False)
    before = pebble.orders()
    localdocker.docker("stop", pebble.container_name(), timeout=60)
    assert pebble.ensure().directory == directory  # `sandbox up` starts it again
    now = pebble.roots(refresh=False)
    assert now.count == old.count + 1 and now.pem.startswith(old.pem)
    for host in HOSTS:
        served_certificate(box, host)  # still verifies, against the older root
    audit_ok(studio)
    assert run_cli(studio, "plan", "-i", INV).code == 0  # the Caddyfile did not change
    assert pebble.orders() == before


def test_a_root_no_longer_kept_fails_the_probes_saying_why(box: SandboxInfo, studio: Path) -> None:
    """After the restart above, the certificates chain to Pebble's first root only: with
    just the current root kept, every route FAILs, naming the roots it was checked against."""
    kept = pebble.roots_path().read_bytes()
    entries = kept.split(b"# CN=")[1:]
    assert len(entries) >= 2
    pebble.roots_path().write_bytes(b"# CN=" + entries[-1])
    try:
        result = run_cli(studio, "audit", "-i", INV, "--json")
        assert result.code == 1
        failed = [c for c in json.loads(result.out)["checks"] if c["status"] == "FAIL"]
        assert failed and all(c["name"].startswith("route ") for c in failed), failed
        why = "the certificate does not verify against Pebble's 1 issuing root(s) kept in "
        assert all(why in c["value"] for c in failed), failed
    finally:
        pebble.roots_path().write_bytes(kept)
    audit_ok(studio)
