"""ctadeface.allocator: one malloc arena for every thread, free heap memory handed back (glibc)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

#: The start of each script below: the C library's malloc and free, callable from Python.
_LIBC = """
import ctypes, sys, threading
from ctadeface.allocator import one_arena, release
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
"""

#: Four threads allocate at once, then the process counts glibc's arenas (``malloc_info``).
_COUNT_ARENAS = """
if sys.argv[1] == "one" and not one_arena():
    raise SystemExit(3)
together = threading.Barrier(4)
def work():
    together.wait()
    block = libc.malloc(1 << 16)
    together.wait()
    libc.free(block)
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
text, size = ctypes.c_char_p(), ctypes.c_size_t()
libc.open_memstream.restype = ctypes.c_void_p
stream = ctypes.c_void_p(libc.open_memstream(ctypes.byref(text), ctypes.byref(size)))
libc.malloc_info(0, stream)
libc.fclose(stream)
print(text.value.decode().count("<heap nr="))
"""

#: 128 MiB of small blocks (in the heap, not mmapped) freed but the last, which pins the heap's
#: top: only a trim hands the rest back.
_RELEASE = """
one_arena()
blocks = [libc.malloc(1 << 16) for _ in range(2000)]
for block in blocks[:-1]:
    libc.free(block)
print(release())
"""


def _last_word(script: str, *args: str) -> str:
    """What the script (after :data:`_LIBC`) prints last, in a new process; skips off glibc
    (exit 3, or no ``malloc_info``)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_LIBC) + script, *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode == 3 or "malloc_info" in done.stderr:
        pytest.skip("the C library is not glibc")
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[-1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_threads_allocating_together_share_one_arena():
    # glibc's own behaviour first: the check can tell the difference
    assert int(_last_word(_COUNT_ARENAS, "default")) > 1
    assert int(_last_word(_COUNT_ARENAS, "one")) == 1


def test_one_arena_is_a_no_op_off_linux(monkeypatch):
    from ctadeface import allocator

    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.one_arena() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_release_hands_freed_heap_memory_back():
    assert _last_word(_RELEASE) == "True"
