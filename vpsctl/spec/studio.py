"""The loaded studio: one environment's host, its stacks and their secrets, validated."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpsctl.errors import Problem
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
DOMAIN_REF = re.compile(r"\{domain\.([a-z][a-z0-9_]*)\}")
SECRET_REF = re.compile(r"\{secret\.([A-Z][A-Z0-9_]*)\}")


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

    @property
    def is_sandbox(self) -> bool:
        """Whether this environment is a local sandbox VPS."""
        return self.host.sandbox is not None

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
