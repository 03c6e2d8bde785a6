"""The full-float32 block the agreement references run in (``tf32_disabled``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from pipelines.backends.agreement import tf32_disabled
from tests.pipelines.backends.fakes import cuda_math_restored

REPO = Path(__file__).resolve().parents[3]


def test_tf32_is_off_inside_the_block_and_back_on_after() -> None:
    with cuda_math_restored():
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        with tf32_disabled():
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


def test_flags_already_off_are_not_written_so_the_compile_cache_key_stays_the_same() -> None:
    # In a fresh interpreter: once any test has written the flags, "none" is gone for good.
    script = (
        "import torch\n"
        "from pipelines.backends.agreement import tf32_disabled\n"
        "before = torch.backends.cuda.matmul.fp32_precision\n"
        "with tf32_disabled():\n"
        "    pass\n"
        "print(before, torch.backends.cuda.matmul.fp32_precision)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                            check=True)
    before, after = result.stdout.split()
    assert after == before  # inductor's FX graph cache key includes it
