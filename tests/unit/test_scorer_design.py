"""The scorer's design matrices, built for all lags at once, equal the per-lag construction."""

from __future__ import annotations

import random

import numpy as np

from stream_ekyc import challenge as C
from stream_ekyc.liveness.scorer import EXPOSURE_SUBSAMPLES, LAG_MAX_S, LAG_STEP_S, _design


def _rows_one_lag(times: np.ndarray, ch: C.Challenge, lag: float) -> np.ndarray:
    """The reference: one lag at a time, as the scorer built it before."""
    s = np.zeros((len(times), 3))
    for d in EXPOSURE_SUBSAMPLES:
        s += np.nan_to_num(ch.linear_rgb_at(times - lag - d), nan=0.0)
    s /= len(EXPOSURE_SUBSAMPLES)
    shifted = times - lag
    pre = (shifted < ch.start).astype(float)
    post = (shifted >= ch.end).astype(float)
    during = 1.0 - pre - post
    drift = times - 0.5 * (times[0] + times[-1])
    return np.column_stack([pre, during, post, s, drift])


def test_all_lags_at_once_give_the_same_numbers_to_the_bit():
    rng = random.Random(5)
    lags = np.arange(0.0, LAG_MAX_S + 1e-9, LAG_STEP_S)
    for k in range(10):
        ch = C.generate(start=1.0 + 0.013 * k, rng=rng)
        times = np.sort(np.random.default_rng(k).uniform(0.4, ch.end + 0.8, 90 + k))
        ref = np.stack([_rows_one_lag(times, ch, lag) for lag in lags])
        assert np.array_equal(_design(times, ch, lags), ref)
