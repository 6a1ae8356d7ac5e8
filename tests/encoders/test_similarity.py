"""Similarity maps (dse.encoders.similarity) on tiny colqwen2 / colpali models: the maps are the
query-token x page-patch dot products on colpali-engine's patch grid, and their MaxSim is the
score a search gives."""

from __future__ import annotations

import numpy as np
import pytest
from support.server import make_page

from dse import Encoder
from dse.encoders.similarity import SimilarityError, colormap, encode_page_tokens, similarity_map


@pytest.fixture(scope="module")
def colqwen2(tiny_model_dir) -> Encoder:
    return Encoder.load(str(tiny_model_dir("colqwen2")), device="cpu")


def _check_maps(enc: Encoder, page, text: str) -> None:
    tokens = encode_page_tokens(enc, page)
    smap = similarity_map(enc, page, text, page=tokens)
    q = enc.encode_queries(texts=[text])[0]
    nx, ny = tokens.grid
    assert smap.maps.shape == (q.shape[0], ny, nx) and smap.grid == (nx, ny)
    assert int(tokens.image_mask.sum()) == nx * ny
    patches = tokens.vectors[tokens.image_mask]  # row-major over the patch grid
    rng = np.random.default_rng(0)
    for _ in range(10):
        t, y, x = rng.integers(q.shape[0]), rng.integers(ny), rng.integers(nx)
        assert smap.maps[t, y, x] == pytest.approx(float(q[t] @ patches[y * nx + x]), abs=1e-5)
    # the re-encoded page is what the index stores (unpooled): the map's MaxSim is the search score
    stored = enc.encode_documents([page])[0]
    np.testing.assert_allclose(tokens.vectors, stored, atol=1e-5)
    assert smap.score == pytest.approx(float((q @ stored.T).max(axis=1).sum()), rel=1e-5)
    assert len(smap.tokens) == q.shape[0] and smap.special.count(True) >= 10
    norm = smap.normalized()
    assert norm.shape == (ny, nx) and norm.min() == pytest.approx(0, abs=1e-6) and norm.max() == pytest.approx(1)
    keep = [i for i, s in enumerate(smap.special) if not s]
    np.testing.assert_allclose(smap.select(), smap.maps[keep].mean(axis=0), rtol=1e-6)
    overlay = smap.overlay(page, 0)
    assert overlay.size == page.size and overlay.mode == "RGB"
    d = smap.to_dict(per_token=True)
    assert d["grid"] == {"x": nx, "y": ny} and np.asarray(d["map"]).shape == (ny, nx)
    assert np.asarray(d["per_token"]).shape == smap.maps.shape


def test_colqwen2_maps_are_patch_dot_products(colqwen2: Encoder) -> None:
    page = make_page((210, 30, 30), "revenue table", size=(308, 420))
    _check_maps(colqwen2, page, "revenue table")
    # ColQwen2 grid: one patch per 28x28 px after smart resize (308x420 -> 11x15)
    assert encode_page_tokens(colqwen2, page).grid == (11, 15)


def test_errors(colqwen2: Encoder, tiny_model_dir) -> None:
    page = make_page((30, 60, 220), "x")
    with pytest.raises(SimilarityError, match="empty query"):
        similarity_map(colqwen2, page, "  ")
    smap = similarity_map(colqwen2, page, "blue")
    with pytest.raises(SimilarityError, match="out of range"):
        smap.select(len(smap.tokens))
    single = Encoder.load(str(tiny_model_dir("dse-qwen2")), device="cpu")
    with pytest.raises(SimilarityError, match="single-vector"):
        similarity_map(single, page, "blue")
    assert colormap().shape == (256, 3) and colormap().dtype == np.uint8


@pytest.mark.heavy
def test_colpali_maps(tiny_model_dir) -> None:
    enc = Encoder.load(str(tiny_model_dir("colpali")), device="cpu")
    _check_maps(enc, make_page((30, 170, 60), "green chart", size=(300, 400)), "green chart")
