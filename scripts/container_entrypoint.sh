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
python scripts/container_config.py "$CONFIG" "$DERIVED" --models-dir "${MODELS_DIR:-/models}"
exec serve run "$DERIVED"
