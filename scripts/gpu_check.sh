#!/usr/bin/env bash
# The device check of issue 7: GPU tests and the GPU benchmark, within 8 minutes on one H100.
#
#   bash scripts/gpu_check.sh                  # on the GPU machine, from the repo root
#   GPU_CHECK_DRY=1 bash scripts/gpu_check.sh  # same steps on the CPU with the tiny demo config (< 3 min)
#
# Needs python3 with torch, torchvision and numpy; pytest is optional (the tests are skipped
# without it). Installs nothing, needs no network and no Ray. Writes the report to
# $OUT/gpu_check.md (and the full log to $OUT/gpu_check.log) when OUT is set, and prints it.
# Reference data for the equivalence case is looked up in shared/reference, ../shared/reference
# or .ref (copy lite_state_dict_manifest.json and lite_reference_288x416.npz there to carry it).
# Exit status: 0 when every step passed, 1 otherwise (a step that ran out of time counts as failed).

set -u
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
DRY=${GPU_CHECK_DRY:-0}
REPORT_DIR=${OUT:-$(mktemp -d)}
REPORT="$REPORT_DIR/gpu_check.md"
LOG="$REPORT_DIR/gpu_check.log"
: >"$REPORT"
: >"$LOG"
export PYTHONUNBUFFERED=1
STATUS=0
STARTED=$(date +%s)

say() { printf '%s\n' "$@" >>"$REPORT"; }

# step NAME TIMEOUT_S COMMAND...: runs the command, logs its output, keeps its table rows in the report.
step() {
    local name=$1 limit=$2 rc start
    shift 2
    start=$(date +%s)
    echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
    say "" "## $name" "" "\`$*\`" ""
    timeout --kill-after=10 "$limit" "$@" >"$REPORT_DIR/step.out" 2>&1
    rc=$?
    cat "$REPORT_DIR/step.out" >>"$LOG"
    say "" "Exit $rc after $(($(date +%s) - start)) s." ""
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        say "**Timed out after ${limit} s**; the rows it finished:" ""
        grep '^| ' "$REPORT_DIR/step.out" >>"$REPORT"
        STATUS=1
    elif [ "$rc" -ne 0 ]; then
        STATUS=1
    fi
    rm -f "$REPORT_DIR/step.out"
    return 0
}

if [ "$DRY" = "1" ]; then
    MODE="dry run on the CPU (demo variant at 64×64; torch.compile skipped: minutes to compile on a CPU)"
    BENCH_EAGER=(--device cpu --threads 2 --variants demo --size 64x64 --backends eager,tensorrt
                 --dtypes float32,float16 --batches 1,2 --latency-runs 3 --throughput-runs 1 --warmup 1
                 --agreement-inputs 2 --equivalence)
    BENCH_COMPILED=()
    BENCH_DEFORM=(--device cpu --threads 2 --batch 1 --channels 8 --out-channels 8 --size 16 --repeats 2)
    LIMITS=(60 120 0 30)
else
    MODE="GPU run"
    BENCH_EAGER=(--device cuda --variants general,lite --backends eager --dtypes float32,float16,bfloat16
                 --batches 1,2,4,8,16 --latency-runs 30 --throughput-runs 3 --equivalence --time-budget-s 170)
    BENCH_COMPILED=(--device cuda --variants lite,general --backends tensorrt,compile --dtypes float16
                    --batches 1,8 --latency-runs 30 --throughput-runs 3 --compile-mode max-autotune-no-cudagraphs
                    --time-budget-s 100)
    # general's finest decoder level at 1024²: 256×256, 64 channels into 256-wide ASPP branches.
    BENCH_DEFORM=(--device cuda --batch 4 --channels 64 --out-channels 256 --size 256 --repeats 10)
    LIMITS=(90 210 150 30)
fi

say "# gpu_check — $MODE" ""
say "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
say "$($PY -c 'import torch, torchvision; print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, CUDA available: {torch.cuda.is_available()}" + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))' 2>&1)"
if [ "$DRY" != "1" ] && command -v nvidia-smi >/dev/null; then
    say "" '```' "$(nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1)" '```'
fi

if $PY -c 'import pytest' 2>/dev/null; then
    # -m needs_cuda overrides the default "not needs_cuda" of pyproject; on a CPU they are collected and skipped.
    step "needs_cuda tests" "${LIMITS[0]}" $PY -m pytest -q -p no:cacheprovider -m needs_cuda -rs tests/pipelines/backends
    grep -E '^(PASSED|FAILED|SKIPPED|ERROR)|passed|failed|skipped' "$LOG" | tail -n 12 | sed 's/^/    /' >>"$REPORT"
else
    say "" "## needs_cuda tests" "" "pytest is not installed here: skipped."
fi

step "benchmark: eager, all precisions" "${LIMITS[1]}" $PY scripts/bench_gpu.py "${BENCH_EAGER[@]}" --markdown "$REPORT"
if [ ${#BENCH_COMPILED[@]} -gt 0 ]; then
    step "benchmark: TensorRT and torch.compile, float16" "${LIMITS[2]}" \
        $PY scripts/bench_gpu.py "${BENCH_COMPILED[@]}" --markdown "$REPORT"
fi

# Which deformable conv the CUDA default (deform_sampling: auto → torchvision) should be.
step "deformable conv: torchvision vs grid_sample" "${LIMITS[3]}" $PY scripts/bench_deform_conv.py "${BENCH_DEFORM[@]}"
grep -E '^(device=|kernel=)' "$LOG" | tail -n 7 | sed 's/^/    /' >>"$REPORT"

say "" "Total $(($(date +%s) - STARTED)) s, exit status $STATUS."
cat "$REPORT"
exit $STATUS
