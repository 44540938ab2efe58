"""File sources read by DuckDB's readers (CSV, Parquet, JSON), whatever the warehouse: the reader of a file by
its suffix, the options each reader takes, and the reader's SQL."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llmt.warehouse.base import sql_string

FILE_READERS = {".parquet": "read_parquet", ".pq": "read_parquet", ".json": "read_json_auto",
                ".jsonl": "read_json_auto", ".ndjson": "read_json_auto"}  # anything else: read_csv


def file_reader(path: str) -> str:
    """The DuckDB reader of a file by its suffix (before a compression suffix: data.csv.gz is a CSV file)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    while suffixes and suffixes[-1] in (".gz", ".zst", ".zstd"):
        suffixes.pop()
    return FILE_READERS.get(suffixes[-1] if suffixes else "", "read_csv")


@functools.cache
def reader_parameters(reader: str) -> tuple[str, ...]:
    """The named parameters DuckDB's ``reader`` takes (asked of the installed DuckDB, so they always match)."""
    import duckdb

    with duckdb.connect() as conn:
        rows = conn.execute("SELECT DISTINCT unnest(parameters) FROM duckdb_functions() WHERE function_name = ? "
                            "AND function_type = 'table'", [reader]).fetchall()
    return tuple(sorted(str(r[0]) for r in rows if r[0] not in ("path", "paths")))


def sql_literal(value: Any) -> str:
    """A YAML value as a DuckDB literal: strings (dates as ISO text), numbers, booleans, null, lists, and mappings
    as structs."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dt.date | dt.datetime):
        return sql_string(value.isoformat())
    if isinstance(value, list | tuple):
        return "[" + ", ".join(sql_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{sql_string(str(k))}: {sql_literal(v)}" for k, v in value.items()) + "}"
    return sql_string(str(value))


def reader_sql(reader: str, files: Sequence[Path], options: Mapping[str, Any]) -> str:
    """The DuckDB reader of ``files`` with their options: `read_csv([...], header = true, delim = ';')`."""
    given = {**({"header": True} if reader == "read_csv" else {}), **options}
    paths = "[" + ", ".join(sql_string(f.as_posix()) for f in files) + "]"
    return f"{reader}({paths}" + "".join(f", {k} = {sql_literal(v)}" for k, v in given.items()) + ")"
