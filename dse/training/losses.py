"""Contrastive losses for retriever fine-tuning.

Every loss takes one micro-batch laid out the same way: ``B`` queries, and ``N >= B``
documents whose first ``B`` rows are the queries' positives (query ``i`` -> document
``i``) and whose remaining ``N - B`` rows are hard negatives. Every other document in
the batch is a negative for every query (in-batch negatives). The batch builder
(:mod:`dse.training.data`) guarantees that no document of the batch is relevant to a
query other than through its own positive column, so no false negatives need masking.

* :class:`InfoNCELoss` - single vector (DSE, GME): cosine similarities / temperature,
  cross-entropy against the positive column; temperature 0.02 (the DSE paper's).
* :class:`MatryoshkaInfoNCELoss` - DSE's Matryoshka variant: the InfoNCE above for each
  dimension in ``dims`` (slice the first ``d`` values FIRST, then L2-normalise, as the
  encoder does at inference), averaged (optionally weighted).
* :func:`late_interaction_loss` - multi vector: colpali-engine's own ``ColbertLoss``
  (MaxSim over the padded token vectors, scores normalised by the query length,
  temperature 0.02), used directly; the hard negatives are extra columns of the same
  in-batch score matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

#: DSE paper / colpali-engine temperature.
DEFAULT_TEMPERATURE = 0.02


def info_nce(
    queries: torch.Tensor, documents: torch.Tensor, *, temperature: float = DEFAULT_TEMPERATURE
) -> torch.Tensor:
    """InfoNCE over L2-normalised vectors.

    ``queries`` ``(B, d)`` and ``documents`` ``(N, d)`` (``N >= B``, positives first), both
    already L2-normalised; returns the mean cross-entropy of ``queries @ documents.T /
    temperature`` (``(B, N)`` logits) against the targets ``0 .. B-1``. Computed in float32.
    """
    if queries.ndim != 2 or documents.ndim != 2 or documents.shape[0] < queries.shape[0]:
        raise ValueError(
            f"expected (B, d) queries and (N >= B, d) documents, got {tuple(queries.shape)} "
            f"and {tuple(documents.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logits = queries.float() @ documents.float().T / temperature
    targets = torch.arange(queries.shape[0], device=logits.device)
    return F.cross_entropy(logits, targets)


class InfoNCELoss(torch.nn.Module):
    """Single-vector InfoNCE on raw representations: slice to ``dim``, L2-normalise, :func:`info_nce`."""

    def __init__(self, dim: int | None = None, temperature: float = DEFAULT_TEMPERATURE) -> None:
        super().__init__()
        self.dim = dim
        self.temperature = float(temperature)

    def forward(self, queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
        """``queries`` ``(B, hidden)``, ``documents`` ``(N, hidden)`` un-normalised -> scalar loss."""
        q, d = queries[:, : self.dim], documents[:, : self.dim]
        return info_nce(F.normalize(q.float(), dim=-1), F.normalize(d.float(), dim=-1), temperature=self.temperature)


class MatryoshkaInfoNCELoss(torch.nn.Module):
    """Matryoshka InfoNCE: the weighted mean of :class:`InfoNCELoss` at each of ``dims``.

    For each ``d``: first ``d`` values of the raw representation, then L2-normalise (the
    order the DSE encoder uses at inference), then InfoNCE. ``weights`` default to 1 each.
    """

    def __init__(
        self, dims: Sequence[int], temperature: float = DEFAULT_TEMPERATURE, weights: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        dims = [int(d) for d in dims]
        if not dims or any(d < 1 for d in dims):
            raise ValueError(f"Matryoshka dims must be positive integers, got {dims}")
        if weights is not None and len(weights) != len(dims):
            raise ValueError(f"{len(weights)} Matryoshka weights for {len(dims)} dims")
        self.dims = dims
        self.weights = [float(w) for w in weights] if weights is not None else [1.0] * len(dims)
        self.temperature = float(temperature)

    def forward(self, queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
        hidden = queries.shape[-1]
        total = queries.new_zeros((), dtype=torch.float32)
        for d, w in zip(self.dims, self.weights, strict=True):
            if d > hidden:
                raise ValueError(f"Matryoshka dim {d} exceeds the representation size {hidden}")
            q = F.normalize(queries[:, :d].float(), dim=-1)
            p = F.normalize(documents[:, :d].float(), dim=-1)
            total = total + w * info_nce(q, p, temperature=self.temperature)
        return total / sum(self.weights)


def pad_token_vectors(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate ``(n_i, L_i, dim)`` padded token tensors along the batch, zero-padding ``L``."""
    length = max(t.shape[1] for t in tensors)
    return torch.cat([F.pad(t, (0, 0, 0, length - t.shape[1])) for t in tensors], dim=0)


class LateInteractionLoss(torch.nn.Module):
    """Multi-vector InfoNCE through colpali-engine's ``ColbertLoss`` (used as is).

    ``queries`` ``(B, Lq, dim)`` and ``documents`` ``(N, Ld, dim)`` are the models' padded
    token vectors (padding rows zero, as colpali-engine models return them). The score
    matrix is MaxSim ``(B, N)`` normalised by each query's token count, divided by the
    temperature; target of query ``i`` = document ``i``.
    """

    def __init__(self, temperature: float = DEFAULT_TEMPERATURE) -> None:
        super().__init__()
        from colpali_engine.loss import ColbertLoss

        self.temperature = float(temperature)
        self.loss = ColbertLoss(temperature=self.temperature, normalize_scores=True)

    def forward(self, queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
        if documents.shape[0] < queries.shape[0]:
            raise ValueError(f"{documents.shape[0]} documents for {queries.shape[0]} queries")
        return self.loss(queries.float(), documents.float())


def build_loss(
    kind: str,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    dim: int | None = None,
    matryoshka_dims: Sequence[int] | None = None,
) -> torch.nn.Module:
    """The loss of an encoder ``kind`` (``"single"`` / ``"multi"``); ``matryoshka_dims`` single only."""
    if kind == "multi":
        if matryoshka_dims:
            raise ValueError("Matryoshka dims apply to single-vector (DSE) models only")
        return LateInteractionLoss(temperature)
    if kind != "single":
        raise ValueError(f"unknown encoder kind {kind!r}")
    if matryoshka_dims:
        return MatryoshkaInfoNCELoss(matryoshka_dims, temperature)
    return InfoNCELoss(dim, temperature)
