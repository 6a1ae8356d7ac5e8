"""A collection: one directory holding rendered pages, their vectors and metadata.

Layout::

    DIR/collection.json   manifest (format version, encoder settings, index kind/params)
    DIR/meta.sqlite       documents and pages (see :mod:`dse.collection.store`)
    DIR/images/<doc_id>/p00001.png
    DIR/index/            the vector index (see :mod:`indexes`), append-only segments
    DIR/.lock             held by the one writer (flock)

Three-line use::

    col = Collection.create("my-collection", model="MrLight/dse-qwen2-2b-mrl-v1")
    col.add("reports/")
    hits = col.search("quarterly revenue by region")
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dse.collection import backends
from dse.collection.crashpoints import crash_point
from dse.collection.filters import parse_where
from dse.collection.fusion import reciprocal_rank_fusion
from dse.collection.ingest import IndexReport, Ingestor
from dse.collection.manifest import (
    MANIFEST_NAME,
    CollectionError,
    CollectionInputError,
    Manifest,
    check_same_encoder,
    describe_encoder,
    load_encoder_from_settings,
)
from dse.collection.store import MetadataStore
from dse.encoders.base import Encoder, EncoderError
from indexes.protocol import VectorIndex

logger = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "hnsw", "ivfpq", "maxsim")

#: Index parameters that only steer searches, per index type: they may change on an existing
#: collection (:meth:`Collection.update_index_options`). Every other parameter is fixed when
#: the collection is created.
SEARCH_TIME_PARAMS: dict[str, tuple[str, ...]] = {
    "flat": ("brute_force_max",),
    "hnsw": ("ef_search", "brute_force_max"),
    "ivfpq": ("nprobe", "refine_factor", "brute_force_max"),
    "maxsim": ("n_candidates", "nprobe"),
}

#: Options a new local ``maxsim`` collection gets unless its ``index_params`` set them: PLAID-style
#: centroid candidates re-ranked by MaxSim over int8 vectors (measured in docs/scale-out.md). Small
#: collections are still searched exactly: the centroids are trained once ``train_pages`` (5,000)
#: pages are indexed.
MAXSIM_DEFAULTS: dict[str, Any] = {"candidates": "centroids", "codec": "int8"}
#: ``index_params`` of exact MaxSim over float16 vectors (every page scored; what evaluation uses).
EXACT_MAXSIM: dict[str, Any] = {"candidates": None, "codec": "float16"}

#: Options of a ``maxsim`` index (:class:`indexes.MultiVectorIndex`) a collection may set in ``index_params``.
MAXSIM_PARAMS = (
    "codec",
    "candidates",
    "n_candidates",
    "k_sim",
    "d_proj",
    "r_reps",
    "seed",
    "fde_index",
    "nlist",
    "pq_m",
    "nprobe",
    "train_pages",
    "n_centroids",
)

#: Encoder settings that :meth:`Collection.open` can be asked to check (they are fixed at creation).
_FIXED_ENCODER_OPTIONS = ("family", "dim", "max_pixels", "min_pixels", "adapter", "query_instruction")

#: A query image: a path or an already-decoded image.
QueryImage = str | os.PathLike[str] | Image.Image


@dataclass
class Hit:
    """One ranked page. ``score`` is the index's similarity (cosine / MaxSim, or RRF when fused)."""

    rank: int
    score: float
    source: str
    page: int
    image_path: str
    doc_id: str
    page_id: int
    title: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Document:
    """One indexed document: its id, source, title, number of stored pages, metadata and status
    (``complete``, or ``indexing`` for an interrupted job that the next ``add`` resumes)."""

    doc_id: str
    source: str
    title: str | None
    pages: int
    meta: dict[str, Any]
    status: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _resolve_model_name(model: str) -> str:
    """Local directories are recorded as absolute paths, hub ids as given."""
    p = Path(model).expanduser()
    return str(p.resolve()) if p.exists() else model


def check_device(device: str) -> str:
    """Validate a ``device`` setting before any work; returns the device for the vector index.

    ``auto``, ``cpu``, ``cuda``, ``cuda:N`` and ``mps`` are known (anything else raises
    :class:`CollectionInputError`); an explicit GPU that is not available raises
    :class:`CollectionError` naming the device. The index runs on the CPU for ``cpu`` and
    ``mps`` (FAISS and the MaxSim scan have no MPS path), on CUDA when asked or ``auto``.
    """
    name = str(device).strip().lower()
    if name in ("auto", "cpu"):
        return name
    if not re.fullmatch(r"cuda(:\d+)?|mps", name):
        raise CollectionInputError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    from dse.encoders.devices import pick_device

    try:
        pick_device(name)
    except EncoderError as exc:
        raise CollectionError(str(exc)) from None
    return "cpu" if name == "mps" else name


class Collection:
    """Documents in, ranked pages out. Create with :meth:`create`, reopen with :meth:`open`."""

    def __init__(
        self, directory: Path, manifest: Manifest, store: MetadataStore, encoder: Encoder | None, device: str
    ) -> None:
        self.directory = Path(directory)
        self.manifest = manifest
        self.store = store
        self._encoder = encoder
        self.device = device
        self._index_device = check_device(device)
        self._dtype: Any = None  # dtype of the lazily loaded encoder (None: the device default)
        self._index: VectorIndex  # set by create / open
        self._lock_fh: Any = None
        self._backend_options: dict[str, Any] = {}
        #: Qdrant backend: points vs stored pages as last checked (see backends.reconcile_qdrant)
        self.consistency: dict[str, int] | None = None

    # --------------------------------------------------------------- lifecycle
    @classmethod
    def create(
        cls,
        directory: str | os.PathLike[str],
        model: str | Encoder,
        *,
        family: str | None = None,
        device: str = "auto",
        dim: int | None = None,
        index: str = "auto",
        index_params: dict[str, Any] | None = None,
        pool_factor: int | None = None,
        exist_ok: bool = False,
        backend: str = "local",
        qdrant_url: str | None = None,
        qdrant_api_key: str | None = None,
        qdrant_collection: str | None = None,
        **encoder_kwargs: Any,
    ) -> Collection:
        """Create a collection in ``directory`` for ``model`` (a hub id, a local dir or an :class:`Encoder`).

        ``index``: ``"auto"`` (``flat`` for single-vector models, ``maxsim`` for multi-vector),
        ``flat`` (exact inner product), ``hnsw`` or ``ivfpq`` (FAISS, single-vector only; parameters
        in ``index_params``). ``pool_factor`` enables colpali-engine's hierarchical token pooling
        at index time (multi-vector only). With ``exist_ok``, an existing collection is opened
        instead, after checking that it was built with the same encoder and index options
        (search-time index parameters are applied; see :meth:`update_index_options`).
        Nothing is left on disk when creation fails.

        ``backend="qdrant"`` keeps the vectors in a Qdrant collection (see
        :mod:`dse.collection.backends`): ``qdrant_url`` (``http(s)://...``, or ``path:DIR`` for
        qdrant-client's local mode, tests only; default ``$QDRANT_URL``), ``qdrant_api_key`` (default
        ``$QDRANT_API_KEY``; never stored), ``qdrant_collection`` (default derived from the directory)
        and ``index_params`` (:class:`indexes.qdrant.Schema` settings: ``n_candidates``, ``prefetch``,
        ``quantization``, ``shard_number``...).
        """
        directory = Path(directory)
        check_device(device)
        # refusals first: before loading a model
        exists = (directory / MANIFEST_NAME).exists()
        if exists and not exist_ok:
            raise CollectionInputError(
                f"a collection already exists at {directory} (use Collection.open, or "
                "exist_ok=True to reuse it with the same encoder)"
            )
        if not exists and directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise CollectionInputError(
                f"{directory} exists, is not empty and is not a collection; choose a new directory for the collection"
            )
        if index not in ("auto", backends.QDRANT, *INDEX_TYPES):
            raise CollectionInputError(f"unknown index type {index!r}; choose one of {', '.join(INDEX_TYPES)}")
        if backend not in backends.BACKENDS:
            raise CollectionInputError(f"unknown backend {backend!r}; choose one of {', '.join(backends.BACKENDS)}")
        encoder = (
            model
            if isinstance(model, Encoder)
            else Encoder.load(model, family=family, device=device, dim=dim, **encoder_kwargs)
        )
        if exists:
            col = cls.open(
                directory, encoder=encoder, device=device, qdrant_url=qdrant_url, qdrant_api_key=qdrant_api_key
            )
            try:
                col.update_index_options(index=index, index_params=index_params, pool_factor=pool_factor)
            except BaseException:
                col.close()
                raise
            return col
        settings = dict(encoder.settings)
        settings["model"] = _resolve_model_name(str(settings.get("model")))
        if index == "auto":
            index = backends.QDRANT if backend == backends.QDRANT else "flat" if encoder.kind == "single" else "maxsim"
        if backend == backends.QDRANT and index != backends.QDRANT:
            raise CollectionInputError(
                f"the qdrant backend has its own index; index={index!r} applies to local collections"
            )
        if index == backends.QDRANT and backend != backends.QDRANT:
            raise CollectionInputError("index='qdrant' needs backend='qdrant' and a qdrant_url")
        if backend != backends.QDRANT and (index == "maxsim") != (encoder.kind == "multi"):
            raise CollectionInputError(
                f"index {index!r} does not fit a {encoder.kind}-vector model "
                f"({'use maxsim' if encoder.kind == 'multi' else 'use flat, hnsw or ivfpq'})"
            )
        if pool_factor is not None and encoder.kind != "multi":
            raise CollectionInputError("pool_factor applies to multi-vector models only")
        params = dict(index_params or {})
        if index == "maxsim":
            params = {**MAXSIM_DEFAULTS, **params}
        index_cfg: dict[str, Any] = {"type": index, "params": params, "pool_factor": pool_factor}
        if backend == backends.QDRANT:
            index_cfg = backends.qdrant_index_config(
                directory, url=qdrant_url, collection=qdrant_collection, params=index_params, pool_factor=pool_factor
            )
        manifest = Manifest(encoder=settings, index=index_cfg)
        created = not directory.exists()
        col = cls(directory, manifest, None, encoder, device)  # type: ignore[arg-type]
        col._backend_options = {"qdrant_url": qdrant_url, "qdrant_api_key": qdrant_api_key}
        try:
            # bad index parameters fail here; a local index is written below, a Qdrant one is created now
            col._index = col._new_index()
            directory.mkdir(parents=True, exist_ok=True)
            col.store = MetadataStore(directory / "meta.sqlite")
            col._index.save(col.index_dir)
            manifest.write(directory)  # written last: a directory without it is not a collection
        except BaseException:  # e.g. Qdrant unreachable: leave nothing behind
            if col.store is not None:
                col.store.close()
            _remove_created(directory, created)
            raise
        logger.info("created collection %s (%s, %s index)", directory, settings.get("family"), index)
        return col

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        encoder: Encoder | None = None,
        device: str = "auto",
        model: str | None = None,
        qdrant_url: str | None = None,
        qdrant_api_key: str | None = None,
        dtype: Any = None,
        family: str | None = None,
        dim: int | None = None,
        max_pixels: int | None = None,
        min_pixels: int | None = None,
        adapter: str | None = None,
        query_instruction: str | None = None,
    ) -> Collection:
        """Open an existing collection. The encoder is loaded lazily from the manifest's settings, or
        taken from ``encoder`` / ``model`` after checking it is the one the collection was built with.

        Qdrant-backed collections connect to the recorded URL (overridden by ``qdrant_url`` or
        ``$DSE_QDRANT_URL``) with ``qdrant_api_key`` (default ``$QDRANT_API_KEY``).

        ``dtype`` is how the lazily loaded encoder runs (e.g. ``"bfloat16"`` on a GPU); it is not
        part of the collection. ``family``, ``dim``, ``max_pixels``, ``min_pixels``, ``adapter`` and
        ``query_instruction`` are fixed when the collection is built: when given, each must equal
        the collection's, else :class:`CollectionInputError` says what it was built with.
        A ``device`` that is unknown or unavailable is refused before anything is loaded.
        """
        directory = Path(directory)
        check_device(device)
        manifest = Manifest.read(directory)
        _check_fixed_options(
            manifest.encoder,
            family=family,
            dim=dim,
            max_pixels=max_pixels,
            min_pixels=min_pixels,
            adapter=adapter,
            query_instruction=query_instruction,
        )
        db = directory / "meta.sqlite"
        if not db.is_file():
            raise CollectionError(f"{directory} is damaged: meta.sqlite is missing")
        try:
            store = MetadataStore(db)
            check = store.integrity_check()
        except Exception as exc:  # sqlite3.DatabaseError and friends
            raise CollectionError(f"{db} is corrupted: {exc}") from exc
        if check != "ok":
            raise CollectionError(f"{db} is corrupted: {check}")
        try:
            if model is not None and encoder is None:
                encoder = _load_model_for(manifest.encoder, model, device=device, dtype=dtype)
            if encoder is not None:
                settings = dict(encoder.settings)
                settings["model"] = _resolve_model_name(str(settings.get("model")))
                check_same_encoder(manifest.encoder, settings)
            col = cls(directory, manifest, store, encoder, device)
            col._dtype = dtype
            col._backend_options = {"qdrant_url": qdrant_url, "qdrant_api_key": qdrant_api_key}
            col._load_index()
            col.reconcile()
        except BaseException:
            store.close()
            raise
        return col

    def close(self) -> None:
        self._release_lock()
        if self._index is not None and hasattr(self._index, "close"):
            self._index.close()
        self.store.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    # ------------------------------------------------------------- properties
    @property
    def index_dir(self) -> Path:
        return self.directory / str(self.manifest.index.get("dir", "index"))

    @property
    def backend(self) -> str:
        """``local`` (index files in the directory) or ``qdrant`` (vectors in a Qdrant collection)."""
        return backends.backend_of(self.manifest.index)

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def dim(self) -> int:
        return int(self.manifest.encoder["dim"])

    @property
    def index(self) -> VectorIndex:
        """The vector index (:class:`indexes.SingleVectorIndex` or :class:`indexes.MultiVectorIndex`)."""
        return self._index

    @property
    def encoder(self) -> Encoder:
        """The collection's encoder, loaded on first use from the manifest settings."""
        if self._encoder is None:
            self._encoder = load_encoder_from_settings(self.manifest.encoder, device=self.device, dtype=self._dtype)
        return self._encoder

    # ------------------------------------------------------------------ index
    def _new_index(self) -> VectorIndex:
        from indexes import IndexInputError, MultiVectorIndex, SingleVectorIndex

        cfg = self.manifest.index
        if self.backend == backends.QDRANT:
            return backends.new_qdrant_index(self)
        try:
            if cfg["type"] == "maxsim":
                params = dict(cfg.get("params", {}))
                unknown = sorted(set(params) - set(MAXSIM_PARAMS))
                if unknown:
                    raise IndexInputError(
                        f"unknown maxsim index parameter(s) {', '.join(unknown)}; "
                        f"choose from {', '.join(MAXSIM_PARAMS)}"
                    )
                return MultiVectorIndex(
                    self.dim, device=self._index_device, pool_factor=cfg.get("pool_factor"), **params
                )
            return SingleVectorIndex(
                self.dim, index_type=cfg["type"], device=self._index_device, **cfg.get("params", {})
            )
        except IndexInputError as exc:
            raise CollectionInputError(f"bad index option: {exc}") from None

    def _load_index(self) -> None:
        import indexes

        if self.backend == backends.QDRANT:
            self._index = backends.load_qdrant_index(self)
            return
        # one class only: a single-vector collection does not import the MaxSim (torch) code
        name = "MultiVectorIndex" if self.manifest.index["type"] == "maxsim" else "SingleVectorIndex"
        try:
            self._index = getattr(indexes, name).load(self.index_dir, device=self._index_device)
        except (OSError, ValueError) as exc:
            raise CollectionError(f"the vector index of {self.directory} cannot be loaded: {exc}") from exc

    def update_index_options(
        self, *, index: str | None = "auto", index_params: dict[str, Any] | None = None, pool_factor: int | None = None
    ) -> dict[str, Any]:
        """Apply index options to this existing collection where that is safe; refuse the rest.

        Search-time parameters (:data:`SEARCH_TIME_PARAMS`: ``ef_search``, ``nprobe``,
        ``refine_factor``, ``brute_force_max``) are applied and saved with the collection.
        The index type (``index``; ``"auto"``/``None``: keep), the build parameters (``hnsw_m``,
        ``nlist``, ``pq_m``...) and ``pool_factor`` are fixed when the collection is created:
        a different value raises :class:`CollectionInputError` saying what the collection was
        built with (the same value is accepted). Returns the parameters that changed.
        """
        cfg = self.manifest.index
        built = str(cfg["type"])
        if index not in (None, "auto") and index != built:
            raise CollectionInputError(
                f"this collection was built with a {built!r} index; the index type is fixed at creation "
                f"(index {index!r} needs a new collection)"
            )
        if pool_factor is not None and pool_factor != cfg.get("pool_factor"):
            raise CollectionInputError(
                f"this collection was built with pool_factor={cfg.get('pool_factor')}; its stored vectors were "
                f"pooled that way (pool_factor={pool_factor} needs a new collection)"
            )
        tunable = SEARCH_TIME_PARAMS.get(built, ())
        built_options = getattr(self._index, "options", None)  # every option of a maxsim index
        current = {
            **(built_options if isinstance(built_options, dict) else {}),
            **cfg.get("params", {}),
            **dict(getattr(self._index, "params", {}) or {}),
        }
        changes: dict[str, Any] = {}
        for key, value in (index_params or {}).items():
            if key in tunable and key not in current:  # e.g. nprobe on a maxsim index without IVF-PQ codes
                raise CollectionInputError(
                    f"this collection's {built!r} index has no parameter {key!r} with the options it was built with"
                )
            if key in tunable:
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise CollectionInputError(f"index parameter {key} must be a positive integer, got {value!r}")
                if current.get(key) != value:
                    changes[key] = value
            elif key in current and current[key] == value:
                continue
            else:
                was = f"{key}={current[key]}" if key in current else f"no parameter {key!r}"
                can = f"only {', '.join(tunable)} can change" if tunable else "none of its parameters can change"
                raise CollectionInputError(
                    f"this collection was built with a {built!r} index with {was}; {key}={value} needs a new "
                    f"collection ({can} on an existing one)"
                )
        if changes:
            self._write_lock()
            try:
                params = getattr(self._index, "params", None)
                if isinstance(params, dict):
                    params.update(changes)
                cfg["params"] = {**cfg.get("params", {}), **changes}
                self._index.save(self.index_dir)
                self.manifest.write(self.directory)
            finally:
                self._release_lock()
            logger.info("index parameters of %s updated: %s", self.directory, changes)
        return changes

    # --------------------------------------------------------------- locking
    def _acquire_lock(self, wait: bool = False) -> bool:
        if self._lock_fh is not None:
            return True
        fh = open(self.directory / ".lock", "a+")  # noqa: SIM115 - held until _release_lock
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            fh.close()
            return False
        self._lock_fh = fh
        return True

    def _release_lock(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def _write_lock(self) -> None:
        if not self._acquire_lock():
            raise CollectionError(f"another process is writing to {self.directory}; wait for it to finish")

    # -------------------------------------------------------------- recovery
    def reconcile(self) -> dict[str, int]:
        """Make the index and SQLite agree after an interrupted run (no-op when they do).

        * documents left ``removing`` are removed;
        * vectors whose page is not ``stored`` are dropped (orphans of a killed run);
        * ``pending`` page rows are dropped (their documents stay ``indexing`` and are resumed);
        * pages marked ``stored`` whose vectors are missing are marked for re-indexing.
        Skipped (returns ``{}``) while another process holds the write lock. Qdrant-backed
        collections: see :func:`dse.collection.backends.reconcile_qdrant`.
        """
        if self.backend == backends.QDRANT:
            return backends.reconcile_qdrant(self, repair=False)
        if not self._acquire_lock():
            return {}
        try:
            removing = [d.id for d in self.store.documents(status="removing")]
            if removing:
                self._remove_keys(removing)
            stored = self.store.stored_page_ids()
            in_index = {int(i) for i in np.asarray(self._index.ids).tolist()}
            orphans = sorted(in_index - stored)
            lost = sorted(stored - in_index)
            if orphans:
                self._index.remove(orphans)
                self._index.save(self.index_dir)
            dropped = self.store.delete_pending_pages()
            if lost:
                logger.warning("%d stored pages have no vectors; their documents will be re-indexed", len(lost))
                affected = {r.doc_id for r in self.store.pages(lost).values()}
                self.store.delete_pages(lost)
                self.store.set_document_status(
                    [d.id for d in self.store.documents() if d.doc_id in affected], "indexing"
                )
            if orphans or dropped or lost or removing:
                logger.info(
                    "recovered %s: %d orphan vectors dropped, %d pending pages dropped, %d lost pages, "
                    "%d removals finished",
                    self.directory,
                    len(orphans),
                    dropped,
                    len(lost),
                    len(removing),
                )
            return {
                "orphan_vectors": len(orphans),
                "pending_pages": dropped,
                "lost_pages": len(lost),
                "removed_documents": len(removing),
            }
        finally:
            self._release_lock()

    # ------------------------------------------------------------- indexing
    def add(
        self,
        sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        *,
        meta: dict[str, Any] | None = None,
        batch_size: int = 4,
        commit_every: int = 64,
        render_settings: Any = None,
        sidecars: bool = True,
        progress: bool = True,
        ray: Any = None,
    ) -> IndexReport:
        """Render, encode and store ``sources`` (files, directories, globs, URLs).

        Unchanged sources (same content hash) are skipped, changed ones replaced, interrupted
        ones resumed. Failed sources are reported in the returned :class:`IndexReport` and never
        abort the job; files of unsupported types met in directories are listed in its ``skipped``.

        Metadata is kept across runs: a document's stored metadata stays as it is unless this call
        changes it. The keys of its ``<file>.meta.json`` sidecar (when ``sidecars``), then those of
        ``meta``, are merged over the stored ones (later wins); a ``None`` value (``null`` in a
        sidecar) deletes that key. This holds for unchanged, changed (re-rendered) and new
        documents alike; an unchanged document whose metadata changes is updated without
        re-encoding (``metadata_updated`` in the report).

        ``ray`` spreads rendering and encoding over a Ray cluster (the ``ray`` extra; see
        :mod:`dse.collection.ray_ingest`): ``"auto"`` (the cluster in ``$RAY_ADDRESS`` or running
        on this machine, else a new local one), a cluster address, or a
        :class:`~dse.collection.ray_ingest.RaySettings`. This process stays the only writer: the
        result is the same as without ``ray``.
        """
        if isinstance(sources, (str, os.PathLike)):
            sources = [sources]
        ray_settings = None
        if ray is not None:
            from dse.collection.ray_ingest import RaySettings

            ray_settings = RaySettings.coerce(ray)  # checks the extra: before taking the lock
        if render_settings is None:
            from renderers import RenderSettings

            render_settings = RenderSettings()
        self._write_lock()
        try:
            if self.backend == backends.QDRANT:
                backends.reconcile_qdrant(self, repair=True)
            ingest = Ingestor(
                self,
                batch_size=batch_size,
                commit_every=commit_every,
                progress=progress,
                render_settings=render_settings,
                meta=meta,
                sidecars=sidecars,
            )
            if ray_settings is not None:
                from dse.collection.ray_ingest import run_on_ray

                return run_on_ray(ingest, list(sources), ray_settings)
            return ingest.run(list(sources))
        finally:
            self._release_lock()

    def remove(self, keys: str | Iterable[str]) -> int:
        """Delete documents (by doc id or source path/URL), their pages, images and vectors.

        Returns the number of documents removed. Unknown keys raise :class:`CollectionInputError`
        (naming them all) before anything is removed.
        """
        if isinstance(keys, str):
            keys = [keys]
        docs = []
        unknown = []
        for key in keys:
            found = self.store.find_documents(key)
            if not found and Path(key).expanduser().exists():
                found = self.store.find_documents(str(Path(key).expanduser().resolve()))
            if not found:
                unknown.append(key)
            docs += found
        if unknown:
            raise CollectionInputError(
                f"no document {', '.join(map(repr, unknown))} in {self.directory} (give a doc id or a source "
                "path/URL, as `dse list` shows them); nothing was removed"
            )
        self._write_lock()
        try:
            self._remove_keys([d.id for d in docs])
        finally:
            self._release_lock()
        return len(docs)

    def _update_meta(self, key: int, meta: dict[str, Any]) -> None:
        """Replace a document's metadata (in the vector backend's payload first, then SQLite)."""
        backends.update_meta(self, key, meta)

    def _remove_keys(self, keys: Sequence[int]) -> None:
        """Crash-safe removal: mark ``removing``, drop vectors (saved), then rows and images."""
        if not keys:
            return
        doc_ids = self.store.doc_ids(keys)
        self.store.set_document_status(keys, "removing")
        crash_point("after_mark_removing")
        page_ids = self.store.page_ids_of(keys)
        if page_ids:
            self._index.remove(page_ids)
            self._index.save(self.index_dir)
        crash_point("after_remove_vectors")
        self.store.delete_documents(keys)
        for doc_id in doc_ids.values():
            shutil.rmtree(self.directory / "images" / doc_id, ignore_errors=True)

    # --------------------------------------------------------------- search
    def search(
        self,
        text: str | None = None,
        image: QueryImage | None = None,
        *,
        k: int = 10,
        where: Any = None,
        fusion: str | None = None,
        exact: bool = False,
    ) -> list[Hit]:
        """Rank pages for a text, image or fused (text + image) query.

        ``fusion=None`` encodes text and image together in one pass (the encoder's fused query);
        ``fusion="rrf"`` ranks text-only and image-only queries separately and merges them by
        reciprocal rank fusion (it needs both a text and an image). ``where`` filters on document
        metadata: ``"key=value"``, ``"key!=value"``, ``"year>=2020"``, ``"team=in:a,b"``, a list of
        such strings (AND), or a mapping ``{key: value}`` (equality); see
        :mod:`dse.collection.filters`. ``exact=True`` scores every (matching) page on a collection
        with an approximate ``maxsim`` index (``candidates="muvera"``); it changes nothing on exact
        ones. Bad requests raise :class:`CollectionInputError`.
        """
        return self.search_many([text], [image], k=k, where=where, fusion=fusion, exact=exact)[0]

    def search_many(
        self,
        texts: Sequence[str | None] | None = None,
        images: Sequence[QueryImage | None] | None = None,
        *,
        k: int = 10,
        where: Any = None,
        fusion: str | None = None,
        batch_size: int = 8,
        exact: bool = False,
    ) -> list[list[Hit]]:
        """Rank pages for many queries at once: the ``i``-th query is ``texts[i]`` and/or ``images[i]``
        (either list may be omitted; ``None`` entries mean "no text" / "no image").

        Queries of one kind (text, image, fused) are encoded together in batches of ``batch_size``
        and searched in one index call, which is much faster than one :meth:`search` per query;
        the hits equal :meth:`search`'s. Every query is validated before anything is encoded
        (a :class:`CollectionInputError` names the bad one). ``k``, ``where`` and ``fusion`` as
        in :meth:`search`; ``exact`` too. Returns one hit list per query, in order.
        """
        n = len(texts) if texts is not None else len(images or [])
        if texts is not None and images is not None and len(texts) != len(images):
            raise CollectionInputError(f"got {len(texts)} query texts but {len(images)} query images")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise CollectionInputError(f"k must be at least 1, got {k!r}")
        if fusion not in (None, "rrf"):
            raise CollectionInputError(f"unknown fusion {fusion!r}; use 'rrf' or none")
        queries: list[tuple[str | None, QueryImage | None]] = []
        for i in range(n):
            where_ = f"query {i + 1}: " if n > 1 else ""
            text = texts[i] if texts is not None else None
            image = images[i] if images is not None else None
            try:
                queries.append(_check_query(text, image, fusion))
            except CollectionInputError as exc:
                raise CollectionInputError(f"{where_}{exc}") from None
        loaded: list[tuple[str | None, Image.Image | None]] = []
        for i, (text, image) in enumerate(queries):
            try:
                loaded.append((text, _load_query_image(image) if image is not None else None))
            except CollectionInputError as exc:
                raise CollectionInputError(f"query {i + 1}: {exc}" if n > 1 else str(exc)) from None
        self._check_exact(exact)
        allowed = self._allowed_ids(where)
        if n == 0 or (allowed is not None and allowed.size == 0):
            return [[] for _ in range(n)]
        return [self._hits(r) for r in self._rank(loaded, k, allowed, fusion, batch_size, where, exact)]

    def _rank(
        self,
        queries: Sequence[tuple[str | None, Image.Image | None]],
        k: int,
        allowed: np.ndarray | None,
        fusion: str | None,
        batch_size: int,
        where: Any = None,
        exact: bool = False,
    ) -> list[list[tuple[int, float]]]:
        """Encode validated queries grouped by kind, search each group once, fuse when asked."""
        groups: dict[str, list[int]] = {"text": [], "image": [], "fused": []}
        for i, (text, img) in enumerate(queries):
            if text is not None and img is not None and fusion is None:
                groups["fused"].append(i)
                continue
            if text is not None:
                groups["text"].append(i)
            if img is not None:
                groups["image"].append(i)
        depth = max(100, 4 * k) if fusion == "rrf" else k
        found: dict[str, dict[int, list[tuple[int, float]]]] = {}
        for kind, members in groups.items():
            if not members:
                continue
            texts = [queries[i][0] for i in members] if kind in ("text", "fused") else None
            images = [queries[i][1] for i in members] if kind in ("image", "fused") else None
            vectors = self.encoder.encode_queries(texts=texts, images=images, batch_size=batch_size)  # type: ignore[arg-type]
            found[kind] = dict(zip(members, self._search_encoded(vectors, depth, allowed, where, exact)))
        out: list[list[tuple[int, float]]] = []
        for i in range(len(queries)):
            if i in found.get("fused", {}):
                out.append(found["fused"][i])
            elif fusion == "rrf":
                out.append(reciprocal_rank_fusion([found["text"][i], found["image"][i]])[:k])
            else:
                out.append(found["text"][i] if i in found.get("text", {}) else found["image"][i])
        return out

    def search_vectors(self, queries: Any, k: int = 10, *, where: Any = None, exact: bool = False) -> list[list[Hit]]:
        """Search with already-encoded queries (``(q, dim)`` array or a list of ``(t, dim)`` arrays)."""
        self._check_exact(exact)
        return [self._hits(r) for r in self._search_encoded(queries, k, self._allowed_ids(where), where, exact)]

    def _check_exact(self, exact: bool) -> None:
        """``exact=True`` needs an index that can score every page: maxsim, or flat (always exact)."""
        if exact and self.manifest.index["type"] not in ("maxsim", "flat"):
            raise CollectionInputError(
                f"exact search applies to maxsim (and flat) collections; this one has a "
                f"{self.manifest.index['type']!r} index"
            )

    def _allowed_ids(self, where: Any) -> np.ndarray | None:
        """Page ids whose document metadata matches ``where`` (``None``: no filter, or Qdrant filters itself)."""
        conditions = parse_where(where)  # parsed (and refused when malformed) for every backend
        if not conditions or self.backend == backends.QDRANT:
            return None
        return np.asarray(self.store.filter_page_ids(conditions), np.int64)

    def _search_encoded(
        self, queries: Any, k: int, allowed: np.ndarray | None, where: Any = None, exact: bool = False
    ) -> list[list[tuple[int, float]]]:
        if self.backend == backends.QDRANT:
            return backends.qdrant_search(self._index, queries, k, allowed, where)
        if len(self._index) == 0:
            return [[] for _ in range(len(queries))]
        if exact and self.manifest.index["type"] == "maxsim":
            return self._index.search(queries, k, allowed_ids=allowed, exact=True)  # type: ignore[call-arg]
        return self._index.search(queries, k, allowed_ids=allowed)

    def _hits(self, ranked: Sequence[tuple[int, float]]) -> list[Hit]:
        rows = self.store.pages([pid for pid, _ in ranked])
        hits: list[Hit] = []
        for pid, score in ranked:
            row = rows.get(int(pid))
            if row is None:  # a page removed by a concurrent writer
                continue
            hits.append(
                Hit(
                    rank=len(hits) + 1,
                    score=float(score),
                    source=row.source,
                    page=row.page,
                    image_path=str(self.directory / row.image),
                    doc_id=row.doc_id,
                    page_id=row.id,
                    title=row.title,
                    meta=row.meta,
                )
            )
        return hits

    # ------------------------------------------------------- documents, compact
    def documents(self, *, where: Any = None, complete_only: bool = False) -> list[Document]:
        """The collection's documents in indexing order, with their stored page counts and metadata.

        ``where`` filters on metadata as in :meth:`search`; ``complete_only`` leaves out documents
        of an interrupted job (status ``indexing``, resumed by the next :meth:`add`).
        """
        rows = self.store.documents(status="complete" if complete_only else None, where=parse_where(where))
        counts = self.store.stored_page_counts()
        return [
            Document(r.doc_id, r.source, r.title, counts.get(r.id, 0), r.meta, r.status)
            for r in rows
            if r.status != "removing"
        ]

    def compact(self) -> dict[str, int]:
        """Reclaim the disk space of removed pages: the index drops their vectors for good (one
        rewritten segment instead of segments plus tombstones) and the metadata database is vacuumed.

        Crash-safe: the index is saved the usual way (new files fsynced, then its manifest
        atomically replaced; a kill at any point leaves the old or the new index, both complete).
        Search results are unchanged. Returns ``{"bytes_before", "bytes_after"}`` of the index and
        metadata files.
        """

        def size() -> int:
            files = [*self.index_dir.rglob("*"), *self.directory.glob("meta.sqlite*")]
            return sum(f.stat().st_size for f in files if f.is_file())

        self._write_lock()
        try:
            before = size()
            self._index.compact()
            crash_point("after_index_compact")
            self._index.save(self.index_dir)
            crash_point("after_compact_save")
            self.store.vacuum()
            after = size()
        finally:
            self._release_lock()
        logger.info("compacted %s: %d -> %d bytes", self.directory, before, after)
        return {"bytes_before": before, "bytes_after": after}

    # ---------------------------------------------------------------- stats
    def stats(self) -> dict[str, Any]:
        """Documents, pages, vectors and bytes on disk (images, index, metadata, total)."""
        counts = self.store.counts()
        vectors = int(self._index.num_vectors)

        def du(path: Path) -> int:
            if path.is_file():
                return path.stat().st_size
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0

        sizes = {
            "images": du(self.directory / "images"),
            "index": du(self.index_dir),
            "metadata": sum(du(p) for p in self.directory.glob("meta.sqlite*")),
        }
        sizes["total"] = du(self.directory)
        extra: dict[str, Any] = {"backend": self.backend}
        if self.backend == backends.QDRANT:
            extra["qdrant"] = backends.qdrant_stats(self)
        return {
            **extra,
            "directory": str(self.directory),
            **counts,
            "vectors": vectors,
            "kind": self.kind,
            "index": self.manifest.index["type"],
            "family": self.manifest.encoder.get("family"),
            "model": self.manifest.encoder.get("model"),
            "dim": self.dim,
            "bytes": sizes,
        }


def _load_query_image(image: QueryImage) -> Image.Image:
    """A query image as pages are indexed: first frame, EXIF orientation, RGB, the 100 MP guard
    (:func:`renderers.load_image`)."""
    if isinstance(image, Image.Image):
        return image
    from renderers import RenderError, SourceNotFoundError, load_image

    try:
        return load_image(image)
    except SourceNotFoundError:
        raise CollectionInputError(f"query image not found: {Path(image)}") from None
    except RenderError as exc:
        raise CollectionInputError(f"cannot read query image {Path(image)}: {exc}") from None


def _check_query(text: Any, image: QueryImage | None, fusion: str | None) -> tuple[str | None, QueryImage | None]:
    """One query, normalised: a blank text next to an image is an image query."""
    if text is not None and not isinstance(text, str):
        raise CollectionInputError(f"the query text must be a string, got {type(text).__name__}")
    if text is not None and not text.strip():
        if image is None:
            raise CollectionInputError("empty query: the text is blank")
        text = None
    if text is None and image is None:
        raise CollectionInputError("empty query: give a text, an image, or both")
    if fusion == "rrf" and (text is None or image is None):
        raise CollectionInputError(
            "fusion 'rrf' merges a text-only and an image-only ranking: give both a text and an image"
        )
    return text, image


def _remove_created(directory: Path, created: bool) -> None:
    """Undo a failed :meth:`Collection.create`: remove the directory it made, or empty the one it filled."""
    if created:
        shutil.rmtree(directory, ignore_errors=True)
        return
    for child in directory.iterdir() if directory.is_dir() else []:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _check_fixed_options(built: dict[str, Any], **asked: Any) -> None:
    """Refuse encoder options that differ from the ones the collection was built with."""
    for key in _FIXED_ENCODER_OPTIONS:
        value = asked.get(key)
        if value is None:
            continue
        have = built.get(key)
        if key == "adapter":
            value = _resolve_model_name(str(value))
        if value != have:
            raise CollectionInputError(
                f"this collection was built with {key}={have!r} (the {describe_encoder(built)}); {key}={value!r} "
                "cannot change on an existing collection: its vectors would not be comparable (use a new collection)"
            )


def _load_model_for(built: dict[str, Any], model: str, *, device: str, dtype: Any) -> Encoder:
    """Load ``model`` with a collection's encoder settings, naming both models on a mismatch."""
    from dse.encoders.detection import detect_family
    from dse.encoders.sources import resolve_model

    try:
        asked = detect_family(resolve_model(str(model)))
    except EncoderError:
        asked = None  # the load below reports why the model cannot be used
    if asked is not None and built.get("family") and asked != built["family"]:
        raise CollectionInputError(
            f"this collection was built with the {describe_encoder(built)}; model {model!r} is a {asked} model: "
            "refusing to mix vectors (leave the model out to use the collection's own, or index into a new collection)"
        )
    try:
        return load_encoder_from_settings({**built, "model": model, "adapter": None}, device=device, dtype=dtype)
    except EncoderError as exc:
        raise EncoderError(
            f"cannot use model {model!r} for this collection (built with the {describe_encoder(built)}): {exc}"
        ) from None
