"""CPU cost of our pre/postprocessing against a naive Pillow pipeline, model stubbed.

Both pipelines run in this one process on the same generated photo-like JPEGs (1920×1080 and
4000×3000, quality 90), with a synthetic matte standing in for the model. Times are median
process CPU milliseconds (``time.process_time``) per stage, single-threaded (OpenCV and torch
limited to one thread so CPU time is not inflated by idle spinning). Normalisation runs on the
inference device in our pipeline, so its row is n/a for us. ``refine`` (foreground colour
estimation) is ours alone: it is timed and printed, but left out of the totals, which compare the
same work.

Usage: python scripts/bench_prepost.py [--runs N] [--input-size 1024]
The last line is ``prepost_1080p_ms=<ours> naive_1080p_ms=<naive> ratio=<naive/ours>
refine_1080p_ms=<ours>``.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.datatypes import Matte, PreparedImage  # noqa: E402
from pipelines.decode import decode_image  # noqa: E402
from pipelines.encode import encode_png  # noqa: E402
from pipelines.postprocess import (  # noqa: E402
    alpha_to_original_size,
    apply_source_alpha,
    compose_rgba,
    estimate_foreground,
    smooth_alpha,
)
from pipelines.preprocess import model_view, resize_for_model  # noqa: E402
from tests.imagegen import jpeg_bytes, photo_like_rgb, subject_alpha  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
STAGES = ("decode", "resize", "normalize", "alpha_resize", "smoothing", "refine", "compose", "encode")
EXTRA_STAGES = ("refine",)  # ours only: not in the totals

Timings = dict[str, float]


def _timed(timings: Timings, stage: str, step: Callable[[], Any]) -> Any:
    start = time.process_time()
    result = step()
    timings[stage] = (time.process_time() - start) * 1000.0
    return result


def run_ours(data: bytes, matte: Matte, input_size: tuple[int, int]) -> tuple[Timings, int]:
    timings: Timings = {}
    image = _timed(timings, "decode", lambda: decode_image(data))
    model_input = _timed(timings, "resize", lambda: resize_for_model(model_view(image), input_size))
    prepared = PreparedImage(image=image, model_input=model_input)
    size = (prepared.image.height, prepared.image.width)
    alpha = _timed(timings, "alpha_resize", lambda: alpha_to_original_size(matte.alpha, size))
    alpha = _timed(timings, "smoothing", lambda: apply_source_alpha(smooth_alpha(alpha), image.alpha))
    rgb = _timed(timings, "refine", lambda: estimate_foreground(image.rgb, alpha))
    rgba = _timed(timings, "compose", lambda: compose_rgba(rgb, alpha))
    png = _timed(timings, "encode", lambda: encode_png(rgba))
    return timings, len(png)


def run_naive(data: bytes, matte: Matte, input_size: tuple[int, int]) -> tuple[Timings, int]:
    timings: Timings = {}
    height, width = input_size
    image = _timed(timings, "decode", lambda: Image.open(io.BytesIO(data)).convert("RGB"))
    resized = _timed(timings, "resize", lambda: image.resize((width, height), Image.Resampling.BILINEAR))
    _timed(
        timings,
        "normalize",
        lambda: ((np.asarray(resized, np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None].copy(),
    )
    mask = _timed(timings, "alpha_resize", lambda: Image.fromarray(matte.alpha).resize(image.size))
    mask = _timed(timings, "smoothing", lambda: mask.filter(ImageFilter.GaussianBlur(2)))
    cutout = _timed(timings, "compose", lambda: _put_alpha(image, mask))
    png = _timed(timings, "encode", lambda: _save_png(cutout))
    return timings, len(png)


def _put_alpha(image: Image.Image, mask: Image.Image) -> Image.Image:
    cutout = image.copy()
    cutout.putalpha(mask)
    return cutout


def _save_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def bench(
    label: str,
    runner: Callable[[bytes, Matte, tuple[int, int]], tuple[Timings, int]],
    data: bytes,
    matte: Matte,
    input_size: tuple[int, int],
    runs: int,
) -> tuple[float, float | None]:
    """Prints one row; returns the median total (without :data:`EXTRA_STAGES`) and the median
    ``refine`` time (None when the runner has none)."""
    runner(data, matte, input_size)  # warm-up
    per_stage: dict[str, list[float]] = {stage: [] for stage in STAGES}
    totals: list[float] = []
    output_bytes = 0
    for _ in range(runs):
        timings, output_bytes = runner(data, matte, input_size)
        for stage, value in timings.items():
            per_stage[stage].append(value)
        totals.append(sum(value for stage, value in timings.items() if stage not in EXTRA_STAGES))
    cells = []
    for stage in STAGES:
        values = per_stage[stage]
        missing = "n/a(on device)" if stage == "normalize" else "n/a"
        cells.append(f"{stage}={statistics.median(values):.1f}" if values else f"{stage}={missing}")
    total = statistics.median(totals)
    print(f"  {label:5s} total={total:7.1f} ms  " + " ".join(cells) + f"  output={output_bytes / 1e6:.2f} MB")
    refine = per_stage["refine"]
    return total, statistics.median(refine) if refine else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--input-size", type=int, default=1024)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    input_size = (args.input_size, args.input_size)
    matte = Matte(alpha=subject_alpha(args.input_size, args.input_size), model_name="stub")
    print(f"median CPU ms per stage, {args.runs} runs after 1 warm-up, 1 thread, model input {input_size}")
    totals: dict[str, tuple[float, float]] = {}
    refine: dict[str, float | None] = {}
    for name, (width, height) in {"1080p": (1920, 1080), "12MP": (4000, 3000)}.items():
        data = jpeg_bytes(photo_like_rgb(width, height, seed=1), quality=90)
        print(f"{name}: {width}x{height} JPEG q90, {len(data) / 1e6:.2f} MB")
        ours, refine[name] = bench("ours", run_ours, data, matte, input_size, args.runs)
        naive, _ = bench("naive", run_naive, data, matte, input_size, max(3, args.runs // 2))
        totals[name] = (ours, naive)
    ours_12mp = totals["12MP"][0]
    print(f"12MP: ours {ours_12mp:.1f} ms (target <= 300), ratio {totals['12MP'][1] / ours_12mp:.1f}x, "
          f"refine {refine['12MP']:.1f} ms more")
    ours_1080p, naive_1080p = totals["1080p"]
    print(f"prepost_1080p_ms={ours_1080p:.1f} naive_1080p_ms={naive_1080p:.1f} ratio={naive_1080p / ours_1080p:.1f} "
          f"refine_1080p_ms={refine['1080p']:.1f}")


if __name__ == "__main__":
    main()
