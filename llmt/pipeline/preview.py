"""One rendered sample request per LLM model, for `llmt compile` (reads, never writes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from llmt.pipeline.spec import ENDPOINT, LlmSpec
from llmt.project import Node, Project
from llmt.prompts import PromptRenderer


def sample_request(project: Project, node: Node, spec: LlmSpec) -> tuple[dict[str, Any] | None, str]:
    """(request line, "") for the first input row when the warehouse has the upstream tables;
    otherwise (None, why not)."""
    wh = project.target.warehouse
    path = Path(wh.path) if wh.path == ":memory:" else project.dir / wh.path
    if wh.path == ":memory:" or not path.is_file():
        return None, "no sample: the warehouse has no data yet (run `llmt run` first)"
    try:
        conn = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        return None, f"no sample: cannot open the warehouse read-only ({str(exc).splitlines()[0]})"
    try:
        select = project.render(node, False).strip().rstrip(";")
        cols = ", ".join(f'"{c}"' for c in spec.columns) or "1"
        cursor = conn.execute(f"SELECT {cols} FROM ({select}) LIMIT 1")
        row = cursor.fetchone()
    except duckdb.Error as exc:
        return None, f"no sample: {str(exc).splitlines()[0]}"
    finally:
        conn.close()
    if row is None:
        return None, "no sample: the select returns no rows"
    values = dict(zip(spec.columns, row, strict=False)) if spec.columns else {}
    body = {**spec.body_base(), "messages": PromptRenderer(spec.prompt).messages(values)}
    line = {"custom_id": "<request key>", "method": "POST", "url": ENDPOINT, "body": body}
    return line, ""
