"""project.yml and node config, validated by pydantic. Unknown keys are errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, field_validator, model_validator

from llmt.errors import ConfigError, did_you_mean


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


LOCK_TIMEOUT = 300.0  # seconds llmt waits for another run of the same project and target, by default
DEFAULT_STATE = "llmt_state.duckdb"  # a Spark target's state store, by default (in the project)


class DuckDBConfig(Strict):
    type: Literal["duckdb"] = "duckdb"
    path: str = ":memory:"
    schema_: str = Field("main", alias="schema")
    state_schema: str = "_llmt"
    settings: dict[str, str | int | float | bool] = Field(default_factory=dict)  # DuckDB's, e.g. memory_limit
    lock_timeout: float = Field(LOCK_TIMEOUT, ge=0)

    def location(self, project_dir: Path) -> str | None:
        """Where the warehouse's state lives (its file), shown to users; None: in memory."""
        return None if self.path == ":memory:" else str((project_dir / self.path).resolve())

    @property
    def label(self) -> str:
        """The warehouse as the target names it, for messages."""
        return self.path

    def exists(self, project_dir: Path) -> bool:
        """Whether the warehouse holds anything yet (a DuckDB file is made by the first run)."""
        return self.path != ":memory:" and (project_dir / self.path).is_file()


class PostgresConfig(Strict):
    """A PostgreSQL server: `dsn` (a libpq connection string or URI) and/or its parts; strings may use
    `{{ env_var('NAME') }}` (rendered when connecting, never stored). Other settings come from libpq's
    environment (PGHOST, PGPASSWORD, ~/.pgpass, ...)."""

    type: Literal["postgres"]
    dsn: str | None = None
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = None
    dbname: str | None = None
    sslmode: str | None = None
    schema_: str = Field("public", alias="schema")
    state_schema: str = "_llmt"
    connect_timeout: int = Field(10, gt=0)  # seconds
    statement_timeout: float | None = Field(None, gt=0)  # seconds a statement may run (the server's default)
    lock_timeout: float = Field(LOCK_TIMEOUT, ge=0)

    def location(self, project_dir: Path) -> str | None:
        """The server and database, without user or password."""
        return self.label

    @property
    def label(self) -> str:
        from llmt.warehouse.postgres_connect import describe_location

        return describe_location(self)

    def exists(self, project_dir: Path) -> bool:
        return True


class SparkConfig(Strict):
    """Apache Spark: a session in this process (`master`, e.g. `local[*]`), whose catalog (a Hive metastore in
    an embedded Derby database) and tables' files live under `path` in the project, or a Spark Connect server
    (`remote`, e.g. `sc://host:15002`), whose catalog is the cluster's. `conf`: Spark settings for the session."""

    type: Literal["spark"]
    master: str | None = None
    remote: str | None = None
    schema_: str = Field("default", alias="schema")
    state_schema: str = "_llmt"
    file_format: str = "parquet"  # of the tables llmt makes (delta, iceberg: where the cluster has them)
    path: str = "spark-warehouse"  # local mode: the tables' files and the catalog, relative to the project
    conf: dict[str, str | int | float | bool] = Field(default_factory=dict)
    _state: DuckDBConfig | PostgresConfig | None = PrivateAttr(None)  # the target's `state:` (TargetConfig)

    @property
    def state_store(self) -> DuckDBConfig | PostgresConfig:
        """Where llmt's run lifecycle lives: the target's `state:`, by default a DuckDB file in the project."""
        return self._state or DuckDBConfig(path=DEFAULT_STATE)

    @model_validator(mode="after")
    def _one_place(self) -> SparkConfig:
        if self.master is not None and self.remote is not None:
            raise ValueError("give `master` (Spark in this process) or `remote` (a Spark Connect server), not both")
        if self.master is None and self.remote is None:
            self.master = "local[*]"
        return self

    def location(self, project_dir: Path) -> str | None:
        return self.remote or str((project_dir / self.path).resolve())

    @property
    def label(self) -> str:
        return self.remote or f"{self.master} ({self.path})"

    def exists(self, project_dir: Path) -> bool:
        # a Spark session already running in the process (a notebook) keeps its tables elsewhere than `path`:
        # then the state store, which the first run makes, says whether anything was built
        return (self.remote is not None or (project_dir / self.path).is_dir()
                or self.state_store.exists(project_dir))


def _warehouse_type(value: Any) -> str:
    return str(value.get("type", "duckdb") if isinstance(value, dict) else getattr(value, "type", "duckdb"))


WarehouseConfig = Annotated[
    Annotated[DuckDBConfig, Tag("duckdb")] | Annotated[PostgresConfig, Tag("postgres")]
    | Annotated[SparkConfig, Tag("spark")],
    Discriminator(_warehouse_type, custom_error_type="warehouse_type",
                  custom_error_message="`type` must be duckdb, postgres or spark"),
]
# where an engine without transactions (Spark) keeps llmt's run lifecycle (runs, shards, fingerprints)
StateConfig = Annotated[
    Annotated[DuckDBConfig, Tag("duckdb")] | Annotated[PostgresConfig, Tag("postgres")],
    Discriminator(_warehouse_type, custom_error_type="state_type",
                  custom_error_message="`type` must be duckdb or postgres"),
]


class ProviderConfig(BaseModel):
    """`type` plus provider options; each provider validates its own options."""

    model_config = ConfigDict(extra="allow")
    type: str = "fake"

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class NotifyConfig(Strict):
    """Where a run's completion notice goes (see llmt/notify.py)."""

    webhook: str | None = None  # a URL: the notice is POSTed to it as JSON
    command: str | None = None  # a shell command: gets the notice as JSON on stdin
    retries: int = Field(3, ge=0)  # tries after the first, with backoff
    timeout: float = Field(10.0, gt=0)  # seconds per try

    @field_validator("webhook")
    @classmethod
    def _http(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("a webhook is an http:// or https:// URL")
        return url

    @model_validator(mode="after")
    def _somewhere(self) -> NotifyConfig:
        if self.webhook is None and self.command is None:
            raise ValueError("`notify:` needs a `webhook` (URL) or a `command` (or both)")
        return self


class TargetConfig(Strict):
    warehouse: WarehouseConfig = DuckDBConfig()
    state: StateConfig | None = None  # a Spark warehouse's state store (default: a DuckDB file, DEFAULT_STATE)
    provider: ProviderConfig = ProviderConfig()
    threads: int = Field(1, ge=1)  # dbt's: SQL models built at once on PostgreSQL (DuckDB: one at a time)
    notify: NotifyConfig | None = None  # replaces the project's `notify:` for this target

    @model_validator(mode="after")
    def _state_of_spark(self) -> TargetConfig:
        if self.state is not None and not isinstance(self.warehouse, SparkConfig):
            raise ValueError("`state:` names where a Spark warehouse keeps llmt's run lifecycle; DuckDB and "
                             "PostgreSQL warehouses keep it themselves: remove it")
        if isinstance(self.warehouse, SparkConfig):
            self.warehouse._state = self.state
        return self


OUTCOME_NAMES = ("refused", "truncated", "content_filter", "invalid_json", "schema_violation", "http_error",
                 "expired", "cancelled", "batch_failed", "missing", "too_long")


class LongContext(Strict):
    """A model's prices for a request with more than `above` input tokens (the whole request is priced so)."""

    above: int = Field(gt=0)
    input: float = Field(ge=0)
    cached_input: float = Field(ge=0)
    output: float = Field(ge=0)


class ModelPrice(Strict):
    """One model's prices (USD per 1M tokens, live) and token limits, in llmt/data/prices.yml or under
    `llm: prices:`; a key a project leaves out keeps the shipped value."""

    input: float | None = Field(None, ge=0)
    cached_input: float | None = Field(None, ge=0)
    output: float | None = Field(None, ge=0)
    batch_discount: float | None = Field(None, ge=0, le=1)  # default: the file's
    context_window: int | None = Field(None, gt=0)
    max_input: int | None = Field(None, gt=0)
    max_output: int | None = Field(None, gt=0)
    long_context: LongContext | None = None
    training: float | None = Field(None, ge=0)  # fine-tuning it: USD per 1M training tokens
    training_example_tokens: int | None = Field(None, gt=0)  # the most tokens one training example may have


class Escalate(Strict):
    """Send rows the primary model failed (or was unsure about) to a stronger model."""

    model: str
    when: list[Literal[OUTCOME_NAMES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["refused", "truncated", "schema_violation", "invalid_json"])
    when_field: dict[str, str] = Field(default_factory=dict)  # e.g. {confidence: "< 0.6"}
    max_share: float = Field(0.1, gt=0, le=1)  # at most this share of the model's rows
    budget_usd: float | None = Field(None, ge=0)
    mode: Literal["batch", "realtime", "auto"] | None = None


class Execution(Strict):
    """How a model's requests are sent: batch, realtime or auto; canary; escalation."""

    mode: Literal["batch", "realtime", "auto"] = "batch"
    realtime_below: int = Field(200, ge=0)  # auto: realtime when fewer pending requests than this
    canary_above: int | None = Field(1000, ge=0)  # a batch larger than this is preceded by a canary
    canary_size: int = Field(20, ge=1)
    canary_max_error_rate: float = Field(0.2, ge=0, le=1)
    escalate: Escalate | None = None


class LlmDefaults(Execution):
    """Defaults for every LLM model; a model's config() or properties override them."""

    model: str = "gpt-4o-mini"
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    max_output_tokens: int = Field(1000, gt=0)
    max_attempts: int = Field(3, ge=1)
    # a model whose failed rows are more than this share of its rows fails the run (0: any failed row does)
    max_failed_share: float = Field(0.05, ge=0, le=1)
    budget_usd: float | None = Field(None, ge=0)  # the most one run may commit, all models together
    prices: dict[str, ModelPrice] = Field(default_factory=dict)  # USD per 1M tokens and limits, overrides


class ProjectConfig(Strict):
    name: str
    target: str | None = None
    targets: dict[str, TargetConfig] = Field(default_factory=lambda: {"dev": TargetConfig()})
    vars: dict[str, Any] = Field(default_factory=dict)
    llm: LlmDefaults = LlmDefaults()
    notify: NotifyConfig | None = None  # a run's completion notice (a target's `notify:` replaces it)
    models: dict[str, Any] = Field(default_factory=dict)
    seeds: dict[str, Any] = Field(default_factory=dict)  # folder config of seeds (`+key`), as `models:`
    model_paths: list[str] = Field(default_factory=lambda: ["models"], alias="model-paths")
    seed_paths: list[str] = Field(default_factory=lambda: ["seeds"], alias="seed-paths")
    macro_paths: list[str] = Field(default_factory=lambda: ["macros"], alias="macro-paths")
    clean_targets: list[str] = Field(default_factory=lambda: ["target"], alias="clean-targets")


MATERIALIZATIONS = ("view", "table", "incremental", "llm", "embedding")
GENERATION_KEYS = ("model", "temperature", "top_p", "seed", "max_output_tokens")
EXECUTION_KEYS = tuple(Execution.model_fields)
LLM_KEYS = ("prompt", "output_schema", *GENERATION_KEYS, "max_attempts", "max_failed_share", "budget_usd",
            *EXECUTION_KEYS)
EMBEDDING_KEYS = ("column", "dimensions", "inputs_per_request")  # an embedding model's own (pipeline/embed.py)
NODE_CONFIG_KEYS = ("materialized", "tags", "unique_key", "incremental_strategy", "enabled", "description",
                    "schema_tests", "persist_docs", "schema", "state", *LLM_KEYS, *EMBEDDING_KEYS)
STATES = ("auto", "always")  # `state:` skip the build when nothing the model reads changed (auto), or never
INCREMENTAL_STRATEGIES = ("append", "delete+insert", "merge")  # dbt's names
PERSIST_DOCS_KEYS = ("relation", "columns")


def check_node_config(config: dict[str, Any], where: str) -> dict[str, Any]:
    """Reject unknown keys and wrong types in a node's config (from any source)."""
    for key, value in config.items():
        if key not in NODE_CONFIG_KEYS:
            raise ConfigError(
                f"unknown config key `{key}`.{did_you_mean(key, NODE_CONFIG_KEYS)}",
                where=where,
                hint=f"Known keys: {', '.join(NODE_CONFIG_KEYS)}.",
            )
        if key == "materialized" and value not in MATERIALIZATIONS:
            raise ConfigError(
                f"unknown materialization `{value}`.{did_you_mean(str(value), MATERIALIZATIONS)}",
                where=where,
                hint=f"Use one of: {', '.join(MATERIALIZATIONS)}.",
            )
        if key == "unique_key" and not (
            isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        ):
            raise ConfigError("`unique_key` must be a column name or a list of them", where=where)
        if key == "incremental_strategy" and value not in INCREMENTAL_STRATEGIES:
            raise ConfigError(
                f"unknown incremental_strategy `{value}`.{did_you_mean(str(value), INCREMENTAL_STRATEGIES)}",
                where=where,
                hint="Use append (the default without unique_key), delete+insert (the default with one) or merge.",
            )
        if key in ("max_output_tokens", "max_attempts", "seed", "dimensions", "inputs_per_request") and (
                not isinstance(value, int) or isinstance(value, bool)):
            raise ConfigError(f"`{key}` must be an integer, got {value!r}", where=where)
        if key in ("enabled", "schema_tests") and not isinstance(value, bool):
            raise ConfigError(f"`{key}` must be true or false, got {value!r}", where=where)
        if key in ("temperature", "top_p", "budget_usd") and not isinstance(value, int | float):
            raise ConfigError(f"`{key}` must be a number, got {value!r}", where=where)
        if key == "persist_docs" and not (isinstance(value, dict) and set(value) <= set(PERSIST_DOCS_KEYS)
                                          and all(isinstance(v, bool) for v in value.values())):
            raise ConfigError(f"`persist_docs` must map `relation` and `columns` to true or false, got {value!r}",
                              where=where, hint="Example: persist_docs: {relation: true, columns: false}.")
        if key == "schema" and not (isinstance(value, str) and value.strip()):
            raise ConfigError(f"`schema` must be the name of a database schema, got {value!r}", where=where,
                              hint="Example: schema='marts' builds the model in `<target schema>_marts`.")
        if key == "state" and value not in STATES:
            raise ConfigError(f"unknown `state: {value}`.{did_you_mean(str(value), STATES)}", where=where,
                              hint="`state: auto` (the default) skips a view or table whose SQL, config and "
                              "inputs did not change since it was built; `state: always` builds it every run.")
        if key == "max_failed_share" and not (isinstance(value, int | float) and not isinstance(value, bool)
                                              and 0 <= value <= 1):
            raise ConfigError(f"`max_failed_share` must be a number from 0 to 1 (a share of the model's rows), "
                              f"got {value!r}", where=where)
    return config


def schema_name(target_schema: str, custom: str | None) -> str:
    """The database schema of a model or seed whose config names ``custom`` (dbt's `generate_schema_name`):
    `<target schema>_<custom>`, so that targets never share a custom schema; the target's own without one."""
    return target_schema if custom is None else f"{target_schema}_{custom.strip()}"


def folder_config(models_cfg: dict[str, Any], project_name: str, folders: list[str]) -> dict[str, Any]:
    """Folder-level `+key` config for a model in ``models/<folders...>/``; deeper folders win."""
    tree = models_cfg.get(project_name, models_cfg) if isinstance(models_cfg, dict) else {}
    merged: dict[str, Any] = {}
    level: Any = tree
    for folder in [None, *folders]:
        if folder is not None:
            level = level.get(folder) if isinstance(level, dict) else None
        if not isinstance(level, dict):
            break
        for key, value in level.items():
            if key.startswith("+"):
                if key[1:] == "tags" and "tags" in merged:
                    merged["tags"] = [*_as_list(merged["tags"]), *_as_list(value)]
                else:
                    merged[key[1:]] = value
    return merged


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]
