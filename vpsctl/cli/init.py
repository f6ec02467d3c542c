"""``vpsctl init DIR``: a new studio repository, started from the example that ships with vpsctl.

The studio is the operator's own repository (inventories, stack files, schemas); vpsctl is
installed apart from it and finds it from the current directory or ``--root``. The example
keeps its layout, so the editor modelines of its files (``# yaml-language-server:
$schema=../schemas/…``) point at the schemas written beside them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from vpsctl.errors import VpsctlError
from vpsctl.resources import shipped

# what a studio is made of, copied from the example: the production and sandbox
# inventories, the stack files with the files they ship, and the editors' JSON Schemas
STUDIO_DIRS = ("inventory", "stacks", "schemas")


def never_copied(name: str) -> bool:
    """The example in a checkout may hold the demo's generated secrets (or a copy of them:
    ``secrets.env.bak``, ``prod.secrets.env``): never copied, nor interpreter caches. The
    ``*.example`` files are the example's own. The wheel ships by the same rule (setup.py)."""
    secret = "secrets.env" in name and not name.endswith(".example")
    return secret or name == "__pycache__" or name.endswith(".pyc")


def _not_copied(folder: str, names: list[str]) -> set[str]:
    return {name for name in names if never_copied(name)}


GITIGNORE = """\
# Real secrets never enter git as plain text: only secrets.env.example files are tracked,
# and an inventory's encrypted secrets.env.age with its recipients (public keys).
secrets.env
*.secrets.env
!secrets.env.age
!recipients
# vpsctl's local state: sandbox connections, generated keys, saved plans
.vpsctl/
"""

README = """\
# Studio

The infrastructure of this studio: one VPS, declared in these files, applied and audited by
vpsctl. Run every command from this directory (or pass `vpsctl --root DIR`).

- `inventory/prod/host.yaml`, `inventory/sandbox/host.yaml`: the production box, and the
  same studio on a local sandbox VPS
- `stacks/*.yaml`: one file per stack (services, secrets, backups), `stacks/files/`: files
  they ship
- `schemas/`: JSON Schemas the editor modelines of these files point at (`vpsctl schema
  --out schemas` refreshes them after upgrading vpsctl)
- `secrets.env` beside each host.yaml holds the secrets; git ignores it, only
  `secrets.env.example` is tracked. To commit them encrypted instead, list the public keys
  that may read them in `recipients` beside it (age1… or ssh-ed25519 …, one a line) and run
  `vpsctl secrets encrypt -i inventory/prod`: `secrets.env.age` is safe to commit;
  `vpsctl secrets edit -i inventory/prod` changes it.

## Workflow

```sh
vpsctl secrets generate -i inventory/sandbox   # fill missing secrets with fresh values
vpsctl validate -i inventory/sandbox           # every file checked, errors name file:line
vpsctl sandbox up && vpsctl sandbox up --name backup   # a local box, and one for backups
vpsctl plan -i inventory/sandbox               # what would change (exit 2: changes)
vpsctl apply -i inventory/sandbox              # converge, then audit
vpsctl audit -i inventory/sandbox              # prove the box healthy
vpsctl backup -i inventory/sandbox --init      # snapshot every stack's data
vpsctl drill -i inventory/sandbox              # rehearse a rebuild on a throwaway box
```

Production is the same with `-i inventory/prod` (the default): `secrets generate` fills
what it can and lists the secrets only a third party issues (Stripe, SMTP).
"""


def init_studio(target: Path) -> list[Path]:
    """Write a new studio repository into ``target`` (created when missing); return the
    top-level entries written. Refuses, writing nothing, when ``target`` is not empty."""
    if target.exists() and not target.is_dir():
        raise VpsctlError(f"init: {target} is a file; give a new or empty directory")
    if target.is_dir() and any(target.iterdir()):
        raise VpsctlError(
            f"init: {target} is not empty; give a new or empty directory "
            "(init never writes over a studio)"
        )
    sources = {name: shipped(name) for name in STUDIO_DIRS}
    for name, source in sources.items():
        if not source.is_dir():  # a broken install, not the user's doing
            raise VpsctlError(f"init: the example's {name}/ is missing from vpsctl ({source})")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, source in sources.items():
        shutil.copytree(source, target / name, ignore=_not_copied)
        written.append(target / name)
    for name, text in ((".gitignore", GITIGNORE), ("README.md", README)):
        (target / name).write_text(text, encoding="utf-8")
        written.append(target / name)
    return written
