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
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dse.collection import backends
from dse.collection.crashpoints import crash_point
from dse.collection.fusion import reciprocal_rank_fusion
from dse.collection.ingest import IndexReport, Ingestor
from dse.collection.manifest import MANIFEST_NAME, CollectionError, Manifest, check_same_encoder
from dse.collection.store import MetadataStore
from dse.encoders.base import Encoder

logger = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "hnsw", "ivfpq", "maxsim")


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


def _resolve_model_name(model: str) -> str:
    """Local directories are recorded as absolute paths, hub ids as given."""
    p = Path(model).expanduser()
    return str(p.resolve()) if p.exists() else model


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
        self._index: Any = None
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
        instead, after checking that it was built with the same encoder.

        ``backend="qdrant"`` keeps the vectors in a Qdrant collection (see
        :mod:`dse.collection.backends`): ``qdrant_url`` (``http(s)://...``, or ``path:DIR`` for
        qdrant-client's local mode, tests only; default ``$QDRANT_URL``), ``qdrant_api_key`` (default
        ``$QDRANT_API_KEY``; never stored), ``qdrant_collection`` (default derived from the directory)
        and ``index_params`` (:class:`indexes.qdrant.Schema` settings: ``n_candidates``, ``prefetch``,
        ``quantization``, ``shard_number``...).
        """
        directory = Path(directory)
        encoder = (
            model
            if isinstance(model, Encoder)
            else Encoder.load(model, family=family, device=device, dim=dim, **encoder_kwargs)
        )
        if (directory / MANIFEST_NAME).exists():
            if not exist_ok:
                raise CollectionError(
                    f"a collection already exists at {directory} (use Collection.open, or "
                    "exist_ok=True to reuse it with the same encoder)"
                )
            return cls.open(
                directory, encoder=encoder, device=device, qdrant_url=qdrant_url, qdrant_api_key=qdrant_api_key
            )
        if directory.exists() and any(directory.iterdir()):
            raise CollectionError(f"{directory} exists and is not empty; choose a new directory for the collection")
        settings = dict(encoder.settings)
        settings["model"] = _resolve_model_name(str(settings.get("model")))
        if backend not in backends.BACKENDS:
            raise CollectionError(f"unknown backend {backend!r}; choose one of {', '.join(backends.BACKENDS)}")
        if index == "auto":
            index = backends.QDRANT if backend == backends.QDRANT else "flat" if encoder.kind == "single" else "maxsim"
        if backend == backends.QDRANT and index != backends.QDRANT:
            raise CollectionError(f"the qdrant backend has its own index; index={index!r} applies to local collections")
        if index == backends.QDRANT and backend != backends.QDRANT:
            raise CollectionError("index='qdrant' needs backend='qdrant' and a qdrant_url")
        if index not in INDEX_TYPES and backend != backends.QDRANT:
            raise CollectionError(f"unknown index type {index!r}; choose one of {', '.join(INDEX_TYPES)}")
        if backend != backends.QDRANT and (index == "maxsim") != (encoder.kind == "multi"):
            raise CollectionError(
                f"index {index!r} does not fit a {encoder.kind}-vector model "
                f"({'use maxsim' if encoder.kind == 'multi' else 'use flat, hnsw or ivfpq'})"
            )
        if pool_factor is not None and encoder.kind != "multi":
            raise CollectionError("pool_factor applies to multi-vector models only")
        index_cfg: dict[str, Any] = {"type": index, "params": dict(index_params or {}), "pool_factor": pool_factor}
        if backend == backends.QDRANT:
            index_cfg = backends.qdrant_index_config(
                directory, url=qdrant_url, collection=qdrant_collection, params=index_params, pool_factor=pool_factor
            )
        made_dir = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True)
        manifest = Manifest(encoder=settings, index=index_cfg)
        store = MetadataStore(directory / "meta.sqlite")
        col = cls(directory, manifest, store, encoder, device)
        col._backend_options = {"qdrant_url": qdrant_url, "qdrant_api_key": qdrant_api_key}
        try:
            col._index = col._new_index()
            col._index.save(col.index_dir)
        except BaseException:  # e.g. Qdrant unreachable: leave no half-made directory behind
            col.close()
            if made_dir:
                shutil.rmtree(directory, ignore_errors=True)
            else:
                for leftover in directory.iterdir():
                    shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
            raise
        manifest.write(directory)  # written last: a directory without it is not a collection
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
    ) -> Collection:
        """Open an existing collection. The encoder is loaded lazily from the manifest's settings, or
        taken from ``encoder`` / ``model`` after checking it is the one the collection was built with.

        Qdrant-backed collections connect to the recorded URL (overridden by ``qdrant_url`` or
        ``$DSE_QDRANT_URL``) with ``qdrant_api_key`` (default ``$QDRANT_API_KEY``)."""
        directory = Path(directory)
        manifest = Manifest.read(directory)
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
        if model is not None and encoder is None:
            enc = manifest.encoder
            encoder = Encoder.load(
                model,
                device=device,
                dim=enc.get("dim"),
                max_pixels=enc.get("max_pixels"),
                min_pixels=enc.get("min_pixels"),
            )
        if encoder is not None:
            settings = dict(encoder.settings)
            settings["model"] = _resolve_model_name(str(settings.get("model")))
            check_same_encoder(manifest.encoder, settings)
        col = cls(directory, manifest, store, encoder, device)
        col._backend_options = {"qdrant_url": qdrant_url, "qdrant_api_key": qdrant_api_key}
        try:
            col._load_index()
            col.reconcile()
        except BaseException:
            col.close()
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
    def index(self) -> Any:
        return self._index

    @property
    def encoder(self) -> Encoder:
        """The collection's encoder, loaded on first use from the manifest settings."""
        if self._encoder is None:
            enc = self.manifest.encoder
            options = {"query_instruction": enc["query_instruction"]} if enc.get("query_instruction") else {}
            self._encoder = Encoder.load(
                enc["model"],
                family=enc.get("family"),
                device=self.device,
                dim=enc.get("dim"),
                max_pixels=enc.get("max_pixels"),
                min_pixels=enc.get("min_pixels"),
                adapter=enc.get("adapter"),
                **options,
            )
        return self._encoder

    # ------------------------------------------------------------------ index
    def _new_index(self) -> Any:
        from indexes import MultiVectorIndex, SingleVectorIndex

        cfg = self.manifest.index
        if self.backend == backends.QDRANT:
            return backends.new_qdrant_index(self)
        if cfg["type"] == "maxsim":
            return MultiVectorIndex(self.dim, device=self.device, pool_factor=cfg.get("pool_factor"))
        return SingleVectorIndex(self.dim, index_type=cfg["type"], device=self.device, **cfg.get("params", {}))

    def _load_index(self) -> None:
        from indexes import MultiVectorIndex, SingleVectorIndex

        if self.backend == backends.QDRANT:
            self._index = backends.load_qdrant_index(self)
            return
        cls = MultiVectorIndex if self.manifest.index["type"] == "maxsim" else SingleVectorIndex
        try:
            self._index = cls.load(self.index_dir, device=self.device)
        except (OSError, ValueError) as exc:
            raise CollectionError(f"the vector index of {self.directory} cannot be loaded: {exc}") from exc

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
    ) -> IndexReport:
        """Render, encode and store ``sources`` (files, directories, globs, URLs).

        Unchanged sources (same content hash) are skipped, changed ones replaced, interrupted
        ones resumed. Failed sources are reported in the returned :class:`IndexReport` and never
        abort the job. ``meta`` is attached to every document (merged over a ``<file>.meta.json``
        sidecar when ``sidecars``).
        """
        if isinstance(sources, (str, os.PathLike)):
            sources = [sources]
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
            return ingest.run(list(sources))
        finally:
            self._release_lock()

    def remove(self, keys: str | Iterable[str]) -> int:
        """Delete documents (by doc id or source path/URL), their pages, images and vectors.

        Returns the number of documents removed. Unknown keys raise :class:`CollectionError`.
        """
        if isinstance(keys, str):
            keys = [keys]
        docs = []
        for key in keys:
            found = self.store.find_documents(key)
            if not found and Path(key).expanduser().exists():
                found = self.store.find_documents(str(Path(key).expanduser().resolve()))
            if not found:
                raise CollectionError(f"no document {key!r} in {self.directory} (give a doc id or a source path/URL)")
            docs += found
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
        image: str | os.PathLike[str] | Image.Image | None = None,
        *,
        k: int = 10,
        where: dict[str, Any] | None = None,
        fusion: str | None = None,
    ) -> list[Hit]:
        """Rank pages for a text, image or fused (text + image) query.

        ``fusion=None`` encodes text and image together in one pass (the encoder's fused query);
        ``fusion="rrf"`` ranks text-only and image-only queries separately and merges them by
        reciprocal rank fusion. ``where`` keeps documents whose metadata equals every ``key: value``.
        """
        if text is not None and not str(text).strip():
            if image is None:
                raise CollectionError("empty query: the text is blank")
            text = None  # a blank caption next to an image: an image query
        if text is None and image is None:
            raise CollectionError("empty query: give a text, an image, or both")
        if k < 1:
            raise CollectionError(f"k must be at least 1, got {k}")
        if fusion not in (None, "rrf"):
            raise CollectionError(f"unknown fusion {fusion!r}; use 'rrf' or none")
        img = _load_query_image(image) if image is not None else None
        allowed = self._allowed_ids(where)
        if allowed is not None and allowed.size == 0:
            return []
        if fusion == "rrf" and text is not None and img is not None:
            depth = max(100, 4 * k)
            text_rank = self._search_encoded(self.encoder.encode_queries(texts=[text]), depth, allowed, where)[0]
            image_rank = self._search_encoded(self.encoder.encode_queries(images=[img]), depth, allowed, where)[0]
            ranked = reciprocal_rank_fusion([text_rank, image_rank])[:k]
        else:
            q = self.encoder.encode_queries(
                texts=[text] if text is not None else None, images=[img] if img is not None else None
            )
            ranked = self._search_encoded(q, k, allowed, where)[0]
        return self._hits(ranked)

    def search_vectors(self, queries: Any, k: int = 10, *, where: dict[str, Any] | None = None) -> list[list[Hit]]:
        """Search with already-encoded queries (``(q, dim)`` array or a list of ``(t, dim)`` arrays)."""
        return [self._hits(r) for r in self._search_encoded(queries, k, self._allowed_ids(where), where)]

    def ask(self, question: str, *, k: int = 3, generator: Any = None, where: dict[str, Any] | None = None) -> Any:
        """Visual RAG: answer ``question`` from the top-``k`` pages (see :func:`dse.rag.answer_question`).

        ``generator``: a :class:`dse.rag.Generator`, or a model name (hub id or local directory; default
        ``dse.rag.DEFAULT_GENERATOR``, Qwen/Qwen2-VL-2B-Instruct) loaded on the collection's device on
        first use and kept on this object for later calls. Returns a :class:`dse.rag.Answer`.
        """
        from dse.rag import DEFAULT_GENERATOR, Generator, answer_question, validate_request

        validate_request(question, k)  # before loading a model for a request that cannot succeed
        if not isinstance(generator, Generator):
            cache: dict[str, Generator] = self.__dict__.setdefault("_generators", {})
            name = DEFAULT_GENERATOR if generator is None else str(generator)
            if name not in cache:
                cache[name] = Generator.load(name, device=self.device)
            generator = cache[name]
        return answer_question(self, question, generator=generator, k=k, where=where)

    def _allowed_ids(self, where: dict[str, Any] | None) -> np.ndarray | None:
        """Page ids whose document metadata matches ``where`` (``None``: no filter, or Qdrant filters itself)."""
        if not where or self.backend == backends.QDRANT:
            return None
        return np.asarray(self.store.filter_page_ids({str(a): str(b) for a, b in where.items()}), np.int64)

    def _search_encoded(
        self, queries: Any, k: int, allowed: np.ndarray | None, where: dict[str, Any] | None = None
    ) -> list[list[tuple[int, float]]]:
        if self.backend == backends.QDRANT:
            return backends.qdrant_search(self._index, queries, k, allowed, where)
        if len(self._index) == 0:
            return [[] for _ in range(len(queries))]
        return self._index.search(queries, k, allowed_ids=allowed)

    def _hits(self, ranked: Sequence[tuple[int, float]]) -> list[Hit]:
        rows = self.store.pages([pid for pid, _ in ranked])
        hits = []
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

    # ---------------------------------------------------------------- stats
    def stats(self) -> dict[str, Any]:
        """Documents, pages, vectors and bytes on disk (images, index, metadata, total)."""
        counts = self.store.counts()
        index = self._index
        vectors = int(index.num_vectors) if hasattr(index, "num_vectors") else len(index)

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


def _load_query_image(image: str | os.PathLike[str] | Image.Image) -> Image.Image:
    """A query image as pages are indexed: first frame, EXIF orientation, RGB, the 100 MP guard
    (:func:`renderers.load_image`)."""
    if isinstance(image, Image.Image):
        return image
    from renderers import RenderError, SourceNotFoundError, load_image

    try:
        return load_image(image)
    except SourceNotFoundError:
        raise CollectionError(f"query image not found: {Path(image)}") from None
    except RenderError as exc:
        raise CollectionError(f"cannot read query image {Path(image)}: {exc}") from None
