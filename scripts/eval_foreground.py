"""How much background colour the cut-out's semi-transparent edges carry, with and without
``refine_foreground``, on held-out generated scenes whose true object colour is known.

    python scripts/eval_foreground.py --count 100

Each scene is cut out with its true alpha, so only the colours are judged: the error is
``α · |colour − true colour|`` over the pixels with ``0 < α < 1`` (``pipelines.quality.
recomposite_error``), in colour levels, which is the fringe the cut-out shows on any new
background. Scenes with fewer than 200 such pixels are skipped. The last line is
``scenes=N unrefined=<mean> refined=<mean> ratio=<unrefined/refined> refine_ms=<median>``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.postprocess import estimate_foreground  # noqa: E402
from pipelines.quality import recomposite_error  # noqa: E402
from pipelines.synthetic import EVALUATION_SEED, generate_scene  # noqa: E402

MIN_SOFT_PIXELS = 200


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="scenes to judge")
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("HEIGHT", "WIDTH"))
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    unrefined: list[float] = []
    refined: list[float] = []
    timings: list[float] = []
    seed = EVALUATION_SEED
    while len(refined) < args.count:
        scene = generate_scene(seed, tuple(args.size), empty_probability=0.0)
        seed += 1
        alpha = np.rint(scene.alpha * 255).astype(np.uint8)
        if scene.foreground is None or np.count_nonzero((alpha > 0) & (alpha < 255)) < MIN_SOFT_PIXELS:
            continue
        started = time.process_time()
        colours = estimate_foreground(scene.rgb, alpha)
        timings.append((time.process_time() - started) * 1000)
        unrefined.append(recomposite_error(scene.rgb, scene.alpha, scene.foreground))
        refined.append(recomposite_error(colours, scene.alpha, scene.foreground))
    before, after = statistics.mean(unrefined), statistics.mean(refined)
    print(
        f"scenes={len(refined)} unrefined={before:.3f} refined={after:.3f} ratio={before / after:.2f} "
        f"refine_ms={statistics.median(timings):.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
