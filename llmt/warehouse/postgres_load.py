"""Bulk loads into PostgreSQL: what COPY is fed (column types of files DuckDB read, values in COPY's text
format) and the pipe through which DuckDB's CSV reaches COPY while it is written."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from llmt.warehouse import scratch_dirs
from llmt.warehouse.base import SqlType
from llmt.warehouse.postgres_sql import type_name

PIPE_CHUNK = 1 << 20  # bytes read at a time from a writer whose rows are not wanted


def through_pipe(write: Callable[[Path], None], read: Callable[[BinaryIO], None]) -> None:
    """``write`` (DuckDB writing a file, in a thread: it lets go of the GIL) into a named pipe while ``read``
    (COPY) reads from it: the two overlap, and the rows are never all on disk or in memory. A failure of either
    is raised (the caller's transaction then drops what was sent); neither is left waiting for the other."""
    with tempfile.TemporaryDirectory(prefix=scratch_dirs.prefix("load")) as scratch:
        pipe = Path(scratch) / "rows.csv"
        os.mkfifo(pipe)
        out = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)  # (opening either end alone would wait for the other)
        held = os.open(pipe, os.O_WRONLY)  # so the reader sees the end only once the writer is done
        os.set_blocking(out, True)

        def produce() -> None:
            try:
                write(pipe)
            finally:
                os.close(held)

        with ThreadPoolExecutor(1, thread_name_prefix="llmt-pipe") as pool, os.fdopen(out, "rb") as data:
            written = pool.submit(produce)
            try:
                read(data)
            except BaseException:
                # the writer may not have opened the pipe yet (without a reader it would wait for one for ever)
                # or be writing into it: it is let finish, unread
                while data.read(PIPE_CHUNK):
                    pass
                raise
            written.result()


def nested(kind: SqlType, raw: str) -> bool:
    """Whether a column DuckDB read is a list, struct or map (sent as JSON)."""
    return kind.family in ("list", "struct") or raw.startswith(("MAP", "UNION"))


def file_column_type(kind: SqlType, raw: str, untyped: str | None) -> str:
    """The PostgreSQL type of a column DuckDB read from a file (its SqlType and DuckDB's own name)."""
    if raw == '"NULL"':
        return type_name(untyped or "VARCHAR")
    if nested(kind, raw):
        return "jsonb"
    if raw.startswith("DECIMAL"):
        return raw.replace("DECIMAL", "numeric")
    if raw.startswith(("TIME WITH TIME ZONE", "TIMETZ")):
        return "timetz"
    return {"TIMESTAMP WITH TIME ZONE": "timestamptz", "TIMESTAMP_S": "timestamp", "TIMESTAMP_MS": "timestamp",
            "TIMESTAMP_NS": "timestamp", "INTERVAL": "interval", "TIME": "time", "UUID": "uuid",
            "BLOB": "text"}.get(raw, type_name(raw))


def binary_type(name: str) -> str | None:
    """The name psycopg knows a type by for binary COPY (None when it has modifiers or is not a plain one)."""
    base = name.strip().lower()
    array = base.endswith("[]")
    base = base.removesuffix("[]").strip()
    if "(" in base or '"' in base:
        return None
    return base + ("[]" if array else "")


def copy_text(value: str) -> str:
    """A value in COPY's text format."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def copy_bytes(value: bytes) -> bytes:
    if b"\\" in value or b"\t" in value:
        return value.replace(b"\\", b"\\\\").replace(b"\t", b"\\t")
    return value
