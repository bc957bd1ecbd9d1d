"""ID photo intake: every refusal has its code, the bad files are built here, and nothing
over the pixel limits is ever decoded."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from stream_ekyc import compare, idphoto
from stream_ekyc.idphoto import IdPhotoError

skdata = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))


def enc(img: np.ndarray, ext: str = ".jpg", *params: int) -> bytes:
    ok, buf = cv2.imencode(ext, img, list(params))
    assert ok
    return buf.tobytes()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_size(w: int, h: int) -> bytes:
    """A complete, well-formed PNG header (IHDR + tiny IDAT + IEND) claiming w x h pixels."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (idphoto.PNG_MAGIC + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + png_chunk(b"IEND", b""))


def jpeg_with_size(data: bytes, w: int, h: int) -> bytes:
    """A real JPEG whose frame header (SOF) is patched to claim w x h."""
    for marker, i in idphoto._jpeg_segments(data):
        if marker in idphoto._JPEG_SOF:
            return data[:i + 5] + struct.pack(">HH", h, w) + data[i + 9:]
    raise AssertionError("no SOF")


def code_of(data: bytes) -> str:
    with pytest.raises(IdPhotoError) as e:
        idphoto.check(data)
    return e.value.code


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if anything tries to decode pixels."""
    def boom(*a, **k):
        raise AssertionError("decoded an image that should have been refused from its header")
    monkeypatch.setattr(idphoto.cv2, "imdecode", boom)


# --- accepted --------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_accepts_a_portrait_and_returns_its_embedding(astronaut, ext):
    ph = idphoto.check(enc(astronaut, ext))
    assert (ph.format, ph.width, ph.height) == (("jpeg" if ext == ".jpg" else "png"), 512, 512)
    assert ph.content_type == ("image/jpeg" if ext == ".jpg" else "image/png")
    assert ph.embedding.shape == (128,) and abs(float(np.linalg.norm(ph.embedding)) - 1) < 1e-5
    assert ph.face.iod >= compare.MIN_IOD_PX


def test_a_small_background_face_is_ignored(astronaut):
    """An ID card's ghost portrait / a face far behind: under 40 % of the main face's area."""
    canvas = np.full((512, 900, 3), 200, np.uint8)
    canvas[:, :512] = astronaut
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)   # 25 % of the area
    canvas[128:384, 600:856] = small
    ph = idphoto.check(enc(canvas))
    assert ph.face.n_faces == 2 and ph.face.box[0] < 400


def test_trailing_bytes_after_the_image_are_tolerated(astronaut):
    data = enc(astronaut)
    assert idphoto.check(data + b"\x00" * 100).format == "jpeg"
    assert idphoto.check(data + b"camera trailer").format == "jpeg"


def test_embedding_bytes_round_trip(astronaut):
    e = idphoto.check(enc(astronaut)).embedding
    blob = idphoto.embedding_bytes(e)
    assert len(blob) == 512
    assert np.allclose(idphoto.embedding_from_bytes(blob), e, atol=1e-6)
    assert idphoto.embedding_from_bytes(b"\x00" * 512) is None
    assert idphoto.embedding_from_bytes(blob[:-4]) is None


# --- every refusal -----------------------------------------------------------------------------

def test_too_large(no_decoding):
    assert code_of(idphoto.JPEG_MAGIC + b"\x00" * idphoto.MAX_BYTES) == "too_large"


@pytest.mark.parametrize("data", [
    b"", b"GIF89a" + b"\x00" * 100, b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 50,
    b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"\xff\xd8",
])
def test_unsupported_format(data, no_decoding):
    assert code_of(data) == "unsupported_format"


def test_unsupported_format_real_files(astronaut):
    assert code_of(enc(astronaut, ".bmp")) == "unsupported_format"
    assert code_of(enc(astronaut, ".webp")) == "unsupported_format"


@pytest.mark.parametrize("w, h", [(8001, 100), (100, 8001), (7000, 7000), (65535, 65535)])
def test_too_many_pixels_png_refused_from_the_header(w, h, no_decoding):
    assert code_of(png_with_size(w, h)) == "too_many_pixels"


def test_too_many_pixels_jpeg_refused_from_the_header(astronaut, monkeypatch):
    data = jpeg_with_size(enc(astronaut), 9000, 600)
    assert idphoto.image_size(data) == ("jpeg", 9000, 600)
    monkeypatch.setattr(idphoto.cv2, "imdecode", lambda *a: (_ for _ in ()).throw(AssertionError("decoded")))
    assert code_of(data) == "too_many_pixels"
    assert code_of(jpeg_with_size(enc(astronaut), 7999, 7999)) == "too_many_pixels"   # 64 MP


def test_decompression_bomb_png_is_never_decoded(no_decoding):
    """A real, tiny, fully valid PNG of 7000x7000 black pixels (49 MP): refused unread."""
    raw = zlib.compress(b"\x00" * (7000 + 1) * 7000, 9)
    ihdr = struct.pack(">IIBBBBB", 7000, 7000, 8, 0, 0, 0, 0)
    bomb = idphoto.PNG_MAGIC + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", raw) + png_chunk(b"IEND", b"")
    assert len(bomb) < 200_000
    assert code_of(bomb) == "too_many_pixels"


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_truncated_jpeg(astronaut, cut):
    data = enc(astronaut)
    assert code_of(data[:int(len(data) * cut)]) == "corrupt_image"


def test_truncated_jpeg_with_a_complete_exif_thumbnail(astronaut):
    """The thumbnail inside APP1 has its own SOS..EOI; it must not make a cut-off main image
    look complete."""
    thumb = enc(cv2.resize(astronaut, (64, 64)))
    app1 = b"Exif\x00\x00" + thumb
    main = enc(astronaut)
    data = main[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + main[2:]
    assert idphoto.check(data).width == 512                    # complete: accepted
    assert code_of(data[:len(data) // 2]) == "corrupt_image"   # cut in the main scan


def test_truncated_png(astronaut):
    data = enc(astronaut, ".png")
    assert code_of(data[:len(data) // 2]) == "corrupt_image"
    assert code_of(data[:-12]) == "corrupt_image"               # IEND missing


def test_corrupt_but_complete_files(astronaut):
    data = enc(astronaut, ".png")
    # scrambled image data with a proper IEND: libpng's CRC check fails the decode
    i = data.index(b"IDAT") + 40
    bad = data[:i] + bytes(b ^ 0x5A for b in data[i:i + 400]) + data[i + 400:]
    assert code_of(bad) == "corrupt_image"
    # a JPEG with no frame header at all
    assert code_of(idphoto.JPEG_MAGIC + b"\xe0\x00\x10JFIF\x00" + b"\x00" * 9 + b"\xff\xd9") == "corrupt_image"
    # a PNG whose header claims no pixels
    assert code_of(png_with_size(0, 10)) == "corrupt_image"
    # a JPEG whose frame header claims zero width
    assert code_of(jpeg_with_size(enc(astronaut), 0, 512)) == "corrupt_image"


def test_no_face():
    rng = np.random.default_rng(0)
    wall = np.clip(np.linspace(60, 200, 640)[None, :, None] + rng.normal(0, 5, (480, 640, 3)), 0, 255)
    assert code_of(enc(wall.astype(np.uint8))) == "no_face"
    assert code_of(enc(np.full((64, 48, 3), 200, np.uint8), ".png")) == "no_face"


def test_multiple_faces(astronaut):
    assert code_of(enc(np.hstack([astronaut, astronaut]))) == "multiple_faces"
    # a second face at 70 % of the main one's width (49 % of its area): comparable
    canvas = np.full((512, 900, 3), 200, np.uint8)
    canvas[:, :512] = astronaut
    canvas[50:410, 530:890] = cv2.resize(astronaut, (360, 360), interpolation=cv2.INTER_AREA)
    assert code_of(enc(canvas)) == "multiple_faces"


def test_face_too_small(astronaut):
    small = cv2.resize(astronaut, (240, 240), interpolation=cv2.INTER_AREA)   # ~21 px between the eyes
    assert code_of(enc(small)) == "face_too_small"
    with pytest.raises(IdPhotoError) as e:
        idphoto.check(enc(small))
    assert "px apart" in str(e.value)


def test_every_code_is_tested():
    """Each code in idphoto.CODES has a test above (keep this list in step with them)."""
    assert set(idphoto.CODES) == {"too_large", "unsupported_format", "corrupt_image", "too_many_pixels",
                                  "no_face", "multiple_faces", "face_too_small"}
