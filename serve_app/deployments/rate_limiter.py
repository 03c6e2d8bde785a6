"""RateLimiter: the cluster-wide request counts behind 429 RATE_LIMIT_EXCEEDED.

One replica holds every client's windows and open requests, so the limits hold however many
ingress replicas there are. Deploy it with exactly one replica; it is not deployed when rate
limiting is off.
"""

from __future__ import annotations

from ray import serve

from serve_app.api_keys import KeyMatch
from serve_app.args import RateLimitArgs
from serve_app.logs import configure_replica_logging
from serve_app.rate_limit import ClientLimiter, RateDecision, client_identity


@serve.deployment(num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0.05})
class RateLimiter:
    def __init__(self, args: RateLimitArgs):
        configure_replica_logging()
        self._args = args
        self._limiter = ClientLimiter(args.tiers, args.open_request_ttl_s)

    # Async methods share one event loop, so the counts need no lock.
    async def acquire(self, key: KeyMatch | None, address: str, lease: str) -> RateDecision:
        """Count one request of the client behind ``key`` (a registry match) / ``address``. An
        allowed decision carrying ``lease`` (the caller's unique name for it) holds a slot until
        :meth:`release`; the caller may also release a lease it never got an answer for."""
        client, tier = client_identity(key, address, self._args.default_tier)
        return await self._limiter.admit(client, tier, lease)

    async def renew(self, leases: list[str]) -> None:
        self._limiter.renew(leases)

    async def release(self, lease: str) -> None:
        await self._limiter.release(lease)
