"""Custom database schemas (dbt's `schema` / `+schema`): `<target schema>_<custom>`, created as needed."""

from __future__ import annotations

from collections.abc import Callable

from llmt.project import load_project
from tests.conftest import BASE_FILES, Project

MakeProject = Callable[[dict[str, str]], Project]


def _relations(project: Project) -> set[tuple[str, str, str]]:
    return set(project.query("SELECT table_schema, table_name, table_type FROM information_schema.tables "
                             "WHERE table_catalog = 'demo'"))


def test_models_and_llm_outputs_go_to_their_custom_schemas(make_project: MakeProject) -> None:
    project = make_project({
        "project.yml": BASE_FILES["project.yml"].rstrip() + "\n        models:\n          marts:\n"
        "            +schema: marts\n            +materialized: table\n",
        "models/insights.sql": BASE_FILES["models/insights.sql"].replace("unique_key=",
                                                                         "schema='enriched', unique_key="),
        "models/marts/by_product.sql": "select product, count(*) as n from {{ ref('insights') }} group by product\n",
        "models/marts/props.yml": "models:\n  - name: by_product\n    columns:\n      - name: product\n"
        "        data_tests: [unique]\n",
    })
    assert project.llmt("build").code == 0
    relations = _relations(project)
    assert {("main", "stg_reviews", "VIEW"), ("main_enriched", "insights", "BASE TABLE"),
            ("main_enriched", "insights__errors", "BASE TABLE"),
            ("main_marts", "by_product", "BASE TABLE")} <= relations
    assert not {r for r in relations if r[0] == "main" and r[1] in ("insights", "insights__errors", "by_product")}
    assert {r[1] for r in relations if r[0] == "_llmt"} >= {"answers", "input__insights"}  # state stays in _llmt
    assert project.query("SELECT sum(n) FROM main_marts.by_product") == [(4,)]
    shown = project.llmt("show", "by_product", "--output", "json")
    assert shown.code == 0 and '"product"' in shown.out


def test_a_schema_set_in_config_is_seen_by_the_models_that_ref_it(make_project: MakeProject) -> None:
    project = make_project({
        "models/stg_reviews.sql": "{{ config(schema='staging') }}\n" + BASE_FILES["models/stg_reviews.sql"],
    })
    loaded = load_project(project.root)
    assert loaded.nodes["stg_reviews"].schema == "main_staging"
    assert '"main_staging"."stg_reviews"' in loaded.nodes["insights"].compiled_sql
    assert project.llmt("run").code == 0
    assert ("main_staging", "stg_reviews", "VIEW") in _relations(project)


def test_a_target_schema_prefixes_the_custom_one(make_project: MakeProject) -> None:
    project = make_project({
        "project.yml": BASE_FILES["project.yml"].replace("path: demo.duckdb", "path: demo.duckdb, schema: dev_ann"),
        "models/stg_reviews.sql": "{{ config(schema=' staging ') }}\n" + BASE_FILES["models/stg_reviews.sql"],
    })
    assert project.llmt("run").code == 0
    assert {("dev_ann_staging", "stg_reviews", "VIEW"), ("dev_ann", "insights", "BASE TABLE")} <= _relations(project)
