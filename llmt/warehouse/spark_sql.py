"""Spark SQL for llmt, where it differs from the shared SQL: literals, type names and families, the canonical
text of keys.py (doubles written as Python's repr writes them), and Python values of Spark's rows.

Spark's own text of a double (Java's `Double.toString`) is not always the shortest that reads back, and never
in Python's layout; the canonical text takes the fewest significant digits (of `%.Ne`, N = 0..16) that read
back as the same double, and places them as Python's repr places them.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pyspark.sql import types as T

from llmt.warehouse.base import SqlType

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

# llmt's neutral type names (those of answers, of its own tables and of load_rows) in Spark SQL
TYPE_NAMES = {"VARCHAR": "STRING", "TEXT": "STRING", "JSON": "STRING", "UUID": "STRING", "DOUBLE": "DOUBLE",
              "FLOAT": "FLOAT", "BIGINT": "BIGINT", "INTEGER": "INT", "HUGEINT": "DECIMAL(38,0)",
              "UBIGINT": "DECIMAL(20,0)", "BOOLEAN": "BOOLEAN", "DATE": "DATE", "TIMESTAMPTZ": "TIMESTAMP_LTZ",
              "TIMESTAMP WITH TIME ZONE": "TIMESTAMP_LTZ", "TIMESTAMP": "TIMESTAMP_NTZ", "BLOB": "BINARY"}
TIMESTAMP_TEXT = "concat(date_format({v}, 'yyyy-MM-dd'), 'T', date_format({v}, 'HH:mm:ss.SSSSSS'))"
EPOCH = "TIMESTAMP_NTZ '1970-01-01 00:00:00'"
DECIMALS = decimal.Context(prec=40)  # (Spark's decimals have up to 38 digits)
Decimal = decimal.Decimal
# types whose values are not handed over as the other engines' drivers hand them (`python_value`)
NOT_PLAIN = T.TimestampType | T.StructType | T.ArrayType | T.BinaryType | T.DecimalType


def type_name(neutral: str) -> str:
    """A type of llmt's neutral names (`DOUBLE`, `VARCHAR[]`, ...) in Spark SQL; Spark's own names pass, but
    TIMESTAMP is llmt's (a time without a zone: Spark's TIMESTAMP_NTZ); Spark's instant is TIMESTAMP_LTZ."""
    name = neutral.strip()
    if name.endswith("[]"):
        return f"ARRAY<{type_name(name[:-2])}>"
    return TYPE_NAMES.get(name.upper(), name)


def string(value: str) -> str:
    """A text literal (Spark reads backslash escapes in literals: a backslash is doubled too)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_type(kind: T.DataType) -> SqlType:
    """A Spark column type as a SqlType (TIMESTAMP is an instant: timestamptz; TIMESTAMP_NTZ: timestamp)."""
    name = kind.simpleString()
    if isinstance(kind, T.StringType | T.VarcharType | T.CharType):
        return SqlType(name, "text")
    if isinstance(kind, T.ByteType | T.ShortType | T.IntegerType | T.LongType):
        return SqlType(name, "integer")
    if isinstance(kind, T.DecimalType):
        return SqlType(name, "decimal")
    if isinstance(kind, T.FloatType | T.DoubleType):
        return SqlType(name, "float")
    if isinstance(kind, T.BooleanType):
        return SqlType(name, "boolean")
    if isinstance(kind, T.DateType):
        return SqlType(name, "date")
    if isinstance(kind, T.TimestampNTZType):
        return SqlType(name, "timestamp")
    if isinstance(kind, T.TimestampType):
        return SqlType(name, "timestamptz")
    if isinstance(kind, T.ArrayType):
        return SqlType(name, "list", (("item", sql_type(kind.elementType)),))
    if isinstance(kind, T.StructType):
        return SqlType(name, "struct", tuple((f.name, sql_type(f.dataType)) for f in kind.fields))
    return SqlType(name, "other")


def canonical_sql(expr: str, type_: SqlType, depth: int = 0) -> str:
    """SQL giving the canonical text (keys.py) of ``expr`` (``depth``: of lambdas around it, for their names)."""
    return f"CASE WHEN {expr} IS NULL THEN 'n' ELSE {_canonical(expr, type_, depth)} END"


def _canonical(expr: str, type_: SqlType, depth: int) -> str:
    family = type_.family
    if family == "text":
        return f"concat('s', octet_length({expr}), ':', {expr})"
    if family in ("integer", "decimal"):  # (a decimal's text is plain, at its scale)
        return f"concat('{family[0]}', CAST({expr} AS STRING))"
    if family == "float":
        return f"concat('f', {float_text(f'CAST({expr} AS DOUBLE)', depth)})"
    if family == "boolean":
        return f"CASE WHEN {expr} THEN 'b1' ELSE 'b0' END"
    if family == "date":
        return f"concat('D', date_format({expr}, 'yyyy-MM-dd'))"
    if family == "timestamp":
        return f"concat('T', {TIMESTAMP_TEXT.format(v=expr)})"
    if family == "timestamptz":  # the instant in UTC, whatever the session's time zone
        utc = f"timestampadd(MICROSECOND, unix_micros({expr}), {EPOCH})"
        return f"concat('Z', {TIMESTAMP_TEXT.format(v=utc)})"
    if family == "list":
        item = f"_llmt_i{depth}"
        inner = canonical_sql(item, type_.children[0][1], depth + 1)
        return f"concat('[', array_join(transform({expr}, {item} -> {inner}), ','), ']')"
    if family == "struct":
        fields = [f"{string(f's{len(name.encode())}:{name}:')}, {canonical_sql(f'{expr}.`{name}`', kind, depth)}"
                  for name, kind in type_.children]
        return "concat('{', " + ", ',', ".join(fields or ["''"]) + ", '}')"
    text = f"CAST({expr} AS STRING)"  # deterministic here, not shared with other engines (keys.py)
    return f"concat('x', octet_length({text}), ':', {text})"


def float_text(x: str, depth: int = 0) -> str:
    """SQL giving Python's repr of the double ``x``."""
    t, p = f"_llmt_t{depth}", f"_llmt_p{depth}"
    g, d = f"{p}.g", f"{p}.d"  # the digits without trailing zeros, and the decimal point's place
    # the shortest `%.Ne` that reads back: d.ddde±XX
    shortest = (f"element_at(filter(transform(sequence(0, 16), _llmt_k -> format_string(concat('%.', _llmt_k, 'e'), "
                f"abs({x}))), _llmt_s -> CAST(_llmt_s AS DOUBLE) = abs({x})), 1)")
    placed = (f"CASE WHEN {d} > -4 AND {d} <= 16 THEN CASE "
              f"WHEN {d} <= 0 THEN concat('0.', repeat('0', -{d}), {g}) "
              f"WHEN {d} >= length({g}) THEN concat({g}, repeat('0', {d} - length({g})), '.0') "
              f"ELSE concat(substr({g}, 1, {d}), '.', substr({g}, {d} + 1)) END "
              f"ELSE concat(substr({g}, 1, 1), IF(length({g}) > 1, concat('.', substr({g}, 2)), ''), 'e', "
              f"IF({d} - 1 < 0, '-', '+'), IF(abs({d} - 1) < 10, '0', ''), abs({d} - 1)) END")
    # (one-element arrays bind a value to a lambda's name: computed once, read several times)
    digits = (f"element_at(transform(array(named_struct('g', regexp_replace(replace(substring_index({t}, 'e', 1), "
              f"'.', ''), '0+$', ''), 'd', CAST(substring_index({t}, 'e', -1) AS INT) + 1)), {p} -> {placed}), 1)")
    finite = f"concat(IF({x} < 0, '-', ''), element_at(transform(array({shortest}), {t} -> {digits}), 1))"
    return (f"CASE WHEN isnan({x}) THEN 'nan' WHEN {x} = double('inf') THEN 'inf' "
            f"WHEN {x} = double('-inf') THEN '-inf' "
            f"WHEN {x} = 0 THEN IF(CAST({x} AS STRING) LIKE '-%', '-0.0', '0.0') ELSE {finite} END")


def python_value(value: Any, kind: T.DataType) -> Any:
    """A value of a Spark row (or of Arrow's Python values) as the other engines' drivers hand it over: structs as
    dicts, maps as dicts, instants as aware datetimes in UTC (a row has them in this process's local time, without
    a zone)."""
    if value is None:
        return None
    if isinstance(kind, T.TimestampType) and isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC)
    if isinstance(kind, T.StructType):
        values = value.values() if isinstance(value, dict) else value
        return {f.name: python_value(v, f.dataType) for f, v in zip(kind.fields, values, strict=True)}
    if isinstance(kind, T.MapType) and isinstance(value, list):  # (Arrow's: a list of pairs)
        return dict(value)
    if isinstance(kind, T.ArrayType):
        return [python_value(v, kind.elementType) for v in value]
    if isinstance(kind, T.BinaryType):
        return bytes(value)
    if isinstance(kind, T.DecimalType):  # (at its type's scale, as keyed: Spark may hand over another exponent)
        return Decimal(value).quantize(Decimal(1).scaleb(-kind.scale), context=DECIMALS)
    return value


def converter(schema: T.StructType) -> Any:
    """A function turning a row of ``schema`` into a tuple of Python values (rows without nested values or
    instants are taken as they come)."""
    fields = schema.fields
    if not any(isinstance(f.dataType, NOT_PLAIN) for f in fields):
        return tuple
    return lambda row: tuple(python_value(v, f.dataType) for f, v in zip(fields, row, strict=True))


def arrow_converter(schema: T.StructType) -> Callable[[pa.RecordBatch], Iterator[tuple[Any, ...]]]:
    """A function turning an Arrow batch of ``schema``'s rows (read from parquet files Spark wrote) into tuples of
    Python values, as `converter` turns rows."""
    kinds = [(f.dataType, isinstance(f.dataType, NOT_PLAIN | T.MapType)) for f in schema.fields]

    def convert(batch: pa.RecordBatch) -> Iterator[tuple[Any, ...]]:
        return zip(*([python_value(v, kind) for v in column.to_pylist()] if special else column.to_pylist()
                     for column, (kind, special) in zip(batch.columns, kinds, strict=True)), strict=True)

    return convert


# types Spark writes to parquet as they read back through Arrow (others: rows are streamed another way)
PARQUET_TYPES = (T.StringType, T.VarcharType, T.CharType, T.BinaryType, T.BooleanType, T.ByteType, T.ShortType,
                 T.IntegerType, T.LongType, T.FloatType, T.DoubleType, T.DecimalType, T.DateType, T.TimestampType,
                 T.TimestampNTZType)


def writable(kind: T.DataType) -> bool:
    """Whether rows of ``kind`` (a schema, or a column's type) go through parquet files and back unchanged."""
    if isinstance(kind, T.StructType):
        names = [f.name.lower() for f in kind.fields]
        return len(set(names)) == len(names) and all(writable(f.dataType) for f in kind.fields)
    if isinstance(kind, T.ArrayType):
        return writable(kind.elementType)
    if isinstance(kind, T.MapType):  # (keys that are plain values: Arrow's pairs become a dict)
        return isinstance(kind.keyType, PARQUET_TYPES) and writable(kind.valueType)
    return isinstance(kind, PARQUET_TYPES)


def arrow_rows(session: SparkSession, columns: Mapping[str, Sequence[Any]], types: Mapping[str, str]
               ) -> tuple[pa.Table, list[str]]:
    """Rows given column by column as an Arrow table, and the expressions that read it as the Spark types
    ``types`` (llmt's neutral names or Spark's). Instants travel as microseconds since the epoch (pyspark reads
    an Arrow timestamp as a time of the session's zone)."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    kinds = {c: type_name(types[c]) for c in columns}
    sent = {c: "BIGINT" if kinds[c].upper() == "TIMESTAMP_LTZ" else kinds[c] for c in columns}
    ddl = ", ".join(f"{_quote(c)} {sent[c]}" for c in columns)
    schema = to_arrow_schema(session.createDataFrame([], schema=ddl).schema)
    arrays = [pa.array([_micros(v) for v in values] if sent[c] != kinds[c] else list(values), type=field.type)
              for c, field, values in zip(columns, schema, columns.values(), strict=True)]
    select = [f"timestamp_micros({_quote(c)}) AS {_quote(c)}" if sent[c] != kinds[c] else _quote(c) for c in columns]
    return pa.Table.from_arrays(arrays, schema=schema), select


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _micros(value: dt.datetime | None) -> int | None:
    """An instant as microseconds since the epoch (a datetime without a zone is taken as UTC)."""
    if value is None:
        return None
    aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    return (aware - EPOCH_UTC) // dt.timedelta(microseconds=1)


EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
