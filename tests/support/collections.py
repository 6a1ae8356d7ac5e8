"""Consistency checks on a collection directory, shared by the crash and resume tests."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_index_matches_store(col: Any) -> set[int]:
    """Assert that ``col``'s index holds each stored page exactly once and nothing else; returns
    the stored page ids."""
    ids = np.asarray(col.index.ids).tolist()
    assert len(ids) == len(set(ids)), "duplicate vectors"
    stored = col.store.stored_page_ids()
    assert set(ids) == stored, "orphaned or missing vectors"
    return stored
