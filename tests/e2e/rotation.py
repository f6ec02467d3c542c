"""Secret rotation on a live studio (issue 13), run on the box of ``test_secrets_store`` (the
studio applied from secrets.env.age, backed up once): every database password and the
restic password rotated, then planned (masked, with dependents) and applied. Afterwards the
audit is green, the databases refuse the OLD passwords and take the new ones, only the
dependents were recreated, backups from before and after are readable with the new restic
password, the journal holds each rotation by fingerprint, and no output holds a value; a
rotation whose stack then fails its gate is undone in the database and the store."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

from tests.e2e.conftest import SANDBOX_INV, audit_ok, on_box, target_of
from tests.helpers import run_cli
from vpsctl.core.backupfiles import SCRIPT
from vpsctl.host.commands.database import mysql_sql
from vpsctl.host.remote import Session
from vpsctl.local.sandbox import SandboxInfo
from vpsctl.spec import store
from vpsctl.spec.envfile import parse_secrets

DATABASE_KEYS = [
    "GHOST_DB_PASSWORD",
    "GHOST_DB_ROOT_PASSWORD",
    "PLAUSIBLE_DB_PASSWORD",
    "LISTMONK_DB_PASSWORD",
]
ROTATED = [*DATABASE_KEYS, "RESTIC_PASSWORD"]
DEPENDENTS = {
    "ghost/ghost",
    "ghost/mysql",
    "plausible/plausible",
    "plausible/db",
    "listmonk/listmonk",
    "listmonk/db",
}
FORMAT = '{{.ID}} {{.Label "com.docker.compose.project"}}/{{.Label "com.docker.compose.service"}}'

# how each database account is signed in to over TCP, as an app does (password on stdin);
# Postgres at the container's network address: its images trust 127.0.0.1 (initdb's
# default), the network gets scram-sha-256
# (docker writes the container's own address as the last line of /etc/hosts)
OWN_ADDRESS = '"$(while read -r a _; do ip=$a; done </etc/hosts; echo "$ip")"'
LOGINS = {
    "GHOST_DB_PASSWORD": ("ghost", "mysql", "mysql -h 127.0.0.1 -u ghost ghost -e 'SELECT 1'"),
    "GHOST_DB_ROOT_PASSWORD": ("ghost", "mysql", "mysql -h 127.0.0.1 -u root -e 'SELECT 1'"),
    "PLAUSIBLE_DB_PASSWORD": (
        "plausible",
        "db",
        f"psql -X -h {OWN_ADDRESS} -U postgres -d plausible_db -c 'SELECT 1'",
    ),
    "LISTMONK_DB_PASSWORD": (
        "listmonk",
        "db",
        f"psql -X -h {OWN_ADDRESS} -U listmonk -d listmonk -c 'SELECT 1'",
    ),
}


def store_values(inventory: Path) -> dict[str, str]:
    text = store.read_text(store.store_of(inventory)) or ""
    found = parse_secrets(text, "secrets.env.age")[0]
    return {k: e.value.reveal() for k, e in found.entries.items() if e.value is not None}


def _containers(box: SandboxInfo) -> dict[str, str]:
    out = on_box(box, f"docker ps --format '{FORMAT}'")
    return {line.split()[1]: line.split()[0] for line in out.splitlines() if line.strip()}


def signs_in(box: SandboxInfo, key: str, password: str) -> bool:
    """Whether the database of ``key`` takes ``password`` over TCP (it travels on stdin)."""
    stack, service, query = LOGINS[key]
    inner = 'IFS= read -r PW; export MYSQL_PWD="$PW" PGPASSWORD="$PW"; ' + query
    find = (
        f"docker ps -q --filter label=com.docker.compose.project={stack} "
        f"--filter label=com.docker.compose.service={service}"
    )
    command = f'docker exec -i "$({find})" sh -c {shlex.quote(inner + " >/dev/null 2>&1")}'
    with Session(target_of(box)) as session:
        result = session.feed(command, (password + "\n").encode(), 60, check=False)
    return result.ok


def rotate_and_check(root: Path, box: SandboxInfo, before_snapshot: str) -> None:
    """Rotate, plan, apply and check, on the studio at ``root`` applied to ``box``; the
    snapshot ``before_snapshot`` was taken before the rotation."""
    began = time.monotonic()
    inventory = root / SANDBOX_INV
    old = store_values(inventory)
    outputs: list[str] = []
    for key in DATABASE_KEYS:
        assert signs_in(box, key, old[key]), f"{key}: the database refuses its current value"
    before = _containers(box)

    # refused and unknown keys change nothing, and say why
    mixed = run_cli(root, "secrets", "rotate", "-i", SANDBOX_INV, "GHOST_DB_PASSWORD",
                    "PLAUSIBLE_TOTP_VAULT_KEY", "NO_SUCH_KEY")  # fmt: skip
    outputs += [mixed.out, mixed.err]
    assert mixed.code == 1 and "PLAUSIBLE_TOTP_VAULT_KEY: refused" in mixed.err, mixed.err
    assert "NO_SUCH_KEY" in mixed.err
    assert store_values(inventory) == old

    rotated = run_cli(root, "secrets", "rotate", "-i", SANDBOX_INV, *ROTATED)
    outputs += [rotated.out, rotated.err]
    assert rotated.code == 0, rotated.err
    new = store_values(inventory)
    assert all(new[k] != old[k] for k in ROTATED)
    assert all(new[k] == old[k] for k in old if k not in ROTATED)

    plan = run_cli(root, "plan", "-i", SANDBOX_INV)
    outputs += [plan.out, plan.err]
    assert plan.code == 2, plan.err[-3000:]
    for key in ROTATED:
        assert f"~ {key} (" in plan.out, plan.out[-4000:]
    assert "restarts ghost/ghost, ghost/mysql" in plan.out

    # an apply interrupted after its ALTER of MySQL's root: the database already holds the
    # new root password, the box's env (and the container's) the old one; apply finishes it
    find = "docker ps -q --filter label=com.docker.compose.project=ghost "
    find += "--filter label=com.docker.compose.service=mysql"
    accounts = [("root", "%"), ("root", "localhost")]
    with Session(target_of(box)) as session:
        inner = shlex.quote('MYSQL_PWD="$MYSQL_ROOT_PASSWORD" exec mysql -uroot')
        session.feed(
            f'docker exec -i "$({find})" sh -c {inner}',
            mysql_sql(accounts, new["GHOST_DB_ROOT_PASSWORD"]).encode(),
            60,
        )
    assert not signs_in(box, "GHOST_DB_ROOT_PASSWORD", old["GHOST_DB_ROOT_PASSWORD"])

    started = time.monotonic()
    applied = run_cli(root, "apply", "-i", SANDBOX_INV, "-y")
    took = time.monotonic() - started
    outputs += [applied.out, applied.err]
    assert applied.code == 0, applied.err[-6000:]
    shown = plan.out[plan.out.index("Secrets rotated") :].split("\n\n")[0]
    said = [ln for ln in applied.err.splitlines() if "password changed" in ln or "restic" in ln]
    print(f"rotation: apply {took:.1f}s\n{shown}\n" + "\n".join(said))
    # the journal: each rotation by fingerprint, with its result
    line = json.loads(on_box(box, "tail -n 1 /opt/vpsctl/journal.log"))
    entries = {e["key"]: e for e in line["rotations"]}
    assert set(entries) == set(ROTATED), line["rotations"]
    assert all(e["result"].startswith("ok") for e in entries.values()), entries
    assert all(e["from"].startswith("sha256:") and e["to"] != e["from"] for e in entries.values())
    outputs.append(json.dumps(line))

    audit_ok(root)
    again = run_cli(root, "plan", "-i", SANDBOX_INV)
    outputs += [again.out, again.err]
    assert again.code == 0, again.out[-3000:]

    # the databases take the new passwords and refuse the old ones
    for key in DATABASE_KEYS:
        assert signs_in(box, key, new[key]), f"{key}: the new value is refused"
        assert not signs_in(box, key, old[key]), f"{key}: the OLD value still signs in"

    # only the dependents were recreated
    after = _containers(box)
    for name, ident in before.items():
        if name in DEPENDENTS:
            assert after[name] != ident, f"{name} was not recreated"
        else:
            assert after.get(name) == ident, f"{name} was recreated, but does not depend"

    # backups: the one from before the rotation and a new one, both read with the new key
    done = run_cli(root, "backup", "-i", SANDBOX_INV, "--json")
    outputs += [done.out, done.err]
    assert done.code == 0, done.err[-3000:]
    listed = run_cli(root, "backup", "-i", SANDBOX_INV, "--list")
    outputs += [listed.out, listed.err]
    assert listed.code == 0 and before_snapshot[:8] in listed.out, listed.out + listed.err
    recorded = on_box(box, f"{SCRIPT} recorded {before_snapshot}")
    assert "@@recorded ghost" in recorded, recorded[-1000:]
    outputs += rollback_puts_the_old_password_back(root, box)
    print(f"rotation: the whole check {time.monotonic() - began:.1f}s")

    # no value, old or new, in any output
    for key in ROTATED:
        for value in (old[key], new[key]):
            assert not [o for o in outputs if value in o], f"a value of {key} was printed"


def rollback_puts_the_old_password_back(root: Path, box: SandboxInfo) -> list[str]:
    """A rotation whose stack then fails its gate (listmonk's new version exits at once):
    the old password goes back into the database and the store, the previous version runs
    again, and the next plan has nothing to do. What it printed."""
    inventory = root / SANDBOX_INV
    stack = root / "stacks/listmonk.yaml"
    original = stack.read_text()
    start = original.index("    command: [sh, -c, ")
    end = original.index("\n", start)
    stack.write_text(original[:start] + '    command: [sh, -c, "exit 3"]' + original[end:])
    before = store_values(inventory)["LISTMONK_DB_PASSWORD"]
    rotated = run_cli(root, "secrets", "rotate", "-i", SANDBOX_INV, "LISTMONK_DB_PASSWORD")
    assert rotated.code == 0, rotated.err
    refused = store_values(inventory)["LISTMONK_DB_PASSWORD"]
    failed = run_cli(root, "apply", "-i", SANDBOX_INV, "-y")
    assert failed.code == 1, failed.err[-4000:]
    assert "listmonk: rolled back to the previous version" in failed.err, failed.err[-4000:]
    assert "the old value of LISTMONK_DB_PASSWORD is back" in failed.err
    assert store_values(inventory)["LISTMONK_DB_PASSWORD"] == before
    assert signs_in(box, "LISTMONK_DB_PASSWORD", before)
    assert not signs_in(box, "LISTMONK_DB_PASSWORD", refused)
    line = json.loads(on_box(box, "tail -n 1 /opt/vpsctl/journal.log"))
    assert [(e["key"], e["result"]) for e in line["rotations"]] == [
        ("LISTMONK_DB_PASSWORD", "rolled back")
    ]
    stack.write_text(original)
    calm = run_cli(root, "plan", "-i", SANDBOX_INV)
    assert calm.code == 0, calm.out[-3000:]
    for value in (before, refused):
        assert value not in failed.out + failed.err + json.dumps(line)
    return [rotated.out, rotated.err, failed.out, failed.err, calm.out, calm.err]
