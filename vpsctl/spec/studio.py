"""The loaded studio: one environment's host, its stacks and their secrets, validated."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from vpsctl.errors import Problem, display_path
from vpsctl.spec.envfile import SecretsFile
from vpsctl.spec.models import Host, Service, Stack
from vpsctl.spec.secrets import Password, Secret, SecretKind
from vpsctl.spec.yamlsource import YamlDoc

HOST_OWNER = "host.yaml"  # the owner of secrets that host.yaml, not a stack, declares
RESTIC_PASSWORD_KIND = Password(
    kind="password",
    min_length=32,
    description="the restic repository password: keep a copy outside the box",
)
# A PEM or OpenSSH private key anywhere in a file: never a config file's content.
PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
DOMAIN_REF = re.compile(r"\{domain\.([a-z][a-z0-9_]*)\}")
SECRET_REF = re.compile(r"\{secret\.([A-Z][A-Z0-9_]*)\}")


ALIAS_SEPARATOR = "--"  # no stack or service name may contain it (models.StackName)


def network_alias(stack: str, service: str) -> str:
    """The name Caddy reaches ``service`` of ``stack`` by on the shared edge network.

    Names never contain ``--`` nor end in ``-``, so the join is unambiguous: ``shop`` +
    ``api-web`` and ``shop-api`` + ``web`` give ``shop--api-web`` and ``shop-api--web``.
    """
    return f"{stack}{ALIAS_SEPARATOR}{service}"


@dataclass
class Spec:
    """The whole studio as one environment sees it: the host, its stacks, their secrets."""

    inventory: Path
    host: Host
    host_doc: YamlDoc
    stacks: dict[str, Stack]
    stack_docs: dict[str, YamlDoc]
    stack_files: dict[str, Path]
    secrets_file: SecretsFile
    # what is valid but most likely not what the operator meant (a stack file no host.yaml
    # places, a secret no stack declares): printed as `warning: file:line: …`, exit code
    # unchanged (see vpsctl.spec.checks.warnings)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def is_sandbox(self) -> bool:
        """Whether this environment is a local sandbox VPS."""
        nodes = self.host.nodes
        if nodes:  # checks refuse a cluster mixing sandbox and real boxes
            return all(node.sandbox is not None for node in nodes.values())
        return self.host.sandbox is not None

    def nodes_of(self, stack: str) -> list[str]:
        """The nodes ``stack`` may run on: its ``node``, the nodes its ``placement`` labels
        match, the edge node for the edge; ``[]`` on one box."""
        nodes = self.host.nodes
        placed = self.host.stacks.get(stack)
        if nodes is None or placed is None:
            return []
        if self.stacks.get(stack) is not None and self.stacks[stack].role == "edge":
            where = placed.node or self.host.edge_node
            return [where] if where is not None else []
        if placed.node is not None:
            return [placed.node] if placed.node in nodes else []
        if placed.placement is not None:
            want = placed.placement.items()
            return [name for name, node in nodes.items() if want <= node.labels.items()]
        return []

    def secret(self, name: str) -> Secret | None:
        """The value of ``name`` in secrets.env, or ``None`` when missing or bare."""
        entry = self.secrets_file.entries.get(name)
        return entry.value if entry is not None else None

    def required_secrets(self) -> dict[str, tuple[str, SecretKind]]:
        """Every secret the placed stacks declare: name → (first declaring stack, kind); the
        backup repository's password is declared by host.yaml (owner :data:`HOST_OWNER`)."""
        out: dict[str, tuple[str, SecretKind]] = {}
        for stack_name, stack in self.stacks.items():
            for name, kind in stack.secrets.items():
                out.setdefault(name, (stack_name, kind))
        if self.host.backup is not None:
            out.setdefault(self.host.backup.password_secret, (HOST_OWNER, RESTIC_PASSWORD_KIND))
        return out

    def declared_at(self, name: str, owner: str) -> str:
        """``file:line`` where ``owner`` (a stack, or host.yaml) declares secret ``name``."""
        if owner == HOST_OWNER:
            line, _ = self.host_doc.locate(("backup", "password_secret"))
            return f"{self.host_doc.file}:{line}"
        line, _ = self.stack_docs[owner].locate(("secrets", name))
        return f"{self.stack_docs[owner].file}:{line}"

    def domain(self, stack: str, key: str) -> str | None:
        """The host name behind ``key`` for ``stack`` in this environment."""
        placed = self.host.stacks.get(stack)
        return placed.domains.get(key) if placed is not None else None

    def resolve(self, stack: str, text: str) -> str:
        """``text`` with every ``{domain.KEY}`` replaced (checks guarantee the keys exist)."""
        return DOMAIN_REF.sub(lambda m: self.domain(stack, m.group(1)) or m.group(0), text)

    def environment(self, stack: str, service: str) -> dict[str, str | Secret]:
        """The variables vpsctl gives the service: resolved config and secret values."""
        svc: Service = self.stacks[stack].services[service]
        env: dict[str, str | Secret] = {}
        for var, name in svc.secrets.items():
            secret = self.secret(name)
            if secret is not None:
                env[var] = secret
        for key, value in svc.env.items():
            text = self.resolve(stack, value)
            if SECRET_REF.search(text):
                # A value built from a secret (a database URL) is a secret as a whole.
                env[key] = Secret(SECRET_REF.sub(lambda m: self._reveal(m.group(1)), text))
            else:
                env[key] = text
        return env

    def _reveal(self, name: str) -> str:
        value = self.secret(name)
        return value.reveal() if value is not None else ""

    def problem_in_stack(self, stack: str, loc: tuple[Any, ...], message: str) -> Problem:
        """A problem at ``loc`` of the stack's file."""
        return self.stack_docs[stack].problem(loc, message)

    def problem_in_host(self, loc: tuple[Any, ...], message: str) -> Problem:
        """A problem at ``loc`` of host.yaml."""
        return self.host_doc.problem(loc, message)

    def secret_values(self) -> list[str]:
        """Every secret value of secrets.env, longest first (for redacting output)."""
        values = {
            e.value.reveal()
            for e in self.secrets_file.entries.values()
            if e.value is not None and e.value.reveal()
        }
        return sorted(values, key=len, reverse=True)

    def files_root(self, stack: str) -> Path:
        """The stack's own files directory (``stacks/files/<stack>/``): config sources live
        there and nowhere else."""
        return self.stack_files[stack].parent / "files" / stack

    def config_source(self, stack: str, source: str) -> tuple[Path, str | None]:
        """The file behind a config's ``source`` (symlinks followed), and why it may not be
        shipped (``None`` when it may).

        A config file is rendered 0644 on the box and shown in plans: it must lie in the
        stack's own files directory, never under the inventory (secrets.env, host.yaml's
        keys), never be a private key, and never hold a value of secrets.env.
        """
        root = self.files_root(stack).resolve()
        path = (self.stack_files[stack].parent / source).resolve()
        shown = display_path(path)
        if not (path == root or root in path.parents):
            return path, (
                f"{source} is {shown}, outside this stack's files directory "
                f"{display_path(root)}/: config sources must lie there (write "
                f"files/{stack}/NAME and put the file in {display_path(root)}/)"
            )
        inventory = self.inventory.resolve()
        # the inventory of this environment, and `inventory/` holding every environment's
        fenced = [inventory] + ([inventory.parent] if inventory.parent.name == "inventory" else [])
        if any(path.is_relative_to(place) for place in fenced):
            return path, f"{source} is {shown}, inside the inventory: never a config source"
        if not path.is_file():
            return path, f"no such file: {shown} (sources are relative to the stack file)"
        if path.name.startswith("secrets.env"):
            return path, f"{source} is a secrets file ({path.name}): never a config source"
        if path in self._key_files:
            return path, f"{source} is a private key file named in host.yaml"
        try:
            content = path.read_bytes()
        except OSError as exc:
            return path, f"cannot read {shown}: {exc.strerror}"
        if PRIVATE_KEY.search(content):
            return path, (
                f"{shown} holds a private key; config files are 0644 on the box and shown "
                "in plans: never ship a key as a config"
            )
        text = content.decode(errors="replace")
        for name, secret in self._long_secrets:
            if secret.reveal() in text:
                return path, (
                    f"{shown} holds the value of {name} from secrets.env; config files are "
                    f"0644 on the box and shown in plans: reference the secret from a "
                    "service's `secrets` instead"
                )
        return path, None

    @cached_property
    def _long_secrets(self) -> list[tuple[str, Secret]]:
        """Every secret of secrets.env worth searching a config file for (8 characters or
        more), in file order: sorted out once per spec, not once per config file (71 stacks
        made that a cost of its own). Kept as :class:`Secret`, never as plain text."""
        return [
            (name, entry.value)
            for name, entry in self.secrets_file.entries.items()
            if entry.value is not None and len(entry.value.reveal()) >= 8
        ]

    @cached_property
    def _key_files(self) -> list[Path]:
        """Private key files host.yaml names (the SSH key, the backup host's key): resolved
        once per spec."""
        keys: list[str] = []
        if self.host.ssh is not None:
            keys.append(self.host.ssh.key)
        backup = self.host.backup
        repo_key = getattr(backup.repository, "key", None) if backup is not None else None
        if repo_key:
            keys.append(repo_key)
        # as vpsctl opens them (vpsctl.ops.targets): `~` expanded, relative to the working directory
        return [Path(k).expanduser().resolve() for k in keys]
