"""The log of every command: JSON lines appended to `logs/llmt.log` in the project (rotated by size, a few files
kept), as dbt keeps `logs/dbt.log`. Each line has its time, level, command, invocation id, run id (once a run has
one) and an event: what the console said, the timings of steps and models, SQL statements and provider calls (at
debug level). `--debug` also shows every line on the terminal, through the console.

Never a secret: every line is scrubbed before it is written of the values registered with `secret()` (the API key
a provider uses, a warehouse password), of the values of environment variables whose names say they are secret,
and of passwords in URLs and `password=` settings. SQL statements are logged without their parameters.

The library logs through this module's functions; they cost a check of the level when no command is logging."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets as random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LOGGER = logging.getLogger("llmt")
LOG_FILE = Path("logs") / "llmt.log"  # in the project directory
MAX_BYTES = 5 * 1024 * 1024  # a log file is rotated at this size ...
BACKUPS = 4  # ... and this many older ones are kept (llmt.log.1 is the newest)
# environment variables whose values are secrets, by name (PWD and OLDPWD are directories)
SECRET_NAMES = re.compile(r"(^|_)(KEY|SECRET|TOKEN|PASSWORD|PASSWD|PWD|CREDENTIALS?|DSN)($|_)|APIKEY|PASSWORD",
                          re.IGNORECASE)
NOT_SECRET = frozenset({"PWD", "OLDPWD"})
MIN_SECRET = 6  # shorter values are not scrubbed (they would blank out ordinary words)
SECRET_SHAPES = (  # secrets recognised by their shape wherever they appear
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@"), r"\1***@"),  # scheme://user:password@
    (re.compile(r"(?i)\b(password|passwd|pwd)(\s*[=:]\s*)('[^']*'|\"[^\"]*\"|[^\s'\";,&]+)"), r"\1\2***"),
    (re.compile(r"(?i)\b(bearer\s+)[^\s\"']+"), r"\1***"),
)


@dataclass
class _Session:
    """The command being logged."""

    command: str
    invocation_id: str
    started: float
    handlers: list[logging.Handler] = field(default_factory=list)
    run_id: str | None = None


_session: _Session | None = None
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def secret(value: object) -> None:
    """Never write ``value`` to the log (an API key, a password)."""
    global _pattern
    text = str(value) if value is not None else ""
    if len(text) >= MIN_SECRET and text not in _secrets:
        _secrets.add(text)
        _pattern = re.compile("|".join(re.escape(s) for s in sorted(_secrets, key=len, reverse=True)))


def scrub(text: str) -> str:
    """``text`` without the secrets this module knows of."""
    if _pattern is not None:
        text = _pattern.sub("***", text)
    for shape, replacement in SECRET_SHAPES:
        text = shape.sub(replacement, text)
    return text


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
        }
        if _session is not None:
            entry.update(command=_session.command, invocation_id=_session.invocation_id, run_id=_session.run_id)
        entry["event"] = getattr(record, "event", "message")
        entry["msg"] = record.getMessage()
        entry.update(getattr(record, "fields", {}))
        return scrub(json.dumps(entry, default=str, ensure_ascii=False))


class _Terminal(logging.Handler):
    """--debug: each line, readable, through the console (what the console itself said is shown already)."""

    def __init__(self, show: Callable[[str], None]) -> None:
        super().__init__(logging.DEBUG)
        self.show = show

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", "") == "console":
            return
        fields = " ".join(f"{k}={v}" for k, v in getattr(record, "fields", {}).items())
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        self.show(scrub(f"{stamp} {record.levelname.lower():5} {getattr(record, 'event', 'message')}: "
                        f"{record.getMessage()}" + (f" ({fields})" if fields else "")))


def start(project_dir: Path | None, command: str, args: list[str], show: Callable[[str], None] | None) -> None:
    """Begin logging a command: to ``project_dir``'s log file (when it is a project) and, with ``show`` (--debug),
    to the terminal. Once per command: a command already logging goes on."""
    if _session is not None:
        return
    for name, value in os.environ.items():
        if SECRET_NAMES.search(name) and name.upper() not in NOT_SECRET:
            secret(value)
    session = _Session(command, datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + random.token_hex(3),
                       time.monotonic())
    if project_dir is not None and (project_dir / "project.yml").is_file():
        from logging.handlers import RotatingFileHandler

        path = project_dir / LOG_FILE
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler: logging.Handler = RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS,
                                                           encoding="utf-8")
        except OSError:
            handler = logging.NullHandler()  # a project directory that cannot be written: no log, no failure
        handler.setFormatter(_JsonLines())
        session.handlers.append(handler)
    if show is not None:
        session.handlers.append(_Terminal(show))
    _begin(session)
    event("command", f"llmt {command} started", args=args, cwd=str(Path.cwd()))


def _begin(session: _Session) -> None:
    global _session
    _session = session
    for handler in session.handlers:
        LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.DEBUG if session.handlers else logging.WARNING)
    LOGGER.propagate = False


def invocation_id() -> str | None:
    """The id of the command being logged (artifacts carry it, as dbt's do)."""
    return _session.invocation_id if _session is not None else None


def bind_run(run_id: str) -> None:
    """The run id of what follows (a command that runs models records one in the state store)."""
    if _session is not None:
        _session.run_id = run_id


def finish(exit_code: int) -> None:
    """End the command's log with its exit code and duration."""
    global _session
    session = _session
    if session is None:
        return
    seconds = round(time.monotonic() - session.started, 3)
    event("command", f"llmt {session.command} ended with exit code {exit_code} in {seconds:.2f}s",
          level=logging.INFO if exit_code == 0 else logging.ERROR, exit_code=exit_code, seconds=seconds)
    for handler in session.handlers:
        LOGGER.removeHandler(handler)
        handler.close()
    LOGGER.setLevel(logging.WARNING)
    _session = None


def event(name: str, message: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """One line of the log: ``name`` says what kind (command, step, node, sql, provider, console, ...)."""
    if LOGGER.isEnabledFor(level):
        LOGGER.log(level, "%s", message, extra={"event": name, "fields": fields})


def console(level: str, message: str) -> None:
    """What the console said (info, warning, error)."""
    event("console", message, level={"info": logging.INFO, "warning": logging.WARNING}.get(level, logging.ERROR))


def statement(sql: str, seconds: float, where: str | None = None) -> None:
    """A SQL statement the warehouse ran (debug level; its parameters are never logged)."""
    if LOGGER.isEnabledFor(logging.DEBUG):
        event("sql", sql.strip(), level=logging.DEBUG, seconds=round(seconds, 6),
              **({"where": where} if where else {}))


@contextmanager
def step(name: str, **fields: Any) -> Iterator[None]:
    """Log how long the enclosed step took (and that it failed, when it raises)."""
    started = time.monotonic()
    outcome = "failed"
    try:
        yield
        outcome = "done"
    finally:
        seconds = round(time.monotonic() - started, 6)
        event("step", f"{name} {outcome} in {seconds:.3f}s", level=logging.DEBUG if outcome == "done" else
              logging.WARNING, step=name, seconds=seconds, **fields)


def http_hooks() -> dict[str, list[Callable[[Any], None]]]:
    """Event hooks for the HTTP client of a provider's SDK: each call logged with its status and duration (the
    URL and the provider's request id; never a header or a body)."""
    import weakref

    sent: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def request(req: Any) -> None:
        sent[req] = time.monotonic()

    def response(resp: Any) -> None:
        if not LOGGER.isEnabledFor(logging.DEBUG):
            return
        req = resp.request
        started = sent.pop(req, None)
        seconds = round(time.monotonic() - started, 6) if started is not None else None
        event("provider", f"{req.method} {req.url} -> {resp.status_code}", level=logging.DEBUG,
              method=req.method, url=str(req.url), status=resp.status_code, seconds=seconds,
              request_id=resp.headers.get("x-request-id"))

    return {"request": [request], "response": [response]}
