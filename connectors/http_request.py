"""Generic HTTP request: call any API with mapped data, optionally authenticated.

The output (``status``, ``headers`` with lower-case names, ``body`` parsed when JSON) is
what later steps read, e.g. ``{{ steps.create_invoice.body.id }}``.
"""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from . import host_patterns
from .base import Action, ActionContext, ActionResult, CredentialType, Field, PermanentError
from .outbound import raise_for_status, url_host

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
BODY_TYPES = (("json", "JSON"), ("form", "Form (URL-encoded)"), ("raw", "Raw text"), ("none", "No body"))
SCHEMES = (("bearer", "Bearer token"), ("basic", "Basic (username and password)"),
           ("api_key_header", "API key in a header"), ("api_key_query", "API key in the query string"))


def keyvalue(value: Any, name: str) -> list[tuple[str, str]]:
    """A rendered keyvalue field as (key, value) pairs. Accepts a dict, a list of pairs or
    of {"key"/"name", "value"} objects, a JSON object string, or nothing."""
    if value in (None, "", [], {}):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise PermanentError(f"{name}: expected key/value pairs, got text that is not a JSON object") from None
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = []
        for item in value:
            if isinstance(item, dict) and "value" in item and ("key" in item or "name" in item):
                items.append((item.get("key", item.get("name")), item["value"]))
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                items.append((item[0], item[1]))
            else:
                raise PermanentError(f"{name}: cannot read {item!r} as a key/value pair")
    else:
        raise PermanentError(f"{name}: expected key/value pairs, got {type(value).__name__}")
    pairs = []
    for key, val in items:
        if not str(key or "").strip():
            continue
        vals = val if isinstance(val, list) else [val]
        pairs += [(str(key).strip(), "" if v is None else v if isinstance(v, str) else json.dumps(v)) for v in vals]
    return pairs


def _body(inputs: dict[str, Any]) -> dict[str, Any]:
    """requests keyword arguments for the body (``json`` / ``data``), validated per body type."""
    kind, body = inputs.get("body_type") or "json", inputs.get("body")
    if kind == "none" or body is None or (isinstance(body, str) and not body.strip()):
        return {}
    if kind == "json":
        if isinstance(body, str):
            try:
                body = json.loads(body)
            except ValueError as exc:
                raise PermanentError(f"body: invalid JSON ({exc})") from None
        return {"json": body}
    if kind == "form":
        if isinstance(body, str) and not body.lstrip().startswith(("{", "[")):
            try:
                return {"data": parse_qsl(body, keep_blank_values=True, strict_parsing=True)}
            except ValueError:
                raise PermanentError("body: form data must be key/value pairs or a=1&b=2 text") from None
        return {"data": keyvalue(body, "body")}
    if kind == "raw":
        text = body if isinstance(body, str) else json.dumps(body)
        return {"data": text.encode("utf-8")}
    raise PermanentError(f"body_type: unknown body type {kind!r}")


def _apply_auth(creds: dict[str, Any], headers: dict[str, str], params: list[tuple[str, str]]) -> tuple[Any, str]:
    """Add the connection's credentials; returns (requests ``auth``, extra secret name)."""
    scheme = creds.get("scheme") or "bearer"
    if scheme == "bearer":
        if not creds.get("token"):
            raise PermanentError("connection: the bearer token is empty")
        headers["Authorization"] = f"Bearer {creds['token']}"
    elif scheme == "basic":
        return (str(creds.get("username") or ""), str(creds.get("password") or "")), ""
    elif scheme in ("api_key_header", "api_key_query"):
        if not creds.get("key_value"):
            raise PermanentError("connection: the API key value is empty")
        if scheme == "api_key_header":
            name = str(creds.get("key_name") or "X-Api-Key")
            headers[name] = str(creds["key_value"])
        else:
            name = str(creds.get("key_name") or "api_key")
            params.append((name, str(creds["key_value"])))
        return None, name
    else:
        raise PermanentError(f"connection: unknown authentication scheme {scheme!r}")
    return None, ""


def _host_problem(url: str, settings: dict[str, Any]) -> str | None:
    allowed = str(settings.get("allowed_hosts") or "")
    if host_patterns.allows(allowed, url):
        return None
    return (f"this connection's credentials may only be sent to {host_patterns.describe(allowed)}, "
            f"not to {url_host(url) or url}")


def check_inputs(inputs: dict[str, Any], settings: dict[str, Any]) -> dict[str, str]:
    """When a recipe is saved: a URL written out (no template in it) that the connection's
    credentials may not be sent to is refused then, not at the first event."""
    url = inputs.get("url")
    if not isinstance(url, str) or not url.strip() or "{" in url or not settings.get("allowed_hosts"):
        return {}
    problem = _host_problem(url.strip(), settings)
    return {"url": problem} if problem else {}


def run(ctx: ActionContext) -> ActionResult:
    inputs = ctx.inputs
    method = str(inputs.get("method") or "POST").upper()
    if method not in METHODS:
        raise PermanentError(f"method: must be one of {', '.join(METHODS)}, not {method!r}")
    url = str(inputs.get("url") or "").strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise PermanentError(f"url: {url!r} is not an http(s) URL with a host")
    headers = dict(keyvalue(inputs.get("headers"), "headers"))
    params = keyvalue(inputs.get("query"), "query")
    body = _body(inputs)
    if inputs.get("body_type") == "raw" and body:
        headers.setdefault("Content-Type", str(inputs.get("content_type") or "text/plain; charset=utf-8"))
    if not any(k.lower() == "idempotency-key" for k in headers):
        headers["Idempotency-Key"] = ctx.idempotency_key
    if ctx.credentials and (problem := _host_problem(url, ctx.credentials)):
        raise PermanentError(f"url: {problem}; nothing was sent")
    auth, secret_name = _apply_auth(ctx.credentials, headers, params) if ctx.credentials else (None, "")
    names = (secret_name,) if secret_name else ()
    resp = ctx.http.request(method, url, headers=headers, params=params or None, auth=auth,
                            secret_names=names, **body)
    raise_for_status(resp)
    output = {"status": resp.status, "headers": {k.lower(): v for k, v in resp.headers.items()},
              "body": resp.parsed_body()}
    return ActionResult(output=output, request=resp.request, response=resp.summary())


CREDENTIALS = (
    CredentialType(
        key="http_auth", label="HTTP authentication",
        description="How to authenticate generic HTTP requests: a bearer token, basic auth or an API key.",
        fields=(
            Field("scheme", "Scheme", "select", required=True, default="bearer", choices=SCHEMES, template=False,
                  help="Where the secret goes: an Authorization header, or an API key header or query parameter."),
            Field("token", "Token", secret=True, template=False,
                  help="Sent as 'Authorization: Bearer <token>' when the scheme is Bearer token."),
            Field("username", "Username", template=False, help="The basic-auth user name."),
            Field("password", "Password", secret=True, template=False, help="The basic-auth password."),
            Field("key_name", "API key name", template=False, placeholder="X-Api-Key",
                  help="Header or query parameter that carries the key (X-Api-Key / api_key when empty)."),
            Field("key_value", "API key", secret=True, template=False,
                  help="The API key itself; redacted from the run history."),
            Field("allowed_hosts", "Allowed hosts", "text", template=False, check=host_patterns.problem,
                  placeholder="api.example.com, *.example.com",
                  help=("Hosts these credentials may be sent to (*.example.com: any host under it). A step "
                        "using this connection with another URL fails and sends nothing. Empty: any host.")),
        ),
    ),
)

ACTIONS = (
    Action(
        key="http_request", label="HTTP request", group="HTTP", run=run, check_inputs=check_inputs,
        credential="http_auth", credential_required=False,
        description=("Send an HTTP request to any URL and keep the response (status, headers, parsed body) "
                     "for later steps. 408, 429 and 5xx answers are retried; other 4xx fail the run."),
        fields=(
            Field("method", "Method", "select", required=True, default="POST", template=False,
                  choices=tuple((m, m) for m in METHODS), help="The HTTP method to use."),
            Field("url", "URL", required=True, placeholder="https://api.example.com/v1/items",
                  help="Where to send the request; private addresses are refused unless allowlisted."),
            Field("query", "Query parameters", "keyvalue", default={},
                  help="Added to the URL's query string, URL-encoded."),
            Field("headers", "Headers", "keyvalue", default={},
                  help="Extra request headers; an Idempotency-Key header is added unless you set one."),
            Field("body_type", "Body type", "select", required=True, default="json", template=False,
                  choices=BODY_TYPES, help="How the body is encoded; 'No body' sends nothing."),
            Field("body", "Body", "text", default="", applies=lambda i: (i.get("body_type") or "json") != "none",
                  help=("JSON: an object or list (text must parse as JSON); put values in with to_json, "
                        "e.g. {\"email\": {{ email | to_json }}}, so a value cannot change the JSON around it. "
                        "Form: key/value pairs. Raw: text.")),
            Field("content_type", "Content type", default="text/plain; charset=utf-8",
                  applies=lambda i: i.get("body_type") == "raw",
                  help="Content-Type header for a raw body (ignored for JSON and form bodies)."),
        ),
    ),
)
