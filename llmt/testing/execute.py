"""Run data tests against the warehouse: count the failing rows, keep a sample (and, with
`store_failures`, all of them in `<schema>_test_failures.<test>`), and apply severity and the
`warn_if`/`error_if` thresholds."""

from __future__ import annotations

import time
from typing import Any

from llmt.errors import LlmtError, NodeError
from llmt.project import Project
from llmt.testing.collect import DataTest, breaks
from llmt.testing.generic import Target
from llmt.testing.result import TestResult
from llmt.warehouse.base import DatabaseError, Warehouse

SAMPLE_ROWS = 5


def failures_schema(project: Project) -> str:
    return f"{project.schema}_test_failures"


def failing_rows_sql(wh: Warehouse, project: Project, test: DataTest) -> str:
    """The query selecting what breaks the test."""
    generic = test.generic
    if generic is None:
        return test.sql
    relation = test.relation
    if test.config.where:
        relation = f"(SELECT * FROM {relation} WHERE {test.config.where})"
    node = project.nodes.get(test.attached)
    target = Target(relation, test.column, test.attached, tuple(node.unique_key) if node else ())
    return generic.sql(target, test.args, wh)


def run_data_test(
    wh: Warehouse, project: Project, test: DataTest, store_failures: bool = False
) -> TestResult:
    started = time.monotonic()
    result = TestResult(test.name, test.kind, test.origin, test.attached, test.where, severity=test.config.severity)
    try:
        for name in test.depends_on:
            if wh.relation_kind(project.nodes[name].schema, name) is None:
                raise NodeError(f"`{name}` has not been built yet",
                                hint=f"Run `llmt run -s {name}` first, or use `llmt build`.")
        sql = failing_rows_sql(wh, project, test)
        if store_failures or test.config.store_failures:
            schema = failures_schema(project)
            table = wh.relation(schema, test.name)
            wh.execute(f"CREATE SCHEMA IF NOT EXISTS {wh.quote(schema)}")
            wh.replace_table(table, sql, wh.relation_kind(schema, test.name))
            sql, result.stored = f"SELECT * FROM {table}", f"{schema}.{test.name}"
        result.failures = int(wh.scalar(f"SELECT count(*) FROM ({sql}) AS failing") or 0)
        if result.failures:
            result.columns, result.sample = wh.query(f"SELECT * FROM ({sql}) AS failing LIMIT {SAMPLE_ROWS}")
    except DatabaseError as exc:
        first = exc.detail.strip().split("\n")[0]
        result.status, result.message = "error", f"the database rejected the test's SQL: {first}"
    except LlmtError as exc:
        result.status, result.message = "error", exc.message + (f" ({exc.hint})" if exc.hint else "")
    else:
        config = test.config
        if config.severity == "error" and breaks(result.failures, config.error_if):
            result.status = "fail"
        elif breaks(result.failures, config.warn_if):
            result.status = "warn"
        if result.failures:
            result.message = describe(test, result)
    result.seconds = time.monotonic() - started
    return result


def describe(test: DataTest, result: TestResult) -> str:
    """What the failing rows mean, in words."""
    n, col, a = result.failures, test.column, test.args
    first = dict(zip(result.columns, result.sample[0], strict=False)) if result.sample else {}
    text = {
        "not_null": f"{n} row(s) where {col} is NULL",
        "unique": f"{n} value(s) of {col} appear more than once",
        "accepted_values": f"{n} value(s) of {col} are not in {_short(a.get('values'))}",
        "relationships": f"{n} value(s) of {col} have no match in {a.get('to')}.{a.get('field')}",
        "accepted_range": f"{n} row(s) where {col} is outside "
                          f"{_bounds(a.get('min_value'), a.get('max_value'), a.get('inclusive', True))}",
        "expression_is_true": f"{n} row(s) where `{' '.join(p for p in (col, a.get('expression')) if p)}` "
                              "is not true",
        "row_count": f"the table has {first.get('row_count')} rows; expected "
                     f"{_bounds(a.get('min'), a.get('max'), True)}",
        "max_error_rate": f"error rate {_pct(first.get('error_rate'))} ({first.get('failed')} of "
                          f"{first.get('total')} rows failed) is above {_pct(a.get('max'))}",
        "all_answered": f"{n} row(s) are pending or failed",
        "max_cost_usd": f"the last run cost ${first.get('cost_usd')}, more than ${a.get('max')}",
    }.get(test.kind, f"{n} failing row(s)")
    return text + (f"; all failing rows are in {result.stored}" if result.stored else "")


def _short(values: Any) -> str:
    text = ", ".join(str(v) for v in values or [])
    return f"[{text[:80]}...]" if len(text) > 80 else f"[{text}]"


def _bounds(low: Any, high: Any, inclusive: bool) -> str:
    return ("[" if inclusive else "(") + f"{'-inf' if low is None else low}, " \
        f"{'inf' if high is None else high}" + ("]" if inclusive else ")")


def _pct(value: Any) -> str:
    return f"{float(value):.1%}" if isinstance(value, int | float) else str(value)
