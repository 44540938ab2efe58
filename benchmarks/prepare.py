"""Benchmark 1, prepare: diff + render + request keys + batch files, in rows per second.

    python benchmarks/prepare.py --rows 1000000

Every row is new: the LLM model's inputs are staged with their request keys (SQL), the rows
without an answer are found (SQL anti-join), rendered with an upper bound of their input tokens
(as `llmt run` does without a budget to check) and written to JSONL shards, which are recorded in
the state tables and handed to a provider that accepts them and never answers (`--no-wait`), so
nothing but llmt's own work is timed. The output table is then rebuilt with every row pending;
that is reported apart (`output_s`). `render_rows_per_s` is the render phase alone (fetching the
pending rows, rendering and writing them: one Python process, one core). `--duckdb-threads 1` keeps
DuckDB on one thread too: the whole of prepare on one core.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    HoldProvider,
    Phases,
    data_file,
    engine_fields,
    parse_args,
    peak_rss_mb,
    result,
    review_project,
    stopwatch,
)
from benchmarks._setup import model_run
from llmt.console import Reporter
from llmt.pipeline import llm
from llmt.project.loader import load_project
from llmt.runner import open_warehouse, run


def main() -> None:
    args = parse_args("prepare: diff + render + request keys + batch files",
                      duckdb_threads=(int, 0, "DuckDB's threads (default: one per core; 1: everything on one core)"))
    data = data_file(args.rows)
    settings = f"{{threads: {args.duckdb_threads}}}" if args.duckdb_threads else "{}"
    root = review_project(f"prepare-{args.rows}", data, settings=settings, engine=args.engine)
    project = load_project(root)
    wh = open_warehouse(project)
    run(project, ["stg_reviews"], Reporter(), llm.LlmOptions(), warehouse=wh)  # the upstream view
    phases = Phases()
    node_run, _ = model_run(project, wh, HoldProvider(), llm.LlmOptions(wait=False), phases)
    with stopwatch() as t:
        res = node_run.run()
        with stopwatch() as t_close:
            wh.close()  # what DuckDB has not yet checkpointed is written now: a real run pays it too
    phases.seconds["close"] = t_close[0]
    assert res.rows == args.rows and res.requests > 0, res
    prepare_s = t[0] - phases.seconds.get("output", 0.0)
    shards = len(list((root / "target" / "batches" / "dev" / "review_insights").glob("*.jsonl")))
    result("prepare", rows=args.rows, duckdb_threads=args.duckdb_threads or "default", requests=res.requests,
           shards=shards, seconds=prepare_s,
           rows_per_s=round(args.rows / prepare_s), render_rows_per_s=round(res.requests / phases.seconds["render"]),
           output_s=phases.seconds.get("output", 0.0),
           phases=phases.text(), peak_rss_mb=round(peak_rss_mb()), **engine_fields(args.engine))


if __name__ == "__main__":
    main()
