"""Where outbound calls may go (the SSRF guard). Recipes let users aim requests at any URL,
so the server must never become a proxy into its own network: every hop is resolved, every
resolved address must be public (or allowlisted), and the connection goes to exactly the
address that was checked (no DNS rebinding) while Host, TLS SNI and certificate checks keep
the hostname."""
from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from functools import lru_cache
from urllib.parse import urlsplit

from .base import PermanentError, RetryableError
from .redaction import redact_url

ALLOWLIST_SETTING = "HOOKLINE_OUTBOUND_ALLOWLIST"
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_METADATA = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))


class DestinationNotAllowed(PermanentError):
    """The URL's scheme, or an address its host resolves to, may not be called (SSRF guard)."""


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def address_problem(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address (a short label), or None when it is.
    IPv6 forms that embed an IPv4 address (mapped, NAT64, 6to4) are judged by that address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return address_problem(embedded)
    checks = (
        (ip in _METADATA, "cloud metadata endpoint"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.version == 4 and ip in _CGNAT, "shared address space (CGNAT)"),
        (ip.is_multicast, "multicast"),
        (ip.version == 6 and ip.is_site_local, "site-local"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (not ip.is_global, "not globally routable"),
    )
    return next((label for hit, label in checks if hit), None)


_MAX_REMEMBERED = 4096  # addresses judged, per allowlist


class Allowlist:
    """CIDRs and hostnames that may be called even though they are not public.
    A string is split on commas and whitespace (the form of the environment setting)."""

    def __init__(self, entries: Iterable[str] | str = ()) -> None:
        if isinstance(entries, str):
            entries = re.split(r"[\s,]+", entries)
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.hosts: set[str] = set()
        self._refusals: dict[str, str | None] = {}
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                self.hosts.add(entry.lower().rstrip("."))

    def permits_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def permits_address(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.networks)

    def refusal(self, address: str) -> str | None:
        """Why ``address`` (as the resolver gives it, perhaps with a %scope) may not be
        called, or None. Remembered: the answer depends only on the address and this list,
        and judging a public address runs every check :func:`address_problem` has."""
        try:
            return self._refusals[address]
        except KeyError:
            pass
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        why = None if self.permits_address(ip) else address_problem(ip)
        if len(self._refusals) >= _MAX_REMEMBERED:
            self._refusals.clear()
        self._refusals[address] = why
        return why


def check_scheme(url: str) -> None:
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:  # "http://[::1/x": an unclosed IPv6 literal
        raise PermanentError(f"invalid URL {redact_url(url)!r}: {exc}") from None
    if scheme not in ("http", "https"):
        raise DestinationNotAllowed(
            f"destination not allowed: only http and https URLs may be called, not {scheme or 'no scheme'!r}")


def check_destination(url: str, allowlist: Allowlist | Iterable[str] = ()) -> list[str]:
    """Resolve the URL's host and return the addresses it may be called at, in resolver
    order; raise :class:`DestinationNotAllowed` if ANY address is not public/allowlisted."""
    check_scheme(url)
    allow = allowlist if isinstance(allowlist, Allowlist) else Allowlist(allowlist)
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise DestinationNotAllowed(f"destination not allowed: {url!r} has no host")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError as exc:
        raise PermanentError(f"invalid URL {redact_url(url)!r}: {exc}") from None
    return checked_addresses(host, port, allow, url)


# The resolver blocks and takes no timeout of its own: names are resolved on these threads
# so the caller can stop waiting at its deadline (a stuck lookup holds one of them, never
# the caller; when all are stuck, further lookups wait in line and time out too).
_RESOLVERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="hookline-resolver")


@lru_cache(maxsize=4096)
def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class DnsCache:
    """Successful lookups kept for ``ttl`` seconds (0: none kept), at most ``max_entries``.

    The system resolver caches nothing for us (glibc has no cache), so without this every
    delivery to hooks.slack.com asks the DNS server again, and even a name in /etc/hosts cost
    about 120 µs of CPU per request here (the lookup runs on a resolver thread, so the caller
    can stop waiting at its deadline). 30 s is what the JVM keeps a lookup by default. What is
    cached is the resolver's answer: every request still checks the addresses against its
    client's allowlist, and still connects only to an address it checked, so a name that is
    re-pointed at a private address (DNS rebinding) is refused once the entry expires, as it
    was refused before on the next lookup. Failed lookups are not kept, and the client drops
    an entry when no address in it accepted a connection (the host may have moved)."""

    def __init__(self, ttl: float = 30.0, max_entries: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[tuple[str, int], tuple[float, list[tuple]]] = {}
        self._lock = threading.Lock()

    def get(self, host: str, port: int) -> list[tuple] | None:
        entry = self._entries.get((host, port))
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]

    def put(self, host: str, port: int, infos: list[tuple]) -> None:
        if self.ttl <= 0:
            return
        now = self._clock()
        with self._lock:
            if len(self._entries) >= self.max_entries:  # a recipe may aim at a new host per event
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
                while len(self._entries) >= self.max_entries:  # the oldest first
                    del self._entries[next(iter(self._entries))]
            self._entries[(host, port)] = (now + self.ttl, infos)

    def forget(self, host: str, port: int) -> None:
        with self._lock:
            self._entries.pop((host, port), None)

    def __len__(self) -> int:
        return len(self._entries)


def _lookup(host: str, port: int, timeout: float | None) -> list[tuple]:
    if timeout is None:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    future = _RESOLVERS.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        return future.result(timeout=max(timeout, 0.0))
    except FutureTimeout:
        future.cancel()
        raise RetryableError(f"timed out after {timeout:g} s resolving host {host!r}") from None


def _resolve(host: str, port: int, timeout: float | None, cache: DnsCache | None) -> list[tuple]:
    if _is_ip_literal(host):  # an address literal needs no lookup (numeric spellings do)
        return [(None, None, None, "", (host, port))]
    if cache is None:
        return _lookup(host, port, timeout)
    infos = cache.get(host, port)
    if infos is None:
        infos = _lookup(host, port, timeout)
        cache.put(host, port, infos)
    return infos


def checked_addresses(host: str, port: int, allow: Allowlist, url: str,
                      timeout: float | None = None, cache: DnsCache | None = None) -> list[str]:
    """:func:`check_destination` for a URL already split: ``host`` without brackets, the
    effective ``port``; ``url`` is only quoted (redacted) in errors. ``timeout`` bounds the
    DNS lookup (None: as long as the system resolver takes); ``cache`` keeps its answer."""
    try:
        infos = _resolve(host, port, timeout, cache)
    except ValueError as exc:  # UnicodeError included: an empty or overlong label
        raise PermanentError(f"invalid URL {redact_url(url)!r}: {exc}") from None
    except socket.gaierror as exc:
        raise RetryableError(f"could not resolve host {host!r}: {exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if allow.permits_host(host):
        return addresses
    for addr in addresses:
        why = allow.refusal(addr)
        if why:
            raise DestinationNotAllowed(f"destination not allowed: {host} resolves to {addr} ({why}); "
                                        f"add it to {ALLOWLIST_SETTING} to permit")
    return addresses
