"""ctadeface.allocator: one malloc arena for every thread (glibc)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

#: Four threads allocate at once, then the process counts glibc's arenas (``malloc_info``).
_COUNT_ARENAS = textwrap.dedent(
    """
    import ctypes, sys, threading
    from ctadeface.allocator import one_arena
    if sys.argv[1] == "one" and not one_arena():
        raise SystemExit(3)
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
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
)


def _arenas(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _COUNT_ARENAS, mode], capture_output=True, text=True, check=False
    )
    if done.returncode == 3 or "malloc_info" in done.stderr:
        pytest.skip("the C library is not glibc")
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_threads_allocating_together_share_one_arena():
    assert _arenas("default") > 1  # glibc's own behaviour: the check can tell the difference
    assert _arenas("one") == 1


def test_one_arena_is_a_no_op_off_linux(monkeypatch):
    from ctadeface import allocator

    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.one_arena() is False


_RELEASE = textwrap.dedent(
    """
    import ctypes
    from ctadeface.allocator import one_arena, release
    one_arena()
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(1 << 16) for _ in range(2000)]  # 128 MiB in the heap, not mmapped
    for block in blocks[:-1]:  # the last one pins the heap's top: only a trim frees the rest
        libc.free(block)
    print(release())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_release_hands_freed_heap_memory_back():
    done = subprocess.run(
        [sys.executable, "-c", _RELEASE], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "True"
