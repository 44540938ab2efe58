"""Benchmark 10, retrieval: the top k documents of every query row by cosine similarity, brute force, in the SQL
that `{{ nearest_neighbors(...) }}` writes for DuckDB (every query against every document, a top-k aggregate
per query: DuckDBWarehouse.nearest_sql), over random vectors of `--dims` floats in two tables (FLOAT[n] columns,
as embedding models write them). Times the CREATE TABLE of the neighbours (process already started, data
generated), wall and CPU seconds (DuckDB's threads included); also says whether DuckDB's vss extension is
installed (an HNSW index would take over there: benchmarks/README.md).

    python benchmarks/retrieval.py --queries 100000 --documents 10000 --dims 512 --k 3
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import WORK, parse_args, result, stopwatch
from llmt.warehouse.duckdb import DuckDBWarehouse


def vectors(name: str, key: str, rows: int, dims: int, seed: float) -> str:
    """A table of ``rows`` random vectors of ``dims`` floats (deterministic: DuckDB's random from ``seed``)."""
    return (f"SELECT setseed({seed}); CREATE TABLE {name} AS SELECT i AS {key}, "
            f"list_transform(range({dims}), lambda x: random()::FLOAT - 0.5)::FLOAT[{dims}] AS embedding "
            f"FROM range({rows}) AS t(i)")


def main() -> None:
    import duckdb

    args = parse_args(__doc__ or "", 0, queries=(int, 100_000, "query rows"), documents=(int, 10_000, "documents"),
                      dims=(int, 512, "floats per vector"), k=(int, 3, "neighbours per query"),
                      threads=(int, 0, "DuckDB threads (0: one per core)"))
    path = WORK / "retrieval" / f"r-{args.queries}-{args.documents}-{args.dims}.duckdb"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with duckdb.connect(str(path)) as conn:
        if args.threads:
            conn.execute(f"SET threads = {args.threads}")
        conn.execute(vectors("queries", "query_id", args.queries, args.dims, 0.1))
        conn.execute(vectors("documents", "document_id", args.documents, args.dims, 0.2))
        conn.execute("CHECKPOINT")
        sql = DuckDBWarehouse.nearest_sql("queries", "documents", ["query_id"], ["document_id"], "embedding", args.k)
        cpu = time.process_time()
        with stopwatch() as took:
            conn.execute(f"CREATE TABLE hits AS {sql}")
        cpu = time.process_time() - cpu
        found = conn.execute("SELECT count(*), count(DISTINCT query_id) FROM hits").fetchone()
        vss = conn.execute("SELECT coalesce(max(installed::INT), 0) FROM duckdb_extensions() "
                           "WHERE extension_name = 'vss'").fetchone()
        threads = conn.execute("SELECT current_setting('threads')").fetchone()
    path.unlink()
    assert found is not None and found[1] == args.queries and found[0] == args.queries * min(args.k, args.documents)
    pairs = args.queries * args.documents
    result("retrieval", seconds=round(took[0], 2), cpu_s=round(cpu, 2), pairs=pairs, pairs_per_s=round(pairs / took[0]),
           queries=args.queries, documents=args.documents, dims=args.dims, k=args.k,
           threads=threads[0] if threads else "", vss_installed=bool(vss and vss[0]))


if __name__ == "__main__":
    main()
