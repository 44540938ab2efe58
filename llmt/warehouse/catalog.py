"""What `llmt docs generate` reads of the built relations (their columns and comments come from the Warehouse's
describe and comments): row counts of tables, and how many rows of an LLM model's output are in each status."""

from __future__ import annotations

from llmt.warehouse.base import Warehouse


def row_count(wh: Warehouse, schema: str, name: str) -> int:
    return int(wh.scalar(f"SELECT count(*) FROM {wh.relation(schema, name)}") or 0)


def status_counts(wh: Warehouse, schema: str, name: str) -> dict[str, int]:
    """Rows of an LLM model's output table per `_llmt_status` (ok, stale, pending, failed)."""
    return {str(s): int(n) for s, n in wh.fetchall(
        f"SELECT _llmt_status, count(*) FROM {wh.relation(schema, name)} GROUP BY _llmt_status")}
