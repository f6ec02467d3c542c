"""The bootstrap phase: the pyinfra deploy that prepares a box (docker, firewall, swap …)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import threading
import time
from types import ModuleType
from typing import IO, Any

from vpsctl.core import firewall
from vpsctl.host.remote import DeployReport, Remote, Session
from vpsctl.ops import targets
from vpsctl.resources import shipped
from vpsctl.spec.studio import Spec

DEPLOYS = shipped("deploys")


_LOADING = threading.Lock()  # a module is in sys.modules before it has run: one loader


def deploy_module(name: str) -> ModuleType:
    """Load ``deploys/<name>.py`` (a pyinfra deploy file, also runnable by the pyinfra CLI).
    Thread-safe: the nodes of a cluster are read and judged from threads of their own."""
    qualified = f"vpsctl_deploys.{name}"
    with _LOADING:
        if qualified in sys.modules:
            return sys.modules[qualified]
        spec = importlib.util.spec_from_file_location(qualified, DEPLOYS / f"{name}.py")
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load deploys/{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[qualified] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[qualified]  # a half-run module is never handed out
            raise
        return module


def bootstrap_settings(spec: Spec) -> Any:
    """The bootstrap deploy's settings for ``spec``'s host."""
    host = spec.host
    return deploy_module("bootstrap").Settings(
        timezone=host.timezone,
        swap_bytes=host.swap,
        swappiness=host.swappiness,
        open_ports=tuple(host.open_ports),
        udp_ports=firewall.ports_for(spec).udp,
    )


def settings_hash(settings: Any) -> str:
    """The hash of the bootstrap settings the manifest records (a change re-runs it)."""
    data = settings.as_data()
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def run_bootstrap(
    session: Remote, spec: Spec, out: IO[str], settings: Any = None, label: str = ""
) -> DeployReport:
    """Run the bootstrap deploy (with ``settings``, by default the host's; ``label`` names
    the box, by default the host); print each change."""
    started = time.monotonic()
    print(f"bootstrap {label or spec.host.name} …", file=out)
    settings = settings if settings is not None else bootstrap_settings(spec)
    report = session.deploy(deploy_module("bootstrap").bootstrap, settings=settings)
    for name in report.changed:
        print(f"  changed: {name.removeprefix('vpsctl bootstrap | ')}", file=out)
    unchanged = len(report.ops) - len(report.changed)
    print(
        f"bootstrap: {len(report.changed)} changed, {unchanged} already in place "
        f"({time.monotonic() - started:.1f}s)",
        file=out,
    )
    return report


def bootstrap(spec: Spec, out: IO[str]) -> DeployReport:
    """``apply --only bootstrap``."""
    with Session(targets.target(spec)) as session:
        return run_bootstrap(session, spec, out)
