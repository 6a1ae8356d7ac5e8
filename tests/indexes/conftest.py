"""Fixtures shared by the multi-vector index tests: the small clustered corpus and its exact scores."""

from __future__ import annotations

import numpy as np
import pytest
from support.multivector import clustered_corpus

from indexes import maxsim_scores


@pytest.fixture(scope="module")
def corpus() -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray]]:
    """``(pages, ids, queries)`` of :func:`support.multivector.clustered_corpus` (400 pages, dim 32)."""
    return clustered_corpus()


@pytest.fixture(scope="module")
def exact(corpus) -> np.ndarray:
    """(n_queries, n_pages) exact float32 MaxSim scores of ``corpus``."""
    pages, _, queries = corpus
    return maxsim_scores(queries, pages)
