"""evaluate(): a real collection, cached embeddings, failures, both index kinds (tiny random models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.eval_data import make_local_benchmark

from dse.eval.data import CorpusItem, load_local_dataset
from dse.eval.runner import evaluate


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    return make_local_benchmark(tmp_path_factory.mktemp("eval-runner") / "bench")


def _check_structure(result, ds, depth: int = 100) -> None:
    corpus_ids = {c.id for c in ds.corpus}
    judged = {q.id for q in ds.queries}
    assert set(result.run) == judged
    for _qid, scores in result.run.items():
        assert 0 < len(scores) <= depth and set(scores) <= corpus_ids
    assert set(result.per_query) == judged
    for name, value in result.metrics.items():
        assert 0.0 <= value <= 1.0, name
        assert value == pytest.approx(sum(r[name] for r in result.per_query.values()) / len(result.per_query))
    # with the whole corpus in every ranking, Recall@100 is 1 by construction
    assert result.metrics["recall_100"] == pytest.approx(1.0)


def test_evaluate_caches_document_embeddings(bench, tiny_model_dir, tmp_path: Path, monkeypatch) -> None:
    from dse.encoders import Encoder

    ds = load_local_dataset(bench.root)
    model = str(tiny_model_dir("dse-qwen2"))
    first = evaluate(model, ds, cache_dir=tmp_path / "cache", device="cpu", progress=False)
    _check_structure(first, ds)
    assert first.encoded_pages == len(ds.corpus) and not first.failures
    assert first.collection is not None and (first.collection / "collection.json").is_file()

    # second run: the same collection is reused and no page is encoded again
    encoder = Encoder.load(model, device="cpu")
    calls: list[int] = []
    original = type(encoder).encode_documents

    def counting(self, images, **kw):  # type: ignore[no-untyped-def]
        calls.append(len(images))
        return original(self, images, **kw)

    monkeypatch.setattr(type(encoder), "encode_documents", counting)
    second = evaluate(encoder, ds, cache_dir=tmp_path / "cache", progress=False)
    assert calls == [] and second.encoded_pages == 0
    assert second.collection == first.collection
    assert second.run.keys() == first.run.keys()
    for q in first.run:  # same vectors, same ranking
        assert list(second.run[q]) == list(first.run[q])
        assert second.run[q] == pytest.approx(first.run[q], abs=1e-5)
    assert second.metrics == pytest.approx(first.metrics)

    # a different Matryoshka dim is a different cache entry (encodes again)
    third = evaluate(model, ds, cache_dir=tmp_path / "cache", device="cpu", dim=32, progress=False)
    assert third.collection != first.collection and third.encoded_pages == len(ds.corpus)
    assert calls  # the patched encoder class was used for the new entry


def test_evaluate_without_cache_reports_a_broken_document(bench, tiny_model_dir, tmp_path: Path) -> None:
    from dse.encoders import Encoder

    ds = load_local_dataset(bench.root)
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n" + b"\x00garbage" * 20)
    ds.corpus.append(CorpusItem("broken-p1", source=str(broken), page=1))
    encoder = Encoder.load(str(tiny_model_dir("dse-qwen2")), device="cpu")
    result = evaluate(encoder, ds, cache_dir=None, depth=3, k_values=(1, 3), progress=False)
    assert result.collection is None
    assert [f.id for f in result.failures] == ["broken-p1"]
    assert "broken.pdf" in result.failures[0].source and result.failures[0].reason
    assert all(len(s) == 3 and "broken-p1" not in s for s in result.run.values())
    assert set(result.metrics) == {"ndcg_cut_3", "recall_1", "recall_3", "recip_rank_10"}


def test_evaluate_multi_vector_model(bench, tiny_model_dir, tmp_path: Path) -> None:
    ds = load_local_dataset(bench.root)
    result = evaluate(str(tiny_model_dir("colqwen2")), ds, cache_dir=tmp_path / "c", device="cpu", progress=False)
    _check_structure(result, ds)
    assert result.settings["encoder"]["kind"] == "multi" and result.encoded_pages == len(ds.corpus)
    # model quality is measured exactly: float16 vectors, every page scored (not the collection default)
    (index_manifest,) = (tmp_path / "c").rglob("index/index.json")
    manifest = json.loads(index_manifest.read_text())
    assert manifest["dtype"] == "float16" and manifest["params"]["candidates"] is None
