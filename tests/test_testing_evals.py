"""`llmt eval`: metrics per field, thresholds, storage per prompt version and the comparison with
the previous version; and the metrics themselves."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from llmt.testing.metrics import field_kind, parse_label, scores
from tests.conftest import Project

MakeProject = Callable[[dict[str, str]], Project]

LABELS = """\
product,review_text,expected.sentiment,expected.score,expected.issues,notes
Phone,Battery died,negative,2,battery,
Phone,Great phone,positive,9,[],ignored column
Cable,Broken plug,negative,3,plug;cable,
Cable,Just fine,,,,"unlabelled row: asked, not scored"
"""

PINS = """
- {contains: "Battery died", answer: {sentiment: negative, score: 2, issues: [battery], competitor: null}}
- {contains: "Great phone", answer: {sentiment: positive, score: 7, issues: [], competitor: null}}
- {contains: "Broken plug", answer: {sentiment: %s, score: 3, issues: [plug], competitor: null}}
- {contains: "Just fine", answer: {sentiment: neutral, score: 5, issues: [], competitor: null}}
"""

THRESHOLDS = """
models:
  - name: insights
    evals:
      sentiment: {min_accuracy: 0.6}
      score: {max_mae: 0.5}
"""


@pytest.fixture
def labelled(make_project: MakeProject) -> Project:
    project = make_project({"tests/evals/insights.csv": LABELS, "pins.yml": PINS % "positive",
                            "models/insights.yml": THRESHOLDS})
    yml = (project.root / "project.yml").read_text()
    project.write("project.yml", yml.replace("provider: {type: fake}", "provider: {type: fake, fixtures: pins.yml}"))
    return project


def evaluate(project: Project, *args: str) -> tuple[int, dict[str, Any]]:
    result = project.llmt("eval", "-s", "insights", "--output", "json", *args)
    assert result.code in (0, 1), result.err
    data: dict[str, Any] = json.loads(result.out)["evals"][0]
    return result.code, data


def metric(data: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(m for m in data["metrics"] if f"{m['field']}.{m['metric']}" == name)
    return found


def test_eval_scores_each_labelled_field_and_checks_thresholds(labelled: Project) -> None:
    code, data = evaluate(labelled)
    assert code == 1  # score's mean absolute error is above 0.5
    assert (data["rows"], data["answered"], data["previous_version"]) == (4, 4, None)
    values = {f"{m['field']}.{m['metric']}": (round(m["value"], 3), m["n"]) for m in data["metrics"]}
    assert values == {
        "sentiment.accuracy": (0.667, 3), "sentiment.macro_f1": (0.667, 3),
        "score.mae": (0.667, 3), "score.accuracy": (0.667, 3),
        "issues.jaccard": (0.833, 3),
    }
    assert (metric(data, "sentiment.accuracy")["threshold"], metric(data, "sentiment.accuracy")["passed"]) == (
        ">= 0.6", True)
    assert (metric(data, "score.mae")["threshold"], metric(data, "score.mae")["passed"]) == ("<= 0.5", False)
    assert metric(data, "issues.jaccard")["passed"] is None  # no threshold
    assert {"row": 3, "field": "sentiment", "expected": "negative", "answer": "positive"} in data["mismatches"]


def test_answers_and_metrics_are_stored_per_prompt_version_and_compared(labelled: Project) -> None:
    _, first = evaluate(labelled)
    again = labelled.llmt("eval", "-s", "insights")  # same prompt: answers come from the store
    assert "no earlier prompt version" in again.out
    assert labelled.query("select count(*) from _llmt.attempts") == [(4,)]

    labelled.write("pins.yml", PINS % "negative")
    labelled.write("prompts/analyse.md", "---\nsystem: You analyse product reviews.\n---\n"
                                         "Product: {{ product }}\nReview: {{ review_text }}\n")
    code, second = evaluate(labelled)
    assert code == 1  # score's threshold still fails
    assert second["previous_version"] == first["prompt_version"] != second["prompt_version"]
    accuracy = metric(second, "sentiment.accuracy")
    assert (accuracy["value"], round(accuracy["previous"], 3)) == (1.0, 0.667)
    runs = labelled.query("select template_hash, n_rows, answered, labels_file from _llmt.eval_runs "
                          "order by created_at")
    assert [r[0] for r in runs] == [first["prompt_version"]] * 2 + [second["prompt_version"]]
    assert runs[0][1:] == (4, 4, "tests/evals/insights.csv")
    answers = labelled.query(
        f"select eval_row, status, answer, expected from _llmt.eval_answers "
        f"where template_hash = '{second['prompt_version']}' order by eval_row")
    assert answers[0][:2] == (1, "ok")
    assert json.loads(answers[2][2])["sentiment"] == "negative"
    assert json.loads(answers[2][3]) == {"sentiment": "negative", "score": 3.0, "issues": ["plug", "cable"]}
    assert json.loads(answers[3][3]) == {}
    text = labelled.llmt("eval", "-s", "insights")
    assert "vs previous version" in text.out and "+0.333" in text.out


def test_eval_tables_stay_out_of_the_models_schema(labelled: Project) -> None:
    evaluate(labelled)
    tables = {r[0] for r in labelled.query("select table_name from information_schema.tables "
                                           "where table_schema = 'main'")}
    assert not any("eval" in t for t in tables)
    assert labelled.query("select count(*) from _llmt.insights__eval") == [(4,)]


def test_llmt_test_never_runs_evals(labelled: Project) -> None:
    labelled.llmt("run")
    labelled.llmt("test")
    assert labelled.query("select count(*) from _llmt.eval_runs") == [(0,)]
    assert labelled.query("select count(*) from _llmt.attempts where node like '%eval%'") == [(0,)]


@pytest.mark.parametrize(
    ("files", "message", "where"),
    [
        ({"tests/evals/insights.csv": "product,expected.sentiment\nPhone,positive\n"},
         "the examples lack the prompt's input column(s) review_text", "tests/evals/insights.csv:2"),
        ({"tests/evals/insights.csv": "product,review_text,expected.sentimnt\nPhone,x,positive\n"},
         "`sentimnt` is not a field of schema `analysis`. Did you mean `sentiment`?", "tests/evals/insights.csv:2"),
        ({"tests/evals/insights.csv": "product,review_text,expected.score\nPhone,x,high\n"},
         "`expected.score`: could not convert string to float", "tests/evals/insights.csv:2"),
        ({"models/insights.yml": "models: [{name: insights, evals: {sentiment: {max_mae: 1}}}]\n"},
         "`evals.sentiment`: `max_mae` does not apply to `sentiment` (enum)", "models/insights.yml:1"),
        ({"tests/evals/insights.csv": ""}, "no labelled examples for `insights`", None),
    ],
)
def test_eval_mistakes(labelled: Project, files: dict[str, str], message: str, where: str | None) -> None:
    for rel, text in files.items():
        if text:
            labelled.write(rel, text)
        else:
            labelled.remove(rel)
    result = labelled.llmt("eval", "-s", "insights")
    assert result.code == 2, result.err
    assert message in result.err
    if where:
        assert where in result.err


def test_jsonl_labels_may_nest_expected(labelled: Project) -> None:
    labelled.remove("tests/evals/insights.csv")
    labelled.write("tests/evals/insights.jsonl", "\n".join(json.dumps(r) for r in [
        {"product": "Phone", "review_text": "Battery died", "expected": {"sentiment": "negative", "issues": []}},
        {"product": "Phone", "review_text": "Great phone", "expected.sentiment": "positive"},
    ]) + "\n")
    _, data = evaluate(labelled)
    assert metric(data, "sentiment.accuracy")["value"] == 1.0
    issues = metric(data, "issues.jaccard")  # only the first row labels issues: [] vs [battery]
    assert (issues["value"], issues["n"]) == (0.0, 1)


def test_metrics() -> None:
    pairs = [("a", "a"), ("a", "b"), ("b", "b"), ("c", "b")]
    result = scores("enum", pairs)
    assert result["accuracy"] == 0.5
    # a: p=1 r=.5 f1=2/3; b: p=1/3... tp=1 fp=2 fn=0 -> 0.5; c: 0 -> macro (2/3 + 1/2 + 0) / 3
    assert result["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 0) / 3)
    assert scores("string", [("Berlin ", "berlin"), (None, None), ("x", None)])["accuracy"] == pytest.approx(2 / 3)
    assert scores("number", [(1, 2), (5, 5), (None, 3)]) == {"mae": 0.5, "accuracy": pytest.approx(1 / 3)}
    assert scores("list", [(["A", "b"], ["a"]), ([], []), (["x"], ["y"])])["jaccard"] == pytest.approx(0.5)
    assert scores("boolean", [(True, True), (False, True)])["accuracy"] == 0.5
    assert scores("enum", []) == {"accuracy": None, "macro_f1": None}


def test_labels_and_kinds() -> None:
    assert parse_label("list", '["a", "b"]') == ["a", "b"]
    assert parse_label("list", "a; b;") == ["a", "b"]
    assert parse_label("number", " 3 ") == 3.0
    assert parse_label("boolean", "yes") is True
    assert parse_label("string", "null") is None
    with pytest.raises(ValueError):
        parse_label("boolean", "maybe")
    assert field_kind({"type": ["string", "null"], "enum": ["a", None]}) == "enum"
    assert field_kind({"anyOf": [{"type": "integer"}, {"type": "null"}]}) == "number"
    assert field_kind({"type": "object", "properties": {}}) is None
