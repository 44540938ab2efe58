"""Apache Spark behind the engine seam (base.py), through pyspark: local mode or Spark Connect (spark_session.py).

Spark has no transactions across statements and its plain (parquet) tables take no DELETE, UPDATE or MERGE. So
llmt's run lifecycle (runs, shards, fingerprints, the lock) lives in the target's transactional state store
(`state:`, a DuckDB file by default: `lifecycle`), and a step's "transaction" is that store's; Spark holds the
models' tables. A table is replaced by building it under another name and renaming it into place; an
incremental model's delete+insert rebuilds its rows under another name and writes them back with INSERT
OVERWRITE (the table and its comments stay). Temporary tables are temporary views over a checkpoint (a
snapshot, not a query run again on each read). Rows cross a part at a time, so that memory in llmt's process stays
flat in the rows: when Spark runs on this machine (local mode: `shares_files`) as parquet files that Spark, or
llmt, reads itself; over Spark Connect as Arrow (each part going in kept by the server).
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from itertools import count, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmt import logs
from llmt.console import Reporter
from llmt.project.config import SparkConfig
from llmt.warehouse import scratch_dirs
from llmt.warehouse.base import (
    Column,
    DatabaseError,
    Params,
    SqlType,
    TempTable,
    UnreadableFiles,
    Warehouse,
    quoted,
)
from llmt.warehouse.spark_session import SPARK_ERRORS, local_checkpoint, spark_error, start_session
from llmt.warehouse.spark_sql import (
    EPOCH,
    arrow_converter,
    arrow_rows,
    canonical_sql,
    converter,
    sql_type,
    string,
    type_name,
    writable,
)
from llmt.warehouse.store import MOVE_ROWS

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

# double quotes are identifiers, as in standard SQL (and llmt's shared SQL, and DuckDB's and PostgreSQL's)
STANDARD_SQL = ("spark.sql.ansi.enabled", "spark.sql.ansi.doubleQuotedIdentifiers")
# DuckDB types of file sources that Spark reads as their text (it has no such type, or Arrow's form of it)
AS_TEXT = frozenset({"UUID", "TIME", "TIME WITH TIME ZONE", "INTERVAL", "BIT", "JSON"})
# DuckDB types of file sources that Spark has not (Arrow's unsigned integers; parquet's HUGEINT is a double), as
# a type of Spark's that holds their values
WIDER = {"UTINYINT": "SMALLINT", "USMALLINT": "INTEGER", "UINTEGER": "BIGINT", "UBIGINT": "DECIMAL(20,0)",
         "HUGEINT": "DECIMAL(38,0)", "UHUGEINT": "DECIMAL(38,0)"}
NAIVE_TIMES = frozenset({"TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS"})
PARQUET_TIMES = "spark.sql.parquet.outputTimestampType"
STREAM_ROWS = 50_000  # rows fetched at a time as Arrow (memory stays flat in the number of rows)
# parquet files handed between llmt and Spark (local mode): a row group is what a writer or a reader holds at once
# (and llmt reads them back GROUP_ROWS rows at a time: their Python values are what it holds)
GROUP_ROWS, GROUP_BYTES = 16_384, 16 * 2**20
# answers and attempts: append-only logs (`<name>_log`, in the state schema: parquet takes no DELETE), each read
# through a view `<name>` with one row per key (its columns, key, and which of a key's rows is read: the newest
# answer, which --reask appended; any of the equal rows a collect cut short appended twice)
LOGS = {
    "answers": ("request_key STRING, answer STRING, model STRING, node STRING, shard_id STRING, "
                "answered_at TIMESTAMP, prompt_tokens BIGINT, completion_tokens BIGINT, cached_tokens BIGINT, "
                "provider STRING", "request_key", "answered_at DESC, shard_id"),
    "attempts": ("shard_id STRING, request_key STRING, run_id STRING, node STRING, model STRING, outcome STRING, "
                 "status_code INT, error_code STRING, detail STRING, prompt_tokens BIGINT, completion_tokens BIGINT, "
                 "cached_tokens BIGINT, created_at TIMESTAMP, cost_usd DOUBLE, batch BOOLEAN, provider STRING",
                 "shard_id, request_key", "created_at"),
}


class SparkWarehouse(Warehouse):
    """One target's Spark catalog (its models' schema) and its state store."""

    dialect = "spark"
    QUOTE = "`"
    TRANSACTIONS = False
    UPDATES = False
    ROW_PER_KEY = True
    TIME_ZONE_SQL = "SELECT current_timezone()"

    def __init__(self, config: SparkConfig, project_dir: Path, reporter: Reporter | None = None, *,
                 read_only: bool = False, memory: bool = False, target: str = "") -> None:
        schema = f"_llmt_scratch_{secrets.token_hex(4)}" if memory else config.schema_
        super().__init__(schema, config.state_schema)
        self.config, self.project_dir, self.target = config, project_dir, target
        self.reporter = reporter or Reporter()
        self.read_only, self.memory = read_only, memory
        self.where = f"project.yml (target `{target}`, warehouse:)"
        self._session: SparkSession | None = None
        self._started = False
        self._lifecycle: Warehouse | None = None
        self._temps: dict[str, DataFrame] = {}
        self._files: dict[str, Path] = {}  # (local mode) llmt's temporary tables of rows: their parquet files' folder
        self._scratch: Path | None = None  # (local mode) where those folders are
        self._logs = False  # whether the answers' and attempts' logs are known to exist

    # -- the session --------------------------------------------------------------------------------
    @property
    def lasting(self) -> bool:
        return self.memory  # (its scratch schema is dropped when it closes)

    @property
    def lifecycle(self) -> Warehouse:
        if self._lifecycle is None:
            from llmt.warehouse import open_warehouse

            self._lifecycle = open_warehouse(self.config.state_store, self.project_dir, self.reporter,
                                             read_only=self.read_only, memory=self.memory, target=self.target)
        return self._lifecycle

    @property
    def session(self) -> SparkSession:
        if self._session is None:
            self._session, self._started = start_session(self.config, self.project_dir, self.target)
            for setting in STANDARD_SQL:
                self._sql(f"SET {setting} = true", None, None)
            self._sql(f"CREATE DATABASE IF NOT EXISTS {self.quote(self.schema)}", None, None)
            self._sql(f"USE {self.quote(self.schema)}", None, None)
        return self._session

    @property
    def shares_files(self) -> bool:
        """Whether Spark runs on this machine (local mode) and reads the files llmt writes: rows are handed to it
        as parquet files (Arrow through py4j grew this process by tens of megabytes a part)."""
        return self.config.remote is None and str(self.session.conf.get("spark.master", "")).startswith("local")

    def _folder(self) -> Path:
        """A new folder of scratch files (removed when done with, and all of them when the warehouse closes)."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix=scratch_dirs.prefix("spark")))
        return Path(tempfile.mkdtemp(dir=self._scratch))

    def transaction(self) -> AbstractContextManager[None]:
        """The state store's transaction: Spark's statements are each their own."""
        return self.lifecycle.transaction()

    def release(self) -> None:
        if self._lifecycle is not None:
            self._lifecycle.release()

    def close(self) -> None:
        if self._lifecycle is not None:
            self._lifecycle.close()
        if self._session is not None:
            for name in list(self._temps):
                self._session.catalog.dropTempView(name)
            self._temps.clear()
            self._files.clear()
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
                self._scratch = None
            if self.memory:
                self._sql(f"DROP DATABASE IF EXISTS {self.quote(self.schema)} CASCADE", None, None)
            if self._started:
                self._session.stop()
            self._session = None

    # -- statements ---------------------------------------------------------------------------------
    def _sql(self, sql: str, params: Params, where: str | None) -> DataFrame:
        session, started = self.session, time.perf_counter()
        try:
            return session.sql(sql, args=list(params) if params else None)
        except SPARK_ERRORS as exc:
            raise self._error(exc, where) from None
        finally:
            logs.statement(sql, time.perf_counter() - started, where)

    def _error(self, exc: BaseException, where: str | None) -> DatabaseError:
        return spark_error(exc, where, self.target, self.where)

    def execute(self, sql: str, params: Params = None, *, where: str | None = None) -> None:
        self._sql(sql, params, where)

    def fetchall(self, sql: str, params: Params = None, *, where: str | None = None) -> list[tuple[Any, ...]]:
        return self.query(sql, params, where=where)[1]

    def stream(self, sql: str, params: Params = None, *, where: str | None = None) -> Iterator[tuple[Any, ...]]:
        """Rows in order, `STREAM_ROWS` at a time: in local mode, from parquet files Spark writes (`_stream_files`);
        else those of plain types as Arrow, from a snapshot of the result (each part is its next OFFSET), others
        (instants, nested values, decimals) one partition at a time."""
        frame = self._sql(sql, params, where)
        try:
            if self.shares_files and writable(frame.schema):
                yield from self._stream_files(frame)
                return
            convert = converter(frame.schema)
            if convert is not tuple:
                for row in frame.toLocalIterator(prefetchPartitions=True):
                    yield convert(row)
                return
            frame = local_checkpoint(frame)
            for start in count(0, STREAM_ROWS):
                part = frame.offset(start).limit(STREAM_ROWS).toArrow()
                yield from zip(*(column.to_pylist() for column in part.columns), strict=True)
                if part.num_rows < STREAM_ROWS:
                    return
        except SPARK_ERRORS as exc:
            raise self._error(exc, where) from None

    def _stream_files(self, frame: DataFrame) -> Iterator[tuple[Any, ...]]:
        """``frame``'s rows written by Spark as parquet files (a file per partition, in the partitions' order),
        read back in order: a partition's rows never cross py4j or sit in this process at once."""
        import pyarrow.parquet as pq

        folder = self._folder()
        try:
            conf, previous = self.session.conf, self.session.conf.get(PARQUET_TIMES, None)
            conf.set(PARQUET_TIMES, "TIMESTAMP_MICROS")  # (not INT96: pyarrow reads it as times without a zone)
            try:
                writer = frame.write.option("datetimeRebaseMode", "CORRECTED")
                writer.option("parquet.block.size", GROUP_BYTES).parquet(str(folder / "rows"))
            finally:
                if previous is None:
                    conf.unset(PARQUET_TIMES)
                else:
                    conf.set(PARQUET_TIMES, previous)
            convert = arrow_converter(frame.schema)
            for path in sorted((folder / "rows").glob("part-*")):
                for batch in pq.ParquetFile(path).iter_batches(GROUP_ROWS):
                    yield from convert(batch)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def query(self, sql: str, params: Params = None, *, where: str | None = None
              ) -> tuple[list[str], list[tuple[Any, ...]]]:
        frame = self._sql(sql, params, where)
        convert = converter(frame.schema)
        try:
            rows = frame.collect()
        except SPARK_ERRORS as exc:
            raise self._error(exc, where) from None
        return list(frame.columns), [convert(row) for row in rows]

    # -- relations ----------------------------------------------------------------------------------
    def describe(self, select: str, *, where: str | None = None) -> list[Column]:
        return [Column(f.name, sql_type(f.dataType)) for f in self._sql(select, None, where).schema.fields]

    def relation_kind(self, schema: str, name: str) -> str | None:
        return self.relation_kinds([schema], name).get((schema, name))

    def relation_kinds(self, schemas: Sequence[str], name: str | None = None) -> dict[tuple[str, str], str]:
        """The catalog keeps names in lower case: ``name`` and the schemas are matched whatever their case."""
        found: dict[tuple[str, str], str] = {}
        for schema in schemas:
            try:
                tables = self.fetchall(f"SHOW TABLES IN {self.quote(schema)}")
            except DatabaseError as exc:
                if "SCHEMA_NOT_FOUND" in exc.detail:
                    continue
                raise
            views = {str(r[1]) for r in self.fetchall(f"SHOW VIEWS IN {self.quote(schema)}") if not r[2]}
            for _, table, temporary in tables:
                if not temporary and (name is None or str(table) == name.lower()):
                    found[(schema, name or str(table))] = "view" if table in views else "table"
        return found

    def create_table(self, table: str, select: str, params: Params = None, *,
                     compression: Mapping[str, str] | None = None, where: str | None = None) -> None:
        self.execute(f"CREATE TABLE {table} USING {self.config.file_format} AS {select}", params, where=where)

    def replace_table(self, table: str, select: str, kind: str | None, *, where: str | None = None) -> None:
        """Built under another name, then renamed into place (the old one is dropped first: Spark has no
        transaction that would swap them)."""
        new = table[:-1] + "__llmt_new`"
        self.execute(f"DROP TABLE IF EXISTS {new}")
        self.create_table(new, select, where=where)
        if kind is not None:
            self.execute(f"DROP {kind.upper()} {table}")
        self.execute(f"ALTER TABLE {new} RENAME TO {table}")

    def swap_table(self, new: str, schema: str, name: str, kind: str | None) -> None:
        table = self.relation(schema, name)
        if kind is not None:
            self.execute(f"DROP {kind.upper()} {table}")
        self.execute(f"ALTER TABLE {new} RENAME TO {table}")

    def replace_view(self, table: str, select: str, kind: str | None, *, where: str | None = None) -> None:
        if kind == "table":
            self.execute(f"DROP TABLE {table}")
        self.execute(f"CREATE OR REPLACE VIEW {table} AS {select}", where=where)

    def delete_insert(self, table: str, source: str, keys: Sequence[str], *, where: str | None = None) -> None:
        """The rows of ``table`` without a key of ``source``, and ``source``'s, written under another name, then
        back over ``table`` by INSERT OVERWRITE (parquet tables take no DELETE)."""
        names = ", ".join(self.quote(c.name) for c in self.describe(f"SELECT * FROM {table}"))
        same = " AND ".join(f"t.{self.quote(k)} = i.{self.quote(k)}" for k in keys)
        new = table[:-1] + "__llmt_new`"
        self.execute(f"DROP TABLE IF EXISTS {new}")
        self.create_table(new, f"SELECT {names} FROM {table} t LEFT ANTI JOIN {source} i ON {same} "
                          f"UNION ALL SELECT {names} FROM {source}", where=where)
        self.execute(f"INSERT OVERWRITE TABLE {table} SELECT {names} FROM {new}", where=where)
        self.execute(f"DROP TABLE {new}")

    def merge(self, table: str, source: str, keys: Sequence[str], *, where: str | None = None) -> None:
        if self.config.file_format.lower() == "parquet":
            raise DatabaseError("incremental_strategy `merge` needs a table format with MERGE (delta, iceberg); "
                                "this target's tables are parquet", where=where,
                                hint="Use incremental_strategy='delete+insert', or a `file_format` with MERGE.")
        super().merge(table, source, keys, where=where)

    def load_files(self, table: str, reader: str, untyped: str | None = None) -> None:
        """DuckDB reads the files (the reader of file sources on every warehouse) and hands them to Spark, which
        writes them as a new table: as a parquet file (local mode), or as Arrow batches (`_arrow_parts`)."""
        import duckdb

        from llmt.warehouse.duckdb import scratch

        folder = self._folder() if self.shares_files else None
        try:
            # (one thread writes the file in order holding one row group; parallel writers hold many)
            with scratch(None if folder is None else {"threads": 1}) as reading:
                try:
                    relation = reading.connection.sql(f"SELECT * FROM {reader}")
                    columns = [(str(n), str(t)) for n, t in zip(relation.columns, relation.types, strict=True)]
                    read = ", ".join(_file_column(n, raw, untyped) for n, raw in columns) or "1"
                    rows = reading.connection.sql(f"SELECT {read} FROM {reader}")
                    if folder is not None:
                        rows.write_parquet(str(folder / "rows.parquet"), row_group_size=GROUP_ROWS)
                        frame = self._parquet_frame(folder, rows.limit(0).to_arrow_table().schema)
                    else:
                        # (DuckDB 2 names it to_arrow_reader, and warns on the older name)
                        frame = self._arrow_parts(getattr(rows, "to_arrow_reader", rows.fetch_record_batch)(
                            STREAM_ROWS))
                except duckdb.Error as exc:
                    raise UnreadableFiles(str(exc).splitlines()[0], detail=str(exc)) from None
            view = f"_llmt_files_{secrets.token_hex(4)}"
            frame.createOrReplaceTempView(view)
            # times without a zone came as microseconds (pyspark would read them as times of the session's zone)
            select = ", ".join(f"timestampadd(MICROSECOND, {self.quote(n)}, {EPOCH}) AS {self.quote(n)}"
                               if raw in NAIVE_TIMES else self.quote(n) for n, raw in columns)
            try:
                self.replace_table(table, f"SELECT {select} FROM {self.quote(view)}", self._kind(table))
            finally:
                self.session.catalog.dropTempView(view)
        finally:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

    def _arrow_parts(self, batches: pa.RecordBatchReader) -> DataFrame:
        """Arrow batches as one DataFrame; of several, each is a part the server keeps (a checkpoint: a plan of
        Arrow rows would hold them all in this process)."""
        import pyarrow as pa

        parts: list[DataFrame] = []
        for batch in batches:
            if len(parts) == 1:
                parts[0] = local_checkpoint(parts[0])
            part = self._arrow_frame(pa.Table.from_batches([batch]))
            parts.append(local_checkpoint(part) if parts else part)
        if not parts:
            return self._arrow_frame(batches.schema.empty_table())
        frame = parts[0]
        for part in parts[1:]:
            frame = frame.unionByName(part)
        return frame

    def _kind(self, table: str) -> str | None:
        schema, _, name = table.partition("`.`")
        return self.relation_kind(schema[1:].replace("``", "`"), name[:-1].replace("``", "`"))

    def load_rows(self, table: str, columns: Mapping[str, Sequence[Any]], types: Mapping[str, str]) -> None:
        """Rows into ``table``; into one of llmt's temporary tables (a view over rows it was given, which takes no
        INSERT), as one more part of it."""
        if not columns or not len(next(iter(columns.values()))):
            return
        name = table[1:-1].replace("``", "`") if table.startswith("`") else table
        if name in self._temps:
            part = self._rows_frame(name, columns, types)
            self._temps[name] = part if name in self._files else self._temps[name].unionByName(local_checkpoint(part))
            self._temps[name].createOrReplaceTempView(name)
            return
        view = self.temp_rows(f"_llmt_rows_{secrets.token_hex(4)}", columns, types)
        names = ", ".join(self.quote(c) for c in columns)
        try:
            self.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {view.name}")
        finally:
            self.drop_temp(view)

    def load_from(self, table: str, source: Warehouse, select: str) -> None:
        """The rows of another engine's query, `MOVE_ROWS` at a time (llmt's memory stays flat in rows)."""
        columns = source.describe(select)
        names, types = [c.name for c in columns], {c.name: c.type.name for c in columns}
        rows = source.stream(select)
        while chunk := list(islice(rows, MOVE_ROWS)):
            self.load_rows(table, dict(zip(names, zip(*chunk, strict=True), strict=True)), types)

    def temp_table(self, name: str, select: str, params: Params = None, *, where: str | None = None,
                   parallel: bool = False) -> TempTable:
        frame = self._sql(select, params, where)
        try:
            frame = local_checkpoint(frame)
            frame.createOrReplaceTempView(name)
            rows = frame.count()
        except SPARK_ERRORS as exc:
            raise self._error(exc, where) from None
        self._temps[name] = frame
        return TempTable(self.quote(name), rows)

    def temp_rows(self, name: str, columns: Mapping[str, Sequence[Any]], types: Mapping[str, str]) -> TempTable:
        self._drop_files(name)
        if self.shares_files:
            self._files[name] = self._folder()
        frame = self._rows_frame(name, columns, types)
        frame.createOrReplaceTempView(name)
        self._temps[name] = frame
        return TempTable(self.quote(name), len(next(iter(columns.values()), ())), list(columns))

    def _rows_frame(self, name: str, columns: Mapping[str, Sequence[Any]], types: Mapping[str, str]) -> DataFrame:
        """Rows as a DataFrame: when temporary table ``name`` has a folder of parquet files (local mode), all of
        its rows, these written as one more file (Spark reads them whenever the table is read: they are kept
        until it is dropped); else these rows as Arrow."""
        rows, select = arrow_rows(self.session, columns, types)
        folder = self._files.get(name)
        if folder is None:
            return self._arrow_frame(rows).selectExpr(*select)
        import pyarrow.parquet as pq

        pq.write_table(rows, folder / f"{sum(1 for _ in folder.iterdir())}.parquet")
        return self._parquet_frame(folder, rows.schema).selectExpr(*select)

    def _parquet_frame(self, folder: Path, schema: pa.Schema) -> DataFrame:
        """The parquet files of ``folder``, read as the Arrow ``schema`` reads (whatever Spark's settings for
        reading parquet's types)."""
        from pyspark.sql.pandas.types import from_arrow_schema

        return self.session.read.schema(from_arrow_schema(schema)).parquet(str(folder))

    def _arrow_frame(self, rows: pa.Table) -> DataFrame:
        """Arrow rows as a DataFrame, of their schema (Spark Connect infers none from no rows)."""
        from pyspark.sql.pandas.types import from_arrow_schema

        return self.session.createDataFrame(rows, schema=from_arrow_schema(rows.schema))

    def drop_temp(self, table: TempTable) -> None:
        name = table.name[1:-1].replace("``", "`")
        self._temps.pop(name, None)
        self.session.catalog.dropTempView(name)
        self._drop_files(name)

    def _drop_files(self, name: str) -> None:
        folder = self._files.pop(name, None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def comments(self, schema: str, name: str) -> tuple[str, str | None, dict[str, str | None]] | None:
        catalog, qualified = self.session.catalog, f"{self.quote(schema)}.{self.quote(name)}"
        if not catalog.tableExists(qualified):
            return None
        found = catalog.getTable(qualified)
        columns = catalog.listColumns(qualified)
        return ("VIEW" if found.tableType == "VIEW" else "TABLE", found.description or None,
                {c.name: c.description or None for c in columns})

    def set_comment(self, kind: str, relation: str, text: str | None, column: str | None = None) -> None:
        """Tables' and views' comments, and tables' columns' (Spark keeps no comment on a view's column)."""
        if column is not None:
            if kind.upper() == "TABLE":
                self.execute(f"ALTER TABLE {relation} ALTER COLUMN {self.quote(column)} COMMENT "
                             f"{self.string(text or '')}")
        elif kind.upper() == "VIEW":
            self.execute(f"ALTER VIEW {relation} SET TBLPROPERTIES ('comment' = {self.string(text)})" if text
                         else f"ALTER VIEW {relation} UNSET TBLPROPERTIES IF EXISTS ('comment')")
        else:
            self.execute(f"COMMENT ON TABLE {relation} IS {'NULL' if text is None else self.string(text)}")

    # -- expressions ----------------------------------------------------------------------------------
    def state_table(self, name: str) -> str:
        if name in LOGS and not self._logs:
            self._make_logs()
        return super().state_table(name)

    def log_table(self, name: str) -> str:
        if not self._logs:
            self._make_logs()
        return super().state_table(name + "_log")

    def _make_logs(self) -> None:
        self.execute(f"CREATE DATABASE IF NOT EXISTS {self.state}")
        for name, (columns, key, newest) in LOGS.items():
            log, view = super().state_table(name + "_log"), super().state_table(name)
            names = ", ".join(c.split()[0] for c in columns.split(", "))
            self.execute(f"CREATE TABLE IF NOT EXISTS {log} ({columns}) USING {self.config.file_format}")
            self.execute(f"CREATE VIEW IF NOT EXISTS {view} AS SELECT {names} FROM (SELECT *, row_number() OVER "
                         f"(PARTITION BY {key} ORDER BY {newest}) AS _llmt_n FROM {log}) WHERE _llmt_n = 1")
        self._logs = True

    @staticmethod
    def string(value: str) -> str:
        return string(value)

    def canonical_sql(self, expr: str, type_: SqlType) -> str:
        return canonical_sql(expr, type_)

    def concat_sql(self, parts: Sequence[str]) -> str:
        return f"concat({', '.join(parts)})"

    def sha256_sql(self, expr: str) -> str:
        return f"sha2({expr}, 256)"

    def row_hash_sql(self, exprs: Sequence[str]) -> str:
        return f"xxhash64({', '.join(exprs)})" if exprs else "CAST(0 AS BIGINT)"

    def utf8_sql(self, expr: str) -> str:
        return f"encode({expr}, 'UTF-8')"

    def sum_hashes_sql(self, column: str) -> str:
        return f"sum(CAST({column} AS DECIMAL(38, 0))), bit_xor({column})"

    def one_row_per_key_sql(self, source: str, columns: Sequence[str], keys: str, staged: bool) -> str:
        """(The semi join's rows come partitioned and sorted by key: numbering them costs no more exchange or sort,
        where dropping repeated keys as they stream would keep every key in this process.)"""
        cols = "".join(f", {c}" for c in columns)
        return (f"SELECT _llmt_request_key{cols} FROM (SELECT i.*, row_number() OVER (PARTITION BY "
                f"i._llmt_request_key ORDER BY i._llmt_request_key) AS _llmt_n FROM {source} i LEFT SEMI JOIN {keys} k "
                "ON k._llmt_request_key = i._llmt_request_key) WHERE _llmt_n = 1")

    def unstored_sql(self, source: str, stored: str, on: Sequence[str]) -> str:
        same = " AND ".join(f"a.{k} = c.{k}" for k in on)
        return f"FROM {source} c LEFT ANTI JOIN {stored} a ON {same} WHERE true"

    def arg_max_sql(self, value: str, by: str) -> str:
        return f"max_by({value}, {by})"

    def json_object_sql(self, fields: Sequence[tuple[str, str]]) -> str:
        pairs = ", ".join(f"{self.string(n)}, {v}" for n, v in fields)
        return f"to_json(named_struct({pairs}), map('ignoreNullFields', 'false'))"

    def json_text_sql(self, json: str, field: str) -> str:
        return f"get_json_object({json}, {self.string(f'$[{chr(39)}{field}{chr(39)}]')})"

    def try_double_sql(self, expr: str) -> str:
        return f"try_cast({expr} AS DOUBLE)"

    def answer_sql(self, answer: str, structure: Any) -> str:
        fields = ", ".join(f"{self.quote(k)} {self.sql_type(v)}" for k, v in structure.items())
        return f"from_json({answer}, {self.string(fields)})"

    def answer_field_sql(self, parsed: str, name: str, structure: Any) -> str:
        return self.field_sql(parsed, name)

    def sql_type(self, structure: Any) -> str:
        if isinstance(structure, list):
            return f"ARRAY<{self.sql_type(structure[0])}>"
        if isinstance(structure, dict):
            return "STRUCT<" + ", ".join(f"{self.quote(k)}: {self.sql_type(v)}" for k, v in structure.items()) + ">"
        return type_name(str(structure))


def _file_column(name: str, raw: str, untyped: str | None) -> str:
    """A column DuckDB reads from a file (``raw``: its DuckDB type), as DuckDB's SQL that hands it to Spark."""
    column = quoted(name)
    if raw == '"NULL"':  # only nulls: typed as the caller says, or as text
        return f"CAST({column} AS {untyped or 'VARCHAR'}) AS {column}"
    if raw in AS_TEXT or raw.startswith(("UNION", "ENUM")):
        return f"CAST({column} AS VARCHAR) AS {column}"
    if raw in WIDER:
        return f"CAST({column} AS {WIDER[raw]}) AS {column}"
    if raw in NAIVE_TIMES:
        return f"epoch_us({column}) AS {column}"
    return column
