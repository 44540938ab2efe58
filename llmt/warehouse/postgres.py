"""PostgreSQL behind the engine seam (base.py), through psycopg 3.

A connection is held for a command's short steps, with the state's advisory lock (postgres_connect.py), and
released before anything slow. Rows go in with COPY (`load_rows`, `load_lines`, and file sources read by
DuckDB's readers: `load_files`) and come out through a chunked stream; batch results are classified in Python
(`RESULT_FILES` is off) and reconciled in SQL. A table is replaced by building it under another name and
swapping it in by rename at the end of the transaction, so that readers see the old table or the new one,
never a half-built one; a table other views depend on is refilled in place instead (its dependents stay).

Two modes keep everything they do uncommitted, in one transaction rolled back at the end: `read_only`
(`llmt plan`: state tables that do not exist yet are made in it) and `scratch` (unit tests: schemas of their
own, so the target's tables are never touched or locked).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import psycopg

from llmt import logs
from llmt.console import Reporter
from llmt.errors import ConfigError
from llmt.project.config import PostgresConfig
from llmt.warehouse.base import (
    Column,
    DatabaseError,
    Params,
    SqlType,
    TempTable,
    UnreadableFiles,
    Warehouse,
    WarehouseError,
)
from llmt.warehouse.postgres_connect import connect, connection_parameters, lock_key, scrub, take_lock
from llmt.warehouse.postgres_load import (
    binary_type,
    copy_bytes,
    copy_text,
    file_column_type,
    nested,
    through_pipe,
)
from llmt.warehouse.postgres_sql import (
    HELPERS,
    canonical,
    concat,
    family,
    helper,
    helper_sql,
    placeholders,
    type_name,
)
from llmt.warehouse.state import LATEST, migrate

FETCH_ROWS = 5_000  # rows fetched at a time by `stream`
COPY_CHUNK = 1 << 20  # bytes sent at a time by COPY
ANALYZE_ROWS = 10_000  # llmt's own tables made with more rows are analyzed (autovacuum comes later, or never)
ANALYZE_SHARE = 10  # ... or when they grew by a tenth (reltuples is -1 before a table's first ANALYZE)
STATISTICS_TARGET = 10  # ANALYZE's sample: 3,000 rows (the default's 30,000 cost more than the joins gained)
VECTOR = "real[]"  # an embedding model's vectors (no fixed size: PostgreSQL does not enforce an array's length)
ANSWER_CASTS = {"BIGINT": "llmt_try_bigint", "DOUBLE": "llmt_try_double", "BOOLEAN": "llmt_try_boolean",
                "DATE": "llmt_try_date", "TIMESTAMPTZ": "llmt_try_timestamptz"}


class PostgresWarehouse(Warehouse):
    """One database of a PostgreSQL server."""

    dialect = "postgres"
    RESULT_FILES = False
    FENCE = " OFFSET 0"  # (the planner would otherwise parse an answer's JSON once per field)
    ROW_PER_KEY = False

    def __init__(self, config: PostgresConfig, target: str, reporter: Reporter | None = None, *,
                 read_only: bool = False, scratch: bool = False, application: str = "llmt",
                 worker: bool = False) -> None:
        schema, state_schema = config.schema_, config.state_schema
        if scratch:  # schemas of its own: nothing of the target's is read, written or locked
            schema = f"_llmt_scratch_{secrets.token_hex(4)}"
            state_schema = f"{schema}_state"
        super().__init__(schema, state_schema)
        self.config, self.target = config, target
        self.reporter = reporter or Reporter()
        self.read_only, self.scratch = read_only, scratch
        self.application = application
        self.is_worker = worker  # writes under another connection's lock (`worker()`): takes none, migrates nothing
        self.where = f"project.yml (target `{target}`, warehouse:)"
        self._params: dict[str, Any] | None = None
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._ready = worker
        self._depth = 0
        self._families: dict[int, tuple[str, str, int]] = {}  # type oid -> (name, family, item oid)

    # -- the connection ----------------------------------------------------------------------------
    @property
    def lasting(self) -> bool:
        return self.read_only or self.scratch  # its work is one transaction, rolled back at the end

    @property
    def params(self) -> dict[str, Any]:
        if self._params is None:
            self._params = connection_parameters(self.config, self.where)
        return self._params

    @property
    def connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> psycopg.Connection[tuple[Any, ...]]:
        conn = connect(self.params, self.target, self.application)
        try:
            conn.execute("SET extra_float_digits = 1")  # doubles in text results exact (the default since 12)
            if self.config.statement_timeout:
                conn.execute(f"SET statement_timeout = {int(self.config.statement_timeout * 1000)}")
            if self.lasting:
                conn.execute("BEGIN")
            elif not self.is_worker and (self._ready or not self.read_only):
                take_lock(conn, lock_key(conn.info.dbname, self.state_schema), self.config.lock_timeout,
                          self.reporter, self.where)
            self._conn = conn
            if not self._ready:
                self._ready = True  # (set first: a failed migration is not tried again by the same command)
                self._prepare()
        except psycopg.Error as exc:
            conn.close()
            self._conn = None
            raise self._error(exc, None) from None
        except BaseException:
            conn.close()
            self._conn = None
            raise
        return conn

    def _prepare(self) -> None:
        """The state schema migrated (a read-only warehouse refuses older state), llmt's helper functions and
        the models' schema made."""
        version = int(self.scalar(f"SELECT coalesce(max(version), 0) FROM {self.state}.schema_version")
                      if self.relation_kind(self.state_schema, "schema_version") else 0)
        if self.read_only and 0 < version < LATEST:
            raise ConfigError(
                f"the llmt state of target `{self.target}` is at version {version}; this llmt reads version {LATEST}",
                hint="Run `llmt status` once: it brings the state up to date (changing nothing else).")
        migrate(self, self.state_schema)
        server = self.connection.info.server_version
        with self.transaction():
            for name in HELPERS:
                if self.scalar("SELECT to_regproc(?)", [helper(self.state, name)]) is None:
                    self.execute(helper_sql(name, self.state, server))
            self.execute(f"CREATE SCHEMA IF NOT EXISTS {self.quote(self.schema)}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth or self.lasting:
            self.connection  # noqa: B018 (opened, and its transaction begun, before the step's statements)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        conn = self.connection
        conn.execute("BEGIN")
        self._depth = 1
        try:
            yield
        except BaseException:
            if not conn.closed:
                conn.execute("ROLLBACK")
            raise
        finally:
            self._depth = 0
        try:
            conn.execute("COMMIT")
        except psycopg.Error as exc:
            raise self._error(exc, None) from None

    def worker(self) -> PostgresWarehouse | None:
        if self.lasting:  # its work is in one transaction that no other connection sees
            return None
        return PostgresWarehouse(self.config, self.target, self.reporter, application=self.application, worker=True)

    def hold(self) -> None:
        self.connection  # noqa: B018 (connected, with the lock)

    def release(self) -> None:
        if self._conn is not None and not self.lasting:
            self._conn.close()  # (lets go of the advisory lock)
            self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            if self.lasting and not self._conn.closed:
                self._conn.execute("ROLLBACK")
            self._conn.close()
            self._conn = None

    # -- statements ---------------------------------------------------------------------------------
    def _cursor(self, sql: str, params: Params, where: str | None) -> psycopg.Cursor[tuple[Any, ...]]:
        conn = self.connection
        started = time.perf_counter()
        try:
            if params is None:
                return conn.execute(sql)
            return conn.execute(placeholders(sql), list(params))
        except psycopg.Error as exc:
            raise self._error(exc, where) from None
        finally:
            logs.statement(sql, time.perf_counter() - started, where)

    def _error(self, exc: psycopg.Error, where: str | None) -> DatabaseError:
        """The error a user sees (without the password); a problem of the target rather than of a model (the
        connection lost, a privilege missing, a statement out of time) stops the command (WarehouseError)."""
        text = scrub(str(exc).strip(), self._params)
        first = " ".join(text.split("\n")[0].split()) or exc.__class__.__name__
        target = f"the PostgreSQL warehouse of target `{self.target}`"
        if isinstance(exc, psycopg.OperationalError) and (self._conn is None or self._conn.closed):
            return WarehouseError(f"the connection to {target} was lost: {first}", where=self.where, detail=text,
                                  hint="Run the command again when the server is back: what was stored is kept.")
        if isinstance(exc, psycopg.errors.QueryCanceled):
            limit = self.config.statement_timeout
            return WarehouseError(
                f"{target} cancelled a statement: {first}", where=where or self.where, detail=text,
                hint=(f"It ran longer than the target's statement_timeout ({limit:g} s): raise it, or make the model "
                      "cheaper. Nothing of the step was kept.") if limit else "Nothing of the step was kept.")
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return WarehouseError(
                f"{target} refused: {first}", where=where or self.where, detail=text,
                hint=f"The target's user needs USAGE and CREATE on the schemas `{self.schema}` and "
                f"`{self.state_schema}` (GRANT ... ON SCHEMA ...; or CREATE on the database to make them), or set "
                "other `schema:`/`state_schema:`. Nothing was written.")
        hint = "Run `llmt compile` to see the compiled SQL under target/compiled/." if where else None
        return DatabaseError(f"the database rejected the SQL: {first}", where=where or self.where, detail=text,
                             hint=hint)

    def execute(self, sql: str, params: Params = None, *, where: str | None = None) -> None:
        self._cursor(sql, params, where)

    def insert_new(self, sql: str, params: Params = None, *, where: str | None = None) -> None:
        # without nested loops: a table analyzed while empty is planned as one row, and a nested loop would scan
        # it again for each row while the statement grows it (quadratic: 896k rows ran for over ten minutes); a hash
        # reads it once. (After a failure, the rollback of the transaction it aborted undoes the SET, and a lost
        # connection takes it along.)
        self.execute("SET enable_nestloop = off")
        try:
            self.execute(sql, params, where=where)
        finally:
            if self._conn is not None and self._conn.info.transaction_status in (
                    psycopg.pq.TransactionStatus.IDLE, psycopg.pq.TransactionStatus.INTRANS):
                self.execute("RESET enable_nestloop")

    def fetchall(self, sql: str, params: Params = None, *, where: str | None = None) -> list[tuple[Any, ...]]:
        return self._cursor(sql, params, where).fetchall()

    def stream(self, sql: str, params: Params = None, *, where: str | None = None) -> Iterator[tuple[Any, ...]]:
        query = sql if params is None else placeholders(sql)
        started = time.perf_counter()
        try:
            yield from self.connection.cursor().stream(query, None if params is None else list(params),
                                                       size=FETCH_ROWS, binary=True)
        except psycopg.Error as exc:
            raise self._error(exc, where) from None
        finally:
            logs.statement(sql, time.perf_counter() - started, where)  # (its reader's time included)

    def query(self, sql: str, params: Params = None, *, where: str | None = None
              ) -> tuple[list[str], list[tuple[Any, ...]]]:
        cursor = self._cursor(sql, params, where)
        return [d.name for d in cursor.description or ()], cursor.fetchall()

    # -- relations ----------------------------------------------------------------------------------
    def describe(self, select: str, *, where: str | None = None) -> list[Column]:
        cursor = self._cursor(f"SELECT * FROM ({select}) AS _llmt_described LIMIT 0", None, where)
        oids = [d.type_code for d in cursor.description or ()]
        self._learn_types(oids)
        return [Column(d.name, self._sql_type(d.type_code)) for d in cursor.description or ()]

    def _learn_types(self, oids: Sequence[int]) -> None:
        missing = sorted({o for o in oids if o not in self._families})
        if not missing:
            return
        for oid, name, typname, category, elem in self.fetchall(
                "SELECT t.oid::int, format_type(t.oid, NULL), t.typname, t.typcategory, t.typelem::int FROM pg_type t "
                "WHERE t.oid = ANY(?::oid[])", [missing]):
            self._families[oid] = (name, family(typname, category), elem)
            if elem:
                self._learn_types([elem])

    def _sql_type(self, oid: int) -> SqlType:
        name, fam, elem = self._families.get(oid, (str(oid), "other", 0))
        if fam == "list":
            return SqlType(name, fam, (("item", self._sql_type(elem)),))
        return SqlType(name, fam)

    def relation_kind(self, schema: str, name: str) -> str | None:
        kind = self.scalar("SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                           "WHERE n.nspname = ? AND c.relname = ? AND c.relkind IN ('r', 'p', 'v', 'm')",
                           [schema, name])
        return None if kind is None else "view" if kind in ("v", "m") else "table"

    def relation_kinds(self, schemas: Sequence[str], name: str | None = None) -> dict[tuple[str, str], str]:
        rows = self.fetchall("SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = "
                             "c.relnamespace WHERE n.nspname = ANY(?::text[]) AND (?::text IS NULL OR c.relname = ?) "
                             "AND c.relkind IN ('r', 'p', 'v', 'm')", [list(schemas), name, name])
        return {(str(s), str(n)): "view" if kind in ("v", "m") else "table" for s, n, kind in rows}

    def create_table(self, table: str, select: str, params: Params = None, *,
                     compression: Mapping[str, str] | None = None, where: str | None = None) -> None:
        cursor = self._cursor(f"CREATE TABLE {table} AS {select}", params, where)
        if table.startswith(self.state + "."):  # llmt's own tables are joined again in the same run
            self._analyze(table, max(cursor.rowcount, 0))

    def analyze(self, table: str, rows: int) -> None:
        self._analyze(table, rows)

    def _analyze(self, table: str, rows: int) -> None:
        """Statistics for the planner of a table just filled with ``rows``, or that ``rows`` went into
        (autovacuum comes later, and never to temp tables), from a small sample; not when they are a small
        share of a table analyzed before (as autovacuum's scale factor)."""
        if rows >= ANALYZE_ROWS and rows * ANALYZE_SHARE >= float(
                self.scalar("SELECT reltuples FROM pg_class WHERE oid = to_regclass(?)", [table]) or 0):
            self._sample(table)

    def _sample(self, table: str) -> None:
        self.execute(f"SET default_statistics_target = {STATISTICS_TARGET}")
        self.execute(f"ANALYZE {table}")
        self.execute("RESET default_statistics_target")

    def replace_table(self, table: str, select: str, kind: str | None, *, where: str | None = None) -> None:
        schema, name = self._split(table)
        new = self.relation(schema, name + "__llmt_new")
        self.execute(f"DROP TABLE IF EXISTS {new}")
        self.create_table(new, select, where=where)
        self.swap_table(new, schema, name, kind)

    def swap_table(self, new: str, schema: str, name: str, kind: str | None) -> None:
        """Put the table ``new`` in the place of ``schema.name`` (``kind``: what is there now). A table that views
        depend on is refilled in place when its columns stay the same (its dependents stay); otherwise it is
        dropped with them, and the reporter says which views went (their models make them again)."""
        table = self.relation(schema, name)
        dependents = self._dependents(table) if kind is not None else []
        if dependents and kind == "table" and self._columns(table) == self._columns(new):
            self.execute(f"DELETE FROM {table}")
            self.execute(f"INSERT INTO {table} SELECT * FROM {new}")
            self.execute(f"DROP TABLE {new}")
            return
        if kind is not None:
            self.execute(f"DROP {kind.upper()} {table} CASCADE")
            if dependents:
                self.reporter.warn(f"{schema}.{name} was replaced with new columns: the views that read it were "
                                   f"dropped ({', '.join(dependents)}); run their models to make them again")
        self.execute(f"ALTER TABLE {new} RENAME TO {self.quote(name)}")

    def replace_view(self, table: str, select: str, kind: str | None, *, where: str | None = None) -> None:
        if kind == "view":
            self.execute("SAVEPOINT llmt_view")
            try:
                self.execute(f"CREATE OR REPLACE VIEW {table} AS {select}", where=where)
                self.execute("RELEASE SAVEPOINT llmt_view")
                return
            except DatabaseError:  # its columns changed: made anew
                self.execute("ROLLBACK TO SAVEPOINT llmt_view")
        schema, name = self._split(table)
        dependents = self._dependents(table) if kind is not None else []
        if kind is not None:
            self.execute(f"DROP {kind.upper()} {table} CASCADE")
        self.execute(f"CREATE VIEW {table} AS {select}", where=where)
        if dependents:
            self.reporter.warn(f"{schema}.{name} was made anew: the views that read it were dropped "
                               f"({', '.join(dependents)}); run their models to make them again")

    def _split(self, table: str) -> tuple[str, str]:
        """(schema, name) of a relation this warehouse named (`"schema"."name"`)."""
        row = self.fetchone("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = "
                            "c.relnamespace WHERE c.oid = to_regclass(?)", [table])
        if row is not None:
            return str(row[0]), str(row[1])
        schema, _, name = table.partition('"."')
        return schema[1:].replace('""', '"'), name[:-1].replace('""', '"')

    def _dependents(self, table: str) -> list[str]:
        """The views (of any schema) that read ``table``."""
        return [str(r[0]) for r in self.fetchall(
            "SELECT DISTINCT v.oid::regclass::text FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid "
            "JOIN pg_class v ON v.oid = r.ev_class WHERE d.refobjid = to_regclass(?) AND v.oid <> d.refobjid "
            "ORDER BY 1", [table])]

    def _columns(self, table: str) -> list[tuple[str, str]]:
        return [(str(n), str(t)) for n, t in self.fetchall(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass(?) "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum", [table])]

    def temp_table(self, name: str, select: str, params: Params = None, *, where: str | None = None,
                   parallel: bool = False) -> TempTable:
        if parallel and self._depth:
            # the server's parallel workers cannot read a temp table (its pages are in the session's own memory):
            # an unlogged table of the state schema, made in the caller's transaction (a failure or a kill rolls
            # it back with the rest), always analyzed (a plan from a guess hashed the big side of the join)
            table = self.relation(self.state_schema, f"{name}_{secrets.token_hex(4)}")
            rows = max(self._cursor(f"CREATE UNLOGGED TABLE {table} AS {select}", params, where).rowcount, 0)
            self._sample(table)
            return TempTable(table, rows)
        table = self.quote(name)
        self.execute(f"DROP TABLE IF EXISTS pg_temp.{table}")
        cursor = self._cursor(f"CREATE TEMP TABLE {table} AS {select}", params, where)
        rows = max(cursor.rowcount, 0)
        self._analyze(table, rows)
        return TempTable(table, rows)

    def temp_rows(self, name: str, columns: Mapping[str, Sequence[Any]], types: Mapping[str, str]) -> TempTable:
        table = self.quote(name)
        self.execute(f"DROP TABLE IF EXISTS pg_temp.{table}")
        self.execute(f"CREATE TEMP TABLE {table} ("
                     + ", ".join(f"{self.quote(c)} {type_name(types[c])}" for c in columns) + ")")
        self.load_rows(table, columns, types)
        rows = len(next(iter(columns.values()), ()))
        self._analyze(table, rows)
        return TempTable(table, rows, list(columns))

    def load_rows(self, table: str, columns: Mapping[str, Sequence[Any]], types: Mapping[str, str]) -> None:
        """Binary COPY (a third quicker than text, and quicker than an Arrow bulk load through ADBC:
        benchmarks/README.md), for the types psycopg knows how to send so; text COPY otherwise."""
        if not columns or not len(next(iter(columns.values()))):
            return
        names = ", ".join(self.quote(c) for c in columns)
        binary = [binary_type(type_name(types[c])) for c in columns]
        known = all(t is not None and self.connection.adapters.types.get(t) for t in binary)
        try:
            with self.connection.cursor().copy(
                    f"COPY {table} ({names}) FROM STDIN" + (" (FORMAT BINARY)" if known else "")) as copy:
                if known:
                    copy.set_types([str(t) for t in binary])
                for row in zip(*columns.values(), strict=True):
                    copy.write_row(row)
        except psycopg.Error as exc:
            raise self._error(exc, None) from None

    def load_lines(self, table: str, constants: Mapping[str, str], column: str, path: Path) -> None:
        """The file's lines sent as they are, each after the constants (COPY's text format: tab-separated)."""
        names = ", ".join(self.quote(c) for c in [*constants, column])
        prefix = "".join(copy_text(v) + "\t" for v in constants.values()).encode()
        try:
            with self.connection.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy, \
                    path.open("rb") as lines:
                batch: list[bytes] = []
                for line in lines:
                    if line.strip():
                        batch.append(prefix + copy_bytes(line.rstrip(b"\r\n")) + b"\n")
                    if len(batch) >= FETCH_ROWS:
                        copy.write(b"".join(batch))
                        batch.clear()
                copy.write(b"".join(batch))
        except psycopg.Error as exc:
            raise self._error(exc, None) from None

    def load_files(self, table: str, reader: str, untyped: str | None = None) -> None:
        """DuckDB reads the files (the reader of file sources on every warehouse) and writes them as CSV, which
        COPY sends to the server as it comes (`through_pipe`): text, numbers, booleans, dates and timestamps keep
        their types; lists, structs and maps arrive as jsonb. The table is built under another name and put in
        place (`swap_table`)."""
        import duckdb

        from llmt.warehouse.duckdb import csv_copy, scratch
        from llmt.warehouse.duckdb import sql_type as duckdb_sql_type

        schema, name = self._split(table)
        new = self.relation(schema, name + "__llmt_new")
        with scratch() as reading:
            try:
                relation = reading.connection.sql(f"SELECT * FROM {reader}")
                columns = [(str(n), duckdb_sql_type(t), str(t))
                           for n, t in zip(relation.columns, relation.types, strict=True)]
            except duckdb.Error as exc:
                raise UnreadableFiles(str(exc).splitlines()[0], detail=str(exc)) from None
            selected = [f"to_json({self.quote(n)}) AS {self.quote(n)}" if nested(kind, raw) else self.quote(n)
                        for n, kind, raw in columns]
            self.execute(f"DROP TABLE IF EXISTS {new}")
            self.execute(f"CREATE TABLE {new} (" + ", ".join(
                f"{self.quote(n)} {file_column_type(kind, raw, untyped)}" for n, kind, raw in columns) + ")")

            def write(pipe: Path) -> None:
                try:
                    reading.execute(csv_copy(f"SELECT {', '.join(selected) or '1'} FROM {reader}", pipe))
                except DatabaseError as exc:
                    raise UnreadableFiles(exc.message, detail=exc.detail) from None

            through_pipe(write, lambda data: self._copy_csv(new, data))
        self.swap_table(new, schema, name, self.relation_kind(schema, name))

    def load_from(self, table: str, source: Warehouse, select: str) -> None:
        """DuckDB writes the rows as CSV into a pipe while COPY sends what comes out of it (`through_pipe`)."""
        from llmt.warehouse.duckdb import csv_copy

        through_pipe(lambda pipe: source.execute(csv_copy(select, pipe)), lambda data: self._copy_csv(table, data))

    def _copy_csv(self, table: str, data: BinaryIO) -> None:
        try:
            with self.connection.cursor().copy(f"COPY {table} FROM STDIN (FORMAT csv)") as copy:
                while chunk := data.read(COPY_CHUNK):
                    copy.write(chunk)
        except psycopg.Error as exc:
            raise self._error(exc, None) from None

    def comments(self, schema: str, name: str) -> tuple[str, str | None, dict[str, str | None]] | None:
        found = self.fetchone(
            "SELECT CASE WHEN c.relkind IN ('v', 'm') THEN 'VIEW' ELSE 'TABLE' END, obj_description(c.oid, 'pg_class') "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ? AND c.relname = ? "
            "AND c.relkind IN ('r', 'p', 'v', 'm')", [schema, name])
        if found is None:
            return None
        columns = self.fetchall("SELECT a.attname, col_description(a.attrelid, a.attnum) FROM pg_attribute a "
                                "WHERE a.attrelid = to_regclass(?) AND a.attnum > 0 AND NOT a.attisdropped "
                                "ORDER BY a.attnum", [self.relation(schema, name)])
        return str(found[0]), found[1], {str(c): comment for c, comment in columns}

    # -- expressions ----------------------------------------------------------------------------------
    def canonical_sql(self, expr: str, type_: SqlType) -> str:
        return canonical(expr, type_, self.state)

    def concat_sql(self, parts: Sequence[str]) -> str:
        return concat(parts)

    def sha256_sql(self, expr: str) -> str:
        return f"encode(sha256(convert_to({expr}, 'UTF8')), 'hex')"

    def row_hash_sql(self, exprs: Sequence[str]) -> str:
        """Each value's text hashed (a row's own text costs a fifth more to make; every type has a text)."""
        return (f"hash_record_extended(ROW({', '.join(f'({e})::text' for e in exprs)}), 0)" if exprs
                else "0::bigint")

    def utf8_sql(self, expr: str) -> str:
        return f"convert_to({expr}, 'UTF8')"

    def sum_hashes_sql(self, column: str) -> str:
        return f"sum({column}::numeric), bit_xor({column})"

    def one_row_per_key_sql(self, source: str, columns: Sequence[str], keys: str, staged: bool) -> str:
        cols = "".join(f", i.{c}" for c in columns)
        rows = (f"FROM {source} i WHERE EXISTS (SELECT 1 FROM {keys} k "
                "WHERE k._llmt_request_key = i._llmt_request_key)")
        if staged:  # a semi join: dropping a key's later rows as they stream is cheaper than any SQL way here
            return f"SELECT i._llmt_request_key{cols} {rows}"
        return f"SELECT DISTINCT ON (i._llmt_request_key) i._llmt_request_key{cols} {rows} ORDER BY i._llmt_request_key"

    def arg_max_sql(self, value: str, by: str) -> str:
        return f"(array_agg({value} ORDER BY {by} DESC NULLS LAST))[1]"

    def json_object_sql(self, fields: Sequence[tuple[str, str]]) -> str:
        return "jsonb_build_object(" + ", ".join(f"{self.string(n)}, {v}" for n, v in fields) + ")::text"

    def json_text_sql(self, json: str, field: str) -> str:
        return f"(({json})::jsonb ->> {self.string(field)})"

    def try_double_sql(self, expr: str) -> str:
        return f"{helper(self.state, 'llmt_try_double')}({expr})"

    def answer_sql(self, answer: str, structure: Any) -> str:
        return f"({answer})::jsonb"

    def answer_field_sql(self, parsed: str, name: str, structure: Any) -> str:
        value = f"({parsed} -> {self.string(name)})"
        if structure == VECTOR:  # a stored vector is a JSON array of numbers (checked when collected)
            return f"CASE WHEN jsonb_typeof({value}) = 'array' THEN translate({value}::text, '[]', '{{}}')::real[] END"
        if isinstance(structure, list) and isinstance(structure[0], str) and structure[0] != "JSON":
            # the items in the array's order: a set-returning function in a select list (ProjectSet) gives its
            # rows in order, with neither a sort (WITH ORDINALITY ... ORDER BY) nor a function scan's tuplestore
            items = f"SELECT jsonb_array_elements_text({value}) AS v"
            item = self._cast("_llmt_e.v", structure[0])
            listed = items if item == "_llmt_e.v" else f"SELECT {item} FROM ({items}) AS _llmt_e"
            return f"CASE WHEN jsonb_typeof({value}) = 'array' THEN ARRAY({listed}) END"
        if isinstance(structure, str) and structure != "JSON":
            return self._cast(f"({parsed} ->> {self.string(name)})", structure)
        return f"CASE WHEN jsonb_typeof({value}) <> 'null' THEN {value} END"  # objects, lists of them: jsonb

    def vector_type(self, dimensions: int) -> str:
        return VECTOR

    def _cast(self, text: str, kind: str) -> str:
        return f"{helper(self.state, ANSWER_CASTS[kind])}({text})" if kind in ANSWER_CASTS else text

    def sql_type(self, structure: Any) -> str:
        if isinstance(structure, list):
            item = structure[0]
            return f"{type_name(item)}[]" if isinstance(item, str) and item != "JSON" else "jsonb"
        if isinstance(structure, dict):
            return "jsonb"
        return type_name(str(structure))

    def field_sql(self, struct: str, name: str) -> str:
        return f"({struct}).{self.quote(name)}"

