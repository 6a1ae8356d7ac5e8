"""The request and response bodies of the HTTP API (pydantic models; the OpenAPI document is built from them).

Request models depend on the server's :class:`~dse.server.limits.Limits` (``k`` bounds, text length,
number of filters), so they are built per app by :func:`request_models`; response models are fixed.

Every constraint the server enforces on a request field is in its schema, so a schema-valid request
is accepted and a schema-invalid one is refused with 422: texts are non-blank (:data:`NON_BLANK`)
and at most ``max_text_chars`` long, ``k`` is a strict integer in ``[1, max_k]`` (``true`` is not
1), unknown fields are refused by name.
"""

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from dse.server.limits import Limits

#: What "not blank" means, as a regular expression the JSON Schema, pydantic (Rust regex) and
#: schemathesis/hypothesis (Python ``re``) all read the same way: at least one character that is
#: not whitespace in Python's ``str.isspace`` sense (spelled out, since ``\\s`` differs between engines).
NON_BLANK = "[^\\t-\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"

#: Metadata filter keys: 1-128 characters, no control characters (SQLite JSON paths cannot hold NUL).
FILTER_KEY = "^[^\\x00-\\x1f\\x7f]+$"
MAX_FILTER_KEY_CHARS = 128

#: Largest page id (SQLite rowids are signed 64-bit integers).
MAX_PAGE_ID = 2**63 - 1


def _json_integer(value: Any) -> Any:
    """JSON Schema's integer: a number with no fractional part (``3`` or ``3.0``); never a boolean or a
    string, which pydantic's lax mode would turn into 1 / 3."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


def json_integer(minimum: int, maximum: int, description: str) -> Any:
    """An integer in ``[minimum, maximum]`` read the JSON Schema way (see :func:`_json_integer`)."""
    return Annotated[int, Field(ge=minimum, le=maximum, description=description), BeforeValidator(_json_integer)]


def text_type(limits: Limits, description: str) -> Any:
    """A non-blank string of at most ``limits.max_text_chars`` characters (strict: numbers are not texts)."""
    return Annotated[
        StrictStr,
        StringConstraints(min_length=1, max_length=limits.max_text_chars, pattern=NON_BLANK),
        Field(description=description),
    ]


def filters_type(limits: Limits) -> Any:
    """Metadata filters ``{key: value}`` (string equality after converting numbers/booleans, AND).

    The JSON schema is spelled out: pydantic would move the key pattern to ``patternProperties``,
    which lets other keys through in the schema while the model refuses them."""
    schema = {
        "type": "object",
        "maxProperties": limits.max_filters,
        "propertyNames": {"minLength": 1, "maxLength": MAX_FILTER_KEY_CHARS, "pattern": FILTER_KEY},
        "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]},
        "description": "metadata filters: documents whose metadata has every key: value (string equality, AND); "
        f"at most {limits.max_filters} keys",
        "examples": [{"team": "finance"}],
    }
    key = Annotated[str, StringConstraints(min_length=1, max_length=MAX_FILTER_KEY_CHARS, pattern=FILTER_KEY)]
    return Annotated[
        dict[key, StrictStr | StrictInt | StrictFloat | StrictBool],
        Field(max_length=limits.max_filters),
        WithJsonSchema(schema),
    ]


class _Closed(BaseModel):
    """A request body that refuses unknown fields, naming the field and the accepted ones."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [key for key in data if key not in cls.model_fields]
            if unknown:
                raise PydanticCustomError(
                    "extra_forbidden",
                    "unknown field '{field}'; the accepted fields are {allowed}",
                    {"field": str(unknown[0]), "allowed": ", ".join(cls.model_fields)},
                )
            if "filters" in data and "where" in data:
                raise PydanticCustomError(
                    "filters_and_where", "'where' is another name for 'filters': give one of them, not both"
                )
        return data


def _form_schema_extra(schema: dict[str, Any]) -> None:
    """SearchForm's schema: fusion=rrf needs a text (``dependentRequired``: fuzzers and client
    generators read it more reliably than ``if``/``then`` or alternatives under ``anyOf``); no null
    defaults (a multipart field is absent or has a value)."""
    for prop in schema.get("properties", {}).values():
        if prop.get("default", 0) is None:
            del prop["default"]
    schema["dependentRequired"] = {"fusion": ["text"]}


@dataclass(frozen=True)
class RequestModels:
    """The request bodies of one app (their bounds come from its limits)."""

    search: type[BaseModel]
    search_form: type[BaseModel]
    answer: type[BaseModel]


def request_models(limits: Limits) -> RequestModels:
    """The request body models for ``limits``."""
    # built here (annotations are evaluated when each class is created: no `from __future__ import annotations`)
    filters_t = filters_type(limits)
    k_field = json_integer(1, limits.max_k, f"number of hits (1-{limits.max_k})")
    query_text = text_type(limits, "the query text")
    fused_text = text_type(limits, "text: with an image, a fused text + image query")
    question_text = text_type(limits, "the question")
    both: JsonDict = {"not": {"required": ["filters", "where"]}}

    class SearchRequest(_Closed):
        """A text search (image and fused queries: send multipart/form-data with an ``image`` file)."""

        model_config = ConfigDict(title="SearchRequest", json_schema_extra=both)
        text: query_text  # type: ignore[valid-type]
        k: k_field = 10  # type: ignore[valid-type]
        filters: filters_t | None = None  # type: ignore[valid-type]
        where: filters_t | None = Field(None, description="another name for filters")  # type: ignore[valid-type]
        fusion: Literal["none"] | None = Field(
            None,
            description="JSON queries are text-only, so there is nothing to fuse; reciprocal rank fusion "
            "(fusion=rrf) takes a text and an image: send multipart/form-data",
        )

        @model_validator(mode="before")
        @classmethod
        def _rrf_needs_an_image(cls, data: Any) -> Any:
            if isinstance(data, dict) and data.get("fusion") == "rrf":
                raise PydanticCustomError(
                    "rrf_needs_image",
                    "fusion 'rrf' ranks a text and an image separately: send both as multipart/form-data",
                )
            return data

    class SearchForm(_Closed):
        """The fields of a multipart search: an image query, or a fused text + image query.

        ``image`` is a file part; ``filters`` a JSON object as the part's text; ``fusion=rrf`` needs a
        ``text``. (A text-only query is JSON. Multipart fields are never null, so the optional ones
        have no null in their schema.)"""

        model_config = ConfigDict(title="SearchForm", json_schema_extra=_form_schema_extra)
        image: Any = Field(
            ...,
            description="the query image (PNG, JPEG, WebP, GIF, BMP, TIFF...)",
            json_schema_extra={"type": "string", "format": "binary"},
        )
        text: fused_text = None  # type: ignore[valid-type]
        k: Annotated[int, Field(ge=1, le=limits.max_k, description=f"number of hits (1-{limits.max_k})")] = 10
        filters: filters_t = None  # type: ignore[valid-type]
        fusion: Literal["rrf"] = Field(
            None,  # type: ignore[arg-type]  # absent = a fused query; never null in a form
            description="'rrf': rank the text and the image separately and merge the two rankings (reciprocal "
            "rank fusion) instead of one fused query; needs a text. Leave it out for a fused query.",
        )

        @model_validator(mode="after")
        def _rrf_needs_text(self) -> Any:
            if self.fusion == "rrf" and self.text is None:
                raise PydanticCustomError(
                    "rrf_needs_text", "fusion 'rrf' ranks a text and the image separately: give a text too"
                )
            return self

    class AnswerRequest(_Closed):
        """A question answered from the top pages (visual RAG)."""

        model_config = ConfigDict(title="AnswerRequest", json_schema_extra=both)
        question: question_text  # type: ignore[valid-type]
        k: json_integer(1, limits.max_answer_k, f"pages given to the generator (1-{limits.max_answer_k})") = 3  # type: ignore[valid-type]
        filters: filters_t | None = None  # type: ignore[valid-type]
        where: filters_t | None = Field(None, description="another name for filters")  # type: ignore[valid-type]

    return RequestModels(search=SearchRequest, search_form=SearchForm, answer=AnswerRequest)


def where_of(filters: dict[str, Any] | None) -> dict[str, str] | None:
    """Validated filters as the collection's ``where`` (values as strings: ``true``/``false``, ``2024``,
    ``1.5``); ``None`` when there are none."""
    if not filters:
        return None
    return {
        key: ("true" if value else "false") if isinstance(value, bool) else str(value) for key, value in filters.items()
    }


def search_form_media_type() -> dict[str, Any]:
    """The multipart/form-data media type object of ``POST /search`` (its schema: ``SearchForm``)."""
    return {
        "schema": {"$ref": "#/components/schemas/SearchForm"},
        "encoding": {
            "image": {"contentType": "image/png, image/jpeg, image/webp, image/gif, image/bmp, image/tiff"},
            "filters": {"contentType": "application/json"},
        },
    }


# ------------------------------------------------------------------ responses
class ErrorOut(BaseModel):
    """An error: one line saying what is wrong."""

    detail: str = Field(..., examples=["no page 12 in this collection"])


class ErrorItem(BaseModel):
    """One validation error: where (``["body", "k"]``, ``["query", "width"]``...), what, and its kind."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorOut(BaseModel):
    """A request that does not match the API's schema (422): the first problem in one line, then all of them."""

    detail: str = Field(..., examples=["body.k: Input should be a valid integer"])
    errors: list[ErrorItem]


class HealthOut(BaseModel):
    status: Literal["ok"]


class CollectionInfo(BaseModel):
    documents: int
    pages: int
    vectors: int
    kind: str = Field(..., description="'single' (one vector per page) or 'multi' (one vector per patch)")
    index: str
    family: str | None
    model: str | None
    dim: int | None


class Features(BaseModel):
    answer: bool = Field(..., description="POST /answer is available (the server runs with a generator)")
    similarity: bool = Field(..., description="GET /pages/{page_id}/similarity is available (multi-vector)")
    micro_batch: bool
    image_queries: bool
    fused_queries: bool


class LimitsOut(BaseModel):
    max_upload_bytes: int
    max_image_pixels: int
    max_k: int
    max_answer_k: int
    max_text_chars: int
    max_filters: int


class BatchingOut(BaseModel):
    batches: int
    queries: int
    largest: int
    mean_batch: float


class InfoOut(BaseModel):
    collection: CollectionInfo
    features: Features
    limits: LimitsOut
    batching: BatchingOut | None = Field(..., description="micro-batching counters (null when it is off)")


class HitOut(BaseModel):
    rank: int
    score: float
    source: str
    page: int
    doc_id: str
    page_id: int
    title: str | None = None
    meta: dict[str, Any] = {}
    image_url: str
    thumbnail_url: str


class QueryOut(BaseModel):
    """The query as the server understood it."""

    text: str | None
    image: bool
    k: int
    filters: dict[str, str] | None
    fusion: Literal["rrf"] | None


class SearchResponse(BaseModel):
    hits: list[HitOut]
    query: QueryOut
    took_ms: float


class AnswerPage(HitOut):
    number: int = Field(..., description="the page's number [i] in the generator's prompt")
    cited: bool = Field(..., description="whether the answer cites it")


class AnswerResponse(BaseModel):
    question: str
    answer: str
    pages: list[AnswerPage] = Field(..., description="the retrieved pages given to the generator, in rank order")
    citations: list[int] = Field(..., description="page numbers the answer cites")
    cited_pages: list[AnswerPage] = Field(..., description="the cited pages (all pages when the answer cites none)")
    cited_pages_source: str = Field(..., description="'citations' or 'all_retrieved'")
    generator: str | None = None
    took_ms: float


class Grid(BaseModel):
    x: int = Field(..., description="patches across")
    y: int = Field(..., description="patches down")


class SimilarityOut(BaseModel):
    """A similarity map as JSON (``format=json``)."""

    page_id: int
    text: str
    grid: Grid
    tokens: list[str] = Field(..., description="the query's tokens")
    special: list[bool] = Field(..., description="whether each token is a special/augmentation token")
    token: int | None = Field(..., description="the token of this map (null: the mean of the text tokens)")
    score: float = Field(..., description="MaxSim of the query over the re-encoded page")
    raw_range: list[float] = Field(..., description="[min, max] of the map before normalisation")
    map: list[list[float]] = Field(..., description="y rows of x values in [0, 1]")
    per_token: list[list[list[float]]] | None = Field(None, description="with per_token=true: every token's raw map")


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses (422: :class:`ValidationErrorOut`)."""
    descriptions = {
        400: "Bad input: unreadable JSON, multipart form or image",
        401: "Missing or wrong API key",
        404: "No such page (or nothing matches)",
        413: "Request body or image too large",
        415: "Unsupported content type",
        422: "The request does not match this schema (the first problem in detail, all in errors)",
        503: "Service unavailable",
    }
    return {
        s: {"model": ValidationErrorOut if s == 422 else ErrorOut, "description": descriptions[s]} for s in statuses
    }
