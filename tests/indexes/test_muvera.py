"""MUVERA encodings against a loop-by-loop reference of the algorithm in :mod:`indexes.muvera`."""

from __future__ import annotations

import numpy as np
import pytest

from indexes import IndexInputError
from indexes.muvera import Muvera


def _reference(m: Muvera, item: np.ndarray, *, document: bool) -> np.ndarray:
    """One item's encoding, one repetition and bucket at a time, with the encoder's own random matrices."""
    hashes = m._hash.numpy()
    proj = None if m._proj is None else m._proj.numpy()
    blocks = []
    for rep in range(m.r_reps):
        bits = item @ hashes[:, rep * m.k_sim : (rep + 1) * m.k_sim] > 0
        codes = (bits * (1 << np.arange(m.k_sim))).sum(axis=1)
        p = item if proj is None else item @ proj[:, rep * m.d_proj : (rep + 1) * m.d_proj]
        for bucket in range(m.buckets):
            inside = np.flatnonzero(codes == bucket)
            if inside.size:
                value = p[inside].mean(0) if document else p[inside].sum(0)
            elif document:  # the vector whose code is nearest in Hamming distance, earliest on ties
                dist = [bin(int(c) ^ bucket).count("1") for c in codes]
                value = p[int(np.argmin(dist))]
            else:
                value = np.zeros(m.d_proj, np.float32)
            blocks.append(value)
    return np.concatenate(blocks)


@pytest.mark.parametrize(
    ("k_sim", "d_proj", "r_reps"),
    [(3, 8, 4), (5, 16, 2), (2, 16, 3), (1, 16, 2)],  # d_proj == dim (16): no projection
)
def test_encodings_match_the_reference(k_sim: int, d_proj: int, r_reps: int) -> None:
    rng = np.random.default_rng(0)
    items = [rng.standard_normal((int(n), 16)).astype(np.float32) for n in (1, 2, 7, 40, 3)]
    m = Muvera(16, k_sim=k_sim, d_proj=d_proj, r_reps=r_reps, seed=3)
    docs, queries = m.encode_documents(items), m.encode_queries(items)
    assert docs.shape == queries.shape == (len(items), m.output_dim) == (len(items), r_reps * 2**k_sim * d_proj)
    for i, item in enumerate(items):
        np.testing.assert_allclose(docs[i], _reference(m, item, document=True), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(queries[i], _reference(m, item, document=False), rtol=1e-5, atol=1e-5)
    # rebuilt from its parameters, the encoder gives bit-identical encodings
    assert np.array_equal(Muvera.from_dict(m.to_dict()).encode_documents(items), docs)


def test_bad_parameters_are_one_line_errors() -> None:
    for kwargs, message in [
        ({"k_sim": 11}, "k_sim must be at most 10"),
        ({"d_proj": 17}, "d_proj must be at most 16"),
        ({"r_reps": 0}, "r_reps must be a positive integer"),
        ({"seed": -1}, "seed must be a non-negative integer"),
    ]:
        with pytest.raises(IndexInputError, match=message):
            Muvera(16, **kwargs)
