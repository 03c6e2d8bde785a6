"""What the custom metrics export, as Ray's metric recorder rebuilds it."""

from __future__ import annotations

import bisect

import numpy as np
from ray._private.telemetry.open_telemetry_metric_recorder import OpenTelemetryMetricRecorder

from serve_app.metrics import BATCH_SIZE_BOUNDARIES, LATENCY_BOUNDARIES_MS


def exported_midpoints(boundaries: list[float]) -> list[float]:
    """The value Ray (2.60) exports for each bucket's observations when it rebuilds _sum."""
    name = f"test_histogram_{len(boundaries)}"  # one OpenTelemetry instrument per boundary list
    recorder = OpenTelemetryMetricRecorder()
    recorder.register_histogram_metric(name, "test", boundaries)
    return recorder.get_histogram_bucket_midpoints(name)


def test_the_exported_batch_size_sum_is_the_true_sum_up_to_16() -> None:
    # Ray exports a histogram's _sum as bucket count × bucket midpoint, so the mean batch size that
    # dashboards compute (_sum / _count) is only right when each size's bucket is centred on it.
    midpoints = exported_midpoints(BATCH_SIZE_BOUNDARIES)
    sizes = [1, 1, 1, 2, 3, 4, 4, 7, 8, 16]
    # Prometheus buckets: bucket i holds boundaries[i-1] < value <= boundaries[i].
    exported = sum(midpoints[bisect.bisect_left(BATCH_SIZE_BOUNDARIES, size)] for size in sizes)
    assert exported == sum(sizes)
    assert all(midpoints[bisect.bisect_left(BATCH_SIZE_BOUNDARIES, n)] == n for n in range(1, 17))


def test_an_exported_mean_latency_is_within_ten_percent() -> None:
    # Latencies spread over a factor of 2 anywhere from 2 ms to 20 s: the mean a dashboard reads
    # from the exported _sum / _count stays within 10 % of the true mean.
    midpoints = np.array(exported_midpoints(LATENCY_BOUNDARIES_MS))
    rng = np.random.default_rng(0)
    worst = 0.0
    for low in np.geomspace(2.0, 20_000.0, 60):
        latencies = np.exp(rng.uniform(np.log(low), np.log(2 * low), 2000))
        exported = midpoints[np.searchsorted(LATENCY_BOUNDARIES_MS, latencies, side="left")].mean()
        worst = max(worst, abs(exported / latencies.mean() - 1))
    assert worst < 0.10, worst
