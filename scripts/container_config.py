"""Derive the container's Serve config from a config file: listen on every interface, caches on the volume.

    python scripts/container_config.py serve_config.yaml /tmp/serve_config.yaml --models-dir /models

The image's entrypoint runs this at every start, so a config mounted over the bundled one gets the
same two changes and nothing else:

* ``http_options.host`` becomes ``0.0.0.0``: the configs bind 127.0.0.1, which nobody outside the
  container can reach (the port mapping of ``docker run -p`` is the boundary instead);
* every application built by ``serve_app.app:build_app`` whose ``model`` args name no
  ``engine_cache_dir`` gets ``<models-dir>/engines``, so TensorRT engines and torch.compile's cache
  land on the volume beside the Hugging Face cache (``HF_HOME``) and survive the container.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

APP_IMPORT_PATH = "serve_app.app:build_app"


def container_config(config: dict[str, Any], models_dir: str) -> dict[str, Any]:
    """A copy of the Serve ``config`` for the container (see the module docstring)."""
    derived = copy.deepcopy(config)
    derived.setdefault("http_options", {})["host"] = "0.0.0.0"
    for app in derived.get("applications", []):
        if app.get("import_path") != APP_IMPORT_PATH:
            continue
        model = app.setdefault("args", {}).setdefault("model", {})
        if not model.get("engine_cache_dir"):
            model["engine_cache_dir"] = f"{models_dir.rstrip('/')}/engines"
    return derived


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="the Serve config to start from")
    parser.add_argument("output", type=Path, help="where to write the container's config")
    parser.add_argument("--models-dir", default="/models", help="the volume for weights and compiled engines")
    args = parser.parse_args(argv)
    config = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    args.output.write_text(yaml.safe_dump(container_config(config, args.models_dir), sort_keys=False),
                           encoding="utf-8")
    print(f"{args.config} → {args.output}: host 0.0.0.0, engines under {args.models_dir}/engines", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
