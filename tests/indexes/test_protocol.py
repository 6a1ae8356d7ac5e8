"""Both index classes satisfy the VectorIndex protocol: at run time (every member, through a
save/load round trip) and statically (mypy checks assignments to ``VectorIndex``)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from indexes import MultiVectorIndex, SingleVectorIndex
from indexes.protocol import VectorIndex

DIM = 8
ROOT = Path(__file__).resolve().parents[2]


def _vectors(rng: np.random.Generator, kind: str, n: int):
    if kind == "single":
        x = rng.standard_normal((n, DIM)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    return [rng.standard_normal((int(rng.integers(2, 6)), DIM)).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("kind", ["single", "multi"])
def test_indexes_are_vector_indexes(kind: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cls = SingleVectorIndex if kind == "single" else MultiVectorIndex
    idx: VectorIndex = cls(DIM)
    assert isinstance(idx, VectorIndex) and idx.dim == DIM
    docs = _vectors(rng, kind, 6)
    idx.add(docs, [10, 11, 12, 13, 14, 15])
    assert len(idx) == 6 and idx.ids.tolist() == [10, 11, 12, 13, 14, 15]
    expected_vectors = 6 if kind == "single" else sum(len(d) for d in docs)
    assert idx.num_vectors == expected_vectors
    assert idx.remove([11, 99]) == 1
    idx.compact()
    idx.save(tmp_path / "idx")
    again = cls.load(tmp_path / "idx", device="cpu")
    assert isinstance(again, VectorIndex) and len(again) == 5 and 11 not in again.ids.tolist()
    queries = docs[:1]
    hits = again.search(queries, 2, allowed_ids=np.array([12, 13], np.int64))
    assert len(hits) == 1 and {i for i, _ in hits[0]} <= {12, 13}
    assert hits == idx.search(queries, 2, allowed_ids=np.array([12, 13], np.int64))


def test_mypy_checks_the_protocol(tmp_path: Path) -> None:
    """Assignments of both classes to ``VectorIndex`` type-check; a class missing ``compact`` does not."""
    from mypy import api

    good = tmp_path / "good_index_types.py"
    good.write_text(
        textwrap.dedent(
            """
            from pathlib import Path

            from indexes import MultiVectorIndex, SingleVectorIndex
            from indexes.protocol import VectorIndex

            single: VectorIndex = SingleVectorIndex(8)
            multi: VectorIndex = MultiVectorIndex(8)
            loaded: VectorIndex = MultiVectorIndex.load(Path("x"), device="cpu")
            kinds: list[type[VectorIndex]] = [SingleVectorIndex, MultiVectorIndex]
            """
        )
    )
    bad = tmp_path / "bad_index_types.py"
    bad.write_text(
        textwrap.dedent(
            """
            from indexes import SingleVectorIndex
            from indexes.protocol import VectorIndex


            class NoCompact(SingleVectorIndex):
                compact = None  # type: ignore[assignment]


            broken: VectorIndex = NoCompact(8)
            """
        )
    )
    out, err, status = api.run(
        [
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            "--no-warn-unused-ignores",
            str(good),
            str(bad),
        ]
    )
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert status == 1 and errors, out + err
    # by file name: with the shared cache, mypy may report an unchanged file under the path of an earlier run
    assert all(Path(line.split(":", 1)[0]).name == bad.name for line in errors), out
    assert any('variable has type "VectorIndex"' in line for line in errors), out
