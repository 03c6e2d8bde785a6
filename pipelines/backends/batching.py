"""Batch shapes for compiled backends and reusable pinned host buffers for the upload.

Compiled backends (``torch.compile`` with static shapes, TensorRT engines) exist for a few batch
sizes only. A batch of ``n`` images runs as chunks of at most the largest compiled size, each
padded up to the nearest compiled size (:func:`plan_chunks`, :func:`padded_batch_size`); the
padded rows are zeros and their outputs are dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch


def padded_batch_size(n: int, batch_sizes: Sequence[int]) -> int:
    """The smallest of ``batch_sizes`` that holds ``n`` images; ``n`` itself when none are given.

    Raises:
        ValueError: ``n < 1`` or ``n`` exceeds the largest compiled size (use :func:`plan_chunks`).
    """
    if n < 1:
        raise ValueError(f"batch size must be at least 1, got {n}")
    if not batch_sizes:
        return n
    fitting = [size for size in batch_sizes if size >= n]
    if not fitting:
        raise ValueError(f"a batch of {n} exceeds the largest compiled batch size {max(batch_sizes)}")
    return min(fitting)


def plan_chunks(n: int, batch_sizes: Sequence[int]) -> list[tuple[int, int]]:
    """Split ``n`` images into ``(images, padded size)`` chunks that the compiled sizes can run.

    Full chunks of the largest size first, then the remainder padded to its nearest size:
    ``plan_chunks(11, (1, 2, 4, 8)) == [(8, 8), (3, 4)]``. With no compiled sizes the whole batch
    is one unpadded chunk.
    """
    if n < 1:
        raise ValueError(f"batch size must be at least 1, got {n}")
    if not batch_sizes:
        return [(n, n)]
    largest = max(batch_sizes)
    chunks = [(largest, largest)] * (n // largest)
    rest = n % largest
    if rest:
        chunks.append((rest, padded_batch_size(rest, batch_sizes)))
    return chunks


class PinnedStaging:
    """A page-locked host buffer, reused across batches, for ``[B, h, w, 3]`` uint8 uploads.

    Pinned memory lets the host-to-device copy run asynchronously at full PCIe speed; allocating
    it costs far more than the copy, so one buffer (grown when a larger batch arrives) is kept.
    The caller must not refill the buffer before the previous upload finished: :class:`Segmenter`
    reads every result back to the host (a synchronising copy) before the next batch.
    """

    def __init__(self, pin: bool = True) -> None:
        self._pin = pin
        self._buffer: torch.Tensor | None = None
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        """How many images the current buffer holds (0 before the first batch)."""
        return 0 if self._buffer is None else int(self._buffer.shape[0])

    def upload(self, images: np.ndarray, device: torch.device, padded: int | None = None) -> torch.Tensor:
        """``[n, h, w, 3]`` uint8 host array → ``[padded, h, w, 3]`` uint8 on ``device``, rows ≥ n zero."""
        n = images.shape[0]
        padded = n if padded is None else padded
        if padded < n:
            raise ValueError(f"cannot pad a batch of {n} down to {padded}")
        with self._lock:
            buffer = self._buffer
            if buffer is None or buffer.shape[0] < n or buffer.shape[1:] != images.shape[1:]:
                buffer = torch.empty(images.shape, dtype=torch.uint8, pin_memory=self._pin)
                self._buffer = buffer
            staged = buffer[:n]
            np.copyto(staged.numpy(), images, casting="no")
            on_device = staged.to(device, non_blocking=self._pin)
        if padded == n:
            return on_device
        return torch.cat([on_device, on_device.new_zeros((padded - n, *on_device.shape[1:]))])
