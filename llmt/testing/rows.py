"""Rows written in YAML (a list of mappings, or CSV text) as tables (read by DuckDB's readers, with its type
sniffing), and the comparison of expected rows with a query's rows (as multisets, on the expected columns
only)."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Hashable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from llmt.errors import ConfigError, did_you_mean
from llmt.warehouse.base import Warehouse
from llmt.warehouse.files import reader_sql

RowsSpec = list[dict[str, Any]] | str  # a list of mappings, or CSV text with a header line


def create_table(wh: Warehouse, relation: str, rows: RowsSpec, fmt: str, scratch: Path, where: str) -> None:
    """Create ``relation`` holding ``rows``; column types are inferred (JSON types, CSV sniffing)."""
    path = scratch / f"rows_{len(list(scratch.iterdir()))}.{'csv' if fmt == 'csv' else 'json'}"
    if fmt == "csv":
        if not isinstance(rows, str) or not rows.strip():
            raise ConfigError("`format: csv` needs `rows` as CSV text with a header line", where=where,
                              hint="Example: rows: |\\n  id,name\\n  1,a")
        path.write_text(rows.strip() + "\n", encoding="utf-8")
        reader = reader_sql("read_csv", [path], {})
    else:
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            raise ConfigError(
                "`rows` must be a non-empty list of mappings (column: value)", where=where,
                hint="For an input without rows, give its columns as CSV: `format: csv` and `rows: \"id,name\"`.",
            )
        path.write_text(json.dumps(rows, default=_json_default, ensure_ascii=False), encoding="utf-8")
        reader = reader_sql("read_json", [path], {"format": "array"})
    # a column with only nulls has no type: text
    wh.load_files(relation, reader, untyped="VARCHAR")


def read_rows(wh: Warehouse, rows: RowsSpec, fmt: str, scratch: Path, where: str) -> list[dict[str, Any]]:
    """Expected rows as mappings (CSV text is read with type sniffing)."""
    if fmt != "csv":
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ConfigError("`expect.rows` must be a list of mappings (column: value)", where=where)
        return rows
    create_table(wh, wh.quote("_llmt_expected"), rows, fmt, scratch, where)
    columns, found = wh.query("SELECT * FROM _llmt_expected")
    return [dict(zip(columns, r, strict=True)) for r in found]


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def normalize(value: Any) -> Hashable:
    """A comparable form: 2 == 2.0 == Decimal('2'), a date equals its ISO text, lists and structs nest."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float | Decimal):
        number = float(value)
        return int(number) if number.is_integer() else round(number, 9)
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return tuple(normalize(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), normalize(v)) for k, v in value.items()))
    return str(value)


def diff_rows(
    expected: list[dict[str, Any]], columns: Sequence[str], rows: Sequence[Sequence[Any]], where: str, model: str
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Compare on the expected columns: (columns, rows marked `-` expected but missing / `+` unexpected)."""
    wanted = list(dict.fromkeys(k for row in expected for k in row))
    index = {c.lower(): i for i, c in enumerate(columns)}
    for name in wanted:
        if name.lower() not in index:
            raise ConfigError(
                f"expected column `{name}` is not in the output of `{model}`.{did_you_mean(name, columns)}",
                where=where, hint=f"Output columns: {', '.join(columns)}.",
            )
    picks = [index[c.lower()] for c in wanted]
    want = Counter(tuple(normalize(r.get(c)) for c in wanted) for r in expected)
    have = Counter(tuple(normalize(row[i]) for i in picks) for row in rows)
    shown: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in rows:
        shown.setdefault(tuple(normalize(row[i]) for i in picks), tuple(row[i] for i in picks))
    for r in expected:
        shown.setdefault(tuple(normalize(r.get(c)) for c in wanted), tuple(r.get(c) for c in wanted))
    marked = [("-", *shown[k]) for k, n in (want - have).items() for _ in range(n)]
    marked += [("+", *shown[k]) for k, n in (have - want).items() for _ in range(n)]
    return ["diff", *wanted], marked
