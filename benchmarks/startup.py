"""Benchmark 7, startup: `llmt --help`, and `llmt ls` on a generated project of 500 models (400 SQL
models in three layers and 100 LLM models), wall time from process start to exit (median of 5).
`ls_cold_s` is the first `ls` of the fresh project (no target/parse_cache.bin yet: every template is
compiled and every model's SQL parsed); `ls_s` the median of the next ones (the cache is used).

    python benchmarks/startup.py
"""

from __future__ import annotations

import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import EXAMPLE, WORK, parse_args, result, timed_process

LLM = """{{{{ config(materialized='llm', prompt='review_analysis', output_schema='review_analysis',
                unique_key='id') }}}}
select id, product, language, review_text from {{{{ ref('{up}') }}}} where review_text is not null
"""


def generate(root: Path, models: int) -> Path:
    """A project with ``models`` models: staging views, intermediate tables, marts, and LLM models
    (a fifth of them) over the marts."""
    if root.exists():
        shutil.rmtree(root)
    for folder in ("staging", "intermediate", "marts", "llm"):
        (root / "models" / folder).mkdir(parents=True)
    shutil.copytree(EXAMPLE / "prompts", root / "prompts")
    shutil.copytree(EXAMPLE / "schemas", root / "schemas")
    (root / "data").mkdir()
    (root / "data" / "reviews.csv").write_text("id,product,language,review_text\n1,Phone,en,Great\n")
    (root / "project.yml").write_text("name: startup\ntarget: dev\ntargets:\n  dev:\n    warehouse: {path: s.duckdb}\n"
                                      "    provider: {type: fake}\nmodels:\n  +materialized: view\n"
                                      "  intermediate:\n    +materialized: table\n  marts:\n    +materialized: table\n")
    (root / "models" / "sources.yml").write_text(
        "sources:\n  - name: raw\n    tables:\n      - name: reviews\n        file: data/reviews.csv\n")
    n_llm, n_sql = models // 5, models - models // 5
    per_layer = n_sql // 3
    for i in range(n_sql):
        layer = min(i // per_layer, 2)
        if layer == 0:
            folder, up = "staging", "{{ source('raw', 'reviews') }}"
        else:
            folder = "intermediate" if layer == 1 else "marts"
            up = f"{{{{ ref('m{(i - per_layer) % per_layer + (layer - 1) * per_layer:03d}') }}}}"
        (root / "models" / folder / f"m{i:03d}.sql").write_text(
            f"-- model {i}\nselect id, product, language, review_text, length(review_text) as n_chars\nfrom {up}\n"
            f"where id >= {i % 7}\n")
    for j in range(n_llm):
        up = f"m{(2 * per_layer) + j % (n_sql - 2 * per_layer):03d}"
        (root / "models" / "llm" / f"llm{j:03d}.sql").write_text(LLM.format(up=up))
    return root


def median_time(args: list[str], runs: int) -> float:
    return statistics.median(timed_process(args)[0] for _ in range(runs))


def main() -> None:
    args = parse_args("startup: llmt --help and llmt ls on a 500-model project", default_rows=0,
                      models=(int, 500, "models in the generated project"), repeat=(int, 5, "runs (median)"))
    root = generate(WORK / f"startup-{args.models}", args.models)
    llmt = [sys.executable, "-m", "llmt"]
    help_s = median_time([*llmt, "--help"], args.repeat)
    cold_s, _, out, _ = timed_process([*llmt, "ls", "--project-dir", str(root)])
    listed = sum(1 for line in out.splitlines() if line.strip())
    assert listed >= args.models, out[-2000:]
    ls_s = median_time([*llmt, "ls", "--project-dir", str(root)], args.repeat)
    result("startup", models=args.models, help_s=help_s, ls_cold_s=cold_s, ls_s=ls_s)


if __name__ == "__main__":
    main()
