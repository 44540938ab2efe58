"""PostgreSQL's SQL for llmt, where it differs from the shared SQL: placeholders, type names and families, and
the helper functions llmt keeps in the state schema (the canonical text of a double, casts that give NULL
instead of failing).

The helpers are created once per state schema under a versioned name (`llmt_..._v1`): a change to one is a
new name, never a replacement of a function another llmt session may be running.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from llmt.warehouse.base import SqlType

# llmt's neutral type names (those of answers and of its own tables) in PostgreSQL
TYPE_NAMES = {"VARCHAR": "text", "DOUBLE": "double precision", "FLOAT": "real", "JSON": "jsonb", "HUGEINT": "numeric",
              "UBIGINT": "numeric", "TINYINT": "smallint", "UTINYINT": "smallint", "USMALLINT": "integer",
              "UINTEGER": "bigint", "BLOB": "bytea"}
INTEGERS = frozenset({"int2", "int4", "int8", "oid"})
TEXTS = frozenset({"text", "varchar", "bpchar", "name", "uuid", "json", "jsonb", "citext", "char", "xml"})
FAMILIES = {"numeric": "decimal", "float4": "float", "float8": "float", "bool": "boolean", "date": "date",
            "timestamp": "timestamp", "timestamptz": "timestamptz", **dict.fromkeys(INTEGERS, "integer"),
            **dict.fromkeys(TEXTS, "text")}
TIMESTAMP_FORMAT = "'YYYY-MM-DD\"T\"HH24:MI:SS.US'"
_WORD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_TOKEN = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/|(\$[A-Za-z_0-9]*\$).*?\1|\?|%""", re.S)


def type_name(neutral: str) -> str:
    """A type of llmt's neutral names (e.g. `DOUBLE`, `VARCHAR[]`) in PostgreSQL."""
    return _WORD.sub(lambda m: TYPE_NAMES.get(m[0].upper(), m[0]), neutral, count=1)


def placeholders(sql: str) -> str:
    """llmt's `?` placeholders as psycopg's `%s` (outside literals, identifiers and comments), and every `%`
    doubled (psycopg reads `%` everywhere in a query that has parameters)."""
    def token(m: re.Match[str]) -> str:
        text = m[0]
        if text == "?":
            return "%s"
        return text.replace("%", "%%")
    return _TOKEN.sub(token, sql)


def family(typname: str, category: str) -> str:
    """The family (keys.py) of a PostgreSQL type, by its name and category (pg_type.typname, typcategory)."""
    if typname in FAMILIES:
        return FAMILIES[typname]
    if category in ("S", "E"):  # other strings, enums
        return "text"
    return "list" if category == "A" else "other"


HELPERS_VERSION = 2  # 2: the casts of FAST_CAST inlined
# name (versioned) -> CREATE FUNCTION body; {s}: the state schema (quoted), {v}: the version
HELPERS = {
    # Python's repr() of a double (keys.py: `f` + repr): the fewest significant digits that read back as the
    # same double (each candidate correctly rounded by to_char's EEEE, a C printf), placed as Python places
    # them. (float8out's text is not always the shortest: 5.2990648348713776e+16, 9.999999999999999e+22.)
    "llmt_float_text": """
CREATE FUNCTION {s}.llmt_float_text_v{v}(x double precision) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $body$
DECLARE
    ax double precision := abs(x); t text; p int; digits text; decpt int;
BEGIN
    IF x = 'Infinity'::float8 THEN RETURN 'inf'; END IF;
    IF x = '-Infinity'::float8 THEN RETURN '-inf'; END IF;
    IF x = 'NaN'::float8 THEN RETURN 'nan'; END IF;
    IF x = 0 THEN RETURN CASE WHEN x::text LIKE '-%' THEN '-0.0' ELSE '0.0' END; END IF;
    FOR k IN 1..17 LOOP
        t := trim(to_char(ax, CASE WHEN k = 1 THEN '9EEEE' ELSE '9.' || repeat('9', k - 1) || 'EEEE' END));
        EXIT WHEN t::numeric <= 1.7976931348623157081e308 AND t::float8 = ax;
    END LOOP;
    p := position('e' in t);
    digits := rtrim(replace(substr(t, 1, p - 1), '.', ''), '0');
    decpt := substr(t, p + 1)::int + 1;
    IF decpt > -4 AND decpt <= 16 THEN
        IF decpt <= 0 THEN t := '0.' || repeat('0', -decpt) || digits;
        ELSIF decpt >= length(digits) THEN t := digits || repeat('0', decpt - length(digits)) || '.0';
        ELSE t := substr(digits, 1, decpt) || '.' || substr(digits, decpt + 1);
        END IF;
    ELSE
        t := substr(digits, 1, 1) || CASE WHEN length(digits) > 1 THEN '.' || substr(digits, 2) ELSE '' END
             || 'e' || CASE WHEN decpt - 1 < 0 THEN '-' ELSE '+' END
             || CASE WHEN abs(decpt - 1) < 10 THEN '0' ELSE '' END || abs(decpt - 1)::text;
    END IF;
    RETURN CASE WHEN x < 0 THEN '-' || t ELSE t END;
END $body$""",
    # casts of an answer's text that give NULL where the text is not of the type (as DuckDB's json_transform)
    "llmt_try_double": """
CREATE FUNCTION {s}.llmt_try_double_v{v}(x text) RETURNS double precision
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $body$
BEGIN RETURN x::double precision; EXCEPTION WHEN others THEN RETURN NULL; END $body$""",
    "llmt_try_bigint": """
CREATE FUNCTION {s}.llmt_try_bigint_v{v}(x text) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $body$
BEGIN RETURN x::numeric::bigint; EXCEPTION WHEN others THEN RETURN NULL; END $body$""",
    "llmt_try_date": """
CREATE FUNCTION {s}.llmt_try_date_v{v}(x text) RETURNS date
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $body$
BEGIN RETURN x::date; EXCEPTION WHEN others THEN RETURN NULL; END $body$""",
    "llmt_try_timestamptz": """
CREATE FUNCTION {s}.llmt_try_timestamptz_v{v}(x text) RETURNS timestamptz
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE AS $body$
BEGIN RETURN x::timestamptz; EXCEPTION WHEN others THEN RETURN NULL; END $body$""",
    "llmt_try_boolean": """
CREATE FUNCTION {s}.llmt_try_boolean_v{v}(x text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $body$
BEGIN RETURN x::boolean; EXCEPTION WHEN others THEN RETURN NULL; END $body$""",
}
# the same casts without an exception block (a subtransaction per call) where the server can test the text first;
# neither STRICT nor IMMUTABLE (pg_input_is_valid is STABLE), so that the planner inlines them: a call of a SQL
# function it does not inline costs more than the rest of an output column (a NULL still gives NULL)
FAST_CASTS = {"llmt_try_double": "double precision", "llmt_try_bigint": "bigint", "llmt_try_date": "date",
              "llmt_try_timestamptz": "timestamptz", "llmt_try_boolean": "boolean"}
FAST_CAST = """
CREATE FUNCTION {s}.{name}_v{v}(x text) RETURNS {type}
LANGUAGE sql STABLE PARALLEL SAFE AS $body$
SELECT CASE WHEN pg_input_is_valid(x, '{check}') THEN x::{cast}::{type} END $body$"""


def helper_sql(name: str, schema: str, server_version: int) -> str:
    """The CREATE FUNCTION of helper ``name`` in ``schema`` (quoted) for a server of ``server_version``."""
    if name in FAST_CASTS and server_version >= 160000:  # pg_input_is_valid
        kind = FAST_CASTS[name]
        check, cast = ("numeric", "numeric") if kind == "bigint" else (kind, kind)
        return FAST_CAST.format(s=schema, name=name, v=HELPERS_VERSION, type=kind, check=check, cast=cast)
    return HELPERS[name].format(s=schema, v=HELPERS_VERSION)


def helper(schema: str, name: str) -> str:
    """The qualified name of helper ``name`` (schema quoted)."""
    return f"{schema}.{name}_v{HELPERS_VERSION}"


def concat(parts: Sequence[str]) -> str:
    return f"concat({', '.join(parts)})"  # (copies a long text once, where a chain of || copies it each time)


def canonical(expr: str, type_: SqlType, state: str) -> str:
    """The canonical text (keys.py) of a value, 'n' for NULL (``state``: the state schema, quoted, of the helpers)."""
    return f"CASE WHEN {expr} IS NULL THEN 'n' ELSE {_canonical(expr, type_, state)} END"


def _canonical(expr: str, type_: SqlType, state: str) -> str:
    """The canonical text of a value that is not NULL."""
    family = type_.family
    text = f"({expr})::text"
    if family == "text":
        return concat(["'s'", f"octet_length({text})", "':'", text])
    if family in ("integer", "decimal"):
        return concat([f"'{family[0]}'", text])
    if family == "float":
        return concat(["'f'", f"{helper(state, 'llmt_float_text')}(({expr})::double precision)"])
    if family == "boolean":
        return f"CASE WHEN {expr} THEN 'b1' ELSE 'b0' END"
    if family == "date":
        return concat(["'D'", f"to_char({expr}, 'YYYY-MM-DD')"])
    if family == "timestamp":
        return concat(["'T'", f"to_char({expr}, {TIMESTAMP_FORMAT})"])
    if family == "timestamptz":
        return concat(["'Z'", f"to_char(({expr}) AT TIME ZONE 'UTC', {TIMESTAMP_FORMAT})"])
    other = concat(["'x'", f"octet_length({text})", "':'", text])  # not shared with other engines
    if family == "list":  # one dimension (PostgreSQL's arrays of more are keyed by their text, as `other`)
        item = canonical("_llmt_u.e", type_.children[0][1], state)
        items = (f"coalesce((SELECT string_agg({item}, ',' ORDER BY _llmt_u.o) FROM unnest({expr}) "
                 "WITH ORDINALITY AS _llmt_u(e, o)), '')")
        listed = concat(["'['", items, "']'"])
        return f"CASE WHEN array_ndims({expr}) > 1 THEN {other} ELSE {listed} END"
    return other
