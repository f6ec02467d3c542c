"""Every script vpsctl runs on the box passes ``shellcheck``, rendered as the example studio
renders it, and the one ``@@`` section parser their answers go through.

The box scripts: ``templates/box/*`` (facts, the audit's read, Ghost, first launches, probes,
the Pebble roots), the backup script (``templates/backup/vpsctl-backup.sh.j2``) and the
firewall script (``templates/vpsctl-firewall.sh.j2``). ``make test`` installs shellcheck
(the Makefile's ``system`` target): a machine without it fails here, it is never skipped.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import jinja2
import pytest

from tests.helpers import golden_prod_copy
from tests.test_audit_ghost import prod_spec
from vpsctl.core import backupfiles, boxscripts, firewall, sections
from vpsctl.core.facts import facts_script
from vpsctl.host import probes
from vpsctl.ops import audit
from vpsctl.ops.inputs import render_spec
from vpsctl.resources import shipped
from vpsctl.spec.loader import load_spec
from vpsctl.spec.studio import Spec

# A PEM-shaped stand-in for Pebble's roots: the heredoc that carries them must stay literal.
PEM = "-----BEGIN CERTIFICATE-----\nMIIB$notavariable`x`\n-----END CERTIFICATE-----\n"
TRUSTS = {
    "acme": probes.SYSTEM_ROOTS,
    "internal": probes.INSECURE,
    "pebble": probes.Trust("roots", PEM, "Pebble's 1 issuing root(s)"),
}


def shellcheck(scripts: dict[str, str], tmp: Path, shell: str | None = None) -> None:
    """Fail with shellcheck's findings (every severity) in any of ``scripts`` (name → text),
    checked in one run."""
    tool = shutil.which("shellcheck")
    assert tool is not None, (
        "shellcheck is not installed: `make system` installs it (Debian package shellcheck: "
        "apt-get install shellcheck); the box scripts are checked with it, never skipped"
    )
    tmp.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, (name, script) in enumerate(scripts.items()):
        path = tmp / f"{number}-{name.replace('/', '_').replace(' ', '_')}"
        path.write_text(script)
        paths.append(str(path))
    argv = [tool, "--format=gcc", "--norc"] + (["--shell", shell] if shell else []) + paths
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"shellcheck finds problems:\n{done.stdout}{done.stderr}"


@pytest.fixture
def prod(tmp_path: Path) -> Iterator[Spec]:
    """inventory/prod (tls: acme, a backup, Ghost content and first launches) with the golden
    secrets."""
    root = golden_prod_copy(tmp_path)
    with contextlib.chdir(root):
        yield prod_spec(root)


@pytest.fixture
def sandbox(tmp_path: Path) -> Spec:
    """inventory/sandbox, without secrets: the scripts hold none."""
    root = golden_prod_copy(tmp_path / "sandbox-studio")
    return load_spec(root / "inventory/sandbox", secrets=False)


def box_scripts(spec: Spec, trust: probes.Trust) -> dict[str, str]:
    """Every ``templates/box`` script as ``spec`` renders it, by template name."""
    return {
        boxscripts.FACTS: facts_script(),
        boxscripts.AUDIT: audit.audit_script(),
        boxscripts.GHOST: audit._ghost_script(spec, trust),
        boxscripts.FIRST_LAUNCH: audit._first_launch_script(spec, trust),
        boxscripts.PROBES: probes.script(probes.targets_for(spec), trust),
        boxscripts.ACME_ROOTS: TRUSTS["pebble"].prelude(),
    }


def test_every_box_template_is_rendered_here(prod: Spec) -> None:
    """A new template under templates/box/ cannot escape the shellcheck below."""
    on_disk = {p.name for p in (shipped("templates") / boxscripts.BOX).glob("*.j2")}
    assert on_disk == set(boxscripts.ALL) == set(box_scripts(prod, TRUSTS["acme"]))


@pytest.mark.parametrize("tls", sorted(TRUSTS))
def test_the_box_scripts_pass_shellcheck(prod: Spec, tls: str, tmp_path: Path) -> None:
    scripts = box_scripts(prod, TRUSTS[tls])
    for name, script in scripts.items():
        assert script.strip(), f"{name} rendered empty for the example studio"
    shellcheck(scripts, tmp_path / "checked", shell="sh")


def test_the_audit_read_as_sent_passes_shellcheck(
    prod: Spec, sandbox: Spec, tmp_path: Path
) -> None:
    """The whole read, one script as the box runs it; the sandbox's with Pebble's roots."""
    trust = TRUSTS["pebble"]
    read = (
        facts_script()
        + audit.audit_script()
        + trust.prelude()
        + audit._ghost_script(sandbox, trust)
        + audit._first_launch_script(sandbox, trust)
        + probes.script(probes.targets_for(sandbox), trust)
    )
    scripts = {"read-prod": audit.read_script(prod), "read-sandbox": read}
    shellcheck(scripts, tmp_path / "checked", shell="sh")


def test_the_backup_and_firewall_scripts_pass_shellcheck(prod: Spec, tmp_path: Path) -> None:
    """Each with its own shebang: bash for the backup script, sh for the firewall's."""
    backup = render_spec(prod).files[backupfiles.SCRIPT].content.decode()
    assert backup.startswith("#!/bin/bash\n")
    rules = firewall.script(firewall.ports_for(prod))
    assert rules.startswith("#!/bin/sh\n")
    shellcheck({"vpsctl-backup": backup, "vpsctl-firewall": rules}, tmp_path / "checked")


def test_shellcheck_finds_what_it_should(tmp_path: Path) -> None:
    """The check above can fail: an unquoted variable is a finding, named with its file."""
    with pytest.raises(AssertionError, match=r"1-bad:1:8: .*SC2086"):
        shellcheck({"good": "echo ok\n", "bad": "rm -rf $dir\n"}, tmp_path, shell="sh")


def test_values_reach_the_scripts_quoted() -> None:
    """A value is one shell word whatever it holds (the ``sh`` filter), and the Pebble roots
    stay literal inside their quoted heredoc."""
    hostile = "x'; rm -rf / #"
    script = audit.audit_script()
    assert "$(cat /opt/vpsctl/backup/last-success 2>/dev/null" in script
    rendered = boxscripts.render(
        boxscripts.FIRST_LAUNCH,
        tls="",
        checks=[{"stack": "s", "app": "a", "resolve": hostile, "url": hostile}],
    )
    assert "--resolve 'x'\"'\"'; rm -rf / #'" in rendered
    assert PEM in TRUSTS["pebble"].prelude()


def test_a_missing_value_is_an_error_not_an_empty_word() -> None:
    with pytest.raises(jinja2.UndefinedError, match="'backup_record' is undefined"):
        boxscripts.render(
            boxscripts.AUDIT, formats=audit.DOCKER_FORMATS, state="/x", firewall_read=""
        )


# ── the @@ section parser ────────────────────────────────────────────────────────────────


def test_sections_are_split_in_order_with_their_bodies() -> None:
    found = sections.split("@@a 1 two\nbody\n\n@@b\n@@a x y\nline\n")
    assert [(s.name, s.args, s.lines) for s in found] == [
        ("a", "1 two", ["body", ""]),
        ("b", "", []),
        ("a", "x y", ["line"]),
    ]
    assert found[0].words == ["1", "two"] and found[0].body == "body" and found[1].body == ""


def test_repeated_names_are_all_kept_and_picked_in_order() -> None:
    found = sections.split("@@file 1\nA\n@@file 2\nB\n@@end\n")
    assert [s.args for s in sections.named(found, "file")] == ["1", "2"]
    first = sections.first(found, "file")
    assert first is not None and first.body == "A"
    assert sections.first(found, "nothing") is None


def test_lines_before_the_first_marker_are_a_section_without_a_name() -> None:
    assert sections.split("noise\n@@a\n") == [
        sections.Section("", "", ["noise"]),
        sections.Section("a", "", []),
    ]
    assert sections.split("") == []
    # a name is the word after @@, up to the first space: "@@probe-trust" is not "@@probe"
    assert [s.name for s in sections.split("@@probe-trust roots\n@@probe 0 200 0\n")] == [
        "probe-trust",
        "probe",
    ]


def test_the_facts_parser_refuses_an_answer_without_its_header_first() -> None:
    from vpsctl.core.facts import FactsError, parse  # noqa: PLC0415

    with pytest.raises(FactsError, match="header"):
        parse("motd\n@@vpsctl-facts 1\n@@end\n")
    with pytest.raises(FactsError, match="cut short"):
        parse("@@vpsctl-facts 1\n@@docker 27.0\n")
    assert parse("@@vpsctl-facts 1\n@@docker none\n@@end\n").docker is None
