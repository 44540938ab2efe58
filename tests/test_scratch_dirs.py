"""llmt's folders in the temporary directory: the ones a killed process left (spill files and all) are removed by
the next llmt that makes one; a running process's folders, and recently touched ones, are kept."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from llmt.warehouse import scratch_dirs
from llmt.warehouse.duckdb import scratch

OLD = scratch_dirs.IDLE_SECONDS + 60  # seconds


def _dead_pid() -> int:
    """The process id of a process that has ended."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


def _folder(root: Path, name: str, age: float) -> Path:
    """A folder with a file in it, last touched ``age`` seconds ago."""
    path = root / name
    path.mkdir()
    (path / "spill.tmp").write_bytes(b"x" * 64)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_folders_that_dead_processes_left_are_removed_and_no_other(tmp_path: Path) -> None:
    dead = _dead_pid()
    left = [_folder(tmp_path, f"llmt-{kind}-{dead}-ab12", OLD) for kind in ("scratch", "load", "spark")]
    kept = [_folder(tmp_path, f"llmt-scratch-{dead}-recent", 5),  # (maybe a process this one cannot see)
            _folder(tmp_path, f"llmt-load-{os.getpid()}-mine", OLD),  # a running process's
            _folder(tmp_path, f"llmt-other-{dead}-x", OLD), _folder(tmp_path, f"pytest-{dead}", OLD)]
    not_a_folder = tmp_path / f"llmt-spark-{dead}-file"
    not_a_folder.write_text("a file")
    assert sorted(scratch_dirs.sweep(tmp_path)) == sorted(left)
    assert not any(p.exists() for p in left)
    assert all(p.exists() for p in kept) and not_a_folder.exists()


def test_a_scratch_database_sweeps_before_making_its_folder_and_removes_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    killed = _folder(tmp_path, f"llmt-scratch-{_dead_pid()}-killed", OLD)
    with scratch({"memory_limit": "64MB"}) as db:
        assert not killed.exists()
        (mine,) = tmp_path.iterdir()
        assert mine.name.startswith(f"llmt-scratch-{os.getpid()}-")
        assert db.scalar("SELECT current_setting('temp_directory')") == str(mine)
    assert not list(tmp_path.iterdir())
