"""Sliding-window rate limiting: the spec's 30/minute and 3/second, tiers and the 429 body."""

from __future__ import annotations

from serve_app.api_keys import ApiKeyRegistry, hash_api_key
from serve_app.args import RateRule
from serve_app.rate_limit import SlidingWindowLimiter, client_identity, rate_limit_error, rate_limit_headers

SPEC = {"free": (RateRule(limit=30, period_s=60), RateRule(limit=3, period_s=1))}


class Clock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_limiter_allows_three_per_second_then_refuses() -> None:
    clock = Clock()
    limiter = SlidingWindowLimiter(SPEC, clock)
    decisions = [limiter.acquire("a", "free") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    refused = decisions[-1]
    assert refused.rule.limit == 3
    assert refused.retry_after_s == 1.0
    assert refused.remaining == 0


def test_limiter_frees_a_slot_when_the_window_slides() -> None:
    clock = Clock()
    limiter = SlidingWindowLimiter(SPEC, clock)
    for _ in range(3):
        limiter.acquire("a", "free")
    clock.now += 1.01
    assert limiter.acquire("a", "free").allowed


def test_limiter_enforces_thirty_per_minute() -> None:
    clock = Clock()
    limiter = SlidingWindowLimiter(SPEC, clock)
    for _ in range(30):
        assert limiter.acquire("a", "free").allowed
        clock.now += 0.5
    refused = limiter.acquire("a", "free")
    assert not refused.allowed
    assert refused.rule.limit == 30
    # The first request (15 s ago) leaves the minute window in 45 s, as in the spec's example.
    assert abs(refused.retry_after_s - 45.0) < 1e-6


def test_limiter_counts_clients_separately() -> None:
    limiter = SlidingWindowLimiter(SPEC, Clock())
    for _ in range(3):
        limiter.acquire("a", "free")
    assert limiter.acquire("b", "free").allowed


def test_refused_requests_do_not_consume_quota() -> None:
    clock = Clock()
    limiter = SlidingWindowLimiter(SPEC, clock)
    for _ in range(10):
        limiter.acquire("a", "free")
    clock.now += 1.01
    assert [limiter.acquire("a", "free").allowed for _ in range(4)] == [True, True, True, False]


def test_allowed_decision_reports_the_binding_rule() -> None:
    decision = SlidingWindowLimiter(SPEC, Clock()).acquire("a", "free")
    assert decision.rule.limit == 3 and decision.remaining == 2
    assert rate_limit_headers(decision) == {
        "X-RateLimit-Limit": "3",
        "X-RateLimit-Remaining": "2",
        "X-RateLimit-Reset": str(1_700_000_001),
    }


def test_rate_limit_error_has_the_spec_fields() -> None:
    clock = Clock(1_762_526_655.0)  # 2025-11-07T14:44:15Z
    limiter = SlidingWindowLimiter({"free": (RateRule(limit=1, period_s=60),)}, clock)
    limiter.acquire("a", "free")
    clock.now += 15
    error = rate_limit_error(limiter.acquire("a", "free"))
    assert error.status_code == 429
    assert error.to_body() == {
        "detail": "Rate limit exceeded: 1 request per minute",
        "error_code": "RATE_LIMIT_EXCEEDED",
        "retry_after_seconds": 45,
        "requests_remaining": 0,
        "limit_reset_at": "2025-11-07T14:45:15Z",
    }
    assert error.headers() == {"Retry-After": "45"}


def test_refusal_times_round_up_to_the_same_second() -> None:
    clock = Clock(1_762_526_655.5)  # 2025-11-07T14:44:15.5Z
    limiter = SlidingWindowLimiter({"free": (RateRule(limit=1, period_s=60),)}, clock)
    limiter.acquire("a", "free")
    clock.now += 15
    refused = limiter.acquire("a", "free")
    body = rate_limit_error(refused).to_body()
    assert body["limit_reset_at"] == "2025-11-07T14:45:16Z"  # not :15, half a second too early
    assert rate_limit_headers(refused)["X-RateLimit-Reset"] == str(1_762_526_716)
    assert body["retry_after_seconds"] == 45  # 14:44:30.5 + 45 s = 14:45:15.5, the reset itself


def test_known_api_key_is_its_own_client_with_its_tier() -> None:
    registry = ApiKeyRegistry.from_hex({hash_api_key("k-pro"): "pro"}, required=False)
    match = registry.lookup("k-pro")
    assert match is not None
    assert client_identity(match, "10.0.0.1", "free") == (f"key:{hash_api_key('k-pro')[:12]}", "pro")


def test_unknown_api_key_is_counted_against_the_address() -> None:
    registry = ApiKeyRegistry.from_hex({hash_api_key("k-pro"): "pro"}, required=False)
    assert client_identity(registry.lookup("made-up"), "10.0.0.1", "free") == ("addr:10.0.0.1", "free")
    assert client_identity(registry.lookup(None), "10.0.0.1", "free") == ("addr:10.0.0.1", "free")


def test_rule_descriptions() -> None:
    assert RateRule(limit=30, period_s=60).describe() == "30 requests per minute"
    assert RateRule(limit=3, period_s=1).describe() == "3 requests per second"
    assert RateRule(limit=5, period_s=10).describe() == "5 requests per 10 seconds"
