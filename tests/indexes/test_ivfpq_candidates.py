"""MultiVectorIndex with ``fde_index="ivfpq"``: MUVERA encodings compressed by a FAISS IVF-PQ index.

Recall is measured against exact float32 MaxSim (:func:`indexes.maxsim_scores`) on the small
clustered corpus of ``test_approximate``; storage, persistence and crash safety on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.multivector import (
    DIM,
    N_PAGES,
    check_sigkill_during_training_save,
    check_trained_round_trip,
    recall_at_k,
)

from indexes import IndexFormatError, IndexInputError, MultiVectorIndex

MUVERA = {"k_sim": 3, "d_proj": 8, "r_reps": 8, "seed": 7}  # 512-d encodings


def _ivf(**kw) -> MultiVectorIndex:
    opts = {"train_pages": 256, "n_candidates": 100, **MUVERA, **kw}
    return MultiVectorIndex(DIM, device="cpu", candidates="muvera", codec="int8", fde_index="ivfpq", **opts)


def test_ivfpq_recall_and_code_size(tmp_path: Path, corpus, exact) -> None:
    """recall@10 vs exact float32 MaxSim at n_candidates=100 of 400 pages: 0.88 measured (flat float16
    encodings: 0.905); floor 0.8. Probing 1 of the 10 lists: 0.40."""
    pages, ids, queries = corpus
    index = _ivf(nlist=10)
    index.add(pages, ids)
    assert index.ivf_settings["nlist"] == 10 and index.ivf_settings["pq_m"] == 16  # pq_m: 512-d / 32
    hits = index.search(queries, 10)
    assert all(len(h) == 10 for h in hits)
    assert recall_at_k(hits, exact, ids) >= 0.8
    # probing one list of ten finds fewer of the true top-10
    assert recall_at_k(index.search(queries, 10, nprobe=1), exact, ids) < recall_at_k(hits, exact, ids)
    # every page a candidate: only the int8 codec differs from exact
    assert recall_at_k(index.search(queries, 10, n_candidates=N_PAGES), exact, ids) >= 0.95
    index.save(tmp_path / "ix")
    codes = np.load(tmp_path / "ix" / "seg-000001.cand.npy")
    assert codes.dtype == np.uint8 and codes.shape == (N_PAGES, 1 + 16)  # list number + pq_m bytes, not 512 * 2
    assert not list((tmp_path / "ix").glob("*.fde.npy"))


def test_training_waits_for_train_pages_then_round_trips(tmp_path: Path, corpus) -> None:
    pages, ids, queries = corpus
    d = tmp_path / "ix"
    index = _ivf(nlist=4)
    index.add(pages[:150], ids[:150])
    index.save(d)  # not trained yet: float16 encodings, scanned flat
    assert not index.ivf_trained
    assert json.loads((d / "index.json").read_text())["candidate_index"] is None
    flat = _ivf(train_pages=10**6)
    flat.add(pages[:150], ids[:150])
    assert index.search(queries, 10) == flat.search(queries, 10)

    index.add(pages[150:300], ids[150:300])  # 300 pages: trained here
    assert index.ivf_trained
    index.save(d)
    index.add(pages[300:], ids[300:])
    index.remove(ids[10:40])
    index.save(d)
    names = {p.name for p in d.iterdir()}
    assert "seg-000001.fde.npy" in names and "seg-000002.cand.npy" in names and "seg-000003.cand.npy" in names
    manifest = json.loads((d / "index.json").read_text())
    assert manifest["candidate_index"]["file"] in names and manifest["params"]["fde_index"] == "ivfpq"
    before = index.search(queries, 10)
    assert all(len(h) == 10 and not {i for i, _ in h} & set(ids[10:40].tolist()) for h in before)

    check_trained_round_trip(index, d, tmp_path / "copy", queries, live=N_PAGES - 30, trained_glob="candidates-*.faiss")
    assert not list(d.glob("*.fde.npy"))  # compaction turned the encodings into codes


def test_filters_still_return_k_hits(corpus) -> None:
    pages, ids, queries = corpus
    index = _ivf(n_candidates=30, nlist=10, nprobe=1)
    index.add(pages, ids)
    rng = np.random.default_rng(1)
    for n_allowed in (5, 25, 60, 300):
        allowed = rng.choice(ids, size=n_allowed, replace=False)
        hits = index.search(queries, 10, allowed_ids=allowed)
        assert all(len(h) == min(10, n_allowed) for h in hits)
        assert all({i for i, _ in h} <= set(allowed.tolist()) for h in hits)
    index.remove(ids[:300])  # the probed list may now hold fewer than k live pages
    hits = index.search(queries, 10)
    assert all(len(h) == 10 and {i for i, _ in h} <= set(ids[300:].tolist()) for h in hits)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fde_index": "ivfpq"}, "fde_index applies to candidates='muvera' only"),
        ({"candidates": "muvera", "fde_index": "hnsw"}, "unknown fde_index 'hnsw'"),
        ({"candidates": "muvera", "nprobe": 4}, "nprobe apply to fde_index='ivfpq' or candidates='centroids' only"),
        ({"candidates": "muvera", "fde_index": "ivfpq", "pq_m": 7, **MUVERA}, "pq_m=7 must divide"),
        ({"candidates": "muvera", "fde_index": "ivfpq", "train_pages": 0}, "train_pages must be a positive"),
        ({"candidates": "muvera", "fde_index": "ivfpq", "train_pages": 100}, "train_pages must be at least 256"),
    ],
)
def test_bad_options_are_one_line_errors(kwargs, message) -> None:
    with pytest.raises(IndexInputError, match=message) as info:
        MultiVectorIndex(DIM, device="cpu", **kwargs)
    assert "\n" not in str(info.value)


def test_bad_search_options_and_missing_files(tmp_path: Path, corpus) -> None:
    pages, ids, queries = corpus
    flat = MultiVectorIndex(DIM, device="cpu", candidates="muvera")
    flat.add(pages[:20], ids[:20])
    with pytest.raises(IndexInputError, match="nprobe applies to fde_index='ivfpq' or candidates='centroids' only"):
        flat.search(queries, 3, nprobe=2)
    index = _ivf()
    index.add(pages, ids)
    with pytest.raises(IndexInputError, match="nprobe must be a positive integer"):
        index.search(queries, 3, nprobe=0)
    index.save(tmp_path / "ix")
    trained = tmp_path / "ix" / json.loads((tmp_path / "ix" / "index.json").read_text())["candidate_index"]["file"]
    trained.write_bytes(b"not a faiss index")
    with pytest.raises(IndexFormatError, match="cannot read the candidate index") as info:
        MultiVectorIndex.load(tmp_path / "ix", device="cpu")
    assert "\n" not in str(info.value)
    trained.unlink()
    with pytest.raises(IndexFormatError):
        MultiVectorIndex.load(tmp_path / "ix", device="cpu")


@pytest.mark.subprocess
@pytest.mark.parametrize("where", ["codes", "trained"])
def test_sigkill_during_the_training_save_keeps_the_previous_state(tmp_path: Path, where: str) -> None:
    check_sigkill_during_training_save(
        tmp_path / "ix",
        _ivf(n_candidates=20),
        trained_class="indexes.candidates.IvfPqCandidates",
        code_suffix=".cand.npy",
        trained_glob="candidates-*.faiss",
        where=where,
    )
