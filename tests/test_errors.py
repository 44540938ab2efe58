"""Bad input: a clear message naming what and where, exit code 2 (1 for a node failure),
no traceback, and nothing written."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.conftest import Project

MakeProject = Callable[[dict[str, str]], Project]


def fails(project: Project, *needles: str, code: int = 2, command: str = "run") -> str:
    result = project.llmt(command)
    assert result.code == code, result.err
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle in result.err, result.err
    return result.err


def nothing_written(project: Project) -> None:
    assert not (project.root / "demo.duckdb").exists()


def test_malformed_project_yml(make_project: MakeProject) -> None:
    project = make_project({"project.yml": "name: demo\ntargets: [unclosed\n"})
    fails(project, "project.yml:2", "not valid YAML")
    nothing_written(project)


def test_missing_project_yml(make_project: MakeProject) -> None:
    project = make_project({"project.yml": ""})
    fails(project, "no project.yml", "llmt init")


def test_unknown_project_key_suggests_the_closest(make_project: MakeProject) -> None:
    project = make_project({"project.yml": "name: demo\ntarggets: {}\n"})
    fails(project, "project.yml:2", "unknown key `targgets`", "Did you mean `targets`?")


def test_unknown_nested_key_names_its_line(make_project: MakeProject) -> None:
    project = make_project({"project.yml": "name: demo\nllm:\n  model: x\n  max_atempts: 2\n"})
    fails(project, "project.yml:4", "`llm.max_atempts`", "Did you mean `max_attempts`?")


def test_unknown_config_key_in_model(make_project: MakeProject) -> None:
    project = make_project({"models/stg_reviews.sql": "{{ config(materialised='table') }}\nselect 1 as x\n"})
    fails(
        project, "models/stg_reviews.sql", "unknown config key `materialised`", "Did you mean `materialized`?"
    )
    nothing_written(project)


def test_unknown_materialization(make_project: MakeProject) -> None:
    project = make_project({"models/stg_reviews.sql": "{{ config(materialized='tabel') }}\nselect 1 as x\n"})
    fails(project, "unknown materialization `tabel`", "Did you mean `table`?")


def test_missing_prompt_file(make_project: MakeProject) -> None:
    project = make_project({"prompts/analyse.md": ""})
    project.write("prompts/analyze.md", "{{ review_text }}")
    fails(project, "models/insights.sql", "prompt `analyse` not found", "Did you mean `analyze`?")
    nothing_written(project)


def test_missing_schema_file(make_project: MakeProject) -> None:
    project = make_project({"schemas/analysis.json": ""})
    fails(project, "schema `analysis` not found", "schemas/analysis.json")
    nothing_written(project)


def test_schema_strict_mode_cannot_express(make_project: MakeProject) -> None:
    schema = {"type": "object", "properties": {"a": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}}
    project = make_project({"schemas/analysis.json": json.dumps(schema)})
    err = fails(project, "schemas/analysis.json", "$.properties.a")
    assert "oneOf" in err
    nothing_written(project)


@pytest.mark.parametrize("name", ["_llmt_status", "_LLMT_note"])
def test_an_answer_field_with_llmt_s_metadata_prefix_is_refused_before_anything_is_sent(
    make_project: MakeProject, name: str,
) -> None:
    nested = {"type": "object", "properties": {"_llmt_x": {"type": "string"}}}
    schema = {"type": "object", "properties": {"summary": {"type": "string"}, name: {"type": "string"},
                                               "detail": nested}, "required": ["summary"]}
    project = make_project({"schemas/analysis.json": json.dumps(schema)})
    fails(project, "schemas/analysis.json", f"$.properties.{name}", "`_llmt_`", "Rename it")
    nothing_written(project)
    del schema["properties"][name]  # the prefix is reserved for columns only: a nested field may use it
    project.write("schemas/analysis.json", json.dumps(schema))
    assert project.llmt("run").code == 0


def test_sql_syntax_error_names_file_and_line(make_project: MakeProject) -> None:
    project = make_project(
        {"models/stg_reviews.sql": "select review_id,\n  product\n  review_text text\nfrom x\n"}
    )
    fails(project, "models/stg_reviews.sql:3", "SQL syntax error")
    nothing_written(project)


def test_ref_to_missing_model_suggests(make_project: MakeProject) -> None:
    project = make_project(
        {
            "models/stg_reviews.sql": "select 1 as review_id\n",
            "models/other.sql": "select * from {{ ref('stg_review') }}\n",
        }
    )
    fails(project, "models/other.sql:1", "ref('stg_review')", "Did you mean `stg_reviews`?")


def test_cycle_is_printed(make_project: MakeProject) -> None:
    project = make_project(
        {"models/a.sql": "select * from {{ ref('b') }}\n", "models/b.sql": "select * from {{ ref('a') }}\n"}
    )
    fails(project, "a -> b -> a")


def test_prompt_variable_missing_from_select(make_project: MakeProject) -> None:
    project = make_project({"prompts/analyse.md": "{{ product }} {{ review_body }}\n"})
    err = fails(project, "prompts/analyse.md", "`review_body`", "insights")
    assert "Available columns: review_id, product, review_text" in err
    nothing_written(project)


def test_prompt_variable_missing_from_star_select_is_caught_before_writing(make_project: MakeProject) -> None:
    project = make_project(
        {
            "prompts/analyse.md": "{{ review_body }}\n",
            "models/insights.sql": "{{ config(materialized='llm', prompt='analyse', output_schema='analysis', "
            "unique_key='review_id') }}\nselect * from {{ ref('stg_reviews') }}\n",
        }
    )
    fails(project, "`review_body`", "Available columns: review_id, product, review_text")
    assert project.query("select count(*) from _llmt.answers") == [(0,)]
    assert project.query("select count(*) from information_schema.tables where table_name = 'insights'") == [
        (0,)
    ]


def test_llm_model_without_unique_key(make_project: MakeProject) -> None:
    project = make_project(
        {
            "models/insights.sql": "{{ config(materialized='llm', prompt='analyse', output_schema='analysis') }}\n"
            "select review_id, product, review_text from {{ ref('stg_reviews') }}\n",
        }
    )
    fails(project, "models/insights.sql", "needs a `unique_key`")
    nothing_written(project)


def test_duplicate_unique_keys_fail_the_node_and_write_nothing(project: Project) -> None:
    assert project.llmt("run").code == 0
    before = project.query("select * from main.insights order by review_id")
    answers = project.query("select count(*) from _llmt.answers")
    csv = (project.root / "data/reviews.csv").read_text()
    project.write("data/reviews.csv", csv + "2,Phone,Another text\n2,Phone,Third text\n")
    err = fails(project, "not unique", "review_id=2 (3 rows)", "Nothing was written", code=1)
    assert "insights" in err
    assert project.query("select * from main.insights order by review_id") == before
    assert project.query("select count(*) from _llmt.answers") == answers


def test_failed_node_skips_downstream(make_project: MakeProject) -> None:
    project = make_project(
        {
            "models/stg_reviews.sql": "{{ config(materialized='table') }}\n"
            "select 'abc'::int as review_id, 'p' as product, 't' as review_text\n"
        }
    )
    result = project.llmt("run")
    assert result.code == 1
    assert "Traceback" not in result.err
    assert "models/stg_reviews.sql: the database rejected the SQL: Conversion Error" in result.err
    assert "skip  insights (upstream stg_reviews failed)" in result.err


def test_null_and_non_ascii_inputs_are_fine(make_project: MakeProject) -> None:
    csv = "review_id,product,review_text\n1,Phone,\n2,Kabel,Größe passt — très bien ✓ 日本語\n3,,NULL-ish\n"
    project = make_project({"data/reviews.csv": csv})
    result = project.llmt("run")
    assert result.code == 0, result.err
    rows = project.query("select review_id, _llmt_status from main.insights order by 1")
    assert rows == [(1, "ok"), (2, "ok"), (3, "ok")]
    assert project.llmt("run", "--output", "json").code == 0
    assert project.query("select count(*) from _llmt.attempts") == [(3,)]  # stable keys: nothing re-sent


def test_memory_warehouse_runs_and_warns(make_project: MakeProject) -> None:
    project = make_project({})
    yml = (project.root / "project.yml").read_text().replace("demo.duckdb", "':memory:'")
    project.write("project.yml", yml)
    result = project.llmt("run")
    assert result.code == 0, result.err
    assert ":memory:" in result.err
    assert "insights" in result.out


def test_unknown_target(project: Project) -> None:
    result = project.llmt("run", "--target", "prd")
    assert result.code == 2
    assert "target `prd` is not defined" in result.err


def test_missing_env_var_in_provider_options(make_project: MakeProject) -> None:
    project = make_project({})
    yml = (
        (project.root / "project.yml")
        .read_text()
        .replace(
            "provider: {type: fake}",
            "provider: {type: fake, fixtures: \"{{ env_var('LLMT_TEST_UNSET_VAR') }}\"}",
        )
    )
    project.write("project.yml", yml)
    fails(project, "LLMT_TEST_UNSET_VAR", "is not set")


@pytest.mark.parametrize("vars_arg", ["[1, 2]", "{unclosed"])
def test_bad_vars(project: Project, vars_arg: str) -> None:
    result = project.llmt("run", "--vars", vars_arg)
    assert result.code == 2
    assert "--vars" in result.err
