"""notebooks/finetune.ipynb runs end to end on a tiny offline model (nbclient, kernel python3)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from support.training import make_colour_dataset

pytestmark = pytest.mark.notebook

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "finetune.ipynb"


def _text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif "data" in out:
                parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


def test_committed_notebook_has_no_outputs() -> None:
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None


def test_finetune_notebook_executes(tiny_model_dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_colour_dataset(tmp_path / "data")
    env = {
        "DSE_NB_MODEL": str(tiny_model_dir("dse-qwen2")),
        "DSE_NB_DATA": str(data),
        "DSE_NB_OUT": str(tmp_path / "run"),
        "DSE_NB_STEPS": "40",
        "DSE_NB_LR": "3e-3",
        "DSE_NB_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)  # the kernel inherits the environment
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = _text(nb)
    m = re.search(r"40 steps; loss ([\d.]+) \(first 4\) -> ([\d.]+) \(last 4\)", text)
    assert m, text
    assert float(m.group(2)) < float(m.group(1))  # the loss fell
    assert re.search(r"nDCG@5 before [\d.]+ after [\d.]+", text), text
    assert re.search(r"max \|merged - base\+adapter\| = [\d.e+-]+", text), text
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "run-merged" / "config.json").is_file()
