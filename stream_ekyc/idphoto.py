"""ID photo intake: the relying party's photo of the applicant's ID document portrait.

Checks run cheapest first and nothing is decoded before the header has been read:

1. at most ``MAX_BYTES`` (10 MB)                                       → ``too_large``
2. a JPEG or PNG signature                                             → ``unsupported_format``
3. the size from the header (JPEG SOFn / PNG IHDR), without decoding   → ``corrupt_image``
   when there is none; over ``MAX_SIDE`` px a side or ``MAX_PIXELS`` in
   total (decompression bombs)                                         → ``too_many_pixels``
4. complete: a JPEG ends with EOI, a PNG with its IEND chunk (libjpeg
   would otherwise decode a truncated file and fill the rest with grey) → ``corrupt_image``
5. it decodes                                                          → ``corrupt_image``
6. exactly one dominant face (another face under 40 % of the largest
   one's box area is background, e.g. an ID card's ghost portrait)     → ``no_face``,
                                                                         ``multiple_faces``
7. large enough to compare: ``compare.MIN_IOD_PX`` between the eyes    → ``face_too_small``

The accepted photo's face embedding is returned so that it is computed once.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import cv2
import numpy as np

from . import compare

MAX_BYTES = 10 * 1024 * 1024
MAX_SIDE = 8000
MAX_PIXELS = 40_000_000

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))

#: code -> what it means (the API answers 422 with these, prefixed ``photo_``)
CODES = {
    "too_large": "larger than 10 MB",
    "unsupported_format": "not a JPEG or PNG file",
    "corrupt_image": "truncated or does not decode",
    "too_many_pixels": "over 8000 px a side or 40 megapixels",
    "no_face": "no face found",
    "multiple_faces": "more than one face of comparable size",
    "face_too_small": "the face is too small to compare",
}


class IdPhotoError(ValueError):
    def __init__(self, code: str, message: str | None = None):
        assert code in CODES, code
        super().__init__(message or CODES[code])
        self.code = code


@dataclass(frozen=True)
class IdPhoto:
    format: str                 # "jpeg" | "png"
    width: int
    height: int
    face: compare.FaceTemplate  # the dominant face, with its embedding

    @property
    def extension(self) -> str:
        return "jpg" if self.format == "jpeg" else "png"

    @property
    def content_type(self) -> str:
        return "image/jpeg" if self.format == "jpeg" else "image/png"

    @property
    def embedding(self) -> np.ndarray:
        return self.face.embedding


def _jpeg_segments(data: bytes):
    """(marker, offset) of each JPEG marker segment up to and including the first SOS."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return
        marker = data[i + 1]
        if marker == 0xFF:                          # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:   # markers without a length
            i += 2
            continue
        yield marker, i
        if marker in (0xD9, 0xDA):                  # EOI, or SOS: entropy-coded data follows
            return
        seg_len = struct.unpack(">H", data[i + 2:i + 4])[0]
        if seg_len < 2:
            return
        i += 2 + seg_len


def image_size(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) from a JPEG or PNG header without decoding; None if unreadable."""
    if data.startswith(PNG_MAGIC):
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        w, h = struct.unpack(">II", data[16:24])
        return "png", w, h
    if data.startswith(JPEG_MAGIC):
        for marker, i in _jpeg_segments(data):
            if marker in _JPEG_SOF:
                if i + 9 > len(data):
                    return None
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return "jpeg", w, h
        return None
    return None


def is_complete(fmt: str, data: bytes) -> bool:
    """The image's end marker is present: for a JPEG an EOI after the main image's first scan
    (segments are walked, so an EXIF thumbnail's own EOI does not count); for a PNG the IEND
    chunk. Data after the end (camera trailers) is tolerated."""
    if fmt == "png":
        return _PNG_IEND in data
    sos = next((i for marker, i in _jpeg_segments(data) if marker == 0xDA), None)
    return sos is not None and data.find(b"\xff\xd9", sos) != -1


def check_bytes(data: bytes) -> tuple[str, int, int]:
    """Steps 1–4 (no decoding): (format, width, height) or IdPhotoError."""
    if len(data) > MAX_BYTES:
        raise IdPhotoError("too_large")
    if not (data.startswith(JPEG_MAGIC) or data.startswith(PNG_MAGIC)):
        raise IdPhotoError("unsupported_format")
    size = image_size(data)
    if size is None:
        raise IdPhotoError("corrupt_image", "no readable image header")
    fmt, w, h = size
    if w <= 0 or h <= 0:
        raise IdPhotoError("corrupt_image", "the header gives no size")
    if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
        raise IdPhotoError("too_many_pixels",
                           f"{w}x{h} pixels; at most {MAX_SIDE} a side and "
                           f"{MAX_PIXELS // 1_000_000} megapixels")
    if not is_complete(fmt, data):
        raise IdPhotoError("corrupt_image", "truncated (no end-of-image marker)")
    return fmt, w, h


def decode(data: bytes, fmt: str, w: int, h: int) -> np.ndarray:
    """Step 5: BGR pixels (EXIF orientation applied), or IdPhotoError."""
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise IdPhotoError("corrupt_image")
    if sorted(img.shape[:2]) != sorted((h, w)):   # the header lied about the size
        raise IdPhotoError("corrupt_image", "the pixels do not match the header's size")
    return img


def check(data: bytes) -> IdPhoto:
    """Validate an ID photo and extract its face (CPU work: run it in an executor)."""
    fmt, w, h = check_bytes(data)
    img = decode(data, fmt, w, h)
    try:
        face = compare.extract(img)
    except compare.FaceError as e:
        raise IdPhotoError(e.code, str(e)) from None
    return IdPhoto(fmt, w, h, face)


# --- the embedding kept next to the photo ------------------------------------------------------

EMBEDDING_NAME = "embedding.f32"
EMBEDDING_CONTENT_TYPE = "application/octet-stream"


def embedding_bytes(embedding: np.ndarray) -> bytes:
    """128 little-endian float32 values (512 bytes)."""
    return np.asarray(embedding, dtype="<f4").reshape(-1).tobytes()


def embedding_from_bytes(data: bytes) -> np.ndarray | None:
    """The stored embedding, or None when it is not one."""
    if len(data) != 4 * 128:
        return None
    v = np.frombuffer(data, dtype="<f4").astype(np.float32)
    n = float(np.linalg.norm(v))
    return v / n if np.isfinite(n) and n > 0.5 else None
