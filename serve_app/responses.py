"""The ingress's one mapping from results and errors to HTTP responses (spec §3.2, §3.3, App. A).

Everything here is pure: the ingress calls these with what the stages returned or raised.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from pipelines.errors import (
    BackgroundRemovalError,
    EndpointNotFoundError,
    GpuMemoryExhaustedError,
    InferenceError,
    InvalidFormatError,
    InvalidRequestError,
    MethodNotAllowedError,
    ProcessingTimeoutError,
    ServiceOverloadedError,
)
from serve_app.records import Cutout, ProcessingInfo

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_UNSAFE_UNICODE = re.compile(r"[^\w.-]+")  # keeps letters and digits of any script
_MAX_STEM = 100
# Defaults the spec's examples show for errors raised without them.
_DEFAULT_FIELDS: dict[str, dict[str, Any]] = {
    "GPU_MEMORY_EXHAUSTED": {"suggested_action": "Retry in 30 seconds", "retry_after": 30},
    "PROCESSING_TIMEOUT": {"suggested_action": "Reduce image size or retry with smaller image"},
}
# How deep to look through Ray's wrappers (RayTaskError.cause) for the error a stage raised.
_MAX_CAUSE_DEPTH = 8
# Serve's refusal when a deployment's queue is full.
_BACK_PRESSURE = frozenset({"BackPressureError"})
# Ray's and Serve's ways of saying "the replica (or its worker, node or an object it owned) is gone
# or not reachable right now", matched by name along the class hierarchy (ActorDiedError is a
# RayActorError) so this module stays free of Ray imports. A retry reaches a live replica.
_REPLICA_LOST = frozenset(
    {
        "RayActorError",
        "WorkerCrashedError",
        "NodeDiedError",
        "ObjectLostError",
        "DeploymentUnavailableError",
        "ReplicaUnavailableError",
    }
)
# The caller is gone (Starlette's ClientDisconnect mid-upload; Ray's cancellations of a request
# whose HTTP client disconnected): nobody to answer, and not the service's error.
_CLIENT_GONE = frozenset({"ClientDisconnect", "TaskCancelledError", "RequestCancelledError", "CancelledError"})
# nginx's "client closed request": what metrics count such requests as.
CLIENT_CLOSED_REQUEST = 499


def result_filename(upload_name: str | None, now: datetime, *, ascii_only: bool = True) -> str:
    """``<stem>_nobg_<YYYYmmdd_HHMMSS>.png`` from the client's file name, reduced to safe characters.

    The client's name is untrusted: directories are dropped, anything but letters, digits and
    ``._-`` becomes ``_``, and an empty result becomes ``image``. ``ascii_only`` (the plain
    ``filename`` and the handle API) also folds accents and drops other scripts; without it,
    letters of any script stay (``写真.jpg`` → ``写真_nobg_…``), for the RFC 5987 ``filename*``.
    """
    name = (upload_name or "").replace("\\", "/").rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    if ascii_only:
        folded = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
        safe = _UNSAFE.sub("_", folded)
    else:
        safe = _UNSAFE_UNICODE.sub("_", unicodedata.normalize("NFC", stem))
    safe = safe.strip("._-")[:_MAX_STEM] or "image"
    return f"{safe}_nobg_{now.astimezone(timezone.utc):%Y%m%d_%H%M%S}.png"


def content_disposition(filename: str, unicode_filename: str | None = None) -> str:
    """``attachment; filename="<ASCII>"``, then the RFC 5987 ``filename*`` that browsers prefer,
    which can carry the name in its own script."""
    return f"attachment; filename=\"{filename}\"; filename*=UTF-8''{quote(unicode_filename or filename)}"


def processing_info(cutout: Cutout, processing_ms: float) -> ProcessingInfo:
    """The ``processing_info`` object of spec §4.2 for one result."""
    size = f"{cutout.image.width}x{cutout.image.height}"
    return ProcessingInfo(
        original_size=size,
        output_size=size,
        background_removed=True,
        edge_smoothing_applied=cutout.image.smoothing_applied,
        processing_time_ms=round(processing_ms, 1),
        model_version=cutout.model_name,
        tensorrt_enabled=cutout.tensorrt_enabled,
        subject_found=cutout.image.subject_found,
        foreground_refined=cutout.image.foreground_refined,
    )


def result_headers(
    cutout: Cutout, info: ProcessingInfo, filename: str | None, unicode_filename: str | None = None
) -> dict[str, str]:
    """Headers of a successful ``/remove`` (``filename`` only for the binary PNG)."""
    headers = {
        "X-Processing-Time-Ms": f"{info.processing_time_ms:.1f}",
        "X-Original-Size": info.original_size,
        "X-Model-Version": info.model_version,
        "X-Inference-Time-Ms": f"{cutout.inference_ms:.1f}",
        "X-Subject-Found": "true" if info.subject_found else "false",
    }
    if cutout.first_frame_only:
        headers["X-First-Frame-Only"] = "true"
    if filename is not None:
        headers["Content-Disposition"] = content_disposition(filename, unicode_filename)
    return headers


def base64_body(data_url: str, info: ProcessingInfo) -> dict[str, Any]:
    """The JSON body of ``return_base64=true`` (spec §3.2)."""
    return {"success": True, "processed_image": data_url, "processing_info": info.to_dict()}


def with_received_format(error: InvalidFormatError, content_type: str | None) -> InvalidFormatError:
    """Fill ``received_format`` from the part's declared media type when the sniffer had no name
    for the bytes (``UNKNOWN``) and the client declared more than ``application/octet-stream``."""
    if content_type in (None, "", "application/octet-stream") or error.fields.get("received_format") != "UNKNOWN":
        return error
    return InvalidFormatError(error.detail, **{**error.fields, "received_format": content_type})


def find_service_error(exc: BaseException) -> BackgroundRemovalError | None:
    """The ``BackgroundRemovalError`` a stage raised, looking through Ray's ``cause`` wrappers.

    Ray re-raises a replica's exception as a ``RayTaskError`` that also subclasses the original
    class but lacks its attributes, so the original is taken from ``cause`` when there is one.
    """
    current: BaseException | None = exc
    for _ in range(_MAX_CAUSE_DEPTH):
        if current is None:
            return None
        cause = getattr(current, "cause", None)
        if isinstance(cause, BaseException):
            current = cause
            continue
        if isinstance(current, BackgroundRemovalError) and hasattr(current, "fields"):
            return current
        return None
    return None


def _caused_by(exc: BaseException, class_names: frozenset[str]) -> bool:
    """Whether ``exc`` or one of its causes is an instance of a class named in ``class_names``.

    Looks through Ray's ``cause`` wrappers and Python's ``__cause__`` chain (Serve wraps an
    upstream actor's death in a ``RayServeException`` raised ``from`` it), and along each class
    hierarchy, by name, so that this module needs no Ray import.
    """
    current: BaseException | None = exc
    for _ in range(_MAX_CAUSE_DEPTH):
        if current is None:
            return False
        if any(kind.__name__ in class_names for kind in type(current).__mro__):
            return True
        current = getattr(current, "cause", None) or current.__cause__
    return False


def is_back_pressure(exc: BaseException) -> bool:
    """Whether Serve refused the request because a deployment's ``max_queued_requests`` is full."""
    return _caused_by(exc, _BACK_PRESSURE)


def is_replica_lost(exc: BaseException) -> bool:
    """Whether a stage's replica died or became unreachable while serving the request."""
    return _caused_by(exc, _REPLICA_LOST)


def is_client_gone(exc: BaseException) -> bool:
    """Whether the caller went away: an upload cut short, or the request cancelled (the proxy
    cancels a request whose HTTP client disconnected, and Serve cancels the stages it awaits)."""
    return _caused_by(exc, _CLIENT_GONE)


def to_service_error(exc: BaseException, *, retry_after_s: float = 2.0) -> BackgroundRemovalError:
    """Map anything the chain raised to the error the client sees.

    Known service errors pass through; Serve's back-pressure and a replica lost mid-request (killed,
    crashed, its node gone) become 503 SERVICE_OVERLOADED with ``Retry-After``, since a retry
    reaches a live or replacement replica; everything else becomes a generic 500 INFERENCE_ERROR
    and is logged with its traceback here (never sent).
    """
    found = find_service_error(exc)
    if found is not None:
        return found
    if is_back_pressure(exc):
        return ServiceOverloadedError("The service is at capacity; retry shortly", retry_after_seconds=retry_after_s)
    if is_replica_lost(exc):
        logger.warning("A replica was lost while removing a background: %r", exc)
        return ServiceOverloadedError(
            "A processing replica became unavailable; retry shortly", retry_after_seconds=retry_after_s
        )
    logger.error("Unexpected error while removing a background", exc_info=exc)
    return InferenceError()


def timeout_error(timeout_s: float, elapsed_s: float) -> ProcessingTimeoutError:
    """504 PROCESSING_TIMEOUT with the spec's fields."""
    return ProcessingTimeoutError(
        f"Processing timeout exceeded {timeout_s:g} seconds", elapsed_seconds=round(elapsed_s, 1)
    )


_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def routing_error(status: int, method: str, allow_header: str | None, api_root: str) -> BackgroundRemovalError:
    """The service's error for FastAPI's own 404 / 405 (``api_root``: route prefix + API prefix)."""
    if status == 405:
        # Starlette keeps a route's methods in a set: its Allow order changes with the hash seed.
        allowed = sorted({m.strip() for m in (allow_header or "").split(",") if m.strip()},
                         key=lambda m: (_METHOD_ORDER.index(m) if m in _METHOD_ORDER else len(_METHOD_ORDER), m))
        return MethodNotAllowedError(f"{method} is not allowed here; use {', '.join(allowed) or 'another method'}",
                                     allowed_methods=allowed)
    if status == 404:
        return EndpointNotFoundError(
            f"No such endpoint; the API is POST {api_root}/remove, GET {api_root}/health and {api_root}/ready")
    return InvalidRequestError() if status < 500 else InferenceError()


def error_parts(error: BackgroundRemovalError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """``(status, JSON body, headers)`` of an error response, with the spec's default fields."""
    body = error.to_body()
    for key, value in _DEFAULT_FIELDS.get(error.error_code, {}).items():
        body.setdefault(key, value)
    headers = error.headers()
    if isinstance(error, GpuMemoryExhaustedError) and "Retry-After" in headers:
        body.setdefault("retry_after", int(headers["Retry-After"]))
    return error.status_code, body, headers


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
