"""Named crash points for the crash-safety tests.

`LLMT_CRASH_AT=<point>` makes the process kill itself with SIGKILL when it reaches that point,
exactly as `kill -9` would at that line; `LLMT_CRASH_AT=<point>:<n>` the n-th time it does (with several
models or shards in flight). Points: after_write (shard files written, not yet recorded), after_record,
after_upload (file uploaded, its id not recorded), after_create (batch created, its id not recorded),
waiting, after_download, mid_store (attempts inserted, answers not), after_store (attempts and answers inserted,
the shard not marked collected: on Spark, appended to its logs, not recorded in the state store), realtime_store
(realtime answers stored, more requests still to send), and for `llmt finetune submit` after_ft_upload (a training file
uploaded, its id not recorded) and after_ft_create (the job created, its id not recorded); after_build (a SQL
model built by a worker connection, --threads, its fingerprint not recorded).
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter

POINTS = ("after_write", "after_record", "after_upload", "after_create", "waiting", "after_download", "mid_store",
          "after_store")
REALTIME_POINTS = ("realtime_store",)  # after a realtime answer is stored
FINETUNE_POINTS = ("after_ft_upload", "after_ft_create")

_reached: Counter[str] = Counter()
_lock = threading.Lock()  # uploads and polls reach their points from several threads


def crash_point(name: str) -> None:
    wanted = os.environ.get("LLMT_CRASH_AT")
    if wanted is None or wanted.split(":")[0] != name:
        return
    with _lock:
        _reached[name] += 1
        if _reached[name] >= int(wanted.partition(":")[2] or 1):
            os.kill(os.getpid(), signal.SIGKILL)
