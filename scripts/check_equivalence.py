"""Numerical equivalence of our BiRefNet with the official implementation (reference/equivalence.md).

Builds the deterministic weights from the official state-dict manifest, writes them to a temporary
``.safetensors`` and to a ``.pth`` whose keys carry ``module._orig_mod.`` prefixes (both float32),
loads each through the same loader users use, checks both loads agree tensor for tensor, runs the
reference input and compares the sigmoid mask with the official float64 output.

    python scripts/check_equivalence.py --variant lite --case 288x416 --dtype float64
    python scripts/check_equivalence.py --reference-dir /data/birefnet-reference

The reference files (state-dict manifest and ``.npz`` of official outputs) are read from
``--reference-dir``, by default the first of ``shared/reference``, ``../shared/reference`` and
``.ref`` (relative to the repository root) that exists. The last line is
``max_abs_mask_diff=<value>``; the exit status is 0 only within the tolerances (float64: max ≤ 1e-9;
float32: max ≤ 2e-5 and mean ≤ 1e-6), 2 when the reference files are missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.model import BiRefNetConfig, create_model  # noqa: E402
from pipelines.model.birefnet import SWIN_L, SWIN_T  # noqa: E402
from pipelines.model.checkpoint import load_checkpoint  # noqa: E402
from pipelines.model.deterministic import deterministic_input, deterministic_state_dict  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REFERENCE_CANDIDATES = (Path("shared/reference"), Path("../shared/reference"), Path(".ref"))
BACKBONES = {"lite": SWIN_T, "general": SWIN_L}
TOLERANCES = {"float64": {"max": 1e-9, "mean": 1e-9}, "float32": {"max": 2e-5, "mean": 1e-6}}


def reference_files(reference_dir: Path, variant: str, case: str) -> tuple[Path, Path]:
    suffix = "" if case == "512" else f"_{case}"
    return (
        reference_dir / f"{variant}_state_dict_manifest.json",
        reference_dir / f"{variant}_reference{suffix}.npz",
    )


def reference_candidates(root: Path) -> list[Path]:
    """Where the reference folder is looked for when ``--reference-dir`` is not given, in order."""
    return [Path(os.path.normpath(root / candidate)) for candidate in REFERENCE_CANDIDATES]


def default_reference_dir(root: Path) -> Path | None:
    """The first of :func:`reference_candidates` that is a folder, or None."""
    return next((path for path in reference_candidates(root) if path.is_dir()), None)


def run(variant: str, case: str, dtype_name: str, reference_dir: Path, threads: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    manifest_path, npz_path = reference_files(reference_dir, variant, case)
    manifest = json.loads(manifest_path.read_text())
    entries = [(key, shape) for key, shape, _dtype in manifest["entries"]]
    state = deterministic_state_dict(entries)
    dtype = torch.float64 if dtype_name == "float64" else torch.float32
    reference = np.load(npz_path)

    models = []
    with tempfile.TemporaryDirectory() as tmp:
        from safetensors.torch import save_file

        st_path = Path(tmp) / "model.safetensors"
        save_file(state, str(st_path))
        pth_path = Path(tmp) / "model.pth"
        torch.save({f"module._orig_mod.{k}": v for k, v in state.items()}, pth_path)
        for path in (st_path, pth_path):
            model = create_model(BiRefNetConfig(backbone=BACKBONES[variant]))
            report = load_checkpoint(model, path)
            print(f"loaded {path.name}: {report.summary()}")
            models.append(model)
    first, second = (m.state_dict() for m in models)
    if any(not torch.equal(first[k], second[k]) for k in first):
        raise SystemExit("the .safetensors and .pth loads differ")
    model = models[0].to(dtype)
    del models

    x = deterministic_input(*reference["input"].shape[1:]).to(dtype)
    if not np.array_equal(x[0].float().numpy(), reference["input"]):
        raise SystemExit("generated input differs from the stored reference input")
    start = time.perf_counter()
    with torch.inference_mode():
        logits = model(x)[0, 0].double()
    seconds = time.perf_counter() - start
    mask = torch.sigmoid(logits).numpy()
    diff = np.abs(mask - reference["mask_f64"])
    logit_diff = np.abs(logits.numpy() - reference["logits"].astype(np.float64))
    return {
        "forward_s": seconds,
        "max_abs_mask_diff": float(diff.max()),
        "mean_abs_mask_diff": float(diff.mean()),
        "max_abs_logit_diff": float(logit_diff.max()),
    }


def main(argv: list[str] | None = None, root: Path = REPO) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=sorted(BACKBONES), default="lite")
    parser.add_argument("--case", choices=["512", "288x416"], default="288x416")
    parser.add_argument("--dtype", choices=sorted(TOLERANCES), default="float64")
    parser.add_argument("--reference-dir", type=Path, default=None,
                        help="folder of the reference files (default: the first of "
                             f"{', '.join(map(str, REFERENCE_CANDIDATES))} that exists)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    reference_dir = args.reference_dir or default_reference_dir(root)
    if reference_dir is None:
        looked = ", ".join(map(str, reference_candidates(root)))
        print(f"error: no reference folder: looked in {looked}; pass --reference-dir", file=sys.stderr)
        return 2
    if not reference_dir.is_dir():
        print(f"error: reference folder {reference_dir} does not exist", file=sys.stderr)
        return 2
    missing = [path.name for path in reference_files(reference_dir, args.variant, args.case) if not path.is_file()]
    if missing:
        print(f"error: {reference_dir} lacks {' and '.join(missing)}; pass --reference-dir", file=sys.stderr)
        return 2
    result = run(args.variant, args.case, args.dtype, reference_dir, args.threads)
    tol = TOLERANCES[args.dtype]
    ok = result["max_abs_mask_diff"] <= tol["max"] and result["mean_abs_mask_diff"] <= tol["mean"]
    print(
        f"variant={args.variant} case={args.case} dtype={args.dtype} forward_s={result['forward_s']:.1f} "
        f"mean_abs_mask_diff={result['mean_abs_mask_diff']:.3e} "
        f"max_abs_logit_diff={result['max_abs_logit_diff']:.3e} "
        f"tolerance_max={tol['max']:.0e} tolerance_mean={tol['mean']:.0e} {'PASS' if ok else 'FAIL'}"
    )
    print(f"max_abs_mask_diff={result['max_abs_mask_diff']:.3e}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
