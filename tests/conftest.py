"""Fixtures shared by every test directory: the real S3 server (SeaweedFS on 127.0.0.1)."""

pytest_plugins = ("tests.s3_server",)
