"""Judge the service's mattes against ground truth, through its public HTTP API.

    python scripts/eval_quality.py --url http://127.0.0.1:55433
    python scripts/eval_quality.py --url http://gpu-box:55433 --dataset /data/DIS5K/DIS-VD --api-key "$KEY"

Without ``--dataset`` it sends ``--count`` (50) held-out generated scenes (seeds never used in
training; varied sizes, aspect ratios, formats and EXIF orientations, a few with no subject). With
``--dataset DIR`` it reads image/mask pairs matched by file stem from ``DIR/im`` + ``DIR/gt`` (DIS5K
layout) or ``DIR/images`` + ``DIR/masks``. ``--api-key`` (default: ``$BIREFNET_API_KEY``) is sent as
``X-API-Key``. A 429 or 503 with ``Retry-After`` is retried after that many seconds, at most
``--max-tries`` times per image. An image that still fails is reported on stderr and left out of the
means. Prints per-image scores with ``--verbose`` and, as its last line,
``images=N iou=<mean> f=<mean> mae=<mean> boundary_f=<mean>``.

Exit status: 0 when every image was scored, 1 when some failed, 2 on bad arguments (a
``--count`` below 1, a dataset without image/mask pairs).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import requests
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.quality import QualityScores  # noqa: E402
from pipelines.synthetic import held_out_uploads  # noqa: E402
from serve_app import API_PREFIX  # noqa: E402

API_PATH = f"{API_PREFIX}/remove"
API_KEY_ENV = "BIREFNET_API_KEY"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
RETRY_STATUSES = (429, 503)
DEFAULT_MAX_TRIES = 5
Case = tuple[str, bytes, np.ndarray]


class UsageError(Exception):
    """Arguments that cannot be evaluated (exit status 2)."""


class ImageFailedError(Exception):
    """One image could not be scored; the others still are."""


def dataset_pairs(root: Path) -> list[tuple[Path, Path]]:
    """``(image, mask)`` paths of a folder (DIS5K ``im``/``gt`` or ``images``/``masks``), matched by stem."""
    for images_name, masks_name in (("im", "gt"), ("images", "masks")):
        images, masks = root / images_name, root / masks_name
        if images.is_dir() and masks.is_dir():
            break
    else:
        raise UsageError(f"{root} has neither im/ + gt/ nor images/ + masks/ subfolders")
    mask_by_stem = {p.stem: p for p in masks.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    pairs = [
        (image_path, mask_by_stem[image_path.stem])
        for image_path in sorted(images.iterdir())
        if image_path.suffix.lower() in IMAGE_SUFFIXES and image_path.stem in mask_by_stem
    ]
    if not pairs:
        raise UsageError(f"{images} and {masks} have no image/mask pairs with matching file names")
    return pairs


def dataset_cases(pairs: list[tuple[Path, Path]]) -> Iterator[Case]:
    """``(file name, upload bytes, ground-truth alpha in [0, 1])`` of each pair, read lazily."""
    for image_path, mask_path in pairs:
        with Image.open(mask_path) as mask:
            alpha = np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
        yield image_path.name, image_path.read_bytes(), alpha


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds a ``Retry-After`` header asks for (None without one; 1 s for an HTTP date)."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return 1.0


def remove_background(
    session: requests.Session,
    url: str,
    name: str,
    data: bytes,
    timeout: float,
    max_tries: int = DEFAULT_MAX_TRIES,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[np.ndarray, Mapping[str, str]]:
    """POST one image; return the output alpha ``[H, W]`` float32 in ``[0, 1]`` and the response headers.

    A 429 or 503 with ``Retry-After`` is retried after the time it asks for, up to ``max_tries``
    requests in all; anything else that is not a 200 RGBA PNG raises :class:`ImageFailedError`.
    """
    for attempt in range(1, max_tries + 1):
        try:
            response = session.post(url, files={"image": (name, data)}, timeout=timeout)
        except requests.RequestException as exc:
            raise ImageFailedError(f"{name}: no answer ({type(exc).__name__}: {exc})") from exc
        wait = retry_after_seconds(response.headers) if response.status_code in RETRY_STATUSES else None
        if wait is None or attempt == max_tries:
            break
        print(f"{name}: HTTP {response.status_code}, retrying in {wait:g} s (try {attempt + 1} of {max_tries})",
              file=sys.stderr)
        sleep(wait)
    if response.status_code != 200:
        tries = f" after {attempt} tries" if attempt > 1 else ""
        raise ImageFailedError(f"{name}: HTTP {response.status_code}{tries} {response.text[:200]}")
    try:
        with Image.open(io.BytesIO(response.content)) as image:
            if image.mode != "RGBA":
                raise ImageFailedError(f"{name}: expected an RGBA PNG, got mode {image.mode}")
            alpha = np.asarray(image.getchannel("A"), dtype=np.float32) / 255.0
    except OSError as exc:
        raise ImageFailedError(f"{name}: the 200 body is not an image ({exc})") from exc
    return alpha, response.headers  # case-insensitive: the server sends lower-case names


def main(argv: list[str] | None = None, sleep: Callable[[float], None] = time.sleep) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:55433", help="service base URL (or the /remove URL)")
    parser.add_argument("--dataset", type=Path, default=None, help="folder of image/mask pairs")
    parser.add_argument("--count", type=int, default=50, help="generated scenes when no --dataset")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                        help=f"sent as X-API-Key (default: ${API_KEY_ENV} when set)")
    parser.add_argument("--max-tries", type=int, default=DEFAULT_MAX_TRIES,
                        help="requests per image while the service answers 429/503 with Retry-After")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    for flag, value in (("--count", args.count), ("--max-tries", args.max_tries)):
        if value < 1:
            print(f"error: {flag} must be at least 1, got {value}", file=sys.stderr)
            return 2

    url = args.url.rstrip("/")
    if not url.endswith("/remove"):
        url += API_PATH
    try:
        cases = dataset_cases(dataset_pairs(args.dataset)) if args.dataset else iter(held_out_uploads(args.count))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    session = requests.Session()
    if args.api_key:
        session.headers["X-API-Key"] = args.api_key
    scores: list[QualityScores] = []
    failed: list[str] = []
    started = time.monotonic()
    for name, data, truth in cases:
        try:
            alpha, headers = remove_background(session, url, name, data, args.timeout, args.max_tries, sleep)
            if alpha.shape != truth.shape:
                raise ImageFailedError(f"{name}: output {alpha.shape[::-1]} differs from the original "
                                       f"{truth.shape[::-1]}")
        except ImageFailedError as exc:
            print(f"failed: {exc}", file=sys.stderr)
            failed.append(name)
            continue
        score = QualityScores.of(alpha, truth)
        scores.append(score)
        if args.verbose:
            print(f"{name}: iou={score.iou:.4f} f={score.f_measure:.4f} mae={score.mae:.4f} "
                  f"boundary_f={score.boundary_f:.4f} subject_found={headers.get('X-Subject-Found')}")
    if failed:
        print(f"{len(failed)} of {len(failed) + len(scores)} images failed: {', '.join(failed)}", file=sys.stderr)
    if not scores:
        print("error: no image was scored", file=sys.stderr)
        return 1
    mean = QualityScores.mean(scores)
    worst = min(scores, key=lambda s: s.iou)
    print(f"elapsed_s={time.monotonic() - started:.1f} worst_iou={worst.iou:.4f} failed={len(failed)}")
    print(f"images={len(scores)} iou={mean.iou:.4f} f={mean.f_measure:.4f} mae={mean.mae:.4f} "
          f"boundary_f={mean.boundary_f:.4f}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
