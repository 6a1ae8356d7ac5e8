"""The HTTP API (FastAPI TestClient) on tiny dse-qwen2 (single-vector) and colqwen2 (multi-vector)
collections: health/info, text / image / fused / RRF search, filters, page images (no path from the
request ever reaches the filesystem), limits, API key, bind rule, similarity maps, answers, reload."""

from __future__ import annotations

import io
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from support.server import Built, copy_collection, make_page

from dse.cli import main
from dse.collection import Collection
from dse.server.app import create_app
from dse.server.limits import Limits
from dse.server.security import check_bind, is_loopback

KEY = "s3cret-key-123"


@pytest.fixture(scope="module")
def client(dse_col: Built):
    with TestClient(create_app(dse_col.directory, device="cpu", encoder=dse_col.encoder)) as c:
        yield c


@pytest.fixture(scope="module")
def multi_client(col_col: Built):
    with TestClient(create_app(col_col.directory, device="cpu", encoder=col_col.encoder)) as c:
        yield c


@pytest.fixture(scope="module")
def reference(dse_col: Built):
    """The collection opened directly (the results the API must reproduce)."""
    col = Collection.open(dse_col.directory, encoder=dse_col.encoder, device="cpu")
    yield col
    col.close()


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def assert_same_ranking(api_hits: list[dict], hits: list, tol: float = 1e-4) -> None:
    """Same pages in the same order with the same scores (order may differ only between near-ties)."""
    assert len(api_hits) == len(hits)
    for a, b in zip(api_hits, hits, strict=True):
        assert a["score"] == pytest.approx(b.score, abs=tol)
    if [a["page_id"] for a in api_hits] != [h.page_id for h in hits]:
        scores = sorted(h.score for h in hits)
        assert min(np.diff(scores)) < tol, "rankings differ beyond score ties"


# ---------------------------------------------------------------- basics
def test_health_info_and_docs(client: TestClient, dse_col: Built) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()
    assert info["collection"]["pages"] == 5 and info["collection"]["documents"] == 5
    assert info["collection"]["kind"] == "single" and info["collection"]["family"] == "dse-qwen2"
    assert info["features"] == {
        "answer": False,
        "similarity": False,
        "micro_batch": True,
        "image_queries": True,
        "fused_queries": True,
    }
    assert info["limits"]["max_k"] == 100
    spec = client.get("/openapi.json").json()
    # a single-vector collection without a generator: no similarity maps, no answers (see test_openapi.py)
    assert set(spec["paths"]) == {"/health", "/info", "/search", "/pages/{page_id}/image"}
    assert "multipart/form-data" in spec["paths"]["/search"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "<title>dse" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_text_search_equals_collection_search(client: TestClient, reference: Collection) -> None:
    r = client.post("/search", json={"text": "red page chart", "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == {"text": "red page chart", "image": False, "k": 3, "filters": None, "fusion": None}
    hits = body["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert all("image_path" not in h for h in hits), "server paths must not leak"
    assert hits[0]["image_url"] == f"/pages/{hits[0]['page_id']}/image"
    assert_same_ranking(hits, reference.search("red page chart", k=3))
    assert {h["source"] for h in hits} <= {h.source for h in reference.search("red page chart", k=5)}


def test_filters(client: TestClient, reference: Collection) -> None:
    r = client.post("/search", json={"text": "a page", "k": 10, "filters": {"team": "blue"}})
    hits = r.json()["hits"]
    assert len(hits) == 2 and {h["meta"]["team"] for h in hits} == {"blue"}
    assert_same_ranking(hits, reference.search("a page", k=10, where={"team": "blue"}))
    alias = client.post("/search", json={"text": "a page", "where": {"team": "green"}}).json()["hits"]
    assert [h["meta"]["team"] for h in alias] == ["green"]
    assert client.post("/search", json={"text": "a page", "filters": {"team": "nobody"}}).json()["hits"] == []
    # filters in a multipart request are a JSON string
    im = png_bytes(make_page((30, 60, 220), "q"))
    r = client.post("/search", files={"image": ("q.png", im, "image/png")}, data={"filters": '{"team": "red"}'})
    assert r.status_code == 200 and {h["meta"]["team"] for h in r.json()["hits"]} == {"red"}


def test_image_search_multipart(client: TestClient, dse_col: Built, reference: Collection) -> None:
    page_file = dse_col.corpus / "blue" / "p1.png"
    r = client.post("/search", files={"image": ("page.png", page_file.read_bytes(), "image/png")}, data={"k": "3"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"]["image"] is True and body["query"]["text"] is None
    top = body["hits"][0]
    # a DSE image query of a page is encoded like the page itself: it finds that page, cosine 1
    assert top["source"] == str(page_file.resolve()) and top["score"] == pytest.approx(1.0, abs=1e-4)
    assert_same_ranking(body["hits"], reference.search(image=page_file, k=3))


def test_fused_and_rrf_search(client: TestClient, dse_col: Built, reference: Collection) -> None:
    page_file = dse_col.corpus / "red" / "p0.png"
    files = {"image": ("page.png", page_file.read_bytes(), "image/png")}
    fused = client.post("/search", files=files, data={"text": "same chart in orange", "k": "4"})
    assert fused.status_code == 200, fused.text
    assert fused.json()["query"] == {
        "text": "same chart in orange",
        "image": True,
        "k": 4,
        "filters": None,
        "fusion": None,
    }
    assert_same_ranking(fused.json()["hits"], reference.search("same chart in orange", image=page_file, k=4))
    rrf = client.post("/search", files=files, data={"text": "same chart in orange", "k": "4", "fusion": "rrf"})
    assert rrf.status_code == 200 and rrf.json()["query"]["fusion"] == "rrf"
    expected = reference.search("same chart in orange", image=page_file, k=4, fusion="rrf")
    assert_same_ranking(rrf.json()["hits"], expected, tol=1e-9)
    # the fused scores are cosines, the RRF ones are 1/(60+rank) sums: different kinds of numbers
    assert rrf.json()["hits"][0]["score"] < 2 / 60


# ------------------------------------------------------------------ pages
def test_page_image_served_only_from_the_collection(
    client: TestClient, dse_col: Built, reference: Collection, tmp_path: Path
) -> None:
    hit = reference.search("anything", k=1)[0]
    r = client.get(f"/pages/{hit.page_id}/image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == Path(hit.image_path).read_bytes()
    thumb = client.get(f"/pages/{hit.page_id}/image", params={"width": 64})
    assert thumb.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(thumb.content)).width == 64
    missing = client.get("/pages/999999/image")
    assert missing.status_code == 404 and missing.json() == {"detail": "no page 999999 in this collection"}
    for bad in ("/pages/abc/image", "/pages/1.5/image"):
        r = client.get(bad)
        assert r.status_code == 422 and "page_id" in r.json()["detail"]
    for traversal in (
        "/pages/../../etc/passwd",
        "/pages/%2e%2e%2f%2e%2e%2fetc%2fpasswd/image",
        "/pages/1/../../../etc/passwd",
        "/static/../../../../etc/passwd",
    ):
        r = client.get(traversal)
        assert r.status_code in (404, 422) and b"root:" not in r.content
    assert client.get("/pages/1/image", params={"width": 5}).status_code == 422

    # a tampered database row pointing outside the collection is refused, not served
    copy = copy_collection(dse_col, tmp_path / "tampered")
    secret = tmp_path / "secret.png"
    make_page((0, 0, 0), "secret").save(secret)
    with sqlite3.connect(copy / "meta.sqlite") as db:
        db.execute("UPDATE pages SET image = ? WHERE id = ?", (f"images/../../{secret.name}", hit.page_id))
    with TestClient(create_app(copy, device="cpu", encoder=dse_col.encoder, micro_batch=False)) as c:
        r = c.get(f"/pages/{hit.page_id}/image")
        assert r.status_code == 404 and r.content != secret.read_bytes()


# ----------------------------------------------------------------- limits
def test_limits_and_bad_input(dse_col: Built, client: TestClient) -> None:
    def detail(r) -> str:
        return r.json()["detail"]

    # what the schema says (bounds, required, types) is checked by it: 422 with the field's location
    r = client.post("/search", json={"text": "x", "k": 1000})
    assert r.status_code == 422 and detail(r) == "body.k: Input should be less than or equal to 100"
    assert client.post("/search", json={"text": "x", "k": 0}).status_code == 422
    r = client.post("/search", json={"text": "x" * 2001})
    assert r.status_code == 422 and detail(r) == "body.text: String should have at most 2000 characters"
    r = client.post("/search", json={"text": "   "})
    assert r.status_code == 422 and detail(r) == "body.text: must not be blank (give some non-whitespace text)"
    r = client.post("/search", json={"k": 3})
    assert r.status_code == 422 and detail(r) == "body.text: Field required"
    r = client.post("/search", json={"text": "x", "filters": ["team", "red"]})
    assert r.status_code == 422 and detail(r) == 'body.filters: Input should be an object, got ["team", "red"]'
    r = client.post("/search", json={"text": "x", "filters": {"team": {"nested": 1}}})
    assert r.status_code == 422 and detail(r).startswith("body.filters.team")
    r = client.post("/search", json={"text": "x", "fusion": "magic"})
    assert r.status_code == 422 and detail(r).startswith("body.fusion")
    r = client.post("/search", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and detail(r).startswith("invalid JSON request")
    r = client.post("/search", content=b"text=x", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = client.post("/search", files={"image": ("q.png", b"definitely not an image", "image/png")})
    assert r.status_code == 400 and "not an image" in detail(r)
    r = client.post("/search", files={"image": ("q.png", b"", "image/png")})
    assert r.status_code == 400
    r = client.post(
        "/search",
        files={"image": ("q.png", png_bytes(make_page((1, 2, 3), "q")), "image/png")},
        data={"filters": "{broken"},
    )
    assert r.status_code == 400 and "filters must be a JSON object" in detail(r)
    r = client.post(
        "/search", files={"image": ("q.png", png_bytes(make_page((1, 2, 3), "q")), "image/png")}, data={"k": "many"}
    )
    assert (
        r.status_code == 422
        and detail(r).startswith("body.k: Input should be a valid integer")
        and '"many"' in detail(r)
    )
    # a query image with an extreme aspect ratio: the encoder's own check, as a 400
    r = client.post(
        "/search", files={"image": ("q.png", png_bytes(Image.new("RGB", (4000, 10), "white")), "image/png")}
    )
    assert r.status_code == 400 and "aspect ratio" in detail(r)

    small = Limits(max_upload_bytes=200_000, max_image_pixels=100_000, max_text_chars=50)
    with TestClient(create_app(dse_col.directory, device="cpu", encoder=dse_col.encoder, limits=small)) as c:
        big = png_bytes(Image.new("RGB", (400, 400), "white"))  # 160,000 px, a few KB
        r = c.post("/search", files={"image": ("big.png", big, "image/png")})
        assert r.status_code == 413 and "400x400 = 0.2 MP, over the 0.1 MP limit" in detail(r)
        noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8))
        r = c.post("/search", files={"image": ("noise.png", png_bytes(noise), "image/png")})
        assert r.status_code == 413 and "request body is too large" in detail(r)
        r = c.post("/search", json={"text": "y" * 51})  # the request models follow the app's limits
        assert r.status_code == 422 and "at most 50 characters" in detail(r)
        assert (
            c.get("/openapi.json").json()["components"]["schemas"]["SearchRequest"]["properties"]["text"]["maxLength"]
            == 50
        )
        # a body streamed without Content-Length is cut off at the limit too
        r = c.post(
            "/search",
            content=iter([b"{" + b" " * 150_000, b" " * 150_000 + b"}"]),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 413


# ---------------------------------------------------------------- API key
def test_api_key_required_and_accepted(dse_col: Built) -> None:
    app = create_app(dse_col.directory, device="cpu", encoder=dse_col.encoder, api_key=KEY)
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/").status_code == 200 and c.get("/static/style.css").status_code == 200
        for method, path, kwargs in (
            ("get", "/info", {}),
            ("post", "/search", {"json": {"text": "x"}}),
            ("get", "/pages/1/image", {}),
            ("post", "/answer", {"json": {"question": "q"}}),
            ("get", "/pages/1/similarity", {"params": {"text": "x"}}),
        ):
            r = getattr(c, method)(path, **kwargs)
            assert r.status_code == 401, path
            assert r.json()["detail"].startswith("an API key is required")
        r = c.get("/info", headers={"X-API-Key": "wrong-key-000"})
        assert r.status_code == 401 and r.json() == {"detail": "invalid API key"}
        assert c.get("/info", headers={"X-API-Key": KEY}).status_code == 200
        assert c.get("/info", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert c.get("/pages/1/image", params={"key": KEY}).status_code == 200
        r = c.post("/search", json={"text": "x", "k": 2}, headers={"X-API-Key": KEY})
        assert r.status_code == 200 and len(r.json()["hits"]) == 2


def test_bind_rule_and_cli_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path, dse_col: Built) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.3.2.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10") and not is_loopback("::")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", KEY)
    with pytest.raises(ValueError, match="refusing to listen on 0.0.0.0"):
        check_bind("0.0.0.0", None)

    assert main(["serve", "--collection", str(dse_col.directory), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dse serve: error: refusing to listen on 0.0.0.0") and "\n" not in err
    assert main(["serve", "--collection", str(dse_col.directory), "--host", "::", "--api-key", "short"]) == 2
    assert "the API key is too short" in capsys.readouterr().err
    assert main(["serve", "--collection", str(tmp_path / "nope")]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("dse serve: error: no collection at") and "\n" not in err
    assert main(["serve", "--collection", str(dse_col.directory), "--port", "70000"]) == 2


# -------------------------------------------------------------- similarity
def test_similarity_maps(multi_client: TestClient, client: TestClient, col_col: Built) -> None:
    hits = multi_client.post("/search", json={"text": "red block", "k": 2}).json()["hits"]
    pid = hits[0]["page_id"]
    r = multi_client.get(
        f"/pages/{pid}/similarity", params={"text": "red block", "format": "json", "per_token": "true"}
    )
    assert r.status_code == 200, r.text
    data = r.json()
    nx, ny = data["grid"]["x"], data["grid"]["y"]
    page = Image.open(io.BytesIO(multi_client.get(f"/pages/{pid}/image").content))
    # ColQwen2: one patch per 28x28 px of the smart-resized page (224x280 -> 8x10)
    assert (nx, ny) == (page.width // 28, page.height // 28)
    assert len(data["map"]) == ny and all(len(row) == nx for row in data["map"])
    flat = np.asarray(data["map"])
    assert flat.min() == pytest.approx(0.0, abs=1e-3) and flat.max() == pytest.approx(1.0, abs=1e-3)
    assert len(data["tokens"]) == len(data["per_token"]) == len(data["special"])
    assert data["special"].count(True) >= 10  # colpali-engine's 10 query-augmentation tokens
    # the map's MaxSim over the re-encoded page is the score the (unpooled) index gave the page, up to
    # the int8 rounding of the stored vectors (the default codec: 0.1% here, within 1%)
    assert data["score"] == pytest.approx(hits[0]["score"], rel=1e-2)
    png = multi_client.get(f"/pages/{pid}/similarity", params={"text": "red block", "token": 0})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    overlay = Image.open(io.BytesIO(png.content))
    assert overlay.size == page.size and overlay.mode == "RGB"
    assert np.asarray(overlay).astype(int).std() > 5  # a visible heat map, not a blank image
    # no map for a token past the query's last one (their number depends on the text: not in the schema)
    r = multi_client.get(f"/pages/{pid}/similarity", params={"text": "red block", "token": 99})
    assert r.status_code == 404 and "out of range" in r.json()["detail"]
    assert multi_client.get("/pages/424242/similarity", params={"text": "x"}).status_code == 404
    assert multi_client.get(f"/pages/{pid}/similarity", params={"text": " "}).status_code == 422
    assert multi_client.get(f"/pages/{pid}/similarity", params={"text": "x", "format": "gif"}).status_code == 422
    single = client.get("/pages/1/similarity", params={"text": "red"})
    assert single.status_code == 400 and "multi-vector" in single.json()["detail"]
    assert multi_client.get("/info").json()["features"]["similarity"] is True


def test_multi_vector_search_image_and_fused(multi_client: TestClient, col_col: Built) -> None:
    col = Collection.open(col_col.directory, encoder=col_col.encoder, device="cpu")
    try:
        page_file = col_col.corpus / "green" / "p0.png"
        files = {"image": ("p.png", page_file.read_bytes(), "image/png")}
        r = multi_client.post("/search", files=files, data={"k": "5"})
        assert r.json()["hits"][0]["source"] == str(page_file.resolve())
        assert_same_ranking(r.json()["hits"], col.search(image=page_file, k=5), tol=1e-3)
        r = multi_client.post("/search", files=files, data={"k": "5", "text": "green"})
        assert_same_ranking(r.json()["hits"], col.search("green", image=page_file, k=5), tol=1e-3)
    finally:
        col.close()


# ------------------------------------------------------------------ answer
def test_answer_needs_a_generator(client: TestClient) -> None:
    r = client.post("/answer", json={"question": "What is on the red page?"})
    assert r.status_code == 503 and "--generator" in r.json()["detail"]
    r = client.post("/answer", json={"question": "  "})
    assert r.status_code == 422
    r = client.post("/answer", json={"question": "q", "k": 50})
    assert r.status_code == 422 and r.json()["detail"] == "body.k: Input should be less than or equal to 10"
    r = client.post("/answer", json={"k": 2})
    assert r.status_code == 422 and r.json()["detail"].startswith("body.question")


def test_answer_with_a_generator(dse_col: Built, tiny_model_dir) -> None:
    gen_dir = tiny_model_dir("qwen2-vl-instruct")
    app = create_app(
        dse_col.directory,
        device="cpu",
        encoder=dse_col.encoder,
        generator=str(gen_dir),
        generator_options={"max_new_tokens": 6},
    )
    with TestClient(app) as c:
        assert c.get("/info").json()["features"]["answer"] is True
        r = c.post("/answer", json={"question": "Which page is blue?", "k": 2, "filters": {"team": "blue"}})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["question"] == "Which page is blue?" and isinstance(body["answer"], str)
        assert [p["number"] for p in body["pages"]] == [1, 2]
        assert {p["meta"]["team"] for p in body["pages"]} == {"blue"}
        assert body["cited_pages"] and body["cited_pages_source"] in ("citations", "all_retrieved")
        assert all(p["image_url"].startswith("/pages/") and "image_path" not in p for p in body["pages"])
        r = c.post("/answer", json={"question": "anything?", "filters": {"team": "nobody"}})
        assert r.status_code == 404 and "nothing to answer from" in r.json()["detail"]


# ------------------------------------------------------------------ reload
def test_pages_indexed_while_serving_are_picked_up(dse_col: Built, tmp_path: Path) -> None:
    copy = copy_collection(dse_col, tmp_path / "live")
    app = create_app(copy, device="cpu", encoder=dse_col.encoder, refresh_interval=0.05, micro_batch=False)
    with TestClient(app) as c:
        assert c.get("/info").json()["collection"]["pages"] == 5
        new = tmp_path / "new" / "purple.png"
        new.parent.mkdir()
        make_page((140, 30, 200), "purple page").save(new)
        writer = Collection.open(copy, encoder=dse_col.encoder, device="cpu")
        writer.add(new, meta={"team": "purple"}, progress=False)
        writer.close()
        time.sleep(0.1)
        assert c.get("/info").json()["collection"]["pages"] == 6
        r = c.post(
            "/search", files={"image": ("p.png", new.read_bytes(), "image/png")}, data={"filters": '{"team": "purple"}'}
        )
        assert [h["source"] for h in r.json()["hits"]] == [str(new.resolve())]
