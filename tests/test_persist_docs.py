"""Descriptions from models/*.yml (and an output schema's) written as table, view and column comments
(dbt's persist_docs), so that BI tools show them."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import SCHEMA, Project

PROPS = """
models:
  - name: stg_reviews
    description: One row per review, trimmed.
    columns:
      - {name: review_id, description: The review's id.}
  - name: counts
    description: Reviews per product.
    %s
    columns:
      - {name: n, description: How many reviews.}
  - name: insights
    description: What each review says.
    columns:
      - {name: sentiment, description: Overall sentiment (from models/*.yml).}
"""


def _comments(project: Project, name: str) -> dict[str, Any]:
    relation = project.query(
        f"SELECT comment FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = '{name}' "
        f"UNION ALL SELECT comment FROM duckdb_views() WHERE schema_name = 'main' AND view_name = '{name}'")
    columns = project.query(f"SELECT column_name, comment FROM duckdb_columns() WHERE schema_name = 'main' "
                            f"AND table_name = '{name}' AND comment IS NOT NULL")
    return {"": relation[0][0], **dict(columns)}


def test_descriptions_are_written_as_comments_of_views_tables_and_columns(project: Project) -> None:
    schema = {**SCHEMA, "properties": {**SCHEMA["properties"],
                                       "score": {**SCHEMA["properties"]["score"], "description": "1 to 10."},
                                       "sentiment": {**SCHEMA["properties"]["sentiment"], "description": "lost"}}}
    project.write("schemas/analysis.json", json.dumps(schema))
    project.write("models/counts.sql", "{{ config(materialized='table') }}\n"
                                       "select product, count(*) as n from {{ ref('stg_reviews') }} group by 1\n")
    project.write("models/props.yml", PROPS % "")
    assert project.llmt("run").code == 0
    assert _comments(project, "stg_reviews") == {"": "One row per review, trimmed.",
                                                 "review_id": "The review's id."}  # a view
    assert _comments(project, "counts") == {"": "Reviews per product.", "n": "How many reviews."}  # a table
    insights = _comments(project, "insights")
    assert insights[""] == "What each review says."
    assert insights["sentiment"] == "Overall sentiment (from models/*.yml)."  # models/*.yml beats the schema
    assert insights["score"] == "1 to 10."  # the output schema's description
    assert insights["_llmt_status"].startswith("llmt: ok; stale")
    assert "competitor" not in insights and "review_id" not in insights

    # a run that rebuilds nothing still writes a changed description
    project.write("models/props.yml", (PROPS % "").replace("What each review says.", "Each review, analysed."))
    data = project.run_json("-s", "insights")
    assert project.llm_result(data)["requests"] == 0
    assert _comments(project, "insights")[""] == "Each review, analysed."


def test_persist_docs_can_be_turned_off(project: Project) -> None:
    project.write("models/counts.sql", "{{ config(materialized='table') }}\n"
                                       "select product, count(*) as n from {{ ref('stg_reviews') }} group by 1\n")
    project.write("models/props.yml", PROPS % "config: {persist_docs: {relation: false, columns: false}}")
    assert project.llmt("run").code == 0
    assert _comments(project, "counts") == {"": None}
    assert _comments(project, "stg_reviews")[""] == "One row per review, trimmed."  # on by default
    project.write("models/props.yml", PROPS % "config: {persist_docs: {columns: false}}")
    assert project.llmt("run", "-s", "counts").code == 0
    assert _comments(project, "counts") == {"": "Reviews per product."}
    project.write("models/props.yml", PROPS % "config: {persist_docs: {relation: no_thanks}}")
    result = project.llmt("run", "-s", "counts")
    assert result.code == 2 and "`persist_docs` must map `relation` and `columns` to true or false" in result.err
