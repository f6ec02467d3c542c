"""apply: converge the host. This module holds the bootstrap phase (``--only bootstrap``).

Bootstrap takes a bare Debian 13 / Ubuntu 22.04/24.04 box to one ready for the studio
(``deploys/bootstrap.py``), through the pyinfra adapter. It is idempotent: a second run
reports no changes.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import IO

from vpsctl import targets
from vpsctl.remote import DeployReport, Session
from vpsctl.spec.studio import Spec

DEPLOYS = Path(__file__).resolve().parent.parent / "deploys"


def _deploy_module(name: str) -> ModuleType:
    """Load ``deploys/<name>.py`` (a pyinfra deploy file, also runnable by the pyinfra CLI)."""
    qualified = f"vpsctl_deploys.{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, DEPLOYS / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load deploys/{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class BootstrapResult:
    """What bootstrap did on the host."""

    report: DeployReport
    seconds: float


def bootstrap(spec: Spec, out: IO[str]) -> BootstrapResult:
    """Run the bootstrap deploy on ``spec``'s host; print each change to ``out``."""
    import time  # noqa: PLC0415

    module = _deploy_module("bootstrap")
    host = spec.host
    settings = module.Settings(
        timezone=host.timezone,
        swap_bytes=host.swap,
        swappiness=host.swappiness,
        open_ports=tuple(host.open_ports),
    )
    started = time.monotonic()
    print(f"bootstrap {host.name} …", file=out)
    with Session(targets.target(spec)) as session:
        report = session.deploy(module.bootstrap, settings=settings)
    seconds = time.monotonic() - started
    for name in report.changed:
        print(f"  changed: {name.removeprefix('vpsctl bootstrap | ')}", file=out)
    unchanged = len(report.ops) - len(report.changed)
    print(
        f"bootstrap: {len(report.changed)} changed, {unchanged} already in place ({seconds:.1f}s)",
        file=out,
    )
    return BootstrapResult(report, seconds)
