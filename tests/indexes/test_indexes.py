"""SingleVectorIndex (flat / hnsw / ivfpq over FAISS): exactness, recall, filters, storage."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from indexes import (
    INDEX_TYPES,
    DuplicateIdError,
    IndexFormatError,
    IndexInputError,
    MultiVectorIndex,
    SingleVectorIndex,
    UnknownIdError,
)

DIM = 32
# small, fast parameters per type (ivfpq trains once 2500 vectors are in)
PARAMS = {
    "flat": {},
    "hnsw": {"hnsw_m": 16, "ef_construction": 80, "ef_search": 64},
    "ivfpq": {"nlist": 16, "pq_m": 8, "nbits": 6, "nprobe": 8, "train_size": 2500, "refine_factor": 8},
}


def _clustered(rng: np.random.Generator, n: int, dim: int = DIM, clusters: int = 40) -> np.ndarray:
    centers = rng.standard_normal((clusters, dim))
    x = centers[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    x = _clustered(rng, 3000)
    ids = (np.arange(3000, dtype=np.int64) * 7) + 100
    q = x[rng.integers(0, 3000, 60)] + 0.05 * rng.standard_normal((60, DIM)).astype(np.float32)
    return x, ids, q.astype(np.float32)


def _brute(x: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int, allowed: np.ndarray | None = None):
    mask = np.ones(len(ids), bool) if allowed is None else np.isin(ids, allowed)
    xs, idss = x[mask], ids[mask]
    s = q @ xs.T
    out = []
    for row in s:
        order = np.lexsort((idss, -row))[:k]
        out.append((idss[order], row[order]))
    return out


def _recall(hits, truth) -> float:
    return float(
        np.mean([len({i for i, _ in h} & set(t[0].tolist())) / max(len(t[0]), 1) for h, t in zip(hits, truth)])
    )


def _build(kind: str, x: np.ndarray, ids: np.ndarray, **extra) -> SingleVectorIndex:
    index = SingleVectorIndex(DIM, index_type=kind, device="cpu", **{**PARAMS[kind], **extra})
    for a in range(0, len(x), 1000):  # several adds, as an ingest would do
        index.add(x[a : a + 1000], ids[a : a + 1000])
    return index


@pytest.fixture(scope="module")
def built(data) -> dict[str, SingleVectorIndex]:
    x, ids, _ = data
    return {kind: _build(kind, x, ids) for kind in INDEX_TYPES}


def test_flat_equals_brute_force(data, built) -> None:
    x, ids, q = data
    index = built["flat"]
    for k in (1, 10):
        for h, (t_ids, t_scores) in zip(index.search(q, k), _brute(x, ids, q, k)):
            assert [i for i, _ in h] == t_ids.tolist()
            np.testing.assert_allclose([s for _, s in h], t_scores, atol=1e-5)
    for h, (t_ids, t_scores) in zip(index.search(q, 3500), _brute(x, ids, q, 3500)):  # k > size: all
        assert sorted(i for i, _ in h) == sorted(t_ids.tolist())  # order of near-ties may differ by 1 ulp
        np.testing.assert_allclose([s for _, s in h], t_scores, atol=1e-5)
    one = index.search(q[0], 3)  # a single (dim,) query
    assert len(one) == 1 and [i for i, _ in one[0]] == _brute(x, ids, q[:1], 3)[0][0].tolist()


@pytest.mark.parametrize("kind,min_recall", [("hnsw", 0.9), ("ivfpq", 0.8)])
def test_approximate_indexes_have_good_recall(data, built, kind: str, min_recall: float) -> None:
    x, ids, q = data
    index = built[kind]
    assert index.is_trained
    hits = index.search(q, 10)
    assert _recall(hits, _brute(x, ids, q, 10)) >= min_recall
    for h in hits:  # scores are true inner products, best first
        scores = [s for _, s in h]
        assert scores == sorted(scores, reverse=True)
        vecs = np.stack([index.get(i) for i, _ in h])
        np.testing.assert_allclose(vecs @ q[hits.index(h)], scores, atol=1e-4)


def test_ivfpq_is_exact_until_trained(data) -> None:
    x, ids, q = data
    index = SingleVectorIndex(DIM, index_type="ivfpq", device="cpu", **PARAMS["ivfpq"])
    index.add(x[:1000], ids[:1000])
    assert not index.is_trained
    hits = index.search(q, 5)
    assert [[i for i, _ in h] for h in hits] == [t[0].tolist() for t in _brute(x[:1000], ids[:1000], q, 5)]
    index.add(x[1000:2000], ids[1000:2000])
    assert not index.is_trained
    index.add(x[2000:2600], ids[2000:2600])
    assert index.is_trained and index.params["nlist"] == 16


@pytest.mark.parametrize("kind", INDEX_TYPES)
@pytest.mark.parametrize("brute_force_max", [1, 100_000])  # FAISS IDSelector path / exact subset path
def test_allowed_ids_and_remove(data, kind: str, brute_force_max: int) -> None:
    x, ids, q = data
    index = _build(kind, x, ids, brute_force_max=brute_force_max)
    allowed = ids[::3]
    hits = index.search(q, 10, allowed_ids=np.concatenate([allowed, [-1, 10**12]]))
    truth = _brute(x, ids, q, 10, allowed)
    assert all(i in set(allowed.tolist()) for h in hits for i, _ in h)
    assert _recall(hits, truth) >= (1.0 if kind == "flat" or brute_force_max > 1 else 0.8)
    removed = [h[0][0] for h in index.search(q, 1)]
    assert index.remove(removed + [123]) == len(set(removed))
    assert len(index) == len(ids) - len(set(removed))
    after = index.search(q, 10)
    assert not {i for h in after for i, _ in h} & set(removed)
    keep = ids[~np.isin(ids, removed)]
    assert _recall(after, _brute(x, ids, q, 10, keep)) >= (1.0 if kind == "flat" else 0.8)
    assert index.search(q[:2], 5, allowed_ids=np.array(removed[:1])) == [[], []]


@pytest.mark.parametrize("kind", INDEX_TYPES)
def test_save_load_roundtrip(tmp_path: Path, data, built, kind: str) -> None:
    _, ids, q = data
    index = built[kind]
    d = tmp_path / kind
    index.save(d)
    manifest = json.loads((d / "index.json").read_text())
    assert manifest["format_version"] == 1 and manifest["index_type"] == kind and manifest["count"] == len(ids)
    caches = sorted(p.name for p in d.glob("faiss-*.index"))
    assert caches == ([] if kind == "flat" else ["faiss-000001.index"])
    loaded = SingleVectorIndex.load(d, device="cpu")
    assert loaded.search(q, 10) == index.search(q, 10)
    np.testing.assert_array_equal(loaded.ids, ids)
    for f in d.glob("*.npy"):
        np.load(f, allow_pickle=False)  # nothing pickled


def test_missing_or_corrupted_faiss_cache_is_rebuilt(tmp_path: Path, data, built, caplog) -> None:
    x, ids, q = data
    d = tmp_path / "h"
    built["ivfpq"].save(d)
    want = built["ivfpq"].search(q, 10)
    cache = next(d.glob("faiss-*.index"))
    cache.write_bytes(b"not a faiss index")
    with caplog.at_level(logging.WARNING, logger="indexes.single"):
        loaded = SingleVectorIndex.load(d, device="cpu")
    assert "rebuilding" in caplog.text
    assert loaded.is_trained and loaded.search(q, 10) == want  # retrained deterministically
    cache.unlink()
    assert SingleVectorIndex.load(d, device="cpu").search(q, 10) == want


def test_append_after_load_writes_new_segment_and_extends_the_cache(tmp_path: Path, data) -> None:
    x, ids, q = data
    d = tmp_path / "idx"
    index = _build("hnsw", x[:2000], ids[:2000])
    index.save(d)
    snap = {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in d.iterdir()
        if p.name != "index.json"
    }
    loaded = SingleVectorIndex.load(d, device="cpu")
    loaded.add(x[2000:2300], ids[2000:2300])  # 15% new rows: the cache is kept, not rewritten
    loaded.save(d)
    now = {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in d.iterdir()
        if p.name != "index.json"
    }
    assert {k: now[k] for k in snap} == snap
    assert sorted(set(now) - set(snap)) == ["seg-000002.ids.npy", "seg-000002.vectors.npy"]
    manifest = json.loads((d / "index.json").read_text())
    assert manifest["cache"] == {"file": "faiss-000001.index", "rows": 2000} and manifest["rows"] == 2300
    reopened = SingleVectorIndex.load(d, device="cpu")  # cache + the 300 newer rows added on load
    assert reopened._faiss.ntotal == 2300
    assert _recall(reopened.search(q, 10), _brute(x[:2300], ids[:2300], q, 10)) >= 0.9
    reopened.add(x[2300:3000], ids[2300:3000])  # 30% new: the cache is rewritten
    reopened.save(d)
    manifest = json.loads((d / "index.json").read_text())
    assert manifest["cache"] == {"file": "faiss-000003.index", "rows": 3000}
    assert sorted(p.name for p in d.glob("faiss-*")) == ["faiss-000003.index"]


def test_compact(tmp_path: Path, data) -> None:
    x, ids, q = data
    index = _build("flat", x[:500], ids[:500])
    index.remove(ids[:100])
    index.save(tmp_path / "c")
    index.compact()
    index.save(tmp_path / "c")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        "index.json",
        "seg-000002.ids.npy",
        "seg-000002.vectors.npy",
    ]
    loaded = SingleVectorIndex.load(tmp_path / "c", device="cpu")
    assert len(loaded) == 400 and loaded._table.num_rows == 400
    assert [[i for i, _ in h] for h in loaded.search(q, 5)] == [
        t[0].tolist() for t in _brute(x[100:500], ids[100:500], q, 5)
    ]
    loaded.add(x[:1], ids[:1])  # a removed id can come back
    np.testing.assert_array_equal(loaded.get(int(ids[0])), x[0])


def test_inputs_are_validated(tmp_path: Path, data) -> None:
    x, ids, _ = data
    index = SingleVectorIndex(DIM, device="cpu")
    index.add(x[:10], ids[:10])
    with pytest.raises(DuplicateIdError, match="already in the index"):
        index.add(x[10:12], [ids[3], 99999])
    with pytest.raises(DuplicateIdError, match="repeat"):
        index.add(x[10:12], [5, 5])
    with pytest.raises(IndexInputError, match=r"shape \(n, 32\)"):
        index.add(np.ones((2, 16), np.float32), [1, 2])
    with pytest.raises(IndexInputError, match="2 vectors but 3 ids"):
        index.add(x[10:12], [1, 2, 3])
    with pytest.raises(IndexInputError, match="NaN"):
        index.add(np.full((1, DIM), np.nan), [1])
    with pytest.raises(IndexInputError, match="integers"):
        index.add(x[10:11], ["a"])
    with pytest.raises(IndexInputError, match="unknown index_type"):
        SingleVectorIndex(DIM, index_type="lsh")
    with pytest.raises(IndexInputError, match="unknown parameter.*nprobe"):
        SingleVectorIndex(DIM, index_type="hnsw", nprobe=3)
    with pytest.raises(IndexInputError, match="must divide"):
        SingleVectorIndex(DIM, index_type="ivfpq", pq_m=5)
    with pytest.raises(IndexInputError, match="queries must have shape"):
        index.search(np.ones((1, 8), np.float32), 3)
    with pytest.raises(UnknownIdError, match="not in the index"):
        index.get(-5)
    index.add(np.zeros((0, DIM), np.float32), [])  # empty add is a no-op
    assert len(index) == 10 and SingleVectorIndex(DIM).search(x[:2], 3) == [[], []]


def test_corrupted_files_give_clear_errors(tmp_path: Path, data) -> None:
    x, ids, _ = data
    d = tmp_path / "s"
    index = _build("flat", x[:300], ids[:300])
    index.remove(ids[:2])
    index.save(d)
    tomb = next(d.glob("tombstones-*.npy"))
    np.save(tomb, np.array([0, 10**6], np.int64))
    with pytest.raises(IndexFormatError, match="rows outside"):
        SingleVectorIndex.load(d)
    np.save(tomb, np.array([0, 1], np.int64))
    vec = d / "seg-000001.vectors.npy"
    vec.write_bytes(vec.read_bytes()[:200])
    with pytest.raises(IndexFormatError, match="seg-000001.vectors.npy is corrupted or truncated"):
        SingleVectorIndex.load(d)
    (d / "index.json").write_text("[1, 2")
    with pytest.raises(IndexFormatError, match="not valid JSON"):
        SingleVectorIndex.load(d)
    with pytest.raises(IndexFormatError, match="not a 'multi'"):
        m = tmp_path / "m"
        index2 = _build("flat", x[:5], ids[:5])
        index2.save(m)
        MultiVectorIndex.load(m)


def test_orphans_and_interrupted_save_leave_the_previous_state(tmp_path: Path, data, monkeypatch) -> None:
    import indexes.segments as segments_mod

    x, ids, q = data
    d = tmp_path / "o"
    index = _build("hnsw", x[:1000], ids[:1000])
    index.save(d)
    expected = index.search(q, 5)
    np.save(d / "seg-000002.vectors.npy", np.ones((3, DIM), np.float32))  # orphan of a crashed save
    (d / "faiss-000009.index").write_bytes(b"junk")
    loaded = SingleVectorIndex.load(d, device="cpu")
    assert loaded.search(q, 5) == expected and len(loaded) == 1000
    loaded.add(x[1000:1500], ids[1000:1500])

    def boom(*_a, **_k):
        raise OSError("power cut (simulated)")

    monkeypatch.setattr(segments_mod, "write_manifest", boom)
    with pytest.raises(OSError, match="simulated"):
        loaded.save(d)
    monkeypatch.undo()
    assert SingleVectorIndex.load(d, device="cpu").search(q, 5) == expected
    loaded.save(d)
    assert not (d / "faiss-000009.index").exists()
    assert len(SingleVectorIndex.load(d, device="cpu")) == 1500
