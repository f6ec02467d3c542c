"""Fixtures: a private copy of the example studio."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT


@pytest.fixture
def studio(tmp_path: Path) -> Iterator[Path]:
    """A private copy of the example studio (stacks, inventories, schemas), no secrets.env."""
    for name in ("stacks", "inventory", "schemas", "standins"):
        if not (ROOT / name).is_dir():
            continue
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("secrets.env"))
    yield tmp_path
