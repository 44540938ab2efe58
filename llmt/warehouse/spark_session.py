"""The Spark session of a target, and what Spark's errors say to a user.

Local mode (`master:`) starts Spark in this process with a persistent catalog under the project: a Hive
metastore in an embedded Derby database (`<path>/metastore_db`) and the tables' files in `<path>` (both ship
with the pyspark package: nothing is downloaded), so tables survive between runs. Derby lets one process open
the catalog at a time: a second llmt on the same project and target waits for nothing and is refused with a
clear error. A session already running in this process (a notebook, the tests) is used as it is. `remote:`
connects to a Spark Connect server, whose catalog is the cluster's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from py4j.protocol import Py4JError
from pyspark.errors import PySparkException

from llmt.errors import ConfigError
from llmt.project.config import SparkConfig
from llmt.warehouse.base import DatabaseError, WarehouseError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# settings of a session llmt starts (a target's `conf:` overrides them): the library never prints, and
# Spark's progress bars and warnings would
QUIET = {"spark.ui.showConsoleProgress": "false", "spark.log.level": "ERROR"}
SPARK_ERRORS = (PySparkException, Py4JError)  # what pyspark raises (Spark Connect's errors are PySparkExceptions)
GONE = ("Connection refused", "UNAVAILABLE", "SparkContext was shut down", "Cannot call methods on a stopped")


def start_session(config: SparkConfig, project_dir: Path, target: str) -> tuple[SparkSession, bool]:
    """The target's session, and whether this call started it (then the warehouse stops it when it closes)."""
    from pyspark.sql import SparkSession

    if config.remote is None:
        active = SparkSession.getActiveSession()
        if active is not None:
            return active, False
    _quiet_python_loggers()
    where = f"project.yml (target `{target}`, warehouse:)"
    builder = SparkSession.builder.appName(f"llmt ({project_dir.name}/{target})")
    try:
        if config.remote is not None:
            builder = builder.remote(config.remote)
        else:
            home = (project_dir / config.path).resolve()
            home.mkdir(parents=True, exist_ok=True)
            builder = builder.master(str(config.master)).enableHiveSupport()
            for key, value in {
                "spark.sql.warehouse.dir": home.as_uri(),
                "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={home / 'metastore_db'};"
                                                               "create=true",
                "spark.driver.extraJavaOptions": f"-Dderby.stream.error.file={home / 'derby.log'}",
                **QUIET}.items():
                builder = builder.config(key, value)
        for name, setting in config.conf.items():
            builder = builder.config(name, str(setting).lower() if isinstance(setting, bool) else str(setting))
        return builder.getOrCreate(), True
    except ImportError as exc:
        raise ConfigError(f"target `{target}` connects to Spark Connect, and its client's packages are missing: "
                          f"{exc}", where=where, hint="Install them: pip install 'pyspark[connect]'.") from None
    except SPARK_ERRORS as exc:
        first = _first_line(exc)
        if "JAVA_GATEWAY_EXITED" in first or "JAVA_HOME" in first or "java" in first.lower():
            raise ConfigError(f"Spark could not start for target `{target}`: {first}", where=where,
                              hint="Spark needs a Java runtime (17 or later): install one (e.g. apt-get install "
                              "default-jre-headless) or set JAVA_HOME.") from None
        raise ConfigError(f"Spark could not start for target `{target}`: {first}", where=where,
                          hint="Check the target's `master`/`remote` and `conf`.") from None


def _quiet_python_loggers() -> None:
    """pyspark logs each failed statement's whole Java stack trace; llmt reports the error itself."""
    from pyspark.logger import PySparkLogger

    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        PySparkLogger.getLogger(name).disabled = True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
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
