"""The canonical request key (llmt/warehouse/keys.py) is reproduced exactly by each engine's SQL: tricky values
of every type are loaded into the engine, hashed there by `Warehouse.input_hash_sql`, and compared with the hash
keys.py gives the same Python values; the values read back have the same canonical text (what the prompt
renders is what was keyed). Each engine that joins llmt runs the same cases."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
import struct
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from llmt.project.config import PostgresConfig, SparkConfig
from llmt.warehouse.base import Warehouse
from llmt.warehouse.duckdb import DuckDBWarehouse
from llmt.warehouse.keys import canonical_text, input_hash, request_key
from llmt.warehouse.postgres import PostgresWarehouse
from llmt.warehouse.spark import SparkWarehouse
from tests.conftest import Project
from tests.pg import PgDatabase

UTC, PLUS_0530 = dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30))
# (neutral type, values): each column gets one value per row; None is SQL NULL
COLUMNS: dict[str, tuple[str, list[Any]]] = {
    "t": ("text", ["", "plain", "é ☃ 😀 \u05e9\u05dc\u05d5\u05dd", "a\nb\tc\r\"d\\e'f", "\x01\x1f ctrl",
                   ",s3:x:}{", None, "x" * 1000, "  ", "NULL"]),
    "i": ("bigint", [0, -1, 2**63 - 1, -(2**63), 42, None, 7, 1, -5, 10**15]),
    "d": ("decimal(18,7)", [Decimal("1.5000000"), Decimal("0E-7"), Decimal("0.0000001"), Decimal("-12.3400000"),
                            None, Decimal("99999999999.9999999"), Decimal("1.0000000"), Decimal("-0.0000001"),
                            Decimal("3.1415927"), Decimal("10.0000000")]),
    "f": ("double", [0.1, -0.0, 0.0, 1e300, 5e-324, 1e16, 1e15, None, 123456789.125, float("inf")]),
    "b": ("boolean", [True, False, None, True, False, True, True, False, None, True]),
    "day": ("date", [dt.date(1969, 12, 31), dt.date(1970, 1, 1), dt.date(1, 1, 1), dt.date(2024, 2, 29), None,
                     dt.date(9999, 12, 31), dt.date(1900, 3, 1), dt.date(2000, 1, 1), dt.date(999, 5, 6),
                     dt.date(2038, 1, 19)]),
    "ts": ("timestamp", [dt.datetime(1960, 1, 2, 3, 4, 5, 500000), dt.datetime(2024, 1, 2, 3, 4, 5),
                         dt.datetime(1970, 1, 1), None, dt.datetime(2024, 12, 31, 23, 59, 59, 999999),
                         dt.datetime(1, 1, 1), dt.datetime(2000, 2, 29, 12), dt.datetime(1999, 12, 31, 23, 59),
                         dt.datetime(2038, 1, 19, 3, 14, 8), dt.datetime(1066, 10, 14, 9)]),
    "tz": ("timestamptz", [dt.datetime(2024, 3, 10, 1, 59, 59, tzinfo=PLUS_0530),
                           dt.datetime(1969, 7, 20, 20, 17, tzinfo=UTC), None,
                           dt.datetime(2024, 11, 3, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=-4))),
                           dt.datetime(2000, 1, 1, tzinfo=UTC), dt.datetime(1970, 1, 1, tzinfo=UTC),
                           dt.datetime(2024, 6, 1, 12, 0, 0, 123456, tzinfo=PLUS_0530),
                           dt.datetime(1950, 5, 5, 5, 5, 5, tzinfo=dt.timezone(dt.timedelta(hours=9))),
                           dt.datetime(2030, 1, 1, tzinfo=UTC), dt.datetime(2024, 2, 29, 23, 0, tzinfo=UTC)]),
    "li": ("list<bigint>", [[1, None, 3], [], None, [-(2**63)], [0], [1, 2], [None], [5, 5, 5], [7], [10**12]]),
    "lt": ("list<list<text>>", [[["a,b", None], []], [], None, [["]"], ["}", "{"]], [[""]], [["é"]],
                                [[None]], [["x"], ["y"]], [["s1:z"]], [["\n"]]]),
    "st": ("struct<a bigint,b text>", [{"a": 1, "b": "x"}, {"a": None, "b": None}, None, {"a": -1, "b": ""},
                                       {"a": 0, "b": "ü"}, {"a": 2, "b": "a:b"}, {"a": 3, "b": ","},
                                       {"a": 4, "b": "}"}, {"a": 5, "b": "n"}, {"a": 6, "b": "{}"}]),
}
ROWS = len(next(iter(COLUMNS.values()))[1])
# each engine's types for the neutral ones (PostgreSQL has no ragged lists of lists and no anonymous structs: its
# composite types and arrays of several dimensions are keyed by their text, not shared; keys.py)
DUCKDB_TYPES = {"text": "VARCHAR", "bigint": "BIGINT", "decimal(18,7)": "DECIMAL(18,7)", "double": "DOUBLE",
                "boolean": "BOOLEAN", "date": "DATE", "timestamp": "TIMESTAMP", "timestamptz": "TIMESTAMPTZ",
                "list<bigint>": "BIGINT[]", "list<list<text>>": "VARCHAR[][]",
                "struct<a bigint,b text>": "STRUCT(a BIGINT, b VARCHAR)"}
POSTGRES_TYPES = {"text": "text", "bigint": "bigint", "decimal(18,7)": "numeric(18,7)", "double": "double precision",
                  "boolean": "boolean", "date": "date", "timestamp": "timestamp", "timestamptz": "timestamptz",
                  "list<bigint>": "bigint[]"}
SPARK_TYPES = {"text": "STRING", "bigint": "BIGINT", "decimal(18,7)": "DECIMAL(18,7)", "double": "DOUBLE",
               "boolean": "BOOLEAN", "date": "DATE", "timestamp": "TIMESTAMP_NTZ", "timestamptz": "TIMESTAMP_LTZ",
               "list<bigint>": "ARRAY<BIGINT>", "list<list<text>>": "ARRAY<ARRAY<STRING>>",
               "struct<a bigint,b text>": "STRUCT<a: BIGINT, b: STRING>"}


def duckdb_warehouse(tmp_path: Path) -> Warehouse:
    wh = DuckDBWarehouse(":memory:", tmp_path)
    wh.execute("SET TimeZone = 'America/New_York'")  # the session's zone must not matter
    return wh


def postgres_warehouse(db: PgDatabase) -> Warehouse:
    wh = PostgresWarehouse(PostgresConfig(type="postgres", dsn=db.uri), "test")
    wh.execute("SET TimeZone = 'America/New_York'")
    return wh


def spark_warehouse(tmp_path: Path) -> Warehouse:
    """A Spark warehouse on the tests' shared session, in a schema of its own."""
    wh = SparkWarehouse(SparkConfig(type="spark", schema=f"keys_{tmp_path.name[-12:].replace('-', '_')}"), tmp_path)
    wh.execute("SET spark.sql.session.timeZone = America/New_York")
    return wh


@pytest.fixture(params=["duckdb", "postgres", "spark"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Warehouse, dict[str, str]]]:
    if request.param == "postgres":
        wh, types = postgres_warehouse(request.getfixturevalue("pg")), POSTGRES_TYPES
    elif request.param == "spark":
        request.getfixturevalue("spark")
        wh, types = spark_warehouse(tmp_path), SPARK_TYPES
    else:
        wh, types = duckdb_warehouse(tmp_path), DUCKDB_TYPES
    try:
        yield wh, types
    finally:
        if request.param == "spark":
            wh.execute("RESET spark.sql.session.timeZone")
        wh.close()


def kept(types: dict[str, str]) -> list[str]:
    """The columns of COLUMNS an engine has a type for."""
    return [name for name, (kind, _) in COLUMNS.items() if kind in types]


def load_cases(wh: Warehouse, types: dict[str, str]) -> None:
    names = kept(types)
    wh.execute("CREATE TABLE cases (n BIGINT, " + ", ".join(
        f"{wh.quote(name)} {types[COLUMNS[name][0]]}" for name in names) + ")")
    wh.load_rows("cases", {"n": list(range(ROWS)), **{name: COLUMNS[name][1] for name in names}},
                 {"n": "BIGINT", **{name: types[COLUMNS[name][0]] for name in names}})


def test_every_engine_hashes_every_value_as_keys_py_does(engine: tuple[Warehouse, dict[str, str]]) -> None:
    wh, types = engine
    load_cases(wh, types)
    described = {c.name: c for c in wh.describe("SELECT * FROM cases")}
    names = kept(types)
    for name in names:  # one column at a time: a mismatch names its type
        rows = wh.fetchall(f"SELECT n, {wh.input_hash_sql([described[name]], 'c')} FROM cases c ORDER BY n")
        assert [h for _, h in rows] == [input_hash({name: COLUMNS[name][1][n]}) for n, _ in rows], name
    everything = wh.input_hash_sql([described[name] for name in names], "c")
    assert [h for _, h in wh.fetchall(f"SELECT n, {everything} FROM cases c ORDER BY n")] == [
        input_hash({name: COLUMNS[name][1][n] for name in names}) for n in range(ROWS)]


def test_every_engine_writes_any_double_as_python_does(engine: tuple[Warehouse, dict[str, str]]) -> None:
    """Doubles of every magnitude (random bit patterns), whose shortest digits each engine must place as
    Python's repr places them."""
    wh, types = engine
    generator = random.Random(7)
    values = [v for v in (struct.unpack("<d", generator.getrandbits(64).to_bytes(8, "little"))[0]
                          for _ in range(3000)) if math.isfinite(v)]
    values += [1e15, 1e16, 123456789012345680.0, 0.0001, 0.00001, 1.5e-5, 2.0**-1074, 1.7976931348623157e308]
    wh.execute(f"CREATE TABLE doubles (n BIGINT, f {types['double']})")
    wh.load_rows("doubles", {"n": list(range(len(values))), "f": values}, {"n": "BIGINT", "f": types["double"]})
    column = next(c for c in wh.describe("SELECT f FROM doubles"))
    rows = wh.fetchall(f"SELECT n, {wh.canonical_sql('f', column.type)} FROM doubles ORDER BY n")
    assert [text for _, text in rows] == [canonical_text(v) for v in values]


def test_the_values_read_back_have_the_canonical_text_they_were_keyed_by(
        engine: tuple[Warehouse, dict[str, str]]) -> None:
    wh, types = engine
    load_cases(wh, types)
    names = kept(types)
    read = wh.fetchall(f"SELECT {', '.join(wh.quote(name) for name in names)} FROM cases ORDER BY n")
    for n, row in enumerate(read):
        for name, value in zip(names, row, strict=True):
            assert canonical_text(value) == canonical_text(COLUMNS[name][1][n]), (name, n, value)


def test_canonical_texts_never_collide_across_types() -> None:
    """Values a prompt shows differently have different texts: the number 1, the text "1", the decimal 1, the
    double 1.0, true, and a list of one."""
    values = [1, "1", Decimal("1"), 1.0, True, [1], {"1": None}, None, "", "n", dt.date(2001, 1, 1), "D2001-01-01"]
    texts = [canonical_text(v) for v in values]
    assert len(set(texts)) == len(texts), texts
    assert canonical_text(["a,b"]) != canonical_text(["a", "b"])  # texts carry their length
    assert input_hash({"a": "x", "b": "y"}) == input_hash({"b": "y", "a": "x"})  # columns in name order
    assert request_key("t" * 64, input_hash({"a": 1})) != request_key("u" * 64, input_hash({"a": 1}))


def test_a_timestamp_with_time_zone_is_shown_and_keyed_as_its_instant(project: Project) -> None:
    """The time zone of the machine that runs llmt changes neither the request nor its key: the prompt shows the
    instant in UTC."""
    project.write("models/stg_reviews.sql", "select review_id, product, review_text, "
                  "TIMESTAMPTZ '2024-03-10 01:59:59+05:30' + review_id * INTERVAL 1 HOUR AS written_at "
                  "from {{ source('raw', 'reviews') }}\n")
    project.write("models/insights.sql", "{{ config(materialized='llm', prompt='analyse', output_schema='analysis', "
                  "unique_key='review_id') }}\nselect review_id, product, review_text, written_at "
                  "from {{ ref('stg_reviews') }}\n")
    project.write("prompts/analyse.md", "Written {{ written_at }}: {{ review_text }}\n")
    for zone, sent in (("America/New_York", 4), ("Asia/Tokyo", 0)):  # DuckDB's session zone is the machine's
        done = subprocess.run([sys.executable, "-m", "llmt", "run", "--output", "json", "--project-dir",
                               str(project.root)], env={**os.environ, "TZ": zone}, capture_output=True, text=True,
                              timeout=120, check=True)
        result = next(r for r in json.loads(done.stdout)["results"] if r["name"] == "insights")
        assert result["llm"]["requests"] == sent, zone
    requests = [json.loads(line)["body"]["messages"][-1]["content"]
                for path in (project.root / "target" / "batches").rglob("*.jsonl") if "." not in path.stem
                for line in path.read_text().splitlines()]
    assert "Written 2024-03-09 21:29:59+00:00: Great phone" in requests
