"""Stores: records (apps, sessions, monitoring, operation logs, usage; SQLite or PostgreSQL) and
media, behind small async interfaces so other backends can be added without touching their callers."""

from .media import LocalMediaStore, MediaKeyError, MediaStore, media_from_url
from .records import RecordsConflict, RecordsError, RecordsStore, records_from_url
from .sqlite import SQLiteRecords

__all__ = ["LocalMediaStore", "MediaKeyError", "MediaStore", "media_from_url",
           "RecordsConflict", "RecordsError", "RecordsStore", "SQLiteRecords", "records_from_url"]
