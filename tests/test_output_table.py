"""How the output and staged tables are stored: long texts with ZSTD and request keys (hex digests)
uncompressed (cheap to write), short texts left to DuckDB (the staged table packs every text but the unique key: its
lengths are not known beforehand); a run with nothing new leaves the table as it is and reports the same
statuses."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from llmt.warehouse import outputs as output
from llmt.warehouse.duckdb import DuckDBWarehouse
from llmt.warehouse.staging import input_counts, stage_table
from llmt.warehouse.store import StateStore
from tests.conftest import Project

MakeProject = Callable[[dict[str, str]], Project]
LONG = "The battery lasts two days and the sound is clear, but the left earbud crackles at high volume."


def test_long_texts_are_stored_with_zstd_keys_uncompressed_and_read_back_unchanged(make_project: MakeProject) -> None:
    rows = [(1, "Phone", LONG), (2, "Phone", LONG + " Again."), (3, "Cable", LONG.upper()), (4, "Cable", "Short")]
    csv = "review_id,product,review_text\n" + "".join(f'{i},{p},"{t}"\n' for i, p, t in rows)
    project = make_project({"data/reviews.csv": csv})
    first = project.llm_result(project.run_json())
    ddl = project.query("SELECT sql FROM duckdb_tables() WHERE table_name = 'insights'")[0][0]
    assert "review_text VARCHAR USING COMPRESSION ZSTD" in ddl  # 80 bytes on average
    assert "product VARCHAR," in ddl and "sentiment VARCHAR," in ddl  # short texts
    for key in ("_llmt_request_key", "_llmt_answer_key"):
        assert f"{key} VARCHAR USING COMPRESSION Uncompressed" in ddl
    assert ddl.count("USING COMPRESSION") == 3
    assert project.query("SELECT review_id, product, review_text FROM main.insights ORDER BY 1") == rows
    assert project.query("SELECT count(*) FROM main.insights WHERE _llmt_status = 'ok' AND score IS NOT NULL") == [(4,)]
    again = project.llm_result(project.run_json())  # nothing changed: the table is left alone
    assert (again["requests"], again["failed"], again["pending"], again["stale"]) == (0, 0, 0, 0)
    assert project.query("SELECT sql FROM duckdb_tables() WHERE table_name = 'insights'")[0][0] == ddl
    assert first["failed"] == first["pending"] == 0
    staged = project.query("SELECT sql FROM duckdb_tables() WHERE table_name = 'input__insights'")[0][0]
    assert "review_text VARCHAR USING COMPRESSION ZSTD" in staged and "product VARCHAR USING COMPRESSION ZSTD" in staged
    assert "review_id BIGINT," in staged  # the unique key is joined on: left to DuckDB
    assert "_llmt_request_key VARCHAR USING COMPRESSION Uncompressed" in staged and "_llmt_input_hash" not in staged


def test_the_output_build_leaves_the_next_runs_input_counts(project: Project) -> None:
    project.write("prompts/analyse.md", "Review: {{ review_text }}\n")  # rows 1 and 3 share their request
    for args in (["--sample", "1"], []):  # one request answered (the rest pending), then all
        project.run_json(*args)
        wh = DuckDBWarehouse(project.db, project.root)
        try:
            store = StateStore(wh)
            staged = store.fingerprint("stage", "insights")
            assert staged is not None
            remembered = staged["counts"]
            store.set_fingerprint("stage", "insights", {**staged, "counts": None})
            fresh = input_counts(wh, store, stage_table(wh, "insights"), "insights")  # counted by joining answers
            recounted = store.fingerprint("stage", "insights")
            assert recounted is not None and recounted["counts"] == remembered == {"key": remembered["key"],
                                                                                   "value": list(fresh)}
            assert fresh[0] == 4 and (fresh[1] < 4) == bool(args)
        finally:
            wh.close()


def test_updating_in_place_sees_a_change_in_a_column_the_prompt_does_not_use(
    project: Project, monkeypatch: pytest.MonkeyPatch,
) -> None:
    project.write("prompts/analyse.md", "Review: {{ review_text }}\n")  # product is in the output, not the prompt
    project.run_json()
    monkeypatch.setattr(output, "IN_PLACE_MIN_ROWS", 0)  # (4 rows: normally rebuilt whole)
    monkeypatch.setattr(output, "IN_PLACE_MAX_SHARE", 1.0)

    def no_rebuild(*args: object) -> None:
        raise AssertionError("rebuilt whole")

    monkeypatch.setattr(output, "_rebuild", no_rebuild)
    csv = project.root / "data" / "reviews.csv"
    csv.write_text(csv.read_text().replace("2,Phone,Battery died", "2,Tablet,Battery died"))
    again = project.llm_result(project.run_json())
    assert again["requests"] == 0  # the request did not change; the row did
    assert project.query("SELECT product, _llmt_status FROM main.insights WHERE review_id = 2") == [("Tablet", "ok")]
