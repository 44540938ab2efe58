"""`llmt test` and `llmt build`: choose the tests, run them (and, for build, the models in DAG
order, each model's unit tests before it and its data tests right after it), report the results.

Selection: `-s` selects models as in `llmt run` and with them their tests (a test that reads
several models is chosen when any of them is); a selector that is a test's name selects that
test. Tests on sources, and singular tests that read no model, run when nothing is selected."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmt.artifacts import run_args, write_run_results
from llmt.console import Console
from llmt.file_sources import load_file_sources
from llmt.pipeline.llm import LlmOptions
from llmt.project import Project
from llmt.runner import RunReport, new_run_id, open_warehouse, run
from llmt.scheduler import NodeHooks, NodeResult
from llmt.seeding import load_seeds
from llmt.testing.collect import DataTest, collect_tests
from llmt.testing.evals import EvalResult, run_evals
from llmt.testing.execute import run_data_test
from llmt.testing.junit import write_junit
from llmt.testing.report import print_evals, print_results, result_line
from llmt.testing.result import TestResult
from llmt.testing.unit import UnitTest, collect_unit_tests, run_unit_test
from llmt.warehouse.store import StateStore


@dataclass
class TestReport:
    __test__ = False  # not a pytest test class

    run_id: str
    results: list[TestResult] = field(default_factory=list)
    nodes: RunReport | None = None  # llmt build
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return any(r.blocking for r in self.results) or (self.nodes is not None and self.nodes.failed)


@dataclass
class Selection:
    names: list[str]  # selected models, in DAG order
    data: list[DataTest]
    unit: list[UnitTest]


def select_tests(project: Project, select: list[str], exclude: list[str], build: bool = False) -> Selection:
    data, unit = collect_tests(project), collect_unit_tests(project)
    test_names = {t.name for t in data} | {u.name for u in unit}

    def split(selectors: list[str]) -> tuple[list[str], set[str]]:
        words = [w for s in selectors for w in s.split()]
        named = {w for w in words if w in test_names and w not in project.nodes}
        return [w for w in words if w not in named], named

    models, named = split(select)
    skip_models, skip_named = split(exclude)
    names = project.graph.select(models, skip_models) if models or not select else []
    chosen = set(names)
    reach = chosen | {a for n in names for a in project.graph.ancestors(n)} if build else chosen
    seeded = {f"seed:{s}" for n in names for s in project.nodes[n].seeds} if build else set()  # build loads them

    def wanted(name: str, depends: tuple[str, ...], attached: str = "") -> bool:
        if name in skip_named:
            return False
        if name in named or attached in seeded:
            return True
        if not depends:
            return not select
        # build: every model the test reads is built here or upstream; test: any of them is selected
        return set(depends) <= reach and bool(chosen & set(depends)) if build else bool(chosen & set(depends))

    order = {n: i for i, n in enumerate(project.graph.order())}
    data = sorted((t for t in data if wanted(t.name, t.depends_on, t.attached)),
                  key=lambda t: max((order[d] for d in t.depends_on), default=-1))
    unit = sorted((u for u in unit if wanted(u.name, (u.node.name,))), key=lambda u: order[u.node.name])
    return Selection(names, data, unit)


def test_project(
    project: Project, select: list[str], exclude: list[str], console: Console,
    junit: Path | None = None, store_failures: bool = False,
) -> TestReport:
    started = time.monotonic()
    chosen = select_tests(project, select, exclude)
    report = TestReport(new_run_id())
    console.info(f"Running {len(chosen.unit)} unit test(s) and {len(chosen.data)} data test(s) "
                 f"on target `{project.target_name}`")
    for unit in chosen.unit:
        _add(report, run_unit_test(project, unit), console)
    if chosen.data:
        wh = open_warehouse(project, console)
        try:
            load_file_sources(wh, StateStore(wh), project, project.sources)  # tests read them as a run would
            for test in chosen.data:
                _add(report, run_data_test(wh, project, test, store_failures), console)
        finally:
            wh.close()
    _finish(project, report, console, junit, started, "test", run_args(project, store_failures=store_failures))
    return report


def build_project(
    project: Project, select: list[str], exclude: list[str], console: Console, options: LlmOptions,
    junit: Path | None = None, store_failures: bool = False,
) -> TestReport:
    """Run and test in DAG order; a failing error-severity test skips the nodes downstream of it."""
    started = time.monotonic()
    chosen = select_tests(project, select, exclude, build=True)
    position = {n: i for i, n in enumerate(chosen.names)}
    after: dict[str, list[DataTest]] = {}
    first: list[DataTest] = []  # tests on sources, or on models built before this build
    for test in chosen.data:
        built = [d for d in test.depends_on if d in position]
        (after.setdefault(max(built, key=position.__getitem__), []) if built else first).append(test)
    units: dict[str, list[UnitTest]] = {}
    for unit in chosen.unit:
        units.setdefault(unit.node.name, []).append(unit)
    report = TestReport(new_run_id())
    console.info(f"Building {len(chosen.names)} model(s) with {len(chosen.unit)} unit test(s) and "
                 f"{len(chosen.data)} data test(s) on target `{project.target_name}`")
    wh = open_warehouse(project, console)
    # the seeds the models read are loaded first (every seed when nothing is selected), then the files of file
    # sources: the tests of seeds and sources come before the models
    seeds = load_seeds(wh, project, sorted({s for n in chosen.names for s in project.nodes[n].seeds}) if select
                       else list(project.seeds), console, options.full_refresh)
    failed_seeds = {r.name for r in seeds if r.status == "error"}
    load_file_sources(wh, StateStore(wh), project, project.sources)
    done: set[str] = set()

    def data_tests(tests: list[DataTest]) -> list[TestResult]:
        return [_add(report, run_data_test(wh, project, t, store_failures), console) for t in tests]

    broken = {r.attached for r in data_tests(first) if r.blocking}  # `source:raw.reviews`, `seed:countries`

    def before(name: str) -> str | None:
        node = project.nodes[name]
        if failed := [s for s in node.seeds if s in failed_seeds]:
            return f"seed `{failed[0]}` failed to load"
        bad = [f"source `{s}.{t}`" for s, t in node.sources if f"source:{s}.{t}" in broken]
        bad += [f"seed `{s}`" for s in node.seeds if f"seed:{s}" in broken]
        if bad:
            return f"a test of {bad[0]} failed"
        results = [_add(report, run_unit_test(project, u), console) for u in units.get(name, [])]
        failed = [r.name for r in results if r.blocking]
        return f"unit test `{failed[0]}` failed" if failed else None

    def after_node(name: str, result: NodeResult) -> str | None:
        done.update(t.name for t in after.get(name, []))
        failed = [r.name for r in data_tests(after.get(name, [])) if r.blocking]
        return f"failed test `{failed[0]}`" if failed else None

    try:
        report.nodes = run(project, chosen.names, console, options, warehouse=wh, command="build",
                           hooks=NodeHooks(before, after_node))
    finally:
        wh.close()
    report.nodes.results[:0] = seeds
    ran = {r.name for r in report.results}
    for name, tests in after.items():
        for test in tests:
            if test.name not in done:
                _add(report, TestResult(test.name, test.kind, test.origin, test.attached, test.where, "skipped",
                                        test.config.severity, message=f"skipped: `{name}` was not built"), console)
    for unit in chosen.unit:
        if unit.name not in ran:
            _add(report, TestResult(unit.name, "unit", "unit", unit.node.name, unit.where, "skipped",
                                    message=f"skipped: `{unit.node.name}` was skipped"), console)
    report.run_id = report.nodes.run_id
    _finish(project, report, console, junit, started, "build",
            run_args(project, options, store_failures=store_failures))
    return report


def _add(report: TestReport, result: TestResult, console: Console) -> TestResult:
    report.results.append(result)
    console.info(result_line(result))
    return result


def _finish(project: Project, report: TestReport, console: Console, junit: Path | None, started: float,
            command: str, args: dict[str, Any]) -> None:
    report.seconds = time.monotonic() - started
    nodes = [r.as_dict() for r in report.nodes.results] if report.nodes else []
    write_run_results(project, report.run_id, [*nodes, *(r.as_dict() for r in report.results)], report.seconds,
                      command, args)
    if junit is not None:
        write_junit(junit, report.results, f"llmt {command}", report.seconds)
    if console.json_output:
        console.json({"run_id": report.run_id, "elapsed": round(report.seconds, 3), "nodes": nodes,
                      "tests": [r.as_dict() for r in report.results]})
        return
    print_results(console, report.results, report.seconds)
    if report.nodes is not None:
        status = [r.status for r in report.nodes.results]
        console.info(f"Models: {status.count('success')} ok, {status.count('warn')} warn, "
                     f"{status.count('error')} error(s), {status.count('skipped')} skipped.")


def eval_project(
    project: Project, select: list[str], exclude: list[str], console: Console, options: LlmOptions
) -> list[EvalResult]:
    """`llmt eval`: score the selected LLM models on their labelled examples and print the comparison."""
    results = run_evals(project, select, exclude, console, options)
    print_evals(console, results)
    return results
