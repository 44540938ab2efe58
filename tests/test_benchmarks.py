"""Smoke test of benchmarks/: every script runs at a tiny size and prints its result line. No timing
is asserted (the figures belong in benchmarks/results.md); the network is not used (the dbt comparison
runs its llmt side only, and the emulator listens on loopback)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pg import PgServer

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def run_script(script: str, work: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, str]:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, "LLMT_BENCH_WORK": str(work), **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, proc.stdout
    name, *pairs = lines[0].split()[1:]
    return {"bench": name, **dict(p.split("=", 1) for p in pairs)}


@pytest.mark.parametrize(
    ("script", "args", "fields"),
    [
        ("prepare.py", ["--rows", "300"], ["rows_per_s", "requests", "peak_rss_mb"]),
        ("prepare.py", ["--rows", "300", "--duckdb-threads", "1"], ["rows_per_s", "duckdb_threads"]),
        ("collect.py", ["--rows", "300"], ["answers_per_s", "store_answers_per_s", "answers", "ok", "cpu_s"]),
        ("noop.py", ["--rows", "300", "--repeat", "1"], ["seconds", "peak_rss_mb"]),
        ("prepare.py", ["--rows", "300", "--engine", "postgres"], ["rows_per_s", "server"]),
        ("collect.py", ["--rows", "300", "--engine", "postgres"], ["answers_per_s", "server", "cpu_s", "server_cpu_s"]),
        ("noop.py", ["--rows", "300", "--repeat", "1", "--engine", "postgres"], ["seconds", "server"]),
        ("incremental.py", ["--rows", "300"], ["seconds", "requests", "changed"]),
        ("e2e.py", ["--rows", "200"], ["seconds", "requests", "batches"]),
        ("parallel.py", ["--rows", "20", "--latency", "0.05", "--models", "1,2"],
         ["models_1_x", "models_2_x", "models_2_own_s"]),
        ("startup.py", ["--models", "20", "--repeat", "1"], ["help_s", "ls_s", "ls_cold_s"]),
        ("vs_dbt.py", ["--rows", "200", "--models", "12", "--no-dbt", "1"], ["llmt_full_s", "skipped"]),
        ("retrieval.py", ["--queries", "50", "--documents", "20", "--dims", "16"], ["seconds", "cpu_s", "pairs_per_s",
                                                                                     "vss_installed"]),
        ("spark_keys.py", ["--rows", "300", "--repeat", "1", "--master", "local[1]"], ["startup_seconds", "seconds"]),
    ],
)
def test_benchmark_prints_its_result_line(tmp_path: Path, script: str, args: list[str], fields: list[str],
                                         request: pytest.FixtureRequest) -> None:
    if "postgres" in args:  # its databases are dropped afterwards
        server: PgServer = request.getfixturevalue("pg_server")
        request.addfinalizer(lambda: drop_benchmark_databases(server, tmp_path))
    found = run_script(script, tmp_path, *args)
    assert found["bench"] == script.removesuffix(".py")
    for field in fields:
        assert found.get(field), (field, found)


def drop_benchmark_databases(server: PgServer, work: Path) -> None:
    suffix = hashlib.sha256(str(work).encode()).hexdigest()[:6]  # (benchmarks/_common.py: database_name)
    with server.admin() as conn:
        for (name,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                    [f"bench\\_%\\_{suffix}"]).fetchall():
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def test_memory_runs_benchmarks_one_to_four(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / "memory.py"), "--rows", "200", "--compare", "0"], capture_output=True, text=True,
        timeout=300, env={**os.environ, "LLMT_BENCH_WORK": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert names == ["prepare", "collect", "noop", "incremental", "memory"]


def test_an_output_table_updated_in_place_equals_one_rebuilt_whole(tmp_path: Path) -> None:
    """At 20,000 rows with 1% edited, the incremental run replaces only the changed rows of the output
    table (llmt.warehouse.outputs._update_in_place); a full rebuild from the same state gives the same rows."""
    import shutil

    import duckdb

    from llmt.console import Reporter
    from llmt.pipeline import llm
    from llmt.pipeline.spec import build_spec
    from llmt.project.loader import load_project
    from llmt.runner import make_context, new_run_id, open_warehouse

    found = run_script("incremental.py", tmp_path, "--rows", "20000")
    assert int(found["requests"]) > 0
    root = tmp_path / "incremental-20000"
    copy = tmp_path / "rebuilt"
    shutil.copytree(root, copy)
    project = load_project(copy)
    node = project.nodes["review_insights"]
    wh = open_warehouse(project)
    run = make_context(project, wh, Reporter(), new_run_id())
    try:
        staged = run.store.fingerprint("stage", node.name)
        assert staged is not None and "shape" in staged
        run.store.set_fingerprint("stage", node.name, {"layout": staged["layout"], "rows": staged["rows"]})
        llm.rebuild_output(run, llm.model_place(project, node.name, run.batches_dir), build_spec(project, node))
    finally:
        run.providers.close()
        wh.close()
    with duckdb.connect(str(root / "bench.duckdb"), read_only=True) as conn:
        conn.execute(f"ATTACH '{copy / 'bench.duckdb'}' AS rebuilt (READ_ONLY)")
        statuses = dict(conn.execute("SELECT _llmt_status, count(*) FROM main.review_insights GROUP BY 1").fetchall())
        assert statuses.get("stale", 0) > 0, statuses  # the edited rows show their previous answers
        ids = [r[0] for r in conn.execute("SELECT review_id FROM main.review_insights").fetchall()]
        assert ids != sorted(ids)  # the changed rows were appended: updated in place, not rebuilt (sorted)
        for a, b in (("main", "rebuilt.main"), ("rebuilt.main", "main")):
            diff = conn.execute(f"SELECT count(*) FROM (SELECT * FROM {a}.review_insights "
                                f"EXCEPT ALL SELECT * FROM {b}.review_insights)").fetchone()
            assert diff == (0,)


def test_run_keeps_the_median_run_of_prepare_and_collect() -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks.run import median

    runs = [[{"bench": "collect", "answers_per_s": v, "seconds": s}] for v, s in (("90", "3"), ("120", "1"),
                                                                                 ("100", "2"))]
    assert median("collect", runs) == {"bench": "collect", "answers_per_s": "100", "seconds": "2",
                                       "runs": "90,100,120"}
    # with an even number of runs, the lower of the two middle ones
    assert median("prepare", [[{"rows_per_s": "5"}], [{"rows_per_s": "7"}]])["rows_per_s"] == "5"
    assert median("collect", [[], []]) == {"bench": "collect"}  # a run that printed nothing
