"""Floods get 429 with Retry-After: per inbound URL, and per client for unknown URLs."""
from __future__ import annotations

from automations import recipes
from automations.ratelimit import RateLimiter
from tests.live import make_live_app
from web.extensions import db


def test_bucket_refills_at_its_rate():
    now = [0.0]
    limiter = RateLimiter(rate=2, burst=3, clock=lambda: now[0])
    assert [limiter.take("k") for _ in range(3)] == [0, 0, 0]
    assert limiter.take("k") == 0.5
    now[0] += 0.5
    assert limiter.take("k") == 0
    assert limiter.take("other") == 0  # buckets are per key


def test_key_table_is_bounded():
    limiter = RateLimiter(rate=1, burst=1, max_keys=100)
    for i in range(1000):
        limiter.take(i)
    assert len(limiter._buckets) == 100


def test_inbound_url_rate_limit(tmp_path):
    app = make_live_app(tmp_path, INBOUND_RATE=2.0)  # burst of 4
    with app.app_context():
        token = recipes.create(db.session, "r", {}).token
    client = app.test_client()
    codes = [client.post(f"/hooks/{token}", json={}).status_code for _ in range(6)]
    assert codes == [202] * 4 + [429] * 2
    limited = client.post(f"/hooks/{token}", json={})
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1


def test_head_requests_count_against_the_url_rate(tmp_path):
    """HEAD reads the database each time (to notice a URL revoked by another process), so a
    flood of HEADs is limited like a flood of webhooks, not let through to the database."""
    app = make_live_app(tmp_path, INBOUND_RATE=2.0)  # burst of 4
    with app.app_context():
        token = recipes.create(db.session, "r", {}).token
    client = app.test_client()
    assert client.post(f"/hooks/{token}", json={}).status_code == 202  # known to the cache
    codes = [client.head(f"/hooks/{token}").status_code for _ in range(5)]
    assert codes == [200] * 3 + [429] * 2


def test_guessing_tokens_is_throttled_per_client(tmp_path):
    app = make_live_app(tmp_path, NOT_FOUND_RATE=0.1)
    client = app.test_client()
    codes = [client.post(f"/hooks/guess-{i}", environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code
             for i in range(31)]
    assert codes == [404] * 30 + [429]
    other = client.post("/hooks/guess", environ_base={"REMOTE_ADDR": "203.0.113.10"})
    assert other.status_code == 404


def _guess(client, addr: str, forwarded: str):
    return client.post("/hooks/guess", environ_base={"REMOTE_ADDR": addr},
                       headers={"X-Forwarded-For": forwarded}).status_code


def test_behind_a_trusted_proxy_the_forwarded_client_is_throttled_not_the_proxy(tmp_path):
    app = make_live_app(tmp_path, NOT_FOUND_RATE=0.1, TRUSTED_PROXIES=1)
    client = app.test_client()
    proxy = "10.0.0.2"
    assert [_guess(client, proxy, "203.0.113.9") for _ in range(31)] == [404] * 30 + [429]
    assert _guess(client, proxy, "203.0.113.10") == 404  # another client through the same proxy


def test_without_trusted_proxies_forwarded_headers_are_ignored(tmp_path):
    app = make_live_app(tmp_path, NOT_FOUND_RATE=0.1)
    client = app.test_client()
    codes = [_guess(client, "203.0.113.9", f"198.51.100.{i}") for i in range(31)]
    assert codes == [404] * 30 + [429]  # a forged X-Forwarded-For does not dodge the limit


def test_stored_event_has_the_forwarded_client_address(tmp_path):
    from automations.models import Event
    app = make_live_app(tmp_path, TRUSTED_PROXIES=1)
    with app.app_context():
        token = recipes.create(db.session, "r", {}).token
    client = app.test_client()
    resp = client.post(f"/hooks/{token}", json={}, environ_base={"REMOTE_ADDR": "10.0.0.2"},
                       headers={"X-Forwarded-For": "198.51.100.7, 203.0.113.5"})
    assert resp.status_code == 202
    with app.app_context():
        assert db.session.query(Event.remote_addr).scalar() == "203.0.113.5"  # the hop the proxy saw
