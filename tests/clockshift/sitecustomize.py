"""Loaded only by test daemons (PYTHONPATH): shifts this process's wall clock.

The offset in seconds is read from the file named by ``RKD_TEST_CLOCK_FILE`` at every
call, so a test moves the clock of a running daemon by rewriting that file, as an NTP
step or a user's ``date -s`` would. The monotonic clock is left alone, as the kernel's is. (The daemon reads the
wall clock only through ``time.time``/``time.time_ns``, so this is all it takes.)
"""

import os
import time

_path = os.environ.get("RKD_TEST_CLOCK_FILE")

if _path:
    _real_time, _real_time_ns = time.time, time.time_ns

    def _offset() -> float:
        try:
            with open(_path) as f:
                return float(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0.0

    time.time = lambda: _real_time() + _offset()
    time.time_ns = lambda: _real_time_ns() + int(_offset() * 1e9)
