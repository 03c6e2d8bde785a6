"""The one place a backend is chosen: the requested one, else the next in ``tensorrt → compile → eager``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import nn

from pipelines.backends.base import BackendSpec, BackendUnavailableError, InferenceBackend

logger = logging.getLogger(__name__)

BACKEND_NAMES: tuple[str, ...] = ("tensorrt", "compile", "eager")

Builder = Callable[[nn.Module, BackendSpec], InferenceBackend]


def _build_tensorrt(model: nn.Module, spec: BackendSpec) -> InferenceBackend:
    from pipelines.backends.tensorrt import TensorRTBackend

    return TensorRTBackend.build(model, spec)


def _build_compile(model: nn.Module, spec: BackendSpec) -> InferenceBackend:
    from pipelines.backends.compiled import CompiledBackend

    return CompiledBackend.build(model, spec)


def _build_eager(model: nn.Module, spec: BackendSpec) -> InferenceBackend:
    from pipelines.backends.eager import EagerBackend

    return EagerBackend.build(model, spec)


DEFAULT_BUILDERS: Mapping[str, Builder] = {
    "tensorrt": _build_tensorrt,
    "compile": _build_compile,
    "eager": _build_eager,
}


@dataclass(frozen=True)
class BackendChoice:
    """The backend in use and why the ones before it were skipped.

    Attributes:
        backend: the backend that was built.
        requested: the backend the configuration asked for.
        failures: ``(backend name, reason)`` for each backend that failed to build, in order.
    """

    backend: InferenceBackend
    requested: str
    failures: tuple[tuple[str, str], ...] = ()

    @property
    def tensorrt_reason(self) -> str:
        """Why TensorRT is (not) in use, for ``/health``."""
        if self.backend.name == "tensorrt":
            return self.backend.describe()
        for name, reason in self.failures:
            if name == "tensorrt":
                return reason
        return f"TensorRT backend not selected (backend: {self.requested})"


def fallback_chain(requested: str) -> tuple[str, ...]:
    """The backends tried for a request, in order: ``compile`` → ``("compile", "eager")``."""
    if requested not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {requested!r}; use one of {', '.join(BACKEND_NAMES)}")
    return BACKEND_NAMES[BACKEND_NAMES.index(requested):]


def build_backend(
    model: nn.Module,
    requested: str,
    spec: BackendSpec,
    builders: Mapping[str, Builder] | None = None,
) -> BackendChoice:
    """Build ``requested``, falling back along :func:`fallback_chain` with one warning per failure.

    Any exception from a builder other than the last counts as "unavailable" (a missing package,
    no GPU, a compiler or engine-builder error); eager's own failures propagate.
    """
    builders = DEFAULT_BUILDERS if builders is None else builders
    chain = fallback_chain(requested)
    failures: list[tuple[str, str]] = []
    for position, name in enumerate(chain):
        last = position == len(chain) - 1
        try:
            backend = builders[name](model, spec)
        except Exception as exc:
            if last:
                raise
            reason = str(exc) if isinstance(exc, BackendUnavailableError) else f"{type(exc).__name__}: {exc}"
            failures.append((name, reason))
            logger.warning("%s backend unavailable, falling back to %s: %s", name, chain[position + 1], reason)
            continue
        logger.info("inference backend: %s", backend.describe())
        return BackendChoice(backend=backend, requested=requested, failures=tuple(failures))
    raise AssertionError("unreachable: the chain always ends with eager")
