"""Run and metrics files: TREC run format and a metrics JSON (with per-query values).

TREC run file, one line per retrieved document, best first per query::

    q1 Q0 page-17 1 0.834512 dse-qwen2

(``query-id Q0 doc-id rank score tag``, space separated; ids must not contain whitespace).

Metrics JSON (written next to the run, see :func:`metrics_path_for`)::

    {"format": "dse-eval-metrics", "version": 1, "run": "run.trec", "dataset": ..., "model": ...,
     "k_values": [1, 5, 10, 100], "metrics": {"ndcg_cut_5": ...}, "per_query": {"q1": {...}},
     "qrels": {"q1": {"page-17": 1}}, ...}

The qrels are stored too, so ``dse eval compare`` can re-evaluate runs without the dataset.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dse.eval.metrics import trec_order
from indexes.storage import atomic_write_text

METRICS_FORMAT = "dse-eval-metrics"
RUN_FILE = "run.trec"
METRICS_FILE = "metrics.json"

Run = dict[str, dict[str, float]]


class RunFormatError(ValueError):
    """A malformed run or metrics file; the message names the file (and line)."""


def _check_id(value: str, kind: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"{kind} {value!r} cannot be written to a TREC run file (empty or contains whitespace)")


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def write_run(run: Mapping[str, Mapping[str, float]], path: str | Path, *, tag: str = "dse") -> Path:
    """Write ``run`` (query id -> {doc id: score}) as a TREC run file, each query's documents in
    trec_eval order (score descending, ties by id descending) with ranks 1, 2, ..."""
    path = Path(path)
    tag = "".join(c if not c.isspace() else "_" for c in tag) or "dse"
    lines: list[str] = []
    for qid in sorted(run):
        _check_id(qid, "query id")
        scores = run[qid]
        for rank, doc in enumerate(trec_order(scores), 1):
            _check_id(doc, "document id")
            score = float(scores[doc])
            if not math.isfinite(score):
                raise ValueError(f"score of ({qid!r}, {doc!r}) is not finite: {score}")
            lines.append(f"{qid} Q0 {doc} {rank} {score!r} {tag}\n")
    _atomic_write(path, "".join(lines))
    return path


def read_run(path: str | Path) -> Run:
    """Read a TREC run file (6 whitespace-separated columns); errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunFormatError(f"{path}: run file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunFormatError(f"{path}: cannot read: {exc}") from None
    run: Run = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split()
        if len(cols) != 6:
            raise RunFormatError(
                f"{path}:{lineno}: expected 6 columns 'qid Q0 docid rank score tag', got {len(cols)}: {line!r}"
            )
        qid, _, doc, _, score_text, _ = cols
        try:
            score = float(score_text)
        except ValueError:
            raise RunFormatError(f"{path}:{lineno}: score is not a number: {score_text!r}") from None
        if not math.isfinite(score):
            raise RunFormatError(f"{path}:{lineno}: score is not finite: {score_text!r}")
        docs = run.setdefault(qid, {})
        if doc in docs:
            raise RunFormatError(f"{path}:{lineno}: document {doc!r} listed twice for query {qid!r}")
        docs[doc] = score
    if not run:
        raise RunFormatError(f"{path}: the run file is empty")
    return run


def metrics_path_for(run_path: str | Path) -> Path:
    """Where the metrics JSON of a run lives: ``DIR/metrics.json`` for ``DIR/run.trec``,
    otherwise ``NAME.metrics.json`` next to ``NAME.trec``."""
    run_path = Path(run_path)
    if run_path.name == RUN_FILE:
        return run_path.with_name(METRICS_FILE)
    return run_path.with_name(run_path.stem + ".metrics.json")


def write_metrics(
    path: str | Path,
    *,
    metrics: Mapping[str, float],
    per_query: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]] | None = None,
    run_file: str | Path | None = None,
    **info: Any,
) -> Path:
    """Write a metrics JSON (``info``: dataset, model, k_values, settings, timings ...)."""
    path = Path(path)
    doc: dict[str, Any] = {"format": METRICS_FORMAT, "version": 1}
    if run_file is not None:
        run_file = Path(run_file)
        try:
            doc["run"] = run_file.resolve().relative_to(path.parent.resolve()).as_posix()
        except ValueError:
            doc["run"] = str(run_file.resolve())
    doc.update(info)
    doc["metrics"] = {k: float(v) for k, v in metrics.items()}
    doc["per_query"] = {q: {k: float(v) for k, v in row.items()} for q, row in per_query.items()}
    if qrels is not None:
        doc["qrels"] = {q: {d: int(r) for d, r in docs.items()} for q, docs in qrels.items()}
    _atomic_write(path, json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return path


def read_metrics(path: str | Path) -> dict[str, Any]:
    """Read a metrics JSON written by :func:`write_metrics` (checks format and fields)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunFormatError(f"{path}: metrics file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFormatError(f"{path}: not a readable metrics JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != METRICS_FORMAT:
        raise RunFormatError(f"{path}: not a dse eval metrics file (format {METRICS_FORMAT!r} expected)")
    for key in ("metrics", "per_query"):
        if not isinstance(doc.get(key), dict):
            raise RunFormatError(f"{path}: missing or malformed {key!r}")
    return doc
