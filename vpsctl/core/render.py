"""Render the validated spec into the exact files the host needs: a pure function of the spec.

Layout on the host (``HOST_ROOT``)::

    /opt/vpsctl/stacks/<stack>/compose.yaml          0644  compose project <stack>
    /opt/vpsctl/stacks/<stack>/env/<service>.env     0600  every value the container gets
    /opt/vpsctl/stacks/<stack>/config/<name>         0644  shipped config files
    /opt/vpsctl/stacks/edge/config/caddy/Caddyfile   0644  built from every stack's routes

Python builds a view of each file; the jinja2 templates under ``templates/`` only lay it out
(``StrictUndefined``: a missing value is an error, never an empty string). Compose files
carry no interpolation: every string is JSON-quoted and every ``$`` doubled, and values reach
containers only through the env files.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from vpsctl.core import backupfiles
from vpsctl.core.appsteps import AppStep, desired_steps
from vpsctl.core.layout import HOST_FILES, HOST_ROOT, STACKS_ROOT
from vpsctl.local import standins
from vpsctl.local.files import UnsafePath, member_problem, safe_target, write_atomic
from vpsctl.resources import shipped, standins_root
from vpsctl.spec.envfile import env_value_problem
from vpsctl.spec.models import ConfigMount, Service, Stack, VolumeMount
from vpsctl.spec.secrets import Secret
from vpsctl.spec.studio import Spec, network_alias
from vpsctl.spec.units import format_size

EDGE_NETWORK = "vpsctl-edge"
CADDY_CONFIG = "caddy"  # the edge's config directory holding the rendered Caddyfile
TEMPLATES = shipped("templates")

LABEL_STACK = "dev.vpsctl.stack"
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


@dataclass
class Desired:
    """Everything the host must hold, in apply order (dependencies first, the edge last)."""

    files: dict[str, DesiredFile] = field(default_factory=dict)
    stacks: dict[str, DesiredStack] = field(default_factory=dict)
    # the box's own files (backup script, password, timers): stack "" in ``files``
    host_files: tuple[str, ...] = ()
    # steps inside the apps after their health gate: first-launch claims, in-app settings
    app_steps: dict[str, tuple[AppStep, ...]] = field(default_factory=dict)

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


def _q(value: Any) -> str:
    """A compose-safe YAML scalar: JSON (a subset of YAML) with ``$`` doubled."""
    return json.dumps(_dollars(value), ensure_ascii=False)


def _dollars(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, list):
        return [_dollars(v) for v in value]
    return value


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - YAML, env files and a Caddyfile, not HTML
    )
    env.filters["q"] = _q
    env.filters["sh"] = lambda value: shlex.quote(str(value))
    return env


def stack_dir(stack: str) -> str:
    """The stack's directory on the host."""
    return f"{STACKS_ROOT}/{stack}"


SECRET_KEYS_HEADER = "# vpsctl secret keys:"  # noqa: S105 - a comment line's prefix, not a secret


def parse_env_file(content: bytes) -> dict[str, str]:
    """Read back an env file as vpsctl renders it (``KEY='value'`` lines).

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


def render(spec: Spec, repository: backupfiles.Repository | None = None) -> Desired:
    """The desired state of the host for ``spec``.

    With a ``backup`` in host.yaml, the backup files need the resolved repository: given, or
    resolved here (host.yaml's key file, or the backup sandbox's record).
    """
    env = _environment()
    desired = Desired()
    if spec.host.backup is not None:
        repo = repository or backupfiles.resolve(spec)
        assert repo is not None
        host_files = backupfiles.render_files(spec, repo, env, STACKS_ROOT, apply_order(spec))
        for path, content, mode, kind in host_files:
            desired.files[path] = DesiredFile(path, content, mode, "", kind)
        desired.host_files = tuple(path for path, *_ in host_files)
    standins_dir = standins_root(spec)
    for name in apply_order(spec):
        stack = spec.stacks[name]
        files: list[DesiredFile] = []
        configs = _config_files(spec, name, stack)
        files.extend(configs.values())
        services: list[dict[str, Any]] = []
        service_hashes: dict[str, str] = {}
        images: dict[str, Image] = {}
        service_images: dict[str, str] = {}
        for service_name, service in stack.services.items():
            env_file = _env_file(spec, name, service_name, env)
            if env_file is not None:
                files.append(env_file)
            image = _image(spec, standins_dir, service.image)
            images.setdefault(image.ref, image)
            service_images[service_name] = image.ref
            mounted = _mounted_configs(service, configs)
            view = _service_view(
                spec,
                stack_name=name,
                stack=stack,
                service_name=service_name,
                service=service,
                image=image,
                env_file=env_file,
                mounted=mounted,
            )
            services.append(view)
            service_hashes[service_name] = _hash_json(
                {
                    "compose": view,
                    "env": env_file.sha256 if env_file else None,
                    "configs": sorted(f.sha256 for f in mounted),
                }
            )
        compose = env.get_template("compose.yaml.j2").render(
            stack={"name": name, "services": services, "volumes": stack.volumes()},
            edge_network=EDGE_NETWORK,
        )
        files.insert(
            0,
            DesiredFile(
                f"{stack_dir(name)}/compose.yaml", compose.encode(), 0o644, name, "compose"
            ),
        )
        if stack.role == "edge":
            caddyfile = render_caddyfile(spec, env)
            files.append(
                DesiredFile(
                    f"{stack_dir(name)}/config/{CADDY_CONFIG}/Caddyfile",
                    caddyfile.encode(),
                    0o644,
                    name,
                    "caddyfile",
                )
            )
            private = private_acme(spec)
            if private is not None:  # read by Caddy with the Caddyfile: apply validates both
                files.append(
                    DesiredFile(
                        f"{stack_dir(name)}/config/{CADDY_CONFIG}/{private.root_file}",
                        private.root_pem,
                        0o644,
                        name,
                        "caddy-asset",
                    )
                )
        for f in files:
            desired.files[f.path] = f
        desired.stacks[name] = DesiredStack(
            name=name,
            role=stack.role,
            files=tuple(f.path for f in files),
            images=tuple(images.values()),
            services=service_hashes,
            hash=_hash_json({p.path: p.sha256 for p in files}),
            service_images=service_images,
            backed_up=spec.host.backup is not None and bool(stack.backups),
            domains=dict(spec.host.stacks[name].domains),
        )
    _contained(desired)
    desired.app_steps = desired_steps(spec)
    return desired


def _contained(desired: Desired) -> None:
    """Every rendered file inside the directory it belongs to: its stack's, or the box's
    own files (the spec's rules guarantee it; a renderer bug must not ship elsewhere)."""
    for f in desired.files.values():
        root = stack_dir(f.stack) if f.stack else HOST_FILES
        problem = member_problem(f.path, root)
        if problem is not None:
            raise UnsafePath(f"rendered file {problem}")


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


def _image(spec: Spec, standins_dir: Path, ref: str) -> Image:
    mapped = spec.host.images.get(ref)
    if mapped is None:
        return Image(ref=ref, source="registry")
    args = dict(mapped.args)
    tag = standins.local_tag(standins_dir, mapped.standin, args)
    return Image(ref=tag, source="local", standin=mapped.standin, args=tuple(sorted(args.items())))


def _config_files(spec: Spec, name: str, stack: Stack) -> dict[str, DesiredFile]:
    out: dict[str, DesiredFile] = {}
    for config_name, config in sorted(stack.configs.items()):
        source, problem = spec.config_source(name, config.source)
        if problem is not None:  # validation refuses it first; never ship it anyway
            raise UnsafePath(f"stack {name}: config {config_name}: {problem}")
        content = source.read_bytes()
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
        entries=entries, secret_keys=[key for key, _ in entries if key in secret_keys]
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
    }


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


def upstream_host(stack: str, service: str) -> str:
    """How Caddy reaches a service on the shared edge network."""
    return network_alias(stack, service)


def render_caddyfile(
    spec: Spec, env: jinja2.Environment | None = None, without: frozenset[str] = frozenset()
) -> str:
    """The edge's Caddyfile: one site per host name, longest path prefix first; the routes
    and redirects of the stacks in ``without`` left out (apply withholds those of a stack
    whose first start failed)."""
    env = env or _environment()
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
                        "upstream": f"{upstream_host(stack_name, route.service)}:{route.port}",
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
    private = private_acme(spec)
    return env.get_template("Caddyfile.j2").render(
        sites=rendered_sites,
        email=spec.host.acme_email if spec.host.tls != "internal" else None,
        local_certs=spec.host.tls == "internal",
        acme_ca=private.directory if private else None,
        acme_ca_root=f"/etc/caddy/{private.root_file}" if private else None,
    )


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


def private_acme(spec: Spec) -> PrivateAcme | None:
    """The sandbox's ACME CA for ``tls: pebble`` (from its record), else None."""
    if spec.host.tls != "pebble":
        return None
    from vpsctl.local import pebble  # noqa: PLC0415 - the sandbox's CA only for tls: pebble

    try:
        found = pebble.endpoint()
    except pebble.PebbleError as exc:
        line, _ = spec.host_doc.locate(("tls",))
        raise pebble.PebbleError(f"{spec.host_doc.file}:{line}: tls: pebble: {exc}") from None
    return PrivateAcme(found.directory, found.tls_ca_pem)
