"""Expanding inputs (files, directories, globs, URLs) into :class:`Source` descriptors.

Nothing here renders or decodes anything: the collection layer can list sources,
compare content hashes and decide what to (re)render.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from renderers.detect import KIND_BY_EXT, kind_for_label, sniff_file
from renderers.errors import SourceNotFoundError

log = logging.getLogger(__name__)

_GLOB_CHARS = frozenset("*?[")


def make_doc_id(key: str) -> str:
    """Stable document id: first 16 hex chars of sha1(resolved absolute path or URL)."""
    return hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]


@dataclass(frozen=True)
class Source:
    """One document to render.

    ``source`` is the resolved absolute path (files) or the URL as given.
    ``kind`` is one of ``"pdf"``, ``"image"``, ``"office"``, ``"web"`` or
    ``"unknown"`` (decided from the extension; content is verified at render time).
    ``error`` is set when the input could not be resolved (missing path, glob that
    matched nothing, unsupported URL scheme); rendering it yields a failure.
    """

    source: str
    doc_id: str
    kind: str
    path: Path | None = None
    url: str | None = None
    error: str | None = None

    @property
    def is_url(self) -> bool:
        return self.url is not None

    def content_hash(self) -> str | None:
        """sha256 hex digest of the file bytes; ``None`` for URLs and unresolved inputs."""
        if self.path is None or self.error is not None:
            return None
        h = hashlib.sha256()
        with open(self.path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    @classmethod
    def from_path(cls, path: str | Path, *, sniff: bool = True) -> Source:
        """Describe a local file. Unknown extensions are classified by content if ``sniff``."""
        p = Path(os.path.realpath(os.path.expanduser(str(path))))
        key = str(p)
        if not p.exists():
            return cls(source=key, doc_id=make_doc_id(key), kind="unknown", path=p, error=f"no such file: {path}")
        kind = KIND_BY_EXT.get(p.suffix.lower())
        if kind is None and sniff and p.is_file():  # never open FIFOs/devices to sniff them
            try:
                kind = kind_for_label(sniff_file(p))
            except OSError as exc:
                return cls(
                    source=key, doc_id=make_doc_id(key), kind="unknown", path=p, error=f"cannot read file: {exc}"
                )
        return cls(source=key, doc_id=make_doc_id(key), kind=kind or "unknown", path=p)

    @classmethod
    def from_url(cls, url: str) -> Source:
        """Describe a web page (http/https); other schemes give an unresolved source."""
        scheme = urlsplit(url).scheme.lower()
        if scheme in ("http", "https"):
            return cls(source=url, doc_id=make_doc_id(url), kind="web", url=url)
        return cls(
            source=url,
            doc_id=make_doc_id(url),
            kind="unknown",
            url=url,
            error=f"unsupported URL scheme {scheme!r} (only http and https)",
        )


def _looks_like_url(text: str) -> bool:
    parts = urlsplit(text)
    return bool(parts.scheme) and len(parts.scheme) > 1 and "://" in text


def _walk_dir(root: Path, skipped: list[Path] | None = None) -> Iterator[Path]:
    """Supported files under ``root``, recursively, sorted, skipping hidden entries.

    Files of unsupported types are appended to ``skipped`` (when given); hidden files and
    directories and Office lock files (``~$...``) are ignored silently.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name.startswith("~$"):
                continue
            if Path(name).suffix.lower() in KIND_BY_EXT:
                yield Path(dirpath) / name
            elif skipped is not None:
                skipped.append(Path(dirpath) / name)


def iter_sources(
    inputs: Iterable[str | os.PathLike[str] | Source], *, skipped: list[Path] | None = None
) -> Iterator[Source]:
    """Expand inputs into sources, lazily and in input order, without duplicates.

    * ``http(s)://`` URLs -> one web source each;
    * directories -> every supported file below them (recursive, sorted; hidden
      files ignored; files of unsupported types skipped and, when ``skipped`` is
      given, appended to it as they are met, so callers can report them);
    * globs (``*``, ``?``, ``[``; ``**`` recurses) -> the matches, sorted; matched
      directories are expanded as above;
    * files -> one source each (any extension; unknown ones are sniffed);
    * :class:`Source` objects pass through.

    A missing path or a glob matching nothing yields a source whose ``error`` says so.
    """
    seen: set[str] = set()

    def emit(src: Source) -> Iterator[Source]:
        if src.doc_id in seen:
            return
        seen.add(src.doc_id)
        yield src

    def expand_path(p: Path) -> Iterator[Source]:
        if p.is_dir():
            for f in _walk_dir(p, skipped):
                yield from emit(Source.from_path(f))
        else:
            yield from emit(Source.from_path(p))

    for item in inputs:
        if isinstance(item, Source):
            yield from emit(item)
            continue
        text = os.fspath(item)
        if isinstance(item, str) and _looks_like_url(text):
            yield from emit(Source.from_url(text))
            continue
        path = Path(os.path.expanduser(text))
        if path.exists():
            yield from expand_path(path)
        elif any(c in text for c in _GLOB_CHARS):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            if not matches:
                key = os.path.abspath(text)
                yield from emit(
                    Source(source=text, doc_id=make_doc_id(key), kind="unknown", error=f"no files match {text!r}")
                )
            for m in matches:
                yield from expand_path(Path(m))
        else:
            yield from emit(Source.from_path(path))


def resolve_error(source: Source) -> SourceNotFoundError | None:
    """The exception for an unresolved source (``None`` when it resolved)."""
    if source.error is None:
        return None
    return SourceNotFoundError(source.error)
