"""Size-grouped batching with out-of-memory back-off.

:func:`run_batched` sorts the inputs by a size key (image area, text length), largest
first, so each batch holds inputs of similar size (less padding) and an
out-of-memory error shows up in the first batch. On a CUDA/MPS out-of-memory error
the batch size is halved and the batch retried; the smaller size is kept for the
rest of the call. Results come back in input order.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from tqdm.auto import tqdm

from dse.encoders.devices import is_out_of_memory, release_cached_memory
from dse.encoders.errors import EncoderError

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class OutOfMemory(EncoderError):
    """Out of accelerator memory even with a batch of one input."""


def size_order(sizes: Sequence[float]) -> list[int]:
    """Indices sorted by decreasing size (stable: ties keep input order)."""
    return sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))


def run_batched(
    items: Sequence[T],
    sizes: Sequence[float],
    forward: Callable[[list[T]], list[R]],
    *,
    batch_size: int,
    device: torch.device | None = None,
    progress: bool = False,
    desc: str = "encode",
) -> list[R]:
    """Apply ``forward`` to size-sorted batches of ``items``; return results in input order.

    ``forward`` takes a list of items and returns one result per item. ``sizes`` gives
    one sort key per item (e.g. pixels or characters). A tqdm bar goes to stderr when
    ``progress`` is true.
    """
    if batch_size < 1:
        raise EncoderError(f"batch_size must be >= 1, got {batch_size}")
    if len(sizes) != len(items):
        raise ValueError("one size per item is required")
    order = size_order(sizes)
    results: list[R | None] = [None] * len(items)
    current = batch_size
    done = 0
    with tqdm(total=len(items), desc=desc, unit="item", disable=not progress, file=sys.stderr) as bar:
        while done < len(order):
            idx = order[done : done + current]
            try:
                out = forward([items[i] for i in idx])
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                if device is not None:
                    release_cached_memory(device)
                if len(idx) == 1:
                    raise OutOfMemory(
                        "out of accelerator memory on a single input; lower max_pixels, use a smaller dtype "
                        "or run on a device with more memory"
                    ) from exc
                current = max(1, len(idx) // 2)
                logger.warning("out of memory with a batch of %d; retrying with batches of %d", len(idx), current)
                continue
            if len(out) != len(idx):  # pragma: no cover - programming error guard
                raise RuntimeError(f"forward returned {len(out)} results for {len(idx)} inputs")
            for i, r in zip(idx, out, strict=True):
                results[i] = r
            done += len(idx)
            bar.update(len(idx))
    return results  # type: ignore[return-value]
