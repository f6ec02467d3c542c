"""The sandbox's ACME CA: Pebble (Let's Encrypt's test ACME server) beside the sandbox boxes.

With ``tls: pebble`` in host.yaml, Caddy on a sandbox box gets its certificates over ACME, as
in production, from a Pebble that runs on this machine next to the boxes; HTTP-01 goes
through the box's port 80 like Let's Encrypt's would.

* **One Pebble per sandbox state directory** (``vpsctl sandbox up`` starts it; the last
  ``sandbox down`` of that directory removes it), container ``vpsctl-pebble-<hash>`` built
  from ``sandbox/pebble/`` (Debian's ``pebble`` package on the stand-in base). Its orders
  are those of that directory's boxes only, so a test can count them.
* **Reached by the boxes at a stable address**: its ACME port is published on the default
  docker bridge's gateway (``https://172.17.0.1:PORT/dir``), the address every box routes
  to; the port is chosen once and kept, so the directory URL — which names the folder of
  Caddy's certificate storage — does not move when Pebble restarts. Its management ports
  are published on 127.0.0.1 for vpsctl.
* **Its directory is served over TLS** with a certificate from a CA of our own, made once
  per state directory (``pebble/tls-ca.pem``): Caddy trusts it through ``acme_ca_root``,
  the file render places beside the Caddyfile.
* **Mock DNS**: pebble-challtestsrv answers only the A records set through its management
  API — :func:`point_names` sends an inventory's names to the box being applied, so a
  rebuild or drill box gets the challenges for the same names — and nothing for any other
  name.
* **Roots**: Pebble makes a new issuing root at every start. Each one seen (read from its
  management API, ``/roots/0``) is kept in ``pebble/roots.pem``: certificates issued before
  a restart still verify, and the probes verify against these roots only (no ``-k``).
* :func:`orders` counts the orders Pebble has taken (its ``Added order`` log lines).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import json
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vpsctl.errors import VpsctlError, display_path
from vpsctl.local import docker as localdocker
from vpsctl.local.files import write_atomic
from vpsctl.resources import shipped

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
    from cryptography.x509 import Certificate

    from vpsctl.spec.studio import Spec

CONTEXT = shipped("sandbox") / "pebble"
IMAGE_REPO = "vpsctl-pebble"
LABEL = "io.vpsctl.local.pebble"
ACME_PORT = 14000  # the directory, in the container
MANAGEMENT_PORT = 15000  # Pebble's management API (roots), in the container
DNS_MANAGEMENT_PORT = 8055  # pebble-challtestsrv's management API, in the container
MEMORY = "256m"
START_TIMEOUT = 60.0
RECORD_FORMAT = 1
ORDER_LINE = "Added order "  # Pebble's log line for each new order (wfe.NewOrder)

Progress = Callable[[str], None]


class PebbleError(VpsctlError):
    """The sandbox's ACME CA could not be made, reached or read."""


@dataclass(frozen=True)
class Endpoint:
    """What Caddy needs to order from this Pebble: the directory URL and the CA of its TLS."""

    directory: str
    tls_ca_pem: bytes


@dataclass(frozen=True)
class Roots:
    """Every issuing root this Pebble has had (PEM bundle), and where they are kept."""

    pem: str
    count: int
    path: Path
    note: str = ""  # why the bundle may lack the running Pebble's root


# --- names and paths -------------------------------------------------------------------------


def _sandboxes() -> Path:
    from vpsctl.local import sandbox  # noqa: PLC0415 - one definition of the state directory

    return sandbox.state_dir()


def state_dir() -> Path:
    """``<sandbox state dir>/pebble``: the record, the TLS CA and every root seen."""
    return _sandboxes() / "pebble"


def container_name() -> str:
    """This state directory's Pebble container (one per directory: tests stay apart)."""
    digest = hashlib.sha256(str(_sandboxes()).encode()).hexdigest()[:10]
    return f"vpsctl-pebble-{digest}"


def roots_path() -> Path:
    """The PEM bundle of every issuing root seen."""
    return state_dir() / "roots.pem"


def tls_ca_path() -> Path:
    """The CA of the directory's TLS certificate (Caddy's ``acme_ca_root``)."""
    return state_dir() / "tls-ca.pem"


def record_path() -> Path:
    """The JSON record of the running Pebble (ports, directory URL)."""
    return state_dir() / "pebble.json"


def image_tag() -> str:
    """The Pebble image's tag: a hash of its context and of the stand-in base it builds on."""
    from vpsctl.local import standins  # noqa: PLC0415

    digest = hashlib.sha256(standins.base_id().encode() + b"\0")
    for path in sorted(p for p in CONTEXT.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(CONTEXT)}\0{path.stat().st_mode & 0o777:o}\0".encode())
        digest.update(path.read_bytes() + b"\0")
    return f"{IMAGE_REPO}:{digest.hexdigest()[:12]}"


# --- the image and the TLS identity ----------------------------------------------------------


def ensure_image(say: Progress) -> str:
    """Build the Pebble image unless its tag exists; return the tag."""
    from vpsctl.local import sandbox, standins  # noqa: PLC0415

    tag = image_tag()
    if localdocker.image_exists(tag):
        return tag
    if not (CONTEXT / "Dockerfile").is_file():
        raise PebbleError(f"the Pebble build context {CONTEXT}/ is missing")
    with sandbox.locked("pebble-image"):  # one build for every state directory
        if localdocker.image_exists(tag):
            return tag
        standins.ensure_base()
        say(f"building {tag} (Debian's pebble package, once)")
        started = time.monotonic()
        localdocker.build_image(tag, CONTEXT)
        say(f"Pebble image built in {time.monotonic() - started:.1f}s")
    return tag


def gateway() -> str:
    """The default docker bridge's gateway: the address every box routes to this machine by."""
    config = localdocker.docker(
        "network", "inspect", "bridge", "--format", "{{json .IPAM.Config}}", timeout=60
    )
    for entry in json.loads(config) or []:
        if entry.get("Gateway"):
            return str(entry["Gateway"])
        if entry.get("Subnet") and ":" not in entry["Subnet"]:
            # docker gives the bridge the subnet's first address unless told otherwise
            return str(next(ipaddress.ip_network(entry["Subnet"]).hosts()))
    raise PebbleError("docker's default bridge network has no IPv4 gateway address")


def _tls_identity(address: str) -> tuple[bytes, bytes]:
    """The directory's certificate and key (PEM) for ``address``, from this state
    directory's TLS CA (:func:`_tls_ca`)."""
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415

    now = dt.datetime.now(dt.UTC)
    ca_cert, ca_key = _tls_ca(now)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(address)),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.DNSName("localhost"),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vpsctl sandbox Pebble")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # strict verifiers (Python 3.13, Go) want both key identifiers
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _private_pem(key)


def _tls_ca(now: dt.datetime) -> tuple[Certificate, EllipticCurvePrivateKey]:
    """This state directory's TLS CA: made on first use and kept (the file on every box
    stays the same)."""
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key_file = state_dir() / "tls-ca.key"
    if tls_ca_path().is_file() and key_file.is_file():
        loaded = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise PebbleError(f"{display_path(key_file)} is not an EC key")
        return x509.load_pem_x509_certificate(tls_ca_path().read_bytes()), loaded
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vpsctl sandbox Pebble TLS CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_atomic(key_file, _private_pem(ca_key), 0o600)
    write_atomic(tls_ca_path(), ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return ca_cert, ca_key


def _private_pem(key: EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# --- the container ---------------------------------------------------------------------------


def _published(inspected: dict[str, Any], port: int) -> tuple[str, int] | None:
    bindings = (inspected.get("NetworkSettings") or {}).get("Ports") or {}
    for binding in bindings.get(f"{port}/tcp") or []:
        if binding.get("HostPort"):
            return str(binding.get("HostIp") or ""), int(binding["HostPort"])
    return None


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


def _create(image: str, say: Progress, port: int | None = None) -> None:
    """Create and start this state directory's Pebble, its TLS certificate copied in; its
    directory on ``port`` (a recreated Pebble keeps its predecessor's: the same URL)."""
    name = container_name()
    address = gateway()
    port = port or _free_port(address)
    cert, key = _tls_identity(address)
    created = localdocker.docker(
        "create",
        "--name",
        name,
        "--hostname",
        "pebble",
        "--label",
        f"{LABEL}={_sandboxes()}",
        "--memory",
        MEMORY,
        "-p",
        f"{address}:{port}:{ACME_PORT}",
        "-p",
        f"127.0.0.1::{MANAGEMENT_PORT}",
        "-p",
        f"127.0.0.1::{DNS_MANAGEMENT_PORT}",
        image,
        timeout=120,
    ).strip()
    try:
        with tempfile_dir() as tmp:
            tls = tmp / "tls"
            tls.mkdir()
            write_atomic(tls / "cert.pem", cert, 0o644)
            write_atomic(tls / "key.pem", key, 0o600)
            localdocker.docker("cp", str(tls), f"{created}:/etc/pebble/", timeout=60)
        localdocker.docker("start", created, timeout=120)
    except BaseException:
        with contextlib.suppress(localdocker.DockerError):
            localdocker.remove_container(created)
        raise
    say(f"Pebble (ACME CA) {name} created: directory https://{address}:{port}/dir")


@contextlib.contextmanager
def tempfile_dir() -> Iterator[Path]:
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="vpsctl-pebble-") as tmp:
        yield Path(tmp)


def _context() -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(tls_ca_path()))
    return context


def _management_get(port: int, path: str, timeout: float = 5.0) -> bytes:
    """GET ``path`` from Pebble's management API (HTTPS, our TLS CA verified)."""
    url = f"https://127.0.0.1:{port}{path}"
    with urllib.request.urlopen(url, timeout=timeout, context=_context()) as response:
        body: bytes = response.read()
        return body


def _dns_post(port: int, path: str, data: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(data).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our container
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise PebbleError(
            f"Pebble's mock DNS does not answer on 127.0.0.1:{port} ({exc}); "
            "`vpsctl sandbox up` starts it"
        ) from None


def _wait_root(port: int, timeout: float = START_TIMEOUT) -> bytes:
    """Pebble's current issuing root, once its management API answers."""
    deadline = time.monotonic() + timeout
    why = "no answer"
    while time.monotonic() < deadline:
        try:
            pem = _management_get(port, "/roots/0")
        except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
            why = str(exc)
            time.sleep(0.25)
            continue
        if b"BEGIN CERTIFICATE" in pem:
            return pem
        why = f"unexpected answer {pem[:60]!r}"
        time.sleep(0.25)
    raise PebbleError(
        f"Pebble's management API on 127.0.0.1:{port} gave no root within {timeout:.0f}s "
        f"({why}){_logs()}"
    )


def _logs() -> str:
    text = localdocker.container_logs(container_name(), tail=15)
    return f"\nits last log lines:\n{text}" if text.strip() else ""


def _keep_root(pem: bytes, container_id: str) -> bool:
    """Add ``pem`` to the roots bundle unless it is there; whether it was new."""
    from cryptography import x509  # noqa: PLC0415

    root = x509.load_pem_x509_certificate(pem)
    path = roots_path()
    old = path.read_bytes() if path.is_file() else b""
    known = (
        {c.fingerprint(_sha256()) for c in x509.load_pem_x509_certificates(old)} if old else set()
    )
    if root.fingerprint(_sha256()) in known:
        return False
    seen = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    entry = (
        (
            f"# {root.subject.rfc4514_string()}, seen {seen} (Pebble container "
            f"{container_id[:12]})\n"
        ).encode()
        + pem.strip()
        + b"\n"
    )
    write_atomic(path, old + entry, 0o644)
    return True


def _sha256() -> Any:
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415

    return hashes.SHA256()


def ensure(progress: Progress | None = None) -> Endpoint:
    """Make this state directory's Pebble run; record it and its current root; return the
    endpoint Caddy orders from. Idempotent (a running Pebble is only re-read)."""
    from vpsctl.local import sandbox  # noqa: PLC0415

    say = progress or (lambda _: None)
    localdocker.ensure_engine()
    with sandbox.locked(f"pebble-{container_name()}"):
        name = container_name()
        inspected = localdocker.inspect_container(name)
        port = None
        if inspected is not None and str(inspected.get("Config", {}).get("Image")) != image_tag():
            say(f"Pebble {name} runs an older image: recreating it on the same port")
            bound = (inspected.get("HostConfig") or {}).get("PortBindings") or {}
            port = next((int(b["HostPort"]) for b in bound.get(f"{ACME_PORT}/tcp") or []), None)
            localdocker.remove_container(name)
            inspected = None
        if inspected is None:
            _create(ensure_image(say), say, port)
        elif not (inspected.get("State") or {}).get("Running"):
            say(f"starting Pebble {name} (a new issuing root: the old ones are kept)")
            localdocker.docker("start", name, timeout=120)
        inspected = localdocker.inspect_container(name)
        if inspected is None:
            raise PebbleError(f"the Pebble container {name} vanished while starting")
        acme = _published(inspected, ACME_PORT)
        management = _published(inspected, MANAGEMENT_PORT)
        dns = _published(inspected, DNS_MANAGEMENT_PORT)
        if acme is None or management is None or dns is None:
            raise PebbleError(f"the Pebble container {name} publishes no ports; remove it")
        root = _wait_root(management[1])
        if _keep_root(root, str(inspected["Id"])):
            say(f"Pebble's issuing root recorded in {display_path(roots_path())}")
        directory = f"https://{acme[0]}:{acme[1]}/dir"
        record = {
            "format": RECORD_FORMAT,
            "container": name,
            "container_id": str(inspected["Id"]),
            "image": image_tag(),
            "directory": directory,
            "management_port": management[1],
            "dns_management_port": dns[1],
        }
        write_atomic(record_path(), (json.dumps(record, indent=2) + "\n").encode(), 0o644)
    return Endpoint(directory, tls_ca_path().read_bytes())


def down(progress: Progress | None = None) -> bool:
    """Remove this state directory's Pebble container (its roots and TLS CA are kept)."""
    say = progress or (lambda _: None)
    # `docker rm -f` of no container succeeds on some engines: look first
    removed = localdocker.inspect_container(container_name()) is not None
    if removed:
        localdocker.remove_container(container_name())
    record_path().unlink(missing_ok=True)
    if removed:
        say(f"removed Pebble {container_name()}")
    return removed


# --- reading it ------------------------------------------------------------------------------


def _record() -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(record_path().read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PebbleError(
            f"no Pebble is recorded in {display_path(state_dir())}/ (tls: pebble needs the "
            "sandbox's ACME CA): `vpsctl sandbox up` starts it"
        ) from None
    except ValueError as exc:
        raise PebbleError(f"{display_path(record_path())} is not a Pebble record: {exc}") from None
    if data.get("format") != RECORD_FORMAT:
        raise PebbleError(f"{display_path(record_path())}: unknown format; `vpsctl sandbox up`")
    return data


def endpoint() -> Endpoint:
    """The recorded directory URL and TLS CA (no live check: render reads this)."""
    data = _record()
    try:
        ca = tls_ca_path().read_bytes()
    except FileNotFoundError:
        raise PebbleError(
            f"{display_path(tls_ca_path())} is missing: `vpsctl sandbox up` makes it"
        ) from None
    return Endpoint(str(data["directory"]), ca)


def roots(refresh: bool = True) -> Roots:
    """Every issuing root seen; with ``refresh``, the running Pebble's current one first
    (a Pebble restarted behind vpsctl's back has a new root)."""
    note = ""
    if refresh:
        try:
            data = _record()
            pem = _management_get(int(data["management_port"]), "/roots/0")
            _keep_root(pem, str(data.get("container_id", "")))
        except (PebbleError, urllib.error.URLError, OSError, ssl.SSLError, ValueError) as exc:
            note = f"the running Pebble's root could not be read ({exc})"
    path = roots_path()
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    return Roots(text, text.count("BEGIN CERTIFICATE"), path, note)


def orders() -> int:
    """How many orders this state directory's Pebble has taken since it was created (its
    log keeps every start's lines)."""
    name = container_name()
    proc = subprocess.run(["docker", "logs", name], capture_output=True, check=False, timeout=60)
    if proc.returncode != 0:
        raise PebbleError(
            f"cannot read the log of Pebble {name}: {proc.stderr.decode(errors='replace')[-300:]}"
        )
    text = (proc.stdout + proc.stderr).decode(errors="replace")
    return sum(ORDER_LINE in line for line in text.splitlines())


def point_names(box: str, names: Iterable[str]) -> str:
    """Make the mock DNS answer each of ``names`` with sandbox ``box``'s address (and
    nothing else); return that address. The box that is applied is the one that asks."""
    from vpsctl.local import sandbox  # noqa: PLC0415

    address = sandbox.internal_address(sandbox.load(box))
    port = int(_record()["dns_management_port"])
    for name in sorted(set(names)):
        _dns_post(port, "/clear-a", {"host": name})
        _dns_post(port, "/add-a", {"host": name, "addresses": [address]})
    return address


def point_spec(spec: Spec) -> str | None:
    """For ``tls: pebble``: point every host name of ``spec`` at its sandbox box; a line
    saying so. None for any other ``tls`` (nothing to do)."""
    box = spec.host.sandbox
    edge = spec.host.edge_node
    if spec.host.nodes is not None and edge is not None:
        box = spec.host.nodes[edge].sandbox  # a cluster: the edge node serves every name
    if spec.host.tls != "pebble" or box is None:
        return None
    names = sorted({h for s in spec.host.stacks.values() for h in s.domains.values()})
    address = point_names(box.name, names)
    which = f"the edge node {edge}" if spec.host.cluster else "this box"
    return f"pebble: the mock DNS answers {len(names)} name(s) with {address} ({which})"
