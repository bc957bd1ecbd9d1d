import asyncio

import numpy as np
import pytest

from stream_ekyc.liveness.signals import MID_BINS, MID_V, FaceGeometry, FrameRecord
from stream_ekyc.pipeline import FrameSlot
from stream_ekyc.session import (ExposureAdvisor, ExposureRules, FitGate, FitRules, TransitionError, check_transition,
                                 guidance, user_reason)


def test_slot_keeps_the_newest_frame_and_counts_drops():
    async def run():
        slot = FrameSlot()
        for i in range(5):
            slot.put(i)
        assert slot.dropped == 4
        assert await slot.get() == 4
        getter = asyncio.ensure_future(slot.get())
        await asyncio.sleep(0)
        assert not getter.done()
        slot.put(7)
        assert await getter == 7
        slot.close()
        assert await slot.get() is None
    asyncio.run(run())


def test_state_machine_allows_only_forward_transitions():
    path = ["created", "connected", "fitting", "challenging", "scoring", "done"]
    for a, b in zip(path, path[1:]):
        check_transition(a, b)
    check_transition("fitting", "done")          # fit timeout ends with a retry verdict
    for a, b in [("done", "fitting"), ("created", "challenging"), ("scoring", "challenging"),
                 ("failed", "done"), ("expired", "connected")]:
        with pytest.raises(TransitionError):
            check_transition(a, b)


def _rec(box=(220, 140, 200, 240), iod=80, n=1, luma=120, clipped=0.0, bg=True, x_shift=0.0, neck=True):
    x, y, w, h = box
    cx = x + w / 2 + x_shift
    lm = np.array([[cx - iod / 2, y + 90], [cx + iod / 2, y + 90], [cx, y + 140], [cx - 30, y + 180], [cx + 30, y + 180]])
    r = FrameRecord(t=0.0, width=640, height=480, n_faces=n,
                    face=FaceGeometry((x + x_shift, y, w, h), lm, 0.9) if n else None)
    if n:
        r.patches = np.zeros((30, 3))
        r.luma, r.clipped = luma, clipped
        r.midline = np.full((MID_BINS, 3), 0.2)
        if not neck:
            r.midline[MID_V > 2.0] = np.nan
    r.background = np.ones(3) if bg else None
    return r


@pytest.mark.parametrize("rec, code", [
    (_rec(), "ok"),
    (_rec(n=0), "no_face"),
    (_rec(n=2), "multiple_faces"),
    (_rec(iod=30, box=(290, 200, 60, 80)), "move_closer"),
    (_rec(box=(120, 40, 420, 430), iod=170), "move_back"),
    (_rec(bg=False), "move_back"),
    (_rec(neck=False), "move_back"),            # the frame ends at the chin
    (_rec(x_shift=170), "centre_face"),
    (_rec(luma=20), "too_dark"),
    (_rec(clipped=0.3), "too_bright"),
    (_rec(clipped=0.2), "ok"),                  # partly clipped: the scorer can still judge it
])
def test_guidance_codes(rec, code):
    assert guidance(rec, None) == code


def test_hold_still_when_the_face_jumps_between_frames():
    assert guidance(_rec(x_shift=30), _rec()) == "hold_still"
    assert guidance(_rec(x_shift=2), _rec()) == "ok"


def test_user_reason_never_leaks_internal_codes():
    assert user_reason(["no_face"]) == "no_face"
    assert user_reason(["unmeasurable"]) == "try_again"


def test_fit_gate_needs_ok_without_a_break_for_the_stable_time():
    gate = FitGate(0.6)
    assert gate.offer(_rec(), 0.0) == "ok" and not gate.fitted(0.0)
    gate.offer(_rec(), 0.4)
    assert not gate.fitted(0.4)
    assert gate.offer(_rec(clipped=0.3), 0.5) == "too_bright"     # a break starts the count again
    assert not gate.fitted(0.7) and gate.last == "too_bright"
    gate.offer(_rec(), 0.8)
    assert not gate.fitted(1.2)
    gate.offer(_rec(), 1.4)
    assert gate.fitted(1.4) and gate.last == "ok"


def test_fit_gate_takes_its_rules():
    strict = FitGate(0.6, FitRules(max_clipped=0.08))
    assert strict.offer(_rec(clipped=0.2), 0.0) == "too_bright"
    assert FitGate(0.6).offer(_rec(clipped=0.2), 0.0) == "ok"


def test_exposure_advice_meters_the_face():
    adv = ExposureAdvisor()
    assert adv.advise(_rec()) == 0                          # well exposed: leave it
    assert adv.advise(_rec(n=0)) == 0                       # no face: nothing to meter
    assert adv.advise(_rec(n=2)) == 0
    assert adv.advise(_rec(clipped=0.021)) == -1            # highlights at the limit: half a stop less
    assert adv.advise(_rec(clipped=0.02)) == 0              # at the headroom limit: keep
    assert (adv.requests, adv.net_steps) == (1, -1)


def test_exposure_advice_never_hunts_and_is_bounded():
    adv = ExposureAdvisor()
    assert adv.advise(_rec(luma=40)) == 1                   # dark and nothing clips: brighter
    assert adv.advise(_rec(luma=40, clipped=0.001)) == 0    # dark but something clips: keep
    assert adv.advise(_rec(clipped=0.1)) == -1              # overshot: back down
    assert adv.advise(_rec(luma=40)) == 0                   # never up again once it went down
    for _ in range(5):
        adv.advise(_rec(clipped=0.5))
    assert adv.requests == ExposureRules().max_steps        # bounded over the session
    assert adv.net_steps == 1 - (ExposureRules().max_steps - 1)


def test_gate_restart_starts_the_stable_period_again():
    gate = FitGate(stable_s=0.6)
    for t in (0.0, 0.2, 0.4):
        gate.offer(_rec(), t)
    gate.restart()
    gate.offer(_rec(), 0.6)
    assert not gate.fitted(0.6)
    gate.offer(_rec(), 1.2)
    assert gate.fitted(1.2)
