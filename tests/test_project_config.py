"""Project loading: config precedence, vars, env_var, sources, generation parameters."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from llmt.pipeline.spec import build_spec
from llmt.project import load_project
from tests.conftest import BASE_FILES, Project

MakeProject = Callable[[dict[str, str]], Project]

PRECEDENCE_YML = """
    name: demo
    targets:
      dev: {warehouse: {path: demo.duckdb}}
    llm: {model: gpt-4o-mini, max_output_tokens: 100}
    models:
      +materialized: table
      +tags: [all]
      staging:
        +materialized: view
        +tags: [staging]
"""


def test_config_precedence(make_project: MakeProject) -> None:
    project = make_project(
        {
            "project.yml": PRECEDENCE_YML,
            "models/stg_reviews.sql": "",
            "models/insights.sql": "",
            "models/staging/stg_a.sql": "select 1 as id\n",
            "models/staging/stg_b.sql": "{{ config(materialized='table') }}\nselect 1 as id\n",
            "models/staging/stg_c.sql": "select 1 as id\n",
            "models/mart.sql": "select * from {{ ref('stg_a') }}\n",
            "models/props.yml": "models:\n  - name: stg_c\n    config: {materialized: incremental, tags: [x]}\n"
            "  - name: stg_b\n    config: {materialized: view}\n",
        }
    )
    loaded = load_project(project.root)
    nodes = loaded.nodes
    assert nodes["stg_a"].materialized == "view"  # folder config beats the project default
    assert nodes["stg_a"].tags == ["all", "staging"]
    assert nodes["stg_b"].materialized == "table"  # in-file config() beats properties
    assert nodes["stg_c"].materialized == "incremental"  # properties beat folder config
    assert nodes["stg_c"].tags == ["x"]
    assert nodes["mart"].materialized == "table"  # project default


def test_generation_parameter_precedence(project: Project) -> None:
    project.write(
        "prompts/analyse.md", "---\ntemperature: 0.7\nmax_output_tokens: 50\n---\n{{ review_text }}\n"
    )
    spec = build_spec(loaded := load_project(project.root), loaded.nodes["insights"])
    assert spec.params["temperature"] == 0.7  # front matter beats project llm defaults
    assert spec.params["max_output_tokens"] == 50
    project.write(
        "models/insights.sql",
        "{{ config(materialized='llm', prompt='analyse', output_schema='analysis', "
        "unique_key='review_id', temperature=0.2) }}\nselect review_id, review_text from "
        "{{ ref('stg_reviews') }}\n",
    )
    spec = build_spec(loaded := load_project(project.root), loaded.nodes["insights"])
    assert spec.params["temperature"] == 0.2  # model config beats front matter
    body = spec.body_base()
    assert body["max_completion_tokens"] == 50
    assert body["response_format"]["json_schema"]["strict"] is True
    assert body["response_format"]["json_schema"]["schema"]["additionalProperties"] is False


def test_vars_and_cli_override(project: Project) -> None:
    project.write("project.yml", (project.root / "project.yml").read_text() + "vars:\n  min_id: 2\n")
    project.write(
        "models/stg_reviews.sql",
        "select * from {{ source('raw', 'reviews') }} where review_id >= {{ var('min_id') }}\n",
    )
    assert project.llmt("run").code == 0
    assert project.query("select count(*) from main.insights") == [(3,)]
    assert project.llmt("run", "--vars", "{min_id: 4}").code == 0
    assert project.query("select count(*) from main.insights") == [(1,)]


def test_env_var_with_default(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    project.write(
        "models/stg_reviews.sql",
        "select * from {{ source('raw', 'reviews') }} "
        "where review_id <= {{ env_var('LLMT_TEST_MAX_ID', '2') }}\n",
    )
    assert project.llmt("run").code == 0
    assert project.query("select count(*) from main.insights") == [(2,)]
    monkeypatch.setenv("LLMT_TEST_MAX_ID", "3")
    assert project.llmt("run").code == 0
    assert project.query("select count(*) from main.insights") == [(3,)]


def test_sources_from_parquet_json_and_tables(project: Project) -> None:
    import duckdb

    data = project.root / "data"
    with duckdb.connect() as conn:
        conn.execute(f"COPY (SELECT 1 AS id, 'a' AS t) TO '{data / 'x.parquet'}' (FORMAT parquet)")
    (data / "y.jsonl").write_text('{"id": 2, "t": "b"}\n')
    project.write(
        "models/sources.yml",
        """
        sources:
          - name: raw
            tables:
              - {name: reviews, file: data/reviews.csv}
              - {name: x, file: data/x.parquet}
              - {name: y, file: data/y.jsonl}
          - name: wh
            schema: main
            tables:
              - {name: stg, identifier: stg_reviews}
        """,
    )
    project.write(
        "models/both.sql",
        "select id, t from {{ source('raw','x') }} union all select id, t from {{ source('raw','y') }}\n",
    )
    project.write("models/from_table.sql", "select count(*) as n from {{ source('wh','stg') }}\n")
    assert project.llmt("run", "-s", "stg_reviews", "-s", "both").code == 0
    assert project.llmt("run", "-s", "from_table").code == 0
    assert project.query("select * from main.both order by id") == [(1, "a"), (2, "b")]
    assert project.query("select n from main.from_table") == [(4,)]


def test_source_file_missing(project: Project) -> None:
    project.write(
        "models/sources.yml",
        "sources:\n  - name: raw\n    tables:\n      - {name: reviews, file: data/nope.csv}\n",
    )
    result = project.llmt("run")
    assert result.code == 2
    assert "sources.yml:4" in result.err and "data/nope.csv" in result.err


def test_undeclared_source_suggests(project: Project) -> None:
    project.write("models/stg_reviews.sql", "select * from {{ source('raw', 'review') }}\n")
    result = project.llmt("run")
    assert result.code == 2
    assert "Did you mean `raw.reviews`?" in result.err


def test_properties_for_unknown_model(project: Project) -> None:
    project.write("models/props.yml", "models:\n  - name: insight\n")
    result = project.llmt("ls")
    assert result.code == 2
    assert "props.yml:2" in result.err and "Did you mean `insights`?" in result.err


def test_disabled_model_is_not_run(project: Project) -> None:
    project.write("models/off.sql", "{{ config(enabled=false) }}\nselect 1 as x\n")
    assert "off" not in json.dumps(json.loads(project.llmt("ls", "--output", "json").out))


def test_answer_columns_are_typed(project: Project) -> None:
    schema = {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": ["a", "b"]},
            "n": {"type": "integer"},
            "x": {"type": "number"},
            "flag": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "meta": {
                "type": "object",
                "properties": {"k": {"type": "string"}, "v": {"type": "integer"}},
                "required": ["k", "v"],
            },
            "day": {"type": "string", "format": "date"},
            "at": {"type": "string", "format": "date-time"},
            "maybe": {"type": "string"},
        },
        "required": ["label", "n", "x", "flag", "tags", "meta", "day", "at"],
    }
    project.write("schemas/analysis.json", json.dumps(schema))
    assert project.llmt("run").code == 0
    types = dict(
        project.query(
            "select column_name, data_type from information_schema.columns where table_name = 'insights'"
        )
    )
    assert types["label"] == "VARCHAR" and types["n"] == "BIGINT" and types["x"] == "DOUBLE"
    assert types["flag"] == "BOOLEAN" and types["tags"] == "VARCHAR[]"
    assert types["meta"] == "STRUCT(k VARCHAR, v BIGINT)"
    assert types["day"] == "DATE" and types["at"] == "TIMESTAMP WITH TIME ZONE" and types["maybe"] == "VARCHAR"
    assert types["_llmt_answered_at"].startswith("TIMESTAMP")
    assert project.query("select count(*) from main.insights where day is null or meta.k is null") == [(0,)]


def test_manifest_and_run_results(project: Project) -> None:
    assert project.llmt("run").code == 0
    manifest = json.loads((project.root / "target/manifest.json").read_text())
    node = manifest["nodes"]["model.insights"]
    assert node["depends_on"] == ["stg_reviews"]
    assert len(node["llm"]["template_hash"]) == 64
    assert node["llm"]["input_columns"] == ["product", "review_text"]
    results = json.loads((project.root / "target/run_results.json").read_text())
    by_name = {r["name"]: r for r in results["results"]}
    assert by_name["insights"]["status"] == "success"
    assert by_name["insights"]["llm"]["answered"] == 4
    assert (project.root / "target/compiled/models/stg_reviews.sql").read_text().startswith("select")


def test_secrets_are_never_written(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMT_TEST_SECRET", "sk-very-secret-value")
    yml = (
        (project.root / "project.yml")
        .read_text()
        .replace(
            "provider: {type: fake}",
            "provider: {type: fake, fixtures: \"{{ env_var('LLMT_TEST_SECRET') }}\"}",
        )
    )
    project.write("project.yml", yml)
    project.write("sk-very-secret-value", "[]\n")  # the option is a path here; any value would do
    assert project.llmt("run").code == 0
    for path in Path(project.root / "target").rglob("*"):
        if path.is_file():
            assert b"sk-very-secret-value" not in path.read_bytes(), path
    assert b"sk-very-secret-value" not in (project.root / "demo.duckdb").read_bytes()


def test_warehouse_settings_reach_duckdb_and_bad_ones_are_named(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmt.runner import open_warehouse

    monkeypatch.setenv("LLMT_DUCKDB_MEMORY_LIMIT", "900MB")  # the project's setting wins over the variable
    yml = (project.root / "project.yml").read_text()
    project.write("project.yml", yml.replace("path: demo.duckdb}",
                                             "path: demo.duckdb, settings: {memory_limit: 300MB, threads: 1}}"))
    wh = open_warehouse(load_project(project.root))
    query = "SELECT current_setting('memory_limit'), current_setting('threads')"
    expected = duckdb.connect(config={"memory_limit": "300MB", "threads": 1}).execute(query).fetchone()
    assert wh.fetchone(query) == expected
    wh.close()
    assert project.llmt("run").code == 0
    project.write("project.yml", yml.replace("path: demo.duckdb}", "path: demo.duckdb, settings: {memry: 1}}"))
    result = project.llmt("run")
    assert result.code == 2 and "DuckDB refused the warehouse settings" in result.err and "memry" in result.err


def test_output_schema_is_set_in_file_in_properties_or_per_folder(make_project: MakeProject) -> None:
    llm = "{{ config(materialized='llm', prompt='analyse', unique_key='review_id'%s) }}\n" \
          "select review_id, product, review_text from {{ ref('stg_reviews') }}\n"
    schema = json.dumps({"type": "object", "properties": {"other": {"type": "string"}}})
    project = make_project({
        "models/insights.sql": llm % ", output_schema='analysis'",
        "models/llm/from_props.sql": llm % "",
        "models/llm/from_folder.sql": llm % "",
        "models/llm/props.yml": "models:\n  - name: from_props\n    config: {output_schema: other}\n",
        "schemas/other.json": schema,
        "project.yml": BASE_FILES["project.yml"].rstrip() + "\n        models: {llm: {+output_schema: other}}\n",
    })
    loaded = load_project(project.root)
    fields = {n: [c for c, _ in build_spec(loaded, loaded.nodes[n]).output_columns]
              for n in ("insights", "from_props", "from_folder")}
    assert fields == {"insights": ["sentiment", "score", "issues", "competitor"], "from_props": ["other"],
                      "from_folder": ["other"]}


NO_OUTPUT_SCHEMA = BASE_FILES["models/insights.sql"].replace("output_schema='analysis', ", "")


@pytest.mark.parametrize(
    "files",
    [
        {"models/insights.sql": BASE_FILES["models/insights.sql"].replace("output_schema=", "schema=")},
        {"models/insights.sql": NO_OUTPUT_SCHEMA,
         "models/props.yml": "models:\n  - name: insights\n    config: {schema: analysis}\n"},
        {"models/insights.sql": NO_OUTPUT_SCHEMA,
         "project.yml": BASE_FILES["project.yml"].rstrip() + "\n        models:\n          +schema: analysis\n"},
    ],
    ids=["config()", "properties", "folder"],
)
def test_an_llm_model_naming_its_json_schema_with_schema_is_told_which_key_to_use(
        make_project: MakeProject, files: dict[str, str]) -> None:
    project = make_project(files)
    result = project.llmt("ls")
    assert result.code == 2 and "Traceback" not in result.err
    assert "models/insights.sql" in result.err and "schemas/analysis.json" in result.err, result.err
    assert "`schema` is the database schema" in result.err and "output_schema='analysis'" in result.err


@pytest.mark.parametrize(("value", "message"), [("''", "`schema` must be the name of a database schema"),
                                                ("3", "`schema` must be the name of a database schema"),
                                                ("'alway'", "unknown `state: alway`. Did you mean `always`?")])
def test_schema_and_state_config_values_are_checked(make_project: MakeProject, value: str, message: str) -> None:
    key = "state" if "state" in message else "schema"
    project = make_project({"models/stg_reviews.sql": f"{{{{ config({key}={value}) }}}}\n"
                            + BASE_FILES["models/stg_reviews.sql"]})
    result = project.llmt("ls")
    assert result.code == 2 and message in result.err and "models/stg_reviews.sql" in result.err, result.err
