"""Benchmark 8, versus dbt: the same generated SQL-only project (200 models: views, tables and
incremental models over a 1M-row source) run with `llmt run` and with dbt-duckdb, wall time of a full
run and of a no-op re-run, and their ratios.

    python benchmarks/vs_dbt.py --rows 1000000

dbt-duckdb is installed by this script into its own virtual environment (benchmarks/.work/dbt-venv,
from PyPI); the project's own dependencies stay as they are. When that install fails (no network),
the script prints a `RESULT vs_dbt skipped=...` line and exits 0.

Both tools get byte-identical model files (dbt's Jinja: ref, source, config, is_incremental, this)
and read the same Parquet file as their source, each into its own DuckDB database. The second run
is a no-op: dbt builds every view and table again, llmt only those whose inputs changed (none: state-aware
runs, model_state.py); in both, incremental models run and find no new rows.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import WORK, data_file, parse_args, result, timed_process

# dbt-core 1.10+ pulls dbt-core-experimental-parser, whose build downloads a binary from GitHub (not a
# package registry); 1.9 installs from PyPI alone
DBT_SPEC = ("dbt-core~=1.9.0", "dbt-duckdb~=1.9.0")
LAYERS = (("staging", "view", 40), ("intermediate", "table", 60), ("incremental", "incremental", 60),
          ("marts", "table", 40))


def models(n: int) -> dict[str, str]:
    """Model files (folder/name.sql -> SQL) in four layers, identical for both tools."""
    scale = n / 200
    out: dict[str, str] = {}
    counts = [max(1, round(c * scale)) for _, _, c in LAYERS]
    names: dict[str, list[str]] = {}
    for (folder, _kind, _), count in zip(LAYERS, counts, strict=True):
        names[folder] = [f"{folder[:3]}_{i:03d}" for i in range(count)]
    for i, name in enumerate(names["staging"]):
        out[f"staging/{name}.sql"] = (
            "select review_id, product, language, rating, review_text, created_at, length(review_text) as n_chars\n"
            "from {{ source('raw', 'reviews') }}\n"
            f"where review_id % {len(names['staging'])} = {i} or rating >= {1 + i % 5}\n")
    for i, name in enumerate(names["intermediate"]):
        up = names["staging"][i % len(names["staging"])]
        out[f"intermediate/{name}.sql"] = (
            f"select product, language, count(*) as reviews, avg(rating) as rating, sum(n_chars) as chars,\n"
            f"       min(created_at) as first_day, max(created_at) as last_day\n"
            f"from {{{{ ref('{up}') }}}}\nwhere rating <> {i % 5 + 1}\ngroup by product, language\n")
    for i, name in enumerate(names["incremental"]):
        up = names["staging"][(i * 7) % len(names["staging"])]
        out[f"incremental/{name}.sql"] = (
            "{{ config(materialized='incremental', unique_key='review_id') }}\n"
            f"select review_id, product, rating, n_chars, created_at\nfrom {{{{ ref('{up}') }}}}\n"
            f"where rating >= {1 + i % 3}\n"
            "{% if is_incremental() %}\n  and review_id > (select max(review_id) from {{ this }})\n{% endif %}\n")
    for i, name in enumerate(names["marts"]):
        a = names["intermediate"][i % len(names["intermediate"])]
        b = names["incremental"][i % len(names["incremental"])]
        out[f"marts/{name}.sql"] = (
            f"select a.product, a.language, a.reviews, a.rating, b.n_incremental\n"
            f"from {{{{ ref('{a}') }}}} a\n"
            f"join (select product, count(*) as n_incremental from {{{{ ref('{b}') }}}} group by product) b\n"
            f"  using (product)\n")
    return out


def write_projects(root: Path, data: Path, n: int) -> tuple[Path, Path]:
    if root.exists():
        shutil.rmtree(root)
    llmt_dir, dbt_dir = root / "llmt", root / "dbt"
    for base in (llmt_dir, dbt_dir):
        for rel, sql in models(n).items():
            (base / "models" / rel).parent.mkdir(parents=True, exist_ok=True)
            (base / "models" / rel).write_text(sql)
    folders = "".join(f"  {folder}:\n    +materialized: {kind}\n" for folder, kind, _ in LAYERS)
    (llmt_dir / "project.yml").write_text(
        "name: versus\ntarget: dev\ntargets:\n  dev:\n    warehouse: {path: versus.duckdb}\n"
        f"    provider: {{type: fake}}\nmodels:\n{folders}")
    (llmt_dir / "models" / "sources.yml").write_text(
        f"sources:\n  - name: raw\n    tables:\n      - name: reviews\n        file: {data.resolve()}\n")
    dbt_folders = "".join(f"    {folder}:\n      +materialized: {kind}\n" for folder, kind, _ in LAYERS)
    (dbt_dir / "dbt_project.yml").write_text(
        "name: versus\nversion: '1.0'\nconfig-version: 2\nprofile: versus\nmodel-paths: [models]\n"
        f"models:\n  versus:\n{dbt_folders}")
    (dbt_dir / "profiles.yml").write_text(
        f"versus:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: {dbt_dir / 'versus.duckdb'}\n"
        "      threads: 1\n")
    (dbt_dir / "models" / "sources.yml").write_text(
        "version: 2\nsources:\n  - name: raw\n    tables:\n      - name: reviews\n"
        f"        meta:\n          external_location: \"read_parquet('{data.resolve()}')\"\n")
    return llmt_dir, dbt_dir


def dbt_executable() -> Path | str:
    """dbt from its own venv under WORK (created once); a string says why it is not there."""
    env = WORK / "dbt-venv"
    dbt = env / "bin" / "dbt"
    if dbt.is_file():
        return dbt
    try:
        venv.create(env, with_pip=True, clear=True)
        subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", *DBT_SPEC], check=True,
                       capture_output=True, text=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as exc:
        shutil.rmtree(env, ignore_errors=True)
        detail = getattr(exc, "stderr", "") or str(exc)
        last = detail.strip().splitlines()[-1] if detail.strip() else str(exc)
        return f"cannot install {' '.join(DBT_SPEC)} from PyPI: {last}"
    return dbt


def main() -> None:
    args = parse_args("versus dbt-duckdb on a 200-model SQL-only project", default_rows=1_000_000,
                      models=(int, 200, "models in the generated project"),
                      no_dbt=(int, 0, "1: run the llmt side only (no install, no dbt)"))
    dbt = "--no-dbt 1" if args.no_dbt else dbt_executable()
    data = data_file(args.rows)
    if isinstance(dbt, str):
        llmt_dir, _ = write_projects(WORK / f"versus-{args.models}-{args.rows}", data, args.models)
        llmt_full = timed_process([sys.executable, "-m", "llmt", "run", "--project-dir", str(llmt_dir)])[0]
        result("vs_dbt", rows=args.rows, models=args.models, llmt_full_s=llmt_full, skipped=_word(dbt))
        return
    llmt_dir, dbt_dir = write_projects(WORK / f"versus-{args.models}-{args.rows}", data, args.models)
    llmt = [sys.executable, "-m", "llmt", "run", "--project-dir", str(llmt_dir)]
    dbt_run = [str(dbt), "run", "--project-dir", str(dbt_dir), "--profiles-dir", str(dbt_dir), "--threads", "1"]
    env = {"DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DO_NOT_TRACK": "1"}
    llmt_full = timed_process(llmt)[0]
    llmt_noop = timed_process(llmt)[0]
    dbt_full = timed_process(dbt_run, env)[0]
    dbt_noop = timed_process(dbt_run, env)[0]
    result("vs_dbt", rows=args.rows, models=args.models, llmt_full_s=llmt_full, dbt_full_s=dbt_full,
           full_ratio=dbt_full / llmt_full, llmt_noop_s=llmt_noop, dbt_noop_s=dbt_noop, noop_ratio=dbt_noop / llmt_noop)


def _word(text: str) -> str:
    return text.replace("=", ":").replace(" ", "_")


if __name__ == "__main__":
    main()
