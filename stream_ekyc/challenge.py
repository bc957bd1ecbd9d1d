"""The colour challenge: palette, CSPRNG sequence, schedule, photosensitivity check, wire format.

A challenge is a list of colour steps that the page shows full screen, one after another.
Colours are drawn from ``secrets.SystemRandom`` (the OS CSPRNG): each step is independent
of the earlier ones apart from never repeating its neighbour, so nothing shown so far
predicts what comes next. Durations are random too, so the *times* of the transitions are
part of the secret as well as the colours.

JSON form (the challenge file, and what the server keeps for a live session)::

    {"version": 1, "steps": [{"t": 0.80, "duration": 0.30, "rgb": [255, 0, 0]}, ...]}

``t`` is when the colour was commanded, in seconds on the video's own clock.
"""

from __future__ import annotations

import json
import math
import random
import secrets
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

VERSION = 1
MIN_STEPS, MAX_STEPS = 6, 10
MIN_STEP_S, MAX_STEP_S = 0.2, 0.5
MAX_TOTAL_S = 3.0
MAX_FLASHES_PER_S = 3.0

# The eight corners of the RGB cube: they make the screen-to-camera response matrix
# estimable (three independent primaries) and span the full luminance range.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 255, 255), (0, 0, 0), (255, 0, 0), (0, 255, 0),
    (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255),
)


class ChallengeError(ValueError):
    """A challenge file or object does not follow the schema."""


@dataclass(frozen=True)
class Step:
    t: float
    duration: float
    rgb: tuple[int, int, int]

    @property
    def end(self) -> float:
        return self.t + self.duration


@dataclass(frozen=True)
class Challenge:
    steps: tuple[Step, ...]
    version: int = VERSION

    @property
    def start(self) -> float:
        return self.steps[0].t

    @property
    def end(self) -> float:
        return self.steps[-1].end

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version,
                "steps": [{"t": round(s.t, 4), "duration": round(s.duration, 4), "rgb": list(s.rgb)}
                          for s in self.steps]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def shifted(self, dt: float) -> "Challenge":
        return Challenge(tuple(Step(s.t + dt, s.duration, s.rgb) for s in self.steps), self.version)

    def linear_rgb_at(self, times: np.ndarray) -> np.ndarray:
        """Linear RGB (0..1) commanded at each time; NaN outside the challenge."""
        times = np.asarray(times, dtype=np.float64)
        out = np.full(times.shape + (3,), np.nan)
        starts = np.array([s.t for s in self.steps])
        idx = np.searchsorted(starts, times, side="right") - 1
        lin = np.array([srgb_to_linear(np.array(s.rgb) / 255.0) for s in self.steps])
        ok = (idx >= 0) & (times < self.end)
        out[ok] = lin[idx[ok]]
        return out


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def relative_luminance(rgb: Sequence[int]) -> float:
    r, g, b = srgb_to_linear(np.array(rgb, dtype=np.float64) / 255.0)
    return float(0.2126 * r + 0.7152 * g + 0.0722 * b)


def flash_count_max(steps: Sequence[Step], window: float = 1.0) -> float:
    """Most flashes in any window (WCAG 2.x general flash: a flash is a pair of opposing
    relative-luminance changes of at least 10 % where the darker state is below 0.80;
    each qualifying transition counts as half a flash)."""
    times = []
    for a, b in zip(steps, steps[1:]):
        la, lb = relative_luminance(a.rgb), relative_luminance(b.rgb)
        if abs(la - lb) >= 0.1 and min(la, lb) < 0.8:
            times.append(b.t)
    # the page returns to its neutral background after the last step: count that too
    best = 0.0
    for i, t0 in enumerate(times):
        n = sum(1 for t in times[i:] if t < t0 + window)
        best = max(best, n / 2.0)
    return best


def _informative(colours: Sequence[tuple[int, int, int]]) -> bool:
    """At least three linearly independent colours after removing the mean, and both dark
    and bright steps: the response can then be fitted per screen primary."""
    lin = srgb_to_linear(np.array(colours, dtype=np.float64) / 255.0)
    centred = lin - lin.mean(axis=0)
    if np.linalg.matrix_rank(centred, tol=1e-6) < 3:
        return False
    lum = lin @ np.array([0.2126, 0.7152, 0.0722])
    return float(lum.max() - lum.min()) >= 0.5


def generate(start: float = 0.0, n_steps: int | None = None,
             rng: random.Random | None = None) -> Challenge:
    """A fresh challenge. ``rng`` defaults to the OS CSPRNG; pass a seeded
    ``random.Random`` only for simulations and tests."""
    rng = rng or secrets.SystemRandom()
    if n_steps is not None and not MIN_STEPS <= n_steps <= MAX_STEPS:
        raise ChallengeError(f"n_steps must be between {MIN_STEPS} and {MAX_STEPS}")
    while True:
        n = n_steps or rng.randint(MIN_STEPS, MAX_STEPS)
        # durations in 10 ms units, uniform in [200, 500] ms, scaled down if the total is too long
        durs = [rng.randint(20, 50) / 100.0 for _ in range(n)]
        if sum(durs) > MAX_TOTAL_S:
            continue
        colours: list[tuple[int, int, int]] = []
        for _ in range(n):
            choices = [c for c in PALETTE if not colours or c != colours[-1]]
            colours.append(choices[rng.randrange(len(choices))])
        if not _informative(colours):
            continue
        steps, t = [], start
        for d, c in zip(durs, colours):
            steps.append(Step(round(t, 4), d, c))
            t += d
        if flash_count_max(steps) > MAX_FLASHES_PER_S:
            continue
        return Challenge(tuple(steps))


def validate(ch: Challenge) -> None:
    """Raise ChallengeError unless the challenge obeys every constraint the generator does."""
    steps = ch.steps
    if not MIN_STEPS <= len(steps) <= MAX_STEPS:
        raise ChallengeError(f"a challenge has {MIN_STEPS}-{MAX_STEPS} steps, not {len(steps)}")
    for a, b in zip(steps, steps[1:]):
        if a.rgb == b.rgb:
            raise ChallengeError("two neighbouring steps have the same colour")
        if b.t < a.t + a.duration - 1e-6:
            raise ChallengeError("steps overlap")
    for s in steps:
        if not MIN_STEP_S - 1e-6 <= s.duration <= MAX_STEP_S + 1e-6:
            raise ChallengeError(f"step duration {s.duration} s is outside {MIN_STEP_S}-{MAX_STEP_S} s")
    if ch.end - ch.start > MAX_TOTAL_S + 1e-6:
        raise ChallengeError(f"the challenge lasts {ch.end - ch.start:.2f} s, more than {MAX_TOTAL_S} s")
    if flash_count_max(steps) > MAX_FLASHES_PER_S:
        raise ChallengeError("more than 3 luminance flashes in one second")


def from_dict(obj: Any, strict: bool = False) -> Challenge:
    """Parse the JSON object form. Schema errors raise ChallengeError with one clear line.
    ``strict`` also enforces the generator's constraints (durations, flashes)."""
    if not isinstance(obj, dict):
        raise ChallengeError("challenge must be a JSON object")
    if obj.get("version") != VERSION:
        raise ChallengeError(f"challenge version must be {VERSION}")
    raw = obj.get("steps")
    if not isinstance(raw, list) or not raw:
        raise ChallengeError("challenge.steps must be a non-empty list")
    if len(raw) > 64:
        raise ChallengeError("challenge.steps has too many entries")
    steps: list[Step] = []
    for i, s in enumerate(raw):
        if not isinstance(s, dict):
            raise ChallengeError(f"steps[{i}] must be an object")
        t, d, rgb = s.get("t"), s.get("duration"), s.get("rgb")
        if not _is_num(t) or not _is_num(d) or t < 0 or not 0 < d <= 10:
            raise ChallengeError(f"steps[{i}] needs numeric t >= 0 and 0 < duration <= 10")
        if (not isinstance(rgb, list) or len(rgb) != 3
                or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in rgb)):
            raise ChallengeError(f"steps[{i}].rgb must be three integers 0-255")
        steps.append(Step(float(t), float(d), (rgb[0], rgb[1], rgb[2])))
    for i, (a, b) in enumerate(zip(steps, steps[1:])):
        if b.t < a.t - 1e-9:
            raise ChallengeError(f"steps[{i + 1}].t goes back in time")
    ch = Challenge(tuple(steps))
    if strict:
        validate(ch)
    return ch


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load(path: str) -> Challenge:
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except OSError as e:
        raise ChallengeError(f"cannot read challenge file: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ChallengeError(f"challenge file is not valid JSON: {e}") from None
    return from_dict(obj)


def colours_of(ch: Challenge) -> Iterable[tuple[int, int, int]]:
    return (s.rgb for s in ch.steps)
