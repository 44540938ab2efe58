"""Benchmark 9, independent LLM models in one run: the wall time of `llmt run` over 1, 3 and 10 LLM models
that each depend only on the staging view, against the local emulator whose batches each take ``--latency``
real seconds. Each count runs twice: against instant batches (llmt's own work: start-up, render, submit, collect)
and against batches of ``--latency`` seconds. The figure, `models_<n>_x`, is the difference divided by one batch's
latency: the batch latencies the run waited (about 1 when every model's batch is in flight at once, about n when
each model waits for the one before); `models_<n>_s` and `models_<n>_own_s` are the two wall times.

    python benchmarks/parallel.py --latency 5 --models 1,3,10

Each model has a prompt of its own (identical requests of two models would be sent once), and `--rows` rows
(one batch each); the realtime canary is off. Against an older llmt (e.g. a worktree of the base commit), run
this script with that worktree first on PYTHONPATH: the `llmt run` subprocess is whichever llmt it imports.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import LLM_MODEL, data_file, parse_args, result, review_project, timed_process
from tests.emulator import Emulator, Timing


def project(models: int, rows: int, base_url: str) -> Path:
    """The benchmark project with ``models`` LLM models over the staging view, each with its own prompt."""
    provider = f"{{type: openai, base_url: '{base_url}', poll_interval: 0.05, max_retries: 2}}"
    root = review_project(f"parallel-{models}", data_file(rows), provider)
    (root / "models" / "review_insights.sql").unlink()
    text = (root / "prompts" / "review_analysis.md").read_text()
    for i in range(models):
        (root / "prompts" / f"analysis_{i}.md").write_text(
            text.replace("system: |\n", f"system: |\n  You work for team {i}.\n", 1))
        (root / "models" / f"insights_{i}.sql").write_text(
            LLM_MODEL.replace("prompt='review_analysis'", f"prompt='analysis_{i}'"))
    return root


def wall_time(models: int, rows: int, latency: float) -> tuple[float, int]:
    """Seconds of one `llmt run` (process start to exit) over ``models`` independent LLM models, and the
    number of batches the emulator saw."""
    emu = Emulator(api_key="sk-bench", timing=Timing(in_progress=latency)).start()
    try:
        root = project(models, rows, emu.base_url)
        seconds, _, out, _ = timed_process([sys.executable, "-m", "llmt", "run", "--project-dir", str(root),
                                            "--output", "json"], env={"OPENAI_API_KEY": "sk-bench"})
    finally:
        emu.stop()
    assert not emu.errors, emu.errors
    llm = [r["llm"] for r in json.loads(out)["results"] if r.get("llm")]
    assert len(llm) == models and all(r["answered"] == r["requests"] > 0 for r in llm), llm
    return seconds, len(emu.seen.batches)


def main() -> None:
    args = parse_args("independent LLM models in one run, against batches that take --latency seconds",
                      default_rows=20, latency=(float, 5.0, "seconds each emulated batch stays in progress"),
                      models=(str, "1,3,10", "how many independent LLM models, comma-separated"))
    fields: dict[str, float | int] = {"latency_s": args.latency, "rows": args.rows}
    for n in (int(m) for m in args.models.split(",")):
        own, _ = wall_time(n, args.rows, 0.0)
        seconds, batches = wall_time(n, args.rows, args.latency)
        assert batches == n, (n, batches)
        fields[f"models_{n}_s"], fields[f"models_{n}_own_s"] = seconds, own
        fields[f"models_{n}_x"] = round((seconds - own) / args.latency, 2)
    result("parallel", **fields)


if __name__ == "__main__":
    main()
