"""SFace face embeddings (OpenCV Zoo ``face_recognition_sface_2021dec``) on onnxruntime.

Preprocessing follows ``cv::FaceRecognizerSF::feature`` (objdetect/src/face_recognize.cpp):
``dnn::blobFromImage(aligned, 1.0, Size(112, 112), Scalar(0, 0, 0), swapRB=true)``, i.e.
the 112x112 aligned crop as **RGB**, float32 0..255, NCHW, no mean and no scale. The raw
128-d output is L2-normalised here (OpenCV normalises inside ``match``), so the cosine
similarity of two embeddings is their dot product.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stream_ekyc import models
from stream_ekyc._local import ProcessWide

from . import align

DIM = 128
_INPUT = "data"
_OUTPUT = "fc1"


class SFace:
    """SFace embedder; one instance is safe to share between threads."""

    def __init__(self, model_path: Path | None = None):
        self.model_path = Path(model_path) if model_path is not None else models.ensure("sface")
        self._session = models.onnx_session(self.model_path, key=f"sface:{self.model_path}")

    # -- stages -------------------------------------------------------------------------

    @staticmethod
    def preprocess(aligned_bgr: np.ndarray) -> np.ndarray:
        """112x112x3 BGR uint8 crops (one, or a stack N x 112 x 112 x 3) → N x 3 x 112 x 112 RGB float32."""
        a = np.asarray(aligned_bgr)
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4 or a.shape[1:] != (align.SIZE, align.SIZE, 3):
            raise ValueError(f"expected aligned {align.SIZE}x{align.SIZE} BGR crops, got {a.shape}")
        return np.ascontiguousarray(a[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32)

    def infer(self, blob: np.ndarray) -> np.ndarray:
        """Raw features, N x 128 (the graph has batch 1: one run per crop)."""
        return np.concatenate([self._session.run([_OUTPUT], {_INPUT: blob[i:i + 1]})[0]
                               for i in range(len(blob))])

    @staticmethod
    def postprocess(raw: np.ndarray) -> np.ndarray:
        """L2-normalised float32 embeddings (N x 128)."""
        raw = np.asarray(raw, np.float64).reshape(-1, DIM)
        norm = np.linalg.norm(raw, axis=1, keepdims=True)
        return (raw / np.maximum(norm, 1e-12)).astype(np.float32)

    # -- public -------------------------------------------------------------------------

    def embed_aligned(self, aligned_bgr: np.ndarray) -> np.ndarray:
        """Embedding (128,) of one aligned crop, or (N, 128) for a stack."""
        a = np.asarray(aligned_bgr)
        out = self.postprocess(self.infer(self.preprocess(a)))
        return out[0] if a.ndim == 3 else out

    def embed(self, image_bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Align the face given by YuNet's five landmarks and embed it: (128,) float32, unit norm."""
        return self.embed_aligned(align.align(image_bgr, landmarks))


_embedder = ProcessWide(lambda: SFace())


def get_embedder() -> SFace:
    """The process-wide embedder (created on first use, once)."""
    return _embedder.get()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings (normalised again, to be safe)."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))
