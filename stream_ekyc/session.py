"""The session state machine and the face-fit guidance (pure logic, no I/O).

    created → connected → fitting → challenging → scoring → done
         ↘ expired        ↘ failed (any non-final state: error, hang-up, shutdown)

``done`` carries a verdict (live, spoof or retry); ``failed`` means no verdict could be
reached (the applicant left, the connection broke, the service shut down).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .liveness.signals import NECK_BINS, FrameRecord

TRANSITIONS: dict[str, frozenset[str]] = {
    "created": frozenset({"connected", "expired", "failed"}),
    "connected": frozenset({"fitting", "failed"}),
    "fitting": frozenset({"challenging", "done", "failed"}),
    "challenging": frozenset({"scoring", "failed"}),
    "scoring": frozenset({"done", "failed"}),
    "done": frozenset(),
    "failed": frozenset(),
    "expired": frozenset(),
}


class TransitionError(RuntimeError):
    pass


def check_transition(current: str, new: str) -> None:
    if new not in TRANSITIONS.get(current, frozenset()):
        raise TransitionError(f"{current} → {new} is not a valid session transition")


# user-facing outcome for each verdict; the score never reaches the page
OUTCOME = {"live": "passed", "spoof": "failed", "retry": "retry"}

# retry reasons the page can explain; everything else is shown as a generic retry
USER_REASONS = {
    "no_face", "multiple_faces", "face_lost", "face_out_of_frame", "moving_too_much", "face_too_small",
    "face_too_close", "too_dark", "too_bright", "too_few_frames", "weak_response", "fit_timeout",
}


def user_reason(reasons: list[str]) -> str:
    for r in reasons:
        if r in USER_REASONS:
            return r
    return "try_again"


@dataclass(frozen=True)
class FitRules:
    min_iod_frac: float = 0.07      # eyes closer than this share of the frame width: move closer
    max_box_frac: float = 0.62      # face box wider than this share of the frame: move back
    max_centre_off: float = 0.18    # face centre further than this from the frame centre: centre
    max_step_iod: float = 0.12      # eye movement per frame at ref_fps (IOD units): hold still
    ref_fps: float = 30.0           # analysed frames further apart than 1/ref_fps may move proportionally more
    min_luma: float = 45.0
    # share of the inner face's pixels at the sensor limit under the rest colour above which
    # the applicant is asked for less light. Not stricter than the scorer needs: on the
    # tuning sessions, genuine faces clipped 0.08-0.23 at rest scored live in 12 of 15, and
    # none clipped above 0.25 did (benchmarks/fit_gate.py; at 0.08 the gate stopped 11 of
    # them before any colour was shown). The scorer's own gate (``decision.DecisionConfig``)
    # judges the clipping during the colours.
    max_clipped: float = 0.25


def guidance(rec: FrameRecord, prev: FrameRecord | None, rules: FitRules = FitRules()) -> str:
    """One guidance code for a fresh frame record (docs/protocol.md)."""
    if rec.n_faces == 0 or rec.face is None:
        return "no_face"
    if rec.n_faces > 1:
        return "multiple_faces"
    face = rec.face
    x, y, w, h = face.box
    if face.iod < rules.min_iod_frac * rec.width:
        return "move_closer"
    if w > rules.max_box_frac * rec.width or rec.background is None:
        return "move_back"
    if rec.midline is not None and not np.isfinite(rec.midline[NECK_BINS]).any():
        # the frame ends at the chin: the depth step under it cannot be seen, and without
        # it the check counts the face as flat there (decision.MISSING_AS)
        return "move_back"
    cx, cy = (x + w / 2) / rec.width, (y + h / 2) / rec.height
    if abs(cx - 0.5) > rules.max_centre_off or abs(cy - 0.5) > rules.max_centre_off + 0.07:
        return "centre_face"
    if rec.patches is not None:
        if rec.luma < rules.min_luma:
            return "too_dark"
        if rec.clipped > rules.max_clipped:
            return "too_bright"
    if prev is not None and prev.face is not None:
        step = float(((face.eye_centre - prev.face.eye_centre) ** 2).sum() ** 0.5) / max(face.iod, 1.0)
        frames = max(1.0, (rec.t - prev.t) * rules.ref_fps)     # fitting is analysed at a lower rate
        if step / frames > rules.max_step_iod:
            return "hold_still"
    return "ok"


@dataclass(frozen=True)
class ExposureRules:
    """Face-metered exposure while fitting (docs/protocol.md, ``exposure``).

    A camera's own auto-exposure meters the whole frame: a lit face before a dark room comes
    out clipped, and then the colours' reflection cannot be measured on it. When the page says
    its camera takes exposure constraints, the server meters the inner face and asks for half
    a stop less while more than ``max_clipped`` of it is at the sensor limit (headroom for
    the colours, well inside the fit gate's ``too_bright``), or half a stop more while it is
    darker than ``min_luma`` and nothing clips. Never up again once it has gone down (no
    hunting), at most ``max_steps`` requests a session."""
    max_clipped: float = 0.02
    min_luma: float = 60.0
    step_ev: float = 0.5
    max_steps: int = 4


class ExposureAdvisor:
    """Which way the page should step its camera's exposure after a fresh frame record:
    −1 (darker), +1 (brighter) or 0. Stateful over one session; the live pipeline and the
    simulator's model of the page (``benchmarks/simulate.py``) run the same rules."""

    def __init__(self, rules: ExposureRules = ExposureRules()) -> None:
        self.rules = rules
        self.requests = 0     # steps asked for
        self.net_steps = 0    # their sum (in steps of ``rules.step_ev``)
        self._went_down = False

    def advise(self, rec: FrameRecord) -> int:
        r = self.rules
        if self.requests >= r.max_steps or rec.face is None or rec.n_faces != 1 or rec.patches is None:
            return 0
        if rec.clipped > r.max_clipped:
            step = -1
            self._went_down = True
        elif rec.luma < r.min_luma and rec.clipped == 0 and not self._went_down:
            step = 1
        else:
            return 0
        self.requests += 1
        self.net_steps += step
        return step


class FitGate:
    """The face-fit gate over a session's analysed frames: the guidance for each, and whether
    it has said ``ok`` for ``stable_s`` without a break (then the colours may start). Motion
    is measured between detected frames only: a held face has, by construction, not moved.
    The live pipeline feeds it on its clock; ``benchmarks/fit_gate.py`` on frame times."""

    def __init__(self, stable_s: float, rules: FitRules = FitRules()) -> None:
        self.stable_s = stable_s
        self.rules = rules
        self.last: str | None = None           # the latest guidance code
        self._prev: FrameRecord | None = None  # the latest detected frame
        self._ok_since: float | None = None

    def offer(self, rec: FrameRecord, now: float) -> str:
        code = guidance(rec, self._prev, self.rules)
        if rec.detected:
            self._prev = rec
        self.last = code
        if code == "ok":
            self._ok_since = now if self._ok_since is None else self._ok_since
        else:
            self._ok_since = None
        return code

    def restart(self) -> None:
        """Start the stable period again (the camera's exposure is changing)."""
        self._ok_since = None

    def fitted(self, now: float) -> bool:
        # 1 µs for float rounding: frame times 0.2 s apart must count 0.6 s as 0.6 s
        return self._ok_since is not None and now - self._ok_since >= self.stable_s - 1e-6
