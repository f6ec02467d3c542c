"""The commands vpsctl sends to the box, as data: each builder's exact argv (or, for the few
that need the shell, its exact line), and hostile names quoted into one word each."""

from __future__ import annotations

import shlex

import pytest

from vpsctl.core.backupfiles import SCRIPT, TIMERS, UNITS
from vpsctl.host import commands, remote
from vpsctl.host.commands import (
    Script,
    backup,
    caddy,
    compose,
    docker,
    files,
    systemd,
    versions,
)

ENV = "env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root"
# what a stack, service, path or volume name must never do on the box: run something
HOSTILE = "x; touch /tmp/pwned $(id) `id` 'q' \"dq\" && |"


def words_of(line: str) -> list[str]:
    """The words the shell makes of ``line`` (a plain command, no operators)."""
    return shlex.split(line)


# ── the one join ─────────────────────────────────────────────────────────────────────────


def test_join_quotes_every_word_of_an_argv_and_sends_a_script_as_it_is() -> None:
    assert commands.join(["rm", "-f", "--", "/a b", HOSTILE]) == (
        "rm -f -- '/a b' " + shlex.quote(HOSTILE)
    )
    assert commands.join(Script("a && b")) == "a && b"
    # the session sends what join makes: remote.shell is the same function's answer
    assert remote.shell(["a b", "c"]) == commands.join(["a b", "c"]) == "'a b' c"


def test_chain_and_words_quote_each_word() -> None:
    assert commands.chain(["cd", "/x y"], ["ls", "-l"]) == "cd '/x y' && ls -l"
    assert isinstance(commands.chain(["true"]), Script)
    assert commands.words(["a", "b c", "$x"]) == "a 'b c' '$x'"


# ── compose ──────────────────────────────────────────────────────────────────────────────


def test_compose_runs_in_the_stack_directory_with_a_scrubbed_environment() -> None:
    assert compose.compose("documint", "ps") == (
        f"cd /opt/vpsctl/stacks/documint && {ENV} docker compose -p documint ps"
    )
    assert compose.up("documint") == (
        f"cd /opt/vpsctl/stacks/documint && {ENV} docker compose -p documint up -d "
        "--remove-orphans --quiet-pull"
    )
    assert compose.down("ghost") == (
        f"cd /opt/vpsctl/stacks/ghost && {ENV} docker compose -p ghost down --remove-orphans"
    )
    assert compose.down("ghost", volumes=True).endswith("down --remove-orphans -v")
    assert compose.logs("ghost", 15).endswith(
        f"{ENV} docker compose -p ghost logs --no-color --tail 15"
    )
    assert compose.pull("ghcr.io/a/b:1") == [
        *words_of(ENV),
        "docker",
        "pull",
        "-q",
        "ghcr.io/a/b:1",
    ]


def test_compose_quotes_a_hostile_stack_name() -> None:
    assert compose.up(HOSTILE) == (
        f"cd {shlex.quote('/opt/vpsctl/stacks/' + HOSTILE)} && {ENV} docker compose -p "
        f"{shlex.quote(HOSTILE)} up -d --remove-orphans --quiet-pull"
    )
    # and the shell makes of it exactly these words (the && between them an operator)
    lexer = shlex.shlex(compose.up(HOSTILE), posix=True, punctuation_chars=True)
    said = list(lexer)
    assert said[:3] == ["cd", f"/opt/vpsctl/stacks/{HOSTILE}", "&&"]
    assert said[said.index("-p") + 1] == HOSTILE
    assert said.count("&&") == 1


# ── docker ───────────────────────────────────────────────────────────────────────────────


def test_health_polls_every_service_in_one_command() -> None:
    assert docker.health("documint", ["app", "db"]) == (
        "echo @@health; for s in app db; do id=$(docker ps -aq --filter "
        "label=com.docker.compose.project=documint "
        '--filter "label=com.docker.compose.service=$s" | head -n 1); '
        'if [ -z "$id" ]; then printf \'%s\\tmissing\\tnone\\n\' "$s"; else '
        'printf "%s\\t" "$s"; docker inspect --format '
        "'{{.State.Status}}\t{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
        '\t{{.RestartCount}}\' "$id"; fi; done'
    )


def test_health_log_reads_each_services_health_json() -> None:
    assert docker.health_log("ghost", ["ghost"]) == (
        "for s in ghost; do id=$(docker ps -aq --filter label=com.docker.compose.project=ghost "
        '--filter "label=com.docker.compose.service=$s" | head -n 1); '
        'if [ -z "$id" ]; then printf \'%s\\tmissing\\tnone\\n\' "$s"; else '
        'echo "@@hlog $s"; docker inspect --format \'{{json .State.Health}}\' "$id"; fi; done'
    )


def test_loops_quote_hostile_service_and_stack_names() -> None:
    line = docker.health(HOSTILE, [HOSTILE, "ok"])
    assert f"for s in {shlex.quote(HOSTILE)} ok; do" in line
    assert f"--filter {shlex.quote('label=com.docker.compose.project=' + HOSTILE)} " in line


def test_stack_state_lists_every_container_of_the_project() -> None:
    assert docker.stack_state("documint") == [
        "docker", "ps", "-a",
        "--filter", "label=com.docker.compose.project=documint",
        "--format", '{{.Label "com.docker.compose.service"}}\t{{.State}}\t{{.Image}}\t{{.Status}}',
    ]  # fmt: skip


def test_remove_project_removes_its_containers_when_there_are_any() -> None:
    assert docker.remove_project("old") == (
        "ids=$(docker ps -aq --filter label=com.docker.compose.project=old); "
        '[ -z "$ids" ] || docker rm -f $ids'
    )
    assert docker.remove_project("old", volumes=True).endswith("docker rm -f -v $ids")
    assert shlex.quote(f"label=com.docker.compose.project={HOSTILE}") in (
        docker.remove_project(HOSTILE)
    )


def test_network_and_volumes() -> None:
    assert docker.ensure_network("vpsctl-edge") == (
        "docker network inspect vpsctl-edge >/dev/null 2>&1 || docker network create vpsctl-edge"
    )
    assert docker.remove_volumes(["a_data", HOSTILE]) == (
        f"for v in a_data {shlex.quote(HOSTILE)}; do "
        'if docker volume inspect -- "$v" >/dev/null 2>&1; then '
        'docker volume rm -- "$v" >/dev/null || exit 1; fi; done'
    )


def test_running_container_of_a_service() -> None:
    assert docker.running_container("ghost", "ghost") == (
        "id=$(docker ps -q --filter label=com.docker.compose.project=ghost "
        "--filter label=com.docker.compose.service=ghost --filter status=running "
        '| head -n 1); [ -n "$id" ] || exit 3; echo "@@id $id"; docker inspect --format '
        "'{{range $k, $v := .NetworkSettings.Networks}}@@net {{$k}} {{$v.IPAddress}}\n{{end}}'"
        ' "$id"; full=$(docker inspect --format \'{{.Id}}\' "$id"); '
        "docker network inspect docker_gwbridge --format "
        '"{{with index .Containers \\"$full\\"}}@@net docker_gwbridge {{.IPv4Address}}{{end}}" '
        "2>/dev/null || true"
    )
    hostile = docker.running_container(HOSTILE, HOSTILE)
    assert shlex.quote(f"label=com.docker.compose.service={HOSTILE}") in hostile


# ── caddy ────────────────────────────────────────────────────────────────────────────────


def test_caddy_commands() -> None:
    assert caddy.running_container("edge") == [
        "docker", "ps", "-q",
        "--filter", "label=com.docker.compose.project=edge",
        "--filter", "label=com.docker.compose.service=caddy",
        "--filter", "status=running",
    ]  # fmt: skip
    assert caddy.caddy("c4ddy", "reload", caddy.CONFIG) == [
        "docker", "exec", "c4ddy", "caddy", "reload",
        "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile",
    ]  # fmt: skip
    assert caddy.validate_oneoff("/opt/x/caddy", "caddy:2.10", "/etc/caddy/Caddyfile.next") == [
        "docker", "run", "--rm", "--network", "none",
        "-v", "/opt/x/caddy:/etc/caddy:ro",
        "--entrypoint", "caddy", "caddy:2.10",
        "validate", "--config", "/etc/caddy/Caddyfile.next", "--adapter", "caddyfile",
    ]  # fmt: skip


# ── files ────────────────────────────────────────────────────────────────────────────────


def test_save_previous_copies_what_exists_into_a_fresh_directory() -> None:
    previous = "/opt/vpsctl/previous/documint"
    assert files.save_previous(previous, []) == f"rm -rf -- {previous} && mkdir -p -- {previous}"
    assert files.save_previous(previous, ["/a/.env", "/a b/c"]) == (
        f"rm -rf -- {previous} && mkdir -p -- {previous} && for f in /a/.env '/a b/c'; do "
        f'if [ -e "$f" ]; then cp -p --parents -- "$f" {previous}/ || exit 1; fi; done'
    )
    assert f"for f in {shlex.quote(HOSTILE)}; do" in files.save_previous(previous, [HOSTILE])
    assert files.save_previous(HOSTILE, []).startswith(f"rm -rf -- {shlex.quote(HOSTILE)} &&")


def test_file_argvs() -> None:
    assert files.restore_previous("/p/s") == ["cp", "-a", "--", "/p/s/.", "/"]
    assert files.remove(["/a", "-rf"]) == ["rm", "-f", "--", "/a", "-rf"]
    assert files.remove(["/d"], recursive=True) == ["rm", "-rf", "--", "/d"]
    assert files.move("/c.next", "/c") == ["mv", "-f", "--", "/c.next", "/c"]
    assert files.is_file("/s/compose.yaml") == ["test", "-f", "/s/compose.yaml"]
    assert files.sha256(["/a", "/b"]) == ["sha256sum", "--", "/a", "/b"]


def test_append_line_quotes_the_line_whatever_it_holds() -> None:
    line = '{"result": "it\'s $(bad)"}'
    assert files.append_line("/opt/vpsctl", "/opt/vpsctl/journal.log", line) == (
        f"mkdir -p /opt/vpsctl && printf '%s\\n' {shlex.quote(line)} >> /opt/vpsctl/journal.log"
    )


# ── systemd ──────────────────────────────────────────────────────────────────────────────


def test_backup_timer_commands() -> None:
    timers = list(TIMERS)
    assert systemd.mask(timers) == (
        "systemctl mask -- vpsctl-backup.timer vpsctl-backup-check.timer >/dev/null && "
        "systemctl daemon-reload"
    )
    assert systemd.link_and_enable(["/u/a.service", "/u/a.timer"], timers) == (
        "systemctl link /u/a.service /u/a.timer >/dev/null && systemctl daemon-reload && "
        "systemctl enable --now vpsctl-backup.timer vpsctl-backup-check.timer 2>&1"
    )
    assert systemd.disable_known(list(UNITS)) == (
        "for u in vpsctl-backup.service vpsctl-backup-check.service vpsctl-backup.timer "
        'vpsctl-backup-check.timer; do if systemctl cat -- "$u" >/dev/null 2>&1; then '
        'systemctl disable --now -- "$u" >/dev/null || exit 1; fi; done; systemctl daemon-reload'
    )


# ── the backup script ────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (backup.script("init"), [SCRIPT, "init"]),
        (backup.backup("manual", []), [SCRIPT, "backup", "manual"]),
        (backup.backup("pre-apply", ["documint"]), [SCRIPT, "backup", "pre-apply", "documint"]),
        (backup.restore("ab12", "all", ["a", "b"]), [SCRIPT, "restore", "ab12", "all", "a", "b"]),
        (backup.script("counts", "a"), [SCRIPT, "counts", "a"]),
        (backup.script("check", "1/10"), [SCRIPT, "check", "1/10"]),
    ],
)
def test_backup_script_argv(argv: list[str], expected: list[str]) -> None:
    assert argv == expected


def test_backup_script_quotes_a_hostile_stack_name() -> None:
    assert words_of(commands.join(backup.backup("manual", [HOSTILE]))) == [
        SCRIPT, "backup", "manual", HOSTILE
    ]  # fmt: skip


def test_versions_commands_keep_list_and_read_a_version() -> None:
    kept = versions.record(
        "documint",
        "20261203T150000Z-aaaaaaaa",
        ["/opt/vpsctl/stacks/documint/compose.yaml", "/opt/vpsctl/stacks/documint/env/app.env"],
        '{"result": "it\'s applied"}',
    )
    directory = "/opt/vpsctl/versions/documint/20261203T150000Z-aaaaaaaa"
    assert kept == (
        f"umask 077 && mkdir -p -- {directory} && chmod 700 -- /opt/vpsctl/versions "
        f"/opt/vpsctl/versions/documint {directory} && tar -C / -cf {directory}/files.tar -- "
        "opt/vpsctl/stacks/documint/compose.yaml opt/vpsctl/stacks/documint/env/app.env && "
        "printf '%s\\n' '{\"result\": \"it'\"'\"'s applied\"}' > "
        f"{directory}/version.json && ls -1 -- /opt/vpsctl/versions/documint | sort | "
        'head -n -10 | while read -r old; do rm -rf -- /opt/vpsctl/versions/documint/"$old"; '
        "done"
    )
    assert versions.list_all() == (
        "for f in /opt/vpsctl/versions/*/*/version.json; do "
        '[ -f "$f" ] && head -n 1 -- "$f"; done; true'
    )
    assert versions.files_of("documint", "20261203T150000Z-aaaaaaaa") == (
        f"base64 -w0 -- {directory}/files.tar"
    )
    hostile = versions.files_of("a b;rm -rf /", "x")
    assert hostile == "base64 -w0 -- '/opt/vpsctl/versions/a b;rm -rf //x/files.tar'"


def test_a_runs_versions_are_kept_in_one_command_each_on_its_own() -> None:
    one = ("documint", "v1", ["/opt/vpsctl/stacks/documint/compose.yaml"], "{}")
    two = ("ghost", "v1", ["/opt/vpsctl/stacks/ghost/compose.yaml"], "{}")
    assert versions.record_all([one, two]) == (
        f"( {versions.record(*one)} ) || printf '@@unkept %s\\n' documint; "
        f"( {versions.record(*two)} ) || printf '@@unkept %s\\n' ghost"
    )
