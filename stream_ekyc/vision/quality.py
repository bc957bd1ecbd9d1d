"""Frame quality from what the analysis already measured: size, sharpness, pose, exposure,
centring, and motion since the previous analysed frame (motion blur). One score in [0, 1]
with its components kept for the result."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..liveness.signals import FrameRecord


def pose_from_landmarks(lm: np.ndarray) -> tuple[float, float, float]:
    """Approximate (yaw, pitch, roll) in degrees from YuNet's five landmarks."""
    re, le, nose, rm, lmo = lm
    eye_mid = (re + le) / 2.0
    mouth_mid = (rm + lmo) / 2.0
    iod = max(float(np.linalg.norm(le - re)), 1e-6)
    roll = float(np.degrees(np.arctan2(le[1] - re[1], le[0] - re[0])))
    # nose offset from the eye–mouth midline, in IOD: ~0 frontal, ±0.5 at ~45° yaw
    axis = mouth_mid - eye_mid
    axis_len = max(float(np.linalg.norm(axis)), 1e-6)
    normal = np.array([axis[1], -axis[0]]) / axis_len
    yaw = float(np.degrees(np.arcsin(np.clip(np.dot(nose - eye_mid, -normal) / iod * 1.4, -1, 1))))
    # nose height between eyes and mouth: ~0.55 of the way down when level
    frac = float(np.dot(nose - eye_mid, axis) / axis_len ** 2)
    pitch = float(np.clip((frac - 0.55) * 120.0, -60.0, 60.0))
    return yaw, pitch, roll


MOTION_FULL_BLUR = 4.0   # face speed (inter-ocular distances per second) scored 0


def face_speed(rec: FrameRecord, prev: FrameRecord | None) -> float | None:
    """How fast the face moves (eye centre, in inter-ocular distances per second) between the
    previous analysed frame and this one; None without two faces to compare. At 1 IOD/s a
    60 px face smears ~2 px over a 1/30 s exposure."""
    if prev is None or prev.face is None or rec.face is None or rec.t <= prev.t or rec.t - prev.t > 0.5:
        return None
    d = float(np.linalg.norm(rec.face.eye_centre - prev.face.eye_centre))
    return d / max(rec.face.iod, 1.0) / (rec.t - prev.t)


def frame_quality(rec: FrameRecord, prev: FrameRecord | None = None) -> tuple[float, dict[str, Any]]:
    """Quality of one analysed frame (0 when there is no single usable face); ``prev`` is the
    previous analysed frame, for the motion component."""
    if rec.face is None or rec.n_faces != 1 or rec.patches is None:
        return 0.0, {}
    face = rec.face
    yaw, pitch, roll = pose_from_landmarks(face.landmarks)
    x, y, w, h = face.box
    cx, cy = (x + w / 2) / rec.width, (y + h / 2) / rec.height
    comp = {
        "iod_px": round(face.iod, 1),
        "sharpness": round(rec.sharpness, 1),
        "yaw": round(yaw, 1), "pitch": round(pitch, 1), "roll": round(roll, 1),
        "luma": round(rec.luma, 1), "clipped": round(rec.clipped, 4), "crushed": round(rec.crushed, 4),
        "centring": round(float(np.hypot(cx - 0.5, cy - 0.5)), 3),
    }
    speed = face_speed(rec, prev)
    comp["motion"] = None if speed is None else round(speed, 2)
    s_size = min(1.0, face.iod / 60.0)
    s_sharp = min(1.0, rec.sharpness / 150.0)
    s_pose = max(0.0, 1.0 - (abs(yaw) / 35.0) ** 2 - (abs(pitch) / 35.0) ** 2 - (abs(roll) / 30.0) ** 2)
    s_expo = max(0.0, 1.0 - 4.0 * rec.clipped - 3.0 * rec.crushed) * min(1.0, rec.luma / 60.0)
    s_centre = max(0.0, 1.0 - 2.0 * comp["centring"])
    s_det = min(1.0, max(0.0, (face.score - 0.5) / 0.4))
    s_motion = 1.0 if speed is None else max(0.0, 1.0 - speed / MOTION_FULL_BLUR)
    q = (s_size * s_sharp * s_pose * s_expo * s_centre * s_det * s_motion) ** (1 / 7)
    return float(q), comp
