"""LLM models on a Spark target (the tests' shared local session, conftest.py `spark`): request keys, the
diff against stored answers and the typed output table computed in Spark, answers and attempts kept there as
append-only logs read one row per key, the run lifecycle in the state store. The same project gives the same
output on DuckDB and on Spark. (Kills at every crash point: test_spark_crash.py.)"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from tests.conftest import SCHEMA, Project, on_spark
from tests.pg import PgDatabase
from tests.test_spark import schema_of

OUTPUT = ("SELECT review_id, product, sentiment, score, issues, competitor, _llmt_status, _llmt_request_key, "
          "_llmt_model FROM {table} ORDER BY review_id")
# every kind of answer field: each becomes a typed column
KINDS = {**SCHEMA, "properties": {**SCHEMA["properties"], "confidence": {"type": "number"},
                                  "urgent": {"type": "boolean"}, "seen_on": {"type": "string", "format": "date"},
                                  "reported_at": {"type": "string", "format": "date-time"},
                                  "buyer": {"type": "object", "properties": {"name": {"type": "string"},
                                                                             "orders": {"type": "integer"}},
                                            "required": ["name", "orders"]},
                                  "extra": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
         "required": [*SCHEMA["required"], "confidence", "urgent", "seen_on", "reported_at", "buyer"]}
TESTS = """
    models:
      - name: insights
        columns:
          - name: sentiment
            tests: [not_null, {accepted_values: {values: [positive, negative, neutral]}}]
    """


def test_an_llm_model_on_spark_gives_what_it_gives_on_duckdb(make_project: Callable[[dict[str, str]], Project],
                                                             spark: Any, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "scratch"  # where rows are handed to Spark as parquet files (local mode)
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    p = make_project({"models/schema.yml": TESTS, "schemas/analysis.json": json.dumps(KINDS)})
    config = yaml.safe_load((p.root / "project.yml").read_text(encoding="utf-8"))
    config["targets"]["local"] = {"warehouse": {"path": "demo.duckdb"}, "provider": {"type": "fake"}}
    (p.root / "project.yml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    p = on_spark(p, spark)
    schema = schema_of(p)

    on_duckdb = p.llm_result(p.run_json("--target", "local"))
    first = p.llm_result(p.run_json())
    assert first["rows"] == on_duckdb["rows"] == 4 and first["requests"] == on_duckdb["requests"] == 4
    assert first["answered"] == 4 and first["outcomes"] == {"ok": 4}
    with duckdb.connect(str(p.root / "demo.duckdb"), read_only=True) as local:
        expected = local.execute(OUTPUT.format(table="main.insights")).fetchall()
    got = p.query(OUTPUT.format(table=f"{schema}.insights"))
    assert [tuple(list(v) if isinstance(v, list) else v for v in row) for row in got] == expected
    # typed columns, from the answers' JSON by from_json
    types = {r[0]: r[1] for r in p.query(f"DESCRIBE TABLE {schema}.insights")}
    assert [types[c] for c in ("sentiment", "score", "issues", "competitor", "confidence", "urgent", "seen_on",
                               "reported_at", "buyer", "extra")] == [
        "string", "bigint", "array<string>", "string", "double", "boolean", "date", "timestamp",
        "struct<name:string,orders:bigint>", "string"]
    shown: dict[str, list[dict[str, Any]]] = {}
    for target in ("local", "dev"):
        result = p.llmt("show", "insights", "--target", target, "--output", "json")
        assert result.code == 0, result.err
        shown[target] = sorted(json.loads(result.out), key=lambda r: int(r["review_id"]))
    for rows in shown.values():  # (answered at other times)
        assert all(row.pop("_llmt_answered_at") for row in rows)
    assert shown["dev"] == shown["local"]  # every column, as `llmt show` gives it
    # answers and attempts are in Spark; the shards and runs in the state store
    state = f"{schema}_llmt"
    assert p.query(f"SELECT count(*), count(DISTINCT request_key) FROM {state}.answers") == [(4, 4)]
    assert p.query(f"SELECT outcome, count(*) FROM {state}.attempts GROUP BY outcome") == [("ok", 4)]
    with duckdb.connect(str(p.root / "llmt_state.duckdb"), read_only=True) as life:
        assert life.execute("SELECT status, sum(n_requests) FROM _llmt.shards GROUP BY 1").fetchall() == [
            ("collected", 4)]
        assert life.execute("SELECT count(*) FROM _llmt.answers").fetchone() == (0,)

    # nothing changed: nothing is sent; one changed row: one request
    again = p.llm_result(p.run_json())
    assert (again["requests"], again["cached"]) == (0, 4)
    p.write("data/reviews.csv", "review_id,product,review_text\n1,Phone,Great phone\n2,Phone,Battery died fast\n"
            "3,Cable,Great phone\n4,Cable,Kabel ist kaputt — schade\n")
    changed = p.llm_result(p.run_json())
    assert (changed["requests"], changed["cached"]) == (1, 3)
    rows = p.query(OUTPUT.format(table=f"{schema}.insights"))
    assert [r[6] for r in rows] == ["ok"] * 4 and rows[0] == got[0] and rows[1][7] != got[1][7]

    tested = p.llmt("test", "--output", "json")
    assert tested.code == 0, tested.err + tested.out
    assert {t["status"] for t in json.loads(tested.out)["tests"]} == {"pass"}
    shown = p.llmt("show", "insights", "--output", "json")
    assert shown.code == 0, shown.err
    assert {r["review_id"]: r["_llmt_status"] for r in json.loads(shown.out)} == dict.fromkeys(range(1, 5), "ok")
    planned = p.llmt("plan", "--output", "json")
    assert planned.code == 0, planned.err + planned.out
    status = p.llmt("status", "--output", "json")
    assert status.code == 0, status.err
    assert not list(scratch.glob("llmt-spark-*"))  # removed when each command's warehouse closed


def test_reask_realtime_full_refresh_and_escalation_on_spark(make_project: Callable[[dict[str, str]], Project],
                                                             spark: Any) -> None:
    """--reask appends newer answers, which are the ones read; realtime answers are appended as they come; a full
    refresh rebuilds the output from the stored answers without asking again; escalated rows show the stronger
    model's answers."""
    p = on_spark(make_project({}), spark)
    schema, state = schema_of(p), f"{schema_of(p)}_llmt"
    first = p.llm_result(p.run_json("--mode", "realtime"))
    assert (first["requests"], first["answered"]) == (4, 4)
    before = dict(p.query(f"SELECT review_id, _llmt_answered_at FROM {schema}.insights"))

    reasked = p.llm_result(p.run_json("--reask", "--yes", "-s", "insights"))
    assert (reasked["requests"], reasked["reasked"]) == (4, 4)
    assert p.query(f"SELECT count(*), count(DISTINCT request_key) FROM {state}.answers_log") == [(8, 4)]
    assert p.query(f"SELECT count(*) FROM {state}.answers") == [(4,)]
    after = dict(p.query(f"SELECT review_id, _llmt_answered_at FROM {schema}.insights"))
    assert all(after[k] > before[k] for k in before)  # the newer answers are read
    newest = p.query(f"SELECT max(answered_at) FROM {state}.answers_log")[0][0]
    assert set(after.values()) == {newest}

    refreshed = p.llm_result(p.run_json("--full-refresh", "-s", "insights"))
    assert (refreshed["requests"], refreshed["cached"]) == (0, 4)
    assert dict(p.query(f"SELECT review_id, _llmt_answered_at FROM {schema}.insights")) == after

    # rows whose answer says they are unsure go to a stronger model; the output shows its answers
    low = {r[0] for r in p.query(f"SELECT review_id FROM {schema}.insights WHERE score < 5")}
    with_llm = (p.root / "project.yml").read_text(encoding="utf-8").replace(
        "llm:\n", "llm:\n  escalate: {model: gpt-4o, when_field: {score: '< 5'}, max_share: 1.0}\n", 1)
    (p.root / "project.yml").write_text(with_llm, encoding="utf-8")
    escalated = p.llm_result(p.run_json("-s", "insights"))
    assert escalated["requests"] == len(low) and low  # (the fake provider's scores of these four rows)
    assert {r[0]: r[1] for r in p.query(f"SELECT review_id, _llmt_model FROM {schema}.insights")} == {
        k: "gpt-4o" if k in low else "gpt-4o-mini" for k in range(1, 5)}


def test_a_team_keeps_the_run_lifecycle_of_a_spark_target_in_postgresql(
        make_project: Callable[[dict[str, str]], Project], spark: Any, pg: PgDatabase) -> None:
    """`state: {type: postgres}`: shards, runs and fingerprints on the server (collect reconciles in an in-memory
    DuckDB given the shards' requests from there), answers and attempts in Spark."""
    p = on_spark(make_project({}), spark)
    config = yaml.safe_load((p.root / "project.yml").read_text(encoding="utf-8"))
    config["targets"]["dev"]["state"] = {"type": "postgres", "dsn": pg.uri}
    (p.root / "project.yml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    first = p.llm_result(p.run_json())
    assert (first["requests"], first["answered"]) == (4, 4)
    schema = schema_of(p)
    assert p.query(f"SELECT _llmt_status, count(*) FROM {schema}.insights GROUP BY 1") == [("ok", 4)]
    assert pg.query("SELECT status, sum(n_requests) FROM _llmt.shards GROUP BY 1") == [("collected", 4)]
    assert pg.query("SELECT count(*) FROM _llmt.answers") == [(0,)]  # (they are in Spark)
    assert not (p.root / "llmt_state.duckdb").exists()
    assert p.llm_result(p.run_json())["requests"] == 0
