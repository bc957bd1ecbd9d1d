"""What the cameras of the end-to-end tests look at: a face photo framed like a selfie, a plain
wall, and a Y4M video of the same face under fixed light (for Chromium's file-backed fake
camera). Everything is made here from scikit-image's bundled ``astronaut()`` photo; nothing is
downloaded.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

W, H = 640, 480
# YuNet's box of the astronaut's face in the 512×512 photo (x, y, w, h), measured once with
# stream_ekyc.vision.detector at input width 512 (score 0.93)
ASTRONAUT_FACE = (178.2, 62.9, 89.9, 113.3)
FACE_WIDTH_SHARE = 0.39      # of the frame's width once framed (brief: ~35–45 %)
FACE_CENTRE_Y = 230.0        # a little above the frame's centre, as people hold a phone


@dataclass(frozen=True)
class Framed:
    bgr: np.ndarray                        # 640×480 BGR, uint8
    face: tuple[float, float, float, float]  # face box centre and size in frame pixels: cx, cy, w, h


def framed_face() -> Framed:
    """The astronaut photo cropped around the face and enlarged so that the face's box is
    ``FACE_WIDTH_SHARE`` of the frame's width."""
    from skimage import data

    photo = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    fx, fy, fw, fh = ASTRONAUT_FACE
    s = FACE_WIDTH_SHARE * W / fw
    cx, cy = fx + fw / 2, fy + fh / 2
    # frame = s · (photo − (cx, cy)) + (W/2, FACE_CENTRE_Y)
    m = np.array([[s, 0.0, W / 2 - s * cx], [0.0, s, FACE_CENTRE_Y - s * cy]])
    x0, y0 = -m[0, 2] / s, -m[1, 2] / s
    assert x0 >= 0 and y0 >= 0 and x0 + W / s <= photo.shape[1] and y0 + H / s <= photo.shape[0], \
        "the crop must stay inside the photo"
    bgr = cv2.warpAffine(photo, m, (W, H), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return Framed(bgr, (W / 2, FACE_CENTRE_Y, fw * s, fh * s))


def wall() -> np.ndarray:
    """A plain, slightly uneven grey wall (no face anywhere)."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    level = 150 + 12 * (x / W) - 8 * (y / H)
    rng = np.random.default_rng(3)
    img = np.clip(level[..., None] + rng.normal(0, 2.0, (H, W, 1)), 0, 255)
    return np.repeat(img, 3, axis=2).astype(np.uint8)


def png_data_url(bgr: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", bgr)
    assert ok
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def write_png(path: Path, bgr: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), bgr)
    return path


# --- the replay: the same face under fixed light, as a Y4M file -----------------------------

def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)


def lit_under_neutral_screen(framed: Framed, ambient: float = 0.55, k: float = 0.6,
                             screen: int = 40, background: float = 0.05) -> np.ndarray:
    """The face as the page's synthetic camera would see it while the page shows its neutral
    grey: the same light model (linear albedo · (ambient + k·g(x)·screen)), float BGR 0..255."""
    albedo = _srgb_to_linear(framed.bgr.astype(np.float64) / 255.0)
    cx, cy, fw, fh = framed.face
    rx, ry = 0.6 * fw, 0.6 * fh
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    d = ((x + 0.5 - cx) / rx) ** 2 + ((y + 0.5 - cy) / ry) ** 2
    f = np.where(d < 1, 0.2 + 0.8 * np.sqrt(np.clip(1 - d, 0, 1)), 0.2 * np.exp(-(np.sqrt(d) - 1) / 0.15))
    g = background + (1 - background) * f
    light = ambient + k * g * float(_srgb_to_linear(np.array(screen / 255.0)))
    return _linear_to_srgb(albedo * light[..., None]) * 255.0


def write_replay_y4m(path: Path, framed: Framed, seconds: float = 4.0, fps: int = 30,
                     noise: float = 1.5, sway_px: float = 1.5, seed: int = 7) -> Path:
    """A YUV4MPEG2 file (640×480, ``fps``, 4:2:0) of the face under fixed light, with sensor
    noise and a slight sway of the head (sub-pixel to ``sway_px``)."""
    base = lit_under_neutral_screen(framed)
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fps))
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{W} H{H} F{fps}:1 Ip A1:1 C420\n".encode("ascii"))
        for i in range(n):
            phase = 2 * np.pi * i / n          # one slow sway per loop: the loop joins smoothly
            dx, dy = sway_px * np.sin(phase), 0.5 * sway_px * np.sin(2 * phase)
            m = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])
            img = cv2.warpAffine(base.astype(np.float32), m, (W, H), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT)
            img = np.clip(img + rng.normal(0.0, noise, img.shape), 0, 255).astype(np.uint8)
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


# --- a simulated bona fide applicant, as linear light maps for the synthetic camera ----------

# A still applicant (no drift, tremor, nod or shake), a locked exposure and white balance, no
# flicker: the page's synthetic camera cannot move a 3-D head, and its frames must be a pure
# function of the colour on screen.
STILL = dict(size=[W, H], drift_px_s=0.0, shake_px=0.0, hand_held=False, ae_mode="locked",
             wb_mode="fixed", flicker_depth=0.0, ambient_drift_per_s=0.0,
             ambient_wobble=[0.0, 2.0, 0.0], tremor=[[0.0, 1.0, 0.0, 0.0]] * 3,
             roll_wobble_deg=[0.0, 0.2, 0.0], nod=[0.0, 0.4, 0.0, "pitch"], readout_s=0.0,
             exposure_control=False)   # the real page sets the synthetic camera's exposure


@dataclass(frozen=True)
class LightMaps:
    """What a camera sees of a scene, linear in the light on screen: the frame in linear RGB
    (0..1, after the camera's gain and white balance) is
    ``maps[0] + maps[1]·R + maps[2]·G + maps[3]·B`` with (R, G, B) the screen's colour in
    linear light."""
    maps: np.ndarray                      # (4, H, W, 3) float32, RGB
    face: tuple[float, float, float, float]   # face box centre and size in frame pixels
    photo: str
    ambient_ratio: float

    def to_bytes(self) -> bytes:
        """Per pixel 12 little-endian float32: ambient RGB, then the R, G, B primaries' RGB."""
        return np.ascontiguousarray(self.maps.transpose(1, 2, 0, 3), dtype="<f4").tobytes()

    def frame(self, screen_rgb: tuple[int, int, int]) -> np.ndarray:
        """The noiseless frame (BGR uint8) while the screen shows ``screen_rgb`` (sRGB)."""
        lin = _srgb_to_linear(np.asarray(screen_rgb, np.float64) / 255.0)
        img = self.maps[0] + np.tensordot(lin, self.maps[1:], axes=(0, 0))
        return (_linear_to_srgb(img)[..., ::-1] * 255.0 + 0.5).astype(np.uint8)


def simulated_bona_fide(seed: int, photo: str | None = None, **overrides: Any) -> LightMaps:
    """The light maps of ``benchmarks/simulate.py``'s bona fide session ``seed`` held still
    (with ``photo``, one of the simulator's face photos, as the face's reflectance, and any
    other simulator ``overrides``): the
    same 3-D head, spectral skin, screen, ambient, far background and camera as the
    accuracy benchmark renders, at the converged exposure of its first frame."""
    import sys

    root = Path(__file__).resolve().parents[2]
    if str(root / "benchmarks") not in sys.path:
        sys.path.insert(0, str(root / "benchmarks"))
    import simulate

    s = simulate.Session("bona_fide", seed, dict(STILL, **({"photo": photo} if photo else {}), **overrides))
    maps, first = s.still_light_maps()
    meta = s.meta()
    x0, y0, x1, y1 = meta["face_region_px"]
    lm = LightMaps(maps, ((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), meta["photo"],
                   float(meta["ambient_ratio"]))
    # the maps reproduce the simulator's own first frame (noise aside)
    rest = tuple(int(v) for v in s.p["rest_rgb"])
    diff = np.abs(lm.frame(rest).astype(np.int16) - first.astype(np.int16))
    assert float(np.median(diff)) <= 3.0, float(np.median(diff))
    return lm
