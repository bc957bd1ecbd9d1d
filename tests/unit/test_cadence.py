"""Which frames the live pipeline analyses and records (no clocks: frame times are given)."""

from __future__ import annotations

import asyncio

import numpy as np

from stream_ekyc.liveness.signals import FaceGeometry, FrameRecord
from stream_ekyc.pipeline import Cadence, FrameSlot
from stream_ekyc.session import guidance


def _taken(cadence: Cadence, times) -> list[float]:
    return [t for t in times if cadence.take(t)]


def test_every_frame_at_period_zero():
    c = Cadence(0.0)
    times = [i / 30 for i in range(60)]
    assert _taken(c, times) == times and c.skipped == 0


def test_ten_a_second_from_a_jittery_thirty_fps_stream():
    rng = np.random.default_rng(3)
    times = np.arange(300) / 30 + rng.uniform(-0.004, 0.004, 300)
    c = Cadence(0.1)
    taken = _taken(c, times)
    assert 99 <= len(taken) <= 101                    # 10 s at 10 fps: the rate holds despite jitter
    assert c.skipped == 300 - len(taken)
    gaps = np.diff(taken)
    assert gaps.min() > 0.08 and gaps.max() < 0.12


def test_every_other_frame_at_fifteen_from_thirty():
    c = Cadence(1 / 15)
    taken = _taken(c, [i / 30 for i in range(30)])
    assert taken == [i / 30 for i in range(0, 30, 2)]


def test_a_gap_in_the_stream_restarts_the_count_instead_of_bursting():
    c = Cadence(0.1)
    first = _taken(c, [i / 30 for i in range(10)])          # 0 .. 0.3 s
    later = _taken(c, [2.0 + i / 30 for i in range(10)])    # the stream resumes after a stall
    assert len(first) == 4
    assert np.all(np.diff(later) > 0.08)                     # no catch-up burst


def test_the_slot_gives_up_at_its_deadline():
    async def run():
        loop = asyncio.get_running_loop()
        slot = FrameSlot()
        assert await slot.get(until=loop.time() + 0.01) is None    # nothing came
        assert await slot.get(until=loop.time() - 1.0) is None     # already past
        slot.put("a")
        assert await slot.get(until=loop.time() - 1.0) == "a"      # waiting frames are still given
        getter = asyncio.ensure_future(slot.get(until=loop.time() + 30.0))
        await asyncio.sleep(0)
        slot.put("b")
        assert await getter == "b"
        slot.close()
        assert await slot.get(until=loop.time() + 30.0) is None
    asyncio.run(run())


def _at(t: float, x: float) -> FrameRecord:
    lm = np.array([[x - 40, 230], [x + 40, 230], [x, 280], [x - 30, 320], [x + 30, 320]], dtype=float)
    r = FrameRecord(t=t, width=640, height=480, n_faces=1, face=FaceGeometry((x - 100, 140, 200, 240), lm, 0.9))
    r.patches = np.zeros((30, 3))
    r.luma = 120
    r.background = np.ones(3)
    return r


def test_hold_still_counts_movement_per_frame_interval():
    # 0.2 IOD between consecutive 30 fps frames is too much; over 0.1 s (10 fps) it is not
    assert guidance(_at(1 / 30, 336), _at(0.0, 320)) == "hold_still"
    assert guidance(_at(0.1, 336), _at(0.0, 320)) == "ok"
    # ... but 0.6 IOD in 0.1 s is
    assert guidance(_at(0.1, 368), _at(0.0, 320)) == "hold_still"


def test_a_cadence_at_a_rate():
    assert Cadence.period_for(15) == 1 / 15 and Cadence.period_for(0) == 0.0 and Cadence.period_for(-1) == 0.0
    assert Cadence.at(0).take(0.0) and Cadence.at(0).period == 0.0
    assert _taken(Cadence.at(15), [i / 30 for i in range(30)]) == [i / 30 for i in range(0, 30, 2)]
