"""The pre-apply snapshot: a stack's data, taken before its image changes (only then may the
new version change the data, so only then does a rollback put data back)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from vpsctl.core import sections
from vpsctl.core.plan import StackChange, image_changes
from vpsctl.host.commands import backup
from vpsctl.ops.apply.phase import Phase

if TYPE_CHECKING:
    from vpsctl.ops.apply.applier import Applier

Counts = dict[tuple[str, str, str], int]  # (stack, item, table) → rows


def marked(output: str, mark: str) -> str | None:
    """The arguments of the first ``@@MARK …`` line of a ``vpsctl-backup`` run's output."""
    found = sections.first(sections.split(output), mark)
    return found.args if found is not None else None


def snapshot_id(output: str) -> str | None:
    """The snapshot id a ``vpsctl-backup backup`` printed (``@@snapshot ID …``)."""
    found = marked(output, "snapshot")
    return found.split()[0] if found else None


def count_rows(rows: Iterable[list[str]]) -> Counts:
    """Row counts from ``STACK ITEM TABLE ROWS`` rows (split on tabs), keyed (stack, item,
    table); a malformed row is skipped."""
    counts: Counts = {}
    for row in rows:
        if len(row) == 4 and row[3].strip().isdigit():
            counts[(row[0], row[1], row[2])] = int(row[3])
    return counts


def counted_rows(output: str) -> Counts:
    """The row counts a ``vpsctl-backup backup`` recorded in its snapshot (its ``@@counted
    STACK ITEM TABLE ROWS`` lines, tab-separated), keyed (stack, item, table)."""
    return count_rows(s.args.split("\t") for s in sections.named(sections.split(output), "counted"))


def discarded_rows(before: Counts, now: Counts) -> str:
    """What putting the ``before`` data back in place of ``now`` discards, table by table,
    in words (rows written since, rows that would come back)."""
    said: list[str] = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key, 0), now.get(key, 0)
        if new > old:
            said.append(f"{'/'.join(key)}: {new - old} row(s) written since ({old} → {new})")
        elif new < old:
            said.append(
                f"{'/'.join(key)}: {old - new} row(s) fewer now, back again ({old} → {new})"
            )
    if said:
        return "; ".join(said)
    if not now:
        return "its files as they are now (no table rows to count)"
    return (
        f"no row: every table's count matches ({len(now)} tables; a row changed in place "
        "would only be in the kept copy)"
    )


class Snapshots(Phase):
    """The pre-apply snapshots this run took, and their row counts."""

    def __init__(self, applier: Applier) -> None:
        super().__init__(applier)
        self.taken: dict[str, str] = {}  # stack → its pre-apply snapshot
        self.counted: dict[str, Counts] = {}  # … and the row counts it recorded

    @staticmethod
    def needed(change: StackChange) -> bool:
        """Whether this change takes a pre-apply snapshot: as the plan said, only when the
        image a running container of a backed-up stack runs differs from the one the spec
        wants (see :func:`vpsctl.core.plan.needs_snapshot`)."""
        return change.action == "recreate" and change.snapshot

    def take(self, name: str) -> tuple[bool, str]:
        """Snapshot ``name``'s data before its image changes; (ok, snapshot id or why not).
        The row counts it records are kept: a rollback says what putting it back discards."""
        swapped = image_changes(self.desired.stacks[name], self.facts.projects().get(name, []))
        told = ", ".join(f"{service} {old} → {new}" for service, old, new in swapped)
        # the reason as it stands now: the plan's reason may have moved since (a container
        # recreated by hand), and an env or config change alone never takes one
        why = f"its image changes ({told})" if swapped else "the plan saw its image change"
        self.say(f"{name}: {why}: snapshot of its data first")
        # judged below from its @@ lines: a failure is the stack's outcome, not a crash
        result = self.session.run(
            backup.backup("pre-apply", [name]),
            timeout=3600,
            check=False,
            purpose=f"the pre-apply snapshot of {name}",
        )
        output = result.output
        snapshot = snapshot_id(output)
        if not result.ok or snapshot is None:
            return False, self.clean(marked(output, "fail") or self.applier.last_lines(output, 4))
        self.taken[name] = snapshot
        self.counted[name] = counted_rows(output)
        self.record(f"{name}: pre-apply snapshot {snapshot[:8]}")
        self.say(f"{name}: pre-apply snapshot {snapshot[:8]}")
        return True, snapshot
