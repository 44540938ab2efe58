"""State-aware runs: a view or table is built again exactly when something it reads changed (model_state.py)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import duckdb
import pytest

from tests.conftest import BASE_FILES, Project, on_postgres

MakeProject = Callable[[dict[str, str]], Project]

FILES = {
    "project.yml": BASE_FILES["project.yml"].rstrip() + "\n        vars: {factor: 2}\n",
    "data/products.csv": "product,maker\nPhone,Acme\nCable,Wire Co\n",
    "models/sources.yml": """
        sources:
          - name: raw
            tables:
              - {name: reviews, file: data/reviews.csv}
              - {name: products, file: data/products.csv}
          - name: shop
            schema: shop
            tables:
              - {name: orders}
              - {name: events, loaded_at_field: loaded_at}
        """,
    "models/stg_products.sql": "select product, maker from {{ source('raw', 'products') }}\n",
    "models/dim_products.sql": "{{ config(materialized='table') }}\nselect * from {{ ref('stg_products') }}\n",
    "models/by_product.sql": "{{ config(materialized='table') }}\n"
    "select p.maker, count(*) as n from {{ ref('stg_reviews') }} r join {{ ref('dim_products') }} p using (product) "
    "group by p.maker\n",
    "models/orders_total.sql": "{{ config(materialized='table') }}\n"
    "select count(*) as n, sum(amount) as amount from {{ source('shop', 'orders') }}\n",
    "models/events_count.sql": "{{ config(materialized='table') }}\n"
    "select count(*) as n from {{ source('shop', 'events') }}\n",
    "models/scaled.sql": "{{ config(materialized='table') }}\nselect {{ var('factor') }} * 21 as answer\n",
    "models/inc_reviews.sql": "{{ config(materialized='incremental', unique_key='review_id') }}\n"
    "select review_id, product from {{ ref('stg_reviews') }}\n"
    "{% if is_incremental() %}where review_id > (select max(review_id) from {{ this }}){% endif %}\n",
    "models/inc_count.sql": "{{ config(materialized='table') }}\nselect count(*) as n from {{ ref('inc_reviews') }}\n",
    "models/answered.sql": "{{ config(materialized='table') }}\n"
    "select count(*) as n from {{ ref('insights') }} where _llmt_status = 'ok'\n",
}
SQL_MODELS = {"stg_reviews", "stg_products", "dim_products", "by_product", "orders_total", "events_count", "scaled",
              "inc_reviews", "inc_count", "answered"}


def _edit(project: Project, rel: str, text: str) -> None:
    """Write a data file with a time stamp in the past (a file modified just before a run is loaded again by the
    next one, in case it changed again within the same time stamp: file_sources.RACY_NS)."""
    path = project.root / rel
    path.write_text(text)
    past = time.time() - 100
    os.utime(path, (past, past))


def _shop(project: Project, *statements: str) -> None:
    """Change the warehouse behind llmt's back (another tool loading its tables)."""
    if project.pg is not None:
        for sql in statements:
            project.pg.execute(sql)
        return
    with duckdb.connect(str(project.root / "demo.duckdb")) as conn:
        for sql in statements:
            conn.execute(sql)


@pytest.fixture(params=["duckdb", "postgres"])
def state_project(request: pytest.FixtureRequest, make_project: MakeProject) -> Project:
    """The project built once, on DuckDB or in schema `public` of a PostgreSQL database (so that the tests' queries
    name its tables alike)."""
    project = make_project(FILES)
    if request.param == "postgres":
        on_postgres(project, request.getfixturevalue("pg"), schema="public")
    _shop(project, "CREATE SCHEMA shop",
          "CREATE TABLE shop.orders AS SELECT g AS id, g * 1.5 AS amount FROM generate_series(0, 99) AS t(g)",
          "CREATE TABLE shop.events AS SELECT g AS id, TIMESTAMP '2026-01-01' + g * INTERVAL '1 hour' "
          "AS loaded_at FROM generate_series(0, 9) AS t(g)")
    for rel in ("data/reviews.csv", "data/products.csv"):
        _edit(project, rel, (project.root / rel).read_text())
    assert _built(project) == SQL_MODELS  # the first run builds everything
    return project


def _built(project: Project, *args: str) -> set[str]:
    """The SQL models a run built (the others were skipped as unchanged)."""
    data = project.run_json(*args)
    results = {r["name"]: r for r in data["results"] if r["materialized"] != "llm"}
    assert all(r["status"] == "success" for r in results.values()), results
    return {name for name, r in results.items() if not r["unchanged"]}


def test_a_run_where_nothing_changed_builds_only_incremental_models(state_project: Project) -> None:
    result = state_project.llmt("run")
    assert result.code == 0
    assert "skip  by_product [table] (unchanged)" in result.err and "skip  stg_reviews [view] (unchanged)" in result.err
    assert "ok    inc_reviews [incremental] 0 rows" in result.err  # its select reads `this`: always run
    assert "(9 unchanged, not built again)" in result.err
    entry = next(r for r in json.loads((state_project.root / "target" / "run_results.json").read_text())["results"]
                 if r["name"] == "by_product")
    assert entry["status"] == "success" and entry["unchanged"] is True and entry["rows"] == 2
    assert "unchanged since its last build" in entry["message"]
    assert _built(state_project) == {"inc_reviews"}


def test_an_edited_csv_rebuilds_exactly_what_reads_it(state_project: Project) -> None:
    csv = state_project.root / "data" / "products.csv"
    _edit(state_project, "data/products.csv", csv.read_text() + "Tablet,Acme\n")
    assert _built(state_project) == {"stg_products", "dim_products", "by_product", "inc_reviews"}
    assert state_project.query("SELECT count(*) FROM dim_products") == [(3,)]
    reviews = state_project.root / "data" / "reviews.csv"
    _edit(state_project, "data/reviews.csv", reviews.read_text() + "5,Tablet,Fine tablet\n")
    # the LLM model reads stg_reviews too: its new answer changes `answered`; inc_reviews takes the new row
    assert _built(state_project) == {"stg_reviews", "by_product", "inc_reviews", "inc_count", "answered"}
    assert state_project.query("SELECT n FROM answered") == [(5,)]


def test_a_file_saved_again_unchanged_is_loaded_but_rebuilds_nothing(state_project: Project) -> None:
    csv = state_project.root / "data" / "products.csv"
    csv.write_text(csv.read_text())
    os.utime(csv, (time.time() - 50, time.time() - 50))  # a newer time stamp than the loaded file's
    before = state_project.query("SELECT value FROM _llmt.fingerprints WHERE name = 'source__raw__products'")
    assert _built(state_project) == {"inc_reviews"}
    after = state_project.query("SELECT value FROM _llmt.fingerprints WHERE name = 'source__raw__products'")
    assert json.loads(after[0][0])["loaded_ns"] > json.loads(before[0][0])["loaded_ns"]  # it was loaded again


@pytest.mark.parametrize("change", [
    "INSERT INTO shop.orders VALUES (100, 1.0)",
    "UPDATE shop.orders SET amount = amount + 1 WHERE id = 7",  # the same row count
    "DELETE FROM shop.orders WHERE id = 7",
])
def test_a_change_to_a_warehouse_table_source_is_seen(state_project: Project, change: str) -> None:
    _shop(state_project, change)
    assert _built(state_project) == {"orders_total", "inc_reviews"}
    assert _built(state_project) == {"inc_reviews"}


def test_a_source_with_loaded_at_field_is_signed_by_it(state_project: Project) -> None:
    _shop(state_project, "INSERT INTO shop.events VALUES (10, TIMESTAMP '2026-02-01')")
    assert _built(state_project) == {"events_count", "inc_reviews"}
    assert state_project.query("SELECT n FROM events_count") == [(11,)]
    state_project.write("models/sources.yml", FILES["models/sources.yml"].replace("loaded_at_field: loaded_at",
                                                                                "loaded_at_field: loaded"))
    result = state_project.llmt("run")
    assert result.code == 2 and "`loaded_at_field: loaded` of source `shop.events` is not a column" in result.err
    assert "models/sources.yml:" in result.err


def test_a_changed_var_or_model_rebuilds_it_and_what_reads_it(state_project: Project) -> None:
    assert _built(state_project, "--vars", "{factor: 3}") == {"scaled", "inc_reviews"}
    assert state_project.query("SELECT answer FROM scaled") == [(63,)]
    assert _built(state_project, "--vars", "{factor: 3}") == {"inc_reviews"}
    state_project.write("models/stg_products.sql", "select product, upper(maker) as maker "
                        "from {{ source('raw', 'products') }}\n")
    assert _built(state_project) == {"stg_products", "dim_products", "by_product", "scaled", "inc_reviews"}
    state_project.write("models/dim_products.sql", FILES["models/dim_products.sql"].replace("table", "view"))
    assert _built(state_project) == {"dim_products", "by_product", "inc_reviews"}
    assert state_project.query("SELECT table_type FROM information_schema.tables WHERE table_name = "
                               "'dim_products'") == [("VIEW",)]


def test_a_changed_macro_rebuilds_exactly_the_models_that_call_it(state_project: Project) -> None:
    macros = "{% macro times(x) %}({{ x }}) * 21{% endmacro %}\n{% macro unused() %}1{% endmacro %}\n"
    state_project.write("macros/units.sql", macros)
    assert _built(state_project) == {"inc_reviews"}  # macros that no model calls yet
    state_project.write("models/scaled.sql", FILES["models/scaled.sql"].replace("{{ var('factor') }} * 21",
                                                                               "{{ times(var('factor')) }}"))
    assert _built(state_project) == {"scaled", "inc_reviews"}
    assert state_project.query("SELECT answer FROM scaled") == [(42,)]
    state_project.write("macros/units.sql", macros.replace("* 21", "* 10"))
    assert _built(state_project) == {"scaled", "inc_reviews"}
    assert state_project.query("SELECT answer FROM scaled") == [(20,)]
    state_project.write("macros/units.sql", macros.replace("* 21", "* 10").replace("1{%", "2{%"))
    assert _built(state_project) == {"inc_reviews"}  # only a macro that no model calls changed


def test_an_empty_increment_leaves_what_reads_it_unbuilt(state_project: Project) -> None:
    assert _built(state_project, "-s", "inc_reviews+") == {"inc_reviews"}
    reviews = state_project.root / "data" / "reviews.csv"
    _edit(state_project, "data/reviews.csv", reviews.read_text() + "9,Cable,Short cable\n")
    assert _built(state_project, "-s", "stg_reviews+", "--exclude", "insights+") == {
        "stg_reviews", "by_product", "inc_reviews", "inc_count"}
    assert state_project.query("SELECT n FROM inc_count") == [(5,)]


def test_full_refresh_state_always_and_a_dropped_relation_build_again(state_project: Project) -> None:
    assert _built(state_project, "--full-refresh") == SQL_MODELS
    assert _built(state_project) == {"inc_reviews"}  # what --full-refresh built is recorded as usual
    _shop(state_project, "DROP TABLE dim_products")
    assert _built(state_project) == {"dim_products", "inc_reviews"}  # the same rows: by_product need not change
    state_project.write("models/stg_products.sql", "{{ config(state='always') }}\n"
                        + FILES["models/stg_products.sql"])
    assert _built(state_project) == {"stg_products", "dim_products", "by_product", "inc_reviews"}
    assert _built(state_project) == {"stg_products", "dim_products", "by_product", "inc_reviews"}


def test_an_llm_model_skips_staging_while_nothing_it_reads_changed(make_project: MakeProject) -> None:
    # `drawn` changes whenever the select is read: it shows whether the inputs were staged again
    project = make_project({"models/insights.sql": BASE_FILES["models/insights.sql"].replace(
        "review_text from", "review_text, random() as drawn from")})
    csv = project.root / "data" / "reviews.csv"
    _edit(project, "data/reviews.csv", csv.read_text())
    assert project.llmt("run").code == 0
    drawn = project.query("SELECT review_id, drawn FROM insights ORDER BY review_id")
    assert project.llmt("run").code == 0
    assert project.query("SELECT review_id, drawn FROM insights ORDER BY review_id") == drawn
    _edit(project, "data/reviews.csv", csv.read_text().replace("Battery died", "Battery died twice"))
    llm = project.llm_result(project.run_json())
    assert llm["requests"] == 1 and llm["rows"] == 4  # the changed row is asked, the others are not
    assert project.query("SELECT review_id, drawn FROM insights ORDER BY review_id") != drawn
    drawn = project.query("SELECT review_id, drawn FROM insights ORDER BY review_id")
    assert project.llmt("run", "--full-refresh").code == 0  # --full-refresh stages again
    assert project.query("SELECT review_id, drawn FROM insights ORDER BY review_id") != drawn


def test_a_changed_description_is_written_without_a_build(state_project: Project) -> None:
    state_project.write("models/props.yml", "models:\n  - name: dim_products\n    description: One row per product.\n"
                        "  - name: inc_reviews\n    description: Reviews, added as they come.\n")
    assert _built(state_project) == {"inc_reviews"}
    comments = ("SELECT relname, obj_description(oid) FROM pg_class WHERE relkind = 'r' AND relname IN "
                if state_project.pg is not None else "SELECT table_name, comment FROM duckdb_tables() WHERE "
                "table_name IN ")
    assert state_project.query(comments + "('dim_products', 'inc_reviews') ORDER BY 1") == [
        ("dim_products", "One row per product."), ("inc_reviews", "Reviews, added as they come.")]


def test_new_reader_options_of_a_file_source_rebuild_what_reads_it(state_project: Project) -> None:
    state_project.write("models/sources.yml", FILES["models/sources.yml"].replace(
        "file: data/products.csv}", "file: data/products.csv, options: {all_varchar: true}}"))
    assert _built(state_project) == {"stg_products", "dim_products", "by_product", "inc_reviews"}


def test_sql_downstream_of_an_embedding_model_is_built_only_when_an_embedding_changed(
        make_project: MakeProject) -> None:
    # `drawn` changes whenever the select is read: it shows whether the embedding model's inputs were staged again
    project = make_project({
        "models/sources.yml": "sources:\n  - name: raw\n    tables:\n      - {name: kb, file: data/kb.csv}\n",
        "data/kb.csv": "article_id,body\nKB-1,Clear a paper jam\nKB-2,Reset your password\n",
        "models/stg_reviews.sql": "", "models/insights.sql": "",
        "models/kb_embeddings.sql": "{{ config(materialized='embedding', column='body', unique_key='article_id', "
        "dimensions=8) }}\nselect article_id, body, random() as drawn from {{ source('raw', 'kb') }}\n",
        "models/kb_embedded.sql": "{{ config(materialized='table') }}\n"
        "select count(*) as n from {{ ref('kb_embeddings') }} where embedding is not null\n"})

    def run() -> tuple[int, bool]:
        """The embedding model's requests, and whether the table reading it was built."""
        data = project.run_json()
        table = next(r for r in data["results"] if r["name"] == "kb_embedded")
        return project.llm_result(data, "kb_embeddings")["requests"], not table["unchanged"]

    _edit(project, "data/kb.csv", (project.root / "data" / "kb.csv").read_text())
    assert run() == (2, True)
    drawn = project.query("SELECT article_id, drawn FROM kb_embeddings ORDER BY article_id")
    assert run() == (0, False)  # nothing embedded changed: the table that reads the vectors is not built again
    assert project.query("SELECT article_id, drawn FROM kb_embeddings ORDER BY article_id") == drawn  # nor staged
    _edit(project, "data/kb.csv", (project.root / "data" / "kb.csv").read_text() + "KB-3,Download an invoice\n")
    assert run() == (1, True)
    assert project.query("SELECT n FROM kb_embedded") == [(3,)]
