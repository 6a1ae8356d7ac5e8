"""Collections re-used over time: metadata kept across runs, options checked against how the
collection was built, devices, batch search, filters, listing and compaction (tiny offline models,
PDFs only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support.docs import make_pdf

from dse.collection import Collection, CollectionError, CollectionInputError
from dse.encoders import Encoder
from renderers import RenderSettings

SMALL = RenderSettings(dpi=30)


@pytest.fixture(scope="module")
def encoder(tiny_model_dir) -> Encoder:
    return Encoder.load(str(tiny_model_dir("dse-qwen2")), device="cpu")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    root.mkdir()
    make_pdf(root / "a.pdf", 2, seed=31, page_size=(298.0, 420.0))
    make_pdf(root / "b.pdf", 1, seed=32, page_size=(298.0, 420.0))
    return root


def _meta(col: Collection) -> dict[str, dict]:
    return {Path(d.source).name: d.meta for d in col.documents()}


def test_reindexing_keeps_metadata_and_merges_changes(tmp_path: Path, src: Path, encoder: Encoder) -> None:
    col = Collection.create(tmp_path / "c", encoder, device="cpu")
    r = col.add(src, meta={"team": "finance"}, render_settings=SMALL, progress=False)
    assert (r.added, r.pages) == (2, 3)
    # the same run without --meta: unchanged, and the metadata is kept (it used to become {})
    r = col.add(src, render_settings=SMALL, progress=False)
    assert (r.unchanged, r.metadata_updated, r.pages) == (2, 0, 0)
    assert _meta(col) == {"a.pdf": {"team": "finance"}, "b.pdf": {"team": "finance"}}
    assert len(col.search("q", k=10, where="team=finance")) == 3
    # given keys merge over the stored ones; None deletes a key
    r = col.add(src / "a.pdf", meta={"year": "2024"}, render_settings=SMALL, progress=False)
    assert (r.unchanged, r.metadata_updated, r.pages) == (1, 1, 0)
    assert _meta(col)["a.pdf"] == {"team": "finance", "year": "2024"}
    col.add(src / "a.pdf", meta={"team": None}, render_settings=SMALL, progress=False)
    assert _meta(col)["a.pdf"] == {"year": "2024"}
    # sidecars follow the same rule: merged over, kept when the sidecar goes away, null deletes
    side = src / "b.pdf.meta.json"
    side.write_text(json.dumps({"owner": "ann", "pages": 1}))
    col.add(src, render_settings=SMALL, progress=False)
    assert _meta(col)["b.pdf"] == {"team": "finance", "owner": "ann", "pages": 1}
    side.unlink()
    r = col.add(src, render_settings=SMALL, progress=False)
    assert r.metadata_updated == 0 and _meta(col)["b.pdf"] == {"team": "finance", "owner": "ann", "pages": 1}
    side.write_text(json.dumps({"owner": None}))
    col.add(src, meta={"team": "hr"}, render_settings=SMALL, progress=False)  # --meta wins over the sidecar
    assert _meta(col) == {"a.pdf": {"year": "2024", "team": "hr"}, "b.pdf": {"team": "hr", "pages": 1}}
    # a changed document is re-encoded and keeps its metadata too
    make_pdf(src / "a.pdf", 3, seed=33, page_size=(298.0, 420.0))
    r = col.add(src, render_settings=SMALL, progress=False)
    assert (r.replaced, r.pages) == (1, 3)
    assert _meta(col)["a.pdf"] == {"year": "2024", "team": "hr"}
    col.close()


def test_skipped_files_are_reported(tmp_path: Path, src: Path, encoder: Encoder) -> None:
    (src / "notes.txt").write_text("unsupported")
    (src / "a.pdf.meta.json").write_text('{"k": 1}')  # a sidecar is not a skipped document
    (src / "orphan.meta.json").write_text("{}")  # a .meta.json next to nothing is
    with Collection.create(tmp_path / "c", encoder, device="cpu") as col:
        report = col.add(src, render_settings=SMALL, progress=False)
    assert report.added == 2 and not report.failures
    assert sorted(Path(p).name for p in report.skipped) == ["notes.txt", "orphan.meta.json"]
    assert "2 skipped: unsupported type" in report.summary()
    assert report.to_dict()["skipped"] == report.skipped


def test_where_filters_in_search_and_documents(tmp_path: Path, src: Path, encoder: Encoder) -> None:
    (src / "a.pdf.meta.json").write_text(json.dumps({"year": 2021, "team": "red"}))
    (src / "b.pdf.meta.json").write_text(json.dumps({"year": "2024", "team": "blue"}))
    with Collection.create(tmp_path / "c", encoder, device="cpu") as col:
        col.add(src, render_settings=SMALL, progress=False)

        def names(where) -> set[str]:
            return {Path(h.source).name for h in col.search("q", k=10, where=where)}

        assert names("year>=2022") == {"b.pdf"}
        assert names(["year>2000", "team!=red"]) == {"b.pdf"}
        assert names("team=in:red,blue") == {"a.pdf", "b.pdf"}
        assert names({"year": 2021}) == {"a.pdf"}
        assert [Path(d.source).name for d in col.documents(where="year<2022")] == ["a.pdf"]
        assert [d.pages for d in col.documents()] == [2, 1]
        with pytest.raises(CollectionInputError, match="needs a number"):
            col.search("q", where="year>=recent")
        batch = col.search_many(["q", "r"], where="team=blue", k=5)
        assert all({Path(h.source).name for h in hits} == {"b.pdf"} for hits in batch)


def test_search_many_equals_search_and_validates_every_query(tmp_path: Path, src: Path, encoder: Encoder) -> None:
    with Collection.create(tmp_path / "c", encoder, device="cpu") as col:
        col.add(src, render_settings=SMALL, progress=False)
        image = col.directory / next(iter(col.store.pages([2]).values())).image
        texts = ["revenue", None, "table", "chart"]
        images = [None, image, image, image]
        batch = col.search_many(texts, images, k=3, batch_size=2)
        for text, img, hits in zip(texts, images, batch):
            one = col.search(text, image=img, k=3)
            assert [h.page_id for h in hits] == [h.page_id for h in one]
            np.testing.assert_allclose([h.score for h in hits], [h.score for h in one], atol=1e-4)
        assert batch[1][0].page_id == 2  # an image query finds its own page
        rrf = col.search_many(["revenue", "table"], [image, image], k=3, fusion="rrf")
        assert [h.page_id for h in rrf[0]] == [h.page_id for h in col.search("revenue", image=image, k=3, fusion="rrf")]
        with pytest.raises(CollectionInputError, match="query 2: empty query"):
            col.search_many(["ok", "  "], k=3)
        with pytest.raises(CollectionInputError, match="query 2: query image not found"):
            col.search_many(images=[image, tmp_path / "nope.png"], texts=["x", "y"])
        # --fusion rrf merges a text ranking and an image ranking: without an image it is refused
        with pytest.raises(CollectionInputError, match="give both a text and an image"):
            col.search("revenue", fusion="rrf")
        assert col.search_many([], k=3) == []


def test_options_of_an_existing_collection_are_applied_or_refused(tmp_path: Path, src: Path, encoder: Encoder) -> None:
    d = tmp_path / "c"
    col = Collection.create(d, encoder, device="cpu", index="hnsw", index_params={"hnsw_m": 8})
    col.add(src, render_settings=SMALL, progress=False)
    before = [h.page_id for h in col.search("revenue", k=3)]
    # search-time parameters are applied and saved with the collection
    assert col.update_index_options(index_params={"ef_search": 64, "hnsw_m": 8}) == {"ef_search": 64}
    assert col.index.params["ef_search"] == 64
    assert [h.page_id for h in col.search("revenue", k=3)] == before
    col.close()
    col = Collection.open(d, device="cpu")
    assert col.index.params["ef_search"] == 64 and col.manifest.index["params"]["ef_search"] == 64
    for kwargs, message in [
        ({"index": "flat"}, "built with a 'hnsw' index"),
        ({"index_params": {"hnsw_m": 16}}, "built with a 'hnsw' index with hnsw_m=8; hnsw_m=16 needs a new"),
        ({"index_params": {"nlist": 4}}, "no parameter 'nlist'"),
        ({"index_params": {"ef_search": 0}}, "ef_search must be a positive integer"),
        ({"pool_factor": 2}, "built with pool_factor=None"),
    ]:
        with pytest.raises(CollectionInputError, match=message):
            col.update_index_options(**kwargs)
    col.close()
    # Collection.create(exist_ok=True) checks the same (it used to drop them silently)
    with pytest.raises(CollectionInputError, match="built with a 'hnsw' index"):
        Collection.create(d, encoder, device="cpu", exist_ok=True, index="ivfpq")
    with Collection.create(d, encoder, device="cpu", exist_ok=True, index_params={"ef_search": 32}) as again:
        assert again.index.params["ef_search"] == 32
    # encoder settings are fixed: the error says what the collection was built with
    for kwargs, message in [
        ({"dim": 32}, "built with dim=64"),
        ({"max_pixels": 1000}, "built with max_pixels="),
        ({"family": "colqwen2"}, "built with family='dse-qwen2'"),
        ({"adapter": str(tmp_path)}, "built with adapter=None"),
    ]:
        with pytest.raises(CollectionInputError, match=message):
            Collection.open(d, device="cpu", **kwargs)
    with Collection.open(d, device="cpu", dim=64, family="dse-qwen2", dtype="float32") as same:
        assert same.search("revenue", k=3)  # equal values are fine; dtype only says how the model runs
        assert str(same.encoder.settings.get("dtype")) == "float32"


def test_model_family_mismatch_names_both_models(tmp_path: Path, src: Path, tiny_model_dir) -> None:
    colqwen = str(tiny_model_dir("colqwen2"))
    with Collection.create(tmp_path / "c", colqwen, device="cpu") as col:
        col.add(src / "b.pdf", render_settings=SMALL, progress=False)
    dse = str(tiny_model_dir("dse-qwen2"))
    with pytest.raises(CollectionInputError) as exc:
        Collection.open(tmp_path / "c", device="cpu", model=dse)
    message = str(exc.value)
    assert "built with the colqwen2 model" in message and f"model {dse!r} is a dse-qwen2 model" in message
    assert "dim=" not in message and "not supported" not in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_reported_as_such(tmp_path: Path, src: Path, encoder: Encoder) -> None:
    with Collection.create(tmp_path / "c", encoder, device="cpu") as col:
        col.add(src / "b.pdf", render_settings=SMALL, progress=False)
    with pytest.raises(CollectionError, match="device 'cuda' requested but CUDA is not available") as exc:
        Collection.open(tmp_path / "c", device="cuda")
    assert not isinstance(exc.value, CollectionInputError) and "index" not in str(exc.value)
    with pytest.raises(CollectionInputError, match="unknown device 'tpu'"):
        Collection.open(tmp_path / "c", device="tpu")
    with pytest.raises(CollectionError, match="CUDA is not available"):
        Collection.create(tmp_path / "new", encoder, device="cuda:0")
    assert not (tmp_path / "new").exists()


def test_failed_create_leaves_nothing_behind(tmp_path: Path, encoder: Encoder) -> None:
    with pytest.raises(CollectionInputError, match="bad index option: hnsw_m must be a positive integer"):
        Collection.create(tmp_path / "c", encoder, device="cpu", index="hnsw", index_params={"hnsw_m": 0})
    assert not (tmp_path / "c").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(CollectionInputError, match="unknown parameter"):
        Collection.create(tmp_path / "empty", encoder, device="cpu", index_params={"bogus": 1})
    assert list((tmp_path / "empty").iterdir()) == []
    with Collection.create(tmp_path / "empty", encoder, device="cpu") as col:  # and the directory is usable
        assert col.stats()["pages"] == 0


def test_remove_unknown_documents_is_refused_and_removes_nothing(tmp_path: Path, src: Path, encoder: Encoder) -> None:
    with Collection.create(tmp_path / "c", encoder, device="cpu") as col:
        col.add(src, render_settings=SMALL, progress=False)
        with pytest.raises(CollectionInputError, match="no document 'zzz'.*nothing was removed"):
            col.remove([str(src / "a.pdf"), "zzz"])
        assert col.stats()["documents"] == 2


def _index_bytes(d: Path) -> int:
    return sum(f.stat().st_size for f in (d / "index").rglob("*") if f.is_file())


def test_compact_reclaims_space_and_keeps_results(tmp_path: Path, encoder: Encoder) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        make_pdf(src / f"d{i}.pdf", 2, seed=40 + i, page_size=(298.0, 420.0))
    d = tmp_path / "c"
    col = Collection.create(d, encoder, device="cpu")
    col.add(src, render_settings=SMALL, progress=False)
    col.remove([str(src / "d0.pdf"), str(src / "d2.pdf")])
    queries = ["revenue by region", "bar chart", "table of results"]
    before = [[(h.page_id, round(h.score, 5)) for h in col.search(q, k=4)] for q in queries]
    size_before = _index_bytes(d)
    assert any(p.name.startswith("tombstones") for p in (d / "index").iterdir())
    result = col.compact()
    assert result["bytes_after"] < result["bytes_before"]
    assert _index_bytes(d) < size_before
    assert not any(p.name.startswith("tombstones") for p in (d / "index").iterdir())
    assert [[(h.page_id, round(h.score, 5)) for h in col.search(q, k=4)] for q in queries] == before
    col.close()
    with Collection.open(d, device="cpu") as again:
        assert [[(h.page_id, round(h.score, 5)) for h in again.search(q, k=4)] for q in queries] == before
        assert len(again.index) == again.stats()["pages"] == 4


@pytest.mark.subprocess
@pytest.mark.parametrize("point", ["after_index_compact", "after_compact_save"])
def test_compact_is_crash_safe(tmp_path: Path, encoder: Encoder, point: str) -> None:
    """SIGKILL `dse compact` between its durable steps: the collection opens consistent, with the
    same results, and a second compact finishes the job."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        make_pdf(src / f"d{i}.pdf", 2, seed=50 + i, page_size=(298.0, 420.0))
    d = tmp_path / "c"
    with Collection.create(d, encoder, device="cpu") as col:
        col.add(src, render_settings=SMALL, progress=False)
        col.remove(str(src / "d1.pdf"))
        q = col.encoder.encode_queries(texts=["revenue"])
        before = [(h.page_id, round(h.score, 5)) for h in col.search_vectors(q, 6)[0]]
    size = _index_bytes(d)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DSE_CRASH_AT": point}
    proc = subprocess.run([sys.executable, "-m", "dse", "compact", "-c", str(d)], env=env, capture_output=True)
    assert proc.returncode == -9, proc.stderr
    with Collection.open(d, device="cpu") as col:
        assert set(np.asarray(col.index.ids).tolist()) == col.store.stored_page_ids()
        assert [(h.page_id, round(h.score, 5)) for h in col.search_vectors(q, 6)[0]] == before
        if point == "after_compact_save":
            assert _index_bytes(d) < size
        col.compact()
        assert _index_bytes(d) < size
        assert [(h.page_id, round(h.score, 5)) for h in col.search_vectors(q, 6)[0]] == before


@pytest.mark.subprocess
def test_read_only_commands_do_not_import_torch(tmp_path: Path, src: Path, encoder: Encoder) -> None:
    """stats, list, remove and compact on a single-vector collection need neither torch nor
    transformers (they used to pay for importing both)."""
    with Collection.create(tmp_path / "c", encoder, device="cpu") as col:
        col.add(src, render_settings=SMALL, progress=False)
    code = (
        "import sys\n"
        "from dse.cli import main\n"
        f"c = {str(tmp_path / 'c')!r}\n"
        "for args in (['stats', '-c', c], ['list', '-c', c], ['remove', 'b.pdf', '-c', c], "
        "['remove', " + repr(str(src / "b.pdf")) + ", '-c', c], ['compact', '-c', c]):\n"
        "    print(args[0], main(args))\n"
        "print('heavy', sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "stats 0" in lines and "list 0" in lines and "remove 2" in lines and "remove 0" in lines
    assert "compact 0" in lines and "heavy []" in lines, out.stdout
