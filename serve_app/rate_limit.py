"""Per-client sliding-window rate limiting (spec §6.2), as plain Python.

The ``RateLimiter`` deployment holds one :class:`SlidingWindowLimiter` for the whole cluster, so
every ingress replica draws from the same counts. A client's accepted requests are kept as a
sorted list of timestamps no longer than its longest window; a request is accepted when every
rule of the client's tier still has room.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from pipelines.errors import RateLimitExceededError
from serve_app.api_keys import KeyMatch
from serve_app.args import RateRule

_SWEEP_EVERY = 1024


@dataclass(frozen=True)
class RateDecision:
    """The outcome of one admission check, described by the binding rule.

    Attributes:
        allowed: whether the request may proceed.
        rule: the rule with the least room left (the violated one when refused).
        remaining: requests left under ``rule`` after this one.
        reset_at: wall-clock seconds when ``rule`` next frees a slot.
        retry_after_s: seconds until a refused request would be accepted; 0 when allowed.
    """

    allowed: bool
    rule: RateRule
    remaining: int
    reset_at: float
    retry_after_s: float


def client_identity(key: KeyMatch | None, address: str, default_tier: str) -> tuple[str, str]:
    """``(client key, tier)``: a known API key is its own client; everything else is its address.

    ``key`` comes from :meth:`serve_app.api_keys.ApiKeyRegistry.authenticate`; the client key holds
    its digest prefix, never the key itself.
    """
    if key is not None:
        return f"key:{key.client_id}", key.tier
    return f"addr:{address}", default_tier


class SlidingWindowLimiter:
    """Sliding-window-log limiter over named tiers of rules.

    Args:
        tiers: tier name → rules that must all hold.
        clock: wall-clock seconds; injected in tests.
    """

    def __init__(self, tiers: Mapping[str, Sequence[RateRule]], clock: Callable[[], float] = time.time):
        self._tiers = {name: tuple(rules) for name, rules in tiers.items()}
        self._clock = clock
        self._history: dict[str, list[float]] = {}
        self._longest = max(rule.period_s for rules in self._tiers.values() for rule in rules)
        self._calls = 0

    def acquire(self, client: str, tier: str) -> RateDecision:
        """Count one request of ``client`` if its tier allows it. Raises KeyError for unknown tiers."""
        rules = self._tiers[tier]
        now = self._clock()
        self._calls += 1
        if self._calls % _SWEEP_EVERY == 0:
            self._sweep(now)
        history = self._history.setdefault(client, [])
        del history[: bisect.bisect_right(history, now - max(rule.period_s for rule in rules))]
        in_window = [len(history) - bisect.bisect_right(history, now - rule.period_s) for rule in rules]
        violated = [(rule, count) for rule, count in zip(rules, in_window, strict=True) if count >= rule.limit]
        if violated:
            # A slot frees when the request ``limit`` places from the end leaves the window.
            waits = [(history[len(history) - rule.limit] + rule.period_s - now, rule) for rule, _ in violated]
            wait, rule = max(waits, key=lambda item: (item[0], item[1].period_s))
            wait = max(wait, 0.0)
            return RateDecision(False, rule, 0, now + wait, wait)
        history.append(now)
        remaining = [
            (rule.limit - count - 1, -rule.period_s, index)
            for index, (rule, count) in enumerate(zip(rules, in_window, strict=True))
        ]
        left, _, index = min(remaining)
        rule = rules[index]
        oldest = history[len(history) - (in_window[index] + 1)]
        return RateDecision(True, rule, left, oldest + rule.period_s, 0.0)

    def _sweep(self, now: float) -> None:
        idle = [
            client for client, history in self._history.items() if not history or history[-1] <= now - self._longest
        ]
        for client in idle:
            del self._history[client]


def rate_limit_headers(decision: RateDecision) -> dict[str, str]:
    """``X-RateLimit-*`` headers; ``X-RateLimit-Reset`` is epoch seconds (GitHub's convention)."""
    return {
        "X-RateLimit-Limit": str(decision.rule.limit),
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": str(math.ceil(decision.reset_at)),
    }


def rate_limit_error(decision: RateDecision) -> RateLimitExceededError:
    """The spec's 429 body for a refused ``decision``. Every time in it rounds up, so a client that
    waits until ``limit_reset_at`` (or ``Retry-After``) is not refused again for a fraction."""
    reset = datetime.fromtimestamp(math.ceil(decision.reset_at), tz=timezone.utc)
    return RateLimitExceededError(
        f"Rate limit exceeded: {decision.rule.describe()}",
        retry_after_seconds=max(1, math.ceil(decision.retry_after_s)),
        requests_remaining=0,
        limit_reset_at=reset.isoformat().replace("+00:00", "Z"),
    )
