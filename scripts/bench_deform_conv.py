"""Time torchvision's deformable conv against our grid_sample one, forward and forward + backward.

    python scripts/bench_deform_conv.py --threads 2
    python scripts/bench_deform_conv.py --device cuda --channels 64 --size 256 --batch 4

Shapes default to the demo model's decoder at 192² training (batch 8, 48×48 at stride 4, 16
channels in, 32 out). Prints one line per (implementation, kernel, pass) with the median time, and
a ratio line per kernel; both implementations give the same result (tests/pipelines/model).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torchvision.ops import deform_conv2d

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.model.birefnet import deform_conv2d_by_sampling  # noqa: E402
from pipelines.segmenter import configure_cuda_math  # noqa: E402
from pipelines.timing import timed  # noqa: E402


def _torchvision(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, padding: int,
                 mask: torch.Tensor) -> torch.Tensor:
    return deform_conv2d(x, offset, weight, padding=padding, mask=mask)


IMPLEMENTATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "torchvision": _torchvision,
    "grid_sample": deform_conv2d_by_sampling,
}


def _forward(impl: Callable[..., torch.Tensor], inputs: tuple[object, ...]) -> torch.Tensor:
    with torch.no_grad():
        return impl(*inputs)


def _forward_backward(impl: Callable[..., torch.Tensor], inputs: tuple[object, ...]) -> None:
    impl(*inputs).sum().backward()


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    return statistics.median(timed(fn, device) for _ in range(repeats))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--out-channels", type=int, default=32)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--kernels", default="1,3,7")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True,
                        help="CUDA: TF32 for the GEMM both end in, as the service runs float32 (tf32: true)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    tf32 = ""
    if device.type == "cuda":
        configure_cuda_math(args.tf32, cudnn_benchmark=False)  # as an eager Inference replica
        tf32 = f" tf32={'on' if args.tf32 else 'off'}"
    print(f"device={device} threads={args.threads} batch={args.batch} channels={args.channels}->"
          f"{args.out_channels} size={args.size}{tf32}")
    for k in (int(v) for v in args.kernels.split(",")):
        taps = k * k
        shape = (args.batch, args.channels, args.size, args.size)
        x = torch.randn(shape, device=device, requires_grad=True)
        offset = torch.randn(args.batch, 2 * taps, args.size, args.size, device=device, requires_grad=True)
        mask = torch.rand(args.batch, taps, args.size, args.size, device=device, requires_grad=True)
        weight = torch.randn(args.out_channels, args.channels, k, k, device=device, requires_grad=True)
        medians: dict[tuple[str, str], float] = {}
        inputs = (x, offset, weight, k // 2, mask)
        for name, impl in IMPLEMENTATIONS.items():
            for label, fn in (("forward", partial(_forward, impl, inputs)),
                              ("forward+backward", partial(_forward_backward, impl, inputs))):
                medians[name, label] = median_seconds(fn, args.repeats, device)
                print(f"impl={name} kernel={k} pass={label} median_ms={medians[name, label] * 1000:.2f}")
        for label in ("forward", "forward+backward"):
            ratio = medians["torchvision", label] / medians["grid_sample", label]
            print(f"kernel={k} pass={label} torchvision/grid_sample={ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
