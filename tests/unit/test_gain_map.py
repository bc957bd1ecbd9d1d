"""The response-gain map: each face region's answer to the screen relative to the skin's,
recovered from frame means, blind to the camera's exposure and white balance."""

from __future__ import annotations

import random

import numpy as np

from stream_ekyc import challenge as C
from stream_ekyc.liveness.scorer import _design, _solve, gain_map

from .synthetic_records import features


def _session(rho_regions: np.ndarray, rho_skin: float = 0.4, lag: float = 0.1, exposure=None,
             noise: float = 0.0, seed: int = 0):
    """Frame means of the skin and of regions answering the screen with relative strengths
    ``rho_regions`` (their screen light over their ambient), a far background the screen
    does not reach, all multiplied by a per-frame camera gain ``exposure(t, s)``."""
    rng = np.random.default_rng(seed)
    ch = C.generate(start=1.0, rng=random.Random(seed))
    t = np.arange(0.0, ch.end + 0.9, 1 / 15)
    s = np.nan_to_num(ch.linear_rgb_at(t - lag), nan=0.02)                # (n, 3) screen colour
    tint = np.array([1.0, 0.8, 0.65])                                     # skin colour
    gain = np.ones((len(t), 3)) if exposure is None else exposure(t, s)
    skin = tint * (1 + rho_skin * s) * gain
    regions = (0.5 * tint * (1 + rho_regions[None, :, None] * s[:, None, :])) * gain[:, None, :]
    bg = 0.3 * gain                      # far away: the screen does not reach it
    if noise:
        skin = skin * (1 + rng.normal(0, noise, skin.shape))
        regions = regions * (1 + rng.normal(0, noise, regions.shape))
    target = skin / bg
    target = target / target.mean(axis=0)
    xb = _design(t, ch, np.array([lag]))
    beta, _ = _solve(xb, target)
    return xb, beta[0], skin, regions


def test_the_gain_is_each_region_answer_over_the_skins_minus_one():
    rho = np.array([0.4, 0.6, 0.2, 0.0, 0.5])
    g, se = gain_map(*_session(rho))
    assert np.allclose(g, rho / 0.4 - 1, atol=0.02)
    assert np.all(se < 0.03)      # without noise, only the model's own approximations


def test_the_cameras_exposure_and_white_balance_cancel():
    rho = np.array([0.4, 0.6, 0.2, 0.0])
    plain, _ = gain_map(*_session(rho))

    def auto(t, s):   # exposure pulled down by bright colours, a white balance that wanders
        lum = s @ np.array([0.2126, 0.7152, 0.0722])
        wb = 1 + 0.05 * np.sin(np.outer(t, [1.0, 2.0, 3.0]))
        return (1 / (1 + 0.5 * lum))[:, None] * wb

    adapted, _ = gain_map(*_session(rho, exposure=auto))
    assert np.allclose(adapted, plain, atol=0.02)


def test_noise_widens_the_standard_error_and_a_region_out_of_frame_is_nan():
    rho = np.array([0.4, 0.6, 0.2])
    xb, beta, skin, regions = _session(rho, noise=0.01, seed=3)
    regions[5, 1, :] = np.nan
    g, se = gain_map(xb, beta, skin, regions)
    assert np.isnan(g[1]) and np.isnan(se[1])
    assert np.all(np.abs(g[[0, 2]] - (rho[[0, 2]] / 0.4 - 1)) < 5 * se[[0, 2]] + 0.02)
    assert np.all(se[[0, 2]] > 0.005)


def test_a_head_has_relief_and_a_sheet_has_none():
    head, sheet = features(seed=1), features(seed=1, flat=True, neck_shade=1.0)
    assert head["gain_outer"] > 0.2 and head["gain_centre"] > 0.05 and head["gain_relief"] > 0.02
    assert head["gain_neck"] > 0.3 and head["gain_jaw"] > 0.1
    for k in ("gain_outer", "gain_centre", "gain_chin", "gain_neck", "gain_jaw"):
        assert abs(sheet[k]) < 0.05, k
    assert sheet["gain_relief"] < 0.02



def test_a_plane_turned_or_tilted_has_no_relief_nor_side_contrasts():
    from stream_ekyc.liveness.scorer import _gain_shape
    from stream_ekyc.liveness.signals import MID_BINS, MID_V, PATCH_U, PATCH_V

    for a, b in ((0.3, 0.0), (-0.2, 0.15), (0.0, -0.25)):
        g = a * PATCH_U + b * PATCH_V
        v: dict[str, float] = {}
        _gain_shape(v, g, np.full(30, 0.02), b * MID_V, np.full(MID_BINS, 0.02))
        assert abs(v["gain_centre"]) < 1e-9 and abs(v["gain_outer"]) < 1e-9 and v["gain_relief"] < 1e-9


def test_the_drop_to_the_chin_on_the_midline_needs_every_bin_in_view():
    from stream_ekyc.liveness.scorer import _gain_shape
    from stream_ekyc.liveness.signals import JAW_BINS, MID_BINS, MOUTH_BINS

    g = np.zeros(30)
    mid = np.where(MOUTH_BINS, 0.5, 0.0)
    mid[np.flatnonzero(MOUTH_BINS)[1]] = 0.7              # the peak, between nose tip and mouth
    mid[JAW_BINS] = [0.1, 0.2]
    v: dict[str, float] = {}
    _gain_shape(v, g, np.full(30, 0.02), mid, np.full(MID_BINS, 0.02))
    assert abs(v["gain_jaw"] - (0.7 - 0.15)) < 1e-9     # the peak over the chin's mean
    mid[np.flatnonzero(JAW_BINS)[-1]] = np.nan            # the frame cuts the chin off
    _gain_shape(v, g, np.full(30, 0.02), mid, np.full(MID_BINS, 0.02))
    assert np.isnan(v["gain_jaw"])
