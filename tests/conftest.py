"""Fixtures shared by every test directory: the real S3 server (SeaweedFS on 127.0.0.1), and
the PII guard (every log line of the run scanned for planted markers, tests/pii_guard.py)."""

pytest_plugins = ("tests.s3_server", "tests.pii_guard")
