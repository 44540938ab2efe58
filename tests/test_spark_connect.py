"""A Spark target with `remote:` (Spark Connect): llmt's commands on a real Spark Connect server, the one the
pyspark package ships (its spark-connect jar), started over the tests' local Spark (conftest.py `spark`: one
JVM, one catalog) and listening on loopback, once per test session."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import Project
from tests.test_spark import SHOUTED, add_a_review, first_run, schema_of, sql_only


@pytest.fixture
def connect_project(make_project: Callable[[dict[str, str]], Project], spark_connect: str) -> Iterator[Project]:
    """The SQL-only project on a `remote:` target; ``query`` reads through a Connect session of its own, made
    first: the process's active Connect session, as a notebook's would be beside llmt's."""
    from pyspark.sql.connect.session import SparkSession

    reader = SparkSession.builder.remote(spark_connect).create()
    project = sql_only(make_project, reader, master=None, remote=spark_connect)
    yield project
    reader.stop()


def test_sql_models_run_test_and_show_on_spark_connect(connect_project: Project) -> None:
    p, schema = connect_project, schema_of(connect_project)
    first_run(p, schema)
    assert p.query(f"SELECT CAST(local_time AS STRING), unix_micros(instant) FROM {schema}.times") == [
        ("2024-03-10 02:30:00", 1704144845000000)]
    assert p.query(f"DESCRIBE TABLE EXTENDED {schema}.product_counts")[0][2] == "The product's name."

    add_a_review(p)  # (an incremental model's delete+insert: a temporary table checkpointed on the server)
    again = p.run_json()
    assert {r["name"] for r in again["results"] if r["unchanged"]} == {"times"}
    assert p.query(f"SELECT review_id, shout FROM {schema}.review_log ORDER BY review_id") == SHOUTED

    tested = p.llmt("test", "--output", "json")
    assert tested.code == 0, tested.err + tested.out
    tests = {t["name"]: t["status"] for t in json.loads(tested.out)["tests"]}
    assert tests and set(tests.values()) == {"pass"} and "unique_product_counts_product" in tests
    shown = p.llmt("show", "product_counts", "--output", "json")
    assert shown.code == 0, shown.err
    assert sorted(json.loads(shown.out), key=lambda r: r["product"]) == [
        {"product": "Cable", "reviews": 2, "last_review": 4}, {"product": "Case", "reviews": 1, "last_review": 5},
        {"product": "Phone", "reviews": 2, "last_review": 2}]


def test_a_spark_connect_server_that_does_not_answer_is_said_at_once(
        make_project: Callable[[dict[str, str]], Project]) -> None:
    """Not after the Connect client's ten minutes of retries: its first request is tried for a few seconds."""
    with socket.socket() as closed:  # (a port of this process's, where nothing listens)
        closed.bind(("127.0.0.1", 0))
        url = f"sc://127.0.0.1:{closed.getsockname()[1]}"
        p = sql_only(make_project, None, master=None, remote=url)
        result = p.llmt("run")
    assert result.code == 2, result.err
    assert f"the Spark Connect server of target `dev` does not answer at {url}: failed to connect" in result.err
    assert "Traceback" not in result.err and "RETRIES_EXCEEDED" not in result.err
