"""YuNet detector: symbolic-size graph, decoding parity with cv2.FaceDetectorYN, real photos."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream_ekyc import models
from stream_ekyc.vision import detector as detmod
from stream_ekyc.vision.detector import OUTPUT_NAMES, Face, YuNet, get_detector

skdata = pytest.importorskip("skimage.data")

TOL = 1.5  # px, agreement with OpenCV at the same input size

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


@pytest.fixture(scope="module")
def det() -> YuNet:
    return get_detector()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    files = sorted(models.photos_dir().glob("*.jpg"))
    assert len(files) > 100
    return files[::37]  # a fixed handful spread over the people in the set


def as_row(face: Face) -> np.ndarray:
    return np.r_[np.asarray(face.box, np.float64), face.landmarks.ravel().astype(np.float64)]


def opencv_reference(det: YuNet, image: np.ndarray, input_width: int) -> np.ndarray:
    """cv2.FaceDetectorYN on exactly the resized frame our detector feeds the network,
    mapped back to the caller's image with the same scale: rows (x, y, w, h, 10 landmarks)."""
    blob, lb = det.preprocess(image, input_width)
    resized = np.ascontiguousarray(
        blob[0, :, : lb.input_h, : lb.input_w].transpose(1, 2, 0).astype(np.uint8))
    fd = cv2.FaceDetectorYN.create(str(models.ensure("yunet")), "", (lb.input_w, lb.input_h),
                                   det.score_threshold, det.nms_threshold, 5000)
    _, faces = fd.detect(resized)
    if faces is None:
        return np.zeros((0, 14))
    faces = faces[:, :14].astype(np.float64)
    faces[:, 0::2] *= lb.scale_x
    faces[:, 1::2] *= lb.scale_y
    return faces


def assert_matches_opencv(det: YuNet, image: np.ndarray, input_width: int) -> list[Face]:
    mine = det.detect(image, input_width)
    ref = opencv_reference(det, image, input_width)
    assert len(mine) == len(ref)
    for face, row in zip(mine, ref):
        np.testing.assert_allclose(as_row(face), row, atol=TOL)
    return mine


def assert_plausible(face: Face) -> None:
    x, y, w, h = face.box
    lm = face.landmarks
    assert lm.shape == (5, 2) and lm.dtype == np.float32
    assert w > 0 and h > 0 and 0.6 <= face.score <= 1.0
    r_eye, l_eye, nose, r_mouth, l_mouth = lm
    assert r_eye[0] < l_eye[0] and r_mouth[0] < l_mouth[0]  # subject's right is image left
    assert max(r_eye[1], l_eye[1]) < nose[1] < min(r_mouth[1], l_mouth[1])
    assert r_eye[0] < nose[0] < l_eye[0]
    assert np.all(lm[:, 0] > x) and np.all(lm[:, 0] < x + w)
    assert np.all(lm[:, 1] > y) and np.all(lm[:, 1] < y + h)


# -- the derived model ---------------------------------------------------------------

def test_derived_model_is_symbolic_and_keyed_by_source_hash(det):
    import onnx

    path = det.model_path
    assert path.parent == models.cache_dir()
    assert models.MODELS["yunet"].sha256[:16] in path.name
    m = onnx.load(str(path))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[:2]] == [1, 3]
    assert [d.dim_param for d in dims[2:]] == ["H", "W"]
    for out in m.graph.output:
        assert out.type.tensor_type.shape.dim[1].dim_param
    # nothing in the graph carries a 640-derived shape
    for node in m.graph.node:
        assert node.op_type != "Shape"
    assert not list(path.parent.glob("*.part"))


@pytest.mark.parametrize("h,w", [(128, 160), (256, 320), (96, 224), (480, 640)])
def test_derived_model_runs_at_multiples_of_32(det, h, w):
    outs = det.infer(np.zeros((1, 3, h, w), np.float32))
    for name, out in zip(OUTPUT_NAMES, outs):
        s = int(name.rsplit("_", 1)[1])
        assert out.shape[:2] == (1, (h // s) * (w // s))


def test_derived_model_equals_original_at_640(det, astronaut):
    import onnxruntime as ort

    blob, _ = det.preprocess(cv2.resize(astronaut, (640, 640)), 640)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    fixed = ort.InferenceSession(str(models.ensure("yunet")), so, providers=["CPUExecutionProvider"])
    ref = fixed.run(list(OUTPUT_NAMES), {"input": blob})
    for a, b in zip(det.infer(blob), ref):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_derived_model_written_once_and_repaired(tmp_path, monkeypatch):
    real = models.ensure("yunet")
    monkeypatch.setenv("STREAM_EKYC_MODELS", str(tmp_path))
    src = tmp_path / "src" / "yunet.onnx"
    src.parent.mkdir()
    shutil.copyfile(real, src)
    p1 = detmod.dynamic_model_path(src)
    assert p1.parent == tmp_path and p1.exists()
    assert models.sha256_of(src)[:16] in p1.name
    stat1 = p1.stat().st_mtime_ns
    assert detmod.dynamic_model_path(src) == p1 and p1.stat().st_mtime_ns == stat1  # reused
    p1.write_bytes(p1.read_bytes()[:1000])  # truncated by a crash or a bad disk
    p2 = detmod.dynamic_model_path(src)
    assert p2 == p1 and p2.stat().st_size > 1000
    assert not list(tmp_path.glob("*.part"))
    det = YuNet(model_path=src)
    assert det.model_path == p1
    assert det.detect(np.zeros((120, 160, 3), np.uint8)) == []


def test_rejects_graph_with_baked_reshape():
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(models.ensure("yunet")))
    for init in m.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.int64 and arr.tolist() == [1, -1, 4]:
            init.CopyFrom(numpy_helper.from_array(np.array([1, 8400, 4], np.int64), init.name))
    with pytest.raises(models.ModelError, match="Reshape"):
        detmod._make_dynamic(m, "0" * 64)


# -- detection on real photos -----------------------------------------------------------

@pytest.mark.parametrize("input_width", [160, 224, 320, 512])
def test_astronaut_one_plausible_face_matching_opencv(det, astronaut, input_width):
    faces = assert_matches_opencv(det, astronaut, input_width)
    assert len(faces) == 1
    face = faces[0]
    assert_plausible(face)
    x, y, w, h = face.box
    # the face is in the upper middle of the 512x512 picture, roughly 90 px wide
    assert 150 < x + w / 2 < 260 and 80 < y + h / 2 < 150 and 60 < w < 130


@pytest.mark.parametrize("input_width", [160, 320])
def test_bundled_photos_match_opencv(det, photos, input_width):
    single = 0
    for path in photos:
        img = cv2.imread(str(path))
        assert img is not None, path
        faces = assert_matches_opencv(det, img, input_width)
        scores = [f.score for f in faces]
        assert scores == sorted(scores, reverse=True)
        if len(faces) == 1:
            single += 1
            assert_plausible(faces[0])
            x, y, w, h = faces[0].box
            H, W = img.shape[:2]
            assert -0.1 * W < x < W and -0.1 * H < y < H and w < 1.2 * W
    assert single >= len(photos) - 1


@pytest.mark.parametrize("kind", ["black", "grey", "noise", "white"])
@pytest.mark.parametrize("input_width", [160, 320])
def test_no_face_in_blank_or_noise(det, kind, input_width):
    rng = np.random.default_rng(1234)
    img = {
        "black": np.zeros((480, 640, 3), np.uint8),
        "grey": np.full((480, 640, 3), 128, np.uint8),
        "white": np.full((480, 640, 3), 255, np.uint8),
        "noise": rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
    }[kind]
    assert det.detect(img, input_width) == []


@pytest.mark.parametrize("input_width", [160, 320])
def test_two_faces_side_by_side(det, astronaut, photos, input_width):
    other = cv2.imread(str(photos[0]))
    h = astronaut.shape[0]
    other = cv2.resize(other, (round(other.shape[1] * h / other.shape[0]), h))
    assert len(det.detect(other, 320)) == 1
    frame = np.hstack([astronaut, other])
    faces = assert_matches_opencv(det, frame, input_width)
    assert len(faces) == 2
    centres = sorted(f.box[0] + f.box[2] / 2 for f in faces)
    assert centres[0] < astronaut.shape[1] < centres[1]
    assert faces[0].score >= faces[1].score
    for f in faces:
        assert_plausible(f)


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    return iw * ih / (aw * ah + bw * bh - iw * ih)


def test_any_image_size(det, astronaut):
    ref = det.detect(astronaut, 320)[0]

    odd = cv2.resize(astronaut, (333, 517))  # width 333, height 517: stretched, odd sides
    faces = assert_matches_opencv(det, odd, 160)
    assert len(faces) == 1
    expected = (ref.box[0] * 333 / 512, ref.box[1] * 517 / 512, ref.box[2] * 333 / 512, ref.box[3] * 517 / 512)
    assert iou(faces[0].box, expected) > 0.6

    grey = cv2.cvtColor(cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    faces = assert_matches_opencv(det, grey, 160)
    assert len(faces) == 1 and iou(faces[0].box, ref.box) > 0.7
    # a single-channel array is accepted too and gives the same answer
    faces2d = det.detect(cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY), 160)
    np.testing.assert_allclose(as_row(faces2d[0]), as_row(faces[0]), atol=1e-4)

    hd = np.zeros((1080, 1920, 3), np.uint8)
    big = cv2.resize(astronaut, (1024, 1024))
    hd[28:1052, 700:1724] = big
    for width in (160, 320):
        faces = assert_matches_opencv(det, hd, width)
        assert len(faces) == 1
        x, y, w, h = ref.box
        expected = (700 + x * 2, 28 + y * 2, w * 2, h * 2)
        assert iou(faces[0].box, expected) > 0.6

    for shape in [(1, 1, 3), (7, 5, 3), (31, 33, 3), (32, 32, 3), (2000, 10, 3)]:
        assert det.detect(np.full(shape, 90, np.uint8), 160) == []


def test_rejects_bad_input(det):
    with pytest.raises(ValueError):
        det.detect(np.zeros((0, 10, 3), np.uint8))
    with pytest.raises(ValueError):
        det.detect(np.zeros((10, 10, 3), np.uint8), input_width=0)
    with pytest.raises(ValueError):
        det.detect(np.zeros((10, 10, 5), np.uint8))


def test_face_is_immutable(det, astronaut):
    face = det.detect(astronaut)[0]
    with pytest.raises(AttributeError):
        face.score = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        face.landmarks[0, 0] = 0.0
    assert isinstance(face.box, tuple) and all(isinstance(v, float) for v in face.box)


def test_top_k_caps_faces_after_suppression(astronaut):
    tiles = np.vstack([np.hstack([astronaut] * 3)] * 2)  # six faces
    many = YuNet(top_k=20).detect(tiles, 640)
    assert len(many) == 6
    few = YuNet(top_k=2).detect(tiles, 640)
    assert len(few) == 2
    np.testing.assert_allclose([f.score for f in few], [f.score for f in many[:2]])


# -- concurrency ----------------------------------------------------------------------

def test_shared_instance_is_thread_safe(det, astronaut, photos):
    images = [astronaut] + [cv2.imread(str(p)) for p in photos[:3]]
    widths = [160, 320]
    expected = {(i, w): [as_row(f) for f in det.detect(img, w)] for i, img in enumerate(images) for w in widths}
    jobs = [(i, w) for _ in range(6) for i in range(len(images)) for w in widths]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda job: det.detect(images[job[0]], job[1]), jobs))
    for job, faces in zip(jobs, results):
        got = [as_row(f) for f in faces]
        assert len(got) == len(expected[job])
        for a, b in zip(got, expected[job]):
            np.testing.assert_array_equal(a, b)


def test_get_detector_is_one_instance_across_threads():
    barrier = threading.Barrier(4)

    def grab():
        barrier.wait()
        return get_detector()

    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda _: grab(), range(4)))
    assert all(d is got[0] for d in got) and got[0] is get_detector()


# -- decoding -------------------------------------------------------------------------

def _decode_stride_by_stride(outputs, pad_w, pad_h, threshold):
    """The anchors decoded one stride at a time, in float32 as YuNet's reference does."""
    out = dict(zip(OUTPUT_NAMES, outputs))
    rows = []
    for s in detmod.STRIDES:
        cols = pad_w // s
        n = cols * (pad_h // s)
        score = np.sqrt(np.clip(out[f"cls_{s}"].reshape(-1)[:n], 0, 1) * np.clip(out[f"obj_{s}"].reshape(-1)[:n], 0, 1))
        for i in np.flatnonzero(score >= threshold):
            c, r, st = np.float32(i % cols), np.float32(i // cols), np.float32(s)
            b = out[f"bbox_{s}"].reshape(-1, 4)[i]
            k = out[f"kps_{s}"].reshape(-1, 10)[i]
            w, h = np.exp(b[2]) * st, np.exp(b[3]) * st
            row = [(c + b[0]) * st - w / 2, (r + b[1]) * st - h / 2, w, h]
            for j in range(5):
                row += [(k[2 * j] + c) * st, (k[2 * j + 1] + r) * st]
            rows.append(np.array(row + [score[i]], np.float32))
    return np.array(rows, np.float32).reshape(-1, 15)


@pytest.mark.parametrize("pad_w, pad_h", [(160, 128), (320, 256), (224, 96)])
def test_decode_equals_stride_by_stride(pad_w, pad_h):
    """All strides decoded at once give exactly the stride-by-stride rows, in that order."""
    rng = np.random.default_rng(pad_w + pad_h)
    outputs = []
    for kind, width in (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10)):
        for s in detmod.STRIDES:
            n = (pad_w // s) * (pad_h // s)
            a = rng.uniform(-0.2, 1.1, (1, n, width)) if kind in ("cls", "obj") else rng.normal(0, 1, (1, n, width))
            outputs.append(a.astype(np.float32))
    got = YuNet.decode(outputs, pad_w, pad_h, 0.6)
    want = _decode_stride_by_stride(outputs, pad_w, pad_h, 0.6)
    assert len(got) > 10 and (got[:, 2] > 0).all()
    assert np.array_equal(got, want)
    nothing = [np.zeros_like(o) for o in outputs]
    assert YuNet.decode(nothing, pad_w, pad_h, 0.6).shape == (0, 15)
