from __future__ import annotations

import torch

from pipelines.backends.tensorrt import engine_cache_key


def _key(**overrides: object) -> str:
    fields: dict[str, object] = {
        "variant": "general", "weights_id": "abc123", "input_size": (1024, 1024), "batch_size": 4,
        "dtype": torch.float16, "gpu_name": "NVIDIA H100 80GB HBM3", "tensorrt_version": "2.9.0_10.13.3",
    }
    fields.update(overrides)
    return engine_cache_key(**fields)  # type: ignore[arg-type]


def test_engine_cache_key_names_everything_the_engine_depends_on() -> None:
    assert _key() == "general-wabc123-1024x1024-b4-float16-NVIDIA_H100_80GB_HBM3-trt2.9.0_10.13.3"


def test_engine_cache_key_changes_with_each_input() -> None:
    changes = [
        {"variant": "lite"}, {"weights_id": "def456"}, {"input_size": (512, 512)}, {"batch_size": 8},
        {"dtype": torch.float32}, {"gpu_name": "NVIDIA H200"}, {"tensorrt_version": "2.10.0_10.14"},
    ]
    keys = {_key(**change) for change in changes} | {_key()}
    assert len(keys) == len(changes) + 1


def test_engine_cache_key_is_a_safe_file_name() -> None:
    key = _key(gpu_name="GeForce RTX 4090 / (laptop)")
    assert "/" not in key and " " not in key
