"""How the Inference stage obtains its segmenter: the protocol it relies on and the factory.

``pipelines.segmenter`` (and with it torch) is imported only when a factory is resolved, inside
an Inference replica, never by the ingress.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import numpy as np

from pipelines.datatypes import Matte
from serve_app.args import ModelArgs


class SegmenterInfoLike(Protocol):
    """What the Inference deployment reads of ``pipelines.segmenter.SegmenterInfo``."""

    @property
    def model_name(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def backend(self) -> str: ...
    @property
    def tensorrt_enabled(self) -> bool: ...
    @property
    def tensorrt_reason(self) -> str: ...
    @property
    def backend_fallbacks(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def gpu_memory_free_mb(self) -> float | None: ...
    @property
    def checkpoint_path(self) -> str: ...
    @property
    def checkpoint_present(self) -> bool: ...


class SegmenterLike(Protocol):
    """What the Inference deployment needs of ``pipelines.segmenter.Segmenter``."""

    @property
    def input_size(self) -> tuple[int, int]: ...

    @property
    def model_name(self) -> str: ...

    def segment(self, images: Sequence[np.ndarray]) -> list[Matte]: ...

    def warm_up(self) -> None: ...

    def info(self) -> SegmenterInfoLike: ...


SegmenterFactory = Callable[[Any], SegmenterLike]
_T = TypeVar("_T")


class ModelThread:
    """Runs every call into the model (build, warm-up, batches) on one dedicated thread, off the
    event loop.

    torch.compile's CUDA graphs (``compile_mode: reduce-overhead``) keep their state per thread: a
    graph tree made on one thread is not found from another, so a compile that happened on any
    other thread than the first (a recompile, a rebuild) would fail. ``asyncio.to_thread`` hands
    calls to whichever pool thread is free. One worker also runs the batches one at a time, as the
    Segmenter's lock would anyway.
    """

    def __init__(self, name: str = "model") -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` on the thread, with the caller's context variables (Serve's request ids)."""
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)


def segmenter_settings(model: ModelArgs, device: str) -> Any:
    """``pipelines.segmenter.SegmenterSettings`` for ``model`` on the resolved ``device``.

    ``ModelArgs`` mirrors the settings field for field (plus the factory that consumes them), so
    they are copied wholesale: a setting added to both reaches the segmenter without an edit here.
    """
    from pipelines.segmenter import SegmenterSettings

    fields = model.model_dump(exclude={"segmenter_factory"})
    fields.update(device=device, batch_sizes=tuple(sorted(model.batch_sizes)))
    return SegmenterSettings(**fields)


def resolve_factory(import_path: str | None) -> SegmenterFactory:
    """The callable that builds a segmenter from its settings (``"module:attribute"``)."""
    if import_path is None:
        from pipelines.segmenter import Segmenter

        return Segmenter.from_settings
    module_name, _, attribute = import_path.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"segmenter_factory {import_path!r} is not callable")
    return target


def input_size_for(model: ModelArgs) -> tuple[int, int]:
    """The size the Preprocess stage resizes to (the variant's, or ``input_size``), without loading
    weights."""
    from pipelines.segmenter import input_size_for as variant_input_size

    return variant_input_size(model.variant, model.input_size)
