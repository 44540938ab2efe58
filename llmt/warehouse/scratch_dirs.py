"""llmt's folders in the system's temporary directory: DuckDB's spill files (`duckdb.scratch`), the pipe of a
bulk load into PostgreSQL (`postgres_load.through_pipe`), the parquet files handed to local Spark. Each is named
for the process that made it, so that the folders of a process that was killed (kill -9 leaves them, spill files
and all) are removed by the next llmt that makes one."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

NAME = re.compile(r"llmt-(scratch|load|spark)-(\d+)-")
# a folder is removed only once untouched this long (seconds): a process of another PID namespace sharing the
# directory (not seen from here) is then surely done with it
IDLE_SECONDS = 3600


def prefix(kind: str) -> str:
    """The start of the name of a new folder of ``kind`` (scratch, load, spark) made by this process; the
    folders dead processes left are removed first."""
    sweep()
    return f"llmt-{kind}-{os.getpid()}-"


def sweep(directory: Path | None = None) -> list[Path]:
    """Remove the folders that llmt processes no longer running left in ``directory`` (the temporary
    directory) and that nothing touched for IDLE_SECONDS; returns them."""
    root = directory or Path(tempfile.gettempdir())
    try:
        entries = list(os.scandir(root))
    except OSError:
        return []
    removed = []
    for entry in entries:
        found = NAME.match(entry.name)
        try:
            if (found is None or not entry.is_dir(follow_symlinks=False) or _running(int(found[2]))
                    or time.time() - entry.stat(follow_symlinks=False).st_mtime < IDLE_SECONDS):
                continue
        except OSError:  # (removed meanwhile)
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True
