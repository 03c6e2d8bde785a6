"""What the custom metrics export, as Ray's metric recorder rebuilds it."""

from __future__ import annotations

import bisect

from ray._private.telemetry.open_telemetry_metric_recorder import OpenTelemetryMetricRecorder

from serve_app.metrics import BATCH_SIZE_BOUNDARIES


def test_the_exported_batch_size_sum_is_the_true_sum_up_to_16() -> None:
    # Ray exports a histogram's _sum as bucket count × bucket midpoint, so the mean batch size that
    # dashboards compute (_sum / _count) is only right when each size's bucket is centred on it.
    recorder = OpenTelemetryMetricRecorder()
    recorder.register_histogram_metric("test_batch_size", "batch sizes", BATCH_SIZE_BOUNDARIES)
    midpoints = recorder.get_histogram_bucket_midpoints("test_batch_size")
    sizes = [1, 1, 1, 2, 3, 4, 4, 7, 8, 16]
    # Prometheus buckets: bucket i holds boundaries[i-1] < value <= boundaries[i].
    exported = sum(midpoints[bisect.bisect_left(BATCH_SIZE_BOUNDARIES, size)] for size in sizes)
    assert exported == sum(sizes)
    assert all(midpoints[bisect.bisect_left(BATCH_SIZE_BOUNDARIES, n)] == n for n in range(1, 17))
