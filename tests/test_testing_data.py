"""`llmt test`: generic tests (pass and fail for each kind), severity, thresholds, `where`,
`store_failures`, source tests, singular tests, and the errors for a mistyped test."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Project

MakeProject = Callable[[dict[str, str]], Project]

ITEMS = {
    "models/items.sql": """
        select * from (values
            (1, 'a', 5, 1, 'x'),
            (2, 'b', 7, 2, 'y'),
            (3, NULL, 12, 9, 'x')
        ) as t(id, label, score, parent_id, kind)
        """,
    "models/parents.sql": "select * from (values (1), (2)) as t(id)\n",
}


def results(project: Project, *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
    result = project.llmt("test", "--output", "json", *args)
    assert result.code in (0, 1), result.err
    return result.code, {t["name"]: t for t in json.loads(result.out)["tests"]}


@pytest.fixture
def items(make_project: MakeProject) -> Project:
    project = make_project({**ITEMS, "models/items.yml": """
        models:
          - name: items
            tests:
              - expression_is_true: {name: score_below_20, expression: "score < 20"}
              - row_count: {name: at_most_two_rows, min: 1, max: 2}
              - row_count: {name: at_least_three_rows, min: 3}
            columns:
              - name: id
                tests:
                  - not_null
                  - unique
                  - relationships: {name: id_has_parent, to: ref('parents'), field: id, where: "id < 3"}
              - name: label
                tests:
                  - not_null
                  - not_null: {name: label_warns, severity: warn}
                  - not_null: {name: label_filtered, where: "id < 3"}
                  - accepted_values: {values: [a]}
              - name: kind
                tests:
                  - unique
                  - unique: {name: kind_tolerated, config: {error_if: ">1"}}
                  - accepted_values: {values: [x, y]}
              - name: score
                tests:
                  - accepted_range: {min_value: 1, max_value: 10, store_failures: true}
                  - accepted_range: {name: score_positive, min_value: 0}
                  - expression_is_true: {name: score_above_6, expression: "> 6"}
              - name: parent_id
                data_tests:
                  - relationships: {to: ref('parents'), field: id}
        """})
    assert project.llmt("run").code == 0
    return project


CASES = [  # (test, status, failures, words of the message)
    ("not_null_items_id", "pass", 0, ""),
    ("not_null_items_label", "fail", 1, '1 row(s) where "label" is NULL'),
    ("label_warns", "warn", 1, "is NULL"),
    ("label_filtered", "pass", 0, ""),
    ("unique_items_id", "pass", 0, ""),
    ("unique_items_kind", "fail", 1, '1 value(s) of "kind" appear more than once'),
    ("kind_tolerated", "warn", 1, "more than once"),
    ("accepted_values_items_kind", "pass", 0, ""),
    ("accepted_values_items_label", "fail", 1, '1 value(s) of "label" are not in [a]'),
    ("id_has_parent", "pass", 0, ""),
    ("relationships_items_parent_id", "fail", 1, 'have no match in "main"."parents".id'),
    ("accepted_range_items_score", "fail", 1, "outside [1, 10]"),
    ("score_positive", "pass", 0, ""),
    ("score_below_20", "pass", 0, ""),
    ("score_above_6", "fail", 1, '`"score" > 6` is not true'),
    ("at_least_three_rows", "pass", 0, ""),
    ("at_most_two_rows", "fail", 1, "the table has 3 rows; expected [1, 2]"),
]


def test_generic_tests_pass_and_fail(items: Project) -> None:
    code, tests = results(items, "-s", "items")
    assert code == 1  # some error-severity tests fail
    assert set(tests) == {name for name, *_ in CASES}
    for name, status, failures, message in CASES:
        test = tests[name]
        assert (test["status"], test["failures"]) == (status, failures), test
        assert message in test["message"], test
        assert test["where"].startswith("models/items.yml:"), test


def test_failing_rows_are_sampled_and_stored(items: Project) -> None:
    _, tests = results(items)
    assert tests["not_null_items_label"]["sample"] == [
        {"id": 3, "label": None, "score": 12, "parent_id": 9, "kind": "x"}
    ]
    assert tests["accepted_values_items_label"]["sample"] == [{"value_field": "b", "n_records": 1}]
    stored = tests["accepted_range_items_score"]
    assert stored["stored_failures"] == "main_test_failures.accepted_range_items_score"
    assert "all failing rows are in main_test_failures.accepted_range_items_score" in stored["message"]
    assert items.query("select id, score from main_test_failures.accepted_range_items_score") == [(3, 12)]


def test_text_output_shows_the_failing_rows_and_where(items: Project) -> None:
    result = items.llmt("test", "-s", "items")
    assert result.code == 1
    assert "FAIL not_null_items_label (models/items.yml:" in result.out
    assert "failing rows (1)" in result.out and "label" in result.out
    assert "WARN label_warns" in result.out
    assert "failed" in result.err and "warned" in result.err


def test_only_warnings_exit_zero(make_project: MakeProject) -> None:
    project = make_project({**ITEMS, "models/items.yml": """
        models:
          - name: items
            columns:
              - name: label
                tests: [{not_null: {severity: warn}}]
        """})
    project.llmt("run")
    code, tests = results(project)
    assert code == 0 and tests["not_null_items_label"]["status"] == "warn"


def test_a_model_not_built_yet_is_an_error_naming_the_command(make_project: MakeProject) -> None:
    project = make_project({**ITEMS, "models/items.yml": "models: [{name: items, tests: [{row_count: {min: 1}}]}]\n"})
    code, tests = results(project)
    assert code == 1
    test = tests["row_count_items"]
    assert test["status"] == "error" and "`items` has not been built yet" in test["message"]
    assert "llmt run -s items" in test["message"]


def test_source_tests(make_project: MakeProject) -> None:
    project = make_project({"models/sources.yml": """
        sources:
          - name: raw
            tables:
              - name: reviews
                file: data/reviews.csv
                columns:
                  - name: review_id
                    tests: [unique, not_null]
                  - name: product
                    tests: [{accepted_values: {values: [Phone]}}]
        """})
    code, tests = results(project)
    assert code == 1
    assert tests["unique_source_raw_reviews_review_id"]["status"] == "pass"
    product = tests["accepted_values_source_raw_reviews_product"]
    assert product["status"] == "fail" and product["sample"] == [{"value_field": "Cable", "n_records": 2}]
    assert product["attached"] == "source:raw.reviews"
    # a selection of models leaves the tests of sources out
    _, selected = results(project, "-s", "stg_reviews")
    assert not any(name.startswith("accepted_values_source") for name in selected)


def test_singular_tests(make_project: MakeProject) -> None:
    project = make_project({
        "tests/no_cables.sql": "select * from {{ ref('stg_reviews') }} where product = 'Cable'\n",
        "tests/no_tablets.sql": "select * from {{ ref('stg_reviews') }} where product = 'Tablet'\n",
        "tests/few_cables.sql": "{{ config(severity='warn') }}\n"
                                "select * from {{ ref('stg_reviews') }} where product = 'Cable'\n",
    })
    project.llmt("run")
    code, tests = results(project)
    assert code == 1
    assert (tests["no_cables"]["status"], tests["no_cables"]["failures"]) == ("fail", 2)
    assert tests["no_cables"]["where"] == "tests/no_cables.sql"
    assert tests["no_tablets"]["status"] == "pass"
    assert tests["few_cables"]["status"] == "warn"
    # selected with the models they read
    _, selected = results(project, "-s", "insights")
    assert "no_cables" not in selected


def test_select_a_test_by_name(items: Project) -> None:
    code, tests = results(items, "-s", "unique_items_id")
    assert code == 0 and list(tests) == ["unique_items_id"]
    _, rest = results(items, "-s", "items", "--exclude", "not_null_items_label")
    assert "not_null_items_label" not in rest and "unique_items_id" in rest


@pytest.mark.parametrize(
    ("tests_yaml", "message"),
    [
    ("[uniqe]", "unknown test `uniqe`. Did you mean `unique`?"),
    ("[{accepted_values: {valuez: [a]}}]", "`accepted_values` has no argument `valuez`. Did you mean `values`?"),
    ("[{accepted_values: {quote: false}}]", "`accepted_values` needs `values`"),
    ("[{accepted_values: {values: a}}]", "`values` must be a non-empty list"),
    ("[{not_null: {severity: fatal}}]", "`severity` must be `error` or `warn`"),
    ("[{not_null: {warn_if: lots}}]", "`warn_if` must be a condition on the number of failing rows"),
    ("[{not_null: {config: {sevrity: warn}}}]", "unknown test config `sevrity`. Did you mean `severity`?"),
    ("[{row_count: {min: 1}}]", "`row_count` is a model-level test"),
    ("[{max_error_rate: 0.1}]", "`max_error_rate` is a model-level test"),
    ("[{relationships: {to: ref('parent'), field: id}}]", "Did you mean `parents`?"),
    ("[{unique: {}, not_null: {}}]", "cannot read this test"),
    ],
)
def test_test_mistakes_are_config_errors_at_their_line(make_project: MakeProject, tests_yaml: str,
                                                        message: str) -> None:
    project = make_project({**ITEMS, "models/items.yml": f"""
        models:
          - name: items
            columns:
              - name: id
                tests: {tests_yaml}
        """})
    result = project.llmt("test")
    assert result.code == 2, result.err
    assert message in result.err
    assert "models/items.yml:5" in result.err
    assert "Traceback" not in result.err


def test_model_level_tests_need_a_column_name(make_project: MakeProject) -> None:
    project = make_project({**ITEMS, "models/items.yml": "models: [{name: items, tests: [not_null]}]\n"})
    result = project.llmt("test")
    assert result.code == 2 and "`not_null` tests a column" in result.err and "column_name" in result.err
    project.write("models/items.yml", "models: [{name: items, tests: [{not_null: {column_name: label}}]}]\n")
    project.llmt("run")
    code, tests = results(project)
    assert code == 1 and tests["not_null_items"]["failures"] == 1


def test_tags_in_properties_select_models_and_their_tests(make_project: MakeProject) -> None:
    project = make_project({**ITEMS, "models/items.yml": """
        models:
          - name: items
            tags: [nightly]
            description: Items for the tests.
            columns:
              - {name: id, description: The id., tests: [unique]}
        """})
    listed = json.loads(project.llmt("ls", "-s", "tag:nightly", "--output", "json").out)
    assert [n["name"] for n in listed] == ["items"] and listed[0]["tags"] == ["nightly"]
    project.llmt("run")
    code, tests = results(project, "-s", "tag:nightly")
    assert code == 0 and list(tests) == ["unique_items_id"]


def test_a_broken_singular_test_names_its_file_and_line(make_project: MakeProject) -> None:
    project = make_project({"tests/broken.sql": "select *\nfrom {{ ref('stg_review') }}\n"})
    result = project.llmt("test")
    assert result.code == 2
    assert "tests/broken.sql:2: ref('stg_review') points at no model. Did you mean `stg_reviews`?" in result.err
