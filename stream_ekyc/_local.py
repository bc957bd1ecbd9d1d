"""Two small process-level helpers shared by the model cache, the detector, the embedder
and the local media store."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


def atomic_write(path: Path, data: bytes, *, check: Callable[[Path], None] | None = None,
                 mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one:
    a temporary file in the same directory, fsynced, optionally checked, then renamed."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if check is not None:
            check(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class ProcessWide(Generic[T]):
    """One instance per process, created on first use under a lock (models load once)."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        value = self._value
        if value is None:
            with self._lock:
                value = self._value
                if value is None:
                    value = self._value = self._factory()
        return value
