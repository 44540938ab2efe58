"""Benchmark 5, memory: peak resident memory (RSS) of benchmarks 1-4, each run in its own process at
the given size (and, to show whether it grows with the rows, at a tenth of it).

    python benchmarks/memory.py --rows 1000000

Each benchmark's peak is read from the kernel's accounting of that process (`wait4`), which includes
DuckDB's memory. Prints the four benchmarks' own result lines, then one `RESULT memory` line.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import parse_args, result, timed_process

BENCHMARKS = ("prepare", "collect", "noop", "incremental")


def run_all(rows: int) -> dict[str, float]:
    """Run benchmarks 1-4 at ``rows``; echo their result lines; return each one's peak RSS in MB."""
    peaks: dict[str, float] = {}
    here = Path(__file__).parent
    for name in BENCHMARKS:
        _, rss, out, _ = timed_process([sys.executable, str(here / f"{name}.py"), "--rows", str(rows)])
        for line in out.splitlines():
            if line.startswith("RESULT "):
                print(line, flush=True)
        peaks[name] = rss
    return peaks


def main() -> None:
    args = parse_args("memory: peak RSS of benchmarks 1-4", default_rows=1_000_000,
                      compare=(int, 1, "also run at a tenth of the rows, to show the growth (1) or not (0)"),
                      duckdb_memory_limit=(str, "512MB", "LLMT_DUCKDB_MEMORY_LIMIT ('' for DuckDB's default)"))
    os.environ["LLMT_DUCKDB_MEMORY_LIMIT"] = args.duckdb_memory_limit
    peaks = run_all(args.rows)
    fields: dict[str, object] = {"rows": args.rows, **{f"{k}_mb": round(v) for k, v in peaks.items()},
                                 "max_mb": round(max(peaks.values()))}
    if args.compare and args.rows >= 10:
        small = run_all(args.rows // 10)
        fields["max_mb_at_tenth"] = round(max(small.values()))
        fields["growth"] = round(max(peaks.values()) / max(small.values()), 2)
    result("memory", **fields)


if __name__ == "__main__":
    main()
