"""Give the memory a finished session freed back to the operating system.

A session allocates and frees tens of MB (decoded frames in aiortc's decoder thread, the
evidence buffers, the analysis' small images) from several threads, and glibc's allocator
keeps freed memory in per-thread arenas instead of returning it, so an idle server's
resident size creeps up session after session without any object being kept.
``malloc_trim(0)`` releases the free pages of every arena. It is called in the executor
(it walks the arenas: a few milliseconds) when a session ends, at most once per
``min_interval_s``; elsewhere than glibc it does nothing.

Trimming gives back what is free; it cannot undo fragmentation, and glibc gives each new
thread an arena of its own up to 8 per CPU. A server that starts and ends a decoder thread
for every session spreads its frames over up to 16 arenas on 2 cores, each fragmented
its own way, and the idle resident size kept creeping up: over 400 sessions in waves of 4,
+5.4, +1.8 and +1.3 MB from one hundred sessions to the next. ``limit_arenas`` caps the
arenas (glibc's ``M_ARENA_MAX``; the service's default: one per CPU): with 2 on 2 cores the
same run was flat from session 100 on (+4.1, −0.1, +0.4 MB), for a CPU cost within the
noise of interleaved measurement at 8 sessions (docs/capacity.md).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import time
from concurrent.futures import Executor
from typing import Any, Callable

log = logging.getLogger(__name__)


def _glibc(name: str, argtypes: list[Any]) -> Callable[..., int] | None:
    """The C library's function ``name`` (returning int), None where there is no such
    function: an allocator other than glibc's (musl, macOS) or no C library found."""
    lib = ctypes.util.find_library("c")
    if not lib:
        return None
    try:
        fn = getattr(ctypes.CDLL(lib), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = argtypes
    fn.restype = ctypes.c_int
    return fn


#: glibc's mallopt parameter number for the arena limit (malloc.h)
M_ARENA_MAX = -8


def glibc_heap() -> bool:
    """The process allocates with glibc's malloc (trimming and the arena limit apply)."""
    return _glibc("malloc_trim", [ctypes.c_size_t]) is not None


def limit_arenas(n: int) -> bool:
    """Cap glibc's malloc arenas at ``n`` for the rest of the process (call it before the
    threads start: a thread keeps the arena it first allocated from). ``n`` 0, a
    ``MALLOC_ARENA_MAX`` in the environment (the operator's choice wins) or an allocator
    other than glibc's: nothing is changed. True when the limit was set."""
    if n <= 0 or "MALLOC_ARENA_MAX" in os.environ:
        return False
    fn = _glibc("mallopt", [ctypes.c_int, ctypes.c_int])
    return bool(fn is not None and fn(M_ARENA_MAX, int(n)) == 1)


class HeapTrimmer:
    """``after_session()``: trim the heap in ``executor`` unless it was done very recently."""

    def __init__(self, executor: Executor, min_interval_s: float = 2.0) -> None:
        self.executor = executor
        self.min_interval_s = min_interval_s
        self._trim = _glibc("malloc_trim", [ctypes.c_size_t])
        self._last = -float("inf")
        self.trims = 0

    @property
    def available(self) -> bool:
        return self._trim is not None

    def _run(self) -> None:
        assert self._trim is not None
        self._trim(0)
        self.trims += 1

    async def after_session(self) -> None:
        now = time.monotonic()
        if self._trim is None or now - self._last < self.min_interval_s:
            return
        self._last = now
        try:
            await asyncio.get_running_loop().run_in_executor(self.executor, self._run)
        except Exception:   # never let housekeeping fail a session
            log.exception("heap trim failed")
