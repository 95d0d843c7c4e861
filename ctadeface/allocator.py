"""The C allocator of a run: one heap (arena) for every thread.

glibc's malloc gives threads that allocate their own arena (up to eight per core) and keeps
freed memory resident in each until its top is free. The distance transforms and torch's
worker threads allocate scan-sized arrays, so several arenas each keep a scan's worth: on the
512 x 512 x 300 phantom the per-scan peak above the loaded model is 3.4-4.2 x the int16 volume
with them and 2.7-2.9 x with one, at the same wall time (``bench/README.md``). Threads made
before the call keep their arenas.
"""

from __future__ import annotations

import ctypes
import sys

#: ``mallopt`` parameter of glibc's ``malloc.h``: the most arenas the process may have.
M_ARENA_MAX = -8


def one_arena() -> bool:
    """Ask the C library for a single malloc arena; whether it took the setting (False off
    glibc, where nothing changes)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, 1))
