"""The layout of a Qdrant collection holding page vectors, and its creation parameters.

Single-vector models: one named dense vector ``dense`` (cosine, HNSW).

Multi-vector models (ColPali family), after Qdrant's ColPali guidance:

* ``maxsim``: the page's patch vectors as one multivector, compared with ``MAX_SIM`` over dot
  products, stored as float16 and **not** HNSW-indexed (``m=0``): it only rescores candidates;
* ``prefetch``: one vector per page, HNSW-indexed, that selects the candidates. ``"muvera"``
  (default): the MUVERA fixed-dimensional encoding of :mod:`indexes.muvera` (dot product), the
  same code and parameters as the local approximate index; ``"mean"``: the L2-normalised mean of
  the page's vectors (cosine), as in Qdrant's ColPali optimisation post.

Why float16 and not uint8 for the multivector: Qdrant casts both the stored and the query vectors
of a uint8 vector to bytes, while ColPali vectors are signed unit-norm floats; no affine byte
encoding keeps MaxSim's ranking. Memory is saved instead with ``quantization`` (scalar int8 or
binary, kept in RAM) and rescoring with the float16 originals.

A search is one query: ``prefetch`` (``n_candidates`` by the prefetch vector, filter applied),
then exact MaxSim over those candidates, then ``limit=k``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from indexes.errors import IndexInputError

DENSE = "dense"
MULTI = "maxsim"
PREFETCH = "prefetch"
KINDS = ("single", "multi")
PREFETCH_KINDS = ("muvera", "mean")
QUANTIZATIONS = (None, "scalar", "binary")
WRITE_ORDERINGS = ("weak", "medium", "strong")

#: Payload fields every point carries and their index types (besides ``meta.*``).
BASE_PAYLOAD_INDEXES = {"doc_id": "keyword", "source": "keyword", "page": "integer"}


def _pos_int(value: Any, name: str, *, allow_zero: bool = False, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise IndexInputError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


@dataclass
class Schema:
    """Everything that fixes a collection's layout and search behaviour (recorded in ``index.json``).

    ``n_candidates``: pages the prefetch stage hands to MaxSim (0: no prefetch, exact MaxSim over
    every page; at least ``k`` are always fetched). ``hnsw_m``/``ef_construct``: HNSW of the dense
    or prefetch vector; ``hnsw_ef``: its search-time beam (``None``: Qdrant's default).
    ``quantization``: ``None``, ``"scalar"`` (int8) or ``"binary"``, on every vector, in RAM, with
    ``rescore`` by the originals and ``oversampling``. ``on_disk``: keep the original vectors on disk
    (memory-mapped). ``shard_number``, ``replication_factor``, ``write_consistency_factor``:
    cluster settings at creation (``None``: the server's default). ``write_ordering``: of upserts
    and deletes. ``pool_factor``: hierarchical token pooling of pages before upload (multi only).
    """

    kind: str
    dim: int
    prefetch: str | None = None
    muvera: dict[str, int] | None = None
    n_candidates: int = 200
    hnsw_m: int = 16
    ef_construct: int = 100
    hnsw_ef: int | None = 128
    quantization: str | None = None
    rescore: bool = True
    oversampling: float = 2.0
    on_disk: bool = False
    shard_number: int | None = None
    replication_factor: int | None = None
    write_consistency_factor: int | None = None
    write_ordering: str = "medium"
    pool_factor: int | None = None
    multivector_datatype: str = "float16"

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, kind: str, dim: int, **params: Any) -> Schema:
        """A checked schema; unknown parameters raise :class:`IndexInputError` naming the allowed ones."""
        allowed = {f.name for f in fields(cls)} - {"kind", "dim", "multivector_datatype"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise IndexInputError(f"unknown Qdrant parameter(s) {unknown}; allowed: {', '.join(sorted(allowed))}")
        if kind not in KINDS:
            raise IndexInputError(f"kind must be 'single' or 'multi', got {kind!r}")
        schema = cls(kind=kind, dim=_pos_int(dim, "dim"), **params)
        schema.check()
        return schema

    def check(self) -> None:
        self.n_candidates = _pos_int(self.n_candidates, "n_candidates", allow_zero=True)
        self.hnsw_m = _pos_int(self.hnsw_m, "hnsw_m")
        self.ef_construct = _pos_int(self.ef_construct, "ef_construct")
        self.hnsw_ef = _pos_int(self.hnsw_ef, "hnsw_ef", allow_none=True)
        for name in ("shard_number", "replication_factor", "write_consistency_factor"):
            setattr(self, name, _pos_int(getattr(self, name), name, allow_none=True))
        if self.quantization == "none":
            self.quantization = None
        if self.quantization not in QUANTIZATIONS:
            raise IndexInputError(f"quantization must be none, scalar or binary, got {self.quantization!r}")
        if isinstance(self.oversampling, bool) or not isinstance(self.oversampling, int | float):
            raise IndexInputError(f"oversampling must be a number >= 1, got {self.oversampling!r}")
        if self.oversampling < 1:
            raise IndexInputError(f"oversampling must be a number >= 1, got {self.oversampling!r}")
        self.oversampling = float(self.oversampling)
        if self.write_ordering not in WRITE_ORDERINGS:
            raise IndexInputError(f"write_ordering must be weak, medium or strong, got {self.write_ordering!r}")
        for name in ("rescore", "on_disk"):
            if not isinstance(getattr(self, name), bool):
                raise IndexInputError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.kind == "single":
            if self.prefetch is not None or self.muvera is not None or self.pool_factor is not None:
                raise IndexInputError("prefetch, muvera and pool_factor apply to multi-vector collections only")
            return
        if self.prefetch is None:
            self.prefetch = "muvera"
        if self.prefetch not in PREFETCH_KINDS:
            raise IndexInputError(f"prefetch must be 'muvera' or 'mean', got {self.prefetch!r}")
        if self.prefetch == "muvera":
            from indexes.muvera import Muvera

            params = {"dim": self.dim, **(self.muvera or {})}
            if params["dim"] != self.dim:
                raise IndexInputError(f"MUVERA dim {params['dim']} differs from the vectors' dim {self.dim}")
            defaults = Muvera(self.dim).to_dict()
            self.muvera = Muvera.from_dict({**defaults, **params}).to_dict()
        elif self.muvera is not None:
            raise IndexInputError("muvera parameters apply to prefetch='muvera' only")
        from indexes.pooling import check_pool_factor

        self.pool_factor = check_pool_factor(self.pool_factor)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        known = {f.name for f in fields(cls)}
        schema = cls(**{k: v for k, v in data.items() if k in known})
        schema.check()
        return schema

    # ------------------------------------------------------------ properties
    @property
    def search_vector(self) -> str:
        """The vector the final stage scores with."""
        return DENSE if self.kind == "single" else MULTI

    @property
    def prefetch_dim(self) -> int:
        if self.prefetch == "muvera":
            assert self.muvera is not None
            m = self.muvera
            return int(m["r_reps"]) * (1 << int(m["k_sim"])) * int(m["d_proj"])
        return self.dim

    def creation_options(self) -> dict[str, Any]:
        """Keyword arguments of ``QdrantClient.create_collection`` (besides the name)."""
        from qdrant_client import models

        hnsw = models.HnswConfigDiff(m=self.hnsw_m, ef_construct=self.ef_construct)
        vectors: dict[str, Any]
        if self.kind == "single":
            vectors = {
                DENSE: models.VectorParams(
                    size=self.dim, distance=models.Distance.COSINE, hnsw_config=hnsw, on_disk=self.on_disk or None
                )
            }
        else:
            vectors = {
                MULTI: models.VectorParams(
                    size=self.dim,
                    distance=models.Distance.DOT,
                    datatype=models.Datatype.FLOAT16,
                    multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
                    hnsw_config=models.HnswConfigDiff(m=0),  # rescoring only: no graph over patch vectors
                    on_disk=self.on_disk or None,
                ),
                PREFETCH: models.VectorParams(
                    size=self.prefetch_dim,
                    distance=models.Distance.DOT if self.prefetch == "muvera" else models.Distance.COSINE,
                    hnsw_config=hnsw,
                    on_disk=self.on_disk or None,
                ),
            }
        quantization: Any = None
        if self.quantization == "scalar":
            quantization = models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.99, always_ram=True)
            )
        elif self.quantization == "binary":
            quantization = models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True))
        options: dict[str, Any] = {"vectors_config": vectors, "quantization_config": quantization}
        for name in ("shard_number", "replication_factor", "write_consistency_factor"):
            if getattr(self, name) is not None:
                options[name] = getattr(self, name)
        return options

    def expected_vectors(self) -> dict[str, tuple[int, bool]]:
        """``{vector name: (size, is multivector)}`` the collection must have."""
        if self.kind == "single":
            return {DENSE: (self.dim, False)}
        return {MULTI: (self.dim, True), PREFETCH: (self.prefetch_dim, False)}

    def mismatch(self, info: Any) -> str | None:
        """Why the existing collection ``info`` (``CollectionInfo``) does not fit, or ``None``."""
        vectors = getattr(getattr(info.config, "params", None), "vectors", None)
        if not isinstance(vectors, dict):
            return "it has no named vectors"
        for name, (size, multi) in self.expected_vectors().items():
            params = vectors.get(name)
            if params is None:
                return f"it has no vector named {name!r} (has {', '.join(sorted(vectors)) or 'none'})"
            if params.size != size:
                return f"its vector {name!r} has size {params.size}, expected {size}"
            if (params.multivector_config is not None) != multi:
                return f"its vector {name!r} is {'not ' if multi else ''}a multivector"
        return None

    def search_params(self, final: bool) -> Any:
        """``SearchParams`` of a stage (``None`` when nothing differs from Qdrant's defaults)."""
        from qdrant_client import models

        quant = None
        if self.quantization is not None:
            quant = models.QuantizationSearchParams(
                rescore=self.rescore, oversampling=self.oversampling if not final else None
            )
        ef = self.hnsw_ef if not (final and self.kind == "multi") else None
        if quant is None and ef is None:
            return None
        return models.SearchParams(hnsw_ef=ef, quantization=quant)

    def write_ordering_model(self) -> Any:
        from qdrant_client import models

        return models.WriteOrdering(self.write_ordering)
