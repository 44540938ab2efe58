"""The generic tests. Each compiles to a query that selects what breaks it (dbt style): the test
passes when the query returns no row. Column tests select the offending rows or values; model-level
checks (row_count, max_error_rate, max_cost_usd) select one row describing the violation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmt.warehouse.base import Warehouse
from llmt.warehouse.files import sql_literal
from llmt.warehouse.store import StateStore

ArgCheck = Callable[[Any], str | None]  # what is wrong with a value, or None when it is fine


@dataclass(frozen=True)
class Target:
    """What a generic test reads."""

    relation: str  # a FROM expression, already filtered by the test's `where`
    column: str | None  # SQL expression of the tested column; None for model-level tests
    node: str  # the model (or source) name
    unique_key: tuple[str, ...] = ()


@dataclass(frozen=True)
class Generic:
    name: str
    sql: Callable[[Target, dict[str, Any], Warehouse], str]
    required: dict[str, ArgCheck] = field(default_factory=dict)
    optional: dict[str, ArgCheck] = field(default_factory=dict)
    column: bool = False  # tests one column: from its column entry, or `column_name` at model level
    model_level: bool = False  # only under a model's `tests:`, never under a column
    llm: bool = False  # only on LLM models (materialized='llm')
    scalar: str | None = None  # the argument a bare value stands for: `max_error_rate: 0.05`
    example: str = ""

    @property
    def arguments(self) -> tuple[str, ...]:
        return (*self.required, *self.optional)


# -- argument checks ---------------------------------------------------------------------------


def _number(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return None if ok else f"must be a number, got {value!r}"


def _count(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return None if ok else f"must be a whole number >= 0, got {value!r}"


def _rate(value: Any) -> str | None:
    return _number(value) or (None if 0 <= value <= 1 else f"must be between 0 and 1, got {value!r}")


def _money(value: Any) -> str | None:
    return _number(value) or (None if value >= 0 else f"must be >= 0, got {value!r}")


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else f"must be a non-empty string, got {value!r}"


def _values(value: Any) -> str | None:
    return None if isinstance(value, list) and value else f"must be a non-empty list, got {value!r}"


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false, got {value!r}"


# -- SQL ---------------------------------------------------------------------------------------


def literal(value: Any, quoted: bool = True) -> str:
    """A Python value (from YAML) as a SQL literal."""
    return sql_literal(value) if quoted else str(value)


def _col(t: Target) -> str:
    assert t.column is not None  # column tests always get one (checked when collected)
    return t.column


def _not_null(t: Target, a: dict[str, Any], wh: Warehouse) -> str:
    return f"SELECT * FROM {t.relation} AS t WHERE {_col(t)} IS NULL"


def _unique(t: Target, a: dict[str, Any], wh: Warehouse) -> str:
    col = _col(t)
    return (f"SELECT {col} AS unique_field, count(*) AS n_records FROM {t.relation} AS t "
            f"WHERE {col} IS NOT NULL GROUP BY {col} HAVING count(*) > 1 ORDER BY n_records DESC")


def _accepted_values(t: Target, a: dict[str, Any], wh: Warehouse) -> str:
    col = _col(t)
    values = ", ".join(literal(v, a.get("quote", True)) for v in a["values"] if v is not None)
    return (f"SELECT {col} AS value_field, count(*) AS n_records FROM {t.relation} AS t "
            f"WHERE {col} IS NOT NULL AND {col} NOT IN ({values}) GROUP BY {col} ORDER BY n_records DESC")


def _relationships(t: Target, a: dict[str, Any], wh: Warehouse) -> str:
    col = _col(t)
    return (f"WITH child AS (SELECT {col} AS from_field FROM {t.relation} AS t WHERE {col} IS NOT NULL), "
            f"parent AS (SELECT {wh.quote(a['field'])} AS to_field FROM {a['to']} AS p) "
            "SELECT from_field FROM child LEFT JOIN parent ON child.from_field = parent.to_field "
            "WHERE parent.to_field IS NULL")


def _expression_is_true(t: Target, a: dict[str, Any], wh: Warehouse) -> str:
    expression = f"{t.column} {a['expression']}" if t.column else a["expression"]
    return f"SELECT * FROM {t.relation} AS t WHERE NOT ({expression})"


def _accepted_range(t: Target, a: dict[str, Any], wh: Warehouse) -> str:
    col, inclusive = _col(t), a.get("inclusive", True)
    bounds = []
    if "min_value" in a:
        bounds.append(f"{col} {'>=' if inclusive else '>'} {literal(a['min_value'])}")
    if "max_value" in a:
        bounds.append(f"{col} {'<=' if inclusive else '<'} {literal(a['max_value'])}")
    return f"SELECT * FROM {t.relation} AS t WHERE NOT ({' AND '.join(bounds) or 'true'})"


def _row_count(t: Target, a: dict[str, Any], wh: Warehouse) -> str:
    outside = []
    if "min" in a:
        outside.append(f"count(*) < {int(a['min'])}")
    if "max" in a:
        outside.append(f"count(*) > {int(a['max'])}")
    shown = ", ".join(f"{int(a[k])} AS {k}_rows" for k in ("min", "max") if k in a)
    return f"SELECT count(*) AS row_count, {shown} FROM {t.relation} AS t HAVING {' OR '.join(outside)}"


def _max_error_rate(t: Target, a: dict[str, Any], wh: Warehouse) -> str:
    # a row's last attempt failed when its current request was attempted and the row has no answer to it: not
    # `ok` (which a cascade's answer makes a row whose own request failed)
    limit = float(a["max"])
    return (
        f"SELECT failed, total, round(failed / total, 4) AS error_rate, {limit!r} AS max_error_rate FROM ("
        f"SELECT count(CASE WHEN t._llmt_request_key IN (SELECT request_key FROM {wh.state_table('attempts')}) "
        f"AND t._llmt_status <> 'ok' THEN 1 END) AS failed, count(*) AS total "
        f"FROM {t.relation} AS t) WHERE failed > {limit!r} * total"
    )


def _all_answered(t: Target, a: dict[str, Any], wh: Warehouse) -> str:
    keys = "".join(f"{wh.quote(k)}, " for k in t.unique_key)
    return f"SELECT {keys}_llmt_status FROM {t.relation} AS t WHERE _llmt_status IN ('pending', 'failed')"


def _max_cost_usd(t: Target, a: dict[str, Any], wh: Warehouse) -> str:
    cost, limit = round(StateStore(wh).last_run_cost(t.node), 6), float(a["max"])
    return f"SELECT {cost!r} AS cost_usd, {limit!r} AS max_cost_usd WHERE {cost!r} > {limit!r}"


GENERICS: dict[str, Generic] = {g.name: g for g in (
    Generic("not_null", _not_null, column=True, example="not_null"),
    Generic("unique", _unique, column=True, example="unique"),
    Generic("accepted_values", _accepted_values, {"values": _values}, {"quote": _flag}, column=True,
            example="accepted_values: {values: [a, b]}"),
    Generic("relationships", _relationships, {"to": _text, "field": _text}, column=True,
            example="relationships: {to: \"ref('customers')\", field: id}"),
    Generic("accepted_range", _accepted_range, {}, {"min_value": _number, "max_value": _number, "inclusive": _flag},
            column=True, example="accepted_range: {min_value: 1, max_value: 10}"),
    Generic("expression_is_true", _expression_is_true, {"expression": _text},
            example="expression_is_true: {expression: \"score between 1 and 10\"}"),
    Generic("row_count", _row_count, {}, {"min": _count, "max": _count}, model_level=True,
            example="row_count: {min: 1, max: 1000}"),
    Generic("max_error_rate", _max_error_rate, {"max": _rate}, model_level=True, llm=True, scalar="max",
            example="max_error_rate: 0.05"),
    Generic("all_answered", _all_answered, model_level=True, llm=True, example="all_answered"),
    Generic("max_cost_usd", _max_cost_usd, {"max": _money}, model_level=True, llm=True, scalar="max",
            example="max_cost_usd: 2.50"),
)}
