"""Which hosts a connection's credentials may be sent to ("Allowed hosts").

Recipes are edited by editors, connections created by admins. Without a binding, an editor
could point a step that uses the company's API token at a server of their own and read the
token off the request. An admin who lists the API's hosts on the connection closes that:
a step sending it anywhere else fails before anything is sent. (n8n's "Allowed HTTP Request
Domains" on a credential is the same idea.) An empty list allows any host, as before.

Patterns: ``api.example.com`` (that host), ``*.example.com`` (any host under it, not
``example.com`` itself), an IP address. Separated by commas, spaces or new lines; a pasted
URL counts as its host.
"""
from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
MAX_PATTERNS = 50


def _normal(host: str) -> str:
    host = host.strip().rstrip(".").lower()
    try:
        return host.encode("idna").decode("ascii")  # bücher.example → xn--bcher-kva.example
    except UnicodeError:
        return host


def parse(text: str) -> list[str]:
    """The patterns in ``text``, normalised; ValueError naming the first bad one."""
    patterns = []
    for item in re.split(r"[\s,]+", text or ""):
        if not item:
            continue
        if "://" in item:
            item = urlsplit(item).hostname or ""
        pattern = _normal(item.strip("[]"))
        host = pattern.removeprefix("*.")
        if not _is_ip(host) and not all(_LABEL.match(p) for p in host.split(".")):
            raise ValueError(f"'{item}' is not a host name (api.example.com), a wildcard (*.example.com) "
                             "or an IP address")
        if pattern.startswith("*.") and _is_ip(host):
            raise ValueError(f"'{item}': a wildcard needs a domain, not an IP address")
        patterns.append(pattern)
    if len(patterns) > MAX_PATTERNS:
        raise ValueError(f"at most {MAX_PATTERNS} hosts")
    return patterns


def problem(value: object) -> str | None:
    """A connection form's check of the field: the reason it cannot be saved, or None."""
    try:
        parse(str(value or ""))
    except ValueError as exc:
        return str(exc)
    return None


def allows(text: str, host: str) -> bool:
    """Whether ``host`` (a URL's host) matches one of the patterns in ``text`` (an empty
    ``text`` allows any host). A list that does not parse allows nothing."""
    try:
        patterns = parse(text)
    except ValueError:
        return False
    if not patterns:
        return True
    host = _normal(host.strip("[]"))
    if _is_ip(host):
        host = str(ipaddress.ip_address(host))  # one spelling per address
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == (str(ipaddress.ip_address(pattern)) if _is_ip(pattern) else pattern):
            return True
    return False


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
