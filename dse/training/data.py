"""Training data: (query, positive pages, hard negatives) examples and the batch plan.

Two sources, one :class:`TrainingData` interface:

* **the local benchmark format** (:mod:`dse.eval.data`): ``corpus.jsonl``,
  ``queries.jsonl`` and ``qrels/train.tsv`` (evaluation uses ``qrels/test.tsv``). A
  judgement with score > 0 is a positive; **score 0 rows are hard negatives** ("judged
  not relevant"). More hard negatives come from a negatives file
  (``dse mine-negatives``): JSONL, one object per query,
  ``{"query_id": "q1", "negatives": ["p7", "p3", ...]}`` (best-ranked first), ids of the
  same dataset;
* **the ColPali training-set layout** (e.g. ``vidore/colpali_train_set``): rows with a
  ``query`` string and an ``image`` (the positive page), loaded with ``datasets`` from a
  hub id, a ``save_to_disk`` directory or a directory of parquet files. Pages are
  identified by the ``image_filename`` column when there is one (so two queries about
  one page share it), else by row number; query ids are row numbers (``"0"``, ``"1"``,
  ...), which a negatives file can name too.

:class:`BatchPlan` turns the examples into a deterministic sequence of micro-batches
(a function of the seed only, so a resumed run sees the same data order): each epoch
shuffles the examples, picks one positive and up to ``hard_negatives`` negatives per
example, and packs batches so that no document of a batch is relevant to another query
of the batch (no false in-batch negatives).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from dse.extras import require
from indexes.storage import atomic_path, atomic_write_text
from renderers import RenderError, load_image

logger = logging.getLogger(__name__)

#: Columns of the ColPali training-set layout.
HUB_QUERY_COLUMN = "query"
HUB_IMAGE_COLUMN = "image"
HUB_PAGE_ID_COLUMN = "image_filename"


class TrainingDataError(ValueError):
    """Training data that cannot be used; the message says which file/dataset and why."""


@dataclass(frozen=True)
class TrainExample:
    """One training query: its input and the ids of its positive and hard-negative pages."""

    query_id: str
    text: str | None
    image: Path | None  #: optional query image (local format)
    positives: tuple[str, ...]
    negatives: tuple[str, ...] = ()


@dataclass
class TrainingData:
    """Examples plus access to page images by id (see :meth:`page`)."""

    name: str
    examples: list[TrainExample]
    kind: str  #: "local" or "hub"
    _pages: dict[str, Any] = field(default_factory=dict, repr=False)  #: page id -> Path, or row number (hub)
    _hub: Any = field(default=None, repr=False)  #: the ``datasets.Dataset`` of a hub-layout source
    _cache: OrderedDict[str, Image.Image] = field(default_factory=OrderedDict, repr=False)
    cache_size: int = 256

    @property
    def page_ids(self) -> list[str]:
        return list(self._pages)

    def page(self, page_id: str) -> Image.Image:
        """The RGB page image of ``page_id`` (a small LRU cache keeps recently used pages)."""
        if page_id in self._cache:
            self._cache.move_to_end(page_id)
            return self._cache[page_id]
        ref = self._pages[page_id]
        if isinstance(ref, Path):
            image = _read_image(ref)
        else:
            image = self._hub[int(ref)][HUB_IMAGE_COLUMN]
            if not isinstance(image, Image.Image):
                raise TrainingDataError(f"{self.name}: row {ref}: column {HUB_IMAGE_COLUMN!r} is not an image")
            image = image.convert("RGB") if image.mode != "RGB" else image
        self._cache[page_id] = image
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return image

    def query_image(self, example: TrainExample) -> Image.Image | None:
        return _read_image(example.image) if example.image is not None else None

    def with_negatives(self, negatives: dict[str, list[str]]) -> TrainingData:
        """A copy whose examples also carry ``negatives`` (query id -> page ids; unknown pages rejected)."""
        unknown = {p for ids in negatives.values() for p in ids if p not in self._pages}
        if unknown:
            raise TrainingDataError(
                f"negatives name {len(unknown)} page id(s) not in {self.name}, e.g. {sorted(unknown)[0]!r}"
            )
        examples = []
        for ex in self.examples:
            extra = [p for p in negatives.get(ex.query_id, []) if p not in ex.positives and p not in ex.negatives]
            examples.append(dataclasses.replace(ex, negatives=ex.negatives + tuple(extra)))
        return dataclasses.replace(self, examples=examples, _cache=OrderedDict())

    def summary(self) -> str:
        n_neg = sum(1 for e in self.examples if e.negatives)
        return (
            f"{self.name}: {len(self.examples)} training queries, {len(self._pages)} pages, "
            f"{n_neg} queries with hard negatives"
        )


def _read_image(path: Path) -> Image.Image:
    """An image file as the indexer reads it (:func:`renderers.load_image`: first frame, EXIF
    orientation, RGB, the pixel-count guard); :class:`TrainingDataError` when unreadable."""
    try:
        return load_image(path)
    except RenderError as exc:
        raise TrainingDataError(f"cannot read image {path}: {exc}") from exc


# --------------------------------------------------------------------------- local format


def is_local_dataset(path: str | Path) -> bool:
    """True for a directory in the local benchmark format (has ``corpus.jsonl``)."""
    return (Path(path).expanduser() / "corpus.jsonl").is_file()


def load_local_training_data(
    data_dir: str | Path, *, split: str = "train", cache_dir: str | Path | None = None, render_settings: Any = None
) -> TrainingData:
    """Examples from ``qrels/{split}.tsv`` of a local-format dataset (positives: score > 0,
    hard negatives: score 0). Pages given as ``source`` + ``page`` are rendered once into
    ``cache_dir`` (required then); pages that fail to render are reported and dropped."""
    from dse.eval.data import load_local_dataset

    ds = load_local_dataset(data_dir, split)
    pages: dict[str, Any] = {c.id: c.image for c in ds.corpus if c.image is not None}
    to_render = [c for c in ds.corpus if c.image is None]
    if to_render:
        pages.update(_render_pages(ds, to_render, cache_dir, render_settings))
    examples: list[TrainExample] = []
    skipped = 0
    for q in ds.queries:
        judged = ds.qrels.get(q.id, {})
        pos = tuple(c for c, r in judged.items() if r > 0 and c in pages)
        neg = tuple(c for c, r in judged.items() if r <= 0 and c in pages)
        if not pos:
            skipped += 1
            continue
        examples.append(TrainExample(q.id, q.text, q.image, pos, neg))
    if skipped:
        logger.warning("%s: %d training queries have no usable positive page and are skipped", ds.name, skipped)
    if not examples:
        raise TrainingDataError(f"{ds.root}: no training query with a positive page in qrels/{split}.tsv")
    return TrainingData(name=ds.name, examples=examples, kind="local", _pages=pages)


def _render_pages(ds: Any, items: list[Any], cache_dir: str | Path | None, render_settings: Any) -> dict[str, Path]:
    import hashlib

    from dse.eval.data import CorpusFailure, EvalDataset, iter_corpus_images

    if cache_dir is None:
        raise TrainingDataError(
            f"{ds.root}: corpus pages given as source + page need a cache directory to be rendered into"
        )
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    missing = []
    for item in items:
        key = hashlib.sha1(f"{item.source}\0{item.page}\0{render_settings!r}".encode()).hexdigest()[:20]
        path = cache / f"{key}.png"
        out[item.id] = path
        if not path.is_file():
            missing.append(item)
    if missing:
        sub = EvalDataset(name=ds.name, root=ds.root, corpus=missing, queries=[], qrels={})
        failed: list[CorpusFailure] = []
        for cid, image in iter_corpus_images(sub, render_settings, on_failure=failed.append):
            with atomic_path(out[cid]) as tmp:
                image.save(tmp, format="PNG")
        for f in failed:
            logger.warning("page %s (%s) is dropped: %s: %s", f.id, f.source, f.error_type, f.reason)
            out.pop(f.id, None)
    return out


def read_negatives(path: str | Path) -> dict[str, list[str]]:
    """A negatives JSONL file (``{"query_id": ..., "negatives": [...]}`` per line) as a dict."""
    from dse.eval.data import DatasetFormatError, iter_jsonl

    path = Path(path)
    out: dict[str, list[str]] = {}
    try:
        rows = list(iter_jsonl(path))
    except DatasetFormatError as exc:
        raise TrainingDataError(str(exc)) from None
    for lineno, obj in rows:
        qid, negs = obj.get("query_id"), obj.get("negatives")
        if qid is None or not isinstance(negs, list) or not all(isinstance(n, (str, int)) for n in negs):
            raise TrainingDataError(f'{path}:{lineno}: expected {{"query_id": ..., "negatives": [ids...]}}')
        out.setdefault(str(qid), []).extend(str(n) for n in negs)
    return out


def write_negatives(path: str | Path, negatives: dict[str, list[tuple[str, float]]]) -> Path:
    """Write mined negatives (query id -> [(page id, score), ...] best first) as JSONL, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps(
            {"query_id": qid, "negatives": [h[0] for h in hits], "scores": [round(float(h[1]), 6) for h in hits]},
            ensure_ascii=False,
        )
        + "\n"
        for qid, hits in negatives.items()
    ]
    atomic_write_text(path, "".join(lines))
    return path


# --------------------------------------------------------------------------- hub layout


class HubUnavailable(TrainingDataError):
    """The hub dataset cannot be downloaded (offline, unknown or gated)."""


def open_hub_dataset(name: str, *, split: str = "train") -> Any:
    """A ``datasets.Dataset`` from a hub id, a ``save_to_disk`` directory or parquet files (``train`` extra)."""
    require("train")
    import datasets

    path = Path(name).expanduser()
    if path.is_dir():
        markers = ("dataset_info.json", "state.json", "dataset_dict.json")
        if any((path / m).is_file() for m in markers):
            try:
                ds = datasets.load_from_disk(str(path))
            except (OSError, ValueError, FileNotFoundError) as exc:
                raise TrainingDataError(f"{path}: cannot load the saved dataset: {exc}") from exc
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise TrainingDataError(f"{path}: no split {split!r} (has {', '.join(ds)})")
                ds = ds[split]
            return ds
        files = sorted(str(p) for p in path.rglob("*.parquet"))
        if not files:
            raise TrainingDataError(
                f"{path}: neither a local-format dataset (corpus.jsonl), a save_to_disk "
                "directory nor a directory of parquet files"
            )
        split_files = [
            f
            for f in files
            if Path(f).name.startswith(f"{split}-") or Path(f).name == f"{split}.parquet" or f"/{split}/" in f
        ]
        try:
            return datasets.load_dataset("parquet", data_files=split_files or files, split="train")
        except (OSError, ValueError) as exc:
            raise TrainingDataError(f"{path}: cannot read the parquet files: {exc}") from exc
    if path.exists():
        raise TrainingDataError(f"{name}: not a directory")
    from dse.encoders.sources import looks_like_hub_id

    if not looks_like_hub_id(name):
        raise TrainingDataError(f"{name!r}: no such directory, and not a hub dataset id like owner/name")
    hint = f"pass --data /path/to/a/local/copy (save_to_disk directory or parquet files of {name})"
    try:
        return datasets.load_dataset(name, split=split)
    except ValueError as exc:  # unknown split
        raise TrainingDataError(f"{name}: {exc}") from exc
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        if "DatasetNotFound" in text or "RepositoryNotFound" in text or "doesn't exist" in text:
            raise HubUnavailable(
                f"no dataset {name!r} on the Hugging Face hub (or it is private/gated); {hint}"
            ) from exc
        raise HubUnavailable(f"cannot reach the Hugging Face hub to download dataset {name!r}; {hint}") from exc


def load_hub_training_data(
    name: str, *, split: str = "train", query_column: str = HUB_QUERY_COLUMN, image_column: str = HUB_IMAGE_COLUMN
) -> TrainingData:
    """Examples from a ColPali training-set layout dataset (``query`` + ``image`` per row)."""
    ds = open_hub_dataset(name, split=split)
    columns = list(ds.column_names)
    for col in (query_column, image_column):
        if col not in columns:
            raise TrainingDataError(f"{name}: no column {col!r} (columns: {', '.join(columns)})")
    if image_column != HUB_IMAGE_COLUMN:
        ds = ds.rename_column(image_column, HUB_IMAGE_COLUMN)
    page_keys = ds[HUB_PAGE_ID_COLUMN] if HUB_PAGE_ID_COLUMN in columns else None
    queries = ds[query_column]
    pages: dict[str, Any] = {}
    examples: list[TrainExample] = []
    skipped = 0
    for i, text in enumerate(queries):
        pid = str(page_keys[i]) if page_keys is not None and page_keys[i] else str(i)
        pages.setdefault(pid, i)
        if not isinstance(text, str) or not text.strip():
            skipped += 1
            continue
        examples.append(TrainExample(str(i), text.strip(), None, (pid,)))
    if skipped:
        logger.warning("%s: %d rows without a query text are skipped", name, skipped)
    if not examples:
        raise TrainingDataError(f"{name}: no row with a query text")
    label = Path(name).name if Path(name).expanduser().exists() else name
    return TrainingData(name=label, examples=examples, kind="hub", _pages=pages, _hub=ds)


def load_training_data(
    data: str | Path,
    *,
    split: str = "train",
    cache_dir: str | Path | None = None,
    negatives: str | Path | None = None,
    render_settings: Any = None,
) -> TrainingData:
    """Local-format directory (``corpus.jsonl``) or ColPali layout (hub id / local copy), plus a negatives file."""
    if is_local_dataset(data):
        td = load_local_training_data(data, split=split, cache_dir=cache_dir, render_settings=render_settings)
    else:
        td = load_hub_training_data(str(data), split=split)
    if negatives is not None:
        td = td.with_negatives(read_negatives(negatives))
    logger.info("%s", td.summary())
    return td


# --------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class Sample:
    """One query of a micro-batch: the example and the documents chosen for it."""

    example: TrainExample
    positive: str
    negatives: tuple[str, ...]


class BatchPlan:
    """Deterministic micro-batches over epochs (a function of the examples and the seed).

    ``batches(epoch)`` shuffles with ``random.Random(f"{seed}:{epoch}")``, picks each
    example's positive and hard negatives, and packs batches of ``batch_size`` queries
    greedily, deferring an example to a later batch when one of its positives is already
    a document of the batch, or its chosen positive is relevant to a query already in it.
    Hard negatives that are relevant to any query of the batch are dropped. Batches that
    end with fewer than two documents carry no signal and are skipped.
    """

    def __init__(
        self, examples: Sequence[TrainExample], *, batch_size: int, hard_negatives: int = 1, seed: int = 0
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        if hard_negatives < 0:
            raise ValueError(f"hard negatives per query must be >= 0, got {hard_negatives}")
        self.examples = list(examples)
        self.batch_size = batch_size
        self.hard_negatives = hard_negatives
        self.seed = seed
        self._cached: tuple[int, list[list[Sample]]] | None = None

    def batches(self, epoch: int) -> list[list[Sample]]:
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        rng = random.Random(f"{self.seed}:{epoch}")
        order = list(range(len(self.examples)))
        rng.shuffle(order)
        choices = []
        for i in order:
            ex = self.examples[i]
            pos = ex.positives[0] if len(ex.positives) == 1 else rng.choice(ex.positives)
            negs = list(ex.negatives)
            rng.shuffle(negs)
            choices.append((ex, pos, negs))
        out: list[list[Sample]] = []
        pending = choices
        while pending:
            batch: list[Sample] = []
            docs: set[str] = set()
            relevant: set[str] = set()
            deferred = []
            for ex, pos, negs in pending:
                if len(batch) >= self.batch_size or docs.intersection(ex.positives) or pos in relevant:
                    deferred.append((ex, pos, negs))
                    continue
                relevant.update(ex.positives)
                chosen = tuple(n for n in negs if n not in relevant)[: self.hard_negatives]
                batch.append(Sample(ex, pos, chosen))
                docs.add(pos)
                docs.update(chosen)
            # A negative chosen earlier may be relevant to a query added later: drop it there.
            batch = [
                dataclasses.replace(s, negatives=tuple(n for n in s.negatives if n not in relevant)) for s in batch
            ]
            if len(batch) + sum(len(s.negatives) for s in batch) >= 2:
                out.append(batch)
            pending = deferred
        self._cached = (epoch, out)
        return out

    def micro_batches(self, start: int = 0) -> Iterator[tuple[int, list[Sample]]]:
        """``(epoch, batch)`` for every micro-batch from the global index ``start`` on, forever."""
        epoch, index = 0, start
        while True:
            n = len(self.batches(epoch))
            if n == 0:
                raise TrainingDataError("the training data yields no usable batch")
            if index < n:
                break
            index -= n
            epoch += 1
        while True:
            batches = self.batches(epoch)
            for b in batches[index:]:
                yield epoch, b
            index = 0
            epoch += 1
