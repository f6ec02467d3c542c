"""``vpsctl history`` and ``vpsctl rollback``: the applied versions the box keeps of each
stack (:mod:`vpsctl.core.versions`), listed, and the previous one put back through the
Applier, planned, asked and health-gated like any apply.

A rollback replaces the desired state of the stacks it names by their previous version
(files, env, images, service hashes), reads everything it needs and refuses before it
changes anything: a stack with no previous version, a previous version whose files are
not kept, a way back across an image change of backed-up data without the pre-apply
snapshot it needs, and a plan that would also change anything besides those stacks.
"""

from __future__ import annotations

import base64
import binascii
import io
import tarfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO

from vpsctl.core import cluster
from vpsctl.core.render import Desired, render
from vpsctl.core.versions import StackVersion, desired_of, needs_data, parse_versions
from vpsctl.errors import VpsctlError, display_path
from vpsctl.host.commands import versions as commands
from vpsctl.host.remote import Remote, output_tail
from vpsctl.ops.apply import Applier
from vpsctl.ops.apply.cluster import ClusterApply
from vpsctl.ops.apply.rollback import Steps
from vpsctl.spec.studio import Spec


class RollbackError(VpsctlError):
    """A rollback refused before it changed anything."""


@dataclass(frozen=True)
class Target:
    """A stack to put back: the version it runs and the one it goes back to, and the
    pre-apply snapshot whose data goes back with it (None: its data stays)."""

    stack: str
    current: StackVersion
    previous: StackVersion
    data: str | None


def read_versions(session: Remote) -> dict[str, list[StackVersion]]:
    """Every version the box keeps, by stack, oldest first."""
    result = session.run(commands.list_all(), purpose="reading the applied versions")
    return parse_versions(result.stdout)


def checked_stacks(spec: Spec, stacks: list[str], command: str) -> None:
    """Refuse a stack name the inventory does not declare (before anything connects)."""
    declared = list(spec.host.stacks)
    unknown = [s for s in stacks if s not in declared]
    if unknown:
        raise RollbackError(
            f"{command}: no stack {', '.join(repr(s) for s in unknown)} in "
            f"{display_path(spec.inventory)} (declared: {', '.join(declared)})"
        )


def history(found: dict[str, list[StackVersion]], stacks: list[str]) -> list[StackVersion]:
    """The versions of ``stacks`` (every stack when empty), newest first."""
    chosen = [v for name, vs in found.items() if not stacks or name in stacks for v in vs]
    return sorted(chosen, key=lambda v: (v.version, v.stack), reverse=True)


def choose(spec: Spec, found: dict[str, list[StackVersion]], stacks: list[str]) -> list[Target]:
    """What a rollback of ``stacks`` puts back (the stacks of the last apply that kept a
    version, when none is named); a clear error, naming the stack and what is missing, when
    it cannot."""
    inventory = display_path(spec.inventory)
    if not found:
        raise RollbackError(
            "rollback: the box keeps no applied version of any stack (vpsctl keeps one for "
            "each stack an apply changes, from this version on): nothing to go back to"
        )
    if not stacks:  # the stacks the last run that kept a version changed
        newest = max(vs[-1].version for vs in found.values())
        stacks = [n for n, vs in found.items() if vs[-1].version == newest]
    targets: list[Target] = []
    for name in stacks:
        kept = found.get(name, [])
        if len(kept) < 2:
            have = f"only {kept[-1].version}, the one it runs" if kept else "none"
            raise RollbackError(
                f"rollback: {name} has no previous version to go back to: the box keeps "
                f"{have} (`vpsctl history -i {inventory} {name}` lists them)"
            )
        current, previous = kept[-1], kept[-2]
        data = None
        if needs_data(current, previous):
            if current.snapshot is None:
                raise RollbackError(
                    f"rollback: {name}: going back from {current.version} "
                    f"({_images(current)}) to {previous.version} ({_images(previous)}) "
                    "changes its image back, so its data must go back to what it was before "
                    f"{current.version} was applied (the newer image may have changed it), "
                    f"but {current.version} recorded no pre-apply snapshot: refusing. Put "
                    f"the data back yourself (`vpsctl restore -i {inventory} --stack {name} "
                    "--snapshot ID`), or apply the old version as a new one"
                )
            data = current.snapshot
        targets.append(Target(name, current, previous, data))
    return targets


def _images(version: StackVersion) -> str:
    return ", ".join(f"{s} {ref}" for s, ref in sorted(version.images.items()))


def fetch_files(session: Remote, target: Target) -> dict[str, tuple[bytes, int]]:
    """The files of ``target``'s previous version as the box keeps them (bytes, mode), by
    path. They hold secrets: kept in memory, never printed."""
    version = target.previous
    result = session.run(
        commands.files_of(target.stack, version.version),
        check=False,  # judged below, without echoing what it read
        purpose=f"reading the files of {target.stack} {version.version}",
    )
    try:
        data = base64.b64decode(result.stdout.strip(), validate=True)
        contents: dict[str, tuple[bytes, int]] = {}
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar:
                handle = tar.extractfile(member) if member.isfile() else None
                if handle is not None:
                    contents["/" + member.name.lstrip("/")] = (handle.read(), member.mode)
    except (binascii.Error, ValueError, tarfile.TarError):
        raise RollbackError(
            f"rollback: {target.stack}: the files of its previous version "
            f"{version.version} could not be read from the box "
            f"({output_tail(result, 2, 200) if not result.ok else 'not a tar archive'})"
        ) from None
    return contents


def override(previous: dict[str, Desired]) -> Callable[[Desired], None]:
    """The Applier's hook: each stack of ``previous`` as its previous version has it (its
    own files replace the ones the spec renders for it), whether the host deploys it or, a
    cluster node, only holds it for another node's deploy (:attr:`Desired.held`)."""

    def apply_to(desired: Desired) -> None:
        for name, old in previous.items():
            for path in [p for p, f in desired.files.items() if f.stack == name]:
                del desired.files[path]
            desired.files.update(old.files)
            if name in desired.held:
                desired.held[name] = old.stacks[name]
            else:
                desired.stacks[name] = old.stacks[name]

    return apply_to


def prepare(session: Remote, targets: list[Target]) -> dict[str, Desired]:
    """The desired state of each target's previous version, read from the box."""
    previous: dict[str, Desired] = {}
    for target in targets:
        contents = fetch_files(session, target)
        try:
            stack, files = desired_of(target.previous, contents)
        except ValueError as exc:
            raise RollbackError(f"rollback: {exc}: it cannot be put back") from None
        previous[target.stack] = Desired(
            files={f.path: f for f in files}, stacks={stack.name: stack}
        )
    return previous


def data_back(targets: list[Target]) -> Callable[[Applier, str], str]:
    """The Applier's hook once a stack is healthy: a target whose data must go back gets
    the pre-apply snapshot of the version it leaves (a copy of the data it holds now is
    kept first); what failed, "" when all went well."""
    snapshots = {t.stack: t.data for t in targets if t.data is not None}

    def restore(applier: Applier, name: str) -> str:
        snapshot = snapshots.get(name)
        if snapshot is None:
            return ""
        steps = Steps(applier)
        applier.rollbacks.restore_snapshot(name, snapshot, steps)
        return "; ".join(steps.failed)

    return restore


def outside(applier: Applier, targets: list[Target]) -> list[str]:
    """What the rollback's plan would change besides its stacks (the spec moved on since
    the last apply): refused, so that a rollback never applies anything else."""
    names = {t.stack for t in targets}
    changes = [
        f"{s.stack}: {s.action}"
        for s in applier.plan.stacks
        if s.action != "none" and s.stack not in names
    ]
    changes += [
        f"{f.path}: {f.action}"
        for f in applier.plan.files
        if f.action != "unchanged" and f.stack not in names
    ]
    return changes


def rollback_applier(
    spec: Spec, session: Remote, out: IO[str], stacks: list[str]
) -> tuple[Applier, list[Target]]:
    """The Applier of a rollback of ``stacks`` (its plan computed, nothing changed yet), and
    what it puts back; a :class:`RollbackError` when it cannot."""
    targets = choose(spec, read_versions(session), stacks)
    previous = prepare(session, targets)
    applier = Applier(
        spec, session, out, override=override(previous), after_healthy=data_back(targets)
    )
    extra = outside(applier, targets)
    if extra:
        raise RollbackError(
            f"rollback: the spec also changes what the rollback of "
            f"{', '.join(t.stack for t in targets)} does not touch ({'; '.join(extra[:6])}): "
            "apply those changes first, or revert them, then roll back"
        )
    for target in targets:
        applier.version_results[target.stack] = f"rollback to {target.previous.version}"
    return applier, targets


# A cluster (host.yaml's `nodes`): each node keeps the versions of the stacks it ran, as one
# box does; a stack's history and its way back are those its node keeps.

ByNode = dict[str, dict[str, list[StackVersion]]]


def read_nodes(sessions: Mapping[str, Remote]) -> ByNode:
    """Every node's kept versions, by node then stack: the nodes read at once (one command
    each)."""
    with ThreadPoolExecutor(max_workers=max(1, len(sessions))) as pool:
        found = {name: pool.submit(read_versions, s) for name, s in sessions.items()}
        return {name: future.result() for name, future in found.items()}


def node_history(
    by_node: ByNode, stacks: list[str]
) -> tuple[list[StackVersion], dict[tuple[str, str], str]]:
    """The versions of ``stacks`` (every stack when empty) over the nodes, newest first, and
    the node that keeps each (by stack and version)."""
    merged: dict[str, list[StackVersion]] = {}
    where: dict[tuple[str, str], str] = {}
    for node, found in by_node.items():
        for name, kept in found.items():
            merged.setdefault(name, []).extend(kept)
            where |= {(name, v.version): node for v in kept}
    return history(merged, stacks), where


def node_current(spec: Spec, by_node: ByNode) -> set[tuple[str, str]]:
    """The version each stack runs now: the newest its node keeps (a node a stack moved
    away from keeps its older versions, run there no longer)."""
    current: set[tuple[str, str]] = set()
    for name in spec.host.stacks:
        if name not in spec.stacks:
            continue
        kept = by_node.get(cluster.stack_node(spec, name), {}).get(name, [])
        if kept:
            current.add((name, kept[-1].version))
    return current


def choose_on_nodes(spec: Spec, by_node: ByNode, stacks: list[str]) -> dict[str, list[Target]]:
    """What a rollback of ``stacks`` puts back on each node (only nodes with something to
    put back): each stack from the versions ITS node keeps (a stack placed by labels: its
    deploying node's, :func:`~vpsctl.core.cluster.stack_node`). A cluster's rollback names
    its stacks: the nodes keep their versions apart, so "the last apply's stacks" is not one
    box's record."""
    if not stacks:
        raise RollbackError(
            f"rollback: {display_path(spec.inventory)} is a cluster: name the stacks to put "
            "back (`vpsctl history` lists each stack's versions, with the node keeping them)"
        )
    chosen: dict[str, list[Target]] = {}
    for name in stacks:
        # a stack placed by labels: the versions its deploying node keeps (the nodes
        # holding it get its previous files too: :func:`held_too`)
        node = cluster.stack_node(spec, name)
        found = by_node.get(node, {})
        elsewhere = sorted(n for n, f in by_node.items() if n != node and name in f)
        if len(found.get(name, [])) < 2 and elsewhere:
            raise RollbackError(
                f"rollback: {name} runs on {node}, which keeps "
                f"{len(found.get(name, []))} version(s) of it; its older versions are kept on "
                f"{', '.join(elsewhere)}, where it ran before: a way back across a move is not "
                "a rollback (move it back with `node:`, then roll back there)"
            )
        chosen.setdefault(node, []).extend(choose(spec, {name: found.get(name, [])}, [name]))
    return chosen


@dataclass
class ClusterRollback:
    """A cluster's rollback, planned: its :class:`ClusterApply`, what each node puts back,
    and the whole studio as it will be (the spec's, those stacks as their previous versions
    have them: what the closing audit compares the nodes with)."""

    run: ClusterApply
    chosen: dict[str, list[Target]]
    desired: Desired


def cluster_rollback(
    spec: Spec, sessions: Mapping[str, Remote], out: IO[str], stacks: list[str]
) -> ClusterRollback:
    """A cluster's rollback of ``stacks``: a :class:`ClusterApply` whose nodes run their
    stacks' previous versions (its plan computed, nothing changed yet), and what each node
    puts back; a :class:`RollbackError` when it cannot, before any change."""
    chosen = choose_on_nodes(spec, read_nodes(sessions), stacks)
    previous = {node: prepare(sessions[node], ts) for node, ts in chosen.items()}
    overrides = {node: override(p) for node, p in held_too(spec, previous).items()}
    run = ClusterApply(
        spec,
        dict(sessions),
        out,
        overrides=overrides,
        hooks={node: (None, data_back(ts)) for node, ts in chosen.items()},
    )
    everything = [t for ts in chosen.values() for t in ts]
    extra = [f"swarm: {line}" for line in run.plan.swarm]
    for applier in run.appliers.values():
        extra += outside(applier, everything)
    if extra:
        raise RollbackError(
            f"rollback: the spec also changes what the rollback of "
            f"{', '.join(t.stack for t in everything)} does not touch ({'; '.join(extra[:6])}): "
            "apply those changes first, or revert them, then roll back"
        )
    for node, ts in chosen.items():
        for target in ts:
            run.appliers[node].version_results[target.stack] = (
                f"rollback to {target.previous.version}"
            )
    whole = render(spec, next(iter(run.appliers.values())).inputs)
    for put_back in previous.values():
        override(put_back)(whole)
    return ClusterRollback(run, chosen, whole)


def held_too(spec: Spec, previous: dict[str, dict[str, Desired]]) -> dict[str, dict[str, Desired]]:
    """The previous versions each node puts in place, by node then stack: its own stacks',
    and those of the stacks placed by labels it holds for another node's deploy (their
    previous files go back there before the deploy: Swarm may start the previous version on
    any node its labels match)."""
    out = {node: dict(stacks) for node, stacks in previous.items()}
    for stacks in previous.values():
        for name, old in stacks.items():
            for holder in cluster.holders(spec, name):
                out.setdefault(holder, {})[name] = old
    return out
