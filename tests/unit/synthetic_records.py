"""Frame records from a simple physical model, for unit tests of the scorer's pure logic.

Not a simulator of video: it produces the per-frame means that signals.py would measure
from a face whose patches reflect the screen (3D shading), with a background far away.
"""

from __future__ import annotations

import random

import numpy as np

from stream_ekyc import challenge as C
from stream_ekyc.liveness.signals import MID_V, PATCH_U, PATCH_V, SKIN_PATCHES, FaceGeometry, FrameRecord


def make_records(seed=0, fps=30.0, lag=0.12, response=0.5, duration=5.0, start=1.0,
                 n_faces=1, face=True, motion=0.0, luma=140.0, clipped=0.0, crushed=0.0,
                 drop_after=None, other_sequence=False, flat=False, additive=False, bg_response=0.03,
                 width=640, height=480, neck_shade=None, neck_visible_to=3.5):
    rng = np.random.default_rng(seed)
    ch = C.generate(start=start, rng=random.Random(seed))
    drive = C.generate(start=start, rng=random.Random(seed + 1000)) if other_sequence else ch
    # per-patch reflectance (dark eyes/brows rows) and screen geometry (dome unless flat)
    albedo = np.where(np.abs(PATCH_V - 0.0) < 0.3, 0.15, 0.5)[:, None] * np.array([1.0, 0.8, 0.7])
    g = np.ones(len(PATCH_U)) if flat else np.clip(1 - 0.35 * PATCH_U ** 2 - 0.12 * (PATCH_V - 0.5) ** 2, 0.2, 1)
    # midline: the lower face faces the screen below the camera and the chin's front turns
    # down from it (a flat sheet: all alike); the neck, set back and shaded by the chin,
    # gets neck_shade of the lower face's light (a flat sheet: all of it)
    if neck_shade is None:
        neck_shade = 1.0 if flat else 0.35
    g_mid = np.select([MID_V < 1.0, MID_V < 1.5, MID_V < 2.0], [0.9, 1.1, 1.1 if flat else 0.8], 1.1 * neck_shade)
    recs = []
    t = 0.0
    iod = 60.0
    while t < duration:
        s = drive.linear_rgb_at(np.array([t - lag]))[0]
        s = np.nan_to_num(s, nan=0.02)
        light = 1.0 + response * s[None, :] * g[:, None]
        if additive:
            patches = albedo * 1.0 + 0.05 * s[None, :] * response
        else:
            patches = albedo * light
        patches = patches * (1 + rng.normal(0, 0.004, patches.shape))
        quart = np.stack([np.sort(patches, axis=0)[k * 7:(k + 1) * 7].mean(axis=0) for k in range(4)])
        bg = np.array([0.3, 0.3, 0.3]) * (1 + bg_response * s) * (1 + rng.normal(0, 0.002, 3))
        dx = motion * iod * np.sin(2 * np.pi * 1.3 * t)
        cx, cy = width / 2 + dx, height / 2
        lm = np.array([[cx - iod / 2, cy], [cx + iod / 2, cy], [cx, cy + 0.6 * iod],
                       [cx - 0.4 * iod, cy + iod], [cx + 0.4 * iod, cy + iod]])
        geom = FaceGeometry((cx - iod, cy - iod, 2 * iod, 2.6 * iod), lm, 0.9)
        present = face and (drop_after is None or t < drop_after)
        rec = FrameRecord(t=t, width=width, height=height, n_faces=(n_faces if present else 0))
        if present:
            rec.face = geom
            rec.patches = patches
            rec.quartiles = quart
            rec.skin = patches[SKIN_PATCHES].mean(axis=0)
            light_mid = 1.0 + response * s[None, :] * g_mid[:, None]
            mid = (0.4 * np.array([1.0, 0.8, 0.7]) * (light_mid if not additive else 1.0 + 0.05 * s[None, :] * response))
            mid = mid * (1 + rng.normal(0, 0.004, mid.shape))
            mid[MID_V > neck_visible_to] = np.nan
            rec.midline = mid
            rec.luma, rec.clipped, rec.crushed, rec.sharpness = luma, clipped, crushed, 200.0
        rec.background = bg
        recs.append(rec)
        t += 1.0 / fps
    return ch, recs


def score(ch, recs):
    from stream_ekyc.liveness.decision import decide
    from stream_ekyc.liveness.scorer import StreamingScorer

    sc = StreamingScorer(ch)
    for r in recs:
        sc.add(r)
    return decide(sc.features())


def features(**kw) -> dict[str, float]:
    """The scorer's feature values for ``make_records(**kw)``."""
    from stream_ekyc.liveness.scorer import StreamingScorer

    ch, recs = make_records(**kw)
    sc = StreamingScorer(ch)
    for r in recs:
        sc.add(r)
    return sc.features().values
