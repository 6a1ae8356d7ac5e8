"""What the HTTP layer serves: the collection, its encoder behind one lock, the query
micro-batcher, the optional answer generator and the similarity-map cache.

Everything here is synchronous and thread-safe; :mod:`dse.server.app` calls it from
worker threads (never on the event loop).

Thread safety:

* the model on its device is used by one thread at a time: the collection is opened with
  a :class:`LockedEncoder` (every ``encode_*`` call holds :attr:`ServerState.encoder_lock`,
  a re-entrant lock), so ``Collection.search`` / ``answer_question`` / the batcher all
  serialise on it (also protecting the tokenizers, which are not safe to share across
  threads), while index searches and SQLite reads run in parallel;
* the collection's SQLite connection is shared (``check_same_thread=False``; Python's
  sqlite3 is built serialised here), and the server only reads it;
* the indexes' ``search`` only reads (MaxSim keeps per-thread scratch buffers);
* the answer generator runs one question at a time (:attr:`ServerState.generator_lock`).

A collection being indexed by another process while it is served is picked up: at most
every ``refresh_interval`` seconds the index manifest's mtime/size is compared and, when it
changed, the collection is reopened (with the already loaded encoder).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dse.collection import Collection, CollectionError, Hit
from dse.encoders.base import Encoder, EncoderError, Vectors
from dse.server.batching import QueryBatcher
from dse.server.limits import Limits, RequestError
from dse.server.schemas import MAX_PAGE_ID
from renderers import RenderError, load_image

logger = logging.getLogger(__name__)


class ServeError(RuntimeError):
    """The server cannot start (e.g. the answer generator cannot be loaded)."""


class LockedEncoder(Encoder):
    """An :class:`Encoder` whose encode calls hold ``lock``; everything else is delegated."""

    def __init__(self, inner: Encoder, lock: threading.RLock) -> None:
        self.inner = inner
        self.lock = lock
        self.family = inner.family
        self.dim = inner.dim

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.inner.kind

    @property
    def settings(self) -> dict[str, Any]:
        return self.inner.settings

    def encode_documents(
        self, images: Sequence[Image.Image], *, batch_size: int = 4, progress: bool = False
    ) -> Vectors:
        with self.lock:
            return self.inner.encode_documents(images, batch_size=batch_size, progress=progress)

    def encode_text_documents(self, texts: Sequence[str], *, batch_size: int = 8, progress: bool = False) -> Vectors:
        with self.lock:
            return self.inner.encode_text_documents(texts, batch_size=batch_size, progress=progress)

    def encode_queries(
        self,
        texts: Sequence[str] | None = None,
        images: Sequence[Image.Image] | None = None,
        *,
        batch_size: int = 8,
        progress: bool = False,
    ) -> Vectors:
        with self.lock:
            return self.inner.encode_queries(texts, images, batch_size=batch_size, progress=progress)

    def __getattr__(self, name: str) -> Any:  # processor, model, device, visual_tokens, ...
        if name == "inner":  # not yet set (copy/unpickle): avoid infinite recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"LockedEncoder({self.inner!r})"


def load_encoder_for(directory: Path, *, device: str, adapter: str | None) -> Encoder:
    """The encoder a collection's manifest describes, optionally with a LoRA ``adapter`` on top."""
    from dse.collection.manifest import Manifest

    enc = Manifest.read(directory).encoder
    options = {"query_instruction": enc["query_instruction"]} if enc.get("query_instruction") else {}
    return Encoder.load(
        enc["model"],
        family=enc.get("family"),
        device=device,
        dim=enc.get("dim"),
        max_pixels=enc.get("max_pixels"),
        min_pixels=enc.get("min_pixels"),
        adapter=adapter if adapter is not None else enc.get("adapter"),
        **options,
    )


def _index_signature(directory: Path) -> tuple[int, int] | None:
    try:
        st = (directory / "index" / "index.json").stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class ServerState:
    """The served collection and the machinery around it (see the module doc)."""

    def __init__(
        self,
        collection_dir: str | Path,
        *,
        device: str = "auto",
        adapter: str | None = None,
        generator: Any = None,
        micro_batch: bool = True,
        batch_window_ms: float = 5.0,
        max_batch: int = 32,
        limits: Limits | None = None,
        refresh_interval: float = 2.0,
        similarity_cache: int = 16,
        encoder: Encoder | None = None,
        generator_options: dict[str, Any] | None = None,
    ) -> None:
        self.directory = Path(collection_dir)
        self.device = device
        self.limits = limits or Limits()
        self.refresh_interval = refresh_interval
        self.encoder_lock = threading.RLock()
        self.generator_lock = threading.Lock()
        self._reopen_lock = threading.Lock()
        raw = encoder if encoder is not None else load_encoder_for(self.directory, device=device, adapter=adapter)
        self.encoder = LockedEncoder(raw, self.encoder_lock)
        self._signature = _index_signature(self.directory)
        self._collection = Collection.open(self.directory, encoder=self.encoder, device=device)
        self._checked = time.monotonic()
        self.generator = self._load_generator(generator, device, generator_options)
        self.batcher: QueryBatcher | None = None
        if micro_batch:
            self.batcher = QueryBatcher(
                self._encode_texts, search=self._search_group, window_ms=batch_window_ms, max_batch=max_batch
            )
        self._pages_cache: OrderedDict[int, Any] = OrderedDict()
        self._pages_cache_size = similarity_cache
        self._cache_lock = threading.Lock()

    # -------------------------------------------------------------- lifecycle
    @staticmethod
    def _load_generator(generator: Any, device: str, options: dict[str, Any] | None) -> Any:
        if generator is None or not isinstance(generator, (str, Path)):
            return generator
        try:
            from dse.rag import Generator, RAGError
        except ImportError as exc:
            raise ServeError(f"answer mode needs the dse.rag module, which cannot be imported: {exc}") from exc
        try:
            return Generator.load(str(generator), device=device, **(options or {}))
        except RAGError as exc:
            raise ServeError(f"cannot load the generator {str(generator)!r}: {exc}") from exc

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        self._collection.close()

    @property
    def collection(self) -> Collection:
        """The collection, reopened first if its index changed on disk (checked every ``refresh_interval`` s)."""
        if self.refresh_interval > 0 and time.monotonic() - self._checked >= self.refresh_interval:
            self._maybe_reopen()
        return self._collection

    def _maybe_reopen(self) -> None:
        if not self._reopen_lock.acquire(blocking=False):
            return  # another thread is checking
        try:
            self._checked = time.monotonic()
            sig = _index_signature(self.directory)
            if sig is None or sig == self._signature:
                return
            try:
                fresh = Collection.open(self.directory, encoder=self.encoder, device=self.device)
            except CollectionError as exc:
                logger.warning("the collection changed on disk but cannot be reopened yet: %s", exc)
                return
            # the old object stays usable by requests that hold it; its SQLite handle closes when collected
            self._collection = fresh
            self._signature = sig
            self._pages_cache.clear()
            logger.info("reloaded %s: %d pages", self.directory, len(fresh.index))
        finally:
            self._reopen_lock.release()

    # --------------------------------------------------------------- features
    @property
    def kind(self) -> str:
        return self.encoder.kind

    @property
    def answer_enabled(self) -> bool:
        return self.generator is not None

    def info(self) -> dict[str, Any]:
        col = self.collection
        stats = col.stats()
        return {
            "collection": {
                k: stats[k] for k in ("documents", "pages", "vectors", "kind", "index", "family", "model", "dim")
            },
            "features": {
                "answer": self.answer_enabled,
                "similarity": self.similarity_supported(),
                "micro_batch": self.batcher is not None,
                "image_queries": True,
                "fused_queries": True,
            },
            "limits": self.limits.to_dict(),
            "batching": self.batcher.stats.to_dict() if self.batcher is not None else None,
        }

    def similarity_supported(self) -> bool:
        from dse.encoders.similarity import SUPPORTED_FAMILIES

        return self.kind == "multi" and self.encoder.family in SUPPORTED_FAMILIES

    # ----------------------------------------------------------------- search
    def _encode_texts(self, texts: list[str]) -> Vectors:
        """The batcher's encode function: one ``encode_queries`` call for the whole batch."""
        return self.encoder.encode_queries(texts=texts, batch_size=max(1, len(texts)))

    def _search_group(self, vectors: list[Any], k: int, where: dict[str, str] | None) -> list[list[Hit]]:
        """The batcher's search function: queries with the same ``k`` and filters in one index call."""
        queries = np.stack(vectors).astype(np.float32) if self.kind == "single" else list(vectors)
        return self.collection.search_vectors(queries, k, where=where)

    def search(
        self,
        text: str | None,
        image: Image.Image | None,
        *,
        k: int,
        where: dict[str, str] | None,
        fusion: str | None = None,
    ) -> list[Hit]:
        """Blocking search without the batcher (image, fused and late-fused queries; or batching off):
        :meth:`Collection.search`, whose encoder is this server's locked one."""
        return self.collection.search(text, image=image, k=k, where=where, fusion=fusion)

    # ----------------------------------------------------------------- answer
    def answer(self, question: str, *, k: int, where: dict[str, str] | None) -> Any:
        if self.generator is None:
            raise RequestError(
                503,
                "answer mode is not enabled: start the server with --generator MODEL "
                "(a Qwen2-VL / Qwen2.5-VL Instruct model)",
            )
        from dse.rag import NoPagesError, RAGError, answer_question

        try:
            with self.generator_lock:
                return answer_question(self.collection, question, generator=self.generator, k=k, where=where)
        except NoPagesError as exc:
            raise RequestError(404, str(exc)) from exc
        except RAGError as exc:
            raise RequestError(400, str(exc)) from exc

    # ------------------------------------------------------------------ pages
    def page_image_path(self, page_id: int) -> Path:
        """The image file of ``page_id``, looked up in the collection's SQLite store (404 otherwise)."""
        if not 0 <= page_id <= MAX_PAGE_ID:  # beyond SQLite's 64-bit rowids: cannot exist
            raise RequestError(404, f"no page {page_id} in this collection")
        col = self.collection
        row = col.store.pages([int(page_id)]).get(int(page_id))
        if row is None:
            raise RequestError(404, f"no page {page_id} in this collection")
        root = (col.directory / "images").resolve()
        path = (col.directory / row.image).resolve()
        if not path.is_relative_to(root):
            logger.warning("page %d points outside the collection's images (%s); refusing", page_id, row.image)
            raise RequestError(404, f"no image for page {page_id}")
        if not path.is_file():
            raise RequestError(404, f"the image file of page {page_id} is missing from the collection")
        return path

    def page_image(self, page_id: int) -> Image.Image:
        path = self.page_image_path(page_id)
        try:
            return load_image(path)
        except (OSError, RenderError) as exc:
            raise RequestError(500, f"the image file of page {page_id} cannot be read: {exc}") from exc

    # ------------------------------------------------------------- similarity
    def similarity(self, page_id: int, text: str) -> tuple[Any, Image.Image]:
        """``(SimilarityMap, page image)`` of ``text`` over page ``page_id`` (multi-vector collections)."""
        from dse.encoders.similarity import SimilarityError, encode_page_tokens, similarity_map

        if self.kind != "multi":
            raise RequestError(
                400,
                f"similarity maps need a multi-vector (ColPali-family) collection; this one is "
                f"single-vector ({self.encoder.family}: one vector per page, no patches)",
            )
        if not self.similarity_supported():
            raise RequestError(400, f"similarity maps are not supported for {self.encoder.family} collections")
        image = self.page_image(page_id)
        try:
            with self._cache_lock:
                page = self._pages_cache.get(page_id)
                if page is not None:
                    self._pages_cache.move_to_end(page_id)
            if page is None:
                with self.encoder_lock:
                    page = encode_page_tokens(self.encoder, image)
                with self._cache_lock:
                    self._pages_cache[page_id] = page
                    while len(self._pages_cache) > self._pages_cache_size:
                        self._pages_cache.popitem(last=False)
            with self.encoder_lock:
                smap = similarity_map(self.encoder, image, text, page=page)
        except SimilarityError as exc:
            raise RequestError(400, str(exc)) from exc
        except EncoderError as exc:
            raise RequestError(400, str(exc)) from exc
        return smap, image
