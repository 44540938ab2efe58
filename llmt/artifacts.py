"""target/: compiled SQL, manifest.json and run_results.json. No secrets are ever written here."""

from __future__ import annotations

import json
import logging
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmt import __version__, logs

if TYPE_CHECKING:
    from llmt.pipeline.llm import LlmOptions
    from llmt.pipeline.spec import LlmSpec
    from llmt.project import Project

# the options of `llmt run`/`build` recorded in run_results.json (dbt's `args`): `llmt retry` replays them
OPTION_ARGS = ("full_refresh", "wait", "retry_failed", "timeout", "max_cost", "sample", "mode", "canary", "reask",
               "max_failed_share", "fail_fast", "threads")


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


def write_compiled(project: Project, names: list[str], sql: dict[str, str] | None = None) -> None:
    """Each model's compiled SQL (or its text in ``sql``) under target/compiled/; a file that already holds it is
    left alone (writing costs a hundred times more than reading: the no-op run of a large project)."""
    for name in names:
        node = project.nodes[name]
        path = project.target_dir / "compiled" / node.rel_path
        text = (sql or {}).get(name, node.compiled_sql)
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def write_manifest(project: Project, specs: dict[str, LlmSpec]) -> None:
    nodes = {}
    for node in project.nodes.values():
        entry: dict[str, Any] = {
            "name": node.name, "path": node.rel_path, "relation": node.relation,
            "materialized": node.materialized, "tags": node.tags, "depends_on": sorted(set(node.refs)),
            "sources": sorted({f"{s}.{t}" for s, t in node.sources}), "seeds": sorted(set(node.seeds)),
            "config": node.config, "description": node.description,
        }
        spec = specs.get(node.name)
        if spec is not None:
            entry["llm"] = {
                "template_hash": spec.template_hash, "prompt": spec.prompt.name, "output_schema": spec.schema_name,
                "params": spec.params, "input_columns": spec.columns, "unique_key": spec.unique_key,
                "output_columns": dict(spec.output_columns),
            }
        nodes[f"model.{node.name}"] = entry
    write_json(project.target_dir / "manifest.json", {
        "metadata": {"llmt_version": __version__, "project": project.name, "target": project.target_name,
                     "generated_at": datetime.now(UTC).isoformat()},
        "nodes": nodes,
        "sources": {f"source.{s}.{t}": {"where": src.where, "file": src.file, "files": [str(f) for f in src.files],
                                        "options": src.options}
                    for (s, t), src in project.sources.items()},
        "seeds": {f"seed.{s.name}": {"name": s.name, "path": s.rel_path, "relation": s.relation, "config": s.config,
                                     "description": s.description} for s in project.seeds.values()},
    })


def run_args(project: Project, options: LlmOptions | None = None, **extra: Any) -> dict[str, Any]:
    """The command's options that decide what it runs (beside the selection): --vars, the ``options`` of a run or
    build, and ``extra`` (e.g. --store-failures)."""
    args: dict[str, Any] = {"vars": project.cli_vars, **extra}
    if options is not None:
        args.update({f.name: getattr(options, f.name) for f in fields(options) if f.name in OPTION_ARGS})
    return args


def write_run_results(
    project: Project, run_id: str, results: list[dict[str, Any]], seconds: float, command: str, args: dict[str, Any]
) -> None:
    """target/run_results.json (what `llmt retry` reads: the results and the command's ``args``, `run_args`), each
    result also logged."""
    for r in results:
        logs.event("result", f"{r['unique_id']}: {r['status']} in {r['execution_time']:.3f}s",
                   level=logging.WARNING if r["status"] in ("error", "fail") else logging.INFO,
                   unique_id=r["unique_id"], status=r["status"], seconds=r["execution_time"])
    write_json(project.target_dir / "run_results.json", {
        "metadata": {"llmt_version": __version__, "run_id": run_id, "command": command,
                     "target": project.target_name, "generated_at": datetime.now(UTC).isoformat()},
        "elapsed_time": round(seconds, 3),
        "args": args,
        "results": results,
    })
