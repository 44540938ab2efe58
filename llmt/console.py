"""All terminal output. The library reports through a Reporter; only this module prints.

On a terminal: rich progress bars and tables. Otherwise: plain lines (CI logs, pipes)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from llmt import logs


class Bar(Protocol):
    def advance(self, n: int = 1) -> None: ...
    def update(self, completed: int) -> None: ...


class _NullBar:
    def advance(self, n: int = 1) -> None:
        pass

    def update(self, completed: int) -> None:
        pass


@dataclass(frozen=True)
class OpenBatch:
    """One open batch as the live view of a run shows it."""

    model: str
    batch: str  # its id at the provider
    status: str
    done: int  # requests answered or failed so far
    total: int
    age_s: float | None  # since the provider created it


class Board(Protocol):
    def show(self, batches: Sequence[OpenBatch]) -> None: ...


class _NullBoard:
    def show(self, batches: Sequence[OpenBatch]) -> None:
        pass


class Reporter:
    """Silent by default (library use, tests); the CLI uses Console."""

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    @contextmanager
    def progress(self, description: str, total: int) -> Iterator[Bar]:
        with self.bars([(description, total)]) as bars:
            yield bars[0]

    @contextmanager
    def bars(self, items: Sequence[tuple[str, int]]) -> Iterator[list[Bar]]:
        """Several bars shown together (e.g. one per open batch); how long they ran is logged as a step."""
        name = (items[0][0] + (f" and {len(items) - 1} more" if len(items) > 1 else "")) if items else "progress"
        with logs.step(name, total=sum(t for _, t in items)), self._bars(items) as bars:
            yield bars

    @contextmanager
    def _bars(self, items: Sequence[tuple[str, int]]) -> Iterator[list[Bar]]:
        yield [_NullBar() for _ in items]

    @contextmanager
    def board(self) -> Iterator[Board]:
        """The live view of every open batch of a run (all models), shown while the run waits; how long it was
        shown is logged as a step."""
        with logs.step("waiting for batches"), self._board() as board:
            yield board

    @contextmanager
    def _board(self) -> Iterator[Board]:
        yield _NullBoard()


class _PlainBar:
    """Progress as plain lines, at most one every few seconds."""

    def __init__(self, out: Any, description: str, total: int) -> None:
        self.out, self.description, self.total = out, description, total
        self.done = 0
        self.last = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def update(self, completed: int) -> None:
        self.done = completed
        now = time.monotonic()
        if now - self.last >= 5:
            self.last = now
            print(f"  {self.description}: {self.done}/{self.total}", file=self.out, flush=True)


class _PlainBoard:
    """Open batches as plain lines: a line for a batch when its status changes, or its counts at most every few
    seconds."""

    def __init__(self, out: Any, shown: dict[str, tuple[str, int, float]]) -> None:
        self.out = out
        self.shown = shown  # batch -> (status, done, when) of its last line, kept across the run's waits

    def show(self, batches: Sequence[OpenBatch]) -> None:
        now = time.monotonic()
        for b in batches:
            status, done, when = self.shown.get(b.batch, ("", -1, 0.0))
            if b.status != status or (b.done != done and now - when >= 5):
                self.shown[b.batch] = (b.status, b.done, now)
                print(f"  {b.model} {b.batch}: {b.status} {b.done}/{b.total}{_age(b.age_s)}", file=self.out,
                      flush=True)


class _RichBoard:
    """The live view on a terminal: started by `show`, and stopped while something else needs the terminal
    (`pause`: a progress bar, a question) until the next `show`."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.live: Any = None

    def pause(self) -> None:
        if self.live is not None:
            live, self.live = self.live, None
            live.stop()

    def show(self, batches: Sequence[OpenBatch]) -> None:
        from rich.live import Live
        from rich.table import Table

        table = Table(title=f"{len(batches)} in flight (batches, uploads, realtime shards)", title_justify="left",
                      box=None, pad_edge=False)
        for col, justify in (("model", "left"), ("batch", "left"), ("status", "left"), ("done", "right"),
                             ("age", "right")):
            table.add_column(col, justify=justify)  # type: ignore[arg-type]
        for b in batches:
            table.add_row(b.model, b.batch, b.status, f"{b.done}/{b.total}", _age(b.age_s).strip())
        if self.live is None:
            self.live = Live(console=self.console, transient=True, auto_refresh=False)
            self.live.start()
        self.live.update(table, refresh=True)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(max(seconds, 0)), 60)
    hours, minutes = divmod(minutes, 60)
    return f" {hours}h{minutes:02d}m" if hours else f" {minutes}m{secs:02d}s"


class _RichBar:
    def __init__(self, progress: Any, task: Any) -> None:
        self.progress, self.task = progress, task

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.task, n)

    def update(self, completed: int) -> None:
        self.progress.update(self.task, completed=completed)


class Console(Reporter):
    def __init__(self, *, quiet: bool = False, json_output: bool = False) -> None:
        self.quiet = quiet or json_output
        self.json_output = json_output
        self.tty = sys.stderr.isatty()
        self.board_lines: dict[str, tuple[str, int, float]] = {}
        self.live_board: _RichBoard | None = None  # the live view, while a run waits (on a terminal)

    def _rich(self, stderr: bool = True) -> Any:
        from rich.console import Console as RichConsole

        return RichConsole(stderr=stderr, highlight=False, soft_wrap=True)

    def info(self, message: str) -> None:
        logs.console("info", message)
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        logs.console("warning", message)
        print(f"warning: {message}", file=sys.stderr, flush=True)

    def debug(self, line: str) -> None:
        """A line of the log (--debug), on stderr."""
        print(line, file=sys.stderr, flush=True)

    @property
    def interactive(self) -> bool:
        """Whether someone can answer a question (stdin is a terminal)."""
        return sys.stdin.isatty()

    def confirm(self, question: str) -> bool:
        """Ask a yes/no question on the terminal; only yes is yes."""
        self._pause_board()
        print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
        return sys.stdin.readline().strip().lower() in ("y", "yes")

    def error(self, message: str) -> None:
        logs.console("error", message)
        if self.tty:
            self._rich().print(f"[bold red]error:[/] {_escape(message)}")
        else:
            print(f"error: {message}", file=sys.stderr, flush=True)

    @contextmanager
    def _bars(self, items: Sequence[tuple[str, int]]) -> Iterator[list[Bar]]:
        if self.quiet or not items:
            yield [_NullBar() for _ in items]
            return
        if not self.tty:
            yield [_PlainBar(sys.stderr, description, total) for description, total in items]
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._pause_board()
        with Progress(
            TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self._rich(), transient=True,
        ) as progress:
            yield [_RichBar(progress, progress.add_task(d, total=max(t, 1))) for d, t in items]

    @contextmanager
    def _board(self) -> Iterator[Board]:
        if self.quiet:
            yield _NullBoard()
            return
        if not self.tty:
            yield _PlainBoard(sys.stderr, self.board_lines)
            return
        self.live_board = board = _RichBoard(self._rich())
        try:
            yield board
        finally:
            board.pause()
            self.live_board = None

    def _pause_board(self) -> None:
        """The live view makes room (until it is shown again)."""
        if self.live_board is not None:
            self.live_board.pause()

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """A table on stdout (rich on a terminal, aligned plain text otherwise)."""
        if self.json_output:
            return
        if sys.stdout.isatty():
            from rich.table import Table

            table = Table(title=title, title_justify="left")
            for col in columns:
                table.add_column(col, overflow="fold")
            for row in rows:
                table.add_row(*(_cell(v) for v in row))
            self._rich(stderr=False).print(table)
            return
        cells = [[_cell(v) for v in row] for row in rows]
        widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
        if title:
            print(title)
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
        for row in cells:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())

    def text(self, text: str) -> None:
        """Plain output on stdout (compiled SQL, listings)."""
        print(text)

    def json(self, data: Any) -> None:
        print(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
