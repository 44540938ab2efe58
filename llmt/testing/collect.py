"""Gather data tests: generic tests declared in properties files (on models, columns and source
tables, dbt's shape), tests derived from LLM output schemas, and singular tests (tests/*.sql).
Every test knows the file:line it was declared at; a mistake in one is a ConfigError there."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmt.compile import Captured, SqlContext, check_sql, render_model_sql
from llmt.errors import ConfigError, did_you_mean
from llmt.project import Node, Project
from llmt.project.properties import TableProps
from llmt.project.yamlfile import line_of
from llmt.testing.generic import GENERICS, Generic
from llmt.textfile import read_text
from llmt.warehouse.base import quoted

CONFIG_KEYS = ("severity", "warn_if", "error_if", "where", "store_failures", "enabled")
_CONDITION = re.compile(r"\A\s*(!=|<>|>=|<=|==|=|>|<)\s*(\d+)\s*\Z")
_HINT = "Write `- unique`, or a mapping with one key: `- accepted_values: {values: [a, b]}`."


@dataclass(frozen=True)
class TestConfig:
    __test__ = False  # not a pytest test class

    severity: str = "error"  # error | warn
    warn_if: str = "!=0"  # conditions on the number of failing rows
    error_if: str = "!=0"
    where: str | None = None  # SQL filter on the tested relation
    store_failures: bool = False


@dataclass
class DataTest:
    name: str
    kind: str  # a generic test's name, or "singular"
    origin: str  # properties | schema | singular
    attached: str  # the model it is declared on, `source:raw.reviews`, or the singular test's file
    where: str  # file:line of its declaration
    relation: str = ""  # what a generic test reads (before `where`)
    column: str | None = None  # SQL expression of the tested column
    args: dict[str, Any] = field(default_factory=dict)
    config: TestConfig = field(default_factory=TestConfig)
    depends_on: tuple[str, ...] = ()  # models it reads
    sql: str = ""  # singular tests: the compiled query

    @property
    def generic(self) -> Generic | None:
        return GENERICS.get(self.kind)


def sql_context(project: Project, this: str = "") -> SqlContext:
    return SqlContext(project.relations(), project.sources, project.vars, this, macros=project.macros)


def rel_path(project: Project, path: Path) -> str:
    try:
        return path.relative_to(project.dir).as_posix()
    except ValueError:
        return str(path)


def breaks(count: int, condition: str) -> bool:
    """Whether ``count`` failing rows meet a `warn_if`/`error_if` condition such as ``>10``."""
    match = _CONDITION.match(condition)
    assert match is not None  # checked when the test was collected
    op, n = match[1], int(match[2])
    return {"!=": count != n, "<>": count != n, ">=": count >= n, "<=": count <= n, "==": count == n,
            "=": count == n, ">": count > n, "<": count < n}[op]


# -- properties ---------------------------------------------------------------------------------


def collect_tests(project: Project) -> list[DataTest]:
    """Every data test of the project (schema-derived and singular ones included)."""
    from llmt.testing.derived import derived_tests

    tests: list[DataTest] = []
    for path, parsed in project.properties:
        for i, model in enumerate(parsed.models):
            node = project.nodes.get(model.name)
            if node is not None:  # disabled models have no tests
                tests.extend(_table_tests(project, path, ["models", i], model, node.name, node.relation, node))
        for i, src in enumerate(parsed.sources):
            for j, table in enumerate(src.tables):
                source = project.sources[(src.name, table.name)]
                tests.extend(_table_tests(project, path, ["sources", i, "tables", j], table,
                                          f"source:{src.name}.{table.name}", source.sql(), None))
        for i, seed_props in enumerate(parsed.seeds):
            seed = project.seeds.get(seed_props.name)
            if seed is not None:  # disabled seeds have no tests
                tests.extend(_table_tests(project, path, ["seeds", i], seed_props, f"seed:{seed.name}",
                                          seed.relation, None))
    tests.extend(derived_tests(project))
    tests.extend(singular_tests(project))
    return _unique_names(tests)


def _table_tests(
    project: Project, path: Path, loc: list[str | int], props: TableProps, attached: str, relation: str,
    node: Node | None,
) -> Iterator[DataTest]:
    for key in ("tests", "data_tests"):
        for k, entry in enumerate(getattr(props, key)):
            yield from _entry(project, path, [*loc, key, k], entry, attached, relation, node, None)
    for j, column in enumerate(props.columns):
        for key in ("tests", "data_tests"):
            for k, entry in enumerate(getattr(column, key)):
                yield from _entry(project, path, [*loc, "columns", j, key, k], entry, attached, relation, node,
                                  column.name)


def _entry(
    project: Project, path: Path, loc: list[str | int], entry: Any, attached: str, relation: str,
    node: Node | None, column: str | None,
) -> Iterator[DataTest]:
    line = line_of(path, loc)
    where = f"{rel_path(project, path)}:{line}" if line else rel_path(project, path)
    if isinstance(entry, str):
        name, body = entry, None
    elif isinstance(entry, dict) and len(entry) == 1:
        name, body = next(iter(entry.items()))
    else:
        raise ConfigError(f"cannot read this test: {entry!r}", where=where, hint=_HINT)
    generic = GENERICS.get(str(name))
    if generic is None:
        raise ConfigError(f"unknown test `{name}`.{did_you_mean(str(name), GENERICS)}", where=where,
                          hint=f"Tests: {', '.join(GENERICS)}.")
    if body is not None and not isinstance(body, dict):
        if generic.scalar is None:
            raise ConfigError(f"`{name}` takes a mapping of arguments, got {body!r}", where=where,
                              hint=f"Example: `- {generic.example}`.")
        body = {generic.scalar: body}
    body = dict(body or {})
    config = _config({k: body.pop(k) for k in CONFIG_KEYS if k in body}, body.pop("config", None), where)
    if config is None:
        return
    custom_name = body.pop("name", None)
    nested = body.pop("arguments", None) or {}
    if not isinstance(nested, dict):
        raise ConfigError("`arguments` must be a mapping", where=where, hint=f"Example: `- {generic.example}`.")
    args = {**nested, **body}
    column_sql = quoted(column) if column is not None else None
    if "column_name" in args:
        column_sql = str(args.pop("column_name"))
    where_node = node.name if node else attached
    _check_scope(generic, node, column, column_sql, where, where_node)
    _check_args(generic, args, where)
    ctx = sql_context(project)
    depends = [node.name] if node else []
    if generic.name == "relationships":
        to = str(args["to"])
        template = to if "{{" in to else "{{ " + (to if "(" in to else f"ref({to!r})") + " }}"
        args["to"] = _render(template, where, ctx, depends)
    if generic.name == "expression_is_true":
        args["expression"] = _render(str(args["expression"]), where, ctx, depends)
    if config.where:
        config = TestConfig(config.severity, config.warn_if, config.error_if,
                            _render(config.where, where, ctx, depends), config.store_failures)
    shown = where_node.replace("source:", "source_").replace("seed:", "seed_")
    base = [generic.name, shown, *([column] if column else [])]
    yield DataTest(
        str(custom_name) if custom_name else "_".join(base), generic.name, "properties", attached, where,
        relation, column_sql, args, config, tuple(d for d in dict.fromkeys(depends) if d in project.nodes),
    )


def _render(template: str, where: str, ctx: SqlContext, depends: list[str]) -> str:
    captured = Captured()
    text = render_model_sql(template, where, ctx, captured)
    depends.extend(captured.refs)
    return text


def _check_scope(
    generic: Generic, node: Node | None, column: str | None, column_sql: str | None, where: str, on: str
) -> None:
    if generic.model_level and column is not None:
        raise ConfigError(f"`{generic.name}` is a model-level test, not a column test", where=where,
                          hint=f"Move it under the model's `tests:` (`- {generic.example}`).")
    if generic.llm and (node is None or not node.sends):
        raise ConfigError(f"`{generic.name}` applies to LLM and embedding models only, and `{on}` is neither",
                          where=where, hint="Remove the test, or put it on a model with materialized='llm' or "
                          "'embedding'.")
    if generic.column and column_sql is None:
        raise ConfigError(f"`{generic.name}` tests a column: put it under a column, or give `column_name`",
                          where=where, hint=f"Example: `- {generic.name}: {{column_name: id}}` under `tests:`.")


def _check_args(generic: Generic, args: dict[str, Any], where: str) -> None:
    for key, value in args.items():
        check = generic.required.get(key) or generic.optional.get(key)
        if check is None:
            known = [*generic.arguments, *CONFIG_KEYS]
            raise ConfigError(
                f"`{generic.name}` has no argument `{key}`.{did_you_mean(str(key), known)}", where=where,
                hint=f"Arguments: {', '.join(generic.arguments) or 'none'}; config: {', '.join(CONFIG_KEYS)}.",
            )
        problem = check(value)
        if problem:
            raise ConfigError(f"`{generic.name}`: `{key}` {problem}", where=where,
                              hint=f"Example: `- {generic.example}`.")
    missing = [k for k in generic.required if k not in args]
    if missing:
        raise ConfigError(f"`{generic.name}` needs `{missing[0]}`", where=where,
                          hint=f"Example: `- {generic.example}`.")
    if generic.name in ("row_count", "accepted_range") and not args.keys() - {"inclusive"}:
        raise ConfigError(f"`{generic.name}` needs a lower or an upper bound", where=where,
                          hint=f"Example: `- {generic.example}`.")


def _config(top: dict[str, Any], nested: Any, where: str) -> TestConfig | None:
    """A test's config (None when `enabled: false`), from its arguments and/or its `config:` mapping."""
    if nested is not None and not isinstance(nested, dict):
        raise ConfigError("a test's `config` must be a mapping", where=where,
                          hint="Example: `config: {severity: warn, where: \"created_at > '2024-01-01'\"}`.")
    raw = {**top, **(nested or {})}
    for key, value in raw.items():
        if key not in CONFIG_KEYS:
            raise ConfigError(f"unknown test config `{key}`.{did_you_mean(str(key), CONFIG_KEYS)}", where=where,
                              hint=f"Test config: {', '.join(CONFIG_KEYS)}.")
        if key in ("store_failures", "enabled") and not isinstance(value, bool):
            raise ConfigError(f"`{key}` must be true or false, got {value!r}", where=where)
        if key in ("warn_if", "error_if") and not (isinstance(value, str) and _CONDITION.match(value)):
            raise ConfigError(f"`{key}` must be a condition on the number of failing rows, got {value!r}",
                              where=where, hint=f"Examples: {key}: \">10\", {key}: \"!=0\".")
        if key == "where" and not (isinstance(value, str) and value.strip()):
            raise ConfigError("`where` must be a SQL condition", where=where, hint="Example: where: \"amount > 0\".")
    severity = str(raw.get("severity", "error")).lower()
    if severity not in ("error", "warn"):
        raise ConfigError(f"`severity` must be `error` or `warn`, got {raw['severity']!r}", where=where)
    if raw.get("enabled", True) is False:
        return None
    return TestConfig(severity, raw.get("warn_if", "!=0"), raw.get("error_if", "!=0"), raw.get("where"),
                      raw.get("store_failures", False))


# -- singular tests -------------------------------------------------------------------------------


def singular_tests(project: Project) -> list[DataTest]:
    """tests/**/*.sql: each a query returning failing rows; Jinja with ref(), source(), var(), config()."""
    root = project.dir / "tests"
    tests = []
    for path in sorted(root.rglob("*.sql")) if root.is_dir() else []:
        where = rel_path(project, path)
        raw = read_text(path)
        captured = Captured()
        sql = render_model_sql(raw, where, sql_context(project), captured).strip().rstrip(";")
        config = _config({}, captured.config, where)
        if config is None:
            continue
        check_sql(sql, where, raw, project.dialect)
        depends = tuple(r for r in dict.fromkeys(captured.refs) if r in project.nodes)  # (seeds are loaded first)
        tests.append(DataTest(path.stem, "singular", "singular", ", ".join(depends) or where, where, config=config,
                              sql=sql, depends_on=depends))
    return tests


# -- names --------------------------------------------------------------------------------------


def _unique_names(tests: list[DataTest]) -> list[DataTest]:
    """dbt-like names (`not_null_orders_id`), made safe as table names; clashes get a short hash."""
    seen: dict[str, int] = {}
    for test in tests:
        test.name = re.sub(r"[^0-9A-Za-z_]+", "_", test.name).strip("_")[:100] or test.kind
        seen[test.name] = seen.get(test.name, 0) + 1
    for test in tests:
        if seen[test.name] > 1:
            digest = hashlib.sha1(f"{test.where}\0{test.args}\0{test.column}".encode()).hexdigest()[:7]
            test.name = f"{test.name}_{digest}"
    return tests
