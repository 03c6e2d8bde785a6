#!/usr/bin/env bash
# Creates .venv and installs the project with its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    # torch's CUDA build and its libraries take about 6 GB in .venv: say so now rather than leave
    # a half-installed environment behind pip's "No space left on device".
    need_gb="${BIREFNET_INSTALL_FREE_GB:-7}"
    free_kb=$(df -Pk . | awk 'NR == 2 {print $4}')
    if [ "$free_kb" -lt $((need_gb * 1024 * 1024)) ]; then
        echo "install.sh: .venv needs about ${need_gb} GB free; $((free_kb / 1024 / 1024)) GB free under $PWD." >&2
        echo "Free some space, or set BIREFNET_INSTALL_FREE_GB to try anyway." >&2
        exit 1
    fi
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch/torchvision first, pinned to the pair that imports together on this platform family.
.venv/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install --quiet -e ".[dev]"
