"""File sources (`file:` in models/*.yml) loaded into tables of the state schema, again only when their files
changed (seeds are loaded the same way: seeding.py).

Why tables, not views over the files: a view keeps the file's path, so the database broke when the project
moved, and a reader (a BI tool, `duckdb` on the file) started elsewhere could not query a model built on it. A
table holds the data; `source()` reads it. Whether the files changed is told by their paths (relative to the
project, so moving it changes nothing), sizes and modification times, recorded as the source's fingerprint
(warehouse/store.py) with the reader and its options when they were loaded. A file modified within RACY_NS
before it was loaded may change again with the same size and time stamp, so its table is loaded again by the
next run (as git does with its index)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class FileTable:
    """Files llmt loads into a table, again only when they changed: a file source's, or a seed's."""

    kind: str  # of its fingerprint (warehouse/store.py): `source` or `seed`
    name: str  # of its fingerprint
    schema: str
    table: str
    files: tuple[Path, ...]
    reader: str  # DuckDB's reader: read_csv, read_parquet, read_json_auto
    options: Mapping[str, Any]  # the reader's options
    what: str  # how errors name it: "source `raw.reviews` (data/reviews.csv)"
    where: str  # file:line of its declaration
    hint: str  # what to do when DuckDB cannot read a file


def load_file_source(wh: Warehouse, store: StateStore, project_dir: Path, source: Source) -> None:
    schema, name = source.loaded_table
    load_files(wh, store, project_dir, FileTable(
        "source", name, schema, name, source.files, file_reader(source.file or ""), source.options,
        f"source `{source.source_name}.{source.table_name}` ({source.file})", source.where,
        "Fix the file, or tell DuckDB's reader how to read it with `options:` under the source table "
        "(e.g. delim, header, quote, escape, encoding, columns, types, dateformat, ignore_errors)."))


def load_files(wh: Warehouse, store: StateStore, project_dir: Path, files: FileTable, force: bool = False) -> bool:
    """Load ``files`` into their table unless they did not change since they were (``force``: load them all
    the same); True when they were loaded. Caller holds the transaction."""
    stamp = _stamp(project_dir, files)
    stored = store.fingerprint(files.kind, files.name) if wh.relation_kind(files.schema, files.table) == "table" \
        else None
    newest = max((f[2] for f in stamp["files"]), default=0)
    if not force and stored is not None and {k: v for k, v in stored.items() if k not in ("loaded_ns", "content")} \
            == stamp and int(stored.get("loaded_ns", 0)) > newest + RACY_NS:
        return False
    loaded_ns = time.time_ns()  # before reading: a change while it reads makes the next run read it again
    content = _content_hash(files)
    wh.create_schema(files.schema)
    try:
        wh.load_files(wh.relation(files.schema, files.table), reader_sql(files.reader, files.files, files.options))
    except UnreadableFiles as exc:
        raise NodeError(f"DuckDB cannot read {files.what}: " + _reader_error(exc.detail), where=files.where,
                        hint=files.hint) from None
    # what the models that read it see (model_state.py): the files' content, unless they may have changed
    # between being hashed and being read (then this load's own version, which no other load has)
    same = _stamp(project_dir, files) == stamp and newest < loaded_ns - RACY_NS
    store.set_fingerprint(files.kind, files.name, {**stamp, "loaded_ns": loaded_ns,
                                                   "content": content if same else f"{content}:{loaded_ns}"})
    return True


def _content_hash(files: FileTable) -> str:
    """A hash of what the table is read from: the bytes of the files, the reader and its options (a file saved
    again unchanged leaves the models that read it as they are)."""
    digest = hashlib.sha256(json.dumps([files.reader, dict(files.options)], sort_keys=True, default=str).encode())
    for path in files.files:
        with path.open("rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()[:32]


def _stamp(project_dir: Path, files: FileTable) -> dict[str, Any]:
    shown = []
    for path in files.files:
        stat = path.stat()
        try:
            name = path.relative_to(project_dir).as_posix()
        except ValueError:  # a file outside the project is named by its absolute path
            name = path.as_posix()
        shown.append([name, stat.st_size, stat.st_mtime_ns])
    return {"version": STAMP_VERSION, "reader": files.reader, "options": dict(files.options), "files": shown,
            "table": [files.schema, files.table]}


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
