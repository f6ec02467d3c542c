"""What every phase of an apply shares: the run it belongs to (its session, spec, desired
state, facts, plan, and how it speaks and records)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vpsctl.core.facts import HostFacts
from vpsctl.core.plan import Plan
from vpsctl.core.render import Desired
from vpsctl.host.remote import Remote
from vpsctl.spec.studio import Spec

if TYPE_CHECKING:
    from vpsctl.ops.apply.applier import Applier


class Phase:
    """One phase of an apply run, over the run's session; its state lives in the
    :class:`~vpsctl.ops.apply.applier.Applier` (read through these properties, so a phase
    always sees the run as it is now)."""

    def __init__(self, applier: Applier) -> None:
        self.applier = applier

    @property
    def session(self) -> Remote:
        return self.applier.session

    @property
    def spec(self) -> Spec:
        return self.applier.spec

    @property
    def desired(self) -> Desired:
        return self.applier.desired

    @property
    def facts(self) -> HostFacts:
        return self.applier.facts

    @property
    def plan(self) -> Plan:
        return self.applier.plan

    def say(self, text: str) -> None:
        self.applier.say(text)

    def record(self, text: str) -> None:
        self.applier.record(text)

    def clean(self, text: str) -> str:
        return self.applier.clean(text)
