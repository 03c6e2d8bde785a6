"""Custom Prometheus metrics of the stages (``ray.serve.metrics``).

Serve adds the ``deployment``, ``replica`` and ``application`` tags itself; Ray prefixes names with
``ray_`` and suffixes counters with ``_total``. Create these inside a replica (in ``__init__``).
"""

from __future__ import annotations

from ray.serve.metrics import Counter, Histogram

# Ray (2.60) exports a histogram's _sum rebuilt from bucket midpoints, not from the observed values,
# so the buckets decide how true a mean from _sum / _count is.
# Latency: six buckets a decade (1, 1.5, 2, 3, 5, 7 ×10^k), so a mean is within about 8 % (the
# earlier 5, 10, 25, 50, … buckets: up to 41 %); the finer buckets also sharpen histogram_quantile.
LATENCY_BOUNDARIES_MS: list[float] = [
    *(step * 10**decade for decade in range(4) for step in (1, 1.5, 2, 3, 5, 7)),
    10000, 15000, 20000, 30000, 45000, 60000,
]
# Batch sizes are integers: with buckets one size wide around each (… 0.5, 1.5] up to 16, each
# midpoint is the size itself, so _sum / _count is the true mean batch size. (With [1, 2, 3, …] a
# batch of 1 counted as 0.5, and the mean read half the truth.)
BATCH_SIZE_BOUNDARIES: list[float] = [size + 0.5 for size in range(17)] + [24.5, 32.5, 64.5]


class StageMetrics:
    """Latency of one stage's work, per call (``birefnet_stage_latency_ms{stage=…}``)."""

    def __init__(self, stage: str):
        self._latency = Histogram(
            "birefnet_stage_latency_ms",
            description="Time one stage spent on one call, in milliseconds.",
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=("stage",),
        )
        self._latency.set_default_tags({"stage": stage})

    def observe_ms(self, milliseconds: float) -> None:
        self._latency.observe(milliseconds)


class BatchMetrics:
    """Size of each Inference forward pass (``birefnet_batch_size``)."""

    def __init__(self) -> None:
        self._size = Histogram(
            "birefnet_batch_size",
            description="Images per Inference forward pass.",
            boundaries=BATCH_SIZE_BOUNDARIES,
        )

    def observe(self, size: int) -> None:
        self._size.observe(size)


class RequestMetrics:
    """Requests and errors seen by the ingress, by endpoint and outcome."""

    def __init__(self) -> None:
        self._requests = Counter(
            "birefnet_requests",
            description="HTTP and handle requests answered by the ingress.",
            tag_keys=("endpoint", "status_code"),  # type: ignore[arg-type]  # Ray annotates tuple[str]
        )
        self._errors = Counter(
            "birefnet_errors",
            description="Error responses by the spec's error_code.",
            tag_keys=("endpoint", "error_code"),  # type: ignore[arg-type]
        )

    def count(self, endpoint: str, status_code: int, error_code: str | None = None) -> None:
        self._requests.inc(tags={"endpoint": endpoint, "status_code": str(status_code)})
        if error_code is not None:
            self._errors.inc(tags={"endpoint": endpoint, "error_code": error_code})
