"""Saved plan files: bound whole to their hash, checked for shape before anything connects.

A reviewer reads the saved plan; ``apply PLANFILE`` must never execute something other
than what that file shows. Any edit to its body (a diff's text, the summary, a reason) is
refused as an edit; an edit that also recomputes the hash no longer matches the plan
computed now, and is refused as stale; a file missing a key, or holding a wrong type, is a
clear error naming the file and the key, never a ``KeyError``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import factsim
from tests.helpers import golden_prod_copy, run_cli
from vpsctl.core.facts import parse
from vpsctl.core.plan import Plan, make_plan, plan_hash
from vpsctl.ops import apply
from vpsctl.ops.inputs import render_spec
from vpsctl.spec.loader import load_spec

INV = "inventory/prod"
AGAIN = (
    "nothing was changed. Run `vpsctl plan -i inventory/prod --out plan.json` again and review it."
)


@pytest.fixture
def prod(tmp_path: Path) -> Iterator[Path]:
    yield golden_prod_copy(tmp_path)


def planned(root: Path) -> tuple[Plan, Any, Any]:
    """A plan with one change (documint's env), the desired state and the host's facts."""
    desired = render_spec(load_spec(root / INV))
    facts = parse(factsim.converged(desired).output())
    stack = root / "stacks/documint.yaml"
    stack.write_text(stack.read_text().replace("PDF_RENDERER: builtin", "PDF_RENDERER: chromium"))
    desired = render_spec(load_spec(root / INV))
    return make_plan("lumen-prod", desired, facts), desired, facts


def save(root: Path, data: Any) -> Path:
    """Write ``data`` as ``vpsctl plan --out plan.json`` does."""
    path = root / "plan.json"
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def refused(root: Path) -> str:
    """``vpsctl apply -i inventory/prod plan.json``: it must fail before connecting."""
    result = run_cli(root, "apply", "-i", INV, "plan.json")
    assert result.code == 1
    assert result.out == ""
    return result.err


def changed_file(data: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(f for f in data["files"] if f["action"] == "update")
    return found


def test_a_saved_plan_loads_as_saved(prod: Path) -> None:
    plan, _, _ = planned(prod)
    data = plan.to_json()
    assert apply.load_plan_file(save(prod, data)) == data
    assert plan_hash(data) == data["plan_hash"]


EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "diff text": lambda d: changed_file(d).update(
        diff=changed_file(d)["diff"].replace("chromium", "builtin")
    ),
    "summary": lambda d: d.update(summary="No changes. The host matches the spec."),
    "reason": lambda d: changed_file(d).update(reason="unchanged"),
    "stack action": lambda d: d["stacks"][0].update(action="none"),
    "an added key": lambda d: d.update(reviewed_by="alice"),
}


def edited(hashed: str, again: str, at: str = "") -> str:
    """What apply says of plan.json edited after it was saved with hash ``hashed`` (``at``:
    where in it, a cluster's node)."""
    return (
        f"plan.json: {at}the plan file was edited after it was saved: its content no longer "
        f"matches its plan_hash {hashed[:12]}, so what it shows is not what was planned; "
        f"{again}\n"
    )


@pytest.mark.parametrize("what", list(EDITS))
def test_an_edited_plan_file_is_refused(prod: Path, what: str) -> None:
    plan, _, _ = planned(prod)
    data = plan.to_json()
    EDITS[what](data)
    save(prod, data)
    assert refused(prod) == edited(data["plan_hash"], AGAIN)


def test_an_edit_that_recomputes_the_hash_is_stale(prod: Path) -> None:
    """Whoever knows the hash can rehash an edited body: it still differs from the plan
    computed now, so apply refuses it."""
    plan, desired, facts = planned(prod)
    data = plan.to_json()
    changed_file(data)["diff"] = "      (nothing to see)"
    data["plan_hash"] = plan_hash(data)
    saved = apply.load_plan_file(save(prod, data))
    with pytest.raises(apply.StalePlan) as stale:
        apply.check_stale(saved, plan, desired, facts)
    assert str(stale.value) == (
        "stale plan: the plan computed now differs from the saved one; nothing was changed. "
        "Run `vpsctl plan -i INVENTORY --out FILE` again and review it."
    )


MALFORMED: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "missing key": (lambda d: d.pop("facts_hash"), "plan.json: facts_hash: missing\n"),
    "missing nested key": (
        lambda d: changed_file(d).pop("old_sha256"),
        "plan.json: files[{i}].old_sha256: missing\n",
    ),
    "wrong type": (
        lambda d: d.update(reachable="yes"),
        "plan.json: reachable: expected true or false, found a string\n",
    ),
    "wrong nested type": (
        lambda d: d["stacks"][0].update(services="app"),
        "plan.json: stacks[0].services: expected a list, found a string\n",
    ),
    "list of the wrong items": (
        lambda d: d.update(host_actions=[1, None]),
        "plan.json: host_actions[0]: expected a string, found a number\n"
        "plan.json: host_actions[1]: expected a string, found null\n",
    ),
    "files not a list": (
        lambda d: d.update(files={"path": "/etc/passwd"}),
        "plan.json: files: expected a list, found a mapping\n",
    ),
}


@pytest.mark.parametrize("what", list(MALFORMED))
def test_a_malformed_plan_file_names_the_key(prod: Path, what: str) -> None:
    plan, _, _ = planned(prod)
    data = plan.to_json()
    index = data["files"].index(changed_file(data))
    change, expect = MALFORMED[what]
    change(data)
    save(prod, data)
    assert refused(prod) == expect.format(i=index) + (
        f"plan.json: not a plan as `vpsctl plan -i … --out` writes it; {AGAIN}\n"
    )


def test_a_plan_file_that_is_not_json(prod: Path) -> None:
    plan, _, _ = planned(prod)
    text = json.dumps(plan.to_json(), indent=2)
    (prod / "plan.json").write_text(text[: len(text) // 2], encoding="utf-8")
    err = refused(prod)
    assert err.startswith("plan.json:")
    line = int(err.split(":")[1])
    assert line > 1
    assert err == f"plan.json:{line}: not a vpsctl plan: not JSON " + err.split("not JSON ", 1)[1]
    assert err.endswith(f"; {AGAIN}\n")


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ("[1, 2]", "plan.json: the plan: expected a mapping, found a list\n"),
        ('{"format": "terraform-plan/4"}', None),
    ],
)
def test_a_plan_file_of_another_kind(prod: Path, content: str, expect: str | None) -> None:
    (prod / "plan.json").write_text(content, encoding="utf-8")
    err = refused(prod)
    if expect is None:
        assert err == (
            "plan.json: format: not a vpsctl plan (format 'terraform-plan/4', expected "
            "'vpsctl-plan/1' (one box) or 'vpsctl-cluster-plan/1' (a cluster)); "
            f"{AGAIN}\n"
        )
    else:
        assert err == expect + (
            f"plan.json: not a plan as `vpsctl plan -i … --out` writes it; {AGAIN}\n"
        )


def test_a_missing_plan_file(prod: Path) -> None:
    assert refused(prod) == "plan.json: not a readable plan file (No such file or directory)\n"
