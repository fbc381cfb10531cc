"""The shared outbound HTTP client, against real servers on 127.0.0.0/8."""
from __future__ import annotations

import base64
import gzip
import ipaddress
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from connectors.base import PermanentError, RetryableError
from connectors.destinations import _MAX_REMEMBERED as MAX_REMEMBERED
from connectors.destinations import Allowlist, DnsCache
from connectors.outbound import (
    DestinationNotAllowed,
    OutboundClient,
    OutboundResponse,
    check_destination,
    parse_retry_after,
    raise_for_status,
    redact_headers,
    redact_url,
)
from tests.sinks import HttpSink, RawTcpServer, Received, Reply
from tests.smtp_server import SelfSignedCert

LOCAL = ["127.0.0.0/8", "::1/128", "localhost"]


@pytest.fixture
def client() -> OutboundClient:
    return OutboundClient(allowlist=LOCAL, timeout=2.0)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("url, why", [
    ("http://127.0.0.1/", "loopback"),
    ("http://localhost:8080/x", "loopback"),
    ("http://10.1.2.3/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://172.31.255.255/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://169.254.1.1/", "link-local"),
    ("http://100.64.0.1/", "CGNAT"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://240.0.0.1/", "private"),
    ("http://[::1]/", "loopback"),
    ("http://[::]/", "unspecified"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fc00::1]/", "private"),
    ("http://[fec0::1]/", "site-local"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:10.0.0.1]/", "private"),
    ("http://[64:ff9b::7f00:1]/", "loopback"),
    ("http://[64:ff9b::a9fe:a9fe]/", "cloud metadata"),
    ("http://[2002:7f00:1::]/", "loopback"),
    ("http://[2002:c0a8:101::1]/", "private"),
    ("http://2130706433/", "loopback"),
    ("http://0x7f.1/", "loopback"),
    ("http://017700000001/", "loopback"),
    ("http://127.1/", "loopback"),
    ("ftp://example.com/file", "only http and https"),
    ("file:///etc/passwd", "only http and https"),
    ("gopher://127.0.0.1:70/", "only http and https"),
])
def test_refuses_non_public_destinations(url: str, why: str) -> None:
    with pytest.raises(DestinationNotAllowed) as info:
        OutboundClient().request("GET", url)
    assert why in str(info.value)
    assert isinstance(info.value, PermanentError)


def test_refusal_message_says_how_to_permit() -> None:
    with pytest.raises(DestinationNotAllowed, match=r"^destination not allowed: 10\.0\.0\.7 resolves to "
                       r"10\.0\.0\.7 \(private\); add it to HOOKLINE_OUTBOUND_ALLOWLIST to permit$"):
        OutboundClient().request("POST", "http://10.0.0.7/hook", json={})


@pytest.mark.parametrize("url", ["http://93.184.215.14/", "https://[2606:4700::1111]/", "http://[::ffff:8.8.8.8]/",
                                 "http://[2002:808:808::1]/"])
def test_public_addresses_pass_the_check(url: str) -> None:
    assert check_destination(url)


@pytest.mark.parametrize("allowlist, url", [
    (["10.0.0.0/8"], "http://10.9.8.7/"),
    (["192.168.1.5/32"], "http://192.168.1.5/"),
    ("127.0.0.1/32, ::1/128", "http://[::1]/"),
    (["localhost"], "http://LOCALHOST:8080/"),
])
def test_allowlist_permits(allowlist: list[str] | str, url: str) -> None:
    assert check_destination(url, allowlist)


def test_remembered_verdicts_are_per_allowlist_and_bounded() -> None:
    """Verdicts on addresses are remembered per allowlist (judging a public address runs every
    check): a refusal stays a refusal on the next delivery, another client's allowlist is
    its own, and a recipe aiming at a new address per event does not grow memory."""
    strict, lenient = Allowlist(()), Allowlist(["10.0.0.0/8"])
    for _ in range(2):
        with pytest.raises(DestinationNotAllowed, match="private"):
            check_destination("http://10.1.2.3/", strict)
        assert check_destination("http://10.1.2.3/", lenient) == ["10.1.2.3"]
    assert [lenient.refusal(a) for a in ("8.8.8.8", "127.0.0.1", "127.0.0.1")] == [None, "loopback", "loopback"]
    for n in range(MAX_REMEMBERED + 10):
        lenient.refusal(str(ipaddress.IPv4Address(0x08000000 + n)))
    assert len(lenient._refusals) <= MAX_REMEMBERED


def test_allowlisted_sink_receives_request(client: OutboundClient) -> None:
    with HttpSink(lambda r: Reply(201, {"id": 7})) as sink:
        resp = client.request("POST", sink.url + "/hook", json={"a": 1}, params={"q": "x"},
                              headers={"Idempotency-Key": "run-1-step-a"})
        [req] = sink.wait_for(1)
    assert (resp.status, resp.json(), resp.is_json) == (201, {"id": 7}, True)
    assert req.path == "/hook" and req.query == {"q": ["x"]} and req.json() == {"a": 1}
    assert req.headers["Host"] == f"127.0.0.1:{sink.port}"
    assert req.headers["User-Agent"] == "Hookline/0.1"
    assert resp.request["headers"]["Idempotency-Key"] == "run-1-step-a"
    assert resp.elapsed_ms >= 0 and resp.summary()["body"] == {"id": 7}


def test_redirect_to_non_allowlisted_host_is_refused_at_the_hop(client: OutboundClient) -> None:
    def redirect(req: Received) -> Reply:
        return Reply(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
    with HttpSink(redirect) as sink, pytest.raises(DestinationNotAllowed, match="169.254.169.254"):
        client.request("GET", sink.url)


def test_redirect_outside_narrow_allowlist_is_refused() -> None:
    with HttpSink() as target, HttpSink() as start:
        narrow = OutboundClient(allowlist=["127.0.0.1/32"], timeout=2)
        target_on_other_ip = target.url.replace("127.0.0.1", "127.0.0.2")
        start.responder = lambda r: Reply(307, headers={"Location": target_on_other_ip})
        with pytest.raises(DestinationNotAllowed, match=r"127\.0\.0\.2 \(loopback\)"):
            narrow.request("GET", start.url)
    assert target.requests == []


def test_credentials_dropped_on_cross_host_redirect_kept_on_same_host(client: OutboundClient) -> None:
    with HttpSink(lambda r: Reply(200, "final")) as other, HttpSink() as first:
        def respond(req: Received) -> Reply:
            if req.path == "/start":
                return Reply(302, headers={"Location": "/same"})
            return Reply(307, headers={"Location": f"http://localhost:{other.port}/elsewhere"})
        first.responder = respond
        resp = client.request("POST", first.url + "/start", data=b"x",
                              headers={"Authorization": "Bearer s3cret", "X-Api-Key": "k",
                                       "Cookie": "c=1", "X-Trace": "t"})
        hop1, hop2 = first.wait_for(2)
        [last] = other.wait_for(1)
    assert resp.status == 200 and resp.text == "final" and resp.url.endswith("/elsewhere")
    assert hop1.method == "POST" and hop1.body == b"x"
    assert hop2.method == "GET" and hop2.headers["Authorization"] == "Bearer s3cret"  # 302 after POST → GET
    assert hop2.body == b"" and "Content-Length" not in hop2.headers
    assert "Authorization" not in last.headers and "X-Api-Key" not in last.headers
    assert "Cookie" not in last.headers and last.headers["X-Trace"] == "t"
    assert last.headers["Host"] == f"localhost:{other.port}"


def test_credentials_dropped_when_a_redirect_only_looks_like_the_same_host(client: OutboundClient) -> None:
    """``http://other\\@first/``: ``urlsplit`` reads host "first", the client connects to
    "other". Whether credentials follow is decided on the host connected to."""
    with HttpSink(lambda r: Reply(200, "final")) as other, HttpSink() as first:
        first.responder = lambda r: Reply(
            307, headers={"Location": f"http://localhost:{other.port}\\@127.0.0.1:{first.port}/"})
        resp = client.request("GET", first.url, headers={"Authorization": "Bearer s3cret", "X-Api-Key": "k"})
        [last] = other.wait_for(1)
    assert resp.status == 200 and last.headers["Host"] == f"localhost:{other.port}"
    assert "Authorization" not in last.headers and "X-Api-Key" not in last.headers


def test_basic_auth_dropped_on_cross_host_redirect(client: OutboundClient) -> None:
    with HttpSink() as other, HttpSink() as first:
        first.responder = lambda r: Reply(308, headers={"Location": f"http://localhost:{other.port}/"})
        client.request("PUT", first.url, json={"a": 1}, auth=("alice", "pw"))
        [hop] = first.wait_for(1)
        [last] = other.wait_for(1)
    assert hop.headers["Authorization"].startswith("Basic ")
    assert "Authorization" not in last.headers and last.method == "PUT" and last.json() == {"a": 1}


def test_303_becomes_get_and_redirect_loops_stop(client: OutboundClient) -> None:
    with HttpSink() as sink:
        sink.responder = lambda r: Reply(303, headers={"Location": "/see"}) if r.path == "/" else Reply(200)
        assert client.request("DELETE", sink.url + "/").status == 200
        assert [r.method for r in sink.wait_for(2)] == ["DELETE", "GET"]
        sink.responder = lambda r: Reply(302, headers={"Location": "/again"})
        with pytest.raises(PermanentError, match="too many redirects"):
            client.request("GET", sink.url)


def test_no_cookies_are_kept_between_requests(client: OutboundClient) -> None:
    with HttpSink(lambda r: Reply(200, headers={"Set-Cookie": "sid=abc; Path=/"})) as sink:
        client.request("GET", sink.url)
        client.request("GET", sink.url)
        assert "Cookie" not in sink.wait_for(2)[1].headers


@pytest.mark.parametrize("reply", [
    Reply(200, b"x" * 4096),
    Reply(200, gzip.compress(b"0" * 200_000), headers={"Content-Encoding": "gzip"}),
])
def test_response_size_cap(reply: Reply) -> None:
    small = OutboundClient(allowlist=LOCAL, timeout=2, max_response_bytes=1024)
    with HttpSink(lambda r: reply) as sink, pytest.raises(PermanentError, match="response too large"):
        small.request("GET", sink.url)


def test_decoded_body_within_cap_is_returned() -> None:
    small = OutboundClient(allowlist=LOCAL, timeout=2, max_response_bytes=1024)
    body = gzip.compress(b"y" * 1000)
    with HttpSink(lambda r: Reply(200, body, headers={"Content-Encoding": "gzip"})) as sink:
        assert small.request("GET", sink.url).body == b"y" * 1000


@pytest.mark.parametrize("reply", [
    Reply(200, "late", delay=1.5),                              # slow to answer at all
    Reply(200, "x" * 100, body_delay=1.5),                      # headers, then silence
    Reply(200, "x" * 100, body_delay=0.15, body_parts=10),      # trickle past the deadline
])
def test_deadline(reply: Reply) -> None:
    quick = OutboundClient(allowlist=LOCAL, timeout=0.5)
    started = time.monotonic()
    with HttpSink(lambda r: reply) as sink, pytest.raises(RetryableError, match=r"timed out after 0\.5 s"):
        quick.request("GET", sink.url)
    assert time.monotonic() - started < 1.2


def test_connection_refused_is_retryable(client: OutboundClient) -> None:
    port = closed_port()
    with pytest.raises(RetryableError, match=rf"^connection refused by 127\.0\.0\.1:{port}$"):
        client.request("GET", f"http://127.0.0.1:{port}/")


def test_unresolvable_host_is_retryable(client: OutboundClient) -> None:
    with pytest.raises(RetryableError, match="could not resolve host"):
        client.request("GET", "http://no-such-host.invalid/")


class FakeDns:
    """``socket.getaddrinfo`` answering for the names in ``answers`` (name → list of
    addresses, changed at will by the test) from real lookups of those addresses, and
    counting the lookups of each name; every other name is looked up for real."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, **answers: list[str]) -> None:
        self.real = socket.getaddrinfo
        self.answers = {name.replace("_", "."): addrs for name, addrs in answers.items()}
        self.lookups: dict[str, int] = {}
        monkeypatch.setattr(socket, "getaddrinfo", self)

    def __call__(self, host: str, port: object, *args: object, **kwargs: object) -> list:
        if host not in self.answers:
            return self.real(host, port, *args, **kwargs)
        self.lookups[host] = self.lookups.get(host, 0) + 1
        addrs = self.answers[host]
        if not addrs:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [info for addr in addrs for info in self.real(addr, port, *args, **kwargs)]


def test_connection_is_pinned_to_the_checked_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the first lookup says 127.0.0.1 (where the sink is), the name is then
    re-pointed at an address that is not allowed. Requests keep going to the address that
    was checked, and once the name is looked up again the new answer is checked and refused."""
    dns = FakeDns(monkeypatch, rebind_test=["127.0.0.1"])
    narrow = OutboundClient(allowlist=["127.0.0.1/32"], timeout=2, dns_cache_seconds=0.5)
    with HttpSink() as sink:
        assert narrow.request("GET", f"http://rebind.test:{sink.port}/").status == 200
        dns.answers["rebind.test"] = ["127.0.0.3"]
        assert narrow.request("GET", f"http://rebind.test:{sink.port}/").status == 200  # the cached, checked answer
        reqs = sink.wait_for(2)
        assert [r.headers["Host"] for r in reqs] == [f"rebind.test:{sink.port}"] * 2
        time.sleep(0.6)
        with pytest.raises(DestinationNotAllowed, match=r"127\.0\.0\.3"):
            narrow.request("GET", f"http://rebind.test:{sink.port}/")
        assert len(sink.requests) == 2
    without_cache = OutboundClient(allowlist=["127.0.0.1/32"], timeout=2, dns_cache_seconds=0)
    dns.answers["rebind.test"] = ["127.0.0.1"]
    with HttpSink() as sink:
        assert without_cache.request("GET", f"http://rebind.test:{sink.port}/").status == 200
        dns.answers["rebind.test"] = ["127.0.0.3"]
        with pytest.raises(DestinationNotAllowed, match=r"127\.0\.0\.3"):
            without_cache.request("GET", f"http://rebind.test:{sink.port}/")


def test_a_host_name_is_looked_up_once_per_ttl_not_once_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy recipe posting to one service must not ask the DNS server before every
    delivery (glibc caches nothing): after the first call, 50 calls from 8 threads within
    the TTL make no lookup, and a call after the TTL looks the name up again."""
    dns = FakeDns(monkeypatch, hooks_test=["127.0.0.1"])
    client = OutboundClient(allowlist=LOCAL, timeout=2, dns_cache_seconds=0.5)
    with HttpSink() as sink:
        assert client.request("GET", f"http://hooks.test:{sink.port}/").status == 200
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _n: client.request("GET", f"http://hooks.test:{sink.port}/").status,
                                     range(50)))
        assert statuses == [200] * 50
        assert dns.lookups["hooks.test"] == 1
        time.sleep(0.6)
        assert client.request("GET", f"http://hooks.test:{sink.port}/").status == 200
        assert dns.lookups["hooks.test"] == 2
        assert len(sink.wait_for(52)) == 52
    client.close()


@pytest.mark.parametrize("first, error", [([], "could not resolve host 'again.test'"),
                                          (["127.0.0.2"], "connection refused")],  # nothing listens there
                         ids=["a failed lookup", "a refused connection (the host moved)"])
def test_after_a_failure_the_name_is_looked_up_again_at_once(monkeypatch: pytest.MonkeyPatch,
                                                             first: list[str], error: str) -> None:
    """A failed lookup is not kept, and an address that refused the connection is dropped:
    the runner's retry must find the host without waiting for the TTL."""
    dns = FakeDns(monkeypatch, again_test=first)
    client = OutboundClient(allowlist=LOCAL, timeout=2, dns_cache_seconds=60)
    with HttpSink() as sink:
        with pytest.raises(RetryableError, match=error):
            client.request("GET", f"http://again.test:{sink.port}/")
        dns.answers["again.test"] = ["127.0.0.1"]
        assert client.request("GET", f"http://again.test:{sink.port}/").status == 200
    assert dns.lookups["again.test"] == 2


def test_the_dns_cache_is_bounded() -> None:
    """A recipe may aim at a new host name per event; the cache keeps at most its bound,
    the newest entries, and drops expired ones first."""
    now = [0.0]
    cache = DnsCache(ttl=10, max_entries=4, clock=lambda: now[0])
    for n in range(10):
        cache.put(f"h{n}.test", 443, [("info", n)])
    assert len(cache) == 4
    assert [cache.get(f"h{n}.test", 443) for n in (5, 6, 7, 8, 9)] == [None, [("info", 6)], [("info", 7)],
                                                                       [("info", 8)], [("info", 9)]]
    now[0] = 5.0
    cache.put("fresh.test", 443, [("info", "fresh")])  # full: the oldest goes
    assert cache.get("h6.test", 443) is None and cache.get("fresh.test", 443) == [("info", "fresh")]
    now[0] = 12.0  # h7..h9 expired, fresh.test not yet
    assert cache.get("h9.test", 443) is None
    cache.put("new.test", 80, [("info", "new")])
    assert len(cache) == 2 and cache.get("fresh.test", 443) is not None


def test_https_verifies_the_hostname_while_connecting_to_the_pinned_ip(tmp_path: object) -> None:
    good, wrong = SelfSignedCert.make(), SelfSignedCert.make(hostnames=["other.example"], ips=[])
    with HttpSink(lambda r: Reply(200, "tls ok"), ssl_context=good.server_context()) as sink:
        trusted = OutboundClient(allowlist=LOCAL, timeout=2, verify=good.write_ca(tmp_path))
        assert trusted.request("GET", sink.url).text == "tls ok"
        with pytest.raises(PermanentError, match="certificate"):
            OutboundClient(allowlist=LOCAL, timeout=2).request("GET", sink.url)
    with HttpSink(ssl_context=wrong.server_context()) as sink:
        ca = tmp_path / "wrong"  # type: ignore[operator]
        ca.mkdir()
        with pytest.raises(PermanentError, match="certificate"):
            OutboundClient(allowlist=LOCAL, timeout=2, verify=wrong.write_ca(ca)).request("GET", sink.url)


NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("value, expected", [
    ("120", 120.0),
    ("0", 1.0),
    ("1.5", 1.5),
    (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
    ("Wed, 01 May 2024 12:00:30 GMT", 30.0),
    (format_datetime(NOW - timedelta(hours=1), usegmt=True), 1.0),
    ("99999999", 21600.0),
    (format_datetime(NOW + timedelta(days=3), usegmt=True), 21600.0),
    ("-5", None),
    ("soon", None),
    ("", None),
    (None, None),
    ("12abc", None),
    ("Wed, 99 Foo 2024 12:00:30 GMT", None),
])
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


@pytest.mark.parametrize("status, error", [
    (200, None), (204, None), (304, None), (400, PermanentError), (401, PermanentError),
    (404, PermanentError), (409, PermanentError), (422, PermanentError), (408, RetryableError),
    (425, RetryableError), (429, RetryableError), (500, RetryableError), (502, RetryableError),
    (503, RetryableError),
])
def test_raise_for_status(status: int, error: type[Exception] | None) -> None:
    from urllib3 import HTTPHeaderDict
    resp = OutboundResponse(status, HTTPHeaderDict({"Retry-After": "7", "Content-Type": "application/json"}),
                            b'{"error": "nope"}', "http://x/", 1, {"method": "GET"})
    if error is None:
        raise_for_status(resp)
        return
    with pytest.raises(error) as info:
        raise_for_status(resp)
    assert str(status) in str(info.value) and '"error": "nope"' in str(info.value)
    assert info.value.response["body"] == {"error": "nope"} and info.value.request == {"method": "GET"}
    assert getattr(info.value, "retry_after", 7.0) == 7.0


def test_redact_headers() -> None:
    headers = {"Authorization": "Bearer x", "Proxy-Authorization": "Basic y", "Cookie": "a=b",
               "X-Api-Key": "k", "X-Auth-Token": "t", "X-Hub-Signature-256": "sha256=..",
               "X-Client-Secret": "s", "X-Custom": "c", "Content-Type": "application/json",
               "Idempotency-Key": "run-1", "X-Partner": "p"}
    out = redact_headers(headers, secret_names=["x-partner"])
    secret = {"Authorization", "Proxy-Authorization", "Cookie", "X-Api-Key", "X-Auth-Token",
              "X-Hub-Signature-256", "X-Client-Secret", "X-Partner"}
    assert {k for k, v in out.items() if v == "[redacted]"} == secret
    assert out["Idempotency-Key"] == "run-1" and out["X-Custom"] == "c"


@pytest.mark.parametrize("url, expected", [
    ("https://h/p?api_key=1&q=ok", "https://h/p?api_key=[redacted]&q=ok"),
    ("https://h/p?apikey=1&key=2&token=3", "https://h/p?apikey=[redacted]&key=[redacted]&token=[redacted]"),
    ("https://h/?access_token=1&secret=2&password=3&signature=4&page=2",
     "https://h/?access_token=[redacted]&secret=[redacted]&password=[redacted]&signature=[redacted]&page=2"),
    ("https://user:pw@h/x", "https://[redacted]@h/x"),
    ("https://h/x", "https://h/x"),
    ("http://[::1/x?api_key=s3cret", "http://[::1/[redacted]"),  # too broken to split
    ("http://u:s3cret@[::1/x", "http://[redacted]@[::1/[redacted]"),
])
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize("url", ["http://[::1/x?api_key=s3cret", "http://[::1]x/y?api_key=s3cret"])
def test_broken_urls_fail_the_step_without_echoing_secrets(client: OutboundClient, url: str) -> None:
    with pytest.raises(PermanentError) as info:
        client.request("GET", url)
    assert "invalid" in info.value.message and "s3cret" not in info.value.message
    assert "s3cret" not in repr(info.value.request)


def test_request_summary_is_redacted(client: OutboundClient) -> None:
    summary = client.describe_request("post", "https://api.example.com/v1", params={"token": "t", "q": "1"},
                                      headers={"Authorization": "Bearer t"}, auth=None, json={"a": 1})
    assert summary["method"] == "POST"
    assert summary["url"] == "https://api.example.com/v1?token=[redacted]&q=1"
    assert summary["headers"]["Authorization"] == "[redacted]" and summary["body"] == {"a": 1}
    basic = client.describe_request("GET", "https://h/", auth=("alice", "pw"))
    assert basic["headers"]["Authorization"] == "[redacted]"
    slack = client.describe_request("POST", "https://hooks.slack.com/services/T/B/X", secret_url=True)
    assert slack["url"] == "https://hooks.slack.com/[redacted]"


# --- the transport: encoding and connection handling (connectors/transport.py) --------------

def test_environment_proxies_and_netrc_are_ignored(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login alice password from-netrc\ndefault login bob password any\n")
    netrc.chmod(0o600)
    with HttpSink() as proxy, HttpSink() as sink:
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.setenv("NETRC", str(netrc))
        monkeypatch.setenv("HOME", str(tmp_path))
        assert OutboundClient(allowlist=LOCAL, timeout=2).request("GET", sink.url + "/direct").status == 200
        [req] = sink.wait_for(1)
    assert proxy.requests == []
    assert req.path == "/direct" and "Authorization" not in req.headers and "Proxy-Authorization" not in req.headers


def test_request_encoding(client: OutboundClient) -> None:
    """What requests sent, byte for byte (Host aside): default headers, params, bodies,
    Content-Length and Content-Type, Basic auth in UTF-8."""
    with HttpSink() as sink:
        client.request("GET", sink.url + "/p?fixed=1", params={"q": "a b", "n": 2, "tag": ["x", "y"], "none": None})
        client.request("POST", sink.url + "/form", data={"a": "1", "b": "x y", "c": ["1", "2"], "d": None})
        client.request("POST", sink.url + "/pairs", data=[("k", "v&w"), ("k", "ü")])
        client.request("POST", sink.url + "/text", data="héllo")
        client.request("POST", sink.url + "/json", json={"u": "é", "l": [1, 2]}, headers={"content-type": "x/y+json"})
        client.request("DELETE", sink.url + "/gone")
        client.request("GET", sink.url + "/auth", auth=("ålice", "pâss€"), headers={"Accept-Encoding": None})
        p, form, pairs, text, js, gone, auth = sink.wait_for(7)
    assert p.query == {"fixed": ["1"], "q": ["a b"], "n": ["2"], "tag": ["x", "y"]}
    assert "Content-Length" not in p.headers and p.body == b""
    assert p.headers["User-Agent"] == "Hookline/0.1" and p.headers["Accept"] == "*/*"
    assert p.headers["Accept-Encoding"].startswith("gzip, deflate") and p.headers["Connection"] == "keep-alive"
    assert form.body == b"a=1&b=x+y&c=1&c=2" and form.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert pairs.body == b"k=v%26w&k=%C3%BC" and form.headers["Content-Length"] == str(len(form.body))
    assert text.body == "héllo".encode() and "Content-Type" not in text.headers
    assert js.body == b'{"u": "\\u00e9", "l": [1, 2]}' and js.headers["content-type"] == "x/y+json"
    assert gone.method == "DELETE" and gone.headers["Content-Length"] == "0"
    assert auth.headers["Authorization"] == "Basic " + base64.b64encode("ålice:pâss€".encode()).decode()
    assert auth.headers["Accept-Encoding"] == "identity"  # dropped by the caller: http.client's default


def test_url_credentials_become_basic_auth_and_urls_are_normalised(client: OutboundClient) -> None:
    with HttpSink() as sink:
        base = sink.url.replace("http://", "http://bob:s%40cret@")
        resp = client.request("GET", base + "/a b/ü?q=ä x#frag")
        [req] = sink.wait_for(1)
    assert req.headers["Authorization"] == "Basic " + base64.b64encode(b"bob:s@cret").decode()
    assert req.path == "/a%20b/%C3%BC" and req.query == {"q": ["ä x"]}
    assert resp.url == base + "/a%20b/%C3%BC?q=%C3%A4%20x#frag"
    assert resp.request["url"].startswith("http://[redacted]@127.0.0.1:")


@pytest.mark.parametrize("headers", [{"X-Token": "a\0b"}, {"X\0Name": "v"}, {"X-Bad\r\nName": "v"}, {"X:Y": "v"}])
def test_header_names_and_values_with_reserved_characters_are_refused(headers: dict[str, str]) -> None:
    with HttpSink() as sink, pytest.raises(PermanentError, match="^invalid request: .*header"):
        OutboundClient(allowlist=LOCAL, timeout=2).request("GET", sink.url, headers=headers)
    assert sink.requests == []


def test_json_that_is_not_json_is_refused_before_sending(client: OutboundClient) -> None:
    with HttpSink() as sink, pytest.raises(PermanentError, match="^invalid request: the JSON body"):
        client.request("POST", sink.url, json={"x": float("nan")})
    assert sink.requests == []


def test_describe_request_shows_what_would_be_sent(client: OutboundClient) -> None:
    summary = client.describe_request("POST", "https://api.example.com/v1", json={"a": 1},
                                      headers={"X-Trace": "t", "Accept-Encoding": None})
    assert summary["headers"] == {"User-Agent": "Hookline/0.1", "Accept": "*/*", "Connection": "keep-alive",
                                  "X-Trace": "t", "Content-Length": "8", "Content-Type": "application/json"}


def test_response_headers_are_case_insensitive_and_repeats_joined(client: OutboundClient) -> None:
    def respond(conn: socket.socket, head: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Multi: a\r\nx-multi: b\r\nSet-Cookie: s=1\r\nSet-Cookie: t=2\r\n"
                     b"Content-Length: 2\r\n\r\nok")
    with RawTcpServer(respond) as server:
        resp = client.request("GET", server.url)
    assert resp.headers["x-MULTI"] == "a, b" and resp.headers["set-cookie"] == "s=1, t=2"
    assert [name.lower() for name, _ in resp.headers.items()].count("x-multi") == 1
    assert resp.body == b"ok"


def test_keep_alive_connections_are_reused_and_released(client: OutboundClient) -> None:
    with HttpSink() as sink:
        for _ in range(5):
            assert client.request("POST", sink.url, json={"n": 1}).body == b"ok"
        sink.responder = lambda r: Reply(200, b"z" * 70_000)  # more than one read
        assert len(client.request("GET", sink.url).body) == 70_000
        sink.responder = lambda r: Reply(200, gzip.compress(b"y" * 1000), headers={"Content-Encoding": "gzip"})
        assert client.request("GET", sink.url).body == b"y" * 1000
        sink.responder = lambda r: Reply(404, "nope")
        assert client.request("GET", sink.url).status == 404
        sink.wait_for(8)
    assert sink.connections == 1


def test_connection_failure_falls_back_to_the_next_checked_address(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def fake(host: str, port: object, *args: object, **kwargs: object) -> list:
        if host == "two.test":  # 127.0.0.2 first: nothing listens there
            return [*real("127.0.0.2", port, *args, **kwargs), *real("127.0.0.1", port, *args, **kwargs)]
        return real(host, port, *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with HttpSink() as sink:
        assert OutboundClient(allowlist=["127.0.0.0/8"], timeout=2).request(
            "GET", f"http://two.test:{sink.port}/x").status == 200
        [req] = sink.wait_for(1)
    assert req.headers["Host"] == f"two.test:{sink.port}"


def test_ipv6_destination_host_header() -> None:
    class V6(ThreadingHTTPServer):
        address_family = socket.AF_INET6

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = self.headers["Host"].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass
    try:
        server = V6(("::1", 0), Handler)
    except OSError:
        pytest.skip("this machine has no IPv6 loopback (::1) to listen on; the IPv6 Host header needs one")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        resp = OutboundClient(allowlist=["::1/128"], timeout=2).request("GET", f"http://[::1]:{port}/")
        assert resp.text == f"[::1]:{port}"
    finally:
        server.shutdown()
        server.server_close()


def test_one_client_shared_by_many_threads() -> None:
    client = OutboundClient(allowlist=LOCAL, timeout=5, pool_size=4)
    with HttpSink(lambda r: Reply(200, {"n": r.json()["n"]})) as sink:
        def work(n: int) -> int:
            return client.request("POST", sink.url, json={"n": n}).json()["n"]
        with ThreadPoolExecutor(16) as pool:
            assert sorted(pool.map(work, range(160))) == list(range(160))
        assert len(sink.wait_for(160)) == 160
    client.close()


def test_a_hanging_dns_lookup_is_bounded_by_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo
    release = threading.Event()

    def stuck_resolver(host: str, *args: object, **kwargs: object) -> object:
        if host == "stuck.example":
            release.wait(10)  # a resolver that does not answer
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", stuck_resolver)
    client = OutboundClient(timeout=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(RetryableError, match="timed out after 0.[23]\\d* s resolving host 'stuck.example'"):
            client.request("GET", "https://stuck.example/x")
        assert time.monotonic() - started < 2
    finally:
        release.set()
