"""HTTP API: the aiohttp application (``create_app``), REST routes, auth, errors, OpenAPI."""

from .app import (CLOCK, EXECUTOR, LIVE, MEDIA, METRICS, RECORDS, SETTINGS, LiveSessions, create_app,
                  set_state)

__all__ = ["CLOCK", "EXECUTOR", "LIVE", "MEDIA", "METRICS", "RECORDS", "SETTINGS", "LiveSessions",
           "create_app", "set_state"]
