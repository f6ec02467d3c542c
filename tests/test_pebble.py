"""tls: pebble without a box: the Caddyfile and CA file it renders (and Caddy 2.11 accepts),
its errors, and how the probes trust Pebble's roots and say why a certificate fails.

Pebble's record is faked in a private state directory (its TLS CA is made for real by
vpsctl.local.pebble); the sandbox e2e tests run the real Pebble (tests/e2e/test_acme.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.helpers import ROOT, copy_studio, edit, run_cli
from vpsctl.core.facts import HostFacts
from vpsctl.core.plan import make_plan
from vpsctl.core.render import UnresolvedInput
from vpsctl.host import probes
from vpsctl.local import pebble, sandbox
from vpsctl.ops.inputs import render_spec
from vpsctl.spec.loader import load_spec

CADDY = ROOT / ".venv" / "bin" / "caddy"
CADDYFILE = "/opt/vpsctl/stacks/edge/config/caddy/Caddyfile"
DIRECTORY = "https://172.17.0.1:41234/dir"
INV = "inventory/sandbox"


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private sandbox state directory."""
    monkeypatch.setenv("VPSCTL_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def fake_pebble(state: Path) -> bytes:
    """A Pebble record as `vpsctl sandbox up` writes it; the TLS CA's PEM."""
    pebble.state_dir().mkdir(parents=True)
    pebble._tls_identity("172.17.0.1")  # makes and keeps the CA
    record = {
        "format": pebble.RECORD_FORMAT,
        "container": pebble.container_name(),
        "container_id": "0" * 64,
        "image": "vpsctl-pebble:test",
        "directory": DIRECTORY,
        "management_port": 1,  # nothing listens there: a refresh fails, and says so
        "dns_management_port": 1,
    }
    pebble.record_path().write_text(json.dumps(record))
    return pebble.tls_ca_path().read_bytes()


@pytest.fixture
def studio(tmp_path: Path, state: Path) -> Iterator[Path]:
    """The example sandbox studio (tls: pebble) with fresh secrets and no backup section
    (its repository would be another sandbox's record)."""
    root = copy_studio(tmp_path / "studio")
    host = root / INV / "host.yaml"
    text = host.read_text()
    start = text.index("\nbackup:\n")
    host.write_text(text[:start] + text[text.index("\n\n", start + 1) :])
    assert "tls: pebble\n" in host.read_text()
    assert run_cli(root, "secrets", "generate", "-i", INV).code == 0
    yield root


def caddyfile_of(root: Path) -> str:
    return render_spec(load_spec(root / INV)).files[CADDYFILE].content.decode()


def test_pebble_mode_orders_from_the_recorded_directory_with_its_ca_beside(
    studio: Path, state: Path
) -> None:
    ca = fake_pebble(state)
    desired = render_spec(load_spec(studio / INV))
    caddyfile = desired.files[CADDYFILE].content.decode()
    assets = [f for f in desired.files.values() if f.kind == "caddy-asset"]
    assert len(assets) == 1
    asset = assets[0]
    assert asset.content == ca and asset.mode == 0o644 and asset.stack == "edge"
    name = asset.path.rsplit("/", 1)[1]
    assert re.fullmatch(r"acme-ca-root-[0-9a-f]{12}\.pem", name)
    assert asset.path in desired.stacks["edge"].files
    head = caddyfile.split("\n}\n", 1)[0]
    assert f"\tacme_ca {DIRECTORY}\n" in head
    assert f"\tacme_ca_root /etc/caddy/{name}\n" in head  # the config dir's mount in Caddy
    assert "email" not in head and "local_certs" not in caddyfile
    # an ACME account's contact, when given, as with tls: acme
    edit(studio / INV / "host.yaml", "tls: pebble\n", "tls: pebble\nacme_email: ops@lumen.test\n")
    assert "\n\temail ops@lumen.test\n" in caddyfile_of(studio)


def test_a_new_ca_is_a_new_file_name_so_the_caddyfile_changes_too(
    studio: Path, state: Path
) -> None:
    fake_pebble(state)
    before = caddyfile_of(studio)
    (pebble.state_dir() / "tls-ca.key").unlink()
    pebble._tls_identity("172.17.0.1")  # another CA
    assert caddyfile_of(studio) != before  # validated and reloaded by apply, not missed


def test_internal_and_acme_are_unchanged(studio: Path, state: Path) -> None:
    host = studio / INV / "host.yaml"
    edit(host, "tls: pebble\n", "tls: internal\n")
    internal = render_spec(load_spec(studio / INV))
    text = internal.files[CADDYFILE].content.decode()
    assert "\tlocal_certs\n" in text and "acme_ca" not in text and "email" not in text
    assert not [f for f in internal.files.values() if f.kind == "caddy-asset"]
    edit(host, "tls: internal\n", "tls: acme\nacme_email: ops@lumen.test\n")
    text = caddyfile_of(studio)
    assert "acme_ca" not in text and "local_certs" not in text
    assert "\temail ops@lumen.test\n" in text


def test_without_a_pebble_the_render_names_the_line_and_the_command(
    studio: Path, state: Path
) -> None:
    # render works offline (issue 12): a marked placeholder, named; plan refuses to go on
    line = (studio / INV / "host.yaml").read_text().splitlines().index("tls: pebble")
    why = f"inventory/sandbox/host.yaml:{line + 1}: tls: pebble: no Pebble is recorded in "
    result = run_cli(studio, "render", "-i", INV, "--out", "out")
    assert result.code == 0, result.err
    assert f"placeholder for the ACME CA (Pebble): {why}" in result.err
    caddyfile = (studio / "out" / CADDYFILE.lstrip("/")).read_text()
    assert "\tacme_ca https://unresolved.invalid/dir\n" in caddyfile
    desired = render_spec(load_spec(studio / INV), offline=True)
    with pytest.raises(UnresolvedInput, match=r"cannot plan with placeholders: .*ACME CA") as err:
        make_plan("lumen-sandbox", desired, HostFacts(reachable=False))
    assert why in str(err.value) and "`vpsctl sandbox up` starts it" in str(err.value)


def caddy_validate(caddyfile: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CADDY), "validate", "--config", str(caddyfile), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        env={"HOME": str(cwd), "XDG_DATA_HOME": str(cwd), "XDG_CONFIG_HOME": str(cwd)},
        cwd=cwd,
        check=False,
        timeout=60,
    )


def test_caddy_validates_the_pebble_caddyfile_only_with_its_ca_file(
    studio: Path, state: Path, tmp_path: Path
) -> None:
    """Caddy 2.11 loads `acme_ca_root` while it validates (without contacting the CA): the
    reason apply uploads the CA file with Caddyfile.next, before `caddy validate`."""
    fake_pebble(state)
    desired = render_spec(load_spec(studio / INV))
    config = tmp_path / "etc-caddy"
    config.mkdir()
    # the box's /etc/caddy is the edge's config directory: here, a directory of the test
    text = desired.files[CADDYFILE].content.decode().replace("/etc/caddy/", f"{config}/")
    (config / "Caddyfile").write_text(text)
    missing = caddy_validate(config / "Caddyfile", tmp_path)
    assert missing.returncode != 0
    assert "loading trusted root CA's PEM file" in missing.stderr
    for f in desired.files.values():
        if f.kind == "caddy-asset":
            (config / f.path.rsplit("/", 1)[1]).write_bytes(f.content)
    valid = caddy_validate(config / "Caddyfile", tmp_path)
    assert valid.returncode == 0, valid.stderr[-2000:]
    assert "Valid configuration" in valid.stdout + valid.stderr


# ── the probes' trust ────────────────────────────────────────────────────────────────────


def test_probes_trust_only_pebbles_recorded_roots(studio: Path, state: Path) -> None:
    fake_pebble(state)
    spec = load_spec(studio / INV)
    bundle = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    pebble.roots_path().write_text("# a root seen earlier\n" + bundle)
    trust = probes.trust_for(spec)
    assert trust.mode == "roots" and trust.roots_pem.endswith(bundle)
    assert trust.source.startswith("Pebble's 1 issuing root(s) kept in ")
    # the running Pebble (port 1 here) could not be asked for its current root: said
    assert "the running Pebble's root could not be read" in trust.source
    found = probes.targets_for(spec)
    script = probes.script(found, trust)
    assert " -k" not in script
    assert script.count(f"--cacert {probes.ROOTS_ON_BOX}") == len(found)
    assert f"<<'VPSCTL_ACME_ROOTS'\n# a root seen earlier\n{bundle}VPSCTL_ACME_ROOTS\n" in script
    shell = subprocess.run(["sh", "-n", "-c", script], capture_output=True, check=False)
    assert shell.returncode == 0, shell.stderr


def test_no_recorded_root_is_named_as_the_reason(studio: Path, state: Path) -> None:
    fake_pebble(state)
    trust = probes.trust_for(load_spec(studio / INV))
    assert trust.roots_pem == ""
    assert trust.source.startswith("no Pebble root is recorded in ")
    assert "`vpsctl sandbox up` starts Pebble" in trust.source


def test_the_other_modes_keep_their_curl_flags(studio: Path, state: Path) -> None:
    host = studio / INV / "host.yaml"
    edit(host, "tls: pebble\n", "tls: internal\n")
    assert probes.trust_for(load_spec(studio / INV)).curl_flag == " -k"
    edit(host, "tls: internal\n", "tls: acme\nacme_email: ops@lumen.test\n")
    acme = probes.trust_for(load_spec(studio / INV))
    assert acme.curl_flag == "" and acme.prelude() == ""
    assert probes.script([], True) == probes.script([], acme)


def test_a_certificate_that_does_not_verify_says_against_what(studio: Path, state: Path) -> None:
    spec = load_spec(studio / INV)
    found = probes.targets_for(spec)[:3]
    output = (
        f"{probes.TRUST_MARK} Pebble's 2 issuing root(s) kept in "
        ".vpsctl/sandboxes/pebble/roots.pem\n"
        f"{probes.MARK} 0 000 60\n\n"
        f"{probes.MARK} 1 000 35\n\n"
        f"{probes.MARK} 2 000 7\n\n"
    )
    results = probes.parse(output, found)
    assert [r.ok for r in results] == [False, False, False]
    assert results[0].detail == (
        "the certificate does not verify against Pebble's 2 issuing root(s) kept in "
        ".vpsctl/sandboxes/pebble/roots.pem (curl exit 60)"
    )
    assert results[1].detail.startswith("the TLS handshake failed (curl exit 35)")
    assert results[2].detail.startswith("connection refused")


def test_answers_without_an_exit_code_still_parse(studio: Path, state: Path) -> None:
    """The format before curl's exit code came back (and scripted tests' answers)."""
    spec = load_spec(studio / INV)
    found = probes.targets_for(spec)[:1]
    (result,) = probes.parse(f"{probes.MARK} 0 000\n\n", found)
    assert result.detail == "no answer (connection failed or timed out)"


# ── the roots kept ───────────────────────────────────────────────────────────────────────


def test_every_root_seen_is_kept_once(state: Path) -> None:
    pebble.state_dir().mkdir(parents=True)
    pebble._tls_identity("172.17.0.1")
    first = pebble.tls_ca_path().read_bytes()  # any certificate will do
    assert pebble._keep_root(first, "a" * 64) is True
    assert pebble._keep_root(first, "b" * 64) is False  # the same root: not twice
    (pebble.state_dir() / "tls-ca.key").unlink()
    pebble._tls_identity("172.17.0.1")
    second = pebble.tls_ca_path().read_bytes()
    assert pebble._keep_root(second, "c" * 64) is True
    kept = pebble.roots(refresh=False)
    assert kept.count == 2 and kept.note == ""
    certs = x509.load_pem_x509_certificates(kept.pem.encode())
    assert [c.public_bytes(serialization.Encoding.PEM) for c in certs] == [first, second]
    assert kept.pem.startswith("# CN=vpsctl sandbox Pebble TLS CA, seen ")


def test_the_pebble_container_is_one_per_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VPSCTL_STATE_DIR", str(tmp_path / "a"))
    first = pebble.container_name()
    monkeypatch.setenv("VPSCTL_STATE_DIR", str(tmp_path / "b"))
    assert pebble.container_name() != first
    assert re.fullmatch(r"vpsctl-pebble-[0-9a-f]{10}", first)


def test_the_pebble_context_is_its_own_image_not_the_boxes(tmp_path: Path) -> None:
    """sandbox/pebble/ builds Pebble's image: a change there rebuilds Pebble, never the
    boxes' image (whose tag hashes the rest of sandbox/)."""
    context = tmp_path / "sandbox"
    shutil.copytree(ROOT / "sandbox", context)
    box_tag = sandbox.image_tag(context)
    (context / "pebble" / "Dockerfile").write_text("# changed\n")
    assert sandbox.image_tag(context) == box_tag
    (context / "packages.txt").write_text((context / "packages.txt").read_text() + "# more\n")
    assert sandbox.image_tag(context) != box_tag
