"""Opening DuckDB database files: attached with llmt's row groups, with the target's settings, and waiting
(with backoff, for up to `lock_timeout`) while another program holds a file's lock instead of failing."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from llmt.console import Reporter
from llmt.errors import LockTimeout
from llmt.warehouse.base import quoted, sql_string

# Rows per row group of llmt's database: DuckDB's default is 122,880, and a table of 100k rows was then one
# row group, which one thread writes (at commit) and one thread scans. ATTACH sets it per connection (the
# file does not keep it; tables written with other sizes read as before).
ROW_GROUP_ROWS = 32_768
LOCK_NOTICE_AFTER = 3.0  # seconds of waiting for another program's lock before llmt says what it waits for
LOCK_PAUSE_MAX = 1.0  # the longest pause between two tries to open a locked file
_LOCK_HELD = re.compile(r"Conflicting lock is held in (?P<program>.*?) \(PID (?P<pid>\d+)\)")


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
        conn.execute(f"USE {quoted(str(name))}")
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
        conn.execute(f"ATTACH {sql_string(path)} AS {quoted(name)} (READ_ONLY)")
        conn.execute(f"USE {quoted(name)}")
    except BaseException:
        conn.close()
        raise
    return conn
