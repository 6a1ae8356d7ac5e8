"""Qdrant-backed collections on real rendered pages with tiny models, through qdrant-client's
local mode (``qdrant_url="path:DIR"``, the same option as ``dse index --qdrant-url path:DIR``):
same top-10 as the local exact index, filters inside the query, remove, reconciliation of a
Qdrant side that disagrees with SQLite, metadata updates, export (new directory and in place),
the command line and the HTTP server."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.docs import make_pdf

pytest.importorskip("qdrant_client")

from dse.cli import main
from dse.collection import EXACT_MAXSIM, Collection, CollectionError
from dse.collection.export import export_to_qdrant
from renderers import RenderSettings

SECRET = "qdrant-secret-key-NEVER-SHOWN"
QUERIES = ("quarterly revenue by region", "a bar chart of growth", "benchmark table", "retrieval report")
RENDER = RenderSettings(dpi=30)


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("qsrc")
    for name, pages, seed, team, year in (
        ("a", 3, 21, "red", 2020),
        ("b", 2, 22, "blue", "2021"),
        ("c", 2, 23, "red", 2022),
    ):
        make_pdf(root / f"{name}.pdf", pages, seed=seed)
        (root / f"{name}.pdf.meta.json").write_text(json.dumps({"team": team, "year": year}))
    return root


@pytest.fixture(scope="module")
def encoders(tiny_model_dir: Callable[[str], Path]) -> Callable[[str], Any]:
    from dse import Encoder

    cache: dict[str, Any] = {}

    def get(family: str) -> Any:
        if family not in cache:
            cache[family] = Encoder.load(str(tiny_model_dir(family)), device="cpu")
        return cache[family]

    return get


@pytest.fixture(scope="module")
def local_cols(tmp_path_factory: pytest.TempPathFactory, src: Path, encoders) -> Callable[[str], Path]:
    """The local exact collection (flat / maxsim) of ``src`` per family, built once."""
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            directory = tmp_path_factory.mktemp("local") / family
            enc = encoders(family)
            params = EXACT_MAXSIM if enc.kind == "multi" else None  # new maxsim collections are approximate
            with Collection.create(directory, enc, device="cpu", index_params=params) as col:
                report = col.add(src, render_settings=RENDER, progress=False)
                assert not report.failures and report.pages == 7
            built[family] = directory
        return built[family]

    return get


def _ranked(hits: list[Any]) -> list[tuple[str, int, float]]:
    return [(Path(h.source).name, h.page, h.score) for h in hits]


def assert_same_top(a: list[Any], b: list[Any], tol: float = 2e-3) -> None:
    """Same pages in the same order (pages whose scores tie within ``tol`` may swap), same scores."""
    ra, rb = _ranked(a), _ranked(b)
    assert len(ra) == len(rb), (ra, rb)
    for (sa, pa, xa), (sb, pb, xb) in zip(ra, rb):
        assert abs(xa - xb) <= tol * max(1.0, abs(xb)), (ra, rb)
        if (sa, pa) != (sb, pb):
            assert any((s, p) == (sa, pa) and abs(x - xa) <= tol * max(1.0, abs(x)) for s, p, x in rb), (ra, rb)


def _ids_agree(col: Collection) -> None:
    ids = np.asarray(col.index.stored_ids()).tolist()
    assert len(ids) == len(set(ids)) and set(ids) == col.store.stored_page_ids()


@pytest.mark.parametrize("family", ["colqwen2", "dse-qwen2"])
def test_top10_equals_the_local_exact_index(family: str, tmp_path: Path, src: Path, encoders, local_cols) -> None:
    enc = encoders(family)
    qcol = Collection.create(tmp_path / "q", enc, device="cpu", backend="qdrant", qdrant_url=f"path:{tmp_path / 'qd'}")
    try:
        report = qcol.add(src, render_settings=RENDER, progress=False)
        assert report.pages == 7 and not report.failures
        _ids_agree(qcol)
        with Collection.open(local_cols(family), encoder=enc, device="cpu") as local:
            for q in QUERIES:
                assert_same_top(qcol.search(q, k=10), local.search(q, k=10))
            image = next((tmp_path / "q" / "images").rglob("*.png"))
            assert_same_top(qcol.search(image=image, k=10), local.search(image=image, k=10))
            # filters act inside the Qdrant query: the same pages as the SQLite filter of the local index
            for where in ({"team": "red"}, {"year": "2021"}, {"year": 2020}):
                got, want = qcol.search(QUERIES[0], k=10, where=where), local.search(QUERIES[0], k=10, where=where)
                assert got and len(got) < 7
                assert_same_top(got, want)
            assert qcol.search(QUERIES[0], where={"team": "green"}) == []
            vecs = enc.encode_queries(texts=list(QUERIES[:2]))
            for a, b in zip(qcol.search_vectors(vecs, k=5), local.search_vectors(vecs, k=5)):
                assert_same_top(a, b)
    finally:
        qcol.close()


def test_manifest_records_backend_and_name_never_the_key(
    tmp_path: Path, src: Path, encoders, caplog: pytest.LogCaptureFixture, capsys
) -> None:
    caplog.set_level(logging.DEBUG)
    directory = tmp_path / "c"
    col = Collection.create(
        directory,
        encoders("dse-qwen2"),
        device="cpu",
        backend="qdrant",
        qdrant_url=f"path:{tmp_path / 'qd'}",
        qdrant_api_key=SECRET,
        qdrant_collection="my-pages",
        index_params={"n_candidates": 50},
    )
    col.add(src / "a.pdf", render_settings=RENDER, progress=False)
    stats = col.stats()
    col.close()
    manifest = json.loads((directory / "collection.json").read_text())
    assert manifest["index"]["backend"] == "qdrant" and manifest["index"]["type"] == "qdrant"
    assert manifest["index"]["qdrant"] == {"collection": "my-pages", "url": f"path:{tmp_path / 'qd'}"}
    assert stats["backend"] == "qdrant" and stats["qdrant"]["points"] == 3 == stats["pages"]
    assert "meta.team" in stats["qdrant"]["payload_indexes"]
    for f in directory.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f
    out, err = capsys.readouterr()
    assert SECRET not in out + err and all(SECRET not in r.getMessage() for r in caplog.records)
    assert any(
        "local mode" in r.getMessage() and "tests and development only" in r.getMessage() for r in caplog.records
    )


def test_bad_backend_settings(tmp_path: Path, encoders) -> None:
    enc = encoders("dse-qwen2")
    with pytest.raises(CollectionError, match="needs a URL"):
        Collection.create(tmp_path / "a", enc, backend="qdrant")
    with pytest.raises(CollectionError, match="bad Qdrant URL"):
        Collection.create(tmp_path / "b", enc, backend="qdrant", qdrant_url="ftp://x")
    with pytest.raises(CollectionError, match="bad Qdrant setting"):
        Collection.create(tmp_path / "c", enc, backend="qdrant", qdrant_url=":memory:", index_params={"hnsw": 3})
    with pytest.raises(CollectionError, match="unknown backend"):
        Collection.create(tmp_path / "d", enc, backend="milvus")
    assert not any((tmp_path / n).exists() for n in "abcd"), "a failed create leaves nothing behind"


def test_remove_deletes_the_points(tmp_path: Path, src: Path, encoders) -> None:
    col = Collection.create(
        tmp_path / "c", encoders("dse-qwen2"), device="cpu", backend="qdrant", qdrant_url=f"path:{tmp_path / 'qd'}"
    )
    try:
        col.add(src, render_settings=RENDER, progress=False)
        assert col.index.count() == 7
        assert col.remove(str(src / "b.pdf")) == 1
        assert col.index.count() == 5
        _ids_agree(col)
        assert all(Path(h.source).name != "b.pdf" for h in col.search(QUERIES[0], k=10))
    finally:
        col.close()


def test_disagreement_is_reported_on_open_and_repaired_by_index(
    tmp_path: Path, src: Path, encoders, caplog: pytest.LogCaptureFixture
) -> None:
    from qdrant_client import models

    directory = tmp_path / "c"
    col = Collection.create(
        directory, encoders("dse-qwen2"), device="cpu", backend="qdrant", qdrant_url=f"path:{tmp_path / 'qd'}"
    )
    col.add(src, render_settings=RENDER, progress=False)
    reference = {(Path(r.source).name, r.page) for r in col.store.pages(sorted(col.store.stored_page_ids())).values()}
    # damage the Qdrant side behind the collection's back: one point lost, one foreign point
    lost = sorted(col.store.stored_page_ids())[2]
    client, name = col.index.connection.client, col.index.collection
    client.delete(name, points_selector=models.PointIdsList(points=[lost]), wait=True)
    client.upsert(name, [models.PointStruct(id=999_999, vector={"dense": [0.1] * col.dim}, payload={})], wait=True)
    col.close()

    caplog.set_level(logging.WARNING)
    col = Collection.open(directory, encoder=encoders("dse-qwen2"), device="cpu")
    try:
        assert col.consistency == {"points": 7, "stored_pages": 7, "missing_points": 1, "extra_points": 1}
        warning = [r.getMessage() for r in caplog.records if "disagrees" in r.getMessage()]
        assert warning and "1 stored pages have no point, 1 points belong to no stored page" in warning[0]
        assert "dse index" in warning[0]
        assert col.stats()["qdrant"]["missing_points"] == 1
        hits = col.search(QUERIES[0], k=10)  # still answers (the foreign point is not a page: no hit)
        assert len(hits) == 6 and all(h.page_id != 999_999 for h in hits)
        report = col.add(src, render_settings=RENDER, progress=False)  # dse index repairs
        assert report.resumed == 1 and report.pages == 1
        _ids_agree(col)
        assert 999_999 not in col.index.stored_ids().tolist()
        pages = {(Path(r.source).name, r.page) for r in col.store.pages(sorted(col.store.stored_page_ids())).values()}
        assert pages == reference
    finally:
        col.close()
    with Collection.open(directory, encoder=encoders("dse-qwen2"), device="cpu") as again:
        assert again.consistency == {"points": 7, "stored_pages": 7, "missing_points": 0, "extra_points": 0}


def test_metadata_update_reaches_the_payload(tmp_path: Path, src: Path, encoders) -> None:
    from indexes.qdrant import Condition

    docs = tmp_path / "docs"
    shutil.copytree(src, docs)
    col = Collection.create(
        tmp_path / "c", encoders("dse-qwen2"), device="cpu", backend="qdrant", qdrant_url=f"path:{tmp_path / 'qd'}"
    )
    try:
        col.add(docs, render_settings=RENDER, progress=False)
        (docs / "b.pdf.meta.json").write_text(json.dumps({"team": "green", "year": 2030}))
        report = col.add(docs, render_settings=RENDER, progress=False)
        assert report.metadata_updated == 1 and report.pages == 0
        hits = col.search(QUERIES[0], k=10, where={"team": "green"})
        assert {(Path(h.source).name, h.meta["team"]) for h in hits} == {("b.pdf", "green")} and len(hits) == 2
        query = col.encoder.encode_queries(texts=["x"])
        got = col.index.search(query, 10, where=[Condition(("meta_num", "year"), "gte", 2030)])
        assert len(got[0]) == 2  # the numeric copy was updated too
    finally:
        col.close()


@pytest.mark.parametrize("family", ["colqwen2", "dse-qwen2"])
def test_export_to_a_new_directory_keeps_the_top10(family: str, tmp_path: Path, encoders, local_cols) -> None:
    enc = encoders(family)
    source = tmp_path / "local"
    shutil.copytree(local_cols(family), source)
    (source / ".lock").unlink(missing_ok=True)
    url = f"path:{tmp_path / 'qd'}"
    report = export_to_qdrant(source, url, out=tmp_path / "exported")
    assert report.pages == 7 and report.sent == 7 and report.already == 0
    assert not (tmp_path / "exported" / ".dse-export.json").exists()
    # images are hard links of the source's, not copies
    a = next((source / "images").rglob("*.png"))
    b = tmp_path / "exported" / a.relative_to(source)
    assert b.stat().st_ino == a.stat().st_ino
    with Collection.open(tmp_path / "exported", encoder=enc, device="cpu") as exported:
        assert exported.backend == "qdrant"
        _ids_agree(exported)
        with Collection.open(source, encoder=enc, device="cpu") as local:
            assert local.backend == "local"  # the source is untouched
            for q in QUERIES:
                assert_same_top(exported.search(q, k=10), local.search(q, k=10))
    with pytest.raises(CollectionError, match="already a collection"):
        export_to_qdrant(source, url, out=tmp_path / "exported")


def test_export_in_place_switches_the_collection(tmp_path: Path, encoders, local_cols) -> None:
    enc = encoders("colqwen2")
    directory = tmp_path / "col"
    shutil.copytree(local_cols("colqwen2"), directory)
    (directory / ".lock").unlink(missing_ok=True)
    with Collection.open(directory, encoder=enc, device="cpu") as before:
        want = {q: before.search(q, k=10) for q in QUERIES}
    report = export_to_qdrant(directory, f"path:{tmp_path / 'qd'}", in_place=True, drop_local=True)
    assert report.in_place and report.sent == 7
    manifest = json.loads((directory / "collection.json").read_text())
    assert manifest["index"]["backend"] == "qdrant" and manifest["index"]["dir"] == "index-qdrant"
    assert not (directory / "index").exists() and (directory / "index-qdrant" / "index.json").is_file()
    with Collection.open(directory, encoder=enc, device="cpu") as after:
        for q in QUERIES:
            assert_same_top(after.search(q, k=10), want[q])
        # the converted collection keeps indexing into Qdrant
        assert after.stats()["pages"] == 7
    with pytest.raises(CollectionError, match="already a qdrant-backed collection"):
        export_to_qdrant(directory, f"path:{tmp_path / 'qd'}", in_place=True)


# ----------------------------------------------------------------------------- command line
def test_cli_index_search_stats_remove_export_and_errors(
    tmp_path: Path, src: Path, tiny_model_dir, local_cols, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("QDRANT_API_KEY", SECRET)
    model = str(tiny_model_dir("dse-qwen2"))
    col, url = str(tmp_path / "c"), f"path:{tmp_path / 'qd'}"
    common = ["--device", "cpu", "--dpi", "30"]
    assert main(["index", str(src), "-c", col, "-m", model, "--qdrant-url", url, *common]) == 0
    out = capsys.readouterr().out
    assert "7 pages indexed" in out
    assert main(["search", "quarterly revenue", "-c", col, "--device", "cpu", "--where", "team=blue", "--json"]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(hits) == 2 and {h["meta"]["team"] for h in hits} == {"blue"}
    assert main(["stats", "-c", col]) == 0
    out = capsys.readouterr().out
    assert "backend: qdrant" in out and "qdrant points: 7" in out
    assert main(["remove", str(src / "a.pdf"), "-c", col]) == 0
    assert main(["stats", "-c", col, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert stats["pages"] == 4 and stats["qdrant"]["points"] == 4
    # export of a local collection
    local = tmp_path / "local"
    shutil.copytree(local_cols("dse-qwen2"), local)
    (local / ".lock").unlink(missing_ok=True)
    out_dir = str(tmp_path / "exported")
    assert main(["export", "-c", str(local), "--to-qdrant", url, "--out", out_dir]) == 0
    assert "exported 7 pages" in capsys.readouterr().out
    assert main(["search", "quarterly revenue", "-c", out_dir, "--device", "cpu"]) == 0
    assert capsys.readouterr().out.count("\n") == 7
    # errors: one line, right exit status, no key
    assert main(["index", str(src), "-c", str(tmp_path / "x"), "-m", model, "--backend", "qdrant", *common]) == 2
    assert "needs --qdrant-url" in capsys.readouterr().err
    assert main(["index", str(src), "-c", str(tmp_path / "x"), "-m", model, "--qdrant-url", "ftp://h", *common]) == 2
    assert main(["export", "-c", str(local), "--to-qdrant", url]) == 2
    err = capsys.readouterr().err
    assert "bad Qdrant URL" in err and "--out NEW_DIR" in err
    out, err = capsys.readouterr()
    assert SECRET not in out + err


def test_cli_unreachable_qdrant_is_one_line(tmp_path: Path, src: Path, tiny_model_dir, capsys, monkeypatch) -> None:
    import socket

    monkeypatch.setenv("QDRANT_API_KEY", SECRET)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    model = str(tiny_model_dir("dse-qwen2"))
    status = main(["index", str(src / "a.pdf"), "-c", str(tmp_path / "c"), "-m", model, "--qdrant-url", url])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("dse index: error")]
    assert status == 3 and len(lines) == 1
    assert lines[0].startswith(f"dse index: error: cannot reach Qdrant at {url}: ")
    assert SECRET not in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()


# ----------------------------------------------------------------------------- serving
def test_server_serves_a_qdrant_backed_collection(tmp_path: Path, src: Path, encoders) -> None:
    from fastapi.testclient import TestClient

    from dse.server.app import create_app

    enc = encoders("dse-qwen2")
    directory = tmp_path / "c"
    with Collection.create(directory, enc, device="cpu", backend="qdrant", qdrant_url=f"path:{tmp_path / 'qd'}") as col:
        col.add(src, render_settings=RENDER, progress=False)
        want = col.search(QUERIES[0], k=5, where={"team": "red"})
    with TestClient(create_app(directory, device="cpu", encoder=enc)) as client:
        info = client.get("/info").json()
        assert info["collection"]["pages"] == 7 and info["collection"]["index"] == "qdrant"
        r = client.post("/search", json={"text": QUERIES[0], "k": 5, "filters": {"team": "red"}})
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        assert [(h["page_id"], round(h["score"], 4)) for h in hits] == [(h.page_id, round(h.score, 4)) for h in want]
        assert client.get(hits[0]["image_url"]).status_code == 200
        # Qdrant going away: the replica answers 503 with the one-line reason (not a 400, not a traceback)
        import httpx
        from qdrant_client.http.exceptions import ResponseHandlingException

        from indexes.qdrant import RetryPolicy

        conn = client.app.state.dse.collection.index.connection
        conn.local, conn.retry = False, RetryPolicy(attempts=2, base_delay=0.01)

        def down(*args: Any, **kwargs: Any) -> Any:
            raise ResponseHandlingException(httpx.ConnectError("[Errno 111] Connection refused"))

        conn.client.query_batch_points = down
        r = client.post("/search", json={"text": QUERIES[0], "k": 5})
        assert r.status_code == 503 and r.json()["detail"].startswith("cannot reach Qdrant at path:")


def test_eval_through_a_qdrant_backed_collection_gives_the_same_metrics(tmp_path: Path, tiny_model_dir, capsys) -> None:
    from qdrant_client import QdrantClient
    from support.eval_data import make_local_benchmark

    bench = make_local_benchmark(tmp_path / "bench")
    model = str(tiny_model_dir("dse-qwen2"))
    metrics = {}
    for backend in ("local", "qdrant"):
        extra = ["--backend", "qdrant", "--qdrant-url", f"path:{tmp_path / 'qd'}"] if backend == "qdrant" else []
        out = tmp_path / backend
        args = ["eval", "--model", model, "--data-dir", str(bench.root), "--out", str(out), "--no-cache"]
        assert main([*args, "--device", "cpu", *extra]) == 0
        metrics[backend] = json.loads((out / "metrics.json").read_text())["metrics"]
    capsys.readouterr()
    assert metrics["local"]["ndcg_cut_10"] > 0 and set(metrics["qdrant"]) == set(metrics["local"])
    assert metrics["qdrant"] == pytest.approx(metrics["local"])
    client = QdrantClient(path=str(tmp_path / "qd"))
    try:
        assert client.get_collections().collections == [], "the temporary collection's Qdrant side is deleted"
    finally:
        client.close()


def test_the_url_can_be_overridden_when_opening(tmp_path: Path, src: Path, encoders, monkeypatch) -> None:
    enc = encoders("dse-qwen2")
    with Collection.create(
        tmp_path / "c", enc, device="cpu", backend="qdrant", qdrant_url=f"path:{tmp_path / 'a'}"
    ) as col:
        col.add(src / "b.pdf", render_settings=RENDER, progress=False)
    (tmp_path / "a").rename(tmp_path / "b")  # the cluster moved (or replicas reach it by another address)
    with pytest.raises(CollectionError, match=r"does not exist at path:.*/a \(deleted, or another Qdrant\?"):
        Collection.open(tmp_path / "c", encoder=enc, device="cpu")
    with Collection.open(tmp_path / "c", encoder=enc, device="cpu", qdrant_url=f"path:{tmp_path / 'b'}") as col:
        assert len(col.search(QUERIES[0])) == 2
    monkeypatch.setenv("DSE_QDRANT_URL", f"path:{tmp_path / 'b'}")
    with Collection.open(tmp_path / "c", encoder=enc, device="cpu") as col:
        assert col.stats()["qdrant"]["url"] == f"path:{tmp_path / 'b'}"


def test_a_read_only_key_opens_and_leaves_recovery_to_index(
    tmp_path: Path, src: Path, encoders, monkeypatch, caplog: pytest.LogCaptureFixture
) -> None:
    from indexes.qdrant import QdrantIndex, QdrantRefusedError

    enc = encoders("dse-qwen2")
    directory = tmp_path / "c"
    with Collection.create(directory, enc, device="cpu", backend="qdrant", qdrant_url=f"path:{tmp_path / 'q'}") as col:
        col.add(src / "b.pdf", render_settings=RENDER, progress=False)
        doc = col.store.documents()[0]
        col.store.add_pending_page(doc.id, 99, 10, 10, "images/x.png", None)  # left by an interrupted job

    def refused(self: Any, ids: Any) -> int:
        raise QdrantRefusedError("Qdrant at path:... refused the request (HTTP 403 Forbidden)")

    monkeypatch.setattr(QdrantIndex, "remove", refused)
    with Collection.open(directory, encoder=enc, device="cpu") as col:  # a search replica with a read-only key
        assert len(col.search(QUERIES[0])) == 2
        assert col.store.pending_page_ids(), "nothing was changed on the SQLite side either"
    assert any("cannot finish the recovery" in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    with Collection.open(directory, encoder=enc, device="cpu") as col:
        assert not col.store.pending_page_ids()
