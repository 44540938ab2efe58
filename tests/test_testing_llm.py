"""LLM-aware tests (max_error_rate, all_answered, max_cost_usd) and the tests derived from an
LLM model's output schema (answered rows only; switchable)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Project

MakeProject = Callable[[dict[str, str]], Project]

LLM_TESTS = """
    models:
      - name: insights
        tests:
          - max_error_rate: 0.5
          - all_answered
    """


def results(project: Project, *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
    result = project.llmt("test", "--output", "json", *args)
    assert result.code in (0, 1), result.err
    return result.code, {t["name"]: t for t in json.loads(result.out)["tests"]}


def with_failures(project: Project, failures: str) -> Project:
    yml = (project.root / "project.yml").read_text()
    project.write("project.yml", yml.replace("{type: fake}", f"{{type: fake, failures: {failures}}}"))
    return project


def test_llm_tests_pass_when_everything_is_answered(make_project: MakeProject) -> None:
    project = make_project({"models/insights.yml": LLM_TESTS})
    project.llmt("run")
    code, tests = results(project, "-s", "insights")
    assert code == 0
    assert tests["max_error_rate_insights"]["status"] == "pass"
    assert tests["all_answered_insights"]["status"] == "pass"


def test_llm_tests_fail_on_failed_rows(make_project: MakeProject) -> None:
    project = with_failures(make_project({"models/insights.yml": LLM_TESTS}), "{refused: 1.0}")
    assert project.llmt("run").code == 1  # every row failed: above max_failed_share
    code, tests = results(project, "-s", "insights")
    assert code == 1
    rate = tests["max_error_rate_insights"]
    assert rate["status"] == "fail"
    assert rate["message"] == "error rate 100.0% (4 of 4 rows failed) is above 50.0%"
    answered = tests["all_answered_insights"]
    assert answered["failures"] == 4 and "pending or failed" in answered["message"]
    assert answered["sample"][0] == {"review_id": 1, "_llmt_status": "failed"}


def test_max_error_rate_counts_rows_whose_last_attempt_failed(make_project: MakeProject) -> None:
    project = make_project({"models/insights.yml": """
        models:
          - name: insights
            tests: [{max_error_rate: {max: 0.3}}, {max_error_rate: {name: strict_rate, max: 0.2}}]
        """})
    project.llmt("run")
    csv = (project.root / "data/reviews.csv").read_text()
    project.write("data/reviews.csv", csv.replace("Battery died", "Battery died after a day"))
    with_failures(project, "{refused: 1.0}").llmt("run")  # only the edited row is asked again: refused
    assert project.query("select review_id, _llmt_status from main.insights where _llmt_status <> 'ok'") == [
        (2, "stale")  # its previous answer is still shown, but its last attempt failed
    ]
    code, tests = results(project, "-s", "insights")
    assert code == 1
    assert tests["max_error_rate_insights"]["status"] == "pass"  # 1 of 4 = 25% <= 30%
    strict = tests["strict_rate"]
    assert strict["status"] == "fail" and strict["message"] == "error rate 25.0% (1 of 4 rows failed) is above 20.0%"


def test_llm_tests_on_a_sql_model_are_config_errors(make_project: MakeProject) -> None:
    project = make_project({"models/insights.yml": "models: [{name: stg_reviews, tests: [all_answered]}]\n"})
    result = project.llmt("test")
    assert result.code == 2
    assert "`all_answered` applies to LLM and embedding models only, and `stg_reviews` is neither" in result.err
    assert "models/insights.yml:1" in result.err


def test_max_cost_usd(make_project: MakeProject) -> None:
    project = make_project({"models/insights.yml": """
        models:
          - name: insights
            tests: [{max_cost_usd: 1.0}, {max_cost_usd: {name: cheap, max: 0.000001}}]
        """})
    project.llmt("run")
    spent = project.query("select sum(cost_usd) from _llmt.attempts")[0][0]
    assert spent > 0.000001
    code, tests = results(project, "-s", "insights")
    assert code == 1
    assert tests["max_cost_usd_insights"]["status"] == "pass"
    assert tests["cheap"]["status"] == "fail"
    assert tests["cheap"]["message"] == f"the last run cost ${round(spent, 6):g}, more than $1e-06"
    project.llmt("run")  # a run that sends nothing costs nothing: only the latest run with attempts counts
    assert results(project, "-s", "insights")[1]["cheap"]["status"] == "fail"


def test_schema_tests_are_derived_from_the_output_schema(project: Project) -> None:
    project.llmt("run")
    code, tests = results(project, "-s", "insights")
    assert code == 0
    assert sorted(tests) == [
        "schema_accepted_range_insights_score", "schema_accepted_values_insights_sentiment",
        "schema_not_null_insights_issues", "schema_not_null_insights_score", "schema_not_null_insights_sentiment",
    ]  # competitor is optional (nullable): no not_null
    assert tests["schema_accepted_range_insights_score"]["where"] == "schemas/analysis.json ($.properties.score)"


def test_schema_tests_fail_on_answers_outside_the_schema_and_skip_unanswered_rows(project: Project) -> None:
    import duckdb

    project.llmt("run")
    with duckdb.connect(str(project.root / "demo.duckdb")) as conn:
        conn.execute("UPDATE main.insights SET score = 11, sentiment = 'furious' WHERE review_id = 1")
        conn.execute("UPDATE main.insights SET _llmt_status = 'pending', sentiment = NULL, score = 99 "
                     "WHERE review_id = 2")
    code, tests = results(project, "-s", "insights")
    assert code == 1
    score = tests["schema_accepted_range_insights_score"]
    assert (score["status"], score["failures"]) == ("fail", 1)  # the pending row's 99 is not looked at
    assert score["sample"][0]["review_id"] == 1 and "outside [1, 10]" in score["message"]
    sentiment = tests["schema_accepted_values_insights_sentiment"]
    assert sentiment["sample"] == [{"value_field": "furious", "n_records": 1}]
    assert tests["schema_not_null_insights_sentiment"]["status"] == "pass"  # NULL only on the pending row


@pytest.mark.parametrize(
    "files",
    [
        {"models/insights.yml": "models: [{name: insights, config: {schema_tests: false}}]\n"},
        {"project.yml": "name: demo\ntargets: {dev: {warehouse: {path: demo.duckdb}}}\n"
                        "models: {+schema_tests: false}\n"},
    ],
    ids=["model", "project"],
)
def test_schema_tests_can_be_switched_off(make_project: MakeProject, files: dict[str, str]) -> None:
    project = make_project(files)
    project.llmt("run")
    code, tests = results(project)
    assert code == 0 and not [name for name in tests if name.startswith("schema_")]


def test_schema_tests_switch_must_be_a_boolean(make_project: MakeProject) -> None:
    project = make_project({"models/insights.yml": "models: [{name: insights, config: {schema_tests: 'no'}}]\n"})
    result = project.llmt("test")
    assert result.code == 2 and "`schema_tests` must be true or false" in result.err
