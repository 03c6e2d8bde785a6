"""The load test's judgement of answers and its loopback guard, without a service."""

from __future__ import annotations

import hashlib
import importlib
import io
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
load_test = importlib.import_module("load_test")


def _png(size: tuple[int, int], mode: str = "RGBA") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_png_of_the_upload_size_is_ok_and_anything_else_an_error() -> None:
    assert load_test.check_response(200, {}, _png((64, 48)), (64, 48)) == ("ok", None)
    assert load_test.check_response(200, {}, _png((48, 64)), (64, 48))[0] == "error"
    assert load_test.check_response(200, {}, _png((64, 48), "RGB"), (64, 48))[0] == "error"
    assert load_test.check_response(200, {}, b"\x89PNG\r\n\x1a\ntruncated", (64, 48))[0] == "error"


def test_back_pressure_counts_as_rejected_only_with_retry_after() -> None:
    assert load_test.check_response(503, {"retry-after": "2"}, b"", (1, 1)) == ("rejected", None)
    assert load_test.check_response(429, {"retry-after": "9"}, b"{}", (1, 1)) == ("rejected", None)
    assert load_test.check_response(503, {}, b"", (1, 1)) == ("error", "503 without Retry-After")
    kind, problem = load_test.check_response(500, {}, b'{"error_code": "INFERENCE_ERROR"}', (1, 1))
    assert (kind, problem) == ("error", "500 INFERENCE_ERROR")


def test_summary_last_line() -> None:
    outcomes = [load_test.Outcome("ok", 200, 10.0), load_test.Outcome("rejected", 503, 2.0)]
    outcomes += [load_test.Outcome("lost", None, 90000.0, "TimeoutError")]
    line = load_test.summarise(outcomes, 1.0).last_line()
    assert line == "requests=3 ok=1 rejected=1 errors=0 lost=1 p50_ms=10 p99_ms=10"
    assert np.isclose(load_test.summarise(outcomes, 2.0).throughput_rps, 0.5)


def test_latency_percentiles_are_of_ok_answers_and_rejections_are_counted_apart() -> None:
    ok = [load_test.Outcome("ok", 200, float(ms)) for ms in (1000, 2000, 3000)]
    rejected = [load_test.Outcome("rejected", 429, 5.0)] * 10
    errors = [load_test.Outcome("error", 500, 1.0, "500 INFERENCE_ERROR")]
    summary = load_test.summarise(ok + rejected + errors, 10.0)
    assert summary.latency_ms == {"p50": 2000.0, "p95": 2900.0, "p99": 2980.0, "max": 3000.0}
    assert summary.counts == {"ok": 3, "rejected": 10, "error": 1, "lost": 0}
    assert summary.rejected_latency_ms["p50"] == 5.0
    assert summary.last_line() == "requests=14 ok=3 rejected=10 errors=1 lost=0 p50_ms=2000 p99_ms=2980"


def test_non_loopback_hosts_are_refused_unless_allowed() -> None:
    load_test.require_loopback("http://127.0.0.1:55433", allow_remote=False)
    load_test.require_loopback("http://[::1]:55433", allow_remote=False)
    with pytest.raises(SystemExit, match="non-loopback"):
        load_test.require_loopback("http://192.0.2.7:55433", allow_remote=False)
    load_test.require_loopback("http://192.0.2.7:55433", allow_remote=True)


def _hash_key_from_stdin(key: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "hash_api_key.py"), "--stdin", "--tier", "pro"],
                          input=key, capture_output=True, text=True, timeout=60)


def test_hash_api_key_prints_the_registry_entry() -> None:
    result = _hash_key_from_stdin("correct-horse-battery")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{hashlib.sha256(b'correct-horse-battery').hexdigest()} pro\n"


def test_hash_api_key_refuses_a_guessable_key() -> None:
    result = _hash_key_from_stdin("abc")
    assert result.returncode == 2 and "guessable" in result.stderr and not result.stdout


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_rss_report_separates_the_private_heap_from_shared_pages(capsys: pytest.CaptureFixture[str]) -> None:
    import os

    rss, private = load_test.read_rss(os.getpid())
    assert rss > private > 0  # shared libraries (and, in a replica, Ray's object store) are the rest
    load_test.print_rss({"Ingress#abc": (rss, private)}, {"Ingress#abc": (rss + 2**20, private)})
    out = capsys.readouterr().out
    assert f"({private / 2**20:7.1f}) -> {(rss + 2**20) / 2**20:7.1f}" in out
    assert "total private" in out


def test_replica_watch_keeps_each_change_and_prints_the_ranges(capsys: pytest.CaptureFixture[str]) -> None:
    samples = iter(
        [{"Preprocess": 1, "Inference": 1}] * 2
        + [RuntimeError("status timed out")]
        + [{"Preprocess": 2, "Inference": 1}] * 2
        + [{"Preprocess": 1, "Inference": 1}]
    )
    drained = threading.Event()

    def sample() -> dict[str, int]:
        value = next(samples, None)
        if value is None:
            drained.set()
            return {"Preprocess": 1, "Inference": 1}
        if isinstance(value, Exception):
            raise value
        return value

    watch = load_test.ReplicaWatch(sample, interval_s=0.001).start()
    assert drained.wait(5.0)
    changes = watch.stop()
    assert [counts for _, counts in changes] == [
        {"Preprocess": 1, "Inference": 1},
        {"Preprocess": 2, "Inference": 1},
        {"Preprocess": 1, "Inference": 1},
    ]
    assert watch.failures == 1
    times = [at for at, _ in changes]
    assert times == sorted(times)

    load_test.print_replicas(changes, watch.failures)
    out = capsys.readouterr().out
    assert "Inference=1 Preprocess=2" in out
    assert "replicas min..max: Inference 1..1, Preprocess 1..2" in out
    assert "1 status samples failed" in out

    load_test.print_replicas([(0.0, {"Inference": 1}), (5.0, {}), (9.0, {"Inference": 1})])
    out = capsys.readouterr().out
    assert "t=   5.0s (no deployments" in out
    assert "replicas min..max: Inference 1..1" in out
