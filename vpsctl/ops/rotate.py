"""``vpsctl secrets rotate KEY… | --all`` and ``vpsctl secrets set KEY``: a new value into the
secrets store (plain or sealed, through :mod:`vpsctl.spec.store`'s write), nothing else.

The box learns of it at the next ``plan``/``apply``, which see the box holding an older
value (:func:`vpsctl.core.rotation.pending`) and carry the rotation out: a database password
changed in the running database first, a new restic key before the old one goes, the
dependents recreated. What vpsctl cannot rotate safely (external, data-encrypting, app
passwords, kinds it cannot make) is refused, naming why and what to do instead; a request
with any refused or unknown key writes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from vpsctl.core.rotation import Role, SecretUse, classify
from vpsctl.errors import VpsctlError, register_secrets
from vpsctl.spec import store
from vpsctl.spec.envfile import SecretsFile, parse_secrets
from vpsctl.spec.loader import load_spec
from vpsctl.spec.secrets import SECRET_NAME, fingerprint


class RotateError(VpsctlError):
    """A rotate or set request that cannot be carried out: nothing was written."""


@dataclass(frozen=True)
class Rotated:
    """One key given a new value (fingerprints only)."""

    key: str
    role: Role
    old: str
    new: str
    dependents: tuple[str, ...]
    why: str


@dataclass
class RotateReport:
    """What one ``secrets rotate``/``set`` wrote, and where."""

    file: str
    rotated: list[Rotated] = field(default_factory=list)
    generated: bool = True  # False: `secrets set`, the value the operator gave


def _valid_list(uses: dict[str, SecretUse]) -> str:
    names = [n for n, u in uses.items() if u.rotatable]
    return ", ".join(names) if names else "(none)"


def _requested(uses: dict[str, SecretUse], keys: list[str], every: bool) -> list[SecretUse]:
    """The uses of ``keys`` (every rotatable one with ``every``); :class:`RotateError`
    naming every unknown or refused key, and what is valid, when any is."""
    if every and keys:
        raise RotateError("secrets rotate: give KEY… or --all, not both")
    if every:
        return [u for u in uses.values() if u.rotatable]
    if not keys:
        raise RotateError(
            f"secrets rotate: which KEY? (or --all); rotatable here: {_valid_list(uses)}"
        )
    problems: list[str] = []
    chosen: list[SecretUse] = []
    for key in dict.fromkeys(keys):
        use = uses.get(key)
        if use is None:
            problems.append(f"{_shown(key)}: no placed stack (nor host.yaml's backup) uses it")
        elif not use.rotatable:
            problems.append(f"{key}: refused ({use.role}): {use.why}")
        else:
            chosen.append(use)
    if problems:
        raise RotateError(
            "secrets rotate: nothing changed:\n  "
            + "\n  ".join(problems)
            + f"\nrotatable here: {_valid_list(uses)}"
        )
    return chosen


def _shown(key: str) -> str:
    """A key as an error names it: a key-like name as it is, anything else by its length
    (a value pasted where a name belongs is never echoed)."""
    if len(key) <= 100 and re.fullmatch(SECRET_NAME, key):
        return key
    return f"a key of {len(key)} characters that is no secret's name"


def _replace(text: str, existing: SecretsFile, values: dict[str, str]) -> str:
    """``text`` with the line of each key of ``values`` holding its new value (a key the
    store lacks is appended)."""
    lines = text.splitlines()
    appended: list[str] = []
    for name, value in values.items():
        entry = existing.entries.get(name)
        if entry is not None:
            lines[entry.line - 1] = f"{name}='{value}'"
        else:
            appended.append(f"{name}='{value}'")
    return "\n".join([*lines, *appended]) + "\n"


def _store_problem(value: str) -> str | None:
    if "'" in value or "\\" in value or any(ord(c) < 32 or c == "\x7f" for c in value):
        return "holds a quote, a backslash or a control character: secrets.env cannot carry it"
    return None


def rotate(inventory: Path, keys: list[str], *, every: bool = False) -> RotateReport:
    """Give each of ``keys`` (or every rotatable secret) a fresh value of its kind, in one
    write of the store. Refused or unknown keys → :class:`RotateError`, nothing written."""
    spec = load_spec(inventory)
    uses = classify(spec)
    chosen = _requested(uses, keys, every)
    kinds = spec.required_secrets()
    where = store.store_of(inventory)
    text = store.read_text(where)
    if text is None:
        raise RotateError(
            f"secrets rotate: {where.shown} does not exist; `vpsctl secrets generate -i "
            f"{inventory}` creates it"
        )
    existing = parse_secrets(text, where.shown)[0]
    values: dict[str, str] = {}
    report = RotateReport(where.shown)
    for use in chosen:
        old = spec.secret(use.name)
        kind = kinds[use.name][1]
        new = kind.generate(spec.is_sandbox)
        if old is None or new is None:  # validation guarantees a value; generate() a kind
            raise RotateError(f"secrets rotate: {use.name} cannot be rotated; nothing changed")
        register_secrets([new])
        values[use.name] = new
        report.rotated.append(
            Rotated(
                use.name,
                use.role,
                old.fingerprint,
                fingerprint(new),
                use.dependents,
                use.why,
            )
        )
    if values:
        store.write_text(where, _replace(text, existing, values))
    return report


def set_secret(inventory: Path, key: str, value: str) -> RotateReport:
    """Write ``value`` (read from stdin by the CLI, never argv) as ``key``'s, after checking
    it against the key's kind. Any secret the spec declares may be set, refused kinds
    included: this is how an externally issued or app-side changed value comes in."""
    value = value.removesuffix("\n").removesuffix("\r")
    spec = load_spec(inventory, secrets=False)
    uses = classify(spec)
    kinds = spec.required_secrets()
    if key not in kinds:
        raise RotateError(
            f"secrets set: {_shown(key)}: no placed stack (nor host.yaml's backup) declares it; "
            f"declared here: {', '.join(kinds) or '(none)'}"
        )
    register_secrets([value])
    kind = kinds[key][1]
    problem = kind.check(value) if value else "the value is empty"
    if problem is None:
        problem = _store_problem(value)
    if problem is not None:
        raise RotateError(f"secrets set: {key}: {problem}; nothing changed")
    where = store.store_of(inventory)
    text = store.read_text(where) or ""
    existing = parse_secrets(text, where.shown)[0]
    entry = existing.entries.get(key)
    old = entry.value.fingerprint if entry is not None and entry.value is not None else "(none)"
    report = RotateReport(where.shown, generated=False)
    if entry is not None and entry.value is not None and entry.value.reveal() == value:
        return report  # unchanged: nothing to write
    store.write_text(where, _replace(text, existing, {key: value}))
    use = uses[key]
    report.rotated.append(Rotated(key, use.role, old, fingerprint(value), use.dependents, use.why))
    return report


def write_values(inventory: Path, values: dict[str, str]) -> None:
    """Write ``values`` over the store's (apply puts the box's old values back with this
    when a rotation is rolled back)."""
    register_secrets(list(values.values()))
    where = store.store_of(inventory)
    text = store.read_text(where) or ""
    existing = parse_secrets(text, where.shown)[0]
    store.write_text(where, _replace(text, existing, values))
