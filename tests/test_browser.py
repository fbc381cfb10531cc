"""The UI in a real browser (Playwright + Debian's Chromium) against the app on a real port:
create a recipe through the form, copy its URL, send a sample, pick a field from it, save;
a form double-clicked posts once."""
from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import time
from contextlib import contextmanager

import pytest
import requests
from sqlalchemy import select

from automations import connections, history, recipes
from automations.models import Recipe, Run
from connectors.base import TEST_MESSAGE
from tests.conftest import PASSWORD, ensure_user, make_app
from tests.sinks import HttpSink
from tests.test_connector_slack import WEBHOOK_PATH as SLACK_PATH
from tests.test_connector_slack import SlackLike
from web.extensions import core, db

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
SCREENSHOT = "/tmp/hookline-recipe-edit.png"


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    if not CHROMIUM:
        return "Chromium not found at /usr/bin/chromium or on PATH (apt-get install chromium)"
    return None


if (_reason := _missing()) is not None:
    if os.environ.get("CI") == "true":  # CI must run the browser test, never skip it quietly
        pytest.fail(f"browser test cannot run in CI: {_reason}", pytrace=False)
    pytest.skip(_reason, allow_module_level=True)

from playwright.sync_api import expect, sync_playwright
from waitress import create_server


@pytest.fixture
def served(tmp_path):
    """The app (for tests that set up data or count rows) and the URL it is served at."""
    app = make_app(tmp_path)
    ensure_user(app, "admin")
    server = create_server(app, host="127.0.0.1", port=0)
    url = f"http://127.0.0.1:{server.effective_port}"
    app.config["PUBLIC_URL"] = url
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield app, url
    server.close()
    thread.join(timeout=5)


@pytest.fixture
def base_url(served):
    return served[1]


@contextmanager
def browser_tab(base_url, *, bfcache: bool = False):
    """A Chromium tab. Playwright turns the back/forward cache off; ``bfcache`` keeps it on,
    for a test of what a page does when the browser brings it back from memory."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                     ignore_default_args=["--disable-back-forward-cache"] if bfcache else None)
        context = browser.new_context(base_url=base_url, permissions=["clipboard-read", "clipboard-write"])
        tab = context.new_page()
        tab.set_default_timeout(10_000)
        yield tab
        context.close()
        browser.close()


@pytest.fixture
def page(base_url):
    with browser_tab(base_url) as tab:
        yield tab


def test_create_copy_sample_pick_and_save(page, base_url):
    page.goto("/recipes/new")  # not signed in: the login page, which comes back here after
    expect(page).to_have_url(f"{base_url}/login?next=/recipes/new")
    page.fill("#email", "admin@example.com")
    page.fill("#password", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base_url}/recipes/new")
    page.fill("#name", "Signups")
    page.get_by_role("button", name="HTTP request").click()  # posts the form, no JS needed
    page.fill("#steps-0-inputs-url", "http://127.0.0.1:9/in")
    page.get_by_role("button", name="Save recipe").click()
    expect(page).to_have_url(f"{base_url}/recipes/1")

    hook = page.locator("#inbound-url").inner_text().strip()
    assert hook.startswith(f"{base_url}/hooks/")
    page.get_by_role("button", name="Copy URL").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == hook
    assert hook in page.locator("#curl-example").inner_text()

    sample = {"data": {"customer": {"email": "ann@example.com", "name": "Ann"}}, "id": "evt_1"}
    assert requests.post(hook, json=sample, timeout=10).status_code == 202

    page.goto("/recipes/1/edit")
    page.locator('button.pick[data-path="$.data.customer.email"]').click()
    expect(page.locator("#fields-0-path")).to_have_value("$.data.customer.email")
    expect(page.locator("#fields-0-name")).to_have_value("email")
    expect(page.locator("#fields-1-path")).to_have_value("")  # a fresh empty row for the next pick
    page.locator('button.pick[data-path="$.data.customer.name"]').click()
    expect(page.locator("#fields-1-name")).to_have_value("name")

    # The live preview follows the form as it is typed, unsaved: fields, then what the step sends.
    preview = page.locator("#preview")
    expect(preview.get_by_role("button", name="Refresh the preview")).to_be_hidden()  # JS does it
    expect(preview.locator(".preview-fields")).to_contain_text("ann@example.com")
    body = preview.locator('[data-input="body"]')
    page.fill("#steps-0-inputs-body", '{"who": "{{ name | upper }}", "mail": "{{ email }}"}')
    expect(body).to_contain_text('{"who": "ANN", "mail": "ann@example.com"}')
    page.fill("#steps-0-inputs-body", "{{ email | nosuchfilter }}")
    expect(body.locator(".error")).to_contain_text("nosuchfilter")
    page.fill("#steps-0-inputs-body", '{"who": "{{ name }}"}')
    expect(body).to_contain_text('{"who": "Ann"}')
    page.screenshot(path=SCREENSHOT, full_page=True)
    page.get_by_role("button", name="Save recipe").click()

    expect(page).to_have_url(f"{base_url}/recipes/1")
    expect(page.locator(".flash-success")).to_contain_text("Saved as version 2")
    fields = page.locator("table.compact").first
    expect(fields).to_contain_text("$.data.customer.email")
    expect(fields).to_contain_text("$.data.customer.name")


def sign_in(page, base_url) -> None:
    page.goto("/login")
    page.fill("#email", "admin@example.com")
    page.fill("#password", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base_url}/recipes/")


def new_recipe_with_a_field(page, base_url, name: str, field: str) -> None:
    """Signed in, on a new recipe's editor, with its name and one field (``$.<field>``) typed."""
    sign_in(page, base_url)
    page.goto("/recipes/new")
    page.fill("#name", name)
    page.fill("#fields-0-name", field)
    page.fill("#fields-0-path", f"$.{field}")


def test_only_continue_if_step_shows_in_the_live_preview_where_the_run_stops(page, base_url):
    new_recipe_with_a_field(page, base_url, "Big orders", "amount")
    page.get_by_role("button", name="Only continue if").click()  # adds the step (a plain form post)
    page.fill("#steps-0-inputs-condition", "{{ amount > 100 }}")
    page.get_by_role("button", name="Save recipe").click()
    expect(page).to_have_url(f"{base_url}/recipes/1")
    hook = page.locator("#inbound-url").inner_text().strip()
    assert requests.post(hook, json={"amount": 50}, timeout=10).status_code == 202

    page.goto("/recipes/1/edit")
    note = page.locator("#preview .preview-note")
    expect(note).to_contain_text("stops the run for this event")
    page.fill("#steps-0-inputs-condition", "{{ amount > 10 }}")  # unsaved: the preview follows
    expect(note).to_contain_text("passes for this event")
    page.fill("#steps-0-inputs-condition", "{{ amount > }}")
    expect(page.locator('#preview [data-input="condition"] .error')).to_be_visible()


def test_only_run_if_says_in_the_live_preview_whether_the_step_runs(page, base_url):
    new_recipe_with_a_field(page, base_url, "Paid orders to the CRM", "status")
    page.get_by_role("button", name="HTTP request", exact=True).click()
    page.fill("#steps-0-inputs-url", "https://crm.example.com/orders")
    page.fill("#steps-0-run_if", "{{ status == }}")
    page.get_by_role("button", name="Save recipe").click()
    expect(page.locator("#steps-0-run_if-note .error")).to_contain_text("unexpected")  # refused, on the field
    page.fill("#steps-0-run_if", "{{ status == 'paid' }}")
    page.get_by_role("button", name="Save recipe").click()
    expect(page).to_have_url(f"{base_url}/recipes/1")
    hook = page.locator("#inbound-url").inner_text().strip()
    assert requests.post(hook, json={"status": "refunded"}, timeout=10).status_code == 202

    page.goto("/recipes/1/edit")
    note = page.locator("#preview .preview-note")
    expect(note).to_contain_text("skipped for this event: its condition was false")
    page.fill("#steps-0-run_if", "{{ status != 'paid' }}")  # unsaved: the preview follows
    expect(note).to_contain_text("its condition holds for this event: this step runs")


# One submit per form (hookline.js): a double click, or a second impatient click while the
# answer is on its way, must not post twice. The receivers and the app answer slowly enough
# here that the second click lands while the first request is in flight.

def slow_replays(monkeypatch, seconds: float = 0.5) -> None:
    """Run again answers in ``seconds``, as a busy server does: the second click of a double
    click lands while the first request is in flight."""
    replay = history.replay

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return replay(*args, **kwargs)

    monkeypatch.setattr(history, "replay", slow)


def a_run(app, url: str) -> None:
    """Run #1 of a recipe at version 1; the recipe is at version 2 since."""
    with app.app_context():
        recipe = recipes.create(db.session, "Orders", {"fields": [{"name": "x", "path": "$.x"}]})
        token = recipe.token
    assert requests.post(f"{url}/hooks/{token}", json={"x": 1}, timeout=10).status_code == 202
    with app.app_context():
        recipes.update_recipe(db.session, db.session.get(Recipe, recipe.id),
                              definition={"fields": [{"name": "x", "path": "$.y"}]})


def runs(app) -> list[tuple[int, int | None, int]]:
    """(id, replay_of, recipe_version) of every run."""
    with app.app_context():
        return [tuple(r) for r in db.session.execute(
            select(Run.id, Run.replay_of, Run.recipe_version).order_by(Run.id))]


# A person's double click: each press lasts a moment, so the first click's request is on its
# way when the second click comes (Playwright's instant one would cancel the first submission
# in the browser before it is sent, which no person manages).
PRESS_MS = 150

# The page's submit buttons as they are when it is left, kept for the next page to read.
LEAVING = """window.addEventListener("pagehide", function () {
  sessionStorage.setItem("left", JSON.stringify(Array.prototype.map.call(
    document.querySelectorAll("form button[type=submit][name]"), function (b) {
      return {value: b.value, disabled: b.disabled, busy: b.classList.contains("busy"),
              ariaDisabled: b.getAttribute("aria-disabled"), ariaBusy: b.getAttribute("aria-busy")};
    })));
})"""


def test_choosing_another_sample_event_shows_its_fields_keeping_what_was_typed(served, page):
    """Two events with different shapes: the editor starts on the newest; choosing the older
    one in the list shows its paths and previews it, and the unsaved form comes along."""
    app, base_url = served
    with app.app_context():
        recipe = recipes.create(db.session, "Orders", {"fields": [{"name": "email", "path": "$.email"}], "steps": [
            {"key": "crm", "action": "http_request",
             "inputs": {"method": "POST", "url": "https://crm.example/", "body_type": "json", "body": "{}"}}]})
        recipe_id, token = recipe.id, recipe.token
    for body in ({"email": "ann@example.com", "plan": {"tier": "gold"}}, {"email": "bob@example.com", "coupon": "X1"}):
        assert requests.post(f"{base_url}/hooks/{token}", json=body, timeout=10).status_code == 202
    sign_in(page, base_url)
    page.goto(f"/recipes/{recipe_id}/edit")
    picker = page.locator("#field-picker")
    expect(picker.locator('button.pick[data-path="$.coupon"]')).to_be_visible()
    expect(page.get_by_role("button", name="Use this event")).to_be_hidden()  # choosing is enough
    page.fill("#steps-0-inputs-body", '{"to": "{{ email }}"}')  # typed, not saved
    page.select_option("#sample_event", index=1)
    expect(picker.locator('button.pick[data-path="$.plan.tier"]')).to_be_visible()
    expect(picker.locator('button.pick[data-path="$.coupon"]')).to_have_count(0)
    expect(page.locator("#steps-0-inputs-body")).to_have_value('{"to": "{{ email }}"}')
    expect(page.locator('#preview [data-input="body"]')).to_contain_text('{"to": "ann@example.com"}')
    with app.app_context():
        assert db.session.get(Recipe, recipe_id).current_version == 1


def test_double_clicking_send_a_test_message_sends_one(served, page):
    app, base_url = served
    contract = SlackLike()
    with HttpSink(lambda req: dataclasses.replace(contract(req), delay=0.5)) as slack:
        with app.app_context():
            conn = connections.create(db.session, core().secret_box, "Team chat", "slack_webhook",
                                      {"webhook_url": slack.url + SLACK_PATH}).id
        sign_in(page, base_url)
        page.goto(f"/connections/{conn}/edit")
        button = page.get_by_role("button", name="Send a test message")
        button.dblclick(delay=PRESS_MS)
        expect(page.locator(".flash-success")).to_contain_text("Test passed: Slack accepted a test message")
        expect(button).not_to_have_attribute("aria-disabled", "true")  # the answer is a new page
        time.sleep(0.3)  # a second post, had there been one, would be in by now
        assert [r.json()["text"] for r in slack.requests] == [TEST_MESSAGE]


def test_double_clicking_run_again_makes_one_new_run(served, page, monkeypatch):
    app, base_url = served
    a_run(app, base_url)
    slow_replays(monkeypatch)
    sign_in(page, base_url)
    page.goto("/runs/1")
    page.get_by_role("button", name="Run again (recipe as it is now)").dblclick(delay=PRESS_MS)
    expect(page.locator(".flash-success")).to_contain_text("queued (again of #1)")
    time.sleep(0.5)  # a second replay, had it been posted, would be committed by now
    assert runs(app) == [(1, None, 1), (2, 1, 2)]
    expect(page).to_have_url(f"{base_url}/runs/2")


def test_the_clicked_buttons_value_is_still_posted(served, page, monkeypatch):
    """The guard must not disable the clicked button while the form's data is gathered: a
    disabled button's name=value (here version=original) is not sent, and the server would
    run the recipe as it is now instead of version 1."""
    app, base_url = served
    a_run(app, base_url)
    slow_replays(monkeypatch)
    sign_in(page, base_url)
    page.goto("/runs/1")
    page.evaluate(LEAVING)
    page.get_by_role("button", name="Run again (version 1 as it was)").dblclick(delay=PRESS_MS)
    expect(page.locator(".flash-success")).to_contain_text("queued (again of #1)")
    time.sleep(0.5)
    assert runs(app) == [(1, None, 1), (2, 1, 1)]  # version 1: "original" reached the server
    # While the answer was on its way, both buttons looked busy; neither was disabled.
    assert page.evaluate("JSON.parse(sessionStorage.getItem('left'))") == [
        {"value": "current", "disabled": False, "busy": True, "ariaDisabled": "true", "ariaBusy": None},
        {"value": "original", "disabled": False, "busy": True, "ariaDisabled": "true", "ariaBusy": "true"},
    ]


def test_a_form_works_again_after_going_back_to_it(served, monkeypatch):
    """Back to a page the browser kept in memory (the back/forward cache): its form was locked
    when it was left, and must post again."""
    app, base_url = served
    a_run(app, base_url)
    slow_replays(monkeypatch, 0.3)
    with browser_tab(base_url, bfcache=True) as page:
        sign_in(page, base_url)
        page.goto("/runs/1")
        page.evaluate("window.keptInMemory = true")
        button = page.get_by_role("button", name="Run again (recipe as it is now)")
        button.dblclick(delay=PRESS_MS)
        expect(page.locator(".flash-success")).to_contain_text("queued (again of #1)")
        time.sleep(0.4)
        assert runs(app) == [(1, None, 1), (2, 1, 2)]
        page.go_back(wait_until="commit")  # a page restored from memory fires no load event
        expect(page).to_have_url(f"{base_url}/runs/1")
        assert page.evaluate("window.keptInMemory === true"), "the page was loaded again, not restored"
        expect(button).not_to_have_attribute("aria-disabled", "true")
        button.dblclick(delay=PRESS_MS)
        expect(page.locator(".flash-success")).to_contain_text("Run #3 queued (again of #1)")
        time.sleep(0.4)
        assert runs(app) == [(1, None, 1), (2, 1, 2), (3, 1, 2)]


def test_a_form_the_browser_refused_to_send_is_not_locked(page, base_url):
    """A required field left empty: the browser says so and sends nothing (no submit event).
    The form must still post once it is filled in."""
    page.goto("/login")
    page.get_by_role("button", name="Sign in").click()
    assert page.evaluate("document.querySelector('#email').validity.valueMissing")
    expect(page.get_by_role("button", name="Sign in")).not_to_have_attribute("aria-disabled", "true")
    page.fill("#email", "admin@example.com")
    page.fill("#password", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base_url}/recipes/")
