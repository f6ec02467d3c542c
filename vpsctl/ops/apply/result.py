"""What an apply run did: each stack's outcome, typed, and the run's."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from vpsctl.core.plan import Plan


class StackResult(StrEnum):
    """What became of one stack in a run."""

    APPLIED = "applied"  # converged, its gate passed
    UNCHANGED = "unchanged"
    REMOVED = "removed"
    FAILED = "failed"  # refused before any change (or a removal failed): it is as it was
    ROLLED_BACK = "rolled back"  # the change failed; the previous version is back, checked
    ROLLBACK_FAILED = "rollback failed"  # ... and putting the previous version back failed too


CONVERGED = (StackResult.APPLIED, StackResult.UNCHANGED, StackResult.REMOVED)


@dataclass
class StackOutcome:
    """What happened to one stack: ``action`` is the plan's stack action (``start``,
    ``recreate``, ``reload``, ``remove``, ``none``) or ``app steps``."""

    stack: str
    action: str
    result: StackResult
    detail: str = ""
    seconds: float = 0.0


@dataclass
class ApplyResult:
    """The whole run."""

    plan: Plan
    outcomes: list[StackOutcome] = field(default_factory=list)
    # failures outside any one stack's gate: the prune, the manifest, the journal
    problems: list[str] = field(default_factory=list)
    bootstrapped: bool = False
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # phase → seconds

    @property
    def ok(self) -> bool:
        """Whether every stack converged and nothing else failed."""
        return not self.problems and all(o.result in CONVERGED for o in self.outcomes)

    @property
    def rollbacks_failed(self) -> list[StackOutcome]:
        """The stacks left in a state nobody checked: the ones to look at first."""
        return [o for o in self.outcomes if o.result == StackResult.ROLLBACK_FAILED]
