"""Shared pytest fixtures.

``tiny_model_dir(family) -> Path``: a tiny random-weight model of ``family`` (see
:mod:`dse.testing.tiny`), built offline once per test session under the session's
temporary directory and laid out like a hub snapshot, so ``Encoder.load(path)``
detects its family with no network. ``dse_col`` / ``col_col``: small indexed collections
(dse-qwen2 / colqwen2) shared by the server tests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Factory: ``tiny_model_dir("dse-qwen2")`` -> directory of that family's tiny model."""
    from dse.testing.tiny import BUILDERS, build_tiny

    built: dict[str, Path] = {}
    lock = threading.Lock()

    def get(family: str) -> Path:
        if family not in BUILDERS:
            raise KeyError(f"no tiny model for {family!r}; known: {', '.join(BUILDERS)}")
        with lock:
            if family not in built:
                out = tmp_path_factory.mktemp(f"tiny-{family}", numbered=True)
                built[family] = build_tiny(family, out)
            return built[family]

    return get


@pytest.fixture(scope="module")
def dse_col(tiny_model_dir: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A small indexed collection (support.server.CORPUS) with the tiny dse-qwen2 model."""
    from support.server import build_collection

    return build_collection("dse-qwen2", tiny_model_dir("dse-qwen2"), tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def col_col(tiny_model_dir: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The same collection with the tiny colqwen2 model (multi-vector, MaxSim)."""
    from support.server import build_collection

    return build_collection("colqwen2", tiny_model_dir("colqwen2"), tmp_path_factory.getbasetemp())
