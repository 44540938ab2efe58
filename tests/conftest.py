"""Shared fixtures: small projects written into tmp_path, and the CLI run in-process."""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from llmt.cli import main
from tests.pg import PgDatabase, PgServer

SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 10},
        "issues": {"type": "array", "items": {"type": "string"}},
        "competitor": {"type": "string"},
    },
    "required": ["sentiment", "score", "issues"],
}

BASE_FILES: dict[str, str] = {
    "project.yml": """
        name: demo
        target: dev
        targets:
          dev:
            warehouse: {path: demo.duckdb}
            provider: {type: fake}
        llm:
          model: gpt-4o-mini
          temperature: 0
          max_attempts: 2
        """,
    "data/reviews.csv": "review_id,product,review_text\n1,Phone,Great phone\n2,Phone,Battery died\n"
    "3,Cable,Great phone\n4,Cable,Kabel ist kaputt — schade\n",
    "models/sources.yml": """
        sources:
          - name: raw
            tables:
              - name: reviews
                file: data/reviews.csv
        """,
    "models/stg_reviews.sql": "select review_id, product, review_text from {{ source('raw', 'reviews') }}\n",
    "models/insights.sql": """
        {{ config(materialized='llm', prompt='analyse', output_schema='analysis', unique_key='review_id') }}
        select review_id, product, review_text from {{ ref('stg_reviews') }}
        """,
    "prompts/analyse.md": """
        ---
        system: You analyse reviews.
        ---
        Product: {{ product }}
        Review: {{ review_text }}
        """,
    "schemas/analysis.json": json.dumps(SCHEMA),
}
TWO_TARGETS = """
    name: demo
    targets:
      dev:
        warehouse: {path: demo.duckdb}
      other:
        warehouse: {path: other.duckdb}
    """  # a project.yml with a second DuckDB target


def project_yml(openai: str, llm: str = "") -> str:
    """The test project's project.yml with an `openai` target (provider options ``openai``) on the same database
    as `dev`, and more `llm:` keys (``llm``: YAML)."""
    target = f"  openai:\n    warehouse: {{path: demo.duckdb}}\n    provider: {{type: openai, {openai}}}\n"
    extra = textwrap.indent(textwrap.dedent(llm).strip("\n") + "\n", "  ") if llm else ""
    return textwrap.dedent(BASE_FILES["project.yml"]).replace("llm:\n", target + "llm:\n", 1) + extra


def as_from_a_terminal() -> None:
    """A subprocess's Ctrl-C (SIGINT) as a terminal's foreground job has it: a test run started as a background
    job ignores SIGINT, and the processes it starts would inherit that (``preexec_fn`` of the tests that send it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class Result:
    code: int
    out: str
    err: str


class Project:
    """A project in a temporary directory, with helpers to run llmt on it and query it."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str], db: str = "demo.duckdb") -> None:
        self.root = root
        self.capsys = capsys
        self.db = db
        self.pg: PgDatabase | None = None  # the target's PostgreSQL database (on_postgres), else DuckDB's file
        self.spark: Any = None  # the Spark session of the target (on_spark)

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    def remove(self, rel: str) -> None:
        (self.root / rel).unlink()

    def llmt(self, *args: str) -> Result:
        self.capsys.readouterr()
        argv = sys.argv
        sys.argv = ["llmt", *args, "--project-dir", str(self.root)] if args and args[0] != "init" else ["llmt", *args]
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        finally:
            sys.argv = argv
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        if self.pg is not None:
            return self.pg.query(sql)
        if self.spark is not None:
            return [tuple(row) for row in self.spark.sql(sql).collect()]
        with duckdb.connect(str(self.root / self.db), read_only=True) as conn:
            return conn.execute(sql).fetchall()

    def run_json(self, *args: str) -> dict[str, Any]:
        result = self.llmt("run", "--output", "json", *args)
        assert result.code == 0, result.err
        data: dict[str, Any] = json.loads(result.out)
        return data

    def llm_result(self, data: dict[str, Any], name: str = "insights") -> dict[str, Any]:
        entry = next(r for r in data["results"] if r["name"] == name)
        llm: dict[str, Any] = entry["llm"]
        return llm


@pytest.fixture
def project(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Project:
    p = Project(tmp_path / "demo", capsys)
    for rel, text in BASE_FILES.items():
        p.write(rel, text)
    return p


EXAMPLE = Path(__file__).resolve().parent.parent  # the repository is the example project
# the example project's files (the rest of the repository is the package, its tests and benchmarks)
EXAMPLE_FILES = ("project.yml", "models", "prompts", "schemas", "data/reviews.csv",
                 "tests/every_answered_review_is_summarised.sql", "tests/evals")


def copy_example(root: Path) -> Path:
    """Copy the example project's files into ``root``."""
    for rel in EXAMPLE_FILES:
        source, dest = EXAMPLE / rel, root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest)
        else:
            shutil.copyfile(source, dest)
    return root


@pytest.fixture
def example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Project:
    """A copy of the example project (the repository's project.yml, models, prompts, ...)."""
    return Project(copy_example(tmp_path / "reviews"), capsys, db="reviews.duckdb")


def example_on_emulator(project: Project, **options: Any) -> None:
    """Give the example's `openai` target these provider options (it reads OPENAI_BASE_URL and OPENAI_API_KEY
    from the environment: point them at the emulator); ``project.query`` then reads that target's database."""
    anchor = "base_url: \"{{ env_var('OPENAI_BASE_URL', 'https://api.openai.com/v1') }}\"\n"
    yml = (project.root / "project.yml").read_text(encoding="utf-8")
    assert anchor in yml, "the example's openai target changed: update example_on_emulator"
    extra = "".join(f"      {key}: {value}\n" for key, value in options.items())
    (project.root / "project.yml").write_text(yml.replace(anchor, anchor + extra), encoding="utf-8")
    project.db = "reviews_openai.duckdb"


@pytest.fixture(scope="session")
def pg_server() -> PgServer:
    """The PostgreSQL server every test of the session shares (tests/pg.py)."""
    return PgServer()


@pytest.fixture
def pg(pg_server: PgServer) -> Iterator[PgDatabase]:
    """A database of its own on the shared PostgreSQL server, dropped after the test."""
    name = pg_server.create_database()
    try:
        yield PgDatabase(pg_server, name)
    finally:
        pg_server.drop_database(name)


def on_postgres(project: Project, db: PgDatabase, schema: str = "analytics", **warehouse: Any) -> Project:
    """Point the project's default target at ``db`` (models in ``schema``); ``project.query`` then reads it."""
    text = (project.root / "project.yml").read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    name = config.get("target") or next(iter(config["targets"]))
    config["targets"][name]["warehouse"] = {"type": "postgres", "dsn": db.uri, "schema": schema, **warehouse}
    (project.root / "project.yml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    project.pg = db
    return project


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The local Spark session every Spark test of the session shares (llmt's Spark warehouses in this process
    use it), started as llmt starts one, with a small JVM, and its catalog in a temporary folder."""
    from llmt.project.config import SparkConfig
    from llmt.warehouse.spark_session import start_session

    conf = {"spark.driver.memory": "768m", "spark.sql.shuffle.partitions": 2, "spark.ui.enabled": False,
            "spark.default.parallelism": 2}
    session, _ = start_session(SparkConfig(type="spark", master="local[2]", conf=conf),
                               tmp_path_factory.mktemp("spark"), "test")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def spark_connect(spark: Any) -> Iterator[str]:
    """The URL of a Spark Connect server in the shared Spark's JVM, on a free loopback port."""
    service = getattr(getattr(spark._jvm.org.apache.spark.sql.connect.service, "SparkConnectService$"), "MODULE$")
    conf = spark._jsc.sc().conf()  # (the server reads its settings from the running context's)
    conf.set("spark.connect.grpc.binding.address", "127.0.0.1")
    conf.set("spark.connect.grpc.binding.port", "0")
    service.start(spark._jsc.sc())
    yield f"sc://127.0.0.1:{service.localPort()}"
    service.stop(getattr(service, "stop$default$1")(), getattr(service, "stop$default$2")())


def on_spark(project: Project, session: Any, **warehouse: Any) -> Project:
    """Point the project's default target at the shared Spark session, in a schema of its own (the session's
    catalog outlives the test); ``project.query`` then reads it."""
    text = (project.root / "project.yml").read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    name = config.get("target") or next(iter(config["targets"]))
    schema = f"t_{secrets.token_hex(4)}"
    config["targets"][name]["warehouse"] = {"type": "spark", "master": "local[2]", "schema": schema,
                                            "state_schema": f"{schema}_llmt", **warehouse}
    (project.root / "project.yml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    project.spark = session
    return project


@pytest.fixture
def make_project(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Callable[[dict[str, str]], Project]:
    """A project from the base files with some files replaced (value "" removes a file)."""

    def make(files: dict[str, str]) -> Project:
        p = Project(tmp_path / "demo", capsys)
        for rel, text in {**BASE_FILES, **files}.items():
            if text:
                p.write(rel, text)
        return p

    return make
