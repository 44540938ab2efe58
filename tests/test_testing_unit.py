"""Unit tests: given rows, pinned LLM answers, expected rows and prompt assertions, offline."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.conftest import Project

MakeProject = Callable[[dict[str, str]], Project]

STG_TEST = """
    unit_tests:
      - name: stg_keeps_every_review
        model: stg_reviews
        given:
          - input: source('raw', 'reviews')
            rows:
              - {review_id: 1, product: Phone, review_text: ok}
              - {review_id: 2, product: Cable, review_text: bad}
        expect:
          rows:
            - {review_id: 1, product: Phone}
            - {review_id: 2, product: %s}
    """

INSIGHTS_TEST = """
    unit_tests:
      - name: insights_types_pinned_answers
        model: insights
        given:
          - input: ref('stg_reviews')
            rows:
              - {review_id: 10, product: Phone, review_text: Battery died}
              - {review_id: 11, product: Cable, review_text: Works}
        llm_answers:
          - given: {review_id: 10}
            answer: {sentiment: negative, score: 2, issues: [battery]}
          - given: {product: Cable}
            answer: {sentiment: positive, score: 9, issues: [], competitor: Anker}
        expect:
          rows:
            - {review_id: 10, sentiment: negative, score: 2, issues: [battery], competitor: null, _llmt_status: ok}
            - {review_id: 11, sentiment: %s, score: 9, issues: [], competitor: Anker, _llmt_status: ok}
    """


def unit_results(project: Project, *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
    result = project.llmt("test", "--output", "json", *args)
    assert result.code in (0, 1), result.err
    return result.code, {t["name"]: t for t in json.loads(result.out)["tests"] if t["kind"] == "unit"}


def test_sql_unit_test_passes_and_fails_with_a_diff(make_project: MakeProject) -> None:
    project = make_project({"models/unit.yml": STG_TEST % "Cable"})
    code, tests = unit_results(project, "-s", "stg_keeps_every_review")
    assert code == 0 and tests["stg_keeps_every_review"]["status"] == "pass"
    assert not (project.root / "demo.duckdb").exists()  # offline: the warehouse is never opened

    project.write("models/unit.yml", STG_TEST % "Charger")
    code, tests = unit_results(project, "-s", "stg_keeps_every_review")
    test = tests["stg_keeps_every_review"]
    assert code == 1 and test["status"] == "fail"
    assert test["message"].startswith("1 expected row(s) missing, 1 unexpected row(s) in the output of `stg_reviews`")
    assert test["sample"] == [{"diff": "-", "review_id": 2, "product": "Charger"},
                              {"diff": "+", "review_id": 2, "product": "Cable"}]
    assert test["where"] == "models/unit.yml:2"
    text = project.llmt("test", "-s", "stg_keeps_every_review")
    assert "- expected, not in the output / + in the output, not expected" in text.out


def test_rows_as_csv_and_a_downstream_model(make_project: MakeProject) -> None:
    project = make_project({
        "models/per_product.sql": "select product, count(*) as n, max(score) as best from {{ ref('insights') }} "
                                  "where _llmt_status = 'ok' group by product\n",
        "models/unit.yml": """
            unit_tests:
              - name: counts_answered_rows
                model: per_product
                given:
                  - input: ref('insights')
                    format: csv
                    rows: |
                      product,score,_llmt_status
                      Phone,3,ok
                      Phone,9,ok
                      Cable,,failed
                expect:
                  format: csv
                  rows: |
                    product,n,best
                    Phone,2,9
            """,
    })
    code, tests = unit_results(project, "-s", "counts_answered_rows")
    assert code == 0 and tests["counts_answered_rows"]["status"] == "pass", tests


def test_llm_unit_test_runs_the_pipeline_with_pinned_answers(make_project: MakeProject) -> None:
    project = make_project({"models/unit.yml": INSIGHTS_TEST % "positive"})
    code, tests = unit_results(project, "-s", "insights_types_pinned_answers")
    assert code == 0, tests
    assert not (project.root / "target" / "batches").exists()  # scratch files never land in target/

    project.write("models/unit.yml", INSIGHTS_TEST % "neutral")
    code, tests = unit_results(project, "-s", "insights_types_pinned_answers")
    test = tests["insights_types_pinned_answers"]
    assert code == 1 and test["status"] == "fail" and test["failures"] == 2
    assert [r["diff"] for r in test["sample"]] == ["-", "+"]
    assert test["sample"][1]["sentiment"] == "positive"


def test_every_row_the_select_returns_needs_one_pinned_answer(make_project: MakeProject) -> None:
    unpinned = INSIGHTS_TEST.replace("given: {product: Cable}", "given: {product: Tablet}") % "positive"
    project = make_project({"models/unit.yml": unpinned})
    code, tests = unit_results(project, "-s", "insights_types_pinned_answers")
    test = tests["insights_types_pinned_answers"]
    assert code == 1 and test["status"] == "error"
    assert "the input row review_id=11 of `insights` has no pinned answer" in test["message"]

    project.write("models/unit.yml", INSIGHTS_TEST.replace("given: {product: Cable}", "given: {produkt: Cable}")
                  % "positive")
    _, tests = unit_results(project, "-s", "insights_types_pinned_answers")
    message = tests["insights_types_pinned_answers"]["message"]
    assert "llm_answers[1].given uses `produkt`" in message and "Did you mean `product`?" in message


def test_pinned_answers_must_fit_the_schema(make_project: MakeProject) -> None:
    project = make_project({"models/unit.yml": INSIGHTS_TEST.replace("score: 2, issues", "score: 20, issues")
                            % "positive"})
    _, tests = unit_results(project, "-s", "insights_types_pinned_answers")
    test = tests["insights_types_pinned_answers"]
    assert test["status"] == "error"
    assert "llm_answers[0].answer does not fit schema `analysis`: score" in test["message"]
    assert test["message"].startswith("models/unit.yml:11: ")  # the line of that answer


PROMPT_TEST = """
    unit_tests:
      - name: prompt_carries_the_review
        model: insights
        prompt:
          - given_row: {product: Phone, review_text: Battery died}
            contains: ["Product: Phone", "Review: Battery died", "You analyse reviews."]
            not_contains: ["{{"]
    """


def test_prompt_assertions(make_project: MakeProject) -> None:
    project = make_project({"models/unit.yml": PROMPT_TEST})
    code, tests = unit_results(project, "-s", "prompt_carries_the_review")
    assert code == 0 and tests["prompt_carries_the_review"]["status"] == "pass"

    # a prompt edit that drops a field is caught
    project.write("prompts/analyse.md", "---\nsystem: You analyse reviews.\n---\nReview: {{ review_text }}\n")
    code, tests = unit_results(project, "-s", "prompt_carries_the_review")
    test = tests["prompt_carries_the_review"]
    assert code == 1 and test["status"] == "fail"
    assert test["message"] == "prompt[0]: the rendered prompt does not contain 'Product: Phone'"

    # a new variable the assertion does not give is named
    project.write("prompts/analyse.md", "---\nsystem: You analyse reviews.\n---\n{{ product }} {{ rating }} "
                                        "{{ review_text }} {{ '{{' }}\n")
    project.write("models/insights.sql", "{{ config(materialized='llm', prompt='analyse', output_schema='analysis', "
                                         "unique_key='review_id') }}\nselect review_id, product, review_text, "
                                         "1 as rating from {{ ref('stg_reviews') }}\n")
    _, tests = unit_results(project, "-s", "prompt_carries_the_review")
    message = tests["prompt_carries_the_review"]["message"]
    assert "prompt `analyse` uses rating, which `given_row` does not give" in message


def test_not_contains(make_project: MakeProject) -> None:
    project = make_project({"models/unit.yml": PROMPT_TEST.replace('not_contains: ["{{"]',
                                                                   'not_contains: ["Battery"]')})
    _, tests = unit_results(project, "-s", "prompt_carries_the_review")
    assert tests["prompt_carries_the_review"]["message"] == "prompt[0]: the rendered prompt contains 'Battery'"


def test_inputs_must_match_what_the_model_reads(make_project: MakeProject) -> None:
    project = make_project({"models/unit.yml": """
        unit_tests:
          - name: gives_the_wrong_input
            model: stg_reviews
            given:
              - input: ref('insights')
                rows: [{review_id: 1}]
            expect: {rows: [{review_id: 1}]}
        """})
    _, tests = unit_results(project, "-s", "gives_the_wrong_input")
    message = tests["gives_the_wrong_input"]["message"]
    assert "`stg_reviews` reads source('raw', 'reviews'), which the test does not give" in message
    assert "models/unit.yml:2" in message


def test_incremental_model_with_this_and_overrides(make_project: MakeProject) -> None:
    project = make_project({
        "models/recent.sql": """
            {{ config(materialized='incremental', unique_key='review_id') }}
            select review_id, product, {{ var('label') }} as label from {{ ref('stg_reviews') }}
            {% if is_incremental() %}where review_id > (select max(review_id) from {{ this }}){% endif %}
            """,
        "project.yml": "name: demo\ntargets: {dev: {warehouse: {path: demo.duckdb}}}\nvars: {label: \"'v'\"}\n",
        "models/unit.yml": """
            unit_tests:
              - name: only_new_rows
                model: recent
                overrides: {macros: {is_incremental: true}, vars: {label: "'new'"}}
                given:
                  - input: ref('stg_reviews')
                    rows: [{review_id: 1, product: a}, {review_id: 5, product: b}]
                  - input: this
                    rows: [{review_id: 3, product: x, label: old}]
                expect:
                  rows: [{review_id: 5, label: new}]
            """,
    })
    code, tests = unit_results(project, "-s", "only_new_rows")
    assert code == 0, tests


def test_unit_test_mistakes_are_config_errors(make_project: MakeProject) -> None:
    project = make_project({"models/unit.yml": "unit_tests: [{name: t, model: stg_reviews, givn: []}]\n"})
    result = project.llmt("test")
    assert result.code == 2 and "unknown key `unit_tests.0.givn`. Did you mean `given`?" in result.err
    project.write("models/unit.yml", "unit_tests: [{name: t, model: stg_review, expect: {rows: []}}]\n")
    result = project.llmt("test")
    assert result.code == 2 and "unknown model `stg_review`. Did you mean `stg_reviews`?" in result.err
    project.write("models/unit.yml", "unit_tests: [{name: t, model: stg_reviews}]\n")
    assert "checks nothing" in project.llmt("test").err
    project.write("models/unit.yml", "unit_tests: [{name: t, model: stg_reviews, prompt: [{given_row: {}}]}]\n")
    assert "`llm_answers` and `prompt` apply to LLM models" in project.llmt("test").err
