"""Crash-safe files: the one atomic-write helper (:func:`atomic_path`), and the files of an index
directory (``.npy`` arrays and the JSON manifest).

:func:`atomic_path` is how every file of the project is written in place (index files here,
collection manifests and page images, evaluation runs, training checkpoints...): the content
goes to ``<name>.tmp``, is flushed and fsynced, then renamed into place (``os.replace``) and
the directory is fsynced, so a file with its final name is always complete.

Nothing is pickled. The manifest ``index.json`` is the single commit point of an index:
files it does not name are ignored on load (orphans of an interrupted save) and deleted by
the next save.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from indexes.errors import IndexFormatError

logger = logging.getLogger(__name__)

FORMAT_NAME = "dse-indexes"
FORMAT_VERSION = 1
MANIFEST_NAME = "index.json"

#: Files an index directory may hold besides the manifest; anything else is left alone.
OWNED_FILE = re.compile(r"^(seg-\d+\.[a-z]+\.npy|tombstones-\d+\.npy|faiss-\d+\.index|.+\.tmp)$")


def fsync_dir(directory: Path) -> None:
    """fsync a directory so renames and new files in it are durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


_unique = itertools.count()


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str], *, unique: bool = False, sync_dir: bool = True, fsync: bool = True
) -> Iterator[Path]:
    """Write ``path`` atomically: yields a temporary path next to it to write to (a file, or a
    directory the caller creates). On a normal exit the temporary file (or every file of the
    temporary directory) is fsynced, renamed onto ``path`` with ``os.replace`` and the parent
    directory is fsynced: readers see the old content or the new one, never a part of it, and the
    new content survives a power loss once this returns. On an exception the temporary path is
    deleted and ``path`` is left as it was. ``sync_dir=False`` skips the parent directory's fsync,
    for a caller that writes several files and fsyncs the directory once (:func:`fsync_dir`);
    ``fsync=False`` skips every fsync (still atomic for readers, not durable across a power loss;
    about 25 ms less per file on a virtual disk), for bulk files that are cheap to redo.

    The temporary name is ``<name>.tmp`` (a leftover of an interrupted write is replaced), or
    ``<name>.<pid>-<n>.tmp`` with ``unique`` (several processes may write the same file, e.g. a
    shared cache). A directory replaces an existing directory ``path`` by deleting it first (the
    one step that is not atomic).

    >>> with atomic_path(Path("out.json")) as tmp:          # doctest: +SKIP
    ...     tmp.write_text(json.dumps(doc))
    """
    path = Path(path)
    suffix = f".{os.getpid()}-{next(_unique)}.tmp" if unique else ".tmp"
    tmp = path.with_name(path.name + suffix)
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_dir():
            if fsync:
                for root, _dirs, files in os.walk(tmp):
                    for name in files:
                        _fsync_file(Path(root) / name)
                    fsync_dir(Path(root))
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
        elif fsync:
            _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    if fsync and sync_dir:
        fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, unique: bool = False) -> None:
    """Write ``data`` to ``path`` atomically and durably (:func:`atomic_path`)."""
    with atomic_path(path, unique=unique) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically and durably (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)


def copy_file(src: Path, dst: Path, *, sync_dir: bool = True) -> None:
    """Copy ``src`` to ``dst`` atomically and durably (:func:`atomic_path`)."""
    with atomic_path(dst, sync_dir=sync_dir) as tmp:
        shutil.copyfile(src, tmp)


def write_array(path: Path, array: np.ndarray, *, sync_dir: bool = True) -> None:
    """Save ``array`` as ``.npy`` (no pickle) atomically (:func:`atomic_path`); returns once it is on disk."""
    array = np.ascontiguousarray(array)
    if array.dtype.hasobject:
        raise TypeError("object arrays cannot be stored (no pickle)")
    with atomic_path(path, sync_dir=sync_dir) as tmp, open(tmp, "wb") as fh:
        np.lib.format.write_array(fh, array, allow_pickle=False)


def load_array(
    path: Path,
    *,
    dtype: npt.DTypeLike,
    shape: tuple[int | None, ...],
    mmap: bool = False,
) -> np.ndarray:
    """Load a ``.npy`` file written by :func:`write_array` and check it.

    ``shape`` gives the expected shape, ``None`` for a dimension that is not checked. A
    missing, truncated or mismatched file raises :class:`IndexFormatError` naming the file.
    With ``mmap`` the array is memory-mapped read-only (``np.load(mmap_mode="r")``).
    """
    if not path.is_file():
        raise IndexFormatError(f"index file {path} is missing (the manifest names it)")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise IndexFormatError(f"index file {path} is corrupted or truncated: {exc}") from exc
    if not isinstance(arr, np.ndarray):
        raise IndexFormatError(f"index file {path} does not hold a single array")
    if arr.dtype != np.dtype(dtype):
        raise IndexFormatError(f"index file {path} has dtype {arr.dtype}, expected {np.dtype(dtype)}")
    if arr.ndim != len(shape) or any(want is not None and got != want for got, want in zip(arr.shape, shape)):
        want_s = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise IndexFormatError(f"index file {path} has shape {arr.shape}, expected {want_s}")
    return arr


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Atomically replace ``directory/index.json`` (tmp + fsync + rename + directory fsync)."""
    atomic_write_text(directory / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True))


def read_manifest(directory: Path, *, kind: str) -> dict[str, Any]:
    """Read and check ``directory/index.json`` for an index of ``kind`` (``"single"``/``"multi"``)."""
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise IndexFormatError(f"no index at {directory}: the directory does not exist")
    if not path.is_file():
        raise IndexFormatError(f"no index at {directory}: {MANIFEST_NAME} is missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexFormatError(f"{path} is not valid JSON ({exc}); the index manifest is corrupted") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise IndexFormatError(f"{path} is not a {FORMAT_NAME} manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise IndexFormatError(f"{path} has no integer format_version")
    if version > FORMAT_VERSION:
        raise IndexFormatError(
            f"{path} has format version {version}; this code reads up to {FORMAT_VERSION} (upgrade the package)"
        )
    if version < 1:
        raise IndexFormatError(f"{path} has unsupported format version {version}")
    if manifest.get("kind") != kind:
        raise IndexFormatError(f"{directory} holds a {manifest.get('kind')!r}-vector index, not a {kind!r}-vector one")
    for key, typ in (("dim", int), ("segments", list), ("generation", int), ("next_segment", int)):
        if not isinstance(manifest.get(key), typ):
            raise IndexFormatError(f"{path} is missing or has a bad {key!r} entry")
    return manifest


def segment_file(name: str, part: str) -> str:
    """File name of one part (``vectors``, ``offsets``, ``ids``) of segment ``name``."""
    return f"{name}.{part}.npy"


def remove_unreferenced(directory: Path, referenced: Iterable[str]) -> list[str]:
    """Delete owned files of ``directory`` that the manifest does not name; return their names."""
    keep = set(referenced) | {MANIFEST_NAME}
    removed = []
    for entry in os.scandir(directory):
        if entry.is_file() and entry.name not in keep and OWNED_FILE.match(entry.name):
            try:
                os.unlink(entry.path)
                removed.append(entry.name)
            except FileNotFoundError:  # pragma: no cover - raced with another cleaner
                pass
    if removed:
        logger.debug("removed unreferenced index files in %s: %s", directory, removed)
    return removed
