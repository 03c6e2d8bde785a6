"""Judge the service's mattes against ground truth, through its public HTTP API.

    python scripts/eval_quality.py --url http://127.0.0.1:55433
    python scripts/eval_quality.py --url http://gpu-box:55433 --dataset /data/DIS5K/DIS-VD

Without ``--dataset`` it sends 50 held-out generated scenes (seeds never used in training; varied
sizes, aspect ratios, formats and EXIF orientations, a few with no subject). With ``--dataset DIR``
it reads image/mask pairs matched by file stem from ``DIR/im`` + ``DIR/gt`` (DIS5K layout) or
``DIR/images`` + ``DIR/masks``. Prints per-image scores with ``--verbose`` and, as its last line,
``images=N iou=<mean> f=<mean> mae=<mean> boundary_f=<mean>``.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import requests
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.quality import QualityScores  # noqa: E402
from pipelines.synthetic import held_out_uploads  # noqa: E402
from serve_app import API_PREFIX  # noqa: E402

API_PATH = f"{API_PREFIX}/remove"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}

def dataset_cases(root: Path) -> Iterator[tuple[str, bytes, np.ndarray]]:
    """Image/mask pairs of a folder (DIS5K ``im``/``gt`` or ``images``/``masks``), matched by stem."""
    for images_name, masks_name in (("im", "gt"), ("images", "masks")):
        images, masks = root / images_name, root / masks_name
        if images.is_dir() and masks.is_dir():
            break
    else:
        raise SystemExit(f"{root} has neither im/ + gt/ nor images/ + masks/ subfolders")
    mask_by_stem = {p.stem: p for p in masks.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    for image_path in sorted(images.iterdir()):
        if image_path.suffix.lower() not in IMAGE_SUFFIXES or image_path.stem not in mask_by_stem:
            continue
        with Image.open(mask_by_stem[image_path.stem]) as mask:
            alpha = np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
        yield image_path.name, image_path.read_bytes(), alpha


def remove_background(url: str, name: str, data: bytes, timeout: float) -> tuple[np.ndarray, Mapping[str, str]]:
    """POST one image; return the output alpha in ``[0, 1]`` and the response headers."""
    response = requests.post(url, files={"image": (name, data)}, timeout=timeout)
    if response.status_code != 200:
        raise RuntimeError(f"{name}: HTTP {response.status_code} {response.text[:200]}")
    with Image.open(io.BytesIO(response.content)) as image:
        if image.mode != "RGBA":
            raise RuntimeError(f"{name}: expected an RGBA PNG, got mode {image.mode}")
        alpha = np.asarray(image.getchannel("A"), dtype=np.float32) / 255.0
    return alpha, response.headers  # case-insensitive: the server sends lower-case names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:55433", help="service base URL (or the /remove URL)")
    parser.add_argument("--dataset", type=Path, default=None, help="folder of image/mask pairs")
    parser.add_argument("--count", type=int, default=50, help="generated scenes when no --dataset")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)

    url = args.url.rstrip("/")
    if not url.endswith("/remove"):
        url += API_PATH
    cases = dataset_cases(args.dataset) if args.dataset else iter(held_out_uploads(args.count))
    scores: list[QualityScores] = []
    started = time.monotonic()
    for name, data, truth in cases:
        alpha, headers = remove_background(url, name, data, args.timeout)
        if alpha.shape != truth.shape:
            raise SystemExit(f"{name}: output {alpha.shape[::-1]} differs from the original {truth.shape[::-1]}")
        score = QualityScores.of(alpha, truth)
        scores.append(score)
        if args.verbose:
            print(f"{name}: iou={score.iou:.4f} f={score.f_measure:.4f} mae={score.mae:.4f} "
                  f"boundary_f={score.boundary_f:.4f} subject_found={headers.get('X-Subject-Found')}")
    mean = QualityScores.mean(scores)
    worst = min(scores, key=lambda s: s.iou)
    print(f"elapsed_s={time.monotonic() - started:.1f} worst_iou={worst.iou:.4f}")
    print(f"images={len(scores)} iou={mean.iou:.4f} f={mean.f_measure:.4f} mae={mean.mae:.4f} "
          f"boundary_f={mean.boundary_f:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
