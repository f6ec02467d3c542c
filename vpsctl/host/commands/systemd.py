"""systemd units of the box: the backup timers."""

from __future__ import annotations

from vpsctl.host.commands import Script, words


def mask(units: list[str]) -> Script:
    """Mask ``units`` (linked to /dev/null: nothing can start them), then reload systemd."""
    return Script(f"systemctl mask -- {words(units)} >/dev/null && systemctl daemon-reload")


def link_and_enable(unit_files: list[str], timers: list[str]) -> Script:
    """Link ``unit_files`` into systemd, reload it, and enable and start ``timers``."""
    return Script(
        f"systemctl link {words(unit_files)} >/dev/null && systemctl daemon-reload && "
        f"systemctl enable --now {words(timers)} 2>&1"
    )


def disable_known(units: list[str]) -> Script:
    """Stop and disable each of ``units`` systemd knows (one it does not is already
    stopped), then reload systemd; a Script: a loop that asks first."""
    return Script(
        f"for u in {words(units)}; do "
        'if systemctl cat -- "$u" >/dev/null 2>&1; then '
        'systemctl disable --now -- "$u" >/dev/null || exit 1; fi; done; '
        "systemctl daemon-reload"
    )
