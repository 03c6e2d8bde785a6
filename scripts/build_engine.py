"""Build the inference backend ahead of time (the warm-up script): TensorRT engines into the cache,
or a ``torch.compile`` warm-up that fills inductor's on-disk cache.

    python scripts/build_engine.py --variant general --backend tensorrt --dtype float16 --batch-sizes 1,2,4
    python scripts/build_engine.py --variant demo --device cpu --backend eager   # smoke test

Loads the same weights the service loads (``--weights`` or the usual lookup), builds through the
service's own selection, so the engine files and inductor's cache (``<engine-cache-dir>/inductor``)
land exactly where a replica looks for them, and prints which backend was built, in how long, and
why any fell back. Run it twice: the second ``built_s`` is what a replica's start costs with the
cache filled. Exit status 1 when the requested backend was not built.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.backends.base import DEFAULT_ENGINE_CACHE_DIR  # noqa: E402
from pipelines.segmenter import Segmenter, SegmenterSettings  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="general")
    parser.add_argument("--weights", default=None, help="checkpoint path (default: the service's lookup)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--backend", default="tensorrt", choices=["tensorrt", "compile", "eager"])
    parser.add_argument("--dtype", default="float16", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--batch-sizes", default="1,2,4", help="comma-separated, ascending")
    parser.add_argument("--compile-mode", default="default")
    parser.add_argument("--engine-cache-dir", default=str(DEFAULT_ENGINE_CACHE_DIR))
    parser.add_argument("--no-download", action="store_true", help="fail instead of downloading weights")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    settings = SegmenterSettings(
        variant=args.variant,
        weights=args.weights,
        device=args.device,
        dtype=args.dtype,
        allow_download=not args.no_download,
        backend=args.backend,
        compile_mode=args.compile_mode,
        engine_cache_dir=args.engine_cache_dir,
        batch_sizes=tuple(int(b) for b in args.batch_sizes.split(",") if b),
    )
    start = time.perf_counter()
    segmenter = Segmenter.from_settings(settings)
    segmenter.warm_up()
    info = segmenter.info()
    print(f"variant={info.variant} device={info.device} dtype={info.dtype} backend={info.backend} "
          f"built_s={time.perf_counter() - start:.1f}")
    print(f"backend: {segmenter.inference_backend.describe()}")
    print(f"tensorrt_enabled={info.tensorrt_enabled} tensorrt_reason={info.tensorrt_reason}")
    return 0 if info.backend == args.backend else 1


if __name__ == "__main__":
    raise SystemExit(main())
