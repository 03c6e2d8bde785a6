"""Build the inference backend ahead of time (the warm-up script): TensorRT engines into the cache,
or a ``torch.compile`` warm-up that fills inductor's on-disk cache.

    python scripts/build_engine.py --config serve_config.yaml      # with backend: tensorrt in args.model
    python scripts/build_engine.py --config configs/kuberay-rayservice.yaml --app birefnet --device cuda
    python scripts/build_engine.py --variant demo --device cpu --backend eager   # smoke test

With ``--config`` (a Serve config, or a KubeRay RayService manifest's ``serveConfigV2``) the model
settings are that application's ``args.model`` (``--app`` picks the application when the config has
several), validated as the service validates them, so what is built is exactly what its replicas
look up; flags given explicitly override the config. Without it the flags' defaults apply
(``--backend tensorrt --device cuda``, otherwise the service's defaults, float32 included).

Loads the same weights the service loads (``--weights`` or the usual lookup), builds through the
service's own selection, so the engine files and inductor's cache (``<engine-cache-dir>/inductor``)
land exactly where a replica looks for them, and prints which backend was built, in how long, and
why any fell back. Run it twice: the second ``built_s`` is what a replica's start costs with the
cache filled. Exit status 1 when the requested backend was not built, 2 when nothing could be built
(bad arguments or config, no GPU for ``--device cuda``, missing weights with ``--no-download``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import ValidationError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.model.variants import UnknownVariantError, get_variant  # noqa: E402
from pipelines.segmenter import Segmenter, SegmenterSettings, cuda_usable  # noqa: E402
from pipelines.weights import WeightsNotFoundError, resolve_weights  # noqa: E402
from serve_app.args import AppArgs, ModelArgs  # noqa: E402
from serve_app.model import segmenter_settings  # noqa: E402

# Without --config: today's flags (a TensorRT build on the GPU), the service's defaults otherwise.
FLAG_DEFAULTS = ModelArgs(backend="tensorrt")
FLAG_DEFAULT_DEVICE = "cuda"
# Overrides of where the weights come from: engine cache keys depend on the file (name, size,
# modification time), not on its path, so these alone do not make the build miss the service's lookup.
LOOKUP_NEUTRAL = {"weights", "allow_download"}

logger = logging.getLogger("build_engine")


class BuildSetupError(Exception):
    """The arguments, config, device or weights rule out any build (exit status 2)."""


def batch_sizes(text: str) -> tuple[int, ...]:
    """``"4,1,2"`` → ``(1, 2, 4)``: distinct positive integers, sorted."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1 or len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError(f"expected distinct positive integers, got {text!r}")
    return tuple(sorted(sizes))


def _one_line(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in error['loc']) or 'args'}: {error['msg']}" for error in exc.errors())


def app_model_args(config_path: Path, app: str | None) -> ModelArgs:
    """The ``args.model`` of application ``app`` (or of the only one) in a Serve config file, or in
    the ``serveConfigV2`` of a KubeRay RayService manifest (which may hold other objects too)."""
    try:
        documents = [d for d in yaml.safe_load_all(config_path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise BuildSetupError(f"cannot read {config_path}: {exc}".replace("\n", " ")) from exc
    document = documents[0] if documents else None
    for candidate in documents:
        spec = candidate.get("spec") if isinstance(candidate, dict) else None
        if isinstance(spec, dict) and isinstance(spec.get("serveConfigV2"), str):
            document = yaml.safe_load(spec["serveConfigV2"])
            break
    applications = document.get("applications") if isinstance(document, dict) else None
    if not isinstance(applications, list) or not applications:
        raise BuildSetupError(f"{config_path} has no 'applications' list")
    names = [entry.get("name") for entry in applications if isinstance(entry, dict)]
    if app is None:
        if len(applications) != 1:
            raise BuildSetupError(f"{config_path} has applications {names}; choose one with --app")
        entry = applications[0]
    else:
        matches = [entry for entry in applications if isinstance(entry, dict) and entry.get("name") == app]
        if not matches:
            raise BuildSetupError(f"{config_path} has no application {app!r}; it has {names}")
        entry = matches[0]
    try:
        return AppArgs.model_validate(entry.get("args") or {}).model
    except ValidationError as exc:
        raise BuildSetupError(f"{config_path} application {entry.get('name')!r}: {_one_line(exc)}") from None


def _comparable(value: Any) -> Any:
    return tuple(sorted(value)) if isinstance(value, tuple) else value


def resolve_settings(args: argparse.Namespace, cuda_available: Callable[[], bool] = cuda_usable) -> SegmenterSettings:
    """The settings a replica of the chosen application would build, with explicit flags applied."""
    base = app_model_args(args.config, args.app) if args.config else FLAG_DEFAULTS
    overrides: dict[str, Any] = {
        name: value
        for name, value in (
            ("variant", args.variant),
            ("weights", args.weights),
            ("backend", args.backend),
            ("dtype", args.dtype),
            ("batch_sizes", args.batch_sizes),
            ("compile_mode", args.compile_mode),
            ("engine_cache_dir", args.engine_cache_dir),
        )
        if value is not None
    }
    if args.no_download:
        overrides["allow_download"] = False
    try:
        model = ModelArgs.model_validate({**base.model_dump(), **overrides})
        get_variant(model.variant)
    except ValidationError as exc:
        raise BuildSetupError(_one_line(exc)) from None
    except UnknownVariantError as exc:
        raise BuildSetupError(str(exc)) from None
    if args.config:
        for name in sorted(set(overrides) - LOOKUP_NEUTRAL):
            if _comparable(getattr(model, name)) != _comparable(getattr(base, name)):
                logger.warning("--%s overrides %s's %s=%s: its replicas will not use what this builds",
                               name.replace("_", "-"), args.config, name, getattr(base, name))
    device = args.device or (base.device if args.config else FLAG_DEFAULT_DEVICE)
    if device == "auto":  # as the service resolves it, on this machine
        device = "cuda" if cuda_available() else "cpu"
    elif device == "cuda" and not cuda_available():
        raise BuildSetupError("device cuda needs a CUDA GPU and none is usable here (--device cpu builds for the CPU)")
    return segmenter_settings(model, device)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=None, help="Serve config to take args.model from")
    parser.add_argument("--app", default=None, help="application in --config (default: its only one)")
    parser.add_argument("--variant", default=None, help=f"default: {FLAG_DEFAULTS.variant}")
    parser.add_argument("--weights", default=None, help="checkpoint path (default: the service's lookup)")
    parser.add_argument("--device", default=None, choices=get_args(ModelArgs.model_fields["device"].annotation),
                        help=f"default: {FLAG_DEFAULT_DEVICE}, or the config's (auto: cuda when usable)")
    parser.add_argument("--backend", default=None, choices=get_args(ModelArgs.model_fields["backend"].annotation),
                        help=f"default: {FLAG_DEFAULTS.backend}")
    parser.add_argument("--dtype", default=None, choices=get_args(ModelArgs.model_fields["dtype"].annotation),
                        help=f"default: {FLAG_DEFAULTS.dtype}, as the service's")
    parser.add_argument("--batch-sizes", type=batch_sizes, default=None,
                        help=f"comma-separated (default: {','.join(map(str, FLAG_DEFAULTS.batch_sizes))})")
    parser.add_argument("--compile-mode", default=None,
                        choices=get_args(ModelArgs.model_fields["compile_mode"].annotation))
    parser.add_argument("--engine-cache-dir", default=None, help="default: ~/.cache/birefnet-serve/engines")
    parser.add_argument("--no-download", action="store_true", help="fail instead of downloading weights")
    return parser


def main(
    argv: list[str] | None = None,
    build: Callable[[SegmenterSettings], Any] = Segmenter.from_settings,
    cuda_available: Callable[[], bool] = cuda_usable,
) -> int:
    """Build the backend of the resolved settings with ``build`` and report it (the exit status)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.app is not None and args.config is None:
        parser.error("--app needs --config")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        settings = resolve_settings(args, cuda_available)
        if not settings.allow_download:
            resolve_weights(settings.variant, settings.weights, allow_download=False)
        print(f"settings: variant={settings.variant} device={settings.device} dtype={settings.dtype} "
              f"backend={settings.backend} batch_sizes={','.join(map(str, settings.batch_sizes))} "
              f"compile_mode={settings.compile_mode} engine_cache_dir={settings.engine_cache_dir or '(default)'}")
        start = time.perf_counter()
        segmenter = build(settings)
    except (BuildSetupError, WeightsNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    segmenter.warm_up()
    info = segmenter.info()
    print(f"variant={info.variant} device={info.device} dtype={info.dtype} backend={info.backend} "
          f"built_s={time.perf_counter() - start:.1f}")
    print(f"backend: {segmenter.inference_backend.describe()}")
    print(f"tensorrt_enabled={info.tensorrt_enabled} tensorrt_reason={info.tensorrt_reason}")
    return 0 if info.backend == settings.backend else 1


if __name__ == "__main__":
    raise SystemExit(main())
