"""Benchmark 4, incremental: 1% of the input rows changed; wall time of `llmt run --no-wait` to find and
prepare them (process start to exit).

    python benchmarks/incremental.py --rows 1000000

Setup (untimed): the answered project of noop.py, then a copy of its input with the text of 1% of the
reviews edited. Timed: `llmt run --no-wait` against a batch provider that accepts the batches and
never answers (benchmarks/_hold_run.py): the changed rows are found, rendered, counted, written to
shards, recorded and submitted, and the output table shows them as stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import WORK, data_file, parse_args, result, timed_process
from benchmarks._data import edit_reviews
from benchmarks._setup import answered_project


def main() -> None:
    args = parse_args("incremental: 1% of rows changed, find and prepare them")
    root = answered_project(args.rows, f"incremental-{args.rows}", args.engine)
    edited = WORK / "data" / f"reviews-{args.rows}-edited.parquet"
    changed = edit_reviews(data_file(args.rows), edited)
    sources = root / "models" / "sources.yml"
    sources.write_text(sources.read_text().replace(str(data_file(args.rows).resolve()), str(edited.resolve())))
    seconds, rss, out, _ = timed_process([sys.executable, str(Path(__file__).with_name("_hold_run.py")), "run",
                                       "--no-wait", "--project-dir", str(root), "--output", "json"])
    llm = next(r for r in json.loads(out)["results"] if r["name"] == "review_insights")["llm"]
    assert 0 < llm["requests"] <= changed and llm["stale"] + llm["pending"] >= llm["requests"], llm
    result("incremental", rows=args.rows, changed=changed, requests=llm["requests"], seconds=seconds,
           peak_rss_mb=round(rss))


if __name__ == "__main__":
    main()
