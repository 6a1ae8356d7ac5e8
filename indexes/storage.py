"""Crash-safe files of an index directory: ``.npy`` arrays and the JSON manifest.

Nothing is pickled. Every file is written to ``<name>.tmp``, flushed, fsynced and then
renamed into place (``os.replace``), and the directory is fsynced, so a file with its final
name is always complete. The manifest ``index.json`` is the single commit point: files it
does not name are ignored on load (orphans of an interrupted save) and deleted by the next
save.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through ``path.tmp`` + fsync + ``os.replace``."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def copy_file(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through ``dst.tmp`` + fsync + ``os.replace``."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, dst)


def write_array(path: Path, array: np.ndarray) -> None:
    """Save ``array`` as ``.npy`` (no pickle) atomically; returns once it is on disk."""
    array = np.ascontiguousarray(array)
    if array.dtype.hasobject:
        raise TypeError("object arrays cannot be stored (no pickle)")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.lib.format.write_array(fh, array, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_array(
    path: Path,
    *,
    dtype: np.dtype | str,
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
    data = json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8")
    atomic_write_bytes(directory / MANIFEST_NAME, data)
    fsync_dir(directory)


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
