"""Ingress: the HTTP API of spec §3 under ``/api/background-removal``, and the Python handle API.

It owns HTTP: reading the form, the cheap checks (declared size, streamed size, magic bytes)
before anything crosses a Ray boundary, rate limiting, the processing deadline, and the one
mapping of results and errors to responses (:mod:`serve_app.responses`). The stages are chained by
passing each ``DeploymentResponse`` on un-awaited, so the image arrays travel replica to replica
through the object store and never through this process.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route signatures at runtime
# after Serve has rebound them, and string annotations would turn ``request`` into a query field.
import asyncio
import contextvars
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.datatypes import RemovalOptions
from pipelines.encode import to_data_url
from pipelines.errors import (
    BackgroundRemovalError,
    InvalidFormatError,
    InvalidRequestError,
)
from pipelines.validate import UploadLimits, check_upload
from serve_app import API_PREFIX
from serve_app.api_keys import ApiKeyRegistry, KeyMatch
from serve_app.args import IngressArgs
from serve_app.cors import ReplicaCORS
from serve_app.form import (
    RemovalForm,
    RemovalFormReader,
    check_declared_length,
    check_handle_arguments,
    parse_content_length,
)
from serve_app.health import (
    API_VERSION,
    SERVICE_NAME,
    Answer,
    RecentAnswer,
    assess_health,
    assess_readiness,
    running_replicas,
)
from serve_app.logs import configure_replica_logging
from serve_app.metrics import RequestMetrics, StageMetrics
from serve_app.rate_limit import RateDecision, rate_limit_error, rate_limit_headers
from serve_app.records import Cutout, ProcessingInfo, RemovalResult, RequestSample
from serve_app.responses import (
    CLIENT_CLOSED_REQUEST,
    base64_body,
    error_parts,
    is_client_gone,
    processing_info,
    result_filename,
    result_headers,
    routing_error,
    timeout_error,
    to_service_error,
    utc_now,
    with_received_format,
)

logger = logging.getLogger("ray.serve")

_T = TypeVar("_T")

# Probes answer within a few seconds even while Telemetry or the controller is busy starting.
_PROBE_TIMEOUT_S = 2.0
# Admission normally takes milliseconds (up to 0.25 s for a client at its concurrency cap).
_ADMIT_TIMEOUT_S = 1.0
_READY_TTL_S = 1.0  # load balancers probe often; one assessment a second per replica serves them all


class Base64ResultModel(BaseModel):
    success: bool
    processed_image: str
    processing_info: ProcessingInfo  # the dataclass itself: one definition for the API and the schema


class ErrorModel(BaseModel):
    detail: str
    error_code: str


_REMOVE_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {
                            "type": "string",
                            "format": "binary",
                            "description": "JPEG, PNG, WebP or BMP, at most 10 MB",
                        },
                        "smoothing": {
                            "type": "boolean",
                            "default": True,
                            "description": "Gaussian blur on the alpha edges",
                        },
                        "refine_foreground": {
                            "type": "boolean",
                            "default": True,
                            "description": "remove the background's colour from semi-transparent edge pixels",
                        },
                        "return_base64": {
                            "type": "boolean",
                            "default": False,
                            "description": "JSON with a data URL instead of the PNG",
                        },
                    },
                }
            }
        },
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorModel, "description": text}
    for status, text in {
        400: "INVALID_REQUEST, INVALID_FORMAT, CORRUPT_IMAGE, IMAGE_TOO_SMALL, IMAGE_TOO_LARGE, IMAGE_BOMB",
        401: "UNAUTHORIZED (only when the deployment requires API keys: X-API-Key)",
        413: "FILE_TOO_LARGE",
        429: "RATE_LIMIT_EXCEEDED (Retry-After, X-RateLimit-* headers)",
        500: "INFERENCE_ERROR",
        503: "GPU_MEMORY_EXHAUSTED, SERVICE_OVERLOADED (queue full or a replica lost), MODEL_NOT_READY (Retry-After)",
        504: "PROCESSING_TIMEOUT",
    }.items()
}

api = FastAPI(
    title=SERVICE_NAME,
    version=API_VERSION,
    description="Removes the background of an image with BiRefNet and returns an RGBA PNG.",
    # /remove/ answers the JSON 404 that lists the endpoints, not a 307 with an empty body and an
    # absolute Location built from the Host the proxy saw.
    redirect_slashes=False,
)


api.add_middleware(ReplicaCORS)


@api.exception_handler(StarletteHTTPException)
async def _routing_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """FastAPI's own 404 / 405 answers, in the service's error shape."""
    api_root = f"{request.scope.get('root_path', '')}{API_PREFIX}"  # root_path: the app's route prefix
    error = routing_error(exc.status_code, request.method, (exc.headers or {}).get("Allow"), api_root)
    status, body, headers = error_parts(error)
    return JSONResponse(body, status_code=status, headers=headers)


@api.exception_handler(RequestValidationError)
async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    logger.info("Request validation failed: %s", exc.errors())
    status, body, headers = error_parts(InvalidRequestError("Invalid request"))
    return JSONResponse(body, status_code=status, headers=headers)


# Everything the Ingress methods use is defined above the class: ``@serve.deployment`` pickles the
# ``serve.ingress`` wrapper by value when it runs, so names bound later were missing in the replica.
class _RateLimited(Exception):
    """Internal: carries a refused decision to the error response (never leaves the ingress)."""

    def __init__(self, decision: RateDecision):
        super().__init__(decision)
        self.decision = decision


async def _resolve(response: Any) -> Any:
    return await response


def _detached(fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)`` in an empty context, outside the current request's. Serve cancels the handle
    calls a request made, still pending, when the request is cancelled (Replica's
    ``_cancel_child_requests``); a lease's release must survive exactly that, a client that left."""
    return contextvars.Context().run(fn, *args)


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


@serve.deployment(max_ongoing_requests=32, ray_actor_options={"num_cpus": 0.25})
@serve.ingress(api)
class Ingress:
    """Args: the stage handles; rate_limiter: None when rate limiting is off; limits: upload
    limits; settings: timeout and Retry-After; api_keys: the key registry (authentication and the
    rate limiter's tiers)."""

    def __init__(
        self,
        preprocess: DeploymentHandle,
        inference: DeploymentHandle,
        postprocess: DeploymentHandle,
        telemetry: DeploymentHandle,
        rate_limiter: DeploymentHandle | None,
        limits: UploadLimits,
        settings: IngressArgs,
        api_keys: ApiKeyRegistry,
    ) -> None:
        configure_replica_logging()
        self._preprocess = preprocess
        self._inference = inference
        self._postprocess = postprocess
        self._telemetry = telemetry
        self._rate_limiter = rate_limiter
        self._limits = limits
        self._settings = settings
        self._api_keys = api_keys
        ReplicaCORS.allow_origins = settings.cors_allow_origins  # read when the app starts, just after
        self._app_name = serve.get_replica_context().app_name
        self._requests = RequestMetrics()
        self._latency = StageMetrics("ingress")
        self._readiness = RecentAnswer(self._assess_readiness, ttl_s=_READY_TTL_S)
        self._leases: set[str] = set()  # open concurrency leases of requests here
        self._renew_every_s = 0.0  # a third of their time to live
        self._renewer: asyncio.Task[None] | None = None

    # -- HTTP ---------------------------------------------------------------------------------

    @api.post(
        f"{API_PREFIX}/remove",
        openapi_extra=_REMOVE_FORM,
        response_class=Response,
        responses={
            200: {
                "content": {"image/png": {}, "application/json": {"schema": Base64ResultModel.model_json_schema()}},
                "description": "The RGBA PNG (binary), or JSON with a data URL when return_base64=true",
            },
            **_ERRORS,
        },
    )
    async def remove(self, request: Request) -> Response:
        """Remove the background of the uploaded ``image`` (spec §3.2)."""
        started = time.perf_counter()
        decision: RateDecision | None = None
        error_code: str | None = None
        try:
            key = self._api_keys.authenticate(request.headers.get("x-api-key"))
            length = parse_content_length(request.headers.get("content-length"))
            check_declared_length(length, self._limits.max_file_bytes)
            decision = await self._admit(request, key)
            form = await self._read_form(request, length)
            # The processing deadline starts once the upload is in: a slow uplink is the proxy's
            # request_timeout_s to judge, not the spec's 504 (X-Processing-Time-Ms still counts it).
            cutout = await self._process(form.image.data, form.image.content_type, form.options, time.perf_counter())
            response = self._result_response(form, cutout, started)
        except asyncio.CancelledError:
            self._finish("remove", CLIENT_CLOSED_REQUEST, started, None)
            raise
        except Exception as exc:
            if is_client_gone(exc):
                self._finish("remove", CLIENT_CLOSED_REQUEST, started, None)
                return Response(status_code=CLIENT_CLOSED_REQUEST)
            response, error_code = self._error_response(exc)
        finally:  # however the request ends, its concurrency slot is free again
            self._release(decision.lease if decision else None)
        if decision is not None:
            response.headers.update(rate_limit_headers(decision))
        self._finish("remove", response.status_code, started, error_code)
        return response

    @api.api_route(f"{API_PREFIX}/health", methods=["GET", "HEAD"])  # HEAD: load balancers' probes
    async def health(self) -> JSONResponse:
        """Model, device and latency of the whole service (spec §3.1); 503 when no model is loaded."""
        try:
            reports, latency = await asyncio.wait_for(self._telemetry.snapshot.remote(), _PROBE_TIMEOUT_S)
            answer = assess_health(reports, latency)
        except Exception:
            logger.warning("Telemetry unavailable for /health", exc_info=True)
            answer = Answer(
                503,
                {
                    "status": "unhealthy",
                    "error": "Telemetry unavailable",
                    "detail": "The service could not collect its model state",
                },
            )
        return JSONResponse(answer.body, status_code=answer.status_code)

    @api.api_route(f"{API_PREFIX}/ready", methods=["GET", "HEAD"])
    async def ready(self) -> JSONResponse:
        """200 while the app can serve (a running replica per stage, an Inference replica loaded);
        503 otherwise. Assessed at most once a second per Ingress replica."""
        answer = await self._readiness.get()
        headers = {"Retry-After": "5"} if answer.status_code != 200 else {}
        return JSONResponse(answer.body, status_code=answer.status_code, headers=headers)

    async def _assess_readiness(self) -> Answer:
        try:
            running = await asyncio.wait_for(asyncio.to_thread(self._running_replicas), _PROBE_TIMEOUT_S)
            reports, _ = await asyncio.wait_for(self._telemetry.snapshot.remote(), _PROBE_TIMEOUT_S)
            return assess_readiness(reports, running)
        except Exception:
            logger.warning("Could not assess readiness", exc_info=True)
            return assess_readiness([], {"Telemetry": 0})

    # -- Python handle API --------------------------------------------------------------------

    async def remove_background(
        self, image: bytes, smoothing: bool = True, filename: str | None = None, refine_foreground: bool = True
    ) -> RemovalResult:
        """Remove the background of ``image`` for a caller holding a DeploymentHandle.

        Args:
            image: the encoded upload (JPEG, PNG, WebP or BMP, within the upload limits).
            smoothing: blur the alpha edges (the HTTP API's default).
            filename: the source file name, used only to suggest ``RemovalResult.filename``.
            refine_foreground: remove the background's colour from semi-transparent edge pixels
                (the HTTP API's default).

        Returns:
            The PNG and its processing info. Rate limits do not apply to handle callers.

        Raises:
            pipelines.errors.BackgroundRemovalError: the same errors, with the same ``error_code``
                and fields, as the HTTP API (unexpected failures as a generic InferenceError).
        """
        started = time.perf_counter()
        status, error_code = 200, None
        try:
            check_handle_arguments(image, filename, smoothing=smoothing, refine_foreground=refine_foreground)
            options = RemovalOptions(smoothing=smoothing, refine_foreground=refine_foreground)
            cutout = await self._process(bytes(image), None, options, started)
        except asyncio.CancelledError:
            status = CLIENT_CLOSED_REQUEST
            raise
        except Exception as exc:
            error = to_service_error(exc, retry_after_s=self._settings.overloaded_retry_after_s)
            status, error_code = error.status_code, error.error_code
            raise error from None
        finally:
            self._finish("handle", status, started, error_code)
        info = processing_info(cutout, _elapsed_ms(started))
        return RemovalResult(
            png=cutout.image.data,
            filename=result_filename(filename, utc_now()),
            processing_info=info,
            first_frame_only=cutout.first_frame_only,
        )

    # -- the chain ----------------------------------------------------------------------------

    async def _process(self, data: bytes, content_type: str | None, options: RemovalOptions, started: float) -> Cutout:
        try:
            check_upload(data, self._limits)
        except InvalidFormatError as exc:
            raise with_received_format(exc, content_type) from None
        prepared = self._preprocess.prepare.remote(data)
        segmentation = self._inference.segment.remote(prepared)
        cutout = self._postprocess.compose.remote(prepared, segmentation, options)
        remaining = self._settings.timeout_s - (time.perf_counter() - started)
        try:
            result: Cutout = await asyncio.wait_for(_resolve(cutout), max(remaining, 0.0))
        except asyncio.TimeoutError:
            for response in (cutout, segmentation, prepared):
                response.cancel()
            raise timeout_error(self._settings.timeout_s, time.perf_counter() - started) from None
        return result

    async def _admit(self, request: Request, key: KeyMatch | None) -> RateDecision | None:
        if self._rate_limiter is None:
            return None
        address = request.client.host if request.client else "unknown"
        # The lease is named here, so that it can be released without the answer: when this
        # request is cancelled (its client left within milliseconds) or stops waiting, the release
        # ends a lease already granted or withdraws one not granted yet, whichever came first.
        lease = uuid.uuid4().hex
        call = self._rate_limiter.acquire.remote(key, address, lease)
        try:
            decision: RateDecision = await asyncio.wait_for(_resolve(call), _ADMIT_TIMEOUT_S)
        except asyncio.CancelledError:
            self._release(lease)
            raise
        except Exception:  # fail open: a lost or stuck limiter must not take the service down
            call.cancel()  # a limiter that comes back must not work through calls nobody awaits
            self._release(lease)
            logger.warning("RateLimiter unavailable; admitting the request", exc_info=True)
            return None
        if not decision.allowed:
            raise _RateLimited(decision)
        if decision.lease is not None and decision.lease_ttl_s is not None:
            self._leases.add(decision.lease)
            self._renew_every_s = decision.lease_ttl_s / 3
            if self._renewer is None or self._renewer.done():
                self._renewer = _detached(asyncio.ensure_future, self._renew_leases())
        return decision

    def _release(self, lease: str | None) -> None:
        """End a concurrency lease, fire and forget (the limiter gives a request at the cap a
        moment for it to land). A lease never released expires (``open_request_ttl_s``)."""
        if lease is None or self._rate_limiter is None:
            return
        self._leases.discard(lease)
        try:
            _detached(self._rate_limiter.release.remote, lease)
        except Exception:
            logger.warning("Could not release a rate-limit lease", exc_info=True)

    async def _renew_leases(self) -> None:
        """Every third of the leases' time to live, tell the limiter which are still open here;
        ends when none are (the next lease starts it again)."""
        while self._leases and self._rate_limiter is not None:
            await asyncio.sleep(self._renew_every_s)
            if not self._leases:
                return
            try:
                renewal = self._rate_limiter.renew.remote(list(self._leases))
                await asyncio.wait_for(_resolve(renewal), self._renew_every_s)
            except Exception:  # a limiter that restarted knows none of them: they stop counting
                logger.warning("Could not renew rate-limit leases", exc_info=True)

    async def _read_form(self, request: Request, length: int | None) -> RemovalForm:
        reader = RemovalFormReader(
            request.headers.get("content-type"),
            max_file_bytes=self._limits.max_file_bytes,
            declared_length=length,
        )
        async for chunk in request.stream():
            reader.feed(chunk)
        return reader.finish()

    # -- responses ----------------------------------------------------------------------------

    def _result_response(self, form: RemovalForm, cutout: Cutout, started: float) -> Response:
        info = processing_info(cutout, _elapsed_ms(started))
        if form.return_base64:
            return JSONResponse(
                base64_body(to_data_url(cutout.image.data), info), headers=result_headers(cutout, info, None)
            )
        now = utc_now()
        filename = result_filename(form.image.filename, now)
        unicode_filename = result_filename(form.image.filename, now, ascii_only=False)
        return Response(
            content=cutout.image.data,
            media_type=cutout.image.media_type,
            headers=result_headers(cutout, info, filename, unicode_filename),
        )

    def _error_response(self, exc: Exception) -> tuple[Response, str]:
        if isinstance(exc, _RateLimited):
            error: BackgroundRemovalError = rate_limit_error(exc.decision)
            extra = rate_limit_headers(exc.decision)
        else:
            error = to_service_error(exc, retry_after_s=self._settings.overloaded_retry_after_s)
            extra = {}
        status, body, headers = error_parts(error)
        return JSONResponse(body, status_code=status, headers={**headers, **extra}), error.error_code

    def _finish(self, endpoint: str, status: int, started: float, error_code: str | None) -> None:
        elapsed_ms = _elapsed_ms(started)
        self._latency.observe_ms(elapsed_ms)
        self._requests.count(endpoint, status, error_code)
        if status in (429, CLIENT_CLOSED_REQUEST):
            return  # refused before any work, or nobody to answer: not the service's latency or load
        sample = RequestSample(finished_at=time.time(), latency_ms=elapsed_ms, succeeded=status == 200)
        self._telemetry.record_request.remote(sample)  # fire and forget

    def _running_replicas(self) -> Mapping[str, int]:
        return running_replicas(serve.status(), self._app_name)
