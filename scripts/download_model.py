"""Download a released BiRefNet variant's weights into the Hugging Face cache (or a folder).

    python scripts/download_model.py --model general
    python scripts/download_model.py --model lite --output-dir ./weights
    python scripts/download_model.py --model demo --output-dir ./weights   # copies the bundled file

With ``--output-dir`` the file lands in that folder under its published name, for the bundled demo
weights as for downloaded ones, and the last line is ``weights: <that path>``.

Shows a progress bar and verifies the published size/sha256. Offline or on failure it prints one
paragraph saying which file is missing, where it was looked for, and how to place it by hand.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.model.variants import VARIANTS, UnknownVariantError, Variant, get_variant  # noqa: E402
from pipelines.weights import (  # noqa: E402
    WeightsNotFoundError,
    WeightsVerificationError,
    bundled_weights,
    download_weights,
    find_weights,
)


def copy_bundled(variant: Variant, output_dir: Path) -> Path:
    """Copy a local-only variant's bundled file into ``output_dir``, as a download would place it."""
    source = bundled_weights(variant)
    if source is None:
        raise WeightsNotFoundError(f"variant '{variant.name}' is local-only and has no bundled file")
    target = output_dir / variant.hf_filename
    output_dir.mkdir(parents=True, exist_ok=True)
    if not (target.exists() and target.samefile(source)):
        shutil.copyfile(source, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="general", help=f"variant: {', '.join(VARIANTS)}")
    parser.add_argument("--output-dir", type=Path, default=None, help="a folder instead of the HF cache")
    parser.add_argument("--cache-dir", type=Path, default=None, help="Hugging Face cache folder")
    parser.add_argument("--no-verify", action="store_true", help="skip the size/sha256 check")
    parser.add_argument("--list", action="store_true", help="list the variants and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.list:
        for variant in VARIANTS.values():
            h, w = variant.input_size
            print(f"{variant.name:12s} {variant.backbone_name:10s} {w}x{h:<5d} {variant.hf_repo or '(bundled)':32s} "
                  f"{variant.description}")
        return 0
    try:
        variant = get_variant(args.model)
        if args.output_dir is None:
            existing, _ = find_weights(variant, cache_dir=args.cache_dir)
            if existing is not None:
                print(f"already present: {existing}")
                return 0
        if args.output_dir is not None and not variant.hf_repo:
            path = copy_bundled(variant, args.output_dir)
        else:
            path = download_weights(variant, output_dir=args.output_dir, cache_dir=args.cache_dir,
                                    verify=not args.no_verify)
    except (UnknownVariantError, WeightsNotFoundError, WeightsVerificationError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"weights: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
