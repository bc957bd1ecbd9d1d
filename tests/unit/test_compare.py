"""Face comparison: SFace parity with OpenCV, the similarity scale, the dominant-face rule,
degraded copies of one photo match, different people do not, and a non-live verdict never
carries a match (offline and in the live session's result)."""

from __future__ import annotations

import asyncio
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from stream_ekyc import challenge as challenge_mod
from stream_ekyc import compare, idphoto, models
from stream_ekyc.liveness.decision import Verdict
from stream_ekyc.vision import align
from stream_ekyc.vision.detector import Face
from stream_ekyc.vision.embedder import get_embedder

skdata = pytest.importorskip("skimage.data")
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def photos() -> Path:
    return models.photos_dir()


def _jpeg(img: np.ndarray, q: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


# --- the embedder ------------------------------------------------------------------------------

def test_sface_matches_opencv_face_recognizer(astronaut, photos):
    """Same aligned crop, same model: our preprocessing (RGB, 0..255, no mean) gives OpenCV's
    FaceRecognizerSF feature (cosine >= 0.999), and our alignment gives its alignCrop."""
    rec = cv2.FaceRecognizerSF.create(str(models.ensure("sface")), "")
    imgs = [astronaut] + [cv2.imread(str(photos / n)) for n in
                          ("Female_45_2_1_1.jpg", "Male_41_2_5.jpg", "Female_42_1_4_1.jpg")]
    emb = get_embedder()
    for img in imgs:
        t = compare.extract(img)
        row = np.r_[np.asarray(t.box), t.landmarks.ravel(), t.score].astype(np.float32)[None]
        theirs_crop = rec.alignCrop(img, row)
        ours_crop = align.align(img, t.landmarks)
        assert np.abs(theirs_crop.astype(int) - ours_crop.astype(int)).mean() < 0.5
        ref = rec.feature(theirs_crop).ravel()
        ref /= np.linalg.norm(ref)
        assert float(emb.embed_aligned(theirs_crop) @ ref) >= 0.999
        # the channel order matters: BGR fed as if RGB is measurably different
        swapped = emb.embed_aligned(np.ascontiguousarray(theirs_crop[..., ::-1]))
        assert float(swapped @ ref) < 0.99


def test_embedding_is_unit_length(astronaut):
    e = compare.extract(astronaut).embedding
    assert e.shape == (128,) and e.dtype == np.float32
    assert abs(float(np.linalg.norm(e)) - 1.0) < 1e-5


# --- the similarity scale ----------------------------------------------------------------------

def test_similarity_scale_anchors_and_monotonic():
    for cos, sim in compare.ANCHORS:
        assert compare.cosine_to_similarity(cos) == pytest.approx(sim)
        assert compare.similarity_to_cosine(sim) == pytest.approx(cos)
    assert [s for _, s in compare.ANCHORS] == [0, 50, 60, 70, 80, 100]
    cs = np.linspace(-1, 1, 401)
    sims = [compare.cosine_to_similarity(c) for c in cs]
    assert all(b >= a for a, b in zip(sims, sims[1:]))
    assert compare.cosine_to_similarity(5.0) == 100.0 and compare.cosine_to_similarity(-5.0) == 0.0


def test_match_result_and_threshold():
    a = np.zeros(128, np.float32)
    a[0] = 1
    b = np.zeros(128, np.float32)
    b[1] = 1                                        # cosine 0
    r = compare.match_result(a, a)
    assert r == {"similarity": 100.0, "is_match": True, "threshold": 70.0}
    r = compare.match_result(a, b)
    assert r["is_match"] is False and 0 < r["similarity"] < 50
    assert compare.match_result(a, b, threshold=0)["is_match"] is True
    for bad in (-1, 100.5, float("nan"), True, "70", None):
        with pytest.raises(ValueError):
            compare.match_result(a, b, threshold=bad)


# --- which face -----------------------------------------------------------------------------------

def _face(x: float, size: float, iod: float | None = None) -> Face:
    iod = size * 0.4 if iod is None else iod
    lm = np.array([[x + size / 2 - iod / 2, 40], [x + size / 2 + iod / 2, 40], [x + size / 2, 55],
                   [x + size / 2 - iod / 2.5, 70], [x + size / 2 + iod / 2.5, 70]], np.float32)
    return Face(box=(x, 10.0, size, size), landmarks=lm, score=0.9)


def test_dominant_face_rule():
    with pytest.raises(compare.FaceError) as e:
        compare.dominant_face([])
    assert e.value.code == "no_face"
    big = _face(0, 100)
    assert compare.dominant_face([_face(300, 60), big]) is big          # 36 % of the area: background
    with pytest.raises(compare.FaceError) as e:
        compare.dominant_face([big, _face(300, 70)])                    # 49 %: comparable
    assert e.value.code == "multiple_faces"
    with pytest.raises(compare.FaceError) as e:
        compare.dominant_face([_face(0, 50, iod=20)])
    assert e.value.code == "face_too_small"


# --- same face, degraded; different people ---------------------------------------------------

def degrade(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """The ways a live frame differs from an ID photo, one at a time or all together."""
    out = img
    if kind in ("scale", "all"):                    # down to 30 px between the eyes
        s = min(1.0, 30.0 / compare.extract(img).iod)
        out = cv2.resize(out, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    if kind in ("rotate", "all"):
        h, w = out.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 9.0, 1.0)
        out = cv2.warpAffine(out, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    if kind in ("pose", "all"):                     # a few degrees of yaw: the far side shrinks
        h, w = out.shape[:2]
        src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
        dst = np.float32([[0, 0], [w * 0.97, h * 0.04], [w * 0.97, h * 0.96], [0, h]])
        out = cv2.warpPerspective(out, cv2.getPerspectiveTransform(src, dst), (w, h),
                                  borderMode=cv2.BORDER_REPLICATE)
    if kind in ("tint", "all"):                     # white balance and a screen colour cast
        out = np.clip(out.astype(np.float32) * [1.15, 0.95, 0.8] * 0.85, 0, 255).astype(np.uint8)
    if kind in ("print_scan", "all"):               # print-and-scan: blur, paler, noisy
        f = cv2.GaussianBlur(out.astype(np.float32), (0, 0), 1.1)
        f = f * 0.85 + 20 + rng.normal(0, 4, f.shape)
        out = np.clip(f, 0, 255).astype(np.uint8)
    if kind in ("jpeg", "all"):
        out = _jpeg(out, 30 if kind == "all" else 45)
    return out


@pytest.mark.parametrize("kind", ["scale", "rotate", "pose", "tint", "print_scan", "jpeg", "all"])
def test_same_photo_under_degradation_matches(astronaut, photos, kind):
    rng = np.random.default_rng(7)
    for img in (astronaut, cv2.imread(str(photos / "Male_41_2_5.jpg")),
                cv2.imread(str(photos / "Female_45_2_1_1.jpg"))):
        r = compare.compare_images(img, degrade(img, kind, rng))
        assert r["is_match"] is True and r["similarity"] >= 75, (kind, r)


def test_two_photos_of_one_person_match(photos):
    a = cv2.imread(str(photos / "Male_41_2_5.jpg"))
    b = cv2.imread(str(photos / "Male_41_7.jpg"))
    assert compare.compare_images(a, b)["is_match"] is True


@pytest.mark.parametrize("a, b", [
    ("astronaut", "Female_45_2_1_1.jpg"),            # two women
    ("Male_41_2_5.jpg", "Male_43_1_2_1.jpg"),        # two men of a similar age
    ("Female_42_1_4_1.jpg", "Female_44_4.jpg"),
    ("Male_45_2_2_1.jpg", "Male_40_1_2.jpg"),
])
def test_different_people_do_not_match(astronaut, photos, a, b):
    load = lambda n: astronaut if n == "astronaut" else cv2.imread(str(photos / n))  # noqa: E731
    r = compare.compare_images(load(a), load(b))
    assert r["is_match"] is False and r["similarity"] < 60, r
    # nor when one side is degraded like a live frame
    r = compare.compare_images(load(a), degrade(load(b), "all", np.random.default_rng(1)))
    assert r["is_match"] is False, r


def test_no_usable_face_raises(astronaut):
    with pytest.raises(compare.FaceError) as e:
        compare.extract(np.full((240, 320, 3), 128, np.uint8))
    assert e.value.code == "no_face"
    with pytest.raises(compare.FaceError) as e:
        compare.extract(np.hstack([astronaut, astronaut]))
    assert e.value.code == "multiple_faces"


# --- a non-live verdict never carries a match --------------------------------------------------

@pytest.fixture(scope="module")
def still_video(tmp_path_factory, astronaut) -> tuple[Path, challenge_mod.Challenge]:
    """The astronaut photo held still in front of the camera: a face with no response to the
    screen's colours (a photo replay)."""
    d = tmp_path_factory.mktemp("still")
    path = d / "still.mp4"
    frame = np.full((360, 480, 3), 90, np.uint8)
    face = cv2.resize(astronaut, (300, 300), interpolation=cv2.INTER_AREA)
    frame[30:330, 90:390] = face
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=15)
        st.width, st.height, st.pix_fmt = 480, 360, "yuv420p"
        for _ in range(15 * 9):
            img = np.clip(frame + rng.normal(0, 2, frame.shape), 0, 255).astype(np.uint8)
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    return path, challenge_mod.generate(start=1.0, rng=random.Random(2))


@pytest.fixture(scope="module")
def astronaut_id(astronaut) -> idphoto.IdPhoto:
    ok, buf = cv2.imencode(".jpg", astronaut)
    return idphoto.check(buf.tobytes())


def test_offline_non_live_verdict_has_no_match(still_video, astronaut_id):
    from stream_ekyc.offline import score_video

    path, ch = still_video
    res = score_video(path, ch, id_embedding=astronaut_id.embedding)
    assert res["verdict"] != "live", res["verdict"]
    assert "match" in res and res["match"] is None
    # without an ID photo the key is absent (the score command's output is unchanged)
    assert "match" not in score_video(path, ch)


def test_offline_live_verdict_carries_the_match(still_video, astronaut_id, monkeypatch):
    """The same recording with the decision forced to live: the match is computed from the
    best frame and found (the photo in the video is the ID photo's face)."""
    from stream_ekyc import offline

    path, ch = still_video
    monkeypatch.setattr(offline, "decide", lambda feats: Verdict("live", 0.9, 90, [], 40.0))
    res = offline.score_video(path, ch, id_embedding=astronaut_id.embedding, match_threshold=70)
    assert res["match"]["is_match"] is True and res["match"]["similarity"] >= 80
    assert res["match"]["threshold"] == 70.0


@pytest.mark.parametrize("verdict, has_photo, expect", [
    ("spoof", True, None), ("retry", True, None), ("live", False, None), ("live", True, "match"),
])
def test_live_session_result_carries_match_only_after_live(tmp_path, astronaut, astronaut_id, monkeypatch,
                                                           verdict, has_photo, expect):
    """``LiveSessions._store``: the match is computed (in the executor, from the stored ID
    embedding and the best frame image) for a live verdict only."""
    from aiohttp import web

    from stream_ekyc import live
    from stream_ekyc.api.app import CLOCK, EXECUTOR, MEDIA, METRICS, SETTINGS
    from stream_ekyc.config import Settings
    from stream_ekyc.pipeline import Evidence, PipelineResult
    from stream_ekyc.stores.media import KIND_ID_PHOTO, LocalMediaStore

    stored: dict = {}

    async def fake_set_state(app, sid, state, expected=None, detail=None, result=None):
        stored.update(state=state, result=result)
        return True

    monkeypatch.setattr(live, "set_state", fake_set_state)

    async def run() -> None:
        app = web.Application()
        app[SETTINGS] = Settings(data_dir=tmp_path)
        app[CLOCK] = lambda: 1000.0
        media = LocalMediaStore(tmp_path / "media")
        await media.start()
        app[MEDIA] = media
        app[METRICS] = None
        pool = ThreadPoolExecutor(1)
        app[EXECUTOR] = pool
        sid = "ses_test1"
        if has_photo:
            ok, buf = cv2.imencode(".jpg", astronaut)
            await media.put(sid, KIND_ID_PHOTO, "id_photo.jpg", buf.tobytes(), "image/jpeg", 9000.0)
            await media.put(sid, KIND_ID_PHOTO, idphoto.EMBEDDING_NAME,
                            idphoto.embedding_bytes(astronaut_id.embedding), idphoto.EMBEDDING_CONTENT_TYPE, 9000.0)
        frame = _jpeg(cv2.resize(astronaut, (320, 320)), 70)
        ev = Evidence(best_jpeg=b"jpg", best={"quality": 0.9}, best_image=frame, packet={})
        v = Verdict(verdict, 0.5, 50, [] if verdict == "live" else ["x"], None)
        result = PipelineResult(v, {"live": "passed", "spoof": "failed", "retry": "retry"}[verdict], None,
                                {}, {}, ev)
        try:
            await live.LiveSessions(app)._store(sid, result)
        finally:
            pool.shutdown()
            await media.close()

    asyncio.run(run())
    assert stored["state"] == "done"
    m = stored["result"]["match"]
    if expect is None:
        assert m is None
    else:
        assert m["is_match"] is True and m["similarity"] >= 80 and m["threshold"] == 70.0


# --- the best frame the comparison uses: motion blur counts against a frame --------------------

def test_best_frame_prefers_a_still_face():
    from stream_ekyc.liveness.signals import FaceGeometry, FrameRecord
    from stream_ekyc.offline import BestFrameKeeper
    from stream_ekyc.vision.quality import face_speed, frame_quality

    def rec(t: float, dx: float) -> FrameRecord:
        lm = np.array([[290, 200], [350, 200], [320, 235], [297, 265], [343, 265]], np.float64) + [dx, 0]
        face = FaceGeometry((260 + dx, 150, 120, 150), lm, 0.92)
        return FrameRecord(t=t, width=640, height=480, n_faces=1, face=face, patches=np.zeros((30, 3)),
                           luma=120.0, clipped=0.0, crushed=0.0, sharpness=200.0)

    still, moving = rec(0.1, 0.0), rec(0.1, 60.0)      # 60 px in 0.1 s at IOD 60: 10 IOD/s
    prev = rec(0.0, 0.0)
    assert face_speed(still, prev) == 0.0 and face_speed(moving, prev) == pytest.approx(10.0)
    q_still, comp = frame_quality(still, prev)
    q_moving, comp_m = frame_quality(moving, prev)
    assert comp["motion"] == 0.0 and comp_m["motion"] == 10.0 and q_moving < q_still
    assert {"luma", "clipped", "crushed", "sharpness", "yaw", "pitch", "roll", "iod_px", "centring"} <= set(comp)
    # the keeper: an off-centre face, then the centred face arriving fast (blurred), then the
    # same centred face held still; the still one is kept
    ch = challenge_mod.generate(start=5.0, rng=random.Random(1))
    keeper = BestFrameKeeper(ch)
    for r in (rec(0.0, -60.0), rec(0.1, 0.0), rec(0.2, 0.0)):
        keeper.offer(r)
    assert keeper.best.t == pytest.approx(0.2) and keeper.best.components["motion"] == 0.0


# --- the command line ---------------------------------------------------------------------------

def _cli(*args: str) -> tuple[int, str, str]:
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "stream_ekyc.cli", *args], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def test_cli_compare(tmp_path, astronaut, photos):
    import json

    a = tmp_path / "a.jpg"
    cv2.imwrite(str(a), astronaut)
    b = tmp_path / "b.png"
    cv2.imwrite(str(b), degrade(astronaut, "all", np.random.default_rng(3)))
    code, out, err = _cli("compare", str(a), str(b))
    assert code == 0, err
    res = json.loads(out)
    assert set(res) == {"similarity", "is_match", "threshold"} and res["is_match"] is True
    assert res["threshold"] == 70.0 and 0 <= res["similarity"] <= 100
    code, out, _ = _cli("compare", str(a), str(photos / "Male_41_2_5.jpg"), "--threshold", "0")
    assert code == 0 and json.loads(out)["is_match"] is True and json.loads(out)["threshold"] == 0
    # no usable face, unreadable, missing, bad threshold: exit 2 with one line
    wall = tmp_path / "wall.jpg"
    cv2.imwrite(str(wall), np.full((240, 320, 3), 120, np.uint8))
    (tmp_path / "text.jpg").write_text("not an image")
    for args, needle in (((str(a), str(wall)), "no_face"),
                         ((str(a), str(tmp_path / "text.jpg")), "unsupported_format"),
                         ((str(a), str(tmp_path / "missing.jpg")), "cannot read"),
                         ((str(a), str(b), "--threshold", "150"), "threshold")):
        code, out, err = _cli("compare", *args)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and needle in err, (args, err)


def test_cli_score_with_id_photo(tmp_path, still_video, astronaut):
    import json

    path, ch = still_video
    chf = tmp_path / "ch.json"
    chf.write_text(ch.to_json())
    idp = tmp_path / "id.jpg"
    cv2.imwrite(str(idp), astronaut)
    code, out, err = _cli("score", str(path), "--challenge", str(chf), "--id-photo", str(idp))
    assert code == 0, err
    res = json.loads(out)
    assert res["verdict"] != "live" and res["match"] is None
    small = tmp_path / "small.jpg"
    cv2.imwrite(str(small), cv2.resize(astronaut, (200, 200)))
    code, out, err = _cli("score", str(path), "--challenge", str(chf), "--id-photo", str(small))
    assert code == 2 and out == "" and "face_too_small" in err and len(err.strip().splitlines()) == 1
