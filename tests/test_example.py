"""The example project works as the README says: run, re-run for free, one edit = one request."""

from __future__ import annotations

import csv
import io

from tests.conftest import Project


def test_example_end_to_end(example: Project) -> None:
    first = example.llm_result(example.run_json(), "review_insights")
    rows = example.query("select count(*) from main.review_insights")[0][0]
    assert first["rows"] == rows > 250
    assert first["answered"] == first["requests"] == rows - first["deduplicated"]
    assert first["deduplicated"] > 0  # duplicate texts of the same product are asked once
    assert example.query("select count(*) from main.review_insights where _llmt_status <> 'ok'") == [(0,)]
    products = example.query("select count(*), min(review_count) from main.product_sentiment")
    assert products[0][0] >= 8 and products[0][1] > 0
    assert example.query("select count(distinct language) from main.review_insights")[0][0] >= 5
    assert (example.root / "target" / "token_counts.json").is_file()  # the next run loads no encoding

    again = example.llm_result(example.run_json(), "review_insights")
    assert again["requests"] == 0 and again["cached"] == rows

    # edit one review in the CSV: exactly one request
    path = example.root / "data" / "reviews.csv"
    data = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    target = next(r for r in data if r["review_text"].strip() and len(r["review_text"]) < 200)
    target["review_text"] += " Update: it broke after a month."
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(data[0]))
    writer.writeheader()
    writer.writerows(data)
    path.write_text(out.getvalue(), encoding="utf-8")
    assert example.llm_result(example.run_json(), "review_insights")["requests"] == 1

    # edit the prompt: every row of the model is asked again (once per distinct request)
    prompt = example.root / "prompts" / "review_analysis.md"
    prompt.write_text(prompt.read_text(encoding="utf-8").replace("Review:", "Customer review:"), encoding="utf-8")
    edited = example.llm_result(example.run_json(), "review_insights")
    assert edited["requests"] == rows - edited["deduplicated"]
