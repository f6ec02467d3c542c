"""Fixtures: a private copy of the example studio."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import copy_studio


@pytest.fixture
def studio(tmp_path: Path) -> Iterator[Path]:
    """A private copy of the example studio (stacks, inventories, schemas), no secrets.env."""
    yield copy_studio(tmp_path, "schemas")


# A stand-in for the operator's backup key that inventory/prod/host.yaml names
# (`~/.ssh/lumen_backup_ed25519`): fixed bytes, so that golden files stay stable.
FAKE_BACKUP_KEY = (
    b"-----BEGIN OPENSSH PRIVATE KEY-----\n"
    b"dGVzdCBrZXk6IG5vdCBhIHJlYWwga2V5OyB0aGUgZ29sZGVuIGZpbGVzIG5lZWQgZml4ZWQgYnl0ZXM=\n"
    b"-----END OPENSSH PRIVATE KEY-----\n"
)


@pytest.fixture(autouse=True, scope="session")
def operator_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``~`` for the whole run: a home holding the prod inventory's backup key."""
    home = tmp_path_factory.mktemp("home")
    (home / ".ssh").mkdir(mode=0o700)
    key = home / ".ssh/lumen_backup_ed25519"
    key.write_bytes(FAKE_BACKUP_KEY)
    key.chmod(0o600)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        yield home
