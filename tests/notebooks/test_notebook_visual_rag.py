"""notebooks/visual_rag.ipynb runs top to bottom (nbclient, the venv's "python3" kernel) on tiny
offline models passed through environment variables, and is committed without outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.notebook

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "visual_rag.ipynb"


def _text_outputs(cell: dict) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif out.get("output_type") in ("execute_result", "display_data"):
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def test_notebook_is_committed_without_outputs() -> None:
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_notebook_runs_on_tiny_models(tiny_model_dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    workdir = tmp_path / "work"
    monkeypatch.setenv("DSE_NB_ENCODER", str(tiny_model_dir("dse-qwen2")))
    monkeypatch.setenv("DSE_NB_GENERATOR", str(tiny_model_dir("qwen2-vl-instruct")))
    monkeypatch.setenv("DSE_NB_WORKDIR", str(workdir))
    monkeypatch.setenv("DSE_NB_DEVICE", "cpu")
    monkeypatch.setenv("DSE_NB_MAX_NEW_TOKENS", "12")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError (with the traceback) if any cell fails

    outputs = "\n".join(_text_outputs(c) for c in nb.cells if c.cell_type == "code")
    assert "added 2 documents, 3 pages; failures: []" in outputs
    assert "2 documents, 3 pages, family dse-qwen2" in outputs
    # search hits and the answer's pages were printed, and page images displayed
    assert outputs.count("p.1") >= 2
    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
    ]
    assert len(images) == 2
    # the JSON cell prints the Answer's dict
    json_cell = next(c for c in nb.cells if c.cell_type == "code" and "to_dict()" in c.source)
    printed = _text_outputs(json_cell)
    assert '"question": "Who has to approve expensive trips?"' in printed and '"cited_pages_source"' in printed
    # the collection really exists where the notebook was told to work
    manifest = json.loads((workdir / "collection" / "collection.json").read_text())
    assert manifest["encoder"]["family"] == "dse-qwen2"
    assert sorted(p.name for p in (workdir / "reports").iterdir()) == ["annual-2024.pdf", "travel-policy.pdf"]
