"""Metadata filters (``where``): a small syntax, compiled to SQL over the documents' JSON metadata.

One condition per string, all conditions ANDed::

    key=value        equal (text; numbers compare as numbers: year=2024 matches 2024, "2024", 2024.0;
                     true/false match JSON booleans)
    key!=value       not equal (documents without the key match too)
    key=in:a,b,c     equal to one of the comma-separated values
    key!=in:a,b,c    equal to none of them (documents without the key match too)
    key>N  key>=N  key<N  key<=N
                     numeric comparison; N must be a number; the value must be a number or a
                     numeric string (documents without the key, or with a non-numeric value,
                     do not match)

Keys and values are trimmed of surrounding spaces; keys may hold any character but ``=``,
``!``, ``<`` and ``>``. Values of ``in:`` lists cannot contain commas.

The Python API takes the same strings (``where="year>=2020"`` or a list of them), or a mapping
``{key: value}`` meaning equality (a list or tuple value meaning ``in``), as the HTTP API sends.
Anything else raises :class:`FilterError` naming the bad condition.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dse.collection.manifest import CollectionInputError

#: Operators; the first one in a condition splits it (``>=`` is tried before ``>``).
_OP_RE = re.compile(r"!=|>=|<=|=|>|<")
IN_PREFIX = "in:"


class FilterError(CollectionInputError):
    """A malformed metadata filter (bad operator, missing key, non-numeric bound...)."""


@dataclass(frozen=True)
class Condition:
    """One parsed condition: ``key op value`` (``op`` is ``=``, ``!=``, ``in``, ``not in``, ``>``,
    ``>=``, ``<`` or ``<=``; ``values`` holds one value, several for ``in`` / ``not in``)."""

    key: str
    op: str
    values: tuple[str, ...]

    def __str__(self) -> str:
        if self.op in ("in", "not in"):
            return f"{self.key}{'=' if self.op == 'in' else '!='}{IN_PREFIX}{','.join(self.values)}"
        return f"{self.key}{self.op}{self.values[0]}"


def _number(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_condition(text: str) -> Condition:
    """Parse one ``key<op>value`` string (see the module docstring)."""
    if not isinstance(text, str):
        raise FilterError(f"a filter must be a string like key=value, got {text!r}")
    match = _OP_RE.search(text)
    if match is None:
        raise FilterError(f"malformed filter {text!r}: expected key=value, key!=value, key>=N, key=in:a,b ...")
    key, op, value = text[: match.start()].strip(), match.group(), text[match.end() :].strip()
    if not key:
        raise FilterError(f"malformed filter {text!r}: the key is empty")
    if op in ("=", "!=") and value.startswith(IN_PREFIX):
        items = tuple(v.strip() for v in value[len(IN_PREFIX) :].split(","))
        if not items or any(not v for v in items):
            raise FilterError(f"malformed filter {text!r}: 'in:' needs comma-separated non-empty values")
        return Condition(key, "in" if op == "=" else "not in", items)
    if op in (">", ">=", "<", "<=") and _number(value) is None:
        raise FilterError(f"malformed filter {text!r}: {op} needs a number, got {value!r}")
    return Condition(key, op, (value,))


def parse_where(where: str | Sequence[str] | Mapping[str, Any] | None) -> list[Condition]:
    """Conditions of a ``where`` argument: a condition string, a list of them, or a mapping
    ``{key: value}`` (equality; a list/tuple value means ``in``). ``None`` or empty: no filter."""
    if where is None:
        return []
    if isinstance(where, str):
        return [parse_condition(where)]
    if isinstance(where, Mapping):
        out: list[Condition] = []
        for key, value in where.items():
            if not isinstance(key, str) or not key.strip():
                raise FilterError(f"filter keys must be non-empty strings, got {key!r}")
            if isinstance(value, (list, tuple)):
                if not value:
                    raise FilterError(f"filter {key!r}: the list of values is empty")
                out.append(Condition(key.strip(), "in", tuple(_scalar_text(key, v) for v in value)))
            else:
                out.append(Condition(key.strip(), "=", (_scalar_text(key, value),)))
        return out
    if isinstance(where, Sequence):
        return [parse_condition(item) for item in where]
    raise FilterError(f"where must be a string, a list of strings or a mapping, got {type(where).__name__}")


def _scalar_text(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise FilterError(f"filter {key!r}: the value must be a string, a number or a boolean, got {value!r}")


# ----------------------------------------------------------------------------- SQL

#: The JSON value of ``j`` (a ``json_each`` row) as a number, or NULL when it is not one.
_NUMERIC = "(CASE WHEN j.type IN ('integer', 'real') THEN j.value WHEN j.type = 'text' THEN dse_number(j.value) END)"


def _equal_sql(value: str) -> tuple[str, list[Any]]:
    """SQL true when the ``json_each`` row ``j`` equals ``value`` (text, number or boolean)."""
    sql = "(j.type = 'text' AND j.value = ?)"
    args: list[Any] = [value]
    number = _number(value)
    if number is not None:
        sql += f" OR {_NUMERIC} = ?"
        args.append(number)
    if value.lower() in ("true", "false"):
        sql += " OR j.type = ?"
        args.append(value.lower())
    return sql, args


def condition_sql(cond: Condition, doc_meta: str = "d.meta") -> tuple[str, list[Any]]:
    """An SQL boolean expression over the JSON column ``doc_meta`` for ``cond``, with its arguments.

    Uses ``json_each`` (any key, no JSON-path quoting) and the ``dse_number`` function that
    :func:`register_functions` adds to the connection.
    """
    lookup = f"SELECT 1 FROM json_each({doc_meta}) j WHERE j.key = ? AND "
    if cond.op in ("=", "!=", "in", "not in"):
        parts, args = [], [cond.key]
        for value in cond.values:
            sql, a = _equal_sql(value)
            parts.append(f"({sql})")
            args += a
        exists = f"EXISTS ({lookup}({' OR '.join(parts)}))"
        return (exists if cond.op in ("=", "in") else f"NOT {exists}"), args
    bound = _number(cond.values[0])
    return f"EXISTS ({lookup}{_NUMERIC} {cond.op} ?)", [cond.key, bound]


def where_sql(conditions: Sequence[Condition], doc_meta: str = "d.meta") -> tuple[str, list[Any]]:
    """``cond1 AND cond2 ...`` (``"1"`` for no condition) and its arguments."""
    if not conditions:
        return "1", []
    parts: list[str] = []
    args: list[Any] = []
    for cond in conditions:
        sql, a = condition_sql(cond, doc_meta)
        parts.append(sql)
        args += a
    return " AND ".join(parts), args


def sql_number(value: Any) -> float | None:
    """``dse_number(x)``: ``x`` as a finite float when it is a number or a numeric string, else NULL."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return _number(value)
    return None


def register_functions(db: Any) -> None:
    """Add ``dse_number`` to an ``sqlite3`` connection (used by :func:`condition_sql`)."""
    db.create_function("dse_number", 1, sql_number, deterministic=True)
