"""Connecting to a PostgreSQL server: the target's settings as libpq connection parameters (with
`{{ env_var() }}` rendered, never stored), errors that name the target and never show a password, and the
lock that keeps two llmt commands from writing one state at once.

The lock is a session-level advisory lock, keyed by the database and state schema, taken when llmt
connects to write and let go with the connection (`Warehouse.release` before waiting on a provider), as a
DuckDB file's lock is: readers (BI tools, `psql`) never take it.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.string import TextBinaryLoader, TextLoader
from psycopg.types.uuid import UUIDBinaryLoader

from llmt import logs
from llmt.errors import ConfigError, LockTimeout

if TYPE_CHECKING:
    from llmt.console import Reporter
    from llmt.project.config import PostgresConfig

LOCK_NOTICE_AFTER = 3.0  # seconds of waiting for another llmt before saying who it is
LOCK_PAUSE_MAX = 1.0
MIN_VERSION = 140000  # bit_xor() (PostgreSQL 14)
PARTS = ("host", "port", "user", "password", "dbname", "sslmode")
_URI_SECRET = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_KV_SECRET = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def connection_parameters(config: PostgresConfig, where: str) -> dict[str, Any]:
    """libpq's parameters of a target: its `dsn` and its parts (a part wins over the DSN's), rendered."""
    from llmt.providers import resolve_options

    given = {"dsn": config.dsn, **{k: getattr(config, k) for k in PARTS}}
    values = resolve_options({k: v for k, v in given.items() if v is not None}, where)
    dsn = str(values.pop("dsn", "") or "")
    try:
        params = conninfo_to_dict(dsn) if dsn else {}
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"the warehouse `dsn` is not a PostgreSQL connection string: {scrub(str(exc), values, dsn)}",
                          where=where, hint="Use postgresql://user@host:5432/dbname or host=... dbname=... "
                          "(https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING).") from None
    params.update({k: str(v) for k, v in values.items()})
    params["connect_timeout"] = str(config.connect_timeout)
    return params


def secrets_of(params: dict[str, Any]) -> list[str]:
    """The values never to show: the password, from the parameters or from libpq's environment."""
    found = [str(params.get("password") or ""), os.environ.get("PGPASSWORD", "")]
    return [s for s in found if s]


def scrub(text: str, params: dict[str, Any] | None = None, dsn: str = "") -> str:
    """``text`` without passwords: the known ones, and any in a URI or a `password=` pair."""
    for secret in [*(secrets_of(params) if params else []), *([dsn] if dsn and "password" in dsn.lower() else [])]:
        text = text.replace(secret, "***")
    return _KV_SECRET.sub(r"\1***", _URI_SECRET.sub(r"\1***@", text))


def describe_location(config: PostgresConfig) -> str:
    """`postgresql://host:port/dbname` of a target (what the settings say; no user or password), for messages."""
    try:
        params = connection_parameters(config, "project.yml")
    except Exception:  # an unset environment variable: say what can be said
        params = {k: getattr(config, k) for k in ("host", "port", "dbname") if getattr(config, k)}
    host = params.get("host") or os.environ.get("PGHOST") or "localhost"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    dbname = params.get("dbname") or os.environ.get("PGDATABASE") or params.get("user") or ""
    return f"postgresql://{host}:{port}/{dbname}"


def connect(params: dict[str, Any], target: str, application: str) -> psycopg.Connection[tuple[Any, ...]]:
    """An autocommit connection to the server (llmt begins its own transactions) that reads json, jsonb and uuid
    values as texts, or a ConfigError that names the target and what to check (exit 2), without the password."""
    for secret in secrets_of(params):
        logs.secret(secret)  # never written to the log, wherever it would show up
    try:
        conn = psycopg.connect(make_conninfo("", **params), autocommit=True, application_name=application[:63])
    except psycopg.Error as exc:
        message = " ".join(scrub(str(exc), params).split())
        raise ConfigError(
            f"cannot connect to the PostgreSQL warehouse of target `{target}`: {message}",
            where="project.yml (warehouse:)",
            hint="Check the server is running and reachable, and the target's dsn/host/port/user/dbname (and the "
            "password: `password:` with env_var(), PGPASSWORD or ~/.pgpass).",
        ) from None
    for name in ("json", "jsonb", "uuid"):  # texts, as DuckDB hands them over (and as keys.py keys them)
        conn.adapters.register_loader(name, TextLoader)
    conn.adapters.register_loader("json", TextBinaryLoader)
    conn.adapters.register_loader("jsonb", _JsonbBinaryText)
    conn.adapters.register_loader("uuid", _UuidBinaryText)
    version = conn.info.server_version
    if version < MIN_VERSION:
        conn.close()
        raise ConfigError(f"the PostgreSQL server of target `{target}` is version {version // 10000}; llmt needs 14 or "
                          "later", where="project.yml (warehouse:)", hint="Upgrade the server, or use another one.")
    return conn


def lock_key(dbname: str, state_schema: str) -> int:
    """The advisory lock of one state (a signed 64-bit key)."""
    digest = hashlib.sha256(f"llmt:{dbname}:{state_schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def take_lock(conn: psycopg.Connection[tuple[Any, ...]], key: int, timeout: float, reporter: Reporter,
              where: str) -> None:
    """Take the state's advisory lock, waiting (with backoff, up to ``timeout`` seconds) while another llmt
    holds it; after LOCK_NOTICE_AFTER seconds the reporter is told who holds it, and at the end LockTimeout
    names it."""
    started, pause, told = time.monotonic(), 0.02, False
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()
        if row and row[0]:
            return
        waited = time.monotonic() - started
        holder = _holder(conn, key)
        if waited >= timeout:
            raise LockTimeout(
                f"another llmt command writes to this state ({holder}); llmt waited {timeout:g} s for it",
                where=where,
                hint="Wait for it to finish (or end it) and run the command again: what llmt stored before is kept, "
                "and open batches are collected by the next `llmt run`. To wait longer, raise `lock_timeout` "
                "(seconds) under the target's `warehouse:` in project.yml.",
            )
        if not told and waited >= LOCK_NOTICE_AFTER:
            reporter.warn(f"another llmt command writes to this state ({holder}); llmt waits for it (up to "
                          f"{timeout:g} s: `lock_timeout` of the target's warehouse)")
            told = True
        time.sleep(min(pause, max(timeout - waited, 0)))
        pause = min(pause * 2, LOCK_PAUSE_MAX)


def _holder(conn: psycopg.Connection[tuple[Any, ...]], key: int) -> str:
    """Who holds the advisory lock ``key``: its application name, backend PID and client, as the server says."""
    row = conn.execute(
        "SELECT a.application_name, a.pid, coalesce(host(a.client_addr), 'local'), a.backend_start FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
        "AND l.classid = (%s::bigint >> 32)::int::oid AND l.objid = (%s::bigint & 4294967295)::oid LIMIT 1",
        [key, key]).fetchone()
    if row is None:
        return "a session that has just let go"
    return f"'{row[0]}', server PID {row[1]} from {row[2]}, connected since {row[3]:%Y-%m-%d %H:%M:%S %Z}"


class _JsonbBinaryText(TextBinaryLoader):
    """jsonb as its text (the binary form is a version byte, then the text)."""

    def load(self, data: Any) -> str:
        return bytes(data[1:]).decode()


class _UuidBinaryText(UUIDBinaryLoader):
    def load(self, data: Any) -> str:  # type: ignore[override]
        return str(super().load(data))
