#!/usr/bin/env bash
# Runs the service on this machine: `bash scripts/serve_local.sh [config]` (default: configs/offline.yaml,
# the small demo model, no network needed). Ctrl-C stops it. http://127.0.0.1:55433/docs for the API.
#
# `serve run` starts its own local Ray instance, which uses token authentication (Ray >= 2.52 writes
# ~/.ray/auth_token); run other CLI commands against it as: RAY_AUTH_MODE=token .venv/bin/serve status
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="${1:-configs/offline.yaml}"
if [ ! -x .venv/bin/serve ]; then
    echo "No .venv/bin/serve: run 'bash scripts/install.sh' first" >&2
    exit 1
fi
exec .venv/bin/serve run "$CONFIG"
