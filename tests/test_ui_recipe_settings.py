"""The recipe editor's Delivery section: de-duplication and retries through the real form,
errors on their fields, imported settings kept, and a de-duplicated webhook end to end."""
from __future__ import annotations

import re

import pytest

from automations import recipes
from automations.mapping import validate_path
from automations.models import Recipe, RecipeVersion
from automations.recipes import Problem
from tests.test_ui_recipes import (
    HTTP_STEP,
    count,
    create,
    errors_for,
    errors_summary,
    recipe_form,
    value_of,
)
from web.extensions import core, db
from web.forms import RecipeEditor

DAY = 24 * 3600
NO_DELIVERY = {"delivery-dedupe_by": "none", "delivery-dedupe_key": "", "delivery-dedupe_window": "72",
               "delivery-retry_attempts": "", "delivery-retry_age": ""}


def form(**delivery: str) -> dict[str, str]:
    """The edit page's post: one HTTP step plus the Delivery section (``dedupe_by="path"``...)."""
    return recipe_form(steps=[HTTP_STEP], **{**NO_DELIVERY, **{f"delivery-{k}": v for k, v in delivery.items()}})


def new(client, data: dict[str, str]) -> int:
    resp = client.post("/recipes/new", data=data)
    assert resp.status_code == 302, errors_summary(resp.get_data(as_text=True))
    return int(resp.location.rstrip("/").rsplit("/", 1)[1])


def settings_of(app, recipe_id: int) -> dict:
    with app.app_context():
        return recipes.current_definition(db.session.get(Recipe, recipe_id))["settings"]


def edit(client, recipe_id: int, data: dict[str, str]):
    return client.post(f"/recipes/{recipe_id}/edit", data=data, follow_redirects=True)


def imported(app, client, settings: dict) -> int:
    """A recipe whose version 2 came from an imported file: settings the form never wrote."""
    recipe_id = new(client, recipe_form(steps=[HTTP_STEP]))
    with app.app_context():
        recipe = db.session.get(Recipe, recipe_id)
        d = {**recipes.current_definition(recipe), "settings": settings}
        recipes.update_recipe(db.session, recipe, definition=d, clock=core().clock)
    return recipe_id


def selected(page: str, name: str) -> str | None:
    m = re.search(rf'<select[^>]*\bname="{re.escape(name)}"[^>]*>(.*?)</select>', page, re.DOTALL)
    opt = re.search(r'<option selected value="([^"]*)"', m.group(1)) if m else None
    return opt.group(1) if opt else None


def test_new_page_shows_delivery_defaults(client):
    page = client.get("/recipes/new").get_data(as_text=True)
    assert "Delivery" in page and selected(page, "delivery-dedupe_by") == "none"
    assert value_of(page, "delivery-dedupe_window") == "72"
    assert value_of(page, "delivery-retry_attempts") == "" and 'placeholder="9"' in page
    assert "30 s, 2 min, 10 min, 30 min, 1 h, 3 h, 6 h, 12 h" in page
    assert "creates no run" in page and 'data-placeholder-path="$.id"' in page


def test_dedupe_by_header_then_path_then_none(app, client):
    recipe_id = new(client, form(dedupe_by="header", dedupe_key=" X-GitHub-Delivery "))
    assert settings_of(app, recipe_id) == {"dedupe": {"header": "X-GitHub-Delivery", "window_seconds": 3 * DAY}}
    page = client.get(f"/recipes/{recipe_id}/edit").get_data(as_text=True)
    assert selected(page, "delivery-dedupe_by") == "header" and value_of(page, "delivery-dedupe_key") == "X-GitHub-Delivery"

    resp = edit(client, recipe_id, form(dedupe_by="path", dedupe_key="$.id", dedupe_window="24"))
    assert "Saved as version 2" in resp.get_data(as_text=True)
    assert settings_of(app, recipe_id) == {"dedupe": {"path": "$.id", "window_seconds": DAY}}
    page = client.get(f"/recipes/{recipe_id}/edit").get_data(as_text=True)
    assert value_of(page, "delivery-dedupe_window") == "24" and 'placeholder="$.id"' in page

    assert "Saved as version 3" in edit(client, recipe_id, form()).get_data(as_text=True)
    assert settings_of(app, recipe_id) == {}


def test_invalid_jsonpath_is_shown_on_the_dedupe_field_and_saves_nothing(app, client):
    recipe_id = create(client, steps=[HTTP_STEP])
    resp = client.post(f"/recipes/{recipe_id}/edit", data=form(dedupe_by="path", dedupe_key="$.["))
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "Not saved" in page
    assert errors_for(page, "delivery-dedupe_key") == [validate_path("$.[")], errors_summary(page)
    assert value_of(page, "delivery-dedupe_key") == "$.["  # kept as typed
    assert count(app, RecipeVersion) == 1 and settings_of(app, recipe_id) == {}


@pytest.mark.parametrize("delivery, field_id, message", [
    ({"dedupe_by": "header", "dedupe_key": ""}, "delivery-dedupe_key", "enter a header name"),
    ({"dedupe_by": "path", "dedupe_key": "  "}, "delivery-dedupe_key", "enter a JSONPath"),
    ({"dedupe_by": "header", "dedupe_key": "X Id:"}, "delivery-dedupe_key", "no spaces"),
    ({"dedupe_by": "header", "dedupe_key": "X-Id", "dedupe_window": "-3"}, "delivery-dedupe_window", "whole number"),
    ({"dedupe_by": "header", "dedupe_key": "X-Id", "dedupe_window": "2161"}, "delivery-dedupe_window", "1 to 2160"),
    ({"dedupe_by": "sometimes"}, "delivery-dedupe_by", "Not a valid choice"),
    ({"retry_attempts": "abc"}, "delivery-retry_attempts", "whole number from 1 to 50"),
    ({"retry_attempts": "-1"}, "delivery-retry_attempts", "whole number from 1 to 50"),
    ({"retry_attempts": "0"}, "delivery-retry_attempts", "whole number from 1 to 50"),
    ({"retry_attempts": "51"}, "delivery-retry_attempts", "whole number from 1 to 50"),
    ({"retry_attempts": "2.5"}, "delivery-retry_attempts", "whole number from 1 to 50"),
    ({"retry_age": "1.5"}, "delivery-retry_age", "whole number from 1 to 2160"),
    ({"retry_age": "2161"}, "delivery-retry_age", "whole number from 1 to 2160"),
], ids=["no-header", "no-path", "bad-header", "negative-window", "long-window", "bad-choice",
        "attempts-text", "attempts-negative", "attempts-zero", "attempts-many", "attempts-fraction",
        "age-fraction", "age-long"])
def test_invalid_delivery_values_are_refused_on_their_field(app, client, delivery, field_id, message):
    resp = client.post("/recipes/new", data=form(**delivery))
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "Not saved" in page
    assert any(message in e for e in errors_for(page, field_id)), errors_summary(page)
    assert count(app, Recipe) == 0


def test_window_is_not_checked_when_nothing_is_deduplicated(app, client):
    recipe_id = new(client, form(dedupe_window="soon"))
    assert settings_of(app, recipe_id) == {}


def test_retry_numbers_round_trip_and_clear(app, client):
    recipe_id = new(client, form(retry_attempts="5", retry_age="24"))
    assert settings_of(app, recipe_id) == {"retry": {"max_attempts": 5, "max_age_seconds": DAY}}
    page = client.get(f"/recipes/{recipe_id}/edit").get_data(as_text=True)
    assert value_of(page, "delivery-retry_attempts") == "5" and value_of(page, "delivery-retry_age") == "24"
    resp = edit(client, recipe_id, form(retry_attempts="5", retry_age="24"))
    assert "definition unchanged" in resp.get_data(as_text=True)
    edit(client, recipe_id, form(retry_attempts="", retry_age="48"))
    assert settings_of(app, recipe_id) == {"retry": {"max_age_seconds": 2 * DAY}}
    edit(client, recipe_id, form())
    assert settings_of(app, recipe_id) == {}


IMPORTED = {
    "pause_after_dead": 3,
    "x_team": {"owner": "ann", "tags": ["billing"]},
    "retry": {"schedule": [10, 60], "max_attempts": 3, "max_age_seconds": 600},
    "dedupe": {"header": "Webhook-Id"},
}


def test_imported_settings_survive_an_edit(app, client):
    recipe_id = imported(app, client, IMPORTED)
    page = client.get(f"/recipes/{recipe_id}/edit").get_data(as_text=True)
    shown = {k: value_of(page, f"delivery-{k}") for k in ("dedupe_key", "dedupe_window", "retry_attempts", "retry_age")}
    assert shown == {"dedupe_key": "Webhook-Id", "dedupe_window": "72", "retry_attempts": "3", "retry_age": "0.166667"}
    assert "imported retry schedule" in page and "<code>10, 60</code>" in page

    # Posted back as shown: nothing changes, not even the 10 minutes the form cannot type.
    as_shown = form(dedupe_by="header", **shown)
    assert "definition unchanged" in edit(client, recipe_id, as_shown).get_data(as_text=True)
    assert settings_of(app, recipe_id) == IMPORTED

    resp = edit(client, recipe_id, {**as_shown, "delivery-retry_attempts": "4", "delivery-dedupe_key": "Svix-Id"})
    assert "Saved as version 3" in resp.get_data(as_text=True)
    assert settings_of(app, recipe_id) == {
        **IMPORTED, "retry": {**IMPORTED["retry"], "max_attempts": 4}, "dedupe": {"header": "Svix-Id"}}

    edit(client, recipe_id, form())  # dedupe and retry off: the schedule and other keys stay
    assert settings_of(app, recipe_id) == {"pause_after_dead": 3, "x_team": IMPORTED["x_team"],
                                           "retry": {"schedule": [10, 60]}}


def test_a_post_without_the_delivery_section_keeps_settings(app, client):
    recipe_id = imported(app, client, IMPORTED)
    resp = edit(client, recipe_id, recipe_form(steps=[HTTP_STEP]))
    assert "definition unchanged" in resp.get_data(as_text=True)
    assert settings_of(app, recipe_id) == IMPORTED


def test_reshaping_the_page_keeps_the_typed_delivery_values(app, client):
    data = {**form(dedupe_by="path", dedupe_key="$.id", retry_attempts="x"), "add_step": "http_request"}
    page = client.post("/recipes/new", data=data).get_data(as_text=True)
    assert selected(page, "delivery-dedupe_by") == "path" and value_of(page, "delivery-dedupe_key") == "$.id"
    assert value_of(page, "delivery-retry_attempts") == "x" and "steps-1-key" in page
    assert count(app, Recipe) == 0


def test_engine_problems_land_on_delivery_fields(app):
    with app.test_request_context():
        editor = RecipeEditor.from_definition("r", {"settings": {"dedupe": {"header": "a", "path": "$.a"}}}, [])
        editor.show([Problem("settings.dedupe", "give a header or a JSONPath, not both"),
                     Problem("settings.dedupe.header", "bad header"),
                     Problem("settings.dedupe.window_seconds", "must be 1 to 7776000 seconds"),
                     Problem("settings.retry", "must be a mapping"),
                     Problem("settings.retry.max_age_seconds", "too long"),
                     Problem("settings.retry.schedule", "must be a list")])
        d = editor.delivery
        assert d["dedupe_by"].errors == ["give a header or a JSONPath, not both"]
        assert d["dedupe_key"].errors == ["bad header"]
        assert d["dedupe_window"].errors == ["must be 1 to 7776000 seconds"]
        assert d["retry_attempts"].errors == ["must be a mapping"] and d["retry_age"].errors == ["too long"]
        assert editor.problems == ["settings.retry.schedule: must be a list"]  # no field: page top
        assert editor.error_count == 6


def test_dedupe_by_body_id_end_to_end(app, client):
    recipe_id = new(client, form(dedupe_by="path", dedupe_key="$.id"))
    with app.app_context():
        token = db.session.get(Recipe, recipe_id).token
    first = client.post(f"/hooks/{token}", json={"id": "evt_1", "n": 1})
    assert first.status_code == 202 and first.get_json()["status"] == "queued"
    again = client.post(f"/hooks/{token}", json={"id": "evt_1", "n": 2})
    assert again.status_code == 200
    assert again.get_json() == {"run_id": first.get_json()["run_id"], "status": "duplicate"}
    other = client.post(f"/hooks/{token}", json={"id": "evt_2"})
    assert other.status_code == 202 and other.get_json()["run_id"] != first.get_json()["run_id"]
