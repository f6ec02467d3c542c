"""Where the files that ship with vpsctl are: templates, deploys, stand-in and sandbox contexts,
and the example studio ``vpsctl init`` copies (inventory, stacks, schemas).

In a source checkout (and an editable install of it) they sit at the repository's top level
(``templates/``, ``deploys/``, ``standins/``, ``sandbox/``, ``inventory/``, ``stacks/``,
``schemas/``); in an installed wheel the build maps them into the package as
``vpsctl/_data/<name>`` (pyproject's ``package-dir``). Never the studio's files: those are
found from the current directory or ``--root``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vpsctl.spec.studio import Spec

_PACKAGE = Path(__file__).resolve().parent


def shipped(name: str) -> Path:
    """The directory ``name`` of vpsctl (``templates``, ``deploys``, ``standins``, ``sandbox``;
    the example studio's ``inventory``, ``stacks``, ``schemas``)."""
    installed = _PACKAGE / "_data" / name
    if installed.is_dir():
        return installed
    return _PACKAGE.parent / name


def standins_root(spec: Spec) -> Path:
    """The stand-in build contexts: host.yaml's ``standins_dir`` (from that file), else vpsctl's."""
    if spec.host.standins_dir is None:
        return shipped("standins")
    return ((spec.inventory / "host.yaml").parent / spec.host.standins_dir).resolve()
