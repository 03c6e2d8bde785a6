"""The device check's dry run, so that scripts/gpu_check.sh cannot rot between device sessions."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_gpu_check_dry_run_writes_the_report(tmp_path: Path) -> None:
    env = {**os.environ, "GPU_CHECK_DRY": "1", "OUT": str(tmp_path), "PYTHON": sys.executable}
    result = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    report = (tmp_path / "gpu_check.md").read_text()
    assert "# gpu_check — dry run on the CPU" in report
    assert "| demo | 64×64 | eager | float32 |" in report
    assert "unavailable: torch_tensorrt is not installed" in report or "| tensorrt | float32 | " in report
    assert "kernel=7 pass=forward+backward torchvision/grid_sample=" in report
    assert "## benchmark: a row per batch size" in report and "--per-batch" in report
    for batch in (1, 2):  # the pre-warms, one per batch size, each with its row
        assert f"## compile cache pre-warm, batch {batch}" in report
    assert report.count("| demo | 64×64 | eager | float32 | — |") >= 2
    assert "batch 2: forward p50" in report and "attention kernels: FLASH_ATTENTION ×" in report  # profile_gpu.py
    assert "aten::upsample_bilinear2d by input shape" in report
    assert "2×3×64×64 → 32×32: nchw " in report and "total: nchw " in report  # bench_resize.py
    assert "exit status 0" in report
    assert report.strip() in result.stdout
