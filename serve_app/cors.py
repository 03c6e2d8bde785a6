"""Cross-origin access for browser pages on other origins (off unless ``ingress.cors_allow_origins`` lists some).

A page served from ``https://app.example.com`` that calls the API on another origin needs CORS:
without ``Access-Control-Allow-Origin`` the browser hides the answer, without
``Access-Control-Expose-Headers`` it hides ``X-Processing-Time-Ms`` and the other headers of spec
§3.2, and a request carrying ``X-API-Key`` is preceded by an ``OPTIONS`` preflight. Starlette's
``CORSMiddleware`` does all of that; this wrapper only picks its origins per replica.

Why a class attribute: ``@serve.ingress`` freezes a copy of the FastAPI app when the module is
imported, before any config is known, and the replica builds that copy's middleware stack on its
first ASGI call (lifespan startup), after the deployment's constructor ran. The constructor stores
its origins on :class:`ReplicaCORS` (one ingress per replica process); the middleware reads them
when it is built.
"""

from __future__ import annotations

from typing import ClassVar

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

# Every response header of spec §3.2 and §3.3 a script may want to read.
EXPOSED_HEADERS = (
    "Content-Disposition",
    "Retry-After",
    "X-First-Frame-Only",
    "X-Inference-Time-Ms",
    "X-Model-Version",
    "X-Original-Size",
    "X-Processing-Time-Ms",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-Request-ID",
    "X-Subject-Found",
)
# Request headers beyond the CORS-safelisted ones (Content-Type, Accept, …) that clients send.
ALLOWED_HEADERS = ("X-API-Key", "X-Request-ID")
PREFLIGHT_MAX_AGE_S = 600


class ReplicaCORS:
    """ASGI middleware: CORS for :attr:`allow_origins`, or a pass-through when there are none."""

    allow_origins: ClassVar[tuple[str, ...]] = ()

    def __init__(self, app: ASGIApp) -> None:
        origins = type(self).allow_origins
        self.app: ASGIApp = app
        if origins:
            self.app = CORSMiddleware(
                app,
                allow_origins=list(origins),
                allow_methods=["GET", "POST"],
                allow_headers=list(ALLOWED_HEADERS),
                expose_headers=list(EXPOSED_HEADERS),
                max_age=PREFLIGHT_MAX_AGE_S,
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
