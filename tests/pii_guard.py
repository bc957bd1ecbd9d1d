"""PII guard: a pytest plugin that keeps every log line of the test run and, at the end of the
session, looks for planted PII markers in them.

* A handler on the root logger (level DEBUG) receives every log record of the test process
  (at whatever level each logger is set to; tests that plant markers set DEBUG while they run).
  Each record is rendered as the service renders it: a copy goes through the service's own
  ``RedactingFilter`` (``stream-ekyc serve`` installs it on the root handlers; the copy leaves
  the record as other handlers see it) and the same format as ``serve`` uses.
* Server processes that tests start write their logs to files; ``watch_file(path)`` adds one
  to the scan (tests/instances.py does it for every ``serve`` it starts), and the e2e server
  log (test-results/e2e/server.log) is scanned when it was written during this run.
* ``plant(label, value)`` registers a marker (a name, an ID number, a token, image bytes, …):
  the scan looks for its raw text and its base64 (every alignment, standard and URL-safe),
  hex and URL-encoded forms.

At the end of the session every watched line is scanned for every planted marker; a hit fails
the run (exit status 1) with a report naming the marker's label, the form and where it was
found (never the value itself). ``find(text)`` and ``scan_now()`` let a test check at once.
"""

from __future__ import annotations

import base64
import binascii
import copy
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable
from urllib.parse import quote, quote_plus

import pytest

ROOT = Path(__file__).resolve().parents[1]
E2E_LOG = ROOT / "test-results" / "e2e" / "server.log"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"   # as stream-ekyc serve
MIN_FORM_CHARS = 8


@dataclass(frozen=True)
class Hit:
    label: str
    form: str
    where: str

    def __str__(self) -> str:
        return f"marker {self.label!r} ({self.form}) in {self.where}"


_lock = threading.Lock()
_markers: dict[str, list[tuple[str, str]]] = {}     # label -> [(form name, text)]
_lines: list[str] = []
_files: list[Path] = []
_started = time.time()
_handler: "_CaptureHandler | None" = None


# --- markers ---------------------------------------------------------------------------------

def _b64_forms(raw: bytes) -> list[tuple[str, str]]:
    """The base64 text that ``raw`` becomes inside any longer base64 string: for each of the
    three alignments, the characters that depend on ``raw`` alone."""
    out = []
    for shift in range(3):
        padded = b"\x00" * shift + raw
        enc = base64.b64encode(padded).decode()
        # drop the characters that mix in the padding bytes before and the unknown bytes after
        start = (shift * 8 + 5) // 6 if shift else 0
        usable = (len(padded) * 8) // 6
        body = enc[start:usable]
        if len(body) >= MIN_FORM_CHARS:
            out.append((f"base64/{shift}", body))
            url = body.replace("+", "-").replace("/", "_")
            if url != body:
                out.append((f"base64url/{shift}", url))
    return out


def forms(value: str | bytes) -> list[tuple[str, str]]:
    """(form name, text) pairs to look for."""
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    text = value if isinstance(value, str) else raw.decode("latin-1")
    out = [("raw", text)]
    out += _b64_forms(raw)
    out += [("hex", binascii.hexlify(raw).decode()), ("HEX", binascii.hexlify(raw).decode().upper())]
    if isinstance(value, str):
        for name, enc in (("url", quote(value, safe="")), ("url+", quote_plus(value))):
            if enc != value:
                out.append((name, enc))
    seen: set[str] = set()
    uniq = []
    for name, t in out:
        if t not in seen and len(t) >= min(len(text), MIN_FORM_CHARS):
            seen.add(t)
            uniq.append((name, t))
    return uniq


def plant(label: str, value: str | bytes) -> str | bytes:
    """Register a marker; returns it unchanged."""
    if not value or len(value) < 6:
        raise ValueError("a marker must be at least 6 characters or bytes long")
    with _lock:
        _markers.setdefault(label, [])
        for f in forms(value):
            if f not in _markers[label]:
                _markers[label].append(f)
    return value


def planted() -> dict[str, list[tuple[str, str]]]:
    with _lock:
        return {k: list(v) for k, v in _markers.items()}


def find(text: str | bytes, where: str, markers: dict[str, list[tuple[str, str]]] | None = None) -> list[Hit]:
    """Every (marker, form) found in ``text``."""
    markers = planted() if markers is None else markers
    hay_s = text if isinstance(text, str) else text.decode("latin-1")
    hay_b = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else bytes(text)
    hits = []
    for label, fs in markers.items():
        for form, needle in fs:
            if needle in hay_s or (form == "raw" and needle.encode("latin-1", "ignore") in hay_b) \
                    or needle.encode("utf-8") in hay_b:
                hits.append(Hit(label, form, where))
                break
    return hits


# --- what is scanned -------------------------------------------------------------------------

def watch_file(path: str | Path) -> None:
    """Scan this log file at the end of the session (and in ``scan_now``)."""
    p = Path(path)
    with _lock:
        if p not in _files:
            _files.append(p)


def captured_lines() -> list[str]:
    with _lock:
        return list(_lines)


def _watched_texts() -> list[tuple[str, bytes]]:
    with _lock:
        files = list(_files)
    if E2E_LOG.is_file() and E2E_LOG.stat().st_mtime >= _started and E2E_LOG not in files:
        files.append(E2E_LOG)
    out = []
    for f in files:
        try:
            out.append((str(f), f.read_bytes()))
        except FileNotFoundError:
            continue
    return out


def scan_now(extra: Iterable[tuple[str, str | bytes]] = ()) -> list[Hit]:
    """Scan the captured log lines, the watched files and ``extra`` (where, text) now."""
    markers = planted()
    if not markers:
        return []
    hits: list[Hit] = []
    lines = captured_lines()
    if lines:
        blob = "\n".join(lines)
        found = find(blob, "captured log lines", markers)
        for h in found:   # name the first line that holds it
            for i, line in enumerate(lines):
                if find(line, "", {h.label: markers[h.label]}):
                    hits.append(Hit(h.label, h.form, f"captured log line {i + 1}"))
                    break
    for where, text in [*_watched_texts(), *extra]:
        hits += find(text, where, markers)
    return hits


class _CaptureHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        from stream_ekyc.stores.redact import RedactingFilter

        self._redact = RedactingFilter()
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            rec = copy.copy(record)
            self._redact.filter(rec)
            line = self.format(rec)
        except Exception:
            line = f"<pii_guard: could not render a record of {record.name}>"
        with _lock:
            _lines.append(line)


# --- pytest hooks ------------------------------------------------------------------------------

def pytest_configure(config: pytest.Config) -> None:
    global _handler
    if _handler is not None:
        return
    _handler = _CaptureHandler()
    # the handler takes every level; the loggers' own levels are left as they are, since raising
    # them would change what other tests' caplog sees (a test that plants markers sets DEBUG
    # itself while it runs, and server processes log at the level their test gives them)
    logging.getLogger().addHandler(_handler)


def pytest_unconfigure(config: pytest.Config) -> None:
    global _handler
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler = None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    hits = scan_now()
    session.config.stash[_HITS] = hits
    if hits:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    hits = config.stash.get(_HITS, None)
    n_markers = len(planted())
    if not n_markers:
        return
    tr = terminalreporter
    if hits:
        tr.section("PII guard: planted markers found", sep="=", red=True, bold=True)
        tr.write_line("the run fails: these log lines or files hold a marker a test planted")
        for h in hits:
            tr.write_line(str(h))
    else:
        with _lock:
            n_lines, n_files = len(_lines), len(_files)
        tr.write_line(f"PII guard: {n_markers} planted marker(s), none found in {n_lines} captured "
                      f"log line(s) and {n_files} server log file(s)")


_HITS = pytest.StashKey[list]()
