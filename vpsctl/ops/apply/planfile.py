"""Saved plan files (``vpsctl plan --out``, ``vpsctl apply PLANFILE``), of one box or of a
cluster (host.yaml's ``nodes:``): checked before anything connects (shape, and the whole
body against its ``plan_hash``), then against the inventory once it is loaded (a plan of
its kind, of this cluster and its nodes), then against the hosts and the inputs once
connected (a stale plan is refused, naming what moved)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vpsctl.core.cluster import CLUSTER_PLAN_FORMAT, ClusterPlan
from vpsctl.core.facts import HostFacts
from vpsctl.core.plan import PLAN_FORMAT, Plan, plan_hash
from vpsctl.core.render import Desired
from vpsctl.errors import VpsctlError, display_path
from vpsctl.spec.studio import Spec


class StalePlan(VpsctlError):
    """A saved plan no longer matches the inputs or the host."""


class PlanFileError(VpsctlError):
    """A saved plan file that cannot be trusted: unreadable, malformed, or edited; or one
    that is not for this inventory."""


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
# The shape of a saved cluster plan (``ClusterPlan.to_json``): ``nodes`` maps each node's
# name to its plan, shaped as one box's.
_CLUSTER_KEYS: dict[str, tuple[type, ...]] = {
    "format": (str,),
    "cluster": (str,),
    "overlay": (str,),
    "summary": (str,),
    "changes": (bool,),
    "swarm": (list,),
    "notes": (list,),
    "nodes": (dict,),
    "plan_hash": (str,),
}
_FORMATS = {PLAN_FORMAT: "one box", CLUSTER_PLAN_FORMAT: "a cluster"}
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


def _keyed(
    data: dict[str, Any], keys: dict[str, tuple[type, ...]], at: str, problems: list[str]
) -> list[str]:
    """The ``keys`` of ``data`` present with their type; each other one a problem, named
    with ``at`` before it."""
    good: list[str] = []
    for key, types in keys.items():
        if key not in data:
            problems.append(f"{at}{key}: missing")
        elif _expect(data[key], types, f"{at}{key}", problems):
            good.append(key)
    return good


def _strings(values: object, where: str, problems: list[str]) -> None:
    """Each item of ``values`` (when a list) a string, or a problem."""
    for index, value in enumerate(values if isinstance(values, list) else []):
        _expect(value, (str,), f"{where}[{index}]", problems)


def _shown(value: object) -> str:
    """A name read from a plan file, as an error says it: short, whatever the file holds."""
    text = value if isinstance(value, str) else type(value).__name__
    return text if len(text) <= 40 else text[:40] + "…"


def plan_file_problems(data: object, at: str = "") -> list[str]:
    """Every way ``data`` (a parsed plan file) differs from the shape ``vpsctl plan --out``
    writes for one box: a missing key, a wrong type. Empty when it has that shape. ``at``
    comes before each key named (a cluster's node: ``nodes.media.``)."""
    problems: list[str] = []
    if not _expect(data, (dict,), at.rstrip(".") or "the plan", problems):
        return problems
    assert isinstance(data, dict)
    for key in _keyed(data, _PLAN_KEYS, at, problems):
        for index, item in enumerate(data[key] if key in _ITEM_KEYS else []):
            where = f"{at}{key}[{index}]"
            if _expect(item, (dict,), where, problems):
                _keyed(item, _ITEM_KEYS[key], f"{where}.", problems)
    _strings(data.get("host_actions"), f"{at}host_actions", problems)
    stacks = data.get("stacks")
    for index, item in enumerate(stacks if isinstance(stacks, list) else []):
        if isinstance(item, dict):
            _strings(item.get("services"), f"{at}stacks[{index}].services", problems)
    return problems


def cluster_plan_file_problems(data: object) -> list[str]:
    """Every way ``data`` differs from the shape ``vpsctl plan --out`` writes for a
    cluster: its own keys, and each node's plan shaped as one box's (its problems named
    ``nodes.NAME.…``)."""
    problems: list[str] = []
    if not _expect(data, (dict,), "the plan", problems):
        return problems
    assert isinstance(data, dict)
    _keyed(data, _CLUSTER_KEYS, "", problems)
    for key in ("swarm", "notes"):
        _strings(data.get(key), key, problems)
    nodes = data.get("nodes")
    for name, plan in (nodes if isinstance(nodes, dict) else {}).items():
        at = f"nodes.{_shown(name)}."
        found = plan_file_problems(plan, at)
        if not found and plan["format"] != PLAN_FORMAT:
            found.append(f"{at}format: expected {PLAN_FORMAT!r}, a node's plan")
        problems += found
    return problems


def _again(inventory: str, where: str) -> str:
    """What every refusal of a saved plan ends with: the command that plans again."""
    return (
        f"nothing was changed. Run `vpsctl plan -i {inventory} --out {where}` again and review it."
    )


def _read(path: Path, where: str, again: str) -> object:
    """The parsed JSON of the file at ``path``, or why it is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise PlanFileError(f"{where}: not a readable plan file ({reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanFileError(
            f"{where}:{exc.lineno}: not a vpsctl plan: not JSON ({exc.msg}); {again}"
        ) from None
    except RecursionError:
        raise PlanFileError(f"{where}: not a vpsctl plan: nested too deeply; {again}") from None


def _check_bound(data: dict[str, Any], where: str, again: str, at: str = "") -> None:
    """Refuse ``data`` unless its body is the one its ``plan_hash`` was computed over."""
    if plan_hash(data) != data["plan_hash"]:
        raise PlanFileError(
            f"{where}: {at}the plan file was edited after it was saved: its content no longer "
            f"matches its plan_hash {data['plan_hash'][:12]}, so what it shows is not what "
            f"was planned; {again}"
        )


def is_cluster_plan(saved: Mapping[str, Any]) -> bool:
    """Whether ``saved`` (a loaded plan file) is a cluster's plan, not one box's."""
    return saved.get("format") == CLUSTER_PLAN_FORMAT


def load_plan_file(path: Path, inventory: str = "INVENTORY") -> dict[str, Any]:
    """A saved plan, of one box or of a cluster, checked before anything connects: readable
    JSON, the shape ``vpsctl plan --out`` writes, and its whole body bound to its
    ``plan_hash`` (an edit to any of it, a diff's text or the summary included, is refused;
    a cluster's: anywhere, in any node's plan too). ``inventory`` goes into the command the
    errors suggest. Whether it is for the inventory is :func:`check_target`'s."""
    where = display_path(path)
    again = _again(inventory, where)
    data = _read(path, where, again)
    if isinstance(data, dict) and "format" in data and data["format"] not in _FORMATS:
        shown = data["format"] if isinstance(data["format"], str) else type(data["format"])
        expected = " or ".join(f"{f!r} ({kind})" for f, kind in _FORMATS.items())
        raise PlanFileError(
            f"{where}: format: not a vpsctl plan (format {str(shown)[:40]!r}, expected "
            f"{expected}); {again}"
        )
    cluster = isinstance(data, dict) and is_cluster_plan(data)
    problems = cluster_plan_file_problems(data) if cluster else plan_file_problems(data)
    if problems:
        lines = [f"{where}: {problem}" for problem in problems[:10]]
        if len(problems) > 10:
            lines.append(f"{where}: … and {len(problems) - 10} more")
        lines.append(f"{where}: not a plan as `vpsctl plan -i … --out` writes it; {again}")
        raise PlanFileError("\n".join(lines))
    assert isinstance(data, dict)
    _check_bound(data, where, again)
    for name, node in data["nodes"].items() if cluster else ():
        _check_bound(node, where, again, f"nodes.{_shown(name)}: ")
    return data


def check_target(saved: dict[str, Any], path: Path, spec: Spec, inventory: str) -> None:
    """Refuse a saved plan made for another inventory, before anything connects: a cluster's
    plan for one box, one box's for a cluster, another cluster's, or one whose nodes are
    not host.yaml's."""
    where = display_path(path)
    again = _again(inventory, where)
    host = spec.host
    if not is_cluster_plan(saved):
        if host.nodes is not None:
            raise PlanFileError(
                f"{where}: a saved plan of one box ({_shown(saved['host'])}), and {inventory} "
                f"is a cluster ({host.name}: nodes {', '.join(host.nodes)}): its apply takes "
                f"a cluster's plan; {again}"
            )
        return
    if host.nodes is None:
        raise PlanFileError(
            f"{where}: a saved plan of a cluster ({_shown(saved['cluster'])}: nodes "
            f"{', '.join(map(_shown, saved['nodes']))}), and {inventory} is one box "
            f"({host.name}): its apply takes a plan of that box; {again}"
        )
    if saved["cluster"] != host.name:
        raise PlanFileError(
            f"{where}: cluster: a plan of cluster {_shown(saved['cluster'])}, and {inventory} "
            f"is cluster {host.name}; {again}"
        )
    if set(saved["nodes"]) != set(host.nodes):
        raise PlanFileError(
            f"{where}: nodes: the plan's nodes ({', '.join(map(_shown, sorted(saved['nodes'])))}) "
            f"are not host.yaml's ({', '.join(sorted(host.nodes))}); {again}"
        )


def _inputs_moved(saved: dict[str, Any], desired: Desired) -> list[str]:
    """The files ``desired`` renders otherwise than the saved plan ``saved`` has them."""
    wanted = {f["path"]: f["new_sha256"] for f in saved["files"] if f["new_sha256"]}
    current = {p: f.sha256 for p, f in desired.files.items()}
    return [
        f"input changed: {path} renders differently than in the plan"
        for path in sorted(set(wanted) | set(current))
        if wanted.get(path) != current.get(path)
    ]


def _host_moved(saved: dict[str, Any], plan: Plan, facts: HostFacts) -> list[str]:
    """What moved on the host since ``saved`` was planned: each file edited there, else
    that something else did (containers, images, the manifest)."""
    if saved["facts_hash"] == plan.facts_hash:
        return []
    edited: list[str] = []
    for f in saved["files"]:
        have = facts.files.get(f["path"])
        if (have.sha256 if have else None) != f["old_sha256"]:
            edited.append(f"host changed: {f['path']} was edited on the host since the plan")
    return edited or ["host changed: containers, images or the manifest moved since the plan"]


def _swarm_moved(saved: list[str], now: list[str]) -> list[str]:
    """What forming the swarm changes now, and not in the saved plan (or the reverse)."""
    if saved == now:
        return []
    added = [f"swarm changed: {line!r} is to do now" for line in now if line not in saved]
    gone = [f"swarm changed: {line!r} is no longer to do" for line in saved if line not in now]
    return added + gone or ["swarm changed: its steps come in another order"]


def _refuse_stale(moved: list[str], inventory: str, where: str) -> None:
    if moved:
        raise StalePlan("stale plan: " + "; ".join(moved) + "; " + _again(inventory, where))


def check_stale(
    saved: dict[str, Any],
    plan: Plan,
    desired: Desired,
    facts: HostFacts,
    path: Path | None = None,
) -> None:
    """Refuse, naming what moved, unless the plan would be computed exactly again now.
    ``path``: the plan file, named in the command the refusal suggests."""
    moved: list[str] = []
    if saved["inputs_hash"] != desired.inputs_hash:
        moved += _inputs_moved(saved, desired) or ["inputs changed since the plan"]
    moved += _host_moved(saved, plan, facts)
    if not moved and saved["plan_hash"] != plan.to_json()["plan_hash"]:
        moved.append("the plan computed now differs from the saved one")
    where = display_path(path) if path is not None else "FILE"
    _refuse_stale(moved, plan.inventory or "INVENTORY", where)


def check_cluster_stale(
    saved: dict[str, Any],
    plan: ClusterPlan,
    nodes: Mapping[str, tuple[Desired, HostFacts]],
    path: Path,
    inventory: str,
) -> None:
    """Refuse a cluster's saved plan, naming what moved, unless the plan would be computed
    exactly again now: each node as one box is checked (``nodes``: its share of the studio
    and its facts, as its plan read them), then the swarm, then the whole."""
    moved: list[str] = []
    inputs = False  # the studio's inputs (every node's share has the same hash)
    for name, now in plan.nodes.items():
        was = saved["nodes"].get(name)
        if was is None:
            moved.append(f"node {name}: not in the plan")
            continue
        desired, facts = nodes[name]
        lines = _host_moved(was, now, facts)
        if was["inputs_hash"] != desired.inputs_hash:
            inputs = True
            lines = _inputs_moved(was, desired) + lines
        elif not lines and was["plan_hash"] != now.to_json()["plan_hash"]:
            lines.append("the plan computed now differs from the saved one")
        moved += [f"node {name}: {line}" for line in lines]
    if inputs and not any(": input changed: " in line for line in moved):
        moved.insert(0, "inputs changed since the plan")
    moved += _swarm_moved(saved["swarm"], plan.swarm)
    if not moved and saved["plan_hash"] != plan.to_json()["plan_hash"]:
        moved.append("the plan computed now differs from the saved one")
    _refuse_stale(moved, inventory, display_path(path))
