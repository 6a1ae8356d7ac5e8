"""Distributed indexing on a real local Ray cluster (``ray.init(num_cpus=2)``).

The Ray runs must produce the collection an in-process run produces (documents, pages,
metadata, images; vectors within 1e-5), also when an encoder actor is SIGKILLed in the
middle of a batch and when the driver is SIGKILLed after some commits and re-run.
Starting the cluster and the encoder actors (each imports torch and loads the model)
takes minutes on a loaded 2-core machine: the cluster tests are ``heavy``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.collections import check_index_matches_store
from support.docs import make_pdf

from dse.collection import Collection, CollectionInputError

# Ray's uv integration would start the workers through `uv run` (without this run's extras)
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

BATCH, COMMIT = 2, 2


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray-src")
    make_pdf(root / "a.pdf", 4, seed=21)
    make_pdf(root / "b.pdf", 3, seed=22, title="Second Report")
    make_pdf(root / "c.pdf", 2, seed=23)
    (root / "c.pdf.meta.json").write_text('{"team": "blue"}')
    (root / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a PDF")  # reported as a failure
    return root


def _settings() -> Any:
    from renderers import RenderSettings

    return RenderSettings(dpi=30)


def _index(col_dir: Path, model: Path, src: Path, **kw: Any) -> Any:
    col = (
        Collection.open(col_dir, device="cpu")
        if (col_dir / "collection.json").exists()
        else Collection.create(col_dir, model=str(model), device="cpu")
    )
    try:
        return col.add(
            src,
            meta={"batch": "one"},
            batch_size=BATCH,
            commit_every=COMMIT,
            render_settings=_settings(),
            progress=False,
            **kw,
        )
    finally:
        col.close()


def contents(col_dir: Path) -> dict[str, Any]:
    """Everything a collection holds, keyed by (doc id, page) (page ids may differ after a resume)."""
    col = Collection.open(col_dir, device="cpu")
    try:
        stored = check_index_matches_store(col)
        docs = sorted((d.doc_id, d.source, d.title, d.pages, d.status, sorted(d.meta.items())) for d in col.documents())
        pages: dict[tuple[str, int], Any] = {}
        vectors: dict[tuple[str, int], np.ndarray] = {}
        for pid, row in col.store.pages(sorted(stored)).items():
            key = (row.doc_id, row.page)
            assert key not in pages, f"page stored twice: {key}"
            image = hashlib.sha256((col_dir / row.image).read_bytes()).hexdigest()
            pages[key] = (row.source, row.width, row.height, row.image, row.title, sorted(row.meta.items()), image)
            vectors[key] = np.asarray(col.index.get(pid), np.float32)
        return {"docs": docs, "pages": pages, "vectors": vectors}
    finally:
        col.close()


def assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["docs"] == want["docs"]
    assert got["pages"] == want["pages"]
    assert got["vectors"].keys() == want["vectors"].keys()
    for key, vec in want["vectors"].items():
        assert got["vectors"][key].shape == vec.shape, key
        np.testing.assert_allclose(got["vectors"][key], vec, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def model(tiny_model_dir: Any) -> Path:
    return Path(tiny_model_dir("dse-qwen2"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, sources: Path, model: Path) -> dict[str, Any]:
    col_dir = tmp_path_factory.mktemp("ray-ref") / "c"
    report = _index(col_dir, model, sources)
    assert [Path(f.source).name for f in report.failures] == ["broken.pdf"]
    assert report.pages == 9
    return contents(col_dir)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _ray(**kw: Any) -> Any:
    from dse.collection.ray_ingest import RaySettings

    # 1 encoder actor (1 CPU) + render tasks (0.5 CPU) fit the 2-CPU test cluster
    return RaySettings(**{"encoders": 1, "render_cpus": 0.5, **kw})


@pytest.mark.heavy
def test_ray_equals_in_process(tmp_path: Path, sources: Path, model: Path, reference: Any, cluster: str) -> None:
    report = _index(tmp_path / "c", model, sources, ray=_ray())
    assert report.pages == 9 and report.added == 3
    assert [(Path(f.source).name, f.error_type) for f in report.failures] == [("broken.pdf", "TruncatedDocumentError")]
    assert_same(contents(tmp_path / "c"), reference)
    # a second run skips every unchanged source, as in-process
    again = _index(tmp_path / "c", model, sources, ray=_ray())
    assert (again.unchanged, again.pages) == (3, 0)


@pytest.mark.heavy
def test_killed_encoder_actor_is_restarted(
    tmp_path: Path, sources: Path, model: Path, reference: Any, cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "killed"
    # the encoder actor SIGKILLs itself when its 2nd batch arrives (once: the marker file)
    monkeypatch.setenv("DSE_CRASH_ONCE", f"ray_encode_batch:2:{marker}")
    report = _index(tmp_path / "c", model, sources, ray=_ray())
    assert marker.exists(), "the encoder actor was not killed"
    assert report.pages == 9
    assert_same(contents(tmp_path / "c"), reference)


@pytest.mark.heavy
@pytest.mark.subprocess
def test_killed_driver_resumes(tmp_path: Path, sources: Path, model: Path, reference: Any, cluster: str) -> None:
    col_dir = tmp_path / "c"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DSE_CRASH_AT": "after_mark_stored:2"}  # SIGKILL after 2 commits
    cmd = [sys.executable, "-m", "dse", "index", str(sources), "--collection", str(col_dir), "--model", str(model)]
    cmd += ["--device", "cpu", "--dpi", "30", "--batch-size", str(BATCH), "--commit-every", str(COMMIT)]
    cmd += ["--meta", "batch=one", "--ray", cluster, "--ray-encoders", "1", "--ray-render-cpus", "0.5", "-q"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == -9, proc.stderr
    partial = Collection.open(col_dir, device="cpu")
    try:
        assert 0 < len(partial.store.stored_page_ids()) < 9
    finally:
        partial.close()
    report = _index(col_dir, model, sources, ray=_ray())  # the same job again: resumes
    assert report.resumed + report.added == 3 and report.pages < 9
    assert_same(contents(col_dir), reference)


# ----------------------------------------------------------------------- no cluster needed
def test_missing_extra_one_line(
    tmp_path: Path, sources: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import dse.extras
    from dse.cli import main

    monkeypatch.setitem(dse.extras.EXTRAS, "ray", ("dse_no_such_module_ray",))
    monkeypatch.setattr(dse.extras, "_installed", set())
    status = main(["index", str(sources / "a.pdf"), "--collection", str(tmp_path / "c"), "--ray"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 3
    assert err == ["dse index: error: the 'ray' extra is not installed: pip install 'dse[ray]'"]
    assert not (tmp_path / "c").exists()
    from dse.collection.ray_ingest import RaySettings

    with pytest.raises(ImportError, match=r"pip install 'dse\[ray\]'"):
        RaySettings.coerce("auto")  # what Collection.add(..., ray=...) checks first


def test_ray_options_checked(tmp_path: Path, sources: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray")
    from dse.cli import main
    from dse.collection.ray_ingest import RaySettings

    assert main(["index", str(sources), "-c", str(tmp_path / "c"), "--ray-encoders", "3"]) == 2
    assert "need --ray" in capsys.readouterr().err
    assert main(["index", str(sources), "-c", str(tmp_path / "c"), "--ray", "--ray-encoders", "0"]) == 2
    assert "encoder actors must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    with pytest.raises(CollectionInputError, match="render_cpus"):
        RaySettings(render_cpus=0)
    with pytest.raises(CollectionInputError, match="ray must be"):
        RaySettings.coerce(3)
    assert RaySettings.coerce("host:6379").address == "host:6379"
