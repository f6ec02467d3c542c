"""Checks across files: what no single model can know alone.

Each ``_check_*`` function is one rule and yields its own problems, located in the file the
operator must edit. No message quotes a secret's value (see :func:`secrets.describe`).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path

from pydantic import ValidationError

from vpsctl.errors import Problem, display_path
from vpsctl.resources import standins_root
from vpsctl.spec.envfile import BARE_LINE, EMPTY_VALUE, SecretsFile, env_value_problem
from vpsctl.spec.environment import Setting, effective, hazards
from vpsctl.spec.models import (
    ConfigMount,
    FirstLaunch,
    Host,
    ListmonkSettings,
    MysqlBackup,
    Node,
    SftpRepository,
    Stack,
    VolumeBackup,
    VolumeMount,
    volume_holding,
)
from vpsctl.spec.secrets import Password
from vpsctl.spec.studio import DOMAIN_REF, HOST_OWNER, SECRET_REF, Spec, network_alias
from vpsctl.spec.units import MIN_MEM_LIMIT, human_size
from vpsctl.spec.yamlsource import load_yaml

EDGE_PORTS = (80, 443)


def check(spec: Spec) -> list[Problem]:
    """Every cross-file problem of ``spec``."""
    rules = (
        _check_required_secrets,
        _check_secret_kinds,
        _check_secret_declarations,
        _check_stripe_modes,
        _check_env_values,
        _check_effective_environment,
        _check_memory,
        _check_domains,
        _check_routes,
        _check_healthchecks,
        _check_postgres_readiness,
        _check_probes,
        _check_ports,
        _check_depends_on,
        _check_names,
        _check_mounts_and_configs,
        _check_backups,
        _check_edge,
        _check_firewall,
        _check_host_access,
        _check_nodes,
        _check_secrets_in_urls,
        _check_env_file_safe,
        _check_images,
        _check_apps,
    )
    return [problem for rule in rules for problem in rule(spec)]


def warnings(spec: Spec, stack_files: dict[str, Path]) -> list[Problem]:
    """What is valid but most likely a mistake: a stack file in the stacks directory that
    host.yaml does not place (validate and plan would silently ignore it), and a secrets.env
    key no placed stack declares. ``stack_files``: every stack file found, by name."""
    out: list[Problem] = []
    unplaced: dict[str, Stack | None] = {}
    for name, path in sorted(stack_files.items()):
        if name in spec.host.stacks:
            continue
        unplaced[name] = _quiet_stack(path)
        out.append(_unplaced_stack(spec, name, path, unplaced[name]))
    required = spec.required_secrets()
    for name, entry in spec.secrets_file.entries.items():
        if name in required or entry.value is None:
            continue
        owners = [n for n, stack in unplaced.items() if stack is not None and name in stack.secrets]
        if owners:
            why = (
                f"only stack {', '.join(owners)} declares it, and this host does not place "
                "it; nothing receives it until host.yaml does"
            )
        else:
            why = (
                "no stack placed on this host declares it, so nothing receives it; declare "
                "it in the `secrets` of the stack that needs it, or delete the line"
            )
        out.append(Problem(spec.secrets_file.file, entry.line, name, f"unused: {why}"))
    return out


def _quiet_stack(path: Path) -> Stack | None:
    """The stack in ``path`` if it loads and validates; ``None`` otherwise (a warning only
    needs its domain keys and secrets; its own errors show once it is placed)."""
    doc, found = load_yaml(path)
    if doc is None or found or not isinstance(doc.data, dict):
        return None
    try:
        return Stack.model_validate(doc.data)
    except ValidationError:
        return None


def _unplaced_stack(spec: Spec, name: str, path: Path, stack: Stack | None) -> Problem:
    keys = stack.domain_keys() if stack is not None else []
    domains = ", ".join(f"{key}: HOSTNAME" for key in keys)
    entry = f"{name}: {{domains: {{{domains}}}}}" if keys else f"{name}: {{}}"
    line, _ = spec.host_doc.locate(("stacks",))
    steps = [
        f"add `{entry}` under `stacks:` in {spec.host_doc.file}:{line} (HOSTNAME: the "
        "name it is served under here)"
    ]
    if stack is not None and spec.is_sandbox:
        unmapped = [s.image for s in stack.services.values() if s.image not in spec.host.images]
        if unmapped:
            steps.append(
                f"map {', '.join(dict.fromkeys(unmapped))} under `images:` to a stand-in "
                "(`{standin: NAME}`)"
            )
    if stack is not None and stack.secrets:
        steps.append(f"run `vpsctl secrets generate -i {spec.inventory}`")
    return Problem(
        display_path(path),
        0,
        "",
        f"stack {name} is not placed on this host, so validate, plan and apply ignore it; "
        f"to run it here: {'; '.join(steps)}",
    )


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


# ── secrets ─────────────────────────────────────────────────────────────────────────────


def secrets_file_problems(secrets: SecretsFile) -> list[Problem]:
    """Empty and bare values in secrets.env, whoever uses them; a file others can read."""
    out = []
    if secrets.exists and secrets.mode & 0o077:
        out.append(
            Problem(
                secrets.file,
                0,
                "",
                f"readable by others (mode {secrets.mode:04o}); run `chmod 600 {secrets.file}`",
            )
        )
    # The line, never its key: a bare line may be the tail of a value wrapped onto its own
    # line (see envfile.read_secrets).
    for entry in secrets.entries.values():
        if entry.value is None:
            out.append(Problem(secrets.file, entry.line, "", BARE_LINE))
        elif entry.value.reveal() == "":
            out.append(Problem(secrets.file, entry.line, "", EMPTY_VALUE))
    return out


def _check_required_secrets(spec: Spec) -> Iterator[Problem]:
    secrets = spec.secrets_file
    generate = f"`vpsctl secrets generate -i {spec.inventory}`"
    if not secrets.exists:
        # what generate does depends on the environment: say what it will do in this one
        then = (
            "in a sandbox it fills every key, externally issued ones with test-shaped values"
            if spec.is_sandbox
            else "then add by hand the externally issued values it lists"
        )
        yield Problem(secrets.file, 0, "", f"file not found; create it with {generate}: {then}")
        return
    required = spec.required_secrets()
    if secrets.broken:
        # One note instead of a cascade of "missing" keys (with suggestions that send the
        # operator the wrong way): the keys may sit on the lines a broken one swallowed.
        absent = [name for name in required if name not in secrets.entries]
        if absent:
            lines = ", ".join(map(str, secrets.broken))
            yield Problem(
                secrets.file,
                0,
                "",
                f"{len(absent)} declared key(s) not read; not reported as missing until "
                f"line(s) {lines} parse: a broken line can swallow the lines after it",
            )
        return
    # a near-miss of a required name is a likely typo; another required name is not
    present = [name for name in secrets.entries if name not in required]
    for name, (stack, kind) in required.items():
        if name in secrets.entries:
            continue
        source = spec.declared_at(name, stack)
        if kind.is_external() and spec.is_sandbox:
            how = f"run {generate}: in this sandbox it writes a test-shaped value"
        elif kind.is_external():
            where = f"; get it from: {kind.obtain}" if kind.obtain else ""
            how = f"issued externally (vpsctl cannot make it here): add it by hand{where}"
        else:
            how = f"run {generate} to create it"
        yield Problem(
            secrets.file,
            0,
            name,
            f"missing: {_owner(stack)} needs {kind.spec_text()} (declared at {source}); "
            f"{how}{_suggest(name, present)}",
        )


def _owner(owner: str) -> str:
    return "host.yaml's backup" if owner == HOST_OWNER else f"stack {owner}"


def _check_secret_kinds(spec: Spec) -> Iterator[Problem]:
    for name, (_stack, kind) in spec.required_secrets().items():
        entry = spec.secrets_file.entries.get(name)
        if entry is None or entry.value is None or entry.value.reveal() == "":
            continue  # reported as missing or empty already
        message = kind.check(entry.value.reveal())
        if message:
            yield Problem(spec.secrets_file.file, entry.line, name, message)


def _check_secret_declarations(spec: Spec) -> Iterator[Problem]:
    kinds: dict[str, tuple[str, str]] = {}
    for stack_name, stack in spec.stacks.items():
        for name, kind in stack.secrets.items():
            described = kind.model_dump_json(exclude={"description", "obtain"})
            if name in kinds and kinds[name][1] != described:
                yield spec.problem_in_stack(
                    stack_name,
                    ("secrets", name),
                    f"declared with another kind by stack {kinds[name][0]}; a shared secret "
                    "needs one kind",
                )
            kinds.setdefault(name, (stack_name, described))
        used: set[str] = set()
        for service_name, service in stack.services.items():
            for var, name in service.secrets.items():
                used.add(name)
                if name not in stack.secrets:
                    yield spec.problem_in_stack(
                        stack_name,
                        ("services", service_name, "secrets", var),
                        f"secret {name} is not declared in this stack's `secrets` (with its "
                        f"kind); declared: {', '.join(stack.secrets) or '(none)'}"
                        f"{_suggest(name, list(stack.secrets))}",
                    )
            for key, value in service.env.items():
                for match in SECRET_REF.finditer(value):
                    used.add(match.group(1))
                    if match.group(1) not in stack.secrets:
                        yield spec.problem_in_stack(
                            stack_name,
                            ("services", service_name, "env", key),
                            f"{{secret.{match.group(1)}}} is not declared in this stack's "
                            f"`secrets`; declared: {', '.join(stack.secrets) or '(none)'}",
                        )
        for backup in stack.backups:
            if isinstance(backup, MysqlBackup):
                used.add(backup.password_secret)
        if stack.first_launch is not None:
            used.add(stack.first_launch.password_secret)
        if stack.listmonk is not None:
            used.add(stack.listmonk.smtp.password_secret)
        for name in stack.secrets:
            if name not in used:
                yield spec.problem_in_stack(
                    stack_name,
                    ("secrets", name),
                    "declared but no service uses it; remove it or reference it from a "
                    "service's `secrets`",
                )


def _check_stripe_modes(spec: Spec) -> Iterator[Problem]:
    wanted = spec.host.stripe_mode
    for stack_name, stack in spec.stacks.items():
        modes: dict[str, list[str]] = {}
        for name, kind in stack.secrets.items():
            value = spec.secret(name)
            mode = kind.stripe_mode(value.reveal()) if value is not None else None
            if mode is not None:
                modes.setdefault(mode, []).append(name)
        if len(modes) > 1:
            detail = "; ".join(f"{m}: {', '.join(names)}" for m, names in sorted(modes.items()))
            yield spec.problem_in_stack(
                stack_name,
                ("secrets",),
                f"test and live Stripe keys are mixed in one app ({detail}); use keys of one mode",
            )
        if wanted is not None:
            for mode, names in modes.items():
                if mode != wanted:
                    yield spec.problem_in_host(
                        ("stripe_mode",),
                        f"this environment takes {wanted} Stripe keys, but stack {stack_name} "
                        f"has {mode} ones: {', '.join(names)}",
                    )


# ── environment ─────────────────────────────────────────────────────────────────────────


def _check_env_values(spec: Spec) -> Iterator[Problem]:
    for stack_name, stack in spec.stacks.items():
        domains = spec.host.stacks[stack_name].domains
        for service_name, service in stack.services.items():
            for key, value in service.env.items():
                loc = ("services", service_name, "env", key)
                if value == "":
                    yield spec.problem_in_stack(
                        stack_name,
                        loc,
                        "empty value: apps do not treat empty as unset (Plausible crashes on "
                        "an empty optional variable); omit the variable instead",
                    )
                if "${" in value:
                    yield spec.problem_in_stack(
                        stack_name,
                        loc,
                        "`${…}` is not expanded: values are literal and never read from a "
                        "shell; put secrets in `secrets` (or {secret.NAME}) and domains as "
                        "{domain.KEY}",
                    )
                for match in DOMAIN_REF.finditer(value):
                    if match.group(1) not in domains:
                        yield spec.problem_in_stack(
                            stack_name,
                            loc,
                            f"{{domain.{match.group(1)}}} is not a domain of stack "
                            f"{stack_name} in {spec.host_doc.file}; defined: "
                            f"{', '.join(domains) or '(none)'}",
                        )
                rest = SECRET_REF.sub("", DOMAIN_REF.sub("", value))
                if "{domain" in rest or "{secret" in rest:
                    yield spec.problem_in_stack(
                        stack_name,
                        loc,
                        "malformed reference; write {domain.KEY} or {secret.NAME} (UPPER_CASE)",
                    )


def _check_effective_environment(spec: Spec) -> Iterator[Problem]:
    """Build each container's environment as compose will and look for shadowing in it.

    Empty values are not reported here: the rules for env values and secrets.env name them
    where they are written.
    """
    for stack_name, stack in spec.stacks.items():
        doc = spec.stack_docs[stack_name]
        for service_name, service in stack.services.items():
            # The rendered env file lists secrets first, then plain env: a later line wins.
            env_file: list[Setting] = []
            for var, name in service.secrets.items():
                secret = spec.secret(name)
                if secret is None:
                    continue  # missing secrets are reported by their own rule
                loc = ("services", service_name, "secrets", var)
                line, _ = doc.locate(loc)
                env_file.append(Setting(var, secret.reveal(), f"secrets ({doc.file}:{line})", loc))
            for key, value in service.env.items():
                loc = ("services", service_name, "env", key)
                line, _ = doc.locate(loc)
                env_file.append(Setting(key, value, f"env ({doc.file}:{line})", loc))
            for hazard in hazards(effective([env_file])):
                if "EMPTY" in hazard.message or "unset" in hazard.message:
                    continue
                yield spec.problem_in_stack(
                    stack_name,
                    hazard.setting.loc,
                    f"effective environment: {hazard.key} {hazard.message}",
                )


# ── memory ──────────────────────────────────────────────────────────────────────────────


def _check_memory(spec: Spec) -> Iterator[Problem]:
    placed: list[tuple[int, str, str]] = []  # limit, stack, service: host.yaml's order
    for stack_name, stack in spec.stacks.items():
        for service_name, service in stack.services.items():
            if service.mem_limit is None:
                yield spec.problem_in_stack(
                    stack_name,
                    ("services", service_name, "mem_limit"),
                    "missing: every service needs a memory limit (e.g. `mem_limit: 256m`) so "
                    "one leak cannot take the whole box down",
                )
            else:
                placed.append((service.mem_limit, stack_name, service_name))
    host = spec.host
    if host.nodes is None:
        if host.memory is not None:
            yield from _memory_budget(
                spec,
                placed,
                memory=host.memory,
                os_reserve=host.os_reserve,
                memory_loc=("memory",),
                which="",
            )
        return
    for node_name, node in host.nodes.items():
        # a stack placed by labels may land on any node they match: it counts on each
        here = [entry for entry in placed if node_name in spec.nodes_of(entry[1])]
        where = ("nodes", node_name)
        reserve_loc = (*where, "os_reserve") if node.os_reserve is not None else ("os_reserve",)
        yield from _memory_budget(
            spec,
            here,
            memory=node.memory,
            os_reserve=host.node_os_reserve(node_name),
            memory_loc=(*where, "memory"),
            which=f" of node {node_name}",
            reserve_loc=reserve_loc,
        )


def _memory_budget(
    spec: Spec,
    placed: list[tuple[int, str, str]],
    *,
    memory: int,
    os_reserve: int,
    memory_loc: tuple[str, ...],
    which: str,
    reserve_loc: tuple[str, ...] = ("os_reserve",),
) -> Iterator[Problem]:
    """The memory limits of ``placed`` (limit, stack, service) with ``os_reserve`` against
    ``memory`` (the box's, or a node's: ``which`` says whose)."""
    total = sum(limit for limit, _, _ in placed)
    if total + os_reserve <= memory:
        return
    # Located at the limit that, added up in host.yaml's stack order, takes the sum over
    # the budget (the line most likely just raised), saying how much would fit there.
    if not placed:  # os_reserve alone is more than the box has
        yield spec.problem_in_host(
            reserve_loc,
            f"os_reserve {human_size(os_reserve)} exceeds the memory{which or ' of the box'} "
            f"{human_size(memory)}: nothing is left for the stacks",
        )
        return
    running = os_reserve
    crossing = placed[-1]
    for entry in placed:
        running += entry[0]
        if running > memory:
            crossing = entry
            break
    limit, stack_name, service_name = crossing
    over = total + os_reserve - memory
    room = limit - over
    fits = (
        f"at most {human_size(room)} fits here with every other limit as it is"
        if room >= MIN_MEM_LIMIT
        else "nothing fits here unless other limits shrink"
    )
    biggest = sorted(((n, f"{st}/{sv}") for n, st, sv in placed), reverse=True)[:5]
    listing = ", ".join(f"{name} {human_size(n)}" for n, name in biggest)
    memory_line, _ = spec.host_doc.locate(memory_loc)
    box = f"node {which.removeprefix(' of node ')}'s" if which else "the box's"
    yield spec.problem_in_stack(
        stack_name,
        ("services", service_name, "mem_limit"),
        f"over the memory budget{which}: with this {human_size(limit)}, memory limits "
        f"{human_size(total)} + os_reserve {human_size(os_reserve)} = "
        f"{human_size(total + os_reserve)} exceed {box} {human_size(memory)} "
        f"({spec.host_doc.file}:{memory_line}) by {human_size(over)}; {fits} (or lower "
        f"others by {human_size(over)}); biggest consumers: {listing}",
    )


# ── domains, routes, probes ─────────────────────────────────────────────────────────────


def _check_domains(spec: Spec) -> Iterator[Problem]:
    for stack_name, stack in spec.stacks.items():
        domains = spec.host.stacks[stack_name].domains
        used = stack.domain_keys()
        used.extend(
            m.group(1)
            for service in stack.services.values()
            for value in service.env.values()
            for m in DOMAIN_REF.finditer(value)
        )
        for key in domains:
            if key not in used:
                yield spec.problem_in_host(
                    ("stacks", stack_name, "domains", key),
                    f"stack {stack_name} uses no domain '{key}'; it uses: "
                    f"{', '.join(dict.fromkeys(used)) or '(none)'}",
                )
        placed = [("routes", i, r.domain) for i, r in enumerate(stack.routes)]
        placed += [("probes", i, p.domain) for i, p in enumerate(stack.probes)]
        ghost = stack.ghost_content
        if ghost is not None and ghost.domain not in domains:
            yield spec.problem_in_stack(
                stack_name,
                ("ghost_content", "domain"),
                _undefined_domain(spec, stack_name, ghost.domain),
            )
        for kind, index, key in placed:
            if key not in domains:
                yield spec.problem_in_stack(
                    stack_name, (kind, index, "domain"), _undefined_domain(spec, stack_name, key)
                )
        for index, redirect in enumerate(stack.redirects):
            for field in ("domain", "to"):
                key = getattr(redirect, field)
                if key not in domains:
                    yield spec.problem_in_stack(
                        stack_name,
                        ("redirects", index, field),
                        _undefined_domain(spec, stack_name, key),
                    )


def _undefined_domain(spec: Spec, stack: str, key: str) -> str:
    domains = spec.host.stacks[stack].domains
    return (
        f"domain '{key}' is not defined for stack {stack} in {spec.host_doc.file} "
        f"(stacks.{stack}.domains); defined: {', '.join(domains) or '(none)'}"
    )


def _covers(prefix: str, path: str) -> bool:
    """Whether a Caddy path prefix ``prefix`` matches requests for ``path``."""
    if prefix == "/":
        return True
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def _check_routes(spec: Spec) -> Iterator[Problem]:
    seen: dict[tuple[str, str], str] = {}
    redirects: list[tuple[str, str, str]] = []  # hostname, path prefix, where
    for stack_name, stack in spec.stacks.items():
        doc = spec.stack_docs[stack_name]
        for index, redirect in enumerate(stack.redirects):
            host = spec.domain(stack_name, redirect.domain)
            if host is not None:
                line, _ = doc.locate(("redirects", index))
                redirects.append((host, redirect.path, f"{doc.file}:{line}"))
    for stack_name, stack in spec.stacks.items():
        doc = spec.stack_docs[stack_name]
        entries = [("routes", i, r.domain, r.path) for i, r in enumerate(stack.routes)]
        entries += [("redirects", i, r.domain, r.path) for i, r in enumerate(stack.redirects)]
        for kind, index, key, path in entries:
            host = spec.domain(stack_name, key)
            if host is None:
                continue
            line, _ = doc.locate((kind, index))
            where = f"{doc.file}:{line}"
            if (host, path) in seen:
                yield spec.problem_in_stack(
                    stack_name,
                    (kind, index, "path"),
                    f"{host}{path} is already served by {seen[host, path]}; each domain+path "
                    "may appear once",
                )
            seen.setdefault((host, path), where)
        for index, route in enumerate(stack.routes):
            service = stack.services.get(route.service)
            if service is None:
                yield spec.problem_in_stack(
                    stack_name,
                    ("routes", index, "upstream"),
                    f"no service '{route.service}' in this stack; services: "
                    f"{', '.join(stack.services)}{_suggest(route.service, list(stack.services))}",
                )
            elif service.expose and route.port not in service.expose:
                yield spec.problem_in_stack(
                    stack_name,
                    ("routes", index, "upstream"),
                    f"{route.service} does not listen on {route.port}; its `expose`: "
                    f"{', '.join(map(str, service.expose))}",
                )
            host = spec.domain(stack_name, route.domain)
            if route.webhook and host is not None:
                for r_host, r_path, r_where in redirects:
                    if r_host == host and _covers(r_path, route.path):
                        yield spec.problem_in_stack(
                            stack_name,
                            ("routes", index),
                            f"webhook route {host}{route.path} is behind the redirect at "
                            f"{r_where}; Stripe treats any 3xx as a failed delivery: serve "
                            "the webhook path directly",
                        )


# An http(s) URL in a healthcheck's argv or shell line (wget/curl http://host:port/path).
_HEALTH_URL = re.compile(r"(https?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?")
# A healthcheck runs inside the service's own container: these names reach the service.
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "0.0.0.0"})  # noqa: S104


def _check_healthchecks(spec: Spec) -> Iterator[Problem]:
    """A healthcheck URL must reach a port the service listens on (its ``expose``), at the
    container's own address; otherwise the health gate fails only after minutes of apply.
    Checked only where the service declares ``expose``, as routes are."""
    for stack_name, stack in spec.stacks.items():
        for service_name, service in stack.services.items():
            if not service.expose:
                continue
            listens = ", ".join(map(str, service.expose))
            own = {service_name, network_alias(stack_name, service_name)}
            for index, part in enumerate(service.healthcheck.test[1:], start=1):
                for match in _HEALTH_URL.finditer(part):
                    scheme, host, port_text = match.groups()
                    port = int(port_text) if port_text else (443 if scheme == "https" else 80)
                    loc = ("services", service_name, "healthcheck", "test", index)
                    if host.lower() not in _LOCAL_HOSTS and host not in own:
                        yield spec.problem_in_stack(
                            stack_name,
                            loc,
                            f"healthcheck URL goes to host '{host}': a healthcheck runs inside "
                            f"the {service_name} container, so it reaches the service at "
                            f"127.0.0.1 or localhost (e.g. {scheme}://127.0.0.1:"
                            f"{service.expose[0]}/)",
                        )
                    elif port not in service.expose:
                        yield spec.problem_in_stack(
                            stack_name,
                            loc,
                            f"healthcheck URL port {port}: {service_name} does not listen on "
                            f"{port}; its `expose`: {listens}: check one of those (apply's "
                            "health gate would otherwise wait minutes and fail)",
                        )


def _pg_isready_host(words: list[str]) -> str | None:
    """The host ``pg_isready`` in ``words`` checks (``-h``/``--host``), or None (the socket)."""
    host = None
    for word, following in zip(words, [*words[1:], ""], strict=True):
        if word in ("-h", "--host"):
            host = following
        elif word.startswith("--host="):
            host = word.removeprefix("--host=")
        elif word.startswith("-h") and len(word) > 2:
            host = word[2:]
    return host or None


def _check_postgres_readiness(spec: Spec) -> Iterator[Problem]:
    """A healthcheck's ``pg_isready`` must ask over TCP: over the Unix socket it also answers
    the postgres image's temporary first-init server (``listen_addresses=''``), so whatever
    depends on the database would start before it exists (a fresh box: the first deploy, a
    rebuild). An error, not a warning: ``-h 127.0.0.1`` costs nothing and nothing needs the
    socket-only answer."""
    for stack_name, stack in spec.stacks.items():
        for service_name, service in stack.services.items():
            test = service.healthcheck.test
            for index, part in enumerate(test[1:], start=1):
                if "pg_isready" not in part:
                    continue
                try:
                    words = shlex.split(part) if test[0] == "CMD-SHELL" else test[index:]
                except ValueError:
                    continue
                if "pg_isready" not in words:
                    continue
                host = _pg_isready_host(words[words.index("pg_isready") :])
                if host is None or host.startswith("/"):
                    via = "the Unix socket" if host is None else f"the socket directory {host}"
                    yield spec.problem_in_stack(
                        stack_name,
                        ("services", service_name, "healthcheck", "test", index),
                        f"pg_isready checks {via}: it answers during the postgres image's "
                        "first-init server (listen_addresses=''), before the database is "
                        "ready, so services depending on it start too early; check over TCP "
                        "as the server really serves: `pg_isready -h 127.0.0.1 -U … -d …`",
                    )
                break


def _check_probes(spec: Spec) -> Iterator[Problem]:
    for stack_name, stack in spec.stacks.items():
        names: dict[str, int] = {}
        for index, probe in enumerate(stack.probes):
            if probe.name in names:
                doc = spec.stack_docs[stack_name]
                first, _ = doc.locate(("probes", names[probe.name]))
                yield spec.problem_in_stack(
                    stack_name,
                    ("probes", index, "name"),
                    f"probe '{probe.name}' twice (first at {doc.file}:{first}); give each probe "
                    "of a stack its own name",
                )
            names.setdefault(probe.name, index)
            host = spec.domain(stack_name, probe.domain)
            if host is None:
                continue
            routed = [r for r in stack.routes if r.domain == probe.domain]
            if not any(_covers(r.path, probe.path) for r in routed):
                yield spec.problem_in_stack(
                    stack_name,
                    ("probes", index, "path"),
                    f"no route of this stack serves {host}{probe.path}",
                )
        for index, route in enumerate(stack.routes):
            if route.webhook and not any(
                p.domain == route.domain and p.path.startswith(route.path) and p.method == "POST"
                for p in stack.probes
            ):
                yield spec.problem_in_stack(
                    stack_name,
                    ("routes", index),
                    "a webhook route needs a POST probe (an unsigned POST must reach the app: "
                    "its 400, never a redirect)",
                )


# ── ports, dependencies, files ──────────────────────────────────────────────────────────


def _is_public(address: str) -> bool:
    try:
        return not ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return True


def _check_ports(spec: Spec) -> Iterator[Problem]:
    for stack_name, stack in spec.stacks.items():
        for service_name, service in stack.services.items():
            for index, port in enumerate(service.ports):
                if spec.host.cluster and stack.role != "edge":
                    yield spec.problem_in_stack(
                        stack_name,
                        ("services", service_name, "ports", index),
                        f"publishes {port.published}: on several nodes (host.yaml's `nodes`) "
                        "stacks run as Swarm services, and Swarm binds a published port on "
                        "every address of the node (it has no host_ip): reach it through Caddy "
                        "or over the overlay by name, or run this studio on one box",
                    )
                    continue
                if not _is_public(port.host_ip):
                    continue
                if stack.role == "edge" and port.published in EDGE_PORTS:
                    continue
                yield spec.problem_in_stack(
                    stack_name,
                    ("services", service_name, "ports", index),
                    f"publishes {port.published} on {port.host_ip}: only the edge publishes, "
                    "and only 80/443 (docker-published ports bypass the firewall); reach it "
                    "through Caddy, or bind host_ip: 127.0.0.1",
                )


def _check_names(spec: Spec) -> Iterator[Problem]:
    """Names that must be unique across stacks on the box: the network alias Caddy reaches a
    service by, and the container compose names after the project and the service."""
    aliases: dict[str, tuple[str, str]] = {}
    containers: dict[str, tuple[str, str]] = {}
    for stack_name, stack in spec.stacks.items():
        for service_name in stack.services:
            here = (stack_name, service_name)
            for table, name, what in (
                (aliases, network_alias(stack_name, service_name), "network alias"),
                (containers, f"{stack_name}-{service_name}-1", "container name"),
            ):
                first = table.setdefault(name, here)
                if first != here:
                    yield spec.problem_in_stack(
                        stack_name,
                        ("services", service_name),
                        f"its {what} {name} is also the one of service {first[1]} of stack "
                        f"{first[0]}: rename one of the stacks or services",
                    )


def _check_depends_on(spec: Spec) -> Iterator[Problem]:
    for stack_name, stack in spec.stacks.items():
        for service_name, service in stack.services.items():
            for index, dep in enumerate(service.depends_on):
                if dep == service_name:
                    yield spec.problem_in_stack(
                        stack_name,
                        ("services", service_name, "depends_on", index),
                        "a service cannot depend on itself",
                    )
                elif dep not in stack.services:
                    yield spec.problem_in_stack(
                        stack_name,
                        ("services", service_name, "depends_on", index),
                        f"no service '{dep}' in this stack; services: "
                        f"{', '.join(stack.services)}{_suggest(dep, list(stack.services))}",
                    )
        cycle = _cycle(
            {
                n: [d for d in s.depends_on if d in stack.services and d != n]
                for n, s in stack.services.items()
            }
        )
        if cycle:
            yield spec.problem_in_stack(
                stack_name,
                ("services", cycle[0], "depends_on"),
                f"dependency cycle: {' → '.join(cycle)}",
            )


def _cycle(graph: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (found := visit(node)):
            return found
    return None


def _check_mounts_and_configs(spec: Spec) -> Iterator[Problem]:
    for stack_name, stack in spec.stacks.items():
        for name, config in stack.configs.items():
            if stack.role == "edge" and name == "Caddyfile":
                yield spec.problem_in_stack(
                    stack_name,
                    ("configs", name),
                    "the edge's Caddyfile is rendered from every stack's routes; do not ship one",
                )
                continue
            if stack.role == "edge" and _under(name, "caddy"):
                yield spec.problem_in_stack(
                    stack_name,
                    ("configs", name),
                    "the edge's caddy/ directory holds the Caddyfile rendered from every "
                    "stack's routes; ship other files elsewhere",
                )
                continue
            _, problem = spec.config_source(stack_name, config.source)
            if problem is not None:
                yield spec.problem_in_stack(stack_name, ("configs", name, "source"), problem)
        names = sorted(stack.configs)
        for name in names:
            # a file cannot also be a directory of other files on the box
            for other in names:
                if other != name and _under(other, name):
                    yield spec.problem_in_stack(
                        stack_name,
                        ("configs", other),
                        f"'{other}' lies under '{name}', which is a file of its own; give "
                        "files and directories different names",
                    )
        for service_name, service in stack.services.items():
            for index, mount in enumerate(service.volumes):
                if not isinstance(mount, ConfigMount):
                    continue
                if stack.role == "edge" and mount.config == "caddy":
                    continue  # the rendered Caddyfile's directory
                if any(_under(name, mount.config) for name in stack.configs):
                    continue
                yield spec.problem_in_stack(
                    stack_name,
                    ("services", service_name, "volumes", index, "config"),
                    f"'{mount.config}' is neither a file nor a directory of this stack's "
                    f"configs: {', '.join(stack.configs) or '(none)'}",
                )


def _under(name: str, directory: str) -> bool:
    """Whether config ``name`` is ``directory`` itself or lies below it."""
    return name == directory or name.startswith(directory + "/")


def _check_backups(spec: Spec) -> Iterator[Problem]:
    for stack_name, stack in spec.stacks.items():
        volumes = stack.volumes()
        for index, backup in enumerate(stack.backups):
            if isinstance(backup, VolumeBackup):
                if backup.volume not in volumes:
                    yield spec.problem_in_stack(
                        stack_name,
                        ("backups", index, "volume"),
                        f"no volume '{backup.volume}' is mounted by this stack; volumes: "
                        f"{', '.join(volumes) or '(none)'}",
                    )
                continue
            if backup.service not in stack.services:
                yield spec.problem_in_stack(
                    stack_name,
                    ("backups", index, "service"),
                    f"no service '{backup.service}' in this stack; services: "
                    f"{', '.join(stack.services)}",
                )
                continue
            service = stack.services[backup.service]
            if isinstance(backup, MysqlBackup):
                if backup.password_secret not in stack.secrets:
                    yield spec.problem_in_stack(
                        stack_name,
                        ("backups", index, "password_secret"),
                        f"secret {backup.password_secret} is not declared in this stack's "
                        f"`secrets`; declared: {', '.join(stack.secrets) or '(none)'}",
                    )
                elif backup.password_secret not in service.secrets.values():
                    yield spec.problem_in_stack(
                        stack_name,
                        ("backups", index, "password_secret"),
                        f"service {backup.service} does not get {backup.password_secret} in its "
                        "`secrets`: mysqldump runs in the container and reads the password from "
                        "its environment (e.g. `MYSQL_ROOT_PASSWORD: "
                        f"{backup.password_secret}`)",
                    )
            inside = {"sqlite": "path", "clickhouse": "dir"}.get(backup.kind)
            if inside is not None:
                path = getattr(backup, inside)
                held = volume_holding(service.volumes, path)
                if held is not None and inside == "path" and not held[1]:
                    yield spec.problem_in_stack(
                        stack_name,
                        ("backups", index, inside),
                        f"{path} is the root of volume {held[0].volume}, not a database file "
                        f"in it; name the file, e.g. {path.rstrip('/')}/app.db",
                    )
                if held is None:
                    mounted = [
                        f"{m.target} ({m.volume})"
                        for m in service.volumes
                        if isinstance(m, VolumeMount)
                    ]
                    yield spec.problem_in_stack(
                        stack_name,
                        ("backups", index, inside),
                        f"{path} is on no named volume of service {backup.service}, so the "
                        "backup could not reach it from the host; volumes mounted: "
                        f"{', '.join(mounted) or '(none)'}",
                    )


def _check_edge(spec: Spec) -> Iterator[Problem]:
    edges = [name for name, stack in spec.stacks.items() if stack.role == "edge"]
    routed = [name for name, stack in spec.stacks.items() if stack.routes or stack.redirects]
    if routed and len(edges) != 1:
        yield spec.problem_in_host(
            ("stacks",),
            f"stacks {', '.join(routed)} have routes, so exactly one stack with role: edge "
            f"(Caddy) must run here; found {len(edges)}: {', '.join(edges) or '(none)'}",
        )
    for name in edges:
        stack = spec.stacks[name]
        mounts = [
            m
            for s in stack.services.values()
            for m in s.volumes
            if isinstance(m, ConfigMount) and m.config == "caddy"
        ]
        if not mounts:
            yield spec.problem_in_stack(
                name,
                ("services",),
                "the edge must mount the rendered Caddyfile's directory: "
                "`volumes: [{config: caddy, target: /etc/caddy}]`",
            )
        data = [
            m
            for s in stack.services.values()
            for m in s.volumes
            if isinstance(m, VolumeMount) and m.target == "/data"
        ]
        if not data:
            yield spec.problem_in_stack(
                name,
                ("services",),
                "the edge needs a named volume at /data: it holds the certificates and the "
                "ACME account, which a rebuild must restore",
            )


def _check_firewall(spec: Spec) -> Iterator[Problem]:
    host = spec.host
    ssh_port, whose = host.ssh_port, ""
    if host.nodes is not None and host.edge_node is not None:
        # open_ports are the edge node's; the others open their SSH port (and the swarm's
        # ports to each other) only
        ssh_port, whose = host.nodes[host.edge_node].ssh_port, f" of the edge node {host.edge_node}"
    if ssh_port not in host.open_ports:
        yield spec.problem_in_host(
            ("open_ports",),
            f"the SSH port {ssh_port}{whose} is not open: the firewall would lock vpsctl out; "
            f"add {ssh_port}",
        )
    for stack in spec.stacks.values():
        if stack.role != "edge":
            continue  # anything else publishing publicly is an error of its own
        for service in stack.services.values():
            for port in service.ports:
                if _is_public(port.host_ip) and port.published not in host.open_ports:
                    yield spec.problem_in_host(
                        ("open_ports",),
                        f"port {port.published} is published by the edge but not open in "
                        "the firewall",
                    )
    seen: set[int] = set()
    for index, port_number in enumerate(host.open_ports):
        if port_number in seen:
            yield spec.problem_in_host(
                ("open_ports", index), f"port {port_number} is listed twice; list it once"
            )
        seen.add(port_number)


def _check_host_access(spec: Spec) -> Iterator[Problem]:
    host = spec.host
    if host.nodes is None:
        yield from _box_access(spec, (), "the box")
    yield from _check_backup_repository(spec)
    if host.tls == "pebble" and not spec.is_sandbox:
        yield spec.problem_in_host(
            ("tls",),
            "pebble is the sandbox's own ACME CA and serves only sandbox boxes: give "
            "`sandbox: {name: …}`, or tls: acme (Let's Encrypt) or internal for this box",
        )
    if host.tls == "acme" and host.acme_email is None:
        yield spec.problem_in_host(
            ("acme_email",),
            "required with tls: acme: the Let's Encrypt account's address (or tls: internal "
            "for a box without public DNS)",
        )


def _box_access(spec: Spec, where: tuple[str, ...], what: str) -> Iterator[Problem]:
    """``ssh`` xor ``sandbox`` at ``where`` (host.yaml's top, or a node)."""
    box: Host | Node = spec.host
    if where and spec.host.nodes is not None:
        box = spec.host.nodes[where[1]]
    if box.ssh is None and box.sandbox is None:
        yield spec.problem_in_host(
            (*where, "ssh"),
            f"required: how to reach {what} (address, port, user, key), or "
            "`sandbox: {name: …}` for a local sandbox VPS",
        )
    elif box.ssh is not None and box.sandbox is not None:
        yield spec.problem_in_host(
            (*where, "sandbox"),
            "give `ssh` (a real box) or `sandbox` (a local one), not both",
        )


# ── nodes (several boxes, a Docker Swarm) ──────────────────────────────────────────────

SWARM_MANAGER_COUNTS = (1, 3, 5)


def _check_nodes(spec: Spec) -> Iterator[Problem]:
    host = spec.host
    if host.nodes is None:
        if host.memory is None:
            yield spec.problem_in_host(
                ("memory",),
                "required: the RAM the box really has (e.g. 7800m for an 8 GB VPS), or "
                "`nodes:` for several boxes",
            )
        for name, placed in host.stacks.items():
            for field in ("node", "placement"):
                if getattr(placed, field) is not None:
                    yield spec.problem_in_host(
                        ("stacks", name, field),
                        f"`{field}` chooses among several boxes, and this host is one box "
                        "(no `nodes:`): remove it",
                    )
        return
    yield from _check_node_boxes(spec, host.nodes)
    yield from _check_stack_places(spec, host.nodes)


def _check_node_boxes(spec: Spec, nodes: Mapping[str, Node]) -> Iterator[Problem]:
    host = spec.host
    for field in ("ssh", "sandbox", "memory"):
        if getattr(host, field) is not None:
            yield spec.problem_in_host(
                (field,),
                f"with `nodes:`, each node gives its own `{field}`: move it under "
                f"nodes.NAME.{field}",
            )
    if not nodes:
        yield spec.problem_in_host(
            ("nodes",),
            "no nodes: list the boxes (at least one), or drop `nodes:` and give this box's "
            "`ssh` (or `sandbox`) and `memory`",
        )
        return
    for name, node in nodes.items():
        yield from _box_access(spec, ("nodes", name), f"node {name}")
        if node.sandbox is not None and node.address is not None:
            yield spec.problem_in_host(
                ("nodes", name, "address"),
                f"a sandbox box's address comes from its record (`sandbox: {node.sandbox.name}`):"
                " remove `address`",
            )
    kinds = {node.sandbox is not None for node in nodes.values()}
    if len(kinds) > 1:
        yield spec.problem_in_host(
            ("nodes",),
            "mixes sandbox boxes and real ones (`ssh`): a cluster is all sandbox boxes (a "
            "rehearsal) or all real boxes",
        )
    edges = [name for name, node in nodes.items() if node.edge]
    if len(edges) != 1:
        yield spec.problem_in_host(
            ("nodes", edges[1], "edge") if len(edges) > 1 else ("nodes",),
            "exactly one node is the edge (`edge: true`): the public node that runs Caddy "
            f"and takes ports 80/443; found {len(edges)}: {', '.join(edges) or '(none)'}",
        )
    marked = [name for name, node in nodes.items() if node.manager]
    if marked and len(marked) not in SWARM_MANAGER_COUNTS:
        yield spec.problem_in_host(
            ("nodes", marked[-1], "manager"),
            f"{len(marked)} managers ({', '.join(marked)}): Swarm works only while a majority "
            "of its managers is up, so mark 1, 3 or 5 (an even count survives no more losses "
            "than one fewer)",
        )
    seen: dict[tuple[str, str], str] = {}
    for name, node in nodes.items():
        keys: list[tuple[tuple[str, ...], tuple[str, str], str]] = []
        if node.sandbox is not None:
            keys.append((("sandbox", "name"), ("sandbox", node.sandbox.name), "sandbox box"))
        if node.ssh is not None:
            keys.append(
                (("ssh", "address"), ("ssh", f"{node.ssh.address}:{node.ssh.port}"), "SSH address")
            )
        if node.address is not None:
            keys.append((("address",), ("address", node.address), "address"))
        for loc, key, what in keys:
            if key in seen:
                yield spec.problem_in_host(
                    ("nodes", name, *loc),
                    f"the same {what} as node {seen[key]} ({key[1]}): each node is its own box",
                )
            seen.setdefault(key, name)


def _keeps_data(stack: Stack) -> str | None:
    """What data ``stack`` keeps on its node (a named volume, a backup, what its app steps
    set inside it: a first launch claimed once, in-app settings), or ``None``."""
    for service_name, service in stack.services.items():
        for mount in service.volumes:
            if isinstance(mount, VolumeMount):
                return f"volume {mount.volume} of service {service_name}"
    if stack.backups:
        return "backups"
    if stack.first_launch is not None:
        return f"its first launch, claimed once by vpsctl in {stack.first_launch.service}'s data"
    if stack.listmonk is not None:
        return f"listmonk settings, set in {stack.listmonk.service}'s data"
    return None


def _labels(labels: Mapping[str, str]) -> str:
    """``{tier: apps, zone: a}``, as host.yaml writes them."""
    return "{" + ", ".join(f"{key}: {value}" for key, value in labels.items()) + "}"


def _check_stack_places(spec: Spec, nodes: Mapping[str, Node]) -> Iterator[Problem]:
    names = list(nodes)
    labels = "; ".join(f"{name}: {_labels(node.labels)}" for name, node in nodes.items())
    edge = spec.host.edge_node
    for name, placed in spec.host.stacks.items():
        stack = spec.stacks.get(name)
        if stack is None:
            continue  # not loaded: reported where it failed
        loc = ("stacks", name)
        if stack.role == "edge":
            if placed.placement is not None:
                yield spec.problem_in_host(
                    (*loc, "placement"),
                    f"the edge runs on the edge node ({edge or 'none marked'}): remove `placement`",
                )
            if placed.node is not None and placed.node != edge:
                yield spec.problem_in_host(
                    (*loc, "node"),
                    f"the edge runs on the node marked `edge: true` ({edge or 'none marked'}), "
                    f"not {placed.node}: remove `node` (or mark {placed.node} the edge)",
                )
            continue
        if placed.node is None and placed.placement is None:
            yield spec.problem_in_host(
                loc,
                f"where does {name} run? give `node: NAME` (one of {', '.join(names)}) or, "
                "for a stack that keeps no data, `placement: {LABEL: VALUE}`",
            )
            continue
        if placed.node is not None and placed.placement is not None:
            yield spec.problem_in_host((*loc, "placement"), "give `node` or `placement`, not both")
            continue
        if placed.node is not None:
            if placed.node not in nodes:
                yield spec.problem_in_host(
                    (*loc, "node"),
                    f"unknown node '{placed.node}'{_suggest(placed.node, names)}; nodes: "
                    f"{', '.join(names)}",
                )
            continue
        data = _keeps_data(stack)
        if data is not None:
            yield spec.problem_in_host(
                (*loc, "placement"),
                f"{name} keeps data ({data}), and a volume lives on one node: Swarm could "
                f"start {name} on another node, away from it; pin it with `node: NAME` (one "
                f"of {', '.join(names)})",
            )
        elif not spec.nodes_of(name):
            yield spec.problem_in_host(
                (*loc, "placement"),
                f"no node has all the labels {_labels(placed.placement or {})}: Swarm would never "
                f"start "
                f"{name}; nodes' labels: {labels}",
            )


def _check_backup_repository(spec: Spec) -> Iterator[Problem]:
    backup = spec.host.backup
    if backup is None or not isinstance(backup.repository, SftpRepository):
        return
    repo = backup.repository
    loc = ("backup", "repository")
    if repo.sandbox is not None:
        for name in ("address", "key", "host_key"):
            if getattr(repo, name) is not None:
                yield spec.problem_in_host(
                    (*loc, name),
                    f"`{name}` comes from the sandbox's record with `sandbox: {repo.sandbox}`; "
                    "give one or the other",
                )
        return
    if repo.address is None:
        yield spec.problem_in_host(
            (*loc, "address"),
            "required: the backup host's address (or `sandbox: NAME` for a local sandbox box)",
        )
    if repo.key is None:
        yield spec.problem_in_host(
            (*loc, "key"),
            "required: a private key file that the box logs in to the backup host with",
        )
    if repo.host_key is None:
        yield spec.problem_in_host(
            (*loc, "host_key"),
            "required: the backup host's SSH host key (`ssh-keyscan -t ed25519 HOST`, checked "
            "by hand), so that the box never sends backups to an impostor",
        )


_URL_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _check_secrets_in_urls(spec: Spec) -> Iterator[Problem]:
    """A secret spliced into a URL (a database password) must need no percent-encoding."""
    for stack_name, stack in spec.stacks.items():
        doc = spec.stack_docs[stack_name]
        for service_name, service in stack.services.items():
            for key, value in service.env.items():
                if "://" not in value:
                    continue
                for match in SECRET_REF.finditer(value):
                    entry = spec.secrets_file.entries.get(match.group(1))
                    if entry is None or entry.value is None:
                        continue
                    if not set(entry.value.reveal()) <= _URL_SAFE:
                        line, _ = doc.locate(("services", service_name, "env", key))
                        yield Problem(
                            spec.secrets_file.file,
                            entry.line,
                            entry.name,
                            f"is spliced into a URL ({doc.file}:{line}) but holds characters "
                            "that URLs must percent-encode; use only letters, digits and - . _ ~",
                        )


def _check_env_file_safe(spec: Spec) -> Iterator[Problem]:
    """Values travel in single-quoted env-file lines: what such a line cannot carry is
    refused here (see :func:`envfile.env_value_problem`), never found by compose on the box."""
    for stack_name, stack in spec.stacks.items():
        for service_name, service in stack.services.items():
            for key, value in service.env.items():
                found = env_value_problem(value)
                if found is not None:
                    yield spec.problem_in_stack(
                        stack_name,
                        ("services", service_name, "env", key),
                        found.message(secret=False),
                    )
    for name, (owner, _kind) in spec.required_secrets().items():
        entry = spec.secrets_file.entries.get(name)
        if owner == HOST_OWNER or entry is None or entry.value is None:
            continue  # host.yaml's backup password goes to a file of its own, not an env file
        found = env_value_problem(entry.value.reveal())
        if found is not None:
            yield Problem(spec.secrets_file.file, entry.line, name, found.message(secret=True))


def _check_standin_args(spec: Spec, ref: str, context: Path) -> Iterator[Problem]:
    """The build args of one `images:` entry against what the stand-in's Dockerfile
    declares (``ARG``) and accepts (its own ``case`` check): what the build would refuse
    mid-apply, with a raw build log, is refused here."""
    # here, not at the top: the stand-ins module loads docker and HTTP clients, which a
    # validate of an inventory without `images:` never needs
    from vpsctl.local.standins import PREDEFINED_ARGS, build_args  # noqa: PLC0415

    mapped = spec.host.images[ref]
    declared = build_args(context)
    shown = display_path(context / "Dockerfile")
    for key, value in mapped.args.items():
        arg = declared.get(key)
        if arg is None and key not in PREDEFINED_ARGS:
            takes = ", ".join(declared) or "none"
            yield spec.problem_in_host(
                ("images", ref, "args", key),
                f"stand-in {mapped.standin} takes no build arg {key} ({shown} declares: "
                f"{takes}){_suggest(key, list(declared))}",
            )
        elif arg is not None and arg.values is not None and value not in arg.values:
            yield spec.problem_in_host(
                ("images", ref, "args", key),
                f"'{value}' is not a {key} stand-in {mapped.standin} builds; one of: "
                f"{', '.join(arg.values)} ({shown}){_suggest(value, list(arg.values))}",
            )
    for name, arg in declared.items():
        if arg.required and name not in mapped.args:
            one_of = f" (one of: {', '.join(arg.values)})" if arg.values else ""
            yield spec.problem_in_host(
                ("images", ref, "args"),
                f"stand-in {mapped.standin} needs build arg {name}{one_of}: `args: {{{name}: …}}`",
            )


def _check_images(spec: Spec) -> Iterator[Problem]:
    host = spec.host
    used: dict[str, None] = {}
    for stack in spec.stacks.values():
        for service in stack.services.values():
            used.setdefault(service.image)
    standins_dir = standins_root(spec)
    # A mapping no stack uses is fine (a stack taken off the box for a while); a typo in
    # one shows up as the real image left unmapped, which a sandbox refuses below.
    for ref, mapped in host.images.items():
        if not (standins_dir / mapped.standin / "Dockerfile").is_file():
            yield spec.problem_in_host(
                ("images", ref, "standin"),
                f"no stand-in '{mapped.standin}': {display_path(standins_dir / mapped.standin)}"
                "/Dockerfile does not exist",
            )
            continue
        yield from _check_standin_args(spec, ref, standins_dir / mapped.standin)
    if spec.is_sandbox and host.ssh is None:  # both set is an error of its own
        for ref in used:
            if ref not in host.images:
                yield spec.problem_in_host(
                    ("images",),
                    f"a sandbox cannot pull from a registry: map image {ref} to a stand-in "
                    "(images: {REF: {standin: NAME}})",
                )


# ── apps vpsctl talks to (first-launch claims, in-app settings) ────────────────────────

PLAUSIBLE_MIN_PASSWORD = 12  # Plausible's registration refuses shorter passwords
# what Ghost's own connection settings must say for vpsctl to read its integrations table
GHOST_DB_ENV = ("database__connection__host", "database__connection__user",
                "database__connection__database")  # fmt: skip


def _check_apps(spec: Spec) -> Iterator[Problem]:
    for stack_name, stack in spec.stacks.items():
        if stack.first_launch is not None:
            yield from _check_first_launch(spec, stack_name, stack, stack.first_launch)
        if stack.listmonk is not None:
            yield from _check_listmonk(spec, stack_name, stack, stack.listmonk)
        if stack.ghost_content is not None and (
            stack.first_launch is None or stack.first_launch.app != "ghost"
        ):
            yield spec.problem_in_stack(
                stack_name,
                ("ghost_content",),
                "the Content API key the audit reads is derived by vpsctl's claim of Ghost's "
                "first launch: add `first_launch: {app: ghost, service: SERVICE, owner_name: "
                "…, owner_email: …, password_secret: SECRET}` to this stack",
            )


def _app_service(
    spec: Spec, stack_name: str, stack: Stack, loc: tuple[str, ...], service: str
) -> Iterator[Problem]:
    if service not in stack.services:
        yield spec.problem_in_stack(
            stack_name,
            loc,
            f"no service '{service}' in this stack; services: {', '.join(stack.services)}"
            f"{_suggest(service, list(stack.services))}",
        )


def _password_secret(
    spec: Spec, stack_name: str, stack: Stack, loc: tuple[str, ...], *, name: str, minimum: int
) -> Iterator[Problem]:
    kind = stack.secrets.get(name)
    if kind is None:
        yield spec.problem_in_stack(
            stack_name,
            loc,
            f"secret {name} is not declared in this stack's `secrets`; declare it as "
            f"`{name}: {{kind: password, min_length: {max(minimum, 24)}}}` (`vpsctl secrets "
            f"generate -i {spec.inventory}` creates it); declared: "
            f"{', '.join(stack.secrets) or '(none)'}",
        )
    elif not isinstance(kind, Password):
        yield spec.problem_in_stack(
            stack_name,
            loc,
            f"secret {name} is of kind {kind.kind}; an owner's password must be "
            f"`kind: password` (min_length at least {minimum}), so that `vpsctl secrets "
            f"generate -i {spec.inventory}` can create it",
        )
    elif kind.min_length < minimum:
        yield spec.problem_in_stack(
            stack_name,
            ("secrets", name, "min_length"),
            f"{kind.min_length} is too short for {loc[0]}.{loc[-1]}: the app refuses "
            f"passwords under {minimum} characters; use min_length {minimum} or more",
        )


def _check_first_launch(
    spec: Spec, stack_name: str, stack: Stack, first: FirstLaunch
) -> Iterator[Problem]:
    yield from _app_service(spec, stack_name, stack, ("first_launch", "service"), first.service)
    minimum = PLAUSIBLE_MIN_PASSWORD if first.app == "plausible" else 10
    loc = ("first_launch", "password_secret")
    yield from _password_secret(
        spec, stack_name, stack, loc, name=first.password_secret, minimum=minimum
    )
    if first.app != "ghost" or first.service not in stack.services:
        return
    service = stack.services[first.service]
    # a rebuild reads the restored integration's key from Ghost's own database (a staff
    # login from a new device would need the code Ghost mails): its connection must be known
    missing = [key for key in GHOST_DB_ENV if key not in service.env]
    if service.env.get("database__client") != "mysql":
        missing.insert(0, "database__client: mysql")
    if "database__connection__password" not in service.secrets:
        missing.append("secrets: database__connection__password")
    host = service.env.get("database__connection__host")
    if missing:
        yield spec.problem_in_stack(
            stack_name,
            ("services", first.service, "env"),
            f"first_launch (app ghost) reads Ghost's Content API key from its MySQL "
            f"database with Ghost's own connection settings; missing: {', '.join(missing)}",
        )
    elif host not in stack.services:
        yield spec.problem_in_stack(
            stack_name,
            ("services", first.service, "env", "database__connection__host"),
            f"'{host}' is not a service of this stack: first_launch (app ghost) reads "
            f"Ghost's database through it; services: {', '.join(stack.services)}",
        )


def _check_listmonk(
    spec: Spec, stack_name: str, stack: Stack, settings: ListmonkSettings
) -> Iterator[Problem]:
    yield from _app_service(spec, stack_name, stack, ("listmonk", "service"), settings.service)
    service = stack.services.get(settings.service)
    if service is not None and (
        "LISTMONK_ADMIN_USER" not in service.env or "LISTMONK_ADMIN_PASSWORD" not in service.secrets
    ):
        yield spec.problem_in_stack(
            stack_name,
            ("listmonk", "service"),
            f"service {settings.service} needs LISTMONK_ADMIN_USER in `env` and "
            "LISTMONK_ADMIN_PASSWORD in `secrets`: vpsctl signs in to listmonk as that admin "
            "to set its settings (and without them whoever reaches /admin first owns it)",
        )
    domains = spec.host.stacks[stack_name].domains
    loc = ("listmonk", "root_url")
    for match in DOMAIN_REF.finditer(settings.root_url):
        if match.group(1) not in domains:
            yield spec.problem_in_stack(
                stack_name, loc, _undefined_domain(spec, stack_name, match.group(1))
            )
            return
    url = spec.resolve(stack_name, settings.root_url)
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0]
    if scheme not in ("http", "https") or not host or any(c.isspace() for c in url):
        yield spec.problem_in_stack(
            stack_name,
            loc,
            "must be an http(s) URL with a host, e.g. `https://{domain.site}`: every link "
            "in every e-mail starts with it",
        )
    elif url.endswith("/"):
        yield spec.problem_in_stack(
            stack_name, loc, "no trailing '/': listmonk strips it, and the plan would never settle"
        )
    if "{secret." in settings.root_url:
        yield spec.problem_in_stack(stack_name, loc, "a URL is shown in plans: no {secret.…}")
    smtp_loc = ("listmonk", "smtp", "password_secret")
    name = settings.smtp.password_secret
    if name not in stack.secrets:
        yield spec.problem_in_stack(
            stack_name,
            smtp_loc,
            f"secret {name} is not declared in this stack's `secrets` (with its kind, e.g. "
            f"`kind: password, external: true, obtain: …`); declared: "
            f"{', '.join(stack.secrets) or '(none)'}",
        )
