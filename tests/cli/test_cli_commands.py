"""The ``dse`` command line as a user meets it: metadata across runs, options on an existing
collection, exit statuses, skipped files, batch search, list, compact, --version, output noise.
In-process (``dse.cli.main``) except where the real process's output matters."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.docs import make_pdf

from dse.cli import main
from dse.encoders import Encoder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-corpus") / "docs"
    root.mkdir()
    make_pdf(root / "report.pdf", 2, seed=61, page_size=(298.0, 420.0))
    make_pdf(root / "notes.pdf", 1, seed=62, page_size=(298.0, 420.0))
    (root / "readme.txt").write_text("not a supported type")
    return root


@pytest.fixture(scope="module")
def model(tiny_model_dir) -> str:
    return str(tiny_model_dir("dse-qwen2"))


def _index(*args: str) -> int:
    return main(["index", *args, "--device", "cpu", "--dpi", "30"])


@pytest.fixture(scope="module")
def col(tmp_path_factory: pytest.TempPathFactory, corpus: Path, model: str) -> str:
    d = str(tmp_path_factory.mktemp("cli-col") / "c")
    assert _index(str(corpus), "-c", d, "-m", model, "--meta", "team=finance") == 0
    return d


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_version_and_the_exit_status_scheme_in_help(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == "dse 0.1.0"
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "exit status (every command):" in out
    for line in ("0    success", "1    partial failure", "2    usage error or bad input", "3    cannot start"):
        assert line in out
    for command in ("list", "compact", "search", "index"):
        assert f"    {command}" in out


def test_reindexing_keeps_metadata(col: str, corpus: Path, capsys: pytest.CaptureFixture) -> None:
    """`dse index DIR -c C --meta team=finance`, then `dse index DIR -c C`: unchanged, meta kept."""
    capsys.readouterr()
    assert _index(str(corpus), "-c", col) == 0
    assert "2 unchanged" in capsys.readouterr().out
    assert main(["search", "q", "-c", col, "--where", "team=finance", "--json", "-k", "5"]) == 0
    hits = _json_lines(capsys.readouterr().out)
    assert len(hits) == 3 and all(h["meta"] == {"team": "finance"} for h in hits)
    # changing it takes an explicit --meta (merged) or --unset-meta (deleted)
    assert _index(str(corpus / "notes.pdf"), "-c", col, "--meta", "year=2024", "--unset-meta", "team") == 0
    assert "(1 with new metadata)" in capsys.readouterr().out
    assert main(["list", "-c", col, "--json"]) == 0
    docs = {Path(d["source"]).name: d for d in _json_lines(capsys.readouterr().out)}
    assert docs["notes.pdf"]["meta"] == {"year": "2024"} and docs["report.pdf"]["meta"] == {"team": "finance"}
    assert (docs["report.pdf"]["pages"], docs["notes.pdf"]["pages"]) == (2, 1)
    assert main(["list", "-c", col, "--where", "year>=2020"]) == 0
    out = capsys.readouterr().out
    assert "notes.pdf" in out and "report.pdf" not in out and out.strip().endswith("1 document, 1 page")
    assert _index(str(corpus), "-c", col, "--meta", "a=1", "--unset-meta", "a") == 2
    assert "--meta and --unset-meta both name 'a'" in capsys.readouterr().err


def test_skipped_files_are_reported(col: str, corpus: Path, capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    assert _index(str(corpus), "-c", col) == 0
    out, err = capsys.readouterr()
    assert "1 skipped: unsupported type" in out and "readme.txt" not in err
    assert _index(str(corpus), "-c", col, "-v") == 0
    assert f"skipped (unsupported type): {corpus / 'readme.txt'}" in capsys.readouterr().err
    assert _index(str(corpus), "-c", col, "--json") == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == [str(corpus / "readme.txt")]


def test_options_on_an_existing_collection(col: str, corpus: Path, tiny_model_dir, capsys) -> None:
    capsys.readouterr()
    for args, message in [
        (["--dim", "32"], "this collection was built with dim=64"),
        (["--index", "hnsw"], "this collection was built with a 'flat' index"),
        (["--index-param", "ef_search=64"], "'flat' index with no parameter 'ef_search'"),
        (["--pool-factor", "2"], "built with pool_factor=None"),
        (["--model-max-pixels", "1000"], "built with max_pixels="),
        (["-m", str(tiny_model_dir("colqwen2"))], "built with the dse-qwen2 model"),
    ]:
        assert _index(str(corpus), "-c", col, *args) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_exit_statuses(col: str, corpus: Path, model: str, tmp_path: Path, monkeypatch, capsys) -> None:
    def no_model(*_a, **_k):
        raise AssertionError("a model was loaded for a request that cannot succeed")

    # 2: bad input, found before any model is loaded, nothing changed or left behind
    monkeypatch.setattr(Encoder, "load", no_model)
    new = tmp_path / "new"
    cases = [
        (["index", str(tmp_path / "missing.pdf"), "-c", str(new), "-m", model], "no such file"),
        (["render", str(tmp_path / "missing.pdf"), "-o", str(tmp_path / "out")], "no such file"),
        (["search", "", "-c", col], "empty query"),
        (["search", "q", "-c", col, "-k", "0"], "-k must be at least 1"),
        (["search", "q", "-c", col, "--image", str(tmp_path / "nope.png")], "query image not found"),
        (["search", "q", "-c", col, "--fusion", "rrf"], "give both a text and --image"),
        (["search", "q", "-c", col, "--where", "year>soon"], "needs a number"),
        (["search", "q", "-c", col, "--where", "team"], "malformed filter"),
        (["remove", "zzz", "-c", col], "no document 'zzz'"),
        (["list", "-c", col, "--where", "=x"], "the key is empty"),
        (["search", "q", "-c", col, "--device", "tpu"], "unknown device 'tpu'"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)
    assert not new.exists() and not (tmp_path / "out").exists()
    assert main(["list", "-c", col]) == 0 and "2 documents" in capsys.readouterr().out  # nothing removed
    # 3: cannot start
    assert main(["stats", "-c", str(tmp_path / "nowhere")]) == 3
    assert "does not exist" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["search", "q", "-c", col, "--device", "cuda"]) == 3
        err = capsys.readouterr().err
        assert "device 'cuda' requested but CUDA is not available" in err and "index" not in err
    monkeypatch.undo()
    # 1: partial failure; a new collection where nothing got indexed is not kept
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.pdf").write_bytes(b"%PDF-1.4\n garbage")
    assert _index(str(bad), "-c", str(new), "-m", model) == 1
    out, err = capsys.readouterr()
    assert "1 failed" in out and err.count("broken.pdf") == 1  # printed once
    assert "was not kept" in err and not new.exists()


def test_batch_search(col: str, tmp_path: Path, monkeypatch, capsys) -> None:
    capsys.readouterr()
    single = {}
    for text in ("revenue by region", "bar chart"):
        assert main(["search", text, "-c", col, "--json", "-k", "2"]) == 0
        single[text] = [(h["page_id"], round(h["score"], 4)) for h in _json_lines(capsys.readouterr().out)]
    plain = tmp_path / "queries.txt"
    plain.write_text("revenue by region\n\nbar chart\n")
    assert main(["search", "-c", col, "--queries", str(plain), "-k", "2"]) == 0
    rows = _json_lines(capsys.readouterr().out)
    assert [r["query_id"] for r in rows] == ["1", "3"]
    assert [[(h["page_id"], round(h["score"], 4)) for h in r["hits"]] for r in rows] == list(single.values())
    # JSONL as in the evaluation format, image paths relative to the file, from stdin too;
    # the query image is a page's own image
    assert main(["search", "bar chart", "-c", col, "--json", "-k", "1"]) == 0
    page = _json_lines(capsys.readouterr().out)[0]
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "page.png").write_bytes(Path(page["image_path"]).read_bytes())
    jsonl = tmp_path / "q" / "queries.jsonl"
    jsonl.write_text(
        '{"_id": "t", "text": "revenue by region"}\n{"_id": "i", "image": "page.png"}\n'
        '{"_id": "f", "text": "bar chart", "image": "page.png", "extra": 1}\n'
    )
    assert main(["search", "-c", col, "--queries", str(jsonl), "-k", "2"]) == 0
    rows = {r["query_id"]: r for r in _json_lines(capsys.readouterr().out)}
    assert list(rows) == ["t", "i", "f"]
    assert [(h["page_id"], round(h["score"], 4)) for h in rows["t"]["hits"]] == single["revenue by region"]
    assert rows["i"]["hits"][0]["page_id"] == page["page_id"] and rows["i"]["image"].endswith("page.png")
    monkeypatch.setattr(sys, "stdin", io.StringIO(jsonl.read_text()))
    monkeypatch.chdir(tmp_path / "q")
    assert main(["search", "-c", col, "--queries", "-", "-k", "2"]) == 0
    assert [r["query_id"] for r in _json_lines(capsys.readouterr().out)] == ["t", "i", "f"]
    # malformed files are refused whole, naming the line, before any model is loaded
    for content, message in [
        ('{"_id": "a", "text": "x"}\nnot json\n', "queries.jsonl:2: not valid JSON"),
        ('{"_id": "a", "text": "  "}\n', "queries.jsonl:1: query 'a' needs 'text', 'image' or both"),
        ('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n', "duplicate query id 'a'"),
        ('{"text": "x"}\n', "missing or empty '_id'"),
        ('{"_id": "a", "image": "gone.png"}\n', "query image not found"),
        ("\n\n", "no queries"),
    ]:
        jsonl.write_text(content)
        assert main(["search", "-c", col, "--queries", str(jsonl)]) == 2
        assert message in capsys.readouterr().err
    assert main(["search", "q", "-c", col, "--queries", str(plain)]) == 2
    assert "not both" in capsys.readouterr().err


def test_list_remove_compact(tmp_path: Path, corpus: Path, model: str, capsys) -> None:
    d = str(tmp_path / "c")
    assert _index(str(corpus), "-c", d, "-m", model) == 0
    capsys.readouterr()
    assert main(["list", "-c", d]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[-1] == "2 documents, 3 pages"
    assert any("report.pdf" in line and " 2 p." in line for line in out)
    assert main(["remove", str(corpus / "report.pdf"), "-c", d]) == 0
    index_dir = Path(d) / "index"
    size = sum(f.stat().st_size for f in index_dir.rglob("*") if f.is_file())
    assert main(["search", "revenue", "-c", d, "--json"]) == 0
    capsys.readouterr()
    assert main(["compact", "-c", d, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bytes_after"] < result["bytes_before"]
    assert sum(f.stat().st_size for f in index_dir.rglob("*") if f.is_file()) < size
    assert main(["compact", "-c", d]) == 0
    assert capsys.readouterr().out.startswith(f"compacted {d}: index and metadata")
    assert main(["list", "-c", d, "--json"]) == 0
    assert [Path(r["source"]).name for r in _json_lines(capsys.readouterr().out)] == ["notes.pdf"]


@pytest.mark.subprocess
def test_real_process_output_is_quiet_and_each_failure_printed_once(tmp_path: Path, corpus: Path, model: str) -> None:
    """One FAILED line per failure (no duplicate WARNING), no "Loading weights" bar without -v."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "report.pdf").write_bytes((corpus / "report.pdf").read_bytes())
    (src / "broken.pdf").write_bytes(b"%PDF-1.4\n garbage")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    cmd = [sys.executable, "-m", "dse", "index", str(src), "-c", str(tmp_path / "c"), "-m", model, "--device", "cpu"]
    r = subprocess.run([*cmd, "--dpi", "30"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 1, r.stderr
    failed = [line for line in r.stderr.splitlines() if "broken.pdf" in line]
    assert len(failed) == 1 and failed[0].startswith("FAILED "), r.stderr
    assert "Loading weights" not in r.stderr and "WARNING" not in r.stderr, r.stderr
    assert "2 pages indexed from 1 documents" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "dse", "search", "revenue", "-c", str(tmp_path / "c"), "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.splitlines()[0].lstrip().startswith("1 ")
