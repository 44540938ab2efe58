"""Apache Spark as a warehouse, in local mode on the tests' shared session (conftest.py `spark`): SQL models
(view, table, incremental), file sources, `llmt run`/`build`/`test`/`show`, with llmt's run lifecycle in the
target's state store (a DuckDB file); and a catalog that outlives the process. The request key on Spark is
tested with every engine's in test_keys_conformance.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from tests.conftest import BASE_FILES, Project, on_spark

SQL_ONLY = {
    "models/insights.sql": "",
    "models/product_counts.sql": """
        {{ config(materialized='table') }}
        select product, count(*) as reviews, max(review_id) as last_review from {{ ref('stg_reviews') }}
        group by product
        """,
    "models/review_log.sql": """
        {{ config(materialized='incremental', unique_key='review_id') }}
        select review_id, product, upper(review_text) as shout from {{ ref('stg_reviews') }}
        {% if is_incremental() %} where review_id >= (select max(review_id) from {{ this }}) {% endif %}
        """,
    "data/times.csv": "id,day,local_time,instant,nothing,seen,big\n"
                      "1,2024-03-10,2024-03-10 02:30:00,2024-01-02 03:04:05+05:30,,"
                      "4294967295,12345678901234567890123\n",
    "models/times.sql": "select * from {{ source('raw', 'times') }}\n",
    "models/sources.yml": BASE_FILES["models/sources.yml"].rstrip() + """
              - name: times
                file: data/times.csv
                options: {types: {seen: UINTEGER, big: HUGEINT}}
        """,
    "models/schema.yml": """
        models:
          - name: product_counts
            description: Reviews per product.
            columns:
              - name: product
                description: The product's name.
                tests: [not_null, unique]
        """,
}


def sql_only(make_project: Callable[[dict[str, str]], Project], session: Any, **warehouse: Any) -> Project:
    """The SQL-only project on a Spark target (``warehouse``: its keys beside conftest.on_spark's)."""
    project = on_spark(make_project(SQL_ONLY), session, **warehouse)
    past = time.time() - 100  # (a file modified just before a run is loaded again by the next: file_sources.RACY_NS)
    for data in (project.root / "data").iterdir():
        os.utime(data, (past, past))
    return project


SHOUTED = [(1, "GREAT PHONE"), (2, "BATTERY DIED"), (3, "GREAT PHONE"), (4, "KABEL IST KAPUTT — SCHADE!"),
           (5, "FITS")]


@pytest.fixture
def spark_project(make_project: Callable[[dict[str, str]], Project], spark: Any) -> Project:
    return sql_only(make_project, spark)


def first_run(p: Project, schema: str) -> None:
    """The SQL-only project's first run builds every model."""
    first = p.run_json()
    assert {r["name"]: r["status"] for r in first["results"]} == dict.fromkeys(
        ["stg_reviews", "product_counts", "review_log", "times"], "success")
    assert p.query(f"SELECT product, reviews, last_review FROM {schema}.product_counts ORDER BY product") == [
        ("Cable", 2, 4), ("Phone", 2, 2)]


def add_a_review(p: Project) -> None:
    """A fifth review in the source file: the incremental model's rows are then SHOUTED."""
    p.write("data/reviews.csv", "review_id,product,review_text\n1,Phone,Great phone\n2,Phone,Battery died\n"
            "3,Cable,Great phone\n4,Cable,Kabel ist kaputt — schade!\n5,Case,Fits\n")


def schema_of(project: Project) -> str:
    config = yaml.safe_load((project.root / "project.yml").read_text(encoding="utf-8"))
    return str(config["targets"]["dev"]["warehouse"]["schema"])


def test_sql_models_run_build_test_and_show_on_spark(spark_project: Project) -> None:
    p, schema = spark_project, schema_of(spark_project)
    first_run(p, schema)
    kinds = {r[1]: r[2] for r in p.query(f"SHOW TABLES IN {schema}")}
    views = {r[1] for r in p.query(f"SHOW VIEWS IN {schema}")}
    assert set(kinds) >= {"stg_reviews", "product_counts", "review_log"} and views == {"stg_reviews", "times"}
    # a file source's types: a time without a zone as it is (even in a DST gap), an instant as the instant,
    # integers Spark has no type of in one that holds them
    assert p.query(f"SELECT typeof(local_time), CAST(local_time AS STRING), unix_micros(instant), nothing, "
                   f"typeof(seen), seen, typeof(big), CAST(big AS STRING) FROM {schema}.times") == [
        ("timestamp_ntz", "2024-03-10 02:30:00", 1704144845000000, None, "bigint", 4294967295, "decimal(38,0)",
         "12345678901234567890123")]
    # the run lifecycle is in the state store, not in Spark
    with duckdb.connect(str(p.root / "llmt_state.duckdb"), read_only=True) as state:
        assert state.execute("SELECT count(*) FROM _llmt.runs WHERE status = 'success'").fetchone() == (1,)
        built = {r[0] for r in state.execute("SELECT name FROM _llmt.fingerprints WHERE kind = 'model'").fetchall()}
    assert built == {"stg_reviews", "product_counts", "review_log", "times"}
    assert sorted(r[1] for r in p.query(f"SHOW TABLES IN {schema}_llmt")) == [  # the file sources
        "source__raw__reviews", "source__raw__times"]
    # the table's description is its comment
    assert p.query(f"DESCRIBE TABLE EXTENDED {schema}.product_counts")[0][2] == "The product's name."

    # unchanged models are skipped (incremental ones run); a new row reaches the incremental model by
    # delete+insert (an INSERT OVERWRITE)
    again = p.run_json()
    assert {r["name"] for r in again["results"] if r["unchanged"]} == {"stg_reviews", "product_counts", "times"}
    add_a_review(p)
    assert p.llmt("run").code == 0
    assert p.query(f"SELECT review_id, shout FROM {schema}.review_log ORDER BY review_id") == SHOUTED

    tested = p.llmt("test")
    assert tested.code == 0, tested.err + tested.out
    shown = p.llmt("show", "product_counts", "--output", "json")
    assert shown.code == 0, shown.err
    assert {"product": "Case", "reviews": 1, "last_review": 5} in json.loads(shown.out)
    built = p.llmt("build", "--output", "json")  # models (unchanged: skipped) and their tests
    assert built.code == 0, built.err + built.out
    report = json.loads(built.out)
    assert {r["name"]: r["status"] for r in report["nodes"]}["product_counts"] == "success"
    assert report["tests"] and {r["status"] for r in report["tests"]} == {"pass"}
    status = p.llmt("status", "--output", "json")  # read from the state store
    assert status.code == 0, status.err
    assert json.loads(status.out)["open_batches"] == [] and json.loads(status.out)["target"] == "dev"
    planned = p.llmt("plan")
    assert planned.code == 0, planned.err + planned.out
    documented = p.llmt("docs", "generate")  # the catalog read from Spark's
    assert documented.code == 0, documented.err
    catalog = json.loads((p.root / "target" / "catalog.json").read_text())
    counts = catalog["nodes"]["model.product_counts"]
    assert counts["metadata"]["name"] == "product_counts" and set(counts["columns"]) >= {"product", "reviews"}
    cleaned = p.llmt("clean")
    assert cleaned.code == 0, cleaned.err
    assert not (p.root / "target").exists() and (p.root / "llmt_state.duckdb").is_file()


def test_a_syntax_error_in_spark_sql_names_the_file_and_line(spark_project: Project) -> None:
    spark_project.write("models/product_counts.sql", "select product,\n  count(* from {{ ref('stg_reviews') }}\n")
    result = spark_project.llmt("run")
    assert result.code == 2
    assert "models/product_counts.sql:2" in result.err


def test_what_does_not_run_on_spark_yet_is_refused_before_anything_runs(
        make_project: Callable[[dict[str, str]], Project], spark: Any) -> None:
    p = on_spark(make_project({"models/embedded.sql": """
        {{ config(materialized='embedding', column='review_text', unique_key='review_id', dimensions=8) }}
        select review_id, review_text from {{ ref('stg_reviews') }}
        """}), spark)
    for command in ("run", "plan"):
        result = p.llmt(command)
        assert result.code == 2
        assert "embedding models (embedded) cannot run on target `dev` yet" in result.err
        assert "Traceback" not in result.err
    for command, what in ((["eval"], "`llmt eval`"), (["finetune", "status"], "Fine-tuning")):
        result = p.llmt(*command)
        assert result.code == 2 and f"{what} cannot run on target `dev` yet" in result.err, result.err
    assert schema_of(p) not in {r[0] for r in p.query("SHOW DATABASES")}  # nothing was built


def test_tables_survive_between_runs_in_the_local_catalog(make_project: Callable[[dict[str, str]], Project],
                                                          tmp_path: Path) -> None:
    """Each command is a process of its own, with Spark in it: the catalog (Derby) and the tables' files are
    under the project, so the second process finds what the first built."""
    p = make_project(SQL_ONLY)
    config = yaml.safe_load((p.root / "project.yml").read_text(encoding="utf-8"))
    config["targets"]["dev"]["warehouse"] = {"type": "spark", "master": "local[1]", "schema": "shop",
                                             "conf": {"spark.driver.memory": "512m", "spark.ui.enabled": False}}
    (p.root / "project.yml").write_text(yaml.safe_dump(config), encoding="utf-8")

    def llmt(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "llmt", *args, "--project-dir", str(p.root)],
                              capture_output=True, text=True, timeout=600, env={**os.environ})

    built = llmt("run", "-s", "stg_reviews", "product_counts")
    assert built.returncode == 0, built.stderr
    assert (p.root / "spark-warehouse" / "metastore_db").is_dir()
    shown = llmt("show", "product_counts", "--output", "json")
    assert shown.returncode == 0, shown.stderr
    assert sorted((r["product"], r["reviews"]) for r in json.loads(shown.stdout)) == [
        ("Cable", 2), ("Phone", 2)]


@pytest.mark.parametrize(("warehouse", "state", "message"), [
    ({"path": "demo.duckdb"}, {"type": "duckdb", "path": "s.duckdb"},
     "`state:` names where a Spark warehouse keeps llmt's run lifecycle"),
    ({"type": "spark", "master": "local[1]", "remote": "sc://h:15002"}, None, "give `master`"),
    ({"type": "spark"}, {"type": "sqlite"}, "`type` must be duckdb or postgres"),
    ({"type": "sparc"}, None, "`type` must be duckdb, postgres or spark"),
])
def test_a_spark_target_and_its_state_store_are_checked(make_project: Callable[[dict[str, str]], Project],
                                                        warehouse: dict[str, Any], state: dict[str, Any] | None,
                                                        message: str) -> None:
    p = make_project(SQL_ONLY)
    config = yaml.safe_load((p.root / "project.yml").read_text(encoding="utf-8"))
    config["targets"]["dev"] = {"warehouse": warehouse, **({"state": state} if state else {})}
    (p.root / "project.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    result = p.llmt("ls")
    assert result.code == 2 and message in result.err and "Traceback" not in result.err, result.err


def test_a_spark_target_keeps_its_state_where_state_says() -> None:
    from llmt.project.config import DuckDBConfig, PostgresConfig, TargetConfig

    default = TargetConfig.model_validate({"warehouse": {"type": "spark"}})
    assert default.warehouse.type == "spark" and default.warehouse.master == "local[*]"
    assert default.warehouse.state_store == DuckDBConfig(path="llmt_state.duckdb")
    team = TargetConfig.model_validate({"warehouse": {"type": "spark", "remote": "sc://h:15002"},
                                        "state": {"type": "postgres", "dsn": "postgresql://db/llmt"}})
    assert isinstance(team.warehouse.state_store, PostgresConfig) and team.warehouse.state_store.dsn == \
        "postgresql://db/llmt"
    assert team.warehouse.model_copy(update={"schema_": "x"}).state_store == team.warehouse.state_store


def test_without_java_a_spark_target_says_what_to_install(make_project: Callable[[dict[str, str]], Project]) -> None:
    p = make_project(SQL_ONLY)
    config = yaml.safe_load((p.root / "project.yml").read_text(encoding="utf-8"))
    config["targets"]["dev"]["warehouse"] = {"type": "spark"}
    (p.root / "project.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "llmt", "run", "--project-dir", str(p.root)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "JAVA_HOME": str(p.root / "no-java")})
    assert done.returncode == 2, done.stderr
    assert "Spark needs a Java runtime" in done.stderr and "Traceback" not in done.stderr
