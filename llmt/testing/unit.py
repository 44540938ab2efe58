"""Unit tests (dbt 1.8's shape), run offline on an in-memory DuckDB.

```yaml
unit_tests:
  - name: negative_reviews_are_flagged
    model: review_insights
    given:                                   # one entry per ref()/source() the model reads
      - input: ref('stg_reviews')
        rows: [{review_id: 1, product: Phone, language: en, review_text: Battery died}]
    llm_answers:                             # LLM models: the answer for the rows matching `given`
      - given: {review_id: 1}
        answer: {sentiment: negative, score: 2, issues: [battery], category: battery}
    expect:                                  # the model's rows, compared on these columns only
      rows: [{review_id: 1, sentiment: negative, _llmt_status: ok}]
    prompt:                                  # assertions on the rendered messages for one row
      - given_row: {product: Phone, language: en, review_text: Battery died}
        contains: ["Product: Phone", "Battery died"]
```

A SQL model runs its select over the given rows. An LLM model runs through the real pipeline
(stage, render, batch, collect, output table) with the offline fake provider answering each
request with its pinned answer, so the expected rows have the real output table's shape.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmt.compile import Captured, Source, SqlContext, check_sql, relation, render_model_sql
from llmt.console import Reporter
from llmt.errors import ConfigError, LlmtError, did_you_mean
from llmt.pipeline.batches import Batches
from llmt.pipeline.context import Limits, ModelPlace, Providers, RunContext
from llmt.pipeline.llm import Budgets, LlmOptions, NodeRun
from llmt.pipeline.spec import LlmSpec, build_spec
from llmt.project import Node, Project
from llmt.project.yamlfile import line_of, validate
from llmt.prompts import PromptRenderer
from llmt.providers.fake import FakeProvider, FaultPlan, Pin
from llmt.runner import new_run_id, prices
from llmt.testing.collect import rel_path
from llmt.testing.derived import unwrap_field
from llmt.testing.result import TestResult
from llmt.testing.rows import RowsSpec, create_table, diff_rows, normalize, read_rows
from llmt.validate import AnswerValidator
from llmt.warehouse import open_warehouse
from llmt.warehouse.base import DatabaseError, Warehouse
from llmt.warehouse.store import StateStore

_REF = re.compile(r"""\A\s*ref\(\s*['"]([^'"]+)['"]\s*\)\s*\Z""")
_SOURCE = re.compile(r"""\A\s*source\(\s*['"]([^'"]+)['"]\s*,\s*['"]([^'"]+)['"]\s*\)\s*\Z""")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GivenInput(_Strict):
    input: str  # ref('model'), source('source', 'table') or this
    rows: RowsSpec = Field(default_factory=list)
    format: Literal["dict", "csv"] = "dict"


class ExpectedRows(_Strict):
    rows: RowsSpec = Field(default_factory=list)
    format: Literal["dict", "csv"] = "dict"


class PinnedAnswer(_Strict):
    given: dict[str, Any]  # column values of the select's rows that get this answer
    answer: dict[str, Any]


class PromptCheck(_Strict):
    given_row: dict[str, Any]  # values of the prompt's variables
    contains: list[str] = Field(default_factory=list)
    not_contains: list[str] = Field(default_factory=list)


class Overrides(_Strict):
    vars: dict[str, Any] = Field(default_factory=dict)
    macros: dict[str, bool] = Field(default_factory=dict)  # is_incremental: true


class UnitTestProps(_Strict):
    name: str
    model: str
    description: str = ""
    given: list[GivenInput] = Field(default_factory=list)
    expect: ExpectedRows | None = None
    llm_answers: list[PinnedAnswer] = Field(default_factory=list)
    prompt: list[PromptCheck] = Field(default_factory=list)
    overrides: Overrides = Overrides()


@dataclass
class UnitTest:
    props: UnitTestProps
    node: Node
    path: Path
    loc: list[str | int]
    where: str

    @property
    def name(self) -> str:
        return self.props.name

    def at(self, *loc: str | int) -> str:
        """file:line of a part of this unit test."""
        line = line_of(self.path, [*self.loc, *loc])
        return f"{self.where.rsplit(':', 1)[0]}:{line}" if line else self.where


def collect_unit_tests(project: Project) -> list[UnitTest]:
    tests: dict[str, UnitTest] = {}
    for path, parsed in project.properties:
        for i, raw in enumerate(parsed.unit_tests):
            loc: list[str | int] = ["unit_tests", i]
            props = validate(UnitTestProps, raw, path, loc)
            line = line_of(path, loc)
            where = f"{rel_path(project, path)}:{line}" if line else rel_path(project, path)
            node = project.nodes.get(props.model)
            if node is None:
                raise ConfigError(f"unit test `{props.name}` is for unknown model `{props.model}`."
                                  f"{did_you_mean(props.model, project.nodes)}", where=where)
            if props.name in tests:
                raise ConfigError(f"two unit tests are named `{props.name}`", where=where,
                                  hint=f"The other one is at {tests[props.name].where}; rename one.")
            if props.expect is None and not props.prompt:
                raise ConfigError(f"unit test `{props.name}` checks nothing", where=where,
                                  hint="Give `expect: {rows: [...]}` and/or `prompt:` assertions (LLM models).")
            if (props.llm_answers or props.prompt) and not node.is_llm:
                raise ConfigError(f"unit test `{props.name}`: `llm_answers` and `prompt` apply to LLM models, "
                                  f"and `{node.name}` is not one", where=where)
            tests[props.name] = UnitTest(props, node, path, loc, where)
    return list(tests.values())


def run_unit_test(project: Project, test: UnitTest) -> TestResult:
    """Failures: one per row that differs (missing or unexpected) and one per failed prompt assertion."""
    started = time.monotonic()
    result = TestResult(test.name, "unit", "unit", test.node.name, test.where)
    problems: list[str] = []
    try:
        problems += _check_prompts(project, test) if test.props.prompt else []
        if test.props.expect is not None:
            with tempfile.TemporaryDirectory(prefix="llmt-unit-") as tmp:
                run = _run_llm if test.node.is_llm else _run_sql
                columns, rows = run(project, test, Path(tmp))
                wh = _scratch_warehouse(project, Path(tmp))
                try:
                    expected = read_rows(wh, test.props.expect.rows, test.props.expect.format, Path(tmp),
                                         test.at("expect"))
                finally:
                    wh.close()
            result.columns, marked = diff_rows(expected, columns, rows, test.at("expect"), test.node.name)
            result.sample = marked[:20]
            if marked:
                missing, extra = sum(r[0] == "-" for r in marked), sum(r[0] == "+" for r in marked)
                problems.insert(0, f"{missing} expected row(s) missing, {extra} unexpected row(s) in the output "
                                   f"of `{test.node.name}` (compared on {', '.join(result.columns[1:])})")
            result.failures = len(marked)
    except LlmtError as exc:
        result.status, result.message = "error", exc.render()
    else:
        result.failures += len(problems) - (1 if result.failures else 0)  # the diff's summary is not one
        if problems:
            result.status, result.message = "fail", "; ".join(problems)
    result.seconds = time.monotonic() - started
    return result


# -- running the model over the given rows ------------------------------------------------------


def _model_sql(project: Project, test: UnitTest, wh: Warehouse, scratch: Path) -> str:
    """Create the given inputs and render the model's SQL over them."""
    given_schema = wh.state_schema + "_given"  # where given source() and `this` rows live (`_llmt_given`)
    wh.execute(f"CREATE SCHEMA IF NOT EXISTS {wh.quote(given_schema)}")
    refs: set[str] = set()
    sources: set[tuple[str, str]] = set()
    this = relation(wh.schema, test.node.name)
    for k, given in enumerate(test.props.given):
        where = test.at("given", k)
        ref, source = _REF.match(given.input), _SOURCE.match(given.input)
        if ref and (ref[1] in project.nodes or ref[1] in project.seeds):
            name = relation(wh.schema, ref[1])
            refs.add(ref[1])
        elif source and (source[1], source[2]) in project.sources:
            name = relation(given_schema, f"{source[1]}__{source[2]}")
            sources.add((source[1], source[2]))
        elif given.input.strip() == "this":
            name = this = relation(given_schema, "this")
        else:
            raise ConfigError(
                f"unit test `{test.name}`: cannot use input `{given.input}`", where=where,
                hint=f"Use ref('model'), source('source', 'table') or this. Models: {', '.join(project.nodes)}; "
                f"sources: {', '.join(f'{s}.{t}' for s, t in project.sources) or 'none'}.",
            )
        create_table(wh, name, given.rows, given.format, scratch, where)
    ctx = SqlContext(
        {n: relation(wh.schema, n) for n in project.relations()},
        {key: Source(key[0], key[1], src.where, given_schema, f"{key[0]}__{key[1]}")
         for key, src in project.sources.items()},
        {**project.vars, **test.props.overrides.vars}, this, test.props.overrides.macros.get("is_incremental", False),
        macros=project.macros,
    )
    captured = Captured()
    sql = render_model_sql(test.node.raw_sql, test.node.rel_path, ctx, captured)
    check_sql(sql, test.node.rel_path, test.node.raw_sql, project.dialect)
    read = {f"ref('{r}')" for r in captured.refs} | {f"source('{s}', '{t}')" for s, t in captured.sources}
    gives = {f"ref('{r}')" for r in refs} | {f"source('{s}', '{t}')" for s, t in sources}
    if read - gives:
        raise ConfigError(f"unit test `{test.name}`: `{test.node.name}` reads {', '.join(sorted(read - gives))}, "
                          "which the test does not give", where=test.where,
                          hint="Add it under `given:` with `input:` and `rows:`.")
    if gives - read:
        raise ConfigError(f"unit test `{test.name}` gives {', '.join(sorted(gives - read))}, which "
                          f"`{test.node.name}` does not read", where=test.where, hint="Remove it, or fix `input:`.")
    return sql.strip().rstrip(";")


def _select(wh: Warehouse, sql: str, test: UnitTest) -> tuple[list[str], list[tuple[Any, ...]]]:
    try:
        return wh.query(sql)
    except DatabaseError as exc:
        raise ConfigError(
            f"unit test `{test.name}`: the SQL of `{test.node.name}` failed on the given rows: "
            f"{exc.detail.strip().splitlines()[0]}", where=test.where,
            hint="Give every column the model reads in the given rows (missing columns do not exist).",
        ) from None


def _scratch_warehouse(project: Project, scratch: Path) -> Warehouse:
    """A throwaway warehouse of the target's engine (DuckDB: in memory; PostgreSQL: schemas of its own, in a
    transaction rolled back at the end), whose schemas stand for the target's."""
    return open_warehouse(project.target.warehouse, scratch, memory=True, target=project.target_name)


def _run_sql(project: Project, test: UnitTest, scratch: Path) -> tuple[list[str], list[tuple[Any, ...]]]:
    wh = _scratch_warehouse(project, scratch)
    try:
        return _select(wh, f"SELECT * FROM ({_model_sql(project, test, wh, scratch)}) AS model", test)
    finally:
        wh.close()


def _run_llm(project: Project, test: UnitTest, scratch: Path) -> tuple[list[str], list[tuple[Any, ...]]]:
    spec = build_spec(project, test.node, provider="fake")  # unit tests are answered by the fake provider
    wh = _scratch_warehouse(project, scratch)
    try:
        sql = _model_sql(project, test, wh, scratch)
        columns, rows = _select(wh, f"SELECT * FROM ({sql}) AS model", test)
        pins = _pins(spec, test, columns, rows)
        provider = FakeProvider(scratch / "fake_remote", FaultPlan(pinned=pins))
        run = RunContext(new_run_id(), project.name, wh, StateStore(wh), Providers(provider, None, Limits()),
                         prices(project), Reporter(), scratch, scratch / "batches")
        # the model's select over the given rows; batch files go to the scratch directory, never to target/
        place = ModelPlace(test.node.name, test.node.rel_path, sql, wh.schema, scratch / "batches")
        NodeRun(run, Batches(run), place, spec, LlmOptions(), Budgets()).run()
        return _select(wh, f"SELECT * FROM {wh.relation(wh.schema, test.node.name)}", test)
    finally:
        wh.close()


def _pins(spec: LlmSpec, test: UnitTest, columns: list[str], rows: list[tuple[Any, ...]]) -> list[Pin]:
    """One pinned answer per request of the select's rows, matched by `llm_answers[].given`."""
    validator = AnswerValidator(spec.strict_schema, test.node.name)
    nullable = [k for k, v in spec.strict_schema["properties"].items() if unwrap_field(v)[0]]
    answers = []
    for k, pinned in enumerate(test.props.llm_answers):
        unknown = [c for c in pinned.given if c not in columns]
        if unknown:
            raise ConfigError(f"llm_answers[{k}].given uses `{unknown[0]}`, which is not a column of the select "
                              f"of `{test.node.name}`.{did_you_mean(unknown[0], columns)}",
                              where=test.at("llm_answers", k), hint=f"Columns: {', '.join(columns)}.")
        answer = {**dict.fromkeys(nullable), **pinned.answer}
        outcome, why = validator.check(json.dumps(answer, default=str))
        if outcome != "ok":
            raise ConfigError(f"llm_answers[{k}].answer does not fit schema `{spec.schema_name}`: {why}",
                              where=test.at("llm_answers", k, "answer"), hint="Fix the pinned answer.")
        answers.append(answer)
    renderer = PromptRenderer(spec.prompt)
    by_text: dict[str, Any] = {}
    used: set[int] = set()
    for row in rows:
        values = dict(zip(columns, row, strict=True))
        matches = [k for k, p in enumerate(test.props.llm_answers)
                   if all(normalize(values[c]) == normalize(v) for c, v in p.given.items())]
        shown = ", ".join(f"{c}={values[c]!r}" for c in test.node.unique_key if c in values)
        if len(matches) != 1:
            what = "no pinned answer" if not matches else f"{len(matches)} pinned answers ({matches})"
            raise ConfigError(
                f"unit test `{test.name}`: the input row {shown} of `{test.node.name}` has {what}",
                where=test.at("llm_answers") if test.props.llm_answers else test.where,
                hint="Each row the select returns needs exactly one `llm_answers` entry whose `given` matches it, "
                f"e.g. `- given: {{{test.node.unique_key[0]}: ...}}`.",
            )
        used.add(matches[0])
        text = renderer.messages({c: values[c] for c in spec.columns})[-1]["content"]
        if by_text.setdefault(text, answers[matches[0]]) != answers[matches[0]]:
            raise ConfigError(f"unit test `{test.name}`: rows with the same request are pinned to different answers "
                              f"(row {shown})", where=test.at("llm_answers"),
                              hint="Rows whose prompt variables are equal send one request: pin one answer.")
    unused = [k for k in range(len(test.props.llm_answers)) if k not in used]
    if unused:
        raise ConfigError(f"llm_answers[{unused[0]}] matches no row of the select of `{test.node.name}`",
                          where=test.at("llm_answers", unused[0]), hint="Fix `given:`, or remove the entry.")
    # longest first: a pinned text that contains another one must win over it
    return [Pin(contains=text, answer=a) for text, a in sorted(by_text.items(), key=lambda kv: -len(kv[0]))]


# -- prompt assertions --------------------------------------------------------------------------


def _check_prompts(project: Project, test: UnitTest) -> list[str]:
    spec = build_spec(project, test.node)
    renderer = PromptRenderer(spec.prompt)
    problems = []
    for k, check in enumerate(test.props.prompt):
        missing = sorted(set(spec.columns) - set(check.given_row))
        if missing:
            problems.append(f"prompt[{k}]: prompt `{spec.prompt.name}` uses {', '.join(missing)}, which "
                            f"`given_row` does not give ({test.at('prompt', k)})")
            continue
        text = "\n\n".join(m["content"] for m in renderer.messages(check.given_row))
        problems += [f"prompt[{k}]: the rendered prompt does not contain {s!r}" for s in check.contains
                     if s not in text]
        problems += [f"prompt[{k}]: the rendered prompt contains {s!r}" for s in check.not_contains if s in text]
    return problems
