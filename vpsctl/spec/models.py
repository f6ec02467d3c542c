"""The typed spec: ``inventory/<env>/host.yaml`` (:class:`Host`) and ``stacks/<name>.yaml``
(:class:`Stack`). Field descriptions become the JSON Schema that editors show.

Models check what one file can know on its own; checks that need several files (a route's
domain in host.yaml, a secret's value in secrets.env) live in :mod:`vpsctl.spec.checks`.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainSerializer,
    StringConstraints,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from vpsctl.spec.base import Model, discriminator, presence_discriminator, tag
from vpsctl.spec.paths import ABSOLUTE_PATH, RELATIVE_NAME, absolute_problem, relative_problem
from vpsctl.spec.secrets import SECRET_NAME, SecretKind
from vpsctl.spec.units import MIN_MEM_LIMIT, SIZE_HINT, check_duration, format_size, parse_memory
from vpsctl.spec.zones import is_zone
from vpsctl.spec.zones import names as zone_names

# ── scalar types ────────────────────────────────────────────────────────────────────────

# Names join into network aliases as `<stack>--<service>` (studio.network_alias): no name
# may hold `--` or end in `-`, so two different pairs can never join to the same alias.
_NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


def _name_hint(longest: int) -> str:
    return (
        f"lowercase letters, digits and single '-' between them, starting with a letter, at "
        f"most {longest} characters"
    )


def _checked_name(name: str, what: str, longest: int) -> str:
    if len(name) > longest or not _NAME.fullmatch(name):
        why = " ('--' joins stack and service names in network aliases)" if "--" in name else ""
        shown = name.encode("unicode_escape").decode("ascii")
        shown = shown if len(shown) <= 60 else shown[:57] + "…"
        raise ValueError(f"'{shown}' is not a {what}: expected {_name_hint(longest)}{why}")
    return name


def _name_schema(longest: int) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "type": "string",
            "pattern": f"^{_NAME.pattern}$",
            "maxLength": longest,
            "description": _name_hint(longest),
        }
    )


def _stack_name(name: str) -> str:
    return _checked_name(name, "stack name", 31)


def _service_name(name: str) -> str:
    return _checked_name(name, "service name", 41)


def _volume_name(name: str) -> str:
    return _checked_name(name, "volume name", 41)


StackName = Annotated[str, AfterValidator(_stack_name), _name_schema(31)]
ServiceName = Annotated[str, AfterValidator(_service_name), _name_schema(41)]
VolumeName = Annotated[str, AfterValidator(_volume_name), _name_schema(41)]
DomainKey = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,30}$"),
    Field(description="a key into this stack's `domains` in host.yaml, e.g. `app` or `www`"),
]
EnvKey = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$"),
    Field(description="an environment variable name: letters, digits, '_'"),
]
SecretName = Annotated[
    str,
    StringConstraints(pattern=f"^{SECRET_NAME}$"),
    Field(description="a key of secrets.env: UPPER_CASE letters, digits, '_'"),
]
Port = Annotated[int, Field(ge=1, le=65535)]


def _absolute(path: str) -> str:
    problem = absolute_problem(path)
    if problem is not None:
        raise ValueError(problem)
    return path


def _relative(name: str) -> str:
    problem = relative_problem(name)
    if problem is not None:
        raise ValueError(problem)
    return name


AbsPath = Annotated[
    str,
    AfterValidator(_absolute),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^(" + ABSOLUTE_PATH.pattern + ")$",
            "description": "an absolute, normalised path (no '..', no spaces, ':' or ',')",
        }
    ),
]
# A file or directory name below a stack's config/ (or its files directory): never `..`.
RelativeName = Annotated[
    str,
    AfterValidator(_relative),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^(" + RELATIVE_NAME.pattern + ")$",
            "description": "a relative path like clickhouse/config.d/logs.xml; no '..'",
        }
    ),
]
UrlPath = Annotated[
    str,
    StringConstraints(pattern=r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$"),
    Field(description="a URL path starting with '/'"),
]


def _size(value: Any) -> int:
    return parse_memory(value)


def _mem_limit(value: Any) -> int:
    return parse_memory(value, minimum=MIN_MEM_LIMIT)


def _swap(value: Any) -> int:
    return parse_memory(value, zero_ok=True)


# A unit is required (schema and validator): a bare number is bytes to Docker.
_SIZE_SCHEMA = {
    "type": "string",
    "pattern": r"^\d+(\.\d+)?\s*([kKmMgGtT][iI]?[bB]?|[bB])$",
    "description": SIZE_HINT,
}
MemSize = Annotated[
    int,
    BeforeValidator(_size),
    PlainSerializer(format_size, return_type=str),
    WithJsonSchema(_SIZE_SCHEMA),
]
MemLimit = Annotated[
    int,
    BeforeValidator(_mem_limit),
    PlainSerializer(format_size, return_type=str),
    WithJsonSchema({**_SIZE_SCHEMA, "description": f"{SIZE_HINT}; at least 6m (Docker's minimum)"}),
]
SwapSize = Annotated[
    int,
    BeforeValidator(_swap),
    PlainSerializer(format_size, return_type=str),
    WithJsonSchema(
        {"anyOf": [_SIZE_SCHEMA, {"const": 0}], "description": f"{SIZE_HINT}, or 0 for none"}
    ),
]
Duration = Annotated[str, AfterValidator(check_duration)]


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value
    raise ValueError("must be a string, number or boolean (quote anything else)")


EnvValue = Annotated[
    str,
    BeforeValidator(_env_value),
    WithJsonSchema({"type": ["string", "number", "boolean"]}),
]

# An image is pinned: a tag that names a version, or a digest. `latest` or no tag is not.
# Matched with fullmatch (not `^…$`): Python's `$` also matches before a final newline.
_IMAGE = re.compile(
    r"(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*(?::\d+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)


def _image(ref: str) -> str:
    match = _IMAGE.fullmatch(ref)
    if not match:
        raise ValueError(f"{ref!r} is not an image reference like ghost:6.65.0-alpine")
    tag_, digest = match.group("tag"), match.group("digest")
    if digest:
        return ref
    if tag_ is None:
        raise ValueError(
            f"'{ref}' has no tag: pin a version (e.g. {ref}:1.2.3) or a digest (@sha256:…)"
        )
    if tag_ == "latest" or not any(c.isdigit() for c in tag_):
        raise ValueError(
            f"tag '{tag_}' is not a version: pin a version tag (e.g. :1.2.3) or a digest "
            "(@sha256:…), so a redeploy cannot silently change what runs"
        )
    return ref


ImageRef = Annotated[str, AfterValidator(_image)]


_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+"
)


def _hostname(name: str) -> str:
    if not _HOSTNAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a fully qualified lowercase host name like blog.example.com"
        )
    return name


Hostname = Annotated[str, AfterValidator(_hostname)]

# ── stack files ─────────────────────────────────────────────────────────────────────────


class Healthcheck(Model):
    """How Docker decides the service is healthy (compose `healthcheck`)."""

    test: list[str] = Field(
        min_length=2,
        description='["CMD", "prog", "arg", …] or ["CMD-SHELL", "a shell command"]',
    )
    interval: Duration = "10s"
    timeout: Duration = "5s"
    retries: int = Field(5, ge=1, le=100)
    start_period: Duration = "30s"
    start_interval: Duration = Field(
        "1s",
        description="how often to check during start_period (Docker 25+): a started service "
        "is seen healthy within a second, not after a whole interval",
    )

    @field_validator("test")
    @classmethod
    def _form(cls, test: list[str]) -> list[str]:
        if test[0] not in ("CMD", "CMD-SHELL"):
            raise ValueError('must start with "CMD" or "CMD-SHELL"')
        if any(not part for part in test):
            raise ValueError("no element may be empty")
        return test


# The resource limits Docker sets (`docker run --ulimit`, compose `ulimits`), by name.
ULIMIT_NAMES = (
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
)
NR_OPEN = 1048576  # the kernel's default fs.nr_open: no process may hold more open files
_ULIMIT_HINT = (
    "a number (soft = hard), or {soft: N, hard: N}; -1 is unlimited (not for nofile), "
    "e.g. `ulimits: {nofile: {soft: 65535, hard: 65535}}`"
)


class Ulimit(Model):
    """One limit: the soft value the process starts with, the hard ceiling it may raise it to."""

    soft: int
    hard: int


def _ulimit_number(name: str, which: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        # ValueError, not TypeError: pydantic turns only ValueError into a located error
        raise ValueError(  # noqa: TRY004
            f"{name}.{which}: {value!r} is not a whole number: expected {_ULIMIT_HINT}"
        )
    if name == "nofile":
        if not 1 <= value <= NR_OPEN:
            raise ValueError(
                f"nofile.{which}: {value} is out of range: open files must be 1 to {NR_OPEN} "
                "(the kernel's fs.nr_open; it cannot be unlimited), e.g. 65535"
            )
    elif value < -1:
        raise ValueError(f"{name}.{which}: {value} is negative: expected {_ULIMIT_HINT}")
    return value


def _ulimits(value: Any) -> dict[str, Ulimit]:
    """compose's shapes: `nofile: 65535` (soft = hard) or `nofile: {soft: N, hard: N}`."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of limit names to {_ULIMIT_HINT}")  # noqa: TRY004
    limits: dict[str, Ulimit] = {}
    for name, limit in value.items():
        if name not in ULIMIT_NAMES:
            close = difflib.get_close_matches(str(name), ULIMIT_NAMES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(
                f"'{name}' is not a limit Docker sets{hint}: expected one of "
                f"{', '.join(ULIMIT_NAMES)}"
            )
        if isinstance(limit, dict):
            if set(limit) != {"soft", "hard"}:
                raise ValueError(
                    f"{name}: give both `soft` and `hard` and nothing else (got "
                    f"{', '.join(map(str, limit)) or 'nothing'}), or one number for both"
                )
            soft = _ulimit_number(name, "soft", limit["soft"])
            hard = _ulimit_number(name, "hard", limit["hard"])
        else:
            soft = hard = _ulimit_number(name, "value", limit)
        if hard != -1 and (soft == -1 or soft > hard):
            raise ValueError(
                f"{name}: soft {soft} is above hard {hard}: the soft limit may be at most the "
                "hard one (the kernel refuses it and the container would not start)"
            )
        limits[str(name)] = Ulimit(soft=soft, hard=hard)
    return limits


_ULIMIT_VALUE_SCHEMA = {
    "anyOf": [
        {"type": "integer", "minimum": -1},
        {
            "type": "object",
            "properties": {
                "soft": {"type": "integer", "minimum": -1},
                "hard": {"type": "integer", "minimum": -1},
            },
            "required": ["soft", "hard"],
            "additionalProperties": False,
        },
    ]
}
Ulimits = Annotated[
    dict[str, Ulimit],
    BeforeValidator(_ulimits),
    WithJsonSchema(
        {
            "type": "object",
            "propertyNames": {"enum": list(ULIMIT_NAMES)},
            "additionalProperties": _ULIMIT_VALUE_SCHEMA,
            "description": f"resource limits by name (compose `ulimits`): {_ULIMIT_HINT}",
        }
    ),
]


class VolumeMount(Model):
    """A named docker volume of this stack mounted into the service."""

    volume: VolumeName
    target: AbsPath
    read_only: bool = False


class ConfigMount(Model):
    """A file or a directory of this stack's `configs` mounted into the service.

    Mount a directory where the program watches it (Caddy): editors and uploads replace a
    file's inode, and a single-file bind mount keeps showing the old file.
    """

    config: RelativeName
    target: AbsPath
    read_only: bool = True


Mount = Annotated[
    Annotated[VolumeMount, Tag(tag("volume"))] | Annotated[ConfigMount, Tag(tag("config"))],
    presence_discriminator(("volume", "config"), "a mount"),
]


def volume_holding(mounts: list[Any], path: str) -> tuple[VolumeMount, str] | None:
    """The named-volume mount under which ``path`` (inside the container) lies, and the
    path relative to the volume's root; ``None`` when no volume holds it."""
    best: tuple[VolumeMount, str] | None = None
    for mount in mounts:
        if not isinstance(mount, VolumeMount):
            continue
        root = mount.target.rstrip("/")
        if path == root or path.startswith(root + "/"):
            rel = path[len(root) :].lstrip("/")
            if best is None or len(mount.target) > len(best[0].target):
                best = (mount, rel)
    return best


def _ip_address(text: str) -> str:
    # the address is spliced into compose's `ip:published:target` string: only a plain IP
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        shown = text.encode("unicode_escape").decode("ascii")[:60]
        raise ValueError(f"'{shown}' is not an IP address like 127.0.0.1, 0.0.0.0 or ::1") from None


class PortPublish(Model):
    """A port published on the host. Only the edge may publish on a public address."""

    target: Port
    published: Port
    host_ip: Annotated[str, AfterValidator(_ip_address)] = Field(
        "0.0.0.0",  # noqa: S104 - compose's own default, which checks refuse outside the edge
        description="address on the host; compose's default 0.0.0.0 is public",
    )
    protocol: Literal["tcp", "udp"] = "tcp"


class Service(Model):
    """One container of the stack."""

    image: ImageRef = Field(description="pinned: name:version-tag or name@sha256:digest")
    command: list[str] | None = Field(None, description="argv, overriding the image's CMD")
    user: str | None = None
    env: dict[EnvKey, EnvValue] = Field(
        default_factory=dict,
        description="plain configuration; `{domain.KEY}` is replaced by this stack's domain",
    )
    secrets: dict[EnvKey, SecretName] = Field(
        default_factory=dict,
        description="container variable → key of secrets.env declared in the stack's `secrets`",
    )
    volumes: list[Mount] = Field(default_factory=list)
    ports: list[PortPublish] = Field(default_factory=list)
    expose: list[Port] = Field(
        default_factory=list, description="ports the service listens on (checked against routes)"
    )
    healthcheck: Healthcheck
    mem_limit: MemLimit | None = Field(
        None, description="hard memory limit, e.g. 256m (a unit, at least 6m); required"
    )
    depends_on: list[ServiceName] = Field(default_factory=list)
    restart: Literal["unless-stopped", "always", "on-failure", "no"] = "unless-stopped"
    stop_grace_period: Duration | None = None
    ulimits: Ulimits = Field(
        default_factory=dict,
        description="resource limits as upstream sets them, e.g. "
        "`{nofile: {soft: 65535, hard: 65535}}` (compose `ulimits`)",
    )


class ConfigFile(Model):
    """A file shipped with the stack, taken from `source` (relative to the stack file)."""

    source: RelativeName = Field(
        description="a file under stacks/files/<stack>/, relative to the stack file (e.g. "
        "files/<stack>/app.conf)"
    )


class Route(Model):
    """A path of one of the stack's domains, proxied by Caddy to a service."""

    domain: DomainKey
    path: UrlPath = Field("/", description="path prefix; `/` is the whole site")
    upstream: Annotated[
        str,
        StringConstraints(pattern=r"^[a-z][a-z0-9-]*:\d{1,5}$"),
        Field(description="service:port of this stack"),
    ]
    webhook: bool = Field(
        False, description="a path that must never redirect (Stripe fails any 3xx)"
    )

    @property
    def service(self) -> str:
        """The upstream's service name."""
        return self.upstream.split(":", 1)[0]

    @property
    def port(self) -> int:
        """The upstream's port."""
        return int(self.upstream.split(":", 1)[1])


class Redirect(Model):
    """Caddy answers requests under `domain` + `path` with a redirect to domain `to`."""

    domain: DomainKey
    path: UrlPath = "/"
    to: DomainKey
    status: Literal[301, 302, 307, 308] = 308


class CountCheck(Model):
    """The body must contain `pattern` at least `min` times."""

    pattern: Annotated[str, StringConstraints(min_length=1)]
    min: int = Field(1, ge=1)


class Probe(Model):
    """An HTTP request through Caddy that must answer as expected (apply's gate, the audit)."""

    name: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]*$")]
    domain: DomainKey
    path: UrlPath = "/"
    method: Literal["GET", "HEAD", "POST"] = "GET"
    status: int = Field(200, ge=100, le=599)
    body_contains: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=list
    )
    json_fields: list[
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")]
    ] = Field(default_factory=list, description="dotted paths that must exist and be non-empty")
    min_count: CountCheck | None = None
    allow_empty_body: bool = False

    @field_validator("status")
    @classmethod
    def _redirects_are_not_ok(cls, status: int) -> int:
        if 300 <= status < 400:
            raise ValueError(
                f"{status} is a redirect: a probe expecting one proves nothing about the app; "
                "probe the target (expect 2xx, or the app's own 4xx)"
            )
        return status


class SqliteBackup(Model):
    """A product's SQLite database, copied with the online backup API."""

    kind: Literal["sqlite"]
    service: ServiceName
    path: AbsPath = Field(description="the database file inside the container")


class PostgresBackup(Model):
    """A Postgres database, dumped with pg_dump."""

    kind: Literal["postgres"]
    service: ServiceName
    database: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    user: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = "postgres"


class MysqlBackup(Model):
    """A MySQL database, dumped with mysqldump --single-transaction."""

    kind: Literal["mysql"]
    service: ServiceName
    database: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    password_secret: SecretName = Field(description="secrets.env key of the root password")


class ClickhouseBackup(Model):
    """ClickHouse tables, with ClickHouse's own BACKUP."""

    kind: Literal["clickhouse"]
    service: ServiceName
    database: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    dir: AbsPath = Field(
        "/var/lib/clickhouse/backups",
        description="a `backups.allowed_path` of the server's config, on one of its volumes",
    )


class VolumeBackup(Model):
    """A whole named volume (Caddy's certificates, Ghost's content, uploads)."""

    kind: Literal["volume"]
    volume: VolumeName


Backup = Annotated[
    Annotated[SqliteBackup, Tag(tag("sqlite"))]
    | Annotated[PostgresBackup, Tag(tag("postgres"))]
    | Annotated[MysqlBackup, Tag(tag("mysql"))]
    | Annotated[ClickhouseBackup, Tag(tag("clickhouse"))]
    | Annotated[VolumeBackup, Tag(tag("volume"))],
    discriminator("kind", ("sqlite", "postgres", "mysql", "clickhouse", "volume"), "a backup"),
]


class GhostContent(Model):
    """Audit Ghost's content: every published post is read (paged through the Content
    API), the sitemap must list exactly the posts Ghost puts in it (all but those whose
    canonical_url points elsewhere), the post count must not drop between audits, and no
    public post may be empty (members-only and paid bodies are gated from a content key).

    The Content API key is not a secret of secrets.env: vpsctl derives it (the integration
    "vpsctl audit", created with the first-launch claim) and keeps it on the box."""

    domain: DomainKey

    @model_validator(mode="before")
    @classmethod
    def _no_external_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and "content_api_key" in data:
            raise ValueError(
                "content_api_key is no longer taken: vpsctl derives Ghost's Content API key "
                'itself (the integration "vpsctl audit", created by `first_launch: {app: '
                "ghost, …}`) and keeps it on the box in /opt/vpsctl/apps/<stack>/"
                "ghost-content-key; remove content_api_key here and its secret from `secrets` "
                "and secrets.env"
            )
        return data


_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class FirstLaunch(Model):
    """vpsctl claims the app's first launch itself, before the edge routes to it: the owner
    account (Ghost's setup, Plausible's first registration) with these credentials."""

    app: Literal["ghost", "plausible"] = Field(description="which app's first launch to claim")
    service: ServiceName = Field(description="the service of this stack that runs the app")
    owner_name: Annotated[str, StringConstraints(min_length=1, max_length=191)] = Field(
        description="the owner's display name"
    )
    owner_email: Annotated[str, StringConstraints(pattern=_EMAIL, max_length=191)] = Field(
        description="the owner's e-mail address (their login)"
    )
    password_secret: SecretName = Field(
        description="secrets.env key of the owner's password: a `kind: password` secret of "
        "this stack (`vpsctl secrets generate -i INVENTORY` creates it)"
    )


class ListmonkSmtp(Model):
    """The SMTP server Listmonk sends through (its `smtp` settings block, enabled)."""

    host: Hostname
    port: Port
    auth: Literal["none", "plain", "login", "cram"] = Field(
        "login", description="SMTP auth protocol (listmonk's auth_protocol)"
    )
    tls: Literal["none", "STARTTLS", "TLS"] = Field(
        "STARTTLS", description="`TLS` (implicit, port 465), `STARTTLS` (587) or `none`"
    )
    username: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    password_secret: SecretName = Field(
        description="secrets.env key of the SMTP password, declared in this stack's `secrets`"
    )


class ListmonkSettings(Model):
    """Listmonk settings that live in its database (not env vars), set by vpsctl through
    its API after the health gate: GET, change, PUT the whole object back, only when
    something differs."""

    service: ServiceName = Field("listmonk", description="the service running listmonk")
    root_url: Annotated[str, StringConstraints(min_length=1, max_length=500)] = Field(
        description="app.root_url: the public URL in every link of every e-mail, e.g. "
        "`https://{domain.site}`"
    )
    from_email: Annotated[str, StringConstraints(min_length=3, max_length=300)] | None = Field(
        None, description="app.from_email, e.g. `Lumen Studio <news@lumenstudio.dev>`"
    )
    smtp: ListmonkSmtp


class Stack(Model):
    """A docker compose stack: ``stacks/<name>.yaml``."""

    description: str | None = None
    role: Literal["app", "edge"] = Field(
        "app", description="`edge` is the Caddy stack: it serves every stack's routes"
    )
    secrets: dict[SecretName, SecretKind] = Field(
        default_factory=dict, description="every secrets.env key the stack uses, with its kind"
    )
    services: dict[ServiceName, Service] = Field(min_length=1)
    configs: dict[RelativeName, ConfigFile] = Field(
        default_factory=dict, description="files under the stack's config/ on the host"
    )
    routes: list[Route] = Field(default_factory=list)
    redirects: list[Redirect] = Field(default_factory=list)
    probes: list[Probe] = Field(default_factory=list)
    backups: list[Backup] = Field(default_factory=list)
    ghost_content: GhostContent | None = None
    first_launch: FirstLaunch | None = Field(
        None,
        description="an owner account vpsctl claims itself at the app's first start, before "
        "the edge exposes it (else the first visitor becomes the owner)",
    )
    listmonk: ListmonkSettings | None = Field(
        None, description="Listmonk's database settings (root URL, SMTP), applied by vpsctl"
    )

    def volumes(self) -> list[str]:
        """Named volumes the services mount, in first-use order."""
        seen: dict[str, None] = {}
        for service in self.services.values():
            for mount in service.volumes:
                if isinstance(mount, VolumeMount):
                    seen.setdefault(mount.volume)
        return list(seen)

    def domain_keys(self) -> list[str]:
        """Every domain key the stack's routes, redirects and probes use."""
        keys: dict[str, None] = {}
        for domain in [r.domain for r in self.routes] + [p.domain for p in self.probes]:
            keys.setdefault(domain)
        if self.ghost_content is not None:
            keys.setdefault(self.ghost_content.domain)
        for redirect in self.redirects:
            keys.setdefault(redirect.domain)
            keys.setdefault(redirect.to)
        return list(keys)


# ── host.yaml ───────────────────────────────────────────────────────────────────────────


class Ssh(Model):
    """How vpsctl reaches the box."""

    address: Annotated[str, StringConstraints(min_length=1, pattern=r"^[A-Za-z0-9.:-]+$")]
    port: Port = 22
    user: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_-]*$")] = "root"
    key: Annotated[str, StringConstraints(min_length=1)] = Field(
        description="private key file; `~` is expanded"
    )


class Sandbox(Model):
    """This environment is a local sandbox VPS (`vpsctl sandbox up --name NAME`)."""

    name: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,30}$")] = "default"


NodeName = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,30}$"),
    Field(description="a node of host.yaml's `nodes`"),
]
LabelKey = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,62}$"),
    Field(description="a node label's key (lower case; Swarm sees it as `node.labels.KEY`)"),
]
LabelValue = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]


class HostStack(Model):
    """A stack placed on this host, with this environment's settings."""

    domains: dict[DomainKey, Hostname] = Field(
        default_factory=dict, description="the host names behind the stack's domain keys"
    )
    node: NodeName | None = Field(
        None,
        description="with `nodes`: the node this stack runs on (required for a stack with "
        "volumes or backups: its data lives there)",
    )
    placement: dict[LabelKey, LabelValue] | None = Field(
        None,
        description="with `nodes`, for a stateless stack: Swarm places it on any node whose "
        "labels match all of these",
    )


class AuditThresholds(Model):
    """When the audit warns and when it fails."""

    disk_warn_percent: int = Field(80, ge=1, le=100)
    disk_fail_percent: int = Field(90, ge=1, le=100)
    inode_fail_percent: int = Field(90, ge=1, le=100)
    memory_available_warn_percent: int = Field(10, ge=0, le=100)
    swap_used_warn_percent: int = Field(50, ge=0, le=100)
    load_warn_per_core: float = Field(2.0, gt=0)
    restarts_fail: int = Field(3, ge=1, description="restart count that means crash-looping")
    backup_max_age_hours: int = Field(26, ge=1, description="a nightly backup, with slack")
    cert_min_days: int = Field(14, ge=1, description="days left on a publicly issued cert")


class Retention(Model):
    """Which snapshots ``restic forget --prune`` keeps after each nightly backup."""

    last: int = Field(3, ge=1, description="the most recent snapshots, whatever their age")
    daily: int = Field(7, ge=0)
    weekly: int = Field(4, ge=0)
    monthly: int = Field(6, ge=0)


OnCalendar = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9*:,./~ -]{1,80}$"),
    Field(description="a systemd OnCalendar expression, e.g. `*-*-* 03:30:00` or `daily`"),
]
HostKey = Annotated[
    str,
    StringConstraints(pattern=r"^(ssh-ed25519|ecdsa-sha2-nistp256|ssh-rsa) [A-Za-z0-9+/=]{40,}$"),
    Field(description="the backup server's SSH host key: `ssh-ed25519 AAAA…`"),
]


class SftpRepository(Model):
    """A restic repository on another host, over SFTP: off the box, as a backup must be."""

    kind: Literal["sftp"]
    address: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.:-]+$")] | None = Field(
        None, description="the backup host; required unless `sandbox` is set"
    )
    port: Port = 22
    user: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_-]*$")] = "root"
    key: Annotated[str, StringConstraints(min_length=1)] | None = Field(
        None,
        description="private key file (here) that the box logs in with; vpsctl installs it on "
        "the box, 0600; `~` is expanded",
    )
    host_key: HostKey | None = Field(
        None, description="the backup host's SSH host key, verified on every connection"
    )
    sandbox: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,30}$")] | None = Field(
        None,
        description="a local sandbox box (`vpsctl sandbox up --name NAME`) as the backup host: "
        "its address, key and host keys come from its record",
    )
    path: AbsPath = Field(description="the repository directory on the backup host")


class LocalRepository(Model):
    """A restic repository in a directory of the box itself (a mounted disk): not off-site."""

    kind: Literal["local"]
    path: AbsPath


Repository = Annotated[
    Annotated[SftpRepository, Tag(tag("sftp"))] | Annotated[LocalRepository, Tag(tag("local"))],
    discriminator("kind", ("sftp", "local"), "a restic repository"),
]


class BackupSettings(Model):
    """Where ``vpsctl backup`` and the nightly timer store snapshots, and for how long."""

    repository: Repository
    password_secret: SecretName = Field(
        "RESTIC_PASSWORD",
        description="secrets.env key of the repository password (at least 32 characters); "
        "keep a copy outside the box and outside the repository: without it nothing restores",
    )
    schedule: OnCalendar = Field(
        "*-*-* 03:30:00",
        description="a systemd OnCalendar expression (like `*-*-* 03:30:00` or `daily`): when "
        "the nightly backup runs",
    )
    check_schedule: OnCalendar = Field(
        "Sun *-*-* 05:00:00",
        description="a systemd OnCalendar expression: when `restic check` reads the repository",
    )
    keep: Retention = Field(default_factory=Retention)


class StandinImage(Model):
    """A locally built image (``standins/<standin>/``) taking the place of a registry image."""

    standin: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,62}$")]
    args: dict[
        Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]*$")],
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]+$")],
    ] = Field(default_factory=dict, description="docker build arguments")


class Node(Model):
    """One box of a cluster (``nodes`` in host.yaml): the boxes form a Docker Swarm."""

    ssh: Ssh | None = Field(None, description="required unless `sandbox` is set")
    sandbox: Sandbox | None = Field(
        None, description="a local sandbox box: connection from `vpsctl sandbox up`"
    )
    address: Annotated[str, AfterValidator(_ip_address)] | None = Field(
        None,
        description="the node's address on the network the nodes share (the swarm's "
        "advertise address; the firewall opens the swarm ports to it): default the SSH "
        "address; a sandbox box's from its record",
    )
    memory: MemSize = Field(description="RAM this box really has")
    os_reserve: MemSize | None = Field(
        None, description="kept free of mem_limits on this node (default: host.yaml's)"
    )
    labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, description="what stacks' `placement` matches"
    )
    edge: bool = Field(
        False,
        description="the public node: runs the edge (Caddy) with ports 80/443 on the host and "
        "opens host.yaml's `open_ports`; exactly one node is the edge",
    )
    manager: bool = Field(
        False,
        description="a Swarm manager (holds the cluster state; default: the edge node alone); "
        "1, 3 or 5 of them: managers keep a majority",
    )

    @property
    def ssh_port(self) -> int:
        """The port sshd listens on inside the node."""
        return self.ssh.port if self.ssh is not None else 22


class Host(Model):
    """``inventory/<env>/host.yaml``: the box and what runs on it."""

    name: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,62}$")]
    ssh: Ssh | None = Field(None, description="required unless `sandbox` is set")
    sandbox: Sandbox | None = Field(
        None, description="a local sandbox box: connection from `vpsctl sandbox up`"
    )
    memory: MemSize | None = Field(
        None,
        description="RAM the box really has (an 8 GB VPS shows ~7.7 GiB); required unless "
        "`nodes` is set (then each node gives its own)",
    )
    nodes: dict[NodeName, Node] | None = Field(
        None,
        description="several boxes forming a Docker Swarm, instead of `ssh`/`sandbox`/`memory` "
        "of one box; each stack then says where it runs (`node` or `placement`)",
    )
    overlay: Literal["encrypted", "plain"] = Field(
        "encrypted",
        description="with `nodes`: how the stacks' traffic between nodes travels: `encrypted` "
        "(IPsec ESP with AES-GCM; every node's kernel must have it) or `plain` (VXLAN in the "
        "clear: only on a private network you trust, or for a rehearsal on kernels without "
        "IPsec, like the sandbox's); plans say which",
    )
    os_reserve: MemSize = Field(
        1536 * 1024**2, description="kept free of mem_limits for the OS, dockerd and page cache"
    )
    swap: SwapSize = Field(description="size of the swap file (e.g. 2g); 0 for none")
    swappiness: int = Field(10, ge=0, le=100)
    timezone: str
    open_ports: list[Port] = Field(
        default_factory=lambda: [22, 80, 443], description="the firewall allows only these"
    )
    tls: Literal["acme", "internal", "pebble"] = Field(
        "acme",
        description="`acme`: Let's Encrypt over ACME; `internal`: Caddy's own CA, for boxes "
        "without public DNS; `pebble`: ACME from the sandbox's own CA (Pebble, started by "
        "`vpsctl sandbox up`), HTTP-01 through the box's port 80 (sandbox boxes only)",
    )
    acme_email: Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")] | None = (
        None
    )
    stripe_mode: Literal["live", "test"] | None = Field(
        None, description="if set, every Stripe key must be of this mode"
    )
    stacks_dir: str = Field("../../stacks", description="where stack files are, from this file")
    images: dict[str, StandinImage] = Field(
        default_factory=dict,
        description="image (as stack files name it) → local stand-in that vpsctl builds and ships "
        "to the box instead (boxes that cannot reach a registry, like the sandbox)",
    )
    standins_dir: str | None = Field(
        None,
        description="where stand-in build contexts are, from this file (default: the stand-ins "
        "that ship with vpsctl)",
    )
    max_nofile: int | None = Field(
        None,
        ge=1024,
        le=NR_OPEN,
        description="the most open files this host's Docker can give a container: set it only "
        "where dockerd cannot raise its own hard limit (no CAP_SYS_RESOURCE, as on the sandbox's "
        "machines); services' `ulimits.nofile` above it are lowered to it in compose.yaml, "
        "which says so. Unset (a real VPS): every service gets what its stack asks",
    )
    stacks: dict[StackName, HostStack] = Field(min_length=1)
    audit: AuditThresholds = Field(default_factory=AuditThresholds)
    backup: BackupSettings | None = Field(
        None, description="the restic repository of vpsctl's backups and of the nightly timer"
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        if not is_zone(zone):
            close = difflib.get_close_matches(zone, sorted(zone_names()), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else " like Europe/Berlin or UTC"
            raise ValueError(f"unknown time zone '{zone}': expected an IANA name{hint}")
        return zone

    @property
    def ssh_port(self) -> int:
        """The port sshd listens on inside the box."""
        return self.ssh.port if self.ssh is not None else 22

    @property
    def cluster(self) -> bool:
        """Whether this host is several nodes (a Docker Swarm) rather than one box."""
        return self.nodes is not None

    @property
    def edge_node(self) -> str | None:
        """The public node (the first marked `edge`), ``None`` for one box."""
        return next((n for n, node in (self.nodes or {}).items() if node.edge), None)

    @property
    def managers(self) -> list[str]:
        """The Swarm managers: those marked, else the edge node alone."""
        nodes = self.nodes or {}
        marked = [name for name, node in nodes.items() if node.manager]
        if marked:
            return marked
        return [self.edge_node] if self.edge_node is not None else []

    def node_os_reserve(self, name: str) -> int:
        """What node ``name`` keeps free of memory limits."""
        node = (self.nodes or {})[name]
        return node.os_reserve if node.os_reserve is not None else self.os_reserve
