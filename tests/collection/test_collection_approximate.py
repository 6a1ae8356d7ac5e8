"""Collections and the command line with an approximate maxsim index (MUVERA candidates, int8
codec): creation options, the search-time ``n_candidates``, ``exact`` search (tiny offline colqwen2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.docs import make_pdf

from dse.cli import main
from dse.collection import Collection, CollectionInputError
from dse.encoders import Encoder
from renderers import RenderSettings

SMALL = RenderSettings(dpi=30)
APPROX = {"candidates": "muvera", "codec": "int8", "n_candidates": 2}


@pytest.fixture(scope="module")
def encoder(tiny_model_dir) -> Encoder:
    return Encoder.load(str(tiny_model_dir("colqwen2")), device="cpu")


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("approx-src")
    make_pdf(root / "a.pdf", 3, seed=71, page_size=(298.0, 420.0))
    make_pdf(root / "b.pdf", 2, seed=72, page_size=(298.0, 420.0))
    return root


def test_collection_with_an_approximate_index(tmp_path: Path, src: Path, encoder: Encoder) -> None:
    col = Collection.create(tmp_path / "c", encoder, device="cpu", index_params=APPROX)
    col.add(src / "a.pdf", meta={"team": "x"}, render_settings=SMALL, progress=False)
    col.add(src / "b.pdf", meta={"team": "y"}, render_settings=SMALL, progress=False)
    assert (col.index.codec, col.index.candidates, col.index.n_candidates) == ("int8", "muvera", 2)
    exact = col.search("quarterly revenue", k=5, exact=True)
    assert len(exact) == 5
    # n_candidates is raised to k: still k hits, each scored by MaxSim like the exact search
    approx = col.search("quarterly revenue", k=4)
    scores = {(h.source, h.page): h.score for h in exact}
    assert len(approx) == 4 and all(scores[(h.source, h.page)] == pytest.approx(h.score) for h in approx)
    # filtered searches return min(k, matching pages) hits, candidates taken among matching pages
    for where, k, n in (("team=y", 5, 2), ("team=x", 1, 1), ("team=x", 3, 3)):
        hits = col.search("quarterly revenue", k=k, where=where)
        assert len(hits) == n and {Path(h.source).name for h in hits} == {"b.pdf" if where == "team=y" else "a.pdf"}
    # n_candidates is a search-time option; build options are fixed
    assert col.update_index_options(index_params={"n_candidates": 50}) == {"n_candidates": 50}
    assert col.update_index_options(index_params={"codec": "int8", "candidates": "muvera"}) == {}
    with pytest.raises(CollectionInputError, match="codec=int8"):
        col.update_index_options(index_params={"codec": "float16"})
    col.close()
    with Collection.open(tmp_path / "c", device="cpu") as again:
        assert again.index.n_candidates == 50 and again.index.codec == "int8"
        assert [(h.source, h.page) for h in again.search("quarterly revenue", k=5)] == [
            (h.source, h.page) for h in exact
        ]
    with pytest.raises(CollectionInputError, match="unknown codec"):
        Collection.create(tmp_path / "bad", encoder, device="cpu", index_params={"codec": "int4"})
    with pytest.raises(CollectionInputError, match="unknown maxsim index parameter"):
        Collection.create(tmp_path / "bad", encoder, device="cpu", index_params={"hnsw_m": 3})
    with pytest.raises(CollectionInputError, match="nprobe apply to fde_index='ivfpq' or candidates='centroids' only"):
        Collection.create(tmp_path / "bad", encoder, device="cpu", index_params={"candidates": "muvera", "nprobe": 3})
    assert not (tmp_path / "bad").exists()
    with Collection.open(tmp_path / "c", device="cpu") as again, pytest.raises(CollectionInputError, match="nprobe"):
        again.update_index_options(index_params={"nprobe": 4})  # no IVF-PQ candidate index here


def test_new_multivector_collections_default_to_centroids_and_int8(
    tmp_path: Path, src: Path, tiny_model_dir, capsys
) -> None:
    model = str(tiny_model_dir("colqwen2"))
    base = ["index", str(src), "-m", model, "--device", "cpu", "--dpi", "30"]
    assert main([*base, "-c", str(tmp_path / "default")]) == 0
    manifest = json.loads((tmp_path / "default" / "index" / "index.json").read_text())
    assert manifest["dtype"] == "int8" and manifest["params"]["candidates"] == "centroids"
    assert manifest["params"]["n_candidates"] == 1000 and manifest["params"]["n_centroids"] == 4096
    # exact MaxSim over float16 vectors is one option away
    exact_params = ["--index-param", "candidates=none", "--index-param", "codec=float16"]
    assert main([*base, "-c", str(tmp_path / "exact"), *exact_params]) == 0
    manifest = json.loads((tmp_path / "exact" / "index" / "index.json").read_text())
    assert manifest["dtype"] == "float16" and manifest["params"]["candidates"] is None
    capsys.readouterr()
    hits = {}
    for name in ("default", "exact"):
        assert main(["search", "revenue", "-c", str(tmp_path / name), "--json", "-k", "5"]) == 0
        hits[name] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # 5 pages, not trained: both score every page; only int8 rounding separates the scores
    assert [(h["source"], h["page"]) for h in hits["default"]] == [(h["source"], h["page"]) for h in hits["exact"]]
    for a, b in zip(hits["default"], hits["exact"]):
        assert abs(a["score"] - b["score"]) <= 0.02 * abs(b["score"]) + 1e-3


def test_cli_index_and_exact_search(tmp_path: Path, src: Path, tiny_model_dir, capsys) -> None:
    d = str(tmp_path / "c")
    model = str(tiny_model_dir("colqwen2"))
    base = ["index", str(src), "-c", d, "-m", model, "--device", "cpu", "--dpi", "30", "--index", "maxsim"]
    assert main([*base, "--index-param", "candidates=muvera", "--index-param", "codec=int8"]) == 0
    manifest = json.loads((tmp_path / "c" / "index" / "index.json").read_text())
    assert manifest["dtype"] == "int8" and manifest["params"]["candidates"] == "muvera"
    capsys.readouterr()
    assert main(["search", "revenue", "-c", d, "--json", "-k", "5", "--exact"]) == 0
    exact = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(exact) == 5
    assert main(["search", "revenue", "-c", d, "--json", "-k", "5"]) == 0
    approx = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(approx) == 5  # 5 pages <= n_candidates (200): the approximate search is exhaustive
    assert [h["image_path"] for h in approx] == [h["image_path"] for h in exact]
    # search-time option on the existing collection; a build option cannot change
    assert main([*base, "--index-param", "n_candidates=3"]) == 0
    assert main([*base, "--index-param", "codec=float16"]) == 2
    assert "codec=int8" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("params", "build_only"),
    [
        (["candidates=muvera", "codec=int8", "fde_index=ivfpq", "train_pages=300", "nprobe=8"], "pq_m=8"),
        (["candidates=centroids", "codec=int8", "n_centroids=256", "train_pages=300", "nprobe=8"], "n_centroids=512"),
    ],
)
def test_cli_trained_candidate_options(
    tmp_path: Path, src: Path, tiny_model_dir, capsys, params: list[str], build_only: str
) -> None:
    d = str(tmp_path / "c")
    model = str(tiny_model_dir("colqwen2"))
    base = ["index", str(src), "-c", d, "-m", model, "--device", "cpu", "--dpi", "30", "--index", "maxsim"]
    assert main([*base, *(x for p in params for x in ("--index-param", p))]) == 0
    manifest = json.loads((tmp_path / "c" / "index" / "index.json").read_text())
    for key, value in (p.split("=") for p in params):
        assert str(manifest["params"][key]) == value
    assert manifest["candidate_index"] is None  # 5 pages: not trained yet
    assert main([*base, "--index-param", "nprobe=16"]) == 0  # search-time: applied and saved
    assert json.loads((tmp_path / "c" / "index" / "index.json").read_text())["params"]["nprobe"] == 16
    capsys.readouterr()
    assert main(["search", "revenue", "-c", d, "--json", "-k", "3"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert main([*base, "--index-param", build_only]) == 2  # a build option
    assert build_only.split("=")[0] in capsys.readouterr().err
