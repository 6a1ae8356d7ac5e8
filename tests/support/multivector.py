"""A small deterministic multi-vector corpus and recall against exact MaxSim (tests/indexes)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

DIM = 32
N_PAGES = 400


def clustered_corpus(seed: int = 0, n_pages: int = N_PAGES, n_queries: int = 20):
    """Pages mixing 3 of 24 topic centres (8..39 unit vectors each); queries are noisy samples of a page."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((24, DIM)).astype(np.float32)
    pages = []
    for _ in range(n_pages):
        topics = rng.choice(24, size=3, replace=False)
        n = int(rng.integers(8, 40))
        v = centres[rng.choice(topics, size=n)] + 0.5 * rng.standard_normal((n, DIM)).astype(np.float32)
        pages.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    queries = []
    for _ in range(n_queries):
        src = pages[int(rng.integers(n_pages))]
        v = src[rng.choice(src.shape[0], size=6)] + 0.3 * rng.standard_normal((6, DIM)).astype(np.float32)
        queries.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    ids = np.arange(n_pages, dtype=np.int64) * 3 + 1
    return pages, ids, queries


def recall_at_k(hits, exact_scores: np.ndarray, ids: np.ndarray, k: int = 10) -> float:
    """Mean |hits top-k ∩ exact top-k| / k (exact ties broken by position)."""
    found = 0
    for qi, row in enumerate(hits):
        truth = set(ids[np.lexsort((np.arange(ids.size), -exact_scores[qi]))[:k]].tolist())
        found += len(truth & {i for i, _ in row})
    return found / (k * len(hits))


def random_pages(n_pages: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n_pages`` pages of 3..19 random ``DIM``-d vectors, then 5 queries of 4 vectors (crash tests).

    The first pages are the same whatever ``n_pages`` (one generator, pages drawn first), so
    a child process can regenerate them.
    """
    rng = np.random.default_rng(seed)
    pages = [rng.standard_normal((int(rng.integers(3, 20)), DIM)).astype(np.float32) for _ in range(n_pages)]
    queries = [rng.standard_normal((4, DIM)).astype(np.float32) for _ in range(5)]
    return pages, queries


def run_until_sigkill(child_source: str, *args: str) -> None:
    """Run ``python -c child_source *args`` and check that it died of SIGKILL (as the child arranges)."""
    proc = subprocess.run([sys.executable, "-c", child_source, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


_TRAINING_CHILD = """
import os, signal, sys
import numpy as np
import indexes.segments as seg
from indexes import MultiVectorIndex
from {module} import {cls} as Trained

directory, where = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
pages = [rng.standard_normal((int(rng.integers(3, 20)), {dim})).astype(np.float32) for _ in range(260)]
index = MultiVectorIndex.load(directory, device="cpu")
index.add(pages[150:], np.arange(150, 260))  # trains the candidate generator
index.remove([0, 1, 2])
real_write, real_trained = seg.write_array, Trained.write

def write_array(path, array, **kw):
    real_write(path, array, **kw)
    if where == "codes" and path.name.endswith("{suffix}"):
        os.kill(os.getpid(), signal.SIGKILL)

def write_trained(self, path):
    real_trained(self, path)
    if where == "trained":
        os.kill(os.getpid(), signal.SIGKILL)

seg.write_array, Trained.write = write_array, write_trained
index.save(directory)
"""


def check_sigkill_during_training_save(
    directory: Path, index: Any, *, trained_class: str, code_suffix: str, trained_glob: str, where: str
) -> None:
    """Save 150 pages of ``index`` (``train_pages`` between 150 and 260) in ``directory``; a child adds
    110 more (training the candidate generator) and dies of SIGKILL right after writing the codes
    (``where="codes"``: the first file ending in ``code_suffix``) or the trained generator
    (``"trained"``: ``trained_class.write``). The reopened index must be the saved one, and a
    retried add + save must leave exactly one trained file (``trained_glob``) and no temporary file.
    """
    from indexes import MultiVectorIndex

    pages, queries = random_pages(260)
    index.add(pages[:150], np.arange(150))
    index.save(directory)
    before = index.search(queries, 5)
    module, cls = trained_class.rsplit(".", 1)
    child = _TRAINING_CHILD.format(module=module, cls=cls, dim=DIM, suffix=code_suffix)
    run_until_sigkill(child, str(directory), where)
    reopened = MultiVectorIndex.load(directory, device="cpu")
    assert len(reopened) == 150 and not (reopened.ivf_trained or reopened.centroids_trained)
    assert reopened.search(queries, 5) == before
    reopened.add(pages[150:], np.arange(150, 260))
    reopened.remove([0, 1, 2])
    reopened.save(directory)
    final = MultiVectorIndex.load(directory, device="cpu")
    assert len(final) == 257 and final.search(queries, 5) == reopened.search(queries, 5)
    assert len(list(directory.glob(trained_glob))) == 1
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def check_trained_round_trip(
    index: Any, directory: Path, copy_dir: Path, queries: list[np.ndarray], *, live: int, trained_glob: str
) -> Any:
    """``index`` (trained, saved in ``directory``) through load, a saved search-time ``nprobe=2``,
    compact, reload and a save into ``copy_dir``: every step answers like ``index`` does with
    ``nprobe=2``, the trained file is not rewritten by a re-save, and the copy holds one trained
    file (``trained_glob``). Returns the compacted, reloaded index (for format checks of the caller).
    """
    import json

    from indexes import MultiVectorIndex

    manifest = json.loads((directory / "index.json").read_text())
    want = index.search(queries, 10, nprobe=2)
    loaded = MultiVectorIndex.load(directory, device="cpu")
    assert loaded.options == index.options and loaded.search(queries, 10) == index.search(queries, 10)
    loaded.params["nprobe"] = 2  # a search-time option, saved
    loaded.save(directory)
    assert json.loads((directory / "index.json").read_text())["candidate_index"] == manifest["candidate_index"]
    assert MultiVectorIndex.load(directory, device="cpu").search(queries, 10) == want
    loaded.compact()
    assert loaded.search(queries, 10, nprobe=2) == want
    loaded.save(directory)
    again = MultiVectorIndex.load(directory, device="cpu")
    assert len(again) == live and again.search(queries, 10, nprobe=2) == want
    again.save(copy_dir)  # saving elsewhere writes the trained file there too
    copy = MultiVectorIndex.load(copy_dir, device="cpu")
    assert copy.search(queries, 10) == again.search(queries, 10)
    assert len(list(copy_dir.glob(trained_glob))) == 1
    return again
