"""The local evaluation format, metrics (vs pytrec_eval), run files and significance tests — no model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from support.eval_data import make_local_benchmark

from dse.eval.compare import RunScores, compare_runs, format_comparison, paired_tests
from dse.eval.data import (
    CorpusItem,
    DatasetFormatError,
    EvalDataset,
    Query,
    iter_corpus_images,
    load_local_dataset,
    load_qrels,
    write_local_dataset,
)
from dse.eval.metrics import compute_metrics, metric_names, trec_order, truncate_run
from dse.eval.runs import RunFormatError, read_run, write_run


@pytest.fixture()
def bench(tmp_path: Path):
    return make_local_benchmark(tmp_path / "bench")


def test_load_local_dataset(bench) -> None:
    ds = load_local_dataset(bench.root)
    assert ds.name == "bench" and ds.root == bench.root
    assert [c.id for c in ds.corpus] == bench.corpus_ids
    by_id = ds.corpus_by_id()
    img = by_id[bench.image_ids[0]]
    assert img.image is not None and img.image.is_absolute() and img.image.is_file() and img.source is None
    pdf = by_id[bench.pdf_ids[2]]
    assert pdf.image is None and pdf.source == str(bench.pdf_path) and pdf.page == 3
    # the unjudged query is dropped; the image query is kept with an absolute path
    assert "q-unjudged" not in {q.id for q in ds.queries}
    qimg = next(q for q in ds.queries if q.id == "qimg")
    assert qimg.text is None and qimg.image is not None and qimg.image.is_absolute()
    assert ds.qrels == bench.qrels


def test_write_local_dataset_round_trip_and_second_split(bench, tmp_path: Path) -> None:
    ds = load_local_dataset(bench.root)
    out = write_local_dataset(ds, tmp_path / "copy")
    again = load_local_dataset(out)
    assert again.corpus == ds.corpus and again.queries == ds.queries and again.qrels == ds.qrels
    # a train split with a subset of the queries and a new page, written into the same directory
    extra = tmp_path / "copy" / "extra.png"
    extra.write_bytes(bench.image_ids and (bench.root / "pages" / "img-1.png").read_bytes())
    train = EvalDataset(
        "t",
        out,
        corpus=ds.corpus + [CorpusItem("extra", image=extra)],
        queries=[ds.queries[0], Query("qt", text="train only")],
        qrels={"q1": {"img-1": 1}, "qt": {"extra": 1}},
    )
    write_local_dataset(train, out, split="train")
    lines = (out / "corpus.jsonl").read_text().splitlines()
    assert json.loads(lines[-1]) == {"_id": "extra", "image": "extra.png"}  # relative inside the dataset dir
    tr = load_local_dataset(out, "train")
    assert {q.id for q in tr.queries} == {"q1", "qt"} and len(tr.corpus) == len(ds.corpus) + 1
    assert load_local_dataset(out, "test").qrels == ds.qrels
    conflict = EvalDataset("t", out, corpus=[CorpusItem("img-1", image=extra)], queries=[], qrels={})
    with pytest.raises(ValueError, match="different content"):
        write_local_dataset(conflict, out, split="other")


def _rewrite(path: Path, lineno: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "line,match",
    [
        ("q1\timg-1", r"test\.tsv:3: expected 3 tab-separated columns"),
        ("q1\timg-1\thigh", r"test\.tsv:3: score must be an integer"),
        ("q1\tno-such-page\t1", r"test\.tsv:3: unknown corpus id 'no-such-page'"),
        ("q-missing\timg-1\t1", r"test\.tsv:3: unknown query id 'q-missing'"),
    ],
)
def test_malformed_qrels_line_is_named(bench, line: str, match: str) -> None:
    _rewrite(bench.root / "qrels" / "test.tsv", 3, line)
    with pytest.raises(DatasetFormatError, match=match):
        load_local_dataset(bench.root)


def test_missing_image_names_the_line(bench) -> None:
    (bench.root / "pages" / "img-3.png").unlink()
    with pytest.raises(DatasetFormatError, match=r"corpus\.jsonl:3: image not found: pages/img-3\.png"):
        load_local_dataset(bench.root)


@pytest.mark.parametrize(
    "file,lineno,text,match",
    [
        ("corpus.jsonl", 2, '{"_id": "img-2", "image": ', r"corpus\.jsonl:2: malformed JSON"),
        ("corpus.jsonl", 2, '{"_id": "img-1", "image": "pages/img-2.png"}', r"corpus\.jsonl:2: duplicate corpus id"),
        ("corpus.jsonl", 5, '{"_id": "pdf-p1", "source": "docs/report.pdf"}', r"corpus\.jsonl:5: 'page' must be"),
        (
            "corpus.jsonl",
            5,
            '{"_id": "pdf-p1", "source": "docs/nope.pdf", "page": 1}',
            r"corpus\.jsonl:5: source not found",
        ),
        (
            "corpus.jsonl",
            1,
            '{"_id": "a b", "image": "pages/img-1.png"}',
            r"corpus\.jsonl:1: '_id' 'a b' contains whitespace",
        ),
        ("corpus.jsonl", 1, '{"image": "pages/img-1.png"}', r"corpus\.jsonl:1: missing or empty '_id'"),
        ("queries.jsonl", 2, '{"_id": "q2", "text": "  "}', r"queries\.jsonl:2: empty query text"),
        ("queries.jsonl", 2, '{"_id": "q2", "image": "nope.png"}', r"queries\.jsonl:2: image not found"),
        ("queries.jsonl", 2, "[1, 2]", r"queries\.jsonl:2: expected a JSON object"),
    ],
)
def test_malformed_jsonl_lines_are_named(bench, file: str, lineno: int, text: str, match: str) -> None:
    _rewrite(bench.root / file, lineno, text)
    with pytest.raises(DatasetFormatError, match=match):
        load_local_dataset(bench.root)


def test_missing_split_lists_the_available_ones(bench) -> None:
    with pytest.raises(DatasetFormatError, match=r"train\.tsv: file not found \(available splits: test\)"):
        load_local_dataset(bench.root, "train")
    with pytest.raises(DatasetFormatError, match="not a dataset directory"):
        load_local_dataset(bench.root / "nope")


def test_load_qrels_accepts_trec_format(tmp_path: Path) -> None:
    p = tmp_path / "qrels.txt"
    p.write_text("q1 0 d1 1\nq1 0 d2 0\nq2 0 d3 2\n")
    assert load_qrels(p) == {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}


def test_iter_corpus_images_reports_failures_and_goes_on(bench) -> None:
    ds = load_local_dataset(bench.root)
    got = dict(iter_corpus_images(ds))
    assert list(got) == bench.corpus_ids
    assert all(im.mode == "RGB" for im in got.values())
    # a page the PDF does not have, and a corrupt document: both reported, the rest yielded
    bad = bench.root / "docs" / "broken.pdf"
    bad.write_bytes(b"%PDF-1.4\n1 0 obj<<>>\ntruncated")
    ds.corpus += [
        CorpusItem("beyond", source=str(bench.pdf_path), page=9),
        CorpusItem("broken", source=str(bad), page=1),
    ]
    failures = []
    got = dict(iter_corpus_images(ds, on_failure=failures.append))
    assert list(got) == bench.corpus_ids
    reasons = {f.id: f for f in failures}
    assert set(reasons) == {"beyond", "broken"}
    assert "no page 9" in reasons["beyond"].reason
    assert reasons["broken"].error_type.endswith("Error") and reasons["broken"].source == str(bad)


# --------------------------------------------------------------------------- metrics


def test_compute_metrics_equals_pytrec_eval_with_ties() -> None:
    import pytrec_eval

    qrels = {"q1": {"a": 1, "b": 0, "z": 2}, "q2": {"c": 1}, "q3": {"x": 1}}
    run = {"q1": {"a": 0.5, "b": 0.5, "x": 0.9, "y": 0.1}, "q2": {"c": 0.1, "d": 0.2, "e": 0.2}, "q9": {"a": 1.0}}
    means, per_query = compute_metrics(run, qrels, (1, 2, 5))
    assert set(per_query) == {"q1", "q2"}  # q3 has no results, q9 no judgements: trec_eval skips both
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.2,5", "recall.1,2,5", "recip_rank"}).evaluate(run)
    for q in per_query:
        for name in ("ndcg_cut_2", "ndcg_cut_5", "recall_1", "recall_2", "recall_5"):
            assert per_query[q][name] == pytest.approx(ref[q][name], abs=1e-12)
        assert per_query[q]["recip_rank_10"] == pytest.approx(ref[q]["recip_rank"])  # < 10 docs: same
    assert means["ndcg_cut_5"] == pytest.approx((ref["q1"]["ndcg_cut_5"] + ref["q2"]["ndcg_cut_5"]) / 2)
    assert metric_names((1, 2, 5)) == ["ndcg_cut_2", "ndcg_cut_5", "recall_1", "recall_2", "recall_5", "recip_rank_10"]


def test_mrr_at_10_cuts_in_trec_eval_order() -> None:
    # 12 documents; the relevant one is 11th: MRR@10 = 0, plain reciprocal rank = 1/11
    run = {"q": {f"d{i:02d}": 1.0 - i / 100 for i in range(12)}}
    qrels = {"q": {"d10": 1}}
    _, per_query = compute_metrics(run, qrels)
    assert per_query["q"]["recip_rank_10"] == 0.0
    # ties: trec_eval orders equal scores by document id descending
    assert trec_order({"a": 1.0, "c": 1.0, "b": 2.0}) == ["b", "c", "a"]
    assert list(truncate_run({"q": {"a": 1.0, "c": 1.0, "b": 2.0}}, 2)["q"]) == ["b", "c"]


def test_run_file_round_trip_and_errors(tmp_path: Path) -> None:
    run = {"q1": {"a": 0.5, "b": 0.75}, "q2": {"c": -1.0}}
    path = write_run(run, tmp_path / "run.trec", tag="my model")
    lines = path.read_text().splitlines()
    assert lines[0] == "q1 Q0 b 1 0.75 my_model" and lines[1].startswith("q1 Q0 a 2 0.5")
    assert read_run(path) == run
    with pytest.raises(ValueError, match="whitespace"):
        write_run({"q": {"a b": 1.0}}, tmp_path / "bad.trec")
    (tmp_path / "bad.trec").write_text("q1 Q0 a 1 0.5 t\nq1 Q0 b 2 high t\n")
    with pytest.raises(RunFormatError, match=r"bad\.trec:2: score is not a number"):
        read_run(tmp_path / "bad.trec")


def test_paired_tests_and_comparison_table() -> None:
    a = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    assert paired_tests(a, a) == (1.0, 1.0)
    b = [x + d for x, d in zip(a, [0.3, 0.25, 0.35, 0.2, 0.3, 0.28, 0.22, 0.31])]
    p_t, p_r = paired_tests(a, b)
    assert p_t < 0.001 and p_r == pytest.approx(2 / 256)  # exact: only the all-positive/all-negative signs
    from scipy import stats

    assert p_t == pytest.approx(stats.ttest_rel(b, a).pvalue)
    runs = [
        RunScores("base", {f"q{i}": {"m": v} for i, v in enumerate(a)}),
        RunScores("better", {f"q{i}": {"m": v} for i, v in enumerate(b)}),
    ]
    table = compare_runs(runs, ["m"])
    cell = table.cell("m", "better")
    assert cell.delta == pytest.approx(sum(b) / 8 - sum(a) / 8) and cell.p_randomisation == pytest.approx(p_r)
    text = format_comparison(table)
    assert "| metric | base (baseline) | better | Δ | p (t-test) | p (randomisation) |" in text
    assert "| m | 0.4500 | 0.7263* | +0.2763 | 1.0e-06 | 0.0078 |" in text
    assert math.isnan(paired_tests([1.0], [2.0])[0])
