"""``dse eval`` and ``dse eval compare`` end to end (in-process, tiny random models)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from support.eval_data import make_local_benchmark

from dse.cli import main


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    return make_local_benchmark(tmp_path_factory.mktemp("eval-cli") / "bench")


@pytest.fixture(scope="module")
def evaluated(bench, tiny_model_dir, tmp_path_factory: pytest.TempPathFactory):
    """Two evaluated runs (DSE and ColQwen2 tiny models) on the benchmark, with a shared cache."""
    root = tmp_path_factory.mktemp("eval-cli-out")
    outs = {}
    for family in ("dse-qwen2", "colqwen2"):
        out = root / family
        rc = main(
            [
                "eval",
                "--model",
                str(tiny_model_dir(family)),
                "--data-dir",
                str(bench.root),
                "--out",
                str(out),
                "--cache-dir",
                str(root / "cache"),
                "--device",
                "cpu",
            ]
        )
        assert rc == 0
        outs[family] = out
    return root, outs


def _read_run_independently(path: Path) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        qid, q0, doc, rank, score, tag = line.split()
        assert q0 == "Q0" and int(rank) >= 1
        run.setdefault(qid, {})[doc] = float(score)
    return run


def _read_qrels_independently(path: Path) -> dict[str, dict[str, int]]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    qrels: dict[str, dict[str, int]] = {}
    for r in rows:
        qrels.setdefault(r["query-id"], {})[r["corpus-id"]] = int(r["score"])
    return qrels


def test_metrics_equal_pytrec_eval_on_the_written_run(bench, evaluated, capsys) -> None:
    import pytrec_eval

    _, outs = evaluated
    for out in outs.values():
        run = _read_run_independently(out / "run.trec")
        qrels = _read_qrels_independently(bench.root / "qrels" / "test.tsv")
        doc = json.loads((out / "metrics.json").read_text())
        assert set(run) == set(doc["per_query"]) == set(qrels)  # the unjudged query is not in the run
        ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.5,10,100", "recall.1,5,10,100"}).evaluate(run)
        # MRR@10: trec_eval's recip_rank on each query's top 10 (score desc, ties by docid desc)
        top10 = {q: dict(sorted(d.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:10]) for q, d in run.items()}
        rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
        for q in qrels:
            for name in (
                "ndcg_cut_5",
                "ndcg_cut_10",
                "ndcg_cut_100",
                "recall_1",
                "recall_5",
                "recall_10",
                "recall_100",
            ):
                assert doc["per_query"][q][name] == pytest.approx(ref[q][name], abs=1e-12)
            assert doc["per_query"][q]["recip_rank_10"] == pytest.approx(rr[q]["recip_rank"], abs=1e-12)
        for name, value in doc["metrics"].items():
            ref_values = [ref[q][name] if name in ref[q] else rr[q]["recip_rank"] for q in qrels]
            assert value == pytest.approx(sum(ref_values) / len(ref_values), abs=1e-12)
        assert doc["encoded_pages"] == len(bench.corpus_ids)
        table = (out / "metrics.md").read_text()
        assert "| nDCG@5 | nDCG@10 | nDCG@100 | Recall@1 | Recall@5 | Recall@10 | Recall@100 | MRR@10 |" in table


def test_second_run_reencodes_nothing(bench, evaluated, tiny_model_dir, capsys) -> None:
    root, outs = evaluated
    capsys.readouterr()
    again = root / "again"
    rc = main(
        [
            "eval",
            "--model",
            str(tiny_model_dir("dse-qwen2")),
            "--data-dir",
            str(bench.root),
            "--out",
            str(again),
            "--cache-dir",
            str(root / "cache"),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "nDCG@5" in printed and "MRR@10" in printed and str(again / "run.trec") in printed
    doc = json.loads((again / "metrics.json").read_text())
    first = json.loads((outs["dse-qwen2"] / "metrics.json").read_text())
    assert doc["encoded_pages"] == 0
    assert doc["metrics"] == pytest.approx(first["metrics"])


def test_compare_prints_table_with_p_values(bench, evaluated, capsys) -> None:
    from scipy import stats

    _, outs = evaluated
    capsys.readouterr()
    a, b = outs["dse-qwen2"], outs["colqwen2"]
    assert (
        main(["eval", "compare", str(a), str(b / "run.trec"), "--metric", "ndcg_cut_10", "--metric", "recall_5"]) == 0
    )
    text = capsys.readouterr().out
    assert "| metric | dse-qwen2 (baseline) | colqwen2 | Δ | p (t-test) | p (randomisation) |" in text
    pa = json.loads((a / "metrics.json").read_text())["per_query"]
    pb = json.loads((b / "metrics.json").read_text())["per_query"]
    qs = sorted(pa)
    row = next(line for line in text.splitlines() if line.startswith("| nDCG@10 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[1]) == pytest.approx(sum(pa[q]["ndcg_cut_10"] for q in qs) / len(qs), abs=1e-4)
    x, y = [pa[q]["ndcg_cut_10"] for q in qs], [pb[q]["ndcg_cut_10"] for q in qs]
    if x != y:
        assert float(cells[4]) == pytest.approx(stats.ttest_rel(y, x).pvalue, abs=1e-4)
        assert 0.0 < float(cells[5]) <= 1.0
    assert f"{len(qs)} queries" in text

    # the same comparison from the qrels file (recomputed from the run files), as JSON
    assert (
        main(
            [
                "eval",
                "compare",
                str(a),
                str(b),
                "--qrels",
                str(bench.root / "qrels" / "test.tsv"),
                "--metric",
                "ndcg_cut_10",
                "--json",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    cell = next(c for c in doc["cells"] if c["run"] == "colqwen2")
    assert cell["mean"] == pytest.approx(sum(y) / len(y)) and doc["n_queries"] == len(qs)

    # a run without metrics and without qrels: a clear error
    lone = a.parent / "lone.trec"
    lone.write_text((a / "run.trec").read_text())
    assert main(["eval", "compare", str(lone), str(b)]) == 2
    assert "pass --qrels FILE or --data-dir DIR" in capsys.readouterr().err


def test_bad_dataset_input_names_the_line(tmp_path: Path, tiny_model_dir, capsys) -> None:
    b = make_local_benchmark(tmp_path / "bad")
    qrels = b.root / "qrels" / "test.tsv"
    lines = qrels.read_text().splitlines()
    lines[2] = "q2 img-2"
    qrels.write_text("\n".join(lines) + "\n")
    model = str(tiny_model_dir("dse-qwen2"))
    args = [
        "eval",
        "--model",
        model,
        "--data-dir",
        str(b.root),
        "--no-cache",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dse eval: error: ") and f"{qrels}:3: expected 3 tab-separated columns" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1

    lines[2] = "q2\timg-2\t1"
    qrels.write_text("\n".join(lines) + "\n")
    (b.root / "pages" / "img-2.png").unlink()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{b.root / 'corpus.jsonl'}:2: image not found: pages/img-2.png" in err
    assert not (tmp_path / "o").exists()


def test_usage_errors(bench, capsys) -> None:
    assert main(["eval", "--model", "x"]) == 2
    assert "give --data-dir DIR" in capsys.readouterr().err
    assert main(["eval", "--model", "bm25-ocr", "--hybrid", "bm25-ocr", "--data-dir", str(bench.root)]) == 2
    assert "--hybrid needs a visual model" in capsys.readouterr().err
    assert main(["eval", "--model", "x", "--data-dir", str(bench.root / "nope")]) == 2
    with pytest.raises(SystemExit):
        main(["eval", "--data-dir", str(bench.root), "--k", "0,5"])
    assert main(["eval", "--model", str(bench.root / "no-model"), "--data-dir", str(bench.root), "--no-cache"]) == 3


def test_hybrid_with_bm25_ocr(bench, evaluated, tiny_model_dir, capsys) -> None:
    """Real tesseract + BM25 fused with the tiny model; lambda = 1 reproduces the model's ranking."""
    root, outs = evaluated
    capsys.readouterr()
    out = root / "hybrid"
    rc = main(
        [
            "eval",
            "--model",
            str(tiny_model_dir("dse-qwen2")),
            "--data-dir",
            str(bench.root),
            "--out",
            str(out),
            "--cache-dir",
            str(root / "cache"),
            "--device",
            "cpu",
            "--hybrid",
            "bm25-ocr",
            "--fusion",
            "linear",
            "--fusion-weight",
            "1",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| bm25-ocr |" in printed and "+bm25-ocr-linear |" in printed
    fused = _read_run_independently(out / "run.trec")
    model_run = _read_run_independently(out / "model" / "run.trec")
    bm25_run = _read_run_independently(out / "bm25-ocr" / "run.trec")
    earlier = _read_run_independently(outs["dse-qwen2"] / "run.trec")
    assert model_run.keys() == earlier.keys()
    assert all(model_run[q] == pytest.approx(earlier[q]) for q in earlier)
    for q in fused:
        order = lambda d: sorted(d, key=lambda k: (d[k], k), reverse=True)  # noqa: E731
        assert order(fused[q])[:3] == order(model_run[q])[:3]
    # the OCR baseline reads the printed words: each word query finds its page first
    for qid, judged in bench.qrels.items():
        if qid.startswith("q") and qid[1:].isdigit() and qid != "q1":
            (target,) = judged
            assert max(bm25_run[qid], key=bm25_run[qid].get) == target, qid
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["fusion"] == {"method": "linear", "weight": 1.0, "rrf_k": 60.0, "components": ["model", "bm25-ocr"]}
    # the baseline alone (OCR cached from the hybrid run)
    assert (
        main(
            [
                "eval",
                "--model",
                "bm25-ocr",
                "--data-dir",
                str(bench.root),
                "--out",
                str(root / "bm25"),
                "--cache-dir",
                str(root / "cache"),
            ]
        )
        == 0
    )
    alone = _read_run_independently(root / "bm25" / "run.trec")
    assert alone.keys() == bm25_run.keys() and all(alone[q] == pytest.approx(bm25_run[q]) for q in alone)


def test_benchmark_runs_every_task_with_average(tmp_path: Path, tiny_model_dir, monkeypatch, capsys) -> None:
    """--benchmark over local QA-style copies (save_to_disk) of two ViDoRe-like tasks."""
    import datasets
    from PIL import Image

    from dse.eval import hub

    tasks = ("vidore/taskA_test", "vidore/taskB_test")
    monkeypatch.setattr(hub, "VIDORE_V1", tasks)
    copies = tmp_path / "copies"
    colors = [(200, 20, 20), (20, 200, 20), (20, 20, 200)]
    for t, task in enumerate(tasks):
        n = 2 + t
        datasets.Dataset.from_dict(
            {
                "query": [f"what is shown on page {i}" for i in range(n)],
                "image": [Image.new("RGB", (56, 56), colors[i]) for i in range(n)],
                "image_filename": [f"p{i}.png" for i in range(n)],
            },
            features=datasets.Features(
                {
                    "query": datasets.Value("string"),
                    "image": datasets.Image(),
                    "image_filename": datasets.Value("string"),
                }
            ),
        ).save_to_disk(str(copies / task.split("/")[-1]))
    out = tmp_path / "out"
    rc = main(
        [
            "eval",
            "--model",
            str(tiny_model_dir("dse-qwen2")),
            "--benchmark",
            "vidore-v1",
            "--data-dir",
            str(copies),
            "--out",
            str(out),
            "--no-cache",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| taskA_test |" in printed and "| taskB_test |" in printed and "**average** (2/2 tasks)" in printed
    summary = json.loads((out / "summary.json").read_text())
    a, b = (summary["tasks"][t]["ndcg_cut_5"] for t in tasks)
    assert summary["average"]["ndcg_cut_5"] == pytest.approx((a + b) / 2)
    for task in tasks:
        doc = json.loads((out / task.split("/")[-1] / "metrics.json").read_text())
        assert doc["metrics"] == pytest.approx(summary["tasks"][task])
    from dse.eval.pipeline import published_ndcg_cut_5

    assert published_ndcg_cut_5("/models/dse-qwen2-2b-mrl-v1", "vidore-v1") == pytest.approx(0.858)
    assert published_ndcg_cut_5("/models/tiny", "vidore-v1") is None
