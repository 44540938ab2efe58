"""Spark: the job a no-op run of an LLM model is dominated by, at scale, and Spark's own startup apart.

    python benchmarks/spark_keys.py --rows 1000000 --master 'local[2]'

Setup (untimed): the generated reviews (a parquet file) as a Spark table, and a table of their request keys
(every row answered). Timed: starting the local session (its JVM and catalog), then three times (the median
is reported) the hash-and-anti-join job: each row's request key computed in Spark SQL from the canonical text
of its referenced columns (`input_hash_sql`, `request_key_sql`), the rows without a stored key kept by a LEFT
ANTI JOIN, and counted (none: the run would send nothing). Spark's work is in its JVM, not in this process: the
figures are wall times. LLM models do not run on Spark yet (README, Warehouses); this measures the part of
their no-op run that would run in Spark.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import WORK, data_file, parse_args, result
from llmt.project.config import SparkConfig
from llmt.warehouse.spark import SparkWarehouse

TEMPLATE_HASH = "0" * 64  # one model's template half of the key (its value does not change the work)


def main() -> None:
    args = parse_args("Spark: Spark's startup, and the request-key + anti-join job of a no-op run",
                      repeat=(int, 3, "jobs to time (median)"), master=(str, "local[2]", "Spark's master"))
    data = data_file(args.rows)
    home = WORK / f"spark-{args.rows}"
    shutil.rmtree(home, ignore_errors=True)
    config = SparkConfig(type="spark", master=args.master, schema="bench",
                         conf={"spark.driver.memory": "2g", "spark.ui.enabled": False})
    started = time.perf_counter()
    wh = SparkWarehouse(config, home)
    wh.execute("SELECT 1")  # the session started, the catalog opened and the schema made
    startup = time.perf_counter() - started
    try:
        wh.execute(f"CREATE TABLE reviews USING parquet AS SELECT * FROM parquet.`{data}`")
        referenced = [c for c in wh.describe("SELECT * FROM reviews") if c.name in ("product", "review_text")]
        key = wh.request_key_sql(wh.string(TEMPLATE_HASH), wh.input_hash_sql(referenced, "r"))
        keys = f"SELECT {key} AS _llmt_request_key, r.* FROM reviews r"
        wh.execute(f"CREATE TABLE answers USING parquet AS SELECT _llmt_request_key AS request_key FROM ({keys})")
        pending = (f"SELECT count(*) FROM ({keys}) i LEFT ANTI JOIN answers a "
                   "ON a.request_key = i._llmt_request_key")
        times = []
        for _ in range(args.repeat):
            began = time.perf_counter()
            assert wh.scalar(pending) == 0
            times.append(time.perf_counter() - began)
    finally:
        wh.close()
        shutil.rmtree(home, ignore_errors=True)
    result("spark_keys", rows=args.rows, master=args.master, startup_seconds=startup,
           seconds=statistics.median(times), runs=",".join(f"{t:.2f}" for t in times),
           rows_per_second=round(args.rows / statistics.median(times)))


if __name__ == "__main__":
    main()
