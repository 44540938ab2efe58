"""The request-key rules: only rows whose request changed are sent; identical requests once."""

from __future__ import annotations

import json

from tests.conftest import SCHEMA, Project


def sent(project: Project, *args: str) -> int:
    return int(project.llm_result(project.run_json(*args))["requests"])


def test_request_covers_every_referenced_column(project: Project) -> None:
    llm = project.llm_result(project.run_json())
    # "Great phone" appears twice, but the prompt also uses product, which differs
    assert (llm["rows"], llm["requests"]) == (4, 4)
    rows = project.query("select review_id, _llmt_status, _llmt_request_key from main.insights order by 1")
    assert [r[1] for r in rows] == ["ok"] * 4
    assert len({r[2] for r in rows}) == 4


def test_identical_referenced_inputs_are_asked_once(project: Project) -> None:
    project.write("prompts/analyse.md", "Review: {{ review_text }}\n")
    llm = project.llm_result(project.run_json())
    assert (llm["rows"], llm["requests"]) == (4, 3)
    keys = project.query(
        "select review_id, _llmt_request_key, sentiment, score from main.insights order by 1"
    )
    assert keys[0][1:] == keys[2][1:]  # rows 1 and 3 share the request and its answer


def test_second_run_sends_nothing(project: Project) -> None:
    project.run_json()
    llm = project.llm_result(project.run_json())
    assert llm["requests"] == 0
    assert llm["cached"] == 4


def test_reask_asks_again_when_every_row_has_its_answer(project: Project) -> None:
    project.run_json()
    again = project.llm_result(project.run_json("--reask", "--yes"))
    # re-asked requests are counted as such, not as cached
    assert (again["cached"], again["requests"], again["reasked"], again["answered"]) == (0, 4, 4, 4)
    assert sent(project) == 0


def test_editing_one_input_sends_exactly_one_request(project: Project) -> None:
    project.run_json()
    before = dict(project.query("select review_id, _llmt_request_key from main.insights"))
    csv = (project.root / "data/reviews.csv").read_text()
    project.write("data/reviews.csv", csv.replace("Battery died", "Battery died after a week"))
    assert sent(project) == 1
    after = dict(project.query("select review_id, _llmt_request_key from main.insights"))
    assert [k for k in before if before[k] != after[k]] == [2]


def test_unreferenced_column_change_sends_nothing(project: Project) -> None:
    project.write("prompts/analyse.md", "Review: {{ review_text }}\n")
    project.write(
        "models/insights.sql",
        """
        {{ config(materialized='llm', prompt='analyse', output_schema='analysis', unique_key='review_id') }}
        select review_id, product, review_text, 'x' as extra from {{ ref('stg_reviews') }}
        """,
    )
    project.run_json()
    project.write(
        "models/insights.sql",
        """
        {{ config(materialized='llm', prompt='analyse', output_schema='analysis', unique_key='review_id') }}
        select review_id, product, review_text, 'y' as extra from {{ ref('stg_reviews') }}
        """,
    )
    assert sent(project) == 0


def test_editing_the_prompt_reasks_every_row(project: Project) -> None:
    project.run_json()
    project.write(
        "prompts/analyse.md",
        "---\nsystem: You analyse reviews carefully.\n---\n{{ product }}: {{ review_text }}\n",
    )
    assert sent(project) == 4


def test_changing_the_schema_reasks_every_row(project: Project) -> None:
    project.run_json()
    schema = json.loads(json.dumps(SCHEMA))
    schema["properties"]["score"]["maximum"] = 5
    project.write("schemas/analysis.json", json.dumps(schema))
    assert sent(project) == 4


def test_changing_model_or_parameter_reasks(project: Project) -> None:
    project.run_json()
    yml = (project.root / "project.yml").read_text()
    project.write("project.yml", yml.replace("temperature: 0", "temperature: 0.5"))
    assert sent(project) == 4
    project.write("project.yml", yml.replace("model: gpt-4o-mini", "model: gpt-4.1-mini"))
    assert sent(project) == 4
    project.write("project.yml", yml)
    assert sent(project) == 0  # answers for the original request are still stored


def test_identical_requests_in_two_models_are_sent_once(project: Project) -> None:
    project.write(
        "models/insights_copy.sql",
        """
        {{ config(materialized='llm', prompt='analyse', output_schema='analysis', unique_key='review_id') }}
        select review_id, product, review_text from {{ ref('stg_reviews') }}
        """,
    )
    data = project.run_json()
    total = (
        project.llm_result(data, "insights")["requests"]
        + project.llm_result(data, "insights_copy")["requests"]
    )
    assert total == 4
    a = project.query("select review_id, sentiment, score from main.insights order by 1")
    b = project.query("select review_id, sentiment, score from main.insights_copy order by 1")
    assert a == b


def test_changed_request_keeps_previous_answer_as_stale_until_answered(make_project) -> None:  # type: ignore[no-untyped-def]
    project = make_project({})
    project.run_json()
    old = project.query("select sentiment, score from main.insights where review_id = 2")
    csv = (project.root / "data/reviews.csv").read_text()
    project.write("data/reviews.csv", csv.replace("Battery died", "Battery died again"))
    yml = (project.root / "project.yml").read_text()
    # every new request fails and is not retried: the row keeps its old answer, marked stale
    project.write(
        "project.yml",
        yml.replace("provider: {type: fake}", "provider: {type: fake, failures: {refused: 1.0}}"),
    )
    data = project.run_json()
    assert project.llm_result(data)["stale"] == 1
    row = project.query(
        "select sentiment, score, _llmt_status, _llmt_answer_key <> _llmt_request_key "
        "from main.insights where review_id = 2"
    )
    assert row == [(*old[0], "stale", True)]
    errors = project.query("select review_id, reason from main.insights__errors")
    assert errors == [(2, "refused")]


def test_full_refresh_rebuilds_from_stored_answers_without_requests(project: Project) -> None:
    project.run_json()
    before = project.query("select * exclude (_llmt_answered_at) from main.insights order by review_id")
    assert sent(project, "--full-refresh") == 0
    after = project.query("select * exclude (_llmt_answered_at) from main.insights order by review_id")
    assert before == after


def test_removed_input_row_leaves_the_output(project: Project) -> None:
    project.run_json()
    csv = (project.root / "data/reviews.csv").read_text().splitlines()
    project.write("data/reviews.csv", "\n".join(csv[:-1]) + "\n")
    assert sent(project) == 0
    assert project.query("select count(*) from main.insights") == [(3,)]


def test_changing_the_unique_key_rebuilds_the_table(project: Project) -> None:
    project.run_json()
    project.write("models/insights.sql", """
        {{ config(materialized='llm', prompt='analyse', output_schema='analysis', unique_key=['product', 'rid']) }}
        select review_id as rid, product, review_text from {{ ref('stg_reviews') }}
        """)
    assert sent(project) == 0
    assert project.query("select count(*) from main.insights where _llmt_status = 'ok'") == [(4,)]


def test_reask_needs_a_flag_and_replaces_the_answers(project: Project) -> None:
    project.run_json()
    before = dict(project.query("select request_key, answered_at from _llmt.answers"))
    assert sent(project, "--full-refresh") == 0
    assert sent(project, "--reask", "--yes") == 4
    after = dict(project.query("select request_key, answered_at from _llmt.answers"))
    assert after.keys() == before.keys() and all(after[k] > before[k] for k in before)
    assert project.query("select count(*) from _llmt.attempts") == [(8,)]
    assert project.query("select distinct _llmt_status from main.insights") == [("ok",)]
    assert sent(project) == 0
