"""Closed-loop load test of ``POST /remove``: every response checked, every request accounted for.

    python scripts/load_test.py --url http://127.0.0.1:55433 --requests 500 --concurrency 16
    RAY_AUTH_MODE=token python scripts/load_test.py --url http://127.0.0.1:55433 --requests 500 \\
        --concurrency 16 --report-rss          # RSS of every replica before and after (same machine)
    RAY_AUTH_MODE=token python scripts/load_test.py --requests 2000 --concurrency 16 \\
        --watch-replicas                       # the autoscaler's replica counts over the run

``--concurrency`` clients each send their next request as soon as the previous one is answered,
until ``--requests`` have been sent or ``--max-seconds`` have passed. Each answer is one of:

* ok: 200 with a valid RGBA PNG of the upload's (EXIF-oriented) size;
* rejected: a clean back-pressure answer, 503 or 429 with ``Retry-After``;
* error: any other status, or a 200 whose body is not that PNG;
* lost: no answer (connection refused or reset, or no response within ``--timeout``).

Only loopback addresses are accepted unless ``--allow-remote`` is given. Latency percentiles are
over the ok answers only: a fast 429/503 is not a served image, and mixing them in would pull p50
down exactly when the service is overloaded; the rejections are counted (and timed) on their own
line. The last line is ``requests=N ok=… rejected=… errors=… lost=… p50_ms=… p99_ms=…``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import ipaddress
import json
import logging
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import aiohttp
import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.synthetic import encode_scene, generate_scene  # noqa: E402
from serve_app import API_PREFIX  # noqa: E402
from serve_app.health import running_replicas  # noqa: E402

MAX_REQUESTS = 100_000
Kind = Literal["ok", "rejected", "error", "lost"]


@dataclass(frozen=True)
class Outcome:
    """One request's fate: ``kind``, HTTP status (None when lost), latency, what was wrong, and
    when it was answered (``time.monotonic()``)."""

    kind: Kind
    status: int | None
    latency_ms: float
    problem: str | None = None
    finished_at: float = 0.0
    error_code: str | None = None  # of a non-200 answer: the JSON error_code, or the start of a text body


@dataclass(frozen=True)
class Summary:
    requests: int
    counts: dict[str, int]
    statuses: dict[str, int]
    wall_s: float
    throughput_rps: float
    latency_ms: dict[str, float]  # of the ok answers only
    problems: dict[str, int]
    rejected_latency_ms: dict[str, float]  # of the 429/503 rejections

    def last_line(self) -> str:
        return (
            f"requests={self.requests} ok={self.counts['ok']} rejected={self.counts['rejected']} "
            f"errors={self.counts['error']} lost={self.counts['lost']} "
            f"p50_ms={self.latency_ms['p50']:.0f} p99_ms={self.latency_ms['p99']:.0f}"
        )


def require_loopback(url: str, allow_remote: bool) -> None:
    """Refuse a URL whose host resolves to anything but loopback, unless explicitly allowed."""
    host = urlparse(url).hostname
    if host is None:
        raise SystemExit(f"no host in {url!r}")
    if allow_remote:
        return
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise SystemExit(f"cannot resolve {host}: {exc}") from None
    remote = sorted(a for a in addresses if not ipaddress.ip_address(a.split("%", 1)[0]).is_loopback)
    if remote:
        raise SystemExit(f"{host} resolves to non-loopback {remote}; pass --allow-remote to load another machine")


def default_upload() -> bytes:
    """A 640×480 generated photo with a subject, as JPEG."""
    return encode_scene(generate_scene(seed=4242, size=(480, 640), empty_probability=0.0).rgb, "JPEG", quality=90)


def upright_size(upload: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(upload)) as image:
        return ImageOps.exif_transpose(image).size


def check_response(status: int, headers: dict[str, str], body: bytes, size: tuple[int, int]) -> tuple[Kind, str | None]:
    """Classify one answer (see the module docstring)."""
    if status == 200:
        try:
            with Image.open(io.BytesIO(body)) as image:
                image.load()
                if image.format != "PNG" or image.mode != "RGBA" or image.size != size:
                    return "error", f"200 with {image.format} {image.mode} {image.size}"
        except Exception as exc:  # any undecodable body is the finding
            return "error", f"200 with an undecodable body ({type(exc).__name__})"
        return "ok", None
    if status in (429, 503):
        if "retry-after" not in headers:
            return "error", f"{status} without Retry-After"
        return "rejected", None
    return "error", f"{status} {error_code(body)}"


def error_code(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error_code", "?"))
    except (ValueError, AttributeError):
        return body[:60].decode("utf-8", "replace")


async def run_load(
    url: str,
    upload: bytes,
    requests: int,
    concurrency: int,
    timeout_s: float,
    max_seconds: float,
    headers: dict[str, str],
    progress: bool,
    stop: threading.Event | None = None,
) -> tuple[list[Outcome], float]:
    """Send up to ``requests`` uploads from ``concurrency`` closed-loop clients; stop sending after
    ``max_seconds`` or once ``stop`` is set. Returns the outcomes and the wall time."""
    size = upright_size(upload)
    endpoint = f"{url.rstrip('/')}{API_PREFIX}/remove"
    outcomes: list[Outcome] = []
    next_index = 0
    started = time.monotonic()
    bar = tqdm(total=requests, disable=not progress, unit="req", file=sys.stderr)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal next_index
        while next_index < requests and time.monotonic() - started < max_seconds and not (stop and stop.is_set()):
            next_index += 1
            form = aiohttp.FormData()
            form.add_field("image", upload, filename="load.jpg", content_type="image/jpeg")
            sent = time.perf_counter()
            try:
                async with session.post(endpoint, data=form, headers=headers) as response:
                    body = await response.read()
                    lowered = {name.lower(): value for name, value in response.headers.items()}
                    kind, problem = check_response(response.status, lowered, body, size)
                    latency_ms = (time.perf_counter() - sent) * 1000.0
                    code = error_code(body) if response.status != 200 else None
                    outcome = Outcome(kind, response.status, latency_ms, problem, time.monotonic(), code)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                latency_ms = (time.perf_counter() - sent) * 1000.0
                outcome = Outcome("lost", None, latency_ms, type(exc).__name__, time.monotonic())
            outcomes.append(outcome)
            bar.update(1)
            bar.set_postfix_str(" ".join(f"{k}={v}" for k, v in Counter(o.kind for o in outcomes).items()))

    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    bar.close()
    return outcomes, time.monotonic() - started


def latency_percentiles(outcomes: list[Outcome], kind: Kind) -> dict[str, float]:
    """p50, p95, p99 and max latency in ms of the outcomes of ``kind`` (all 0 when there are none)."""
    latencies = np.array([o.latency_ms for o in outcomes if o.kind == kind] or [0.0])
    percentiles = {f"p{q}": float(np.percentile(latencies, q)) for q in (50, 95, 99)}
    return {**percentiles, "max": float(latencies.max())}


def summarise(outcomes: list[Outcome], wall_s: float) -> Summary:
    counts = Counter(o.kind for o in outcomes)
    return Summary(
        requests=len(outcomes),
        counts={kind: counts.get(kind, 0) for kind in ("ok", "rejected", "error", "lost")},
        statuses=dict(sorted(Counter(str(o.status) for o in outcomes).items())),
        wall_s=wall_s,
        throughput_rps=counts.get("ok", 0) / wall_s if wall_s > 0 else 0.0,
        latency_ms=latency_percentiles(outcomes, "ok"),
        problems=dict(Counter(o.problem for o in outcomes if o.problem).most_common(10)),
        rejected_latency_ms=latency_percentiles(outcomes, "rejected"),
    )


class ReplicaWatch:
    """Samples running replicas per deployment every ``interval_s`` in a thread, from just before the
    load starts until ``stop()``; keeps a sample whenever the counts change (and the first one).

    Shows the autoscaler at work: which stage scaled, when, and back down; with the outcomes it says
    whether any accepted request was lost while a replica was added or drained.
    """

    def __init__(self, sample: Callable[[], Mapping[str, int]], interval_s: float = 2.0):
        self._sample = sample
        self._interval_s = interval_s
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replica-watch", daemon=True)
        self.changes: list[tuple[float, dict[str, int]]] = []  # (seconds since start, counts)
        self.failures = 0

    def start(self) -> ReplicaWatch:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> list[tuple[float, dict[str, int]]]:
        self._halt.set()
        self._thread.join()
        return self.changes

    def _run(self) -> None:
        while True:
            try:
                counts = dict(self._sample())
            except Exception:  # a status call that timed out or raced a redeploy: skip this sample
                self.failures += 1
            else:
                if not self.changes or counts != self.changes[-1][1]:
                    self.changes.append((time.monotonic() - self._started, counts))
            if self._halt.wait(self._interval_s):
                return


def print_replicas(changes: list[tuple[float, dict[str, int]]], failures: int = 0) -> None:
    """One line per change of the running-replica counts, then each deployment's range."""
    print("running replicas (a line per change; t = seconds since the load started):")
    for at, counts in changes:
        listed = " ".join(f"{name}={n}" for name, n in sorted(counts.items()))
        print(f"  t={at:6.1f}s {listed or '(no deployments: the application is being redeployed)'}")
    names = sorted({name for _, counts in changes for name in counts})
    # A sample taken mid-redeploy lists no deployments: it says nothing about any one of them.
    ranges = {name: [counts.get(name, 0) for _, counts in changes if counts] for name in names}
    print("replicas min..max: " + ", ".join(f"{name} {min(v)}..{max(v)}" for name, v in ranges.items()))
    if failures:
        print(f"  ({failures} status samples failed)")


def _connect_ray() -> None:
    """Joins the running cluster as a driver (``RAY_AUTH_MODE=token`` when it has token auth, as
    ``serve run`` starts it in Ray 2.60)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="auto", log_to_driver=False, logging_level=logging.ERROR)


def replica_rss(app: str) -> dict[str, tuple[int, int]]:
    """``actor name → (RSS, private RSS) bytes`` of the app's replicas and the proxy, from /proc.

    RSS counts the pages of Ray's shared-memory object store that a process has touched; they
    grow with the distinct objects that passed through it, up to the store's size, and are shared
    by every process. The private part (``RssAnon``) is the process's own heap: the leak signal.

    Needs a Ray driver connection to the running cluster (see ``_connect_ray``).
    """
    from ray.util.state import list_actors

    _connect_ray()
    result: dict[str, tuple[int, int]] = {}
    for actor in list_actors(filters=[("state", "=", "ALIVE")], limit=10_000, raise_on_missing_output=False):
        name = actor.class_name
        if (name.startswith(f"ServeReplica:{app}:") or name == "ProxyActor") and actor.pid is not None:
            result[f"{name}#{actor.actor_id[:6]}"] = read_rss(actor.pid)
    return dict(sorted(result.items()))


def read_rss(pid: int) -> tuple[int, int]:
    """``(VmRSS, RssAnon)`` of a process in bytes (Linux)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon"):
            fields[name] = int(value.split()[0]) * 1024
    return fields.get("VmRSS", 0), fields.get("RssAnon", 0)


def _mib(value: int | None) -> str:
    return f"{value / 2**20:7.1f}" if value is not None else "      -"


def print_rss(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> None:
    print("RSS of replicas (MiB): actor before -> after, as RSS (private: the process's own heap; the rest is "
          "shared, libraries and Ray's object store)")
    for name in sorted(set(before) | set(after)):
        was, now = before.get(name), after.get(name)
        print(f"  {name:48s} {_mib(was and was[0])} ({_mib(was and was[1])}) -> "
              f"{_mib(now and now[0])} ({_mib(now and now[1])})")
    for label, index in (("total", 0), ("total private", 1)):
        print(f"  {label:48s} {sum(v[index] for v in before.values()) / 2**20:7.1f} -> "
              f"{sum(v[index] for v in after.values()) / 2**20:7.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:55433")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--image", type=Path, help="upload to send (default: a generated 640x480 JPEG)")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds per request before it counts as lost")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop sending after this long")
    parser.add_argument("--api-key", help="sent as X-API-Key")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback host")
    parser.add_argument("--report-rss", action="store_true", help="RSS of every replica before and after (Ray)")
    parser.add_argument("--watch-replicas", action="store_true",
                        help="running replicas per deployment over the run, a line per change (Ray)")
    parser.add_argument("--app", default="birefnet", help="Serve application name for --report-rss/--watch-replicas")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= MAX_REQUESTS or not 1 <= args.concurrency <= 1024:
        parser.error(f"--requests must be in 1..{MAX_REQUESTS} and --concurrency in 1..1024")
    require_loopback(args.url, args.allow_remote)
    upload = args.image.read_bytes() if args.image else default_upload()
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    rss_before = replica_rss(args.app) if args.report_rss else {}
    watch = None
    if args.watch_replicas:
        from ray import serve

        _connect_ray()
        watch = ReplicaWatch(lambda: running_replicas(serve.status(), args.app)).start()
    outcomes, wall_s = asyncio.run(
        run_load(
            args.url,
            upload,
            args.requests,
            args.concurrency,
            args.timeout,
            args.max_seconds,
            headers,
            not args.no_progress,
        )
    )
    summary = summarise(outcomes, wall_s)
    if watch is not None:
        print_replicas(watch.stop(), watch.failures)
    if args.report_rss:
        time.sleep(2.0)  # let replicas finish the last requests' cleanup
        print_rss(rss_before, replica_rss(args.app))
    width, height = upright_size(upload)
    print(f"upload: {len(upload)} bytes, {width}x{height}; concurrency {args.concurrency}")
    print(f"wall {summary.wall_s:.1f} s, throughput {summary.throughput_rps:.2f} ok/s")
    print("latency ms (ok): " + " ".join(f"{k}={v:.0f}" for k, v in summary.latency_ms.items()))
    if summary.counts["rejected"]:
        print(f"rejected (429/503 with Retry-After): {summary.counts['rejected']}, latency ms: "
              + " ".join(f"{k}={v:.0f}" for k, v in summary.rejected_latency_ms.items()))
    print("statuses: " + " ".join(f"{k}={v}" for k, v in summary.statuses.items()))
    if summary.problems:
        print("mismatches: " + "; ".join(f"{k} x{v}" for k, v in summary.problems.items()))
    if summary.requests < args.requests:
        print(f"stopped after --max-seconds {args.max_seconds:g}: {args.requests - summary.requests} not sent")
    print(summary.last_line())
    return 0 if summary.counts["error"] == 0 and summary.counts["lost"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
