"""Telemetry: the one place that sees every ingress and every Inference replica.

Ingress replicas send a :class:`RequestSample` per ``/remove``; Inference replicas send a
:class:`ModelReport` every ``report_interval_s``. ``/health`` and ``/ready`` read both from here,
so they describe the whole cluster rather than the replica that happened to answer. Deploy it with
exactly one replica.
"""

from __future__ import annotations

import time

from ray import serve

from serve_app.args import TelemetryArgs
from serve_app.health import LatencySummary, LatencyWindow, fresh_reports
from serve_app.logs import configure_replica_logging
from serve_app.records import ModelReport, RequestSample


@serve.deployment(num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0.05})
class Telemetry:
    def __init__(self, args: TelemetryArgs, stale_after_s: float):
        configure_replica_logging()
        self._latency = LatencyWindow(args.window_s, args.max_samples)
        self._reports: dict[str, ModelReport] = {}
        self._stale_after_s = stale_after_s

    # async methods run on the replica's event loop one at a time: no lock needed.
    async def record_request(self, sample: RequestSample) -> None:
        self._latency.add(sample)

    async def record_model(self, report: ModelReport) -> None:
        self._reports[report.replica] = report

    async def forget_model(self, replica: str) -> None:
        self._reports.pop(replica, None)

    async def snapshot(self) -> tuple[list[ModelReport], LatencySummary]:
        """Fresh model reports (one per live Inference replica) and the latency summary."""
        now = time.time()
        fresh = fresh_reports(list(self._reports.values()), now, self._stale_after_s)
        self._reports = {report.replica: report for report in fresh}
        return fresh, self._latency.summary(now)
