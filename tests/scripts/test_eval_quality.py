"""The quality evaluation's argument checks, retries and partial failures, against a local fake service."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scripts import eval_quality

SIZE = (32, 24)  # (width, height) of every dataset image and of every answer


def _alpha() -> np.ndarray:
    alpha = np.zeros(SIZE[::-1], np.uint8)
    alpha[6:18, 8:24] = 255
    return alpha


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _cutout() -> bytes:
    rgba = Image.new("RGBA", SIZE, (200, 10, 10, 0))
    rgba.putalpha(Image.fromarray(_alpha()))
    return _png(rgba)


@dataclass
class FakeService:
    """Answers each POST with the next planned ``(status, headers)``, a 200 cut-out when none is left."""

    url: str
    plan: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    api_keys: list[str | None] = field(default_factory=list)


@pytest.fixture
def service() -> Iterator[FakeService]:
    fake = FakeService(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers["Content-Length"]))
            fake.api_keys.append(self.headers.get("X-API-Key"))
            status, headers = fake.plan.pop(0) if fake.plan else (200, {})
            body = _cutout() if status == 200 else b'{"error_code": "RATE_LIMIT_EXCEEDED"}'
            self.send_response(status)
            for name, value in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Three image/mask pairs whose masks equal the fake service's answer (IoU 1)."""
    (tmp_path / "im").mkdir()
    (tmp_path / "gt").mkdir()
    for stem in ("a", "b", "c"):
        Image.new("RGB", SIZE, (90, 90, 90)).save(tmp_path / "im" / f"{stem}.jpg")
        Image.fromarray(_alpha()).save(tmp_path / "gt" / f"{stem}.png")
    return tmp_path


def _output(capsys: pytest.CaptureFixture[str]) -> tuple[list[str], list[str]]:
    captured = capsys.readouterr()
    return captured.out.splitlines(), captured.err.splitlines()


def test_count_zero_is_a_one_line_error_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert eval_quality.main(["--count", "0", "--url", "http://127.0.0.1:9"]) == 2
    out, err = _output(capsys)
    assert out == [] and err == ["error: --count must be at least 1, got 0"]


def test_dataset_without_pairs_is_a_one_line_error_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.new("RGB", SIZE).save(tmp_path / "images" / "photo.jpg")
    Image.new("L", SIZE).save(tmp_path / "masks" / "other.png")
    assert eval_quality.main(["--dataset", str(tmp_path), "--url", "http://127.0.0.1:9"]) == 2
    out, err = _output(capsys)
    assert out == [] and len(err) == 1 and "no image/mask pairs" in err[0]


def test_429_and_503_with_retry_after_are_retried_after_the_wait_asked_for(
    service: FakeService, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service.plan = [(429, {"Retry-After": "7"}), (503, {"Retry-After": "2"})]
    waits: list[float] = []
    assert eval_quality.main(["--url", service.url, "--dataset", str(dataset)], sleep=waits.append) == 0
    out, err = _output(capsys)
    assert waits == [7.0, 2.0]
    assert len(service.api_keys) == 5
    assert err == ["a.jpg: HTTP 429, retrying in 7 s (try 2 of 5)", "a.jpg: HTTP 503, retrying in 2 s (try 3 of 5)"]
    assert out[-1] == "images=3 iou=1.0000 f=1.0000 mae=0.0000 boundary_f=1.0000"


def test_an_image_that_keeps_being_refused_is_reported_and_the_others_summarised(
    service: FakeService, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a.jpg passes; b.jpg is refused five times in a row (the bound), then c.jpg passes.
    service.plan = [(200, {})] + [(429, {"Retry-After": "1"})] * 5
    waits: list[float] = []
    assert eval_quality.main(["--url", service.url, "--dataset", str(dataset)], sleep=waits.append) == 1
    out, err = _output(capsys)
    assert waits == [1.0] * 4
    assert any(line.startswith("failed: b.jpg: HTTP 429 after 5 tries") for line in err)
    assert err[-1] == "1 of 3 images failed: b.jpg"
    assert out[-1] == "images=2 iou=1.0000 f=1.0000 mae=0.0000 boundary_f=1.0000"


def test_other_errors_and_503_without_retry_after_are_not_retried(
    service: FakeService, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service.plan = [(500, {}), (503, {})]
    waits: list[float] = []
    assert eval_quality.main(["--url", service.url, "--dataset", str(dataset)], sleep=waits.append) == 1
    out, err = _output(capsys)
    assert waits == [] and len(service.api_keys) == 3
    assert err[-1] == "2 of 3 images failed: a.jpg, b.jpg"
    assert out[-1].startswith("images=1 ")


def test_api_key_is_sent_as_x_api_key_from_the_flag_or_the_environment(
    service: FakeService, dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(eval_quality.API_KEY_ENV, raising=False)
    assert eval_quality.main(["--url", service.url, "--dataset", str(dataset)]) == 0
    assert service.api_keys == [None] * 3
    monkeypatch.setenv(eval_quality.API_KEY_ENV, "from-env")
    assert eval_quality.main(["--url", service.url, "--dataset", str(dataset)]) == 0
    assert eval_quality.main(["--url", service.url, "--dataset", str(dataset), "--api-key", "from-flag"]) == 0
    assert service.api_keys[3:] == ["from-env"] * 3 + ["from-flag"] * 3
