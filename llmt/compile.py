"""Jinja for SQL models (ref, source, var, env_var, config, is_incremental, this), sqlglot checks, and the
cache of both in target/ (ParseCache)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import marshal
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from importlib.util import MAGIC_NUMBER
from pathlib import Path
from types import CodeType
from typing import Any

import jinja2

from llmt.errors import CompileError, did_you_mean
from llmt.macros import Macros, compiled
from llmt.warehouse.base import quoted as quote

_MISSING: Any = object()


def relation(schema: str, name: str) -> str:
    """A model's or source's relation as its SQL names it (quoted as the warehouse quotes identifiers)."""
    return f"{quote(schema)}.{quote(name)}"


@dataclass(frozen=True)
class Source:
    """A declared source: a table of the warehouse, or files (`file:`, a path or a glob) that llmt loads into a
    table of its state schema (llmt.materialize.load_file_sources), so that no path is kept in the database."""

    source_name: str
    table_name: str
    where: str  # file:line of its declaration
    schema: str | None = None
    identifier: str | None = None
    file: str | None = None  # as written: a path or a glob, relative to the project directory
    files: tuple[Path, ...] = ()  # what it matched when the project loaded
    options: dict[str, Any] = field(default_factory=dict)  # handed to the DuckDB reader
    state_schema: str = "_llmt"  # where the files are loaded
    loaded_at_field: str | None = None  # dbt's: a column every load of the table sets

    @property
    def loaded_table(self) -> tuple[str, str]:
        """(schema, table) the files are loaded into."""
        return self.state_schema, f"source__{self.source_name}__{self.table_name}"

    def sql(self) -> str:
        if self.file is not None:
            return relation(*self.loaded_table)
        name = quote(self.identifier or self.table_name)
        return f"{quote(self.schema)}.{name}" if self.schema else name



@dataclass
class Captured:
    """What rendering a model recorded: its config() calls, refs and sources."""

    config: dict[str, Any] = field(default_factory=dict)
    refs: list[str] = field(default_factory=list)
    sources: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class SqlContext:
    """Everything a model's Jinja can see."""

    node_names: dict[str, str]  # model name -> relation
    sources: dict[tuple[str, str], Source]
    vars: dict[str, Any]
    this: str
    incremental: bool = False
    macros: Macros = field(default_factory=Macros)
    engine: str = "duckdb"  # the target warehouse's type (nearest_neighbors writes its SQL)


def env_var(name: str, default: Any = _MISSING) -> str:
    value = os.environ.get(name)
    if value is not None:
        return value
    if default is _MISSING:
        raise CompileError(
            f"environment variable `{name}` is not set",
            hint=f"Set it (export {name}=...) or give a default: env_var('{name}', 'value').",
        )
    return str(default)


def make_var(values: dict[str, Any]) -> Callable[..., Any]:
    def var(name: str, default: Any = _MISSING) -> Any:
        if name in values:
            return values[name]
        if default is _MISSING:
            known = ", ".join(sorted(values)) or "none"
            raise CompileError(
                f"var `{name}` is not defined.{did_you_mean(name, values)}",
                hint=f"Define it under `vars:` in project.yml or pass --vars '{{{name}: ...}}'. "
                f"Defined vars: {known}.",
            )
        return default

    return var


_SQL_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
_CACHE_FORMAT = 3  # bump when _SQL_ENV's settings or the file layout change
_CACHE_MAGIC = b"llmt parse cache\n"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ParseCache:
    """What loading a project reuses from the last load, in target/parse_cache.bin (dbt keeps
    target/partial_parse.msgpack for the same reason): the compiled code of each model's Jinja template
    by a hash of its text (as Jinja's own bytecode cache stores it), and hashes of compiled SQL that
    sqlglot parsed without error, with the output columns of LLM models' selects (so that a run that
    parses nothing does not import sqlglot). Templates are still rendered with the current refs, vars and
    environment, and SQL not seen before is parsed, so errors are reported as without the cache. Entries
    are valid for one Python bytecode version and Jinja version (templates) and one sqlglot version
    (SQL); a missing, stale or corrupt file is ignored and rewritten. Compiled SQL is kept as hashes
    only, so values of env_var() never reach the file. Like a .pyc file, the code is trusted as much
    as the project's own files. ``path`` None: in memory only."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._templates: dict[str, CodeType] = {}
        self._good_sql: set[str] = set()
        self._columns: dict[str, list[str] | None] = {}
        self._used_templates: dict[str, CodeType] = {}
        self._used_sql: set[str] = set()
        self._used_columns: dict[str, list[str] | None] = {}
        if path is not None:
            self._read(path)
        self._stored = self._state(self._templates, self._good_sql, self._columns)

    def template(self, source: str, name: str | None = None) -> jinja2.Template:
        """The template of ``source`` in the SQL environment, compiled only when not cached; ``name``: a macro
        file's path (its errors name it)."""
        key = _digest(source if name is None else f"{name}\0{source}")
        code = self._templates.get(key)
        if code is None:
            code = self._templates[key] = _SQL_ENV.compile(source, name, name)
        self._used_templates[key] = code
        return _SQL_ENV.template_class.from_code(_SQL_ENV, code, _SQL_ENV.make_globals(None), None)

    def known_good(self, sql: str, dialect: str) -> bool:
        key = _digest(f"{dialect}\0{sql}")
        if key in self._good_sql:
            self._used_sql.add(key)
            return True
        return False

    def add_good(self, sql: str, dialect: str) -> None:
        key = _digest(f"{dialect}\0{sql}")
        self._good_sql.add(key)
        self._used_sql.add(key)

    def select_columns(self, sql: str, dialect: str) -> list[str] | None:
        """`select_columns` of ``sql``, parsed only when not cached."""
        key = _digest(f"{dialect}\0{sql}")
        if key not in self._columns:
            self._columns[key] = select_columns(sql, dialect)
        self._used_columns[key] = self._columns[key]
        return self._columns[key]

    @staticmethod
    def _state(templates: dict[str, CodeType], sql: set[str], columns: dict[str, list[str] | None]) -> tuple[
            frozenset[str], frozenset[str], frozenset[str]]:
        return frozenset(templates), frozenset(sql), frozenset(columns)

    def save(self) -> None:
        """Write the entries used since the cache was read, when they differ from the file's; atomically
        (a temporary file renamed over it). A directory that cannot be written is left alone."""
        used = self._state(self._used_templates, self._used_sql, self._used_columns)
        if self.path is None or self._stored == used:
            return
        payload = marshal.dumps((_template_version(), self._used_templates, _sql_version(), sorted(self._used_sql),
                                 self._used_columns))
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(_CACHE_MAGIC + hashlib.sha256(payload).digest() + payload)
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            return
        self._stored = used

    def _read(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except OSError:
            return
        head = len(_CACHE_MAGIC)
        digest, payload = data[head:head + 32], data[head + 32:]
        if data[:head] != _CACHE_MAGIC or hashlib.sha256(payload).digest() != digest:
            return
        try:
            template_version, templates, sql_version, good_sql, columns = marshal.loads(payload)
        except (EOFError, ValueError, TypeError):
            return
        if template_version == _template_version() and isinstance(templates, dict):
            self._templates = {k: v for k, v in templates.items() if isinstance(k, str) and isinstance(v, CodeType)}
        if sql_version == _sql_version() and isinstance(good_sql, list) and isinstance(columns, dict):
            self._good_sql = {k for k in good_sql if isinstance(k, str)}
            self._columns = {k: v for k, v in columns.items() if isinstance(k, str) and (
                v is None or (isinstance(v, list) and all(isinstance(c, str) for c in v)))}


@functools.cache
def _template_version() -> tuple[int, bytes, str]:
    return _CACHE_FORMAT, MAGIC_NUMBER, jinja2.__version__


@functools.cache
def _sql_version() -> tuple[int, str]:
    return _CACHE_FORMAT, metadata.version("sqlglot")


def render_jinja(env: jinja2.Environment, source: str, context: dict[str, Any], where: str) -> str:
    """Render a template; every Jinja error becomes a CompileError at ``where:line``."""
    return _render(lambda: env.from_string(source), context, where)


def _render(template: Callable[[], jinja2.Template], context: dict[str, Any], where: str) -> str:
    try:
        return template().render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise CompileError(
            f"Jinja syntax error: {exc.message}", where=f"{where}:{exc.lineno}",
            hint="Fix the template syntax at that line.",
        ) from None
    except jinja2.UndefinedError as exc:
        at, called = _template_place(exc, where)
        raise CompileError(
            f"{exc.message}{called}", where=at, hint="Define the variable or remove it from the template.",
        ) from None
    except CompileError as exc:
        at, called = _template_place(exc, where)
        raise CompileError(exc.message + (called if not exc.where else ""), where=exc.where or at,
                           hint=exc.hint) from None


def _template_place(exc: BaseException, where: str) -> tuple[str, str]:
    """Where in the templates an exception was raised (from the Jinja-rewritten traceback): `file:line` (the
    model's ``where``, or the macro file's) and, in a macro, " (in a macro called at <model>:<line>)"."""
    tb = exc.__traceback__
    model: int | None = None
    macro: tuple[str, int] | None = None
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name == "<template>":
            model, macro = tb.tb_lineno, None
        elif name.endswith(".sql"):  # a macro file (macros.py names its templates by their path)
            macro = (name, tb.tb_lineno)
        tb = tb.tb_next
    at = f"{where}:{model}" if model else where
    if macro is None:
        return at, ""
    return f"{macro[0]}:{macro[1]}", f" (in a macro called at {at})"


def render_model_sql(
    raw: str, where: str, ctx: SqlContext, captured: Captured, cache: ParseCache | None = None
) -> str:
    """Render a model's SQL, recording config(), ref() and source() into ``captured``; ``cache`` keeps the
    compiled template."""

    def ref(name: str, *extra: str) -> str:
        if extra:  # ref('package', 'model') - packages are not supported; use the model name
            name = extra[-1]
        if name not in ctx.node_names:
            raise CompileError(
                f"ref('{name}') points at no model.{did_you_mean(name, ctx.node_names)}",
                hint="Check the model name (its file name without .sql).",
            )
        captured.refs.append(name)
        return ctx.node_names[name]

    def source(source_name: str, table_name: str) -> str:
        key = (source_name, table_name)
        if key not in ctx.sources:
            names = [f"{s}.{t}" for s, t in ctx.sources]
            raise CompileError(
                f"source('{source_name}', '{table_name}') is not declared."
                f"{did_you_mean(f'{source_name}.{table_name}', names)}",
                hint="Declare it under `sources:` in a models/*.yml file.",
            )
        captured.sources.append(key)
        return ctx.sources[key].sql()

    def config(**kwargs: Any) -> str:
        captured.config.update(kwargs)
        return ""

    context = {
        "ref": ref,
        "source": source,
        "config": config,
        "var": make_var(ctx.vars),
        "env_var": env_var,
        "is_incremental": lambda: ctx.incremental,
        "this": ctx.this,
        "nearest_neighbors": lambda *args, **kwargs: nearest_neighbors(ctx.engine, *args, **kwargs),
    }
    context = ctx.macros.bind(context, lambda f: cache.template(f.source, f.rel_path) if cache is not None
                              else compiled(_SQL_ENV, f.source, f.rel_path))
    return _render(lambda: cache.template(raw) if cache is not None else _SQL_ENV.from_string(raw), context, where)


def nearest_neighbors(engine: str, queries: str, documents: str, k: int = 3, *, query_key: str | list[str],
                      document_key: str | list[str], column: str = "embedding") -> str:
    """`{{ nearest_neighbors(ref('a'), ref('b'), k=3, query_key='id', document_key='doc_id') }}`: a select of the
    ``k`` rows of ``documents`` nearest to each row of ``queries`` by the cosine similarity of their vector
    ``column`` (two embedding models' tables): the query key, the document key, `similarity` and `neighbor_rank`
    (1: the nearest; ties go to the smallest document key). Written in the engine's SQL (Warehouse.nearest_sql)."""
    from llmt.warehouse import engine_class

    keys = [[key] if isinstance(key, str) else list(key) for key in (query_key, document_key)]
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise CompileError(f"nearest_neighbors: k must be a whole number of at least 1, got {k!r}")
    if any(not names or not all(isinstance(n, str) and n for n in names) for names in keys):
        raise CompileError("nearest_neighbors: query_key and document_key must each name a column (or a list)",
                           hint="Example: nearest_neighbors(ref('ticket_embeddings'), ref('kb_embeddings'), k=3, "
                           "query_key='ticket_id', document_key='article_id')")
    clash = sorted(set(keys[0]) & {*keys[1], "similarity", "neighbor_rank"} | set(keys[1]) & {"similarity",
                                                                                            "neighbor_rank"})
    if clash:
        raise CompileError(f"nearest_neighbors: the output would have column(s) {', '.join(clash)} twice",
                           hint="Rename the key in a select of the embedding model first (e.g. `id AS article_id`).")
    return engine_class(engine).nearest_sql(queries, documents, keys[0], keys[1], column, k)


def check_sql(sql: str, where: str, raw: str, dialect: str, cache: ParseCache | None = None) -> None:
    """Parse compiled SQL with sqlglot in the target engine's ``dialect``; a syntax error names the model file and
    line.
    SQL that ``cache`` knows parsed without error is not parsed again."""
    if cache is not None and cache.known_good(sql, dialect):
        return
    import sqlglot
    from sqlglot.errors import ParseError, TokenError

    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except ParseError as exc:
        info = exc.errors[0] if exc.errors else {}
        line = _source_line(raw, sql, int(info.get("line") or 0))
        desc = str(info.get("description") or exc).split("\n")[0]
        near = str(info.get("highlight") or "").strip()
        raise CompileError(
            f"SQL syntax error: {desc}" + (f" near `{near}`" if near else ""),
            where=f"{where}:{line}" if line else where,
            hint="Fix the SQL at that line; `llmt compile` shows the compiled SQL.",
        ) from None
    except TokenError as exc:
        raise CompileError(f"SQL syntax error: {exc}", where=where) from None
    if not statements:
        raise CompileError("the model has no SQL", where=where, hint="Write a select statement.")
    if len(statements) > 1:
        raise CompileError(
            "a model must be a single select statement (found several statements)", where=where,
            hint="Remove the extra `;`-separated statements.",
        )
    if cache is not None:
        cache.add_good(sql, dialect)


def _source_line(raw: str, sql: str, compiled_line: int) -> int:
    """Map a line of compiled SQL back to the model file when the line's text is found there."""
    lines = sql.splitlines()
    if not 0 < compiled_line <= len(lines):
        return compiled_line
    text = lines[compiled_line - 1].strip()
    raw_lines = [r.strip() for r in raw.splitlines()]
    if text and text in raw_lines:
        candidates = [i + 1 for i, r in enumerate(raw_lines) if r == text]
        return min(candidates, key=lambda i: abs(i - compiled_line))
    return compiled_line


def select_columns(sql: str, dialect: str) -> list[str] | None:
    """Output column names of a select when sqlglot can tell them without a catalog (no `*`)."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(sql, read=dialect)
    except Exception:
        return None
    if not isinstance(tree, exp.Query):
        return None
    if any(isinstance(s, exp.Star) or (isinstance(s, exp.Column) and s.is_star) for s in tree.selects):
        return None
    names = list(tree.named_selects)
    return names if names and all(names) else None
