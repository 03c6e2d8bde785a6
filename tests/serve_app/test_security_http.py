"""Security over real HTTP, against the session's service (``conftest.py``).

API keys on the ``secured`` app (one key from its key file, one from the environment variable),
the 413 that arrives before the body is sent, generic 500 bodies, and no temporary files.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import requests

from tests import hostile, imagegen
from tests.serve_app.conftest import CORS_ORIGIN, ENV_KEY, FILE_KEY, PREFIX, Service, flat_jpeg, poll

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def photo() -> bytes:
    return imagegen.jpeg_bytes(imagegen.photo_like_rgb(160, 120, seed=4))


# -- API keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}], ids=["none", "wrong", "empty"])
def test_secured_app_refuses_requests_without_a_valid_key(service: Service, photo: bytes, headers: dict) -> None:
    response = service.remove(photo, base=service.secured, headers=headers)
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error_code"] == "UNAUTHORIZED" and body["detail"]
    assert set(body) == {"detail", "error_code"}


@pytest.mark.parametrize("key", [FILE_KEY, ENV_KEY], ids=["key-file", "env-var"])
def test_secured_app_serves_listed_keys(service: Service, photo: bytes, key: str) -> None:
    response = service.remove(photo, base=service.secured, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"


def test_unauthenticated_uploads_are_refused_before_the_size_check(service: Service) -> None:
    big = b"\xff\xd8\xff" + bytes(11 * 1024 * 1024)
    assert service.remove(big, base=service.secured).status_code == 401


def test_probes_need_no_key(service: Service) -> None:
    assert requests.get(f"{service.secured}{PREFIX}/ready", timeout=10).status_code == 200
    assert requests.get(f"{service.secured}{PREFIX}/health", timeout=10).status_code in {200, 503}


def test_keys_are_off_on_the_local_app(service: Service, photo: bytes) -> None:
    assert service.remove(photo).status_code == 200


# -- browsers on other origins ----------------------------------------------------------------------


def test_a_listed_origin_passes_the_preflight_and_reads_the_headers(service: Service, photo: bytes) -> None:
    url = f"{service.secured}{PREFIX}/remove"
    preflight = requests.options(url, timeout=10, headers={
        "Origin": CORS_ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"})
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["Access-Control-Allow-Origin"] == CORS_ORIGIN
    assert "x-api-key" in preflight.headers["Access-Control-Allow-Headers"].lower()
    response = service.remove(photo, base=service.secured, headers={"X-API-Key": FILE_KEY, "Origin": CORS_ORIGIN})
    assert response.status_code == 200 and response.headers["Access-Control-Allow-Origin"] == CORS_ORIGIN
    exposed = {h.strip().lower() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"x-processing-time-ms", "x-original-size", "x-subject-found", "content-disposition"} <= exposed
    refused = service.remove(photo, base=service.secured, headers={"Origin": CORS_ORIGIN})
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == CORS_ORIGIN


def test_other_origins_get_no_cors_headers(service: Service, photo: bytes) -> None:
    elsewhere = service.remove(photo, base=service.secured, headers={"X-API-Key": FILE_KEY, "Origin": "https://evil.example"})
    assert elsewhere.status_code == 200 and "Access-Control-Allow-Origin" not in elsewhere.headers
    local = service.remove(photo, headers={"Origin": CORS_ORIGIN})  # the main app lists no origin
    assert local.status_code == 200 and "Access-Control-Allow-Origin" not in local.headers


# -- limits and error bodies ------------------------------------------------------------------------


def test_declared_oversized_body_is_refused_without_reading_it(service: Service) -> None:
    """Declare 50 MB, send only the headers, and read: the 413 must come back while the body
    has not been sent (a server that waited for it would time out here)."""
    host, _ = service.address
    head = (
        f"POST {PREFIX}/remove HTTP/1.1\r\nHost: {host}\r\nContent-Length: {50 * 1024 * 1024}\r\n"
        f"Content-Type: {hostile.FORM_TYPE}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(service.address, timeout=15) as sock:
        sock.sendall(head + b"--" + hostile.BOUNDARY.encode())
        received = b""
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line.split()[1] == b"413", received[:300]
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error_code"] == "FILE_TOO_LARGE" and body["file_size_mb"] == 50.0


def test_a_500_carries_no_internals(service: Service) -> None:
    poll(
        lambda: service.remove(flat_jpeg((128, 128, 128)), base=service.faulty).status_code == 200,
        30,
        "faulty app idle",
    )
    response = service.remove(flat_jpeg((0, 255, 0)), base=service.faulty)  # the fake raises a "CUDA" error
    assert response.status_code == 500
    assert response.json() == {"detail": "Model inference failed", "error_code": "INFERENCE_ERROR"}
    for leak in ("Traceback", "File ", "/opt", ".py", "CUDA", "kernel", "ray"):
        assert leak not in response.text


# -- temporary files ------------------------------------------------------------------------------------


def _replica_pids(app: str) -> list[int]:
    # The GCS actor table: the session cluster runs without the dashboard that ray.util.state needs.
    from ray._private.state import actors

    return [
        int(actor["Pid"])
        for actor in actors().values()
        if actor["State"] == "ALIVE" and actor["ActorClassName"].startswith(f"ServeReplica:{app}:")
    ]


def _files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def test_no_temporary_files_are_left_behind(service: Service, photo: bytes) -> None:
    pids = _replica_pids("birefnet")
    assert pids, "no replicas of the main app found"
    for pid in pids:  # the replicas' tempfile module writes under the watched folder
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert f"TMPDIR={service.scratch}".encode() in environ
    before = _files_under(service.scratch)
    large = imagegen.jpeg_bytes(imagegen.photo_like_rgb(2000, 1500, seed=8), quality=85)
    uploads = [photo, large, imagegen.bomb_png(), b"\xff\xd8\xff" + bytes(11 * 1024 * 1024), b"not an image"]
    statuses = [service.remove(data).status_code for data in uploads]
    statuses.append(service.remove(photo, return_base64="true").status_code)
    assert statuses == [200, 200, 400, 413, 400, 200]
    assert _files_under(service.scratch) == before == []
    assert np.all(np.asarray(statuses) < 500)
