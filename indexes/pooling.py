"""Token pooling at add time, through colpali-engine's ``HierarchicalTokenPooler``.

Pooling clusters each page's vectors (Ward linkage on cosine distances) into at most
``n // pool_factor`` clusters and keeps each cluster's L2-normalised mean, so a page of
``n`` vectors keeps ``max(n // pool_factor, 1)`` (Faysse et al., "Token pooling").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from indexes.errors import IndexInputError


def check_pool_factor(pool_factor: int | None) -> int | None:
    """Validate ``pool_factor``: ``None`` or 1 (no pooling) or an integer >= 2."""
    if pool_factor is None:
        return None
    if isinstance(pool_factor, bool) or not isinstance(pool_factor, int | np.integer) or pool_factor < 1:
        raise IndexInputError(f"pool_factor must be an integer >= 1 (or None), got {pool_factor!r}")
    return int(pool_factor) if pool_factor > 1 else None


def pool_pages(pages: Sequence[np.ndarray], pool_factor: int) -> list[np.ndarray]:
    """Pool each ``(n_i, d)`` float32 page to ``(max(n_i // pool_factor, 1), d)`` float32.

    Pages with a single vector are kept as they are (the pooler needs two or more).
    """
    from colpali_engine.compression.token_pooling import HierarchicalTokenPooler

    from indexes.maxsim import single_threaded_torch

    pooler = HierarchicalTokenPooler()
    todo = [i for i, p in enumerate(pages) if p.shape[0] > 1]
    out = list(pages)
    if todo:
        # the pooler runs many small torch ops per page: one thread each, pages in parallel
        with single_threaded_torch() as threads:
            workers = min(threads, len(todo))
            pooled = pooler.pool_embeddings(
                [torch.from_numpy(np.ascontiguousarray(pages[i])) for i in todo],
                pool_factor=pool_factor,
                num_workers=workers if workers > 1 else None,
            )
        for i, t in zip(todo, pooled):
            out[i] = t.detach().to(torch.float32).numpy()
    return out
