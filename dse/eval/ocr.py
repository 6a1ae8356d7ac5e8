"""Tesseract OCR of page images, with a persistent per-page cache.

This is the text-extraction step of the classic OCR + BM25 pipeline that screenshot
retrieval replaces (see :mod:`dse.eval.bm25_ocr`). OCR runs through ``pytesseract``
(the ``tesseract`` binary, Debian package ``tesseract-ocr``) with its default page
segmentation.

Cache: an SQLite file (``ocr.sqlite`` in the cache directory, no pickle) mapping a key
to the page text. The key is the SHA-256 of the decoded image (mode, size and pixel
bytes) together with the tesseract language(s), the tesseract version and our OCR
settings, so the same page image is never OCR'd twice with the same engine, whichever
file or document it came from; a different version or language misses the cache.
Results are committed every few pages, so an interrupted job resumes where it stopped.
Failed pages are not cached (a later run tries them again).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from dse.extras import require

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

log = logging.getLogger(__name__)

#: part of every cache key: change it when the OCR call below changes
OCR_SETTINGS = "pytesseract.image_to_string;psm=3;oem=default"
CACHE_FILE = "ocr.sqlite"
_COMMIT_EVERY = 16


class OcrUnavailable(RuntimeError):
    """Tesseract (or the requested language data) is not installed: no page can be OCR'd."""


def _pytesseract():
    require("eval")
    import pytesseract

    return pytesseract


def tesseract_version() -> str:
    """The installed tesseract's version string; raises :class:`OcrUnavailable` when missing."""
    pt = _pytesseract()
    try:
        return str(pt.get_tesseract_version())
    except pt.TesseractNotFoundError as exc:
        raise OcrUnavailable(
            "tesseract is not installed or not on PATH (Debian: apt-get install tesseract-ocr)"
        ) from exc


def check_language(lang: str) -> None:
    """Raise :class:`OcrUnavailable` unless every ``+``-separated language of ``lang`` is installed."""
    pt = _pytesseract()
    wanted = [part for part in lang.split("+") if part]
    if not wanted:
        raise OcrUnavailable(f"empty tesseract language {lang!r}")
    try:
        installed = set(pt.get_languages(config=""))
    except pt.TesseractNotFoundError as exc:
        raise OcrUnavailable(
            "tesseract is not installed or not on PATH (Debian: apt-get install tesseract-ocr)"
        ) from exc
    missing = [part for part in wanted if part not in installed]
    if missing:
        raise OcrUnavailable(
            f"tesseract has no language data for {', '.join(missing)} (installed: "
            f"{', '.join(sorted(installed)) or 'none'}); on Debian install "
            f"{', '.join('tesseract-ocr-' + m.replace('_', '-').lower() for m in missing)}"
        )


def image_key(image: Image.Image, lang: str, version: str) -> str:
    """Cache key of ``image`` OCR'd with ``lang`` by tesseract ``version`` (hex SHA-256)."""
    h = hashlib.sha256()
    h.update(f"{OCR_SETTINGS}|{version}|{lang}|{image.mode}|{image.size[0]}x{image.size[1]}|".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def ocr_image(image: Image.Image, lang: str = "eng", *, timeout: float = 0) -> str:
    """Tesseract text of one RGB page image (``timeout`` seconds, 0 = none).

    Raises ``pytesseract.TesseractError`` / ``RuntimeError`` (timeout) for a page tesseract
    cannot read, and :class:`OcrUnavailable` when tesseract is missing.
    """
    pt = _pytesseract()
    try:
        return str(pt.image_to_string(image, lang=lang, timeout=timeout))
    except pt.TesseractNotFoundError as exc:
        raise OcrUnavailable(
            "tesseract is not installed or not on PATH (Debian: apt-get install tesseract-ocr)"
        ) from exc


class OcrCache:
    """Page text by :func:`image_key`, in an SQLite file (or in memory when ``path`` is None)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path) if self.path is not None else ":memory:", check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS ocr (key TEXT PRIMARY KEY, text TEXT NOT NULL, "
                "lang TEXT NOT NULL, version TEXT NOT NULL, created REAL NOT NULL)"
            )
            self._db.commit()
        self._pending = 0

    @classmethod
    def in_dir(cls, cache_dir: str | Path | None) -> OcrCache:
        """The cache file ``ocr.sqlite`` inside ``cache_dir`` (in memory when None)."""
        return cls(Path(cache_dir).expanduser() / CACHE_FILE if cache_dir is not None else None)

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT text FROM ocr WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, text: str, *, lang: str, version: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO ocr (key, text, lang, version, created) VALUES (?, ?, ?, ?, ?)",
                (key, text, lang, version, time.time()),
            )
            self._pending += 1
            if self._pending >= _COMMIT_EVERY:
                self._db.commit()
                self._pending = 0

    def flush(self) -> None:
        """Commit the pages written so far."""
        with self._lock:
            self._db.commit()
            self._pending = 0

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM ocr").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.commit()
            self._db.close()

    def __enter__(self) -> OcrCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _single_threaded_tesseract(active: bool) -> Iterator[None]:
    """Run each tesseract process single-threaded while several run in parallel (tesseract's
    own advice: OpenMP threads oversubscribe the cores otherwise)."""
    if not active or "OMP_THREAD_LIMIT" in os.environ:
        yield
        return
    os.environ["OMP_THREAD_LIMIT"] = "1"
    try:
        yield
    finally:
        os.environ.pop("OMP_THREAD_LIMIT", None)


def ocr_pages(
    pages: Iterable[tuple[str, Image.Image]],
    *,
    lang: str = "eng",
    cache: OcrCache | None = None,
    workers: int | None = None,
    progress: bool = True,
    total: int | None = None,
    timeout: float = 0,
) -> dict[str, str]:
    """OCR every ``(page id, RGB image)`` of ``pages``; returns ``{page id: text}``.

    Cached pages are not OCR'd again. A page tesseract fails on is logged and gets empty
    text (not cached). ``workers`` tesseract processes run in parallel (default: the
    number of CPUs, at most 8); ``pages`` is consumed lazily, with at most ``2 * workers``
    images in memory. A progress bar (tqdm) counts pages against ``total``.
    Raises :class:`OcrUnavailable` if tesseract or a language is missing.
    """
    from tqdm.auto import tqdm

    version = tesseract_version()
    check_language(lang)
    own_cache = cache is None
    cache = cache if cache is not None else OcrCache()
    n_workers = max(1, workers if workers is not None else min(8, os.cpu_count() or 1))
    texts: dict[str, str] = {}
    stats = {"cached": 0, "ocr": 0, "failed": 0}
    bar = tqdm(total=total, desc="OCR", unit="page", disable=not progress)

    def finish(pid: str, key: str, fut: Future[str]) -> None:
        try:
            text = fut.result()
        except OcrUnavailable:
            raise
        except Exception as exc:
            log.warning(
                "OCR failed for page %s: %s: %s; treated as empty text",
                pid,
                type(exc).__name__,
                str(exc).strip() or "no message",
            )
            stats["failed"] += 1
            texts[pid] = ""
        else:
            cache.put(key, text, lang=lang, version=version)
            stats["ocr"] += 1
            texts[pid] = text
        bar.update(1)

    try:
        with _single_threaded_tesseract(n_workers > 1), ThreadPoolExecutor(n_workers) as pool:
            in_flight: list[tuple[str, str, Future[str]]] = []
            for pid, image in pages:
                key = image_key(image, lang, version)
                hit = cache.get(key)
                if hit is not None:
                    texts[pid] = hit
                    stats["cached"] += 1
                    bar.update(1)
                    continue
                in_flight.append((pid, key, pool.submit(ocr_image, image, lang, timeout=timeout)))
                while len(in_flight) >= 2 * n_workers:
                    finish(*in_flight.pop(0))
            while in_flight:
                finish(*in_flight.pop(0))
    finally:
        bar.close()
        if own_cache:
            cache.close()
        else:
            with contextlib.suppress(sqlite3.Error):
                cache.flush()  # the finished pages stay durable even when the job stops on an error
    log.info("OCR: %d pages from cache, %d OCR'd, %d failed", stats["cached"], stats["ocr"], stats["failed"])
    return texts
