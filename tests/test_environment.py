"""The effective environment, computed with compose's precedence (FACTS.md)."""

from __future__ import annotations

from vpsctl.spec.environment import Setting, effective, hazards


def test_later_env_file_wins_and_environment_wins_over_all() -> None:
    chain = effective(
        [[Setting("A", "1", "f1"), Setting("B", "1", "f1")], [Setting("A", "2", "f2")]],
        [Setting("B", "3", "environment")],
    )
    assert chain["A"][-1].value == "2"
    assert chain["B"][-1].value == "3"


def test_empty_environment_entry_shadows_a_real_secret() -> None:
    """The outage: `STRIPE_WEBHOOK_SECRET: ${STRIPE_WEBHOOK_SECRET}` resolved to empty."""
    chain = effective(
        [[Setting("STRIPE_WEBHOOK_SECRET", "whsec_real", "env_file")]],
        [Setting("STRIPE_WEBHOOK_SECRET", "", "environment")],
    )
    found = hazards(chain)
    assert chain["STRIPE_WEBHOOK_SECRET"][-1].value == ""
    messages = [h.message for h in found]
    assert "is EMPTY in the container's environment" in messages
    assert any("shadowed by an empty one from environment" in m for m in messages)
    assert any(m.startswith("has a non-empty value from env_file") for m in messages)


def test_bare_environment_key_takes_the_shell_or_is_unset() -> None:
    chain = effective([], [Setting("TOKEN", None, "environment")], shell={"TOKEN": "x"})
    assert chain["TOKEN"][-1].value == "x"
    unset = effective([], [Setting("TOKEN", None, "environment")], shell={})
    assert [h.message for h in hazards(unset)] == [
        "is left unset (a bare key with nothing to take)"
    ]


def test_a_shell_exported_empty_variable_reaches_the_container() -> None:
    # compose gives a set-but-empty shell variable precedence; vpsctl scrubs the shell.
    chain = effective(
        [[Setting("K", "v", "env_file")]], [Setting("K", None, "environment")], shell={"K": ""}
    )
    assert chain["K"][-1].value == ""
    assert hazards(chain)


def test_duplicates_are_hazards_even_when_both_are_set() -> None:
    chain = effective([[Setting("K", "a", "env"), Setting("K", "b", "secrets")]])
    [hazard] = hazards(chain)
    assert "set by env and again by secrets" in hazard.message


def test_clean_environment_has_no_hazards() -> None:
    assert hazards(effective([[Setting("A", "1", "f"), Setting("B", "2", "f")]])) == []
