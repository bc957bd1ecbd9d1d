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
- ``dome_u``, ``dome_v``, ``nose``: curvature of the relative response across the face
  (Lambert shading of a 3D head: centre and nose brighter than the sides and the chin)
  after removing any planar ramp that a tilted print would show;
- ``neck_drop``: the response just under the chin over the strongest response on the
  lower face, down the face's midline (a chin shades the neck set back behind it; a
  cut-out print's neck lies on the same sheet as its face); NaN when the neck is not in
  the frame;
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
from .signals import CHIN_BINS, GRID_COLS, MID_BINS, NECK_BINS, PATCH_U, PATCH_V, FrameRecord

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


# the face's interior: columns u = -0.5, 0, +0.5 IOD, rows v = -0.25 … 1.25 IOD (forehead
# to mouth); the outer cells can hold hair, ears or the background beyond the cheek
_INNER_ROWS, _INNER_COLS = (1, 2, 3, 4), (1, 2, 3)
_INNER = np.array([r * GRID_COLS + c for r in _INNER_ROWS for c in _INNER_COLS])


def _inner_shape(v: dict[str, float], rel_p: np.ndarray, se_p: np.ndarray) -> None:
    """3D shape of the response inside the face, with its noise taken into account.

    ``falloff``: centre column (forehead centre, nose, philtrum) over the cheek columns
    either side — a head's surface turns away from the screen towards the cheeks, a flat
    or gently bent sheet does not; ``falloff_z`` is the same difference in units of its
    standard error, so a noisy session cannot fake it; ``planar_chi2``: how far the
    interior departs from any plane (a tilted print is a plane), per degree of freedom."""
    rel, se = rel_p[_INNER], np.maximum(se_p[_INNER], 1e-6)
    mean = float(np.mean(rel))
    grid = rel.reshape(len(_INNER_ROWS), len(_INNER_COLS))
    sgrid = se.reshape(grid.shape)
    centre, sides = grid[:, 1].mean(), grid[:, [0, 2]].mean()
    se_diff = float(np.sqrt((sgrid[:, 1] ** 2).sum() / 16 + (sgrid[:, [0, 2]] ** 2).sum() / 64))
    v["falloff"] = float((centre - sides) / mean) if mean > 1e-3 else 0.0
    v["falloff_z"] = float((centre - sides) / se_diff)
    u = PATCH_U[_INNER]
    w = PATCH_V[_INNER]
    plane = np.column_stack([np.ones_like(u), u, w]) / se[:, None]
    coef, *_ = np.linalg.lstsq(plane, rel / se, rcond=None)
    resid = rel / se - plane @ coef
    v["planar_chi2"] = float((resid ** 2).sum() / (len(rel) - 3))


def _neck_drop(rows: list[FrameRecord], xb: np.ndarray, bg: np.ndarray | None) -> float:
    """Lowest (3-bin smoothed) relative response under the chin over the highest on the
    lower face, down the midline, at the in-window lag; NaN without the neck in view."""
    nan = np.full((MID_BINS, 3), np.nan)
    mids = np.array([r.midline if r.midline is not None else nan for r in rows])   # (n, bins, 3)
    ok = np.isfinite(mids).all(axis=(0, 2))
    if not ok[CHIN_BINS].all() or (ok & NECK_BINS).sum() < 1:
        return float("nan")
    sel = np.flatnonzero(ok)
    y = mids[:, sel, :]
    if bg is not None:
        y = y / np.maximum(bg, 1e-4)[:, None, :]
    y = y / np.maximum(y.mean(axis=0, keepdims=True), 1e-6)
    beta, _ = _solve(xb, y.reshape(len(rows), -1))
    beta = beta[0].reshape(7, len(sel), 3)
    level = beta[1].sum(axis=1)
    rel = np.full(MID_BINS, np.nan)
    rel[sel] = beta[3:6].sum(axis=(0, 2)) / np.maximum(level, 1e-9)
    smooth = rel.copy()
    for i in range(1, MID_BINS - 1):
        w = rel[i - 1:i + 2]
        if np.isfinite(w).all():
            smooth[i] = w.mean()
    top = float(np.max(smooth[CHIN_BINS]))
    if not np.isfinite(top) or top <= 1e-4:
        return float("nan")
    return float(np.nanmin(smooth[NECK_BINS & ok]) / top)


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
    p_beta, p_ssr = _solve(xb, patches.reshape(n, -1))
    p_beta = p_beta[0].reshape(7, -1, 3)
    lev_p = p_beta[1].sum(axis=1)
    rel_p = p_beta[3:6].sum(axis=(0, 2)) / np.maximum(lev_p, 1e-6)
    # standard error of each patch's relative response: Var(sum of the colour betas) per
    # channel is sigma_c^2 * a'(X'X)^-1 a with a selecting the three colour columns
    xtx_inv = np.linalg.pinv(xb[0].T @ xb[0])
    a = np.zeros(7)
    a[3:6] = 1.0
    sigma2 = p_ssr[0].reshape(-1, 3) / max(1, n - 7)
    se_p = np.sqrt(sigma2.sum(axis=1) * float(a @ xtx_inv @ a)) / np.maximum(lev_p, 1e-6)
    _inner_shape(v, rel_p, se_p)
    face_cells = (PATCH_U ** 2 / 1.15 ** 2 + (PATCH_V - 0.5) ** 2 / 1.45 ** 2) <= 1.0
    mean_rel = float(np.mean(rel_p[face_cells]))
    if mean_rel > 1e-3 and face_cells.sum() >= 8:
        u, vv = PATCH_U[face_cells], PATCH_V[face_cells] - 0.5
        r = rel_p[face_cells] / mean_rel
        plane = np.column_stack([np.ones_like(u), u, vv])
        a = np.column_stack([plane, u ** 2, vv ** 2])
        coef, *_ = np.linalg.lstsq(a, r, rcond=None)
        v["dome_u"] = float(-coef[3])
        v["dome_v"] = float(-coef[4])
        pc, *_ = np.linalg.lstsq(plane, r, rcond=None)
        v["tilt"] = float(np.hypot(pc[1], pc[2]))
        v["nonplanar"] = float(np.sqrt(np.mean((r - plane @ pc) ** 2)))
        # nose tip cell (row 3, col 2) against the outer cheek cells of the same rows
        nose = rel_p[3 * GRID_COLS + 2]
        sides = rel_p[[2 * GRID_COLS + 0, 2 * GRID_COLS + 4, 3 * GRID_COLS + 0, 3 * GRID_COLS + 4]].mean()
        v["nose"] = float((nose - sides) / mean_rel)
        v["flatness"] = float(np.std(r))
    v["neck_drop"] = _neck_drop(rows, xb, bg)
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
