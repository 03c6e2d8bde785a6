"""The whole graph over real HTTP on 127.0.0.1, against the session's Serve instance (``conftest.py``).

Two applications run side by side there:

* ``birefnet`` at ``/``: ``configs/offline.yaml`` (demo BiRefNet) with rate-limited test keys
  and faster model reports;
* ``faulty`` at ``/faulty``: the same graph around a scripted segmenter (``fakes.py``) whose
  weights appear only when the test writes them, with a 2 s deadline and a one-slot queue, so
  timeouts, GPU memory errors, unexpected errors, back-pressure and the missing-weights → ready
  transition happen on cue.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from tests import imagegen
from tests.serve_app import fakes, spec_examples
from tests.serve_app.conftest import LIMITED_KEY, PREFIX, SINGLE_KEY, Service, flat_jpeg, poll

pytestmark = pytest.mark.serve

# -- images -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def portrait_1080p() -> bytes:
    return imagegen.jpeg_bytes(imagegen.photo_like_rgb(1920, 1080, seed=7))


@pytest.fixture(scope="module")
def small_photo() -> np.ndarray:
    return imagegen.photo_like_rgb(320, 240, seed=3)


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.mode == "RGBA"
        return np.asarray(image)


def error_body(response: requests.Response, status: int, error_code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error_code"] == error_code
    assert isinstance(body["detail"], str) and body["detail"]
    return body


# -- POST /remove: results ------------------------------------------------------------------------


def test_remove_returns_a_png_with_the_spec_headers(service: Service, portrait_1080p: bytes) -> None:
    response = service.remove(portrait_1080p, smoothing="true")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "image/png"
    assert re.fullmatch(
        r'attachment; filename="portrait_nobg_\d{8}_\d{6}\.png"; .*', response.headers["Content-Disposition"]
    )
    assert float(response.headers["X-Processing-Time-Ms"]) > 0
    named = service.remove(imagegen.jpeg_bytes(imagegen.photo_like_rgb(64, 64, seed=2)), name="写真.jpg")
    disposition = named.headers["Content-Disposition"]  # 写真 in the filename* that browsers prefer
    assert re.fullmatch(r"attachment; filename=\"image_nobg_\d{8}_\d{6}\.png\"; "
                        r"filename\*=UTF-8''%E5%86%99%E7%9C%9F_nobg_\d{8}_\d{6}\.png", disposition)
    assert response.headers["X-Original-Size"] == "1920x1080"
    assert response.headers["X-Model-Version"] == "BiRefNet-demo"
    assert response.headers["X-Subject-Found"] in {"true", "false"}
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert decode_png(response.content).shape == (1080, 1920, 4)


def test_remove_returns_base64_json(service: Service, small_photo: np.ndarray) -> None:
    response = service.remove(
        imagegen.png_bytes(small_photo),
        name="cat.png",
        content_type="image/png",
        return_base64="true",
        smoothing="false",
    )
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    prefix = "data:image/png;base64,"
    assert body["processed_image"].startswith(prefix)
    assert decode_png(base64.b64decode(body["processed_image"][len(prefix) :])).shape == (240, 320, 4)
    info = body["processing_info"]
    assert info["original_size"] == info["output_size"] == "320x240"
    assert info["background_removed"] is True and info["edge_smoothing_applied"] is False
    assert info["model_version"] == "BiRefNet-demo" and info["tensorrt_enabled"] is False
    assert info["processing_time_ms"] > 0


def test_remove_keeps_the_upload_colour_profile(service: Service, small_photo: np.ndarray) -> None:
    profile = imagegen.rgb_icc_profile()
    upload = imagegen.encode_with_pillow(Image.fromarray(small_photo), "JPEG", icc_profile=profile)
    response = service.remove(upload, content_type="image/jpeg")
    assert response.status_code == 200, response.text
    assert Image.open(io.BytesIO(response.content)).info["icc_profile"] == profile


def test_smoothing_changes_the_alpha_edges(service: Service, small_photo: np.ndarray) -> None:
    upload = imagegen.png_bytes(small_photo)
    unrefined = {"content_type": "image/png", "refine_foreground": "false"}
    smooth = decode_png(service.remove(upload, smoothing="true", **unrefined).content)
    sharp = decode_png(service.remove(upload, smoothing="false", **unrefined).content)
    # Without refinement, colour is the source's wherever a pixel is visible in both; smoothing
    # only moves the alpha (invisible pixels have their colour zeroed, so compare the visible ones).
    visible = (smooth[..., 3] > 0) & (sharp[..., 3] > 0)
    assert visible.any()
    assert np.array_equal(smooth[..., :3][visible], sharp[..., :3][visible])
    assert np.array_equal(sharp[..., :3][visible], small_photo[visible])
    assert not np.array_equal(smooth[..., 3], sharp[..., 3])


def test_refinement_is_the_default_and_recolours_only_the_soft_edge(service: Service, small_photo: np.ndarray) -> None:
    upload = imagegen.png_bytes(small_photo)
    refined = service.remove(upload, content_type="image/png", return_base64="true")
    assert refined.json()["processing_info"]["foreground_refined"] is True
    prefix = len("data:image/png;base64,")
    default = decode_png(base64.b64decode(refined.json()["processed_image"][prefix:]))
    plain = decode_png(service.remove(upload, content_type="image/png", refine_foreground="false").content)
    assert np.array_equal(default[..., 3], plain[..., 3])  # the matte is the same
    opaque, soft = plain[..., 3] == 255, (plain[..., 3] > 0) & (plain[..., 3] < 255)
    assert np.array_equal(default[..., :3][opaque], plain[..., :3][opaque])
    assert soft.any() and not np.array_equal(default[..., :3][soft], plain[..., :3][soft])


@pytest.mark.parametrize("encode", [imagegen.webp_bytes, imagegen.bmp_bytes], ids=["webp", "bmp"])
def test_remove_accepts_every_supported_format(
    service: Service, small_photo: np.ndarray, encode: Callable[[np.ndarray], bytes]
) -> None:
    response = service.remove(encode(small_photo), name="photo.bin", content_type="application/octet-stream")
    assert response.status_code == 200, response.text


def test_animated_upload_uses_the_first_frame_and_says_so(service: Service, small_photo: np.ndarray) -> None:
    animated = imagegen.animated_bytes([small_photo, small_photo[::-1].copy()], "WEBP")
    response = service.remove(animated, name="anim.webp", content_type="image/webp")
    assert response.status_code == 200, response.text
    assert response.headers["X-First-Frame-Only"] == "true"


# -- POST /remove: errors -------------------------------------------------------------------------


def test_unsupported_format_is_400_invalid_format(service: Service) -> None:
    body = error_body(
        service.remove(imagegen.minimal_pdf(), name="doc.pdf", content_type="application/pdf"), 400, "INVALID_FORMAT"
    )
    assert body["supported_formats"] == ["JPEG", "PNG", "WEBP", "BMP"]
    assert body["received_format"]


def test_truncated_image_is_400_corrupt_image(service: Service, portrait_1080p: bytes) -> None:
    error_body(service.remove(imagegen.truncated(portrait_1080p, 0.3)), 400, "CORRUPT_IMAGE")


def test_tiny_image_is_400_image_too_small(service: Service) -> None:
    error_body(service.remove(flat_jpeg((90, 90, 90), (32, 32))), 400, "IMAGE_TOO_SMALL")


def test_oversized_dimensions_are_400_image_too_large(service: Service) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (80, 7700, 3), dtype=np.uint8)
    body = error_body(service.remove(imagegen.png_bytes(noise), content_type="image/png"), 400, "IMAGE_TOO_LARGE")
    assert body["width"] == 7700


def test_decompression_bomb_is_400_image_bomb(service: Service) -> None:
    body = error_body(service.remove(imagegen.bomb_png(), name="bomb.png", content_type="image/png"), 400, "IMAGE_BOMB")
    assert {"file_size_bytes", "decompressed_size_bytes", "ratio"} <= set(body)
    assert body["ratio"] > 1000


def test_upload_over_10_mb_is_413_before_the_body_is_read(service: Service) -> None:
    big = b"\xff\xd8\xff" + os.urandom(12 * 1024 * 1024)
    started = time.monotonic()
    body = error_body(service.remove(big), 413, "FILE_TOO_LARGE")
    assert body["max_size_mb"] == 10 and body["file_size_mb"] >= 12
    assert time.monotonic() - started < 10


def test_chunked_upload_over_10_mb_is_413(service: Service) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n\r\n\xff\xd8\xff'
        for _ in range(11):
            yield b"\0" * (1024 * 1024)
        yield b"\r\n--b--\r\n"

    response = requests.post(
        f"{service.base}{PREFIX}/remove",
        data=chunks(),
        timeout=60,
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    error_body(response, 413, "FILE_TOO_LARGE")


@pytest.mark.parametrize(
    ("send", "detail"),
    [
        (
            lambda url: requests.post(url, data={"smoothing": "true"}, files={"other": ("a", b"x")}, timeout=30),
            "Missing form field 'image'",
        ),
        (
            lambda url: requests.post(url, files=[("image", ("a.png", b"x")), ("image", ("b.png", b"y"))], timeout=30),
            "must appear once",
        ),
        (lambda url: requests.post(url, json={"image": "x"}, timeout=30), "multipart/form-data"),
        (lambda url: requests.post(url, timeout=30), "multipart/form-data"),
        (
            lambda url: requests.post(url, files={"image": ("a.png", b"x")}, data={"smoothing": "maybe"}, timeout=30),
            "smoothing",
        ),
    ],
    ids=["missing", "duplicated", "json", "empty", "bad-flag"],
)
def test_malformed_forms_are_400_invalid_request(
    service: Service, send: Callable[[str], requests.Response], detail: str
) -> None:
    body = error_body(send(f"{service.base}{PREFIX}/remove"), 400, "INVALID_REQUEST")
    assert detail in body["detail"]


def test_wrong_method_and_unknown_path_answer_in_the_error_shape(service: Service) -> None:
    body = error_body(requests.get(f"{service.base}{PREFIX}/remove", timeout=10), 405, "METHOD_NOT_ALLOWED")
    assert body["detail"] == "GET is not allowed here; use POST" and body["allowed_methods"] == ["POST"]
    assert requests.delete(f"{service.base}{PREFIX}/health", timeout=10).headers["Allow"] == "GET, HEAD"
    body = error_body(requests.get(f"{service.secured}{PREFIX}/remvoe", timeout=10), 404, "NOT_FOUND")
    assert f"POST /secured{PREFIX}/remove" in body["detail"]
    slash = requests.post(f"{service.base}{PREFIX}/remove/", files={"image": ("a.jpg", b"x")}, timeout=10,
                          allow_redirects=False)
    assert f"POST {PREFIX}/remove" in error_body(slash, 404, "NOT_FOUND")["detail"]


def test_rate_limit_is_429_with_the_spec_fields_and_headers(service: Service) -> None:
    headers = {"X-API-Key": LIMITED_KEY}
    url = f"{service.base}{PREFIX}/remove"
    admitted = [requests.post(url, files={"other": ("a", b"x")}, headers=headers, timeout=30) for _ in range(3)]
    assert [r.status_code for r in admitted] == [400, 400, 400]  # counted, then refused for the form
    assert [r.headers["X-RateLimit-Remaining"] for r in admitted] == ["2", "1", "0"]
    assert all(r.headers["X-RateLimit-Limit"] == "3" for r in admitted)
    refused = requests.post(url, files={"other": ("a", b"x")}, headers=headers, timeout=30)
    body = error_body(refused, 429, "RATE_LIMIT_EXCEEDED")
    assert body["detail"] == "Rate limit exceeded: 3 requests per minute"
    assert body["requests_remaining"] == 0 and 1 <= body["retry_after_seconds"] <= 60
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["limit_reset_at"])
    assert refused.headers["Retry-After"] == str(body["retry_after_seconds"])
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert int(refused.headers["X-RateLimit-Reset"]) > time.time()
    # Other clients (no key, or an unknown key: both counted by address) are unaffected.
    other = requests.post(url, files={"other": ("a", b"x")}, headers={"X-API-Key": "made-up"}, timeout=30)
    assert other.status_code == 400


# -- faulty app: failures on cue ------------------------------------------------------------------


@pytest.fixture
def faulty_idle(service: Service) -> Service:
    """Wait until the scripted segmenter has finished earlier slow requests."""
    poll(
        lambda: service.remove(flat_jpeg((128, 128, 128)), base=service.faulty).status_code == 200,
        30,
        "faulty app idle",
    )
    return service


def test_gpu_memory_exhaustion_is_503_with_retry_after(faulty_idle: Service) -> None:
    response = faulty_idle.remove(flat_jpeg((0, 0, 255)), base=faulty_idle.faulty)
    body = error_body(response, 503, "GPU_MEMORY_EXHAUSTED")
    assert body["gpu_memory_required_mb"] == 1200 and body["gpu_memory_available_mb"] == 847
    assert body["suggested_action"] == "Retry in 30 seconds" and body["retry_after"] == 30
    assert response.headers["Retry-After"] == "30"


def test_unexpected_error_is_a_generic_500(faulty_idle: Service) -> None:
    response = faulty_idle.remove(flat_jpeg((0, 255, 0)), base=faulty_idle.faulty)
    body = error_body(response, 500, "INFERENCE_ERROR")
    assert body == {"detail": "Model inference failed", "error_code": "INFERENCE_ERROR"}
    assert "secret" not in response.text and "CUDA" not in response.text


def test_slow_processing_is_504_processing_timeout(faulty_idle: Service) -> None:
    body = error_body(faulty_idle.remove(flat_jpeg((255, 0, 0)), base=faulty_idle.faulty), 504, "PROCESSING_TIMEOUT")
    assert body["detail"] == "Processing timeout exceeded 2 seconds"
    assert 2.0 <= body["elapsed_seconds"] < fakes.SLOW_S
    assert body["suggested_action"]


def multipart_body(image: bytes) -> tuple[bytes, str]:
    """A ``/remove`` form by hand (for uploads sent in pieces): the body and its Content-Type."""
    boundary = "birefnet-test-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"slow.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    return head + image + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def formless(service: Service, key: str | None = SINGLE_KEY) -> requests.Response:
    """A request without an image: a 400 once admitted, a 429 when the client's limits refuse it."""
    headers = {"X-API-Key": key} if key else {}
    return requests.post(f"{service.base}{PREFIX}/remove", files={"other": ("a", b"x")}, headers=headers, timeout=30)


def send_half_an_upload(sock: socket.socket, service: Service, image: bytes, key: str | None = None) -> None:
    """The headers of an upload of ``image`` and half of its body: the ingress waits for the rest."""
    body, content_type = multipart_body(image)
    key_header = f"X-API-Key: {key}\r\n" if key else ""
    sock.sendall((f"POST {PREFIX}/remove HTTP/1.1\r\nHost: {service.address[0]}\r\nContent-Type: {content_type}\r\n"
                  f"{key_header}Content-Length: {len(body)}\r\n\r\n").encode() + body[: len(body) // 2])


def test_an_open_upload_holds_its_clients_concurrency_slot_until_it_ends(service: Service) -> None:
    """SINGLE_KEY's tier allows one open request. Admission comes before the body is read, so an
    upload left half-sent holds the slot, renewed past its 3 s lease; when its client goes away,
    the slot comes back."""
    # Each request ends before the next is sent: none is refused (the release may still be on its
    # way; the limiter waits for it).
    assert [formless(service).status_code for _ in range(5)] == [400] * 5
    with socket.create_connection(service.address, timeout=15) as sock:
        send_half_an_upload(sock, service, flat_jpeg((128, 128, 128)), SINGLE_KEY)
        answers: list[requests.Response] = []
        poll(lambda: answers.append(formless(service)) or answers[-1].status_code == 429, 10,
             "a 429 beside the open upload")
        refused = error_body(answers[-1], 429, "RATE_LIMIT_EXCEEDED")
        assert refused["detail"] == "Rate limit exceeded: 1 concurrent request"
        assert refused["retry_after_seconds"] == 1 and answers[-1].headers["Retry-After"] == "1"
        assert answers[-1].headers["X-RateLimit-Limit"] == "1"
        assert formless(service, key=None).status_code == 400  # the same address without the key: another client
        time.sleep(4.0)
        assert formless(service).status_code == 429  # still held, past the lease's 3 s: the Ingress renews it
    poll(lambda: formless(service).status_code == 400, 10, "the slot back once the upload's client left")


def test_clients_that_leave_at_once_leave_no_slot_taken(service: Service) -> None:
    """Clients gone within milliseconds, while their admission is still in flight: a lease granted
    after the request was cancelled must be released too, not left to expire (3 s here)."""
    image = flat_jpeg((128, 128, 128))
    for wait_ms in [0, 2, 5, 8, 12, 15, 20] * 4:
        with socket.create_connection(service.address, timeout=15) as sock:
            send_half_an_upload(sock, service, image, SINGLE_KEY)
            time.sleep(wait_ms / 1000)
    time.sleep(0.5)
    assert formless(service).status_code == 400


def test_a_stuck_rate_limiter_does_not_hold_requests(service: Service) -> None:
    """The limiter fails open when it does not answer within a second, not only when it is gone;
    the lease it grants once it runs again is released, not left to expire (3 s here)."""
    from ray._private.state import actors

    limiter = next(
        actor for actor in actors().values()
        if actor["ActorClassName"] == "ServeReplica:birefnet:RateLimiter" and actor["State"] == "ALIVE"
    )
    os.kill(limiter["Pid"], signal.SIGSTOP)
    try:
        started = time.monotonic()
        answer = formless(service)
        waited = time.monotonic() - started
    finally:
        os.kill(limiter["Pid"], signal.SIGCONT)
    assert answer.status_code == 400 and waited < 3.0, (answer.status_code, waited)
    assert "X-RateLimit-Limit" not in answer.headers  # admitted without a decision
    time.sleep(0.5)
    assert formless(service).status_code == 400


def test_a_slow_upload_does_not_count_against_the_processing_timeout(faulty_idle: Service) -> None:
    body, content_type = multipart_body(flat_jpeg((128, 128, 128)))
    pieces = [body[i:i + len(body) // 6 + 1] for i in range(0, len(body), len(body) // 6 + 1)]

    def trickle() -> Iterator[bytes]:  # about 3 s in all, past the faulty app's 2 s timeout_s
        for piece in pieces:
            time.sleep(0.5)
            yield piece

    started = time.monotonic()
    response = requests.post(f"{faulty_idle.faulty}{PREFIX}/remove", data=trickle(),
                             headers={"Content-Type": content_type}, timeout=60)
    assert time.monotonic() - started > 2.5
    assert response.status_code == 200, response.text
    assert float(response.headers["X-Processing-Time-Ms"]) > 2500  # the header still counts the upload


def test_a_client_that_goes_away_is_not_counted_as_an_answered_request(service: Service) -> None:
    def answered() -> int:
        health = requests.get(f"{service.base}{PREFIX}/health", timeout=10).json()
        return int(health["performance_metrics"]["requests_last_hour"])

    image = imagegen.jpeg_bytes(imagegen.photo_like_rgb(640, 480, seed=5))
    before = answered()
    for _ in range(10):  # earlier tests' samples travel fire-and-forget: wait until the count settles
        time.sleep(1.0)
        now = answered()
        if now == before:
            break
        before = now
    for _ in range(3):  # the upload cut short: the ingress sees the client disconnect mid-form
        with socket.create_connection(service.address, timeout=15) as sock:
            send_half_an_upload(sock, service, image)
            time.sleep(0.3)
    time.sleep(1.0)
    assert service.remove(imagegen.jpeg_bytes(imagegen.photo_like_rgb(64, 64, seed=6))).status_code == 200
    poll(lambda: answered() > before, 10, "the complete request in performance_metrics")
    time.sleep(1.0)
    assert answered() == before + 1, "an abandoned upload was counted as an answered (500) request"


def test_full_queue_is_503_service_overloaded(faulty_idle: Service) -> None:
    upload = flat_jpeg((255, 0, 0))

    def send(_: int) -> requests.Response:
        return faulty_idle.remove(upload, base=faulty_idle.faulty)

    with ThreadPoolExecutor(max_workers=6) as pool:
        running = pool.submit(send, 0)  # occupies Inference (max_ongoing_requests: 1)
        time.sleep(0.4)
        queued = pool.submit(send, 1)  # fills its queue (max_queued_requests: 1)
        time.sleep(0.4)
        extra = list(pool.map(send, range(4)))
        earlier = [running.result(), queued.result()]
    overloaded = [r for r in extra if r.status_code == 503]
    assert overloaded, [r.status_code for r in extra]
    assert {r.json()["error_code"] for r in overloaded} == {"SERVICE_OVERLOADED"}
    assert all(r.headers["Retry-After"] == "3" for r in overloaded)
    assert {r.status_code for r in earlier + extra} <= {503, 504}


def test_missing_weights_then_ready(service: Service) -> None:
    before, after = service.faulty_before_weights, service.faulty_after_weights
    assert before["health"].status_code == 503
    assert before["health"].json()["status"] == "unhealthy"
    assert before["health"].json()["error"] == "Model checkpoint not found"
    assert "fake-birefnet.safetensors missing" in before["health"].json()["detail"]
    assert before["ready"].status_code == 503 and before["ready"].json()["ready"] is False
    assert before["ready"].headers["Retry-After"] == "5"
    refused = error_body(before["remove"], 503, "MODEL_NOT_READY")
    assert refused["detail"] == "Model checkpoint not found; the service retries loading it"  # no server path
    assert after["ready"].status_code == 200 and after["ready"].json()["ready"] is True
    assert after["health"].status_code == 200 and after["health"].json()["model"] == "BiRefNet-fake"


# -- probes, docs, handle ------------------------------------------------------------------------


def test_health_reports_every_spec_field(service: Service, small_photo: np.ndarray) -> None:
    assert service.remove(imagegen.png_bytes(small_photo), content_type="image/png").status_code == 200

    def counted() -> bool:
        body = requests.get(f"{service.base}{PREFIX}/health", timeout=10).json()
        return bool(body["performance_metrics"]["requests_last_hour"] > 0)

    poll(counted, 10, "a request in performance_metrics")
    response = requests.get(f"{service.base}{PREFIX}/health", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"  # CPU
    assert body["service"] == "BiRefNet Background Removal" and body["version"] == "1.0.0"
    assert body["model"] == "BiRefNet-demo" and body["device"] == "cpu"
    assert body["tensorrt_enabled"] is False and body["gpu_memory_free_mb"] is None
    assert body["tensorrt_reason"] == "TensorRT backend not selected (backend: eager)"
    assert body["backend"] == "eager" and body["dtype"] == "float32" and body["backend_fallbacks"] == {}
    assert set(body["model_files_status"]) == {"checkpoint", "config", "tensorrt_engine"}
    metrics = body["performance_metrics"]
    assert set(metrics) == {"avg_latency_ms", "p95_latency_ms", "p99_latency_ms", "requests_last_hour"}
    assert 0 < metrics["avg_latency_ms"] <= metrics["p99_latency_ms"]


@pytest.mark.parametrize("probe", ["health", "ready"])
def test_probes_answer_head_as_get_without_a_body(service: Service, probe: str) -> None:
    get = requests.get(f"{service.base}{PREFIX}/{probe}", timeout=10)
    head = requests.head(f"{service.base}{PREFIX}/{probe}", timeout=10)
    assert head.status_code == get.status_code == 200 and head.content == b""
    assert head.headers["Content-Type"] == "application/json"


def test_ready_went_from_unavailable_to_200(service: Service) -> None:
    assert service.main_ready_seen[-1] == 200
    # Before 200 the route is missing (404), refused (0) or the model not ready (503).
    assert set(service.main_ready_seen[:-1]) <= {0, 404, 503}
    response = requests.get(f"{service.base}{PREFIX}/ready", timeout=10)
    assert response.json() == {"ready": True, "model_replicas": 1}


def test_openapi_docs_describe_the_form(service: Service) -> None:
    assert requests.get(f"{service.base}/docs", timeout=10).status_code == 200
    schema = requests.get(f"{service.base}/openapi.json", timeout=10).json()
    remove = schema["paths"][f"{PREFIX}/remove"]["post"]
    form = remove["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["image"] and set(form["properties"]) == {
        "image", "smoothing", "refine_foreground", "return_base64"
    }
    assert {"200", "400", "413", "429", "500", "503", "504"} <= set(remove["responses"])
    assert f"{PREFIX}/health" in schema["paths"] and f"{PREFIX}/ready" in schema["paths"]


def test_python_handle_returns_a_typed_result(service: Service, small_photo: np.ndarray) -> None:
    from ray import serve

    from pipelines.errors import BackgroundRemovalError, InvalidFormatError, InvalidRequestError
    from serve_app.records import RemovalResult

    handle = serve.get_app_handle("birefnet")
    result = handle.remove_background.remote(
        imagegen.png_bytes(small_photo), smoothing=True, filename="cat.png"
    ).result(timeout_s=60)
    assert isinstance(result, RemovalResult)
    assert decode_png(result.png).shape == (240, 320, 4)
    assert re.fullmatch(r"cat_nobg_\d{8}_\d{6}\.png", result.filename)
    assert result.processing_info.model_version == "BiRefNet-demo"
    assert result.processing_info.edge_smoothing_applied is True
    assert result.processing_info.foreground_refined is True
    with pytest.raises(InvalidFormatError) as caught:
        handle.remove_background.remote(b"not an image at all").result(timeout_s=60)
    original = caught.value.cause  # type: ignore[attr-defined]  # Ray's wrapper keeps the replica's error
    assert isinstance(original, BackgroundRemovalError)
    assert original.to_body()["error_code"] == "INVALID_FORMAT"
    for arguments in ({"image": imagegen.png_bytes(small_photo), "smoothing": "false"}, {"image": "cat.png"}):
        with pytest.raises(InvalidRequestError) as refused:  # not a truthy string smoothed, not a 500
            handle.remove_background.remote(**arguments).result(timeout_s=60)
        assert refused.value.cause.to_body()["field"] in ("smoothing", "image")  # type: ignore[attr-defined]


def test_another_serve_app_uses_the_service_through_its_handle(service: Service, small_photo: np.ndarray) -> None:
    from ray import serve

    def client_running() -> bool:
        application = serve.status().applications.get("handle-client")
        return application is not None and application.status == "RUNNING"

    poll(client_running, 60, "the handle-client app running")
    answer = serve.get_app_handle("handle-client").remote(imagegen.png_bytes(small_photo)).result(timeout_s=60)
    assert decode_png(answer["png"]).shape == (240, 320, 4)
    assert re.fullmatch(r"cat_nobg_\d{8}_\d{6}\.png", answer["filename"])
    assert answer["model_version"] == "BiRefNet-demo" and answer["foreground_refined"] is False
    assert answer["refused"]["error_code"] == "INVALID_FORMAT"


# -- the spec's own client examples (§7.1, §7.2, §7.3) ---------------------------------------------------


@pytest.fixture
def portrait_file(tmp_path: Path, portrait_1080p: bytes) -> Path:
    path = tmp_path / "portrait.jpg"
    path.write_bytes(portrait_1080p)
    return path


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_spec_curl_examples(service: Service, portrait_file: Path) -> None:
    url = f"{service.base}{PREFIX}"
    subprocess.run(
        [
            "curl",
            "-sS",
            "-f",
            "-X",
            "POST",
            f"{url}/remove",
            "-F",
            "image=@portrait.jpg",
            "-F",
            "smoothing=true",
            "-o",
            "output_nobg.png",
        ],
        cwd=portrait_file.parent,
        check=True,
        timeout=60,
    )
    assert decode_png((portrait_file.parent / "output_nobg.png").read_bytes()).shape == (1080, 1920, 4)
    timed = subprocess.run(
        [
            "curl",
            "-sS",
            "-f",
            "-X",
            "POST",
            f"{url}/remove",
            "-F",
            "image=@portrait.jpg",
            "--output",
            "my_custom_output.png",
            "-w",
            "Processing time: %{time_total}s\n",
        ],
        cwd=portrait_file.parent,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert timed.stdout.startswith("Processing time: ")
    health = subprocess.run(
        ["curl", "-sS", "-X", "GET", f"{url}/health"], check=True, timeout=30, capture_output=True, text=True
    )
    assert json.loads(health.stdout)["service"] == "BiRefNet Background Removal"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_spec_typescript_example_through_browser_fetch(service: Service, portrait_file: Path) -> None:
    script = Path(__file__).with_name("spec_example_client.mjs")

    def run(path: Path, content_type: str) -> dict[str, Any]:
        done = subprocess.run(["node", str(script), service.base, str(path), content_type], check=True, timeout=60,
                              capture_output=True, text=True)
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    result = run(portrait_file, "image/jpeg")
    assert result["ok"], result
    assert result["info"]["original_size"] == "1920x1080" and result["info"]["model_version"] == "BiRefNet-demo"
    assert result["info"]["processing_time_ms"] > 0
    assert result["blob_type"] == "image/png" and result["signature"] == "89504e470d0a1a0a"
    text = portrait_file.with_name("notes.txt")
    text.write_text("not a picture")
    assert run(text, "text/plain") == {
        "ok": False, "error": "Unsupported file format (TEXT). Please upload JPEG, PNG, WebP or BMP."}


@pytest.fixture
def spec_client(service: Service, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(spec_examples, "API_URL", service.base)
    return spec_examples


def test_spec_standalone_script(spec_client: Any, portrait_file: Path) -> None:
    output = portrait_file.parent / "portrait_nobg.png"
    result = spec_client.remove_background(image_path=str(portrait_file), output_path=str(output))
    assert result["original_size"] == "1920x1080" and result["model_version"] == "BiRefNet-demo"
    assert result["processing_time_ms"] > 0 and result["file_size_bytes"] == output.stat().st_size


def test_spec_d_id_integration(spec_client: Any, portrait_file: Path) -> None:
    video_url = spec_client.create_video_with_transparent_background(
        image_path=str(portrait_file), audio_path="speech.mp3", text="Hello", did_api_key="unused"
    )
    assert video_url is None  # the spec's D-ID call is a placeholder
    assert decode_png(portrait_file.with_suffix(".nobg.png").read_bytes()).shape == (1080, 1920, 4)


def test_spec_aiohttp_batch_script(spec_client: Any, tmp_path: Path) -> None:
    image_dir = tmp_path / "portraits"
    image_dir.mkdir()
    for seed in range(5):
        (image_dir / f"p{seed}.jpg").write_bytes(imagegen.jpeg_bytes(imagegen.photo_like_rgb(400, 300, seed=seed)))
    image_paths = sorted(image_dir.glob("*.jpg"))
    results = asyncio.run(
        spec_client.batch_remove_backgrounds(
            image_paths=[str(p) for p in image_paths], output_dir=str(tmp_path / "portraits_nobg"), max_concurrent=3
        )
    )
    assert [(name, ok) for name, ok, _ in results] == [(p.name, True) for p in image_paths]
    assert len(list((tmp_path / "portraits_nobg").glob("*_nobg.png"))) == 5
