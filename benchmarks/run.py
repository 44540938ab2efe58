"""Run every benchmark and write benchmarks/results.md (machine, date, figures, commands).

    python benchmarks/run.py                 # 100k and 1M rows, and PostgreSQL at 1M: about 20 minutes on 2 cores
    python benchmarks/run.py --sizes 1000 --e2e-rows 1000 --dbt-rows 1000 --out /tmp/r.md   # a quick look

Each benchmark runs in its own process; its `RESULT` line is echoed and parsed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import ROOT, cpu_probe, duckdb_probe, machine, timed_process

HERE = Path(__file__).parent
Results = dict[str, dict[str, str]]


def bench(script: str, *args: str) -> list[dict[str, str]]:
    """Run one script; its RESULT lines as dicts (with `bench`), plus its peak RSS when it is one line."""
    command = [sys.executable, str(HERE / script), *args]
    print(f"$ python benchmarks/{script} {' '.join(args)}", flush=True)
    _, rss, out, _ = timed_process(command)
    found = []
    for line in out.splitlines():
        if line.startswith("RESULT "):
            print("  " + line, flush=True)
            name, *pairs = line.split()[1:]
            fields = dict(p.split("=", 1) for p in pairs)
            found.append({"bench": name, **fields})
    if len(found) == 1:
        found[0].setdefault("process_peak_rss_mb", str(round(rss)))
    return found


THROUGHPUT = {"prepare": "rows_per_s", "collect": "answers_per_s"}


def median(name: str, runs: list[list[dict[str, str]]]) -> dict[str, str]:
    """The run with the median figure, with every run's figure in `runs`."""
    field = THROUGHPUT[name]
    found = sorted((r[0] for r in runs if r), key=lambda r: float(r[field]))
    if not found:
        return {"bench": name}
    return {**found[(len(found) - 1) // 2], "runs": ",".join(r[field] for r in found)}


def f(results: Results, key: str, field: str, fmt: str = "{:,.0f}") -> str:
    value = results.get(key, {}).get(field)
    if value is None:
        return "-"
    try:
        return fmt.format(float(value))
    except ValueError:
        return value.replace("_", " ")


def table(results: Results, sizes: list[int], e2e_rows: int, dbt_rows: int, repeat: int) -> list[str]:
    big, small = max(sizes), min(sizes)
    cols = [f"{n:,} rows" for n in sizes]
    lines = [f"Prepare and collect: the median of {repeat} runs, taken in turns (every run's figure is in `runs=` "
             "below).", "",
             "| benchmark | target | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(sizes)]

    def row(name: str, target: str, cells: list[str]) -> None:
        lines.append(f"| {name} | {target} | " + " | ".join(cells) + " |")

    row("1. prepare (diff, keys, render, write, record), rows/s", ">= 50,000",
        [f(results, f"prepare@{n}", "rows_per_s") for n in sizes])
    row("1. of which render + write shards (one core), requests/s", "-",
        [f(results, f"prepare@{n}", "render_rows_per_s") for n in sizes])
    row("1. prepare with DuckDB on one thread too (all on one core), rows/s", ">= 50,000",
        ["-"] * (len(sizes) - 1) + [f(results, "prepare@one-core", "rows_per_s")])
    row("2. collect (parse, validate, store, rebuild output), answers/s", ">= 100,000",
        [f(results, f"collect@{n}", "answers_per_s") for n in sizes])
    row("2. of which download, parse, validate, store (DESIGN.md's collect), answers/s", ">= 100,000",
        [f(results, f"collect@{n}", "store_answers_per_s") for n in sizes])
    row("3. no-op `llmt run`, s (process start to exit)", "< 2 s at 1M",
        [f(results, f"noop@{n}", "seconds", "{:.2f}") for n in sizes])
    row("4. incremental, 1% changed: find and prepare, s", "-",
        [f(results, f"incremental@{n}", "seconds", "{:.2f}") for n in sizes])
    peak = []
    for n in sizes:
        values = [float(results[k].get("peak_rss_mb") or results[k]["process_peak_rss_mb"]) for k in
                  (f"{b}@{n}" for b in ("prepare", "collect", "noop", "incremental")) if k in results]
        peak.append(f"{max(values):,.0f} MB" if values else "-")
    row("5. peak RSS of 1-4 (largest; of the llmt process each one times)", "< 1 GB, flat", peak)
    lines.append("")
    lines.append(f"Growth of peak memory from {small:,} to {big:,} rows: "
                 + (f"{float(peak[-1].split()[0].replace(',', '')) / float(peak[0].split()[0].replace(',', '')):.2f}x"
                    if "-" not in (peak[0], peak[-1]) and big != small else "-") + ".")
    lines += ["", "| benchmark | target | figure |", "|---|---|---|"]
    lines.append(f"| 6. end to end against the emulator, {e2e_rows:,} rows | - | "
                 f"{f(results, 'e2e', 'seconds', '{:.1f}')} s ({f(results, 'e2e', 'rows_per_s')} rows/s, "
                 f"{f(results, 'e2e', 'batches')} batches) |")
    lines.append(f"| 7. `llmt --help` | < 0.3 s | {f(results, 'startup', 'help_s', '{:.3f}')} s |")
    lines.append(f"| 7. `llmt ls`, {f(results, 'startup', 'models')}-model project (first run: no parse cache) | - | "
                 f"{f(results, 'startup', 'ls_s', '{:.3f}')} s ({f(results, 'startup', 'ls_cold_s', '{:.3f}')} s) |")
    if "skipped" in results.get("vs_dbt", {}):
        lines.append(f"| 8. versus dbt-duckdb | faster | skipped: {f(results, 'vs_dbt', 'skipped')} |")
    else:
        lines.append(f"| 8. versus dbt-duckdb, {f(results, 'vs_dbt', 'models')} SQL models, {dbt_rows:,}-row source, "
                     f"full run | faster | llmt {f(results, 'vs_dbt', 'llmt_full_s', '{:.1f}')} s, dbt "
                     f"{f(results, 'vs_dbt', 'dbt_full_s', '{:.1f}')} s: dbt takes "
                     f"{f(results, 'vs_dbt', 'full_ratio', '{:.1f}')}x as long |")
        lines.append(f"| 8. versus dbt-duckdb, no-op re-run | faster | llmt "
                     f"{f(results, 'vs_dbt', 'llmt_noop_s', '{:.1f}')} s, dbt "
                     f"{f(results, 'vs_dbt', 'dbt_noop_s', '{:.1f}')} s: dbt takes "
                     f"{f(results, 'vs_dbt', 'noop_ratio', '{:.1f}')}x as long |")
    parallel = results.get("parallel", {})
    lines.append(f"| 9. independent LLM models in one run, batches of {f(results, 'parallel', 'latency_s', '{:g}')} s: "
                 "the batch latencies waited (wall time less llmt's own work, ÷ one batch's latency) | ~1 | "
                 + "; ".join(f"{k.split('_')[1]} models {v}" for k, v in parallel.items()
                             if k.startswith("models_") and k.endswith("_x")) + " |")
    pg = [k for k in results if k.endswith("-pg")]
    if pg:
        lines += ["", f"PostgreSQL beside DuckDB at {big:,} rows, in the same run (the server: "
                  f"{results[pg[0]].get('server', 'see below').replace('_', ' ')}; peak RSS is llmt's process, the "
                  "server's own memory apart):", "",
                  "| benchmark | target (PostgreSQL) | DuckDB | PostgreSQL |", "|---|---|---|---|"]
        for name, target, key, field, fmt in (
                ("1. prepare, rows/s", ">= 30,000", "prepare", "rows_per_s", "{:,.0f}"),
                ("2. collect + rebuild, answers/s", ">= 50,000", "collect", "answers_per_s", "{:,.0f}"),
                ("3. no-op `llmt run`, s", "< 3 s", "noop", "seconds", "{:.2f}")):
            lines.append(f"| {name} | {target} | {f(results, f'{key}@{big}', field, fmt)} | "
                         f"{f(results, f'{key}@{big}-pg', field, fmt)} |")
        rss = [max((float(results[k].get("peak_rss_mb") or results[k]["process_peak_rss_mb"])
                    for k in (f"{b}@{big}{suffix}" for b in ("prepare", "collect", "noop")) if k in results),
                   default=0.0) for suffix in ("", "-pg")]
        lines.append(f"| 5. peak RSS of 1-3 | < 1 GB | {rss[0]:,.0f} MB | {rss[1]:,.0f} MB |")
    return lines


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "llmt"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + (" + uncommitted changes in llmt/" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100000,1000000", help="rows for benchmarks 1-5, comma-separated")
    parser.add_argument("--e2e-rows", type=int, default=100_000)
    parser.add_argument("--dbt-rows", type=int, default=1_000_000)
    parser.add_argument("--models", type=int, default=500, help="models of the startup project")
    parser.add_argument("--skip-dbt", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true", help="no PostgreSQL figures (see --engine postgres)")
    parser.add_argument("--latency", type=float, default=5.0, help="seconds each emulated batch takes (parallel.py)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of prepare and collect at each size (median kept)")
    parser.add_argument("--out", type=Path, default=HERE / "results.md")
    parser.add_argument("--duckdb-memory-limit", default="512MB",
                        help="LLMT_DUCKDB_MEMORY_LIMIT for llmt's connections ('' for DuckDB's default, 80%% of RAM)")
    args = parser.parse_args()
    os.environ["LLMT_DUCKDB_MEMORY_LIMIT"] = args.duckdb_memory_limit
    sizes = sorted(int(s) for s in args.sizes.split(","))
    started, t0, probes = dt.datetime.now(dt.UTC), time.perf_counter(), [(cpu_probe(), duckdb_probe())]
    results: Results = {}
    raw: list[str] = []

    def keep(found: list[dict[str, Any]], suffix: str = "") -> None:
        for item in found:
            results[item["bench"] + suffix] = item
            raw.append("RESULT " + " ".join(f"{k}={v}" for k, v in item.items()))

    for n in sizes:
        # the median of several runs (one run on a shared VM is a lottery), taken in turns, so that a slow
        # stretch of the machine costs one run of each benchmark rather than every run of one
        repeated = {f"prepare@{n}": ["prepare.py", "--rows", str(n)], f"collect@{n}": ["collect.py", "--rows", str(n)]}
        postgres = n == max(sizes) and not args.skip_postgres
        if n == max(sizes):
            repeated["prepare@one-core"] = ["prepare.py", "--rows", str(n), "--duckdb-threads", "1"]
        if postgres:
            for name in ("prepare", "collect"):
                repeated[f"{name}@{n}-pg"] = [f"{name}.py", "--rows", str(n), "--engine", "postgres"]
        runs: dict[str, list[list[dict[str, str]]]] = {key: [] for key in repeated}
        for _ in range(args.repeat):
            for key, (script, *script_args) in repeated.items():
                runs[key].append(bench(script, *script_args))
        for key, found in runs.items():
            keep([median(key.split("@")[0], found)], "@" + key.split("@")[1])
        for name in ("noop", "incremental"):
            keep(bench(f"{name}.py", "--rows", str(n)), f"@{n}")
        if postgres:
            keep(bench("noop.py", "--rows", str(n), "--engine", "postgres"), f"@{n}-pg")
    keep(bench("e2e.py", "--rows", str(args.e2e_rows)))
    keep(bench("parallel.py", "--latency", str(args.latency)))
    keep(bench("startup.py", "--models", str(args.models)))
    if not args.skip_dbt:
        keep(bench("vs_dbt.py", "--rows", str(args.dbt_rows)))
    probes.append((cpu_probe(), duckdb_probe()))
    minutes = (time.perf_counter() - t0) / 60
    import duckdb

    command = "python benchmarks/run.py" + ("" if sys.argv[1:] == [] else " " + " ".join(sys.argv[1:]))
    text = [
        "# llmt benchmark results", "",
        f"Written by `{command}` on {started:%Y-%m-%d %H:%M} UTC in {minutes:.1f} minutes.", "",
        f"- machine: {machine()}",
        f"- DuckDB {duckdb.__version__}; llmt at {git_revision()}; LLMT_DUCKDB_MEMORY_LIMIT="
        f"{args.duckdb_memory_limit or '(unset: DuckDB default)'}",
        f"- CPU probe (`cpu_probe` in _common.py: a fixed pure-Python loop; on a shared VM it varies by more than "
        f"1.5x, and every figure with it): {probes[0][0]:.2f} s at the start, {probes[1][0]:.2f} s at the end; "
        f"DuckDB probe (`duckdb_probe`: a fixed hash and join on both cores): {probes[0][1]:.2f} s at the start, "
        f"{probes[1][1]:.2f} s at the end",
        "- data: generated synthetic reviews (benchmarks/_data.py): 20-400 words (median 60), 8 languages, "
        "about 10% duplicate texts", "",
        "What each benchmark measures, and how to run one alone: [README.md](README.md).", "",
        *table(results, sizes, args.e2e_rows, args.dbt_rows, args.repeat), "",
        "## Result lines", "", "```", *raw, "```", "",
    ]
    args.out.write_text("\n".join(text))
    print(f"wrote {args.out} in {minutes:.1f} minutes", flush=True)


if __name__ == "__main__":
    main()
