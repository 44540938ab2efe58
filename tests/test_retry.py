"""`llmt retry`: the last command again, on what failed or was skipped in it (target/run_results.json)."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.conftest import TWO_TARGETS, Project

MakeProject = Callable[[dict[str, str]], Project]

BROKEN = {
    "models/numbers.sql": "{{ config(materialized='table') }}\n"
                          "select review_id, cast(review_text as integer) as n from {{ ref('stg_reviews') }}\n",
    "models/after_numbers.sql": "select count(*) as rows from {{ ref('numbers') }}\n",
}
FIXED = "{{ config(materialized='table') }}\nselect review_id, length(review_text) as n from {{ ref('stg_reviews') }}\n"


def results(project: Project) -> dict[str, str]:
    data = json.loads((project.root / "target" / "run_results.json").read_text())
    return {r["unique_id"]: r["status"] for r in data["results"]}


def test_retry_without_a_previous_run_says_so(project: Project) -> None:
    result = project.llmt("retry")
    assert result.code == 2 and "no previous run to retry" in result.err and "Run `llmt run`" in result.err


def test_retry_runs_only_what_failed_or_was_skipped(make_project: MakeProject) -> None:
    project = make_project(BROKEN)
    assert project.llmt("run").code == 1
    assert results(project) == {"model.stg_reviews": "success", "model.numbers": "error",
                                "model.after_numbers": "skipped", "model.insights": "success"}
    assert project.llmt("retry").code == 1  # still broken: the same failure
    assert results(project) == {"model.numbers": "error", "model.after_numbers": "skipped"}
    project.write("models/numbers.sql", FIXED)
    result = project.llmt("retry")
    assert result.code == 0, result.err
    assert "Retrying `llmt run`" in result.err and "on 2 model(s): numbers, after_numbers" in result.err
    assert results(project) == {"model.numbers": "success", "model.after_numbers": "success"}
    assert project.query("select rows from main.after_numbers") == [(4,)]
    again = project.llmt("retry")
    assert again.code == 0 and "Nothing to retry: everything in the last `llmt run`" in again.err


def test_retry_uses_the_last_runs_target(make_project: MakeProject) -> None:
    project = make_project({**BROKEN, "project.yml": TWO_TARGETS})
    assert project.llmt("run", "--target", "other").code == 1
    project.write("models/numbers.sql", FIXED)
    wrong = project.llmt("retry", "--target", "dev")
    assert wrong.code == 2 and "the last run was on target `other`, not `dev`" in wrong.err
    assert project.llmt("retry").code == 0
    project.db = "other.duckdb"
    assert project.query("select count(*) from main.numbers") == [(4,)]
    assert not (project.root / "demo.duckdb").exists()


def test_retry_after_build_and_test_runs_the_failed_tests_again(make_project: MakeProject) -> None:
    project = make_project({
        "tests/few_reviews.sql": "select * from {{ ref('stg_reviews') }} where review_id > 3\n",
        "models/counted.sql": "select count(*) as n from {{ ref('stg_reviews') }}\n",
    })
    assert project.llmt("build").code == 1
    failed = {k: v for k, v in results(project).items() if v not in ("success", "pass")}
    derived = {k: v for k, v in failed.items() if k.startswith("test.schema_")}  # insights' schema tests
    assert derived and set(derived.values()) == {"skipped"}
    assert {k: v for k, v in failed.items() if k not in derived} == {
        "test.few_reviews": "fail", "model.counted": "skipped", "model.insights": "skipped"}
    project.write("tests/few_reviews.sql", "select * from {{ ref('stg_reviews') }} where review_id > 4\n")
    result = project.llmt("retry", "--output", "json")
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert {n["name"] for n in out["nodes"]} == {"counted", "insights"}
    assert {t["name"]: t["status"] for t in out["tests"]} == {"few_reviews": "pass",
                                                              **{k[5:]: "pass" for k in derived}}
    assert project.llmt("retry").code == 0
    project.write("tests/few_reviews.sql", "select * from {{ ref('stg_reviews') }} where review_id > 3\n")
    assert project.llmt("test").code == 1
    project.write("tests/few_reviews.sql", "select * from {{ ref('stg_reviews') }} where review_id > 5\n")
    result = project.llmt("retry")
    assert result.code == 0, result.err
    assert results(project) == {"test.few_reviews": "pass"}


def test_retry_fail_fast_stops_at_the_first_model_that_fails_again(make_project: MakeProject) -> None:
    failing = BROKEN["models/numbers.sql"]
    project = make_project({"models/bad_a.sql": failing, "models/bad_b.sql": failing})
    assert project.llmt("run", "-s", "bad_a", "bad_b").code == 1
    assert results(project) == {"model.bad_a": "error", "model.bad_b": "error"}  # independent: both tried
    result = project.llmt("retry", "--fail-fast")
    assert result.code == 1, result.err
    assert sorted(results(project).values()) == ["error", "skipped"]  # the second was not started
    assert "on 2 model(s): bad_a, bad_b" in project.llmt("retry").err  # the skipped one is retried too


def test_retry_after_build_with_a_broken_seed_retries_its_readers_which_load_it_again(
        make_project: MakeProject) -> None:
    project = make_project({
        "seeds/countries.csv": "code,name\n007,Bond Land\n",
        "seeds/properties.yml": "seeds:\n  - name: countries\n    config: {column_types: {cod: VARCHAR}}\n",
        "models/by_country.sql": "{{ config(materialized='table') }}\nselect code from {{ ref('countries') }}\n",
    })
    assert project.llmt("build", "-s", "by_country").code == 1
    assert results(project)["seed.countries"] == "error" and results(project)["model.by_country"] == "skipped"
    project.write("seeds/properties.yml", "seeds:\n  - name: countries\n    config: {column_types: {code: VARCHAR}}\n")
    result = project.llmt("retry")
    assert result.code == 0, result.err
    assert "no longer in the project" not in result.err and "on 1 model(s): by_country" in result.err
    assert results(project)["seed.countries"] == "success"
    assert project.query("select code from main.by_country") == [("007",)]


def test_retry_replays_the_last_runs_vars_and_full_refresh(make_project: MakeProject) -> None:
    scaled = "select review_id, {} * {{{{ var('factor', 1) }}}} as n from {{{{ ref('stg_reviews') }}}}\n"
    project = make_project({
        # an incremental model without a filter on `this`: an increment appends every row again, a full refresh
        # builds it from scratch
        "models/numbers.sql": "{{ config(materialized='incremental') }}\n" + scaled.format("length(review_text)"),
    })
    assert project.llmt("run").code == 0
    project.write("models/numbers.sql", "{{ config(materialized='incremental') }}\n"
                  + scaled.format("cast(review_text as integer)"))
    assert project.llmt("run", "--full-refresh", "--vars", "{factor: 10}").code == 1
    args = json.loads((project.root / "target" / "run_results.json").read_text())["args"]
    assert args["vars"] == {"factor": 10} and args["full_refresh"] is True and args["mode"] is None
    project.write("models/numbers.sql", "{{ config(materialized='incremental') }}\n"
                  + scaled.format("length(review_text)"))
    assert project.llmt("retry").code == 0
    assert project.query("select count(*), sum(n) from main.numbers") == [(4, 10 * len(
        "Great phone" "Battery died" "Great phone" "Kabel ist kaputt — schade"))]
    project.write("models/numbers.sql", "{{ config(materialized='incremental') }}\n"
                  + scaled.format("cast(review_text as integer)"))
    assert project.llmt("run", "--vars", "{factor: 10}").code == 1
    project.write("models/numbers.sql", "{{ config(materialized='incremental') }}\n"
                  + scaled.format("length(review_text)"))
    assert project.llmt("retry", "--vars", "{factor: 100}").code == 0  # given to retry: they win
    assert project.query("select count(*), max(n) from main.numbers") == [(8, 100 * len("Kabel ist kaputt — schade"))]
