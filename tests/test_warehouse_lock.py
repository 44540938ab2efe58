"""Another program holding the DuckDB file (a notebook, a BI tool, even read-only) makes llmt wait for the lock
and say who holds it, never fail at once; past `lock_timeout` the error names the holder and what to do.

The holder is a real second process with a DuckDB connection, driven through a pipe: it says when it holds the
file, and lets go when the test tells it to (which the tests do when llmt reports that it waits)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

import llmt.warehouse.duckdb_files as duckdb_files
from llmt.commands import plan_project
from llmt.console import Console, Reporter
from llmt.errors import LockTimeout
from llmt.project import load_project
from llmt.warehouse.duckdb import DuckDBWarehouse as Warehouse
from tests.conftest import BASE_FILES, Project
from tests.emulator import Emulator, fixtures

emulator = fixtures.emulator
ROOT = Path(__file__).resolve().parent.parent

HOLDER = """
import sys, duckdb
from llmt.console import Reporter
from llmt.warehouse.duckdb_files import attach_read_only, wait_for_lock
path, mode = sys.argv[1], sys.argv[2]
if mode == "read":  # (waits while llmt writes, as a reader should)
    conn = wait_for_lock(lambda: attach_read_only(path), path, 60, Reporter(), read_only=True)
else:
    conn = duckdb.connect(path)
print("held", flush=True)
sys.stdin.readline()
conn.close()
print("released", flush=True)
sys.stdin.read()
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


class Holder:
    """A process holding ``path`` (``mode`` read: read-only; write: read-write) until told to let go."""

    def __init__(self, path: Path, mode: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), mode], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=_env())
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        assert self.stdout.readline().strip() == "held"
        self.released = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def release(self) -> None:
        if not self.released:
            self.stdin.write("release\n")
            self.stdin.flush()
            assert self.stdout.readline().strip() == "released"
            self.released = True

    def close(self) -> None:
        self.proc.communicate("")


@pytest.fixture
def hold() -> Iterator[list[Holder]]:
    """Start holders with ``Holder(...)`` and append them: they are ended after the test."""
    holders: list[Holder] = []
    yield holders
    for holder in holders:
        holder.close()


class ReleaseWhenWaiting(Reporter):
    """Lets the holder go when llmt says it waits for it (and keeps what it said)."""

    def __init__(self, holder: Holder) -> None:
        self.holder, self.notices = holder, []  # type: list[str]

    def warn(self, message: str) -> None:
        self.notices.append(message)
        self.holder.release()


class ConsoleReleasingWhenWaiting(Console):
    def __init__(self, holder: Holder) -> None:
        super().__init__(json_output=True)
        self.holder, self.notices = holder, []  # type: list[str]

    def warn(self, message: str) -> None:
        self.notices.append(message)
        self.holder.release()


@pytest.fixture
def tell_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """llmt says what it waits for at the first failed try (not after a few seconds)."""
    monkeypatch.setattr(duckdb_files, "LOCK_NOTICE_AFTER", 0.0)


def _database(path: Path) -> None:
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE t AS SELECT 1 AS x")


@pytest.mark.usefixtures("tell_at_once")
def test_a_reader_holding_the_file_makes_llmt_wait_and_say_who_holds_it(tmp_path: Path, hold: list[Holder]) -> None:
    _database(tmp_path / "shop.duckdb")
    holder = Holder(tmp_path / "shop.duckdb", "read")
    hold.append(holder)
    reporter = ReleaseWhenWaiting(holder)
    wh = Warehouse("shop.duckdb", tmp_path, reporter=reporter)
    with wh.transaction():  # it waited, was told who holds the file, and went on once it was let go
        wh.execute("CREATE TABLE main.u AS SELECT 2 AS y")
    wh.close()
    assert len(reporter.notices) == 1
    notice = reporter.notices[0]
    assert f"is locked by PID {holder.pid} (" in notice and "import sys, duckdb" in notice  # its command line
    assert "waits for it (up to 300 s: `lock_timeout`" in notice
    with duckdb.connect(str(tmp_path / "shop.duckdb")) as conn:
        assert conn.execute("SELECT y FROM u").fetchall() == [(2,)]


def test_a_lock_held_past_lock_timeout_names_the_holder_and_what_to_do(tmp_path: Path, hold: list[Holder]) -> None:
    _database(tmp_path / "shop.duckdb")
    holder = Holder(tmp_path / "shop.duckdb", "read")
    hold.append(holder)
    with pytest.raises(LockTimeout) as caught:
        Warehouse("shop.duckdb", tmp_path, lock_timeout=0.2).execute("SELECT 1")
    error = caught.value
    assert error.exit_code == 2 and error.where == str(tmp_path / "shop.duckdb")
    assert f"locked by PID {holder.pid} (" in error.message and "waited 0.2 s" in error.message
    assert "even read-only" in str(error.hint) and f"end PID {holder.pid}" in str(error.hint)
    assert "raise `lock_timeout`" in str(error.hint)


@pytest.mark.usefixtures("tell_at_once")
def test_plan_waits_for_a_writer_then_plans(project: Project, hold: list[Holder]) -> None:
    assert project.llmt("run").code == 0
    holder = Holder(project.root / "demo.duckdb", "write")
    hold.append(holder)
    console = ConsoleReleasingWhenWaiting(holder)
    plans = plan_project(load_project(project.root), [], [], console, None)
    assert [(p.model, p.rows, p.requests) for p in plans] == [("insights", 4, 0)]
    assert len(console.notices) == 1 and f"PID {holder.pid}" in console.notices[0]


@pytest.mark.parametrize("command", ["plan", "compile", "run", "show insights"])
def test_a_command_on_a_file_locked_past_lock_timeout_ends_with_the_holder_named(
    project: Project, hold: list[Holder], command: str,
) -> None:
    assert project.llmt("run").code == 0
    yml = (project.root / "project.yml").read_text()
    project.write("project.yml", yml.replace("{path: demo.duckdb}", "{path: demo.duckdb, lock_timeout: 0.2}"))
    holder = Holder(project.root / "demo.duckdb", "write")
    hold.append(holder)
    result = project.llmt(*command.split())
    assert result.code == 2 and "Traceback" not in result.err, result.err
    assert f"demo.duckdb: the DuckDB file is locked by PID {holder.pid}" in result.err
    assert "waited 0.2 s" in result.err and "lock_timeout" in result.err


PROJECT_YML = """
    name: demo
    targets:
      openai:
        warehouse: {path: demo.duckdb, lock_timeout: 60}
        provider: {type: openai, poll_interval: 0.01, timeout: 10}
    llm: {model: gpt-4o-mini, temperature: 0}
    """


def test_a_reader_holding_the_file_when_a_batch_completes_does_not_fail_the_run(
    tmp_path: Path, emulator: Emulator, hold: list[Holder],
) -> None:
    """The issue's case: a notebook opens the file (read-only) while `llmt run` waits for a batch; the batch
    completes; the run waits for the file, says who holds it, and ends well once the notebook lets go."""
    root = tmp_path / "demo"
    for rel, text in {**BASE_FILES, "project.yml": PROJECT_YML}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    emulator.faults.next_batch(stall_after=0)  # in progress until released
    env = {**{k: v for k, v in _env().items() if not k.startswith(("OPENAI_", "LLMT_"))},
           "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": emulator.base_url}
    run = subprocess.Popen([sys.executable, "-m", "llmt", "run", "--project-dir", str(root), "--target", "openai"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        emulator.wait_for(lambda: len(emulator.seen.batches) == 1, timeout=30)
        holder = Holder(root / "demo.duckdb", "read")  # the notebook, while llmt waits for the batch
        hold.append(holder)
        emulator.release(str(emulator.seen.batches[0]["id"]))
        assert run.stderr is not None
        said = next((line for line in iter(run.stderr.readline, "") if "waits for it" in line), "")
        assert f"is locked by PID {holder.pid}" in said, said
        holder.release()
        _, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, err
    with duckdb.connect(str(root / "demo.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT _llmt_status, count(*) FROM main.insights GROUP BY 1").fetchall() == [("ok", 4)]


class Notices(Reporter):
    def __init__(self) -> None:
        self.notices: list[str] = []

    def warn(self, message: str) -> None:
        self.notices.append(message)


@pytest.mark.usefixtures("tell_at_once")
def test_after_giving_up_on_the_lock_a_later_open_tries_once(tmp_path: Path, hold: list[Holder]) -> None:
    """A run that gave up still opens the file to record its end: that must not wait `lock_timeout` again."""
    _database(tmp_path / "shop.duckdb")
    hold.append(Holder(tmp_path / "shop.duckdb", "read"))
    reporter = Notices()
    # long enough that the first failed try comes before it even on a loaded machine (and so tells once)
    wh = Warehouse("shop.duckdb", tmp_path, lock_timeout=1.0, reporter=reporter)
    with pytest.raises(LockTimeout) as first:
        wh.execute("SELECT 1")
    with pytest.raises(LockTimeout) as second:
        wh.execute("SELECT 1")
    assert second.value.render() == first.value.render()  # "waited 1 s", as it did
    assert len(reporter.notices) == 1  # the second open did not wait (it would have said so again)
