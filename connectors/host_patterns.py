"""Which hosts a connection's credentials may be sent to ("Allowed hosts").

Recipes are edited by editors, connections created by admins. Without a binding, an editor
could point a step that uses the company's API token at a server of their own and read the
token off the request. An admin who lists the API's hosts on the connection closes that:
a step sending it anywhere else fails before anything is sent. (n8n's "Allowed HTTP Request
Domains" on a credential is the same idea.) An empty list allows any host, as before. The
host checked is the one the outbound client connects to (:func:`outbound.url_host`), and a
redirect that leaves it drops the credentials (``OutboundClient.request``).

Patterns: ``api.example.com`` (that host), ``*.example.com`` (any host under it, not
``example.com`` itself, and not directly under a top-level domain: ``*.com`` is refused), an
IP address. Separated by commas, spaces or new lines. A URL or a port is refused rather than
taken for its host: the binding is to hosts, and accepting ``https://api.example.com:8443/``
would suggest that the scheme and port were enforced too.
"""
from __future__ import annotations

import ipaddress
import re

from .outbound import url_host

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_NOT_IN_A_NAME = re.compile(r"[/\\@?#:%]")  # a path, credentials, a port: not a host name
MAX_PATTERNS = 50


def _normal(host: str) -> str:
    """One spelling per host, the one the outbound client connects to (bücher.example →
    xn--bcher-kva.example by IDNA 2008, as urllib3 encodes it: not IDNA 2003's ß → ss)."""
    host = host.strip().strip("[]").rstrip(".")
    if _is_ip(host):
        return str(ipaddress.ip_address(host))
    wildcard = host.startswith("*.")
    name = host[2:] if wildcard else host
    name = (url_host(f"http://{name}/") or name.lower()).rstrip(".") if name else ""
    return f"*.{name}" if wildcard else name


def parse(text: str) -> list[str]:
    """The patterns in ``text``, normalised; ValueError naming the first bad one."""
    patterns = []
    for item in re.split(r"[\s,]+", text or ""):
        if not item:
            continue
        if "://" in item:
            raise ValueError(f"'{item}': write the host only (api.example.com), not a URL")
        name = item.strip("[]")
        if not _is_ip(name) and ":" in name:
            raise ValueError(f"'{item}': write the host without a port; any port of the host is allowed")
        if not _is_ip(name) and _NOT_IN_A_NAME.search(name):
            raise ValueError(_not_a_host(item))
        pattern = _normal(name)
        host = pattern.removeprefix("*.")
        if not _is_ip(host) and not all(_LABEL.match(label) for label in host.split(".")):
            raise ValueError(_not_a_host(item))
        if pattern.startswith("*.") and _is_ip(host):
            raise ValueError(f"'{item}': a wildcard needs a domain, not an IP address")
        if pattern.startswith("*.") and "." not in host:
            raise ValueError(f"'{item}': a wildcard must name a domain under the top level (*.example.com)")
        patterns.append(pattern)
    if len(patterns) > MAX_PATTERNS:
        raise ValueError(f"at most {MAX_PATTERNS} hosts")
    return patterns


def describe(text: str) -> str:
    """The patterns as one line, for messages (the field may hold several lines)."""
    try:
        return ", ".join(parse(text))
    except ValueError:
        return " ".join(str(text).split())


def _not_a_host(item: str) -> str:
    return f"'{item}' is not a host name (api.example.com), a wildcard (*.example.com) or an IP address"


def problem(value: object) -> str | None:
    """A connection form's check of the field: the reason it cannot be saved, or None."""
    try:
        parse(str(value or ""))
    except ValueError as exc:
        return str(exc)
    return None


def allows(text: str, url: str) -> bool:
    """Whether the host ``url`` connects to matches one of the patterns in ``text`` (an empty
    ``text`` allows any host). A list that does not parse allows nothing, and so does a URL
    without a host."""
    try:
        patterns = parse(text)
    except ValueError:
        return False
    if not patterns:
        return True
    host = url_host(url)
    if not host:
        return False
    host = _normal(host)
    return any(host.endswith(p[1:]) if p.startswith("*.") else host == p for p in patterns)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
