"""The engine seam: the one interface through which llmt uses a warehouse.

Like SQLMesh's engine adapters and dbt's adapters, smaller. The pipeline never holds a connection or writes an
engine's SQL: it asks a `Warehouse` for a closed set of operations — run a statement, describe a select, stream
its rows, create a table from a select, bulk-load rows, a transaction, a relation's kind, comments — and
composes its queries from the warehouse's expression hooks (quoting, the canonical request key of keys.py, a
row's change hash, `arg_max`, JSON answers to typed columns, ...). Where engines differ in what they can do,
a capability flag says so (`UPDATES`: DELETE and UPDATE on tables; `RESULT_FILES`: batch result files read in
SQL). llmt's own SQL is written once, in the shared modules of this package (staging.py, collecting.py,
outputs.py, store.py), with these hooks; an engine overrides a hook, or a whole operation where its fast path
differs (DuckDB reads result files with `read_json`).

Statements take `?` placeholders. A database error becomes a `DatabaseError` (exit code 1) naming ``where``
(a model's file) when one is given: callers never see an engine's own exception types.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from llmt.errors import CompileError, NodeError
from llmt.warehouse.keys import KEY_CHARS

Params = Sequence[Any] | None


def quoted(name: str, mark: str = '"') -> str:
    """An identifier between ``mark``s (doubled inside)."""
    return mark + name.replace(mark, mark * 2) + mark


def sql_string(value: str) -> str:
    """A text literal."""
    return "'" + value.replace("'", "''") + "'"


class DatabaseError(NodeError):
    """The warehouse refused a statement (bad SQL in a model, bad data, a missing relation); ``detail``: the
    engine's whole message."""

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None, detail: str = "") -> None:
        super().__init__(message, where=where, hint=hint)
        self.detail = detail or message


class UnreadableFiles(DatabaseError):
    """The reader of files (`load_files`) could not read them."""


class WarehouseError(DatabaseError):
    """The target's warehouse cannot do what llmt asks, whatever the model (the connection was lost, a
    privilege is missing, a statement ran out of time): the command stops (exit code 2)."""

    exit_code = 2


@dataclass(frozen=True)
class SqlType:
    """A column's type: the engine's own name for it, its family (the canonical text of keys.py is per family:
    text, integer, decimal, float, boolean, date, timestamp, timestamptz, list, struct, other) and its children
    (a list's item, as `item`; a struct's fields, in order)."""

    name: str
    family: str
    children: tuple[tuple[str, SqlType], ...] = ()


@dataclass(frozen=True)
class Column:
    name: str
    type: SqlType


@dataclass
class TempTable:
    """A temporary table a step made, handed on as a value to the step that reads it (never found by name). It
    lives until it is dropped or the warehouse's connection is released."""

    name: str
    rows: int = 0
    columns: list[str] = field(default_factory=list)


class Warehouse(ABC):
    """One target's warehouse: its models' schema, llmt's state schema, and the connection to its engine.

    The connection is opened on first use and held for the short steps of a command; `release()` lets go of it
    before anything slow that does not need it (waiting on a provider), so that readers and other writers are
    never locked out while a batch runs."""

    dialect: ClassVar[str]  # sqlglot's name for the engine's SQL (models are parsed with it)
    TRANSACTIONS: ClassVar[bool] = True  # statements of one step commit together
    UPDATES: ClassVar[bool] = True  # DELETE and UPDATE on tables (without: answers and attempts are logs, log_table)
    RESULT_FILES: ClassVar[bool] = False  # batch result files are read and classified in SQL
    COMPRESSION: ClassVar[bool] = False  # llmt chooses how each column is stored (create_table's compression)
    QUOTE: ClassVar[str] = '"'  # quotes identifiers
    FENCE: ClassVar[str] = ""  # ends a subquery whose expressions must be computed once per row, not per use
    ROW_PER_KEY: ClassVar[bool] = True  # False: one_row_per_key_sql may repeat a key (its reader keeps the first)
    TIME_ZONE_SQL: ClassVar[str] = "SELECT current_setting('TimeZone')"  # the session's time zone

    def __init__(self, schema: str, state_schema: str) -> None:
        self.schema = schema  # where models are built
        self.state_schema = state_schema  # llmt's own tables
        self.state = self.quote(state_schema)

    # -- the connection --------------------------------------------------------------------------
    @property
    def lasting(self) -> bool:
        """Whether the database lives only as long as its connection (in memory): then it is never released."""
        return False

    @property
    def lifecycle(self) -> Warehouse:
        """Where llmt's run lifecycle (runs, shards, fingerprints, the lock) lives: the warehouse itself when its
        engine has transactions; the target's state store (`state:`) otherwise (Spark)."""
        return self

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """One step in one transaction: committed at the end, rolled back on any error. A transaction begun
        inside another joins it."""

    @abstractmethod
    def release(self) -> None:
        """Let go of the connection (before waiting); the next statement opens it again."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection for good (the end of a command)."""

    def worker(self) -> Warehouse | None:
        """Another connection to the same warehouse that writes under this one's hold on the state (it takes no
        lock of its own: this one must stay connected while the other works), for building SQL models in
        parallel (--threads); None when the engine has one writer (DuckDB parallelizes inside a statement)."""
        return None

    def hold(self) -> None:
        """Be connected now (and so hold the state's lock) for a worker's work (`worker`) until `release`; an
        engine without workers has nothing to do."""
        return None

    def migration_sql(self, version: int, sql: str, schema: str) -> str:
        """The statements of state migration ``version`` (state.py: ``sql``) for the state schema ``schema``, in
        the engine's SQL (where the engine lets llmt choose how columns are stored, it says so here)."""
        return sql.format(s=quoted(schema), zstd="", keys="")

    # -- statements ---------------------------------------------------------------------------------
    @abstractmethod
    def execute(self, sql: str, params: Params = None, *, where: str | None = None) -> None:
        """Run a statement."""

    @abstractmethod
    def fetchall(self, sql: str, params: Params = None, *, where: str | None = None) -> list[tuple[Any, ...]]:
        """Run a query and return its rows."""

    def fetchone(self, sql: str, params: Params = None, *, where: str | None = None) -> tuple[Any, ...] | None:
        rows = self.fetchall(sql, params, where=where)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: Params = None, *, where: str | None = None) -> Any:
        """The first column of the first row (None when there is none)."""
        row = self.fetchone(sql, params, where=where)
        return None if row is None else row[0]

    @abstractmethod
    def stream(self, sql: str, params: Params = None, *, where: str | None = None) -> Iterator[tuple[Any, ...]]:
        """A query's rows, fetched a chunk at a time (memory stays flat in the number of rows)."""

    @abstractmethod
    def query(self, sql: str, params: Params = None, *, where: str | None = None
              ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """A query's column names and rows."""

    # -- relations -----------------------------------------------------------------------------------
    @abstractmethod
    def describe(self, select: str, *, where: str | None = None) -> list[Column]:
        """The columns a select returns, with their types."""

    @abstractmethod
    def relation_kind(self, schema: str, name: str) -> str | None:
        """'table', 'view' or None."""

    @abstractmethod
    def relation_kinds(self, schemas: Sequence[str], name: str | None = None) -> dict[tuple[str, str], str]:
        """Every table and view of ``schemas`` (named ``name``, when given), in one query: (schema, name) ->
        'table' or 'view'."""

    def content_signature(self, relation: str, changed_at: str | None = None) -> str:
        """A fingerprint of the rows of ``relation`` (a source llmt did not build): their count and, given
        ``changed_at`` (a column every insert and update sets), its largest value, which the engine reads
        cheaply; otherwise an order-independent hash of every row (one scan), which sees every insert,
        update and delete."""
        if changed_at is not None:
            row = self.fetchone(f"SELECT count(*), max({self.quote(changed_at)}) FROM {relation}")
        else:
            hashed = self.row_hash_sql([self.quote(c.name) for c in self.describe(f"SELECT * FROM {relation}")])
            row = self.fetchone(f"SELECT count(*), {self.sum_hashes_sql(hashed)} FROM {relation}")
        return ":".join(str(v) for v in row or ())

    def create_schema(self, schema: str) -> None:
        """Create ``schema`` unless it exists (a model's custom schema)."""
        self.execute(f"CREATE SCHEMA IF NOT EXISTS {self.quote(schema)}")

    @abstractmethod
    def create_table(self, table: str, select: str, params: Params = None, *,
                     compression: Mapping[str, str] | None = None, where: str | None = None) -> None:
        """CREATE TABLE ``table`` AS ``select``; ``compression``: a storage method per column, where the engine
        has such a choice (others ignore it)."""

    def replace_table(self, table: str, select: str, kind: str | None, *, where: str | None = None) -> None:
        """``table`` made anew from ``select`` (``kind``: what is there now: 'table', 'view' or None)."""
        if kind is not None:
            self.execute(f"DROP {kind.upper()} {table}")
        self.execute(f"CREATE TABLE {table} AS {select}", where=where)

    def swap_table(self, new: str, schema: str, name: str, kind: str | None) -> None:
        """Put the table ``new`` (just built, in ``schema``) in the place of ``schema.name`` (``kind``: what is
        there now: 'table', 'view' or None)."""
        if kind is not None:
            self.execute(f"DROP {kind.upper()} {self.relation(schema, name)}")
        self.execute(f"ALTER TABLE {new} RENAME TO {self.quote(name)}")

    def replace_view(self, table: str, select: str, kind: str | None, *, where: str | None = None) -> None:
        """The view ``table`` over ``select`` (``kind``: what is there now)."""
        if kind is not None:
            self.execute(f"DROP {kind.upper()} {table}")
        self.execute(f"CREATE VIEW {table} AS {select}", where=where)

    def insert_by_name(self, table: str, source: str, *, where: str | None = None) -> None:
        """Append the rows of relation ``source`` to ``table``, column by name."""
        names = ", ".join(self.quote(c.name) for c in self.describe(f"SELECT * FROM {source}"))
        self.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {source}", where=where)

    def delete_insert(self, table: str, source: str, keys: Sequence[str], *, where: str | None = None) -> None:
        """Delete the rows of ``table`` whose ``keys`` match a row of relation ``source``, then append
        ``source``'s rows (dbt's delete+insert)."""
        same = " AND ".join(f"i.{self.quote(k)} = t.{self.quote(k)}" for k in keys)
        self.execute(f"DELETE FROM {table} AS t WHERE EXISTS (SELECT 1 FROM {source} i WHERE {same})", where=where)
        self.insert_by_name(table, source, where=where)

    def merge(self, table: str, source: str, keys: Sequence[str], *, where: str | None = None) -> None:
        """Update the rows of ``table`` whose ``keys`` match a row of relation ``source`` and insert the others
        (SQL's MERGE; columns by name)."""
        names = [self.quote(c.name) for c in self.describe(f"SELECT * FROM {source}")]
        on = " AND ".join(f"t.{self.quote(k)} = s.{self.quote(k)}" for k in keys)
        updates = ", ".join(f"{n} = s.{n}" for n in names if n not in {self.quote(k) for k in keys})
        values = ", ".join(f"s.{n}" for n in names)
        values = ", ".join(f"s.{n}" for n in names)
        self.execute(f"MERGE INTO {table} AS t USING {source} AS s ON {on} "
                     + (f"WHEN MATCHED THEN UPDATE SET {updates} " if updates else "")
                     + f"WHEN NOT MATCHED THEN INSERT ({', '.join(names)}) VALUES ({values})", where=where)

    @abstractmethod
    def load_files(self, table: str, reader: str, untyped: str | None = None) -> None:
        """``table`` made anew from files, read by a DuckDB reader (files.py: `read_csv([...], ...)`); a column
        the reader finds no type for (only nulls) gets type ``untyped`` when given. Raises UnreadableFiles when
        the reader fails."""

    @abstractmethod
    def load_rows(self, table: str, columns: Mapping[str, Sequence[Any]], types: Mapping[str, str]) -> None:
        """Append rows given column by column (``types``: each column's SQL type) to ``table``, in bulk."""

    def load_lines(self, table: str, constants: Mapping[str, str], column: str, path: Path) -> None:
        """Append a row to ``table`` for each line of the text file ``path`` (into ``column``, with ``constants``
        in the other columns), in bulk."""
        lines = path.read_text(encoding="utf-8").splitlines()
        self.load_rows(table, {**{k: [v] * len(lines) for k, v in constants.items()}, column: lines},
                       dict.fromkeys([*constants, column], "VARCHAR"))

    def load_from(self, table: str, source: Warehouse, select: str) -> None:
        """Append the rows of ``select``, a query on the DuckDB ``source`` (the lifecycle of a Spark target, or
        a scratch database: `duckdb.scratch`), to ``table`` (its columns in order), in bulk: collected attempts
        reconciled in DuckDB reach the engine that keeps them so."""
        raise NotImplementedError(f"{type(self).__name__} does not load rows from another engine")

    def temp_table(self, name: str, select: str, params: Params = None, *, where: str | None = None,
                   parallel: bool = False) -> TempTable:
        """A temporary table holding ``select``'s rows (replacing one of that name), with its row count.
        ``parallel``: a large statement joins it, and the engine's parallel workers must read it too; only inside
        a transaction, whose rollback removes it."""
        self.execute(f"CREATE OR REPLACE TEMP TABLE {self.quote(name)} AS {select}", params, where=where)
        return TempTable(self.quote(name), int(self.scalar(f"SELECT count(*) FROM {self.quote(name)}")))

    def temp_rows(self, name: str, columns: Mapping[str, Sequence[Any]], types: Mapping[str, str]) -> TempTable:
        """A temporary table of rows given column by column (``types``: each column's SQL type)."""
        table = self.quote(name)
        self.execute(f"CREATE OR REPLACE TEMP TABLE {table} ("
                     + ", ".join(f"{self.quote(c)} {types[c]}" for c in columns) + ")")
        self.load_rows(table, columns, types)
        return TempTable(table, len(next(iter(columns.values()), ())), list(columns))

    def drop_temp(self, table: TempTable) -> None:
        self.execute(f"DROP TABLE IF EXISTS {table.name}")

    def analyze(self, table: str, rows: int) -> None:
        """Statistics for the planner of llmt's own ``table`` after ``rows`` rows went into it, where the engine
        keeps them only when asked (DuckDB keeps its own as it writes)."""
        return None

    @abstractmethod
    def comments(self, schema: str, name: str) -> tuple[str, str | None, dict[str, str | None]] | None:
        """A relation's kind ('TABLE' or 'VIEW'), comment and column comments (in column order); None when it
        does not exist."""

    def set_comment(self, kind: str, relation: str, text: str | None, column: str | None = None) -> None:
        """Set (or with None, remove) the comment of a relation, or of one of its columns."""
        value = "NULL" if text is None else self.string(text)
        target = f"COLUMN {relation}.{self.quote(column)}" if column is not None else f"{kind} {relation}"
        self.execute(f"COMMENT ON {target} IS {value}")

    # -- expressions ---------------------------------------------------------------------------------
    def quote(self, name: str) -> str:
        """An identifier, quoted for the engine."""
        return quoted(name, self.QUOTE)

    def relation(self, schema: str, name: str) -> str:
        return f"{self.quote(schema)}.{self.quote(name)}"

    def state_table(self, name: str) -> str:
        """One of llmt's state tables."""
        return f"{self.state}.{self.quote(name)}"

    def log_table(self, name: str) -> str:
        """Where new rows of the state table ``name`` (`answers`, `attempts`) go: the table itself; on an engine
        without UPDATES, an append-only log that `state_table(name)` reads as one row per key (a row appended
        twice, by a collect that was cut short and ran again, counts once)."""
        return self.state_table(name)

    @staticmethod
    def string(value: str) -> str:
        """A text literal."""
        return sql_string(value)

    @abstractmethod
    def canonical_sql(self, expr: str, type_: SqlType) -> str:
        """SQL giving the canonical text (keys.py) of ``expr``, a value of type ``type_``."""

    @abstractmethod
    def sha256_sql(self, expr: str) -> str:
        """SQL giving the SHA-256 (lower-case hex) of the UTF-8 of a text."""

    def input_hash_sql(self, columns: Sequence[Column], alias: str = "") -> str:
        """SQL giving a row's input hash (keys.py): its ``columns`` in name order as one struct."""
        prefix = f"{alias}." if alias else ""
        parts = [self.string("{")]
        for i, column in enumerate(sorted(columns, key=lambda c: c.name)):
            name = f"s{len(column.name.encode())}:{column.name}:"
            parts += [self.string(("," if i else "") + name),
                      self.canonical_sql(prefix + self.quote(column.name), column.type)]
        parts.append(self.string("}"))
        return self.sha256_sql(self.concat_sql(parts))

    def concat_sql(self, parts: Sequence[str]) -> str:
        """SQL joining texts (none of them NULL)."""
        return " || ".join(parts)

    def legacy_input_hash_sql(self, names: Sequence[str], alias: str) -> str:
        """SQL of the input hash of request keys before version 3 (DuckDB's JSON of the columns ``names``): only
        DuckDB warehouses hold such keys."""
        raise DatabaseError(f"a {self.dialect} warehouse holds no request keys of llmt's first versions")

    def request_key_sql(self, template_hash_sql: str, input_hash_sql: str) -> str:
        """SQL giving a request key from the SQL of its two halves."""
        return f"substr({self.sha256_sql(f'{template_hash_sql} || {input_hash_sql}')}, 1, {KEY_CHARS})"

    @abstractmethod
    def row_hash_sql(self, exprs: Sequence[str]) -> str:
        """SQL giving a cheap hash of a row's values (to see which rows changed; not a request key)."""

    @abstractmethod
    def utf8_sql(self, expr: str) -> str:
        """SQL giving the UTF-8 bytes of a text (of the text family), which the driver hands over as bytes."""

    @abstractmethod
    def sum_hashes_sql(self, column: str) -> str:
        """Aggregates that fingerprint the row hashes of ``column`` whatever their order (with count(*): what
        changed in a table is seen)."""

    @abstractmethod
    def one_row_per_key_sql(self, source: str, columns: Sequence[str], keys: str, staged: bool) -> str:
        """A select of one row of ``source`` (`i`) per request key of relation ``keys``: its `_llmt_request_key`
        and ``columns`` (quoted). ``staged``: ``source`` is a table llmt staged. Rows sharing a key have the same
        inputs, so any of them will do; without `ROW_PER_KEY` a key may come more than once (see
        render.first_per_key)."""

    def insert_new(self, sql: str, params: Params = None, *, where: str | None = None) -> None:
        """Run an INSERT of the rows its table does not hold yet: its select reads the table it fills (a NOT
        EXISTS, `unstored_sql`)."""
        self.execute(sql, params, where=where)

    def unstored_sql(self, source: str, stored: str, on: Sequence[str]) -> str:
        """`FROM <source> c WHERE <condition>`: the rows of ``source`` (alias `c`) that have no row in ``stored``
        with the same ``on`` columns (more conditions may follow with AND)."""
        same = " AND ".join(f"a.{k} = c.{k}" for k in on)
        return f"FROM {source} c WHERE NOT EXISTS (SELECT 1 FROM {stored} a WHERE {same})"

    @abstractmethod
    def arg_max_sql(self, value: str, by: str) -> str:
        """The aggregate giving ``value`` of the row with the largest ``by``."""

    @abstractmethod
    def json_object_sql(self, fields: Sequence[tuple[str, str]]) -> str:
        """SQL giving a JSON object text of (name, SQL value) pairs."""

    @abstractmethod
    def json_text_sql(self, json: str, field: str) -> str:
        """SQL giving a top-level field of a JSON text as text (NULL when absent)."""

    @abstractmethod
    def try_double_sql(self, expr: str) -> str:
        """SQL giving a text as a double, NULL when it is not a number."""

    def field_sql(self, struct: str, name: str) -> str:
        """SQL of one field of a struct value."""
        return f"{struct}.{self.quote(name)}"

    @abstractmethod
    def answer_sql(self, answer: str, structure: Any) -> str:
        """SQL parsing ``answer`` (a JSON text) once per row, for `answer_field_sql` to read its fields
        (``structure``: each field's, schema.json_structure)."""

    @abstractmethod
    def answer_field_sql(self, parsed: str, name: str, structure: Any) -> str:
        """SQL of the field ``name`` of a parsed answer, typed as its ``structure`` says (`sql_type`); NULL
        where the answer has no such value."""

    @abstractmethod
    def sql_type(self, structure: Any) -> str:
        """The engine's column type of an answer field's structure (schema.json_structure)."""

    def vector_type(self, dimensions: int) -> str:
        """The engine's column type of a fixed-size vector of ``dimensions`` floats (an embedding model's
        `embedding` column); it is also that answer field's structure for `answer_sql` and `answer_field_sql`."""
        raise DatabaseError(f"the {self.dialect} warehouse has no vector column type: embedding models need one",
                            hint="Build embedding models on a DuckDB or PostgreSQL target.")

    @classmethod
    def nearest_sql(cls, queries: str, documents: str, query_key: Sequence[str], document_key: Sequence[str],
                    column: str, k: int) -> str:
        """A select of the ``k`` rows of ``documents`` whose vector column ``column`` is nearest (cosine similarity)
        to each row's of ``queries`` (relations): the query's ``query_key`` columns, the document's
        ``document_key`` columns, `similarity` and `neighbor_rank` (1 for the nearest; ties go to the smallest
        document key). Rows without a vector take no part."""
        raise CompileError(f"nearest_neighbors: the {cls.dialect} engine has no vector similarity function llmt "
                           "knows", hint="Retrieve with DuckDB (a duckdb target), or write the engine's own SQL.")
