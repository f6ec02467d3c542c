"""``ulimits`` per service: compose's two shapes, rendered into compose.yaml, and lowered to a
host's ``max_nofile`` (the sandbox's machines cannot give more) with a note saying so.
(Refusals are in the invalid corpus, cases 330-335.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.helpers import ROOT
from vpsctl.core import backupfiles
from vpsctl.ops.inputs import render_spec
from vpsctl.spec.loader import load_spec
from vpsctl.spec.models import Service

BASE = ROOT / "tests/invalid/base"
COMPOSE = "/opt/vpsctl/stacks/shop/compose.yaml"


def service(ulimits: object) -> Service:
    return Service.model_validate(
        {
            "image": "example/app:1.0.0",
            "healthcheck": {"test": ["CMD", "true"]},
            "mem_limit": "64m",
            "ulimits": ulimits,
        }
    )


@pytest.mark.parametrize(
    ("given", "soft", "hard"),
    [(65535, 65535, 65535), ({"soft": 1024, "hard": 4096}, 1024, 4096)],
)
def test_both_compose_shapes(given: object, soft: int, hard: int) -> None:
    limit = service({"nofile": given}).ulimits["nofile"]
    assert (limit.soft, limit.hard) == (soft, hard)


def test_unlimited_is_minus_one_except_for_open_files() -> None:
    assert service({"memlock": -1}).ulimits["memlock"].hard == -1
    with pytest.raises(ValueError, match="cannot be unlimited"):
        service({"nofile": -1})


def studio(tmp_path: Path, host_extra: str = "") -> Path:
    root = tmp_path / "studio"
    shutil.copytree(BASE, root)
    inventory = root / "inventory/test"
    (inventory / "secrets.env.fixture").rename(inventory / "secrets.env")
    (inventory / "secrets.env").chmod(0o600)
    shop = root / "stacks/shop.yaml"
    text = shop.read_text()
    assert text.count("    mem_limit: 256m\n") == 1
    shop.write_text(
        text.replace(
            "    mem_limit: 256m\n",
            "    mem_limit: 256m\n    ulimits:\n      nofile: 262144\n"
            "      nproc: {soft: 512, hard: 1024}\n",
        )
    )
    if host_extra:
        host = inventory / "host.yaml"
        host.write_text(host.read_text() + host_extra)
    return inventory


def rendered(inventory: Path) -> tuple[str, dict[str, object]]:
    local = backupfiles.Repository(url="/srv/restic")  # no backup host needed to render
    text = render_spec(load_spec(inventory), repository=local).files[COMPOSE].content.decode()
    data = YAML(typ="safe").load(text)
    return text, data["services"]["app"]["ulimits"]


def test_rendered_into_compose_as_the_stack_asks(tmp_path: Path) -> None:
    text, ulimits = rendered(studio(tmp_path))
    assert ulimits == {
        "nofile": {"soft": 262144, "hard": 262144},
        "nproc": {"soft": 512, "hard": 1024},
    }
    assert "max_nofile" not in text


def test_a_hosts_max_nofile_lowers_open_files_and_says_so(tmp_path: Path) -> None:
    text, ulimits = rendered(studio(tmp_path, "max_nofile: 20000\n"))
    assert ulimits == {
        "nofile": {"soft": 20000, "hard": 20000},
        "nproc": {"soft": 512, "hard": 1024},  # only open files are capped
    }
    assert (
        "# the stack asks soft 262144, hard 262144; host.yaml's max_nofile 20000 is all this "
        "host's Docker can give"
    ) in text
