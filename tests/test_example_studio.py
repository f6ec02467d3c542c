"""The example studio, end to end through the CLI: generate, validate, show, schema."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from dotenv import dotenv_values

from tests.helpers import ROOT, run_cli
from vpsctl.spec.loader import load_spec
from vpsctl.spec.schema import schemas

STACKS = {
    "documint",
    "cronping",
    "flagbit",
    "webhookvault",
    "ghost",
    "plausible",
    "listmonk",
    "edge",
}


def test_sandbox_generate_then_validate(studio: Path) -> None:
    gen = run_cli(studio, "secrets", "generate", "-i", "inventory/sandbox")
    assert gen.code == 0, gen.err
    assert "still needed" not in gen.err  # a sandbox needs no account anywhere
    secrets = studio / "inventory/sandbox/secrets.env"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    values = dotenv_values(secrets, interpolate=False)
    assert all(v for v in values.values())
    assert values["DOCUMINT_STRIPE_SECRET_KEY"].startswith("sk_test_")  # type: ignore[union-attr]
    assert values["DOCUMINT_STRIPE_WEBHOOK_SECRET"].startswith("whsec_")  # type: ignore[union-attr]
    val = run_cli(studio, "validate", "-i", "inventory/sandbox")
    assert (val.code, val.out, val.err) == (0, "", "")


def test_prod_validate_after_generate_names_exactly_the_external_secrets(studio: Path) -> None:
    gen = run_cli(studio, "secrets", "generate", "-i", "inventory/prod")
    assert gen.code == 0
    val = run_cli(studio, "validate", "-i", "inventory/prod")
    assert val.code == 1 and val.out == ""
    spec = load_spec(studio / "inventory/prod", secrets=False)
    external = {n for n, (_, kind) in spec.required_secrets().items() if kind.is_external()}
    assert len(external) == 16  # 3 Stripe values x 4 products, Ghost's SMTP login and
    # password, Plausible's and Listmonk's SMTP passwords (Ghost's Content API key is
    # derived by vpsctl, never a secret of secrets.env)
    named = set()
    for line in val.err.splitlines():
        assert line.startswith("inventory/prod/secrets.env: "), line
        name, message = line.removeprefix("inventory/prod/secrets.env: ").split(": ", 1)
        assert message.startswith("missing: ") and "issued externally" in message
        named.add(name)
    assert named == external
    for name in external:
        assert name in gen.err  # generate listed each, with where to get it
    assert "get it from: Stripe dashboard (DocuMint account)" in gen.err


def test_generate_never_overwrites_and_fills_empty_lines_in_place(studio: Path) -> None:
    secrets = studio / "inventory/sandbox/secrets.env"
    secrets.write_text(
        "# mine\nGHOST_DB_PASSWORD='keep-this-one-as-it-is-please'\nLISTMONK_DB_PASSWORD=\n"
    )
    run_cli(studio, "secrets", "generate", "-i", "inventory/sandbox")
    text = secrets.read_text()
    lines = text.splitlines()
    assert lines[0] == "# mine"
    assert lines[1] == "GHOST_DB_PASSWORD='keep-this-one-as-it-is-please'"
    assert lines[2].startswith("LISTMONK_DB_PASSWORD='") and len(lines[2]) > 30
    again = run_cli(studio, "secrets", "generate", "-i", "inventory/sandbox")
    assert "nothing to generate" in again.err
    assert secrets.read_text() == text


def test_show_masks_every_secret_and_resolves_domains(studio: Path) -> None:
    run_cli(studio, "secrets", "generate", "-i", "inventory/sandbox")
    shown = run_cli(studio, "show", "-i", "inventory/sandbox", "--json")
    assert shown.code == 0
    data = json.loads(shown.out)
    assert set(data["stacks"]) == STACKS
    app = data["stacks"]["documint"]["services"]["app"]
    assert app["env"]["APP_URL"] == "https://documint.lumen.test"
    assert app["secrets"]["STRIPE_WEBHOOK_SECRET"].startswith(
        "DOCUMINT_STRIPE_WEBHOOK_SECRET <secret 38 bytes sha256:"
    )
    plausible = data["stacks"]["plausible"]["services"]["plausible"]["env"]
    assert plausible["DATABASE_URL"] == (
        "postgres://postgres:{secret.PLAUSIBLE_DB_PASSWORD}@db:5432/plausible_db"
    )
    as_yaml = run_cli(studio, "show", "-i", "inventory/sandbox")
    assert as_yaml.code == 0 and "documint.lumen.test" in as_yaml.out


def test_environment_of_a_service_composes_secret_urls(studio: Path) -> None:
    run_cli(studio, "secrets", "generate", "-i", "inventory/sandbox")
    spec = load_spec(studio / "inventory/sandbox")
    env = spec.environment("plausible", "plausible")
    password = spec.secret("PLAUSIBLE_DB_PASSWORD")
    assert password is not None
    url = env["DATABASE_URL"]
    assert not isinstance(url, str)  # built from a secret: a secret as a whole
    assert url.reveal() == f"postgres://postgres:{password.reveal()}@db:5432/plausible_db"
    assert env["BASE_URL"] == "https://stats.lumen.test"


def test_committed_schemas_match_the_models() -> None:
    for name, schema in schemas().items():
        committed = json.loads((ROOT / "schemas" / f"{name}.schema.json").read_text())
        assert committed == schema, f"schemas/{name}.schema.json is stale: run `make schemas`"


def test_example_files_point_editors_at_the_schemas() -> None:
    for path in [*(ROOT / "stacks").glob("*.yaml")]:
        assert path.read_text().startswith(
            "# yaml-language-server: $schema=../schemas/stack.schema.json\n"
        ), path
    for env in ("prod", "sandbox"):
        host = (ROOT / "inventory" / env / "host.yaml").read_text()
        assert host.startswith("# yaml-language-server: $schema=../../schemas/host.schema.json\n")


def test_secrets_examples_list_every_key(studio: Path) -> None:
    for env in ("prod", "sandbox"):
        result = run_cli(studio, "secrets", "example", "-i", f"inventory/{env}")
        committed = (ROOT / "inventory" / env / "secrets.env.example").read_text()
        assert result.out == committed, f"inventory/{env}/secrets.env.example is stale"
        spec = load_spec(studio / f"inventory/{env}", secrets=False)
        for name in spec.required_secrets():
            assert f"# {name}=\n" in committed
        # every line is a comment: a copied example can never pass as real secrets
        assert all(not line or line.startswith("#") for line in committed.splitlines())


def test_schema_command_prints_and_writes(studio: Path) -> None:
    host = run_cli(studio, "schema", "host")
    assert json.loads(host.out)["title"] == "Host"
    both = run_cli(studio, "schema")
    assert set(json.loads(both.out)) == {"host", "stack"}
    wrote = run_cli(studio, "schema", "--out", "out")
    assert wrote.code == 0
    assert sorted(os.listdir(studio / "out")) == ["host.schema.json", "stack.schema.json"]


def test_memory_budget_of_the_example_fits_an_8gb_box(studio: Path) -> None:
    run_cli(studio, "secrets", "generate", "-i", "inventory/sandbox")
    spec = load_spec(studio / "inventory/sandbox")
    limits = [s.mem_limit or 0 for st in spec.stacks.values() for s in st.services.values()]
    total = sum(limits)
    assert spec.host.memory is not None
    assert total + spec.host.os_reserve <= spec.host.memory
    assert 5 * 1024**3 < total < 7 * 1024**3  # FACTS.md: about 6 GiB of limits


def test_validate_default_inventory_is_prod(studio: Path) -> None:
    result = run_cli(studio, "validate")
    assert result.code == 1
    assert result.err.startswith("inventory/prod/secrets.env: file not found")


def test_internal_errors_are_reported_without_a_traceback(studio: Path) -> None:
    result = run_cli(studio, "validate", "-i", "no/such/dir")
    assert result.code == 1
    assert result.err == "no/such/dir: no such inventory directory\n"
