"""Benchmark 6, end to end against the local OpenAI Batch API emulator (tests/emulator), configured
instant: `llmt run` from process start to exit, every row new.

    python benchmarks/e2e.py --rows 100000

The emulator runs in this process on a loopback port; `llmt run` (a subprocess) renders the shards,
uploads them through the official `openai` SDK, creates the batches, polls, downloads the output files,
collects and builds the output table. The emulator's own work (it parses every request, counts its
tokens and synthesises a schema-valid answer) is inside the figure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import data_file, parse_args, result, review_project, timed_process
from tests.emulator import Emulator


def main() -> None:
    args = parse_args("end to end against the local emulator")
    emu = Emulator(api_key="sk-bench").start()
    try:
        provider = f"{{type: openai, base_url: '{emu.base_url}', poll_interval: 0.05, max_retries: 2}}"
        root = review_project(f"e2e-{args.rows}", data_file(args.rows), provider)
        seconds, rss, out, cpu = timed_process([sys.executable, "-m", "llmt", "run", "--project-dir", str(root),
                                           "--output", "json"], env={"OPENAI_API_KEY": "sk-bench"})
    finally:
        emu.stop()
    assert not emu.errors, emu.errors
    llm = next(r for r in json.loads(out)["results"] if r["name"] == "review_insights")["llm"]
    assert llm["answered"] == llm["requests"] > 0 and llm["rows"] == args.rows, llm
    result("e2e", rows=args.rows, requests=llm["requests"], batches=len(emu.seen.batches), seconds=seconds,
           rows_per_s=round(args.rows / seconds), cpu_s=round(cpu, 2), peak_rss_mb=round(rss))


if __name__ == "__main__":
    main()
