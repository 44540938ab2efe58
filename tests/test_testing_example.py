"""The example project (the repository): `llmt test` passes offline after `llmt run`; a deliberately broken copy fails
with messages that say which rows broke which expectation."""

from __future__ import annotations

import json

from tests.conftest import Project


def test_example_tests_pass_offline(example: Project) -> None:
    assert example.llmt("run").code == 0
    result = example.llmt("test", "--output", "json")
    assert result.code == 0, result.err
    tests = json.loads(result.out)["tests"]
    assert {t["status"] for t in tests} == {"pass"}
    kinds = {t["kind"] for t in tests}
    assert {"unit", "singular", "max_error_rate", "all_answered", "relationships", "accepted_range",
            "accepted_values", "row_count", "expression_is_true", "not_null", "unique"} <= kinds
    assert sum(t["kind"] == "unit" for t in tests) == 3
    assert any(t["origin"] == "schema" for t in tests)
    text_warning = next(t for t in tests if t["name"] == "not_null_stg_reviews_review_text")
    assert text_warning["failures"] > 0  # rating-only reviews: below the warn_if threshold


def test_a_broken_copy_fails_with_the_expected_messages(example: Project) -> None:
    assert example.llmt("run").code == 0
    root = example.root
    stg = root / "models" / "staging" / "stg_reviews.sql"
    stg.write_text(stg.read_text().replace(
        r"nullif(regexp_replace(cast(review_text as varchar), '^\s+|\s+$', '', 'g'), '')",
        "cast(review_text as varchar)"))  # no more trimming
    prompt = root / "prompts" / "review_analysis.md"
    prompt.write_text(prompt.read_text().replace("Review language: {{ language }}\n", ""))  # drops a field
    data = root / "data" / "reviews.csv"
    data.write_text(data.read_text().replace("\n2,Orbit 4K Webcam,5,en,", "\n2,Orbit 4K Webcam,7,en,"))
    assert example.llmt("run").code == 0

    result = example.llmt("test")
    assert result.code == 1
    out = result.out
    assert "FAIL stg_reviews_cleans_the_export (models/unit_tests.yml:4)" in out
    assert "2 expected row(s) missing, 2 unexpected row(s) in the output of `stg_reviews`" in out
    assert "FAIL review_insights_types_the_pinned_answers" in out
    assert "prompt[0]: the rendered prompt does not contain 'Review language: de'" in out
    assert "FAIL accepted_range_stg_reviews_rating (models/schema.yml:" in out
    assert '1 row(s) where "rating" is outside [1, 5]' in out
    assert "failed" in result.err and "3 failed" in result.err
