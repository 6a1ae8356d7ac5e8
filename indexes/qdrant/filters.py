"""Payload filters: backend-neutral conditions translated into one Qdrant ``Filter``.

A caller describes a restriction as a sequence of :class:`Condition` (all must hold); the index
turns them into a :class:`qdrant_client.models.Filter` that Qdrant applies *inside* the search
(in the prefetch and in the final stage), not to its results.

Operators: ``eq``, ``ne``, ``in``, ``nin`` (not in), ``lt``, ``lte``, ``gt``, ``gte``. Equality
is text equality for strings, numeric equality when the value is a number (``eq "2020"`` matches
the string ``"2020"``, the integer ``2020`` and the float ``2020.0``), and ``true``/``false``
match booleans. Numeric comparisons and equality read ``number_path`` when a condition gives one
(a payload copy of the values as numbers, so numeric strings compare as numbers too), else
``path``. A list-valued payload matches when any element does (Qdrant's rule). ``ne`` and
``nin`` also keep points that lack the key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from indexes.errors import IndexInputError

OPERATORS = ("eq", "ne", "in", "nin", "lt", "lte", "gt", "gte")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")
_I64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class Condition:
    """``path op value``. ``path``: payload keys from the root (``("meta", "lang")``); ``value``:
    a scalar, or a sequence of scalars for ``in``/``nin``; ``number_path``: where the same value
    is stored as a number, if anywhere (see the module doc)."""

    path: tuple[str, ...]
    op: str
    value: Any
    number_path: tuple[str, ...] | None = None

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


def _equal(key: str, value: Any, number_key: str | None = None) -> list[Any]:
    """Conditions any of which means ``payload[key]`` equals ``value`` (text, number or boolean)."""
    from qdrant_client import models

    if isinstance(value, bool):
        return [models.FieldCondition(key=key, match=models.MatchValue(value=value))]
    text = str(value)
    out: list[Any] = [models.FieldCondition(key=key, match=models.MatchValue(value=text))]
    stripped = text.strip()
    if number_key is None and _INT.match(stripped) and _I64[0] <= int(stripped) <= _I64[1]:
        out.append(models.FieldCondition(key=key, match=models.MatchValue(value=int(stripped))))
    if _FLOAT.match(stripped):
        number = float(stripped)
        if math.isfinite(number):
            out.append(models.FieldCondition(key=number_key or key, range=models.Range(gte=number, lte=number)))
    if stripped.lower() in ("true", "false"):
        out.append(models.FieldCondition(key=key, match=models.MatchValue(value=stripped.lower() == "true")))
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
        number_key = payload_key(c.number_path) if c.number_path else None
        if c.op in ("eq", "ne", "in", "nin"):
            values = [c.value] if isinstance(c.value, str | int | float | bool) else list(c.value)
            if not values:
                raise IndexInputError(f"{c.op!r} needs at least one value for {key!r}")
            match = _one_of([alt for v in values for alt in _equal(key, v, number_key)])
            (must if c.op in ("eq", "in") else must_not).append(match)
        else:
            must.append(models.FieldCondition(key=number_key or key, range=models.Range(**{c.op: _number(c.value)})))
    if ids is not None:
        must.append(models.HasIdCondition(has_id=[int(i) for i in ids]))
    if not must and not must_not:
        return None
    return models.Filter(must=must or None, must_not=must_not or None)
