"""The Python facade end to end: create -> add -> search -> ask, then reopen in a later session.

The README shows this use (three lines to index a folder and search it, one more to answer
from it); tests/docs/test_examples.py runs the README's own example as written. This test
checks what that example does, with tiny offline models: what is stored, which pages come
back, which pages reach the generator, and that a reopened collection ranks the same.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.docs import make_pdf


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of small reports (A6-sized pages keep the page images small)."""
    root = tmp_path_factory.mktemp("facade") / "reports"
    root.mkdir()
    make_pdf(root / "q1.pdf", 2, seed=11, page_size=(298.0, 420.0))
    make_pdf(root / "q2.pdf", 1, seed=12, page_size=(298.0, 420.0), title="Second quarter")
    return root


def test_facade_create_add_search_ask_reopen(
    reports: Path, tiny_model_dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dse import Collection
    from dse.rag import Answer, ask

    encoder = str(tiny_model_dir("dse-qwen2"))
    generator = str(tiny_model_dir("qwen2-vl-instruct"))
    monkeypatch.chdir(tmp_path)

    col = Collection.create("my-collection", model=encoder)
    col.add(str(reports))
    hits = col.search("quarterly revenue by region")
    answer = ask(col, "How did revenue change in 2024?", generator=generator, k=3)

    assert col.directory == Path("my-collection")
    assert (tmp_path / "my-collection" / "collection.json").is_file()
    assert col.stats()["pages"] == 3 and col.stats()["documents"] == 2
    assert [h.rank for h in hits] == [1, 2, 3]
    assert {(Path(h.source).name, h.page) for h in hits} == {("q1.pdf", 1), ("q1.pdf", 2), ("q2.pdf", 1)}
    assert all(Path(h.image_path).is_file() for h in hits)
    assert isinstance(answer, Answer) and isinstance(answer.answer, str)
    assert [h.page_id for h in answer.pages] == [h.page_id for h in col.search(answer.question, k=3)]
    assert answer.cited_pages and all(Path(p.image_path).is_file() for p in answer.cited_pages)

    # A later session: reopen by directory; the encoder comes from the manifest.
    col.close()
    with Collection.open("my-collection", device="cpu") as again:
        reopened = again.search("quarterly revenue by region")
        assert [h.page_id for h in reopened] == [h.page_id for h in hits]
        assert [h.score for h in reopened] == pytest.approx([h.score for h in hits], abs=1e-5)
