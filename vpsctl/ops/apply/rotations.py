"""The rotations a plan carries (:func:`vpsctl.core.rotation.pending`), carried out so that
the app never breaks:

- a database password: changed in the running database (``ALTER ROLE``/``ALTER USER``)
  BEFORE the stack's new env files go up and its dependents are recreated; when the stack
  then fails its gate, the old password is put back in the database (before the previous
  version starts again) and in the secrets store. Interrupted in between, the next plan
  still sees the box's env file holding the old value and does it again (the ALTER is
  idempotent, and MySQL's root is tried with both passwords);
- the restic password: ``vpsctl-backup rekey`` (a new key for the new password, checked,
  the old key removed) before the box's password file is replaced;
- a regenerated key: nothing but the recreation the changed env files cause.

Values come from the box's env files as the host facts read them (the old) and from the
rendered files (the new), and travel to the box on stdin only. The journal gets one entry
per rotation: key, fingerprints, time, result.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from vpsctl.core.rotation import RESTIC_PASSWORD_FILE, DbAccount, Role, Rotation, box_values
from vpsctl.errors import VpsctlError
from vpsctl.host.commands import backup, database
from vpsctl.host.remote import RemoteError, output_tail
from vpsctl.ops.apply.phase import Phase
from vpsctl.ops.apps import AppError, find_container


class RotationError(VpsctlError):
    """A rotation could not be carried out (what ran, and what to run, said)."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Rotations(Phase):
    """Carries out the plan's rotations; ``entries`` are the journal's record of them."""

    def __init__(self, applier: Any) -> None:
        super().__init__(applier)
        self.entries: list[dict[str, str]] = []
        self.altered: dict[str, list[Rotation]] = {}  # stack → database rotations done
        # stacks converge at once: two rolled back together must not both rewrite the store
        self.store_lock = threading.Lock()

    def note(self, rotation: Rotation, result: str) -> None:
        """One journal entry (fingerprints only)."""
        self.entries.append(
            {
                "key": rotation.key,
                "role": str(rotation.role),
                "from": rotation.old,
                "to": rotation.new,
                "time": _now(),
                "result": result,
            }
        )

    def _values(self, key: str) -> tuple[str, str]:
        found = box_values(self.desired.secret_uses[key], self.desired, self.facts)
        if found is None:  # the plan saw them; the facts have not changed since
            raise RotationError(f"rotation of {key}: the box's value is no longer known")
        return found.old, found.new

    def of_stack(self, stack: str) -> list[tuple[Rotation, list[DbAccount]]]:
        """The database rotations whose databases run in ``stack``."""
        out = []
        for r in self.plan.rotations:
            if r.role == Role.DATABASE:
                accounts = [a for a in r.databases if a.stack == stack]
                if accounts:
                    out.append((r, accounts))
        # root first: a user's rotation then signs in with whichever root password works
        return sorted(out, key=lambda item: not any(a.root for a in item[1]))

    def _root_candidates(self, account: DbAccount) -> list[str]:
        """The box's and the store's MySQL root passwords of ``account``'s service."""
        for r in self.plan.rotations:
            for a in r.databases:
                if a.root and a.stack == account.stack and a.service == account.service:
                    old, new = self._values(r.key)
                    return [new, old]
        return []

    def _alter(self, account: DbAccount, password: str, container: str) -> None:
        if account.engine == "postgres":
            users = [u for u, _ in account.accounts]
            self.session.feed(
                database.postgres_alter(container, users[0]),
                database.postgres_sql(users, password).encode(),
                120,
                purpose=f"changing the password in {account.stack}/{account.service}",
            )
        else:
            self.session.feed(
                database.mysql_alter(container),
                database.mysql_stdin(
                    self._root_candidates(account),
                    database.mysql_sql(account.accounts, password),
                ),
                120,
                purpose=f"changing the password in {account.stack}/{account.service}",
            )

    def _container(self, account: DbAccount) -> str | None:
        try:
            return find_container(self.session, account.stack, account.service)[0]
        except AppError:
            return None

    def databases(self, stack: str) -> str:
        """Change the passwords of ``stack``'s databases in the running databases, before
        anything else of the stack changes: "" when done (or nothing to do), else why not
        (then nothing was changed: the stack is left as it was)."""
        for rotation, accounts in self.of_stack(stack):
            _, new = self._values(rotation.key)
            for account in accounts:
                container = self._container(account)
                if container is None:
                    # not running: its env acts when it starts (a first init) or was never
                    # the database's password; nothing to change inside
                    self.say(
                        f"{stack}: {rotation.key}: {account.service} is not running; "
                        "no password to change inside it"
                    )
                    continue
                try:
                    self._alter(account, new, container)
                except RemoteError as exc:
                    self.note(rotation, "failed")
                    detail = self.clean(str(exc))
                    self.say(f"{stack}: {rotation.key}: the database refused the change")
                    inventory = self.plan.inventory or "INVENTORY"
                    return (
                        f"{rotation.key}: the password could not be changed in "
                        f"{account.describe()} ({detail}); nothing of {stack} was changed, "
                        f"and the store keeps the new value: `vpsctl apply -i {inventory}` "
                        "tries again"
                    )
                self.altered.setdefault(stack, []).append(rotation)
                self.say(
                    f"{stack}: {rotation.key}: password changed in {account.describe()} "
                    f"({rotation.old}→{rotation.new[7:]})"
                )
                self.record(f"{stack}: {rotation.key} changed in {account.service}")
        return ""

    def settled(self, stack: str) -> None:
        """``stack`` passed its gate: its database rotations are done."""
        for rotation in dict.fromkeys(self.altered.pop(stack, [])):
            self.note(rotation, "ok")

    def undo(self, stack: str) -> list[str]:
        """``stack`` failed after its passwords changed: the old ones back in the databases
        (before its previous version starts) and in the secrets store. What failed."""
        failed: list[str] = []
        done = list(dict.fromkeys(self.altered.pop(stack, [])))
        for rotation in done:
            old, _ = self._values(rotation.key)
            for account in (a for a in rotation.databases if a.stack == stack):
                container = self._container(account)
                why = "" if container is not None else f"no running container of {account.service}"
                if container is not None:
                    try:
                        self._alter(account, old, container)
                    except RemoteError as exc:
                        why = self.clean(str(exc))
                if why:
                    failed.append(
                        f"{rotation.key}: the old password could not be put back in "
                        f"{account.describe()}: {why}"
                    )
            self.note(rotation, "rolled back" if not failed else "rollback failed")
        if done:
            failed += self.restore_store([r.key for r in done])
        return failed

    def restore_store(self, keys: list[str]) -> list[str]:
        """The box's (old) values of ``keys`` written back into the secrets store."""
        from vpsctl.ops.rotate import write_values  # noqa: PLC0415 - loads the spec modules

        try:
            with self.store_lock:
                write_values(self.spec.inventory, {k: self._values(k)[0] for k in keys})
        except VpsctlError as exc:
            return [f"the secrets store could not be given the old values back: {exc}"]
        self.say(f"secrets store: the old value of {', '.join(keys)} is back")
        self.record(f"secrets store: old value of {', '.join(keys)} put back")
        return []

    def restic(self) -> bool:
        """Whether the plan rotates the restic password."""
        return any(r.role == Role.RESTIC for r in self.plan.rotations)

    def restic_rekey(self) -> None:
        """Rekey the repository for the new restic password (the box's script, already the
        new one, reads the old from its password file); :class:`RotationError` when it
        fails (the box's password file is then left as it is)."""
        rotation = next(r for r in self.plan.rotations if r.role == Role.RESTIC)
        _, new = self._values(rotation.key)
        try:
            result = self.session.feed(
                backup.script("rekey"),
                (new + "\n").encode(),
                600,
                purpose="adding the new restic key and removing the old one",
            )
        except RemoteError as exc:
            self.note(rotation, "failed")
            inventory = self.plan.inventory or "INVENTORY"
            raise RotationError(
                f"{rotation.key}: the repository could not be rekeyed ({self.clean(str(exc))}); "
                f"the box keeps its old password file. Fix the cause and run `vpsctl apply -i "
                f"{inventory}` again: it finishes the rotation"
            ) from None
        mark = "@@rekey "
        said = [ln[len(mark) :] for ln in result.stdout.splitlines() if ln.startswith(mark)]
        self.say(f"host: {rotation.key}: restic {', '.join(said) or output_tail(result, 1, 200)}")
        self.record(f"{rotation.key}: repository rekeyed ({', '.join(said)})")
        self.note(rotation, "ok" if "no-repository" not in said else "ok (no repository yet)")


__all__ = ["RESTIC_PASSWORD_FILE", "RotationError", "Rotations"]
