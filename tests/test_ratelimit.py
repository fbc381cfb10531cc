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


def test_guessing_tokens_is_throttled_per_client(tmp_path):
    app = make_live_app(tmp_path, NOT_FOUND_RATE=0.1)
    client = app.test_client()
    codes = [client.post(f"/hooks/guess-{i}", environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code
             for i in range(31)]
    assert codes == [404] * 30 + [429]
    other = client.post("/hooks/guess", environ_base={"REMOTE_ADDR": "203.0.113.10"})
    assert other.status_code == 404
