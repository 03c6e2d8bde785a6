"""Rate limiting: the spec's 30/minute, 3/second and 3 concurrent, tiers and the 429 body."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import ValidationError

from serve_app.api_keys import ApiKeyRegistry, hash_api_key
from serve_app.args import ConcurrencyRule, RateLimitArgs, RateRule
from serve_app.rate_limit import (
    ClientLimiter,
    SlidingWindowLimiter,
    client_identity,
    rate_limit_error,
    rate_limit_headers,
)

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


# -- the concurrency cap ----------------------------------------------------------------------------

CAPPED = {"free": (RateRule(limit=30, period_s=60), ConcurrencyRule(concurrent=2))}


def test_cap_refuses_while_requests_are_open_and_admits_after_one_ends() -> None:
    limiter = ClientLimiter(CAPPED, open_request_ttl_s=120, clock=Clock())
    first, second, third = (limiter.acquire("a", "free") for _ in range(3))
    assert first.allowed and second.allowed and not third.allowed
    assert first.lease is not None and second.lease is not None and first.lease != second.lease
    assert third.rule == ConcurrencyRule(concurrent=2) and third.lease is None
    assert limiter.acquire("b", "free").allowed  # another client has its own count
    asyncio.run(limiter.release(first.lease))
    asyncio.run(limiter.release(first.lease))  # twice: no effect
    assert limiter.acquire("a", "free").allowed
    assert not limiter.acquire("a", "free").allowed


def test_cap_refusals_are_not_counted_by_the_rate_rules() -> None:
    limiter = ClientLimiter({"free": (RateRule(limit=3, period_s=60), ConcurrencyRule(concurrent=1))}, 120, Clock())
    held = limiter.acquire("a", "free")
    assert [limiter.acquire("a", "free").allowed for _ in range(5)] == [False] * 5
    assert held.lease is not None
    asyncio.run(limiter.release(held.lease))
    after = limiter.acquire("a", "free")
    assert after.allowed and after.remaining == 1  # 2 of 3 used: the refusals took nothing


def test_rate_refusals_take_no_lease() -> None:
    limiter = ClientLimiter({"free": (RateRule(limit=1, period_s=60), ConcurrencyRule(concurrent=5))}, 120, Clock())
    first = limiter.acquire("a", "free")
    refused = limiter.acquire("a", "free")
    assert first.allowed and not refused.allowed and refused.lease is None
    assert isinstance(refused.rule, RateRule)


def test_admit_at_the_cap_waits_briefly_for_its_clients_release() -> None:
    """A client's next request may reach the limiter just before the release of its last one."""

    async def scenario() -> tuple[bool, bool, float]:
        limiter = ClientLimiter(CAPPED, open_request_ttl_s=120, clock=Clock(), release_grace_s=5.0)
        leases = [(await limiter.admit("a", "free")).lease for _ in range(2)]
        assert None not in leases
        other = await limiter.admit("b", "free")  # another client is not held up
        waiting = asyncio.create_task(limiter.admit("a", "free"))
        await asyncio.sleep(0.05)
        assert other.lease is not None
        await limiter.release(other.lease)  # someone else's release: still at the cap
        await asyncio.sleep(0.05)
        still_waiting = not waiting.done()
        started = time.monotonic()
        await limiter.release(str(leases[0]))
        admitted = await waiting
        return still_waiting, admitted.allowed, time.monotonic() - started

    still_waiting, allowed, waited = asyncio.run(scenario())
    assert still_waiting and allowed and waited < 1.0


def test_admit_refuses_at_the_cap_once_the_grace_is_over() -> None:
    async def scenario() -> tuple[bool, float, bool, float]:
        limiter = ClientLimiter(CAPPED, open_request_ttl_s=120, clock=Clock(), release_grace_s=0.2)
        for _ in range(2):
            await limiter.admit("a", "free")
        started = time.monotonic()
        capped = await limiter.admit("a", "free")
        capped_s = time.monotonic() - started
        rated = ClientLimiter({"free": (RateRule(limit=1, period_s=60), ConcurrencyRule(concurrent=9))}, 120, Clock(),
                              release_grace_s=5.0)
        await rated.admit("a", "free")
        started = time.monotonic()
        refused = await rated.admit("a", "free")  # the rate rule refuses at once: no release can help
        return capped.allowed, capped_s, refused.allowed, time.monotonic() - started

    capped, capped_s, rated, rated_s = asyncio.run(scenario())
    assert not capped and 0.15 < capped_s < 2.0
    assert not rated and rated_s < 0.1


def test_no_more_requests_wait_for_a_release_than_the_cap() -> None:
    """A flood at the cap must not hold the callers: beyond the cap's number of waiters, refusals
    come at once."""

    async def scenario() -> tuple[int, float, bool]:
        limiter = ClientLimiter(CAPPED, open_request_ttl_s=120, clock=Clock(), release_grace_s=5.0)
        leases = [(await limiter.admit("a", "free")).lease for _ in range(2)]
        waiters = [asyncio.create_task(limiter.admit("a", "free")) for _ in range(2)]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        flood = [await limiter.admit("a", "free") for _ in range(20)]
        flood_s = time.monotonic() - started
        for lease in leases:
            await limiter.release(str(lease))
        admitted = [await waiter for waiter in waiters]
        return sum(not d.allowed for d in flood), flood_s, all(d.allowed for d in admitted)

    refused, flood_s, waiters_admitted = asyncio.run(scenario())
    assert refused == 20 and flood_s < 0.5 and waiters_admitted


def test_a_lease_released_before_it_was_acquired_takes_no_slot() -> None:
    """The Ingress stopped waiting (its client left, or the limiter was slow) and released the lease
    by name; its acquire, still on the way, must not hold one of the client's slots."""

    async def scenario() -> tuple[bool, bool, bool, bool]:
        limiter = ClientLimiter(CAPPED, open_request_ttl_s=120, clock=Clock(), release_grace_s=5.0)
        await limiter.release("gone-1")
        late = await limiter.admit("a", "free", "gone-1")
        held = [await limiter.admit("a", "free", f"held-{n}") for n in range(2)]  # both slots free
        waiting = asyncio.create_task(limiter.admit("a", "free", "gone-2"))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await limiter.release("gone-2")  # withdrawn while it waits at the cap: it stops waiting
        withdrawn = await waiting
        return late.allowed, all(d.allowed for d in held), withdrawn.allowed, time.monotonic() - started < 1.0

    late, held, withdrawn, quick = asyncio.run(scenario())
    assert not late and held and not withdrawn and quick


def test_a_lease_never_released_expires() -> None:
    clock = Clock()
    limiter = ClientLimiter(CAPPED, open_request_ttl_s=120, clock=clock)
    limiter.acquire("a", "free")
    limiter.acquire("a", "free")
    clock.now += 119
    assert not limiter.acquire("a", "free").allowed
    clock.now += 1.5
    assert limiter.acquire("a", "free").allowed


def test_renewed_leases_keep_counting_and_stop_once_no_longer_renewed() -> None:
    clock = Clock()
    limiter = ClientLimiter(CAPPED, open_request_ttl_s=15, clock=clock)
    leases = [limiter.acquire("a", "free").lease for _ in range(2)]
    assert all(lease is not None for lease in leases)
    for _ in range(10):  # a minute of renewals every 5 s, as the Ingress sends them
        clock.now += 5
        limiter.renew([str(lease) for lease in leases])
        assert not limiter.acquire("a", "free").allowed
    limiter.renew(["unknown-lease"])  # ignored
    clock.now += 15.5  # its Ingress replica died: no more renewals
    admitted = limiter.acquire("a", "free")
    assert admitted.allowed and admitted.lease_ttl_s == 15
    clock.now += 16
    limiter.renew([str(leases[0])])  # too late: an expired lease is not revived
    assert limiter.acquire("a", "free").allowed


def test_tiers_without_a_cap_hand_out_no_leases() -> None:
    decision = ClientLimiter(SPEC, 120, Clock()).acquire("a", "free")
    assert decision.allowed and decision.lease is None


def test_cap_refusal_is_a_429_asking_for_a_retry_in_a_second() -> None:
    clock = Clock(1_762_526_655.0)
    limiter = ClientLimiter({"free": (RateRule(limit=30, period_s=60), ConcurrencyRule(concurrent=1))}, 120, clock)
    limiter.acquire("a", "free")
    refused = limiter.acquire("a", "free")
    error = rate_limit_error(refused)
    assert error.to_body() == {
        "detail": "Rate limit exceeded: 1 concurrent request",
        "error_code": "RATE_LIMIT_EXCEEDED",
        "retry_after_seconds": 1,
        "requests_remaining": 0,
        "limit_reset_at": "2025-11-07T14:44:16Z",
    }
    assert rate_limit_headers(refused) == {
        "X-RateLimit-Limit": "1",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "1762526656",
    }


def test_default_tiers_follow_the_spec() -> None:
    free = RateLimitArgs().tiers["free"]
    assert {rule.describe() for rule in free} == {
        "30 requests per minute",
        "3 requests per second",
        "3 concurrent requests",
    }


@pytest.mark.parametrize(
    "rules, message",
    [
        ([{"concurrent": 3}], "no rate rule"),
        ([{"limit": 3, "period_s": 1}, {"concurrent": 3}, {"concurrent": 4}], "more than one concurrency rule"),
        ([{"limit": 3, "period_s": 1}, {"concurrent": 0}], "greater than or equal to 1"),
    ],
)
def test_tier_rules_are_checked(rules: list[dict[str, float]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RateLimitArgs(tiers={"free": rules})
