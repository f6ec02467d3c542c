"""The plan: desired state against the host's facts, as data. Pure: no I/O here.

Every item carries an action and a reason, including items that do not change ("unchanged:
sha256 matches"), so a reviewer sees why nothing happens as well as what will. Diffs of env
files are per key, and a secret's value appears only as ``changed (sha256:ab12…→9f33…,
44→44 bytes)``; a key secret in the host's copy (its header line names its secret keys) stays
masked when it becomes plain config. As a second line of defence, every secret value the
plan sees (rendered, or held by the host's env files) is registered with the redacting
boundary of :mod:`vpsctl.errors`, which masks it in any output and in the plan's JSON.

A saved plan (``--out plan.json``) records the hash of the rendered inputs and, per file,
the hash the host had; ``apply PLANFILE`` re-reads both and refuses ("stale plan: …")
naming whatever moved.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from vpsctl.core.appsteps import StepKind
from vpsctl.core.backupfiles import SYSTEMD_DIR, TIMERS
from vpsctl.core.facts import Container, HostFacts, RemoteFile
from vpsctl.core.layout import HOST_FILES, LABEL_STACK, STACKS_ROOT
from vpsctl.core.render import (
    Desired,
    DesiredFile,
    DesiredStack,
    UnresolvedInput,
    env_file_secret_keys,
    parse_env_file,
)
from vpsctl.core.rotation import Rotation, pending
from vpsctl.errors import is_secret, masked, masked_data, register_secrets
from vpsctl.spec.secrets import fingerprint

PLAN_FORMAT = "vpsctl-plan/1"

# What a plan does to each kind of thing (the values are the plan's JSON and its text).
FileAction = Literal["create", "update", "delete", "unchanged"]
StackAction = Literal["start", "recreate", "reload", "none", "remove"]
ImageAction = Literal["ship", "pull"]
VolumeAction = Literal["keep", "delete"]
AppAction = Literal["run", "none"]


@dataclass(frozen=True)
class FileChange:
    """One managed file: create, update, delete or unchanged, and why."""

    path: str
    stack: str
    action: FileAction
    reason: str
    old_sha256: str | None
    new_sha256: str | None
    mode: str | None
    diff: str  # unified diff, secrets masked; empty when unchanged


@dataclass(frozen=True)
class StackChange:
    """What happens to one compose project."""

    stack: str
    action: StackAction
    reason: str
    services: tuple[str, ...] = ()  # the services that get (re)created
    # the image of a running service changes: its data is snapshotted before the change and
    # put back if the new version fails its gate (the only case data is ever put back)
    snapshot: bool = False


SNAPSHOT_REASON = (
    "a pre-apply snapshot of its data is taken first, and put back if the new version fails "
    "its gate"
)


def image_changes(stack: DesiredStack, containers: list[Container]) -> list[tuple[str, str, str]]:
    """(service, running image, desired image) of every container of ``stack`` whose image
    differs from the one the spec wants now: only then may the new version change its data
    (a domain, a memory limit or a healthcheck recreates it on the same image)."""
    return [
        (c.service, c.image, stack.service_images[c.service])
        for c in containers
        if c.service in stack.service_images and c.image != stack.service_images[c.service]
    ]


def downtime(stack: DesiredStack, services: tuple[str, ...]) -> list[str]:
    """What recreating ``services`` of ``stack`` costs in downtime, in words: nothing for a
    service behind Caddy (Caddy holds its requests and dials again while it restarts), but a
    service no route reaches (a database, the edge itself) cannot run twice and nothing holds
    its callers: it is down until it is healthy again, at most its healthcheck's start
    period."""
    return [
        f"{service} is down while recreated (no second copy of it can run): until healthy, "
        f"at most {stack.unrouted[service]} (its healthcheck's start period)"
        for service in services
        if service in stack.unrouted
    ]


def needs_snapshot(stack: DesiredStack, containers: list[Container]) -> bool:
    """Whether recreating ``stack`` over ``containers`` takes a pre-apply snapshot: its data
    is backed up, something of it runs (to dump), and an image changes."""
    return (
        stack.backed_up
        and any(c.state == "running" for c in containers)
        and bool(image_changes(stack, containers))
    )


@dataclass(frozen=True)
class ImageChange:
    """An image the box lacks: shipped from here (a local stand-in) or pulled."""

    ref: str
    stack: str
    action: ImageAction
    reason: str


@dataclass(frozen=True)
class VolumeChange:
    """A volume of a compose project the spec does not declare: kept (listed, so that it is
    never forgotten) or, with ``--destroy-data``, deleted."""

    name: str
    stack: str  # its compose project
    action: VolumeAction
    reason: str
    size: int | None  # bytes; None when not measured
    created: str  # when docker created it (RFC 3339)


@dataclass(frozen=True)
class SiteRename:
    """A stack's domain that changes name: the old name stops being served."""

    stack: str
    key: str  # the stack's domain key (``site``, ``app``, …); "" when not known
    old: str
    new: str


@dataclass(frozen=True)
class AppChange:
    """A step inside an app after its health gate (claim a first launch, set in-app
    settings): ``run`` or ``none``, and why. Never a value: names of what it sets only."""

    stack: str
    step: StepKind
    action: AppAction
    label: str
    reason: str


@dataclass
class Plan:
    """The reviewed plan: what apply will do, exactly, and what it was computed against."""

    host: str
    reachable: bool
    note: str
    files: list[FileChange] = field(default_factory=list)
    stacks: list[StackChange] = field(default_factory=list)
    images: list[ImageChange] = field(default_factory=list)
    host_actions: list[str] = field(default_factory=list)  # the box's own: timers to enable
    volumes: list[VolumeChange] = field(default_factory=list)
    renames: list[SiteRename] = field(default_factory=list)
    apps: list[AppChange] = field(default_factory=list)
    rotations: list[Rotation] = field(default_factory=list)  # secrets the box holds old
    inputs_hash: str = ""
    facts_hash: str = ""
    inventory: str = ""  # as the operator names it, for the commands a plan suggests

    @property
    def changes(self) -> bool:
        """Whether applying this plan would change anything."""
        return bool(
            [f for f in self.files if f.action != "unchanged"]
            or [s for s in self.stacks if s.action != "none"]
            or self.images
            or self.host_actions
            or [v for v in self.volumes if v.action == "delete"]
            or [a for a in self.apps if a.action == "run"]
        )

    def counts(self) -> tuple[int, int, int]:
        """(to add, to change, to remove) over files, stacks and images."""
        add = sum(f.action == "create" for f in self.files)
        add += sum(s.action == "start" for s in self.stacks) + len(self.images)
        change = sum(f.action == "update" for f in self.files)
        change += sum(s.action in ("recreate", "reload") for s in self.stacks)
        change += len(self.host_actions)
        change += sum(a.action == "run" for a in self.apps)
        remove = sum(f.action == "delete" for f in self.files)
        remove += sum(s.action == "remove" for s in self.stacks)
        # a removed stack's volumes go with it (compose down -v): counted with the stack
        removed = {s.stack for s in self.stacks if s.action == "remove"}
        remove += sum(v.action == "delete" and v.stack not in removed for v in self.volumes)
        return add, change, remove

    def summary(self) -> str:
        """``Plan: 3 to add, 1 to change, 0 to remove.`` or ``No changes. …``."""
        if not self.changes:
            return "No changes. The host matches the spec."
        add, change, remove = self.counts()
        return f"Plan: {add} to add, {change} to change, {remove} to remove."

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON data, with its own hash (what apply and the journal refer to)."""
        data: dict[str, Any] = {
            "format": PLAN_FORMAT,
            "host": self.host,
            "reachable": self.reachable,
            "note": self.note,
            "inputs_hash": self.inputs_hash,
            "facts_hash": self.facts_hash,
            "summary": self.summary(),
            "changes": self.changes,
            "files": [asdict(f) for f in self.files],
            "stacks": [asdict(s) | {"services": list(s.services)} for s in self.stacks],
            "images": [asdict(i) for i in self.images],
            "host_actions": self.host_actions,
            "volumes": [asdict(v) for v in self.volumes],
            "renames": [asdict(r) for r in self.renames],
            "apps": [asdict(a) for a in self.apps],
            "rotations": [r.to_json() for r in self.rotations],
        }
        # masked before hashing: the hash covers exactly the body that is printed and saved
        data = masked_data(data)
        data["plan_hash"] = plan_hash(data)
        return data


def plan_hash(body: dict[str, Any]) -> str:
    """The hash of a plan's whole JSON body (every key but ``plan_hash`` itself): a saved
    plan whose text was edited, diffs and summary included, no longer matches it."""
    content = {k: v for k, v in body.items() if k != "plan_hash"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def make_plan(
    host: str,
    desired: Desired,
    facts: HostFacts,
    *,
    destroy_data: bool = False,
    inventory: str = "",
) -> Plan:
    """Compare ``desired`` with ``facts``; every difference and every match, with a reason.

    With ``destroy_data``, the volumes of every compose project the spec does not declare
    are to delete (else listed as kept). ``inventory`` names the inventory in the commands
    the plan suggests. A render holding placeholders (an offline render: a sandbox not up)
    is refused: what is planned is applied, and a placeholder must never reach a box."""
    if desired.unresolved:
        raise UnresolvedInput(
            "cannot plan with placeholders: "
            + "; ".join(f"{u.what}: {u.reason}" for u in desired.unresolved)
        )
    if not facts.reachable:
        note = f"host unreachable ({facts.error}); showing everything as to-create"
    elif facts.bare:
        note = "host is bare: never provisioned by vpsctl; everything is to-create"
    else:
        note = f"host reached: docker {facts.docker or 'not installed'}, {len(facts.files)} "
        note += "managed files"
    plan = Plan(
        host=host,
        reachable=facts.reachable,
        note=note,
        inputs_hash=desired.inputs_hash,
        facts_hash=facts.digest() if facts.reachable else "",
        inventory=inventory,
    )
    secrets = desired.secret_values()
    register_secrets(secrets)
    register_secrets(host_secret_values(desired, facts))
    plan.files = _file_changes(desired, facts, secrets)
    plan.images = _image_changes(desired, facts)
    plan.stacks = _stack_changes(desired, facts, plan.files, plan.images)
    plan.host_actions = _timer_changes(desired, facts, plan.files)
    plan.volumes = _volume_changes(desired, facts, plan.stacks, destroy_data)
    plan.renames = site_renames(desired, facts)
    plan.apps = app_changes(desired, facts)
    plan.rotations = pending(desired, facts) if facts.reachable else []
    return plan


def app_changes(desired: Desired, facts: HostFacts) -> list[AppChange]:
    """Each app step against the manifest's record of what the last apply set: ``run`` when
    a part differs (or was never set, or a file the step keeps is missing on the box),
    else ``none``. The record says only that vpsctl set it: an owner claimed, settings
    applied; the step itself checks the app and changes only what differs."""
    recorded = (facts.manifest or {}).get("apps", {})
    out: list[AppChange] = []
    for name, steps in desired.app_steps.items():
        for step in steps:
            record = recorded.get(name, {}).get(step.kind)
            record = record if isinstance(record, dict) else {}
            differ = [part for part, digest in step.parts.items() if record.get(part) != digest]
            missing = [
                path
                for path in step.files
                if path not in facts.app_files or facts.app_files[path][0] & 0o077
            ]
            label = step.label
            if step.kind == "listmonk_settings":
                label += ": " + ", ".join(differ or list(step.parts))
            if not record:
                reason = (
                    "not recorded on the host: runs after the health gate, before the edge "
                    "routes to it (a restored database keeps its owner: nothing is claimed twice)"
                    if step.kind == "first_launch"
                    else "not recorded on the host: set after the health gate"
                )
            elif differ:
                reason = f"differ from what the last apply set: {', '.join(differ)}"
            elif missing:
                reason = f"missing (or readable by others) on the box: {', '.join(missing)}"
            else:
                out.append(
                    AppChange(name, step.kind, "none", label, "done: recorded by the last apply")
                )
                continue
            out.append(AppChange(name, step.kind, "run", label, reason))
    return out


def _volume_changes(
    desired: Desired, facts: HostFacts, stacks: list[StackChange], destroy_data: bool
) -> list[VolumeChange]:
    """The volumes of compose projects the spec does not declare (a removed stack's, kept):
    on a box vpsctl manages every compose project is a stack (the audit fails any other
    container), so these are leftovers; deleted only when asked."""
    removed = {s.stack for s in stacks if s.action == "remove"}
    out: list[VolumeChange] = []
    for v in sorted(facts.volumes, key=lambda v: (v.project, v.name)):
        if v.project in desired.stacks or v.project in desired.held:
            continue
        if v.project in removed:
            gone = "stack removed in this run"
        else:
            gone = f"stack {v.project} is no longer declared"
        if destroy_data:
            out.append(
                VolumeChange(
                    v.name, v.project, "delete", f"{gone}; --destroy-data", v.size, v.created
                )
            )
        else:
            out.append(VolumeChange(v.name, v.project, "keep", f"{gone}; kept", v.size, v.created))
    return out


def host_secret_values(desired: Desired, facts: HostFacts) -> list[str]:
    """The values the host's env files hold under keys that were secret when they were
    rendered (their header says which; a file without one had every key not plainly
    configured now treated as secret), and the box's private files."""
    values: list[str] = []
    for path, have in facts.files.items():
        if have.content is None:
            continue
        if "/env/" in path:
            old = parse_env_file(have.content)
            secret = env_file_secret_keys(have.content)
            if secret is None:
                want = desired.files.get(path)
                plain = set(parse_env_file(want.content)) - want.secret_keys if want else set()
                secret = frozenset(old) - plain
            values += [v for k, v in old.items() if k in secret and v]
        elif path.startswith(HOST_FILES + "/") and not have.mode & 0o077:
            values.append(have.content.decode(errors="replace"))
    return values


def _timer_changes(desired: Desired, facts: HostFacts, files: list[FileChange]) -> list[str]:
    """Backup timers that are not enabled and running on the box although their units are
    in place (a changed unit re-enables them anyway)."""
    units = [p for p in desired.host_files if p.startswith(SYSTEMD_DIR + "/")]
    if not units or not facts.reachable:
        return []
    if any(f.path in units and f.action != "unchanged" for f in files):
        return []
    return [
        f"enable {timer} (on the box: {facts.timers.get(timer) or 'unknown'})"
        for timer in TIMERS
        if facts.timers.get(timer) != "enabled active"
    ]


# ── files ────────────────────────────────────────────────────────────────────────────────


def _file_changes(desired: Desired, facts: HostFacts, secrets: list[str]) -> list[FileChange]:
    """Every desired file against the host's copy, then the managed files the spec no
    longer declares."""
    changes = [
        _file_change(want, facts.files.get(path), facts, secrets)
        for path, want in desired.files.items()
    ]
    return changes + _deleted_files(desired, facts, secrets)


def _file_change(
    want: DesiredFile, have: RemoteFile | None, facts: HostFacts, secrets: list[str]
) -> FileChange:
    """One desired file: created, updated (content, or mode and owner) or unchanged."""
    mode = f"{want.mode:04o}"
    if have is None:
        diff = _diff(None, want, secrets)
        return FileChange(
            want.path, want.stack, "create", "not on the host", None, want.sha256, mode, diff
        )
    action: FileAction = "update"
    diff = ""
    if have.sha256 != want.sha256:
        edited = _edited_on_host(facts, want.path, have.sha256)
        reason = "edited on the host since the last apply" if edited else "content differs"
        diff = _diff(have.content, want, secrets)
    elif have.mode != want.mode or have.owner != "root:root":
        reason = f"mode/owner {have.mode:04o} {have.owner} → {mode} root:root"
    else:
        action, reason = "unchanged", "sha256, mode and owner match"
    return FileChange(want.path, want.stack, action, reason, have.sha256, want.sha256, mode, diff)


def _deleted_files(desired: Desired, facts: HostFacts, secrets: list[str]) -> list[FileChange]:
    """Files vpsctl manages on the host that the spec no longer declares."""
    changes: list[FileChange] = []
    for path in sorted(_managed_paths(facts) - set(desired.files)):
        have = facts.files.get(path)
        if have is None:
            continue  # listed in the manifest but already gone
        stack = _stack_of(path)
        old = DesiredFile(path, b"", have.mode, stack, _kind_of(path, have.mode))
        changes.append(
            FileChange(
                path,
                stack,
                "delete",
                "no longer declared by the spec",
                have.sha256,
                None,
                None,
                _diff(have.content, old, secrets, deleting=True),
            )
        )
    return changes


def _managed_paths(facts: HostFacts) -> set[str]:
    """Files vpsctl manages on the host: its manifest, and anything under its stacks tree."""
    paths = set(facts.files)
    if facts.manifest:
        paths |= set(facts.manifest.get("files", {}))
    return paths


def _edited_on_host(facts: HostFacts, path: str, sha: str) -> bool:
    recorded = (facts.manifest or {}).get("files", {}).get(path, {})
    return bool(recorded) and recorded.get("sha256") != sha


def _stack_of(path: str) -> str:
    rest = path.removeprefix(STACKS_ROOT + "/")
    return rest.split("/", 1)[0] if rest != path else ""


def _kind_of(path: str, mode: int) -> str:
    """What a file the spec no longer declares held, as far as masking its diff goes."""
    if "/env/" in path:
        return "env"
    if path.startswith(HOST_FILES + "/") and not mode & 0o077:
        return "secret"  # the box's private files (a password, a key)
    return "other"


def _diff(old: bytes | None, want: DesiredFile, secrets: list[str], deleting: bool = False) -> str:
    if want.kind == "secret":
        before = (old or b"").decode(errors="replace")
        after = want.content.decode(errors="replace")
        if deleting:
            return f"- (secret file removed; was {_secret_desc(before)})\n"
        if old is None:
            return f"+ (secret file: {_secret_desc(after)})\n"
        return (
            f"~ (secret file: changed ({fingerprint(before)}→{fingerprint(after)[7:]}, "
            f"{len(old)}→{len(want.content)} bytes))\n"
        )
    if want.kind == "env":
        return _env_diff(
            old, b"" if deleting else want.content, want.secret_keys, deleting, secrets
        )
    old_text = _text(old)
    new_text = "" if deleting else _text(want.content)
    if old_text is None or new_text is None:
        return "(binary or large file: content differs)\n"
    lines = difflib.unified_diff(
        _lines(old_text),
        _lines(new_text),
        f"host:{want.path}",
        f"spec:{want.path}",
    )
    return redact("".join(_terminated(lines)), secrets)


def _text(content: bytes | None) -> str | None:
    if content is None:
        return ""
    try:
        return content.decode()
    except UnicodeDecodeError:
        return None


def _lines(text: str) -> list[str]:
    """``text`` split after each ``\\n`` only (``str.splitlines`` also splits at U+2028 and
    other characters a line may hold), each line keeping its ``\\n``."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def _terminated(lines: Any) -> Any:
    for line in lines:
        yield line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"


def _env_diff(
    old: bytes | None,
    new: bytes,
    secret_keys: frozenset[str],
    deleting: bool,
    secrets: list[str],
) -> str:
    """Per-key changes of an env file. Plain config shows its values; a secret shows only a
    fingerprint: a key secret in the new file OR in the host's (its header says; a file
    without one may hold a secret under any key), a key the spec no longer declares, and
    any value that is a known secret's (one used verbatim as plain config)."""
    before = parse_env_file(old or b"")
    after = parse_env_file(new)
    was_secret = env_file_secret_keys(old or b"")
    known = set(secrets)

    def is_masked(key: str) -> bool:
        if deleting or key not in after or key in secret_keys:
            return True
        if key in before and (was_secret is None or key in was_secret):
            return True
        values = [after[key], before.get(key, "")]
        return any(v in known or is_secret(v) or masked(v) != v for v in values)

    out: list[str] = []
    for key in sorted(set(before) | set(after)):
        hide = is_masked(key)
        if key not in before:
            shown = _secret_desc(after[key]) if hide else repr(after[key])
            out.append(f"+ {key} = {shown}")
        elif key not in after:
            out.append(f"- {key} (removed; was {_secret_desc(before[key])})")
        elif before[key] != after[key]:
            if hide:
                out.append(
                    f"~ {key}: changed ({fingerprint(before[key])}→{fingerprint(after[key])[7:]}, "
                    f"{len(before[key].encode())}→{len(after[key].encode())} bytes)"
                )
            else:
                out.append(f"~ {key}: {before[key]!r} → {after[key]!r}")
    return "".join(line + "\n" for line in out)


def _secret_desc(value: str) -> str:
    return f"secret ({fingerprint(value)}, {len(value.encode())} bytes)"


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every registered secret value (see :func:`vpsctl.errors.masked`) and
    every value of ``secrets`` replaced by a mask."""
    register_secrets(secrets)
    return masked(text)


# ── images and stacks ────────────────────────────────────────────────────────────────────


def _image_changes(desired: Desired, facts: HostFacts) -> list[ImageChange]:
    changes: list[ImageChange] = []
    seen: set[str] = set()
    for stack in [*desired.stacks.values(), *desired.held.values()]:
        for image in stack.images:
            if image.ref in facts.images or image.ref in seen:
                continue
            seen.add(image.ref)
            if image.source == "local":
                reason = f"stand-in '{image.standin}' is not on the box; vpsctl ships it"
                changes.append(ImageChange(image.ref, stack.name, "ship", reason))
            else:
                changes.append(
                    ImageChange(image.ref, stack.name, "pull", "not on the box; pulled at apply")
                )
    return changes


def _stack_changes(
    desired: Desired, facts: HostFacts, files: list[FileChange], images: list[ImageChange]
) -> list[StackChange]:
    projects = facts.projects()
    recorded = (facts.manifest or {}).get("stacks", {})
    changed_files = {f.path for f in files if f.action in ("create", "update")}
    missing_images = {i.ref for i in images}
    out: list[StackChange] = []
    for name, stack in desired.stacks.items():
        containers = projects.get(name, [])
        running = {c.service for c in containers if c.state == "running"}
        stack_changed = [p for p in stack.files if p in changed_files]
        lacking = [i.ref for i in stack.images if i.ref in missing_images]
        if not containers:
            reason = "not running on the host" if facts.reachable else "host not reached"
            out.append(StackChange(name, "start", reason, tuple(stack.services)))
            continue
        old_services = recorded.get(name, {}).get("services", {})
        touched = tuple(s for s, digest in stack.services.items() if old_services.get(s) != digest)
        down = tuple(s for s in stack.services if s not in running)
        only_caddyfile = bool(stack_changed) and all(
            p.endswith("/Caddyfile") for p in stack_changed
        )
        if stack.role == "edge" and only_caddyfile and not touched and not down:
            out.append(StackChange(name, "reload", "Caddyfile changed: validated, then reloaded"))
        elif stack_changed or lacking or touched or down:
            services = tuple(dict.fromkeys([*touched, *down]))
            parts = []
            if stack_changed:
                parts.append(f"{len(stack_changed)} file(s) changed")
            if lacking:
                parts.append(f"image(s) missing: {', '.join(lacking)}")
            if down:
                parts.append(f"not running: {', '.join(down)}")
            # running services whose container changes: compose recreates only those
            parts += downtime(stack, tuple(s for s in touched if s not in down))
            services = services or tuple(stack.services)
            snapshot = needs_snapshot(stack, containers)
            if snapshot:
                swapped = sorted({service for service, _, _ in image_changes(stack, containers)})
                parts.append(f"image of {', '.join(swapped)} changes: {SNAPSHOT_REASON}")
            out.append(
                StackChange(
                    name,
                    "recreate",
                    "; ".join(parts),
                    services,
                    snapshot,
                )
            )
        else:
            out.append(
                StackChange(
                    name,
                    "none",
                    f"unchanged: {len(stack.files)} files, images and "
                    f"{len(running)} running services match",
                )
            )
    # a stack another node deploys, held here (:attr:`Desired.held`), is not removed here
    for name in sorted((set(projects) | set(recorded)) - set(desired.stacks) - set(desired.held)):
        owned = any(c.labels.get(LABEL_STACK) == name for c in projects.get(name, []))
        if owned or name in recorded:
            out.append(
                StackChange(
                    name, "remove", "no longer declared: stopped and removed; its volumes are kept"
                )
            )
    return out


# ── site renames ─────────────────────────────────────────────────────────────────────────


def caddy_sites(text: str) -> dict[str, list[str]]:
    """The site addresses of a Caddyfile vpsctl rendered, by stack: each site follows a
    ``# stack NAME[, NAME…]`` comment line (see ``templates/Caddyfile.j2``)."""
    sites: dict[str, list[str]] = {}
    stacks: list[str] = []
    for line in text.split("\n"):
        if line.startswith("# stack "):
            stacks = [s.strip() for s in line[len("# stack ") :].split(",") if s.strip()]
        elif stacks and line.endswith(" {") and not line[0].isspace():
            for stack in stacks:
                sites.setdefault(stack, []).append(line[: -len(" {")].strip())
            stacks = []
    return sites


def site_renames(desired: Desired, facts: HostFacts) -> list[SiteRename]:
    """The sites a stack still declared serves under a new name: the host's Caddyfile (what
    Caddy serves now) against the rendered one, per stack. A name gone and a name added
    are paired by domain key: the key each old name had (the manifest's record of the
    stack's domains) and the key each new name has; with no record, a stack that lost one
    name and gained one renamed it."""
    path = next((p for p, f in desired.files.items() if f.kind == "caddyfile"), None)
    have = facts.files.get(path) if path else None
    if path is None or have is None or have.content is None:
        return []
    old_sites = caddy_sites(have.content.decode(errors="replace"))
    new_sites = caddy_sites(desired.files[path].content.decode(errors="replace"))
    recorded = (facts.manifest or {}).get("stacks", {})
    out: list[SiteRename] = []
    for name, stack in desired.stacks.items():
        gone = [h for h in old_sites.get(name, []) if h not in new_sites.get(name, [])]
        added = [h for h in new_sites.get(name, []) if h not in old_sites.get(name, [])]
        if not gone or not added:
            continue
        new_key = {host: key for key, host in stack.domains.items()}
        old_domains = recorded.get(name, {}).get("domains")
        if isinstance(old_domains, dict):
            old_key = {str(host): str(key) for key, host in old_domains.items()}
            for old in gone:
                key = old_key.get(old, "")
                new = stack.domains.get(key) if key else None
                if new is not None and new in added:
                    out.append(SiteRename(name, key, old, new))
        elif len(gone) == 1 and len(added) == 1:
            out.append(SiteRename(name, new_key.get(added[0], ""), gone[0], added[0]))
    return out
