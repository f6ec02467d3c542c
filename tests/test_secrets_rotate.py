"""Secret rotation (issue 13): what every secret of the example studio IS to the box
(``vpsctl.core.rotation.classify``), ``secrets rotate`` and ``secrets set`` writing into the
plain and the age store (and refusing, with nothing written), the plan showing pending
rotations masked with their dependents, and apply carrying them out over a scripted session:
the database ALTERed before its stack changes (the SQL and the passwords on stdin, never in
a command), the restic repository rekeyed before the box's password file changes, the old
password put back in the database and the store when the stack fails, and the journal's
entries. Every CLI run goes through run_cli, which scans its output for every value."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pyrage
import pytest

from tests import factsim, scripted
from tests.helpers import assert_no_secrets, golden_prod_copy, run_cli
from tests.scripted import journal_of, outcome_of
from vpsctl.cli.views import plan_text
from vpsctl.core.facts import parse
from vpsctl.core.plan import make_plan
from vpsctl.core.rotation import Role, classify, image_engine
from vpsctl.host.commands import database
from vpsctl.ops import rotate
from vpsctl.ops.apply import StackResult
from vpsctl.ops.inputs import render_spec
from vpsctl.spec import age, store
from vpsctl.spec.envfile import parse_secrets
from vpsctl.spec.loader import load_spec

INV = "inventory/prod"

ROLES = {
    Role.DATABASE: {
        "GHOST_DB_PASSWORD",
        "GHOST_DB_ROOT_PASSWORD",
        "PLAUSIBLE_DB_PASSWORD",
        "LISTMONK_DB_PASSWORD",
    },
    Role.RESTIC: {"RESTIC_PASSWORD"},
    Role.REGENERATE: {
        "DOCUMINT_SESSION_SECRET",
        "CRONPING_SESSION_SECRET",
        "FLAGBIT_SESSION_SECRET",
        "WEBHOOKVAULT_SESSION_SECRET",
        "PLAUSIBLE_SECRET_KEY_BASE",
    },
    Role.ENCRYPTS_DATA: {"PLAUSIBLE_TOTP_VAULT_KEY"},
    Role.APP_PASSWORD: {
        "GHOST_OWNER_PASSWORD",
        "PLAUSIBLE_OWNER_PASSWORD",
        "LISTMONK_ADMIN_PASSWORD",
    },
    Role.EXTERNAL: {
        *(f"{p}_STRIPE_{k}" for p in ("DOCUMINT", "CRONPING", "FLAGBIT", "WEBHOOKVAULT")
          for k in ("SECRET_KEY", "PUBLISHABLE_KEY", "WEBHOOK_SECRET")),
        "GHOST_SMTP_USER",
        "GHOST_SMTP_PASSWORD",
        "PLAUSIBLE_SMTP_PASSWORD",
        "LISTMONK_SMTP_PASSWORD",
    },
}  # fmt: skip


@pytest.fixture
def prod(tmp_path: Path) -> Iterator[Path]:
    yield golden_prod_copy(tmp_path)


def _values(root: Path) -> dict[str, str]:
    where = store.store_of(root / INV)
    found = parse_secrets(store.read_text(where) or "", where.shown)[0]
    return {k: e.value.reveal() for k, e in found.entries.items() if e.value is not None}


# ── what each secret is ─────────────────────────────────────────────────────────────────


def test_every_secret_of_the_example_studio_is_classified(prod: Path) -> None:
    uses = classify(load_spec(prod / INV))
    found: dict[Role, set[str]] = {}
    for name, use in uses.items():
        found.setdefault(use.role, set()).add(name)
    assert found == ROLES
    ghost = uses["GHOST_DB_PASSWORD"]
    assert ghost.dependents == ("ghost/ghost", "ghost/mysql")
    [account] = ghost.databases
    assert (account.service, account.engine, account.accounts) == (
        "mysql",
        "mysql",
        (("ghost", "%"),),
    )
    [root] = uses["GHOST_DB_ROOT_PASSWORD"].databases
    assert root.root and set(root.accounts) == {("root", "%"), ("root", "localhost")}
    [plausible] = uses["PLAUSIBLE_DB_PASSWORD"].databases
    assert plausible.accounts == (("postgres", ""),)  # POSTGRES_USER unset: postgres
    assert uses["PLAUSIBLE_DB_PASSWORD"].dependents == ("plausible/plausible", "plausible/db")
    [listmonk] = uses["LISTMONK_DB_PASSWORD"].databases
    assert listmonk.accounts == (("listmonk", ""),)
    assert "obtain" not in uses["DOCUMINT_STRIPE_SECRET_KEY"].why
    assert "Developers → API keys → Secret key" in uses["DOCUMINT_STRIPE_SECRET_KEY"].why
    assert "2FA" in uses["PLAUSIBLE_TOTP_VAULT_KEY"].why
    assert "Ghost admin" in uses["GHOST_OWNER_PASSWORD"].why
    assert "inventory/prod` to the same value" in uses["LISTMONK_ADMIN_PASSWORD"].why


def test_a_database_password_is_known_by_the_image_and_variable_not_the_name(prod: Path) -> None:
    assert image_engine("postgres:16.11-alpine") == "postgres"
    assert image_engine("docker.io/library/mysql@sha256:" + "a" * 64) == "mysql"
    assert image_engine("mariadb:11") == "mysql"
    assert image_engine("ghcr.io/lumen-studio/postgres-tools:1.0") is None
    # the same secret renamed is still the database's; a *_DB_PASSWORD fed to no database
    # image is not
    ghost = prod / "stacks/ghost.yaml"
    ghost.write_text(ghost.read_text().replace("GHOST_DB_PASSWORD", "GHOST_SQL_SECRET"))
    secrets = prod / INV / "secrets.env"
    secrets.write_text(secrets.read_text().replace("GHOST_DB_PASSWORD=", "GHOST_SQL_SECRET="))
    uses = classify(load_spec(prod / INV))
    assert uses["GHOST_SQL_SECRET"].role == Role.DATABASE


# ── secrets rotate / set ────────────────────────────────────────────────────────────────


def test_rotate_writes_fresh_values_of_the_right_kind_into_the_plain_store(prod: Path) -> None:
    old = _values(prod)
    keys = ["GHOST_DB_PASSWORD", "RESTIC_PASSWORD", "DOCUMINT_SESSION_SECRET"]
    done = run_cli(prod, "secrets", "rotate", "-i", INV, *keys)
    assert done.code == 0, done.err
    new = _values(prod)
    assert {k for k in old if old[k] != new[k]} == set(keys)
    spec = load_spec(prod / INV)  # still valid: every new value is of its kind
    for key in keys:
        value = spec.secret(key)
        assert value is not None
        assert f"~ {key} (" in done.err and f"→{value.fingerprint[7:]})" in done.err
    assert "dependents: ghost/ghost, ghost/mysql" in done.err
    assert "users are logged out" in done.err
    assert (prod / INV / "secrets.env").stat().st_mode & 0o777 == 0o600
    assert_no_secrets(prod, done.out, done.err)


def test_rotate_all_rotates_exactly_the_rotatable_secrets(prod: Path) -> None:
    old = _values(prod)
    done = run_cli(prod, "secrets", "rotate", "-i", INV, "--all")
    assert done.code == 0, done.err
    new = _values(prod)
    rotatable = ROLES[Role.DATABASE] | ROLES[Role.RESTIC] | ROLES[Role.REGENERATE]
    assert {k for k in old if old[k] != new[k]} == rotatable
    load_spec(prod / INV)


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (["PLAUSIBLE_TOTP_VAULT_KEY"], "PLAUSIBLE_TOTP_VAULT_KEY: refused (encrypts-data)"),
        (["GHOST_OWNER_PASSWORD"], "GHOST_OWNER_PASSWORD: refused (app-password)"),
        (["DOCUMINT_STRIPE_SECRET_KEY"], "DOCUMINT_STRIPE_SECRET_KEY: refused (external)"),
        (["NOT_A_KEY"], "NOT_A_KEY: no placed stack (nor host.yaml's backup) uses it"),
        (["GHOST_DB_PASSWORD", "LISTMONK_ADMIN_PASSWORD"], "LISTMONK_ADMIN_PASSWORD: refused"),
        ([], "which KEY?"),
    ],
)
def test_a_refused_or_unknown_key_changes_nothing(
    prod: Path, keys: list[str], expected: str
) -> None:
    before = (prod / INV / "secrets.env").read_bytes()
    done = run_cli(prod, "secrets", "rotate", "-i", INV, *keys)
    assert done.code == 1
    assert expected in done.err, done.err
    assert "rotatable here: DOCUMINT_SESSION_SECRET" in done.err
    assert (prod / INV / "secrets.env").read_bytes() == before


def test_a_value_pasted_as_a_key_is_never_echoed(prod: Path) -> None:
    value = _values(prod)["GHOST_DB_PASSWORD"]
    done = run_cli(prod, "secrets", "rotate", "-i", INV, value)
    assert done.code == 1 and value not in done.err
    assert f"a key of {len(value)} characters" in done.err


def _sealed(prod: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = pyrage.x25519.Identity.generate()
    (tmp_path / "me.txt").write_text(f"{key}\n")
    (tmp_path / "me.txt").chmod(0o600)
    monkeypatch.setenv(age.IDENTITY_ENV, str(tmp_path / "me.txt"))
    (prod / INV / "recipients").write_text(f"{key.to_public()}\n")
    assert run_cli(prod, "secrets", "encrypt", "-i", INV).code == 0


def test_rotate_and_set_write_into_the_age_store(
    prod: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sealed(prod, tmp_path, monkeypatch)
    old = _values(prod)
    done = run_cli(prod, "secrets", "rotate", "-i", INV, "PLAUSIBLE_DB_PASSWORD")
    assert done.code == 0, done.err
    assert not (prod / INV / "secrets.env").exists()
    assert "secrets.env.age: 1 secret(s) changed" in done.err
    new = _values(prod)
    assert new["PLAUSIBLE_DB_PASSWORD"] != old["PLAUSIBLE_DB_PASSWORD"]
    monkeypatch.setattr("sys.stdin", io.StringIO("whsec_" + "Q" * 32 + "\n"))
    setting = run_cli(prod, "secrets", "set", "-i", INV, "DOCUMINT_STRIPE_WEBHOOK_SECRET")
    assert setting.code == 0, setting.err
    assert _values(prod)["DOCUMINT_STRIPE_WEBHOOK_SECRET"] == "whsec_" + "Q" * 32
    assert "Q" * 32 not in setting.err
    load_spec(prod / INV)


def test_set_reads_stdin_and_checks_the_kind(prod: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = (prod / INV / "secrets.env").read_bytes()
    wrong = "pk_live_" + "Z" * 30
    monkeypatch.setattr("sys.stdin", io.StringIO(wrong + "\n"))
    refused = run_cli(prod, "secrets", "set", "-i", INV, "DOCUMINT_STRIPE_SECRET_KEY")
    assert refused.code == 1 and "is a publishable key (pk_…)" in refused.err
    assert wrong not in refused.err and "nothing changed" in refused.err
    monkeypatch.setattr("sys.stdin", io.StringIO("x" * 40 + "'\n"))
    quoted = run_cli(prod, "secrets", "set", "-i", INV, "GHOST_DB_PASSWORD")
    assert quoted.code == 1 and "quote" in quoted.err
    monkeypatch.setattr("sys.stdin", io.StringIO("sk_live_" + "K" * 30 + "\n"))
    unknown = run_cli(prod, "secrets", "set", "-i", INV, "NOT_DECLARED")
    assert unknown.code == 1 and "NOT_DECLARED: no placed stack" in unknown.err
    assert (prod / INV / "secrets.env").read_bytes() == before
    monkeypatch.setattr("sys.stdin", io.StringIO("sk_live_" + "K" * 30 + "\n"))
    done = run_cli(prod, "secrets", "set", "-i", INV, "DOCUMINT_STRIPE_SECRET_KEY")
    assert done.code == 0, done.err
    assert _values(prod)["DOCUMINT_STRIPE_SECRET_KEY"] == "sk_live_" + "K" * 30


# ── the plan ────────────────────────────────────────────────────────────────────────────


def test_the_plan_shows_each_rotation_masked_with_its_dependents(prod: Path) -> None:
    host = factsim.converged(render_spec(load_spec(prod / INV)))
    old = _values(prod)
    rotate.rotate(prod / INV, ["LISTMONK_DB_PASSWORD", "RESTIC_PASSWORD", "FLAGBIT_SESSION_SECRET"])
    spec = load_spec(prod / INV)
    plan = make_plan("lumen-prod", render_spec(spec), parse(host.output()))
    shown = {r.key: r for r in plan.rotations}
    assert set(shown) == {"LISTMONK_DB_PASSWORD", "RESTIC_PASSWORD", "FLAGBIT_SESSION_SECRET"}
    listmonk = shown["LISTMONK_DB_PASSWORD"]
    new = spec.secret("LISTMONK_DB_PASSWORD")
    assert new is not None
    assert listmonk.new == new.fingerprint and listmonk.old != listmonk.new
    text = plan_text(plan)
    assert (
        f"~ LISTMONK_DB_PASSWORD (database): changed ({listmonk.old}→{listmonk.new[7:]}); "
        "restarts listmonk/listmonk, listmonk/db" in text
    )
    assert "FLAGBIT_SESSION_SECRET (regenerate)" in text and "users are logged out" in text
    assert "restic key add (new), verified, then key remove (old)" in text
    data = plan.to_json()
    [entry] = [r for r in data["rotations"] if r["key"] == "LISTMONK_DB_PASSWORD"]
    assert entry["databases"] == ["listmonk/db (postgres: listmonk)"]
    everything = text + json.dumps(data)
    for key in shown:
        assert old[key] not in everything
    assert_no_secrets(prod, everything)


# ── apply ───────────────────────────────────────────────────────────────────────────────


def _rotations(session: scripted.ScriptedSession) -> list[dict[str, str]]:
    """The journal line's rotation entries."""
    entries = journal_of(session)["rotations"]
    assert isinstance(entries, list)
    return entries


CONTAINER = "@@id c0ffee\n@@net plausible_default 172.18.0.5\n"


def _rotated_session(
    prod: Path, keys: list[str]
) -> tuple[scripted.ScriptedSession, dict[str, str]]:
    """A session to a box that runs the studio with its current values, after ``keys`` were
    rotated in the store; the old values."""
    host = factsim.converged(render_spec(load_spec(prod / INV)))
    old = _values(prod)
    rotate.rotate(prod / INV, keys)
    session = scripted.converged_session(load_spec(prod / INV), host)
    session.answer(r"id=\$\(docker ps -q", stdout=CONTAINER)
    return session, old


def test_apply_alters_the_database_before_its_stack_changes(prod: Path) -> None:
    session, old = _rotated_session(prod, ["PLAUSIBLE_DB_PASSWORD", "GHOST_DB_ROOT_PASSWORD"])
    spec = load_spec(prod / INV)
    result, said = scripted.run_applier(spec, session)
    assert result.ok, session.log()
    order = session.in_order(
        r"docker exec -i c0ffee sh -c .*psql",
        r"put_files .*/plausible/env/db.env",
        r"docker compose -p plausible up",
    )
    assert len(order) == 3, session.log()
    [mysql] = session.ran(r"docker exec -i c0ffee sh -c .*mysql -uroot")
    assert session.in_order(mysql, r"docker compose -p ghost up")
    for key in ("PLAUSIBLE_DB_PASSWORD", "GHOST_DB_ROOT_PASSWORD"):
        assert all(old[key] not in c.command for c in session.calls)
        assert all(_values(prod)[key] not in c.command for c in session.calls)
    assert "PLAUSIBLE_DB_PASSWORD: password changed in plausible/db (postgres: postgres)" in said
    journal = journal_of(session)
    entries = {e["key"]: e for e in _rotations(session)}
    assert set(entries) == {"PLAUSIBLE_DB_PASSWORD", "GHOST_DB_ROOT_PASSWORD"}
    assert all(e["result"] == "ok" and e["from"] != e["to"] for e in entries.values())
    assert set(entries["PLAUSIBLE_DB_PASSWORD"]) == {"key", "role", "from", "to", "time", "result"}
    assert_no_secrets(prod, said, json.dumps(journal))
    for value in old.values():
        assert value not in said and value not in json.dumps(journal)


def test_a_refused_alter_changes_nothing_of_the_stack(prod: Path) -> None:
    session, _old = _rotated_session(prod, ["LISTMONK_DB_PASSWORD"])
    session.fail(r"docker exec -i c0ffee sh -c .*psql", "psql: error: connection refused")
    result, _said = scripted.run_applier(load_spec(prod / INV), session)
    listmonk = outcome_of(result, "listmonk")
    assert listmonk.result == StackResult.FAILED
    assert "the password could not be changed in listmonk/db" in listmonk.detail
    assert not session.ran(r"docker compose -p listmonk up")
    assert not [c for c in session.calls if "listmonk/env" in c.command and c.kind == "put_files"]
    [entry] = _rotations(session)
    assert entry["result"] == "failed"
    # the box still holds the old value: the next plan shows the rotation again
    assert session.host is not None  # nothing was uploaded: the box is as it was
    facts = parse(session.host.output())
    again = make_plan("lumen-prod", render_spec(load_spec(prod / INV)), facts)
    assert [r.key for r in again.rotations] == ["LISTMONK_DB_PASSWORD"]


def test_a_failed_gate_puts_the_old_password_back_in_the_database_and_the_store(
    prod: Path,
) -> None:
    session, old = _rotated_session(prod, ["LISTMONK_DB_PASSWORD"])
    session.fail(
        r"docker compose -p listmonk up", "container listmonk-listmonk-1 is unhealthy", times=1
    )
    result, said = scripted.run_applier(load_spec(prod / INV), session)
    assert outcome_of(result, "listmonk").result == StackResult.ROLLED_BACK, session.log()
    alters = session.ran(r"docker exec -i c0ffee sh -c .*psql")
    assert len(alters) == 2  # the new password in, then the old one back
    assert session.in_order(alters[1], r"docker compose -p listmonk up")
    assert _values(prod)["LISTMONK_DB_PASSWORD"] == old["LISTMONK_DB_PASSWORD"]
    assert "secrets store: the old value of LISTMONK_DB_PASSWORD is back" in said
    [entry] = _rotations(session)
    assert entry["result"] == "rolled back"


def test_the_restic_password_is_rekeyed_before_the_box_gets_it(prod: Path) -> None:
    session, _old = _rotated_session(prod, ["RESTIC_PASSWORD"])
    session.answer(
        r"vpsctl-backup rekey", stdout="@@rekey added\n@@rekey removed 1a2b3c4d\n@@rekey verified\n"
    )
    result, said = scripted.run_applier(load_spec(prod / INV), session)
    assert result.ok, session.log()
    assert session.in_order(r"vpsctl-backup rekey", r"put_files /opt/vpsctl/host/backup/password")
    assert "restic added, removed 1a2b3c4d, verified" in said
    [entry] = _rotations(session)
    assert (entry["key"], entry["result"]) == ("RESTIC_PASSWORD", "ok")


def test_a_failed_rekey_keeps_the_box_password_file_and_says_what_to_run(prod: Path) -> None:
    session, _old = _rotated_session(prod, ["RESTIC_PASSWORD"])
    session.fail(r"vpsctl-backup rekey", "@@fail unreachable restic key failed")
    with pytest.raises(Exception, match=r"run `vpsctl apply -i \S*inventory/prod` again"):
        scripted.run_applier(load_spec(prod / INV), session)
    assert not [
        c for c in session.calls if c.kind == "put_files" and "backup/password" in c.command
    ]


def test_the_database_commands_carry_no_secret_and_quote_the_sql() -> None:
    assert database.postgres_alter("c1", "listmonk") == [
        "docker", "exec", "-i", "c1", "sh", "-c",
        'exec psql -X -q -v ON_ERROR_STOP=1 -U "$1" -d postgres', "sh", "listmonk",
    ]  # fmt: skip
    assert database.postgres_sql(['we"ird'], "pa'ss") == (
        "ALTER ROLE \"we\"\"ird\" PASSWORD 'pa''ss';\n"
    )
    assert database.mysql_sql([("root", "%"), ("root", "localhost")], "pw") == (
        "ALTER USER IF EXISTS 'root'@'%' IDENTIFIED BY 'pw';\n"
        "ALTER USER IF EXISTS 'root'@'localhost' IDENTIFIED BY 'pw';\n"
    )
    assert database.mysql_stdin(["new"], "SQL;\n") == b"new\n\nSQL;\n"
    assert "MYSQL_ROOT_PASSWORD" in " ".join(database.mysql_alter("c2"))
