"""Run a command and write its wall time, CPU time (user + system) and peak RSS as JSON to a file:
`python _measure.py OUT CMD...`.

A process started from a large one inherits, in Linux's accounting, the large one's peak RSS (the
address space it replaces at exec counts); started from this small launcher, the command's own peak
is what `wait4` reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    t0 = time.perf_counter()
    child = subprocess.Popen(sys.argv[2:])
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - t0
    child.returncode = code = os.waitstatus_to_exitcode(status)
    Path(sys.argv[1]).write_text(json.dumps({"seconds": seconds, "rss_mb": usage.ru_maxrss / 1024,
                                             "cpu_s": usage.ru_utime + usage.ru_stime}))
    sys.exit(code if code >= 0 else 128 - code)
