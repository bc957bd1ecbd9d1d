"""Stores: records (apps, sessions, monitoring, operation logs) and media, behind small async
interfaces so other backends can be added without touching their callers."""

from .media import LocalMediaStore, MediaKeyError, MediaStore, media_from_url
from .records import RecordsError, RecordsStore, SQLiteRecords, records_from_url

__all__ = ["LocalMediaStore", "MediaKeyError", "MediaStore", "media_from_url",
           "RecordsError", "RecordsStore", "SQLiteRecords", "records_from_url"]
