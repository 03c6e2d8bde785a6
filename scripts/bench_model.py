"""CPU/GPU forward-pass benchmark of one BiRefNet variant (random weights; speed does not depend on them).

    python scripts/bench_model.py --variant lite --size 1024 --dtype float32 --threads 2

The model runs as the service's eager backend runs it: half-precision models keep their
deformable convolutions in float32, and ``--deform-sampling auto`` picks the implementation the
service would. Prints the median forward time over ``--runs`` timed runs after one warm-up, and
the peak RSS of the process (and peak CUDA memory on a GPU).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.backends.eager import EagerBackend  # noqa: E402
from pipelines.model.birefnet import DeformSampling, create_model  # noqa: E402
from pipelines.model.variants import VARIANTS, get_variant  # noqa: E402
from pipelines.segmenter import DTYPES, resolve_deform_sampling  # noqa: E402
from pipelines.timing import timed  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="lite", choices=sorted(VARIANTS))
    parser.add_argument("--size", type=int, default=None, help="square input side (default: the variant's)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--deform-sampling", default="auto", choices=["auto", *(m.value for m in DeformSampling)],
                        help="deformable-conv implementation (same output); auto: the service's choice, "
                             "grid_sample on the CPU")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    variant = get_variant(args.variant)
    height, width = (args.size, args.size) if args.size else variant.input_size
    device = torch.device(args.device)
    sampling = resolve_deform_sampling(args.deform_sampling, device)
    dtype = DTYPES[args.dtype]
    backend = EagerBackend(create_model(replace(variant.config, deform_sampling=sampling), device=device, dtype=dtype),
                           dtype)
    x = torch.randn(args.batch, 3, height, width, device=device, dtype=dtype)
    rss_model = peak_rss_mb()

    def run() -> None:
        backend(x)

    warm = timed(run, device)
    times = [timed(run, device) for _ in range(args.runs)]
    median = statistics.median(times)
    extra = ""
    if device.type == "cuda":
        extra = f" peak_cuda_mb={torch.cuda.max_memory_allocated(device) / 2**20:.0f}"
    print(f"variant={variant.name} input={width}x{height} batch={args.batch} dtype={args.dtype} "
          f"device={device} deform_sampling={sampling.value} threads={args.threads} warmup_s={warm:.2f} "
          f"runs={[round(t, 2) for t in times]}")
    print(f"median_forward_s={median:.3f} per_image_s={median / args.batch:.3f} "
          f"rss_after_build_mb={rss_model:.0f} peak_rss_mb={peak_rss_mb():.0f}{extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
