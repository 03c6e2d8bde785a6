"""ReplicaCORS on its own: a pass-through without origins, Starlette's CORS with them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from serve_app.cors import ReplicaCORS

ORIGIN = "http://localhost:3000"


async def _endpoint(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-processing-time-ms", b"12.5")]})
    await send({"type": "http.response.body", "body": b"png"})


def call(app: Any, method: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """One request through ``app``: its status and response headers (lower-case names)."""
    scope = {
        "type": "http", "method": method, "path": "/api/background-removal/remove", "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}


@pytest.fixture
def origins() -> Iterator[None]:
    ReplicaCORS.allow_origins = (ORIGIN,)
    yield
    ReplicaCORS.allow_origins = ()


def test_without_origins_no_cors_header_is_added() -> None:
    status, headers = call(ReplicaCORS(_endpoint), "POST", {"Origin": ORIGIN})
    assert status == 200 and "access-control-allow-origin" not in headers


@pytest.mark.usefixtures("origins")
def test_a_listed_origin_may_read_the_answer_and_its_headers() -> None:
    status, headers = call(ReplicaCORS(_endpoint), "POST", {"Origin": ORIGIN})
    assert status == 200 and headers["access-control-allow-origin"] == ORIGIN
    assert "X-Processing-Time-Ms" in headers["access-control-expose-headers"].split(", ")


@pytest.mark.usefixtures("origins")
def test_preflight_for_an_api_key_request() -> None:
    request = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"}
    status, headers = call(ReplicaCORS(_endpoint), "OPTIONS", request)
    assert status == 200 and headers["access-control-allow-origin"] == ORIGIN
    assert "x-api-key" in headers["access-control-allow-headers"].lower()


@pytest.mark.usefixtures("origins")
def test_an_unlisted_origin_is_not_allowed() -> None:
    status, headers = call(ReplicaCORS(_endpoint), "POST", {"Origin": "https://evil.example"})
    assert status == 200 and "access-control-allow-origin" not in headers
    request = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    assert call(ReplicaCORS(_endpoint), "OPTIONS", request)[0] == 400
