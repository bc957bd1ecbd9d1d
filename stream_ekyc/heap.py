"""Give the memory a finished session freed back to the operating system.

A session allocates and frees tens of MB (decoded frames in aiortc's decoder thread, the
evidence buffers, the analysis' small images) from several threads, and glibc's allocator
keeps freed memory in per-thread arenas instead of returning it, so an idle server's
resident size creeps up session after session without any object being kept.
``malloc_trim(0)`` releases the free pages of every arena. It is called in the executor
(it walks the arenas: a few milliseconds) when a session ends, at most once per
``min_interval_s``; elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from concurrent.futures import Executor
from typing import Callable

log = logging.getLogger(__name__)


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):     # not glibc (musl, macOS)
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


class HeapTrimmer:
    """``after_session()``: trim the heap in ``executor`` unless it was done very recently."""

    def __init__(self, executor: Executor, min_interval_s: float = 2.0) -> None:
        self.executor = executor
        self.min_interval_s = min_interval_s
        self._trim = _load_trim()
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
