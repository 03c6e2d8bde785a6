#!/usr/bin/env bash
# The image's entrypoint: `docker run … birefnet-serve [config]` (default: serve_config.yaml, the
# production defaults; configs/offline.yaml for the bundled demo model without network).
#
# Derives the container's config (scripts/container_config.py: host 0.0.0.0, engine and compile
# caches under $MODELS_DIR) and runs it in the foreground with a local Ray. Inside the container,
# other Serve commands need token auth explicit: docker exec <name> env RAY_AUTH_MODE=token serve status
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="${1:-serve_config.yaml}"
DERIVED="${TMPDIR:-/tmp}/birefnet-serve-config.yaml"
# One Inference replica per GPU this container sees (none counted: no cap).
GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
python scripts/container_config.py "$CONFIG" "$DERIVED" --models-dir "${MODELS_DIR:-/models}" --gpus "${GPUS:-0}"
exec serve run "$DERIVED"
