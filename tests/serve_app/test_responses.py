"""The ingress's mapping of results and errors to HTTP: filename, headers, error bodies."""

from __future__ import annotations

import logging
import pickle
from datetime import datetime, timezone

import pytest

from pipelines.datatypes import EncodedImage
from pipelines.errors import (
    BackgroundRemovalError,
    FileTooLargeError,
    GpuMemoryExhaustedError,
    ImageBombError,
    InvalidFormatError,
)
from pipelines.validate import sniff_format
from serve_app.cors import EXPOSED_HEADERS
from serve_app.records import Cutout
from serve_app.responses import (
    base64_body,
    content_disposition,
    error_parts,
    find_service_error,
    is_client_gone,
    processing_info,
    result_filename,
    result_headers,
    routing_error,
    timeout_error,
    to_service_error,
    with_received_format,
)

NOW = datetime(2025, 11, 7, 14, 30, 52, tzinfo=timezone.utc)


def cutout(*, first_frame_only: bool = False, subject_found: bool = True) -> Cutout:
    image = EncodedImage(b"png", "image/png", 1920, 1080, subject_found=subject_found, smoothing_applied=True)
    return Cutout(image, first_frame_only, "BiRefNet-general", tensorrt_enabled=False, inference_ms=41.26)


def test_filename_follows_the_spec_pattern() -> None:
    assert result_filename("portrait.jpg", NOW) == "portrait_nobg_20251107_143052.png"


@pytest.mark.parametrize(
    ("upload", "stem"),
    [
        (None, "image"),
        ("", "image"),
        ("../../etc/passwd", "passwd"),
        ("C:\\photos\\me.png", "me"),
        ('quote"; x=.jpg', "quote_x"),
        ("café au lait.webp", "cafe_au_lait"),
        ("archive.tar.gz", "archive.tar"),
        (".hidden", "hidden"),
        ("写真.jpg", "image"),
    ],
)
def test_filename_is_reduced_to_safe_ascii(upload: str | None, stem: str) -> None:
    assert result_filename(upload, NOW) == f"{stem}_nobg_20251107_143052.png"


@pytest.mark.parametrize(
    ("upload", "stem"),
    [
        ("写真.jpg", "写真"),
        ("фото 😀.jpg", "фото"),
        ("café au lait.webp", "café_au_lait"),
        ('../x/"quoted"; name.png', "quoted_name"),
        ("😀.png", "image"),
    ],
)
def test_the_unicode_filename_keeps_letters_of_any_script(upload: str, stem: str) -> None:
    assert result_filename(upload, NOW, ascii_only=False) == f"{stem}_nobg_20251107_143052.png"


def test_content_disposition_is_an_attachment() -> None:
    value = content_disposition("portrait_nobg_20251107_143052.png")
    assert value.startswith('attachment; filename="portrait_nobg_20251107_143052.png"')
    named = content_disposition("image_nobg_20251107_143052.png", "写真_nobg_20251107_143052.png")
    assert named == ("attachment; filename=\"image_nobg_20251107_143052.png\"; "
                     "filename*=UTF-8''%E5%86%99%E7%9C%9F_nobg_20251107_143052.png")


def test_result_headers_for_a_png() -> None:
    info = processing_info(cutout(), 72.34)
    headers = result_headers(cutout(), info, "p_nobg_20251107_143052.png")
    assert headers["X-Processing-Time-Ms"] == "72.3"
    assert headers["X-Original-Size"] == "1920x1080"
    assert headers["X-Model-Version"] == "BiRefNet-general"
    assert headers["X-Subject-Found"] == "true"
    assert headers["X-Inference-Time-Ms"] == "41.3"
    assert "X-First-Frame-Only" not in headers
    assert headers["Content-Disposition"].startswith("attachment;")


def test_browsers_on_listed_origins_may_read_every_result_header() -> None:
    animated = cutout(first_frame_only=True)
    headers = result_headers(animated, processing_info(animated, 1.0), "p_nobg_20251107_143052.png")
    assert set(headers) <= set(EXPOSED_HEADERS), set(headers) - set(EXPOSED_HEADERS)


def test_result_headers_flag_animated_sources_and_empty_mattes() -> None:
    animated = cutout(first_frame_only=True, subject_found=False)
    headers = result_headers(animated, processing_info(animated, 1.0), None)
    assert headers["X-First-Frame-Only"] == "true"
    assert headers["X-Subject-Found"] == "false"
    assert "Content-Disposition" not in headers


def test_base64_body_has_the_spec_fields() -> None:
    body = base64_body("data:image/png;base64,AAAA", processing_info(cutout(), 72.3))
    assert body["success"] is True
    assert body["processed_image"].startswith("data:image/png;base64,")
    assert set(body["processing_info"]) >= {
        "original_size",
        "output_size",
        "background_removed",
        "edge_smoothing_applied",
        "processing_time_ms",
        "model_version",
        "tensorrt_enabled",
    }


def test_error_parts_of_a_spec_error() -> None:
    error = ImageBombError(
        "Image bomb detected: decompression ratio exceeds 1000x",
        file_size_bytes=524288,
        decompressed_size_bytes=537395200,
        ratio=1024.3,
    )
    status, body, headers = error_parts(error)
    assert status == 400
    assert body["error_code"] == "IMAGE_BOMB" and body["ratio"] == 1024.3
    assert headers == {}


def test_wrong_method_names_the_allowed_ones_in_body_and_header() -> None:
    status, body, headers = error_parts(routing_error(405, "GET", "POST", "/api/background-removal"))
    assert status == 405 and headers == {"Allow": "POST"}
    assert body == {"detail": "GET is not allowed here; use POST", "error_code": "METHOD_NOT_ALLOWED",
                    "allowed_methods": ["POST"]}


def test_unknown_path_lists_the_endpoints_under_the_route_prefix() -> None:
    status, body, headers = error_parts(routing_error(404, "POST", None, "/secured/api/background-removal"))
    assert (status, body["error_code"], headers) == (404, "NOT_FOUND", {})
    assert "POST /secured/api/background-removal/remove" in body["detail"]


def test_routing_errors_survive_pickling_between_replicas() -> None:
    error = routing_error(405, "PUT", "GET, HEAD", "/api")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and copy.headers() == {"Allow": "GET, HEAD"} and str(copy) == str(error)


def test_gpu_memory_error_gets_the_appendix_fields() -> None:
    error = GpuMemoryExhaustedError(gpu_memory_required_mb=1200, gpu_memory_available_mb=847)
    status, body, headers = error_parts(error)
    assert status == 503
    assert body == {
        "detail": "Insufficient GPU memory to process request",
        "error_code": "GPU_MEMORY_EXHAUSTED",
        "gpu_memory_required_mb": 1200,
        "gpu_memory_available_mb": 847,
        "suggested_action": "Retry in 30 seconds",
        "retry_after": 30,
    }
    assert headers == {"Retry-After": "30"}


def test_timeout_error_has_the_spec_fields() -> None:
    status, body, _ = error_parts(timeout_error(30.0, 31.24))
    assert status == 504
    assert body == {
        "detail": "Processing timeout exceeded 30 seconds",
        "error_code": "PROCESSING_TIMEOUT",
        "elapsed_seconds": 31.2,
        "suggested_action": "Reduce image size or retry with smaller image",
    }


def test_received_format_falls_back_to_the_declared_type() -> None:
    error = with_received_format(InvalidFormatError(), "application/pdf")
    assert error.to_body()["received_format"] == "application/pdf"
    named = with_received_format(InvalidFormatError(received_format="GIF"), "image/gif")
    assert named.to_body()["received_format"] == "GIF"
    sniffed = pytest.raises(InvalidFormatError, sniff_format, b"\x00\x01 not an image format anyone knows").value
    assert with_received_format(sniffed, "image/jxl").to_body()["received_format"] == "image/jxl"
    assert with_received_format(sniffed, "application/octet-stream").to_body()["received_format"] == "UNKNOWN"


class FakeRayTaskError(Exception):
    """Ray's wrapper: the replica's exception is on ``cause``."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


def test_service_errors_are_found_through_ray_wrappers() -> None:
    original = FileTooLargeError(file_size_mb=12.4, max_size_mb=10)
    assert find_service_error(FakeRayTaskError(FakeRayTaskError(original))) is original
    assert to_service_error(FakeRayTaskError(original)) is original


class BackPressureError(Exception):
    """Named like ray.serve.exceptions.BackPressureError, which is matched by name."""


def test_back_pressure_becomes_service_overloaded() -> None:
    error = to_service_error(FakeRayTaskError(BackPressureError("queue full")), retry_after_s=2)
    assert error.status_code == 503 and error.error_code == "SERVICE_OVERLOADED"
    assert error.headers() == {"Retry-After": "2"}


def test_unexpected_errors_become_a_generic_500_and_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        error = to_service_error(RuntimeError("CUDA error at /opt/secret/kernel.cu:347"))
    assert type(error) is not BackgroundRemovalError
    status, body, _ = error_parts(error)
    assert status == 500
    assert body == {"detail": "Model inference failed", "error_code": "INFERENCE_ERROR"}
    assert "kernel.cu" in caplog.text


def test_allowed_methods_come_in_a_fixed_order_whatever_the_set_order() -> None:
    for header in ("HEAD, GET", "GET, HEAD"):
        error = routing_error(405, "DELETE", header, "/api/background-removal")
        assert error.to_body()["allowed_methods"] == ["GET", "HEAD"]
        assert error.headers()["Allow"] == "GET, HEAD"


def test_a_client_that_went_away_is_recognised_through_ray_wrappers() -> None:
    class ClientDisconnect(Exception):
        pass

    class TaskCancelledError(Exception):
        pass

    class RayTaskError(Exception):
        def __init__(self, cause: BaseException) -> None:
            super().__init__(str(cause))
            self.cause = cause

    assert is_client_gone(ClientDisconnect())
    assert is_client_gone(RayTaskError(TaskCancelledError("cancelled by the proxy")))
    assert not is_client_gone(RuntimeError("CUDA error"))
    assert not is_client_gone(RayTaskError(ValueError("bad input")))
