"""Query micro-batching (one encoder call for concurrent text queries, same results as unbatched
search) and concurrent requests against a real uvicorn server, on tiny dse-qwen2 / colqwen2 models."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from support.server import Built, live_server

from dse.encoders import InvalidInput
from dse.server.app import create_app
from dse.server.batching import QueryBatcher

QUERIES = [
    "red block",
    "blue page",
    "a green chart",
    "orange quarter revenue",
    "page zero",
    "page one",
    "table of figures",
    "latency throughput",
]


class Recording:
    """The real encoder's ``encode_queries``, recording the texts of every call."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()

    def __call__(self, texts: list[str]):
        with self.lock:
            self.calls.append(list(texts))
        return self.encoder.encode_queries(texts=texts, batch_size=len(texts))


def test_batcher_encodes_concurrent_queries_in_one_call(dse_col: Built) -> None:
    enc = Recording(dse_col.encoder)
    batcher = QueryBatcher(enc, window_ms=200, max_batch=32)
    try:
        barrier = threading.Barrier(len(QUERIES))

        def ask(text: str) -> np.ndarray:
            barrier.wait()
            return batcher.submit(text).result(60)

        with ThreadPoolExecutor(len(QUERIES)) as pool:
            got = list(pool.map(ask, QUERIES))
    finally:
        batcher.close()
    assert len(enc.calls) == 1 and sorted(enc.calls[0]) == sorted(QUERIES)
    assert batcher.stats.to_dict() == {"batches": 1, "queries": 8, "largest": 8, "mean_batch": 8.0}
    alone = dse_col.encoder.encode_queries(texts=QUERIES[:1])  # unbatched
    np.testing.assert_allclose(got[0], alone[0], atol=1e-4)
    for text, vec in zip(QUERIES, got, strict=True):
        single = dse_col.encoder.encode_queries(texts=[text])[0]
        assert float(vec @ single) > 0.9999, text


def test_batcher_max_batch_duplicates_and_failures(dse_col: Built) -> None:
    enc = Recording(dse_col.encoder)
    batcher = QueryBatcher(enc, window_ms=100, max_batch=3)
    try:
        futures = [batcher.submit(t) for t in ["a", "b", "a", "c", "d", "e", "f"]]
        results = [f.result(60) for f in futures]
        assert all(len(c) <= 3 for c in enc.calls)
        assert sum(len(c) for c in enc.calls) <= 6  # "a" twice in the first batch is encoded once
        np.testing.assert_array_equal(results[0], results[2])
        enc.calls.clear()
        # one blank query in a batch fails alone; its neighbours still get their vectors
        futures = [batcher.submit(t) for t in ["fine query", "   ", "another one"]]
        assert futures[0].result(60).shape == (dse_col.encoder.dim,)
        assert futures[2].result(60).shape == (dse_col.encoder.dim,)
        with pytest.raises(InvalidInput, match="empty|blank"):
            futures[1].result(60)
        assert enc.calls[0] == ["fine query", "   ", "another one"] and ["fine query"] in enc.calls
    finally:
        batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit("late")


@pytest.mark.parametrize("family", ["dse-qwen2", "colqwen2"])
def test_micro_batched_search_equals_unbatched(family: str, dse_col: Built, col_col: Built) -> None:
    built = dse_col if family == "dse-qwen2" else col_col
    requests = [{"text": q, "k": k, "filters": f} for q in QUERIES for k, f in ((3, None), (2, {"team": "blue"}))]
    batched = create_app(built.directory, device="cpu", encoder=built.encoder, micro_batch=True, batch_window_ms=100)
    plain = create_app(built.directory, device="cpu", encoder=built.encoder, micro_batch=False)
    with live_server(batched) as url_b, live_server(plain) as url_p:
        with httpx.Client(base_url=url_p, timeout=120) as c:
            expected = [c.post("/search", json=r).json()["hits"] for r in requests]
        barrier = threading.Barrier(len(requests))

        def fire(req: dict) -> list[dict]:
            with httpx.Client(base_url=url_b, timeout=120) as c:
                barrier.wait()
                r = c.post("/search", json=req)
                assert r.status_code == 200, r.text
                return r.json()["hits"]

        with ThreadPoolExecutor(len(requests)) as pool:
            got = list(pool.map(fire, requests))
        with httpx.Client(base_url=url_b) as c:
            stats = c.get("/info").json()["batching"]
    assert stats["queries"] == len(requests) and stats["largest"] > 1 and stats["batches"] < len(requests)
    tol = 1e-4 if family == "dse-qwen2" else 2e-3  # MaxSim sums ~20 float16-stored dot products
    for req, a, b in zip(requests, got, expected, strict=True):
        assert [h["page_id"] for h in a] == [h["page_id"] for h in b] or _near_tie(b, tol), req
        assert [h["score"] for h in a] == pytest.approx([h["score"] for h in b], abs=tol), req
        if req["filters"]:
            assert {h["meta"]["team"] for h in a} == {"blue"}


def _near_tie(hits: list[dict], tol: float) -> bool:
    scores = sorted(h["score"] for h in hits)
    return len(scores) > 1 and float(np.min(np.diff(scores))) < tol


def test_concurrent_mixed_requests(dse_col: Built, tmp_path: Path) -> None:
    """Threads firing text, image and fused searches, page images and info at once all succeed."""
    image = (dse_col.corpus / "red" / "p1.png").read_bytes()
    app = create_app(dse_col.directory, device="cpu", encoder=dse_col.encoder)
    with live_server(app) as url:

        def work(i: int) -> tuple[int, int]:
            with httpx.Client(base_url=url, timeout=120) as c:
                kind = i % 4
                if kind == 0:
                    r = c.post("/search", json={"text": QUERIES[i % len(QUERIES)], "k": 3})
                    ok = r.status_code == 200 and len(r.json()["hits"]) == 3
                elif kind == 1:
                    r = c.post("/search", files={"image": ("q.png", image, "image/png")}, data={"k": "2"})
                    ok = r.status_code == 200 and r.json()["hits"][0]["source"].endswith("red/p1.png")
                elif kind == 2:
                    r = c.post(
                        "/search", files={"image": ("q.png", image, "image/png")}, data={"text": "same page", "k": "2"}
                    )
                    ok = r.status_code == 200 and len(r.json()["hits"]) == 2
                else:
                    pid = c.post("/search", json={"text": "page", "k": 1}).json()["hits"][0]["page_id"]
                    r = c.get(f"/pages/{pid}/image")
                    ok = r.status_code == 200 and r.content[:4] == b"\x89PNG"
                return i, int(ok)

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(work, range(32)))
    assert [ok for _, ok in results] == [1] * 32
