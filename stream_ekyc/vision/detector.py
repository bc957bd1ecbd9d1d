"""YuNet face detector (OpenCV Zoo ``face_detection_yunet_2023mar``) on onnxruntime.

The published graph has a fixed 1x3x640x640 input, which costs far more than a liveness
frame needs. Its only shape-dependent ops are Reshape nodes whose targets are
``[1, -1, C]`` and two nearest-neighbour Resize nodes with constant 2x *scales*, so the
graph itself is size-agnostic: only the declared input/output dims (and the stored
intermediate ``value_info`` shapes) pin it to 640. :func:`dynamic_model_path` rewrites
those declarations to symbolic dims once, checks that nothing else bakes the size in,
and caches the result next to the source model, keyed by the source's sha256. The
derived model runs at any input whose sides are multiples of 32.

Decoding follows OpenCV's ``cv::FaceDetectorYN`` (objdetect/src/face_detect.cpp): the
frame is padded bottom/right with zeros to multiples of 32, fed as BGR float32 0..255
NCHW without mean or scale (``dnn::blobFromImage`` defaults), and each stride's anchors
are decoded row-major on the padded grid. Non-maximum suppression runs on the
integer-truncated boxes as OpenCV does. One difference: OpenCV passes ``top_k`` to
``NMSBoxes``, where it caps the *candidates* entering suppression (about eight anchors
fire per face, so a cap of 20 can hide a third face); here every candidate is
suppressed and ``top_k`` caps the faces returned. Whenever OpenCV's candidate list is
not truncated the results are identical.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stream_ekyc import models
from stream_ekyc._local import ProcessWide, atomic_write

STRIDES = (8, 16, 32)
DIVISOR = 32
MAX_BILINEAR_REDUCTION = 4.0  # larger reductions use cv2.INTER_AREA
OUTPUT_NAMES = tuple(f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in STRIDES)
_INPUT_NAME = "input"
_DERIVED_TAG = "stream_ekyc.dynamic_from_sha256"


# --------------------------------------------------------------------------------------
# Model derivation: fixed 640x640 -> symbolic H x W
# --------------------------------------------------------------------------------------

def _make_dynamic(model, source_sha256: str):
    """Return a copy of the YuNet ModelProto with symbolic spatial dims.

    Raises ModelError when the graph contains something that ties it to one size.
    """
    import onnx
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    if [i.name for i in g.input if i.name not in {t.name for t in g.initializer}] != [_INPUT_NAME]:
        raise models.ModelError("yunet: unexpected graph inputs")
    if sorted(o.name for o in g.output) != sorted(OUTPUT_NAMES):
        raise models.ModelError("yunet: unexpected graph outputs")

    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(a.t)
    for node in g.node:
        if node.op_type == "Reshape":
            shape = consts.get(node.input[1])
            # [1, -1, C]: batch 1, anchors inferred, C channels -> independent of H, W.
            if shape is None or shape.ndim != 1 or len(shape) != 3 or shape[1] != -1 or shape[0] != 1:
                raise models.ModelError(f"yunet: Reshape {node.name} bakes a fixed shape ({shape})")
        elif node.op_type in ("Resize", "Upsample"):
            # sizes (4th input of Resize) would pin the output size; scales do not
            if node.op_type == "Resize" and len(node.input) > 3 and node.input[3]:
                raise models.ModelError(f"yunet: Resize {node.name} uses fixed output sizes")
            scales_name = node.input[2] if node.op_type == "Resize" else node.input[1]
            if scales_name not in consts:
                raise models.ModelError(f"yunet: Resize {node.name} has non-constant scales")
        elif node.op_type in ("Shape", "Slice", "Expand", "ConstantOfShape", "Tile",
                              "Gather", "Flatten", "Squeeze", "Unsqueeze", "Concat"):
            raise models.ModelError(f"yunet: unexpected shape-dependent op {node.op_type} ({node.name})")

    del g.value_info[:]  # intermediate shapes were recorded for 640x640
    dims = g.input[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise models.ModelError("yunet: input is not NCHW")
    for i, name in ((2, "H"), (3, "W")):
        dims[i].ClearField("dim_value")
        dims[i].dim_param = name
    for o in g.output:
        d = o.type.tensor_type.shape.dim[1]
        d.ClearField("dim_value")
        d.dim_param = "N" + o.name.rsplit("_", 1)[1]  # N8/N16/N32: anchors per stride

    del m.metadata_props[:]
    entry = m.metadata_props.add()
    entry.key, entry.value = _DERIVED_TAG, source_sha256
    onnx.checker.check_model(m, full_check=True)
    return m


def _check_runs_dynamic(path: Path) -> None:
    """Run the derived model at two sizes and check the anchor counts."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    for h, w in ((128, 160), (96, 224)):
        outs = sess.run(list(OUTPUT_NAMES), {_INPUT_NAME: np.zeros((1, 3, h, w), np.float32)})
        for name, out in zip(OUTPUT_NAMES, outs):
            s = int(name.rsplit("_", 1)[1])
            if out.shape[1] != (h // s) * (w // s):
                raise models.ModelError(f"yunet: derived model gives {name} {out.shape} at {h}x{w}")


def _derived_is_valid(path: Path, source_sha256: str) -> bool:
    import onnx

    try:
        m = onnx.load(str(path))
    except Exception:
        return False
    tags = {p.key: p.value for p in m.metadata_props}
    dims = m.graph.input[0].type.tensor_type.shape.dim if m.graph.input else []
    return (tags.get(_DERIVED_TAG) == source_sha256 and len(dims) == 4
            and dims[2].dim_param == "H" and dims[3].dim_param == "W")


_derive_lock = threading.Lock()


def dynamic_model_path(source: Path | None = None) -> Path:
    """Path of the symbolic-size YuNet derived from ``source`` (default: the cached model).

    Written once, atomically, into ``models.cache_dir()`` as
    ``face_detection_yunet_2023mar.dyn-<first 16 hex of source sha256>.onnx``.
    """
    import onnx

    if source is None:
        source = models.ensure("yunet")
        sha = models.MODELS["yunet"].sha256  # ensure() has verified it
    else:
        source = Path(source)
        sha = models.sha256_of(source)
    target_dir = models.cache_dir()
    target = target_dir / f"{Path(models.MODELS['yunet'].member).stem}.dyn-{sha[:16]}.onnx"
    with _derive_lock:
        if target.exists() and _derived_is_valid(target, sha):
            return target
        derived = _make_dynamic(onnx.load(str(source)), sha)
        target_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(target, derived.SerializeToString(), check=_check_runs_dynamic, mode=0o644)
    return target


# --------------------------------------------------------------------------------------
# Detector
# --------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Face:
    box: tuple[float, float, float, float]  # x, y, w, h in the caller's image pixels
    landmarks: np.ndarray  # (5, 2) float32: right eye, left eye, nose tip, right/left mouth corner
    score: float


@dataclass(frozen=True)
class Letterbox:
    """How a caller's frame was mapped onto the network input."""

    image_w: int
    image_h: int
    input_w: int  # resized frame, before padding
    input_h: int
    pad_w: int  # network input (multiples of 32)
    pad_h: int

    @property
    def scale_x(self) -> float:
        return self.image_w / self.input_w

    @property
    def scale_y(self) -> float:
        return self.image_h / self.input_h


def _padded(n: int) -> int:
    return ((n - 1) // DIVISOR + 1) * DIVISOR


@dataclass(frozen=True)
class _AnchorGrid:
    counts: tuple[int, ...]    # anchors per stride
    col: np.ndarray            # (n, 1) float32: each anchor's column, row and stride
    row: np.ndarray
    stride: np.ndarray


@functools.lru_cache(maxsize=16)
def _anchor_grid(pad_w: int, pad_h: int) -> _AnchorGrid:
    """The anchors of a padded input, all strides in a row (row-major within a stride)."""
    cols, rows, strides, counts = [], [], [], []
    for s in STRIDES:
        nc, nr = pad_w // s, pad_h // s
        idx = np.arange(nc * nr)
        cols.append(idx % nc)
        rows.append(idx // nc)
        strides.append(np.full(nc * nr, s))
        counts.append(nc * nr)

    def column(parts: list[np.ndarray]) -> np.ndarray:
        a = np.concatenate(parts).astype(np.float32)[:, None]
        a.setflags(write=False)
        return a

    return _AnchorGrid(tuple(counts), column(cols), column(rows), column(strides))


class YuNet:
    """YuNet face detector; one instance is safe to share between threads."""

    def __init__(self, model_path: Path | None = None, score_threshold: float = 0.6,
                 nms_threshold: float = 0.3, top_k: int = 20):
        self.model_path = dynamic_model_path(model_path)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        self._session = models.onnx_session(self.model_path, key=f"yunet-dyn:{self.model_path}")

    # -- stages -------------------------------------------------------------------------

    @staticmethod
    def letterbox(image_shape: tuple[int, ...], input_width: int) -> Letterbox:
        h, w = int(image_shape[0]), int(image_shape[1])
        if h <= 0 or w <= 0:
            raise ValueError(f"empty image {image_shape}")
        if input_width <= 0:
            raise ValueError(f"input_width must be positive, got {input_width}")
        in_w = int(input_width)
        in_h = max(1, int(round(h * in_w / w)))
        return Letterbox(w, h, in_w, in_h, _padded(in_w), _padded(in_h))

    def preprocess(self, image_bgr: np.ndarray, input_width: int = 160) -> tuple[np.ndarray, Letterbox]:
        """Resize (keeping aspect) to ``input_width``, pad to multiples of 32, NCHW float32 BGR."""
        img = np.asarray(image_bgr)
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        elif img.ndim == 3 and img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        elif img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected a BGR image (H, W, 3), got shape {img.shape}")
        lb = self.letterbox(img.shape, input_width)
        if (lb.input_w, lb.input_h) != (lb.image_w, lb.image_h):
            # Bilinear is 5-25x cheaper than INTER_AREA and, measured on the bundled
            # photos, detects and localises as well up to a 4x reduction; beyond that it
            # aliases and misses small faces, so area averaging takes over.
            factor = lb.image_w / lb.input_w
            interp = cv2.INTER_AREA if factor > MAX_BILINEAR_REDUCTION else cv2.INTER_LINEAR
            img = cv2.resize(img, (lb.input_w, lb.input_h), interpolation=interp)
        blob = np.zeros((1, 3, lb.pad_h, lb.pad_w), np.float32)
        blob[0, :, :lb.input_h, :lb.input_w] = img.transpose(2, 0, 1)
        return blob, lb

    def infer(self, blob: np.ndarray) -> list[np.ndarray]:
        """Raw network outputs in ``OUTPUT_NAMES`` order."""
        return self._session.run(list(OUTPUT_NAMES), {_INPUT_NAME: blob})

    def postprocess(self, outputs: list[np.ndarray], lb: Letterbox) -> list[Face]:
        """Decode anchors, suppress overlaps, map to the caller's image coordinates."""
        rows15 = self.decode(outputs, lb.pad_w, lb.pad_h, self.score_threshold)
        rows15 = self.nms(rows15)
        sx, sy = lb.scale_x, lb.scale_y
        faces = []
        for r in rows15:
            lm = r[4:14].reshape(5, 2).copy()
            lm[:, 0] *= sx
            lm[:, 1] *= sy
            lm.setflags(write=False)
            box = (float(r[0] * sx), float(r[1] * sy), float(r[2] * sx), float(r[3] * sy))
            faces.append(Face(box=box, landmarks=lm, score=float(r[14])))
        return faces

    def detect(self, image_bgr: np.ndarray, input_width: int = 160) -> list[Face]:
        """Faces in ``image_bgr``, best score first."""
        blob, lb = self.preprocess(image_bgr, input_width)
        return self.postprocess(self.infer(blob), lb)

    # -- decoding helpers ---------------------------------------------------------------

    @staticmethod
    def decode(outputs: list[np.ndarray], pad_w: int, pad_h: int, score_threshold: float) -> np.ndarray:
        """Anchors scoring >= threshold as OpenCV's rows of 15 floats, in network-input pixels.

        Columns: x, y, w, h, then (x, y) of right eye, left eye, nose tip, right and left
        mouth corner, then score.
        """
        # every stride's anchors in one row (outputs come in OUTPUT_NAMES order: cls, obj,
        # bbox and kps, each for strides 8, 16, 32): a few numpy calls whatever the strides
        grid = _anchor_grid(pad_w, pad_h)
        k = len(STRIDES)

        def stacked(kind: int, width: int) -> np.ndarray:   # kind: 0 cls, 1 obj, 2 bbox, 3 kps
            parts = outputs[kind * k:(kind + 1) * k]
            return np.concatenate([o.reshape(-1, width)[:n] for o, n in zip(parts, grid.counts)])

        score = np.sqrt(np.clip(stacked(0, 1), 0.0, 1.0) * np.clip(stacked(1, 1), 0.0, 1.0))[:, 0]
        idx = np.flatnonzero(score >= score_threshold)
        if idx.size == 0:
            return np.empty((0, 15), np.float32)
        bbox = stacked(2, 4)[idx]
        kps = stacked(3, 10)[idx]
        c, r, stride = grid.col[idx], grid.row[idx], grid.stride[idx]   # (m, 1) float32 each
        cx = (c + bbox[:, 0:1]) * stride
        cy = (r + bbox[:, 1:2]) * stride
        w = np.exp(bbox[:, 2:3]) * stride
        h = np.exp(bbox[:, 3:4]) * stride
        face = np.empty((idx.size, 15), np.float32)
        face[:, 0:1] = cx - w / 2
        face[:, 1:2] = cy - h / 2
        face[:, 2:3] = w
        face[:, 3:4] = h
        face[:, 4:14:2] = (kps[:, 0::2] + c) * stride
        face[:, 5:14:2] = (kps[:, 1::2] + r) * stride
        face[:, 14] = score[idx]
        return face

    def nms(self, rows15: np.ndarray) -> np.ndarray:
        """Suppress overlapping candidates (on integer-truncated boxes, as OpenCV does)."""
        if len(rows15) > 1:
            boxes = np.trunc(rows15[:, :4]).astype(np.float64).tolist()
            keep = cv2.dnn.NMSBoxes(boxes, rows15[:, 14].tolist(), self.score_threshold,
                                    self.nms_threshold)
            keep = np.asarray(keep, dtype=np.int64).reshape(-1)
            rows15 = rows15[keep]
        rows15 = rows15[np.argsort(-rows15[:, 14], kind="stable")]
        if self.top_k > 0:
            rows15 = rows15[: self.top_k]
        return rows15


_detector = ProcessWide(lambda: YuNet())


def get_detector() -> YuNet:
    """The process-wide detector (created on first use, once)."""
    return _detector.get()
