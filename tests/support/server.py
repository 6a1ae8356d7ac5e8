"""Shared helpers of the server tests (test_server*.py, test_web_ui.py, test_similarity.py) and
bench/serve_load.py: a small image corpus, tiny collections built once per process, and a real
uvicorn server running in a thread.

Collections are cached per (family, root) in this module, so the test modules of one pytest
session share one collection and one loaded encoder per family.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

#: (folder, team metadata, colours of its pages): 2 documents of team red, 2 of team blue, 1 green
CORPUS: tuple[tuple[str, str, tuple[tuple[int, int, int], ...]], ...] = (
    ("red", "red", ((210, 30, 30), (230, 120, 40))),
    ("blue", "blue", ((30, 60, 220), (40, 160, 200))),
    ("green", "green", ((30, 170, 60),)),
)

_cache: dict[tuple[str, str], tuple[Path, Any]] = {}
_lock = threading.Lock()


def make_page(color: tuple[int, int, int], label: str, size: tuple[int, int] = (224, 280)) -> Image.Image:
    """A page-like image: white background, a coloured block and a text line."""
    im = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(im)
    w, h = size
    d.rectangle((w // 10, h // 8, w * 8 // 10, h // 2), fill=color)
    d.text((w // 10, h * 3 // 4), label, fill="black")
    return im


def make_corpus(root: Path) -> Path:
    """Image files under ``root/<team>/pN.png``; returns ``root``."""
    for folder, _, colors in CORPUS:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i, c in enumerate(colors):
            make_page(c, f"{folder} page {i}").save(root / folder / f"p{i}.png")
    return root


@dataclass
class Built:
    directory: Path
    encoder: Any
    corpus: Path


def build_collection(family: str, model_dir: Path, root: Path, *, pool_factor: int | None = None) -> Built:
    """A collection of :data:`CORPUS` under ``root`` with the tiny model (built once per process)."""
    from dse import Encoder
    from dse.collection import Collection

    key = (family + (f"-pool{pool_factor}" if pool_factor else ""), str(root))
    with _lock:
        if key not in _cache:
            corpus = make_corpus(root / f"corpus-{key[0]}")
            directory = root / f"col-{key[0]}"
            encoder = Encoder.load(str(model_dir), device="cpu")
            col = Collection.create(directory, model=encoder, device="cpu", pool_factor=pool_factor)
            for folder, team, _ in CORPUS:
                report = col.add(corpus / folder, meta={"team": team}, progress=False)
                assert not report.failures, report.failures
            col.close()
            _cache[key] = (directory, encoder)
        directory, encoder = _cache[key]
    return Built(directory=directory, encoder=encoder, corpus=root / f"corpus-{key[0]}")


def copy_collection(built: Built, dest: Path) -> Path:
    """A private copy of a built collection (for tests that modify it)."""
    shutil.copytree(built.directory, dest)
    (dest / ".lock").unlink(missing_ok=True)
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def live_server(app: Any, *, host: str = "127.0.0.1", port: int | None = None) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread; yields its base URL; stops it afterwards."""
    import uvicorn

    port = port or free_port()
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        if time.monotonic() > deadline:
            raise TimeoutError("uvicorn did not start within 60 s")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
