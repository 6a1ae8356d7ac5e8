"""Where ``dse search`` spends its time on a Qdrant-backed collection in qdrant-client's local mode.

    .venv/bin/python bench/qdrant_search.py                     # PDFs from /usr/share/doc (or generated)
    .venv/bin/python bench/qdrant_search.py --pdf a.pdf b.pdf --queries 20 --repeat 3

A local exact (MaxSim) collection is indexed once with a tiny random-weight colqwen2 model
(``dse.testing.tiny``; real models only change the encode share), then exported to Qdrant's
local mode (``--to-qdrant path:DIR``: the same vectors, no re-encoding). Both collections are
then searched the same way; the local backend is the named baseline.

Two views, each timed by wrapping the calls (``time.perf_counter``):

* **one-shot** ``dse search`` (``dse.cli.main`` in-process, after imports): open the collection
  (manifest, SQLite, Qdrant client; local mode unpickles every stored point here), load the
  encoder, encode the query, search, build hits, print;
* **warm** searches (what a ``dse serve`` replica does per request): ``Collection.search`` on an
  open collection.

Columns: the Qdrant client (every call through ``Connection.call``, plus opening the local-mode
storage), the encoder (loading it; encoding queries), and our code (the rest). On a real server
the client's share is a network round trip plus the server's search; local mode instead does
the search itself, in pure Python, which is why its share grows with the collection.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

DOC_PDFS = (
    "/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf",
    "/usr/share/doc/libtasn1-doc/libtasn1.pdf",
)
QUERIES = (
    "MIME type glob patterns",
    "ASN.1 DER encoding of an integer",
    "magic rules with priorities",
    "how to parse a definitions file",
    "table of contents",
    "license and copyright",
    "subclass of text/plain",
    "error codes returned by the library",
)


class Timers:
    """Accumulated seconds per category while :meth:`installed`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.detail: dict[str, float] = defaultdict(float)

    def wrap(self, owner: Any, name: str, category: str) -> tuple[Any, str, Any]:
        original = getattr(owner, name)
        timers = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                timers.seconds[category] += time.perf_counter() - t0
                timers.calls[category] += 1

        setattr(owner, name, timed)
        return owner, name, original

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        from dse.encoders import base
        from indexes.qdrant import connection

        patched = [
            self.wrap(connection.Connection, "call", "qdrant client"),
            self.wrap(connection, "_open_local", "qdrant client"),
        ]
        # the client's time per operation (the ``what`` of Connection.call; opening local-mode storage)
        call = connection.Connection.call
        timers = self

        def call_by_what(conn: Any, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return call(conn, what, fn, *args, **kwargs)
            finally:
                timers.detail[what.split(" (")[0]] += time.perf_counter() - t0

        connection.Connection.call = call_by_what  # type: ignore[method-assign]
        opener = connection._open_local

        def open_local(url: str) -> Any:
            t0 = time.perf_counter()
            try:
                return opener(url)
            finally:
                timers.detail["open local storage"] += time.perf_counter() - t0

        connection._open_local = open_local
        patched += [(connection.Connection, "call", call), (connection, "_open_local", opener)]
        original_load = base.Encoder.load.__func__  # type: ignore[attr-defined]

        def load(cls: Any, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            enc = original_load(cls, *args, **kwargs)
            timers.seconds["encoder load"] += time.perf_counter() - t0
            timers.wrap(enc, "encode_queries", "encode query")
            return enc

        base.Encoder.load = classmethod(load)  # type: ignore[method-assign, assignment]
        try:
            yield
        finally:
            base.Encoder.load = classmethod(original_load)  # type: ignore[method-assign, assignment]
            for owner, name, original in reversed(patched):
                setattr(owner, name, original)

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.detail.clear()


def _pdfs(args: argparse.Namespace, work: Path) -> list[Path]:
    chosen = [Path(p) for p in (args.pdf or DOC_PDFS) if Path(p).is_file()]
    if chosen:
        return chosen
    from support.docs import make_pdf

    out = work / "generated.pdf"
    make_pdf(out, 40, seed=5)
    return [out]


def _row(view: str, backend: str, total: float, parts: dict[str, float], n: int) -> str:
    client = parts.get("qdrant client", 0.0)
    encode = parts.get("encode query", 0.0) + parts.get("encoder load", 0.0)
    ours = max(total - client - encode, 0.0)
    per = total / n
    cells = [f"{per * 1000:.0f}"] + [f"{x / n * 1000:.0f} ({x / total:.0%})" for x in (client, encode, ours)]
    return f"| {view} | {backend} | " + " | ".join(cells) + " |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pdf", nargs="*", help="PDFs to index (default: two manuals from /usr/share/doc)")
    p.add_argument("--dpi", type=int, default=60)
    p.add_argument("--queries", type=int, default=8, help="warm searches per backend (cycling the query list)")
    p.add_argument("--repeat", type=int, default=3, help="one-shot dse search runs per backend")
    p.add_argument("--n-candidates", type=int, default=200)
    p.add_argument("--work", default=None, help="working directory (default: a temporary one, deleted)")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging_quiet()

    from dse.cli import main as dse_main
    from dse.collection import Collection
    from dse.collection.export import export_to_qdrant
    from dse.testing.tiny import build_tiny
    from renderers import RenderSettings

    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="dse-qdrant-bench-")
    work = Path(args.work or tmp.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    model = work / "tiny-colqwen2"
    if not model.exists():
        build_tiny("colqwen2", model)
    local, exported = work / "local", work / "qdrant-col"
    pdfs = _pdfs(args, work)
    if not (local / "collection.json").exists():
        t0 = time.perf_counter()
        with Collection.create(local, str(model), device="cpu") as col:
            report = col.add(pdfs, render_settings=RenderSettings(dpi=args.dpi), progress=False)
        print(f"indexed {report.pages} pages locally in {time.perf_counter() - t0:.1f}s")
    if not (exported / "collection.json").exists():
        t0 = time.perf_counter()
        params = {"n_candidates": args.n_candidates}
        rep = export_to_qdrant(local, f"path:{work / 'qdrant'}", out=exported, params=params)
        print(f"exported {rep.pages} pages to local-mode Qdrant in {time.perf_counter() - t0:.1f}s")

    timers = Timers()
    rows: list[str] = []
    notes: list[str] = []
    for backend, directory in (("local maxsim [baseline]", local), ("qdrant local mode", exported)):
        # one-shot: the whole `dse search` command, in-process
        totals: list[float] = []
        parts: dict[str, float] = defaultdict(float)
        detail: dict[str, float] = defaultdict(float)
        with contextlib.redirect_stdout(io.StringIO()):  # warm-up: module imports are not a search's cost
            dse_main(["search", "warm-up", "-c", str(directory), "--device", "cpu"])
        with timers.installed():
            for i in range(args.repeat):
                timers.reset()
                t0 = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    status = dse_main(["search", QUERIES[i % len(QUERIES)], "-c", str(directory), "--device", "cpu"])
                totals.append(time.perf_counter() - t0)
                assert status == 0
                for k, v in timers.seconds.items():
                    parts[k] += v
                for k, v in timers.detail.items():
                    detail[k] += v
        rows.append(_row("one-shot `dse search`", backend, sum(totals), parts, len(totals)))
        if detail:
            breakdown = ", ".join(f"{k} {v / len(totals) * 1000:.0f} ms" for k, v in sorted(detail.items()))
            notes.append(f"one-shot, {backend}: Qdrant client time per run: {breakdown}")
        # warm: searches on an open collection
        with timers.installed():
            col = Collection.open(directory, device="cpu")
            col.search("warm-up", k=10)
            timers.reset()
            t0 = time.perf_counter()
            for i in range(args.queries):
                col.search(QUERIES[i % len(QUERIES)], k=10)
            total = time.perf_counter() - t0
            warm = dict(timers.seconds)
            warm.pop("encoder load", None)
            col.close()
        rows.append(_row("warm `Collection.search`", backend, total, warm, args.queries))
    with Collection.open(exported, device="cpu") as col:
        pages, vectors = col.stats()["pages"], col.stats()["vectors"]
    print()
    print(
        f"{pages} pages, {vectors} vectors (tiny colqwen2, dim 128), n_candidates={args.n_candidates}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print()
    print("| view | backend | ms per search | Qdrant client ms (share) | encoder ms (share) | our code ms (share) |")
    print("|---|---|---:|---:|---:|---:|")
    for row in rows:
        print(row)
    print()
    for note in notes:
        print(note)
    import subprocess

    code = "import time; t = time.perf_counter(); import qdrant_client; print(time.perf_counter() - t)"
    seconds = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    print(f"importing qdrant_client in a fresh process (paid once per `dse search` process): {seconds * 1000:.0f} ms")
    if tmp is not None:
        tmp.cleanup()
    else:
        shutil.rmtree(work / "unused", ignore_errors=True)


def logging_quiet() -> None:
    import logging
    import warnings

    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")


if __name__ == "__main__":
    main()
