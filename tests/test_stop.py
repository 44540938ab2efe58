"""Stopping a run that waits on its batches: `llmt cancel` from another process is an instruction (the run
stops that model and sends nothing more; the next explicit `llmt run` does), and Ctrl-C says what is still
open. `llmt run` runs as a real subprocess against the emulator in this process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Project, as_from_a_terminal
from tests.emulator import Emulator, fixtures
from tests.test_crash_safety import make_project

emulator = fixtures.emulator


def start_run(root: Path, emu: Emulator, api_key: str, target: str = "openai") -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLMT_"))}
    env.update(OPENAI_API_KEY=api_key, OPENAI_BASE_URL=emu.base_url)
    return subprocess.Popen(
        [sys.executable, "-m", "llmt", "run", "--project-dir", str(root), "--target", target],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root, preexec_fn=as_from_a_terminal,
    )


@pytest.fixture
def demo(tmp_path: Path, emulator: Emulator, monkeypatch: pytest.MonkeyPatch,
         capsys: pytest.CaptureFixture[str]) -> Project:
    """The crash-safety project (11 rows, 10 requests, 4 a batch), its `openai` target on the emulator."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-cancel")
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    return Project(make_project(tmp_path / "demo"), capsys)


def test_llmt_cancel_stops_a_waiting_run_and_the_next_run_sends_the_rest(demo: Project, emulator: Emulator) -> None:
    for answered in (2, 3, 1):  # the three batches answer some of their requests (4, 4, 2), then wait
        emulator.faults.next_batch(stall_after=answered)
    # the run's polls wait in the server while `llmt cancel` (another API key) does its work
    held = emulator.faults.hold(path="/v1/batches/", method="GET", api_key="sk-run")
    run = start_run(demo.root, emulator, "sk-run")
    try:
        emulator.wait_for(lambda: len(emulator.seen.batches) == 3 and held.held > 0, timeout=30)
        cancel = demo.llmt("cancel", "--target", "openai")
        assert cancel.code == 0, cancel.err
    finally:
        held.release()
        _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert len(emulator.seen.batches) == 3  # the cancelled requests were not sent again
    assert dict(demo.query("select outcome, count(*) from _llmt.attempts group by 1")) == {"ok": 6, "cancelled": 4}
    # their rows are pending, not failed: no attempt used
    [(pending,)] = demo.query("select count(*) from main.insights where _llmt_request_key in "
                              "(select request_key from _llmt.attempts where outcome = 'cancelled')")
    statuses = dict(demo.query("select _llmt_status, count(*) from main.insights group by 1"))
    assert statuses == {"ok": 11 - pending, "pending": pending}
    assert demo.query("select count(*) from main.insights__errors") == [(0,)]
    assert "WARN  insights [llm] 11 rows" in err
    assert f"cancelled by `llmt cancel`; {pending} rows pending; the next `llmt run` sends them" in err

    again = demo.llmt("run", "--target", "openai")  # the next explicit run sends them
    assert again.code == 0, again.err
    assert len(emulator.seen.batches) == 4
    assert demo.query("select distinct _llmt_status from main.insights") == [("ok",)]
    assert set(emulator.seen.batches_per("shard_id").values()) == {1}


def test_a_batch_the_provider_cancels_is_sent_again(demo: Project, emulator: Emulator) -> None:
    emulator.faults.next_batch(cancel_after=1)  # not the user: the provider, on its own
    result = demo.llmt("run", "--target", "openai")
    assert result.code == 0, result.err
    assert len(emulator.seen.batches) == 4  # 3 shards, and the cancelled requests once more
    assert demo.query("select distinct _llmt_status from main.insights") == [("ok",)]


def test_ctrl_c_while_waiting_says_what_is_still_open(demo: Project, emulator: Emulator) -> None:
    emulator.timing.in_progress = 3600
    run = start_run(demo.root, emulator, "sk-run")
    def polled_twice() -> bool:  # the second look changes no status: the run is waiting, not writing
        batches = emulator.seen.batches
        return len(batches) == 3 and len(emulator.seen.requests("GET", f"/v1/batches/{batches[-1]['id']}")) >= 2

    try:
        emulator.wait_for(polled_twice, timeout=30)
    finally:
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert ("interrupted: 3 batch(es) still open (insights: 3); they go on at the provider, and the next `llmt run` "
            "collects them") in err
    assert "Traceback" not in err
    assert demo.query("select status from _llmt.runs") == [("interrupted",)]
    emulator.advance(3600)
    emulator.timing.in_progress = 0
    again = demo.llmt("run", "--target", "openai")
    assert again.code == 0 and len(emulator.seen.batches) == 3, again.err
    assert demo.query("select distinct _llmt_status from main.insights") == [("ok",)]
