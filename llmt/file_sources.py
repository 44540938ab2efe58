"""File sources (`file:` in models/*.yml) loaded into tables of the state schema, again only when their files
changed.

Why tables, not views over the files: a view keeps the file's path, so the database broke when the project
moved, and a reader (a BI tool, `duckdb` on the file) started elsewhere could not query a model built on it. A
table holds the data; `source()` reads it. Whether the files changed is told by their paths (relative to the
project, so moving it changes nothing), sizes and modification times, recorded as the source's fingerprint
(warehouse/store.py) with the reader and its options when they were loaded. A file modified within RACY_NS
before it was loaded may change again with the same size and time stamp, so its table is loaded again by the
next run (as git does with its index)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llmt.compile import Source
from llmt.errors import NodeError
from llmt.project import Project
from llmt.warehouse.base import UnreadableFiles, Warehouse
from llmt.warehouse.files import file_reader, reader_sql
from llmt.warehouse.store import StateStore

STAMP_VERSION = 1  # bump when what is loaded changes: every file source is then loaded again
RACY_NS = 2_000_000_000
MAX_ERROR_LINES = 30


def load_file_sources(wh: Warehouse, store: StateStore, project: Project, keys: Iterable[tuple[str, str]]) -> None:
    """Load the file sources among ``keys`` whose files changed since they were loaded (each in its own
    transaction); a file DuckDB's reader (the reader of file sources on every warehouse) cannot read is a
    NodeError naming the source and the file."""
    for key in sorted(set(keys)):
        source = project.sources.get(key)
        if source is not None and source.files:
            with wh.transaction():
                load_file_source(wh, store, project.dir, source)


def load_file_source(wh: Warehouse, store: StateStore, project_dir: Path, source: Source) -> None:
    schema, name = source.loaded_table
    stamp = _stamp(project_dir, source)
    stored = store.fingerprint("source", name) if wh.relation_kind(schema, name) == "table" else None
    newest = max((f[2] for f in stamp["files"]), default=0)
    if stored is not None and {k: v for k, v in stored.items() if k != "loaded_ns"} == stamp \
            and int(stored.get("loaded_ns", 0)) > newest + RACY_NS:
        return
    loaded_ns = time.time_ns()  # before reading: a change while it reads makes the next run read it again
    table = wh.relation(schema, name)
    try:
        wh.load_files(table, reader_sql(file_reader(source.file or ""), source.files, source.options))
    except UnreadableFiles as exc:
        raise NodeError(
            f"DuckDB cannot read source `{source.source_name}.{source.table_name}` ({source.file}): "
            + _reader_error(exc.detail),
            where=source.where,
            hint="Fix the file, or tell DuckDB's reader how to read it with `options:` under the source table "
            "(e.g. delim, header, quote, escape, encoding, columns, types, dateformat, ignore_errors).",
        ) from None
    store.set_fingerprint("source", name, {**stamp, "loaded_ns": loaded_ns})

def _stamp(project_dir: Path, source: Source) -> dict[str, Any]:
    files = []
    for path in source.files:
        stat = path.stat()
        try:
            shown = path.relative_to(project_dir).as_posix()
        except ValueError:  # a file outside the project is named by its absolute path
            shown = path.as_posix()
        files.append([shown, stat.st_size, stat.st_mtime_ns])
    return {"version": STAMP_VERSION, "reader": file_reader(source.file or ""), "options": source.options,
            "files": files}


def _reader_error(message: str) -> str:
    """DuckDB's whole message (the line, what went wrong, possible solutions, what it detected), without the
    echo of llmt's SQL."""
    lines = message.rstrip().splitlines()
    if any(line.startswith("LINE ") for line in lines):
        lines = lines[:next(i for i, line in enumerate(lines) if line.startswith("LINE "))]
    lines = [line.rstrip() for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    shown = lines[:MAX_ERROR_LINES] + (["..."] if len(lines) > MAX_ERROR_LINES else [])
    return "\n".join(shown) if shown else message


def columns_hint(wh: Warehouse, project: Project, sources: Iterable[tuple[str, str]]) -> str:
    """For an error of a model that reads file sources: the columns read from each file, so that a file read
    wrongly (a delimiter or header not detected) shows."""
    parts = []
    for key in dict.fromkeys(sources):
        source = project.sources.get(key)
        if source is None or not source.files:
            continue
        schema, name = source.loaded_table
        columns = ([c.name for c in wh.describe(f"SELECT * FROM {wh.relation(schema, name)}")]
                   if wh.relation_kind(schema, name) == "table" else [])
        if columns:
            parts.append(f"`{key[0]}.{key[1]}` ({source.file}) was read with the columns "
                         f"{', '.join(wh.quote(c) for c in columns)}")
    if not parts:
        return ""
    return ("The source " + "; ".join(parts) + ". If a file was read wrongly, tell DuckDB's reader how to read it "
            "with `options:` under the source table (delim, header, quote, ...).")
