"""Test results as a table on stdout, with a sample of the failing rows of each test that did
not pass, a JSON document (--output json), and the lines written while tests run."""

from __future__ import annotations

from typing import Any

from llmt.console import Console
from llmt.testing.evals import EvalResult
from llmt.testing.result import TestResult

MARKS = {"pass": "PASS ", "warn": "WARN ", "fail": "FAIL ", "error": "ERROR", "skipped": "SKIP "}
CELL = 60  # characters of a sample value shown


def result_line(result: TestResult) -> str:
    text = f"{MARKS[result.status]} {result.name}"
    return text + (f": {result.message}" if result.message and result.status != "pass" else "")


def counts(results: list[TestResult]) -> dict[str, int]:
    return {status: sum(r.status == status for r in results) for status in MARKS}


def print_results(console: Console, results: list[TestResult], seconds: float) -> None:
    if not results:
        console.info("No tests selected.")
        return
    console.table("Tests", ["test", "on", "kind", "status", "failures"],
                  [[r.name, r.attached, r.kind, r.status, r.failures] for r in results])
    for r in results:
        if r.status in ("pass", "skipped"):
            continue
        console.text(f"\n{MARKS[r.status].strip()} {r.name} ({r.where})\n  {r.message}")
        if r.sample and r.kind == "unit":
            console.table("  - expected, not in the output / + in the output, not expected", r.columns,
                          [[_cell(v) for v in row] for row in r.sample])
        elif r.sample:
            shown = f"first {len(r.sample)} of {r.failures}" if r.failures > len(r.sample) else f"{len(r.sample)}"
            console.table(f"  failing rows ({shown})", r.columns, [[_cell(v) for v in row] for row in r.sample])
    n = counts(results)
    console.info(f"Done in {seconds:.1f}s: {n['pass']} passed, {n['warn']} warned, {n['fail']} failed, "
                 f"{n['error']} errored, {n['skipped']} skipped.")


def _cell(value: Any) -> Any:
    """A sample value as shown: NULL, quoted when blank or padded (so `'  '` differs from NULL), shortened."""
    if value is None:
        return "NULL"
    if isinstance(value, int | float):
        return value
    text = str(value)
    if isinstance(value, str) and (not text.strip() or text != text.strip()):
        text = repr(text)
    text = text.replace("\n", "\\n")
    return text if len(text) <= CELL else text[: CELL - 3] + "..."


def print_evals(console: Console, results: list[EvalResult]) -> None:
    if console.json_output:
        console.json({"evals": [r.as_dict() for r in results]})
        return
    for r in results:
        versus = f" vs previous version {r.previous_hash[:12]}" if r.previous_hash else " (no earlier prompt version)"
        console.text(f"\n{r.node}: prompt version {r.template_hash[:12]}{versus}; {r.answered} of {r.rows} "
                     f"examples answered ({r.labels})")
        if r.labels_changed:
            console.text("  note: the labelled examples changed since the previous version was scored")
        console.table("", ["field", "metric", "value", "previous", "change", "threshold", "status"], [
            [m.field, m.metric, _num(m.value), _num(m.previous),
             "" if m.value is None or m.previous is None else f"{m.value - m.previous:+.3f}", m.threshold,
             {True: "pass", False: "FAIL", None: ""}[m.passed]]
            for m in r.metrics
        ])
        if r.mismatches:
            console.table("  some wrong answers", ["row", "field", "expected", "answer"],
                          [[m["row"], m["field"], _cell(m["expected"]), _cell(m["answer"])] for m in r.mismatches])
    failed = [f"{r.node}.{m.field} {m.metric}" for r in results for m in r.metrics if m.passed is False]
    console.info(f"{len(results)} model(s) evaluated; " + (f"below threshold: {', '.join(failed)}." if failed
                                                           else "every threshold met."))


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"
