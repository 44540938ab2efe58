"""llmt's state tables, in their own schema, versioned by numbered migrations.

- ``answers``: one stored answer per request key (the cache; shared by every model), with the kind of
  provider that gave it (`provider`: fake or openai; NULL: not known, from before version 7).
- ``attempts``: every attempt at a request with its outcome, usage and provider kind; one per (shard, key).
- ``shards``: batch input files and their remote lifecycle (intent is written before every
  remote side effect: written -> uploaded -> submitted -> collected), and when `llmt cancel` asked
  for a shard's batch to be cancelled (`cancel_requested_at`, recorded before the provider is asked).
- ``shard_requests``: which request keys a shard carries (to reconcile missing lines).
- ``runs``: one row per command that changed state.
- ``eval_runs``, ``eval_metrics``, ``eval_answers``: `llmt eval` per model and prompt version
  (template hash): the labelled file, metric values, and each example's answer and labels.
- ``finetune_jobs``: the fine-tuning jobs `llmt finetune submit` created, from the intent (before any upload) to
  the fine-tuned model.

Timestamps are TIMESTAMPTZ (instants; shown in the session's time zone).

Costs (the ledger): every attempt carries its usage and what it cost (`cost_usd`, at batch or live
price); shards carry the input tokens (exact, or an upper bound until a budget needs them exact:
`input_tokens_exact`) and max output tokens of what they submitted, so that open batches count
against budgets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmt.warehouse.base import quoted

if TYPE_CHECKING:
    from llmt.warehouse.base import Warehouse

KEYS = "uncompressed"  # how request keys (hex digests) are stored where the engine lets llmt choose (DuckDB)

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE {s}.runs (
            run_id VARCHAR PRIMARY KEY, project VARCHAR, command VARCHAR,
            started_at TIMESTAMP, finished_at TIMESTAMP, status VARCHAR);
        CREATE TABLE {s}.shards (
            shard_id VARCHAR PRIMARY KEY, run_id VARCHAR, node VARCHAR, model VARCHAR,
            provider VARCHAR, path VARCHAR, n_requests INTEGER, response_schema VARCHAR,
            status VARCHAR, file_id VARCHAR, batch_id VARCHAR, batch_status VARCHAR,
            error VARCHAR, created_at TIMESTAMP, updated_at TIMESTAMP);
        CREATE TABLE {s}.shard_requests (shard_id VARCHAR, request_key VARCHAR);
        CREATE TABLE {s}.attempts (
            shard_id VARCHAR, request_key VARCHAR, run_id VARCHAR, node VARCHAR, model VARCHAR,
            outcome VARCHAR, status_code INTEGER, error_code VARCHAR, detail VARCHAR,
            prompt_tokens BIGINT, completion_tokens BIGINT, cached_tokens BIGINT,
            created_at TIMESTAMP);
        CREATE TABLE {s}.answers (
            request_key VARCHAR PRIMARY KEY, answer VARCHAR, model VARCHAR, node VARCHAR,
            shard_id VARCHAR, answered_at TIMESTAMP,
            prompt_tokens BIGINT, completion_tokens BIGINT, cached_tokens BIGINT);
        """,
    ),
    (
        2,
        """
        ALTER TABLE {s}.shards ADD COLUMN input_tokens BIGINT;
        ALTER TABLE {s}.shards ADD COLUMN max_output_tokens BIGINT;
        ALTER TABLE {s}.attempts ADD COLUMN cost_usd DOUBLE PRECISION;
        ALTER TABLE {s}.attempts ADD COLUMN batch BOOLEAN;
        """,
    ),
    (
        3,
        """
        CREATE TABLE {s}.eval_runs (
            run_id VARCHAR, node VARCHAR, template_hash VARCHAR, labels_file VARCHAR, labels_hash VARCHAR,
            n_rows INTEGER, answered INTEGER, created_at TIMESTAMP, PRIMARY KEY (run_id, node));
        CREATE TABLE {s}.eval_metrics (
            run_id VARCHAR, node VARCHAR, template_hash VARCHAR, field VARCHAR, metric VARCHAR,
            value DOUBLE PRECISION, n INTEGER);
        CREATE TABLE {s}.eval_answers (
            run_id VARCHAR, node VARCHAR, template_hash VARCHAR, eval_row BIGINT, request_key VARCHAR,
            status VARCHAR, answer VARCHAR, expected VARCHAR);
        """,
    ),
    (
        4,
        """
        ALTER TABLE {s}.shards ADD COLUMN input_tokens_exact BOOLEAN DEFAULT true;
        """,
    ),
    (
        # answers without a primary key: its index cost a third of collecting a million answers; every
        # insert skips keys already stored and keeps one answer per key (pipeline/collect.py). Answer
        # texts stored with ZSTD where the storage has it: a quarter quicker to write than DuckDB's choice
        5,
        """
        CREATE TABLE {s}.answers_v5 (
            request_key VARCHAR, answer VARCHAR{zstd}, model VARCHAR, node VARCHAR,
            shard_id VARCHAR, answered_at TIMESTAMP,
            prompt_tokens BIGINT, completion_tokens BIGINT, cached_tokens BIGINT);
        INSERT INTO {s}.answers_v5 SELECT * FROM {s}.answers;
        DROP TABLE {s}.answers;
        ALTER TABLE {s}.answers_v5 RENAME TO answers;
        """,
    ),
    (
        # request keys (32 hex characters) stored uncompressed: DuckDB's choice for them (DICT_FSST) cost
        # 0.3-0.4 CPU-s a million rows more to write, in each of these tables, for ~16 bytes a key less
        6,
        """
        CREATE TABLE {s}.answers_v6 (
            request_key VARCHAR{keys}, answer VARCHAR{zstd}, model VARCHAR, node VARCHAR,
            shard_id VARCHAR, answered_at TIMESTAMP,
            prompt_tokens BIGINT, completion_tokens BIGINT, cached_tokens BIGINT);
        INSERT INTO {s}.answers_v6 SELECT * FROM {s}.answers;
        DROP TABLE {s}.answers;
        ALTER TABLE {s}.answers_v6 RENAME TO answers;
        CREATE TABLE {s}.attempts_v6 (
            shard_id VARCHAR, request_key VARCHAR{keys}, run_id VARCHAR, node VARCHAR, model VARCHAR,
            outcome VARCHAR, status_code INTEGER, error_code VARCHAR, detail VARCHAR,
            prompt_tokens BIGINT, completion_tokens BIGINT, cached_tokens BIGINT,
            created_at TIMESTAMP, cost_usd DOUBLE PRECISION, batch BOOLEAN);
        INSERT INTO {s}.attempts_v6 SELECT * FROM {s}.attempts;
        DROP TABLE {s}.attempts;
        ALTER TABLE {s}.attempts_v6 RENAME TO attempts;
        CREATE TABLE {s}.shard_requests_v6 (shard_id VARCHAR, request_key VARCHAR{keys});
        INSERT INTO {s}.shard_requests_v6 SELECT * FROM {s}.shard_requests;
        DROP TABLE {s}.shard_requests;
        ALTER TABLE {s}.shard_requests_v6 RENAME TO shard_requests;
        """,
    ),
    (
        # which kind of provider gave each answer and made each attempt (fake or openai), as far as the shard
        # says: shards sent in realtime were recorded as provider `realtime`, whatever the target, and their
        # rows stay NULL (unknown) until the first run re-keys their model's answers (pipeline/rekey.py); and
        # every timestamp an instant (TIMESTAMPTZ): a TIMESTAMP held the writer's local time, and is read in the
        # time zone of the session that migrates. Columns are altered in place: the other columns and their
        # storage are kept as they are, at a fraction of the cost of copying the tables
        7,
        """
        ALTER TABLE {s}.answers ADD COLUMN provider VARCHAR;
        ALTER TABLE {s}.attempts ADD COLUMN provider VARCHAR;
        UPDATE {s}.answers SET provider = sh.provider FROM {s}.shards sh
            WHERE sh.shard_id = answers.shard_id AND sh.provider IN ('fake', 'openai');
        UPDATE {s}.attempts SET provider = sh.provider FROM {s}.shards sh
            WHERE sh.shard_id = attempts.shard_id AND sh.provider IN ('fake', 'openai');
        ALTER TABLE {s}.answers ALTER answered_at TYPE TIMESTAMPTZ;
        ALTER TABLE {s}.attempts ALTER created_at TYPE TIMESTAMPTZ;
        ALTER TABLE {s}.shards ALTER created_at TYPE TIMESTAMPTZ;
        ALTER TABLE {s}.shards ALTER updated_at TYPE TIMESTAMPTZ;
        ALTER TABLE {s}.runs ALTER started_at TYPE TIMESTAMPTZ;
        ALTER TABLE {s}.runs ALTER finished_at TYPE TIMESTAMPTZ;
        ALTER TABLE {s}.eval_runs ALTER created_at TYPE TIMESTAMPTZ;
        ALTER TABLE {s}.schema_version ALTER applied_at TYPE TIMESTAMPTZ;
        """,
    ),
    (
        # when `llmt cancel` asked for a shard's batch to be cancelled (recorded before it calls the provider):
        # a run that collects it stops that model instead of sending its rows again
        8,
        """
        ALTER TABLE {s}.shards ADD COLUMN cancel_requested_at TIMESTAMPTZ;
        """,
    ),
    (
        # what llmt recorded of what it built, in a table of its own instead of the built tables' COMMENTs: a
        # model's staged inputs (`stage`: their layout, rows, key version and the output built from them) and a
        # loaded file source (`source`: its files' stamps). Those comments are copied (DuckDB: below)
        9,
        """
        CREATE TABLE {s}.fingerprints (kind VARCHAR, name VARCHAR, value VARCHAR, updated_at TIMESTAMPTZ,
                                       PRIMARY KEY (kind, name));
        """,
    ),
    (
        # the endpoint of a shard's requests (NULL: /v1/chat/completions; embedding models send to
        # /v1/embeddings), and the fine-tuning jobs `llmt finetune submit` created, each recorded before its files
        # are uploaded and its job created (finetune.py)
        10,
        """
        ALTER TABLE {s}.shards ADD COLUMN endpoint VARCHAR;
        CREATE TABLE {s}.finetune_jobs (
            submission VARCHAR PRIMARY KEY, base_model VARCHAR, suffix VARCHAR,
            training_path VARCHAR, validation_path VARCHAR, training_sha256 VARCHAR, validation_sha256 VARCHAR,
            training_file_id VARCHAR, validation_file_id VARCHAR, job_id VARCHAR, status VARCHAR,
            fine_tuned_model VARCHAR, trained_tokens BIGINT, estimate_usd DOUBLE PRECISION, error VARCHAR,
            created_at TIMESTAMPTZ, updated_at TIMESTAMPTZ);
        """,
    ),
]
SCHEMA_VERSION_DDL = ("CREATE TABLE IF NOT EXISTS {s}.schema_version "
                      "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)")

LATEST = MIGRATIONS[-1][0]


def migrate(wh: Warehouse, schema: str, upto: int = LATEST) -> int:
    """Bring the state schema ``schema`` to the latest version (or to ``upto``), each migration in a transaction
    of its own, rendered for the warehouse's engine (`Warehouse.migration_sql`); returns the version."""
    s = quoted(schema)
    wh.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
    wh.execute(SCHEMA_VERSION_DDL.format(s=s))
    current = int(wh.scalar(f"SELECT coalesce(max(version), 0) FROM {s}.schema_version") or 0)
    for version, sql in MIGRATIONS:
        if version <= current or version > upto:
            continue
        with wh.transaction():
            wh.execute(wh.migration_sql(version, sql, schema))
            wh.execute(f"INSERT INTO {s}.schema_version VALUES (?, now())", [version])
        current = version
    return current
