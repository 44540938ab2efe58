"""`llmt build` (run and test in DAG order; a failing test skips what is downstream of it),
run_results.json entries and JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from tests.conftest import Project

MakeProject = Callable[[dict[str, str]], Project]

ONLY_PHONES = """
    models:
      - name: stg_reviews
        columns:
          - name: product
            tests: [{accepted_values: {values: [Phone], severity: %s}}]
    """

FAILING_UNIT_TEST = """
    unit_tests:
      - name: insights_prompt_names_the_product
        model: insights
        prompt:
          - given_row: {product: Phone, review_text: x}
            contains: ["Produkt: Phone"]
    """


def build(project: Project, *args: str) -> tuple[int, dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    result = project.llmt("build", "--output", "json", *args)
    assert result.code in (0, 1), result.err
    data = json.loads(result.out)
    return result.code, {n["name"]: n for n in data["nodes"]}, {t["name"]: t for t in data["tests"]}


def test_a_failing_test_skips_the_nodes_downstream(make_project: MakeProject) -> None:
    project = make_project({"models/props.yml": ONLY_PHONES % "error"})
    code, nodes, tests = build(project)
    assert code == 1
    assert nodes["stg_reviews"]["status"] == "success"
    assert tests["accepted_values_stg_reviews_product"]["status"] == "fail"
    assert nodes["insights"]["status"] == "skipped"
    assert nodes["insights"]["message"] == (
        "skipped: upstream `stg_reviews` failed test `accepted_values_stg_reviews_product`")
    assert tests["schema_not_null_insights_score"]["status"] == "skipped"
    assert project.query("select count(*) from _llmt.attempts") == [(0,)]  # nothing was sent
    text = project.llmt("build")
    assert "skip  insights (upstream stg_reviews failed test accepted_values_stg_reviews_product)" in text.err


def test_a_warning_does_not_stop_the_build(make_project: MakeProject) -> None:
    project = make_project({"models/props.yml": ONLY_PHONES % "warn"})
    code, nodes, tests = build(project)
    assert code == 0
    assert tests["accepted_values_stg_reviews_product"]["status"] == "warn"
    assert nodes["insights"]["status"] == "success"
    assert tests["schema_not_null_insights_score"]["status"] == "pass"  # tested right after it was built


def test_a_failing_unit_test_skips_its_model(make_project: MakeProject) -> None:
    project = make_project({"models/unit.yml": FAILING_UNIT_TEST})
    code, nodes, tests = build(project)
    assert code == 1
    assert nodes["stg_reviews"]["status"] == "success"
    assert tests["insights_prompt_names_the_product"]["status"] == "fail"
    assert nodes["insights"]["message"] == "skipped: unit test `insights_prompt_names_the_product` failed"


def test_a_failing_source_test_skips_the_models_reading_it(make_project: MakeProject) -> None:
    project = make_project({"models/sources.yml": "sources: [{name: raw, tables: [{name: reviews, "
                                                  "file: data/reviews.csv, tests: [{row_count: {min: 100}}]}]}]\n"})
    code, nodes, tests = build(project)
    assert code == 1 and tests["row_count_source_raw_reviews"]["status"] == "fail"
    assert nodes["stg_reviews"]["message"] == "skipped: a test of source `raw.reviews` failed"
    assert nodes["insights"]["message"] == "skipped: upstream `stg_reviews` was skipped"


def test_run_results_and_junit_xml(make_project: MakeProject) -> None:
    project = make_project({"models/props.yml": ONLY_PHONES % "error"})
    project.llmt("run")
    junit = project.root / "out" / "junit.xml"
    result = project.llmt("test", "-s", "stg_reviews", "--junit-xml", str(junit))
    assert result.code == 1
    run_results = json.loads((project.root / "target" / "run_results.json").read_text())
    assert run_results["metadata"]["command"] == "test"
    entry = next(r for r in run_results["results"] if r["unique_id"] == "test.accepted_values_stg_reviews_product")
    assert entry["status"] == "fail" and entry["failures"] == 1
    assert entry["sample"] == [{"value_field": "Cable", "n_records": 2}]

    suite = ET.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("1", "1", "0")
    case = suite.find("./testsuite/testcase")
    assert case is not None
    assert (case.get("classname"), case.get("name")) == ("stg_reviews", "accepted_values_stg_reviews_product")
    assert (case.get("file"), case.get("line")) == ("models/props.yml", "5")
    failure = case.find("failure")
    assert failure is not None and failure.get("message") == '1 value(s) of "product" are not in [Phone]'
    assert failure.text is not None and "Cable | 2" in failure.text


def test_build_writes_nodes_and_tests_to_run_results(make_project: MakeProject) -> None:
    project = make_project({"models/props.yml": ONLY_PHONES % "warn"})
    assert project.llmt("build").code == 0
    run_results = json.loads((project.root / "target" / "run_results.json").read_text())
    assert run_results["metadata"]["command"] == "build"
    ids = [r["unique_id"] for r in run_results["results"]]
    assert ids[:2] == ["model.stg_reviews", "model.insights"]
    assert "test.accepted_values_stg_reviews_product" in ids
