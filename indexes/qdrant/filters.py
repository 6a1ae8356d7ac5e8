"""Payload filters: backend-neutral conditions translated into one Qdrant ``Filter``.

A caller describes a restriction as a sequence of :class:`Condition` (all must hold); the index
turns them into a :class:`qdrant_client.models.Filter` that Qdrant applies *inside* the search
(in the prefetch and in the final stage), not to its results.

Operators: ``eq``, ``ne``, ``in``, ``lt``, ``lte``, ``gt``, ``gte``. Values compare as the
collection's SQLite store compares metadata (text equality of the stored value): ``eq "2020"``
matches the string ``"2020"``, the integer ``2020`` and the float ``2020.0`` parsed from it.
A list-valued payload matches when any element does (Qdrant's rule). ``ne`` also keeps points
that lack the key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from indexes.errors import IndexInputError

OPERATORS = ("eq", "ne", "in", "lt", "lte", "gt", "gte")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")
_I64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class Condition:
    """``path op value``. ``path``: payload keys from the root (``("meta", "lang")``); ``value``:
    a scalar, or a sequence of scalars for ``in``."""

    path: tuple[str, ...]
    op: str
    value: Any

    def __post_init__(self) -> None:
        if self.op not in OPERATORS:
            raise IndexInputError(f"unknown filter operator {self.op!r}; use one of {', '.join(OPERATORS)}")
        if not self.path or not all(isinstance(p, str) and p for p in self.path):
            raise IndexInputError(f"a filter needs a non-empty key path, got {self.path!r}")


def payload_key(path: Sequence[str]) -> str:
    """Qdrant's JSON-path spelling of ``path`` (keys with dots, spaces... are double-quoted)."""
    parts = []
    for key in path:
        if _PLAIN_KEY.match(key):
            parts.append(key)
        elif '"' in key:
            raise IndexInputError(f"the payload key {key!r} contains a double quote and cannot be filtered in Qdrant")
        else:
            parts.append(f'"{key}"')
    return ".".join(parts)


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise IndexInputError(f"expected a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if _FLOAT.match(text):
        return float(text)
    raise IndexInputError(f"expected a number, got {value!r}")


def _equal(key: str, value: Any) -> list[Any]:
    """Conditions any of which means ``payload[key]`` equals ``value`` as text."""
    from qdrant_client import models

    if isinstance(value, bool):
        return [models.FieldCondition(key=key, match=models.MatchValue(value=value))]
    text = str(value)
    out: list[Any] = [models.FieldCondition(key=key, match=models.MatchValue(value=text))]
    stripped = text.strip()
    if _INT.match(stripped) and _I64[0] <= int(stripped) <= _I64[1]:
        out.append(models.FieldCondition(key=key, match=models.MatchValue(value=int(stripped))))
    if _FLOAT.match(stripped):
        number = float(stripped)
        if math.isfinite(number):
            out.append(models.FieldCondition(key=key, range=models.Range(gte=number, lte=number)))
    if stripped in ("true", "false"):
        out.append(models.FieldCondition(key=key, match=models.MatchValue(value=stripped == "true")))
    return out


def _one_of(alternatives: list[Any]) -> Any:
    from qdrant_client import models

    return alternatives[0] if len(alternatives) == 1 else models.Filter(should=alternatives)


def to_filter(conditions: Iterable[Condition] | None = None, ids: Sequence[int] | None = None) -> Any:
    """One ``models.Filter`` for all ``conditions`` and (when given) the point ``ids``; ``None`` if neither."""
    from qdrant_client import models

    must: list[Any] = []
    must_not: list[Any] = []
    for c in conditions or ():
        key = payload_key(c.path)
        if c.op == "eq":
            must.append(_one_of(_equal(key, c.value)))
        elif c.op == "ne":
            must_not.append(_one_of(_equal(key, c.value)))
        elif c.op == "in":
            values = [c.value] if isinstance(c.value, str | int | float | bool) else list(c.value)
            if not values:
                raise IndexInputError(f"'in' needs at least one value for {key!r}")
            must.append(_one_of([alt for v in values for alt in _equal(key, v)]))
        else:
            must.append(models.FieldCondition(key=key, range=models.Range(**{c.op: _number(c.value)})))
    if ids is not None:
        must.append(models.HasIdCondition(has_id=[int(i) for i in ids]))
    if not must and not must_not:
        return None
    return models.Filter(must=must or None, must_not=must_not or None)
