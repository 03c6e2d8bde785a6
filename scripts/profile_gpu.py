"""Where a forward pass spends its time: the top operators by device time, and SDPA's kernel choice.

    python scripts/profile_gpu.py --device cuda --variant general --dtype float16 --batches 1,8

Runs the variant on deterministic weights as the eager backend does (the deformable conv that
``deform_sampling: auto`` picks, half models with float32 deformable convs), warms it up, times
``--runs`` forwards per batch size, then profiles one with ``torch.profiler`` and prints:

* the median forward time, and the profiler's self CPU and self device totals (a CPU total above
  the device total means the pass is bound by launching kernels, not by running them);
* the kernel ``torch._fused_sdp_choice`` picks for each attention call (``MATH`` is the unfused
  fallback, which computes float32 scores for half inputs);
* the ``--top`` operators by self device time (self CPU time on a CPU);
* for the copies and the resizes (``--by-shape``), their costliest input shapes, to tell which
  part of the network makes them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.backends.eager import EagerBackend  # noqa: E402
from pipelines.model.variants import VARIANTS, get_variant  # noqa: E402
from pipelines.segmenter import DTYPES, dtype_on_device, resolve_device  # noqa: E402
from pipelines.timing import timed  # noqa: E402
from scripts.bench_gpu import csv_arg, model_input, service_model, size_arg  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    parser.add_argument("--variant", default="general", choices=sorted(VARIANTS))
    parser.add_argument("--dtype", default="float16", choices=sorted(DTYPES))
    parser.add_argument("--batches", type=csv_arg(int), default=[1, 8])
    parser.add_argument("--size", type=size_arg, default=None, help="input HxW instead of the variant's (e.g. 64x64)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch threads on CPU")
    parser.add_argument("--by-shape", type=csv_arg(str), default=["aten::copy_", "aten::upsample_bilinear2d"],
                        help="operators to break down by input shape")
    return parser.parse_args(argv)


def sdpa_choices(model: torch.nn.Module, x: torch.Tensor) -> Counter[str]:
    """The fused-kernel choice of every attention call in one forward."""
    choices: Counter[str] = Counter()
    attention = F.scaled_dot_product_attention

    def spy(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
            **kwargs: object) -> torch.Tensor:
        choices[SDPBackend(torch._fused_sdp_choice(q, k, v, attn_mask)).name] += 1
        return attention(q, k, v, attn_mask=attn_mask, **kwargs)  # type: ignore[arg-type]

    setattr(F, "scaled_dot_product_attention", spy)  # noqa: B010 (mypy: a differently typed callable)
    try:
        model(x)
    finally:
        setattr(F, "scaled_dot_product_attention", attention)  # noqa: B010
    return choices


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = dtype_on_device(DTYPES[args.dtype], device)
    size = args.size or get_variant(args.variant).input_size
    model = EagerBackend(service_model(args.variant, device, dtype), dtype)
    on_cuda = device.type == "cuda"
    sort_key = "self_cuda_time_total" if on_cuda else "self_cpu_time_total"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if on_cuda else [])]

    print(f"### profile_gpu.py — {args.variant} {size[0]}×{size[1]} {str(dtype).replace('torch.', '')} on "
          f"{torch.cuda.get_device_name(device) if on_cuda else 'cpu'}, torch {torch.__version__}")
    for batch in args.batches:
        x = model_input(batch, size, device, dtype)
        forward = partial(model, x)
        timed(forward, device)  # two warm-ups
        timed(forward, device)
        times = [timed(forward, device) for _ in range(args.runs)]
        with torch.inference_mode():
            choices = sdpa_choices(model.model, x)
        with profile(activities=activities, record_shapes=True) as prof:
            timed(forward, device)
        events = prof.key_averages()
        cpu_ms = sum(e.self_cpu_time_total for e in events) / 1e3
        device_ms = sum(getattr(e, "self_device_time_total", 0.0) for e in events) / 1e3
        print(f"\nbatch {batch}: forward p50 {statistics.median(times) * 1e3:.1f} ms over {args.runs}; "
              f"profiled pass: self CPU {cpu_ms:.1f} ms, self device {device_ms:.1f} ms")
        print("attention kernels: " + ", ".join(f"{name} ×{count}" for name, count in sorted(choices.items())))
        print(events.table(sort_by=sort_key, row_limit=args.top, max_name_column_width=70))
        by_shape = prof.key_averages(group_by_input_shape=True)
        for name in args.by_shape:
            rows = sorted((e for e in by_shape if e.key == name), key=lambda e: getattr(e, sort_key), reverse=True)
            print(f"{name} by input shape (self {'device' if on_cuda else 'CPU'} ms, calls):")
            for event in rows[:8]:
                print(f"    {getattr(event, sort_key) / 1e3:8.2f} ms ×{event.count:<4} {event.input_shapes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
