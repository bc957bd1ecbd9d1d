"""The media store: face images, frames, videos and ID photos, each with a deletion deadline.

``MediaStore`` owns what every backend shares: strict key validation, recording each
object's deadline in the records store *before* its bytes are written (so nothing is ever
stored without a deadline), encryption at rest with a per-session data key (``crypto.py``:
AES-256-GCM, the key only in the records store, so shredding it makes every copy unreadable),
and recording each deletion (when and why, never the content) in the deletion log.
Backends implement five raw operations on keys (``_write``, ``_read``, ``_exists``,
``_delete``, ``_list``) and see only ciphertext: ``LocalMediaStore`` (a directory) here,
``S3MediaStore`` (any S3-compatible endpoint) in ``s3.py``.

Keys are ``<session_id>/<kind>/<name>``. Kinds the service uses:

==============  =====================================================================
``best_frame``  one JPEG, name ``best.jpg``
``audit_frame`` up to 4 JPEGs, names ``audit_0.jpg`` … ``audit_3.jpg`` (served by index)
``packet``      the algorithm packet (JSON): challenge, per-frame records, features, verdict
``video``       the original video of the challenge window
``id_photo``    the relying party's ID photo (JPEG or PNG)
==============  =====================================================================
"""

from __future__ import annotations

import abc
import asyncio
import os
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable
from urllib.parse import unquote, urlsplit

from .._local import atomic_write
from ..config import ConfigError
from .crypto import MediaCryptoError, MediaShreddedError, SessionKeys, open_async, seal_many_async
from .records import RecordsStore

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["MediaStore", "LocalMediaStore", "MediaKeyError", "MediaCryptoError", "MediaShreddedError", "MediaUnavailable",
           "media_from_url", "media_key", "split_key"]

KIND_BEST_FRAME = "best_frame"
KIND_AUDIT_FRAME = "audit_frame"
KIND_PACKET = "packet"
KIND_VIDEO = "video"
KIND_ID_PHOTO = "id_photo"
MAX_AUDIT_FRAMES = 4
BEST_FRAME_NAME = "best.jpg"


def audit_frame_name(n: int) -> str:
    return f"audit_{n}.jpg"


_SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")


class MediaUnavailable(RuntimeError):
    """The media backend could not be reached or kept failing (one line: no key, URL or secret)."""


class MediaKeyError(ValueError):
    """A session id, kind, name or key that could escape the store or is malformed."""


def check_session_id(session_id: str) -> str:
    if not isinstance(session_id, str) or not _SESSION_RE.fullmatch(session_id):
        raise MediaKeyError("bad session id")
    return session_id


def media_key(session_id: str, kind: str, name: str) -> str:
    check_session_id(session_id)
    if not isinstance(kind, str) or not _KIND_RE.fullmatch(kind):
        raise MediaKeyError("bad media kind")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise MediaKeyError("bad media name")
    return f"{session_id}/{kind}/{name}"


def split_key(key: str) -> tuple[str, str, str]:
    parts = key.split("/") if isinstance(key, str) else []
    if len(parts) != 3:
        raise MediaKeyError("bad media key")
    media_key(*parts)
    return parts[0], parts[1], parts[2]


class MediaStore(abc.ABC):
    """put / get / exists / delete_session / list_session, with deadlines in the records store.

    With a records store, every object is sealed with its session's data key (created on the
    session's first write); ``master_key`` (32 bytes) wraps those keys in the records store.
    Without a records store (tests of the raw backends only) objects are stored as given."""

    def __init__(self, records: RecordsStore | None = None, clock: Callable[[], float] = time.time,
                 *, master_key: bytes | None = None):
        self.records = records
        self.clock = clock
        self.keys: SessionKeys | None = SessionKeys(records, master_key) if records is not None else None

    async def start(self) -> None:
        """Prepare the backend (create the directory or check the bucket)."""

    async def close(self) -> None:
        """Release connections."""

    async def ping(self) -> None:
        """Raise when the backend is unreachable."""

    async def put(self, session_id: str, kind: str, name: str, data: bytes, content_type: str,
                  delete_at: float) -> str:
        """Store ``data`` sealed with the session's key; its deadline is recorded first.
        Returns the key. MediaShreddedError when the session's key was already shredded."""
        return (await self.put_many(session_id, [(kind, name, data, content_type)], delete_at))[0]

    async def put_many(self, session_id: str, items: list[tuple[str, str, bytes, str]],
                       delete_at: float) -> list[str]:
        """Store several objects of one session, ``(kind, name, data, content_type)`` each,
        with one deadline: as ``put`` does for each, with one records write for all their
        deadlines, one hop to a worker thread to seal them and one records read to check them
        afterwards (a session's evidence is half a dozen objects; each hop between the event
        loop and a thread costs CPU on both sides). Returns the keys, in order. Nothing is
        written before every key has been validated."""
        keys = [media_key(session_id, kind, name) for kind, name, _, _ in items]
        if len(set(keys)) != len(keys):
            raise MediaKeyError("the same media key twice in one write")
        blobs = [bytes(data) for _, _, data, _ in items]
        if not keys:
            return []
        now = self.clock()
        if self.records is not None:
            await self.records.add_media_objects(
                [(key, session_id, kind, ct, len(b)) for key, (kind, _, _, ct), b in zip(keys, items, blobs)],
                created_at=now, delete_at=delete_at)
        if self.keys is not None:
            blobs = await seal_many_async(await self.keys.for_write(session_id, now), session_id, keys, blobs)
        await self._write_many([(key, b, ct) for key, b, (_, _, _, ct) in zip(keys, blobs, items)])
        if self.records is not None:
            # a sweeper may have taken the deadline row between the two writes (a deadline
            # already passed, or a very short media TTL) and found no bytes to delete: the
            # bytes written after it must not outlive their recorded deletion
            rows = {r["key"]: r for r in await self.records.media_objects(session_id)}
            for key in keys:
                row = rows.get(key)
                if row is None or row.get("deleted_at") is not None:
                    await self._delete(key)
        return keys

    async def get(self, key: str) -> bytes | None:
        """The object's plaintext; None when it does not exist or its session's key has been
        shredded (it can never be read again). Other decryption failures raise MediaCryptoError."""
        split_key(key)
        raw = await self._read(key)
        if raw is None:
            return None
        try:
            return await self.open(key, raw)
        except MediaShreddedError:
            return None

    async def open(self, key: str, raw: bytes) -> bytes:
        """Decrypt the stored bytes ``raw`` of ``key`` (e.g. a copy from a backup).
        MediaShreddedError when the session's key is gone; MediaCryptoError when they do not
        decrypt under this key and session."""
        session_id = split_key(key)[0]
        if self.keys is None:
            return raw
        return await open_async(await self.keys.for_read(session_id), session_id, key, raw)

    async def exists(self, key: str) -> bool:
        split_key(key)
        return await self._exists(key)

    async def list_session(self, session_id: str) -> list[str]:
        check_session_id(session_id)
        return sorted(await self._list(session_id))

    async def remove(self, key: str) -> bool:
        """Delete the stored bytes only (no record): True if they were there. Raises when the
        backend cannot be reached, so the caller can retry."""
        split_key(key)
        return await self._delete(key)

    async def delete(self, key: str, reason: str) -> bool:
        """Delete one object now and record why."""
        removed = await self.remove(key)
        await self.record_deleted([key], reason)
        return removed

    async def record_deleted(self, keys: Iterable[str], reason: str, now: float | None = None) -> int:
        """Mark objects deleted in the records store, which logs each deletion (what, when,
        why) once in the same transaction: keys already marked (by another sweeper or
        instance) are left alone. Returns how many this call marked."""
        keys = list(keys)
        if self.records is None or not keys:
            return 0
        return await self.records.mark_media_deleted(keys, self.clock() if now is None else now, reason)

    async def shred_session_key(self, session_id: str, reason: str, now: float | None = None) -> bool:
        """Delete the session's data key: every stored copy of its objects becomes unreadable."""
        check_session_id(session_id)
        if self.keys is None:
            return False
        return await self.keys.shred(session_id, self.clock() if now is None else now, reason)

    async def delete_session(self, session_id: str, reason: str = "requested") -> int:
        """Shred the session's key, then delete every object of the session now; returns how
        many objects were removed. The key goes first: should the backend fail half-way, what
        is left is already unreadable (and the sweeper removes it at its deadline). Objects the
        records store knows about are marked deleted even if already gone."""
        check_session_id(session_id)
        await self.shred_session_key(session_id, reason)
        keys = set(await self._list(session_id))
        known: list[str] = []
        if self.records is not None:
            known = [o["key"] for o in await self.records.media_objects(session_id) if o["deleted_at"] is None]
        removed = 0
        for key in sorted(keys):
            if await self._delete(key):
                removed += 1
        await self._delete_session_container(session_id)
        await self.record_deleted(sorted(keys | set(known)), reason)
        return removed

    # -- backend operations -----------------------------------------------------------------
    @abc.abstractmethod
    async def _write(self, key: str, data: bytes, content_type: str) -> None: ...

    async def _write_many(self, objects: list[tuple[str, bytes, str]]) -> None:
        """Write ``(key, data, content_type)`` objects (concurrently; a backend may batch)."""
        await asyncio.gather(*(self._write(key, data, ct) for key, data, ct in objects))

    @abc.abstractmethod
    async def _read(self, key: str) -> bytes | None: ...

    @abc.abstractmethod
    async def _exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    async def _delete(self, key: str) -> bool: ...

    @abc.abstractmethod
    async def _list(self, session_id: str) -> list[str]: ...

    async def _delete_session_container(self, session_id: str) -> None:
        """Remove whatever groups a session's objects (a directory), if anything."""


class LocalMediaStore(MediaStore):
    """Objects as files under ``root/<session_id>/<kind>/<name>`` (0600, dirs 0700).

    Writes go to a hidden temporary file in the same directory, are fsynced and renamed into
    place, so a reader sees the old object or the whole new one. All file I/O runs in worker
    threads (``asyncio.to_thread``)."""

    def __init__(self, root: str | Path, records: RecordsStore | None = None,
                 clock: Callable[[], float] = time.time, *, master_key: bytes | None = None):
        super().__init__(records, clock, master_key=master_key)
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        sid, kind, name = split_key(key)
        return self.root / sid / kind / name

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    def _start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise OSError(f"media directory {self.root} is not writable")

    async def ping(self) -> None:
        ok = await asyncio.to_thread(lambda: self.root.is_dir() and os.access(self.root, os.W_OK | os.X_OK))
        if not ok:
            raise OSError(f"media directory {self.root} is missing or not writable")

    async def _write(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self._write_sync, self._path(key), data)

    async def _write_many(self, objects: list[tuple[str, bytes, str]]) -> None:
        files = [(self._path(key), data) for key, data, _ in objects]
        await asyncio.to_thread(lambda: [self._write_sync(path, data) for path, data in files])

    @staticmethod
    def _write_sync(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(path, data)

    async def _read(self, key: str) -> bytes | None:
        path = self._path(key)

        def read() -> bytes | None:
            try:
                return path.read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                return None
        return await asyncio.to_thread(read)

    async def _exists(self, key: str) -> bool:
        path = self._path(key)
        return await asyncio.to_thread(path.is_file)

    async def _delete(self, key: str) -> bool:
        path = self._path(key)

        def rm() -> bool:
            try:
                path.unlink()
                return True
            except (FileNotFoundError, NotADirectoryError):
                if not self.root.is_dir():  # the volume is gone (unmounted): not a deletion
                    raise MediaUnavailable(f"media directory {self.root} is missing") from None
                return False
        return await asyncio.to_thread(rm)

    async def _list(self, session_id: str) -> list[str]:
        base = self.root / check_session_id(session_id)

        def ls() -> list[str]:
            out = []
            if not base.is_dir():
                return out
            for kind_dir in base.iterdir():
                if not kind_dir.is_dir() or not _KIND_RE.fullmatch(kind_dir.name):
                    continue
                for f in kind_dir.iterdir():
                    if f.is_file() and not f.name.startswith(".") and _NAME_RE.fullmatch(f.name):
                        out.append(f"{session_id}/{kind_dir.name}/{f.name}")
            return out
        return await asyncio.to_thread(ls)

    async def _delete_session_container(self, session_id: str) -> None:
        base = self.root / check_session_id(session_id)
        # only leftovers remain here (temporary files of interrupted writes, empty dirs)
        await asyncio.to_thread(shutil.rmtree, base, True)


def media_from_url(url: str, records: RecordsStore | None = None,
                   clock: Callable[[], float] = time.time, *, settings: "Settings | None" = None) -> MediaStore:
    """``file:///absolute/dir`` → ``LocalMediaStore``; ``s3://bucket[/prefix]`` →
    ``S3MediaStore`` (endpoint, region and credentials from ``settings``). ``settings`` also
    gives the master key. Nothing is contacted here."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    master_key = settings.master_key if settings is not None else None
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ConfigError(f"media URL {url!r}: expected file:///absolute/path")
        return LocalMediaStore(Path(unquote(parts.path)), records, clock, master_key=master_key)
    if scheme == "s3":
        from .s3 import S3MediaStore
        return S3MediaStore.from_url(url, records, clock, settings=settings)
    raise ConfigError(f"media URL scheme {scheme or '(none)'!r} is not supported (supported: file, s3)")
