"""How results are shown: YAML/JSON of the merged spec, the generate report. No logic."""

from __future__ import annotations

import datetime as dt
import io
import re
from typing import IO, TYPE_CHECKING, Any

from vpsctl.errors import masked_data
from vpsctl.spec.units import human_size

# Only types here: the CLI imports this module for every command, and a cached `validate`
# must not load pydantic (the spec models) nor the planner to print nothing.
if TYPE_CHECKING:
    from vpsctl.core.cluster import ClusterPlan
    from vpsctl.core.plan import Plan
    from vpsctl.core.versions import StackVersion
    from vpsctl.ops.apply import ApplyResult
    from vpsctl.ops.audit import Check as AuditCheck
    from vpsctl.ops.audit import Report as AuditReport
    from vpsctl.ops.recovery import Snapshot
    from vpsctl.ops.rotate import RotateReport
    from vpsctl.spec.generate import GenerateReport
    from vpsctl.spec.studio import Spec


def merged(spec: Spec) -> dict[str, Any]:
    """The spec as one document: domains resolved, each secret shown masked, and any value
    holding a secret's value (one pasted into plain `env:`) masked too."""
    secrets = set(spec.secret_values())
    host = spec.host.model_dump(mode="json", exclude_none=True, exclude={"stacks"})
    stacks: dict[str, Any] = {}
    for name, stack in spec.stacks.items():
        data = stack.model_dump(mode="json", exclude_none=True)
        data["domains"] = dict(spec.host.stacks[name].domains)
        for service_name, service in data["services"].items():
            env = spec.environment(name, service_name)
            service["env"] = {
                k: _plain_value(spec.resolve(name, v), secrets)
                for k, v in service.get("env", {}).items()
            }
            service["secrets"] = {
                var: f"{secret_name} {env.get(var, '<missing>')}"
                for var, secret_name in service.get("secrets", {}).items()
            }
        stacks[name] = data
    data_out: dict[str, Any] = masked_data({"host": host, "stacks": stacks})
    return data_out


def _plain_value(value: str, secrets: set[str]) -> str:
    """A plain env value as shown: a secret's value used verbatim (of any length) is shown
    like a secret."""
    from vpsctl.spec.secrets import Secret  # noqa: PLC0415 - see the imports

    return Secret(value).masked() if value in secrets else value


def to_yaml(data: Any) -> str:
    """Block-style YAML of plain data."""
    from ruamel.yaml import YAML  # noqa: PLC0415 - see the imports

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.width = 120
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def print_generate_report(report: GenerateReport, out: IO[str]) -> None:
    """What ``secrets generate`` did, by name."""
    if report.generated:
        print(f"{report.file}: generated {len(report.generated)} secret(s):", file=out)
        for name in report.generated:
            print(f"  + {name}", file=out)
    else:
        print(f"{report.file}: nothing to generate", file=out)
    if report.kept:
        print(f"  kept {len(report.kept)} secret(s) already set", file=out)
    if report.external:
        print(
            f"still needed: {len(report.external)} secret(s) issued by someone else; add them "
            f"to {report.file} by hand:",
            file=out,
        )
        for name, kind, obtain in report.external:
            print(
                f"  - {name}: {kind}" + (f"\n      get it from: {obtain}" if obtain else ""),
                file=out,
            )


def print_rotate_report(report: RotateReport, inventory: object, out: IO[str]) -> None:
    """What ``secrets rotate``/``set`` wrote: names and fingerprints, never a value."""
    if not report.rotated:
        print(f"{report.file}: unchanged (the same value)", file=out)
        return
    print(f"{report.file}: {len(report.rotated)} secret(s) changed:", file=out)
    for r in report.rotated:
        deps = ", ".join(r.dependents) or "no service"
        changed = f"changed ({r.old}→{r.new[7:]})"
        print(f"  ~ {r.key} ({r.role}): {changed}; dependents: {deps}", file=out)
        if report.generated:
            print(f"      {r.why}", file=out)
    print(
        f"the box still runs the old value(s): review with `vpsctl plan -i {inventory}`, "
        f"carry it out with `vpsctl apply -i {inventory}`",
        file=out,
    )


_FILE_MARK = {"create": "+", "update": "~", "delete": "-", "unchanged": "="}
_STACK_MARK = {"start": "+", "recreate": "~", "reload": "~", "none": "=", "remove": "-"}


def plan_text(plan: Plan, verbose: bool = False) -> str:
    """The plan as a review: notes, images, file diffs (masked), stack actions, summary.

    Unchanged items are listed with their reason only with ``verbose``; otherwise counted.
    """
    out = [f"Host {plan.host}: {plan.note}", ""]
    if plan.renames:
        # above the Caddyfile's diff: what a reviewer must not miss in it
        out.append("Sites:")
        for r in plan.renames:
            key = f" {r.key}" if r.key else " site"
            out.append(f"  ~ {r.stack}{key} {r.old} → {r.new}; the old name stops being served")
        out.append("")
    if plan.images:
        out.append("Images:")
        out += [f"  + {i.action} {i.ref} ({i.reason})" for i in plan.images]
        out.append("")
    changed = [f for f in plan.files if f.action != "unchanged"]
    unchanged = [f for f in plan.files if f.action == "unchanged"]
    if changed:
        out.append("Files:")
        for f in changed:
            mode = f" mode {f.mode}" if f.mode else ""
            out.append(f"  {_FILE_MARK[f.action]} {f.action} {f.path}{mode} ({f.reason})")
            # lines end at "\n" only: a value may hold U+2028 (the diff masks secrets anyway)
            if f.diff:
                out += ["      " + line for line in f.diff.removesuffix("\n").split("\n")]
        out.append("")
    if unchanged:
        if verbose:
            out.append("Unchanged files:")
            out += [f"  = {f.path} ({f.reason})" for f in unchanged]
        else:
            out.append(f"Unchanged: {len(unchanged)} files (sha256, mode and owner match)")
        out.append("")
    if plan.host_actions:
        out.append("Host:")
        out += [f"  ~ {action}" for action in plan.host_actions]
        out.append("")
    out += _rotations_text(plan)
    if plan.stacks:
        out.append("Stacks:")
        for s in plan.stacks:
            services = f" [{', '.join(s.services)}]" if s.services else ""
            out.append(f"  {_STACK_MARK[s.action]} {s.stack}: {s.action}{services} ({s.reason})")
        out.append("")
    running = [a for a in plan.apps if a.action == "run"]
    done = [a for a in plan.apps if a.action != "run"]
    if running or (done and verbose):
        out.append("Apps (after the health gate, before the edge routes to them):")
        out += [f"  ~ {a.stack}: {a.label} ({a.reason})" for a in running]
        if verbose:
            out += [f"  = {a.stack}: {a.label} ({a.reason})" for a in done]
        out.append("")
    elif done:
        out.append(f"Apps: {len(done)} step(s) done (owners claimed, settings set)")
        out.append("")
    out += _volumes_text(plan, verbose)
    out.append(plan.summary())
    return "\n".join(out) + "\n"


def plural(count: int, noun: str) -> str:
    """``1 node``, ``3 nodes``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def cluster_plan_text(plan: ClusterPlan, spec_nodes: dict[str, str], verbose: bool = False) -> str:
    """A cluster's plan: the swarm's changes, then each node's plan as one box's reads
    (``spec_nodes``: node → its role in words), then the whole's summary."""
    out = [
        f"Cluster {plan.cluster}: {plural(len(plan.nodes), 'node')}; traffic between them: "
        f"{plan.overlay} overlay",
        "",
    ]
    if plan.swarm or plan.notes:
        out.append("Swarm:")
        out += [f"  ~ {line}" for line in plan.swarm]
        out += [f"  ! {line}" for line in plan.notes]
        out.append("")
    for node, node_plan in plan.nodes.items():
        out.append(f"── node {node} ({spec_nodes[node]}) ──")
        out.append(plan_text(node_plan, verbose))
    out.append(plan.summary())
    return "\n".join(out) + "\n"


def _rotations_text(plan: Plan) -> list[str]:
    """The secrets the box holds an older value of: masked, with their dependents."""
    if not plan.rotations:
        return []
    out = ["Secrets rotated (the box holds the old value; apply carries it out):"]
    out += [f"  {r.line()}" for r in plan.rotations]
    return [*out, ""]


def _volume_desc(size: int | None, created: str) -> str:
    shown = human_size(size) if size is not None else "size not measured"
    return f"{shown} since {created[:10]}" if created else shown


def _volumes_text(plan: Plan, verbose: bool) -> list[str]:
    """Volumes of stacks the spec no longer declares: to delete (with --destroy-data), or
    kept: listed with ``verbose``, else counted; never silent."""
    inventory = f" -i {plan.inventory}" if plan.inventory else " -i INVENTORY"
    deleting = [v for v in plan.volumes if v.action == "delete"]
    kept = [v for v in plan.volumes if v.action == "keep"]
    out: list[str] = []
    if deleting:
        out.append("Volumes (their data is deleted for good):")
        out += [
            f"  - delete {v.name} {_volume_desc(v.size, v.created)} ({v.reason})" for v in deleting
        ]
        out.append("")
    if kept and verbose:
        out.append("Kept volumes of stacks the spec no longer declares:")
        out += [f"  kept: {v.name} {_volume_desc(v.size, v.created)}" for v in kept]
        out.append(
            f"  `vpsctl apply{inventory} --destroy-data` deletes them (review first: "
            f"`vpsctl plan{inventory} --destroy-data`)"
        )
        out.append("")
    elif kept:
        sizes = [v.size for v in kept if v.size is not None]
        total = f", {human_size(sum(sizes))}" if sizes else ""
        out.append(
            f"Kept: {len(kept)} volume(s) of stacks the spec no longer declares{total}; "
            f"`vpsctl plan{inventory} -v` lists them"
        )
        out.append("")
    return out


def apply_text(result: ApplyResult) -> str:
    """One line per stack, then the verdict."""
    out = []
    for o in result.outcomes:
        if o.result == "unchanged":
            continue
        detail = f": {o.detail}" if o.detail else ""
        shown = "ROLLBACK FAILED" if o.result == "rollback failed" else o.result
        out.append(f"  {o.stack}: {o.action} → {shown} ({o.seconds:.1f}s){detail}")
    out += [f"  problem: {problem}" for problem in result.problems]
    stranded = [o.stack for o in result.rollbacks_failed]
    if result.ok:
        verdict = "apply: ok"
    elif stranded:
        verdict = (
            f"apply: FAILED, and the rollback of {', '.join(stranded)} FAILED too: "
            "not running a checked version (see above for what to run)"
        )
    else:
        verdict = "apply: FAILED (see above; no stack was left half-changed)"
    out.append(f"{verdict} in {result.seconds:.1f}s — {result.plan.summary()}")
    return "\n".join(out) + "\n"


def audit_text(report: AuditReport, verbose: bool = False) -> str:
    """The audit as a table grouped by stack (host last): verdict, check, value, threshold.

    Without ``verbose``, a group whose checks all pass is one line.
    """
    return "\n".join([*_check_groups(report.checks, verbose), report.summary()]) + "\n"


def cluster_audit_text(report: AuditReport, verbose: bool = False) -> str:
    """A cluster's audit: each node's checks (as :func:`audit_text` groups one box's), then
    the cluster's own, then the summary."""
    out: list[str] = []
    for node in report.nodes:
        out.append(f"── node {node} ──")
        out += _check_groups(
            [c for c in report.checks if c.node == node and c.group != "cluster"], verbose
        )
    out.append("── cluster ──")
    out += _check_groups([c for c in report.checks if c.group == "cluster"], verbose)
    out.append(report.summary())
    return "\n".join(out) + "\n"


def _check_groups(found: list[AuditCheck], verbose: bool) -> list[str]:
    """Checks grouped by stack (host last): verdict, check, value, threshold; without
    ``verbose``, a group whose checks all pass is one line."""
    groups: dict[str, list[AuditCheck]] = {}
    for check in found:
        groups.setdefault(check.group, []).append(check)
    order = sorted(groups, key=lambda g: (g == "host", g))
    out: list[str] = []
    for group in order:
        checks = groups[group]
        if not verbose and all(c.status == "ok" for c in checks):
            out.append(f"{group}: ok ({len(checks)} checks)")
            continue
        out.append(f"{group}:")
        width = max(len(c.name) for c in checks)
        for c in checks:
            if c.status == "ok" and not verbose:
                continue
            bar = f"  [{c.threshold}]" if c.threshold else ""
            out.append(f"  {c.status:<4}  {c.name:<{width}}  {c.value}{bar}")
        hidden = sum(c.status == "ok" for c in checks) if not verbose else 0
        if hidden:
            out.append(f"  ok    … and {hidden} more checks")
    return out


def backup_text(report: Any) -> str:
    """``vpsctl backup``'s report: each item, the snapshot, what it added."""
    out = [f"snapshot {report.snapshot[:8]} ({report.seconds:.1f}s)"]
    for item in report.items:
        out.append(
            f"  {item['stack']:<13} {item['item']:<34} {human_size(item['bytes']):>9}  "
            f"{item['detail']}"
        )
    summary = report.summary
    if summary:
        out.append(
            f"  {summary.get('total_files_processed', 0)} files, "
            f"{human_size(summary.get('total_bytes_processed', 0))} read, "
            f"{human_size(summary.get('data_added', 0))} added to the repository"
        )
    if report.secrets_snapshot:
        out.append(
            f"  secrets.env: snapshot {report.secrets_snapshot[:8]} "
            "(encrypted by restic, tagged vpsctl-secrets)"
        )
    return "\n".join(out) + "\n"


def utc_time(text: str) -> str:
    """A restic time (``2026-12-02T03:30:01.123456789+01:00``, the box's zone) in UTC with a
    ``Z``, to the second, as the journal writes times; the text unchanged if unreadable."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)?", text)
    if match is None:
        return text
    stamp = dt.datetime.fromisoformat(
        match.group(1) + (match.group(2) or "Z").replace("Z", "+00:00")
    )
    return stamp.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# the `run:` tags of a snapshot: the timer's, `vpsctl backup`'s, and the safety copies apply
# (before an image change, before a rollback) and restore (before replacing data) take
SNAPSHOT_KINDS = ("nightly", "manual", "pre-apply", "pre-rollback", "pre-restore")


def snapshot_list(snapshots: list[Snapshot], kind: str | None = None) -> str:
    """``backup --list``: a header row, then one snapshot a line, oldest first, in UTC;
    ``kind``: the filter the snapshots were chosen by, named when none is left."""
    # a cluster's snapshots (one repository for every node) say which node took each
    nodes = any(s.node for s in snapshots)
    rows = [("ID", "TIME (UTC)", "KIND", *(["NODE"] if nodes else []), "STACKS")]
    rows += [
        (
            s.id[:8],
            utc_time(s.time),
            s.kind,
            *([s.node or "-"] if nodes else []),
            " ".join(s.stacks) or "-",
        )
        for s in sorted(snapshots, key=lambda s: utc_time(s.time))
    ]
    if len(rows) == 1:
        return f"no {kind + ' ' if kind else ''}snapshots of this host\n"
    last = len(rows[0]) - 1
    widths = [max(len(row[i]) for row in rows) for i in range(last)]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:last], widths, strict=True))
        + f"  {row[last]}\n"
        for row in rows
    )


def history_text(
    versions: list[StackVersion],
    current: set[tuple[str, str]],
    nodes: dict[tuple[str, str], str] | None = None,
) -> str:
    """``vpsctl history``: one row per applied version, newest first; ``*`` marks the
    version each stack runs now; a cluster's (``nodes``: who keeps each version) says the
    node too."""
    if not versions:
        where = "any node" if nodes is not None else "the box"
        return f"no applied version kept on {where} (an apply keeps one per stack it changes)\n"
    head = ("", "STACK", *(("NODE",) if nodes is not None else ()), "VERSION", "TIME", "PLAN")
    rows = [(*head, "RESULT", "IMAGES")]
    for v in versions:
        images = ", ".join(f"{s}={ref}" for s, ref in sorted(v.images.items()))
        mark = "*" if (v.stack, v.version) in current else ""
        node = (nodes[(v.stack, v.version)],) if nodes is not None else ()
        rows.append((mark, v.stack, *node, v.version, v.time, v.plan_hash[:12], v.result, images))
    last = len(rows[0]) - 1
    widths = [max(len(r[i]) for r in rows) for i in range(last)]
    return "".join(
        " ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:last])) + " " + r[last] + "\n"
        for r in rows
    )
