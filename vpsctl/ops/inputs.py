"""The boundary around the pure render: what it needs from this machine, and where it writes.

:func:`gather` is the one step that reads anything environment-specific for a render: the
stacks' config files, the stand-in build contexts (hashed into local image tags), the backup
repository (host.yaml's key file, or a sandbox box's record and its address on the docker
bridge) and the sandbox's ACME CA (``tls: pebble``). :func:`vpsctl.core.render.render` then
turns the spec and these :class:`~vpsctl.core.render.RenderInputs` into files with no I/O.

A value that only a running sandbox can give (a backup box's address, Pebble's CA) is
``Unresolved`` when :func:`gather` is asked for an ``offline`` render: ``vpsctl render``
writes a clearly marked placeholder and says so; plan and apply gather strictly (the
sandbox's own error, naming the command that starts it) and ``make_plan`` refuses any
render holding a placeholder, so an apply never ships one.
"""

from __future__ import annotations

from pathlib import Path

from vpsctl.core.backupfiles import Repository, RepositoryError, sftp_repository
from vpsctl.core.layout import HOST_ROOT
from vpsctl.core.render import (
    Desired,
    PrivateAcme,
    RenderInputs,
    Unresolved,
    config_problem,
    render,
)
from vpsctl.errors import VpsctlError
from vpsctl.local.files import UnsafePath, safe_target, write_atomic
from vpsctl.resources import standins_root
from vpsctl.spec.models import LocalRepository, SftpRepository
from vpsctl.spec.studio import PRIVATE_KEY, Spec


def gather(
    spec: Spec, *, offline: bool = False, repository: Repository | None = None
) -> RenderInputs:
    """Everything :func:`~vpsctl.core.render.render` needs beyond ``spec``, read here.

    ``offline``: a value only a running sandbox can give is ``Unresolved`` instead of an
    error. ``repository`` overrides the backup repository (tests render against a local one).
    """
    return RenderInputs(
        configs=config_contents(spec),
        standin_tags=standin_tags(spec),
        repository=repository or backup_repository(spec, offline=offline),
        private_acme=private_acme(spec, offline=offline),
    )


def render_spec(
    spec: Spec, *, offline: bool = False, repository: Repository | None = None
) -> Desired:
    """``render(spec, gather(spec, …))``: the desired state with this machine's inputs."""
    return render(spec, gather(spec, offline=offline, repository=repository))


def config_contents(spec: Spec) -> dict[tuple[str, str], bytes]:
    """The bytes of every config file, keyed by (stack, ``source`` as the stack names it)."""
    out: dict[tuple[str, str], bytes] = {}
    for name in spec.host.stacks:
        for config_name, config in sorted(spec.stacks[name].configs.items()):
            source, problem = spec.config_source(name, config.source)
            if problem is not None:  # validation refuses it first; never ship it anyway
                raise UnsafePath(config_problem(name, config_name, problem))
            out[(name, config.source)] = source.read_bytes()
    return out


def standin_tags(spec: Spec) -> dict[str, str]:
    """The local tag of every stand-in image host.yaml maps, keyed by the ref it stands in for
    (the hash covers its build context and that ref: a changed stand-in, or a bumped ref, is
    a new image)."""
    if not spec.host.images:
        return {}
    from vpsctl.local import standins  # noqa: PLC0415 - stand-in contexts only when mapped

    root = standins_root(spec)
    return {
        ref: standins.local_tag(root, mapped.standin, dict(mapped.args), ref)
        for ref, mapped in spec.host.images.items()
    }


def backup_repository(spec: Spec, *, offline: bool = False) -> Repository | Unresolved | None:
    """The repository ``spec`` backs up to; ``None`` when host.yaml declares no backup.

    A sandbox's repository needs its record and a running dockerd (its bridge address):
    ``offline``, a missing one is ``Unresolved``, else a :class:`RepositoryError`."""
    try:
        return repository(spec)
    except RepositoryError as exc:
        settings = spec.host.backup
        repo = settings.repository if settings is not None else None
        if offline and isinstance(repo, SftpRepository) and repo.sandbox is not None:
            return Unresolved("backup repository", str(exc))
        raise


def repository(spec: Spec) -> Repository | None:
    """The repository ``spec`` backs up to, resolved strictly (what plan, apply and the
    backup commands use), or ``None`` when host.yaml declares no backup."""
    settings = spec.host.backup
    if settings is None:
        return None
    repo = settings.repository
    if isinstance(repo, LocalRepository):
        return Repository(url=repo.path)
    assert isinstance(repo, SftpRepository)
    if repo.sandbox is not None:
        return _sandbox_repository(spec, repo)
    assert repo.address is not None and repo.key is not None and repo.host_key is not None
    key_file = Path(repo.key).expanduser()
    try:
        key = key_file.read_bytes()
    except OSError as exc:
        line, _ = spec.host_doc.locate(("backup", "repository", "key"))
        raise RepositoryError(
            f"{spec.host_doc.file}:{line}: backup.repository.key: cannot read {key_file}: "
            f"{exc.strerror}; the private key the box logs in to the backup host with"
        ) from None
    if not PRIVATE_KEY.search(key):
        line, _ = spec.host_doc.locate(("backup", "repository", "key"))
        raise RepositoryError(
            f"{spec.host_doc.file}:{line}: backup.repository.key: {key_file} is not a private "
            "key (no `-----BEGIN … PRIVATE KEY-----` line): name the key file the box logs in "
            "to the backup host with (it is installed on the box, 0600)"
        )
    return sftp_repository(
        address=repo.address,
        port=repo.port,
        user=repo.user,
        path=repo.path,
        key=key,
        host_keys=[repo.host_key],
    )


def _sandbox_repository(spec: Spec, repo: SftpRepository) -> Repository:
    from vpsctl.local import sandbox  # noqa: PLC0415 - docker helpers only for sandboxes

    assert repo.sandbox is not None
    try:
        info = sandbox.load(repo.sandbox)
        address = sandbox.internal_address(info)
        key = info.key_path.read_bytes()
    except (VpsctlError, OSError) as exc:
        raise RepositoryError(
            f"{spec.host_doc.file}: backup.repository.sandbox: {exc}; the backup host is "
            f"a sandbox: `vpsctl sandbox up --name {repo.sandbox}`"
        ) from None
    return sftp_repository(
        address=address,
        port=22,
        user=info.user,
        path=repo.path,
        key=key,
        host_keys=[" ".join(line.split()[1:3]) for line in info.host_keys],
    )


def private_acme(spec: Spec, *, offline: bool = False) -> PrivateAcme | Unresolved | None:
    """The sandbox's ACME CA for ``tls: pebble`` (from its record), else None; ``offline``,
    a Pebble never started here is ``Unresolved``."""
    if spec.host.tls != "pebble":
        return None
    from vpsctl.local import pebble  # noqa: PLC0415 - the sandbox's CA only for tls: pebble

    try:
        found = pebble.endpoint()
    except pebble.PebbleError as exc:
        line, _ = spec.host_doc.locate(("tls",))
        message = f"{spec.host_doc.file}:{line}: tls: pebble: {exc}"
        if offline:
            return Unresolved("ACME CA (Pebble)", message)
        raise pebble.PebbleError(message) from None
    return PrivateAcme(found.directory, found.tls_ca_pem)


def write_tree(desired: Desired, out: Path) -> int:
    """Write every desired file under ``out`` (``out/opt/vpsctl/…``) with its mode.

    Files are created with their final mode from the start: an env file is never readable
    by others, not even for a moment.
    """
    targets = [(safe_target(out, f.path, HOST_ROOT), f) for f in desired.files.values()]
    for target, f in targets:
        write_atomic(target, f.content, f.mode)
        # made before the write: a directory created on the way is checked too
        safe_target(out, f.path, HOST_ROOT)
    return len(desired.files)
