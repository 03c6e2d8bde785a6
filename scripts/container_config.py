"""Derive the container's Serve config: listen on every interface, caches on the volume, the spec's env.

    python scripts/container_config.py serve_config.yaml /tmp/serve_config.yaml --models-dir /models

The image's entrypoint runs this at every start, so a config mounted over the bundled one gets the
same changes, and without environment variables only these two:

* ``http_options.host`` becomes ``0.0.0.0``: the configs bind 127.0.0.1, which nobody outside the
  container can reach (the port mapping of ``docker run -p`` is the boundary instead);
* every application built by ``serve_app.app:build_app`` whose ``model`` args name no
  ``engine_cache_dir`` gets ``<models-dir>/engines``, so TensorRT engines and torch.compile's cache
  land on the volume beside the Hugging Face cache (``HF_HOME``) and survive the container.

Given ``--gpus N`` (the entrypoint counts the GPUs the container sees), Inference gets at most N
replicas where the model may run on CUDA: each asks for a whole GPU, and one more than the host has
would wait forever (the deployment stays UPSCALING) instead of serving.

It also reads the environment variables of spec §9.2 (``docker run -e BIREFNET_DEVICE=cpu …``, or a
compose ``env_file``), each overriding its config key; see :data:`ENVIRONMENT`. The variables the
spec lists that have no meaning here (worker counts, pinned memory, a log file) are named on stderr
as ignored, and a value that does not parse stops the start with a message naming the variable.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serve_app.args import ModelArgs, RateLimitArgs  # noqa: E402
from serve_app.form import parse_bool  # noqa: E402

APP_IMPORT_PATH = "serve_app.app:build_app"

# Spec §9.2 variable → what it sets (``args`` paths are relative to the application's ``args``).
ENVIRONMENT = {
    "BIREFNET_MODEL_PATH": "args.model.weights",
    "BIREFNET_DEVICE": "args.model.device (auto, cpu or cuda)",
    "BIREFNET_USE_TENSORRT": "args.model.backend: tensorrt when true; eager when false and tensorrt was configured",
    "BIREFNET_BATCH_SIZE": "Inference user_config.max_batch_size (max_ongoing_requests raised to twice it, "
    "the autoscaling target set to it; a compiled backend's batch_sizes extended to it)",
    "BIREFNET_CUDNN_BENCHMARK": "args.model.cudnn_benchmark",
    "BIREFNET_MAX_IMAGE_SIZE_MB": "args.upload.max_file_mb",
    "BIREFNET_MAX_MEGAPIXELS": "args.upload.max_megapixels",
    "BIREFNET_PROCESSING_TIMEOUT_SEC": "args.ingress.timeout_s (http_options.request_timeout_s and the Ingress's "
    "graceful_shutdown_timeout_s kept above it)",
    "BIREFNET_RATE_LIMIT_PER_MINUTE": "the default tier's 60 s rule",
    "BIREFNET_RATE_LIMIT_PER_SECOND": "the default tier's 1 s rule",
    "LOG_LEVEL": "logging_config.log_level",
}
IGNORED = {
    "BIREFNET_NUM_WORKERS": "replicas are set per stage in the config's deployments section",
    "BIREFNET_PIN_MEMORY": "uploads to a GPU always use pinned memory",
    "LOG_FILE": "Ray writes the logs under /tmp/ray/session_latest/logs and to the container's output",
}


def container_config(
    config: dict[str, Any], models_dir: str, environ: Mapping[str, str] | None = None, gpus: int | None = None
) -> dict[str, Any]:
    """A copy of the Serve ``config`` for the container (see the module docstring).

    Raises:
        ValueError: an environment variable of :data:`ENVIRONMENT` does not parse.
    """
    environ = {} if environ is None else environ
    derived = copy.deepcopy(config)
    http = derived.setdefault("http_options", {})
    http["host"] = "0.0.0.0"
    if "LOG_LEVEL" in environ:
        derived.setdefault("logging_config", {})["log_level"] = _log_level(environ["LOG_LEVEL"])
    for app in derived.get("applications", []):
        if app.get("import_path") != APP_IMPORT_PATH:
            continue
        args = app.setdefault("args", {})
        model = args.setdefault("model", {})
        if not model.get("engine_cache_dir"):
            model["engine_cache_dir"] = f"{models_dir.rstrip('/')}/engines"
        _apply_environment(app, environ)
        timeout = args.get("ingress", {}).get("timeout_s")
        if timeout is not None:
            if http.get("request_timeout_s", 0) <= timeout:
                http["request_timeout_s"] = timeout + 30  # the spec's 504 must come before Serve's 408
            ingress = _deployment(app, "Ingress")  # a stopping replica lets its requests finish
            if ingress.get("graceful_shutdown_timeout_s", 20) <= timeout:  # 20: Serve's default
                ingress["graceful_shutdown_timeout_s"] = timeout + 15
        if gpus and model.get("device", ModelArgs().device) != "cpu":
            _cap_inference_replicas(_deployment(app, "Inference"), gpus)
    return derived


def _cap_inference_replicas(inference: dict[str, Any], gpus: int) -> None:
    """At most one Inference replica per GPU the container sees."""
    autoscaling = inference.get("autoscaling_config")
    if autoscaling is not None:
        for key in ("min_replicas", "initial_replicas", "max_replicas"):
            if key in autoscaling:
                autoscaling[key] = min(autoscaling[key], gpus)
    if isinstance(inference.get("num_replicas"), int):
        inference["num_replicas"] = min(inference["num_replicas"], gpus)


def _apply_environment(app: dict[str, Any], environ: Mapping[str, str]) -> None:
    args = app["args"]
    model, upload = args["model"], args.setdefault("upload", {})
    if "BIREFNET_MODEL_PATH" in environ:
        model["weights"] = environ["BIREFNET_MODEL_PATH"]
    if "BIREFNET_DEVICE" in environ:
        model["device"] = _choice("BIREFNET_DEVICE", environ["BIREFNET_DEVICE"], ("auto", "cpu", "cuda"))
    if "BIREFNET_USE_TENSORRT" in environ:
        if _flag("BIREFNET_USE_TENSORRT", environ["BIREFNET_USE_TENSORRT"]):
            model["backend"] = "tensorrt"
        elif model.get("backend") == "tensorrt":
            model["backend"] = "eager"
    if "BIREFNET_CUDNN_BENCHMARK" in environ:
        model["cudnn_benchmark"] = _flag("BIREFNET_CUDNN_BENCHMARK", environ["BIREFNET_CUDNN_BENCHMARK"])
    if "BIREFNET_MAX_IMAGE_SIZE_MB" in environ:
        upload["max_file_mb"] = _number("BIREFNET_MAX_IMAGE_SIZE_MB", environ["BIREFNET_MAX_IMAGE_SIZE_MB"], float)
    if "BIREFNET_MAX_MEGAPIXELS" in environ:
        upload["max_megapixels"] = _number("BIREFNET_MAX_MEGAPIXELS", environ["BIREFNET_MAX_MEGAPIXELS"], float)
    if "BIREFNET_PROCESSING_TIMEOUT_SEC" in environ:
        timeout = _number("BIREFNET_PROCESSING_TIMEOUT_SEC", environ["BIREFNET_PROCESSING_TIMEOUT_SEC"], float)
        args.setdefault("ingress", {})["timeout_s"] = timeout
    for name, period in (("BIREFNET_RATE_LIMIT_PER_MINUTE", 60), ("BIREFNET_RATE_LIMIT_PER_SECOND", 1)):
        if name in environ:
            _set_default_tier_rule(args, period, _number(name, environ[name], int))
    if "BIREFNET_BATCH_SIZE" in environ:
        batch = _number("BIREFNET_BATCH_SIZE", environ["BIREFNET_BATCH_SIZE"], int)
        inference = _deployment(app, "Inference")
        inference.setdefault("user_config", {})["max_batch_size"] = batch
        inference["max_ongoing_requests"] = max(inference.get("max_ongoing_requests", 0), 2 * batch)
        autoscaling = inference.get("autoscaling_config")
        if autoscaling is not None:  # about one full batch per replica before another is added
            autoscaling["target_ongoing_requests"] = batch
        sizes = model.get("batch_sizes") or list(ModelArgs().batch_sizes)
        if model.get("backend") in ("compile", "tensorrt") and max(sizes) < batch:
            model["batch_sizes"] = sorted({*sizes, batch})  # or every full batch runs as several chunks


def _set_default_tier_rule(args: dict[str, Any], period_s: float, limit: int) -> None:
    """Replace (or add) the default tier's rule over ``period_s`` and turn rate limiting on; other
    tiers keep their rules."""
    rate_limit = args.setdefault("rate_limit", {})
    rate_limit["enabled"] = True
    defaults = RateLimitArgs()
    tier = rate_limit.get("default_tier", defaults.default_tier)
    default_tiers = {name: [rule.model_dump() for rule in rules] for name, rules in defaults.tiers.items()}
    tiers = rate_limit.setdefault("tiers", default_tiers)
    # A concurrency cap ({concurrent}) has no period: it stays, after the rate rules.
    rules = [rule for rule in tiers.get(tier, []) if float(rule.get("period_s", 0)) != period_s]
    tiers[tier] = sorted(
        [*rules, {"limit": limit, "period_s": period_s}], key=lambda rule: -float(rule.get("period_s", 0))
    )


def _deployment(app: dict[str, Any], name: str) -> dict[str, Any]:
    deployments: list[dict[str, Any]] = app.setdefault("deployments", [])
    for deployment in deployments:
        if deployment.get("name") == name:
            return deployment
    deployments.append({"name": name})
    return deployments[-1]


def _flag(name: str, value: str) -> bool:
    parsed = parse_bool(value)  # the spellings the form's boolean fields accept
    if parsed is None:
        raise ValueError(f"{name}={value!r}: expected true or false")
    return parsed


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    lowered = value.strip().lower()
    if lowered not in choices:
        raise ValueError(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return lowered


def _number(name: str, value: str, kind: type[int] | type[float]) -> Any:
    try:
        number = kind(value.strip())
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected a {'whole ' if kind is int else ''}number") from None
    if not math.isfinite(number) or number <= 0:  # float() also reads "nan" and "inf"
        raise ValueError(f"{name}={value!r}: must be a positive, finite number")
    return number


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"LOG_LEVEL={value!r}: expected debug, info, warning, error or critical")
    return level


def main(argv: list[str] | None = None) -> int:
    epilog = "environment variables (spec §9.2):\n" + "\n".join(f"  {k}: {v}" for k, v in ENVIRONMENT.items())
    epilog += "\nignored:\n" + "\n".join(f"  {k}: {v}" for k, v in IGNORED.items())
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="the Serve config to start from")
    parser.add_argument("output", type=Path, help="where to write the container's config")
    parser.add_argument("--models-dir", default="/models", help="the volume for weights and compiled engines")
    parser.add_argument("--gpus", type=int, default=None,
                        help="GPUs the container sees: Inference gets at most one replica per GPU (0: no cap)")
    args = parser.parse_args(argv)
    config = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    try:
        derived = container_config(config, args.models_dir, os.environ, args.gpus)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.output.write_text(yaml.safe_dump(derived, sort_keys=False), encoding="utf-8")
    applied = sorted(name for name in ENVIRONMENT if name in os.environ)
    print(f"{args.config} → {args.output}: host 0.0.0.0, engines under {args.models_dir}/engines"
          + (f", Inference replicas at most {args.gpus} (one per GPU)" if args.gpus else "")
          + (f"; from the environment: {', '.join(applied)}" if applied else ""), file=sys.stderr)
    for name in sorted(set(IGNORED) & set(os.environ)):
        print(f"ignored: {name} ({IGNORED[name]})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
