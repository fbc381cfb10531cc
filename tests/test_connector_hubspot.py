"""HubSpot "create or update contact" against a sink that enforces HubSpot's documented
CRM v3 contract (batch upsert by email, Bearer private-app token, JSON errors with a
correlationId, 429 rate limits), then end to end through a live server and runner."""
from __future__ import annotations

import itertools
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from urllib3 import HTTPHeaderDict

from automations import connections
from connectors import docs, registry
from connectors.base import ActionContext, PermanentError, RetryableError
from connectors.hubspot import ACTIONS, CREDENTIALS, LIST_PATH, UPSERT_PATH, _rate_limit_delay
from connectors.outbound import OutboundClient, OutboundResponse
from tests.live import TEST_ALLOWLIST, LiveServer, make_live_app
from tests.sinks import HttpSink, Received, Reply
from tests.test_e2e import STRIPE_EVENT, http_step, make_recipe, steps_of, wait_run
from web.extensions import db

ACTION = ACTIONS[0]
TOKEN = "pat-na1-0f3c2a1e-SECRET-4b6d-9e8f-TOKEN"
KNOWN_PROPERTIES = {"email", "firstname", "lastname", "phone", "company", "lifecyclestage", "city", "plan",
                    "website", "hs_language", "newsletter", "interests", "amount"}


def hubspot_error(status: int, category: str, message: str, **extra: Any) -> Reply:
    return Reply(status, {"status": "error", "message": message, "correlationId": str(uuid.uuid4()),
                          "category": category, **extra})


class HubSpotLike:
    """Behaves like api.hubapi.com for the batch upsert of contacts: checks the token, the
    path, the body shape and the property names; keeps contacts by lower-cased email so a
    second upsert of the same email updates it (``new: false``). ``next_error`` scripts the
    next answer (after the token and path checks)."""

    def __init__(self) -> None:
        self.next_error: Reply | None = None
        self.contacts: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(151)
        self.scopes = {"crm.objects.contacts.read", "crm.objects.contacts.write"}

    def __call__(self, req: Received) -> Reply:
        if req.headers.get("Authorization") != f"Bearer {TOKEN}":
            return hubspot_error(401, "INVALID_AUTHENTICATION",
                                 "Authentication credentials not found. This API supports OAuth 2.0 authentication "
                                 "and you can find more details at https://developers.hubspot.com/docs/methods/auth/"
                                 "oauth-overview")
        if req.method == "GET" and req.path == LIST_PATH:  # list contacts: needs the read scope
            if "crm.objects.contacts.read" not in self.scopes:
                return hubspot_error(403, "MISSING_SCOPES", "This app hasn't been granted all required scopes to "
                                     "make this call.", errors=[{"message": "One or more of the following scopes "
                                     "are required.", "context": {"requiredGranularScopes": [
                                         "crm.objects.contacts.read"]}}])
            limit = int((req.query.get("limit") or ["10"])[0])
            contacts = list(self.contacts.values())[:limit]
            return Reply(200, {"results": [{**c, "archived": False} for c in contacts]})
        if req.method != "POST" or req.path != UPSERT_PATH:
            return Reply(404, b"")
        if self.next_error is not None:
            return self.next_error
        if not req.headers.get("Content-Type", "").startswith("application/json"):
            return hubspot_error(415, "VALIDATION_ERROR", "Unsupported Media Type")
        try:
            body = req.json()
        except ValueError:
            return hubspot_error(400, "VALIDATION_ERROR", "Invalid input JSON on line 1")
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if set(body) != {"inputs"} or not isinstance(inputs, list) or not 1 <= len(inputs) <= 100:
            return hubspot_error(400, "VALIDATION_ERROR", "Invalid input JSON: inputs must be a list of 1 to 100")
        results = []
        for item in inputs:
            if not isinstance(item, dict) or item.get("idProperty") != "email" or not isinstance(item.get("id"), str):
                return hubspot_error(400, "VALIDATION_ERROR", "Invalid input JSON: idProperty email and id required")
            props = item.get("properties")
            if not isinstance(props, dict) or not all(isinstance(v, str) for v in props.values()):
                return hubspot_error(400, "VALIDATION_ERROR", "Invalid input JSON: property values must be strings")
            unknown = sorted(set(props) - KNOWN_PROPERTIES)
            if unknown:
                return hubspot_error(400, "VALIDATION_ERROR", "Property values were not valid", errors=[
                    {"message": f'Property "{name}" does not exist', "code": "PROPERTY_DOESNT_EXIST",
                     "context": {"propertyName": [name]}} for name in unknown])
            email = item["id"].lower()
            if "@" not in email:
                return hubspot_error(400, "VALIDATION_ERROR", "Email address is invalid")
            new = email not in self.contacts
            contact = self.contacts.setdefault(email, {"id": str(next(self._ids)), "properties": {"email": email}})
            contact["properties"].update(props)
            results.append({"id": contact["id"], "properties": {**contact["properties"], "hs_object_id": contact["id"]},
                            "createdAt": "2024-05-01T10:00:00Z", "updatedAt": "2024-05-01T10:00:00Z",
                            "archived": False, "new": new})
        return Reply(200, {"status": "COMPLETE", "results": results, "startedAt": "2024-05-01T10:00:00Z",
                           "completedAt": "2024-05-01T10:00:00Z"})


@pytest.fixture
def hubspot():
    contract = HubSpotLike()
    with HttpSink(contract) as sink:
        sink.contract = contract  # type: ignore[attr-defined]
        yield sink


def client() -> OutboundClient:
    return OutboundClient(allowlist=TEST_ALLOWLIST, timeout=2)


def upsert(sink: HttpSink, inputs: dict[str, Any], token: str = TOKEN, base_url: str | None = None):
    ctx = ActionContext(inputs=inputs, credentials={"access_token": token,
                                                    "base_url": sink.url if base_url is None else base_url},
                        http=client(), idempotency_key="hookline-7-crm")
    return ACTION.run(ctx)


# --- the happy paths --------------------------------------------------------------------------

def test_create_then_update_same_email(hubspot: HttpSink) -> None:
    first = upsert(hubspot, {"email": "Ann@Example.com", "firstname": "Ann", "lastname": "Lee", "phone": "+33 1 23"})
    assert first.output == {"id": "151", "created": True, "properties": {
        "email": "ann@example.com", "firstname": "Ann", "lastname": "Lee", "phone": "+33 1 23", "hs_object_id": "151"}}
    second = upsert(hubspot, {"email": " ANN@example.COM ", "lastname": "Lee-Smith", "company": "Acme"})
    assert second.output["id"] == "151" and second.output["created"] is False
    assert second.output["properties"]["firstname"] == "Ann"       # kept: not sent again
    assert second.output["properties"]["lastname"] == "Lee-Smith"  # updated
    assert list(hubspot.contract.contacts) == ["ann@example.com"]  # type: ignore[attr-defined]
    assert second.response["status"] == 200 and second.response["body"]["status"] == "COMPLETE"


def test_request_follows_the_contract(hubspot: HttpSink) -> None:
    result = upsert(hubspot, {"email": "bob@example.com", "firstname": "Bob", "lifecyclestage": "customer"})
    [req] = hubspot.wait_for(1)
    assert (req.method, req.path) == ("POST", "/crm/v3/objects/contacts/batch/upsert")
    assert req.headers["Authorization"] == f"Bearer {TOKEN}"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["Idempotency-Key"] == "hookline-7-crm"
    assert req.json() == {"inputs": [{"idProperty": "email", "id": "bob@example.com",
                                      "properties": {"firstname": "Bob", "lifecyclestage": "customer"}}]}
    assert result.request["url"] == hubspot.url + UPSERT_PATH
    assert result.request["headers"]["Authorization"] == "[redacted]"


def test_blank_inputs_are_not_sent(hubspot: HttpSink) -> None:
    upsert(hubspot, {"email": "c@example.com", "firstname": "Cy", "lastname": "Doe", "phone": "0123"})
    upsert(hubspot, {"email": "c@example.com", "firstname": "", "lastname": "   ", "phone": None, "company": "",
                     "lifecyclestage": None, "properties": {"city": "", "plan": None, "interests": []}})
    assert hubspot.requests[1].json()["inputs"][0]["properties"] == {}
    stored = hubspot.contract.contacts["c@example.com"]["properties"]  # type: ignore[attr-defined]
    assert (stored["firstname"], stored["lastname"], stored["phone"]) == ("Cy", "Doe", "0123")


@pytest.mark.parametrize("properties", [
    {"city": "Paris", "firstname": "Ignored", "plan": 3, "newsletter": True, "interests": ["a", "b"],
     "email": "other@example.com", "amount": 19.99},
    ('{"city": "Paris", "firstname": "Ignored", "plan": 3, "newsletter": true, "interests": ["a", "b"],'
     ' "email": "other@example.com", "amount": 19.99}'),
])
def test_properties_are_merged_and_explicit_inputs_win(hubspot: HttpSink, properties: Any) -> None:
    result = upsert(hubspot, {"email": "d@example.com", "firstname": "Dee", "properties": properties})
    sent = hubspot.wait_for(1)[0].json()["inputs"][0]
    assert sent["id"] == "d@example.com"
    assert sent["properties"] == {"city": "Paris", "firstname": "Dee", "plan": "3", "newsletter": "true",
                                  "interests": "a;b", "amount": "19.99"}
    assert result.output["properties"]["city"] == "Paris"


@pytest.mark.parametrize("inputs, message", [
    ({"email": ""}, "email: required"),
    ({"email": None}, "email: required"),
    ({"email": "not-an-email"}, "is not an email address"),
    ({"email": "ann@localhost"}, "is not an email address"),
    ({"email": "ann lee@example.com"}, "is not an email address"),
    ({"email": "a@b@example.com"}, "is not an email address"),
    ({"email": "a@example.com", "properties": "{oops"}, "properties: invalid JSON"),
    ({"email": "a@example.com", "properties": "[1, 2]"}, "properties: must be a JSON object"),
    ({"email": "a@example.com", "properties": {"city": {"name": "Paris"}}}, "'city' is a dict"),
    ({"email": "a@example.com", "properties": {"bad name": "x"}}, "not a HubSpot property internal name"),
])
def test_invalid_input_refused_before_sending(hubspot: HttpSink, inputs: dict[str, Any], message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        upsert(hubspot, inputs)
    assert hubspot.requests == []


@pytest.mark.parametrize("creds, message", [
    ({"access_token": "", "base_url": "http://127.0.0.1:9"}, "access token is empty"),
    ({"access_token": TOKEN, "base_url": "api.hubapi.com"}, "base_url: 'api.hubapi.com' is not an http"),
    ({"access_token": TOKEN, "base_url": "ftp://api.hubapi.com"}, "base_url"),
])
def test_bad_connection_refused_before_sending(creds: dict[str, Any], message: str) -> None:
    ctx = ActionContext(inputs={"email": "a@example.com"}, credentials=creds, http=client(), idempotency_key="k")
    with pytest.raises(PermanentError, match=message):
        ACTION.run(ctx)


def test_base_url_with_trailing_slash(hubspot: HttpSink) -> None:
    assert upsert(hubspot, {"email": "e@example.com"}, base_url=hubspot.url + "/").output["created"] is True
    assert hubspot.requests[0].path == UPSERT_PATH


# --- errors ---------------------------------------------------------------------------------------

def test_unknown_property_is_permanent_and_names_it(hubspot: HttpSink) -> None:
    """Not scripted: the sink refuses the property as HubSpot does."""
    with pytest.raises(PermanentError) as info:
        upsert(hubspot, {"email": "f@example.com", "properties": {"favourite_colour": "blue"}})
    message = info.value.message
    assert 'Property values were not valid: Property "favourite_colour" does not exist' in message
    assert "VALIDATION_ERROR" in message and "HTTP 400" in message
    assert f"correlationId {info.value.response['body']['correlationId']}" in message


CID = "aeb5f871-7f07-4993-9211-075dc63e7cbf"
EMBEDDED = ('Property values were not valid: [{"isValid":false,"message":"Property \\"favourite_colour\\" does not '
            'exist","error":"PROPERTY_DOESNT_EXIST","name":"favourite_colour"}]')


@pytest.mark.parametrize("reply, error, expected", [
    (Reply(400, {"status": "error", "message": EMBEDDED, "correlationId": CID, "category": "VALIDATION_ERROR"}),
     PermanentError, ['Property values were not valid: Property "favourite_colour" does not exist',
                      "VALIDATION_ERROR"]),
    (Reply(400, {"status": "error", "message": "Property values were not valid", "correlationId": CID,
                 "category": "VALIDATION_ERROR", "errors": [{"message": "INVALID_OPTION", "context": {
                     "propertyName": ["lifecyclestage"]}}]}),
     PermanentError, ["Property values were not valid: lifecyclestage: INVALID_OPTION"]),
    (Reply(401, {"status": "error", "message": "The OAuth token used to make this call expired 2 day(s) ago.",
                 "correlationId": CID, "category": "EXPIRED_AUTHENTICATION"}),
     PermanentError, ["expired 2 day(s) ago", "paste the app's current access token"]),
    (Reply(403, {"status": "error", "message": "This app hasn't been granted all required scopes to make this "
                 "call.", "correlationId": CID, "category": "MISSING_SCOPES", "errors": [
                     {"message": "One or more of the following scopes are required.",
                      "context": {"requiredGranularScopes": ["crm.objects.contacts.write"]}}]}),
     PermanentError, ["granted all required scopes", "MISSING_SCOPES", "add it (and crm.objects.contacts.read)",
                      "crm.objects.contacts.write scope"]),
    (Reply(403, {"status": "error", "message": "Forbidden", "correlationId": CID, "category": "FORBIDDEN"}),
     PermanentError, ["not allowed to write contacts"]),
    (Reply(404, {"status": "error", "message": "Resource not found", "correlationId": CID,
                 "category": "OBJECT_NOT_FOUND"}), PermanentError, ["Resource not found", "check the connection's base URL"]),
    (Reply(409, {"status": "error", "message": "Contact already exists. Existing ID: 151", "correlationId": CID,
                 "category": "CONFLICT"}), PermanentError, ["Existing ID: 151", "CONFLICT"]),
    (Reply(500, {"status": "error", "message": "internal error", "correlationId": CID, "category": "INTERNAL_ERROR"}),
     RetryableError, ["HubSpot is unavailable: internal error", "HTTP 500"]),
    (Reply(503, {"status": "error", "message": "Service Unavailable", "correlationId": CID},
           headers={"Retry-After": "30"}), RetryableError, ["Service Unavailable", "HTTP 503"]),
    (Reply(502, "<html><body><h1>502 Bad Gateway</h1></body></html>", headers={"Content-Type": "text/html"}),
     RetryableError, ["HubSpot is unavailable: Bad Gateway (HTTP 502)"]),
    (Reply(504, "<html><head><title>504 Gateway Time-out</title></head></html>",
           headers={"Content-Type": "text/html", "X-HubSpot-Correlation-Id": CID}),
     RetryableError, ["Gateway Timeout (HTTP 504, correlationId " + CID]),
])
def test_hubspot_error_contract(hubspot: HttpSink, reply: Reply, error: type, expected: list[str]) -> None:
    hubspot.contract.next_error = reply  # type: ignore[attr-defined]
    with pytest.raises(error) as info:
        upsert(hubspot, {"email": "g@example.com", "firstname": "Gil"})
    exc = info.value
    assert type(exc) is error
    for text in expected:
        assert text in exc.message
    assert CID in exc.message or reply.status == 502
    assert "<html" not in exc.message
    assert exc.response["status"] == reply.status and exc.request["method"] == "POST"
    if reply.status == 503:
        assert exc.retry_after == 30.0


@pytest.mark.parametrize("headers, policy, check", [
    ({"Retry-After": "3"}, "TEN_SECONDLY_ROLLING", lambda after: after == 3.0),
    ({}, "TEN_SECONDLY_ROLLING", lambda after: after == 10.0),
    ({}, "SECONDLY", lambda after: after == 1.0),
    ({}, None, lambda after: after == 10.0),
    ({}, "DAILY", lambda after: isinstance(after, float) and 60.0 <= after <= 3600.0),
    ({"Retry-After": "Wed, 21 Oct 2037 07:28:00 GMT"}, "DAILY",
     lambda after: after == datetime(2037, 10, 21, 7, 28, tzinfo=UTC)),
])
def test_rate_limit_is_retryable_with_a_sensible_delay(hubspot: HttpSink, headers: dict[str, str],
                                                        policy: str | None, check: Any) -> None:
    body = {"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
            "errorType": "RATE_LIMIT", "correlationId": CID}
    if policy:
        body["policyName"] = policy
    hubspot.contract.next_error = Reply(429, body, headers={  # type: ignore[attr-defined]
        "X-HubSpot-RateLimit-Interval-Milliseconds": "10000", "X-HubSpot-RateLimit-Remaining": "0", **headers})
    with pytest.raises(RetryableError) as info:
        upsert(hubspot, {"email": "h@example.com"})
    assert check(info.value.retry_after), info.value.retry_after
    assert "HubSpot rate limit: You have reached your ten_secondly_rolling limit." in info.value.message
    assert "RATE_LIMIT" in info.value.message and CID in info.value.message
    assert info.value.response["headers"]["X-HubSpot-RateLimit-Remaining"] == "0"


def test_daily_limit_waits_for_the_next_hour() -> None:
    resp = OutboundResponse(429, HTTPHeaderDict(), b"", "http://x", 1)
    at = datetime(2024, 5, 1, 10, 15, tzinfo=UTC)
    assert _rate_limit_delay(resp, {"policyName": "DAILY"}, now=at) == 45 * 60
    late = datetime(2024, 5, 1, 10, 59, 50, tzinfo=UTC)  # not a retry storm just before the hour
    assert _rate_limit_delay(resp, {"policyName": "DAILY"}, now=late) == 60.0


@pytest.mark.parametrize("reply, message", [
    (Reply(200, "<html>Sign in</html>", headers={"Content-Type": "text/html"}), "without the contact"),
    (Reply(200, {"status": "COMPLETE", "results": []}), "without the contact"),
    (Reply(207, {"status": "COMPLETE", "results": [], "numErrors": 1, "errors": [
        {"status": "error", "category": "VALIDATION_ERROR", "message": "Email address ann@ is invalid",
         "correlationId": CID}]}), "Email address ann@ is invalid (HTTP 207, VALIDATION_ERROR, correlationId"),
])
def test_unreadable_success_is_permanent(hubspot: HttpSink, reply: Reply, message: str) -> None:
    hubspot.contract.next_error = reply  # type: ignore[attr-defined]
    with pytest.raises(PermanentError, match=message.replace("(", r"\(")):
        upsert(hubspot, {"email": "i@example.com"})


# --- the token ------------------------------------------------------------------------------------

def test_wrong_token_is_permanent_and_never_shown(hubspot: HttpSink) -> None:
    wrong = "pat-na1-WRONG-0000-1111-2222-SECRET"
    with pytest.raises(PermanentError) as info:
        upsert(hubspot, {"email": "j@example.com"}, token=wrong)
    exc = info.value
    assert "Authentication credentials not found" in exc.message and "INVALID_AUTHENTICATION" in exc.message
    assert "paste the app's current access token" in exc.message
    assert hubspot.requests[0].headers["Authorization"] == f"Bearer {wrong}"  # it was sent...
    shown = json.dumps([exc.message, exc.request, exc.response])
    assert wrong not in shown and "WRONG" not in shown                        # ...and is never shown


def test_token_absent_from_summary_and_errors_even_when_echoed(hubspot: HttpSink) -> None:
    result = upsert(hubspot, {"email": "k@example.com"})
    assert TOKEN not in json.dumps([result.request, result.response, result.output])
    assert result.request["headers"]["Authorization"] == "[redacted]"
    hubspot.contract.next_error = hubspot_error(  # type: ignore[attr-defined]
        400, "VALIDATION_ERROR", f"bad header Bearer {TOKEN} and {TOKEN}")
    with pytest.raises(PermanentError) as info:
        upsert(hubspot, {"email": "k@example.com"})
    shown = json.dumps([info.value.message, info.value.request, info.value.response])
    assert TOKEN not in shown and "SECRET" not in shown


# --- the declaration ------------------------------------------------------------------------------

def test_declaration_is_registered() -> None:
    assert registry.get_action("hubspot_upsert_contact") is ACTION
    ctype = registry.get_credential_type("hubspot_private_app")
    assert ctype is CREDENTIALS[0] and ctype.secret_names == {"access_token"}
    assert ctype.fields[1].name == "base_url" and ctype.fields[1].default == "https://api.hubapi.com"
    assert ACTION.credential == "hubspot_private_app" and ACTION.credential_required and ACTION.group == "CRM"
    assert [f.name for f in ACTION.fields] == ["email", "firstname", "lastname", "phone", "company",
                                               "lifecyclestage", "properties"]
    assert ACTION.field("email").required and not any(f.required for f in ACTION.fields[1:])
    assert "not sent" in ACTION.field("properties").help and "Left unchanged when blank" in ACTION.field("phone").help
    assert "HubSpot: create or update contact (`hubspot_upsert_contact`)" in docs.markdown()


# --- end to end -----------------------------------------------------------------------------------

@pytest.fixture
def live(tmp_path):
    server = LiveServer(make_live_app(tmp_path))
    yield server
    server.close()


def test_stripe_payment_upserts_a_contact_and_a_later_step_uses_its_id(live: LiveServer, hubspot: HttpSink) -> None:
    app = live.app
    with HttpSink(lambda req: Reply(200, {"ok": True})) as notes:
        with app.app_context():
            conn_id = connections.create(db.session, app.extensions["hookline"].secret_box, "hubspot",
                                         "hubspot_private_app", {"access_token": TOKEN, "base_url": hubspot.url}).id
        _, token = make_recipe(app, fields=[
            {"name": "email", "path": "$.data.object.customer_details.email"},
            {"name": "name", "path": "$.data.object.customer_details.name"},
            {"name": "amount", "path": "$.data.object.amount_total"},
        ], steps=[
            {"key": "contact", "action": "hubspot_upsert_contact", "connection": conn_id, "inputs": {
                "email": "{{ email }}", "firstname": "{{ name | first_name }}", "lastname": "{{ name | last_name }}",
                "phone": "{{ trigger.body.data.object.customer_details.phone }}", "lifecyclestage": "customer",
                "properties": {"amount": "{{ amount / 100 }}", "plan": "{{ trigger.body.data.object.plan }}"}}},
            http_step("note", notes.url + "/notes", '{"contact": "{{ steps.contact.id }}", '
                                                    '"new": {{ steps.contact.created | tojson }}}'),
        ])
        run_id = live.post(token, json=STRIPE_EVENT).json()["run_id"]
        assert wait_run(app, run_id) == "succeeded"
        [req] = hubspot.requests
        assert req.headers["Authorization"] == f"Bearer {TOKEN}"
        assert req.headers["Idempotency-Key"] == f"hookline-{run_id}-contact"
        assert req.json() == {"inputs": [{"idProperty": "email", "id": "ann@example.com", "properties": {
            "firstname": "Ann", "lastname": "Lee", "lifecyclestage": "customer", "amount": "19.99"}}]}
        assert notes.wait_for(1)[0].json() == {"contact": "151", "new": True}

        run2 = live.post(token, json=STRIPE_EVENT).json()["run_id"]  # the same customer pays again
        assert wait_run(app, run2) == "succeeded"
        assert notes.wait_for(2)[1].json() == {"contact": "151", "new": False}

    history = steps_of(app, run_id)
    assert [(s["key"], s["status"]) for s in history] == [("contact", "succeeded"), ("note", "succeeded")]
    assert history[0]["request"]["headers"]["Authorization"] == "[redacted]"
    assert TOKEN not in json.dumps(history, default=str)


def test_sink_rejects_what_hubspot_rejects(hubspot: HttpSink) -> None:
    """The double itself enforces the contract, so the tests above test against a faithful one."""
    http, url = client(), hubspot.url + UPSERT_PATH
    auth = {"Authorization": f"Bearer {TOKEN}"}
    good = {"idProperty": "email", "id": "x@example.com", "properties": {}}
    assert http.request("POST", url, json={"inputs": [good]}).status == 401
    assert http.request("POST", hubspot.url + "/crm/v3/objects/contacts", headers=auth, json={}).status == 404
    assert http.request("POST", url, headers=auth, data=b"{nope").json()["category"] == "VALIDATION_ERROR"
    for bad in ({"inputs": []}, {"inputs": [{**good, "idProperty": "hs_object_id"}]},
                {"inputs": [{**good, "properties": {"plan": 3}}]}, {"inputs": [good], "extra": 1}):
        assert http.request("POST", url, headers=auth, json=bad).status == 400, bad
    assert http.request("POST", url, headers=auth, json={"inputs": [good]}).json()["results"][0]["new"] is True
    assert http.request("POST", url, headers=auth, json={"inputs": [{**good, "id": "X@Example.com"}]}
                        ).json()["results"][0]["new"] is False


def test_wrong_base_path_is_permanent_with_a_hint(hubspot: HttpSink) -> None:
    with pytest.raises(PermanentError) as info:
        upsert(hubspot, {"email": "l@example.com"}, base_url=hubspot.url + "/api")
    assert info.value.message == ("HubSpot refused the contact: Not Found (HTTP 404); check the connection's "
                                  "base URL (normally https://api.hubapi.com)")
