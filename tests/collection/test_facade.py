"""The Python facade: README's "### Python facade" snippet runs as written, with tiny offline
models in place of the hub ids and a generated folder of documents in place of ``reports/``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.docs import make_pdf

ROOT = Path(__file__).resolve().parents[2]
ENCODER_ID = "MrLight/dse-qwen2-2b-mrl-v1"
GENERATOR_ID = "Qwen/Qwen2-VL-2B-Instruct"


def _facade_snippet() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Python facade", 1)
    assert len(section) == 2, "README.md has no '### Python facade' subsection"
    m = re.search(r"```python\n(.+?)\n```", section[1], re.S)
    assert m, "the Python facade subsection has no python block"
    return m.group(1)


def test_readme_facade_snippet_shape() -> None:
    code = _facade_snippet()
    lines = [line for line in code.splitlines() if line.strip()]
    # the advertised three-line use, right after the import
    assert lines[0] == "from dse import Collection"
    assert lines[1].startswith("col = Collection.create(") and ENCODER_ID in lines[1]
    assert lines[2].startswith("col.add(") and lines[3].startswith("hits = col.search(")
    assert "col.ask(" in code and GENERATOR_ID in code


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of small reports (A6-sized pages keep the page images small)."""
    root = tmp_path_factory.mktemp("facade") / "reports"
    root.mkdir()
    make_pdf(root / "q1.pdf", 2, seed=11, page_size=(298.0, 420.0))
    make_pdf(root / "q2.pdf", 1, seed=12, page_size=(298.0, 420.0), title="Second quarter")
    return root


def test_readme_facade_runs(
    reports: Path, tiny_model_dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from dse import Collection
    from dse.rag import Answer

    encoder = str(tiny_model_dir("dse-qwen2"))
    generator = str(tiny_model_dir("qwen2-vl-instruct"))
    code = (
        _facade_snippet()
        .replace(ENCODER_ID, encoder)
        .replace(GENERATOR_ID, generator)
        .replace('"reports/"', repr(str(reports)))
    )
    assert encoder in code and generator in code and str(reports) in code
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md:Python facade", "exec"), namespace)

    col, hits, answer = namespace["col"], namespace["hits"], namespace["answer"]
    assert isinstance(col, Collection) and col.directory == Path("my-collection")
    assert (tmp_path / "my-collection" / "collection.json").is_file()
    assert col.stats()["pages"] == 3 and col.stats()["documents"] == 2
    assert [h.rank for h in hits] == [1, 2, 3]
    assert {(Path(h.source).name, h.page) for h in hits} == {("q1.pdf", 1), ("q1.pdf", 2), ("q2.pdf", 1)}
    assert isinstance(answer, Answer) and isinstance(answer.answer, str)
    assert [h.page_id for h in answer.pages] == [h.page_id for h in col.search(answer.question, k=3)]
    printed = capsys.readouterr().out
    assert answer.answer in printed
    for page in answer.cited_pages:
        assert page.image_path in printed and Path(page.image_path).is_file()

    # A later session: reopen by directory; the encoder comes from the manifest.
    col.close()
    with Collection.open("my-collection", device="cpu") as again:
        reopened = again.search("quarterly revenue by region")
        assert [h.page_id for h in reopened] == [h.page_id for h in hits]
        assert [h.score for h in reopened] == pytest.approx([h.score for h in hits], abs=1e-5)
