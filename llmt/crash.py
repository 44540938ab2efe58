"""Named crash points for the crash-safety tests.

`LLMT_CRASH_AT=<point>` makes the process kill itself with SIGKILL when it reaches that point,
exactly as `kill -9` would at that line. Points: after_write (shard files written, not yet
recorded), after_record, after_upload (file uploaded, its id not recorded), after_create (batch
created, its id not recorded), waiting, after_download, mid_store (attempts inserted, answers not),
and realtime_store (realtime answers stored, more requests still to send).
"""

from __future__ import annotations

import os
import signal

POINTS = ("after_write", "after_record", "after_upload", "after_create", "waiting", "after_download", "mid_store")
REALTIME_POINTS = ("realtime_store",)  # after a realtime answer is stored


def crash_point(name: str) -> None:
    if os.environ.get("LLMT_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
