from __future__ import annotations

import time

import torch

from pipelines.timing import timed


def test_timed_returns_the_seconds_the_call_took() -> None:
    calls: list[int] = []

    def run() -> None:
        calls.append(1)
        time.sleep(0.02)

    assert timed(run, torch.device("cpu")) >= 0.02 and calls == [1]
