"""Inference benchmark per variant, backend and precision (deterministic weights; speed does not depend on them).

    python scripts/bench_gpu.py --variants general,lite --backends eager,compile --dtypes float32,float16
    python scripts/bench_gpu.py --device cpu --variants demo --size 64x64 --batches 1,2,4

Per configuration it prints batch-1 latency p50/p95/p99, throughput at each batch size, peak
memory (CUDA: peak allocated over the row, and over the batch-1 runs alone from their first call,
where a CUDA graph records; CPU: the process's peak RSS so far, which only grows) and the
agreement with eager full float32 (TF32 off) of the same variant (mean IoU of ``alpha ≥ 0.5`` and
max Δα over ``--agreement-inputs`` inputs). The
rows run as the service runs them: float32 with TF32 (``--no-tf32``), cuDNN algorithm timing for
the compiled backends only (``--[no-]cudnn-benchmark``), and the deformable conv it would pick. With
``--equivalence`` it also runs the float32 reference case (lite 288×416, TF32 off) against the
official float64 mask. ``--markdown PATH`` writes the table.
``--build-only`` builds each configuration and reports its build time alone: run first, in the
background, it fills the compile cache (``--engine-cache-dir``) so a timed run's builds take seconds.
``--per-batch`` builds and measures each batch size as its own row, smallest first: a compiled
backend's batch-1 figures are printed before the next size compiles, and survive its running out of
time.

Needs only torch, torchvision and numpy (no safetensors, OpenCV or Ray). Exit status 1 when the
equivalence check ran and failed, else 0; configurations that fail to build are reported in the
table, not raised.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import platform
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.backends import BACKEND_NAMES, BackendSpec  # noqa: E402
from pipelines.backends.agreement import Agreement, alpha_agreement, reference_equivalence, tf32_disabled  # noqa: E402
from pipelines.backends.batching import padded_batch_size  # noqa: E402
from pipelines.backends.selection import DEFAULT_BUILDERS  # noqa: E402
from pipelines.model.birefnet import DeformSampling, create_model  # noqa: E402
from pipelines.model.deterministic import deterministic_input, deterministic_state_dict  # noqa: E402
from pipelines.model.variants import get_variant  # noqa: E402
from pipelines.segmenter import (  # noqa: E402
    DTYPES,
    configure_cuda_math,
    cudnn_benchmark_for,
    dtype_on_device,
    logits_to_alpha,
    resolve_deform_sampling,
)
from pipelines.timing import timed  # noqa: E402

_REPO = Path(__file__).resolve().parents[1]
REFERENCE_CANDIDATES = (_REPO / "shared" / "reference", _REPO.parent / "shared" / "reference", _REPO / ".ref")


@dataclass
class Row:
    """One line of the table: a (variant, backend, dtype) configuration."""

    variant: str
    size: tuple[int, int]
    backend: str
    dtype: str
    latency_ms: tuple[float, float, float] | None = None
    throughput: dict[int, str] = field(default_factory=dict)
    peak_mb: float | None = None
    peak_b1_mb: float | None = None
    agreement: Agreement | None = None
    note: str = ""


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0–100) by linear interpolation."""
    return float(np.percentile(np.asarray(values), q))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def model_input(batch: int, size: tuple[int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A zero batch made as the Segmenter makes its inputs (an inference tensor, NCHW-contiguous),
    so that compiled graphs take it without a copy or a recompile."""
    with torch.inference_mode():
        return torch.zeros((batch, 3, *size), device=device, dtype=dtype)


def agreement_inputs(count: int, size: tuple[int, int]) -> torch.Tensor:
    """``count`` distinct normalised inputs ``[count, 3, h, w]``: the reference pattern, shifted and rescaled."""
    base = deterministic_input(*size)
    images = [torch.roll(base, shifts=(17 * k, 29 * k), dims=(2, 3)) * (1.0 - 0.15 * k) for k in range(count)]
    return torch.cat(images)


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


@cache
def deterministic_weights(variant: str) -> dict[str, torch.Tensor]:
    """The variant's deterministic state dict, made once per process."""
    with torch.device("meta"):
        entries = [(key, tuple(t.shape)) for key, t in create_model(get_variant(variant).config).state_dict().items()]
    return deterministic_state_dict(entries)


def service_model(variant: str, device: torch.device, dtype: torch.dtype, backend_name: str = "eager",
                  compile_mode: str = "default") -> torch.nn.Module:
    """The variant on deterministic weights, with the deformable conv the service would pick for
    ``backend_name``, on ``device`` in ``dtype``."""
    sampling = resolve_deform_sampling("auto", device, backend_name, compile_mode)
    model = create_model(replace(get_variant(variant).config, deform_sampling=sampling))
    model.load_state_dict(deterministic_weights(variant))
    return model.to(device, dtype)


class Bench:
    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args = args
        self.device = device
        self._reference_alpha: dict[str, np.ndarray] = {}

    def model(self, variant: str, dtype: torch.dtype, backend_name: str = "eager") -> torch.nn.Module:
        return service_model(variant, self.device, dtype, backend_name, self.args.compile_mode)

    def sampling(self, backend_name: str) -> DeformSampling:
        return resolve_deform_sampling("auto", self.device, backend_name, self.args.compile_mode)

    def size(self, variant: str) -> tuple[int, int]:
        size: tuple[int, int] = self.args.size or get_variant(variant).input_size
        return size

    def alphas(self, backend: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype,
               inputs: torch.Tensor) -> np.ndarray:
        """One image at a time, zero-padded to the smallest compiled batch as the Segmenter pads."""
        padded = padded_batch_size(1, getattr(backend, "batch_sizes", ()))
        out = []
        for x in inputs:
            batch = torch.cat([x[None], x.new_zeros((padded - 1, *x.shape))])
            out.append(logits_to_alpha(backend(batch.to(self.device, dtype))[:1]).cpu().numpy())
        return np.concatenate(out)

    def reference_alpha(self, variant: str, inputs: torch.Tensor) -> np.ndarray:
        if variant not in self._reference_alpha:
            model = self.model(variant, torch.float32)
            with tf32_disabled(), torch.inference_mode():  # the reference is full float32
                self._reference_alpha[variant] = self.alphas(model, torch.float32, inputs)
            del model
            self._free()
        return self._reference_alpha[variant]

    def _free(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _release(self, backend_name: str) -> None:
        """Frees a finished row's memory. torch.compile's CUDA graphs keep a private memory pool for
        as long as the process lives unless their trees are reset (Dynamo's cache holds them)."""
        if self.device.type == "cuda" and backend_name == "compile":
            from torch._inductor import cudagraph_trees

            cudagraph_trees.reset_cudagraph_trees()
        self._free()

    def run(self, variant: str, backend_name: str, dtype_name: str, batches: list[int] | None = None) -> Row:
        """One row; ``batches``: the sizes to build and measure (default: all of ``--batches``)."""
        batches = batches or self.args.batches
        size = self.size(variant)
        row = Row(variant, size, backend_name, dtype_name)
        dtype = DTYPES[dtype_name]
        if dtype_on_device(dtype, self.device) is not dtype:
            row.note = "skipped: the service runs float32 instead on this CPU (dtype_on_device)"
            return row
        if not self.args.build_only:
            inputs = agreement_inputs(self.args.agreement_inputs, size)
            reference = self.reference_alpha(variant, inputs)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = cudnn_benchmark_for(self.args.cudnn_benchmark, backend_name)
            torch.cuda.reset_peak_memory_stats(self.device)
        spec = BackendSpec(variant=variant, input_size=size, device=self.device, dtype=dtype,
                           batch_sizes=tuple(batches), compile_mode=self.args.compile_mode,
                           engine_cache_dir=self.args.engine_cache_dir, weights_id="deterministic")
        start = time.perf_counter()
        try:  # this backend alone: the service's fallback would only benchmark another row twice
            backend = DEFAULT_BUILDERS[backend_name](self.model(variant, dtype, backend_name), spec)
        except Exception as exc:
            row.note = f"unavailable: {' '.join(str(exc).split())[:160]}"
            self._free()
            return row
        row.note = f"build {time.perf_counter() - start:.1f} s, deform {self.sampling(backend_name).value}"
        if self.args.build_only:
            row.peak_mb = peak_memory_mb(self.device)
            del backend
            self._release(backend_name)
            return row
        try:
            b1_alone = 1 in batches
            if self.device.type == "cuda" and b1_alone:
                # Batch 1 on its own: weights + one image's activations, from its first call on, for
                # CUDA graphs record there (their replays allocate nothing).
                torch.cuda.reset_peak_memory_stats(self.device)
            row.agreement = alpha_agreement(reference, self.alphas(backend, dtype, inputs))
            if b1_alone:
                x = model_input(1, size, self.device, dtype)
                for _ in range(self.args.warmup):
                    backend(x)
                times = [timed(lambda: backend(x), self.device) * 1000 for _ in range(self.args.latency_runs)]
                row.latency_ms = (percentile(times, 50), percentile(times, 95), percentile(times, 99))
                if self.device.type == "cuda":
                    row.peak_b1_mb = peak_memory_mb(self.device)
            for batch in batches:
                row.throughput[batch] = self.throughput(backend, batch, size, dtype)
        except RuntimeError as exc:
            if not _is_out_of_memory(exc):
                raise
            row.note += "; OOM"
        row.peak_mb = peak_memory_mb(self.device)
        self._release(backend_name)
        return row

    def throughput(self, backend: Callable[[torch.Tensor], torch.Tensor], batch: int, size: tuple[int, int],
                   dtype: torch.dtype) -> str:
        x = model_input(batch, size, self.device, dtype)
        try:
            backend(x)  # warm-up (cuDNN algorithm choice, allocator)
            seconds = sum(timed(lambda: backend(x), self.device) for _ in range(self.args.throughput_runs))
        except RuntimeError as exc:
            if not _is_out_of_memory(exc):
                raise
            seconds = None  # freed below: in here the traceback still holds the failed pass's tensors
        if seconds is None:
            del x
            self._free()
            return "OOM"
        return f"{batch * self.args.throughput_runs / seconds:.1f}"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown_table(rows: list[Row], batches: list[int], device: torch.device) -> str:
    memory = "peak alloc MB" if device.type == "cuda" else "peak RSS MB"
    header = ["variant", "input", "backend", "dtype", "b1 p50 ms", "p95", "p99",
              *[f"img/s b{b}" for b in batches], memory, "b1 peak alloc MB", "IoU vs fp32", "max Δα", "note"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        p50, p95, p99 = row.latency_ms or (None, None, None)
        cells = [row.variant, f"{row.size[1]}×{row.size[0]}", row.backend, row.dtype, _fmt(p50, 2), _fmt(p95, 2),
                 _fmt(p99, 2), *[row.throughput.get(b, "—") for b in batches], _fmt(row.peak_mb, 0),
                 _fmt(row.peak_b1_mb, 0),
                 _fmt(row.agreement.mean_iou, 4) if row.agreement else "—",
                 _fmt(row.agreement.max_abs_alpha, 4) if row.agreement else "—", row.note]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        tf32 = torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        return (f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}, float32 rows with TF32 "
                f"{'on' if tf32 else 'off'} (IoU reference: full float32)")
    cpu = platform.processor() or platform.machine()
    return f"CPU ({cpu}), {torch.get_num_threads()} threads, torch {torch.__version__}"


def csv_arg(kind: Callable[[str], object]) -> Callable[[str], list[object]]:
    return lambda text: [kind(part) for part in text.split(",") if part]


def size_arg(text: str) -> tuple[int, int]:
    """``HxW`` (or ``N`` for N×N) → ``(H, W)``."""
    height, _, width = text.lower().partition("x")
    return int(height), int(width or height)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    parser.add_argument("--variants", type=csv_arg(str), default=["general", "lite"])
    parser.add_argument("--backends", type=csv_arg(str), default=["eager", "compile", "tensorrt"])
    parser.add_argument("--dtypes", type=csv_arg(str), default=["float32", "float16", "bfloat16"])
    parser.add_argument("--batches", type=csv_arg(int), default=[1, 2, 4, 8, 16],
                        help="throughput batch sizes; also the sizes compiled backends are built for")
    parser.add_argument("--size", type=size_arg, default=None, help="input HxW instead of the variant's (e.g. 64x64)")
    parser.add_argument("--latency-runs", type=int, default=50)
    parser.add_argument("--throughput-runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--agreement-inputs", type=int, default=4)
    parser.add_argument("--compile-mode", default="default")
    parser.add_argument("--engine-cache-dir", type=Path, default=Path("/tmp/birefnet-engines"))
    parser.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True,
                        help="TF32 matmuls/convolutions for the float32 rows, as the service runs them")
    parser.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=None,
                        help="cuDNN algorithm timing (default: as the service, on for compiled backends only)")
    parser.add_argument("--equivalence", action="store_true", help="run the lite 288x416 float32 reference case")
    parser.add_argument("--reference-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads on CPU")
    parser.add_argument("--build-only", action="store_true",
                        help="only build each backend (fills the compile cache under --engine-cache-dir)")
    parser.add_argument("--per-batch", action="store_true",
                        help="a row per batch size, each built for that size alone, smallest first")
    parser.add_argument("--time-budget-s", type=float, default=None,
                        help="skip the remaining configurations once this many seconds have passed")
    parser.add_argument("--markdown", type=Path, default=None, help="append the table to this file")
    args = parser.parse_args(argv)
    for name in args.backends:
        if name not in BACKEND_NAMES:
            parser.error(f"unknown backend {name!r}; use {', '.join(BACKEND_NAMES)}")
    for name in args.dtypes:
        if name not in DTYPES:
            parser.error(f"unknown dtype {name!r}; use {', '.join(DTYPES)}")
    args.batches = sorted(set(args.batches))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    requested = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = torch.device("cpu" if requested == "auto" else requested)
    if device.type == "cuda":
        configure_cuda_math(args.tf32, cudnn_benchmark=False)  # per row in Bench.run
    bench = Bench(args, device)
    started = time.perf_counter()
    rows: list[Row] = []
    row_batches = [[batch] for batch in args.batches] if args.per_batch else [args.batches]
    for variant in args.variants:
        for backend in args.backends:
            for dtype in args.dtypes:
                for batches in row_batches:
                    if args.time_budget_s is not None and time.perf_counter() - started > args.time_budget_s:
                        rows.append(Row(variant, bench.size(variant), backend, dtype, note="skipped: time budget"))
                        continue
                    row = bench.run(variant, backend, dtype, batches)
                    rows.append(row)
                    print(markdown_table([row], args.batches, device).splitlines()[-1], flush=True)

    lines = [f"### bench_gpu.py — {device_description(device)}", "",
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
             f"`{' '.join(sys.argv[1:]) if argv is None else ' '.join(argv)}`", "",
             markdown_table(rows, args.batches, device), ""]
    status = 0
    if args.equivalence:
        reference_dir = args.reference_dir or next(
            (d for d in REFERENCE_CANDIDATES if (d / "lite_reference_288x416.npz").is_file()), None)
        if reference_dir is None:
            lines.append("Equivalence (lite 288×416, float32): skipped — reference data not found.")
        else:
            result = reference_equivalence("lite", "288x416", reference_dir, device)
            verdict = "PASS" if result.passed else "FAIL"
            lines.append(f"Equivalence (lite 288×416, float32, TF32 off, {device.type}): "
                         f"max |Δmask| {result.max_abs_mask_diff:.3e}, mean {result.mean_abs_mask_diff:.3e} "
                         f"(tolerance 2e-5 / 1e-6) {verdict}")
            status = 0 if result.passed else 1
    lines.append(f"Total {time.perf_counter() - started:.0f} s.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        with args.markdown.open("a", encoding="utf-8") as out:
            out.write(text + "\n")
    return status


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # torch.compile's time per batch size
    raise SystemExit(main())
