"""The box's backup machinery, rendered from the spec: the ``vpsctl-backup`` script, its
password and SFTP key (0600), the backup host's key, and the systemd timers.

Layout on the host (managed like the stacks' files: planned, diffed, drift-audited)::

    /opt/vpsctl/host/backup/vpsctl-backup        0700  dumps, snapshots, restores (bash)
    /opt/vpsctl/host/backup/password             0600  the restic repository password
    /opt/vpsctl/host/backup/sftp_key             0600  the box's key to the backup host
    /opt/vpsctl/host/backup/known_hosts          0644  the backup host's key, verified
    /opt/vpsctl/host/systemd/vpsctl-backup{,-check}.{service,timer}   linked into systemd

The repository comes resolved (:func:`vpsctl.ops.inputs.repository`: ``host.yaml``'s address
and key, or the record of a sandbox box standing in for a storage server): no I/O here.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

import jinja2

from vpsctl.core.layout import HOST_FILES, HOST_ROOT
from vpsctl.errors import VpsctlError
from vpsctl.spec.models import (
    ClickhouseBackup,
    MysqlBackup,
    PostgresBackup,
    SqliteBackup,
    Stack,
    VolumeBackup,
    VolumeMount,
    volume_holding,
)
from vpsctl.spec.studio import Spec

CONF_DIR = f"{HOST_FILES}/backup"
SYSTEMD_DIR = f"{HOST_FILES}/systemd"
SCRIPT = f"{CONF_DIR}/vpsctl-backup"
STAGE = "/var/lib/vpsctl/backup/stage"
RECORD = f"{HOST_ROOT}/backup/last-success"  # epoch seconds of the last full backup
TIMERS = ("vpsctl-backup.timer", "vpsctl-backup-check.timer")
UNITS = ("vpsctl-backup.service", "vpsctl-backup-check.service", *TIMERS)


class RepositoryError(VpsctlError):
    """The backup repository cannot be resolved (a sandbox not up, a key not readable)."""


@dataclass(frozen=True)
class Repository:
    """Where restic on the box stores snapshots, and how it gets there."""

    url: str  # as restic takes it: `sftp:user@host:/path` or a path
    sftp_command: str | None = None
    key: bytes | None = None  # the box's private key for the backup host
    known_hosts: str | None = None

    @property
    def display(self) -> str:
        """The repository as messages name it."""
        return self.url


def sftp_repository(
    *, address: str, port: int, user: str, path: str, key: bytes | None, host_keys: list[str]
) -> Repository:
    """The repository on an SFTP host: restic's URL, the ssh command it runs (with the
    box's key and the verified host keys), the key and ``known_hosts`` to install."""
    where = address if port == 22 else f"[{address}]:{port}"
    command = shlex.join(
        [
            "ssh",
            "-i",
            f"{CONF_DIR}/sftp_key",
            "-p",
            str(port),
            "-o",
            f"UserKnownHostsFile={CONF_DIR}/known_hosts",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=4",
            f"{user}@{address}",
            "-s",
            "sftp",
        ]
    )
    return Repository(
        url=f"sftp:{user}@{address}:{path}",
        sftp_command=command,
        key=key,
        known_hosts="".join(f"{where} {k}\n" for k in host_keys) if host_keys else None,
    )


# ── the script's view of each stack ──────────────────────────────────────────────────────


def _item_id(backup: Any) -> str:
    if isinstance(backup, SqliteBackup):
        return f"sqlite-{backup.service}"
    if isinstance(backup, VolumeBackup):
        return f"volume-{backup.volume}"
    return f"{backup.kind}-{backup.database}"


def stack_view(name: str, stack: Stack) -> dict[str, Any]:
    """What the backup script needs of one stack: its items, and which services must stop
    while files are replaced (``file_services``) or databases reloaded (``app_services``)."""
    items: list[dict[str, Any]] = []
    db_services: list[str] = []
    file_services: list[str] = []
    for backup in stack.backups:
        item: dict[str, Any] = {"kind": backup.kind, "id": _item_id(backup)}
        if isinstance(backup, VolumeBackup):
            item |= {"volume": f"{name}_{backup.volume}", "short": backup.volume}
            for service_name, service in stack.services.items():
                if any(
                    isinstance(m, VolumeMount) and m.volume == backup.volume
                    for m in service.volumes
                ):
                    file_services.append(service_name)
        elif isinstance(backup, SqliteBackup | ClickhouseBackup):
            service = stack.services[backup.service]
            inside = backup.path if isinstance(backup, SqliteBackup) else backup.dir
            held = volume_holding(service.volumes, inside)
            assert held is not None  # checks guarantee it
            mount, rel = held
            item |= {
                "service": backup.service,
                "volume": f"{name}_{mount.volume}",
                "short": mount.volume,
                "rel": rel,
            }
            if isinstance(backup, SqliteBackup):
                file_services.append(backup.service)
            else:
                item |= {"database": backup.database, "dir": backup.dir}
                db_services.append(backup.service)
        elif isinstance(backup, PostgresBackup):
            item |= {"service": backup.service, "database": backup.database, "user": backup.user}
            db_services.append(backup.service)
        elif isinstance(backup, MysqlBackup):
            service = stack.services[backup.service]
            var = next(v for v, s in service.secrets.items() if s == backup.password_secret)
            item |= {"service": backup.service, "database": backup.database, "password_var": var}
            db_services.append(backup.service)
        items.append(item)
    unique = list(dict.fromkeys(db_services))
    return {
        "name": name,
        "items": items,
        "db_services": unique,
        "app_services": [s for s in stack.services if s not in unique],
        "file_services": [s for s in dict.fromkeys(file_services) if s not in unique],
    }


def render_files(
    spec: Spec,
    repo: Repository,
    env: jinja2.Environment,
    stacks_root: str,
    order: list[str],
    *,
    node: str | None = None,
) -> list[tuple[str, bytes, int, str]]:
    """(path, content, mode, kind) of every backup file the box needs; ``kind`` is
    ``secret`` for the password and the key (their diffs are masked). ``node``: a node of a
    cluster (its snapshots tagged ``node:NAME``, its stacks Swarm services)."""
    settings = spec.host.backup
    assert settings is not None
    password = spec.secret(settings.password_secret)
    if password is None:
        raise RepositoryError(f"secrets.env lacks {settings.password_secret}")
    stacks = [stack_view(n, spec.stacks[n]) for n in order if spec.stacks[n].backups]
    env = env.overlay(trim_blocks=True, lstrip_blocks=True)  # shell: one line per statement
    script = env.get_template("backup/vpsctl-backup.sh.j2").render(
        host=spec.host.name,
        node=node,
        conf_dir=CONF_DIR,
        stage=STAGE,
        record=RECORD,
        stacks_root=stacks_root,
        repository=repo.url,
        sftp_command=repo.sftp_command,
        keep=settings.keep,
        stacks=stacks,
    )
    files: list[tuple[str, bytes, int, str]] = [
        (SCRIPT, script.encode(), 0o700, "script"),
        (f"{CONF_DIR}/password", password.reveal().encode(), 0o600, "secret"),
    ]
    if repo.key is not None:
        files.append((f"{CONF_DIR}/sftp_key", repo.key, 0o600, "secret"))
    if repo.known_hosts is not None:
        files.append((f"{CONF_DIR}/known_hosts", repo.known_hosts.encode(), 0o644, "config"))
    units = {
        "vpsctl-backup.service": {},
        "vpsctl-backup.timer": {"schedule": settings.schedule},
        "vpsctl-backup-check.service": {},
        "vpsctl-backup-check.timer": {"schedule": settings.check_schedule},
    }
    for unit, extra in units.items():
        text = env.get_template(f"backup/{unit}.j2").render(
            host=spec.host.name if node is None else f"{spec.host.name}/{node}",
            script=SCRIPT,
            **extra,
        )
        files.append((f"{SYSTEMD_DIR}/{unit}", text.encode(), 0o644, "unit"))
    return files
