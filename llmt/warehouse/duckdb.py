"""DuckDB behind the engine seam (base.py): the embedded default.

A connection is held for a command's short steps and released before anything slow (waiting on a provider),
so that BI tools and other readers are never locked out while a batch runs; opening the file waits for another
program's lock (`lock_timeout`, duckdb_files.py). DuckDB's fast paths are this adapter's own: reading batch
result files with `read_json` (`RESULT_FILES`), handing texts over as UTF-8 bytes, and choosing each column's
storage (ZSTD for long texts, request keys uncompressed: see `create_table`).
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from llmt import logs
from llmt.console import Reporter
from llmt.errors import ConfigError, LockTimeout
from llmt.project.config import LOCK_TIMEOUT
from llmt.warehouse import scratch_dirs
from llmt.warehouse.base import Column, DatabaseError, Params, SqlType, UnreadableFiles, Warehouse, quoted, sql_string
from llmt.warehouse.duckdb_files import attach_read_only, duckdb_config, open_database, wait_for_lock
from llmt.warehouse.state import KEYS, LATEST, MIGRATIONS, SCHEMA_VERSION_DDL, migrate

FETCH_ROWS = 5_000  # rows fetched at a time by `stream`
INTEGERS = frozenset({"tinyint", "smallint", "integer", "bigint", "hugeint", "utinyint", "usmallint", "uinteger",
                      "ubigint", "uhugeint"})
FAMILIES = {"varchar": "text", "uuid": "text", "enum": "text", "decimal": "decimal", "double": "float",
            "float": "float", "boolean": "boolean", "date": "date", "timestamp with time zone": "timestamptz",
            "timestamp": "timestamp", "timestamp_s": "timestamp", "timestamp_ms": "timestamp",
            "timestamp_ns": "timestamp", "list": "list", "array": "list", "struct": "struct",
            **dict.fromkeys(INTEGERS, "integer")}
TIMESTAMP_FORMAT = "'%Y-%m-%dT%H:%M:%S.%f'"
# what a state migration does to the DuckDB warehouses that earlier versions of llmt wrote, besides the shared
# statements (state.py): 9 copies the fingerprints they kept as COMMENTs
LEGACY = {
    9: """
        INSERT INTO {s}.fingerprints SELECT 'stage', substr(table_name, 8), substr(comment, 12), now()
        FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = {name}
          AND starts_with(table_name, 'input__') AND starts_with(comment, 'llmt-stage ');
        INSERT INTO {s}.fingerprints SELECT 'source', table_name, substr(comment, 13), now()
        FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = {name}
          AND starts_with(table_name, 'source__') AND starts_with(comment, 'llmt-source ');
        """,
}


class DuckDBWarehouse(Warehouse):
    """One DuckDB database file (or `:memory:`)."""

    dialect = "duckdb"
    RESULT_FILES = True
    COMPRESSION = True

    def __init__(self, path: str, project_dir: Path, schema: str = "main", state_schema: str = "_llmt",
                 settings: dict[str, str | int | float | bool] | None = None, lock_timeout: float = LOCK_TIMEOUT,
                 reporter: Reporter | None = None, *, read_only: bool = False, state_version: int = LATEST) -> None:
        super().__init__(schema, state_schema)
        self.state_version = state_version  # the state's version once opened (older ones: tests of migrations)
        self.memory = path == ":memory:"
        self.path = path if self.memory else str((project_dir / path).resolve())
        self.settings = settings or {}
        self.lock_timeout = lock_timeout
        self.reporter = reporter or Reporter()
        self.read_only = read_only  # attached read-only (`llmt plan`): state tables stand in, in memory
        # after a LockTimeout, later opens (the run recording its end) try once, and fail with the same error
        self._gave_up: LockTimeout | None = None
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._ready = False  # the state schema is migrated and the models' schema exists
        self._depth = 0  # transactions begun and not ended (an inner one joins the outer)

    # -- the connection ----------------------------------------------------------------------------
    @property
    def lasting(self) -> bool:
        return self.memory

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The open connection (for this package's DuckDB fast paths), opened and migrated on first use."""
        if self._conn is None:
            self._conn = self._open()
        if not self._ready:
            self._ready = True  # (set first: a failed migration is not tried again by the same command)
            if self.read_only:
                self._stand_in_state(self._conn)
            else:
                migrate(self, self.state_schema, self.state_version)
                self._conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.quote(self.schema)}")
        return self._conn

    def _open(self) -> duckdb.DuckDBPyConnection:
        config = duckdb_config(self.settings)
        path, timeout = self.path, 0.0 if self._gave_up else self.lock_timeout
        try:
            if self.read_only:
                return wait_for_lock(lambda: attach_read_only(path), path, timeout, self.reporter, True)
            return wait_for_lock(lambda: open_database(path, config), path, timeout, self.reporter)
        except LockTimeout as exc:
            self._gave_up = self._gave_up or exc
            raise self._gave_up from None
        except duckdb.IOException as exc:
            raise ConfigError(
                f"cannot open the DuckDB database {self.path}: {exc}",
                hint="Check the warehouse `path` of the target: its directory must exist and be writable.",
            ) from None
        except duckdb.Error as exc:  # a setting DuckDB does not know, or a value it refuses
            raise ConfigError(
                f"DuckDB refused the warehouse settings {self.settings}: {str(exc).splitlines()[0]}",
                where="project.yml (warehouse: settings:)",
                hint="Use DuckDB's setting names and values (https://duckdb.org/docs/configuration/overview).",
            ) from None

    def _stand_in_state(self, conn: duckdb.DuckDBPyConnection) -> None:
        """A read-only warehouse without llmt state gets empty state tables in memory (`"<state>".answers` then
        resolves to that catalog's main schema); one with older state is refused."""
        has_state = conn.execute("SELECT count(*) FROM information_schema.schemata WHERE catalog_name = "
                                 "current_database() AND schema_name = ?", [self.state_schema]).fetchone() == (1,)
        if not has_state:
            conn.execute(f"ATTACH ':memory:' AS {self.state}")
            memory = f"{self.state}.main"
            conn.execute(SCHEMA_VERSION_DDL.format(s=memory))
            for _, sql in MIGRATIONS:
                conn.execute(self._render(sql, memory))
            return
        row = conn.execute(f"SELECT max(version) FROM {self.state}.schema_version").fetchone()
        if row is None or (row[0] or 0) < LATEST:
            raise ConfigError(
                f"the llmt state in {self.path} is at version {row[0] if row else 0}; this llmt reads version {LATEST}",
                hint="Run `llmt status` once: it brings the state up to date (changing nothing else).",
            )

    def migration_sql(self, version: int, sql: str, schema: str) -> str:
        legacy = LEGACY.get(version, "").format(s=quoted(schema), name=sql_string(schema))
        return self._render(sql, quoted(schema)) + legacy

    def _render(self, sql: str, state: str) -> str:
        """A migration's statements for the state schema ``state`` (quoted): answer texts stored with ZSTD (where
        the file's storage version has it), request keys uncompressed (see `create_table`)."""
        return sql.format(s=state, zstd=" USING COMPRESSION zstd" if zstd_available(self.connection) else "",
                          keys=f" USING COMPRESSION {KEYS}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        conn = self.connection
        conn.execute("BEGIN TRANSACTION")
        self._depth = 1
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        finally:
            self._depth = 0
        conn.execute("COMMIT")

    def release(self) -> None:
        if self._conn is not None and not self.memory:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- statements ---------------------------------------------------------------------------------
    def _run(self, sql: str, params: Params, where: str | None) -> duckdb.DuckDBPyConnection:
        started = time.perf_counter()
        try:
            return self.connection.execute(sql, list(params) if params is not None else None)
        except duckdb.Error as exc:
            raise database_error(exc, where) from None
        finally:
            logs.statement(sql, time.perf_counter() - started, where)

    def execute(self, sql: str, params: Params = None, *, where: str | None = None) -> None:
        self._run(sql, params, where)

    def fetchall(self, sql: str, params: Params = None, *, where: str | None = None) -> list[tuple[Any, ...]]:
        return self._run(sql, params, where).fetchall()

    def fetchone(self, sql: str, params: Params = None, *, where: str | None = None) -> tuple[Any, ...] | None:
        return self._run(sql, params, where).fetchone()

    def stream(self, sql: str, params: Params = None, *, where: str | None = None) -> Iterator[tuple[Any, ...]]:
        cursor = self._run(sql, params, where)
        try:
            while chunk := cursor.fetchmany(FETCH_ROWS):
                yield from chunk
        except duckdb.Error as exc:
            raise database_error(exc, where) from None

    def query(self, sql: str, params: Params = None, *, where: str | None = None
              ) -> tuple[list[str], list[tuple[Any, ...]]]:
        cursor = self._run(sql, params, where)
        return [str(d[0]) for d in cursor.description], cursor.fetchall()

    # -- relations ----------------------------------------------------------------------------------
    def describe(self, select: str, *, where: str | None = None) -> list[Column]:
        started = time.perf_counter()
        try:
            relation = self.connection.sql(select)
            return [Column(str(name), sql_type(kind)) for name, kind in zip(relation.columns, relation.types,
                                                                            strict=True)]
        except duckdb.Error as exc:
            raise database_error(exc, where) from None
        finally:
            logs.statement(f"DESCRIBE {select}", time.perf_counter() - started, where)

    def relation_kind(self, schema: str, name: str) -> str | None:
        return self.relation_kinds([schema], name).get((schema, name))

    def relation_kinds(self, schemas: Sequence[str], name: str | None = None) -> dict[tuple[str, str], str]:
        """Read from DuckDB's catalog functions (information_schema, a view over them, costs ten times more)."""
        rows = self.fetchall(
            "SELECT schema_name, table_name, 'table' FROM duckdb_tables() WHERE database_name = current_database() "
            "AND list_contains(?::VARCHAR[], schema_name) AND (? IS NULL OR table_name = ?) UNION ALL "
            "SELECT schema_name, view_name, 'view' FROM duckdb_views() WHERE database_name = current_database() "
            "AND list_contains(?::VARCHAR[], schema_name) AND (? IS NULL OR view_name = ?) AND NOT internal",
            [list(schemas), name, name] * 2)
        return {(str(s), str(n)): str(kind) for s, n, kind in rows}

    def create_table(self, table: str, select: str, params: Params = None, *,
                     compression: Mapping[str, str] | None = None, where: str | None = None) -> None:
        """CREATE TABLE ``table`` AS ``select``, storing each column of ``compression`` with its method (``zstd``
        only when the database's storage version has it: 1.2 and later). DuckDB's own choice for long texts
        (DICT_FSST, after trying every method) costs several times ZSTD's to write, and ZSTD is smaller and as
        quick to read; hex digests (request keys) are cheapest to write uncompressed (`KEYS`), and joins on them
        are as quick or quicker (benchmarks/README.md)."""
        columns = self.describe(select, where=where)
        methods = dict(compression or {})
        if "zstd" in methods.values() and not zstd_available(self.connection):
            methods = {c: m for c, m in methods.items() if m != "zstd"}
        self.execute(f"CREATE TABLE {table} (" + ", ".join(
            f"{self.quote(c.name)} {c.type.name}" + (f" USING COMPRESSION {methods[c.name]}" if c.name in methods
                                                     else "") for c in columns) + ")", where=where)
        self.execute(f"INSERT INTO {table} {select}", params, where=where)

    def load_files(self, table: str, reader: str, untyped: str | None = None) -> None:
        try:
            columns = self.describe(f"SELECT * FROM {reader}")
        except DatabaseError as exc:
            raise UnreadableFiles(exc.message, detail=exc.detail) from None
        select = "SELECT " + ", ".join(
            f"CAST({self.quote(c.name)} AS {untyped}) AS {self.quote(c.name)}" if untyped and c.type.name == '"NULL"'
            else self.quote(c.name) for c in columns) + f" FROM {reader}"
        texts = [c.name for c in columns if c.type.name == "VARCHAR"]
        self.execute(f"DROP TABLE IF EXISTS {table}")
        try:
            self.create_table(table, select, compression=dict.fromkeys(texts, "zstd"))  # ZSTD: see create_table
        except DatabaseError as exc:
            raise UnreadableFiles(exc.message, detail=exc.detail) from None

    def load_rows(self, table: str, columns: Mapping[str, Sequence[Any]], types: Mapping[str, str]) -> None:
        if not columns or not len(next(iter(columns.values()))):
            return
        self.execute(f"INSERT INTO {table} ({', '.join(self.quote(c) for c in columns)}) SELECT " + ", ".join(
            f"unnest(?::{types[c]}[])" for c in columns), [list(v) for v in columns.values()])

    def load_lines(self, table: str, constants: Mapping[str, str], column: str, path: Path) -> None:
        """DuckDB reads the file itself (a million request keys: a fraction of a second)."""
        names = [*constants, column]
        self.execute(f"INSERT INTO {table} ({', '.join(self.quote(c) for c in names)}) SELECT "
                     + "".join("?, " for _ in constants) + "k FROM read_csv(?, header = false, "
                     "columns = {'k': 'VARCHAR'}, delim = ',', quote = '', escape = '')",
                     [*constants.values(), str(path)])

    def comments(self, schema: str, name: str) -> tuple[str, str | None, dict[str, str | None]] | None:
        found = self.fetchone(
            "SELECT 'TABLE', comment FROM duckdb_tables() WHERE database_name = current_database() AND "
            "schema_name = ? AND table_name = ? UNION ALL SELECT 'VIEW', comment FROM duckdb_views() WHERE "
            "database_name = current_database() AND schema_name = ? AND view_name = ?", [schema, name, schema, name])
        if found is None:
            return None
        columns = self.fetchall("SELECT column_name, comment FROM duckdb_columns() WHERE database_name = "
                                "current_database() AND schema_name = ? AND table_name = ? ORDER BY column_index",
                                [schema, name])
        return str(found[0]), found[1], {str(c): comment for c, comment in columns}

    # -- expressions ----------------------------------------------------------------------------------
    def canonical_sql(self, expr: str, type_: SqlType) -> str:
        family = type_.family
        if family == "text":
            text = expr if type_.name == "VARCHAR" else f"{expr}::VARCHAR"
            inner = f"'s' || strlen({text}) || ':' || {text}"
        elif family in ("integer", "decimal"):
            inner = f"'{family[0]}' || {expr}::VARCHAR"
        elif family == "float":
            inner = f"'f' || {expr}::DOUBLE::VARCHAR"
        elif family == "boolean":
            inner = f"CASE WHEN {expr} THEN 'b1' ELSE 'b0' END"
        elif family == "date":
            inner = f"'D' || {expr}::VARCHAR"
        elif family == "timestamp":
            inner = f"'T' || strftime({expr}::TIMESTAMP, {TIMESTAMP_FORMAT})"
        elif family == "timestamptz":
            inner = f"'Z' || strftime(timezone('UTC', {expr}), {TIMESTAMP_FORMAT})"
        elif family == "list":
            item = self.canonical_sql("x", type_.children[0][1])
            inner = f"'[' || array_to_string(list_transform({expr}, lambda x: {item}), ',') || ']'"
        elif family == "struct":
            fields = [sql_string(f"s{len(name.encode())}:{name}:") + " || "
                      + self.canonical_sql(self.field_sql(expr, name), kind) for name, kind in type_.children]
            inner = "'{' || " + " || ',' || ".join(fields or ["''"]) + " || '}'"
        else:  # deterministic here, not shared with other engines (keys.py)
            inner = f"'x' || strlen({expr}::VARCHAR) || ':' || {expr}::VARCHAR"
        return f"CASE WHEN {expr} IS NULL THEN 'n' ELSE {inner} END"

    def legacy_input_hash_sql(self, names: Sequence[str], alias: str) -> str:
        fields = ", ".join(f"{self.quote(c)} := {alias}.{self.quote(c)}" for c in names)
        return f"sha256(to_json(struct_pack({fields})))" if names else "sha256('')"

    def sha256_sql(self, expr: str) -> str:
        return f"sha256({expr})"

    def row_hash_sql(self, exprs: Sequence[str]) -> str:
        return f"hash({', '.join(exprs)})" if exprs else "0::UBIGINT"

    def utf8_sql(self, expr: str) -> str:
        return f"encode({expr}::VARCHAR)"

    def sum_hashes_sql(self, column: str) -> str:
        return f"sum({column}::HUGEINT), bit_xor(hash({column}))"

    def one_row_per_key_sql(self, source: str, columns: Sequence[str], keys: str, staged: bool) -> str:
        cols = "".join(f", i.{c}" for c in columns)
        if staged:  # a table: one row per key by rowid (sorting the texts is slow)
            return (f"SELECT i._llmt_request_key{cols} FROM {source} i SEMI JOIN (SELECT min(s.rowid) AS r FROM "
                    f"{source} s SEMI JOIN {keys} k ON k._llmt_request_key = s._llmt_request_key "
                    "GROUP BY s._llmt_request_key) p ON p.r = i.rowid")
        return (f"SELECT DISTINCT ON (i._llmt_request_key) i._llmt_request_key{cols} FROM {source} i "
                f"SEMI JOIN {keys} k ON k._llmt_request_key = i._llmt_request_key ORDER BY i._llmt_request_key")

    def unstored_sql(self, source: str, stored: str, on: Sequence[str]) -> str:
        """The stored rows are found by probing them with the source's (a semi join), then left out (an anti
        join): a small source does not hash every stored row."""
        probe = " AND ".join(f"k.{k} = a.{k}" for k in on)
        same = " AND ".join(f"d.{k} = c.{k}" for k in on)
        return (f"FROM {source} c ANTI JOIN (SELECT {', '.join(f'a.{k}' for k in on)} FROM {stored} a "
                f"SEMI JOIN {source} k ON {probe}) d ON {same} WHERE true")

    def arg_max_sql(self, value: str, by: str) -> str:
        return f"arg_max({value}, {by})"

    def json_object_sql(self, fields: Sequence[tuple[str, str]]) -> str:
        return "to_json(struct_pack(" + ", ".join(f"{self.quote(n)} := {v}" for n, v in fields) + "))"

    def json_text_sql(self, json: str, field: str) -> str:
        return f"json_extract_string({json}, {sql_string('$.' + field)})"

    def try_double_sql(self, expr: str) -> str:
        return f"TRY_CAST({expr} AS DOUBLE)"

    def answer_sql(self, answer: str, structure: Any) -> str:
        return f"json_transform({answer}, {sql_string(json.dumps(structure))})"

    def answer_field_sql(self, parsed: str, name: str, structure: Any) -> str:
        return self.field_sql(parsed, name)

    def vector_type(self, dimensions: int) -> str:
        return f"FLOAT[{int(dimensions)}]"

    @classmethod
    def nearest_sql(cls, queries: str, documents: str, query_key: Sequence[str], document_key: Sequence[str],
                    column: str, k: int) -> str:
        # one pass over the pairs: a top-k aggregate per query row, not a sort of every pair (a window function
        # sorts them all: benchmarks/README.md); min_by on (-similarity, key) puts ties in key order
        q, d, vec = (", ".join(f"q.{quoted(c)}" for c in query_key),
                     ", ".join(f"d.{quoted(c)} AS {quoted(c)}" for c in document_key), quoted(column))
        keys = ", ".join(quoted(c) for c in query_key)
        doc = ", ".join(quoted(c) for c in document_key)
        packed = ", ".join(f"{quoted(c)} := {quoted(c)}" for c in document_key)
        fields = ", ".join(f"_llmt_n.{quoted(c)}" for c in document_key)
        return (f"SELECT {keys}, {fields}, _llmt_n.similarity, neighbor_rank FROM (SELECT {keys}, "
                "unnest(_llmt_top) AS _llmt_n, generate_subscripts(_llmt_top, 1) AS neighbor_rank FROM (SELECT "
                f"{keys}, min_by(struct_pack({packed}, similarity := similarity), row(-similarity, {doc}), {int(k)}) "
                "AS _llmt_top "
                f"FROM (SELECT {q}, {d}, array_cosine_similarity(q.{vec}, d.{vec}) AS similarity FROM {queries} AS q "
                f"CROSS JOIN {documents} AS d WHERE q.{vec} IS NOT NULL AND d.{vec} IS NOT NULL) AS _llmt_pairs "
                f"GROUP BY {keys}) AS _llmt_tops) AS _llmt_neighbors")

    def sql_type(self, structure: Any) -> str:
        if isinstance(structure, list):
            return f"{self.sql_type(structure[0])}[]"
        if isinstance(structure, dict):
            return "STRUCT(" + ", ".join(f"{self.quote(k)} {self.sql_type(v)}" for k, v in structure.items()) + ")"
        return str(structure)


def csv_copy(select: str, csv: Path) -> str:
    """The statement writing ``select``'s rows into ``csv`` as PostgreSQL's COPY reads them (no header, NULL an
    empty field, an empty text a quoted one)."""
    return (f"COPY ({select}) TO {sql_string(str(csv))} (FORMAT csv, HEADER false, DATEFORMAT '%Y-%m-%d', "
            "TIMESTAMPFORMAT '%Y-%m-%d %H:%M:%S.%f%z')")


@contextmanager
def scratch(settings: dict[str, str | int | float | bool] | None = None) -> Iterator[DuckDBWarehouse]:
    """An in-memory DuckDB for work done in DuckDB's SQL on another engine's behalf (reading file sources and
    batch result files for PostgreSQL and Spark), spilling into a temporary directory of its own (past
    LLMT_DUCKDB_MEMORY_LIMIT; DuckDB's own default is `.tmp` in the working directory)."""
    with tempfile.TemporaryDirectory(prefix=scratch_dirs.prefix("scratch")) as spill:
        wh = DuckDBWarehouse(":memory:", Path(spill), settings={**(settings or {}), "temp_directory": spill})
        try:
            yield wh
        finally:
            wh.close()


def sql_type(kind: Any) -> SqlType:
    """A DuckDB type (of the Python client) as a SqlType."""
    family = FAMILIES.get(str(kind.id), "other")
    if family == "list":
        return SqlType(str(kind), family, (("item", sql_type(kind.children[0][1])),))
    if family == "struct":
        return SqlType(str(kind), family, tuple((str(n), sql_type(t)) for n, t in kind.children))
    return SqlType(str(kind), family)


def zstd_available(conn: duckdb.DuckDBPyConnection) -> bool:
    """Whether the database's storage version has ZSTD for strings (1.2 and later)."""
    row = conn.execute("SELECT tags['storage_version'] FROM duckdb_databases() WHERE database_name = "
                       "current_database()").fetchone()
    version = re.match(r"v(\d+)\.(\d+)", str(row[0]) if row else "")
    return version is not None and (int(version[1]), int(version[2])) >= (1, 2)


def database_error(exc: duckdb.Error, where: str | None) -> DatabaseError:
    first = re.sub(r"\s+", " ", str(exc).strip().split("\n")[0])
    return DatabaseError(f"the database rejected the SQL: {first}", where=where, detail=str(exc),
                         hint="Run `llmt compile` to see the compiled SQL under target/compiled/." if where else None)
