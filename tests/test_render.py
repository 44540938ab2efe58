"""Batch input files: each line is the request's compact JSON; token figures are exact counts, or
(for `llmt run`) upper bounds; rendering in worker processes gives the same files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmt.pipeline.render import count_exactly, json_utf8, render_lines, render_pending, write_shards
from llmt.pipeline.spec import ENDPOINT, build_spec
from llmt.project.loader import load_project
from llmt.prompts import PromptRenderer
from llmt.tokens import count_request
from llmt.warehouse.duckdb import DuckDBWarehouse
from tests.conftest import Project

TEXTS = ["Great phone, battery lasts \"forever\".", "日本語のレビュー：音がとても良い",
         "Ünïcödé\nnew line\ttab \\ 👍🏽", "", "x" * 2000]


@pytest.mark.parametrize("text", [*TEXTS, "".join(map(chr, range(128))), "tab\t only", 'q"uo\\te\r\n',
                                  "\u2028\u2029\x7f\x85 é", "\x00", "\x1f end", "\x08\x0c", "a\\u0000b"])
def test_json_strings_are_what_json_writes(text: str) -> None:
    assert json_utf8(text) == json.dumps(text, ensure_ascii=False).encode()


def _rows(n: int) -> list[tuple[str, str, str]]:
    return [(f"k{i:04d}", f"P{i % 3}", TEXTS[i % len(TEXTS)] + f" #{i}") for i in range(n)]


def test_lines_are_the_requests_json_and_bounds_are_at_least_the_counts(project: Project, tmp_path: Path) -> None:
    loaded = load_project(project.root)
    spec = build_spec(loaded, loaded.nodes["insights"])
    assert spec.columns == ["product", "review_text"]
    rows = _rows(60)
    exact = list(render_lines(rows, spec.columns, spec, workers=1))
    parallel = list(render_lines(rows, spec.columns, spec, workers=2))
    bounded = list(render_lines(rows, spec.columns, spec, exact=False))
    assert parallel == exact
    assert [(k, line) for k, line, _ in bounded] == [(k, line) for k, line, _ in exact]
    for (key, line, count), (_, _, bound) in zip(exact, bounded, strict=True):
        request = json.loads(line)
        assert line == (json.dumps(request, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        assert (request["custom_id"], request["method"], request["url"]) == (key, "POST", ENDPOINT)
        assert {k: v for k, v in request["body"].items() if k != "messages"} == spec.body_base()
        assert request["body"]["messages"][-1]["role"] == "user"
        assert count == count_request(request["body"]) <= bound

    shards = write_shards(iter(bounded), tmp_path, iter(["a", "b", "c", "d"]), exact=False, max_requests=25)
    assert [(s.shard_id, s.n_requests, s.exact) for s in shards] == [("a", 25, False), ("b", 25, False),
                                                                    ("c", 10, False)]
    assert b"".join(s.path.read_bytes() for s in shards) == b"".join(line for _, line, _ in exact)
    assert [s.keys_path.read_text().split() for s in shards] == [[r[0] for r in rows[i:i + 25]] for i in (0, 25, 50)]
    assert sum(s.input_tokens for s in shards) == sum(b for _, _, b in bounded)
    assert [s.largest for s in shards] == [max(b for _, _, b in bounded[i:i + 25]) for i in (0, 25, 50)]
    per_shard = [(sum(c for _, _, c in exact[i:i + 25]), max(c for _, _, c in exact[i:i + 25])) for i in (0, 25, 50)]
    assert count_exactly([s.path for s in shards]) == per_shard
    assert count_exactly([s.path for s in shards], workers=2) == per_shard


@pytest.mark.parametrize(("prompt", "utf8"), [
    ("---\nsystem: You analyse reviews.\n---\nProduct: {{ product }}\nReview: {{ review_text }}\n", True),
    ("Product: {{ product }} «{{ review_text }}»", True),  # no system message
    ("---\nsystem: Reviews of {{ product }}.\n---\n{{ review_text }}\n", False),  # a system message per row
    ("Review: {{ review_text | upper }} ({{ product }})", False),  # Jinja renders it
])
@pytest.mark.parametrize("product_type", ["VARCHAR", "INTEGER"])
def test_rows_read_from_duckdb_give_the_lines_rendered_from_text(
    project: Project, prompt: str, utf8: bool, product_type: str,
) -> None:
    """`llmt run` reads the prompt's text columns as UTF-8 bytes when it can render from them: the lines and
    their token bounds are those rendered from the rows' text."""
    project.write("prompts/analyse.md", prompt)
    loaded = load_project(project.root)
    spec = build_spec(loaded, loaded.nodes["insights"])
    texts = [*TEXTS, "".join(map(chr, range(1, 128))), "NUL \x00 and \x1f", "\u2028 é 👍🏽 \"q\" \\"]
    rows = [(f"k{i:03d}", None if i % 7 == 3 else (str(i) if product_type == "INTEGER" else f"P{i} ü"),
             None if i % 11 == 5 else texts[i % len(texts)]) for i in range(40)]
    wh = DuckDBWarehouse(":memory:", project.root)
    wh.execute(f"CREATE TABLE r (_llmt_request_key VARCHAR, product {product_type}, review_text VARCHAR)")
    wh.load_rows("r", dict(zip(("_llmt_request_key", "product", "review_text"), map(list, zip(*rows, strict=True)),
                               strict=True)),
                 {"_llmt_request_key": "VARCHAR", "product": product_type, "review_text": "VARCHAR"})
    read = wh.fetchall("SELECT * FROM r ORDER BY _llmt_request_key")
    expected = list(render_lines(read, spec.columns, spec, exact=False))
    assert (PromptRenderer(spec.prompt).utf8_renderer(spec.columns, {"review_text"}) is not None) == utf8
    assert list(render_pending(wh, "SELECT * FROM r ORDER BY _llmt_request_key", spec.columns, spec)) == expected
