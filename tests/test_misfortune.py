"""Provider misfortune uses up no attempt: only outcomes that are the request's own count toward
`max_attempts`. Rows a batch left unanswered through no fault of their own (expired, cancelled by the
provider, missing, HTTP 429/5xx, a batch that failed for capacity or by the provider's fault) stay pending
and are sent again in the same run, against the emulator through the real SDK."""

from __future__ import annotations

from collections.abc import Callable

import duckdb
import pytest

from llmt.warehouse.store import USES_ATTEMPT_SQL
from tests.conftest import Project
from tests.emulator import Emulator, FaultInjector, fixtures
from tests.test_openai_batch import check_invariants, csv, openai_project, outcomes, statuses

emulator = fixtures.emulator
MakeProject = Callable[[dict[str, str]], Project]


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


@pytest.mark.parametrize(
    ("inject", "first"),
    [
        pytest.param(lambda f: f.next_batch(expire_after=2), {"ok": 2, "expired": 2}, id="expired"),
        pytest.param(lambda f: f.next_batch(cancel_after=1), {"ok": 1, "cancelled": 3}, id="cancelled-by-provider"),
        pytest.param(lambda f: f.next_batch(drop_lines=2), {"ok": 2, "missing": 2}, id="missing"),
        pytest.param(lambda f: f.next_batch(all_lines_status=429), {"http_error": 4}, id="429"),
        pytest.param(lambda f: f.next_batch(all_lines_status=503), {"http_error": 4}, id="503"),
        pytest.param(lambda f: f.fail_next_batch("server_error"), {"batch_failed": 4}, id="batch-server_error"),
        pytest.param(lambda f: f.fail_next_batch("rate_limit_exceeded"), {"batch_failed": 4}, id="batch-rate-limit"),
        pytest.param(lambda f: f.fail_next_batch("request_limit_exceeded"), {"batch_failed": 4},
                     id="batch-request-limit"),
    ],
)
def test_misfortune_uses_no_attempt_and_is_sent_again_in_the_same_run(
    make_project: MakeProject, emulator: Emulator, inject: Callable[[FaultInjector], None], first: dict[str, int]
) -> None:
    project = openai_project(make_project, emulator, max_attempts=1)
    inject(emulator.faults)
    result = project.llmt("run")
    assert result.code == 0, result.err
    shard = str(emulator.seen.batches[0]["metadata"]["shard_id"])
    assert outcomes(project, f"shard_id = '{shard}'") == first
    # max_attempts is 1, yet the rows the provider left unanswered were sent again (after a pause) and answered
    assert len(emulator.seen.batches) == 2 and "sending them again in" in result.err
    assert statuses(project) == {"ok": 4}
    assert project.query("select count(*) from main.insights__errors") == [(0,)]
    check_invariants(project, emulator)


@pytest.mark.parametrize(
    "inject",
    [pytest.param(lambda f: f.fail_next_batch("invalid_json_line"), id="batch-format-error"),
     pytest.param(lambda f: f.next_batch(all_lines_status=400), id="400")],
)
def test_the_requests_own_failures_use_up_attempts(
    make_project: MakeProject, emulator: Emulator, inject: Callable[[FaultInjector], None]
) -> None:
    project = openai_project(make_project, emulator, {"data/reviews.csv": csv(4)}, max_attempts=1)
    inject(emulator.faults)
    result = project.llmt("run", "--max-failed-share", "1")
    assert result.code == 0, result.err
    assert len(emulator.seen.batches) == 1 and statuses(project) == {"failed": 4}
    assert project.query("select count(*), max(attempts) from main.insights__errors") == [(4, 1)]


RULE = [  # (outcome, status_code, error_code) -> uses up an attempt: README's "Outcomes" table
    ("ok", 200, None, False),
    ("refused", 200, None, True),
    ("truncated", 200, None, True),
    ("content_filter", 200, None, True),
    ("invalid_json", 200, None, True),
    ("schema_violation", 200, None, True),
    ("too_long", None, None, True),
    ("http_error", 400, "invalid_request_error", True),
    ("http_error", 404, "model_not_found", True),
    ("http_error", 422, None, True),
    ("http_error", 429, "rate_limit_exceeded", False),
    ("http_error", 500, "server_error", False),
    ("http_error", 503, None, False),
    ("http_error", None, "APIConnectionError", False),  # no answer at all
    ("expired", None, None, False),
    ("cancelled", None, None, False),
    ("missing", None, None, False),
    ("batch_failed", None, "token_limit_exceeded", False),
    ("batch_failed", None, "request_limit_exceeded", False),
    ("batch_failed", None, "rate_limit_exceeded", False),
    ("batch_failed", None, "server_error", False),
    ("batch_failed", None, "invalid_json_line", True),
    ("batch_failed", None, "invalid_url", True),
    ("batch_failed", None, "duplicate_custom_id", True),
    ("batch_failed", None, "model_mismatch", True),
    ("batch_failed", None, "missing_required_parameter", True),
    ("batch_failed", None, None, True),
]


def test_the_rule_of_what_uses_up_an_attempt() -> None:
    with duckdb.connect() as conn:
        conn.execute("CREATE TABLE a (outcome VARCHAR, status_code INTEGER, error_code VARCHAR, expected BOOLEAN)")
        conn.executemany("INSERT INTO a VALUES (?, ?, ?, ?)", RULE)
        wrong = conn.execute(f"SELECT * FROM a WHERE ({USES_ATTEMPT_SQL}) IS DISTINCT FROM expected").fetchall()
    assert wrong == []
