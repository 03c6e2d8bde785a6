"""Finding and fetching BiRefNet weights.

Lookup order for a released variant: an explicit path (config ``weights:``), then the
``BIREFNET_WEIGHTS`` environment variable, then the Hugging Face cache, then (when allowed) a
download through ``huggingface_hub`` with a progress bar and a size/sha256 check. Nothing here
touches the network at import time; only :func:`download_weights` does, when called.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from pipelines.model.variants import Variant, get_variant

logger = logging.getLogger(__name__)

WEIGHTS_ENV = "BIREFNET_WEIGHTS"
BUNDLED_DIR = Path(__file__).resolve().parent / "model" / "assets"


class WeightsNotFoundError(FileNotFoundError):
    """The weights file is not on this machine and could not be downloaded."""


class WeightsVerificationError(ValueError):
    """A downloaded file does not have the published size or sha256."""


def _hint(variant: Variant, looked: list[str], reason: str) -> str:
    where = "; ".join(looked) if looked else "nowhere"
    return (
        f"The weights of BiRefNet variant '{variant.name}' ({variant.hf_repo}/{variant.hf_filename}) "
        f"are not available: {reason}. Looked in: {where}. To place them by hand, download "
        f"'{variant.hf_filename}' from https://huggingface.co/{variant.hf_repo} (or the GitHub release "
        f"file '{variant.release_filename}') on a machine with network access, then either set "
        f"{WEIGHTS_ENV}=/path/to/that/file (or 'weights:' in the app config), or copy it into the "
        f"Hugging Face cache with `python scripts/download_model.py --model {variant.name}` run where "
        "the network is reachable (HF_HOME / HF_HUB_CACHE choose the cache folder)."
    )


def bundled_weights(variant: Variant) -> Path | None:
    """The weights file shipped inside the package (the demo model), if present."""
    path = BUNDLED_DIR / variant.hf_filename
    return path if not variant.hf_repo and path.is_file() else None


def hub_cache_dir(cache_dir: str | Path | None = None) -> str:
    """The Hugging Face cache folder in use (``HF_HUB_CACHE`` / ``HF_HOME`` aware)."""
    if cache_dir:
        return str(cache_dir)
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def cached_weights(variant: Variant, cache_dir: str | Path | None = None) -> Path | None:
    """The file in the Hugging Face cache, without any network access."""
    if not variant.hf_repo:
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(variant.hf_repo, variant.hf_filename, cache_dir=cache_dir)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def find_weights(
    variant: str | Variant,
    weights: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Path | None, list[str]]:
    """Locate the weights without network access: ``(path or None, places looked at)``."""
    variant = get_variant(variant)
    environ = os.environ if environ is None else environ
    looked: list[str] = []
    candidates: list[tuple[str, Path]] = []
    if weights:
        candidates.append(("config 'weights'", Path(weights).expanduser()))
    elif environ.get(WEIGHTS_ENV):
        candidates.append((WEIGHTS_ENV, Path(environ[WEIGHTS_ENV]).expanduser()))
    for label, path in candidates:
        looked.append(f"{label}={path}")
        if path.is_file():
            return path, looked
    if candidates:  # an explicit choice that is missing is an error, not a reason to fall back
        return None, looked
    bundled = bundled_weights(variant)
    if bundled is not None:
        return bundled, looked
    if variant.hf_repo:
        looked.append(f"Hugging Face cache {hub_cache_dir(cache_dir)}")
        cached = cached_weights(variant, cache_dir)
        if cached is not None:
            return cached, looked
    return None, looked


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _published_checksum(variant: Variant) -> tuple[str | None, int | None]:
    if variant.sha256 or variant.size_bytes:
        return variant.sha256, variant.size_bytes
    try:
        from huggingface_hub import HfApi

        info = HfApi().get_paths_info(variant.hf_repo, [variant.hf_filename])
        lfs = getattr(info[0], "lfs", None) if info else None
        if lfs is not None:
            return lfs.sha256, lfs.size
        return None, getattr(info[0], "size", None) if info else None
    except Exception as exc:  # metadata is best effort; the download itself already succeeded
        logger.warning("could not fetch the published checksum of %s: %s", variant.hf_repo, exc)
        return None, None


def verify_weights(path: Path, sha256: str | None, size_bytes: int | None) -> None:
    """Raise :class:`WeightsVerificationError` when ``path`` differs from the published file."""
    if size_bytes is not None and path.stat().st_size != size_bytes:
        raise WeightsVerificationError(
            f"{path.name} has {path.stat().st_size} bytes, the published file has {size_bytes}"
        )
    if sha256 is not None:
        actual = sha256_of(path)
        if actual != sha256:
            raise WeightsVerificationError(f"{path.name} has sha256 {actual}, the published file has {sha256}")


def download_weights(
    variant: str | Variant,
    *,
    output_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    verify: bool = True,
) -> Path:
    """Download a released variant's weights (progress bar on stderr) and verify them."""
    variant = get_variant(variant)
    if not variant.hf_repo:
        found = bundled_weights(variant)
        if found is None:
            raise WeightsNotFoundError(f"variant '{variant.name}' is local-only and has no bundled file")
        return found
    from huggingface_hub import hf_hub_download

    target = f"{output_dir}" if output_dir else f"Hugging Face cache {hub_cache_dir(cache_dir)}"
    logger.info("downloading %s/%s into %s", variant.hf_repo, variant.hf_filename, target)
    try:
        path = Path(
            hf_hub_download(
                variant.hf_repo,
                variant.hf_filename,
                cache_dir=cache_dir,
                local_dir=output_dir,
            )
        )
    except Exception as exc:
        raise WeightsNotFoundError(_hint(variant, [target], f"download failed ({type(exc).__name__})")) from exc
    if verify:
        sha, size = _published_checksum(variant)
        verify_weights(path, sha, size)
    return path


def resolve_weights(
    variant: str | Variant,
    weights: str | Path | None = None,
    *,
    allow_download: bool = True,
    cache_dir: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Path:
    """Find the weights on disk or download them; raise :class:`WeightsNotFoundError` with a fix."""
    variant = get_variant(variant)
    path, looked = find_weights(variant, weights, cache_dir=cache_dir, environ=environ)
    if path is not None:
        return path
    explicit = bool(weights) or bool((os.environ if environ is None else environ).get(WEIGHTS_ENV))
    if explicit:
        raise WeightsNotFoundError(_hint(variant, looked, "the configured file does not exist"))
    if not variant.hf_repo:
        raise WeightsNotFoundError(_hint(variant, looked, "the bundled demo weights are missing"))
    if not allow_download:
        raise WeightsNotFoundError(_hint(variant, looked, "downloads are disabled"))
    return download_weights(variant, cache_dir=cache_dir)
