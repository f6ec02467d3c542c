"""The environment a container really gets, computed the way docker compose builds it.

Compose's precedence, lowest first (FACTS.md):

1. the image's own ``ENV`` (not known offline; ignored here),
2. each ``env_file:`` in order, a later file overriding an earlier one, and within a file a
   later line overriding an earlier one,
3. ``environment:``, which overrides every env_file even when its value is EMPTY, and
   where a bare ``KEY`` (``None``) takes the value from compose's own shell environment,
   or leaves the variable unset when the shell lacks it.

The outage this guards against: ``STRIPE_WEBHOOK_SECRET: ${STRIPE_WEBHOOK_SECRET}`` in
``environment:`` resolving to empty and blanking the correct value from the env_file.
:func:`hazards` names every empty value and every value shadowed by a later source.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    """One assignment of a variable by one source (``where`` names it for messages; ``loc``
    is where the spec sets it, for locating errors)."""

    key: str
    value: str | None
    where: str
    loc: tuple[str | int, ...] = ()


@dataclass(frozen=True)
class Hazard:
    """Why a variable of the effective environment is wrong."""

    key: str
    message: str
    setting: Setting


def effective(
    env_files: Sequence[Sequence[Setting]],
    environment: Sequence[Setting] = (),
    shell: Mapping[str, str] | None = None,
) -> dict[str, list[Setting]]:
    """Every variable's settings in precedence order; the last one is the value it gets.

    ``shell`` is compose's process environment, used only for bare ``environment:`` keys.
    vpsctl runs compose with a scrubbed environment, so by default it is empty.
    """
    shell = shell or {}
    chain: dict[str, list[Setting]] = {}
    for env_file in env_files:
        for setting in env_file:
            chain.setdefault(setting.key, []).append(setting)
    for setting in environment:
        value = setting.value if setting.value is not None else shell.get(setting.key)
        chain.setdefault(setting.key, []).append(
            Setting(setting.key, value, setting.where, setting.loc)
        )
    return chain


def hazards(chain: Mapping[str, Sequence[Setting]]) -> list[Hazard]:
    """Empty effective values, and values set by more than one source."""
    found: list[Hazard] = []
    for key, settings in chain.items():
        last = settings[-1]
        if last.value is None:
            found.append(Hazard(key, "is left unset (a bare key with nothing to take)", last))
        elif last.value == "":
            found.append(Hazard(key, "is EMPTY in the container's environment", last))
        for earlier in settings[:-1]:
            if earlier.value and not last.value:
                found.append(
                    Hazard(
                        key,
                        f"has a non-empty value from {earlier.where} shadowed by an empty one "
                        f"from {last.where}",
                        last,
                    )
                )
            else:
                found.append(
                    Hazard(
                        key,
                        f"is set by {earlier.where} and again by {last.where}; the later one "
                        "silently wins: set it in one place",
                        last,
                    )
                )
    return found
