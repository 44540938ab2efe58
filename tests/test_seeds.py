"""`llmt seed`: seeds/*.csv loaded into tables (dbt's seeds), again only when a file changed."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import BASE_FILES, Project, on_postgres

MakeProject = Callable[[dict[str, str]], Project]

SEEDS = {
    "seeds/countries.csv": "code,name,population\n007,Bond Land,7\n044,United Kingdom,67000000\n",
    "seeds/lookups/ratings.csv": "stars;label\n1;bad\n5;great\n",
    "seeds/properties.yml": """
        seeds:
          - name: countries
            description: Country codes.
            config:
              column_types: {code: VARCHAR}
            columns:
              - name: code
                description: ISO code, with its leading zeros.
                data_tests: [unique, not_null]
        """,
    "project.yml": BASE_FILES["project.yml"].rstrip() + """
        seeds:
          lookups:
            +delimiter: ';'
            +schema: lookups
        """,
    "models/by_country.sql": "{{ config(materialized='table') }}\n"
    "select c.code, c.name, r.label from {{ ref('countries') }} c cross join {{ ref('ratings') }} r "
    "where r.stars = 5\n",
    "models/other.sql": "{{ config(materialized='table') }}\nselect 1 as one\n",
}


def _results(project: Project, *args: str) -> dict[str, dict[str, Any]]:
    result = project.llmt(*args, "--output", "json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    return {r["name"]: r for r in [*data.get("results", []), *data.get("nodes", []), *data.get("tests", [])]}


def _edit(project: Project, rel: str, text: str) -> None:
    """A file with a time stamp in the past (file_sources.RACY_NS: one modified just now is loaded again)."""
    project.write(rel, text)
    past = time.time() - 100
    os.utime(project.root / rel, (past, past))


@pytest.fixture(params=["duckdb", "postgres"])
def seeded(request: pytest.FixtureRequest, make_project: MakeProject) -> Project:
    """The project with its seeds, on DuckDB or PostgreSQL (models in schema `main` on both)."""
    project = make_project(SEEDS)
    if request.param == "postgres":
        on_postgres(project, request.getfixturevalue("pg"), schema="main")
    for rel in ("seeds/countries.csv", "seeds/lookups/ratings.csv"):
        _edit(project, rel, SEEDS[rel])
    return project


def test_seed_loads_each_csv_into_a_table_that_ref_reads(seeded: Project) -> None:
    result = seeded.llmt("seed")
    assert result.code == 0, result.err
    assert "ok    countries [seed] 2 rows" in result.err and "ok    ratings [seed] 2 rows" in result.err
    assert seeded.query("SELECT code, name, population FROM main.countries ORDER BY code") == [
        ("007", "Bond Land", 7), ("044", "United Kingdom", 67000000)]  # column_types kept the leading zeros
    assert seeded.query("SELECT stars, label FROM main_lookups.ratings ORDER BY stars") == [(1, "bad"), (5, "great")]
    comment = ("SELECT obj_description('main.countries'::regclass)" if seeded.pg is not None
               else "SELECT comment FROM duckdb_tables() WHERE table_name = 'countries'")
    assert seeded.query(comment) == [("Country codes.",)]
    entries = json.loads((seeded.root / "target" / "run_results.json").read_text())["results"]
    assert {(e["unique_id"], e["resource_type"], e["status"]) for e in entries} == {
        ("seed.countries", "seed", "success"), ("seed.ratings", "seed", "success")}
    assert seeded.llmt("run", "-s", "by_country").code == 0
    assert seeded.query("SELECT code, label FROM main.by_country ORDER BY code") == [("007", "great"), ("044", "great")]
    manifest = json.loads((seeded.root / "target" / "manifest.json").read_text())
    assert manifest["nodes"]["model.by_country"]["seeds"] == ["countries", "ratings"]
    assert manifest["seeds"]["seed.ratings"]["relation"] == '"main_lookups"."ratings"'


def test_a_seed_is_loaded_again_only_when_its_file_or_config_changed(seeded: Project) -> None:
    assert seeded.llmt("seed").code == 0
    assert seeded.llmt("run").code == 0
    again = _results(seeded, "seed")
    assert again["countries"]["unchanged"] and again["ratings"]["unchanged"] and again["countries"]["rows"] == 2
    assert "skip  countries [seed] (unchanged)" in seeded.llmt("seed").err
    _edit(seeded, "seeds/countries.csv", SEEDS["seeds/countries.csv"] + "049,Germany,83000000\n")
    loaded = _results(seeded, "seed")
    assert not loaded["countries"]["unchanged"] and loaded["countries"]["rows"] == 3 and loaded["ratings"]["unchanged"]
    built = _results(seeded, "run")
    assert not built["by_country"]["unchanged"] and built["other"]["unchanged"]  # only what reads it is built
    assert seeded.query("SELECT count(*) FROM main.by_country") == [(3,)]
    seeded.write("seeds/properties.yml", SEEDS["seeds/properties.yml"].replace("{code: VARCHAR}",
                                                                              "{code: VARCHAR, population: DOUBLE}"))
    assert not _results(seeded, "seed")["countries"]["unchanged"]  # its config changed: loaded again
    assert not _results(seeded, "run")["by_country"]["unchanged"]
    full = _results(seeded, "seed", "--full-refresh", "-s", "ratings")
    assert list(full) == ["ratings"] and not full["ratings"]["unchanged"]


def test_a_model_reading_a_seed_never_loaded_says_to_run_llmt_seed(seeded: Project) -> None:
    result = seeded.llmt("run", "-s", "by_country")
    assert result.code == 1
    assert "`by_country` reads seed `countries` (seeds/countries.csv), which is not loaded" in result.err
    assert "Run `llmt seed`" in result.err


def test_build_loads_the_seeds_first_and_tests_them(seeded: Project) -> None:
    results = _results(seeded, "build", "-s", "by_country")
    assert results["countries"]["resource_type"] == "seed" and results["by_country"]["status"] == "success"
    assert results["unique_seed_countries_code"]["status"] == "pass"
    _edit(seeded, "seeds/countries.csv", SEEDS["seeds/countries.csv"] + "007,Bond Land again,1\n")
    result = seeded.llmt("build", "--output", "json")
    assert result.code == 1
    nodes = {n["name"]: n for n in json.loads(result.out)["nodes"]}
    assert nodes["by_country"]["status"] == "skipped"
    assert "a test of seed `countries` failed" in nodes["by_country"]["message"]
    assert nodes["other"]["status"] == "success"


def test_a_seed_that_cannot_be_read_fails_alone(seeded: Project) -> None:
    seeded.write("seeds/properties.yml", SEEDS["seeds/properties.yml"].replace("{code: VARCHAR}", "{cod: VARCHAR}"))
    result = seeded.llmt("seed")
    assert result.code == 1
    assert "DuckDB cannot read seed `countries` (seeds/countries.csv)" in result.err and "cod" in result.err
    assert "seeds/properties.yml:2" in result.err
    assert "ok    ratings [seed]" in result.err


@pytest.mark.parametrize(("files", "message"), [
    ({"seeds/properties.yml": "seeds:\n  - name: countries\n    config: {column_type: {code: VARCHAR}}\n"},
     "unknown seed config key `column_type`. Did you mean `column_types`?"),
    ({"seeds/properties.yml": "seeds:\n  - name: countries\n    config: {column_types: [code]}\n"},
     "`column_types` must map column names to SQL types"),
    ({"seeds/properties.yml": "seeds:\n  - name: countrie\n"}, "properties for unknown seed `countrie`"),
    ({"seeds/other.csv": "one\n1\n"}, "a seed and a model are both named `other`"),
])
def test_seed_config_mistakes_are_errors(seeded: Project, files: dict[str, str], message: str) -> None:
    for rel, text in files.items():
        seeded.write(rel, text)
    result = seeded.llmt("seed")
    assert result.code == 2 and message in result.err and "Traceback" not in result.err, result.err
