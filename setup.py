"""The package list and its data, which pyproject.toml cannot express: every vpsctl package
(found, so a new sub-package ships without a list to keep), plus the files vpsctl ships that
live at the checkout's top level, mapped into the package as vpsctl/_data/<name> (found there
by vpsctl.resources.shipped). Everything else is in pyproject.toml.

The data files are listed here file by file, by one rule: everything under those directories
except an operator's secrets (``secrets.env`` and any copy of it, ``secrets.env.bak``,
``prod.secrets.env``…; the ``*.example`` files are the example's and ship) and interpreter
caches. vpsctl init copies the example by the same rule (vpsctl/cli/init.py).
"""

import os
from pathlib import Path

from setuptools import find_packages, setup

# templates, the bootstrap deploy, the stand-in and sandbox build contexts; the example
# studio `vpsctl init` writes
SHIPPED = ("templates", "deploys", "standins", "sandbox", "inventory", "stacks", "schemas")


def never_shipped(name: str) -> bool:
    """A secrets file (or a copy of one), or an interpreter cache."""
    secret = "secrets.env" in name and not name.endswith(".example")
    return secret or name == "__pycache__" or name.endswith(".pyc")


def files_of(top: str) -> list[str]:
    """Every file under ``top`` that ships, relative to it."""
    found = []
    for folder, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if not never_shipped(d))
        here = Path(folder).relative_to(top)
        found += [str(here / f) for f in files if not never_shipped(f)]
    return sorted(found)


setup(
    packages=[
        *find_packages(include=["vpsctl", "vpsctl.*"]),
        *(f"vpsctl._data.{n}" for n in SHIPPED),
    ],
    package_dir={f"vpsctl._data.{name}": name for name in SHIPPED},
    package_data={f"vpsctl._data.{name}": files_of(name) for name in SHIPPED},
)
