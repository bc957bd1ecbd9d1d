"""HeapTrimmer: glibc's malloc_trim in the executor after a session, rate-limited."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from stream_ekyc.heap import HeapTrimmer


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
