"""HubSpot: create or update a contact, matched by email (CRM v3 batch upsert).

Contract (https://developers.hubspot.com/docs/api/crm/contacts): one
``POST {base}/crm/v3/objects/contacts/batch/upsert`` with
``{"inputs": [{"idProperty": "email", "id": <email>, "properties": {...}}]}`` creates the
contact or updates the one with that email; the result's ``new`` flag says which. HubSpot
lower-cases emails. A private-app token goes in ``Authorization: Bearer``; it never reaches
the run history, errors or logs.

Errors (https://developers.hubspot.com/docs/api/error-handling) are JSON with ``message``,
``category`` and ``correlationId`` (support asks for it, so every error message quotes it).
Rate limits (https://developers.hubspot.com/docs/api/usage-details): a 429 names its
``policyName``; without Retry-After a ten-second window is waited out, a daily limit is
retried at the next full hour.

Blank inputs are never sent: a recipe whose trigger lacks a phone number must not erase the
phone HubSpot already has. So this action cannot clear a property.
"""
from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

from .base import (
    Action,
    ActionContext,
    ActionResult,
    CredentialType,
    Field,
    PermanentError,
    RetryableError,
    json_input,
    split_http_url,
)
from .outbound import OutboundResponse, retry_hint
from .redaction import redact_values

DEFAULT_BASE_URL = "https://api.hubapi.com"
UPSERT_PATH = "/crm/v3/objects/contacts/batch/upsert"
LIST_PATH = "/crm/v3/objects/contacts"  # "Test": one contact read, nothing written
NAMED_PROPERTIES = ("firstname", "lastname", "phone", "company", "lifecyclestage")
# Not a full RFC 5322 parser: one @, no whitespace, a dot in the domain. HubSpot decides the rest.
_EMAIL = re.compile(r"[^@\s\"<>(),;:]+@[^@\s\"<>(),;:\[\]]+\.[^@\s\"<>(),;:\[\]]+")
_PROPERTY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

# Without a Retry-After header: how long each HubSpot limit takes to reset (seconds).
POLICY_DELAYS = {"TEN_SECONDLY_ROLLING": 10.0, "SECONDLY": 1.0, "MINUTELY": 60.0}
DEFAULT_RATE_LIMIT_DELAY = 10.0
DAILY_MIN_DELAY = 60.0

HINTS = {
    401: "the private app token is invalid, expired or was rotated; paste the app's current access token "
         "into the connection",
    404: "check the connection's base URL (normally https://api.hubapi.com)",
}
SCOPE_HINT = ("the private app lacks the crm.objects.contacts.write scope; add it (and crm.objects.contacts.read) "
              "under Settings > Integrations > Private Apps in HubSpot")
FORBIDDEN_HINT = "the private app token is not allowed to write contacts in this HubSpot account"
READ_SCOPE_HINT = ("the private app lacks the crm.objects.contacts.read scope (recipes need it and "
                   "crm.objects.contacts.write); add it under Settings > Integrations > Private Apps in HubSpot")


# --- inputs ---------------------------------------------------------------------------------

def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value in ([], {})


def _property_value(name: str, value: Any) -> str:
    """HubSpot property values are text: numbers and booleans as JSON writes them, a list as a
    multiple-checkbox value (``a;b``)."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
        return ";".join(_property_value(name, v) for v in value if not _blank(v))
    raise PermanentError(f"properties: {name!r} is a {type(value).__name__}; a HubSpot property value is text, "
                         "a number, true/false or a list (for multiple checkboxes)")


def _extra_properties(value: Any) -> dict[str, str]:
    value = json_input("properties", value)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PermanentError("properties: must be a JSON object of HubSpot property names and values, "
                             f'like {{"city": "Paris"}}, not {type(value).__name__}')
    out: dict[str, str] = {}
    for name, val in value.items():
        name = str(name).strip()
        if not _PROPERTY_NAME.fullmatch(name):
            raise PermanentError(f"properties: {name!r} is not a HubSpot property internal name "
                                 "(letters, digits and _, like favourite_colour)")
        if _blank(val):
            continue
        text = _property_value(name, val)
        if text:
            out[name.lower()] = text
    return out


def _email(value: Any) -> str:
    email = "" if value is None else str(value).strip()
    if not email:
        raise PermanentError("email: required; it is how HubSpot finds the contact to update")
    if not _EMAIL.fullmatch(email):
        raise PermanentError(f"email: {email[:100]!r} is not an email address")
    return email.lower()


def build_input(inputs: dict[str, Any]) -> dict[str, Any]:
    """The one upsert input: the ``properties`` object, then the named inputs over it
    (explicit inputs win); blank values are left out."""
    email = _email(inputs.get("email"))
    properties = _extra_properties(inputs.get("properties"))
    properties.pop("email", None)  # the email input is the contact's id
    for name in NAMED_PROPERTIES:
        value = inputs.get(name)
        if not _blank(value):
            text = _property_value(name, value)
            if text:
                properties[name] = text
    return {"idProperty": "email", "id": email, "properties": properties}


def _base_url(creds: dict[str, Any]) -> str:
    base = str(creds.get("base_url") or "").strip() or DEFAULT_BASE_URL
    parts = split_http_url(base)
    if parts is None or parts.query or parts.fragment:
        raise PermanentError(f"base_url: {base[:200]!r} is not an http(s) URL like {DEFAULT_BASE_URL}")
    return base.rstrip("/")


# --- answers --------------------------------------------------------------------------------

def _json_body(resp: OutboundResponse) -> dict[str, Any]:
    if not resp.body.strip():
        return {}
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _detail_messages(errors: Any) -> list[str]:
    out = []
    for err in errors if isinstance(errors, list) else []:
        if not isinstance(err, dict):
            continue
        msg = str(err.get("message") or err.get("localizedErrorMessage") or err.get("error") or "").strip()
        context = err.get("context") if isinstance(err.get("context"), dict) else {}
        names = context.get("propertyName") or ([err["name"]] if isinstance(err.get("name"), str) else [])
        names = [str(n) for n in (names if isinstance(names, list) else [names])]
        if names and msg and not any(n in msg for n in names):
            msg = f"{', '.join(names)}: {msg}"
        if msg and msg not in out:
            out.append(msg)
    return out


def _hubspot_message(body: dict[str, Any]) -> str:
    """HubSpot's message plus the per-property details, from ``errors[]`` or from the JSON
    list HubSpot sometimes embeds in the message ("Property values were not valid: [{...}]")."""
    message = " ".join(str(body.get("message") or "").split())
    details = _detail_messages(body.get("errors"))
    head, sep, tail = message.partition(": [")
    if sep:
        try:
            embedded = json.loads("[" + tail)
        except ValueError:
            embedded = None
        if isinstance(embedded, list):
            message = head
            details += [d for d in _detail_messages(embedded) if d not in details]
    if details:
        message = f"{message.rstrip('.')}: {'; '.join(details)}" if message else "; ".join(details)
    return message[:600]


def _correlation_id(body: dict[str, Any], resp: OutboundResponse) -> str:
    return str(body.get("correlationId") or resp.headers.get("X-HubSpot-Correlation-Id") or "").strip()


def _describe(resp: OutboundResponse, body: dict[str, Any], message: str) -> str:
    try:
        phrase = HTTPStatus(resp.status).phrase
    except ValueError:
        phrase = ""
    facts = [f"HTTP {resp.status}"]
    category = body.get("category") or body.get("errorType")
    if category:
        facts.append(str(category))
    if body.get("policyName"):
        facts.append(f"policy {body['policyName']}")
    cid = _correlation_id(body, resp)
    if cid:
        facts.append(f"correlationId {cid}")
    if not message:
        if resp.is_json or "html" in resp.content_type or not resp.text.strip():
            message = phrase or "no error message"
        else:
            message = " ".join(resp.text[:300].split())[:200]
    return f"{message} ({', '.join(facts)})"


def _rate_limit_delay(resp: OutboundResponse, body: dict[str, Any], now: datetime | None = None
                      ) -> float | datetime | None:
    """Retry-After when HubSpot sent one; else by the limit that was hit: a rolling window is
    waited out, a daily limit is tried again at the next full hour (HubSpot resets it at
    midnight in the account's time zone, which is on an hour for nearly every zone)."""
    hint = retry_hint(resp.headers.get("Retry-After"))
    if hint is not None:
        return hint
    if resp.status != 429:
        return None
    policy = str(body.get("policyName") or "").upper()
    if policy == "DAILY":
        now = now or datetime.now(UTC)
        next_hour = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        return max((next_hour - now).total_seconds(), DAILY_MIN_DELAY)
    return POLICY_DELAYS.get(policy, DEFAULT_RATE_LIMIT_DELAY)


def _raise_error(resp: OutboundResponse, token: str, summary: dict[str, Any], what: str = "the contact",
                 scope_hint: str = SCOPE_HINT) -> None:
    body = _json_body(resp)
    detail = redact_values(_describe(resp, body, _hubspot_message(body)), (token,))
    kw: dict[str, Any] = {"request": resp.request, "response": summary}
    category = str(body.get("category") or body.get("errorType") or "").upper()
    if resp.status == 429:
        raise RetryableError(f"HubSpot rate limit: {detail}", retry_after=_rate_limit_delay(resp, body), **kw)
    if resp.status in (408, 425) or resp.status >= 500:
        raise RetryableError(f"HubSpot is unavailable: {detail}", retry_after=_rate_limit_delay(resp, body), **kw)
    if resp.status == 403:
        hint = scope_hint if category == "MISSING_SCOPES" else FORBIDDEN_HINT
    else:
        hint = HINTS.get(resp.status, "")
    raise PermanentError(f"HubSpot refused {what}: {detail}" + (f"; {hint}" if hint else ""), **kw)


def _result(resp: OutboundResponse, token: str, summary: dict[str, Any]) -> dict[str, Any]:
    """The one upserted contact from a 2xx answer, or PermanentError: the contact may have
    been written, so an answer that cannot be read is not retried (that could loop)."""
    kw: dict[str, Any] = {"request": resp.request, "response": summary}
    body = _json_body(resp) if resp.is_json else {}
    results = body.get("results")
    if isinstance(results, list) and results and isinstance(results[0], dict) and results[0].get("id"):
        return results[0]
    if body.get("errors"):  # 207 Multi-Status: the input failed inside a successful batch
        first = body["errors"][0] if isinstance(body["errors"], list) and body["errors"] else {}
        first = first if isinstance(first, dict) else {}
        message = _hubspot_message({"message": first.get("message"), "errors": body["errors"][1:]})
        detail = _describe(resp, {**first, "correlationId": body.get("correlationId") or first.get("correlationId")},
                           message)
        raise PermanentError(f"HubSpot refused the contact: {redact_values(detail, (token,))}", **kw)
    raise PermanentError(f"HubSpot answered HTTP {resp.status} without the contact; is the connection's base URL "
                         "a HubSpot API address (https://api.hubapi.com)?", **kw)


def run(ctx: ActionContext) -> ActionResult:
    creds = ctx.credentials
    token = str(creds.get("access_token") or "").strip()
    if not token:
        raise PermanentError("connection: the HubSpot private app access token is empty")
    url = _base_url(creds) + UPSERT_PATH
    payload = {"inputs": [build_input(ctx.inputs)]}
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json",
               "Idempotency-Key": ctx.idempotency_key}
    resp = ctx.http.request("POST", url, json=payload, headers=headers, secret_names=("Authorization",))
    summary = redact_values(resp.summary(), (token,))
    if not 200 <= resp.status < 300:
        _raise_error(resp, token, summary)
    contact = _result(resp, token, summary)
    output = {"id": str(contact["id"]), "created": bool(contact.get("new")),
              "properties": contact.get("properties") if isinstance(contact.get("properties"), dict) else {}}
    return ActionResult(output=output, request=resp.request, response=summary)


def check_connection(ctx: ActionContext) -> str:
    """Reads one contact: the token, the base URL and the read scope checked, nothing written
    (the write scope can only be seen by writing)."""
    creds = ctx.credentials
    token = str(creds.get("access_token") or "").strip()
    if not token:
        raise PermanentError("connection: the HubSpot private app access token is empty")
    base = _base_url(creds)
    resp = ctx.http.request("GET", base + LIST_PATH, params={"limit": "1"}, secret_names=("Authorization",),
                            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    if not 200 <= resp.status < 300:
        _raise_error(resp, token, redact_values(resp.summary(), (token,)), what="the token",
                     scope_hint=READ_SCOPE_HINT)
    return f"the token works: {base} lets it read contacts"


CREDENTIALS = (
    CredentialType(
        key="hubspot_private_app", label="HubSpot private app", test=check_connection,
        description=("A HubSpot private app's access token (Settings > Integrations > Private Apps) with the "
                     "crm.objects.contacts.write and crm.objects.contacts.read scopes."),
        fields=(
            Field("access_token", "Access token", required=True, secret=True, template=False,
                  placeholder="pat-na1-…",
                  help="The private app's access token, sent as a Bearer token; never shown again once saved."),
            Field("base_url", "API base URL", default=DEFAULT_BASE_URL, template=False,
                  placeholder=DEFAULT_BASE_URL,
                  help="Leave as https://api.hubapi.com unless HubSpot or a proxy gave you another API address."),
        ),
    ),
)

ACTIONS = (
    Action(
        key="hubspot_upsert_contact", label="HubSpot: create or update contact", group="CRM", run=run,
        credential="hubspot_private_app", credential_required=True,
        description=("Create a HubSpot contact, or update the one with the same email (HubSpot ignores case). "
                     "Blank inputs are not sent, so they never erase values HubSpot already has. Later steps "
                     "read the contact's id ({{ steps.<key>.id }}), created (true/false) and properties. "
                     "Rate limits (429) and HubSpot outages are retried; invalid values, unknown properties "
                     "and rejected tokens fail the run."),
        fields=(
            Field("email", "Email", required=True, placeholder="{{ email }}",
                  help="Finds the contact to update; a new contact is created when none has this email."),
            Field("firstname", "First name", help="Left unchanged when blank."),
            Field("lastname", "Last name", help="Left unchanged when blank."),
            Field("phone", "Phone", help="Left unchanged when blank."),
            Field("company", "Company", help="The company name property of the contact; left unchanged when blank."),
            Field("lifecyclestage", "Lifecycle stage", placeholder="lead",
                  help=("Internal value: subscriber, lead, marketingqualifiedlead, salesqualifiedlead, opportunity, "
                        "customer, evangelist, other (or a custom stage's id). HubSpot only moves a stage "
                        "forward. Left unchanged when blank.")),
            Field("properties", "Other properties", "json", default="",
                  placeholder='{"city": "{{ city }}", "favourite_colour": "blue"}',
                  help=("A JSON object of any other HubSpot property internal names and values. The inputs above "
                        "win over the same names here. Blank values are not sent, so this action never clears "
                        "a property.")),
        ),
    ),
)
