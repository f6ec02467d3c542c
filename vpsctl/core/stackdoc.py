"""The document ``docker stack deploy -c -`` is given for a stack of a cluster, built from
the stack's files as its node holds them (``compose.yaml`` and ``env/*.env``). Pure.

A stack's files live on its own node (planned, diffed and rolled back there as on one box);
the deploy runs on a manager, which holds none of them. So the document travels on the
deploy's stdin, never written on the manager, and carries what the docker CLI would read
from beside a compose file: the env files' values inlined as ``environment`` (every ``$``
doubled: the CLI interpolates the document, never an env file), bind mounts made absolute.

Each service's containers are labelled with a hash of the service's whole definition
(:data:`LABEL_DEPLOYED`): the health gate then waits for THE containers of this deploy, not
for the previous task Swarm has not yet replaced. ``depends_on`` (ignored by Swarm) orders
the deploy in waves instead: a service is deployed once every service it depends on is
healthy, as compose's ``condition: service_healthy`` does on one box.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML

from vpsctl.core.render import parse_env_file, stack_dir

LABEL_DEPLOYED = "dev.vpsctl.deployed"  # hash of the service's definition as deployed


class DocumentError(ValueError):
    """The stack's files on its node cannot make a deploy document."""


SECRET_FILES = "x-vpsctl-secret-files"  # noqa: S105 - a key of the compose file, no value
SECRETS_DIR = "/run/secrets"  # where Swarm puts a service's secrets


@dataclass(frozen=True)
class Deploy:
    """A stack's deploy: the documents of its waves (the last one holds every service),
    the hash each service's containers will be labelled with, and the Swarm secrets the
    documents name (name → value: created on the manager before the deploy, on stdin)."""

    waves: tuple[tuple[str, ...], ...]
    documents: tuple[str, ...]
    hashes: dict[str, str]
    secrets: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # the secrets' values never reach a log or a traceback
        return f"Deploy(waves={self.waves!r}, secrets={sorted(self.secrets)!r})"


def secret_name(stack: str, service: str, var: str, value: str) -> str:
    """The Swarm secret holding ``value`` for ``var`` of ``stack``/``service``: named by a
    digest of its value (a secret is immutable in Swarm: a new value is a new secret, and
    an unchanged one deploys nothing new). Within Swarm's 64 characters."""
    digest = hashlib.sha256(value.encode()).hexdigest()[:12]
    return f"{stack}_{service}_{var}"[: 64 - 13].lower() + f"-{digest}"


def one_box_compose(compose_text: str) -> bool:
    """Whether ``compose_text`` is one box's compose file (``compose.yaml.j2``: a top-level
    ``name``), not a cluster's stack file: what a node holds of a stack moving from one box's
    compose to Swarm until its new files are uploaded (and again after its rollback)."""
    try:
        data = YAML(typ="safe", pure=True).load(compose_text)
    except Exception:  # noqa: BLE001 - not a one-box file either: deploy_document says why
        return False
    return isinstance(data, dict) and "name" in data and "version" not in data


def deploy_document(stack: str, compose_text: str, env_files: Mapping[str, bytes]) -> Deploy:
    """The deploy of ``stack`` from its ``compose.yaml`` text and its env files (by path
    relative to the stack's directory, as ``env_file`` names them)."""
    try:
        data = YAML(typ="safe", pure=True).load(compose_text)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the same answer
        raise DocumentError(
            f"{stack}: its compose.yaml on the node does not parse: {exc}"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise DocumentError(f"{stack}: its compose.yaml on the node has no services")
    services: dict[str, Any] = data["services"]
    secrets: dict[str, str] = {}
    depends: dict[str, list[str]] = {}
    hashes: dict[str, str] = {}
    for name, service in services.items():
        depends[name] = [d for d in service.pop("depends_on", None) or [] if d in services]
        environment: dict[str, str] = {}
        for path in service.pop("env_file", None) or []:
            relative = str(path).removeprefix("./")
            content = env_files.get(relative)
            if content is None:
                raise DocumentError(f"{stack}/{name}: its env file {relative} is not on the node")
            environment |= parse_env_file(content)
        for var in service.pop(SECRET_FILES, None) or []:
            value = environment.pop(var, None)
            if value is None:
                raise DocumentError(f"{stack}/{name}: {var} is not in its env files on the node")
            secret = secret_name(stack, name, var, value)
            secrets[secret] = value
            environment[f"{var}_FILE"] = f"{SECRETS_DIR}/{var}"
            service.setdefault("secrets", []).append({"source": secret, "target": var})
        if environment:
            service["environment"] = {k: v.replace("$", "$$") for k, v in environment.items()}
        service["volumes"] = [_absolute(stack, v) for v in service.get("volumes") or []]
        digest = hashlib.sha256(json.dumps(service, sort_keys=True).encode()).hexdigest()[:16]
        hashes[name] = digest
        labels = service.setdefault("labels", {})
        labels[LABEL_DEPLOYED] = digest
    if secrets:  # made beforehand on the manager: the document names them only
        data["secrets"] = {secret: {"external": True} for secret in sorted(secrets)}
    waves = _waves(stack, depends)
    documents = []
    deployed: list[str] = []
    for wave in waves:
        deployed += wave
        partial = dict(data, services={n: services[n] for n in services if n in deployed})
        documents.append(json.dumps(partial, sort_keys=True))
    return Deploy(tuple(waves), tuple(documents), hashes, secrets)


def _absolute(stack: str, volume: Any) -> Any:
    """A bind mount's ``./config/…`` source made absolute (the deploy reads no directory)."""
    if isinstance(volume, str) and volume.startswith("./"):
        return f"{stack_dir(stack)}/{volume.removeprefix('./')}"
    return volume


def _waves(stack: str, depends: Mapping[str, list[str]]) -> list[tuple[str, ...]]:
    """The services in waves: each after every one it depends on (checks refuse cycles)."""
    placed: list[str] = []
    waves: list[tuple[str, ...]] = []
    while len(placed) < len(depends):
        wave = tuple(n for n in depends if n not in placed and all(d in placed for d in depends[n]))
        if not wave:
            raise DocumentError(f"{stack}: its services depend on each other in a cycle")
        waves.append(wave)
        placed += wave
    return waves
