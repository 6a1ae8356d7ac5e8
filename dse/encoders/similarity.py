"""Similarity maps: which patches of a page match which query tokens (multi-vector families).

For a ColPali-family encoder (``kind == "multi"``), a query's token vectors ``q_i`` and a
page's *image-token* vectors ``p_(y, x)`` (one per patch of the page's patch grid) give a
map ``S[i, y, x] = <q_i, p_(y, x)>`` per query token: the quantity MaxSim takes the maximum
of. The page is re-encoded here (the vectors stored in an index may be token-pooled, which
destroys the patch grid), through colpali-engine's own processor helpers:

* ``processor.process_images`` + the model forward give the page's token vectors;
* ``processor.get_image_mask`` marks the image tokens among them;
* ``processor.get_n_patches`` gives the patch grid ``(n_patches_x, n_patches_y)`` (with
  ``spatial_merge_size`` for the Qwen-based families, ``patch_size`` for ColPali);
* ``colpali_engine.interpretability.get_similarity_maps_from_embeddings`` computes the maps
  (colpali-engine's ``interpretability`` extra: einops, matplotlib, seaborn; part of dse's ``serve``
  extra).

The query vectors come from :meth:`Encoder.encode_queries`, the exact path a search uses.
Families whose image tokens do not form one patch grid (ColIdefics3's tiles plus global view)
raise :class:`SimilarityError`.
"""

from __future__ import annotations

import functools
import inspect
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from dse.encoders.base import Encoder
from dse.encoders.errors import EncoderError
from dse.extras import require

logger = logging.getLogger(__name__)

#: Families whose page image tokens form one (n_patches_y x n_patches_x) grid.
SUPPORTED_FAMILIES: tuple[str, ...] = ("colqwen2", "colqwen2.5", "colpali")

#: Colormap control points (dark blue -> teal -> yellow), interpolated to 256 entries.
_CMAP_POINTS = np.array(
    [
        (13, 8, 135),
        (84, 2, 163),
        (139, 10, 165),
        (185, 50, 137),
        (219, 92, 104),
        (244, 136, 73),
        (254, 188, 43),
        (240, 249, 33),
    ],
    dtype=np.float32,
)


class SimilarityError(EncoderError):
    """A similarity map cannot be computed (single-vector model, unsupported family, bad input)."""


@dataclass
class PageTokens:
    """A page re-encoded for similarity maps.

    ``vectors``: ``(T, d)`` float32, every non-padding token of the page sequence;
    ``image_mask``: ``(T,)`` bool, True at the image (patch) tokens, in row-major patch order;
    ``grid``: ``(n_patches_x, n_patches_y)`` as colpali-engine's ``get_n_patches`` returns it.
    """

    vectors: np.ndarray
    image_mask: np.ndarray
    grid: tuple[int, int]


@dataclass
class SimilarityMap:
    """Per-query-token similarity maps of one page.

    ``maps``: ``(n_query_tokens, n_patches_y, n_patches_x)`` float32 raw dot products (row ``y``
    is the y-th patch row from the top); ``tokens``: the query tokens, one per query vector;
    ``special``: True for special tokens (colpali-engine's query-augmentation tokens,
    end-of-text, ...); ``score``: the MaxSim score of the query against every token of the
    re-encoded page (the exact score an unpooled index gives).
    """

    maps: np.ndarray
    tokens: list[str]
    special: list[bool]
    score: float

    @property
    def grid(self) -> tuple[int, int]:
        """``(n_patches_x, n_patches_y)``."""
        return int(self.maps.shape[2]), int(self.maps.shape[1])

    def select(self, token: int | None = None) -> np.ndarray:
        """``(n_patches_y, n_patches_x)`` raw map: one token's, or (``None``) the mean over the
        non-special query tokens (all tokens when every token is special)."""
        if token is not None:
            if not 0 <= token < len(self.tokens):
                raise SimilarityError(f"token index {token} is out of range: the query has {len(self.tokens)} tokens")
            return self.maps[token]
        keep = [i for i, s in enumerate(self.special) if not s] or list(range(len(self.tokens)))
        return self.maps[keep].mean(axis=0)

    def normalized(self, token: int | None = None) -> np.ndarray:
        """:meth:`select` min-max scaled to ``[0, 1]`` (colpali-engine's ``normalize_similarity_map``)."""
        m = self.select(token)
        lo, hi = float(m.min()), float(m.max())
        return ((m - lo) / (hi - lo + 1e-10)).astype(np.float32)

    def overlay(
        self, image: Image.Image, token: int | None = None, *, alpha: float = 0.55, max_side: int | None = 1024
    ) -> Image.Image:
        """The page with the (normalised) map drawn over it as a heat map; RGB, at most ``max_side`` px."""
        page = image.convert("RGB")
        if max_side is not None and max(page.size) > max_side:
            page.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        heat = Image.fromarray((self.normalized(token) * 255).round().astype(np.uint8), mode="L")
        heat = heat.resize(page.size, Image.Resampling.BICUBIC)
        colored = Image.fromarray(colormap()[np.asarray(heat)], mode="RGB")
        return Image.blend(page, colored, alpha)

    def to_dict(self, token: int | None = None, *, per_token: bool = False) -> dict[str, Any]:
        """JSON-ready: grid, tokens, score, the normalised map as rows (``y``) of columns (``x``),
        its raw range, and with ``per_token`` every token's raw map."""
        raw = self.select(token)
        out: dict[str, Any] = {
            "grid": {"x": self.grid[0], "y": self.grid[1]},
            "tokens": self.tokens,
            "special": self.special,
            "token": token,
            "score": self.score,
            "raw_range": [float(raw.min()), float(raw.max())],
            "map": np.round(self.normalized(token), 4).tolist(),
        }
        if per_token:
            out["per_token"] = np.round(self.maps, 5).tolist()
        return out


@functools.cache
def colormap() -> np.ndarray:
    """``(256, 3)`` uint8 perceptual colormap (plasma-like), low = dark blue, high = yellow."""
    xs = np.linspace(0.0, 1.0, len(_CMAP_POINTS))
    t = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(t, xs, _CMAP_POINTS[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


def _check_encoder(encoder: Encoder) -> Any:
    if encoder.kind != "multi":
        raise SimilarityError(
            f"similarity maps need a multi-vector (ColPali-family) model; {encoder.family} is "
            "single-vector (one vector per page, no patches)"
        )
    if encoder.family not in SUPPORTED_FAMILIES:
        raise SimilarityError(
            f"similarity maps are not supported for {encoder.family} (its image tokens do not "
            f"form one patch grid); supported: {', '.join(SUPPORTED_FAMILIES)}"
        )
    processor = getattr(encoder, "processor", None)
    if processor is None or not hasattr(processor, "get_n_patches") or not hasattr(encoder, "model"):
        raise SimilarityError(f"{encoder!r} exposes no colpali-engine processor/model")
    return processor


def _n_patches(encoder: Any, image: Image.Image) -> tuple[int, int]:
    """colpali-engine's ``processor.get_n_patches`` with the geometry argument its family needs."""
    model, processor = encoder.model, encoder.processor
    params = inspect.signature(processor.get_n_patches).parameters
    if "spatial_merge_size" in params:
        nx, ny = processor.get_n_patches(image.size, spatial_merge_size=model.spatial_merge_size)
    else:
        try:
            patch_size = model.patch_size
        except AttributeError:  # colpali-engine's ColPali.patch_size predates transformers 5's PaliGemma layout
            patch_size = model.config.vision_config.patch_size
        nx, ny = processor.get_n_patches(image.size, patch_size=int(patch_size))
    return int(nx), int(ny)


def encode_page_tokens(encoder: Encoder, image: Image.Image) -> PageTokens:
    """Re-encode one page image with ``encoder`` keeping the image-token mask and the patch grid."""
    import torch

    from dse.encoders.inputs import check_image

    _check_encoder(encoder)
    page = check_image(image)
    enc: Any = encoder
    batch = enc.processor.process_images([page])
    mask = enc.processor.get_image_mask(batch)[0]
    device_batch = {k: (v.to(enc.device) if isinstance(v, torch.Tensor) else v) for k, v in dict(batch).items()}
    with torch.inference_mode():
        out = enc.model(**device_batch)[0]
    keep = batch["attention_mask"][0].bool()
    vectors = out[keep.to(out.device)].float().cpu().numpy()
    image_mask = mask[keep].cpu().numpy().astype(bool)
    grid = _n_patches(enc, page)
    if int(image_mask.sum()) != grid[0] * grid[1]:
        raise SimilarityError(
            f"{encoder.family}: the page has {int(image_mask.sum())} image tokens but the patch "
            f"grid is {grid[0]} x {grid[1]}; cannot draw a map"
        )
    return PageTokens(vectors=vectors, image_mask=image_mask, grid=grid)


def query_tokens(encoder: Encoder, text: str) -> tuple[np.ndarray, list[str], list[bool]]:
    """``(vectors (Q, d), tokens, special flags)`` of a text query, through ``encode_queries``."""
    _check_encoder(encoder)
    enc: Any = encoder
    vectors = np.asarray(encoder.encode_queries(texts=[text])[0], dtype=np.float32)
    batch = enc.processor.process_queries([text])
    ids = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
    tokenizer = getattr(enc.processor, "tokenizer", enc.processor)
    if len(ids) != vectors.shape[0]:  # pragma: no cover - guards a colpali-engine change
        raise SimilarityError(f"query tokens ({len(ids)}) and query vectors ({vectors.shape[0]}) do not line up")
    special_ids = set(getattr(tokenizer, "all_special_ids", []))
    tokens = [tokenizer.decode([i]) for i in ids]
    return vectors, tokens, [i in special_ids for i in ids]


def similarity_map(encoder: Encoder, image: Image.Image, text: str, *, page: PageTokens | None = None) -> SimilarityMap:
    """Similarity maps of text query ``text`` over page ``image`` (see the module doc).

    ``page`` reuses an earlier :func:`encode_page_tokens` of the same image (e.g. from a cache).
    """
    import torch

    if not isinstance(text, str) or not text.strip():
        raise SimilarityError("empty query: a similarity map needs a query text")
    require("serve")  # colpali-engine's interpretability extra (einops, matplotlib, seaborn)
    page = page if page is not None else encode_page_tokens(encoder, image)
    q, tokens, special = query_tokens(encoder, text)
    from colpali_engine.interpretability.similarity_map_utils import get_similarity_maps_from_embeddings

    maps = get_similarity_maps_from_embeddings(
        image_embeddings=torch.from_numpy(page.vectors)[None],
        query_embeddings=torch.from_numpy(q)[None],
        n_patches=[page.grid],
        image_mask=torch.from_numpy(page.image_mask)[None],
    )[0]  # (Q, n_x, n_y)
    score = float((q @ page.vectors.T).max(axis=1).sum())
    return SimilarityMap(
        maps=maps.float().numpy().transpose(0, 2, 1).copy(), tokens=tokens, special=special, score=score
    )
