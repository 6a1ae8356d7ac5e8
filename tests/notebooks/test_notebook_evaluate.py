"""notebooks/evaluate.ipynb runs top to bottom (nbclient, kernel python3) on tiny offline models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.notebook

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "evaluate.ipynb"


def test_notebook_has_no_committed_outputs() -> None:
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_evaluate_notebook_executes(tiny_model_dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("DSE_EVAL_MODEL", str(tiny_model_dir("dse-qwen2")))
    monkeypatch.setenv("DSE_EVAL_MODEL_B", str(tiny_model_dir("colqwen2")))
    monkeypatch.setenv("DSE_EVAL_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("DSE_EVAL_DEVICE", "cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=dict(os.environ))
    text = "\n".join(
        o.get("text", "") or "".join(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert "pages encoded on the second run: 0" in text
    assert "| metric | model A (baseline) | model B | Δ | p (t-test) | p (randomisation) |" in text
    assert (tmp_path / "work" / "runs" / "model-a" / "run.trec").is_file()
    assert (tmp_path / "work" / "runs" / "model-b" / "metrics.json").is_file()
