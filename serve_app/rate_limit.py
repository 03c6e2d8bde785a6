"""Per-client rate limiting (spec §6.2), as plain Python.

The ``RateLimiter`` deployment holds one :class:`ClientLimiter` for the whole cluster, so every
ingress replica draws from the same counts. Two kinds of rule make up a tier:

* rate rules, kept by :class:`SlidingWindowLimiter`: a client's accepted requests are a sorted list
  of timestamps no longer than its longest window, and a request is accepted when every rule still
  has room;
* an optional concurrency cap, kept by :class:`OpenRequests`: each admitted request holds a lease,
  named by the Ingress, until the Ingress reports its end. The Ingress renews its open leases
  every third of their time to live, so the leases of an Ingress replica that died expire within
  that time. A release may come before its acquire (the Ingress stopped waiting for the answer):
  the lease is then withdrawn, and the acquire takes no slot.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from pipelines.errors import RateLimitExceededError
from serve_app.api_keys import KeyMatch
from serve_app.args import ConcurrencyRule, RateRule, TierRule

_SWEEP_EVERY = 1024
_CAP_RETRY_S = 1.0


@dataclass(frozen=True)
class RateDecision:
    """The outcome of one admission check, described by the binding rule.

    Attributes:
        allowed: whether the request may proceed.
        rule: the rule with the least room left (the violated one when refused).
        remaining: requests left under ``rule`` after this one.
        reset_at: wall-clock seconds when ``rule`` next frees a slot.
        retry_after_s: seconds until a refused request would be accepted; 0 when allowed.
        lease: for an allowed request of a tier with a concurrency cap, what to hand back to
            :meth:`ClientLimiter.release` when the request ends.
        lease_ttl_s: the lease expires this long after it was taken or last renewed.
    """

    allowed: bool
    rule: RateRule | ConcurrencyRule
    remaining: int
    reset_at: float
    retry_after_s: float
    lease: str | None = None
    lease_ttl_s: float | None = None


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


class OpenRequests:
    """Each client's open requests, as leases that expire ``ttl_s`` after they were taken or last
    renewed.

    Args:
        ttl_s: the longest a lease counts without being renewed or closed.
        clock: wall-clock seconds; injected in tests.
    """

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.time):
        self._ttl_s = ttl_s
        self._clock = clock
        self._expiry: dict[str, dict[str, float]] = {}  # client → lease → expiry
        self._client_of: dict[str, str] = {}  # lease → client
        self._withdrawn: dict[str, float] = {}  # lease released before it was opened → expiry
        self._calls = 0

    @property
    def ttl_s(self) -> float:
        return self._ttl_s

    def count(self, client: str) -> int:
        """The client's open requests, after dropping its expired leases."""
        leases = self._expiry.get(client)
        if not leases:
            return 0
        now = self._clock()
        for lease in [lease for lease, expiry in leases.items() if expiry <= now]:
            self._close(client, lease)
        return len(self._expiry.get(client, ()))

    def open(self, client: str, lease: str) -> None:
        """Count one more open request of ``client``, held by ``lease`` (a unique name)."""
        self._calls += 1
        now = self._clock()
        if self._calls % _SWEEP_EVERY == 0:
            for known in list(self._expiry):
                self.count(known)
            self._withdrawn = {name: expiry for name, expiry in self._withdrawn.items() if expiry > now}
        self._expiry.setdefault(client, {})[lease] = now + self._ttl_s
        self._client_of[lease] = client

    def withdrawn(self, lease: str) -> bool:
        """Whether ``lease`` was closed before it was opened (within the time to live)."""
        expiry = self._withdrawn.get(lease)
        return expiry is not None and expiry > self._clock()

    def renew(self, leases: Iterable[str]) -> None:
        """Restart the time to live of ``leases``; unknown or expired ones are ignored."""
        now = self._clock()
        for lease in leases:
            client = self._client_of.get(lease)
            if client is None:
                continue
            if self._expiry[client][lease] <= now:
                self._close(client, lease)
            else:
                self._expiry[client][lease] = now + self._ttl_s

    def close(self, lease: str) -> None:
        """End an open request. An unknown lease is withdrawn: opening it later counts nothing."""
        client = self._client_of.get(lease)
        if client is not None:
            self._close(client, lease)
        else:
            self._withdrawn[lease] = self._clock() + self._ttl_s

    def _close(self, client: str, lease: str) -> None:
        del self._client_of[lease]
        leases = self._expiry[client]
        del leases[lease]
        if not leases:
            del self._expiry[client]


class ClientLimiter:
    """A tier's rate rules and concurrency cap, applied together.

    A request refused by either is not counted by the other. Refusals for the cap ask the client
    to retry after a second: when one of its requests ends is not known in advance.

    Releases travel apart from the answers (fire and forget, so they cost a request nothing), and
    a client that sends its next request as soon as it has an answer could overtake its own
    release. :meth:`admit` therefore lets a request at the cap wait ``release_grace_s`` for a
    release before refusing it.

    Args:
        tiers: tier name → rules (see :class:`serve_app.args.RateLimitArgs`).
        open_request_ttl_s: the longest a lease counts without being renewed or released.
        clock: wall-clock seconds; injected in tests.
        release_grace_s: how long :meth:`admit` holds a request at the cap before refusing it.
    """

    def __init__(
        self,
        tiers: Mapping[str, Sequence[TierRule]],
        open_request_ttl_s: float,
        clock: Callable[[], float] = time.time,
        release_grace_s: float = 0.25,
    ):
        self._clock = clock
        self._release_grace_s = release_grace_s
        self._released: asyncio.Condition | None = None  # made on first use, in the serving loop
        self._waiting: dict[str, int] = {}  # client → its requests waiting for a release
        self._rates = SlidingWindowLimiter(
            {name: [rule for rule in rules if isinstance(rule, RateRule)] for name, rules in tiers.items()}, clock
        )
        self._caps = {
            name: rule for name, rules in tiers.items() for rule in rules if isinstance(rule, ConcurrencyRule)
        }
        self._open = OpenRequests(open_request_ttl_s, clock)

    def acquire(self, client: str, tier: str, lease: str | None = None) -> RateDecision:
        """Admit one request of ``client`` if its tier allows it, under the unique name ``lease``
        (made up when None). Raises KeyError for unknown tiers. A withdrawn lease is refused: its
        request no longer waits for the answer."""
        lease = lease or uuid.uuid4().hex
        cap = self._caps.get(tier)
        if cap is not None and (self._open.withdrawn(lease) or self._open.count(client) >= cap.concurrent):
            now = self._clock()
            return RateDecision(False, cap, 0, now + _CAP_RETRY_S, _CAP_RETRY_S)
        decision = self._rates.acquire(client, tier)
        if decision.allowed and cap is not None:
            self._open.open(client, lease)
            decision = replace(decision, lease=lease, lease_ttl_s=self._open.ttl_s)
        return decision

    async def admit(self, client: str, tier: str, lease: str | None = None) -> RateDecision:
        """:meth:`acquire`, but a request refused only for the cap waits up to ``release_grace_s``
        for one of its client's requests to end. At most the cap's number of a client's requests
        wait at once (a client that keeps to its cap has no more in flight); the rest are refused
        at once, so a flood cannot hold the callers' slots. Not thread-safe: call from one event
        loop."""
        lease = lease or uuid.uuid4().hex
        decision = self.acquire(client, tier, lease)
        if decision.allowed or not isinstance(decision.rule, ConcurrencyRule):
            return decision
        if self._waiting.get(client, 0) >= decision.rule.concurrent:
            return decision
        if self._released is None:
            self._released = asyncio.Condition()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._release_grace_s
        self._waiting[client] = self._waiting.get(client, 0) + 1
        try:
            async with self._released:
                while not decision.allowed and isinstance(decision.rule, ConcurrencyRule):
                    left = deadline - loop.time()
                    if left <= 0 or self._open.withdrawn(lease):
                        break
                    with contextlib.suppress(asyncio.TimeoutError):  # not the builtin on Python 3.10
                        await asyncio.wait_for(self._released.wait(), left)
                    decision = self.acquire(client, tier, lease)
        finally:
            self._waiting[client] -= 1
            if not self._waiting[client]:
                del self._waiting[client]
        return decision

    def renew(self, leases: Iterable[str]) -> None:
        """The requests holding ``leases`` are still open."""
        self._open.renew(leases)

    async def release(self, lease: str) -> None:
        """The request holding ``lease`` has ended, or stopped waiting for its admission."""
        self._open.close(lease)
        if self._released is not None:
            async with self._released:
                self._released.notify_all()


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
