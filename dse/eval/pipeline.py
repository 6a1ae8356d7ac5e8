"""One evaluation job: a model (or the OCR + BM25 baseline, or both fused) on a dataset or a
whole benchmark, with its output files. ``dse eval`` parses options into these calls and prints.

Per dataset (:meth:`Evaluator.run`), ``OUT`` receives::

    run.trec       the TREC run (see :mod:`dse.eval.runs`)
    metrics.json   metrics, per-query values and qrels
    metrics.md     a one-row markdown table

and with ``hybrid="bm25-ocr"`` the two component runs in ``OUT/model`` and ``OUT/bm25-ocr``, the
fused run in ``OUT``. A benchmark (:func:`run_benchmark`) writes one such directory per task, plus
``summary.json`` and ``summary.md`` (per-task rows, the average, the published figure when known).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dse.eval.data import CorpusFailure, EvalDataset
from dse.eval.metrics import DEFAULT_K_VALUES
from dse.eval.runner import DEFAULT_DEPTH, EvalResult

if TYPE_CHECKING:  # pragma: no cover
    from dse.encoders import Encoder
    from renderers import RenderSettings

#: ``model`` name of the OCR + BM25 baseline
BM25_OCR = "bm25-ocr"
BENCHMARKS = ("vidore-v1", "vidore-v2")

#: table rows: (label, metrics)
Rows = list[tuple[str, dict[str, float]]]


@dataclass(frozen=True)
class EvalSettings:
    """How to evaluate (the ``dse eval`` options that are not the model or the data).

    ``hybrid``: ``"bm25-ocr"`` also runs the baseline and fuses it with the model's run by
    ``fusion`` (``rrf`` with constant ``rrf_k``, or ``linear`` with ``fusion_weight`` on the
    model); see :func:`dse.eval.fusion.fuse_runs`.
    """

    k_values: tuple[int, ...] = DEFAULT_K_VALUES
    depth: int = DEFAULT_DEPTH
    batch_size: int = 4
    split: str = "test"
    hybrid: str | None = None
    fusion: str = "rrf"
    fusion_weight: float = 0.5
    rrf_k: float = 60.0
    ocr_lang: str = "eng"
    render_settings: RenderSettings | None = None
    progress: bool = False
    #: ``Collection.create`` settings of the corpus collection, e.g. a Qdrant backend (``None``: local)
    collection_options: dict[str, Any] | None = None


@dataclass
class DatasetEvaluation:
    """Outcome of :meth:`Evaluator.run`: table rows (components first, the main run last), the main
    metrics document as written, and the corpus pages / queries that could not be used."""

    rows: Rows
    doc: dict[str, Any]
    failures: list[CorpusFailure] = field(default_factory=list)


@dataclass
class BenchmarkResult:
    """Outcome of :func:`run_benchmark`. ``rows``: per evaluated task; ``task_errors``: task -> reason
    for tasks that failed; ``partial``: some page of an evaluated task failed."""

    benchmark: str
    label: str
    out_dir: Path
    tasks: tuple[str, ...]
    rows: Rows
    summary: dict[str, Any]
    table: str = ""
    published: float | None = None
    task_errors: dict[str, str] = field(default_factory=dict)
    failures: list[CorpusFailure] = field(default_factory=list)
    partial: bool = False


# --------------------------------------------------------------------------- names and tables


def model_label(
    model: str, *, adapter: str | None = None, dim: int | None = None, hybrid: str | None = None, fusion: str = "rrf"
) -> str:
    """A run's display name: the model directory/repo name, ``+adapter``, ``-dimN``, ``+bm25-ocr-rrf``."""
    name = Path(model.rstrip("/")).name or model
    parts = [name]
    if adapter:
        parts.append("+" + Path(adapter.rstrip("/")).name)
    if dim:
        parts.append(f"-dim{dim}")
    if hybrid:
        parts.append(f"+{hybrid}-{fusion}")
    return "".join(parts)


def safe_name(text: str) -> str:
    """``text`` as one path component (letters, digits and ``-_.+``; others become ``_``)."""
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in text).strip("._") or "dataset"


def default_out_dir(dataset_name: str, label: str) -> Path:
    """``dse-eval/<dataset>/<label>`` (relative to the working directory)."""
    return Path("dse-eval") / safe_name(dataset_name) / safe_name(label)


def format_metrics_table(rows: Rows, names: Sequence[str], *, first: str = "run") -> str:
    """A markdown table: one row per (name, metrics), one column per metric key."""
    from dse.eval.metrics import label

    header = [first] + [label(n) for n in names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, metrics in rows:
        cells = [f"{metrics[n]:.4f}" if n in metrics else "" for n in names]
        lines.append("| " + " | ".join([name] + cells) + " |")
    return "\n".join(lines)


def published_ndcg_cut_5(model: str, benchmark: str) -> float | None:
    """The published average nDCG@5 (0..1) of ``model`` on ``benchmark`` when known; a local
    snapshot directory named like the hub repo counts as that model."""
    from dse.eval.hub import PUBLISHED

    entry = PUBLISHED.get(model)
    if entry is None:  # a local snapshot named like the hub repo
        base = Path(model.rstrip("/")).name
        entry = next((v for k, v in PUBLISHED.items() if k.split("/")[-1] == base), None)
    if not entry or entry.get(benchmark) is None:
        return None
    value = float(entry[benchmark])
    return value / 100.0 if value > 1.0 else value


# --------------------------------------------------------------------------- data


def load_dataset(
    name: str | None,
    data_dir: str | Path | None,
    *,
    split: str = "test",
    cache_dir: Path,
    language: str | None = None,
    progress: bool = False,
) -> EvalDataset:
    """The local-format dataset in ``data_dir`` (``name=None``), or hub dataset ``name`` (read
    from ``data_dir`` when given, else downloaded into ``cache_dir``)."""
    from dse.eval.data import load_local_dataset

    if name is None:
        if data_dir is None:
            raise ValueError("a local dataset needs its directory")
        return load_local_dataset(data_dir, split)
    from dse.eval.hub import load_hub_dataset

    return load_hub_dataset(
        name, data_dir=data_dir, split=split, cache_dir=cache_dir, language=language, progress=progress
    )


def task_data_dir(root: str | Path | None, task: str) -> str | None:
    """The local copy of a benchmark task under ``root``: ``root/<repo name>`` or ``root/<org>/<repo name>``."""
    if root is None:
        return None
    for candidate in (Path(root) / task.split("/")[-1], Path(root) / task):
        if candidate.exists():
            return str(candidate)
    return str(Path(root) / task.split("/")[-1])


def fatal_errors() -> tuple[type[BaseException], ...]:
    """Errors that stop a whole job, not one task: an unusable model or collection, tesseract or
    an optional extra missing."""
    from dse.collection import CollectionError
    from dse.encoders import EncoderError
    from dse.eval.ocr import OcrUnavailable
    from dse.extras import MissingExtraError

    return (CollectionError, EncoderError, OcrUnavailable, MissingExtraError)


# --------------------------------------------------------------------------- one dataset


class Evaluator:
    """Runs a model, the OCR + BM25 baseline (``encoder=None``) or their fusion on a dataset and
    writes the outputs (see the module doc).

    ``model``: the model's name as given (recorded and used for labels); ``adapter`` / ``dim``:
    the model's adapter directory and Matryoshka dimension, for labels. ``cache_dir``: the
    embedding cache (``ocr/`` under it for the baseline's OCR texts); ``None``: nothing kept.
    """

    def __init__(
        self,
        encoder: Encoder | None,
        model: str,
        settings: EvalSettings,
        *,
        cache_dir: Path | None = None,
        adapter: str | None = None,
        dim: int | None = None,
    ) -> None:
        from renderers import RenderSettings

        self.encoder = encoder
        self.model = model
        self.settings = settings
        self.render_settings = settings.render_settings or RenderSettings()
        self.cache_dir = cache_dir
        self.adapter = adapter
        self.dim = dim

    @property
    def label(self) -> str:
        """The main run's label (with the fusion suffix when hybrid)."""
        if self.encoder is None:
            return BM25_OCR
        s = self.settings
        return model_label(self.model, adapter=self.adapter, dim=self.dim, hybrid=s.hybrid, fusion=s.fusion)

    def _bm25(self, dataset: EvalDataset) -> dict[str, dict[str, float]]:
        from dse.eval.bm25_ocr import bm25_ocr_run

        return bm25_ocr_run(
            dataset,
            k=self.settings.depth,
            cache_dir=(self.cache_dir / "ocr") if self.cache_dir else None,
            lang=self.settings.ocr_lang,
            progress=self.settings.progress,
            render_settings=self.render_settings,
        )

    def run(self, dataset: EvalDataset, out_dir: Path) -> DatasetEvaluation:
        """Evaluate ``dataset`` and write the outputs under ``out_dir``."""
        from dse.eval.runner import evaluate, score_run

        s = self.settings
        ks = s.k_values
        rows: Rows = []
        failures: list[CorpusFailure] = []
        components: dict[str, EvalResult] = {}
        if self.encoder is None:  # bm25-ocr
            main = score_run(self._bm25(dataset), dataset, ks)
            label = BM25_OCR
        else:
            main = evaluate(
                self.encoder,
                dataset,
                k_values=ks,
                cache_dir=self.cache_dir,
                batch_size=s.batch_size,
                depth=s.depth,
                render_settings=self.render_settings,
                progress=s.progress,
                collection_options=s.collection_options,
            )
            failures += main.failures
            label = model_label(self.model, adapter=self.adapter, dim=self.dim)
            if s.hybrid:
                from dse.eval.fusion import fuse_runs

                bm25 = score_run(self._bm25(dataset), dataset, ks)
                components = {"model": main, BM25_OCR: bm25}
                fused = fuse_runs(
                    [main.run, bm25.run], method=s.fusion, rrf_k=s.rrf_k, weight=s.fusion_weight, depth=s.depth
                )
                hybrid = score_run(fused, dataset, ks)
                hybrid.failures = main.failures
                rows += [(label, main.metrics), (BM25_OCR, bm25.metrics)]
                main, label = hybrid, self.label
        rows.append((label, main.metrics))
        info: dict[str, Any] = {
            "dataset": dataset.name,
            "dataset_dir": str(dataset.root),
            "split": s.split,
            "model": self.model,
            "label": label,
            "k_values": list(ks),
            "depth": s.depth,
            "settings": main.settings,
            "encoded_pages": main.encoded_pages,
            "failures": [f.__dict__ for f in failures],
        }
        if s.hybrid:
            info["fusion"] = {
                "method": s.fusion,
                "weight": s.fusion_weight,
                "rrf_k": s.rrf_k,
                "components": ["model", BM25_OCR],
            }
        for name, res in components.items():
            self._write(
                out_dir / name,
                res,
                dataset,
                {**info, "label": name if name != "model" else rows[0][0], "settings": res.settings},
            )
        doc = self._write(out_dir, main, dataset, info)
        return DatasetEvaluation(rows=rows, doc=doc, failures=failures)

    def _write(self, out_dir: Path, result: EvalResult, dataset: EvalDataset, info: dict[str, Any]) -> dict[str, Any]:
        from dse.eval.metrics import metric_names
        from dse.eval.runs import METRICS_FILE, RUN_FILE, read_metrics, write_metrics, write_run
        from indexes.storage import atomic_write_text

        out_dir.mkdir(parents=True, exist_ok=True)
        run_path = write_run(result.run, out_dir / RUN_FILE, tag=info.get("label", "dse"))
        mpath = write_metrics(
            out_dir / METRICS_FILE,
            metrics=result.metrics,
            per_query=result.per_query,
            qrels=dataset.qrels,
            run_file=run_path,
            **info,
        )
        names = metric_names(self.settings.k_values)
        table = format_metrics_table([(info.get("label", "run"), result.metrics)], names)
        atomic_write_text(out_dir / "metrics.md", table + "\n")
        return read_metrics(mpath)


# --------------------------------------------------------------------------- a benchmark


def run_benchmark(
    evaluator: Evaluator,
    benchmark: str,
    *,
    data_dir: str | Path | None,
    out_dir: Path | None,
    hub_cache: Path,
    language: str | None = None,
) -> BenchmarkResult:
    """Evaluate every task of ``benchmark`` (``vidore-v1`` / ``vidore-v2``): task ``T`` is read from
    ``data_dir/<repo name of T>`` when ``data_dir`` is given, else from the hub. A task that fails
    is recorded in ``task_errors`` and the others go on; :func:`fatal_errors` stop the job.
    ``out_dir`` defaults to ``dse-eval/<benchmark>/<label>``. The summary files are written when at
    least one task was evaluated (``rows`` is empty otherwise)."""
    from dse.eval import hub
    from dse.eval.metrics import metric_names
    from indexes.storage import atomic_write_text

    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; use one of: {', '.join(BENCHMARKS)}")
    tasks: tuple[str, ...] = hub.VIDORE_V1 if benchmark == "vidore-v1" else hub.VIDORE_V2
    settings = evaluator.settings
    label = evaluator.label
    out_root = out_dir if out_dir is not None else Path("dse-eval") / benchmark / safe_name(label)
    result = BenchmarkResult(
        benchmark=benchmark,
        label=label,
        out_dir=out_root,
        tasks=tasks,
        rows=[],
        summary={"benchmark": benchmark, "model": evaluator.model, "label": label, "tasks": {}},
    )
    fatal = fatal_errors()
    for task in tasks:
        try:
            dataset = load_dataset(
                task,
                task_data_dir(data_dir, task),
                split=settings.split,
                cache_dir=hub_cache,
                language=language,
                progress=settings.progress,
            )
            done = evaluator.run(dataset, out_root / safe_name(task.split("/")[-1]))
        except fatal:
            raise
        except Exception as exc:
            result.task_errors[task] = str(exc)
            result.summary["tasks"][task] = {"error": str(exc)}
            continue
        result.failures += done.failures
        result.partial = result.partial or bool(done.failures)
        result.rows.append((task.split("/")[-1], done.rows[-1][1]))
        result.summary["tasks"][task] = done.rows[-1][1]
    if not result.rows:
        return result
    rows = result.rows
    names = metric_names(settings.k_values)
    average = {n: sum(r[1][n] for r in rows) / len(rows) for n in names}
    result.summary["average"] = average
    result.summary["evaluated_tasks"] = len(rows)
    result.published = published_ndcg_cut_5(evaluator.model, benchmark)
    result.summary["published_ndcg_cut_5"] = result.published
    table_rows = rows + [(f"**average** ({len(rows)}/{len(tasks)} tasks)", average)]
    if result.published is not None:
        table_rows.append(("published (nDCG@5 average)", {"ndcg_cut_5": result.published}))
    result.table = format_metrics_table(table_rows, names, first="task")
    out_root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_root / "summary.json", json.dumps(result.summary, indent=1) + "\n")
    atomic_write_text(out_root / "summary.md", result.table + "\n")
    return result
