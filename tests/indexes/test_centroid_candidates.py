"""MultiVectorIndex with ``candidates="centroids"``: PLAID-style centroid candidates, re-ranked by MaxSim.

Recall is measured against exact float32 MaxSim (:func:`indexes.maxsim_scores`) on the small
clustered corpus of ``test_approximate``; the scorer against a brute-force reference; storage,
persistence and crash safety on disk.
"""

from __future__ import annotations

import json
import logging
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
from indexes.centroids import CentroidCandidates


def _centroids(**kw) -> MultiVectorIndex:
    opts = {"train_pages": 256, "n_candidates": 100, "n_centroids": 128, "codec": "int8", **kw}
    return MultiVectorIndex(DIM, device="cpu", candidates="centroids", **opts)


def test_scores_match_a_brute_force_reference() -> None:
    """Probing every centroid gives ``sum_i max(0, max_{c in page} <q_i, c>)``; with fewer probes a
    query vector none of whose probed centroids a page holds adds its next centroid's score (>= 0)."""
    rng = np.random.default_rng(3)
    cents = rng.standard_normal((16, 8)).astype(np.float32)
    cc = CentroidCandidates(cents / np.linalg.norm(cents, axis=1, keepdims=True))
    lengths = rng.integers(1, 12, size=40)
    codes = rng.integers(0, 16, size=int(lengths.sum())).astype(np.uint16)
    cc.add(codes[: lengths[:25].sum()], lengths[:25], 0)  # two adds, as two segments
    cc.add(codes[lengths[:25].sum() :], lengths[25:], 25)
    query = rng.standard_normal((5, 8)).astype(np.float32)
    sims = query @ cc.centroids.T  # (5, 16)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    for nprobe in (16, 3, 1):
        order = np.argsort(-sims, axis=1)
        want = np.zeros(40, np.float32)
        for p in range(40):
            held = set(codes[starts[p] : starts[p + 1]].tolist())
            for i in range(5):
                floor = max(0.0, sims[i, order[i, nprobe]]) if nprobe < 16 else 0.0
                want[p] += max([floor, *(sims[i, c] for c in order[i, :nprobe] if c in held)])
        np.testing.assert_allclose(cc.scores(query, 40, nprobe), want, rtol=1e-6, atol=1e-6)
    assert cc.postings == sum(len(set(codes[starts[p] : starts[p + 1]].tolist())) for p in range(40))
    assert (cc.assign(cc.centroids) == np.arange(16)).all()


def test_centroid_recall_and_code_size(tmp_path: Path, corpus, exact) -> None:
    """recall@10 vs exact float32 MaxSim at n_candidates=100 of 400 pages (128 centroids, nprobe 8):
    0.99 measured (as exact int8 scoring), floor 0.9; probing 1 centroid per query vector: 0.905;
    20 candidates: 0.77."""
    pages, ids, queries = corpus
    index = _centroids()
    index.add(pages, ids)
    assert index.centroids_trained and index.options["n_centroids"] == 128 and index.options["nprobe"] == 8
    hits = index.search(queries, 10)
    assert all(len(h) == 10 for h in hits)
    recall = recall_at_k(hits, exact, ids)
    assert recall >= 0.9
    assert recall_at_k(index.search(queries, 10, nprobe=1), exact, ids) < recall
    assert recall_at_k(index.search(queries, 10, n_candidates=20), exact, ids) < recall
    assert recall_at_k(index.search(queries, 10, exact=True), exact, ids) >= 0.95  # only the int8 codec differs
    index.save(tmp_path / "ix")
    codes = np.load(tmp_path / "ix" / "seg-000001.codes.npy")
    assert codes.dtype == np.uint16 and codes.shape == (index.num_vectors,)  # 2 bytes per vector
    manifest = json.loads((tmp_path / "ix" / "index.json").read_text())
    cents = np.load(tmp_path / "ix" / manifest["candidate_index"]["file"])
    assert cents.shape == (128, DIM) and cents.dtype == np.float32


def test_training_waits_for_train_pages_then_round_trips(tmp_path: Path, corpus) -> None:
    pages, ids, queries = corpus
    d = tmp_path / "ix"
    index = _centroids()
    index.add(pages[:150], ids[:150])
    index.save(d)  # not trained yet: searched exactly
    assert not index.centroids_trained
    assert json.loads((d / "index.json").read_text())["candidate_index"] is None
    assert index.search(queries, 10) == index.search(queries, 10, exact=True)

    index.add(pages[150:300], ids[150:300])  # 300 pages: trained here
    assert index.centroids_trained
    index.save(d)
    index.add(pages[300:], ids[300:])
    index.remove(ids[10:40])
    index.save(d)
    names = {p.name for p in d.iterdir()}
    assert "seg-000001.codes.npy" not in names  # saved before the training: codes computed at load
    assert "seg-000002.codes.npy" in names and "seg-000003.codes.npy" in names
    manifest = json.loads((d / "index.json").read_text())
    assert manifest["candidate_index"]["file"] in names and manifest["params"]["candidates"] == "centroids"
    before = index.search(queries, 10)
    assert all(len(h) == 10 and not {i for i, _ in h} & set(ids[10:40].tolist()) for h in before)

    check_trained_round_trip(index, d, tmp_path / "copy", queries, live=N_PAGES - 30, trained_glob="centroids-*.npy")
    assert len(list(d.glob("*.codes.npy"))) == 1  # compacted: one segment, its codes stored


def test_few_vectors_train_fewer_centroids(corpus, caplog) -> None:
    pages, ids, _ = corpus
    index = _centroids(n_centroids=4096)
    with caplog.at_level(logging.WARNING, logger="indexes.multi"):
        index.add(pages[:256], ids[:256])
    assert index.centroids_trained and index.options["n_centroids"] == index.num_vectors // 8
    assert "too few for 4096 centroids" in caplog.text


def test_filters_still_return_k_hits(corpus) -> None:
    pages, ids, queries = corpus
    index = _centroids(n_candidates=30, nprobe=1)
    index.add(pages, ids)
    rng = np.random.default_rng(1)
    for n_allowed in (5, 25, 60, 300):
        allowed = rng.choice(ids, size=n_allowed, replace=False)
        hits = index.search(queries, 10, allowed_ids=allowed)
        assert all(len(h) == min(10, n_allowed) for h in hits)
        assert all({i for i, _ in h} <= set(allowed.tolist()) for h in hits)
    index.remove(ids[:300])
    hits = index.search(queries, 10)
    assert all(len(h) == 10 and {i for i, _ in h} <= set(ids[300:].tolist()) for h in hits)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_centroids": 64}, "n_centroids applies to candidates='centroids' only"),
        ({"candidates": "muvera", "n_centroids": 64}, "n_centroids applies to candidates='centroids' only"),
        ({"candidates": "centroids", "n_centroids": 1}, "n_centroids must be an integer from 2 to 65536"),
        ({"candidates": "centroids", "n_centroids": 70000}, "n_centroids must be an integer from 2 to 65536"),
        ({"candidates": "centroids", "nlist": 4}, "nlist and pq_m apply to fde_index='ivfpq' only"),
        ({"candidates": "centroids", "train_pages": 100}, "train_pages must be at least 256"),
        ({"candidates": "centroids", "nprobe": 0}, "nprobe must be a positive integer"),
        ({"candidates": "centroids", "k_sim": 3}, "k_sim apply to candidates='muvera' only"),
        ({"candidates": "plaid"}, "unknown candidates 'plaid'"),
    ],
)
def test_bad_options_are_one_line_errors(kwargs, message) -> None:
    with pytest.raises(IndexInputError, match=message) as info:
        MultiVectorIndex(DIM, device="cpu", **kwargs)
    assert "\n" not in str(info.value)


def test_bad_files_are_format_errors(tmp_path: Path, corpus) -> None:
    pages, ids, queries = corpus
    exhaustive = MultiVectorIndex(DIM, device="cpu")
    exhaustive.add(pages[:20], ids[:20])
    with pytest.raises(IndexInputError, match="nprobe applies to fde_index='ivfpq' or candidates='centroids' only"):
        exhaustive.search(queries, 3, nprobe=2)
    index = _centroids()
    index.add(pages, ids)
    d = tmp_path / "ix"
    index.save(d)
    cents = d / json.loads((d / "index.json").read_text())["candidate_index"]["file"]
    good = cents.read_bytes()
    cents.write_bytes(b"not an array")
    with pytest.raises(IndexFormatError, match="corrupted or truncated") as info:
        MultiVectorIndex.load(d, device="cpu")
    assert "\n" not in str(info.value)
    np.save(cents, np.full((128, DIM), np.nan, np.float32))
    with pytest.raises(IndexFormatError, match="finite centroids"):
        MultiVectorIndex.load(d, device="cpu")
    cents.write_bytes(good)
    codes = d / "seg-000001.codes.npy"
    np.save(codes, np.full(index.num_vectors, 500, np.uint16))
    with pytest.raises(IndexFormatError, match="centroid codes beyond 128"):
        MultiVectorIndex.load(d, device="cpu")
    codes.unlink()
    with pytest.raises(IndexFormatError, match="missing"):
        MultiVectorIndex.load(d, device="cpu")


@pytest.mark.subprocess
@pytest.mark.parametrize("where", ["codes", "trained"])
def test_sigkill_during_the_training_save_keeps_the_previous_state(tmp_path: Path, where: str) -> None:
    check_sigkill_during_training_save(
        tmp_path / "ix",
        _centroids(n_candidates=20, n_centroids=64),
        trained_class="indexes.centroids.CentroidCandidates",
        code_suffix=".codes.npy",
        trained_glob="centroids-*.npy",
        where=where,
    )
