"""The sandbox image: a debootstrapped Debian 13 (``packages.txt`` of the context) plus the
build context ``sandbox/`` (masked units that cannot work in a container, first-boot SSH host
keys, the Docker drop-in this machine needs). Its tag carries a hash of the context, so a
change rebuilds it and an unchanged context never does."""

from __future__ import annotations

import hashlib
import stat
import time
from pathlib import Path

from vpsctl.errors import display_path
from vpsctl.local import docker as localdocker
from vpsctl.local.sandbox.lock import locked
from vpsctl.local.sandbox.records import Progress, SandboxError, say_as
from vpsctl.resources import shipped

CONTEXT = shipped("sandbox")
SUITE = "trixie"
IMAGE_REPO = "vpsctl-sandbox"
BASE_REPO = "vpsctl-sandbox-base"


def packages(context: Path = CONTEXT) -> list[str]:
    """The packages debootstrap adds to the base system (``packages.txt`` of the context)."""
    text = (context / "packages.txt").read_text(encoding="utf-8")
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


def base_tag(context: Path = CONTEXT) -> str:
    """The tag of the debootstrapped base image: Debian ``SUITE`` with :func:`packages`."""
    digest = hashlib.sha256(",".join(packages(context)).encode()).hexdigest()[:12]
    return f"{BASE_REPO}:{SUITE}-{digest}"


def image_tag(context: Path = CONTEXT) -> str:
    """The sandbox image's tag: a hash of every file (path, mode, bytes) of the context."""
    if not (context / "Dockerfile").is_file() or not (context / "packages.txt").is_file():
        raise SandboxError(
            f"the sandbox build context {context}/ (Dockerfile, packages.txt) is missing; "
            "vpsctl's install is incomplete (a wheel ships it as vpsctl/_data/sandbox/): "
            "reinstall it"
        )
    digest = hashlib.sha256(f"{SUITE}\0".encode())
    # pebble/ is the context of another image (vpsctl.local.pebble), hashed into that one's tag
    files = (
        p for p in context.rglob("*") if p.is_file() and p.parts[len(context.parts)] != "pebble"
    )
    for path in sorted(files):
        mode = stat.S_IMODE(path.stat().st_mode)
        digest.update(f"{path.relative_to(context)}\0{mode:o}\0".encode())
        digest.update(path.read_bytes() + b"\0")
    return f"{IMAGE_REPO}:{digest.hexdigest()[:12]}"


def ensure_image(progress: Progress | None = None) -> str:
    """Build the sandbox image unless its tag exists; return the tag."""
    say = progress or say_as("image")
    tag = image_tag()
    if localdocker.image_exists(tag):
        return tag
    with locked("sandbox-image"):
        if localdocker.image_exists(tag):
            return tag
        base = base_tag()
        if not localdocker.image_exists(base):
            say(f"debootstrapping Debian {SUITE} into {base} (about a minute, once)")
            started = time.monotonic()
            localdocker.debootstrap_image(base, include=packages(), suite=SUITE)
            say(f"base image ready in {time.monotonic() - started:.0f}s")
        say(f"building {tag} from {display_path(CONTEXT)}/")
        started = time.monotonic()
        localdocker.build_image(tag, CONTEXT, {"BASE": base})
        say(f"image built in {time.monotonic() - started:.1f}s")
        _prune_images(keep=tag)
    return tag


def _prune_images(keep: str) -> None:
    """Remove sandbox images of older contexts that no container uses (best effort)."""
    listed = localdocker.docker(
        "image", "ls", IMAGE_REPO, "--format", "{{.Repository}}:{{.Tag}}", check=False
    )
    for old in listed.split():
        if old != keep and old.startswith(f"{IMAGE_REPO}:"):
            # refused while a container (even a stopped one) still uses the image
            localdocker.docker("image", "rm", old, check=False, timeout=120)
