"""The SQL of fine-tuning: which rows of an LLM model's output are exported as training examples (answered, the
user's filter, none of the model's tests failing on them), the scores of its latest eval, and the fine-tuning jobs
`llmt finetune submit` records (state.py: `finetune_jobs`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmt.warehouse.base import Warehouse

# the column a failing row of these generic tests gives the tested column's offending value in
VALUE_COLUMNS = {"unique": "unique_field", "accepted_values": "value_field", "relationships": "from_field"}
# scores of `llmt eval` on a scale where 1 is perfect (mae is not one)
SCORES = ("accuracy", "macro_f1", "jaccard")
JOB_COLUMNS = ("submission, base_model, suffix, training_path, validation_path, training_sha256, validation_sha256, "
               "training_file_id, validation_file_id, job_id, status, fine_tuned_model, trained_tokens, estimate_usd, "
               "error, created_at, updated_at")  # the fields of JobRow


def failing_rows_predicate(wh: Warehouse, failing: str, unique_key: Sequence[str], kind: str, column: str | None,
                           where: str | None) -> str | None:
    """A condition on an output row (alias `t`) that holds when the test whose failing rows are ``failing`` fails
    on it: its failing rows name the row by its unique key, or (``kind``: unique, accepted_values, relationships)
    name the offending value of the tested ``column`` (within the test's ``where``). None: the test says nothing of
    single rows (a model-level test, or a singular test without the unique key)."""
    names = {c.name for c in wh.describe(failing)}
    if all(k in names for k in unique_key):
        same = " AND ".join(f"f.{wh.quote(k)} = t.{wh.quote(k)}" for k in unique_key)
        return f"EXISTS (SELECT 1 FROM ({failing}) AS f WHERE {same})"
    alias = VALUE_COLUMNS.get(kind)
    if alias is None or column is None or alias not in names:
        return None
    return f"(({column}) IN (SELECT f.{alias} FROM ({failing}) AS f)" + (f" AND ({where}))" if where else ")")


def count_answered(wh: Warehouse, output: str, where: str | None, condition: str | None = None) -> int:
    """The output rows (alias `t`) with an answer to their current request that pass ``where`` (and
    ``condition``)."""
    return int(wh.scalar(f"SELECT count(*) FROM {output} AS t WHERE {_answered(where)}"
                         + (f" AND {condition}" if condition else "")) or 0)


def exported_sql(wh: Warehouse, output: str, columns: Sequence[str], where: str | None,
                 excluded: Sequence[str]) -> str:
    """Each exported row's request key, ``columns`` and stored answer, in key order: answered, passing ``where``,
    none of the ``excluded`` conditions holding."""
    cols = "".join(f", t.{wh.quote(c)}" for c in columns)
    keep = "".join(f" AND NOT {p}" for p in excluded)
    return (f"SELECT t._llmt_request_key{cols}, a.answer FROM {output} AS t JOIN {wh.state_table('answers')} AS a "
            f"ON a.request_key = t._llmt_answer_key WHERE {_answered(where)}{keep} ORDER BY t._llmt_request_key")


def _answered(where: str | None) -> str:
    return "t._llmt_status = 'ok'" + (f" AND ({where})" if where else "")


def latest_scores(wh: Warehouse, node: str, template_hash: str) -> list[tuple[str, str, float | None]] | None:
    """(field, metric, value) of the latest `llmt eval` of this version of a model's prompt, for the metrics where
    1 is perfect; None when it was never evaluated."""
    run = wh.scalar(f"SELECT run_id FROM {wh.state_table('eval_runs')} WHERE node = ? AND template_hash = ? "
                    "ORDER BY created_at DESC LIMIT 1", [node, template_hash])
    if run is None:
        return None
    return [(str(f), str(m), None if v is None else float(v)) for f, m, v in wh.fetchall(
        f"SELECT field, metric, value FROM {wh.state_table('eval_metrics')} WHERE run_id = ? AND node = ? "
        f"AND metric IN ({', '.join(wh.string(s) for s in SCORES)}) ORDER BY field, metric", [run, node])]


@dataclass
class JobRow:
    """A recorded fine-tuning submission."""

    submission: str
    base_model: str
    suffix: str | None
    training_path: str
    validation_path: str | None
    training_sha256: str
    validation_sha256: str | None
    training_file_id: str | None
    validation_file_id: str | None
    job_id: str | None
    status: str
    fine_tuned_model: str | None
    trained_tokens: int | None
    estimate_usd: float | None
    error: str | None
    created_at: Any = None
    updated_at: Any = None


class FineTuneJobs:
    """The fine-tuning jobs of `finetune_jobs`, each recorded before its files are uploaded."""

    def __init__(self, wh: Warehouse) -> None:
        self.wh = wh
        self.table = wh.state_table("finetune_jobs")

    def record(self, job: JobRow) -> None:
        self.wh.execute(f"INSERT INTO {self.table} ({JOB_COLUMNS}) VALUES ({', '.join('?' * 15)}, now(), now())",
                        [job.submission, job.base_model, job.suffix, job.training_path, job.validation_path,
                         job.training_sha256, job.validation_sha256, job.training_file_id, job.validation_file_id,
                         job.job_id, job.status, job.fine_tuned_model, job.trained_tokens, job.estimate_usd,
                         job.error])

    def update(self, job: JobRow, **values: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in values)
        self.wh.execute(f"UPDATE {self.table} SET {sets}, updated_at = now() WHERE submission = ?",
                        [*values.values(), job.submission])
        for key, value in values.items():
            setattr(job, key, value)

    def unfinished(self, training_sha256: str, validation_sha256: str | None, base_model: str,
                   suffix: str | None) -> JobRow | None:
        """A submission of the same files, base model and suffix whose job was not created (or not recorded)."""
        rows = self.wh.fetchall(
            f"SELECT {JOB_COLUMNS} FROM {self.table} WHERE job_id IS NULL AND training_sha256 = ? AND base_model = ? "
            "AND validation_sha256 IS NOT DISTINCT FROM ? AND suffix IS NOT DISTINCT FROM ? ORDER BY created_at DESC "
            "LIMIT 1", [training_sha256, base_model, validation_sha256, suffix])
        return JobRow(*rows[0]) if rows else None

    def jobs(self) -> list[JobRow]:
        return [JobRow(*r) for r in self.wh.fetchall(f"SELECT {JOB_COLUMNS} FROM {self.table} ORDER BY created_at")]
