"""The `openai` provider end to end: the real `llmt run`, `llmt status` and `llmt cancel` against
the local OpenAI Batch API emulator (tests/emulator), with its faults, through the official SDK.

Invariants checked throughout: every shard is created as a batch at most once, every request is
answered at most once per attempt, every paid answer is kept, and every row ends answered,
pending or listed in `<model>__errors` with its reason."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Project, on_postgres
from tests.emulator import Emulator, FaultInjector, HttpFault, fixtures

emulator = fixtures.emulator  # the fixture

MakeProject = Callable[[dict[str, str]], Project]


def csv(n: int) -> str:
    return "review_id,product,review_text\n" + "".join(f"{i},Phone,review number {i}\n" for i in range(1, n + 1))


def openai_project(make_project: MakeProject, emu: Emulator, files: dict[str, str] | None = None,
                   options: str = "", max_attempts: int = 2) -> Project:
    project = make_project(files or {})
    yml = (project.root / "project.yml").read_text()
    provider = f"{{type: openai, base_url: '{emu.base_url}', poll_interval: 0.01, max_retries: 2{options}}}"
    yml = yml.replace("provider: {type: fake}", f"provider: {provider}")
    project.write("project.yml", yml.replace("max_attempts: 2", f"max_attempts: {max_attempts}"))
    return project


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


@pytest.fixture(params=["duckdb", "postgres"])
def oa(request: pytest.FixtureRequest, make_project: MakeProject, emulator: Emulator) -> Project:
    """The project on the emulator; its warehouse DuckDB's file, or a database on the PostgreSQL server (models
    in schema `main` on both)."""
    project = openai_project(make_project, emulator)
    return on_postgres(project, request.getfixturevalue("pg"), schema="main") if request.param == "postgres" \
        else project


# --------------------------------------------------------------------------- helpers


def outcomes(project: Project, where: str = "true") -> Counter[str]:
    return Counter(dict(project.query(f"select outcome, count(*) from _llmt.attempts where {where} group by 1")))


def statuses(project: Project, model: str = "insights") -> Counter[str]:
    return Counter(dict(project.query(f"select _llmt_status, count(*) from main.{model} group by 1")))


def keys(project: Project) -> dict[int, str]:
    return dict(project.query("select review_id, _llmt_request_key from _llmt.input__insights"))


def batch_keys(emu: Emulator, n: int) -> set[str]:
    """The custom_ids in the input file of the n-th batch created."""
    content = emu.file_content(emu.seen.batches[n]["input_file_id"]).decode()
    return {json.loads(line)["custom_id"] for line in content.splitlines()}


def first_shard(emu: Emulator) -> str:
    return str(emu.seen.batches[0]["metadata"]["shard_id"])


def check_invariants(project: Project, emu: Emulator) -> None:
    """No shard created twice; no request answered more often than attempts were recorded for it;
    every stored answer is the one the server sent for that custom_id (never joined on line order)."""
    assert set(emu.seen.batches_per("shard_id").values()) <= {1}
    attempts = dict(project.query("select request_key, count(*) from _llmt.attempts group by 1"))
    for key, answered in emu.seen.answered.items():
        assert answered <= attempts.get(key, 0), key
    sent: dict[str, Any] = {}
    for batch in emu.seen.batches:
        file_id = emu.batch(batch["id"]).get("output_file_id")
        if file_id and file_id in emu.store.files:
            for raw in emu.file_content(file_id).decode().splitlines():
                line = json.loads(raw)
                sent[line["custom_id"]] = line["response"]["body"]["choices"][0]["message"]["content"]
    for key, answer in project.query("select request_key, answer from _llmt.answers"):
        if key in sent:
            assert json.loads(answer) == json.loads(sent[key]), key


def hold_first_batch(project: Project, emu: Emulator) -> dict[int, str]:
    """Submit with --no-wait while the server keeps the batch `validating`; returns the request keys
    by review_id, so that a test can script per-request outcomes before the batch runs."""
    emu.timing.validating = 60
    result = project.llmt("run", "--no-wait")
    assert result.code == 0, result.err
    emu.timing.validating = 0
    return keys(project)


# --------------------------------------------------------------------------- the happy path


def test_answers_land_and_a_second_run_sends_nothing(oa: Project, emulator: Emulator) -> None:
    llm = oa.llm_result(oa.run_json())
    assert (llm["requests"], llm["answered"], llm["failed"], llm["pending"]) == (4, 4, 0, 0)
    rows = oa.query("select review_id, _llmt_status, sentiment is not null, score between 1 and 10, _llmt_model, "
                    "_llmt_request_key = _llmt_answer_key from main.insights order by 1")
    assert rows == [(i, "ok", True, True, "gpt-4o-mini", True) for i in (1, 2, 3, 4)]
    assert outcomes(oa) == {"ok": 4}
    assert len(emulator.seen.files) == 1 and len(emulator.seen.batches) == 1
    assert emulator.seen.requests("GET", "/v1/batches") == []  # a fresh upload has no batch to look for
    assert emulator.seen.answered == dict.fromkeys(keys(oa).values(), 1)
    batch = emulator.seen.batches[0]
    assert oa.query("select status, batch_status, batch_id, file_id from _llmt.shards") == [
        ("collected", "completed", batch["id"], batch["input_file_id"])]
    assert oa.query("select min(prompt_tokens) > 0 and min(completion_tokens) > 0 from _llmt.attempts") == [(True,)]
    check_invariants(oa, emulator)

    before = len(emulator.seen.http)
    llm = oa.llm_result(oa.run_json())
    assert (llm["requests"], llm["cached"]) == (0, 4)
    assert len(emulator.seen.http) == before  # not even a list or a retrieve


def test_shards_hold_one_model_and_carry_metadata(make_project: MakeProject, emulator: Emulator) -> None:
    big = """
        {{ config(materialized='llm', prompt='analyse', output_schema='analysis', unique_key='review_id',
                  model='gpt-4o') }}
        select review_id, product, review_text from {{ ref('stg_reviews') }}
        """
    project = openai_project(make_project, emulator, {"data/reviews.csv": csv(5), "models/insights_4o.sql": big},
                             options=", max_requests_per_batch: 2")
    data = project.run_json()
    assert emulator.seen.batches_per("node") == {"insights": 3, "insights_4o": 3}  # ceil(5 / 2) each
    sizes: dict[str, list[int]] = {"insights": [], "insights_4o": []}
    for n, batch in enumerate(emulator.seen.batches):
        meta = batch["metadata"]
        assert meta["project"] == "demo" and meta["run_id"] == data["run_id"] and meta["shard_id"]
        lines = [json.loads(x) for x in emulator.file_content(batch["input_file_id"]).decode().splitlines()]
        assert {x["body"]["model"] for x in lines} == {"gpt-4o" if meta["node"] == "insights_4o" else "gpt-4o-mini"}
        assert {x["custom_id"] for x in lines} == batch_keys(emulator, n)
        sizes[meta["node"]].append(len(lines))
    assert sorted(sizes["insights"]) == sorted(sizes["insights_4o"]) == [1, 2, 2]
    assert set(emulator.seen.answered.values()) == {1} and len(emulator.seen.answered) == 10
    assert statuses(project) == statuses(project, "insights_4o") == {"ok": 5}
    check_invariants(project, emulator)


# --------------------------------------------------------------------------- HTTP faults

STEPS = [("POST", "/v1/files"), ("POST", "/v1/batches"), ("GET", "/v1/batches/"), ("GET", "/v1/files/")]


def rate_limits(f: FaultInjector) -> None:
    for method, path in STEPS:  # upload, create, retrieve, download
        f.rate_limit_next(1, retry_after=0.01, path=path, method=method)


def server_errors(f: FaultInjector) -> None:
    for method, path in STEPS:
        f.server_error_next(1, status=500, path=path, method=method, retry_after=0.001)
    f.server_error_next(1, status=503, path="/v1/batches", method="GET", retry_after=0.001)  # the list


@pytest.mark.parametrize(
    ("inject", "seen_status"),
    [
        pytest.param(rate_limits, 429, id="429-retry-after"),
        pytest.param(server_errors, 500, id="500s"),
        pytest.param(lambda f: f.drop_after_commit_next(1), 0, id="dropped-after-create-committed"),
    ],
)
def test_http_faults_are_survived_without_duplicates(
    oa: Project, emulator: Emulator, inject: Callable[[FaultInjector], None], seen_status: int
) -> None:
    inject(emulator.faults)
    result = oa.llmt("run")
    assert result.code == 0, result.err
    assert emulator.faults.http == []  # every fault was hit
    assert seen_status in {h[2] for h in emulator.seen.http}
    assert len(emulator.seen.batches) == 1  # a create the client lost is found, not repeated
    assert statuses(oa) == {"ok": 4} and outcomes(oa) == {"ok": 4}
    assert set(emulator.seen.answered.values()) == {1}
    check_invariants(oa, emulator)


def test_slow_responses_past_the_client_timeout(make_project: MakeProject, emulator: Emulator) -> None:
    project = openai_project(make_project, emulator, options=", timeout: 0.25")
    emulator.faults.slow_next(1, delay=0.5, path="/v1/batches", method="POST")  # lands after the client gave up
    result = project.llmt("run")
    assert result.code == 0, result.err
    assert emulator.faults.http == [] and emulator.disconnects >= 1
    assert len(emulator.seen.batches) == 1  # the late create was found by its metadata, not made again
    assert statuses(project) == {"ok": 4}
    check_invariants(project, emulator)


def lose_a_create(project: Project, emu: Emulator) -> None:
    """The server creates the batch but the answer is lost, and listing batches fails too: the run
    stops with the shard `uploaded` while its batch exists (as after a crash right after create)."""
    emu.faults.drop_after_commit_next(1)
    emu.faults.server_error_next(3, path="/v1/batches", method="GET", retry_after=0.001)
    result = project.llmt("run")
    assert result.code == 1 and "list batches" in result.err and "Traceback" not in result.err
    assert project.query("select status from _llmt.shards") == [("uploaded",)] and len(emu.seen.batches) == 1


def lose_a_retrieve(project: Project, emu: Emulator) -> None:
    emu.faults.server_error_next(3, path="/v1/batches/", method="GET", retry_after=0.001)
    result = project.llmt("run")
    assert result.code == 1 and "read the batch" in result.err and "Traceback" not in result.err
    assert project.query("select status from _llmt.shards") == [("submitted",)]


@pytest.mark.parametrize("stop", [lose_a_create, lose_a_retrieve])
def test_a_run_stopped_by_the_provider_is_resumed_without_a_second_batch(
    oa: Project, emulator: Emulator, stop: Callable[[Project, Emulator], None]
) -> None:
    stop(oa, emulator)
    other = emulator.store.add_file(b"", "other.jsonl", "batch")
    for n in range(150):  # other batches of the account: the shard's own is on the second page
        emulator.store.create_batch(other["id"], "/v1/chat/completions", "24h", {"shard_id": f"other-{n}"})
    result = oa.llmt("run")
    assert result.code == 0, result.err
    assert emulator.seen.batches_per("node") == {"insights": 1, "None": 150}
    assert statuses(oa) == {"ok": 4} and outcomes(oa) == {"ok": 4}
    assert set(emulator.seen.answered.values()) == {1}
    check_invariants(oa, emulator)


def test_cancel_finds_a_batch_whose_create_was_lost(oa: Project, emulator: Emulator) -> None:
    emulator.faults.next_batch(stall_after=2)
    lose_a_create(oa, emulator)
    result = oa.llmt("cancel")
    assert result.code == 0, result.err
    assert emulator.batch(emulator.seen.batches[0]["id"])["status"] == "cancelled"  # not left running
    assert outcomes(oa) == {"ok": 2, "cancelled": 2}  # its paid answers are kept
    assert oa.llm_result(oa.run_json())["requests"] == 2
    assert statuses(oa) == {"ok": 4} and set(emulator.seen.answered.values()) == {1}
    check_invariants(oa, emulator)


def test_a_download_cut_mid_stream_is_retried_then_a_clear_error(
    oa: Project, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.emulator import server

    send, cut, cuts = server._Handler._send, [], 3

    def send_half(handler: Any, status: int, payload: Any, headers: dict[str, str]) -> None:
        if not isinstance(payload, bytes) or len(cut) >= cuts:
            return send(handler, status, payload, headers)
        cut.append(payload)  # a file download: announce it all, send half, hang up
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload[: len(payload) // 2])
        handler.wfile.flush()
        handler._hang_up()

    monkeypatch.setattr(server._Handler, "_send", send_half)
    result = oa.llmt("run")
    assert len(cut) == 3 and "Traceback" not in result.out + result.err, result.err  # tried three times
    assert result.code == 1 and "could not download" in result.err  # a clear error; nothing is lost
    assert oa.query("select status from _llmt.shards") == [("submitted",)]
    assert oa.query("select count(*) from _llmt.attempts") == [(0,)]
    assert oa.llmt("run").code == 0
    assert statuses(oa) == {"ok": 4} and len(emulator.seen.batches) == 1
    check_invariants(oa, emulator)


# --------------------------------------------------------------------------- batch-level endings


def test_a_batch_failing_validation_is_listed_with_its_error(make_project: MakeProject, emulator: Emulator) -> None:
    project = openai_project(make_project, emulator, max_attempts=1)
    hold_first_batch(project, emulator)
    batch = emulator.seen.batches[0]
    stored = emulator.store.files[batch["input_file_id"]]  # the server reads line 2 with another model
    lines = stored.content.decode().splitlines()
    second = json.loads(lines[1])
    second["body"]["model"] = "gpt-4o"
    stored.content = "\n".join([lines[0], json.dumps(second), *lines[2:]]).encode() + b"\n"
    result = project.llmt("run")
    assert result.code == 1 and "4 of 4 rows failed (100.0%; batch_failed 4)" in result.err, result.err
    failed = emulator.batch(batch["id"])
    assert failed["status"] == "failed"
    assert [(e["code"], e["line"]) for e in failed["errors"]["data"]] == [("model_mismatch", 2)]
    [(error,)] = project.query(f"select error from _llmt.shards where shard_id = '{first_shard(emulator)}'")
    assert "model_mismatch" in error and "line 2" in error
    assert project.query(f"select distinct outcome, error_code from _llmt.attempts "
                         f"where shard_id = '{first_shard(emulator)}'") == [("batch_failed", "model_mismatch")]
    assert len(emulator.seen.batches) == 1 and statuses(project) == {"failed": 4}
    assert project.query("select distinct reason, error_code, attempts from main.insights__errors") == [
        ("batch_failed", "model_mismatch", 1)]
    check_invariants(project, emulator)


def test_token_limit_exceeded_waits_and_resubmits_without_using_an_attempt(
    make_project: MakeProject, emulator: Emulator
) -> None:
    project = openai_project(make_project, emulator, max_attempts=1)
    emulator.faults.fail_next_batch("token_limit_exceeded")
    result = project.llmt("run")
    assert result.code == 0, result.err
    assert project.query("select distinct outcome, error_code from _llmt.attempts where outcome <> 'ok'") == [
        ("batch_failed", "token_limit_exceeded")]
    # max_attempts is 1, yet the queue being full did not use it up: a later batch of the same run answers
    assert len(emulator.seen.batches) == 2, "token_limit_exceeded rows were not resubmitted in the same run"
    assert statuses(project) == {"ok": 4} and outcomes(project) == {"batch_failed": 4, "ok": 4}
    assert project.query("select count(*) from main.insights__errors") == [(0,)]
    check_invariants(project, emulator)


def azure_ids(f: FaultInjector) -> None:
    f.empty_file_ids = True  # output_file_id "" (Azure style) and only an error file
    f.next_batch(all_lines_status=500)


@pytest.mark.parametrize(
    ("inject", "rows", "first"),
    [
        pytest.param(lambda f: f.next_batch(expire_after=2), 4, {"ok": 2, "expired": 2}, id="expired-partial"),
        pytest.param(azure_ids, 4, {"http_error": 4}, id="every-line-500-empty-string-ids"),
        pytest.param(lambda f: f.next_batch(drop_lines=1, shuffle=True), 12, {"ok": 11, "missing": 1},
                     id="missing-line-shuffled"),
        pytest.param(lambda f: f.next_batch(output_missing=True), 4, {"missing": 4}, id="output-file-404"),
    ],
)
def test_batch_endings_keep_paid_answers_and_resubmit_only_the_rest(
    make_project: MakeProject, emulator: Emulator, inject: Callable[[FaultInjector], None], rows: int,
    first: dict[str, int],
) -> None:
    project = openai_project(make_project, emulator, {"data/reviews.csv": csv(rows)})
    inject(emulator.faults)
    result = project.llmt("run")
    assert result.code == 0, result.err
    shard = first_shard(emulator)
    assert outcomes(project, f"shard_id = '{shard}'") == first
    retried = {k for (k,) in project.query(f"select request_key from _llmt.attempts where shard_id = '{shard}' "
                                           f"and outcome <> 'ok'")}
    if retried:  # a second batch with exactly the rows the first did not answer
        assert len(emulator.seen.batches) == 2 and batch_keys(emulator, 1) == retried
    else:
        assert len(emulator.seen.batches) == 1
    assert set(statuses(project)) == {"ok"}
    assert project.query("select count(*) from main.insights__errors") == [(0,)]
    check_invariants(project, emulator)


# --------------------------------------------------------------------------- per-request outcomes

FORCED = {  # review_id -> (forced outcome, times, expected row in insights__errors or None)
    1: ("refused", 1, ("refused", 200, 1)),
    2: ("truncated", 1, ("truncated", 200, 1)),
    3: ("content_filter", 1, ("content_filter", 200, 1)),
    4: ("http_error_400", 1, ("http_error", 400, 1)),
    5: ("invalid_json", 1, None),
    6: ("schema_violation", 1, None),
    7: ("http_error_500", 1, None),
    8: ("schema_violation", 2, ("schema_violation", 200, 2)),
}


def test_each_request_outcome_is_classified_retried_or_listed(make_project: MakeProject, emulator: Emulator) -> None:
    project = openai_project(make_project, emulator, {"data/reviews.csv": csv(9)})
    by_id = hold_first_batch(project, emulator)
    for review_id, (kind, times, _) in FORCED.items():
        emulator.faults.line_outcome(by_id[review_id], kind, times)
    result = project.llmt("run", "--max-failed-share", "0.6")
    assert result.code == 0, result.err  # 5 of 9 rows failed
    errors = project.query("select review_id, reason, status_code, attempts from main.insights__errors order by 1")
    assert errors == [(i, *row) for i, (_, _, row) in FORCED.items() if row is not None]
    assert project.query("select error_code from main.insights__errors where review_id = 4") == [
        ("context_length_exceeded",)]
    failed = {i for i, (_, _, row) in FORCED.items() if row is not None}
    assert project.query("select review_id, _llmt_status, sentiment is null from main.insights order by 1") == [
        (i, "failed" if i in failed else "ok", i in failed) for i in range(1, 10)]
    first = dict(project.query("select request_key, outcome from _llmt.attempts "
                               f"where shard_id = '{first_shard(emulator)}'"))
    assert {i: first[by_id[i]] for i in FORCED} == {1: "refused", 2: "truncated", 3: "content_filter",
                                                   4: "http_error", 5: "invalid_json", 6: "schema_violation",
                                                   7: "http_error", 8: "schema_violation"}
    assert batch_keys(emulator, 1) == {by_id[i] for i in (5, 6, 7, 8)}  # only retryable outcomes go again
    check_invariants(project, emulator)
    before = len(emulator.seen.batches)
    again = project.llm_result(project.run_json("--max-failed-share", "0.6"))
    assert again["requests"] == 0  # final failures are not paid for again
    assert len(emulator.seen.batches) == before


# --------------------------------------------------------------------------- --no-wait, status, cancel


def open_batches(project: Project) -> list[dict[str, Any]]:
    result = project.llmt("status", "--output", "json")
    assert result.code == 0, result.err
    rows: list[dict[str, Any]] = json.loads(result.out)["open_batches"]
    return rows


def test_no_wait_then_status_then_a_later_run_collects_first(oa: Project, emulator: Emulator) -> None:
    emulator.timing.in_progress = 60
    llm = oa.llm_result(oa.run_json("--no-wait"))
    assert (llm["requests"], llm["pending"], llm["answered"]) == (4, 4, 0)
    assert statuses(oa) == {"pending": 4}
    emulator.advance(30)
    [entry] = open_batches(oa)
    assert (entry["node"], entry["batch_id"], entry["status"]) == ("insights", emulator.seen.batches[0]["id"],
                                                                   "in_progress")
    assert (entry["requests"], entry["completed"], entry["failed"]) == (4, 2, 0)
    assert entry["expires_in_s"] > 0
    assert oa.query("select count(*) from _llmt.attempts") == [(0,)]  # status collects nothing
    assert oa.query("select status from _llmt.shards") == [("submitted",)]
    assert oa.llm_result(oa.run_json("--no-wait"))["requests"] == 0  # still open: nothing is sent twice
    assert len(emulator.seen.files) == 1 and len(emulator.seen.batches) == 1

    emulator.advance(30)
    emulator.timing.in_progress = 0
    with (oa.root / "data/reviews.csv").open("a") as handle:  # and a new row arrives
        handle.write("5,Phone,new row\n")
    data = oa.run_json()
    assert oa.llm_result(data)["requests"] == 1  # only the new row: the open batch was collected first
    assert len(emulator.seen.batches) == 2 and len(batch_keys(emulator, 1)) == 1
    assert batch_keys(emulator, 0).isdisjoint(batch_keys(emulator, 1))
    assert statuses(oa) == {"ok": 5} and outcomes(oa) == {"ok": 5}
    assert open_batches(oa) == []
    check_invariants(oa, emulator)


def test_timeout_stops_waiting_and_a_later_run_collects(oa: Project, emulator: Emulator) -> None:
    emulator.timing.in_progress = 3600
    result = oa.llmt("run", "--timeout", "0.05")
    assert result.code == 0, result.err
    assert statuses(oa) == {"pending": 4}
    assert oa.query("select status, batch_status from _llmt.shards") == [("submitted", "in_progress")]
    assert oa.query("select count(*) from _llmt.attempts") == [(0,)]
    emulator.advance(3600)
    assert oa.llm_result(oa.run_json())["answered"] == 4
    assert len(emulator.seen.batches) == 1 and statuses(oa) == {"ok": 4}
    check_invariants(oa, emulator)
    assert "1 batch(es) still open (insights): `llmt status` shows them" in result.err


def test_cancel_keeps_partial_answers_and_the_next_run_sends_only_the_rest(oa: Project, emulator: Emulator) -> None:
    emulator.faults.next_batch(stall_after=2)
    assert oa.llmt("run", "--no-wait").code == 0
    [entry] = open_batches(oa)
    assert (entry["status"], entry["completed"]) == ("in_progress", 2)
    result = oa.llmt("cancel")
    assert result.code == 0, result.err
    assert emulator.batch(emulator.seen.batches[0]["id"])["status"] == "cancelled"
    assert outcomes(oa) == {"ok": 2, "cancelled": 2} and statuses(oa) == {"ok": 2, "pending": 2}
    assert oa.query("select status, batch_status from _llmt.shards") == [("collected", "cancelled")]
    assert open_batches(oa) == []
    cancelled = {k for (k,) in oa.query("select request_key from _llmt.attempts where outcome = 'cancelled'")}

    assert oa.llm_result(oa.run_json())["requests"] == 2
    assert len(emulator.seen.batches) == 2 and batch_keys(emulator, 1) == cancelled
    assert statuses(oa) == {"ok": 4} and set(emulator.seen.answered.values()) == {1}
    check_invariants(oa, emulator)


def test_cancel_of_a_batch_that_finished_meanwhile_collects_it(oa: Project, emulator: Emulator) -> None:
    emulator.timing.in_progress = 60
    assert oa.llmt("run", "--no-wait").code == 0
    emulator.advance(60)  # the batch completes on the server before the cancel reaches it
    result = oa.llmt("cancel")
    assert result.code == 0, result.err
    assert statuses(oa) == {"ok": 4} and outcomes(oa) == {"ok": 4}
    assert oa.query("select status, batch_status from _llmt.shards") == [("collected", "completed")]


# --------------------------------------------------------------------------- credentials


def test_a_missing_api_key_is_a_clear_usage_error(
    oa: Project, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    for command in (["run"], ["status"], ["cancel"]):
        result = oa.llmt(*command)
        assert result.code == 2, (command, result.err)
        assert "OPENAI_API_KEY" in result.err and "Traceback" not in result.out + result.err
    assert emulator.seen.http == []


def test_an_auth_error_is_clear_and_the_next_runs_resume(
    oa: Project, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.api_key = "sk-right"
    result = oa.llmt("run")
    assert result.code == 1
    text = result.out + result.err
    assert "401" in text and "OPENAI_API_KEY" in text and "Traceback" not in text
    assert "sk-test" not in text and "sk-right" not in text  # secrets are never printed
    assert emulator.seen.files == [] and oa.query("select status from _llmt.shards") == [("written",)]

    monkeypatch.setenv("OPENAI_API_KEY", "sk-right")
    emulator.faults.add(HttpFault("status", 1, "POST", "/v1/batches", 401))  # the key is revoked mid-run
    result = oa.llmt("run")
    assert result.code == 1 and "401" in result.err and "Traceback" not in result.out + result.err
    assert oa.query("select status from _llmt.shards") == [("uploaded",)]

    assert oa.llmt("run").code == 0
    assert len(emulator.seen.requests("GET", "/v1/batches")) == 1  # resuming an upload: look before creating
    assert len(emulator.seen.files) == 1 and len(emulator.seen.batches) == 1
    assert statuses(oa) == {"ok": 4}
    check_invariants(oa, emulator)


def test_a_recorded_batch_the_provider_no_longer_knows(oa: Project, emulator: Emulator) -> None:
    emulator.timing.in_progress = 3600
    assert oa.llmt("run", "--no-wait").code == 0
    with emulator.store.lock:  # e.g. the target now points at another account
        emulator.store.batches.clear()
    result = oa.llmt("run")
    assert result.code == 1 and "Traceback" not in result.err
    assert "is not found at the provider" in result.err and "llmt cancel -s insights" in result.err
    assert statuses(oa) == {"pending": 4}
    assert oa.llmt("cancel").code == 0
    assert oa.query("select status, error from _llmt.shards") == [("abandoned", "batch not found at the provider")]
    emulator.timing.in_progress = 0
    assert oa.llm_result(oa.run_json())["answered"] == 4
    assert statuses(oa) == {"ok": 4}
