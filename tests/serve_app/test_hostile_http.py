"""The hostile-input corpus (``tests/hostile.py``) over real HTTP, against the session's service.

Every case must get exactly its documented status and ``error_code`` (never a 500, never a
dropped connection), accepted ones a valid RGBA PNG of the right size, and the service must keep
serving afterwards. The decoder's own property test is ``tests/pipelines/test_decode_fuzz.py``.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from PIL import Image

from tests import hostile, imagegen
from tests.serve_app.conftest import PREFIX, Service

pytestmark = pytest.mark.serve

# A few at a time: enough to overlap the cheap refusals with the slow accepted images, few enough
# not to meet the back-pressure limits, which are tested elsewhere.
_CONCURRENCY = 4


def send(base: str, case: hostile.HostileCase) -> requests.Response:
    return requests.post(
        f"{base}{PREFIX}/remove", data=case.body, headers={"Content-Type": case.content_type}, timeout=120
    )


def mismatch(case: hostile.HostileCase, response: requests.Response) -> str | None:
    """What is wrong with ``response`` for ``case``, or None."""
    if response.status_code != case.status:
        return f"status {response.status_code} (want {case.status}): {response.text[:200]}"
    if case.status == 200:
        if response.headers.get("content-type") != "image/png":
            return f"content type {response.headers.get('content-type')}"
        with Image.open(io.BytesIO(response.content)) as image:
            if image.format != "PNG" or image.mode != "RGBA" or image.size != case.output_size:
                return f"{image.format} {image.mode} {image.size} (want PNG RGBA {case.output_size})"
        return None
    body = response.json()
    if body.get("error_code") != case.error_code or not body.get("detail"):
        return f"body {body} (want error_code {case.error_code})"
    wrong = {key: body.get(key) for key, value in case.fields.items() if body.get(key) != value}
    return f"fields {wrong} (want {case.fields})" if wrong else None


def test_every_hostile_input_gets_its_documented_answer(service: Service) -> None:
    cases = hostile.corpus()
    assert len(cases) >= 40
    with ThreadPoolExecutor(max_workers=_CONCURRENCY) as pool:
        responses = list(pool.map(lambda case: send(service.base, case), cases))
    problems = {case.name: mismatch(case, response) for case, response in zip(cases, responses, strict=True)}
    assert {name: problem for name, problem in problems.items() if problem} == {}
    assert all(response.status_code < 500 for response in responses)


def test_service_keeps_serving_after_the_corpus(service: Service) -> None:
    for case in hostile.corpus()[:12]:  # bombs and corrupt files again, then a normal request
        send(service.base, case)
    photo = imagegen.photo_like_rgb(200, 150, seed=21)
    response = service.remove(imagegen.jpeg_bytes(photo))
    assert response.status_code == 200, response.text
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.mode == "RGBA" and image.size == (200, 150)
        assert np.asarray(image)[..., 3].dtype == np.uint8
