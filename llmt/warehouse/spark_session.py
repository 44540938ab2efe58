"""The Spark session of a target, and what Spark's errors say to a user.

Local mode (`master:`) starts Spark in this process with a persistent catalog under the project: a Hive
metastore in an embedded Derby database (`<path>/metastore_db`) and the tables' files in `<path>` (both ship
with the pyspark package: nothing is downloaded), so tables survive between runs. Derby lets one process open
the catalog at a time: a second llmt on the same project and target waits for nothing and is refused with a
clear error. A session already running in this process (a notebook, the tests) is used as it is. `remote:`
connects to a Spark Connect server, whose catalog is the cluster's, in a session of llmt's own beside any other
of the process.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, cast

from py4j.protocol import Py4JError
from pyspark.errors import PySparkException

from llmt.errors import ConfigError
from llmt.project.config import SparkConfig
from llmt.warehouse.base import DatabaseError, WarehouseError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# settings of a session llmt starts (a target's `conf:` overrides them): the library never prints, and
# Spark's progress bars and warnings would
QUIET = {"spark.ui.showConsoleProgress": "false", "spark.log.level": "ERROR"}
SPARK_ERRORS = (PySparkException, Py4JError)  # what pyspark raises (Spark Connect's errors are PySparkExceptions)
GRPC_DETAILS = re.compile(r'^\s*details = "(.*)"$', re.MULTILINE)
FIRST_TRIES = 4  # retries of the first request to a Spark Connect server (pyspark's backoff: seconds in all)
GONE = ("Connection refused", "UNAVAILABLE", "SparkContext was shut down", "Cannot call methods on a stopped")


def start_session(config: SparkConfig, project_dir: Path, target: str) -> tuple[SparkSession, bool]:
    """The target's session, and whether this call started it (then the warehouse stops it when it closes)."""
    from pyspark.sql import SparkSession

    where = f"project.yml (target `{target}`, warehouse:)"
    try:
        if config.remote is not None:
            return _connect(config.remote, config.conf), True
        active = SparkSession.getActiveSession()
        if active is not None:
            return active, False
        _quiet_python_loggers()
        home = (project_dir / config.path).resolve()
        home.mkdir(parents=True, exist_ok=True)
        builder = SparkSession.builder.appName(f"llmt ({project_dir.name}/{target})")
        builder = builder.master(str(config.master)).enableHiveSupport()
        for key, value in {
            "spark.sql.warehouse.dir": home.as_uri(),
            "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={home / 'metastore_db'};"
                                                           "create=true",
            "spark.driver.extraJavaOptions": f"-Dderby.stream.error.file={home / 'derby.log'}",
            **QUIET, **_settings(config.conf)}.items():
            builder = builder.config(key, value)
        return builder.getOrCreate(), True
    except ImportError as exc:
        raise ConfigError(f"target `{target}` connects to Spark Connect, and its client's packages are missing: "
                          f"{exc}", where=where, hint="Install them: pip install 'llmt[spark]'.") from None
    except SPARK_ERRORS as exc:
        first = _first_line(exc)
        if "JAVA_GATEWAY_EXITED" in first or "JAVA_HOME" in first or "java" in first.lower():
            raise ConfigError(f"Spark could not start for target `{target}`: {first}", where=where,
                              hint="Spark needs a Java runtime (17 or later): install one (e.g. apt-get install "
                              "default-jre-headless) or set JAVA_HOME.") from None
        if config.remote is not None and any(marker in str(exc) for marker in GONE):
            raise ConfigError(f"the Spark Connect server of target `{target}` does not answer at {config.remote}: "
                              f"{first}", where=where, hint="Check `remote:` (sc://host:port) and that the server "
                              "runs.") from None
        raise ConfigError(f"Spark could not start for target `{target}`: {first}", where=where,
                          hint="Check the target's `master`/`remote` and `conf`.") from None


def _connect(url: str, conf: Mapping[str, str | int | float | bool]) -> SparkSession:
    """A Spark Connect session of llmt's own (its temporary views and settings are its own; stopping it releases
    it on the server), made by the Connect client itself: pyspark's SparkSession.builder refuses to when a
    local session runs in the process (a notebook's), and would switch the whole process to Connect mode. Its
    first request is retried for a few seconds only (then pyspark's own retries, for minutes, hold): a wrong
    `remote:` or a server that is down is said at once."""
    from pyspark.sql.connect.client.retries import DefaultPolicy
    from pyspark.sql.connect.session import SparkSession as ConnectSession

    _quiet_python_loggers()
    session = ConnectSession.builder.remote(url).create()
    patient = session.client.get_retry_policies()
    session.client.set_retry_policies([DefaultPolicy(max_retries=FIRST_TRIES)])
    with warnings.catch_warnings():  # (pyspark's warning that it gave up: llmt says so itself)
        warnings.filterwarnings("ignore", message=r"\[RETRIES_EXCEEDED\]")
        try:
            session.version  # noqa: B018 (the first request: does the server answer?)
        except BaseException:
            session.release_session_on_close = False  # (there is none to release on the server)
            session.stop()
            raise
    session.client.set_retry_policies(patient)
    try:
        for key, value in _settings(conf).items():
            session.conf.set(key, value)
    except BaseException:
        session.stop()
        raise
    return cast("SparkSession", session)


def _settings(conf: Mapping[str, str | int | float | bool]) -> dict[str, str]:
    return {name: str(value).lower() if isinstance(value, bool) else str(value) for name, value in conf.items()}


def local_checkpoint(frame: DataFrame) -> DataFrame:
    """``frame``'s rows computed once and kept by Spark (a snapshot: its query is not run again on each read).
    Spark Connect's client (pyspark 4) hands a checkpoint to the process's active Connect session, not to the
    frame's: beside another session (a notebook's), llmt's would be handed a DataFrame it does not have
    (CONNECT_INVALID_PLAN.DATAFRAME_NOT_FOUND). So the frame's session is the active one meanwhile."""
    connect = sys.modules.get("pyspark.sql.connect.session")
    if connect is None or not isinstance(frame.sparkSession, connect.SparkSession):
        return frame.localCheckpoint(eager=True)
    active = connect.SparkSession._active_session  # (per thread)
    before = getattr(active, "session", None)
    active.session = frame.sparkSession
    try:
        return frame.localCheckpoint(eager=True)
    finally:
        active.session = before


def _quiet_python_loggers() -> None:
    """pyspark logs each failed statement's whole Java stack trace; llmt reports the error itself."""
    from pyspark.logger import PySparkLogger

    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        PySparkLogger.getLogger(name).disabled = True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    grpc = GRPC_DETAILS.search(text)  # (a Spark Connect client's error: its first line names only gRPC's class)
    if grpc:
        return grpc.group(1)
    return " ".join(text.split("\n")[0].split()) or exc.__class__.__name__


def spark_error(exc: BaseException, where: str | None, target: str, place: str) -> DatabaseError:
    """The error a user sees: a statement's (DatabaseError, naming ``where``), or the target's (WarehouseError:
    the session is gone, or another process holds the local catalog)."""
    first = _first_line(exc)
    text = str(exc)
    if "Another instance of Derby may have already booted" in text or "XSDB6" in text:
        return WarehouseError(f"another process uses the Spark catalog of target `{target}`", where=place,
                              detail=text, hint="Local mode opens the catalog in one process at a time: wait for the "
                              "other llmt (or Spark program) on this project to end, then run the command again.")
    if any(marker in text for marker in GONE):
        return WarehouseError(f"the Spark session of target `{target}` is gone: {first}", where=place, detail=text,
                              hint="Run the command again when Spark is back: what was stored is kept.")
    hint = "Run `llmt compile` to see the compiled SQL under target/compiled/." if where else None
    return DatabaseError(f"Spark rejected the SQL: {first}", where=where or place, detail=text, hint=hint)
