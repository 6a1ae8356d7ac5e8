"""QdrantIndex (indexes.qdrant): schema, exactness against the local exact indexes, filters,
removal, persistence, retries and error messages.

The backend tests run against qdrant-client's local mode (``:memory:``, Qdrant's own in-process
implementation of the API). The same tests form the **contract suite** against a real server
when ``QDRANT_URL`` is set (e.g. after ``docker run -p 6333:6333 qdrant/qdrant``); without it
their ``server`` variants are skipped with a reason naming ``QDRANT_URL``. Error-handling tests
use small fake HTTP servers (refusing, overloaded) and a closed port (unreachable).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qdrant_client")

from indexes import DuplicateIdError, IndexFormatError, IndexInputError, MultiVectorIndex, SingleVectorIndex
from indexes.qdrant import (
    Condition,
    QdrantError,
    QdrantIndex,
    QdrantNotFoundError,
    QdrantRefusedError,
    QdrantUnavailableError,
    RetryPolicy,
    display_url,
    normalize_url,
    read_config,
)
from indexes.qdrant import index as qindex

DIM = 32
SECRET = "s3cr3t-api-key-DO-NOT-PRINT"
FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)
SERVER_SKIP = (
    "contract suite against a real Qdrant server skipped: QDRANT_URL is not set "
    "(start one with `docker run -p 6333:6333 qdrant/qdrant`, then QDRANT_URL=http://localhost:6333)"
)


@pytest.fixture(params=["local", "server"])
def qdrant_url(request: pytest.FixtureRequest) -> str:
    """``:memory:`` (local mode), then the server of ``$QDRANT_URL`` (skipped when unset)."""
    if request.param == "server":
        url = os.environ.get("QDRANT_URL")
        if not url:
            pytest.skip(SERVER_SKIP)
        return url
    return ":memory:"


@pytest.fixture
def make(qdrant_url: str) -> Iterator:
    """``make(kind, **params)``: a new QdrantIndex in a uniquely named collection, dropped afterwards."""
    made: list[QdrantIndex] = []

    def factory(kind: str = "single", dim: int = DIM, **params) -> QdrantIndex:
        idx = QdrantIndex.create(
            dim,
            kind=kind,
            url=qdrant_url,
            collection=f"test-{uuid.uuid4().hex[:12]}",
            api_key=os.environ.get("QDRANT_API_KEY"),
            **params,
        )
        made.append(idx)
        return idx

    yield factory
    for idx in made:
        with contextlib.suppress(QdrantError):
            idx.drop()
        idx.close()


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def single_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = _unit(rng.standard_normal((120, DIM)))
    ids = np.arange(120, dtype=np.int64) * 3 + 10
    q = _unit(x[:6] + 0.3 * rng.standard_normal((6, DIM)))
    return x, ids, q


@pytest.fixture(scope="module")
def multi_data() -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(8)
    pages = [_unit(rng.standard_normal((int(rng.integers(4, 40)), DIM))) for _ in range(60)]
    ids = np.arange(60, dtype=np.int64) + 1000
    queries = [_unit(rng.standard_normal((int(rng.integers(3, 9)), DIM))) for _ in range(5)]
    return pages, ids, queries


def _meta(i: int) -> dict:
    return {"doc_id": f"d{i % 4}", "meta": {"team": ["red", "blue"][i % 2], "year": 2000 + i % 3, "score": i / 10}}


def _ranked_ids(hits: list[tuple[int, float]]) -> list[int]:
    return [i for i, _ in hits]


def _same_ranking(a: list[tuple[int, float]], b: list[tuple[int, float]], tol: float = 1e-4) -> None:
    """Equal ids in equal order, except that ids whose scores tie (within ``tol``) may swap."""
    assert len(a) == len(b)
    assert np.allclose([s for _, s in a], [s for _, s in b], atol=tol, rtol=1e-4)
    for (ia, sa), (ib, _) in zip(a, b):
        if ia != ib:
            ties = {i for i, s in b if abs(s - sa) <= tol}
            assert ia in ties, (a, b)


# ----------------------------------------------------------------------------- schema
def test_multivector_schema_follows_the_colpali_guidance(make) -> None:
    idx = make("multi")
    info = idx.connection.client.get_collection(idx.collection)
    vectors = info.config.params.vectors
    mv = vectors["maxsim"]
    assert mv.size == DIM and mv.multivector_config.comparator.value == "max_sim"
    assert mv.distance.value == "Dot" and mv.datatype.value == "float16"
    assert mv.hnsw_config.m == 0  # no graph over patch vectors: rescoring only
    pf = vectors["prefetch"]
    m = idx.schema.muvera
    assert pf.size == m["r_reps"] * 2 ** m["k_sim"] * m["d_proj"] and pf.multivector_config is None
    assert pf.distance.value == "Dot"
    assert {"doc_id", "source", "page"} <= set(idx.payload_indexes)


def test_single_vector_schema_is_one_cosine_dense_vector(make) -> None:
    idx = make("single", hnsw_m=8)
    vectors = idx.connection.client.get_collection(idx.collection).config.params.vectors
    assert set(vectors) == {"dense"}
    assert vectors["dense"].distance.value == "Cosine" and vectors["dense"].size == DIM


def test_bad_parameters_are_named(make) -> None:
    with pytest.raises(IndexInputError, match="unknown Qdrant parameter"):
        make("single", nprobe=4)
    with pytest.raises(IndexInputError, match="quantization"):
        make("single", quantization="pq")
    with pytest.raises(IndexInputError, match="multi-vector"):
        make("single", prefetch="mean")
    with pytest.raises(IndexInputError, match="collection name"):
        QdrantIndex.create(DIM, url=":memory:", collection="a/b")


# ----------------------------------------------------------------------------- exactness
def test_single_vector_top10_equals_the_exact_faiss_index(make, single_data) -> None:
    x, ids, q = single_data
    idx = make("single")
    idx.add(x, ids)
    idx.flush()
    local = SingleVectorIndex(DIM, index_type="flat", device="cpu")
    local.add(x, ids)
    got, want = idx.search(q, 10), local.search(q, 10)
    for a, b in zip(got, want):
        _same_ranking(a, b)


@pytest.mark.parametrize("prefetch", ["muvera", "mean"])
def test_multi_vector_top10_equals_exact_maxsim(make, multi_data, prefetch: str) -> None:
    pages, ids, queries = multi_data
    idx = make("multi", prefetch=prefetch, n_candidates=len(pages))  # every page reaches MaxSim
    idx.add(pages, ids)
    idx.flush()
    local = MultiVectorIndex(DIM, device="cpu")
    local.add(pages, ids)
    for a, b in zip(idx.search(queries, 10), local.search(queries, 10)):
        _same_ranking(a, b, tol=2e-3)


def test_prefetch_limits_candidates_and_exact_mode_has_none(make, multi_data) -> None:
    pages, ids, queries = multi_data
    local = MultiVectorIndex(DIM, device="cpu")
    local.add(pages, ids)
    want = local.search(queries, 10)
    exact = make("multi", n_candidates=0)  # no prefetch: MaxSim over every point
    exact.add(pages, ids)
    exact.flush()
    for a, b in zip(exact.search(queries, 10), want):
        _same_ranking(a, b, tol=2e-3)
    narrow = make("multi", n_candidates=12)
    narrow.add(pages, ids)
    narrow.flush()
    got = narrow.search(queries, 10)
    # MaxSim re-ranks the 12 MUVERA candidates: scores are exact MaxSim scores of those pages
    exact_scores = {i: s for i, s in local.search(queries[:1], len(pages))[0]}
    for i, s in got[0]:
        assert abs(exact_scores[i] - s) < 2e-3
    # queries made of a page's own vectors: MUVERA must pre-select that page among 12 of 60
    rng = np.random.default_rng(3)
    own = [_unit(pages[j][: max(3, len(pages[j]) // 2)] + 0.05 * rng.standard_normal((1, DIM))) for j in (4, 17, 33)]
    for j, hits in zip((4, 17, 33), narrow.search(own, 3)):
        assert hits[0][0] == int(ids[j])


def test_quantization_options_are_recorded_and_search_still_ranks(make, single_data) -> None:
    x, ids, q = single_data
    idx = make("single", quantization="scalar", oversampling=3.0, rescore=True)
    idx.add(x, ids)
    idx.flush()
    assert idx.schema.quantization == "scalar" and idx.config()["schema"]["oversampling"] == 3.0
    local = SingleVectorIndex(DIM, index_type="flat", device="cpu")
    local.add(x, ids)
    for a, b in zip(idx.search(q, 5), local.search(q, 5)):  # rescored with the originals
        assert _ranked_ids(a)[0] == _ranked_ids(b)[0]
    params = idx.schema.search_params(final=True)
    assert params.quantization.rescore is True


# ----------------------------------------------------------------------------- filters
def test_filters_apply_inside_the_query(make, single_data) -> None:
    x, ids, q = single_data
    idx = make("single")
    idx.add(x, ids, payloads=[_meta(i) for i in range(len(ids))])
    idx.flush()
    team = {int(i): _meta(n)["meta"]["team"] for n, i in enumerate(ids)}
    year = {int(i): _meta(n)["meta"]["year"] for n, i in enumerate(ids)}
    k = 15
    red = idx.search(q, k, where=[Condition(("meta", "team"), "eq", "red")])
    assert all(len(h) == k for h in red), "the filter must act before the top-k, not after it"
    assert all(team[i] == "red" for h in red for i, _ in h)
    # text equality like the SQLite store: "2001" matches the integer 2001
    y = idx.search(q, k, where=[Condition(("meta", "year"), "eq", "2001")])
    assert y[0] and all(year[i] == 2001 for h in y for i, _ in h)
    ne = idx.search(q, k, where=[Condition(("meta", "team"), "ne", "red")])
    assert all(team[i] == "blue" for h in ne for i, _ in h)
    inn = idx.search(q, k, where=[Condition(("meta", "year"), "in", ["2000", "2002"])])
    assert all(year[i] in (2000, 2002) for h in inn for i, _ in h)
    nin = idx.search(q, k, where=[Condition(("meta", "year"), "nin", ["2000", "2002"])])
    assert nin[0] and all(year[i] == 2001 for h in nin for i, _ in h)
    rng = idx.search(q, k, where=[Condition(("meta", "score"), "gte", 11.5)])
    assert all(i >= ids[115] for h in rng for i, _ in h)
    both = idx.search(q, k, where=[Condition(("meta", "team"), "eq", "red")], allowed_ids=ids[:10])
    assert all(i in set(ids[:10].tolist()) and team[i] == "red" for h in both for i, _ in h)
    assert idx.search(q, k, allowed_ids=[]) == [[] for _ in q]
    assert idx.search(q, k, where=[Condition(("meta", "team"), "eq", "green")]) == [[] for _ in q]
    # payload indexes on the filtered keys, typed by value
    assert idx.payload_indexes["meta.team"] == "keyword" and idx.payload_indexes["meta.year"] == "integer"


def test_numeric_filters_read_the_number_copy_when_given(make, single_data) -> None:
    x, ids, q = single_data
    idx = make("single")
    # "year" stored as a string in meta and as a number in meta_num (what a collection writes)
    payloads = [{"meta": {"year": str(2000 + n % 3)}, "meta_num": {"year": float(2000 + n % 3)}} for n in range(30)]
    idx.add(x[:30], ids[:30], payloads=payloads)
    idx.flush()
    year = {int(ids[n]): 2000 + n % 3 for n in range(30)}
    num = [Condition(("meta", "year"), "gt", 2000.5, number_path=("meta_num", "year"))]
    assert all(year[i] > 2000 for h in idx.search(q, 30, where=num) for i, _ in h)
    assert len(idx.search(q[:1], 30, where=num)[0]) == 20
    plain = [Condition(("meta", "year"), "gt", 2000.5)]  # no numeric copy: strings never compare as numbers
    assert idx.search(q[:1], 30, where=plain) == [[]]
    eq = [Condition(("meta", "year"), "eq", "2001.0", number_path=("meta_num", "year"))]
    assert len(idx.search(q[:1], 30, where=eq)[0]) == 10  # numeric equality through the copy


def test_update_payload_changes_what_filters_see(make, single_data) -> None:
    x, ids, q = single_data
    idx = make("single")
    idx.add(x[:10], ids[:10], payloads=[{"meta": {"lang": "en"}} for _ in range(10)])
    idx.flush()
    idx.update_payload(ids[:3], {"meta": {"lang": "fr"}})
    fr = idx.search(q[:1], 10, where=[Condition(("meta", "lang"), "eq", "fr")])[0]
    assert sorted(_ranked_ids(fr)) == sorted(ids[:3].tolist())


# ----------------------------------------------------------------------------- writes
def test_add_remove_len_ids_and_duplicates(make, multi_data) -> None:
    pages, ids, _ = multi_data
    idx = make("multi")
    idx.add(pages[:5], ids[:5])
    assert len(idx) == 5 and idx.count() == 0  # buffered until save
    with pytest.raises(DuplicateIdError):
        idx.add(pages[:1], ids[:1])
    idx.flush()
    assert idx.count() == 5 and idx.ids.tolist() == ids[:5].tolist()
    assert idx.num_vectors == sum(p.shape[0] for p in pages[:5])
    with pytest.raises(DuplicateIdError, match="already in the index"):
        idx.add(pages[:1], ids[:1])
    assert idx.remove([int(ids[0]), int(ids[1]), 999_999]) == 2
    assert idx.remove([int(ids[0])]) == 0  # idempotent
    assert len(idx) == 3 and int(ids[0]) not in idx.ids.tolist()
    idx.add(pages[:1], ids[:1])  # a removed id can be added again
    idx.flush()
    assert np.allclose(idx.get(int(ids[0])), pages[0].astype(np.float16).astype(np.float32))
    with pytest.raises(IndexInputError):
        idx.add([np.zeros((3, DIM + 1), np.float32)], [1])
    with pytest.raises(IndexInputError):
        idx.add(pages[:2], [1])


def test_upserts_are_idempotent_and_batched(make, single_data, monkeypatch) -> None:
    x, ids, _ = single_data
    idx = make("single")
    calls: list[int] = []
    real = idx._upsert
    monkeypatch.setattr(qindex, "UPSERT_BYTES", 20 * DIM * 25)  # about 25 points per request
    monkeypatch.setattr(idx, "_upsert", lambda points: (calls.append(len(points)), real(points)))
    idx.add(x, ids)
    idx.flush()
    assert len(calls) >= 4 and sum(calls) == len(ids) and max(calls) <= 25
    from qdrant_client import models

    real([models.PointStruct(id=int(ids[0]), vector={"dense": x[0].tolist()})])  # a retried upsert
    assert idx.count() == len(ids)  # the same point id overwrites: no duplicate


# ----------------------------------------------------------------------------- persistence
def test_save_writes_a_config_without_the_key_and_load_reopens(tmp_path: Path, multi_data) -> None:
    pages, ids, queries = multi_data
    url = f"path:{tmp_path / 'qdrant'}"
    idx = QdrantIndex.create(DIM, kind="multi", url=url, collection="pages", prefetch="mean", api_key=SECRET)
    idx.add(pages[:20], ids[:20])
    idx.save(tmp_path / "index")
    before = idx.search(queries, 5)
    idx.close()
    text = (tmp_path / "index" / "index.json").read_text()
    assert SECRET not in text
    cfg = read_config(tmp_path / "index")
    assert cfg["collection"] == "pages" and cfg["schema"]["prefetch"] == "mean"
    again = QdrantIndex.load(tmp_path / "index")
    try:
        assert again.search(queries, 5) == before
        assert len(again) == 20
    finally:
        again.close()
    with pytest.raises(IndexFormatError):
        QdrantIndex.load(tmp_path)


def test_load_reports_a_missing_or_different_collection(tmp_path: Path) -> None:
    url = f"path:{tmp_path / 'qdrant'}"
    idx = QdrantIndex.create(DIM, url=url, collection="gone")
    idx.save(tmp_path / "index")
    idx.drop()
    idx.close()
    with pytest.raises(QdrantNotFoundError, match="'gone' does not exist at path:"):
        QdrantIndex.load(tmp_path / "index")
    other = QdrantIndex.create(DIM + 8, url=url, collection="gone")
    other.close()
    with pytest.raises(QdrantError, match="does not fit this index: its vector 'dense' has size 40"):
        QdrantIndex.load(tmp_path / "index")


def test_create_adopts_only_an_empty_collection_of_the_same_layout(make, qdrant_url: str, single_data) -> None:
    x, ids, _ = single_data
    first = make("single")
    again = QdrantIndex.create(DIM, url=qdrant_url, collection=first.collection)  # empty, same layout
    again.close()
    first.add(x[:3], ids[:3])
    first.flush()
    with pytest.raises(QdrantError, match="already exists and holds 3 points"):
        QdrantIndex.create(DIM, url=qdrant_url, collection=first.collection)
    with pytest.raises(QdrantError, match="already exists and its vector 'dense' has size"):
        QdrantIndex.create(DIM * 2, url=qdrant_url, collection=first.collection, exist_ok=True)


# ----------------------------------------------------------------------------- failures
def test_urls_are_checked_and_shown_without_credentials() -> None:
    assert normalize_url("path:relative/dir").startswith("path:/")
    assert display_url("https://user:pw@example.com:6333/x?api-key=1") == "https://example.com:6333/x"
    with pytest.raises(QdrantError, match="bad Qdrant URL"):
        normalize_url("ftp://example.com")
    with pytest.raises(QdrantError, match="path:DIR"):
        normalize_url("path:")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_secret_nowhere(exc: BaseException, caplog: pytest.LogCaptureFixture, capsys) -> None:
    out, err = capsys.readouterr()
    assert SECRET not in str(exc) and SECRET not in repr(exc)
    assert SECRET not in out and SECRET not in err
    assert all(SECRET not in r.getMessage() for r in caplog.records)


def test_unreachable_qdrant_is_one_line_naming_the_url_and_never_the_key(caplog, capsys) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(QdrantUnavailableError) as info:
        QdrantIndex.create(DIM, url=url, collection="x", api_key=SECRET, retry=FAST_RETRY)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"cannot reach Qdrant at {url}") and "3 attempts" in msg
    assert info.value.http_status == 503
    assert [r for r in caplog.records if "retry" in r.getMessage()], "retries are logged"
    _assert_secret_nowhere(info.value, caplog, capsys)


class _FakeQdrant(http.server.BaseHTTPRequestHandler):
    """Answers every request with ``status`` (a JSON Qdrant error body) and records the api-key header."""

    status = 403
    seen_keys: list[str] = []

    def _answer(self) -> None:
        type(self).seen_keys.append(self.headers.get("api-key", ""))
        body = json.dumps({"status": {"error": "fake refusal"}, "time": 0}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def _fake_server(status: int) -> Iterator[tuple[str, type]]:
    handler = type("Handler", (_FakeQdrant,), {"status": status, "seen_keys": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_refusing_qdrant_is_one_line_and_the_key_is_sent_but_never_shown(caplog, capsys) -> None:
    caplog.set_level(logging.DEBUG)
    with _fake_server(403) as (url, handler):
        with pytest.raises(QdrantRefusedError) as info:
            QdrantIndex.create(DIM, url=url, collection="x", api_key=SECRET, retry=FAST_RETRY)
        assert handler.seen_keys == [SECRET], "refusals are not retried; the key went in the header"
    msg = str(info.value)
    assert "\n" not in msg and f"Qdrant at {url} refused the request (HTTP 403" in msg and "API key" in msg
    _assert_secret_nowhere(info.value, caplog, capsys)


def test_overloaded_qdrant_is_retried_with_a_bound(caplog, capsys) -> None:
    with _fake_server(503) as (url, handler):
        with pytest.raises(QdrantUnavailableError, match=f"cannot reach Qdrant at {url}: HTTP 503"):
            QdrantIndex.create(DIM, url=url, collection="x", api_key=SECRET, retry=FAST_RETRY)
        assert len(handler.seen_keys) == FAST_RETRY.attempts


def test_transient_failures_are_retried_then_succeed(make, single_data, monkeypatch) -> None:
    import httpx
    from qdrant_client.http.exceptions import ResponseHandlingException

    x, ids, q = single_data
    idx = make("single")
    conn = idx.connection
    monkeypatch.setattr(conn, "local", False)  # treat the local client like a remote one
    sleeps: list[float] = []
    monkeypatch.setattr(conn, "_sleep", sleeps.append)
    real = conn.client.upsert
    failures = iter([ResponseHandlingException(httpx.ConnectError("connection reset")) for _ in range(2)])

    def flaky(*args, **kwargs):
        exc = next(failures, None)
        if exc is not None:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(conn.client, "upsert", flaky)
    idx.add(x[:4], ids[:4])
    idx.flush()
    assert idx.count() == 4
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] * 1.1  # exponential backoff
    monkeypatch.setattr(conn, "retry", FAST_RETRY)
    monkeypatch.setattr(
        conn.client, "upsert", lambda *a, **k: (_ for _ in ()).throw(ResponseHandlingException(httpx.ReadTimeout("t")))
    )
    idx.add(x[4:6], ids[4:6])
    with pytest.raises(QdrantUnavailableError, match="gave up after 3 attempts"):
        idx.flush()
    assert len(idx) == 6  # still buffered: a later save sends them again (idempotent)


def test_local_mode_storage_is_shared_within_a_process(tmp_path: Path, single_data) -> None:
    x, ids, q = single_data
    url = f"path:{tmp_path / 'q'}"
    a = QdrantIndex.create(DIM, url=url, collection="one")
    b = QdrantIndex.create(DIM, url=url, collection="two")  # the same directory: one client, shared
    a.add(x[:3], ids[:3])
    a.flush()
    assert a.count() == 3 and b.count() == 0
    a.close()
    assert b.count() == 0  # b keeps the client open
    b.close()
