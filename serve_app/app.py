"""The application builder: ``args:`` of a Serve config → :class:`AppArgs` → ``.bind()``.

``import_path: serve_app.app:build_app`` in a config file calls :func:`build_app` with the
validated ``args``; the module-level ``app`` (defaults: BiRefNet-general, built when first read)
exists for ``serve build serve_app.app:app``, which does not accept builder functions.
"""

# No ``from __future__ import annotations`` here: Serve reads build_app's parameter annotation at
# runtime to validate ``args`` with pydantic, and a string annotation would skip that validation.
import logging
import os
from typing import cast

import ray
from ray.serve import Application
from ray.serve.deployment import Deployment

from pipelines.validate import UploadLimits
from serve_app.api_keys import ApiKeyConfigError, ApiKeyRegistry, load_key_registry, unknown_tiers
from serve_app.args import AppArgs, InferenceArgs, UploadArgs
from serve_app.deployments.inference import Inference
from serve_app.deployments.ingress import Ingress
from serve_app.deployments.postprocess import Postprocess
from serve_app.deployments.preprocess import Preprocess
from serve_app.deployments.rate_limiter import RateLimiter
from serve_app.deployments.telemetry import Telemetry
from serve_app.model import input_size_for

logger = logging.getLogger(__name__)


def cluster_gpus() -> float:
    """GPUs the Ray cluster has now; 0 when Ray is not initialised (``serve build``)."""
    if not ray.is_initialized():
        return 0.0
    return float(ray.cluster_resources().get("GPU", 0.0))


def resolve_device(requested: str, available_gpus: float) -> str:
    """``cpu`` or ``cuda``. ``auto`` picks CUDA only when the cluster has a GPU now, so a replica
    never waits for a GPU that does not exist. An explicit ``cuda`` is trusted even when no GPU is
    visible yet (an autoscaling GPU node group adds one on demand); it only logs a warning."""
    if requested == "auto":
        return "cuda" if available_gpus >= 1 else "cpu"
    if requested == "cuda" and available_gpus < 1:
        logger.warning(
            "model.device is 'cuda' but the Ray cluster has no GPU yet: Inference replicas wait until "
            "a GPU node joins. Use device: auto to fall back to CPU instead."
        )
    return requested


def replica_device(requested: str, resolved: str) -> str:
    """The device Inference replicas are given. Where ``auto`` chose CUDA they get ``auto`` too, so
    a replica whose GPU does not answer (driver or CUDA mismatch) falls back to the CPU, the spec's
    fallback that ``/health`` reports as ``degraded``, instead of failing to load."""
    return "auto" if requested == "auto" and resolved == "cuda" else resolved


def inference_actor_options(device: str, settings: InferenceArgs) -> dict[str, float]:
    """Inference's ``ray_actor_options``: one GPU per replica on CUDA, none on CPU.

    A ``ray_actor_options`` block for Inference in the config's ``deployments:`` section replaces
    this whole dict (Serve does not merge it), so resources are set through ``args.inference``.
    """
    return {"num_cpus": settings.num_cpus, "num_gpus": settings.num_gpus if device == "cuda" else 0.0}


def upload_limits(args: UploadArgs) -> UploadLimits:
    return UploadLimits(
        max_file_bytes=args.max_file_bytes,
        min_side=args.min_side,
        max_long_side=args.max_long_side,
        max_short_side=args.max_short_side,
        max_pixels=args.max_pixels,
        max_bomb_ratio=args.max_bomb_ratio,
        max_jpeg_scans=args.max_jpeg_scans,
    )


def key_registry(args: AppArgs) -> ApiKeyRegistry:
    """The API key registry, read once here (the only place the environment is consulted)."""
    registry = load_key_registry(args.api_keys, args.rate_limit.default_tier, os.environ)
    unknown = unknown_tiers(registry, args.rate_limit.tiers)
    if unknown:
        tiers = sorted(args.rate_limit.tiers)
        raise ApiKeyConfigError(f"API key entries name unknown tiers {unknown}; tiers are {tiers}")
    return registry


def build_app(args: AppArgs) -> Application:
    """The deployment graph for ``args`` (called by Serve with the config's validated ``args``)."""
    device = resolve_device(args.model.device, cluster_gpus())
    logger.info("Serving BiRefNet %r on %s", args.model.variant, device)
    limits = upload_limits(args.upload)
    telemetry = _deployment(Telemetry).bind(args.telemetry, args.stale_after_s)
    preprocess = _deployment(Preprocess).bind(input_size_for(args.model), limits)
    inference = (
        _deployment(Inference)
        .options(ray_actor_options=inference_actor_options(device, args.inference))
        .bind(args.model, replica_device(args.model.device, device), args.inference, telemetry)
    )
    postprocess = _deployment(Postprocess).bind()
    rate_limiter = _deployment(RateLimiter).bind(args.rate_limit) if args.rate_limit.enabled else None
    return _deployment(Ingress).bind(
        preprocess, inference, postprocess, telemetry, rate_limiter, limits, args.ingress, key_registry(args)
    )


def _deployment(decorated: object) -> Deployment:
    """``@serve.deployment`` returns a Deployment, but Ray's annotations leave it the class."""
    return cast(Deployment, decorated)


def __getattr__(name: str) -> Application:
    """``app``: the default application (BiRefNet-general), built on first access rather than on
    every import (the config's build task imports this module too, and would build and log it)."""
    if name == "app":
        return build_app(AppArgs())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
