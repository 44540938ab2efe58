"""Benchmark 3, no-op: `llmt run` when every row already has its answer, wall time from process start
to exit.

    python benchmarks/noop.py --rows 1000000

Setup (untimed, cached in benchmarks/.work/answered-<rows>/): a project over the generated reviews
whose every row is answered. Timed: `python -m llmt run` on a copy of it, three times (the median is
reported); each run finds that nothing the LLM model's select reads changed since its inputs were staged (the
staging view is not built again and the inputs are not read: model_state.py) and that no row needs a request.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import engine_fields, parse_args, result, timed_process
from benchmarks._setup import answered_project


def main() -> None:
    args = parse_args("no-op: llmt run when every row is answered", repeat=(int, 3, "runs to time (median)"))
    root = answered_project(args.rows, f"noop-{args.rows}", args.engine)
    times, rss = [], 0.0
    for _ in range(args.repeat):
        seconds, peak, out, _ = timed_process(
            [sys.executable, "-m", "llmt", "run", "--project-dir", str(root), "--output", "json"])
        llm = next(r for r in json.loads(out)["results"] if r["name"] == "review_insights")["llm"]
        assert llm["requests"] == 0 and llm["rows"] == args.rows, llm
        times.append(seconds)
        rss = max(rss, peak)
    result("noop", rows=args.rows, seconds=statistics.median(times), runs=",".join(f"{t:.2f}" for t in times),
           peak_rss_mb=round(rss), **engine_fields(args.engine))


if __name__ == "__main__":
    main()
