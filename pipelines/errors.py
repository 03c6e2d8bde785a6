"""The service's error hierarchy: one class per failure the API can report.

Every error carries its HTTP status, the spec's ``error_code`` and the extra JSON fields of its
response body. They pass all their constructor arguments to ``Exception.__init__`` so that they
survive pickling across Ray replicas unchanged.

::

    BackgroundRemovalError                 (500 INFERENCE_ERROR, base)
    ├── InvalidRequestError                (400 INVALID_REQUEST: form field missing/duplicated/bad)
    ├── InvalidFormatError                 (400 INVALID_FORMAT)
    ├── CorruptImageError                  (400 CORRUPT_IMAGE: truncated or undecodable data)
    ├── ImageTooSmallError                 (400 IMAGE_TOO_SMALL)
    ├── ImageTooLargeError                 (400 IMAGE_TOO_LARGE: dimensions or megapixels)
    ├── ImageBombError                     (400 IMAGE_BOMB)
    ├── UnauthorizedError                  (401 UNAUTHORIZED)
    ├── EndpointNotFoundError              (404 NOT_FOUND: no route at that path)
    ├── MethodNotAllowedError              (405 METHOD_NOT_ALLOWED: Allow header)
    ├── FileTooLargeError                  (413 FILE_TOO_LARGE)
    ├── RateLimitExceededError             (429 RATE_LIMIT_EXCEEDED)
    ├── ServiceOverloadedError             (503 SERVICE_OVERLOADED: queue full)
    ├── ModelNotReadyError                 (503 MODEL_NOT_READY)
    ├── GpuMemoryExhaustedError            (503 GPU_MEMORY_EXHAUSTED)
    ├── ProcessingTimeoutError             (504 PROCESSING_TIMEOUT)
    └── InferenceError                     (500 INFERENCE_ERROR)

Messages never carry internal paths or stack traces; those go to the logs only.
"""

from __future__ import annotations

from typing import Any, ClassVar

SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP")


class BackgroundRemovalError(Exception):
    """Base class: an error with an HTTP status, an ``error_code`` and extra response fields."""

    status_code: ClassVar[int] = 500
    error_code: ClassVar[str] = "INFERENCE_ERROR"
    default_detail: ClassVar[str] = "Model inference failed"
    retry_after_seconds: float | None = None

    def __init__(self, detail: str | None = None, **fields: Any) -> None:
        super().__init__(detail, fields)
        self.detail = detail if detail is not None else self.default_detail
        self.fields = fields

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (type(self), self.detail, self.fields))

    def __str__(self) -> str:
        return self.detail

    def to_body(self) -> dict[str, Any]:
        """The JSON body of the error response: ``detail``, ``error_code``, then the extra fields."""
        return {"detail": self.detail, "error_code": self.error_code, **self.fields}

    def headers(self) -> dict[str, str]:
        """Extra response headers (``Retry-After`` for the retryable errors)."""
        retry = self.fields.get("retry_after_seconds", self.retry_after_seconds)
        if retry is None:
            return {}
        return {"Retry-After": str(max(1, int(round(float(retry)))))}


def _rebuild_error(cls: type[BackgroundRemovalError], detail: str, fields: dict[str, Any]) -> BackgroundRemovalError:
    return cls(detail, **fields)


class InvalidRequestError(BackgroundRemovalError):
    status_code = 400
    error_code = "INVALID_REQUEST"
    default_detail = "Invalid request"


class InvalidFormatError(BackgroundRemovalError):
    status_code = 400
    error_code = "INVALID_FORMAT"
    default_detail = "Unsupported file format. Please upload JPEG, PNG, WebP or BMP."

    def __init__(self, detail: str | None = None, *, received_format: str = "UNKNOWN", **fields: Any) -> None:
        fields.setdefault("supported_formats", list(SUPPORTED_FORMATS))
        super().__init__(detail, received_format=received_format, **fields)


class CorruptImageError(BackgroundRemovalError):
    status_code = 400
    error_code = "CORRUPT_IMAGE"
    default_detail = "The image data is truncated or corrupt and cannot be decoded"


class ImageTooSmallError(BackgroundRemovalError):
    status_code = 400
    error_code = "IMAGE_TOO_SMALL"
    default_detail = "Image is smaller than the minimum of 64x64 pixels"


class ImageTooLargeError(BackgroundRemovalError):
    status_code = 400
    error_code = "IMAGE_TOO_LARGE"
    default_detail = "Image dimensions exceed the maximum of 7680x4320 (8K) or 50 megapixels"


class ImageBombError(BackgroundRemovalError):
    status_code = 400
    error_code = "IMAGE_BOMB"
    default_detail = "Image bomb detected: decompression ratio exceeds 1000x"


class UnauthorizedError(BackgroundRemovalError):
    status_code = 401
    error_code = "UNAUTHORIZED"
    default_detail = "A valid API key is required (X-API-Key header)"


class EndpointNotFoundError(BackgroundRemovalError):
    status_code = 404
    error_code = "NOT_FOUND"
    default_detail = "No such endpoint"


class MethodNotAllowedError(BackgroundRemovalError):
    """Fields: ``allowed_methods``, also sent as the ``Allow`` header."""

    status_code = 405
    error_code = "METHOD_NOT_ALLOWED"
    default_detail = "Method not allowed"

    def headers(self) -> dict[str, str]:
        allowed = self.fields.get("allowed_methods")
        return {**super().headers(), **({"Allow": ", ".join(allowed)} if allowed else {})}


class FileTooLargeError(BackgroundRemovalError):
    status_code = 413
    error_code = "FILE_TOO_LARGE"
    default_detail = "File size exceeds 10MB limit"


class RateLimitExceededError(BackgroundRemovalError):
    status_code = 429
    error_code = "RATE_LIMIT_EXCEEDED"
    default_detail = "Rate limit exceeded"


class ServiceOverloadedError(BackgroundRemovalError):
    status_code = 503
    error_code = "SERVICE_OVERLOADED"
    default_detail = "The service is at capacity; retry shortly"
    retry_after_seconds = 1.0


class ModelNotReadyError(BackgroundRemovalError):
    status_code = 503
    error_code = "MODEL_NOT_READY"
    default_detail = "The model is still loading; retry shortly"
    retry_after_seconds = 5.0


class GpuMemoryExhaustedError(BackgroundRemovalError):
    status_code = 503
    error_code = "GPU_MEMORY_EXHAUSTED"
    default_detail = "Insufficient GPU memory to process request"
    retry_after_seconds = 30.0


class ProcessingTimeoutError(BackgroundRemovalError):
    status_code = 504
    error_code = "PROCESSING_TIMEOUT"
    default_detail = "Processing timeout exceeded"


class InferenceError(BackgroundRemovalError):
    status_code = 500
    error_code = "INFERENCE_ERROR"
    default_detail = "Model inference failed"
