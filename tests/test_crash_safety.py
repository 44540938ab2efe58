"""Crash safety: `llmt run` killed with SIGKILL at each step of a shard's lifecycle, then run again.

Each test starts the OpenAI emulator in this process and runs `python -m llmt run --target openai`
as a real subprocess with ``LLMT_CRASH_AT=<point>`` (see llmt/llmt/crash.py), so the kill
happens exactly where ``kill -9`` would: open transactions (of DuckDB, or of a PostgreSQL server: each
test runs on both), half-written files and in-flight HTTP requests are left as a real crash leaves them. The
second run, without the crash point, must end with every row answered once, no shard's batch created twice, no request
answered twice and nothing left pending.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest

from llmt.crash import POINTS
from tests.conftest import BASE_FILES
from tests.emulator import Emulator, fixtures
from tests.pg import PgDatabase

emulator = fixtures.emulator

TEXTS = [
    "Great phone", "Battery died after a week", "Screen cracked on day one", "Fast delivery",
    "Kabel ist kaputt — schade", "Works as described", "Too expensive for what it is",
    "Great phone",  # the same request as row 1: sent once, fanned out to both rows
    "Stopped charging", "Would buy again", "Sound is tinny",
]
ROWS = len(TEXTS)
REQUESTS = len(set(TEXTS))
PER_BATCH = 4
SHARDS = -(-REQUESTS // PER_BATCH)

PROJECT_YML = f"""
    name: demo
    target: dev
    targets:
      dev:
        warehouse: {{path: demo.duckdb}}
        provider: {{type: fake}}
      openai:
        warehouse: {{path: demo.duckdb}}
        provider: {{type: openai, max_requests_per_batch: {PER_BATCH}, poll_interval: 0.01, timeout: 10}}
    llm:
      model: gpt-4o-mini
      temperature: 0
      max_attempts: 2
    """

# the crash points at which a batch (at least one) already exists remotely
AFTER_CREATE = ("after_create", "waiting", "after_download", "mid_store", "after_store")
IN_PROGRESS = 3600.0  # virtual seconds a batch stays in progress at the "waiting" point


POSTGRES: dict[Path, str] = {}  # project -> the PostgreSQL database of its `openai` target


def make_project(root: Path, pg: PgDatabase | None = None) -> Path:
    """The project; with ``pg``, its `openai` target's warehouse is that database (models in schema `main`)."""
    csv = "review_id,product,review_text\n" + "".join(
        f"{i},Phone,{text}\n" for i, text in enumerate(TEXTS, start=1)
    )
    yml = PROJECT_YML
    if pg is not None:
        yml = yml.replace("openai:\n        warehouse: {path: demo.duckdb}",
                          f"openai:\n        warehouse: {{type: postgres, dsn: '{pg.uri}', schema: main}}")
        POSTGRES[root] = pg.uri
    files = {**BASE_FILES, "project.yml": yml, "data/reviews.csv": csv}
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return root


def llmt_run(root: Path, emu: Emulator, crash_at: str | None = None, timeout: float = 60
             ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLMT_"))}
    env.update(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=emu.base_url)
    if crash_at is not None:
        env["LLMT_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "llmt", "run", "--project-dir", str(root), "--target", "openai"],
        env=env, capture_output=True, text=True, timeout=timeout, cwd=root,
    )


def query(root: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    if root in POSTGRES:
        with psycopg.connect(POSTGRES[root]) as pg:
            return pg.execute(sql.replace("?", "%s"), params or []).fetchall()  # type: ignore[arg-type]
    with duckdb.connect(str(root / "demo.duckdb"), read_only=True) as conn:
        return conn.execute(sql, params or []).fetchall()


@pytest.fixture(params=["duckdb", "postgres"])
def engine(request: pytest.FixtureRequest) -> PgDatabase | None:
    """The warehouse of the `openai` target: DuckDB's file, or a database on the PostgreSQL server."""
    return request.getfixturevalue("pg") if request.param == "postgres" else None


def answered_per_batch(emu: Emulator) -> dict[str, Counter[str]]:
    """custom_id -> times answered, for every batch the emulator holds."""
    with emu.store.lock:
        return {
            batch_id: Counter(line["custom_id"] for line, _ in record.results)
            for batch_id, record in emu.store.batches.items()
        }


def batch_requests(emu: Emulator) -> dict[str, list[str]]:
    """batch id -> the custom_ids in its input file, for every batch created."""
    with emu.store.lock:
        inputs = {batch_id: record.obj["input_file_id"] for batch_id, record in emu.store.batches.items()}
    return {
        batch_id: [json.loads(line)["custom_id"] for line in emu.file_content(file_id).splitlines()]
        for batch_id, file_id in inputs.items()
    }


def status_of(emu: Emulator, batch_id: str) -> str:
    """A batch's status as last moved on (``emu.batch`` would move it on)."""
    with emu.store.lock:
        return str(emu.store.batches[batch_id].obj["status"])


def crash(root: Path, emu: Emulator, point: str, timeout: float = 60) -> None:
    killed = llmt_run(root, emu, point, timeout)
    assert killed.returncode == -9, (
        f"`llmt run` was not killed at {point} (exit {killed.returncode}):\n{killed.stdout}\n{killed.stderr}"
    )


@pytest.mark.parametrize("point", POINTS)
def test_killed_run_is_resumed_without_losing_or_repeating_work(
    point: str, emulator: Emulator, tmp_path: Path, engine: PgDatabase | None
) -> None:
    # each look at a batch moves it at most one stage, so batches are still open when the process dies
    emulator.step_per_poll = True
    if point == "waiting":  # the batches stay in progress until the clock moves on: killed while open
        emulator.timing.in_progress = IN_PROGRESS
    root = make_project(tmp_path / "demo", engine)

    crash(root, emulator, point)
    before = {str(b["metadata"]["shard_id"]): str(b["id"]) for b in emulator.seen.batches}
    answered_before = dict(emulator.seen.answered)
    if point in AFTER_CREATE:
        assert before, f"no batch was created before the kill at {point}"
    else:
        assert not before and not emulator.seen.answered
    if point == "waiting":
        assert len(before) == SHARDS and not emulator.seen.answered
        assert {status_of(emulator, b) for b in before.values()} <= {"validating", "in_progress"}
        assert "in_progress" in {status_of(emulator, b) for b in before.values()}
        # the batches finish while llmt is dead
        emulator.advance(IN_PROGRESS)
        emulator.timing.in_progress = 0

    again = llmt_run(root, emulator)
    assert again.returncode == 0, f"the run after the kill at {point} failed:\n{again.stdout}\n{again.stderr}"

    # every input row has exactly one answer in the output table
    assert query(root, "SELECT _llmt_status, count(*) FROM main.insights GROUP BY 1") == [("ok", ROWS)]
    assert query(root, "SELECT count(DISTINCT review_id), count(*) FROM main.insights") == [(ROWS, ROWS)]
    assert query(root, "SELECT count(*) FROM main.insights WHERE sentiment IS NULL OR score IS NULL") == [(0,)]
    assert query(root, "SELECT count(*) FROM main.insights__errors") == [(0,)]
    # nothing is left pending
    assert query(root, "SELECT count(*) FROM _llmt.shards WHERE status IN ('written', 'uploaded', 'submitted')") == [
        (0,)
    ]
    # no answer lost: one stored answer per distinct request, one ok attempt per request
    keys = query(root, "SELECT DISTINCT _llmt_request_key FROM main.insights")
    assert len(keys) == REQUESTS
    assert query(root, "SELECT count(*), count(DISTINCT request_key) FROM _llmt.answers") == [(REQUESTS, REQUESTS)]
    ok_attempts = query(root, "SELECT request_key, count(*) FROM _llmt.attempts WHERE outcome = 'ok' GROUP BY 1")
    assert sorted(ok_attempts) == sorted((k, 1) for (k,) in keys)
    assert query(root, "SELECT count(*) FROM _llmt.attempts WHERE outcome <> 'ok'") == [(0,)]

    # the emulator: no shard's batch created twice, no request answered twice in one batch ...
    per_shard = emulator.seen.batches_per("shard_id")
    assert per_shard and set(per_shard.values()) == {1}, per_shard
    for batch_id, counts in answered_per_batch(emulator).items():
        assert set(counts.values()) == {1}, f"batch {batch_id} answered a request twice: {counts}"
    # ... nor sent in two batches nor answered twice in all (paid work is never repeated)
    sent = Counter(custom_id for ids in batch_requests(emulator).values() for custom_id in ids)
    assert sent == Counter(k for (k,) in keys)
    assert emulator.seen.answered == Counter(k for (k,) in keys)
    # the second run found the batches the first run created (it did not create them again)
    after = {str(b["metadata"]["shard_id"]): str(b["id"]) for b in emulator.seen.batches}
    assert {shard: after[shard] for shard in before} == before
    for custom_id, n in answered_before.items():
        assert emulator.seen.answered[custom_id] == n
    # the shards the emulator saw are the ones llmt recorded as collected
    collected = query(root, "SELECT shard_id, batch_id FROM _llmt.shards WHERE status = 'collected' ORDER BY 1")
    assert dict(collected) == after
    # the killed run is marked as such, and shard files it never recorded are gone
    assert query(root, "SELECT status, count(*) FROM _llmt.runs GROUP BY 1 ORDER BY 1") == [
        ("interrupted", 1), ("success", 1)
    ]
    batches = root / "target" / "batches" / "openai" / "insights"  # the target's own folder
    inputs = {p.stem for p in batches.glob("*.jsonl") if p.stem.count(".") == 0}
    assert inputs == set(after)


def test_kill_while_storing_rolls_the_shard_back(emulator: Emulator, tmp_path: Path,
                                                 engine: PgDatabase | None) -> None:
    """Killed between inserting attempts and answers: the transaction leaves nothing behind, the shard
    stays submitted (so the next run collects it again) and its results were downloaded."""
    root = make_project(tmp_path / "demo", engine)
    crash(root, emulator, "mid_store")

    submitted = query(root, "SELECT shard_id, batch_id FROM _llmt.shards WHERE status = 'submitted' ORDER BY 1")
    assert len(submitted) == SHARDS and all(batch_id for _, batch_id in submitted)
    first = submitted[0][0]
    assert query(root, "SELECT count(*) FROM _llmt.attempts WHERE shard_id = ?", [first]) == [(0,)]
    assert query(root, "SELECT count(*) FROM _llmt.attempts") == [(0,)]
    assert query(root, "SELECT count(*) FROM _llmt.answers") == [(0,)]
    assert query(root, "SELECT count(*) FROM _llmt.shards WHERE status = 'collected'") == [(0,)]
    batches = root / "target" / "batches" / "openai" / "insights"
    downloaded = sorted(p.name for p in batches.glob(f"{first}.*.jsonl"))
    assert downloaded == [f"{first}.output.jsonl"]
    lines = (batches / downloaded[0]).read_text(encoding="utf-8").splitlines()
    assert len(lines) == PER_BATCH and all(json.loads(line)["response"]["status_code"] == 200 for line in lines)


# the n-th time each point is reached in a run of two models of three shards each: both models have work in
# flight then (the second one's shards written or recorded, or their batches created, while the first's are)
TWO_MODELS_AT = {"after_write": 2, "after_record": 2, "after_upload": 4, "after_create": 4, "waiting": 6,
                 "after_download": 1, "mid_store": 1, "after_store": 1}


def two_models(root: Path, pg: PgDatabase | None) -> Path:
    """The crash-safety project with a second LLM model over the same rows (its own prompt: its own requests)."""
    make_project(root, pg)
    (root / "models" / "insights_b.sql").write_text(
        "{{ config(materialized='llm', prompt='analyse_b', output_schema='analysis', unique_key='review_id') }}\n"
        "select review_id, product, review_text from {{ ref('stg_reviews') }}\n", encoding="utf-8")
    (root / "prompts" / "analyse_b.md").write_text(
        "---\nsystem: You analyse reviews for the second team.\n---\nReview: {{ review_text }}\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("point", POINTS)
def test_a_run_killed_with_two_models_in_flight_is_resumed(point: str, emulator: Emulator, tmp_path: Path,
                                                            engine: PgDatabase | None) -> None:
    emulator.step_per_poll = True
    if point == "waiting":
        emulator.timing.in_progress = IN_PROGRESS
    root = two_models(tmp_path / "demo", engine)

    crash(root, emulator, f"{point}:{TWO_MODELS_AT[point]}")
    recorded = {node for (node,) in query(root, "SELECT DISTINCT node FROM _llmt.shards")}
    written_b = list((root / "target" / "batches" / "openai" / "insights_b").glob("*.jsonl"))
    assert "insights" in recorded and ("insights_b" in recorded or written_b), (point, recorded)
    before = {str(b["metadata"]["shard_id"]): str(b["id"]) for b in emulator.seen.batches}
    if point == "waiting":
        assert len(before) == 2 * SHARDS and not emulator.seen.answered
        emulator.advance(IN_PROGRESS)
        emulator.timing.in_progress = 0

    again = llmt_run(root, emulator)
    assert again.returncode == 0, f"the run after the kill at {point} failed:\n{again.stdout}\n{again.stderr}"
    keys: list[str] = []
    for table in ("insights", "insights_b"):
        assert query(root, f"SELECT _llmt_status, count(*) FROM main.{table} GROUP BY 1") == [("ok", ROWS)]
        table_keys = [k for (k,) in query(root, f"SELECT DISTINCT _llmt_request_key FROM main.{table}")]
        assert len(table_keys) == REQUESTS
        keys += table_keys
    assert query(root, "SELECT count(*), count(DISTINCT request_key) FROM _llmt.answers") == [(len(keys), len(keys))]
    assert query(root, "SELECT count(*) FROM _llmt.attempts WHERE outcome <> 'ok'") == [(0,)]
    assert query(root, "SELECT count(*) FROM _llmt.shards WHERE status <> 'collected'") == [(0,)]
    # no batch created twice, no request sent or answered twice; the batches created before the kill were found
    per_shard = emulator.seen.batches_per("shard_id")
    assert len(per_shard) == 2 * SHARDS and set(per_shard.values()) == {1}, per_shard
    assert Counter(c for ids in batch_requests(emulator).values() for c in ids) == Counter(keys)
    assert emulator.seen.answered == Counter(keys)
    after = {str(b["metadata"]["shard_id"]): str(b["id"]) for b in emulator.seen.batches}
    assert {shard: after[shard] for shard in before} == before
