"""The ``vpsctl`` command line: parse, call the pipeline, pick a view, map to an exit code.

stdout carries data (the merged spec, schemas); stderr carries progress and errors. The
one catch-all is :func:`main`: a :class:`VpsctlError` prints its message and exits 1; any
other exception is a bug, reported without its arguments (they might hold a value).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from vpsctl.cli import sandbox, views
from vpsctl.errors import VpsctlError, forget_secrets, masked, masked_data, redacted_output

T = TypeVar("T")

if TYPE_CHECKING:
    from vpsctl.core.facts import HostFacts
    from vpsctl.core.render import Desired
    from vpsctl.host.remote import Remote
    from vpsctl.ops.apply import Applier
    from vpsctl.ops.apply.cluster import ClusterApply
    from vpsctl.ops.recovery import Backups
    from vpsctl.spec.studio import Spec

# Every command imports what it needs inside its function, and building the parser imports
# nothing heavy: a `validate` must not pay for pydantic models it can skip (a cache hit),
# nor for render, plan, pyinfra or the sandbox it never uses (issue 12, "A fast start").

DEFAULT_INVENTORY = Path("inventory/prod")


def _inventory(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-i",
        "--inventory",
        type=Path,
        default=DEFAULT_INVENTORY,
        help="inventory directory (default: inventory/prod)",
    )


def _json(data: Any) -> str:
    """``data`` as indented JSON, every string masked first: the redacting stream masks the
    text again, but only masking the data keeps the JSON valid whatever a secret holds."""
    return json.dumps(masked_data(data), indent=2) + "\n"


def load_spec(inventory: Path) -> Spec:
    """:func:`vpsctl.spec.loader.load_spec`, imported when a command first needs it."""
    from vpsctl.spec.loader import load_spec as load  # noqa: PLC0415 - see the imports

    return load(inventory)


def _load(inventory: Path) -> Spec:
    """The validated spec; its warnings (valid, but most likely a mistake) go to stderr
    as `warning: file:line: …`, through the same redacting stream as everything else."""
    spec = load_spec(inventory)
    for problem in spec.warnings:
        print(f"warning: {problem}", file=sys.stderr)
    return spec


def cmd_validate(args: argparse.Namespace) -> int:
    """Load and validate everything; print nothing but errors (and warnings).

    A studio validated before with the very same inputs (every file, secrets.env included,
    by content hash: :mod:`vpsctl.spec.cache`) only prints the warnings it found then.
    """
    from vpsctl.spec import cache  # noqa: PLC0415 - stdlib only: a hit never loads pydantic

    if os.environ.get("VPSCTL_NO_CACHE"):
        _load(args.inventory)
        return 0
    hit = cache.lookup(args.inventory)
    if hit is not None:
        for line in hit:
            print(f"warning: {line}", file=sys.stderr)
        return 0
    spec = _load(args.inventory)
    cache.store(spec)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print the merged spec with every secret masked."""
    spec = load_spec(args.inventory)
    data = views.merged(spec)
    sys.stdout.write(_json(data) if args.json else views.to_yaml(data))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    """Write the desired files locally, laid out as they will sit on the host."""
    from vpsctl.ops.inputs import render_spec, write_tree  # noqa: PLC0415 - see the imports

    # offline: what only a running sandbox gives is a marked placeholder (plan/apply refuse it)
    desired = render_spec(load_spec(args.inventory), offline=True)
    written = write_tree(desired, args.out)
    print(f"wrote {written} files under {args.out}", file=sys.stderr)
    for missing in desired.unresolved:
        print(f"placeholder for the {missing.what}: {missing.reason}", file=sys.stderr)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Diff the rendered spec against the live host; exit 2 when there are changes.

    A plan whose every input is unchanged since a plan printed before (:mod:`the plan
    cache <vpsctl.spec.cache>`) reads the host at once, without loading the spec; when the
    host answers as it did then, it prints what that plan printed. Otherwise it plans in
    full, with the answer already read: one connection, one command, either way.
    """
    from vpsctl.spec import cache  # noqa: PLC0415 - stdlib only: a hit never loads pydantic

    context = None
    if args.out is None and not os.environ.get("VPSCTL_NO_CACHE"):
        context = [
            "plan",
            *(f"{flag}={getattr(args, flag)}" for flag in ("json", "verbose", "destroy_data")),
            *sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith("VPSCTL_")),
        ]
    memo = cache.plan_lookup(args.inventory, context) if context is not None else None
    if memo is None:
        return _plan(args, context)
    from vpsctl.host import quick  # noqa: PLC0415 - paramiko alone

    sys.stderr.write(memo.stderr)  # the warnings, and "reading HOST …"
    # the commands the plan ran (a sandbox's `docker inspect`) asked again while the host
    # is read: the inputs are unchanged, so the spec is valid, whatever they answer
    same: list[bool] = []
    asking = threading.Thread(target=lambda: same.append(cache.commands_unchanged(memo)))
    asking.start()
    facts = quick.read_facts(memo.target, memo.script)
    asking.join()
    if facts is not None and same == [True] and facts.fingerprint() == memo.facts:
        sys.stdout.write(memo.stdout)
        return memo.code
    return _plan(args, context, facts, printed=True)


def _plan(
    args: argparse.Namespace,
    context: list[str] | None,
    facts: HostFacts | None = None,
    *,
    printed: bool = False,
) -> int:
    """The plan in full; ``facts`` when the host was read already, ``printed`` when the
    warnings and the "reading" line were. With a ``context``, what it printed is stored in
    the plan cache under it."""

    from vpsctl.spec import cache  # noqa: PLC0415

    recorder: contextlib.AbstractContextManager[set[str]] = (
        cache.recording() if context is not None else contextlib.nullcontext(set())
    )
    with recorder as reads:
        from vpsctl.core.facts import facts_script  # noqa: PLC0415
        from vpsctl.core.plan import make_plan  # noqa: PLC0415
        from vpsctl.errors import display_path  # noqa: PLC0415
        from vpsctl.ops import targets  # noqa: PLC0415 - pyinfra loads only for commands that connect
        from vpsctl.ops.inputs import render_spec  # noqa: PLC0415

        spec = load_spec(args.inventory)
        # what a plan prints before its output: the warnings, then what it reads
        warned = "".join(f"warning: {problem}\n" for problem in spec.warnings)
        if spec.host.cluster:
            sys.stderr.write(warned)
            return _cluster_plan(args, spec)
        reading_line = f"reading {spec.host.name} …\n"
        if not printed:
            sys.stderr.write(warned)
        # The host's facts are read while the spec renders: the SSH handshake and the box's
        # facts script overlap the local work. The spec is whole and valid before anything
        # connects, and the read changes nothing on the host. A daemon thread: a render
        # error or Ctrl-C ends the command at once, without waiting for the read.
        known = facts
        read = _background(lambda: known if known is not None else targets.read_facts(spec))
        desired = render_spec(spec)
        if not printed:
            sys.stderr.write(reading_line)
        facts = read()
        plan = make_plan(
            spec.host.name,
            desired,
            facts,
            destroy_data=args.destroy_data,
            inventory=display_path(spec.inventory),
        )
        data = plan.to_json()  # masked, then hashed
        text = _json(data) if args.json else views.plan_text(plan, args.verbose)
    sys.stdout.write(text)
    code = 2 if plan.changes else 0
    if args.out is not None:
        # a file, not a stream: masked here (the hash already covers the masked body)
        args.out.write_text(_json(data), encoding="utf-8")
        print(f"saved plan {data['plan_hash'][:12]} to {args.out}", file=sys.stderr)
    elif context is not None and facts.reachable:
        entry = cache.PlanEntry(
            targets.target(spec), facts_script(), facts.fingerprint(),
            masked(warned + reading_line), masked(text), code,
        )  # fmt: skip
        cache.plan_store(spec, context, reads, entry)
    return code


def _background(work: Callable[[], T]) -> Callable[[], T]:
    """Start ``work`` in a daemon thread (a render error or Ctrl-C ends the command at once,
    without waiting for it); the call returned waits for it and gives its value, or raises
    what it raised."""
    done: list[T | BaseException] = []

    def run() -> None:
        try:
            done.append(work())
        except BaseException as exc:  # noqa: BLE001 - raised again in the command's thread
            done.append(exc)

    thread = threading.Thread(target=run, name="facts", daemon=True)
    thread.start()

    def result() -> T:
        thread.join()
        if isinstance(done[0], BaseException):
            raise done[0]
        return done[0]

    return result


def _cluster_plan(args: argparse.Namespace, spec: Spec) -> int:
    """The plan of a cluster: every node read at once (while the studio renders), each
    planned against its share of the studio; exit 2 when any node has changes."""

    from vpsctl.core import cluster  # noqa: PLC0415
    from vpsctl.core.plan import make_plan  # noqa: PLC0415
    from vpsctl.core.swarm import overlay_kind  # noqa: PLC0415
    from vpsctl.errors import display_path  # noqa: PLC0415
    from vpsctl.ops import swarm, targets  # noqa: PLC0415
    from vpsctl.ops.inputs import render_spec  # noqa: PLC0415

    nodes = cluster.node_names(spec)
    read = _background(lambda: targets.read_node_facts(spec))
    desired = render_spec(spec)
    views_ = {node: cluster.node_view(spec, desired, node) for node in nodes}
    sys.stderr.write(f"reading {spec.host.name}: nodes {', '.join(nodes)} …\n")
    facts = read()
    encrypted = spec.host.overlay == "encrypted"
    swarm_lines, notes = swarm.plan_lines(
        targets.swarm_nodes(spec), {n: f.swarm for n, f in facts.items()}, encrypted=encrypted
    )
    notes += [
        f"node {n}: its swarm could not be read: {f.error}" for n, f in facts.items() if f.error
    ]

    # a stack placed by labels is planned by its deploying node, wherever its task runs
    placed = cluster.placed_facts(spec, {n: f.host for n, f in facts.items()})
    plans = {
        node: make_plan(
            f"{spec.host.name}/{node}",
            views_[node],
            placed[node],
            destroy_data=args.destroy_data,
            inventory=display_path(spec.inventory),
        )
        for node in nodes
    }
    plans = cluster.mark_moves(spec, plans)
    notes += cluster.placement_notes(spec)
    notes += cluster.move_notes(spec, plans)
    notes.append(cluster.visibility_note(spec))
    plan = cluster.ClusterPlan(spec.host.name, plans, swarm_lines, overlay_kind(encrypted), notes)
    data = plan.to_json()
    text = _json(data) if args.json else views.cluster_plan_text(plan, _roles(spec), args.verbose)
    sys.stdout.write(text)
    if args.out is not None:
        args.out.write_text(_json(data), encoding="utf-8")
        print(f"saved plan {data['plan_hash'][:12]} to {args.out}", file=sys.stderr)
    return 2 if plan.changes else 0


def _roles(spec: Spec) -> dict[str, str]:
    """Each node's part in words: ``edge, manager``, ``manager``, ``worker``."""
    managers = spec.host.managers
    return {
        name: ", ".join(
            (["edge"] if node.edge else []) + (["manager"] if name in managers else ["worker"])
        )
        for name, node in (spec.host.nodes or {}).items()
    }


def cmd_apply(args: argparse.Namespace) -> int:
    """Converge the host: show the plan, ask (unless -y), apply exactly that, report."""
    from vpsctl.host.remote import Session  # noqa: PLC0415
    from vpsctl.ops import apply, targets  # noqa: PLC0415 - pyinfra loads only when connecting

    inventory = str(args.inventory)
    saved = apply.load_plan_file(args.planfile, inventory) if args.planfile else None
    spec = _load(args.inventory)
    if saved is not None:
        apply.check_target(saved, args.planfile, spec, inventory)
    if spec.host.cluster:
        if args.only == "bootstrap":
            from vpsctl.ops.apply.cluster import bootstrap_nodes  # noqa: PLC0415

            if saved is not None:
                raise VpsctlError(
                    "apply --only bootstrap runs each node's bootstrap, which a saved plan "
                    "does not hold: give one or the other; nothing was changed"
                )
            bootstrap_nodes(spec, sys.stderr)
            return 0
        return _cluster_apply(args, spec, saved)
    if args.only == "bootstrap":
        apply.bootstrap(spec, sys.stderr)
        return 0
    with Session(targets.target(spec)) as session:
        applier = apply.Applier(spec, session, sys.stderr, destroy_data=args.destroy_data)
        plan = applier.plan
        if saved is not None:
            apply.check_stale(saved, plan, applier.desired, applier.facts, args.planfile)
        if not _confirmed(
            views.plan_text(plan), plan.changes, "apply", args.yes or saved is not None
        ):
            return 1
        return _apply_and_audit(spec, session, applier)


def _confirmed(text: str, changes: bool, command: str, yes: bool) -> bool:
    """Show a plan's ``text``; unless ``yes`` (or it ``changes`` nothing), ask on the
    terminal whether to go ahead: refused without a terminal, as "nothing changed" when not
    answered yes."""
    sys.stdout.write(text)
    sys.stdout.flush()
    if not changes or yes:
        return True
    if not sys.stdin.isatty():
        raise VpsctlError(f"{command}: not a terminal to ask on; review the plan and pass -y")
    print("Apply these changes? [y/N] ", end="", file=sys.stderr, flush=True)
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        print(f"{command}: nothing changed", file=sys.stderr)
        return False
    return True


def _apply_and_audit(spec: Spec, session: Remote, applier: Applier) -> int:
    """Run ``applier``'s plan, then the audit that closes every apply (a deploy that
    "succeeded" while serving empty pages is exactly what it is for); the exit code."""
    from vpsctl.ops import audit  # noqa: PLC0415 - pyinfra loads only when connecting

    result = applier.apply()
    print(views.apply_text(result), file=sys.stderr, end="")
    report = audit.audit(spec, session, applier.desired) if applier.plan.changes else None
    if report is not None:
        print(views.audit_text(report), file=sys.stderr, end="")
    return 0 if result.ok and (report is None or report.ok) else 1


def _cluster_apply(args: argparse.Namespace, spec: Spec, saved: dict[str, Any] | None) -> int:
    """Converge every node of a cluster: its plan shown first, asked (unless -y); with a
    ``saved`` plan, exactly that one (not asked), or refused when stale."""
    from vpsctl.ops.apply import check_cluster_stale  # noqa: PLC0415
    from vpsctl.ops.apply.cluster import ClusterApply  # noqa: PLC0415

    with _node_sessions(spec) as sessions:
        run = ClusterApply(spec, dict(sessions), sys.stderr, destroy_data=args.destroy_data)
        if saved is not None:  # before run.apply() takes the locks: nothing changed if stale
            shares = {name: (a.desired, a.facts) for name, a in run.appliers.items()}
            check_cluster_stale(saved, run.plan, shares, args.planfile, str(args.inventory))
        return _run_cluster(spec, sessions, run, "apply", yes=args.yes or saved is not None)


def _run_cluster(
    spec: Spec,
    sessions: dict[str, Remote],
    run: ClusterApply,
    command: str,
    *,
    yes: bool,
    desired: Desired | None = None,
) -> int:
    """A cluster's plan shown and asked (unless ``yes``), applied, each node's result said,
    then the audit that closes every run that changed something, as one box's (against
    ``desired``, the spec's rendering when None); the exit code."""
    from vpsctl.ops.cluster_audit import audit_cluster  # noqa: PLC0415

    text = views.cluster_plan_text(run.plan, _roles(spec))
    if not _confirmed(text, run.plan.changes, command, yes):
        return 1
    results = run.apply()
    for name, result in results.items():
        print(f"── node {name} ──", file=sys.stderr)
        print(views.apply_text(result), file=sys.stderr, end="")
    report = audit_cluster(spec, desired, sessions) if run.plan.changes else None
    if report is not None:
        print(views.cluster_audit_text(report), file=sys.stderr, end="")
    ok = all(result.ok for result in results.values())
    return 0 if ok and (report is None or report.ok) else 1


def cmd_rollback(args: argparse.Namespace) -> int:
    """Put the previous applied version of stacks back: its plan first, asked like apply,
    health-gated like apply, audited."""
    from vpsctl.host.remote import Session  # noqa: PLC0415
    from vpsctl.ops import targets, versions  # noqa: PLC0415 - pyinfra loads only when connecting

    spec = _load(args.inventory)
    versions.checked_stacks(spec, args.stacks, "rollback")
    if spec.host.nodes is not None:
        return _cluster_rollback(args, spec)
    with Session(targets.target(spec)) as session:
        applier, chosen = versions.rollback_applier(spec, session, sys.stderr, args.stacks)
        for t in chosen:
            data = f"; its data back from snapshot {t.data[:8]}" if t.data else ""
            print(
                f"rollback {t.stack}: {t.current.version} → {t.previous.version}{data}",
                file=sys.stderr,
            )
        plan = applier.plan
        if not _confirmed(views.plan_text(plan), plan.changes, "rollback", args.yes):
            return 1
        return _apply_and_audit(spec, session, applier)


def cmd_history(args: argparse.Namespace) -> int:
    """The applied versions the box keeps, newest first."""
    from vpsctl.host.remote import Session  # noqa: PLC0415
    from vpsctl.ops import targets, versions  # noqa: PLC0415 - pyinfra loads only when connecting

    spec = load_spec(args.inventory)
    versions.checked_stacks(spec, args.stacks, "history")
    where: dict[tuple[str, str], str] | None = None
    if spec.host.nodes is not None:
        with _node_sessions(spec) as sessions:
            by_node = versions.read_nodes(sessions)
        listed, where = versions.node_history(by_node, args.stacks)
        current = versions.node_current(spec, by_node)
    else:
        with Session(targets.target(spec)) as session:
            found = versions.read_versions(session)
        listed = versions.history(found, args.stacks)
        current = {(n, vs[-1].version) for n, vs in found.items()}
    if args.json:
        rows = [{**v.to_json(), "current": (v.stack, v.version) in current} for v in listed]
        if where is not None:
            for row, v in zip(rows, listed, strict=True):
                row["node"] = where[(v.stack, v.version)]
        sys.stdout.write(_json(rows))
    else:
        sys.stdout.write(views.history_text(listed, current, where))
    return 0


@contextlib.contextmanager
def _node_sessions(spec: Spec) -> Iterator[dict[str, Remote]]:
    """One session per node of a cluster, by node name, closed on leaving."""
    from vpsctl.host.remote import Session  # noqa: PLC0415
    from vpsctl.ops import targets  # noqa: PLC0415

    with contextlib.ExitStack() as stack_:
        yield {
            name: stack_.enter_context(Session(targets.node_target(spec, name)))
            for name in spec.host.nodes or {}
        }


def _cluster_rollback(args: argparse.Namespace, spec: Spec) -> int:
    """A cluster's rollback: each named stack back to the previous version its node keeps,
    shown as a cluster's plan, asked, gated, then the cluster's audit."""
    from vpsctl.ops import versions  # noqa: PLC0415

    with _node_sessions(spec) as sessions:
        planned = versions.cluster_rollback(spec, sessions, sys.stderr, args.stacks)
        for node, chosen_targets in planned.chosen.items():
            for t in chosen_targets:
                data = f"; its data back from snapshot {t.data[:8]}" if t.data else ""
                print(
                    f"rollback {t.stack} on {node}: {t.current.version} → "
                    f"{t.previous.version}{data}",
                    file=sys.stderr,
                )
        return _run_cluster(
            spec, sessions, planned.run, "rollback", yes=args.yes, desired=planned.desired
        )


def cmd_audit(args: argparse.Namespace) -> int:
    """Prove the box healthy: exit 0 only when no check fails."""
    from vpsctl.host.remote import Session  # noqa: PLC0415
    from vpsctl.ops import audit, targets  # noqa: PLC0415 - pyinfra loads only when connecting

    spec = load_spec(args.inventory)
    if spec.host.cluster:
        from vpsctl.ops.cluster_audit import audit_cluster  # noqa: PLC0415

        report = audit_cluster(spec)
        text = views.cluster_audit_text
    else:
        with Session(targets.target(spec)) as session:
            report = audit.audit(spec, session)
        text = views.audit_text
    sys.stdout.write(_json(report.to_json()) if args.json else text(report, verbose=not args.brief))
    return 0 if report.ok else 1


def cmd_backup(args: argparse.Namespace) -> int:
    """Snapshot every stack's data (consistent dumps, volumes) to the restic repository."""
    from vpsctl.ops import recovery  # noqa: PLC0415 - pyinfra loads only when connecting

    if args.kind is not None and not args.list:
        raise VpsctlError("backup: --kind only filters --list; add --list")
    spec = load_spec(args.inventory)
    if args.list or args.check:
        with _repository(spec) as backups:
            if args.check:
                print(f"restic check (reading {args.check_subset} of the data) …", file=sys.stderr)
                backups.check(args.check_subset)
                print("repository check: ok", file=sys.stderr)
            if args.list:
                found = [s for s in backups.snapshots() if args.kind in (None, s.kind)]
                if args.json:
                    # a cluster's snapshots say which node took each
                    node = spec.host.nodes is not None
                    rows = [{**vars(s), **({"node": s.node} if node else {})} for s in found]
                    sys.stdout.write(_json(rows))
                else:
                    sys.stdout.write(views.snapshot_list(found, args.kind))
        return 0
    if spec.host.nodes is not None:
        return _cluster_backup(args, spec)
    report = recovery.run_backup(spec, args.init, args.stack, sys.stderr)
    if args.json:
        sys.stdout.write(_json(report.to_json()))
    else:
        print(views.backup_text(report), end="")
    return 0


@contextlib.contextmanager
def _repository(spec: Spec) -> Iterator[Backups]:
    """The backup repository, driven through the box (a cluster: through one node that has
    the backup machinery, :func:`~vpsctl.ops.cluster_recovery.repository_node`), its backup
    files checked first."""
    from vpsctl.host.remote import Session  # noqa: PLC0415
    from vpsctl.ops import cluster_recovery, recovery, targets  # noqa: PLC0415 - pyinfra loads only when connecting

    if spec.host.nodes is not None:
        with cluster_recovery.repository_backups(spec) as backups:
            yield backups
        return
    with Session(targets.target(spec)) as session:
        backups = recovery.Backups(spec, session)
        backups.check_installed()
        yield backups


def _cluster_backup(args: argparse.Namespace, spec: Spec) -> int:
    """``vpsctl backup`` of a cluster: every node's stacks, each on its node, at once."""
    from vpsctl.ops import cluster_recovery  # noqa: PLC0415 - pyinfra loads only when connecting

    report = cluster_recovery.run_backup(spec, args.init, args.stack, sys.stderr)
    if args.json:
        sys.stdout.write(_json(report.to_json()))
    else:
        print(report.text(), end="")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Put a snapshot's data back (stop, restore, start), then audit."""
    from vpsctl.ops import recovery  # noqa: PLC0415 - pyinfra loads only when connecting

    spec = load_spec(args.inventory)
    if spec.host.nodes is not None:
        from vpsctl.ops import cluster_recovery  # noqa: PLC0415 - pyinfra loads only when connecting

        whole = cluster_recovery.run_restore(
            spec,
            args.snapshot,
            args.stack,
            args.yes,
            sys.stderr,
            safety=not args.no_safety_snapshot,
        )
        from vpsctl.ops.cluster_audit import audit_cluster  # noqa: PLC0415

        print("auditing the cluster …", file=sys.stderr)
        audited = audit_cluster(spec)
        print(views.cluster_audit_text(audited), file=sys.stderr, end="")
        return 0 if whole and audited.ok else 1
    _, report = recovery.run_restore(
        spec, args.snapshot, args.stack, args.yes, sys.stderr, safety=not args.no_safety_snapshot
    )
    print(views.audit_text(report), file=sys.stderr, end="")
    return 0 if report.ok else 1


def cmd_rebuild(args: argparse.Namespace) -> int:
    """Disaster recovery onto a fresh box (a cluster: every node a fresh box, or a lost node
    with ``--node``): bootstrap, apply, restore, audit (a cluster's stacks probed through the
    edge), timed."""
    from vpsctl.ops import cluster_recovery, recovery  # noqa: PLC0415 - pyinfra loads only when connecting

    spec = load_spec(args.inventory)
    node = cluster_recovery.checked_node(spec, args.node)
    snapshots: list[str] = args.snapshot or []
    whole = spec.host.nodes is not None and node is None
    snapshot = cluster_recovery.checked_snapshots(snapshots, node, cluster_wide=whole)
    rebuild: recovery.RebuildReport
    if whole:
        rebuild = cluster_recovery.run_cluster_rebuild(
            spec, snapshots, sys.stderr, force=args.force
        )
    elif node is not None:
        rebuild = cluster_recovery.run_node_rebuild(
            spec, node, snapshot, sys.stderr, force=args.force
        )
    else:
        rebuild = recovery.run_rebuild(spec, snapshot, sys.stderr, force=args.force)
    if args.json:
        sys.stdout.write(_json(rebuild.to_json()))
    else:
        sys.stdout.write(rebuild.text())
    return 0 if rebuild.ok else 1


def cmd_drill(args: argparse.Namespace) -> int:
    """Rehearse the rebuild on a throwaway sandbox box (a cluster: one per node); compare
    row counts; tear down."""
    from vpsctl.ops import recovery  # noqa: PLC0415 - pyinfra loads only when connecting

    spec = load_spec(args.inventory)
    drill = recovery.run_drill(spec, sys.stderr, keep=args.keep)
    sys.stdout.write(drill.text())
    return 0 if drill.ok else 1


def cmd_init(args: argparse.Namespace) -> int:
    """Write a new studio repository into an empty directory."""
    from vpsctl.cli.init import init_studio  # noqa: PLC0415 - only init needs it

    init_studio(args.dir)
    print(f"wrote a new studio in {args.dir}; next: read its README.md", file=sys.stderr)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """Print (or write) the JSON Schemas of host.yaml and stack files."""
    from vpsctl.spec.schema import schemas  # noqa: PLC0415 - see the imports

    found = schemas()
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, schema in found.items():
            path = args.out / f"{name}.schema.json"
            path.write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
            print(f"wrote {path}", file=sys.stderr)
        return 0
    chosen = found if args.which is None else found[args.which]
    sys.stdout.write(json.dumps(chosen, indent=2) + "\n")
    return 0


def cmd_secrets_generate(args: argparse.Namespace) -> int:
    """Fill missing secrets with fresh values; list the ones only a third party issues."""
    from vpsctl.spec import generate as secrets_generate  # noqa: PLC0415 - see the imports

    report = secrets_generate.generate(args.inventory)
    views.print_generate_report(report, sys.stderr)
    return 0


def cmd_secrets_example(args: argparse.Namespace) -> int:
    """Print a secrets.env.example listing every key the inventory needs."""
    from vpsctl.spec import generate as secrets_generate  # noqa: PLC0415 - see the imports

    sys.stdout.write(secrets_generate.example(args.inventory))
    return 0


def cmd_secrets_edit(args: argparse.Namespace) -> int:
    """Edit the secrets store in $EDITOR: decrypted to tmpfs, validated, sealed again."""
    from vpsctl.ops import secrets  # noqa: PLC0415 - see the imports

    def ask(question: str) -> str:
        if not sys.stdin.isatty():
            return "d"  # nobody to ask: the edit is discarded, never half-saved
        print(question, end="", file=sys.stderr, flush=True)
        return sys.stdin.readline()

    result = secrets.edit(
        args.inventory, sys.stderr, ask, tmpdir=args.tmpdir, allow_disk=args.allow_disk
    )
    print(f"secrets edit: {result.file} {result.outcome}", file=sys.stderr)
    return 1 if result.outcome == "discarded" else 0


def cmd_secrets_encrypt(args: argparse.Namespace) -> int:
    """Seal the plain secrets.env into secrets.env.age; remove it after a verified round trip."""
    from vpsctl.ops import secrets  # noqa: PLC0415 - see the imports

    print(f"secrets encrypt: {secrets.encrypt(args.inventory)}", file=sys.stderr)
    return 0


def cmd_secrets_recipients(args: argparse.Namespace) -> int:
    """List, add or remove a recipient of the encrypted store (re-encrypting it)."""
    from vpsctl.ops import secrets  # noqa: PLC0415 - see the imports

    if args.action == "list":
        for line in secrets.recipients_list(args.inventory):
            print(line)
        return 0
    if args.key is None:
        raise VpsctlError(f"secrets recipients {args.action}: which KEY?")
    done = secrets.recipients_change(args.inventory, args.key, add=args.action == "add")
    print(f"secrets recipients: {done}", file=sys.stderr)
    return 0


def cmd_secrets_rotate(args: argparse.Namespace) -> int:
    """Give secrets fresh values in the store; the next plan/apply carries the rotation out."""
    from vpsctl.ops import rotate  # noqa: PLC0415 - see the imports

    report = rotate.rotate(args.inventory, args.keys, every=args.all)
    views.print_rotate_report(report, args.inventory, sys.stderr)
    return 0


def cmd_secrets_set(args: argparse.Namespace) -> int:
    """Read one secret's new value from stdin (never argv), check its kind, store it."""
    from vpsctl.ops import rotate  # noqa: PLC0415 - see the imports

    if sys.stdin.isatty():
        print(f"secrets set: the new value of {args.key}, then Enter:", file=sys.stderr)
        import getpass  # noqa: PLC0415

        value = getpass.getpass(prompt="")
    else:
        value = sys.stdin.readline()
    report = rotate.set_secret(args.inventory, args.key, value)
    views.print_rotate_report(report, args.inventory, sys.stderr)
    return 0


def _secrets_action(
    secrets_sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    text: str,
    func: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    p = secrets_sub.add_parser(name, help=text)
    _inventory(p)
    p.set_defaults(func=func)
    return p


def _secrets_store_parsers(
    secrets_sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    p = _secrets_action(
        secrets_sub,
        "edit",
        "edit the secrets in $EDITOR (decrypted on tmpfs, validated, re-encrypted)",
        cmd_secrets_edit,
    )
    p.add_argument("--tmpdir", type=Path, help="where the plaintext sits while editing (tmpfs)")
    p.add_argument(
        "--allow-disk",
        action="store_true",
        help="accept a --tmpdir that is not on tmpfs (the plaintext then reaches a disk)",
    )
    _secrets_action(
        secrets_sub,
        "encrypt",
        "secrets.env → secrets.env.age for the recipients; removes the plain file",
        cmd_secrets_encrypt,
    )
    p = _secrets_action(
        secrets_sub,
        "rotate",
        "fresh values for KEY… (or --all rotatable secrets); plan/apply carry it out",
        cmd_secrets_rotate,
    )
    p.add_argument("keys", nargs="*", metavar="KEY")
    p.add_argument("--all", action="store_true", help="every secret vpsctl can rotate")
    p = _secrets_action(
        secrets_sub,
        "set",
        "store KEY's new value, read from stdin (never argv), checked against its kind",
        cmd_secrets_set,
    )
    p.add_argument("key", metavar="KEY")
    p = _secrets_action(
        secrets_sub, "recipients", "list, add or remove who can decrypt", cmd_secrets_recipients
    )
    p.add_argument("action", choices=["list", "add", "remove"])
    p.add_argument(
        "key",
        nargs="?",
        help="a public key (age1… or 'ssh-ed25519 AAAA…'), a .pub file, or (remove) a fingerprint",
    )


def _recovery_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("backup", help="snapshot every stack's data to the restic repository")
    _inventory(p)
    p.add_argument("--init", action="store_true", help="create the repository if it is missing")
    p.add_argument("--stack", action="append", default=[], help="only this stack (repeatable)")
    p.add_argument("--list", action="store_true", help="list this host's snapshots instead")
    p.add_argument(
        "--kind",
        choices=views.SNAPSHOT_KINDS,
        help="with --list: only snapshots of this kind (the nightly timer's, `backup`'s own, "
        "or the safety copies apply and restore take)",
    )
    p.add_argument("--check", action="store_true", help="run `restic check` instead")
    p.add_argument(
        "--check-subset", default="1/10", help="how much data --check reads (default 1/10)"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("restore", help="put a snapshot's data back, then audit")
    _inventory(p)
    p.add_argument("--snapshot", help="snapshot id or prefix (default: the newest)")
    p.add_argument("--stack", action="append", default=[], help="only this stack (repeatable)")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask before replacing data")
    p.add_argument(
        "--no-safety-snapshot",
        action="store_true",
        help="replace the current data without snapshotting it first (when it cannot be)",
    )
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("rebuild", help="disaster recovery onto a fresh box, with its RTO")
    _inventory(p)
    p.add_argument(
        "--snapshot",
        action="append",
        help="snapshot id or prefix (default: the newest); a whole cluster's rebuild takes "
        "one per node holding backed-up stacks (repeat it)",
    )
    p.add_argument("--force", action="store_true", help="even if the box already runs stacks")
    p.add_argument(
        "--node",
        help="a cluster: the lost node a fresh box stands in for (without it: every node is "
        "a fresh box, the whole cluster rebuilt)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_rebuild)

    p = sub.add_parser(
        "drill", help="rehearse the rebuild on a throwaway sandbox box (a cluster: one per node)"
    )
    _inventory(p)
    p.add_argument("--keep", action="store_true", help="leave the drill's boxes up afterwards")
    p.set_defaults(func=cmd_drill)


def _init_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("init", help="write a new studio repository, from the example")
    p.add_argument("dir", type=Path, help="a new or empty directory")
    p.set_defaults(func=cmd_init)


def _version_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``rollback`` and ``history``: the applied versions the box keeps."""
    p = sub.add_parser("rollback", help="put the previous applied version of stacks back")
    _inventory(p)
    p.add_argument("stacks", nargs="*", metavar="STACK", help="default: the last apply's stacks")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask before changing")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("history", help="the applied versions of each stack the box keeps")
    _inventory(p)
    p.add_argument("stacks", nargs="*", metavar="STACK", help="default: every stack")
    p.add_argument("--json", action="store_true", help="print the versions as JSON")
    p.set_defaults(func=cmd_history)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command; building it imports nothing heavy (the sandbox's
    parser lives in the light :mod:`vpsctl.cli.sandbox`; tests/test_fast_start.py)."""

    parser = argparse.ArgumentParser(
        prog="vpsctl", description="Declarative infrastructure for a small studio on one VPS."
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(),
        metavar="DIR",
        help="the studio repository to work in, as if started there (default: the current "
        "directory); -i, --out and .vpsctl/ are taken from it",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _init_parser(sub)

    p = sub.add_parser("validate", help="load and validate the spec; print only errors")
    _inventory(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("show", help="the merged spec, secrets masked")
    _inventory(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("render", help="write the desired files as they will sit on the host")
    _inventory(p)
    p.add_argument("--out", type=Path, required=True, help="directory to write the tree into")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("plan", help="diff-before-apply against the live host (exit 2: changes)")
    _inventory(p)
    p.add_argument("--out", type=Path, help="save the plan for `vpsctl apply -i DIR PLANFILE`")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="list unchanged items and kept volumes too"
    )
    p.add_argument(
        "--destroy-data",
        action="store_true",
        help="plan deleting the volumes of stacks the spec no longer declares",
    )
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("apply", help="converge the host to the spec")
    _inventory(p)
    p.add_argument("planfile", nargs="?", type=Path, help="a saved plan: apply exactly it")
    p.add_argument("--only", choices=["bootstrap"], help="run only this phase")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask before changing")
    p.add_argument(
        "--destroy-data",
        action="store_true",
        help="also delete the volumes of stacks the spec no longer declares (now or before)",
    )
    p.set_defaults(func=cmd_apply)

    _version_parsers(sub)

    p = sub.add_parser("audit", help="prove the box healthy (exit 1 when a check fails)")
    _inventory(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--brief", action="store_true", help="one line for each stack whose checks all pass"
    )
    p.set_defaults(func=cmd_audit)

    _recovery_parsers(sub)
    sandbox.add_parser(sub)

    p = sub.add_parser("schema", help="JSON Schema of host.yaml and stack files")
    p.add_argument("which", nargs="?", choices=["host", "stack"], help="only this schema")
    p.add_argument("--out", type=Path, help="write <which>.schema.json files into this directory")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("secrets", help="manage secrets.env or secrets.env.age")
    secrets_sub = p.add_subparsers(dest="secrets_command", required=True, metavar="ACTION")
    _secrets_action(
        secrets_sub,
        "generate",
        "fill missing secrets with fresh valid values; never overwrite",
        cmd_secrets_generate,
    )
    _secrets_action(
        secrets_sub,
        "example",
        "print a secrets.env.example for the inventory",
        cmd_secrets_example,
    )
    _secrets_store_parsers(secrets_sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vpsctl`` console script.

    The command runs with stdout and stderr behind the one redacting boundary
    (:func:`vpsctl.errors.redacted_output`): every secret value loaded or read from the host
    is masked in whatever any layer prints, errors and tracebacks included.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    if not args.root.is_dir():
        parser.error(f"--root {args.root}: no such directory")
    forget_secrets()  # one command, one set of secrets to mask
    with contextlib.chdir(args.root), redacted_output():
        return _run(func, args)


def _run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """The command, its failures mapped to exit codes."""
    try:
        return func(args)
    except VpsctlError as exc:
        print(masked(str(exc)), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one boundary: a bug, reported, never a value
        print(
            f"vpsctl: internal error ({exc.__class__.__name__}); this is a bug. "
            "Run with VPSCTL_DEBUG=1 for the traceback.",
            file=sys.stderr,
        )
        if os.environ.get("VPSCTL_DEBUG"):
            traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
