"""Parity: our ``colpali`` / ``colidefics3`` encoders vs colpali-engine, on tiny offline weights.

The reference is colpali-engine's own recipe run by hand: ``processor.process_images``
/ ``processor.process_queries`` + ``model(**batch)`` in float32 (eager attention), one
input at a time, real tokens kept with the attention mask. Our encoder must match it
to 1e-5 (max abs diff) and must not depend on how inputs are batched.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from test_tiny_colpali_idefics import load, offline

from dse.encoders.base import Encoder
from dse.testing import tiny_idefics3, tiny_paligemma

FAMILIES = ["colpali", "colidefics3"]
BUILDERS = {"colpali": tiny_paligemma.build, "colidefics3": tiny_idefics3.build}
ATOL = 1e-5


def mixed_pages() -> list[Image.Image]:
    """Seven pages: portrait, landscape, square, tiny, huge-ish, grey-scale, flat white."""
    rng = np.random.default_rng(7)
    pages = []
    for w, h in [(90, 130), (160, 70), (64, 64), (12, 30), (300, 220), (50, 90)]:
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        img = Image.fromarray(arr)
        ImageDraw.Draw(img).text((2, 2), "Total 42", fill=(0, 0, 0))
        pages.append(img)
    pages[5] = pages[5].convert("L").convert("RGB")
    pages.append(Image.new("RGB", (80, 100), (255, 255, 255)))
    return pages


MIXED_QUERIES = [
    "revenue",
    "what is the total revenue of the energy sector in 2021 according to the report?",
    "Zürich — €",
    "hello world",
    "a b c d e f g h i j k l m n o p",
    "1234567",
    "Which figure shows the growth rate per quarter?",
]


@pytest.fixture(scope="module", params=FAMILIES)
def family_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    family = request.param
    with offline():
        return family, BUILDERS[family](tmp_path_factory.mktemp(f"parity-{family}"))


@pytest.fixture(scope="module")
def encoder(family_dir: tuple[str, Path]) -> Encoder:
    _, path = family_dir
    with offline():
        return Encoder.load(str(path), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def reference(family_dir: tuple[str, Path]) -> tuple[torch.nn.Module, object]:
    family, path = family_dir
    return load(family, path)


def reference_vectors(reference: tuple[torch.nn.Module, object], kind: str, items: list) -> list[np.ndarray]:
    """colpali-engine's recipe, one input per forward, padding removed with the mask.

    ``kind``: "documents" (page images, ``process_images``), "queries" (``process_queries``)
    or "texts" (``process_texts``, no query augmentation).
    """
    model, processor = reference
    prep = {
        "documents": processor.process_images,
        "queries": processor.process_queries,
        "texts": processor.process_texts,
    }[kind]
    out = []
    with torch.no_grad():
        for item in items:
            batch = prep([item])
            emb = model(**batch)[0]
            out.append(emb[batch["attention_mask"][0].bool()].numpy())
    return out


def assert_parity(ours: list[np.ndarray], ref: list[np.ndarray]) -> None:
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
        assert isinstance(a, np.ndarray) and a.dtype == np.float32, (i, type(a))
        assert a.shape == b.shape, f"item {i}: {a.shape} tokens vs reference {b.shape}"
        diff = float(np.abs(a - b).max())
        assert diff <= ATOL, f"item {i}: max abs diff {diff:.2e} > {ATOL}"


def test_family_is_detected(family_dir: tuple[str, Path], encoder: Encoder) -> None:
    family, path = family_dir
    assert encoder.family == family
    assert encoder.kind == "multi"
    assert encoder.dim == 128
    settings = encoder.settings
    assert settings["family"] == family
    assert settings["kind"] == "multi" and settings["dim"] == 128
    json.dumps(settings)  # JSON-serialisable, stored with every index


def test_family_detection_with_explicit_name(family_dir: tuple[str, Path]) -> None:
    family, path = family_dir
    with offline():
        enc = Encoder.load(str(path), family=family, device="cpu", dtype="float32")
    assert enc.family == family


def test_document_parity(family_dir: tuple[str, Path], encoder: Encoder, reference) -> None:
    pages = mixed_pages()
    ours = encoder.encode_documents(pages, batch_size=3)
    assert_parity(list(ours), reference_vectors(reference, "documents", pages))


def test_query_parity(encoder: Encoder, reference) -> None:
    ours = encoder.encode_queries(texts=MIXED_QUERIES, batch_size=4)
    assert_parity(list(ours), reference_vectors(reference, "queries", MIXED_QUERIES))


def test_image_query_parity(encoder: Encoder, reference) -> None:
    """Image-only queries use the document recipe (colpali-engine has no separate one)."""
    pages = mixed_pages()[:3]
    ours = encoder.encode_queries(images=pages, batch_size=2)
    assert_parity(list(ours), reference_vectors(reference, "documents", pages))


def test_text_document_parity(encoder: Encoder, reference) -> None:
    texts = MIXED_QUERIES[:4]
    ours = encoder.encode_text_documents(texts, batch_size=3)
    assert_parity(list(ours), reference_vectors(reference, "texts", texts))


def test_fused_queries_are_one_sequence(encoder: Encoder) -> None:
    pages = mixed_pages()[:2]
    texts = ["total revenue", "growth rate per quarter"]
    fused = encoder.encode_queries(texts=texts, images=pages)
    image_only = encoder.encode_queries(images=pages)
    for f, im in zip(fused, image_only, strict=True):
        assert f.ndim == 2 and f.shape[1] == 128 and np.isfinite(f).all()
        np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
        # same image tokens plus the query text and 10 augmentation tokens instead of the instruction
        assert f.shape[0] > im.shape[0]


def test_vectors_are_normalised_without_padding(encoder: Encoder) -> None:
    for vecs in (encoder.encode_documents(mixed_pages()), encoder.encode_queries(texts=MIXED_QUERIES)):
        for v in vecs:
            assert v.ndim == 2 and v.shape[1] == 128 and v.shape[0] > 0
            np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def _min_token_cosine(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    worst = 1.0
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape
        cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
        worst = min(worst, float(cos.min()))
    return worst


def test_batch_composition_does_not_matter(encoder: Encoder) -> None:
    pages = mixed_pages()
    assert len(pages) == 7 and len(MIXED_QUERIES) == 7
    docs_one = [encoder.encode_documents([p], batch_size=1)[0] for p in pages]
    docs_all = encoder.encode_documents(pages, batch_size=7)
    assert _min_token_cosine(docs_one, list(docs_all)) >= 0.9999
    q_one = [encoder.encode_queries(texts=[q], batch_size=1)[0] for q in MIXED_QUERIES]
    q_all = encoder.encode_queries(texts=MIXED_QUERIES, batch_size=7)
    assert _min_token_cosine(q_one, list(q_all)) >= 0.9999


@pytest.mark.heavy
@pytest.mark.parametrize("family", FAMILIES)
def test_small_preset_parity(family: str, tmp_path: Path) -> None:
    """Same parity on the wider, deeper "small" preset (256 / up to 1,088 image tokens per page)."""
    with offline():
        path = BUILDERS[family](tmp_path / family, size="small")
        enc = Encoder.load(str(path), device="cpu", dtype="float32")
    ref = load(family, path)
    pages = [p.resize((p.width * 3, p.height * 3)) for p in mixed_pages()[:3]]
    assert_parity(list(enc.encode_documents(pages, batch_size=3)), reference_vectors(ref, "documents", pages))
    assert_parity(
        list(enc.encode_queries(texts=MIXED_QUERIES, batch_size=7)), reference_vectors(ref, "queries", MIXED_QUERIES)
    )
