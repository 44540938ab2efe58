"""File sources: reader options handed to DuckDB (checked against what its reader takes), globs, reader errors
that name the source and its file, and tables loaded again only when the files changed, so that the database
holds no path and survives the project moving."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import duckdb
import pytest

from tests.conftest import Project

SOURCES = """
sources:
  - name: raw
    tables:
      - name: reviews
        file: %s
%s"""


def _sources(project: Project, file: str, options: str = "") -> None:
    extra = "".join(f"        {line}\n" for line in options.strip().splitlines()) if options else ""
    project.write("models/sources.yml", SOURCES % (file, extra))


def test_reader_options_reach_duckdb(project: Project) -> None:
    (project.root / "data" / "reviews.csv").write_bytes(
        "review_id;product;review_text\n1;Phone;Très bien\n2;Phone;N/A\n".encode("latin-1"))
    _sources(project, "data/reviews.csv",
             "options: {delim: ';', encoding: latin-1, nullstr: N/A, types: {review_id: VARCHAR}}")
    assert project.llmt("run").code == 0
    assert project.query("SELECT review_id, review_text FROM main.stg_reviews ORDER BY 1") == [
        ("1", "Très bien"), ("2", None)]


def test_an_unknown_reader_option_is_an_error_at_its_line_with_a_suggestion(project: Project) -> None:
    _sources(project, "data/reviews.csv", "options:\n  header: true\n  delimeter: ';'")
    result = project.llmt("ls")
    assert result.code == 2 and "Traceback" not in result.err
    assert "models/sources.yml:8:" in result.err and "`delimeter` is not an option of DuckDB's read_csv" in result.err
    assert "Did you mean `delimiter`?" in result.err
    # each format has its own reader and options
    _sources(project, "data/x.parquet", "options: {delim: ';'}")
    (project.root / "data" / "x.parquet").write_bytes(b"")
    result = project.llmt("ls")
    assert result.code == 2 and "`delim` is not an option of DuckDB's read_parquet" in result.err


def test_options_without_a_file_are_an_error(project: Project) -> None:
    project.write("models/sources.yml", "sources:\n  - name: raw\n    tables:\n      - name: reviews\n"
                                        "        identifier: t\n        options: {delim: ';'}\n")
    result = project.llmt("ls")
    assert result.code == 2 and "`options:` are for file sources" in result.err


def test_a_glob_reads_every_matching_file_and_one_matching_none_is_an_error(project: Project) -> None:
    parts = project.root / "data" / "parts"
    parts.mkdir()
    with duckdb.connect() as conn:
        for i in (1, 2):
            conn.execute(f"COPY (SELECT {i} AS review_id, 'Phone' AS product, 'text {i}' AS review_text) "
                         f"TO '{parts / f'p{i}.parquet'}' (FORMAT parquet)")
    _sources(project, "data/parts/*.parquet")
    assert project.llmt("run").code == 0
    assert project.query("SELECT review_id FROM main.stg_reviews ORDER BY 1") == [(1,), (2,)]
    _sources(project, "data/parts/*.csv")
    result = project.llmt("ls")
    assert result.code == 2 and "models/sources.yml:4:" in result.err
    assert "`file: data/parts/*.csv` matches no file" in result.err


def test_a_file_duckdb_cannot_read_names_the_source_and_file_with_duckdb_s_whole_message(project: Project) -> None:
    (project.root / "data" / "reviews.csv").write_text(
        "review_id,product,review_text\n1,Phone,fine\nx,Phone,bad id\n")
    _sources(project, "data/reviews.csv", "options: {types: {review_id: INTEGER}}")
    result = project.llmt("run")
    assert result.code == 1 and "Traceback" not in result.err
    assert "models/sources.yml:4: DuckDB cannot read source `raw.reviews` (data/reviews.csv)" in result.err
    # not cut off after its first line: the line, the column and what DuckDB detected
    assert "Original Line: x,Phone,bad id" in result.err and 'converting column "review_id"' in result.err
    assert "options:" in result.err and "LINE 1:" not in result.err


def test_a_file_read_wrongly_shows_the_columns_read(project: Project) -> None:
    (project.root / "data" / "reviews.csv").write_text("review_id|product|review_text\n1|Phone|fine\n")
    _sources(project, "data/reviews.csv", "options: {delim: ','}")  # the wrong delimiter, forced
    result = project.llmt("run")
    assert result.code == 1 and "Referenced column" in result.err
    assert 'The source `raw.reviews` (data/reviews.csv) was read with the columns "review_id|product|review_text"' \
        in result.err


def _loaded_at(project: Project) -> int:
    value = project.query("SELECT value FROM _llmt.fingerprints WHERE kind = 'source' "
                          "AND name = 'source__raw__reviews'")[0][0]
    return int(json.loads(value)["loaded_ns"])


def test_a_file_source_is_loaded_again_only_when_its_file_changed(project: Project) -> None:
    csv = project.root / "data" / "reviews.csv"
    past = time.time() - 100
    os.utime(csv, (past, past))
    assert project.llmt("run").code == 0
    first = _loaded_at(project)
    assert project.llmt("run").code == 0
    assert _loaded_at(project) == first  # unchanged: not read again
    csv.write_text(csv.read_text() + "5,Tablet,New one\n")
    os.utime(csv, (past + 50, past + 50))
    assert project.llmt("run").code == 0
    assert _loaded_at(project) > first
    assert project.query("SELECT count(*) FROM main.stg_reviews") == [(5,)]
    # a file modified just before it was loaded may change again unseen (same size and time stamp): read again
    os.utime(csv)
    assert project.llmt("run").code == 0
    second = _loaded_at(project)
    assert project.llmt("run").code == 0
    assert _loaded_at(project) > second


@pytest.mark.parametrize("moved", ["run", "read"])
def test_the_database_keeps_working_when_the_project_moves(project: Project, tmp_path: Path, moved: str) -> None:
    assert project.llmt("run").code == 0
    elsewhere = tmp_path / "moved" / "demo"
    shutil.move(project.root, elsewhere)
    project.root = elsewhere
    if moved == "run":  # the project runs where it now is: nothing to ask, every row still answered
        data = project.run_json()
        assert project.llm_result(data)["requests"] == 0
    # a reader opening the file from another directory queries the models (a view over the source, and more)
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        with duckdb.connect(str(elsewhere / "demo.duckdb"), read_only=True) as conn:
            assert conn.execute("SELECT count(*) FROM stg_reviews").fetchall() == [(4,)]
            assert conn.execute("SELECT count(*) FROM insights WHERE _llmt_status = 'ok'").fetchall() == [(4,)]
            view = conn.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'stg_reviews'").fetchone()
    finally:
        os.chdir(cwd)
    assert view is not None and str(tmp_path) not in view[0]  # no path in the database
