"""Secret rotation, as data: what each secret of a spec IS to the running box, and which
secrets the box still holds an older value of. Pure (spec, desired files, host facts in;
dataclasses out): ``vpsctl secrets rotate`` refuses by it, the plan shows by it, apply acts
by it.

What a secret is comes from the stacks, never from its name:

- ``database``: it feeds a database image's password variable (an image named ``postgres``:
  ``POSTGRES_PASSWORD`` for ``POSTGRES_USER``, default ``postgres``; ``mysql``/``mariadb``:
  ``MYSQL_PASSWORD`` for ``MYSQL_USER``, ``MYSQL_ROOT_PASSWORD`` for ``root`` at ``%`` and
  ``localhost``). Those variables only act at the database's first init, so the running
  database must be told (``ALTER ROLE``/``ALTER USER``) before its dependents restart.
- ``restic``: host.yaml's backup repository password: a new restic key, then the old removed.
- ``regenerate``: any other value vpsctl generates (session and signing keys): the
  dependents restart with it; what was signed with the old one (sessions) stops working.
- refused: ``external`` (only a third party issues it: the secret's ``obtain``),
  ``encrypts-data`` (a kind with ``encrypts:``: stored data would no longer decrypt),
  ``app-password`` (an owner/admin password that lives in the app's own database after its
  first launch), ``not-generatable`` (a kind vpsctl cannot make: ``secrets set``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from vpsctl.core.backupfiles import CONF_DIR
from vpsctl.core.facts import HostFacts
from vpsctl.core.layout import STACKS_ROOT
from vpsctl.errors import display_path
from vpsctl.spec.models import Service
from vpsctl.spec.secrets import fingerprint
from vpsctl.spec.studio import SECRET_REF, Spec

if TYPE_CHECKING:
    from vpsctl.core.render import Desired

RESTIC_PASSWORD_FILE = f"{CONF_DIR}/password"


class Role(StrEnum):
    """What a secret is to the box, and so what rotating it takes."""

    DATABASE = "database"
    RESTIC = "restic"
    REGENERATE = "regenerate"
    EXTERNAL = "external"
    ENCRYPTS_DATA = "encrypts-data"
    APP_PASSWORD = "app-password"  # noqa: S105 - a role's name, not a password
    NOT_GENERATABLE = "not-generatable"


ROTATABLE = frozenset({Role.DATABASE, Role.RESTIC, Role.REGENERATE})


@dataclass(frozen=True)
class DbAccount:
    """A database account whose password a secret is: the service running the database,
    its engine, and the accounts (``user``, ``host``; host is ``""`` for Postgres)."""

    stack: str
    service: str
    engine: str  # postgres | mysql
    accounts: tuple[tuple[str, str], ...]
    root: bool = False  # MySQL's root: the old root password must open the database

    def describe(self) -> str:
        """``ghost/mysql (mysql: 'ghost'@'%')``: safe to print."""
        who = ", ".join(f"'{u}'@'{h}'" if h else u for u, h in self.accounts)
        return f"{self.stack}/{self.service} ({self.engine}: {who})"


@dataclass(frozen=True)
class SecretUse:
    """One secret of the spec, as rotation sees it."""

    name: str
    owner: str  # the declaring stack, or host.yaml
    role: Role
    dependents: tuple[str, ...] = ()  # "stack/service" of every container that gets it
    databases: tuple[DbAccount, ...] = ()
    # where the box holds the value as it is now: (path, env var) of an env file, or
    # (path, "") of a whole file; None when no file holds it verbatim
    witness: tuple[str, str] | None = None
    why: str = ""  # what rotating it does, or why it is refused (never a value)

    @property
    def rotatable(self) -> bool:
        """Whether ``secrets rotate`` may give it a new value."""
        return self.role in ROTATABLE


def image_engine(image: str) -> str | None:
    """``postgres`` or ``mysql`` for an official database image (``postgres:16-alpine``,
    ``docker.io/library/mysql@sha256:…``, ``mariadb:11``), else ``None``."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    repo = last.split(":", 1)[0]
    if repo == "postgres":
        return "postgres"
    if repo in ("mysql", "mariadb"):
        return "mysql"
    return None


# The password variables an official database image also reads from a file (its entrypoint's
# ``file_env``: ``VAR_FILE`` names the file): on a cluster they reach it as Swarm secrets
FILE_VARS = {
    "postgres": ("POSTGRES_PASSWORD",),
    "mysql": ("MYSQL_ROOT_PASSWORD", "MYSQL_PASSWORD", "MARIADB_ROOT_PASSWORD", "MARIADB_PASSWORD"),
}


def file_secret_vars(service: Service) -> list[str]:
    """The secret variables of ``service`` its (official database) image reads from a file
    as well (``VAR_FILE``), in the service's order; none for any other image."""
    engine = image_engine(service.image)
    readable = FILE_VARS.get(engine or "", ())
    return [var for var in service.secrets if var in readable]


_MYSQL_USER_VARS = {"MYSQL_PASSWORD": "MYSQL_USER", "MARIADB_PASSWORD": "MARIADB_USER"}
_MYSQL_ROOT_VARS = {
    "MYSQL_ROOT_PASSWORD": "MYSQL_ROOT_HOST",
    "MARIADB_ROOT_PASSWORD": "MARIADB_ROOT_HOST",
}


def _db_account(stack: str, service_name: str, service: Service, var: str) -> DbAccount | None:
    engine = image_engine(service.image)
    env = service.env
    if engine == "postgres" and var == "POSTGRES_PASSWORD":
        user = str(env.get("POSTGRES_USER", "postgres"))
        return DbAccount(stack, service_name, engine, ((user, ""),))
    if engine == "mysql" and var in _MYSQL_USER_VARS:
        name = env.get(_MYSQL_USER_VARS[var])
        if name is None:
            return None
        return DbAccount(stack, service_name, engine, ((str(name), "%"),))
    if engine == "mysql" and var in _MYSQL_ROOT_VARS:
        host = str(env.get(_MYSQL_ROOT_VARS[var], "%"))
        hosts = dict.fromkeys(["localhost", host])  # the official image makes both
        return DbAccount(stack, service_name, engine, tuple(("root", h) for h in hosts), True)
    return None


def _app_passwords(spec: Spec) -> dict[str, str]:
    """Owner/admin passwords vpsctl hands an app at its first launch: name → the app."""
    out: dict[str, str] = {}
    for name, stack in spec.stacks.items():
        if stack.first_launch is not None:
            out[stack.first_launch.password_secret] = f"{name} ({stack.first_launch.app} owner)"
        if stack.listmonk is not None:
            service = stack.services.get(stack.listmonk.service)
            admin = service.secrets.get("LISTMONK_ADMIN_PASSWORD") if service else None
            if admin is not None:
                out[admin] = f"{name} (listmonk admin)"
    return out


_APP_HOWTO = {
    "ghost owner": "Ghost admin → your profile (Staff → Owner) → Change password",
    "plausible owner": "Plausible → Account settings → Security → Change password",
    "listmonk admin": "listmonk admin → Users → the admin user → Password",
}


def classify(spec: Spec) -> dict[str, SecretUse]:
    """Every secret the placed stacks (and host.yaml) declare, with its role."""
    uses: dict[str, list[str]] = {}
    witness: dict[str, tuple[str, str]] = {}
    dbs: dict[str, list[DbAccount]] = {}
    for stack_name, stack in spec.stacks.items():
        for service_name, service in stack.services.items():
            env_path = f"{STACKS_ROOT}/{stack_name}/env/{service_name}.env"
            where = f"{stack_name}/{service_name}"
            for var, secret in service.secrets.items():
                uses.setdefault(secret, []).append(where)
                account = _db_account(stack_name, service_name, service, var)
                if account is not None:
                    dbs.setdefault(secret, []).append(account)
                    witness[secret] = (env_path, var)  # the database's own copy comes first
                else:
                    witness.setdefault(secret, (env_path, var))
            for value in service.env.values():
                for ref in SECRET_REF.findall(str(value)):
                    uses.setdefault(ref, []).append(where)
    apps = _app_passwords(spec)
    inventory = display_path(spec.inventory)
    restic = spec.host.backup.password_secret if spec.host.backup is not None else None
    out: dict[str, SecretUse] = {}
    for name, (owner, kind) in spec.required_secrets().items():
        dependents = tuple(dict.fromkeys(uses.get(name, [])))
        base: dict[str, Any] = {"name": name, "owner": owner, "dependents": dependents}
        base["witness"] = witness.get(name)
        encrypts = kind.encrypts
        if kind.is_external():
            obtain = kind.obtain or "the service that issued it"
            why = f"issued externally: get a new value from {obtain}, then "
            why += f"`vpsctl secrets set {name} -i {inventory}`"
            out[name] = SecretUse(**base, role=Role.EXTERNAL, why=why)
        elif encrypts:
            why = (
                f"it encrypts stored data ({encrypts}): a new value would leave that data "
                "unreadable; vpsctl does not rotate it"
            )
            out[name] = SecretUse(**base, role=Role.ENCRYPTS_DATA, why=why)
        elif name in apps:
            app = apps[name]
            howto = next((v for k, v in _APP_HOWTO.items() if k in app), "the app's admin")
            why = (
                f"the {app.split(' (')[1].rstrip(')')} password lives in the app's own database "
                f"once it first launched: change it in {howto}, then `vpsctl secrets set {name} "
                f"-i {inventory}` to the same value"
            )
            out[name] = SecretUse(**base, role=Role.APP_PASSWORD, why=why)
        elif name in dbs:
            accounts = tuple(dbs[name])
            why = "the database's password is changed first, then its dependents restart: "
            why += "; ".join(a.describe() for a in accounts)
            out[name] = SecretUse(**base, role=Role.DATABASE, databases=accounts, why=why)
        elif name == restic:
            base["witness"] = (RESTIC_PASSWORD_FILE, "")
            why = "a new restic key is added to the repository, checked, then the old one removed"
            out[name] = SecretUse(**base, role=Role.RESTIC, why=why)
        elif kind.generate(False) is not None:
            why = (
                "its dependents restart with the new value: what was signed with the old one "
                "(sessions, tokens) stops working: users are logged out"
            )
            out[name] = SecretUse(**base, role=Role.REGENERATE, why=why)
        else:
            why = (
                f"vpsctl cannot generate this kind ({kind.spec_text()}): `vpsctl secrets set "
                f"{name} -i {inventory}`"
            )
            out[name] = SecretUse(**base, role=Role.NOT_GENERATABLE, why=why)
    return out


@dataclass(frozen=True)
class Rotation:
    """A secret the box holds an older value of than the store: what apply must carry out
    (fingerprints only: never a value)."""

    key: str
    role: Role
    old: str  # fingerprint of the box's value
    new: str  # fingerprint of the store's value
    dependents: tuple[str, ...] = ()
    databases: tuple[DbAccount, ...] = ()
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """The plan's JSON of this rotation."""
        return {
            "key": self.key,
            "role": str(self.role),
            "from": self.old,
            "to": self.new,
            "dependents": list(self.dependents),
            "databases": [a.describe() for a in self.databases],
            "note": self.note,
        }

    def line(self) -> str:
        """One line for the plan (masked)."""
        text = f"~ {self.key} ({self.role}): changed ({self.old}→{self.new[7:]})"
        if self.dependents:
            text += f"; restarts {', '.join(self.dependents)}"
        return text + (f"; {self.note}" if self.note else "")


_NOTES = {
    Role.DATABASE: "the database password is changed in the running database first",
    Role.RESTIC: "restic key add (new), verified, then key remove (old)",
    Role.REGENERATE: "users are logged out (sessions signed with the old value end)",
}


@dataclass
class SecretValues:
    """A secret's value as the box holds it now and as the store wants it (never printed)."""

    old: str
    new: str = field(repr=False)

    def __repr__(self) -> str:
        return f"SecretValues({fingerprint(self.old)}→{fingerprint(self.new)})"


def box_values(use: SecretUse, desired: Desired, facts: HostFacts) -> SecretValues | None:
    """The box's and the store's value of ``use``, when both are known and they differ."""
    from vpsctl.core.render import parse_env_file  # noqa: PLC0415 - render imports this module

    if use.witness is None:
        return None
    path, var = use.witness
    have, want = facts.files.get(path), desired.files.get(path)
    if have is None or want is None or have.content is None:
        return None
    if var:
        old = parse_env_file(have.content).get(var)
        new = parse_env_file(want.content).get(var)
    else:
        old, new = have.content.decode(errors="replace"), want.content.decode(errors="replace")
    if not old or not new or old == new:
        return None
    return SecretValues(old, new)


def pending(desired: Desired, facts: HostFacts) -> list[Rotation]:
    """Every rotatable secret whose value on the box differs from the store's: a rotation
    apply carries out (a rotation interrupted mid-apply shows here again)."""
    out: list[Rotation] = []
    for use in desired.secret_uses.values():
        if use.role not in ROTATABLE:
            continue
        values = box_values(use, desired, facts)
        if values is None:
            continue
        out.append(
            Rotation(
                use.name,
                use.role,
                fingerprint(values.old),
                fingerprint(values.new),
                use.dependents,
                use.databases,
                _NOTES[use.role],
            )
        )
    return out
