"""HeapTrimmer: glibc's malloc_trim in the executor after a session, rate-limited."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from stream_ekyc.heap import HeapTrimmer, glibc_heap


def test_trims_in_the_executor_at_most_once_per_interval() -> None:
    ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix="t")
    trimmer = HeapTrimmer(ex, min_interval_s=60.0)
    if not trimmer.available:
        pytest.skip("not glibc")
    seen: list[str] = []
    run = trimmer._run

    def spy() -> None:
        seen.append(threading.current_thread().name)
        run()

    trimmer._run = spy  # type: ignore[method-assign]

    async def sessions() -> None:
        for _ in range(5):
            await trimmer.after_session()

    asyncio.run(sessions())
    ex.shutdown()
    assert trimmer.trims == 1 and len(seen) == 1 and seen[0].startswith("t")


def test_every_session_trims_without_an_interval() -> None:
    ex = ThreadPoolExecutor(max_workers=1)
    trimmer = HeapTrimmer(ex, min_interval_s=0.0)
    if not trimmer.available:
        pytest.skip("not glibc")

    async def sessions() -> None:
        for _ in range(3):
            await trimmer.after_session()

    asyncio.run(sessions())
    ex.shutdown()
    assert trimmer.trims == 3


# A fresh interpreter caps its arenas (or not), then six threads each allocate from the
# heap at once and glibc's own malloc_stats() lists the arenas in use on stderr.
_ARENAS = r"""
import ctypes, sys, threading
from stream_ekyc.heap import limit_arenas
print("limited" if limit_arenas(int(sys.argv[1])) else "unchanged", flush=True)
keep, go = [], threading.Barrier(6)
def work():
    go.wait()
    for _ in range(200):
        keep.append(bytearray(20_000))    # below the mmap threshold: from the thread's arena
threads = [threading.Thread(target=work) for _ in range(6)]
[t.start() for t in threads]; [t.join() for t in threads]
ctypes.CDLL(None).malloc_stats()
"""


def _arenas(n: int, env: dict[str, str] | None = None) -> tuple[str, int]:
    e = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    e.update(env or {})
    p = subprocess.run([sys.executable, "-c", _ARENAS, str(n)], capture_output=True, text=True, env=e, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip(), sum(1 for line in p.stderr.splitlines() if line.startswith("Arena "))


def test_limit_arenas_caps_what_threads_share() -> None:
    if not glibc_heap():
        pytest.skip("not glibc")
    assert _arenas(1) == ("limited", 1)
    state, n = _arenas(2)
    assert state == "limited" and n <= 2


def test_limit_arenas_leaves_the_allocator_alone_when_told_to() -> None:
    if not glibc_heap():
        pytest.skip("not glibc")
    state, n = _arenas(0)                                                  # 0: glibc's default
    assert state == "unchanged" and n > 1      # the threads contend: glibc gives them arenas of their own
    assert _arenas(1, {"MALLOC_ARENA_MAX": "3"})[0] == "unchanged"         # the operator's choice wins
