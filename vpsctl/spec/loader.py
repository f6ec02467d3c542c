"""Load an inventory (host.yaml, the stacks it places, secrets.env) into a validated :class:`Spec`.

Every problem of every file is collected, then raised at once as a
:class:`~vpsctl.errors.SpecError`. Nothing here touches a host.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from vpsctl.errors import Problem, SpecError, display_path
from vpsctl.spec import checks, store
from vpsctl.spec.models import Host, Stack
from vpsctl.spec.pydantic_errors import problems_from
from vpsctl.spec.studio import Spec
from vpsctl.spec.yamlsource import YamlDoc, load_yaml

M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], doc: YamlDoc, problems: list[Problem]) -> M | None:
    if not isinstance(doc.data, dict):
        problems.append(doc.problem((), "the file must be a mapping of keys to values"))
        return None
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        problems.extend(problems_from(exc, doc, model))
        return None


def available_stacks(stacks_dir: Path) -> list[str]:
    """Names of the stack files in ``stacks_dir``."""
    return sorted(p.stem for p in stacks_dir.glob("*.yaml")) if stacks_dir.is_dir() else []


def load_spec(inventory: Path, *, secrets: bool = True) -> Spec:
    """Load and validate ``inventory``; raise :class:`SpecError` with every problem found.

    With ``secrets=False`` only the structure is checked (host.yaml and the stack files):
    what ``secrets generate`` needs to fill a secrets.env that is still incomplete.
    """
    return _load_spec(inventory, secrets, None)


def load_spec_with(inventory: Path, secrets_text: str) -> Spec:
    """:func:`load_spec` with ``secrets_text`` standing in for the secrets store's content:
    an edit, validated before it is saved."""
    return _load_spec(inventory, True, secrets_text)


def _load_spec(inventory: Path, secrets: bool, secrets_text: str | None) -> Spec:
    problems: list[Problem] = []
    inventory = Path(inventory)
    if not inventory.is_dir():
        raise SpecError([Problem(display_path(inventory), 0, "", "no such inventory directory")])
    # secrets first (secrets.env, or secrets.env.age decrypted in memory), their values
    # registered for masking before any other file is read: a problem of a stack or host
    # file (a secret pasted where a name belongs), or any later failure, cannot print one
    secrets_file, secrets_found = store.read(inventory, secrets_text)

    host_path = inventory / "host.yaml"
    host_doc, found = load_yaml(host_path)
    problems.extend(found)
    host = _validate(Host, host_doc, problems) if host_doc is not None else None

    problems.extend(secrets_found)
    if secrets:
        problems.extend(checks.secrets_file_problems(secrets_file))
    else:
        # ...except a line python-dotenv cannot read: the keys it swallowed would look
        # missing, and `secrets generate` would append them a second time
        problems = [
            p for p in problems if p.file != secrets_file.file or p.line in secrets_file.broken
        ]

    if host is None or host_doc is None:
        raise SpecError(problems)

    stacks_dir = (host_path.parent / host.stacks_dir).resolve()
    if not stacks_dir.is_dir():
        problems.append(
            host_doc.problem(
                ("stacks_dir",),
                f"no such directory: {display_path(stacks_dir)} (relative to this file; the "
                "default ../../stacks suits inventory/<env>/host.yaml)",
            )
        )
        raise SpecError(problems)
    known = available_stacks(stacks_dir)
    stacks: dict[str, Stack] = {}
    docs: dict[str, YamlDoc] = {}
    files: dict[str, Path] = {}
    for name in host.stacks:
        path = stacks_dir / f"{name}.yaml"
        if name not in known:
            problems.append(
                host_doc.problem(
                    ("stacks", name),
                    f"unknown stack: no {display_path(path)}; known stacks: "
                    f"{', '.join(known) or '(none)'}",
                )
            )
            continue
        doc, found = load_yaml(path)
        problems.extend(found)
        if doc is None:
            continue
        stack = _validate(Stack, doc, problems)
        if stack is not None:
            stacks[name], docs[name], files[name] = stack, doc, path

    if len(stacks) != len(host.stacks):
        raise SpecError(problems)
    spec = Spec(inventory, host, host_doc, stacks, docs, files, secrets_file)
    if secrets:
        problems.extend(checks.check(spec))
    if problems:
        raise SpecError(problems)
    spec.warnings = checks.warnings(spec, {n: stacks_dir / f"{n}.yaml" for n in known})
    return spec
