"""vpsctl.ops.apps.plausible's LiveView pieces that need no server: the rendered tree (merge a
diff, render it back to HTML, as phoenix_live_view.js does) and reading Plausible's field
errors off the rendered form. The whole claim runs against the stand-in in
tests/e2e/test_plausible_claim.py."""

from __future__ import annotations

import pytest

from vpsctl.ops.apps import AppError
from vpsctl.ops.apps import plausible as app

# A join reply's rendered tree shaped like LiveView 1.0's: root statics, a component (cid 1)
# holding the form, a comprehension with shared templates ("p") for the error list.
JOINED = {
    "0": 1,
    "s": ['<div class="mx-auto">', "</div>"],
    "c": {
        "1": {
            "0": "",
            "1": "TOKEN",
            "2": "",
            "3": {"d": [], "s": 0, "p": {"0": ['<p class="text-red-500">', "</p>"]}},
            "4": "text-gray-500 text-xs mt-1",
            "s": [
                '<form action="/login" method="post" phx-submit="register"',
                '><input type="hidden" name="_csrf_token" value="',
                '"><input name="user[email]" type="email" value="',
                '">',
                '<p class="',
                '">Min 12 characters</p><input name="user[password]" type="password"></form>',
            ],
        }
    },
}


def test_the_rendered_tree_renders_and_merges_like_the_js_client() -> None:
    rendered = app.Rendered()
    rendered.merge(JOINED)
    page = app.parse_page(rendered.html())
    assert page.form == {"action": "/login", "method": "post", "phx-submit": "register"}
    hidden = {i["name"]: i["value"] for i in page.inputs if i.get("type") == "hidden"}
    assert hidden == {"_csrf_token": "TOKEN"}
    # a refusal: the email's error list and the red length hint, as a diff on the component
    rendered.merge({"c": {"1": {"2": "x@y.test", "3": {"d": [["has already been taken"]]}}}})
    rendered.merge({"c": {"1": {"4": "text-red-500 text-xs mt-1"}}})
    html = rendered.html()
    assert 'value="x@y.test"' in html
    assert app.form_errors(html) == {
        "email": ["has already been taken"],
        "password": ["has to be at least 12 characters"],
    }
    # success: the form gets phx-trigger-action, the client posts it
    rendered.merge({"c": {"1": {"0": " phx-trigger-action", "3": {"d": []}}}})
    form = app.parse_page(rendered.html()).form or {}
    assert "phx-trigger-action" in form


def test_form_errors_reads_the_strength_meter_and_each_field() -> None:
    html = (
        '<input name="user[name]" value=""><p class="flex gap-3 text-sm leading-6 text-red-500">'
        "can&#39;t be blank</p>"
        '<p class="text-gray-500 text-xs mt-1">Min 12 characters</p>'
        '<input name="user[password]" type="password"><p class="text-sm text-red-500">'
        "Password is too weak</p>"
        '<input name="user[password_confirmation]" type="password">'
        '<p class="flex gap-3 text-sm leading-6 text-red-500">\n  does not match confirmation\n</p>'
    )
    assert app.form_errors(html) == {
        "name": ["can't be blank"],
        "password": ["is too weak"],
        "password_confirmation": ["does not match confirmation"],
    }


def test_the_base_must_be_a_local_http_forward() -> None:
    with pytest.raises(AppError, match="must be http://ADDRESS:PORT"):
        app.first_launch_pending("https://stats.lumen.test", "stats.lumen.test")


def test_the_main_view_is_the_one_joined_not_a_child() -> None:
    page = app.parse_page(
        '<meta name="csrf-token" content="C">'
        '<div id="phx-flash" data-phx-session="F" data-phx-static="FS"></div>'
        '<div id="phx-main" data-phx-main data-phx-session="M" data-phx-static="MS"></div>'
    )
    assert page.csrf == "C"
    assert page.view is not None and page.view["id"] == "phx-main"
