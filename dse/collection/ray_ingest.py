"""Distributed indexing on a Ray cluster (the ``ray`` extra): ``Collection.add(..., ray=...)``.

The same job as :class:`~dse.collection.ingest.Ingestor.run`, with rendering and encoding
spread over a cluster through a streaming Ray Data pipeline::

    driver: plan (list sources, skip unchanged ones)            -- Ingestor.plan
      -> Ray tasks: render one source each (CPU)                -- renderers.render_source
      -> actor pool (map_batches): encoder actors, each loading the collection's encoder once
      -> streamed back to the driver, in input order            -- Ingestor.drive
    driver: write images, pending rows, vectors; commit         -- the single writer

Only the driver writes to the collection, through the same crash-safe commit protocol as
an in-process job (see :mod:`dse.collection.ingest`): a killed driver loses at most the
uncommitted pages, and re-running the same job resumes it. Render workers read the sources
themselves (paths must be readable on every node; URLs are fetched by the workers); the
collection directory only has to be visible to the driver. Pages travel as PNG bytes and
vectors as float32 bytes (no pickled objects in the pipeline's data).

Encoder actors are restarted when they die (``max_restarts=-1``) and their batch retried
(``max_task_retries=-1``). A source that fails to render or encode is reported in the
:class:`~dse.collection.ingest.IndexReport` as in-process.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from dse.collection.crashpoints import crash_once
from dse.collection.manifest import CollectionError, CollectionInputError
from dse.extras import require

if TYPE_CHECKING:
    from dse.collection.ingest import IndexReport, Ingestor

logger = logging.getLogger(__name__)

#: Ray runs its workers through ``uv run`` when the driver was started with ``uv run``
#: (its uv integration); that re-resolves the project's environment without the extras the
#: driver runs with (no ``ray`` in the workers). dse turns it off unless the variable is set.
UV_RUNTIME_ENV = "RAY_ENABLE_UV_RUN_RUNTIME_ENV"

#: test hook: called on the driver with the number of records received so far
_after_record: Any = None


@dataclass(frozen=True)
class RaySettings:
    """How a job uses the cluster.

    ``address``: ``"auto"`` (``$RAY_ADDRESS``, else a cluster running on this machine, else a
    new local one) or a cluster address (``ray://host:10001``, ``host:6379``).
    ``encoders``: encoder actors (one model copy each); ``gpus_per_encoder``: GPUs per actor
    (fractions share a GPU; 0: CPU); ``encoder_cpus``: CPUs reserved per actor;
    ``render_cpus``: CPUs per render task (one task renders one source).
    """

    address: str = "auto"
    encoders: int = 2
    gpus_per_encoder: float = 0.0
    encoder_cpus: float = 1.0
    render_cpus: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or not self.address.strip():
            raise CollectionInputError("the Ray address must be 'auto' or a cluster address such as host:6379")
        if isinstance(self.encoders, bool) or not isinstance(self.encoders, int) or self.encoders < 1:
            raise CollectionInputError(f"the number of Ray encoder actors must be >= 1, got {self.encoders!r}")
        for name in ("gpus_per_encoder", "encoder_cpus", "render_cpus"):
            value = getattr(self, name)
            low_ok = value >= 0 if name == "gpus_per_encoder" else value > 0
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low_ok:
                bound = ">= 0" if name == "gpus_per_encoder" else "> 0"
                raise CollectionInputError(f"Ray setting {name} must be a number {bound}, got {value!r}")

    @classmethod
    def coerce(cls, value: Any) -> RaySettings:
        """``"auto"``, an address or a :class:`RaySettings` (checks that the ``ray`` extra is installed)."""
        require("ray")
        if isinstance(value, RaySettings):
            return value
        if value is True:
            return cls()
        if isinstance(value, str):
            return cls(address=value.strip() or "auto")
        raise CollectionInputError(f"ray must be 'auto', a cluster address or RaySettings, got {value!r}")


# --------------------------------------------------------------------------- cluster side
def _row_for(source: Any, skip: set[int]) -> dict[str, Any]:
    return {
        "source": json.dumps(
            {
                "source": source.source,
                "doc_id": source.doc_id,
                "kind": source.kind,
                "path": None if source.path is None else str(source.path),
                "url": source.url,
                "error": source.error,
                "skip": sorted(skip),
            }
        )
    }


def render_rows(row: dict[str, Any], settings: Any) -> Iterator[dict[str, Any]]:
    """Ray task: render one source; one row per page (PNG bytes) or per failure.

    Pages in ``skip`` (stored by an interrupted run) become rows without pixels: the writer
    still sees every source it planned, in order."""
    from pathlib import Path

    from renderers import PageRecord, Source, render_source

    desc = json.loads(row["source"])
    skip = set(desc.pop("skip"))
    path = desc.pop("path")
    source = Source(**desc, path=None if path is None else Path(path))
    for rec in render_source(source, settings):
        if isinstance(rec, PageRecord):
            if rec.page in skip:  # stored by an interrupted run: not encoded nor sent twice (a marker only)
                info: dict[str, Any] = {"skipped": True, "title": rec.title}
                yield {"doc_id": rec.doc_id, "page": rec.page, "png": b"", "info": json.dumps(info)}
                continue
            info = {"source": rec.source, "title": rec.title, "width": rec.width, "height": rec.height}
            yield {"doc_id": rec.doc_id, "page": rec.page, "png": rec.png_bytes(), "info": json.dumps(info)}
        else:
            info = {"source": rec.source, "reason": rec.reason, "error_type": rec.error_type, "page": rec.page}
            yield {"doc_id": rec.doc_id, "page": -1, "png": b"", "info": json.dumps(info)}


class EncodeBatch:
    """Ray actor (``map_batches``): loads the collection's encoder once, encodes pages of PNG bytes."""

    def __init__(
        self, encoder_settings: dict[str, Any], device: str, dtype: Any, batch_size: int, crash_once: str | None = None
    ) -> None:
        from dse.collection.manifest import load_encoder_from_settings

        self.encoder = load_encoder_from_settings(encoder_settings, device=device, dtype=dtype)
        self.batch_size = batch_size
        self.crash_once = crash_once  # fault injection for the tests (see crashpoints.crash_once)

    def _encode(self, images: list[Any]) -> list[np.ndarray | str]:
        from dse.encoders.base import EncoderError

        try:
            return _split(self.encoder.encode_documents(images, batch_size=self.batch_size), len(images))
        except EncoderError:
            if len(images) == 1:
                raise
        out: list[np.ndarray | str] = []
        for im in images:  # isolate the bad page(s), as in-process
            try:
                out.extend(_split(self.encoder.encode_documents([im], batch_size=1), 1))
            except EncoderError as exc:
                out.append(str(exc))
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import io

        from PIL import Image

        from dse.encoders.base import EncoderError

        crash_once("ray_encode_batch", self.crash_once)
        n = len(batch["page"])
        vecs: list[bytes] = [b""] * n
        rows = np.zeros(n, np.int64)
        errors: list[str] = [""] * n
        todo = [i for i in range(n) if int(batch["page"][i]) >= 0 and len(batch["png"][i])]
        images = []
        for i in todo:
            with Image.open(io.BytesIO(batch["png"][i])) as im:
                im.load()
                images.append(im if im.mode == "RGB" else im.convert("RGB"))
        if todo:
            try:
                results = self._encode(images)
            except EncoderError as exc:
                results = [str(exc)]
            for i, res in zip(todo, results, strict=True):
                if isinstance(res, str):
                    errors[i] = res
                else:
                    arr = np.ascontiguousarray(res, dtype="<f4")
                    vecs[i], rows[i] = arr.tobytes(), arr.shape[0]
        batch["vec"] = np.array(vecs, dtype=object)
        batch["vec_rows"] = rows
        batch["error"] = np.array(errors, dtype=object)
        return batch


def _split(vectors: Any, n: int) -> list[Any]:
    """One ``(rows, dim)`` array per page: ``(1, dim)`` single-vector, ``(tokens, dim)`` multi."""
    if isinstance(vectors, np.ndarray):
        return [vectors[i : i + 1] for i in range(n)]
    return [np.asarray(v) for v in vectors]


# ---------------------------------------------------------------------------- driver side
def connect(address: str) -> bool:
    """Connect this process to a cluster (or start a local one); ``True`` if it must be shut down after."""
    os.environ.setdefault(UV_RUNTIME_ENV, "0")
    import ray

    if ray.is_initialized():
        return False
    options: dict[str, Any] = {
        "logging_level": logging.WARNING,
        "log_to_driver": logger.isEnabledFor(logging.INFO),
    }
    try:
        if address != "auto" or os.environ.get("RAY_ADDRESS"):
            ray.init(address=None if address == "auto" else address, **options)
            return True
        try:
            ray.init(address="auto", **options)
        except ConnectionError:
            logger.info("no running Ray cluster found: starting a local one")
            ray.init(include_dashboard=False, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = os.environ.get("RAY_ADDRESS") if address == "auto" else address
        raise CollectionError(f"cannot connect to the Ray cluster{f' at {where}' if where else ''}: {exc}") from exc
    return True


def _check_resources(settings: RaySettings) -> None:
    """Refuse settings the cluster cannot run (the pipeline would wait forever)."""
    import ray

    have = ray.cluster_resources()
    cpus, gpus = float(have.get("CPU", 0)), float(have.get("GPU", 0))
    need_cpu = settings.encoders * settings.encoder_cpus + settings.render_cpus
    if need_cpu > cpus + 1e-9:
        raise CollectionInputError(
            f"the Ray cluster has {cpus:g} CPUs; {settings.encoders} encoder actors x {settings.encoder_cpus:g} CPU "
            f"+ {settings.render_cpus:g} CPU for rendering need {need_cpu:g} (use fewer encoders or fewer CPUs each)"
        )
    need_gpu = settings.encoders * settings.gpus_per_encoder
    if need_gpu > gpus + 1e-9:
        raise CollectionInputError(
            f"the Ray cluster has {gpus:g} GPUs; {settings.encoders} encoder actors x "
            f"{settings.gpus_per_encoder:g} GPU need {need_gpu:g}"
        )


def _dataset(ingest: Ingestor, sources: list[Any], settings: RaySettings) -> Any:
    import ray
    import ray.data

    col = ingest.col
    rows = [_row_for(src, ingest.plans[src.doc_id].skip_pages) for src in sources]
    # rendering parallelism comes from Ray (one task per source), not from a process pool per task
    render_settings = replace(ingest.render_settings, pdf_workers=1)
    ds: Any = ray.data.from_items(rows, override_num_blocks=len(rows))
    ds = ds.flat_map(
        render_rows,  # its settings come from fn_kwargs
        fn_kwargs={"settings": render_settings},
        num_cpus=settings.render_cpus,
    )
    ds = ds.map_batches(
        EncodeBatch,
        fn_constructor_kwargs={
            "encoder_settings": dict(col.manifest.encoder),
            "device": col.device,
            "dtype": col._dtype,
            "batch_size": ingest.batch_size,
            "crash_once": os.environ.get("DSE_CRASH_ONCE"),
        },
        batch_size=ingest.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=settings.encoders),
        num_cpus=settings.encoder_cpus,
        num_gpus=settings.gpus_per_encoder,
        # Ray Data starts pool actors with max_restarts=-1 and max_task_retries=-1 (the explicit
        # keyword arguments are deprecated): a dead encoder actor is restarted and its batch retried
    )
    ctx = ds.context
    ctx.execution_options.preserve_order = True  # the writer gets each source's pages together, in order
    ctx.enable_progress_bars = False  # the job has its own (pages, pages/s)
    return ds


def _records(ds: Any, dim: int) -> Iterator[Any]:
    """The pipeline's output rows as :class:`EncodedPage` s and :class:`renderers.RenderFailure` s."""
    from dse.collection.ingest import EncodedPage
    from renderers import PageRecord, RenderFailure

    for n, row in enumerate(ds.iter_rows(), start=1):
        info = json.loads(row["info"])
        page = int(row["page"])
        if info.get("skipped"):  # already stored: the writer skips it (and closes its document)
            yield EncodedPage(PageRecord(row["doc_id"], page, "", info["title"], 0, 0, {}, _png=b""))
        elif page < 0:
            yield RenderFailure(info["source"], row["doc_id"], info["reason"], info["error_type"], info["page"])
        else:
            rec = PageRecord(
                row["doc_id"],
                page,
                info["source"],
                info["title"],
                info["width"],
                info["height"],
                {},
                _png=bytes(row["png"]),
            )
            if row["error"]:
                yield EncodedPage(rec, error=str(row["error"]))
            else:
                vec = np.frombuffer(bytes(row["vec"]), dtype="<f4").reshape(int(row["vec_rows"]), dim)
                yield EncodedPage(rec, vectors=vec.astype(np.float32, copy=True))
        if _after_record is not None:
            _after_record(n)


def run_on_ray(ingest: Ingestor, inputs: Iterable[Any], settings: RaySettings) -> IndexReport:
    """Run ``ingest``'s job with rendering and encoding on a Ray cluster (see the module docstring)."""
    import time

    require("ray")
    t0 = time.perf_counter()
    sources = ingest.plan(inputs)
    if not sources:
        ingest.report.seconds = time.perf_counter() - t0
        return ingest.report
    started = connect(settings.address)
    if not logger.isEnabledFor(logging.INFO):  # Ray Data logs every execution at INFO: only with -v
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        _check_resources(settings)
        ds = _dataset(ingest, sources, settings)
        return ingest.drive(_records(ds, ingest.col.dim), len(sources), t0, unit="page")
    finally:
        if started:
            import ray

            ray.shutdown()
