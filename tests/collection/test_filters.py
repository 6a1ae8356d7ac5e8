"""Metadata filters: the ``where`` syntax, its errors, and its SQL over real SQLite JSON metadata."""

from __future__ import annotations

from pathlib import Path

import pytest

from dse.collection import CollectionInputError, FilterError
from dse.collection.filters import Condition, parse_condition, parse_where
from dse.collection.store import MetadataStore

DOCS = {
    "a": {"team": "finance", "year": 2021, "score": 4.5, "public": True, "tags": ["x"]},
    "b": {"team": "hr", "year": "2023", "score": "7", "public": False},
    "c": {"team": "finance", "year": 2024.0, "odd key": "v", 'quote"key': "q"},
    "d": {},
}


@pytest.fixture
def store(tmp_path: Path) -> MetadataStore:
    """Four documents with one stored page each (page id == position + 1)."""
    db = MetadataStore(tmp_path / "meta.sqlite")
    for i, (doc_id, meta) in enumerate(DOCS.items()):
        key = db.begin_document(doc_id, f"/src/{doc_id}.pdf", "h", meta)
        db.mark_stored([db.add_pending_page(key, 1, 10, 10, f"images/{doc_id}.png", None)])
        db.finish_document(key, None)
        assert i + 1 == key
    yield db
    db.close()


def _match(store: MetadataStore, where) -> set[str]:
    ids = store.filter_page_ids(parse_where(where))
    docs = {d.doc_id for d in store.documents(where=parse_where(where))}
    by_page = {row.doc_id for row in store.pages(ids).values()}
    assert by_page == docs  # pages and documents agree
    return docs


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("team=finance", {"a", "c"}),
        ("team = finance ", {"a", "c"}),
        ("team!=finance", {"b", "d"}),  # documents without the key match !=
        ("year=2024", {"c"}),  # 2024.0 stored as a number
        ("year=2023", {"b"}),  # "2023" stored as a string
        ("year>=2023", {"b", "c"}),  # numbers and numeric strings compare as numbers
        ("year<2023", {"a"}),
        ("score>5", {"b"}),
        ("score<=4.5", {"a"}),
        ("team>1", set()),  # non-numeric values never satisfy a comparison
        ("public=true", {"a"}),
        ("public=false", {"b"}),
        ("team=in:hr,finance", {"a", "b", "c"}),
        ("year=in:2021, 2023", {"a", "b"}),
        ("team!=in:hr,finance", {"d"}),
        ("odd key=v", {"c"}),
        ('quote"key=q', {"c"}),
        ("missing=x", set()),
        ("team=Finance", set()),  # text equality is exact
        (["team=finance", "year>2022"], {"c"}),  # AND
        ({"team": "finance"}, {"a", "c"}),  # the mapping form (the HTTP API's): equality
        ({"year": 2021}, {"a"}),
        ({"public": True}, {"a"}),
        ({"team": ["hr", "finance"]}, {"a", "b", "c"}),  # a list means in
        (None, {"a", "b", "c", "d"}),
        ([], {"a", "b", "c", "d"}),
    ],
)
def test_filters_select_documents(store: MetadataStore, where, expected: set[str]) -> None:
    assert _match(store, where) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("team", "expected key=value"),
        ("=x", "the key is empty"),
        ("year>abc", "> needs a number, got 'abc'"),
        ("year<=", "<= needs a number"),
        ("team=in:", "'in:' needs comma-separated non-empty values"),
        ("team=in:a,,b", "non-empty values"),
    ],
)
def test_malformed_filters_are_refused(text: str, message: str) -> None:
    with pytest.raises(FilterError, match=message) as exc:
        parse_condition(text)
    assert isinstance(exc.value, CollectionInputError)


def test_parsing() -> None:
    assert parse_condition("a>=3") == Condition("a", ">=", ("3",))
    assert parse_condition("a!=b=c") == Condition("a", "!=", ("b=c",))  # the first operator splits
    assert parse_condition("k=in:1,2") == Condition("k", "in", ("1", "2"))
    assert str(parse_condition("k!=in:1,2")) == "k!=in:1,2"
    with pytest.raises(FilterError, match="must be a string"):
        parse_where([3])
    with pytest.raises(FilterError, match="value must be a string, a number or a boolean"):
        parse_where({"k": {"nested": 1}})
    with pytest.raises(FilterError, match="list of values is empty"):
        parse_where({"k": []})
