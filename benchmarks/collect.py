"""Benchmark 2, collect: parse + validate + store answers and rebuild the output table, in answers
per second.

    python benchmarks/collect.py --rows 1000000

Every pending row is first prepared into open batches; then one output file (and one error file)
per batch is written in the Batch API's real output format: 99% valid answers, 1% refusals,
truncations, schema violations and HTTP 500s (untimed, in a process of its own). Timed: the batches are collected as
`llmt run` collects them (download, join on custom_id, classify, validate each answer against the
schema, store attempts and answers) and the output table is rebuilt with the typed columns.
"""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import Cpu, Phases, data_file, engine_fields, parse_args, peak_rss_mb, result, review_project
from benchmarks._setup import collect, prepare, write_outputs
from llmt.project.loader import load_project


def fixtures(root: Path) -> int:
    """The untimed part: prepare the project's batches and write their result files; returns the lines."""
    project = load_project(root)
    prepare(project)
    return write_outputs(project, root / "remote", failures=True)


def main() -> None:
    args = parse_args("collect: parse + validate + store answers, rebuild the output table")
    root = review_project(f"collect-{args.rows}", data_file(args.rows), engine=args.engine)
    # in a process of their own, so that peak_rss_mb is collect's (writing the result files holds far more)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        lines = pool.submit(fixtures, root).result()
    project = load_project(root)
    phases = Phases()
    cpu = Cpu(postgres=args.engine == "postgres")
    counts, seconds = collect(project, root / "remote", phases, cpu)
    cpu_s, server_cpu_s = cpu.seconds()
    answers = sum(counts.values())
    assert answers == lines, (answers, lines)
    # store_answers_per_s: the collect phase alone (download, parse, validate, store: DESIGN.md's "collect");
    # cpu_s: llmt's CPU time (user+sys) over collect and output, server_cpu_s its PostgreSQL backends' (when local)
    result("collect", rows=args.rows, answers=answers, ok=counts.get("ok", 0), seconds=seconds,
           answers_per_s=round(answers / seconds), store_answers_per_s=round(answers / phases.seconds["collect"]),
           phases=phases.text(), cpu_s=round(cpu_s, 2),
           **({"server_cpu_s": round(server_cpu_s, 2)} if args.engine == "postgres" else {}),
           peak_rss_mb=round(peak_rss_mb()), **engine_fields(args.engine))


if __name__ == "__main__":
    main()
