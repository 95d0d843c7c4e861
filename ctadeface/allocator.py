"""The C allocator of a run: one heap (arena) for every thread, its free memory handed back
after each scan.

glibc's malloc gives threads that allocate their own arena (up to eight per core) and keeps
freed memory resident in each until its top is free. The distance transforms and torch's
worker threads allocate scan-sized arrays, so several arenas each keep a scan's worth: on the
512 x 512 x 300 phantom the per-scan peak above the loaded model is 3.4-4.2 x the int16 volume
with them and 2.5-3.8 x with one, at the same wall time (``bench/README.md``). Threads made
before the call keep their arenas. What a scan freed inside the heap stays resident too, and the
next scan's arrays are laid around it; :func:`release` hands it back (``malloc_trim``).
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

#: ``mallopt`` parameter of glibc's ``malloc.h``: the most arenas the process may have.
M_ARENA_MAX = -8


def one_arena() -> bool:
    """Ask the C library for a single malloc arena; whether it took the setting (False off
    glibc, where nothing changes)."""
    mallopt = _glibc("mallopt", ctypes.c_int, ctypes.c_int)
    return mallopt is not None and bool(mallopt(M_ARENA_MAX, 1))


def release() -> bool:
    """Hand the heap's free memory back to the system; whether any was (False off glibc)."""
    trim = _glibc("malloc_trim", ctypes.c_size_t)
    return trim is not None and bool(trim(0))


def _glibc(name: str, *argtypes: Any) -> Any:
    """The C library's function ``name``, taking ``argtypes`` and returning an int; None where
    there is none (not Linux, not glibc)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = list(argtypes), ctypes.c_int
    return function
