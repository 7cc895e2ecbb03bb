"""Loaded into the benchmark's Home Assistant (PYTHONPATH) by `bench_ha.py --gc-probe`.

Times every full (generation 2) garbage collection and writes `<monotonic start> <seconds>`
per line to the file named by PREPAID_BENCH_GC_LOG, with one os.write per collection (a
callback must not allocate much or block). With PREPAID_BENCH_NO_FREEZE=1, `gc.freeze()` does
nothing, so the collections of an unfrozen heap can be measured with the same code.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any

_path = os.environ.get("PREPAID_BENCH_GC_LOG")
if _path:
    _fd = os.open(_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _started = [0.0]

    def _time(phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        now = time.monotonic()
        if phase == "start":
            _started[0] = now
        else:
            os.write(_fd, f"{_started[0]:.6f} {now - _started[0]:.6f}\n".encode())

    gc.callbacks.append(_time)

if os.environ.get("PREPAID_BENCH_NO_FREEZE") == "1":

    def _no_freeze() -> None:
        """Leave the heap as it is (the benchmark measures collections without a freeze)."""

    gc.freeze = _no_freeze
