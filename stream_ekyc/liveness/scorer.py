"""Streaming reflective-liveness scorer: frame records in, physical features and a verdict out.

The scorer keeps a bounded window of per-frame records (``add`` is O(1) and cheap enough
to call on the event loop) and does the numerical work once, in ``finish``, over the
~100 frames around the challenge (a few milliseconds).

The response model, per colour channel c of a face region, in linear light::

    y_c(t) = level(segment) + sum_j beta_cj * S_j(t - lag) + gamma_c * (t - t_mid)

``S(t)`` is the linear RGB the server commanded (zero outside the challenge, where the
page shows its neutral rest colour and a free level per segment — before, during, after —
absorbs it), ``lag`` the display + capture latency searched over 0–1.2 s, and the drift
term absorbs slow ambient and exposure changes. The camera's automatic exposure and white
balance act on the whole frame; dividing the face by the far background cancels them
before the lag search. Everything below is computed from that model:

- ``fit``: share of the face signal's variance (beyond levels and drift) explained by
  *this* session's colours at the best lag (partial R²), and its F statistic;
- ``lag_ms``: the best lag; ``fit_in_window`` vs ``fit_late``: the best fit inside the
  genuine latency window and after it;
- ``rel_skin``: the skin's response to full white relative to its ambient level;
- ``bg_ratio``: the far background's relative response over the face's (a live face near
  the screen gets far more light than a wall behind it; a print or a device filling the
  view responds alike everywhere);
- ``mult_slope``: slope of log relative response against log level across the face's
  darkest to brightest quarters (0 when light multiplies reflectance; −1 when glare adds);
- ``gain_*``: the shape of the response over the face, from a map of how strongly each
  region answers relative to the skin (``gain_map``): a 3D head answers more where it
  faces the screen (nose) than where it turns away (cheeks, sides, chin) and shades its
  neck with its chin; a print, tilted or gently bent, answers like a plane, its neck on
  the same sheet as its face;
- ``spec_*``: log cross-ratios of the 3×3 screen-primary → camera-channel response matrix
  of the skin, invariant to white balance, screen primary strength and distance, so they
  carry only the material's spectral signature.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..challenge import Challenge
from .signals import CHIN_BINS, GRID_COLS, JAW_BINS, MID_BINS, MOUTH_BINS, NECK_BINS, PATCH_U, PATCH_V, FrameRecord

LAG_MAX_S = 1.2
LAG_STEP_S = 0.01
EXPOSURE_SUBSAMPLES = (0.0, 0.01, 0.02)   # a frame integrates light over its exposure time


@dataclass(frozen=True)
class ScorerConfig:
    max_lag_s: float = 0.35          # end of the genuine latency window
    pre_s: float = 0.4               # frames kept before the first step
    # frames used after the last step ends: the genuine window plus a margin, so a live
    # session can answer ~0.6 s after its last colour; responses later than that are
    # still seen on the earlier steps (the lag search runs to 1.2 s)
    post_s: float = 0.6
    max_records: int = 3600          # hard bound on what a session may hold


@dataclass
class Features:
    values: dict[str, float] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)


def _design(times: np.ndarray, ch: Challenge, lags: np.ndarray) -> np.ndarray:
    """Design matrices for every lag, (L, n, 7): [pre, during, post, S_r, S_g, S_b, drift].
    All lags at once: one lookup of the commanded colours per exposure subsample."""
    shifted = times[None, :] - lags[:, None]                     # (L, n), as times - lag
    s = np.zeros(shifted.shape + (3,))
    for d in EXPOSURE_SUBSAMPLES:
        s += np.nan_to_num(ch.linear_rgb_at(shifted - d), nan=0.0)
    s /= len(EXPOSURE_SUBSAMPLES)
    pre = (shifted < ch.start).astype(float)
    post = (shifted >= ch.end).astype(float)
    during = 1.0 - pre - post
    drift = np.broadcast_to(times - 0.5 * (times[0] + times[-1]), shifted.shape)
    return np.concatenate([pre[..., None], during[..., None], post[..., None], s, drift[..., None]], axis=2)


def _solve(x: np.ndarray, y: np.ndarray, ridge: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """Least squares for a batch of design matrices x (L, n, k) and targets y (n, m) →
    coefficients (L, k, m) and residual sums of squares (L, m)."""
    xt = x.transpose(0, 2, 1)                     # batched products by BLAS (einsum: several times slower)
    xtx = xt @ x
    scale = np.trace(xtx, axis1=1, axis2=2)[:, None, None] / x.shape[2]
    xtx = xtx + ridge * scale * np.eye(x.shape[2])[None]
    xty = xt @ y
    beta = np.linalg.solve(xtx, xty)
    resid = y[None] - x @ beta
    return beta, (resid ** 2).sum(axis=1)


def _null_design(x: np.ndarray) -> np.ndarray:
    return x[..., [0, 1, 2, 6]]


class StreamingScorer:
    """Consumes FrameRecords as they arrive; ``finish`` returns the features."""

    def __init__(self, challenge: Challenge, config: ScorerConfig | None = None):
        self.challenge = challenge
        self.config = config or ScorerConfig()
        self.records: deque[FrameRecord] = deque(maxlen=self.config.max_records)
        self.frames_seen = 0

    def add(self, rec: FrameRecord) -> None:
        self.frames_seen += 1
        self.records.append(rec)

    def window(self) -> list[FrameRecord]:
        ch, cfg = self.challenge, self.config
        lo, hi = ch.start - cfg.pre_s, ch.end + cfg.post_s
        return [r for r in self.records if lo <= r.t <= hi]

    def window_closes_at(self) -> float:
        """Video-clock time after which no more frames can change the verdict."""
        return self.challenge.end + self.config.post_s

    def features(self) -> Features:
        return compute_features(self.window(), self.challenge, self.config)


def _rel(beta: np.ndarray) -> float:
    """Response to full white relative to the ambient level, summed over channels.
    ``beta`` is (7, 3): rows are the design columns, columns the camera channels."""
    level = beta[1].sum()
    resp = beta[3:6].sum()
    if level <= 1e-6:
        return float("nan")
    return float(resp / level)


def gain_map(xb: np.ndarray, beta: np.ndarray, skin: np.ndarray,
             regions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How strongly each face region answers the screen, relative to the skin: gain and
    its standard error per region (NaN where a region left the frame).

    With the screen's light adding a relative ``rho_r * S(t)`` to a region's ambient level,
    the region over the skin, both in the same frame, is::

        region_c(t) / skin_c(t)  ∝  1 + gain_r * w_c(t),    w = rho_s S / (1 + rho_s S)

    with ``gain_r = rho_r / rho_s - 1``: 0 where the region answers like the skin, −1
    where it does not answer at all, above 0 where it faces the screen more squarely. The
    camera's exposure and white balance, common to both, cancel in the ratio, and the skin's
    own fitted response ``w`` (at this session's lag) is the regressor, so each region costs
    one parameter shared by the three channels, not nine: a map far less noisy than
    fitting every region's 3×3 colour response on its own.

    ``xb`` (1, n, 7) is the design at the chosen lag, ``beta`` (7, 3) the fit of the skin
    target it was chosen on, ``skin`` (n, 3) and ``regions`` (n, R, 3) linear RGB."""
    n, n_reg = regions.shape[0], regions.shape[1]
    x = xb[0]
    rho = (x[:, 3:6] @ beta[3:6]) / np.maximum(beta[1], 1e-6)          # (n, 3)
    w = rho / np.maximum(1.0 + rho, 1e-3)
    ratio = regions / np.maximum(skin, 1e-6)[:, None, :]
    ok = np.isfinite(ratio).all(axis=(0, 2))
    ratio = np.where(ok[None, :, None], ratio, 1.0)
    ratio = ratio / np.maximum(ratio.mean(axis=0, keepdims=True), 1e-9)
    # one design over the three channels: per channel its segment levels and drift, one
    # shared gain column; rows ordered (frame, channel)
    d = np.zeros((n, 3, 13))
    for c in range(3):
        d[:, c, 3 * c:3 * c + 3] = x[:, :3]
        d[:, c, 9 + c] = x[:, 6]
        d[:, c, 12] = w[:, c]
    d = d.reshape(3 * n, 13)
    y = ratio.transpose(0, 2, 1).reshape(3 * n, n_reg)
    coef, ssr = _solve(d[None], y)
    dtd_inv = np.linalg.pinv(d.T @ d)
    # the slope is relative to the region's level under no screen colour: the fitted
    # during-challenge intercepts (the ratio was scaled to its mean over all frames)
    base = np.maximum(coef[0, [1, 4, 7]].mean(axis=0), 1e-6)
    gain = coef[0, 12] / base
    se = np.sqrt(ssr[0] / max(1, 3 * n - 13) * max(float(dtd_inv[12, 12]), 0.0)) / base
    gain[~ok] = np.nan
    se[~ok] = np.nan
    return gain, se


def _cells(*rc: tuple[int, int]) -> list[int]:
    return [r * GRID_COLS + c for r, c in rc]


# grid cells (row, col): rows v = -0.75 … 1.75 IOD below the eyes, cols u = -1 … 1 IOD
_CENTRE = _cells((2, 2), (3, 2))                          # nose bridge and tip
_CHEEKS = _cells((2, 1), (2, 3), (3, 1), (3, 3))          # beside them
_INNER_RING = _cells(*[(r, c) for r in (1, 2, 3, 4) for c in (1, 3)])
# the face's interior: columns u = -0.5, 0, +0.5 IOD, rows v = -0.25 … 1.25 IOD (forehead
# to mouth); the outer cells can hold hair, ears or the background beyond the cheek
_INNER = _cells(*[(r, c) for r in (1, 2, 3, 4) for c in (1, 2, 3)])
_OUTER_RING = _cells(*[(r, c) for r in (1, 2, 3, 4) for c in (0, 4)])


def _contrast(g: np.ndarray, se: np.ndarray, plus: list[int], minus: list[int]) -> tuple[float, float]:
    """Mean gain over ``plus`` minus over ``minus``, and that difference over its standard error."""
    d = float(np.mean(g[plus]) - np.mean(g[minus]))
    s = float(np.sqrt((se[plus] ** 2).sum() / len(plus) ** 2 + (se[minus] ** 2).sum() / len(minus) ** 2))
    return d, d / max(s, 1e-6)


def _gain_shape(v: dict[str, float], g: np.ndarray, se: np.ndarray, gm: np.ndarray, sem: np.ndarray) -> None:
    """Shape of the response from the gain map (``gain_map``). The contrasts across the
    face are symmetric about the nose, so a plane turned either way (a print) gives none of
    them, and ``gain_relief`` ignores any plane; a print pitched towards or away from the
    screen can mimic part of the vertical ones (chin, neck), which the model weighs with
    the others:

    - ``gain_centre``: nose bridge and tip over the cheeks beside them (a nose faces the
      screen, the cheeks turn away from it);
    - ``gain_outer``: the cheeks over the face's sides (turned further away on a head; on a
      print cut out along the head, the same sheet);
    - ``gain_chin``: the nose tip over the chin below it;
    - ``gain_jaw``: the same drop on the midline's 0.25-IOD bins, which find the peak
      between the nose tip and the mouth wherever the face puts it: the strongest gain
      there over the mean on the chin's front (NaN unless all those bins are in view);
    - ``gain_relief``: how far the face's interior departs from any plane (RMS over the
      twelve interior cells; a print, tilted or gently bent, stays close to one);
    - ``gain_neck``: on the midline, the strongest gain from mouth to chin over the weakest
      under the chin (NaN without the neck in view); ``*_z``: in standard errors."""
    v["gain_centre"], v["gain_centre_z"] = _contrast(g, se, _CENTRE, _CHEEKS)
    v["gain_outer"], v["gain_outer_z"] = _contrast(g, se, _INNER_RING, _OUTER_RING)
    v["gain_chin"], v["gain_chin_z"] = _contrast(g, se, _cells((3, 2)), _cells((5, 2)))
    inner = g[_INNER]
    plane = np.column_stack([np.ones(len(_INNER)), PATCH_U[_INNER], PATCH_V[_INNER]])
    coef, *_ = np.linalg.lstsq(plane, inner, rcond=None)
    v["gain_relief"] = float(np.sqrt(np.mean((inner - plane @ coef) ** 2)))
    mouth, jaw = gm[MOUTH_BINS], gm[JAW_BINS]
    v["gain_jaw"] = (float(mouth.max() - jaw.mean()) if np.isfinite(mouth).all() and np.isfinite(jaw).all()
                     else float("nan"))
    chin = np.flatnonzero(CHIN_BINS & np.isfinite(gm))
    neck = np.flatnonzero(NECK_BINS & np.isfinite(gm))
    if len(chin) == CHIN_BINS.sum() and len(neck):
        top, low = chin[np.argmax(gm[chin])], neck[np.argmin(gm[neck])]
        v["gain_neck"] = float(gm[top] - gm[low])
        v["gain_neck_z"] = v["gain_neck"] / max(float(np.hypot(sem[top], sem[low])), 1e-6)
    else:
        v["gain_neck"] = v["gain_neck_z"] = float("nan")


def compute_features(win: list[FrameRecord], ch: Challenge, cfg: ScorerConfig) -> Features:
    feats = Features()
    q = feats.quality
    in_ch = [r for r in win if ch.start <= r.t < ch.end + cfg.max_lag_s]
    q["frames_in_challenge"] = len(in_ch)
    q["challenge_s"] = ch.end - ch.start
    with_face = [r for r in in_ch if r.face is not None and r.patches is not None]
    q["face_share"] = len(with_face) / max(1, len(in_ch))
    q["multi_share"] = sum(r.n_faces > 1 for r in in_ch) / max(1, len(in_ch))
    if with_face:
        # motion from detected frames only (a held face has, by construction, not moved)
        seen = [r for r in with_face if r.detected] or with_face
        iods = np.array([r.face.iod for r in seen])
        centres = np.array([r.face.eye_centre for r in seen])
        q["iod_px"] = float(np.median(iods))
        q["motion"] = float(np.percentile(np.linalg.norm(centres - np.median(centres, axis=0), axis=1), 90)
                            / max(q["iod_px"], 1.0))
        q["scale_change"] = float((iods.max() - iods.min()) / max(q["iod_px"], 1.0))
        q["luma"] = float(np.median([r.luma for r in with_face]))
        q["clipped"] = float(np.median([r.clipped for r in with_face]))
        q["crushed"] = float(np.median([r.crushed for r in with_face]))
        boxes = np.array([r.face.box for r in with_face])
        w, h = with_face[0].width, with_face[0].height
        inside = ((boxes[:, 0] >= -0.05 * boxes[:, 2]) & (boxes[:, 1] >= -0.1 * boxes[:, 3])
                  & (boxes[:, 0] + boxes[:, 2] <= w + 0.05 * boxes[:, 2])
                  & (boxes[:, 1] + boxes[:, 3] <= h + 0.1 * boxes[:, 3]))
        q["inside_share"] = float(inside.mean())
    rows = [r for r in win if r.face is not None and r.patches is not None]
    if len(rows) < 12 or q["face_share"] < 0.5:
        return feats
    t = np.array([r.t for r in rows])
    skin = np.array([r.skin for r in rows])
    has_bg = np.array([r.background is not None for r in rows])
    q["background_share"] = float(has_bg.mean())
    bg_ok = q["background_share"] >= 0.8
    if bg_ok:
        # fill the few frames where the head hid the background with the nearest measurement
        idx = np.flatnonzero(has_bg)
        nearest = idx[np.clip(np.searchsorted(idx, np.arange(len(rows))), 0, len(idx) - 1)]
        bg = np.array([rows[i].background for i in nearest])
        ratio_target = skin / np.maximum(bg, 1e-4)
    else:
        bg = None
        ratio_target = skin
    target = ratio_target / np.maximum(ratio_target.mean(axis=0), 1e-6)

    lags = np.arange(0.0, LAG_MAX_S + 1e-9, LAG_STEP_S)
    x = _design(t, ch, lags)                                       # (L, n, 7)
    _, ssr1 = _solve(x, target)
    _, ssr0 = _solve(_null_design(x), target)
    ssr1, ssr0 = ssr1.sum(axis=1), ssr0.sum(axis=1)
    partial = 1.0 - ssr1 / np.maximum(ssr0, 1e-12)
    best = int(np.argmax(partial))
    in_win = lags <= cfg.max_lag_s + 1e-9
    bw = int(np.argmax(np.where(in_win, partial, -np.inf)))
    late = np.where(~in_win, partial, -np.inf)
    n = len(t)
    dof = max(1, 3 * (n - 7))
    v = feats.values
    v["fit"] = float(partial[best])
    v["fit_in_window"] = float(partial[bw])
    v["fit_late"] = float(late.max()) if (~in_win).any() else 0.0
    lag = float(lags[best])
    if 0 < best < len(lags) - 1:   # parabolic refinement of the peak
        a, b, c = partial[best - 1], partial[best], partial[best + 1]
        den = a - 2 * b + c
        if den < 0:
            lag += 0.5 * (a - c) / den * LAG_STEP_S
    v["lag_ms"] = float(lag * 1000.0)
    v["f_stat"] = float(((ssr0[bw] - ssr1[bw]) / 9.0) / max(ssr1[bw] / dof, 1e-12))
    v["noise"] = float(np.sqrt(ssr1[bw] / dof))

    # everything below at the best lag inside the genuine window: the question is whether
    # *on-time* evidence looks like a live face
    xb = x[bw][None]

    def fit(region: np.ndarray) -> np.ndarray:
        beta, _ = _solve(xb, region)
        return beta[0]

    bl, _ = _solve(x[best][None], skin)
    v["rel_best"] = _rel(bl[0])          # relative response at the best lag overall
    beta_skin_raw = fit(skin)
    rel_skin = _rel(beta_skin_raw)
    v["rel_skin"] = rel_skin
    beta_ratio = fit(ratio_target)
    v["rel_ratio"] = _rel(beta_ratio)
    if bg is not None and np.isfinite(rel_skin) and abs(rel_skin) > 1e-6:
        v["bg_ratio"] = float(_rel(fit(bg)) / rel_skin)
    else:
        v["bg_ratio"] = float("nan")

    quart = np.array([r.quartiles for r in rows])                # (n, 4, 3)
    rel_q, lev_q = [], []
    for k in range(quart.shape[1]):
        bq = fit(quart[:, k, :])
        rel_q.append(_rel(bq))
        lev_q.append(bq[1].sum())
    rel_q, lev_q = np.array(rel_q), np.array(lev_q)
    ok = np.isfinite(rel_q) & (rel_q > 1e-4) & (lev_q > 1e-5)
    if ok.sum() >= 3:
        v["mult_slope"] = float(np.polyfit(np.log(lev_q[ok]), np.log(rel_q[ok]), 1)[0])
    else:
        v["mult_slope"] = float("nan")

    patches = np.array([r.patches for r in rows])                # (n, 30, 3)
    nan_mid = np.full((MID_BINS, 3), np.nan)
    mids = np.array([r.midline if r.midline is not None else nan_mid for r in rows])
    g, g_se = gain_map(xb, beta_ratio, skin, np.concatenate([patches, mids], axis=1))
    _gain_shape(v, g[:len(PATCH_U)], g_se[:len(PATCH_U)], g[len(PATCH_U):], g_se[len(PATCH_U):])
    # spectral signature of the skin: response matrix B[c, j] = beta_cj / level_c
    lvl = beta_ratio[1]
    bmat = beta_ratio[3:6].T / np.maximum(lvl, 1e-6)[:, None]    # (camera c, primary j)
    eps = 0.02 * max(float(np.abs(bmat).max()), 1e-6)
    bpos = np.maximum(bmat, eps)
    lb = np.log(bpos)
    # double-centred log matrix: removes row (white balance) and column (primary strength) scales
    dc = lb - lb.mean(axis=0, keepdims=True) - lb.mean(axis=1, keepdims=True) + lb.mean()
    for i, name in enumerate(("rg", "gb", "rb")):
        v[f"spec_{name}"] = float(dc[[0, 1, 0][i], [1, 2, 2][i]])
    v["spec_diag"] = float(np.trace(dc))
    return feats
