from __future__ import annotations

import pytest
from pydantic import ValidationError

from serve_app.args import ModelArgs
from serve_app.model import input_size_for, segmenter_settings


def test_backend_settings_reach_the_segmenter() -> None:
    args = ModelArgs(
        variant="lite",
        backend="compile",
        compile_mode="reduce-overhead",
        batch_sizes=(8, 1, 4),
        patch_order="legacy",
        dtype="float16",
        tf32=False,
    )
    settings = segmenter_settings(args, "cuda")
    assert (settings.variant, settings.device, settings.dtype) == ("lite", "cuda", "float16")
    assert settings.backend == "compile" and settings.compile_mode == "reduce-overhead"
    assert settings.batch_sizes == (1, 4, 8)
    assert settings.patch_order == "legacy"
    assert settings.tf32 is False and settings.cudnn_benchmark is None


def test_unknown_backend_is_rejected_at_deploy_time() -> None:
    with pytest.raises(ValidationError, match="backend"):
        ModelArgs(backend="onnx")  # type: ignore[arg-type]


def test_every_segmenter_setting_has_a_config_field() -> None:
    import dataclasses

    from pipelines.segmenter import SegmenterSettings

    settings = {field.name for field in dataclasses.fields(SegmenterSettings)}
    assert settings == set(ModelArgs.model_fields) - {"segmenter_factory"}


def test_input_size_overrides_the_variant_for_every_stage() -> None:
    args = ModelArgs(variant="dynamic", input_size=(1536, 2048))
    assert input_size_for(args) == (1536, 2048)  # Preprocess resizes to it
    assert segmenter_settings(args, "cpu").input_size == (1536, 2048)  # the model runs at it
    assert input_size_for(ModelArgs(variant="dynamic")) == (1024, 1024)
    with pytest.raises(ValidationError, match="multiple of 32"):
        ModelArgs(input_size=(1000, 1024))


def test_model_thread_runs_every_call_on_one_thread_with_the_callers_context() -> None:
    import asyncio
    import contextvars
    import threading
    import time

    from serve_app.model import ModelThread

    request_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("request_id", default=None)

    def model_call() -> tuple[int, int | None]:
        time.sleep(0.02)  # long enough that a pool would hand overlapping calls to other threads
        return threading.get_ident(), request_id.get()

    async def requests() -> list[tuple[int, int | None]]:
        thread = ModelThread()

        async def one(number: int) -> tuple[int, int | None]:
            request_id.set(number)
            return await thread.run(model_call)

        return await asyncio.gather(*(one(number) for number in range(6)))

    results = asyncio.run(requests())
    threads = {ident for ident, _ in results}
    assert len(threads) == 1 and threading.get_ident() not in threads
    assert [number for _, number in results] == list(range(6))
