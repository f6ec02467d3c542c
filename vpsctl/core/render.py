"""Render the validated spec into the exact files the host needs: a pure function of the spec
and of its :class:`RenderInputs` (config file contents, stand-in tags, the backup repository,
the sandbox's ACME CA), which :func:`vpsctl.ops.inputs.gather` reads at the boundary. No I/O
here: no file, no docker, no sandbox record (``tests/test_core_pure.py`` holds the core to it).

Layout on the host (``HOST_ROOT``)::

    /opt/vpsctl/stacks/<stack>/compose.yaml          0644  compose project <stack>
    /opt/vpsctl/stacks/<stack>/env/<service>.env     0600  every value the container gets
    /opt/vpsctl/stacks/<stack>/config/<name>         0644  shipped config files
    /opt/vpsctl/stacks/edge/config/caddy/Caddyfile   0644  built from every stack's routes

Python builds a view of each file; the jinja2 templates under ``templates/`` only lay it out
(``StrictUndefined``: a missing value is an error, never an empty string). The templates are
vpsctl's own program text, loaded once like code (see :mod:`vpsctl.core.templates`). Compose files
carry no interpolation: every string is JSON-quoted and every ``$`` doubled, and values reach
containers only through the env files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2

from vpsctl.core import backupfiles
from vpsctl.core.appsteps import AppStep, desired_steps
from vpsctl.core.layout import (
    HOST_FILES,
    LABEL_STACK,
    STACKS_ROOT,
    UnsafePath,
    member_problem,
)
from vpsctl.core.rotation import SecretUse, classify, file_secret_vars
from vpsctl.core.swarm import NODE_LABEL, OVERLAY
from vpsctl.core.templates import environment
from vpsctl.errors import VpsctlError
from vpsctl.spec.envfile import env_value_problem
from vpsctl.spec.models import ConfigMount, Service, SftpRepository, Stack, VolumeMount
from vpsctl.spec.secrets import Secret
from vpsctl.spec.studio import Spec, network_alias
from vpsctl.spec.units import format_size

EDGE_NETWORK = "vpsctl-edge"
# on a cluster: the encrypted, attachable overlay between the edge and every routed service
CLUSTER_NETWORK = OVERLAY
# Swarm's restart policy for each of compose's
RESTART_CONDITIONS = {
    "unless-stopped": "any",
    "always": "any",
    "on-failure": "on-failure",
    "no": "none",
}
CADDY_CONFIG = "caddy"  # the edge's config directory holding the rendered Caddyfile

LABEL_CONFIG = "dev.vpsctl.config-hash"


@dataclass(frozen=True)
class DesiredFile:
    """One file as it must sit on the host."""

    path: str
    content: bytes
    mode: int
    stack: str
    # compose | env | config | caddyfile | caddy-asset (a file the Caddyfile loads);
    # host files: script | secret | unit
    kind: str
    secret_keys: frozenset[str] = frozenset()  # env files: keys whose values are secret

    @property
    def sha256(self) -> str:
        """Hex sha256 of the content."""
        return hashlib.sha256(self.content).hexdigest()

    @property
    def sensitive(self) -> bool:
        """Whether the file holds secret values (diffs of it are masked)."""
        return self.kind in ("env", "secret")


@dataclass(frozen=True)
class Image:
    """An image a stack runs: ``ref`` as compose names it, and how the box gets it."""

    ref: str
    source: str  # "registry" (pulled by the box) or "local" (a stand-in vpsctl ships)
    standin: str | None = None
    args: tuple[tuple[str, str], ...] = ()
    declared: str = ""  # a stand-in: the ref the stack names (its tag hashes it)


@dataclass(frozen=True)
class DesiredStack:
    """A compose project: its files, images, and a hash per service for change detection."""

    name: str
    role: str
    files: tuple[str, ...]
    images: tuple[Image, ...]
    services: dict[str, str]  # service → hash of everything that defines its container
    hash: str
    # service → the image ref its container runs (a stand-in's local tag in a sandbox)
    service_images: dict[str, str] = field(default_factory=dict)
    backed_up: bool = False  # the host backs up this stack's data (a pre-apply snapshot)
    domains: dict[str, str] = field(default_factory=dict)  # domain key → host name
    # service → its healthcheck's start period, for every service no route of Caddy reaches
    # (databases, the edge itself): nothing holds requests for it while it is recreated, and
    # it cannot run twice (one data directory), so its recreate is downtime
    unrouted: dict[str, str] = field(default_factory=dict)


@dataclass
class Desired:
    """Everything the host must hold, in apply order (dependencies first, the edge last)."""

    files: dict[str, DesiredFile] = field(default_factory=dict)
    stacks: dict[str, DesiredStack] = field(default_factory=dict)
    # the box's own files (backup script, password, timers): stack "" in ``files``
    host_files: tuple[str, ...] = ()
    # a cluster's: each node's own files (its backup machinery, for ITS stacks), by node;
    # the same paths on every node, so apart from ``files`` (:func:`vpsctl.core.cluster.node_view`)
    node_host_files: dict[str, tuple[DesiredFile, ...]] = field(default_factory=dict)
    # steps inside the apps after their health gate: first-launch claims, in-app settings
    app_steps: dict[str, tuple[AppStep, ...]] = field(default_factory=dict)
    # a cluster node's: the stacks placed by labels that another node deploys, whose task
    # Swarm may put here: this node holds their files (in ``files``) and their images only
    held: dict[str, DesiredStack] = field(default_factory=dict)
    # inputs an offline render could not read: placeholders stand in for them (never planned)
    unresolved: tuple[Unresolved, ...] = ()
    # every secret of the spec as rotation sees it (its role, dependents, databases)
    secret_uses: dict[str, SecretUse] = field(default_factory=dict)

    @property
    def inputs_hash(self) -> str:
        """A hash of every desired file's path, mode and content."""
        digest = hashlib.sha256()
        for path in sorted(self.files):
            f = self.files[path]
            digest.update(f"{path}\0{f.mode:o}\0{f.sha256}\n".encode())
        return digest.hexdigest()

    def secret_values(self) -> list[str]:
        """Every secret value rendered into an env file (for output redaction)."""
        values: set[str] = set()
        for f in self.files.values():
            if f.kind == "env":
                for key, value in parse_env_file(f.content).items():
                    if key in f.secret_keys and value:
                        values.add(value)
            elif f.kind == "secret":
                values.add(f.content.decode(errors="replace"))
        return sorted(values, key=len, reverse=True)


_environment = environment  # the name tests import; one environment for the whole core


def stack_dir(stack: str) -> str:
    """The stack's directory on the host."""
    return f"{STACKS_ROOT}/{stack}"


SECRET_KEYS_HEADER = "# vpsctl secret keys:"  # noqa: S105 - a comment line's prefix, not a secret


def parse_env_file(content: bytes) -> dict[str, str]:
    """Read back an env file as vpsctl renders it (``KEY='value'`` lines; a cluster's:
    ``KEY=value``, no value holding a quote).

    Lines end at ``\\n`` only, as compose reads them (``str.splitlines`` would also split
    at U+2028 and other characters a value may hold).
    """
    out: dict[str, str] = {}
    for line in content.decode(errors="replace").split("\n"):
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        out[key] = value
    return out


def env_file_secret_keys(content: bytes) -> frozenset[str] | None:
    """The keys an env file's header names as secret; ``None`` when it has no header (a
    file rendered before vpsctl wrote one, or not by vpsctl: any key may be secret)."""
    first = content.decode(errors="replace").split("\n", 1)[0]
    if not first.startswith(SECRET_KEYS_HEADER):
        return None
    return frozenset(first[len(SECRET_KEYS_HEADER) :].split()) - {"(none)"}


UNRESOLVED_HOST = "unresolved.invalid"  # RFC 2606: a name that never resolves


class UnresolvedInput(VpsctlError):
    """A render holds a placeholder (an input only a running sandbox gives): never planned."""


@dataclass(frozen=True)
class Unresolved:
    """An input of this machine that could not be read for an offline render (a sandbox not
    up): render writes a placeholder naming :data:`UNRESOLVED_HOST` and records why."""

    what: str  # "backup repository", "ACME CA (Pebble)"
    reason: str


@dataclass(frozen=True)
class PrivateAcme:
    """``tls: pebble``: the ACME directory Caddy orders from and the CA of its TLS, a file
    beside the Caddyfile (named by its hash: a new CA is a new Caddyfile, validated and
    reloaded; Caddy reads it when it provisions, so it must be there before `validate`)."""

    directory: str
    root_pem: bytes

    @property
    def root_file(self) -> str:
        return f"acme-ca-root-{hashlib.sha256(self.root_pem).hexdigest()[:12]}.pem"


@dataclass(frozen=True)
class RenderInputs:
    """Everything a render needs beyond the spec, read at the boundary
    (:func:`vpsctl.ops.inputs.gather`): data only."""

    configs: Mapping[tuple[str, str], bytes]  # (stack, config ``source``) → the file's bytes
    standin_tags: Mapping[str, str]  # image ref host.yaml maps → the stand-in's local tag
    repository: backupfiles.Repository | Unresolved | None = None  # None: no backup
    private_acme: PrivateAcme | Unresolved | None = None  # None: tls is not pebble


def render(spec: Spec, inputs: RenderInputs) -> Desired:
    """The desired state of the host for ``spec`` and ``inputs``: the box's own files, then
    each stack's in apply order, then the app steps."""
    env = environment()
    desired = Desired()
    unresolved = [i for i in (inputs.repository, inputs.private_acme) if isinstance(i, Unresolved)]
    desired.unresolved = tuple(unresolved)
    if spec.host.backup is not None and spec.host.nodes is not None:
        _node_backup_files(spec, inputs.repository, env, desired)
    elif spec.host.backup is not None:
        _backup_files(spec, inputs.repository, env, desired)
    for name in apply_order(spec):
        files, stack = _stack(spec, name, inputs, env)
        for f in files:
            desired.files[f.path] = f
        desired.stacks[name] = stack
    _contained(desired)
    desired.app_steps = desired_steps(spec)
    desired.secret_uses = classify(spec)
    return desired


def _backup_files(
    spec: Spec,
    repository: backupfiles.Repository | Unresolved | None,
    env: jinja2.Environment,
    desired: Desired,
) -> None:
    """The box's backup script, password, key and timers (stack "" in ``desired.files``)."""
    if repository is None:
        raise ValueError("host.yaml declares a backup: render needs its resolved repository")
    repo = _placeholder_repository(spec) if isinstance(repository, Unresolved) else repository
    host_files = backupfiles.render_files(spec, repo, env, STACKS_ROOT, apply_order(spec))
    for path, content, mode, kind in host_files:
        desired.files[path] = DesiredFile(path, content, mode, "", kind)
    desired.host_files = tuple(path for path, *_ in host_files)


def _node_backup_files(
    spec: Spec,
    repository: backupfiles.Repository | Unresolved | None,
    env: jinja2.Environment,
    desired: Desired,
) -> None:
    """Each node's backup machinery, for the stacks pinned to it (one repository for the
    whole cluster, each snapshot tagged with its node); a node that holds no stack with
    backups gets none: it has no data of its own to back up."""
    if repository is None:
        raise ValueError("host.yaml declares a backup: render needs its resolved repository")
    repo = _placeholder_repository(spec) if isinstance(repository, Unresolved) else repository
    order = apply_order(spec)
    for node in spec.host.nodes or {}:
        held = [n for n in order if spec.nodes_of(n) == [node] and spec.stacks[n].backups]
        if not held:
            continue
        rendered = backupfiles.render_files(spec, repo, env, STACKS_ROOT, held, node=node)
        desired.node_host_files[node] = tuple(
            DesiredFile(path, content, mode, "", kind) for path, content, mode, kind in rendered
        )


def _placeholder_repository(spec: Spec) -> backupfiles.Repository:
    """A sandbox repository with no sandbox to ask: its address :data:`UNRESOLVED_HOST`, and
    no key or host key to install (make_plan refuses the render: never applied)."""
    assert spec.host.backup is not None
    repo = spec.host.backup.repository
    user = repo.user if isinstance(repo, SftpRepository) else "root"
    return backupfiles.sftp_repository(
        address=UNRESOLVED_HOST, port=22, user=user, path=repo.path, key=None, host_keys=[]
    )


def _stack(
    spec: Spec, name: str, inputs: RenderInputs, env: jinja2.Environment
) -> tuple[list[DesiredFile], DesiredStack]:
    """One compose project: its compose file first, then configs, env files and (the edge)
    the Caddyfile and the files it loads."""
    stack = spec.stacks[name]
    configs = _config_files(name, stack, inputs.configs)
    files: list[DesiredFile] = list(configs.values())
    rendered = {
        service_name: _service(
            spec, name, service_name, configs=configs, standin_tags=inputs.standin_tags, env=env
        )
        for service_name in stack.services
    }
    files.extend(r.env_file for r in rendered.values() if r.env_file is not None)
    images: dict[str, Image] = {}
    for r in rendered.values():
        images.setdefault(r.image.ref, r.image)
    cluster = spec.host.cluster
    compose = env.get_template("stack.yaml.j2" if cluster else "compose.yaml.j2").render(
        stack={
            "name": name,
            "services": [r.view for r in rendered.values()],
            "volumes": stack.volumes(),
        },
        edge_network=CLUSTER_NETWORK if cluster else EDGE_NETWORK,
        encrypted=spec.host.overlay == "encrypted",
    )
    files.insert(
        0,
        DesiredFile(f"{stack_dir(name)}/compose.yaml", compose.encode(), 0o644, name, "compose"),
    )
    if stack.role == "edge":
        files.extend(_edge_files(spec, name, inputs.private_acme))
    result = DesiredStack(
        name=name,
        role=stack.role,
        files=tuple(f.path for f in files),
        images=tuple(images.values()),
        services={service_name: r.hash for service_name, r in rendered.items()},
        hash=_hash_json({p.path: p.sha256 for p in files}),
        service_images={service_name: r.image.ref for service_name, r in rendered.items()},
        backed_up=spec.host.backup is not None and bool(stack.backups),
        domains=dict(spec.host.stacks[name].domains),
        unrouted={
            service_name: service.healthcheck.start_period
            for service_name, service in stack.services.items()
            if service_name not in {r.service for r in stack.routes}
        },
    )
    return files, result


@dataclass(frozen=True)
class _Service:
    """One service as rendered: its env file, its image, its compose view, and the hash of
    everything that defines its container."""

    env_file: DesiredFile | None
    image: Image
    view: dict[str, Any]
    hash: str


def _service(
    spec: Spec,
    stack_name: str,
    service_name: str,
    *,
    configs: dict[str, DesiredFile],
    standin_tags: Mapping[str, str],
    env: jinja2.Environment,
) -> _Service:
    stack = spec.stacks[stack_name]
    service = stack.services[service_name]
    env_file = _env_file(spec, stack_name, service_name, env)
    image = _image(spec, standin_tags, service.image)
    mounted = _mounted_configs(service, configs)
    view = _service_view(
        spec,
        stack_name=stack_name,
        stack=stack,
        service_name=service_name,
        service=service,
        image=image,
        env_file=env_file,
        mounted=mounted,
    )
    digest = _hash_json(
        {
            "compose": view,
            "env": env_file.sha256 if env_file else None,
            "configs": sorted(f.sha256 for f in mounted),
        }
    )
    return _Service(env_file, image, view, digest)


def _edge_files(
    spec: Spec, name: str, private: PrivateAcme | Unresolved | None
) -> list[DesiredFile]:
    """The edge's Caddyfile, and the CA root it loads for ``tls: pebble`` (read by Caddy with
    the Caddyfile: apply validates both)."""
    config = f"{stack_dir(name)}/config/{CADDY_CONFIG}"
    caddyfile = render_caddyfile(spec, private)
    files = [DesiredFile(f"{config}/Caddyfile", caddyfile.encode(), 0o644, name, "caddyfile")]
    if isinstance(private, PrivateAcme):
        files.append(
            DesiredFile(
                f"{config}/{private.root_file}", private.root_pem, 0o644, name, "caddy-asset"
            )
        )
    return files


def _contained(desired: Desired) -> None:
    """Every rendered file inside the directory it belongs to: its stack's, or the box's
    own files (the spec's rules guarantee it; a renderer bug must not ship elsewhere)."""
    for f in desired.files.values():
        root = stack_dir(f.stack) if f.stack else HOST_FILES
        problem = member_problem(f.path, root)
        if problem is not None:
            raise UnsafePath(f"rendered file {problem}")


def apply_order(spec: Spec) -> list[str]:
    """Stacks in the order apply converges them: as placed in host.yaml, the edge last.

    The edge goes last so that Caddy's first start already finds every upstream.
    """
    names = list(spec.host.stacks)
    return [n for n in names if spec.stacks[n].role != "edge"] + [
        n for n in names if spec.stacks[n].role == "edge"
    ]


def _hash_json(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _image(spec: Spec, standin_tags: Mapping[str, str], ref: str) -> Image:
    mapped = spec.host.images.get(ref)
    if mapped is None:
        return Image(ref=ref, source="registry")
    args = tuple(sorted(dict(mapped.args).items()))
    return Image(
        ref=standin_tags[ref], source="local", standin=mapped.standin, args=args, declared=ref
    )


# How long Caddy holds a request whose upstream cannot be dialled (a container being
# recreated: gone from the network, or not listening yet), dialling again every interval.
# A dial error is retried for every method (nothing was sent); a broken round trip only for
# GET (Caddy's default lb_retry_match). Kept under the probes' 10 s curl limit, so a service
# that stays down still answers 502, not a timeout. Measured: bench/RESULTS.md (issue 16).
UPSTREAM_TRY_DURATION = "5s"
UPSTREAM_TRY_INTERVAL = "250ms"


def config_problem(stack: str, config: str, problem: str) -> str:
    """The message of a config file that may not be shipped."""
    return f"stack {stack}: config {config}: {problem}"


def _config_files(
    name: str, stack: Stack, contents: Mapping[tuple[str, str], bytes]
) -> dict[str, DesiredFile]:
    out: dict[str, DesiredFile] = {}
    for config_name, config in sorted(stack.configs.items()):
        content = contents.get((name, config.source))
        if content is None:  # gather reads every config it may ship, and refuses the rest
            raise UnsafePath(config_problem(name, config_name, "not among the gathered files"))
        out[config_name] = DesiredFile(
            f"{stack_dir(name)}/config/{config_name}", content, 0o644, name, "config"
        )
    return out


def _mounted_configs(service: Service, configs: dict[str, DesiredFile]) -> list[DesiredFile]:
    mounted: list[DesiredFile] = []
    for mount in service.volumes:
        if isinstance(mount, ConfigMount):
            mounted.extend(
                f
                for n, f in configs.items()
                if n == mount.config or n.startswith(mount.config + "/")
            )
    return mounted


def _env_file(
    spec: Spec, stack: str, service_name: str, env: jinja2.Environment
) -> DesiredFile | None:
    values = spec.environment(stack, service_name)
    if not values:
        return None
    entries: list[tuple[str, str]] = []
    secret_keys: set[str] = set()
    for key, value in values.items():
        if isinstance(value, Secret):
            secret_keys.add(key)
            entries.append((key, value.reveal()))
        else:
            entries.append((key, value))
    for key, value in entries:
        if env_value_problem(value) is not None:  # checks refuse these; never render them
            raise ValueError(f"{stack}/{service_name}: {key} cannot be written to an env file")
    content = env.get_template("service.env.j2").render(
        entries=entries,
        secret_keys=[key for key, _ in entries if key in secret_keys],
        raw=spec.host.cluster,
    )
    return DesiredFile(
        f"{stack_dir(stack)}/env/{service_name}.env",
        content.encode(),
        0o600,
        stack,
        "env",
        frozenset(secret_keys),
    )


def _service_view(
    spec: Spec,
    *,
    stack_name: str,
    stack: Stack,
    service_name: str,
    service: Service,
    image: Image,
    env_file: DesiredFile | None,
    mounted: list[DesiredFile],
) -> dict[str, Any]:
    volumes: list[str] = []
    for mount in service.volumes:
        source = (
            mount.volume
            if isinstance(mount, VolumeMount)
            else _config_bind(stack_dir(stack_name), mount.config)
        )
        volumes.append(f"{source}:{mount.target}" + (":ro" if mount.read_only else ""))
    routed = {r.service for r in stack.routes}
    labels = [(LABEL_STACK, stack_name)]
    config_files = [f for f in mounted if f.kind == "config"]
    if config_files:
        # Bind-mounted files do not change the container's definition: this label does, so
        # compose recreates the service when a file it mounts changes.
        labels.append((LABEL_CONFIG, _hash_json(sorted(f.sha256 for f in config_files))[:16]))
    health = service.healthcheck
    return {
        "name": service_name,
        "image": image.ref,
        "command": service.command,
        "user": service.user,
        "env_file": f"./env/{service_name}.env" if env_file is not None else None,
        "volumes": volumes,
        "ports": [
            f"{_bracketed(p.host_ip)}:{p.published}:{p.target}/{p.protocol}" for p in service.ports
        ],
        "expose": [str(p) for p in service.expose],
        "healthcheck": {
            "test": health.test,
            "interval": health.interval,
            "timeout": health.timeout,
            "retries": health.retries,
            "start_period": health.start_period,
            "start_interval": health.start_interval,
        },
        "mem_limit": format_size(service.mem_limit or 0),
        "restart": service.restart,
        "stop_grace_period": service.stop_grace_period,
        "ulimits": _ulimits(service, spec.host.max_nofile),
        "depends_on": service.depends_on,
        "edge_alias": (
            network_alias(stack_name, service_name)
            if service_name in routed or stack.role == "edge"
            else None
        ),
        "labels": labels,
        # on a cluster (stack.yaml.j2): where Swarm may run it, and how it restarts
        "constraints": _constraints(spec, stack_name),
        "restart_condition": RESTART_CONDITIONS[service.restart],
        "swarm_ports": [(p.target, p.published, p.protocol) for p in service.ports],
        # on a cluster: the secret variables its image reads from files (Swarm secrets)
        "secret_files": file_secret_vars(service) if spec.host.cluster else [],
    }


def _constraints(spec: Spec, stack_name: str) -> list[str]:
    """Swarm placement constraints of ``stack_name``: its node, or its labels."""
    if not spec.host.cluster:
        return []
    placed = spec.host.stacks[stack_name]
    if placed.placement is not None and spec.stacks[stack_name].role != "edge":
        return [f"node.labels.{key} == {value}" for key, value in placed.placement.items()]
    node = placed.node or spec.host.edge_node
    return [f"node.labels.{NODE_LABEL} == {node}"]


def _ulimits(service: Service, max_nofile: int | None) -> list[tuple[str, int, int, str]]:
    """(name, soft, hard, note) of each ulimit; ``nofile`` lowered to the host's
    ``max_nofile`` where it is set, with a note saying what the stack asked."""
    out = []
    for name, limit in sorted(service.ulimits.items()):
        soft, hard, note = limit.soft, limit.hard, ""
        if name == "nofile" and max_nofile is not None and hard > max_nofile:
            soft, hard = min(soft, max_nofile), max_nofile
            note = (
                f"the stack asks soft {limit.soft}, hard {limit.hard}; host.yaml's max_nofile "
                f"{max_nofile} is all this host's Docker can give"
            )
        out.append((name, soft, hard, note))
    return out


def _config_bind(directory: str, config: str) -> str:
    """A bind mount's source: only ever a path inside the stack's own ``config/``. The only
    host path a container is given; the spec's rules already refuse anything else, and this
    refuses it again rather than hand a container the docker socket."""
    problem = member_problem(f"{directory}/config/{config}", f"{directory}/config")
    if problem is not None:
        raise UnsafePath(f"bind mount {problem}")
    return f"./config/{config}"


def _bracketed(address: str) -> str:
    """An IP as compose's port syntax takes it: IPv6 in brackets."""
    return f"[{address}]" if ":" in address else address


def render_caddyfile(
    spec: Spec,
    private: PrivateAcme | Unresolved | None = None,
    without: frozenset[str] = frozenset(),
) -> str:
    """The edge's Caddyfile: one site per host name, longest path prefix first; the routes
    and redirects of the stacks in ``without`` left out (apply withholds those of a stack
    whose first start failed). ``private``: the CA Caddy orders from for ``tls: pebble``."""
    if (spec.host.tls == "pebble") != (private is not None):
        raise ValueError("render_caddyfile: tls: pebble and only it needs the ACME CA")
    sites: dict[str, dict[str, Any]] = {}
    for stack_name in apply_order(spec):
        if stack_name in without:
            continue
        stack = spec.stacks[stack_name]
        entries: list[tuple[str, str, dict[str, Any]]] = []
        for route in stack.routes:
            host = spec.domain(stack_name, route.domain)
            entries.append(
                (
                    host or "",
                    route.path,
                    {
                        "upstream": f"{network_alias(stack_name, route.service)}:{route.port}",
                        "redirect": None,
                        "webhook": route.webhook,
                    },
                )
            )
        for redirect in stack.redirects:
            host = spec.domain(stack_name, redirect.domain)
            target = spec.domain(stack_name, redirect.to)
            entries.append(
                (
                    host or "",
                    redirect.path,
                    {"upstream": None, "redirect": f"https://{target}", "status": redirect.status},
                )
            )
        for host, path, handler in entries:
            site = sites.setdefault(host, {"host": host, "stacks": [], "handlers": []})
            if stack_name not in site["stacks"]:
                site["stacks"].append(stack_name)
            handler["path"] = path
            site["handlers"].append(handler)
    rendered_sites = []
    for host in sorted(sites):
        site = sites[host]
        # Caddy runs the first `handle` that matches: most specific prefix first, `/` last.
        handlers = sorted(site["handlers"], key=lambda h: (-len(h["path"]), h["path"]))
        for index, handler in enumerate(handlers):
            path = handler["path"]
            handler["name"] = f"p{index}"
            handler["matcher"] = None if path == "/" else f"{path} {path.rstrip('/')}/*"
            handler.setdefault("status", 308)
        rendered_sites.append(
            {
                "host": host,
                "comment": "stack " + ", ".join(site["stacks"]),
                "handlers": handlers,
            }
        )
    if isinstance(private, Unresolved):  # an offline render's placeholder: never planned
        private = PrivateAcme(f"https://{UNRESOLVED_HOST}/dir", b"")
    return (
        environment()
        .get_template("Caddyfile.j2")
        .render(
            sites=rendered_sites,
            email=spec.host.acme_email if spec.host.tls != "internal" else None,
            local_certs=spec.host.tls == "internal",
            acme_ca=private.directory if private else None,
            acme_ca_root=f"/etc/caddy/{private.root_file}" if private else None,
            try_duration=UPSTREAM_TRY_DURATION,
            try_interval=UPSTREAM_TRY_INTERVAL,
        )
    )
