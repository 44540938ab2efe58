"""Outcomes are data: every failure kind is recorded per attempt, retried when retrying can
help, and listed in `<model>__errors` when the row cannot be answered."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from llmt.pipeline.llm import MAX_UNLUCKY_ROUNDS
from tests.conftest import Project

MakeProject = Callable[[dict[str, str]], Project]


def with_provider(make_project: MakeProject, provider: str, max_attempts: int = 2) -> Project:
    project = make_project({})
    yml = (project.root / "project.yml").read_text()
    yml = yml.replace("provider: {type: fake}", f"provider: {provider}")
    project.write("project.yml", yml.replace("max_attempts: 2", f"max_attempts: {max_attempts}"))
    return project


@pytest.mark.parametrize(
    ("fault", "outcome", "attempts"),
    [
        ("refused", "refused", 1),
        ("truncated", "truncated", 1),
        ("content_filter", "content_filter", 1),
        ("http_error_400", "http_error", 1),
        ("invalid_json", "invalid_json", 3),
        ("schema_violation", "schema_violation", 3),
    ],
)
def test_each_failure_is_recorded_retried_and_listed(
    make_project: MakeProject, fault: str, outcome: str, attempts: int
) -> None:
    project = with_provider(make_project, f"{{type: fake, failures: {{{fault}: 1.0}}}}", max_attempts=3)
    result = project.llmt("run")
    # every row failed: the run fails (exit 1), and the table is built all the same, failed rows are data
    assert result.code == 1 and "Traceback" not in result.err, result.err
    assert f"4 of 4 rows failed (100.0%; {outcome} 4), above the default max_failed_share (0.05)" in result.err
    errors = project.query("select review_id, reason, attempts from main.insights__errors order by 1")
    assert errors == [(i, outcome, attempts) for i in (1, 2, 3, 4)]
    statuses = project.query("select distinct _llmt_status, sentiment from main.insights")
    assert statuses == [("failed", None)]
    # the next run does not spend again on rows that exhausted their attempts
    project.llmt("run")
    assert project.query("select count(*) from _llmt.attempts") == [(4 * attempts,)]


def test_server_errors_use_no_attempt_and_stay_pending_after_the_round_limit(make_project: MakeProject) -> None:
    """A server that answers every request with a 500 is the provider's misfortune, not the request's: the rows
    are sent again (with a pause that doubles) for MAX_UNLUCKY_ROUNDS rounds, then left pending, not failed."""
    project = with_provider(make_project, "{type: fake, poll_interval: 0.0005, failures: {http_error_500: 1.0}}",
                            max_attempts=1)
    result = project.llmt("run")
    assert result.code == 0, result.err  # pending is not failed
    assert project.query("select count(*) from main.insights__errors") == [(0,)]
    assert project.query("select distinct _llmt_status from main.insights") == [("pending",)]
    assert project.query("select count(*), count(distinct request_key) from _llmt.attempts") == [
        (4 * MAX_UNLUCKY_ROUNDS, 4)]
    assert (f"provider trouble in {MAX_UNLUCKY_ROUNDS} rounds (expired, missing, rate limits, server errors); "
            "4 rows pending; the next `llmt run` sends them") in result.err
    assert "WARN  insights [llm] 4 rows" in result.err


def test_http_error_keeps_status_and_code(make_project: MakeProject) -> None:
    project = with_provider(make_project, "{type: fake, failures: {http_error_400: 1.0}}")
    project.llmt("run")
    rows = project.query("select distinct status_code, error_code from main.insights__errors")
    assert len(rows) == 1 and rows[0][0] == 400 and rows[0][1]


def test_partial_failures_are_retried_until_answered(make_project: MakeProject) -> None:
    project = with_provider(make_project, "{type: fake, failures: {invalid_json: 0.5}}", max_attempts=40)
    data = project.run_json()
    llm = project.llm_result(data)
    assert llm["failed"] == 0
    assert project.query("select count(*) from main.insights where _llmt_status = 'ok'") == [(4,)]
    failed = project.query("select count(*) from _llmt.attempts where outcome = 'invalid_json'")[0][0]
    assert llm["retried"] == failed
    assert project.query("select count(*) from main.insights__errors") == [(0,)]


def test_retry_failed_asks_again(make_project: MakeProject) -> None:
    project = with_provider(make_project, "{type: fake, failures: {refused: 1.0}}")
    project.llmt("run")
    yml = (project.root / "project.yml").read_text()
    project.write("project.yml", yml.replace("failures: {refused: 1.0}", "failures: {}"))
    assert project.llm_result(project.run_json("--max-failed-share", "1"))["requests"] == 0  # refusals are final...
    llm = project.llm_result(project.run_json("--retry-failed"))  # ...until asked explicitly
    assert llm["requests"] == 4 and llm["answered"] == 4
    assert project.query("select count(*) from main.insights__errors") == [(0,)]


def test_pinned_fixture_answers(make_project: MakeProject) -> None:
    project = with_provider(make_project, "{type: fake, fixtures: pins.yml}")
    project.write(
        "pins.yml",
        """
        - contains: "Battery died"
          answer: {sentiment: negative, score: 2, issues: [battery], competitor: null}
        """,
    )
    project.llmt("run")
    row = project.query("select sentiment, score, issues, competitor from main.insights where review_id = 2")
    assert row == [("negative", 2, ["battery"], None)]


def test_outcomes_and_usage_are_stored_per_attempt(project: Project) -> None:
    project.llmt("run")
    rows = project.query(
        "select outcome, count(*), min(prompt_tokens) > 0, min(completion_tokens) > 0 from _llmt.attempts group by 1"
    )
    assert rows == [("ok", 4, True, True)]
    shards = project.query("select status, n_requests, batch_status from _llmt.shards")
    assert shards == [("collected", 4, "completed")]
