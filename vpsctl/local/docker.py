"""The Docker engine of the machine vpsctl runs on (for sandboxes and stand-in images).

A fresh machine has a docker client but no engine and no systemd: :func:`ensure_engine`
starts ``dockerd`` in the background when it is not answering. Images are built from a
debootstrapped Debian root filesystem (no registry can be reached), cached by tag.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vpsctl.errors import VpsctlError

DEBIAN_MIRROR = "http://deb.debian.org/debian"
DOCKERD_LOG = Path("/var/log/vpsctl-dockerd.log")


class DockerError(VpsctlError):
    """The local Docker engine is missing, does not start, or a command failed."""


def docker(
    *args: str, check: bool = True, input_: bytes | None = None, timeout: float = 1800
) -> str:
    """Run ``docker ARGS`` and return its stdout; raise :class:`DockerError` on failure."""
    try:
        proc = subprocess.run(
            ["docker", *args], input=input_, capture_output=True, check=False, timeout=timeout
        )
    except FileNotFoundError:
        raise DockerError("no docker client on PATH; install Debian's docker.io") from None
    except subprocess.TimeoutExpired:
        raise DockerError(
            f"docker {' '.join(args[:2])} did not finish within {timeout:.0f}s"
        ) from None
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise DockerError(f"docker {' '.join(args[:2])} failed: {err[-800:]}")
    return proc.stdout.decode(errors="replace")


def engine_running() -> bool:
    """Whether a Docker engine answers on this machine."""
    try:
        return (
            subprocess.run(
                ["docker", "info", "--format", "{{.ServerVersion}}"],
                capture_output=True,
                check=False,
                timeout=20,
            ).returncode
            == 0
        )
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


def ensure_engine(timeout: float = 90.0) -> None:
    """Start ``dockerd`` in the background unless an engine already answers."""
    if engine_running():
        return
    if shutil.which("dockerd") is None:
        raise DockerError(
            "no Docker engine here: install it with `apt-get install -y docker.io` "
            "(`make test` and `make demo` do)"
        )
    DOCKERD_LOG.parent.mkdir(parents=True, exist_ok=True)
    # dockerd must outlive this process, so nothing here may hold (and later drop) a
    # Popen for it: an orphaned Popen object warns "subprocess is still running" when
    # collected. A shell backgrounds it and exits at once; we wait for that shell only.
    subprocess.run(
        ["sh", "-c", 'setsid dockerd </dev/null >>"$1" 2>&1 &', "sh", str(DOCKERD_LOG)],
        check=True,
        timeout=30,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine_running():
            return
        time.sleep(0.5)
    raise DockerError(f"dockerd did not answer within {timeout:.0f}s; see {DOCKERD_LOG}")


def _exists(kind: str, name: str) -> bool:
    """Whether the local engine has a ``kind`` (image, volume) called ``name``."""
    inspected = subprocess.run(
        ["docker", kind, "inspect", name], capture_output=True, check=False, timeout=60
    )
    return inspected.returncode == 0


def image_exists(tag: str) -> bool:
    """Whether the local engine has an image called ``tag``."""
    return _exists("image", tag)


def image_sizes(tags: Sequence[str]) -> dict[str, int]:
    """The size in bytes of each local image ``tags`` names; raises :class:`DockerError`
    when docker cannot say (an image missing)."""
    if not tags:
        return {}
    answer = docker("image", "inspect", "--format", "{{.Size}}", *tags)
    return dict(zip(tags, (int(line) for line in answer.split()), strict=True))


def import_tar(source: Sequence[str], tag: str, changes: Sequence[str] = ()) -> str | None:
    """``SOURCE | docker import [--change C]… - TAG``: the tar stream that the command
    ``source`` prints becomes image ``tag``. None when both ends succeed; else what went
    wrong (docker import's last words)."""
    flags = [arg for change in changes for arg in ("--change", change)]
    producer = subprocess.Popen(list(source), stdout=subprocess.PIPE)
    try:
        imported = subprocess.run(
            ["docker", "import", *flags, "-", tag],
            stdin=producer.stdout,
            capture_output=True,
            check=False,
            timeout=1800,
        )
    finally:
        if producer.stdout is not None:
            producer.stdout.close()
        producer.wait()
    if imported.returncode == 0 and producer.returncode == 0:
        return None
    return (
        imported.stderr.decode(errors="replace")[-800:]
        or f"{source[0]} exited {producer.returncode}"
    )


def debootstrap_image(
    tag: str, include: Sequence[str] = (), suite: str = "trixie", variant: str = "minbase"
) -> None:
    """Import a debootstrapped Debian ``suite`` as image ``tag``, unless it exists already."""
    ensure_engine()
    if image_exists(tag):
        return
    if shutil.which("debootstrap") is None:
        raise DockerError("debootstrap is missing: `apt-get install -y debootstrap`")
    with tempfile.TemporaryDirectory(prefix="vpsctl-rootfs-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "root"
        cmd = ["debootstrap", f"--variant={variant}"]
        if include:
            cmd.append("--include=" + ",".join(include))
        cmd += [suite, str(root), DEBIAN_MIRROR]
        proc = subprocess.run(cmd, capture_output=True, check=False, timeout=1800)
        if proc.returncode != 0:
            raise DockerError(
                f"debootstrap {suite} failed: {proc.stderr.decode(errors='replace')[-800:]}"
            )
        failed = import_tar(["tar", "-C", str(root), "-c", "."], tag)
        if failed is not None:
            raise DockerError(f"docker import failed: {failed}")


def build_image(tag: str, context: Path, build_args: dict[str, str] | None = None) -> None:
    """``docker build -t TAG CONTEXT`` with ``build_args``; output only on failure."""
    ensure_engine()
    args = ["build", "-t", tag]
    for key, value in (build_args or {}).items():
        args += ["--build-arg", f"{key}={value}"]
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    proc = subprocess.run(
        ["docker", *args, str(context)], capture_output=True, check=False, timeout=3600, env=env
    )
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).decode(errors="replace")
        raise DockerError(f"docker build of {tag} failed:\n{out[-2000:]}")


def docker_exec(
    container: str, argv: Sequence[str], input_: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``docker exec [-i] CONTAINER ARGV``; the completed process, whatever its exit code.

    Raises :class:`DockerError` only when the command does not finish within ``timeout``.
    """
    cmd = ["docker", "exec", *(["-i"] if input_ is not None else []), container, *argv]
    try:
        proc = subprocess.run(cmd, input=input_, capture_output=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DockerError(
            f"`{' '.join(argv)}` in {container} did not finish within {timeout:.0f}s"
        ) from None
    return subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )


def inspect_container(name: str) -> dict[str, Any] | None:
    """``docker container inspect NAME`` as a dict, or None when there is no such container."""
    try:
        proc = subprocess.run(
            ["docker", "container", "inspect", name], capture_output=True, check=False, timeout=60
        )
    except subprocess.TimeoutExpired:
        raise DockerError(f"docker container inspect {name} did not answer within 60s") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        if "no such" in err.lower():
            return None
        raise DockerError(f"docker container inspect {name} failed: {err[-800:]}")
    found: list[dict[str, Any]] = json.loads(proc.stdout)
    return found[0] if found else None


def container_logs(name: str, tail: int = 40) -> str:
    """The last ``tail`` lines a container wrote (stdout and stderr); empty if unavailable."""
    try:
        proc = subprocess.run(
            ["docker", "logs", "--tail", str(tail), name],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return ""
    return proc.stdout.decode(errors="replace") if proc.returncode == 0 else ""


def remove_container(name: str) -> bool:
    """``docker rm -f -v NAME``; False when there was no such container."""
    proc = subprocess.run(
        ["docker", "rm", "-f", "-v", name], capture_output=True, check=False, timeout=120
    )
    if proc.returncode == 0:
        return True
    err = proc.stderr.decode(errors="replace").strip()
    if "no such" in err.lower():
        return False
    raise DockerError(f"docker rm -f {name} failed: {err[-800:]}")


def remove_volume(name: str, timeout: float = 30) -> bool:
    """``docker volume rm NAME``, retried while a just-removed container still holds it.

    False when there was no such volume.
    """
    deadline = time.monotonic() + timeout
    while True:
        proc = subprocess.run(
            ["docker", "volume", "rm", name], capture_output=True, check=False, timeout=120
        )
        if proc.returncode == 0:
            return True
        err = proc.stderr.decode(errors="replace").strip()
        if "no such" in err.lower():
            return False
        if "in use" not in err.lower() or time.monotonic() > deadline:
            raise DockerError(f"docker volume rm {name} failed: {err[-800:]}")
        time.sleep(0.5)


def volume_exists(name: str) -> bool:
    """Whether the local engine has a volume called ``name``."""
    return _exists("volume", name)
