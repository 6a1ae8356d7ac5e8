"""MultiVectorIndex: exact MaxSim against colpali-engine, filters, pooling, storage and crash safety."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from colpali_engine.utils.processing_utils import BaseVisualRetrieverProcessor

import indexes.segments as segments_mod
from indexes import (
    DuplicateIdError,
    IndexFormatError,
    IndexInputError,
    MultiVectorIndex,
    SingleVectorIndex,
    UnknownIdError,
    VectorIndexError,
    maxsim_scores,
)
from indexes.maxsim import _segment_max_padded, plan_blocks, segment_max

DIM = 32


def _unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    """(n, dim) L2-normalised float32 vectors whose values are exact in float16."""
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float16).astype(np.float32)


def _pages(rng: np.random.Generator, n: int, lo: int = 1, hi: int = 70) -> list[np.ndarray]:
    return [_unit(rng, int(rng.integers(lo, hi + 1))) for _ in range(n)]


def _colpali_scores(queries: list[np.ndarray], pages: list[np.ndarray]) -> np.ndarray:
    """Reference (n_queries, n_pages) scores from colpali-engine's ``score_multi_vector``.

    Pages are scored one per call (batch of one) so that no zero padding of a short page
    can clamp a per-token maximum at 0; queries are zero-padded, which adds exactly 0.
    """
    qs = [torch.from_numpy(q) for q in queries]
    cols = [
        BaseVisualRetrieverProcessor.score_multi_vector(qs, [torch.from_numpy(p)], device="cpu")[:, 0] for p in pages
    ]
    return torch.stack(cols, dim=1).numpy()


def _ranking(scores: np.ndarray) -> list[int]:
    return [int(i) for i in np.lexsort((np.arange(scores.size), -scores))]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (_sha(p), p.stat().st_mtime_ns) for p in directory.iterdir() if p.name.startswith("seg-")}


@pytest.fixture(scope="module")
def corpus() -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(1234)
    pages = _pages(rng, 240)
    ids = rng.permutation(10_000)[:240].astype(np.int64) + 5
    queries = [_unit(rng, int(rng.integers(1, 16))) for _ in range(9)]
    return pages, ids, queries


@pytest.fixture(scope="module")
def reference(corpus) -> np.ndarray:
    pages, _, queries = corpus
    return _colpali_scores(queries, pages)


# --------------------------------------------------------------- exactness
@pytest.mark.parametrize("workers", [1, 2])
def test_maxsim_ranks_exactly_as_colpali_engine(corpus, reference, workers: int) -> None:
    pages, ids, queries = corpus
    index = MultiVectorIndex(DIM, device="cpu", block_size=300, workers=workers)  # ~30 blocks
    index.add(pages[:100], ids[:100])
    index.add(pages[100:], ids[100:])
    ref = reference
    k = len(pages) + 50  # more than the number of pages
    hits = index.search(queries, k)
    for qi, q_hits in enumerate(hits):
        assert len(q_hits) == len(pages)
        got_ids = [i for i, _ in q_hits]
        assert got_ids == [int(ids[j]) for j in _ranking(ref[qi])]
        pos = {int(pid): j for j, pid in enumerate(ids)}
        np.testing.assert_allclose([s for _, s in q_hits], [ref[qi, pos[i]] for i in got_ids], atol=1e-4, rtol=0)


def test_maxsim_top_k_and_default_batched_colpali(corpus) -> None:
    """Top-10 equals colpali-engine's default (batched, zero-padded) call on long-enough pages."""
    rng = np.random.default_rng(7)
    pages = _pages(rng, 150, lo=24, hi=90)  # >= 24 vectors: every per-token maximum is positive
    queries = [_unit(rng, 12) for _ in range(6)]
    index = MultiVectorIndex(DIM, device="cpu", block_size=512)
    index.add(pages, np.arange(150))
    ref = BaseVisualRetrieverProcessor.score_multi_vector(
        [torch.from_numpy(q) for q in queries], [torch.from_numpy(p) for p in pages], device="cpu"
    ).numpy()
    for qi, q_hits in enumerate(index.search(queries, 10)):
        top = torch.topk(torch.from_numpy(ref[qi]), 10)
        assert [i for i, _ in q_hits] == top.indices.tolist()
        np.testing.assert_allclose([s for _, s in q_hits], top.values.numpy(), atol=1e-4, rtol=0)


def test_maxsim_allowed_ids_restricts_candidates(corpus, reference) -> None:
    pages, ids, queries = corpus
    index = MultiVectorIndex(DIM, device="cpu", block_size=256)
    index.add(pages, ids)
    chosen = np.sort(ids[::7])
    allowed = np.concatenate([chosen, [999_999, -3]])  # unknown ids are ignored
    ref = reference
    sel = np.flatnonzero(np.isin(ids, chosen))
    for qi, q_hits in enumerate(index.search(queries, 5, allowed_ids=allowed)):
        expect = [int(ids[sel[j]]) for j in _ranking(ref[qi, sel])[:5]]
        assert [i for i, _ in q_hits] == expect
    assert index.search(queries[:2], 5, allowed_ids=[]) == [[], []]
    assert index.search(queries[:1], 5, allowed_ids=np.array([123_456_789])) == [[]]


def test_query_chunking_and_uneven_queries_give_the_same_scores(corpus, reference) -> None:
    pages, ids, queries = corpus
    a = MultiVectorIndex(DIM, device="cpu", block_size=64, query_chunk=5, workers=2)
    b = MultiVectorIndex(DIM, device="cpu", block_size=100_000, workers=1)
    for idx in (a, b):
        idx.add(pages, ids)
    ha, hb = a.search(queries, 20), b.search(queries, 20)
    for x, y in zip(ha, hb):
        assert [i for i, _ in x] == [i for i, _ in y]
        np.testing.assert_allclose([s for _, s in x], [s for _, s in y], atol=1e-5)
    full = maxsim_scores(queries, pages)
    np.testing.assert_allclose(full, reference, atol=1e-4, rtol=0)


def test_segment_max_paths_agree() -> None:
    rng = np.random.default_rng(3)
    lengths = np.array([3, 1, 7, 2, 5], np.int64)
    sim = torch.from_numpy(rng.standard_normal((int(lengths.sum()), 6)).astype(np.float32))
    want = np.stack([sim[a:b].amax(0).numpy() for a, b in zip(np.r_[0, np.cumsum(lengths)[:-1]], np.cumsum(lengths))])
    np.testing.assert_array_equal(segment_max(sim, lengths).numpy(), want)
    np.testing.assert_array_equal(_segment_max_padded(sim, lengths).numpy(), want)  # the GPU path, on CPU
    eq = np.array([4, 4, 4], np.int64)
    s2 = sim[:12]
    np.testing.assert_array_equal(segment_max(s2, eq).numpy(), s2.view(3, 4, 6).amax(1).numpy())
    assert plan_blocks(np.array([5, 5, 5, 20, 1], np.int64), 10) == [(0, 2), (2, 3), (3, 4), (4, 5)]


# ------------------------------------------------------------------ inputs
def test_inputs_are_validated() -> None:
    rng = np.random.default_rng(0)
    index = MultiVectorIndex(DIM, device="cpu")
    index.add([_unit(rng, 4), _unit(rng, 2)], [1, 2])
    with pytest.raises(DuplicateIdError, match="already in the index"):
        index.add([_unit(rng, 3)], [2])
    with pytest.raises(DuplicateIdError, match="repeat"):
        index.add([_unit(rng, 3), _unit(rng, 3)], [5, 5])
    with pytest.raises(IndexInputError, match=r"shape \(n_vectors, 32\)"):
        index.add([rng.standard_normal((3, 16))], [9])
    with pytest.raises(IndexInputError, match="no vectors"):
        index.add([np.zeros((0, DIM))], [9])
    with pytest.raises(IndexInputError, match="NaN"):
        index.add([np.full((2, DIM), np.nan)], [9])
    with pytest.raises(IndexInputError, match="2 pages but 1 ids"):
        index.add([_unit(rng, 2), _unit(rng, 2)], [9])
    with pytest.raises(IndexInputError, match="wrap a single"):
        index.add(_unit(rng, 2), [9])
    with pytest.raises(IndexInputError, match="float16 range"):
        index.add([np.full((2, DIM), 1e6)], [9])
    with pytest.raises(IndexInputError, match="query 0"):
        index.search([rng.standard_normal((2, 8))], 3)
    with pytest.raises(IndexInputError, match="wrap a single"):
        index.search(_unit(rng, 2), 3)
    with pytest.raises(IndexInputError, match="k must be"):
        index.search([_unit(rng, 2)], 0)
    with pytest.raises(IndexInputError, match="unknown device"):
        MultiVectorIndex(DIM, device="tpu")
    with pytest.raises(IndexInputError, match="pool_factor"):
        MultiVectorIndex(DIM, pool_factor=0)
    with pytest.raises(UnknownIdError, match="id 77"):
        index.get(77)
    assert isinstance(DuplicateIdError("x"), VectorIndexError) and isinstance(IndexFormatError("x"), ValueError)
    assert len(index) == 2 and index.num_vectors == 6  # failed adds left nothing behind


def test_accepts_torch_tensors_and_3d_arrays() -> None:
    rng = np.random.default_rng(5)
    batch = np.stack([_unit(rng, 6) for _ in range(4)])  # (4, 6, dim)
    index = MultiVectorIndex(DIM, device="cpu")
    index.add(torch.from_numpy(batch).to(torch.bfloat16), torch.tensor([10, 11, 12, 13]))
    index.add(batch[:2] * 1.0, [20, 21])
    q = torch.from_numpy(batch[1]).to(torch.bfloat16)
    hits = index.search([q], 6)[0]
    assert hits[0][0] in (11, 21)
    assert index.get(10).dtype == np.float16 and index.get(10).shape == (6, DIM)


def test_empty_index_search_and_save(tmp_path: Path) -> None:
    index = MultiVectorIndex(DIM, device="cpu")
    q = [np.ones((2, DIM), np.float32)]
    assert index.search(q, 3) == [[]]
    index.add([], [])
    index.save(tmp_path / "idx")
    loaded = MultiVectorIndex.load(tmp_path / "idx", device="cpu")
    assert len(loaded) == 0 and loaded.search(q, 3) == [[]] and loaded.ids.size == 0


# -------------------------------------------------------- removal, pooling
def test_remove_compact_and_readd(tmp_path: Path, corpus) -> None:
    pages, ids, queries = corpus
    index = MultiVectorIndex(DIM, device="cpu", block_size=200)
    index.add(pages, ids)
    top = index.search(queries, 3)
    gone = [hits[0][0] for hits in top]
    assert index.remove(gone + [424242]) == len(set(gone))
    assert index.remove(gone) == 0
    after = index.search(queries, 3)
    assert not {i for hits in after for i, _ in hits} & set(gone)
    assert len(index) == len(pages) - len(set(gone))
    index.save(tmp_path / "i")
    assert len(list((tmp_path / "i").glob("tombstones-*.npy"))) == 1
    loaded = MultiVectorIndex.load(tmp_path / "i", device="cpu")
    assert loaded.search(queries, 3) == after
    with pytest.raises(UnknownIdError):
        loaded.get(gone[0])
    # re-adding a removed id is allowed (replacing a page)
    loaded.add([pages[0]], [gone[0]])
    assert gone[0] in set(loaded.ids.tolist())
    loaded.compact()
    loaded.save(tmp_path / "i")
    files = sorted(p.name for p in (tmp_path / "i").iterdir())
    assert files == ["index.json", "seg-000002.ids.npy", "seg-000002.offsets.npy", "seg-000002.vectors.npy"]
    again = MultiVectorIndex.load(tmp_path / "i", device="cpu")
    assert len(again) == len(pages) - len(set(gone)) + 1
    np.testing.assert_array_equal(again.get(gone[0]), pages[0].astype(np.float16))
    assert again.search(queries, 3) == loaded.search(queries, 3)


def test_pooling_reduces_vectors_and_search_still_finds_the_page(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    pages = [_unit(rng, 60) for _ in range(30)] + [_unit(rng, 1)]
    plain = MultiVectorIndex(DIM, device="cpu")
    pooled = MultiVectorIndex(DIM, device="cpu", pool_factor=3)
    plain.add(pages, np.arange(31))
    pooled.add(pages, np.arange(31))
    assert plain.num_vectors == 60 * 30 + 1
    assert pooled.num_vectors == 20 * 30 + 1  # max(60 // 3, 1) per page; the 1-vector page is kept
    assert pooled.get(0).shape == (20, DIM) and pooled.get(30).shape == (1, DIM)
    queries = [pages[i][:8] for i in range(0, 30, 3)]
    for i, hits in zip(range(0, 30, 3), pooled.search(queries, 3)):
        assert hits[0][0] == i
    pooled.save(tmp_path / "p")
    loaded = MultiVectorIndex.load(tmp_path / "p", device="cpu")
    assert loaded.pool_factor == 3
    loaded.add([_unit(rng, 30)], [99])
    assert loaded.get(99).shape == (10, DIM)  # later adds are pooled the same way
    seg_bytes = {p.name: p.stat().st_size for p in (tmp_path / "p").glob("seg-*.vectors.npy")}
    assert sum(seg_bytes.values()) < 0.4 * (plain.num_vectors * DIM * 2)


# ----------------------------------------------------------------- storage
def test_save_load_roundtrip_memory_maps(tmp_path: Path, corpus) -> None:
    pages, ids, queries = corpus
    index = MultiVectorIndex(DIM, device="cpu")
    index.add(pages, ids)
    before = index.search(queries, 10)
    index.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert manifest["format_version"] == 1 and manifest["dim"] == DIM and manifest["count"] == len(pages)
    assert manifest["index_type"] == "maxsim" and manifest["vectors"] == sum(p.shape[0] for p in pages)
    loaded = MultiVectorIndex.load(tmp_path / "idx", device="cpu")
    assert isinstance(loaded._table.segments[0].arrays["vectors"], np.memmap)
    assert not isinstance(
        MultiVectorIndex.load(tmp_path / "idx", device="cpu", mmap=False)._table.segments[0].arrays["vectors"],
        np.memmap,
    )
    assert loaded.search(queries, 10) == before
    np.testing.assert_array_equal(loaded.ids, ids)
    np.testing.assert_array_equal(loaded.get(int(ids[17])), pages[17].astype(np.float16))
    for f in (tmp_path / "idx").glob("*.npy"):
        np.load(f, allow_pickle=False)  # nothing pickled


def test_append_after_load_writes_a_new_segment_only(tmp_path: Path, corpus) -> None:
    pages, ids, queries = corpus
    d = tmp_path / "idx"
    index = MultiVectorIndex(DIM, device="cpu")
    index.add(pages[:120], ids[:120])
    index.save(d)
    snap = _snapshot(d)
    loaded = MultiVectorIndex.load(d, device="cpu")
    loaded.add(pages[120:], ids[120:])
    loaded.save(d)
    now = _snapshot(d)
    assert {k: now[k] for k in snap} == snap  # old segment files byte-identical, untouched
    assert sorted(set(now) - set(snap)) == ["seg-000002.ids.npy", "seg-000002.offsets.npy", "seg-000002.vectors.npy"]
    full = MultiVectorIndex(DIM, device="cpu")
    full.add(pages, ids)
    assert MultiVectorIndex.load(d, device="cpu").search(queries, 15) == full.search(queries, 15)
    # a save with nothing new writes no segment
    loaded.save(d)
    assert _snapshot(d) == now


def _saved(tmp_path: Path, corpus, name: str = "idx") -> Path:
    pages, ids, _ = corpus
    index = MultiVectorIndex(DIM, device="cpu")
    index.add(pages[:50], ids[:50])
    index.save(tmp_path / name)
    index.add(pages[50:80], ids[50:80])
    index.save(tmp_path / name)
    return tmp_path / name


def test_corrupted_or_missing_files_give_clear_errors(tmp_path: Path, corpus) -> None:
    d = _saved(tmp_path, corpus)
    vec = d / "seg-000002.vectors.npy"
    data = vec.read_bytes()
    vec.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(IndexFormatError, match="seg-000002.vectors.npy"):
        MultiVectorIndex.load(d)
    vec.write_bytes(data)
    MultiVectorIndex.load(d)  # restored: fine again

    (d / "seg-000001.offsets.npy").unlink()
    with pytest.raises(IndexFormatError, match=r"seg-000001.offsets.npy is missing"):
        MultiVectorIndex.load(d)

    d2 = _saved(tmp_path, corpus, "b")
    np.save(d2 / "seg-000001.offsets.npy", np.arange(51, dtype=np.int64) * 1000)
    with pytest.raises(IndexFormatError, match="inconsistent"):
        MultiVectorIndex.load(d2)
    np.save(d2 / "seg-000001.offsets.npy", np.zeros(51, dtype=np.int32))
    with pytest.raises(IndexFormatError, match="dtype int32"):
        MultiVectorIndex.load(d2)

    d3 = _saved(tmp_path, corpus, "c")
    manifest = (d3 / "index.json").read_text()
    (d3 / "index.json").write_text(manifest[:-20])
    with pytest.raises(IndexFormatError, match="not valid JSON"):
        MultiVectorIndex.load(d3)
    m = json.loads(manifest)
    (d3 / "index.json").write_text(json.dumps({**m, "format_version": 99}))
    with pytest.raises(IndexFormatError, match="format version 99"):
        MultiVectorIndex.load(d3)
    (d3 / "index.json").write_text(json.dumps({**m, "dim": 64}))
    with pytest.raises(IndexFormatError, match="shape"):
        MultiVectorIndex.load(d3)
    (d3 / "index.json").write_text(
        json.dumps({**m, "segments": m["segments"] + [{**m["segments"][0], "name": "seg-000009"}]})
    )
    with pytest.raises(IndexFormatError, match="seg-000009.*missing"):
        MultiVectorIndex.load(d3)
    (d3 / "index.json").write_text(manifest)
    with pytest.raises(IndexFormatError, match="multi'-vector index, not a 'single'"):
        SingleVectorIndex.load(d3)
    (d3 / "index.json").unlink()
    with pytest.raises(IndexFormatError, match="index.json is missing"):
        MultiVectorIndex.load(d3)
    with pytest.raises(IndexFormatError, match="does not exist"):
        MultiVectorIndex.load(tmp_path / "nowhere")


def test_orphan_segments_are_ignored_and_cleaned(tmp_path: Path, corpus) -> None:
    pages, ids, queries = corpus
    d = _saved(tmp_path, corpus)
    expected = MultiVectorIndex.load(d, device="cpu").search(queries, 5)
    # leftovers of an interrupted save: a segment the manifest does not name, and a temp file
    np.save(d / "seg-000003.vectors.npy", np.ones((5, DIM), np.float16))
    np.save(d / "seg-000003.ids.npy", np.array([ids[0]], np.int64))
    (d / "index.json.tmp").write_text("{garbage")
    loaded = MultiVectorIndex.load(d, device="cpu")
    assert loaded.search(queries, 5) == expected and len(loaded) == 80
    loaded.add(pages[80:90], ids[80:90])
    loaded.save(d)
    names = sorted(p.name for p in d.iterdir())
    assert "index.json.tmp" not in names
    assert len([n for n in names if n.startswith("seg-000003.")]) == 3  # rewritten by the new save
    assert len(MultiVectorIndex.load(d, device="cpu")) == 90


def test_crash_before_manifest_keeps_the_previous_state(tmp_path: Path, corpus, monkeypatch) -> None:
    pages, ids, queries = corpus
    d = _saved(tmp_path, corpus)
    before = MultiVectorIndex.load(d, device="cpu").search(queries, 5)
    index = MultiVectorIndex.load(d, device="cpu")
    index.add(pages[80:100], ids[80:100])
    index.remove(ids[:3])

    def boom(*_a, **_k):
        raise OSError("disk gone (simulated crash)")

    monkeypatch.setattr(segments_mod, "write_manifest", boom)
    with pytest.raises(OSError, match="simulated"):
        index.save(d)
    monkeypatch.undo()
    assert (d / "seg-000003.vectors.npy").exists()  # written, but not committed
    reopened = MultiVectorIndex.load(d, device="cpu")
    assert len(reopened) == 80 and reopened.search(queries, 5) == before
    index.save(d)  # retry succeeds
    final = MultiVectorIndex.load(d, device="cpu")
    assert len(final) == 97 and not set(ids[:3].tolist()) & set(final.ids.tolist())


def test_save_elsewhere_copies_and_refuses_to_clobber(tmp_path: Path, corpus) -> None:
    pages, ids, queries = corpus
    d = _saved(tmp_path, corpus)
    other = _saved(tmp_path, corpus, "other")
    index = MultiVectorIndex.load(d, device="cpu")
    with pytest.raises(IndexFormatError, match="already holds an index"):
        index.save(other)
    index.save(tmp_path / "copy")
    assert MultiVectorIndex.load(tmp_path / "copy", device="cpu").search(queries, 4) == index.search(queries, 4)
    assert os.path.exists(d / "seg-000001.vectors.npy")


def test_scan_memory_is_bounded_by_block_and_query_chunk(corpus, reference) -> None:
    """The similarity buffer never exceeds one block x one query chunk, whatever the corpus size."""
    import indexes.maxsim as maxsim_mod

    pages, ids, queries = corpus
    index = MultiVectorIndex(DIM, device="cpu", block_size=100, query_chunk=16, workers=1)
    index.add(pages, ids)
    maxsim_mod._workspaces.ws = None  # scoring runs in this thread with workers=1
    hits = index.search(queries, 3)
    buf = maxsim_mod._workspaces.ws._buf
    max_page = max(p.shape[0] for p in pages)
    max_query = max(q.shape[0] for q in queries)
    assert buf.numel() <= max(100, max_page) * max(16, max_query)
    assert buf.numel() < sum(p.shape[0] for p in pages) * sum(q.shape[0] for q in queries) / 20
    best = [int(ids[int(np.argmax(reference[qi]))]) for qi in range(len(queries))]
    assert [h[0][0] for h in hits] == best


def test_search_restores_torch_threads(corpus) -> None:
    pages, ids, queries = corpus
    index = MultiVectorIndex(DIM, device="cpu", block_size=128)
    index.add(pages[:40], ids[:40])
    before = torch.get_num_threads()
    index.search(queries, 2)
    assert torch.get_num_threads() == before
