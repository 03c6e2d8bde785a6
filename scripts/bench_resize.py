"""Time the network's bilinear resizes three ways, on the shapes one forward pass actually resizes.

    python scripts/bench_resize.py --device cuda --variant general --dtype float16 --batch 8

On the H100 the twelve ``align_corners=True`` resizes of general took 12 % of a batch-8 float16
forward (docs/performance.md §6): CUDA's NCHW bilinear kernel runs one thread per output pixel, and
several resizes shrink hundreds of channels to 32×32. For each resize of one forward this prints
the median time of

* ``nchw``: ``F.interpolate`` as the network calls it;
* ``channels_last``: the same after converting the input to channels-last (conversion included),
  whose kernel runs one thread per output element;
* ``matmul``: two matmuls with the separable interpolation matrices (``Wh @ x @ Wwᵀ``),

and each candidate's max |difference| from ``nchw``, then the totals.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.model import birefnet  # noqa: E402
from pipelines.model.variants import VARIANTS, get_variant  # noqa: E402
from pipelines.segmenter import DTYPES, dtype_on_device, resolve_device  # noqa: E402
from pipelines.timing import timed  # noqa: E402
from scripts.bench_gpu import model_input, service_model, size_arg  # noqa: E402


@cache  # built once per shape, as a network would keep them
def interpolation_matrix(source: int, target: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[target, source]``: row i holds the two weights of ``align_corners=True`` bilinear sampling."""
    scale = (source - 1) / (target - 1) if target > 1 else 0.0
    position = torch.arange(target, dtype=torch.float64) * scale
    low = position.floor().long().clamp(max=source - 1)
    high = (low + 1).clamp(max=source - 1)
    frac = position - low
    matrix = torch.zeros(target, source, dtype=torch.float64)
    rows = torch.arange(target)
    matrix.index_put_((rows, low), 1.0 - frac, accumulate=True)
    matrix.index_put_((rows, high), frac, accumulate=True)
    return matrix.to(device, dtype)


def nchw(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def channels_last(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return nchw(x.contiguous(memory_format=torch.channels_last), size)


def matmul(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    rows = interpolation_matrix(x.shape[2], size[0], x.dtype, x.device)
    cols = interpolation_matrix(x.shape[3], size[1], x.dtype, x.device)
    return torch.matmul(torch.matmul(rows, x), cols.T)


CANDIDATES: dict[str, Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]] = {
    "nchw": nchw,
    "channels_last": channels_last,
    "matmul": matmul,
}


def captured_resizes(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[tuple[int, ...], tuple[int, int]]]:
    """(input shape, output size) of every resize, in call order."""
    calls: list[tuple[tuple[int, ...], tuple[int, int]]] = []
    resize = birefnet.resize

    def spy(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        calls.append((tuple(t.shape), (int(size[0]), int(size[1]))))
        return resize(t, size)

    birefnet.resize = spy  # type: ignore[assignment]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        birefnet.resize = resize
    return calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    parser.add_argument("--variant", default="general", choices=sorted(VARIANTS))
    parser.add_argument("--dtype", default="float16", choices=sorted(DTYPES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=size_arg, default=None, help="input HxW instead of the variant's (e.g. 64x64)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch threads on CPU")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = dtype_on_device(DTYPES[args.dtype], device)
    size = args.size or get_variant(args.variant).input_size
    model = service_model(args.variant, device, dtype)
    calls = captured_resizes(model, model_input(args.batch, size, device, dtype))
    del model
    print(f"### bench_resize.py — {args.variant} {size[0]}×{size[1]} batch {args.batch} "
          f"{str(dtype).replace('torch.', '')} on {device}; median ms of {args.repeats}")
    totals = dict.fromkeys(CANDIDATES, 0.0)
    torch.manual_seed(0)
    for shape, target in calls:
        x = torch.randn(shape, device=device, dtype=dtype)
        with torch.inference_mode():
            reference = nchw(x, target)
            cells = []
            for name, candidate in CANDIDATES.items():
                candidate(x, target)  # warm-up
                run = partial(candidate, x, target)
                ms = 1e3 * statistics.median(timed(run, device) for _ in range(args.repeats))
                totals[name] += ms
                diff = (candidate(x, target).float() - reference.float()).abs().max().item()
                cells.append(f"{name} {ms:.3f}" + ("" if name == "nchw" else f" (Δ {diff:.1e})"))
        print(f"{'×'.join(map(str, shape))} → {target[0]}×{target[1]}: " + ", ".join(cells))
    print("total: " + ", ".join(f"{name} {ms:.2f} ms" for name, ms in totals.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
