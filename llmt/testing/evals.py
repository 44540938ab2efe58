"""`llmt eval`: ask an LLM model's provider about labelled examples and score its answers.

`tests/evals/<model>.csv` (or `.jsonl`) holds one example per row: the prompt's input columns and
`expected.<field>` columns (JSONL may also nest them: `{"expected": {"sentiment": "negative"}}`).
An empty cell (or a missing key) leaves that field unlabelled for the row; the text `null`
expects null; a list is a JSON array or `;`-separated items. Thresholds live in properties:

```yaml
models:
  - name: review_insights
    evals:
      sentiment: {min_accuracy: 0.8, min_macro_f1: 0.7}
      score: {max_mae: 1.5}
```

The examples run through the real pipeline under the node name `<model>__eval` (tables in the
state schema), so answers are stored by request key like any other: evaluating an unchanged
prompt again costs nothing. Each eval is recorded per prompt version (template hash) in
`eval_runs`, `eval_metrics` and `eval_answers`, and compared with the latest eval of another version.
"""

from __future__ import annotations

import csv
import hashlib
import json
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llmt.console import Console
from llmt.errors import ConfigError, did_you_mean
from llmt.pipeline.batches import Batches
from llmt.pipeline.context import ModelPlace, RunContext
from llmt.pipeline.llm import LlmOptions, NodeRun
from llmt.pipeline.rekey import fake_answers
from llmt.pipeline.spec import LlmSpec, build_spec
from llmt.project import Node, Project
from llmt.project.yamlfile import line_of
from llmt.runner import budgets, make_context, new_run_id, not_on_spark, open_warehouse, pipeline_options
from llmt.testing.collect import rel_path
from llmt.testing.metrics import METRICS, THRESHOLDS, field_kind, mismatch, parse_label, scores
from llmt.testing.rows import create_table
from llmt.textfile import read_text
from llmt.warehouse.base import Warehouse

EVAL_DIR = Path("tests") / "evals"
SUFFIX = "__eval"


@dataclass
class Metric:
    field: str
    metric: str
    value: float | None
    n: int
    previous: float | None = None
    threshold: str = ""  # e.g. ">= 0.8"
    passed: bool | None = None  # None: no threshold

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "metric": self.metric, "value": self.value, "n": self.n,
                "previous": self.previous, "threshold": self.threshold or None, "passed": self.passed}


@dataclass
class EvalResult:
    node: str
    labels: str  # the labelled file, relative to the project
    template_hash: str
    rows: int = 0
    answered: int = 0
    previous_hash: str | None = None
    labels_changed: bool = False  # the previous version was scored on other labelled examples
    metrics: list[Metric] = field(default_factory=list)
    mismatches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(m.passed is False for m in self.metrics)

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.node, "labels": self.labels, "prompt_version": self.template_hash,
                "previous_version": self.previous_hash, "labels_changed": self.labels_changed, "rows": self.rows,
                "answered": self.answered, "failed": self.failed, "metrics": [m.as_dict() for m in self.metrics],
                "mismatches": self.mismatches}


def eval_file(project: Project, name: str) -> Path | None:
    for suffix in (".csv", ".jsonl"):
        path = project.dir / EVAL_DIR / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def run_evals(project: Project, select: list[str], exclude: list[str], console: Console,
              options: LlmOptions) -> list[EvalResult]:
    names = [n for n in project.graph.select(select, exclude) if project.nodes[n].is_llm]
    chosen = [n for n in names if eval_file(project, n) is not None]
    if select and not chosen:
        raise ConfigError(
            f"no labelled examples for {', '.join(f'`{n}`' for n in names) or 'the selected models'}",
            hint=f"Create {EVAL_DIR / (names[0] if names else '<model>')}.csv with the prompt's input columns and "
            "expected.<field> columns (see the README's Testing section).",
        )
    not_on_spark(project, "`llmt eval`")
    options = pipeline_options(project, options)
    wh = open_warehouse(project, console)
    run = make_context(project, wh, console, new_run_id())
    batches = Batches(run)
    results: list[EvalResult] = []
    run.store.start_run(run.run_id, project.name, "eval")
    status = "error"
    try:
        for name in chosen:
            node = project.nodes[name]
            spec = build_spec(project, node)
            path = eval_file(project, name)
            assert path is not None
            console.info(f"eval  {name}: {rel_path(project, path)} on target `{project.target_name}` "
                         f"({project.target.provider.type})")
            results.append(_eval_model(project, node, spec, path, run, batches, options))
        status = "error" if any(r.failed for r in results) else "success"
    finally:
        run.store.finish_run(run.run_id, status)
        run.providers.close()
        wh.close()
    return results


def _eval_model(project: Project, node: Node, spec: LlmSpec, path: Path, run: RunContext, batches: Batches,
                options: LlmOptions) -> EvalResult:
    kinds = {f: field_kind(p) for f, p in spec.strict_schema["properties"].items()}
    limits = _thresholds(project, node, kinds)
    examples = _read_examples(project, path, spec, kinds)
    labelled = sorted({f for _, labels in examples for f in labels})
    wh = run.warehouse
    state = wh.state_schema
    name = node.name + SUFFIX
    inputs = wh.relation(state, f"eval_input__{node.name}")
    with wh.transaction(), tempfile.TemporaryDirectory(prefix="llmt-eval-") as tmp:
        rows = [{"eval_row": i, **{c: values.get(c) for c in spec.columns},
                 "_expected": json.dumps(labels, ensure_ascii=False)} for i, (values, labels) in enumerate(examples, 1)]
        create_table(wh, inputs, rows, "dict", Path(tmp), rel_path(project, path))
    cols = "".join(f", {wh.quote(c)}" for c in spec.columns)
    # the output table goes to the state schema, next to the staged inputs, not among the user's models
    place = ModelPlace(name, node.rel_path, f"SELECT eval_row{cols} FROM {inputs}", state, run.batches_dir / name)
    NodeRun(run, batches, place, replace(spec, node=name, unique_key=["eval_row"]), options,
            budgets(project, node.name, options), lambda: fake_answers(project)).run()
    output = wh.relation(state, name)
    result = EvalResult(node.name, rel_path(project, path), spec.template_hash, rows=len(examples))
    fields = ", ".join(f"o.{wh.quote(f)}" for f in labelled)
    answered = wh.fetchall(
        f"SELECT i.eval_row, o._llmt_status IN ('ok', 'stale'), {fields} FROM {inputs} i "
        f"LEFT JOIN {output} o ON o.eval_row = i.eval_row ORDER BY i.eval_row")
    result.answered = sum(bool(r[1]) for r in answered)
    for k, f in enumerate(labelled):
        kind = kinds[f]
        assert kind is not None
        pairs = [(examples[r[0] - 1][1][f], r[2 + k]) for r in answered if r[1] and f in examples[r[0] - 1][1]]
        for metric, value in scores(kind, pairs).items():
            result.metrics.append(Metric(f, metric, value, len(pairs)))
        result.mismatches += [{"row": r[0], "field": f, "expected": examples[r[0] - 1][1][f], "answer": r[2 + k]}
                              for r in answered if r[1] and f in examples[r[0] - 1][1]
                              and mismatch(kind, examples[r[0] - 1][1][f], r[2 + k])][:5]
    for m in result.metrics:
        for metric, direction, limit in limits.get(m.field, []):
            if metric == m.metric:
                m.threshold = f"{'>=' if direction == 'min' else '<='} {limit:g}"
                m.passed = m.value is not None and (m.value >= limit if direction == "min" else m.value <= limit)
    _store(wh, result, run.run_id, output, inputs, labelled, path)
    return result


def _store(wh: Warehouse, result: EvalResult, run_id: str, output: str, inputs: str, fields: list[str],
           path: Path) -> None:
    """Record the eval and look up the latest eval of another prompt version to compare with."""
    labels_hash = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    runs, metrics = wh.state_table("eval_runs"), wh.state_table("eval_metrics")
    with wh.transaction():
        previous = wh.fetchone(
            f"SELECT run_id, template_hash, labels_hash FROM {runs} WHERE node = ? AND template_hash <> ? "
            "ORDER BY created_at DESC LIMIT 1", [result.node, result.template_hash])
        if previous is not None:
            result.previous_hash, result.labels_changed = str(previous[1]), previous[2] != labels_hash
            before = {(f, m): v for f, m, v in wh.fetchall(
                f"SELECT field, metric, value FROM {metrics} WHERE run_id = ? AND node = ?",
                [previous[0], result.node])}
            for m in result.metrics:
                m.previous = before.get((m.field, m.metric))
        wh.execute(f"INSERT INTO {runs} VALUES (?, ?, ?, ?, ?, ?, ?, now())",
                   [run_id, result.node, result.template_hash, result.labels, labels_hash, result.rows,
                    result.answered])
        n = len(result.metrics)
        wh.load_rows(metrics, {
            "run_id": [run_id] * n, "node": [result.node] * n, "template_hash": [result.template_hash] * n,
            "field": [m.field for m in result.metrics], "metric": [m.metric for m in result.metrics],
            "value": [m.value for m in result.metrics], "n": [m.n for m in result.metrics]},
            {"run_id": "VARCHAR", "node": "VARCHAR", "template_hash": "VARCHAR", "field": "VARCHAR",
             "metric": "VARCHAR", "value": "DOUBLE", "n": "INTEGER"})
        answer = wh.json_object_sql([(f, f"o.{wh.quote(f)}") for f in fields])
        wh.execute(
            f"INSERT INTO {wh.state_table('eval_answers')} SELECT ?, ?, ?, i.eval_row, o._llmt_request_key, "
            f"o._llmt_status, {answer}, i._expected FROM {inputs} i LEFT JOIN {output} o ON o.eval_row = i.eval_row",
            [run_id, result.node, result.template_hash])


# -- the labelled examples and the thresholds ---------------------------------------------------


def _read_examples(
    project: Project, path: Path, spec: LlmSpec, kinds: dict[str, str | None]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(input values, labels) per example; labels hold only the fields labelled for that row."""
    where = rel_path(project, path)
    records: list[tuple[int, dict[str, Any]]] = []
    text = read_text(path)
    if path.suffix == ".csv":
        reader = csv.DictReader(text.splitlines(keepends=True))
        for raw in reader:
            records.append((reader.line_num, {k: (None if v == "" else v) for k, v in raw.items()}))
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    item = json.loads(line)
                except ValueError as exc:
                    raise ConfigError(f"not valid JSON: {exc}", where=f"{where}:{number}") from None
                if not isinstance(item, dict):
                    raise ConfigError("each line must be a JSON object", where=f"{where}:{number}")
                nested = item.pop("expected", None)
                records.append((number, {**item, **{f"expected.{k}": v for k, v in (nested or {}).items()}}))
    if not records:
        raise ConfigError("the labelled file has no examples", where=where)
    examples = []
    for number, record in records:
        labels: dict[str, Any] = {}
        for key, value in record.items():
            if not key.startswith("expected.") or (value is None and path.suffix == ".csv"):
                continue
            name = key.removeprefix("expected.")
            kind = kinds.get(name, "missing")
            if kind == "missing" or kind is None:
                why = "is not a field of" if kind == "missing" else "cannot be scored (an object or mixed type) in"
                raise ConfigError(f"`{key}`: `{name}` {why} schema `{spec.schema_name}`."
                                  f"{did_you_mean(name, kinds)}", where=f"{where}:{number}",
                                  hint=f"Fields: {', '.join(f for f, k in kinds.items() if k)}.")
            try:
                labels[name] = parse_label(kind, value)
            except ValueError as exc:
                raise ConfigError(f"`{key}`: {exc}", where=f"{where}:{number}") from None
        missing = [c for c in spec.columns if c not in record]
        if missing:
            raise ConfigError(f"the examples lack the prompt's input column(s) {', '.join(missing)}",
                              where=f"{where}:{number}",
                              hint=f"Prompt `{spec.prompt.name}` uses: {', '.join(spec.columns)}.")
        examples.append(({c: record[c] for c in spec.columns}, labels))
    if not any(labels for _, labels in examples):
        raise ConfigError("no example has a label", where=where,
                          hint="Add `expected.<field>` columns, e.g. expected.sentiment.")
    return examples


def _thresholds(
    project: Project, node: Node, kinds: dict[str, str | None]
) -> dict[str, list[tuple[str, str, float]]]:
    """field -> [(metric, min|max, limit)] from the model's `evals:` in properties."""
    out: dict[str, list[tuple[str, str, float]]] = {}
    for path, parsed in project.properties:
        for i, model in enumerate(parsed.models):
            if model.name != node.name:
                continue
            for name, limits in model.evals.items():
                line = line_of(path, ["models", i, "evals", name])
                where = f"{rel_path(project, path)}:{line}" if line else rel_path(project, path)
                kind = kinds.get(name)
                if kind is None:
                    raise ConfigError(f"`evals`: `{name}` is not a field that can be scored."
                                      f"{did_you_mean(name, kinds)}", where=where,
                                      hint=f"Fields: {', '.join(f for f, k in kinds.items() if k)}.")
                if not isinstance(limits, dict):
                    raise ConfigError(f"`evals.{name}` must map thresholds to numbers", where=where,
                                      hint=f"Example: {name}: {{min_accuracy: 0.8}}.")
                usable = [k for k, (metric, _) in THRESHOLDS.items() if metric in METRICS[kind]]
                for key, limit in limits.items():
                    if key not in usable:
                        raise ConfigError(f"`evals.{name}`: `{key}` does not apply to `{name}` ({kind})."
                                          f"{did_you_mean(str(key), usable)}", where=where,
                                          hint=f"Thresholds for `{name}`: {', '.join(usable)}.")
                    if isinstance(limit, bool) or not isinstance(limit, int | float):
                        raise ConfigError(f"`evals.{name}.{key}` must be a number, got {limit!r}", where=where)
                    metric, direction = THRESHOLDS[key]
                    out.setdefault(name, []).append((metric, direction, float(limit)))
    return out
