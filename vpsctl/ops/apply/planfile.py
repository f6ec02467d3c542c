"""Saved plan files (``vpsctl plan --out``, ``vpsctl apply PLANFILE``): checked before
anything connects (shape, and the whole body against its ``plan_hash``), then checked
against the host and the inputs once connected (a stale plan is refused)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vpsctl.core.facts import HostFacts
from vpsctl.core.plan import PLAN_FORMAT, Plan, plan_hash
from vpsctl.core.render import Desired
from vpsctl.errors import VpsctlError, display_path


class StalePlan(VpsctlError):
    """A saved plan no longer matches the inputs or the host."""


class PlanFileError(VpsctlError):
    """A saved plan file that cannot be trusted: unreadable, malformed, or edited."""


# The shape of a saved plan (``Plan.to_json``): key → the JSON types its value may take.
_OPTIONAL_STR = (str, type(None))
_PLAN_KEYS: dict[str, tuple[type, ...]] = {
    "format": (str,),
    "host": (str,),
    "reachable": (bool,),
    "note": (str,),
    "inputs_hash": (str,),
    "facts_hash": (str,),
    "summary": (str,),
    "changes": (bool,),
    "files": (list,),
    "stacks": (list,),
    "images": (list,),
    "host_actions": (list,),
    "plan_hash": (str,),
}
_ITEM_KEYS: dict[str, dict[str, tuple[type, ...]]] = {
    "files": {
        "path": (str,),
        "stack": (str,),
        "action": (str,),
        "reason": (str,),
        "old_sha256": _OPTIONAL_STR,
        "new_sha256": _OPTIONAL_STR,
        "mode": _OPTIONAL_STR,
        "diff": (str,),
    },
    "stacks": {
        "stack": (str,),
        "action": (str,),
        "reason": (str,),
        "services": (list,),
        "snapshot": (bool,),
    },
    "images": {"ref": (str,), "stack": (str,), "action": (str,), "reason": (str,)},
}
_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    bool: "true or false",
    list: "a list",
    dict: "a mapping",
    int: "a number",
    float: "a number",
    type(None): "null",
}


def _expect(value: object, types: tuple[type, ...], where: str, problems: list[str]) -> bool:
    # bool is an int in Python, and JSON has no other distinction to make here
    if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
        return True
    wanted = " or ".join(_TYPE_NAMES[t] for t in types)
    problems.append(f"{where}: expected {wanted}, found {_TYPE_NAMES.get(type(value), 'other')}")
    return False


def plan_file_problems(data: object) -> list[str]:
    """Every way ``data`` (a parsed plan file) differs from the shape ``vpsctl plan --out``
    writes: a missing key, a wrong type. Empty when it has that shape."""
    problems: list[str] = []
    if not _expect(data, (dict,), "the plan", problems):
        return problems
    assert isinstance(data, dict)
    for key, types in _PLAN_KEYS.items():
        if key not in data:
            problems.append(f"{key}: missing")
        elif _expect(data[key], types, key, problems) and key in _ITEM_KEYS:
            for index, item in enumerate(data[key]):
                where = f"{key}[{index}]"
                if not _expect(item, (dict,), where, problems):
                    continue
                for name, item_types in _ITEM_KEYS[key].items():
                    if name not in item:
                        problems.append(f"{where}.{name}: missing")
                    else:
                        _expect(item[name], item_types, f"{where}.{name}", problems)
    for index, value in enumerate(data.get("host_actions") or []):
        _expect(value, (str,), f"host_actions[{index}]", problems)
    for index, item in enumerate(data.get("stacks") or []):
        if isinstance(item, dict) and isinstance(item.get("services"), list):
            for n, service in enumerate(item["services"]):
                _expect(service, (str,), f"stacks[{index}].services[{n}]", problems)
    return problems


def load_plan_file(path: Path, inventory: str = "INVENTORY") -> dict[str, Any]:
    """A saved plan, checked before anything connects: readable JSON, the shape ``vpsctl
    plan --out`` writes, and its whole body bound to its ``plan_hash`` (an edit to any of
    it, a diff's text or the summary included, is refused). ``inventory`` goes into the
    command the errors suggest."""
    where = display_path(path)
    again = (
        f"nothing was changed. Run `vpsctl plan -i {inventory} --out {where}` again and review it."
    )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise PlanFileError(f"{where}: not a readable plan file ({reason})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanFileError(
            f"{where}:{exc.lineno}: not a vpsctl plan: not JSON ({exc.msg}); {again}"
        ) from None
    except RecursionError:
        raise PlanFileError(f"{where}: not a vpsctl plan: nested too deeply; {again}") from None
    if isinstance(data, dict) and "format" in data and data["format"] != PLAN_FORMAT:
        shown = data["format"] if isinstance(data["format"], str) else type(data["format"])
        raise PlanFileError(
            f"{where}: format: not a vpsctl plan (format {str(shown)[:40]!r}, expected "
            f"{PLAN_FORMAT!r}); {again}"
        )
    problems = plan_file_problems(data)
    if problems:
        lines = [f"{where}: {problem}" for problem in problems[:10]]
        if len(problems) > 10:
            lines.append(f"{where}: … and {len(problems) - 10} more")
        lines.append(f"{where}: not a plan as `vpsctl plan -i … --out` writes it; {again}")
        raise PlanFileError("\n".join(lines))
    assert isinstance(data, dict)
    if plan_hash(data) != data["plan_hash"]:
        raise PlanFileError(
            f"{where}: the plan file was edited after it was saved: its content no longer "
            f"matches its plan_hash {data['plan_hash'][:12]}, so what it shows is not what "
            f"was planned; {again}"
        )
    return data


def check_stale(saved: dict[str, Any], plan: Plan, desired: Desired, facts: HostFacts) -> None:
    """Refuse, naming what moved, unless the plan would be computed exactly again now."""
    moved: list[str] = []
    if saved["inputs_hash"] != desired.inputs_hash:
        wanted = {f["path"]: f["new_sha256"] for f in saved["files"] if f["new_sha256"]}
        current = {p: f.sha256 for p, f in desired.files.items()}
        for path in sorted(set(wanted) | set(current)):
            if wanted.get(path) != current.get(path):
                moved.append(f"input changed: {path} renders differently than in the plan")
        if not moved:
            moved.append("inputs changed since the plan")
    if saved["facts_hash"] != plan.facts_hash:
        for f in saved["files"]:
            have = facts.files.get(f["path"])
            now = have.sha256 if have else None
            if now != f["old_sha256"]:
                moved.append(f"host changed: {f['path']} was edited on the host since the plan")
        if not any(m.startswith("host changed") for m in moved):
            moved.append("host changed: containers, images or the manifest moved since the plan")
    if not moved and saved["plan_hash"] != plan.to_json()["plan_hash"]:
        moved.append("the plan computed now differs from the saved one")
    if moved:
        raise StalePlan(
            "stale plan: " + "; ".join(moved) + "; nothing was changed. Run "
            f"`vpsctl plan -i {plan.inventory or 'INVENTORY'} --out FILE` again and review it."
        )
