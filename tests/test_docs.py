"""`llmt docs generate` / `llmt docs serve`: catalog.json in dbt's shape, one static page with the lineage graph
and a card per model, checked in a real headless Chromium."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from llmt.docs.lineage import NODE_H, NODE_W, layout
from tests.browser import Browser
from tests.conftest import Project, as_from_a_terminal, on_postgres
from tests.pg import PgDatabase

MakeProject = Callable[[dict[str, str]], Project]


def catalog(project: Project) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((project.root / "target" / "catalog.json").read_text())
    return data


def test_catalog_has_the_warehouses_columns_types_and_stats(example: Project) -> None:
    assert example.llmt("run").code == 0
    result = example.llmt("docs", "generate")
    assert result.code == 0, result.err
    assert "3 model(s), 3 built on target `dev`" in result.err
    data = catalog(example)
    assert data["metadata"]["target"] == "dev" and data["metadata"]["invocation_id"] and data["errors"] is None
    assert set(data["nodes"]) == {"model.stg_reviews", "model.review_insights", "model.product_sentiment"}
    assert set(data["sources"]) == {"source.raw.reviews"}
    stg = data["nodes"]["model.stg_reviews"]
    assert stg["metadata"] == {"type": "VIEW", "schema": "main", "name": "stg_reviews", "database": None,
                               "comment": stg["metadata"]["comment"], "owner": None}
    assert stg["columns"]["review_id"] == {"type": "BIGINT", "index": 1, "name": "review_id",
                                           "comment": stg["columns"]["review_id"]["comment"]}
    assert "row_count" not in stg["stats"]  # a view is not counted (that would run it)
    insights = data["nodes"]["model.review_insights"]
    assert insights["metadata"]["type"] == "BASE TABLE"
    assert insights["columns"]["sentiment"]["type"] == "VARCHAR"
    assert insights["columns"]["issues"]["type"] == "VARCHAR[]"
    [(rows,)] = example.query("select count(*) from main.review_insights")
    assert insights["stats"]["row_count"]["value"] == rows == insights["stats"]["llmt_ok_rows"]["value"]
    assert insights["stats"]["llmt_cost_usd_fake"]["value"] > 0
    assert data["sources"]["source.raw.reviews"]["stats"]["row_count"]["value"] == 300
    manifest = json.loads((example.root / "target" / "manifest.json").read_text())
    assert manifest["nodes"]["model.review_insights"]["llm"]["prompt"] == "review_analysis"


def test_docs_of_a_project_not_built_yet(project: Project) -> None:
    result = project.llmt("docs", "generate")
    assert result.code == 0, result.err
    assert "nothing is built on target `dev` yet" in result.err
    result = project.llmt("docs", "generate", "--output", "json")
    assert result.code == 0 and json.loads(result.out) == {
        "index": str(project.root / "target" / "index.html"), "catalog": str(project.root / "target" / "catalog.json"),
        "models": 2, "built": 0, "target": "dev"}
    assert catalog(project)["nodes"] == {} and not (project.root / "demo.duckdb").exists()
    page = (project.root / "target" / "index.html").read_text()
    assert "Not built on target `dev` yet." in page


def test_the_page_escapes_the_projects_text_and_fetches_nothing(make_project: MakeProject) -> None:
    project = make_project({"models/schema.yml": """
        models:
          - name: stg_reviews
            description: "<script>alert('x')</script> & <b>bold</b>"
        """})
    assert project.llmt("docs", "generate").code == 0
    page = (project.root / "target" / "index.html").read_text()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert page.count("<script>") == 1  # the page's own
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    assert "<link" not in page and " src=" not in page


def test_the_lineage_layout_puts_children_right_of_parents_without_overlaps() -> None:
    parents = {"a": [], "b": [], "c": ["a"], "d": ["a", "b"], "e": ["c", "d"], "f": ["b"], "g": ["e", "f", "a"]}
    boxes = layout(list(parents), parents)
    for child, ups in parents.items():
        assert all(boxes[child].x > boxes[p].x for p in ups)
    assert [boxes[n].layer for n in "abcdefg"] == [0, 0, 1, 1, 2, 1, 3]
    for one, two in combinations(boxes.values(), 2):
        assert abs(one.x - two.x) >= NODE_W or abs(one.y - two.y) >= NODE_H
    chain = [f"m{i}" for i in range(2000)]  # deep projects: no recursion limit
    assert layout(chain, {m: [chain[i - 1]] if i else [] for i, m in enumerate(chain)})["m1999"].layer == 1999


def _node_centre(browser: Browser, uid: str) -> tuple[float, float]:
    x, y = browser.evaluate(
        f"(() => {{ const n = document.querySelector('#lineage-graph .node[data-id=\"{uid}\"]'); "
        "n.scrollIntoView({block: 'center', inline: 'center'}); const r = n.getBoundingClientRect(); "
        "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
    return float(x), float(y)


SHOWN = "[...document.querySelectorAll('article.card')].filter(c => !c.hidden).map(c => c.dataset.id)"


def test_the_page_in_a_headless_browser_shows_the_graph_and_a_card_per_click(example: Project,
                                                                              tmp_path: Path) -> None:
    assert example.llmt("run").code == 0
    assert example.llmt("docs", "generate").code == 0
    index = example.root / "target" / "index.html"
    with Browser(tmp_path / "profile") as browser:
        browser.open(index.as_uri())
        assert browser.evaluate("document.querySelectorAll('#lineage-graph .node').length") == 4
        assert browser.evaluate("document.querySelectorAll('#lineage-graph .edge').length") == 3
        assert browser.evaluate(SHOWN) == [] and browser.evaluate("!document.getElementById('none').hidden")
        browser.click(*_node_centre(browser, "model.review_insights"))
        browser.wait_for(f"{SHOWN}.length === 1")
        assert browser.evaluate(SHOWN) == ["model.review_insights"]
        assert browser.evaluate("location.hash") == "#model.review_insights"
        assert browser.evaluate("document.querySelector('.node.selected').dataset.id") == "model.review_insights"
        related = browser.evaluate("[...document.querySelectorAll('.node.related')].map(n => n.dataset.id).sort()")
        assert related == ["model.product_sentiment", "model.stg_reviews"]
        card = browser.evaluate("document.getElementById('card-model.review_insights').innerText")
        [(rows,)] = example.query("select count(*) from main.review_insights")
        for expected in ("review_insights", "model\ngpt-4o-mini", "mode\nbatch", f"rows\n{rows}",
                         f"answered\n{rows}", "failed\n0 (0.0% of rows)",
                         "cost to date\n$0.0", "simulated (fake provider: nothing paid)", "last run\n",
                         "llmt run, success", "Prompt review_analysis", "Product: {{ product }}",
                         "Output schema review_analysis", '"additionalProperties": false', "sentiment",
                         "accepted_values", "review_insights_types_the_pinned_answers (unit)"):
            assert expected in card, expected
        browser.click(*_node_centre(browser, "model.stg_reviews"))
        browser.wait_for(f"{SHOWN}[0] === 'model.stg_reviews'")
        card = browser.evaluate("document.getElementById('card-model.stg_reviews').innerText")
        assert "review_id\tBIGINT\tUnique id of the review" in card and "LLM" not in card
        assert browser.evaluate(f"{SHOWN}.length") == 1


def test_docs_serve_serves_the_page_on_localhost_until_ctrl_c(example: Project, tmp_path: Path) -> None:
    result = example.llmt("docs", "serve", "--port", "0")
    assert result.code == 2 and "Run `llmt docs generate` first." in result.err
    assert example.llmt("run").code == 0 and example.llmt("docs", "generate").code == 0
    server = subprocess.Popen([sys.executable, "-m", "llmt", "docs", "serve", "--port", "0", "--project-dir",
                               str(example.root)], stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
                              preexec_fn=as_from_a_terminal)
    try:
        assert server.stderr is not None
        line = server.stderr.readline()
        assert line.startswith("Serving the documentation on http://127.0.0.1:"), line
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        with urllib.request.urlopen(url) as response:
            assert b'id="lineage-graph"' in response.read()
        with urllib.request.urlopen(url + "catalog.json") as response:
            assert "model.review_insights" in json.loads(response.read())["nodes"]
        shard = next((example.root / "target" / "batches").rglob("*.jsonl")).relative_to(example.root / "target")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + shard.as_posix())
        assert refused.value.code == 404  # batch files hold data: only the documentation is served
        with Browser(tmp_path / "profile") as browser:
            browser.open(url + "#model.product_sentiment")
            assert browser.evaluate(SHOWN) == ["model.product_sentiment"]
        server.send_signal(signal.SIGINT)  # Ctrl-C
        assert server.wait(timeout=60) == 0
        assert "Stopped." in server.stderr.read()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_catalog_and_page_on_postgres(example: Project, pg: PgDatabase) -> None:
    on_postgres(example, pg, schema="main")
    result = example.llmt("docs", "generate")
    assert result.code == 0 and "nothing is built" not in result.err, result.err  # a server: nothing built yet
    assert catalog(example)["nodes"] == {}
    assert example.llmt("run").code == 0 and example.llmt("docs", "generate").code == 0
    data = catalog(example)
    assert set(data["nodes"]) == {"model.stg_reviews", "model.review_insights", "model.product_sentiment"}
    insights = data["nodes"]["model.review_insights"]
    assert insights["metadata"]["schema"] == "main" and insights["metadata"]["type"] == "BASE TABLE"
    assert insights["columns"]["issues"]["type"] == "text[]" and insights["columns"]["review_id"]["type"] == "bigint"
    [(rows,)] = pg.query("select count(*) from main.review_insights")
    assert insights["stats"]["row_count"]["value"] == rows == insights["stats"]["llmt_ok_rows"]["value"]
    assert insights["stats"]["llmt_cost_usd_fake"]["value"] > 0
    assert data["sources"]["source.raw.reviews"]["stats"]["row_count"]["value"] == 300
    page = (example.root / "target" / "index.html").read_text()
    assert "llmt run, success" in page


def test_seeds_and_models_in_custom_schemas_in_the_catalog_and_the_graph(make_project: MakeProject) -> None:
    project = make_project({
        "seeds/countries.csv": "code,name\n007,Bond Land\n044,United Kingdom\n",
        "seeds/properties.yml": """
            seeds:
              - name: countries
                description: Country codes.
                columns:
                  - name: code
                    data_tests: [unique]
            """,
        "models/by_country.sql": "{{ config(materialized='table', schema='marts') }}\n"
                                 "select code, name from {{ ref('countries') }}\n",
    })
    assert project.llmt("seed").code == 0 and project.llmt("run").code == 0
    assert project.llmt("docs", "generate").code == 0
    data = catalog(project)
    assert data["nodes"]["seed.countries"]["stats"]["row_count"]["value"] == 2
    assert data["nodes"]["model.by_country"]["metadata"]["schema"] == "main_marts"
    assert data["nodes"]["model.by_country"]["stats"]["row_count"]["value"] == 2
    page = (project.root / "target" / "index.html").read_text()
    assert 'data-from="seed.countries" data-to="model.by_country"' in page
    assert 'id="card-seed.countries"' in page and "Country codes." in page
    assert "unique_seed_countries_code (unique on code)" in page
