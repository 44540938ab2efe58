"""DuckDB access. A connection is opened per step and closed after it, so that BI tools and
other readers are never locked out while llmt waits on a provider; and when another program holds the
file, opening it waits for the lock (`lock_timeout`) instead of failing."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from llmt.compile import quote, sql_string
from llmt.console import Reporter
from llmt.errors import ConfigError, LockTimeout, NodeError
from llmt.project.config import LOCK_TIMEOUT
from llmt.warehouse.state import LATEST, MIGRATIONS, SCHEMA_VERSION_DDL, migrate, migration_sql, zstd_available

# Rows per row group of llmt's database: DuckDB's default is 122,880, and a table of 100k rows was then one
# row group, which one thread writes (at commit) and one thread scans. ATTACH sets it per connection (the
# file does not keep it; tables written with other sizes read as before).
ROW_GROUP_ROWS = 32_768
LOCK_NOTICE_AFTER = 3.0  # seconds of waiting for another program's lock before llmt says what it waits for
LOCK_PAUSE_MAX = 1.0  # the longest pause between two tries to open a locked file
_LOCK_HELD = re.compile(r"Conflicting lock is held in (?P<program>.*?) \(PID (?P<pid>\d+)\)")


class Warehouse:
    """One DuckDB database. Steps share a connection while llmt works; `release()` closes it before
    anything slow that does not need the database (waiting on a provider), so that readers and other
    writers are not locked out for hours. An in-memory database keeps its connection (it would be lost)."""

    def __init__(self, path: str, project_dir: Path, schema: str = "main", state_schema: str = "_llmt",
                 settings: dict[str, str | int | float | bool] | None = None, lock_timeout: float = LOCK_TIMEOUT,
                 reporter: Reporter | None = None) -> None:
        self.memory = path == ":memory:"
        self.settings = settings or {}
        self.lock_timeout = lock_timeout
        self.reporter = reporter or Reporter()
        # after a LockTimeout, later opens (the run recording its end) try once, and fail with the same error
        self._gave_up: LockTimeout | None = None
        self.path = path if self.memory else str((project_dir / path).resolve())
        self.schema = schema
        self.state_schema = state_schema
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._migrated = False

    def _open(self) -> duckdb.DuckDBPyConnection:
        if self._conn is not None:
            return self._conn
        config = duckdb_config(self.settings)
        try:
            self._conn = wait_for_lock(lambda: open_database(self.path, config), self.path,
                                       0.0 if self._gave_up else self.lock_timeout, self.reporter)
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
        return self._conn

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection for one step, with the state schema migrated."""
        conn = self._open()
        if not self._migrated:
            migrate(conn, self.state_schema)
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(self.schema)}")
            self._migrated = True
        yield conn

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One step in one transaction: committed at the end, rolled back on any error."""
        with self.connect() as conn:
            conn.execute("BEGIN TRANSACTION")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def release(self) -> None:
        """Close the file-backed connection (before waiting); the next step opens it again."""
        if self._conn is not None and not self.memory:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def open_database(path: str, config: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    """A connection to the database ``path``: a file is attached with ROW_GROUP_SIZE ``ROW_GROUP_ROWS``
    under the name DuckDB gives it when it opens the file itself (the file's name up to its first dot), and
    used. A file whose name clashes with the in-memory catalog's ("memory.duckdb") is opened directly."""
    if path == ":memory:":
        return duckdb.connect(path, config=config)
    conn = duckdb.connect(":memory:", config=config)
    names = "SELECT database_name FROM duckdb_databases()"
    try:
        before = {r[0] for r in conn.execute(names).fetchall()}
        conn.execute(f"ATTACH {sql_string(path)} (ROW_GROUP_SIZE {ROW_GROUP_ROWS})")
        (name,) = {r[0] for r in conn.execute(names).fetchall()} - before
        conn.execute(f"USE {quote(str(name))}")
    except duckdb.BinderException:
        conn.close()
        return duckdb.connect(path, config=config)
    except BaseException:
        conn.close()
        raise
    return conn


def duckdb_config(settings: dict[str, str | int | float | bool] | None = None) -> dict[str, Any]:
    """Settings of llmt's DuckDB connections: the target's `settings:`, and LLMT_DUCKDB_MEMORY_LIMIT (e.g.
    `512MB`) when they set no memory_limit. DuckDB's checkpoint_threshold (16 MB) is kept: a commit
    larger than that is written straight into the database file, skipping the write-ahead log, and
    llmt's large writes are few (one commit per model's collected batches, one per output build): at
    100k rows, collecting with a 1 GB threshold wrote everything twice (log, then checkpoint at close)
    and took 20% longer. A memory limit caps DuckDB (its default is 80% of RAM, most of
    it kept as cache): large sorts and joins then spill to disk, and, as DuckDB advises for tight limits,
    results without ORDER BY may come in any order (unless the settings say otherwise)."""
    config: dict[str, Any] = dict(settings or {})
    limit = os.environ.get("LLMT_DUCKDB_MEMORY_LIMIT", "").strip()
    if limit and "memory_limit" not in config:
        config["memory_limit"] = limit
    if "memory_limit" in config:
        config.setdefault("preserve_insertion_order", False)
    return config


@dataclass(frozen=True)
class LockHolder:
    """The program that holds a DuckDB file's lock, as DuckDB names it."""

    pid: int
    program: str  # its command line when /proc has it, else the executable DuckDB names

    def __str__(self) -> str:
        return f"PID {self.pid} ({self.program})"


def lock_holder(error: str) -> LockHolder | None:
    """The holder named by DuckDB's error when a file's lock is held by another process, else None."""
    match = _LOCK_HELD.search(error)
    if match is None:
        return None
    pid = int(match["pid"])
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:  # no /proc (macOS), or not allowed to read it
        raw = ""
    command = " ".join(raw.replace("\0", " ").split())  # one line, even for `python -c` with a script
    return LockHolder(pid, command[:200] or match["program"])


def wait_for_lock(
    open_: Callable[[], duckdb.DuckDBPyConnection], path: str, timeout: float, reporter: Reporter,
    read_only: bool = False,
) -> duckdb.DuckDBPyConnection:
    """``open_()``, tried again with backoff while another process holds the file's lock (DuckDB offers no
    wait of its own), for up to ``timeout`` seconds; after LOCK_NOTICE_AFTER seconds the reporter is told once
    who holds it. Then LockTimeout names the holder and what to do."""
    started, pause, told = time.monotonic(), 0.02, False
    while True:
        try:
            return open_()
        except duckdb.IOException as exc:
            holder = lock_holder(str(exc))
            if holder is None:
                raise
            waited = time.monotonic() - started
            if waited >= timeout:
                raise _lock_timeout(path, holder, timeout, read_only) from None
            if not told and waited >= LOCK_NOTICE_AFTER:
                reporter.warn(f"{path} is locked by {holder}; llmt waits for it (up to {timeout:g} s: "
                              "`lock_timeout` of the target's warehouse)")
                told = True
            time.sleep(min(pause, timeout - waited))
            pause = min(pause * 2, LOCK_PAUSE_MAX)


def _lock_timeout(path: str, holder: LockHolder, timeout: float, read_only: bool) -> LockTimeout:
    if read_only:
        why = ("A program writing to it (another llmt, or a notebook or tool with a read-write connection) keeps "
               "others from reading it")
    else:
        why = ("A program holding it, even read-only (a notebook, a BI tool, the duckdb CLI, another llmt), keeps "
               "llmt from writing it")
    return LockTimeout(
        f"the DuckDB file is locked by {holder}; llmt waited {timeout:g} s for it",
        where=path,
        hint=f"{why}: close that connection (or end PID {holder.pid}) and run the command again; what llmt "
        "stored before is kept, and open batches are collected by the next `llmt run`. To wait longer, raise "
        "`lock_timeout` (seconds) under the target's `warehouse:` in project.yml.",
    )


def attach_read_only(path: str, name: str = "llmt_warehouse") -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the database file ``path`` attached read-only as ``name``, and used."""
    conn = duckdb.connect(":memory:")
    try:
        conn.execute(f"ATTACH {sql_string(path)} AS {quote(name)} (READ_ONLY)")
        conn.execute(f"USE {quote(name)}")
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def read_only(path: str, state_schema: str, lock_timeout: float = LOCK_TIMEOUT,
              reporter: Reporter | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection that cannot write to the warehouse (for `llmt plan`). The file is attached
    read-only (waiting for a writer's lock); when it has no llmt state yet, empty state tables stand in for
    it, in memory."""
    conn = wait_for_lock(lambda: attach_read_only(path), path, lock_timeout, reporter or Reporter(), True)
    try:
        has_state = conn.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE catalog_name = 'llmt_warehouse' "
            "AND schema_name = ?", [state_schema],
        ).fetchone() == (1,)
        if not has_state:  # `"<state>".answers` then resolves to this in-memory catalog's main schema
            conn.execute(f"ATTACH ':memory:' AS {quote(state_schema)}")
            memory = f"{quote(state_schema)}.main"
            conn.execute(SCHEMA_VERSION_DDL.format(s=memory))
            for _, sql in MIGRATIONS:
                conn.execute(migration_sql(conn, sql, memory))
        else:
            row = conn.execute(f"SELECT max(version) FROM {quote(state_schema)}.schema_version").fetchone()
            if row is None or (row[0] or 0) < LATEST:
                raise ConfigError(
                    f"the llmt state in {path} is at version {row[0] if row else 0}; this llmt reads version {LATEST}",
                    hint="Run `llmt status` once: it brings the state up to date (changing nothing else).",
                )
        yield conn
    finally:
        conn.close()


def relation_kind(conn: duckdb.DuckDBPyConnection, schema: str, name: str) -> str | None:
    """'table', 'view' or None."""
    row = conn.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema, name],
    ).fetchone()
    if row is None:
        return None
    return "view" if row[0] == "VIEW" else "table"


def comment_record(conn: duckdb.DuckDBPyConnection, schema: str, table: str, prefix: str) -> dict[str, Any] | None:
    """The JSON object llmt keeps in a table's comment after ``prefix``; None when there is none (or another
    comment)."""
    row = conn.execute("SELECT comment FROM duckdb_tables() WHERE database_name = current_database() "
                       "AND schema_name = ? AND table_name = ?", [schema, table]).fetchone()
    if not row or not str(row[0] or "").startswith(prefix):
        return None
    try:
        value = json.loads(str(row[0])[len(prefix):])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def create_table(conn: duckdb.DuckDBPyConnection, table: str, select: str,
                 compression: Mapping[str, str] | None = None) -> None:
    """CREATE TABLE ``table`` AS ``select``, storing each column of ``compression`` with its method
    (``zstd`` only when the database's storage version has it: 1.2 and later). DuckDB's own choice for long
    texts (DICT_FSST, after trying every method) costs ~15 ns a byte to write, 7 s for 1M reviews of 470
    bytes; ZSTD a fifth of that, and it is smaller and as quick to read. Hex digests (request keys) are
    stored uncompressed (state.KEYS): copying 1M keys costs 0.54 CPU-s with DuckDB's choice, 0.40 with ZSTD and
    0.14 uncompressed, for ~36 bytes a key instead of ~20, and joins on them are as quick or quicker."""
    described = [(str(r[0]), str(r[1])) for r in conn.execute(f"DESCRIBE {select}").fetchall()]
    methods = dict(compression or {})
    if "zstd" in methods.values() and not zstd_available(conn):
        methods = {c: m for c, m in methods.items() if m != "zstd"}
    conn.execute(f"CREATE TABLE {table} (" + ", ".join(
        f"{quote(c)} {t}" + (f" USING COMPRESSION {methods[c]}" if c in methods else "") for c, t in described) + ")")
    conn.execute(f"INSERT INTO {table} {select}")


def execute(conn: duckdb.DuckDBPyConnection, sql: str, where: str, params: list[Any] | None = None) -> Any:
    """Run SQL; a database error becomes a NodeError naming the model."""
    with named_errors(where):
        return conn.execute(sql, params or [])


@contextmanager
def named_errors(where: str) -> Iterator[None]:
    """A database error inside becomes a NodeError naming the model (``where``)."""
    try:
        yield
    except duckdb.Error as exc:
        first = str(exc).strip().split("\n")[0]
        raise NodeError(f"the database rejected the SQL: {first}", where=where,
                        hint="Run `llmt compile` to see the compiled SQL under target/compiled/.") from None
