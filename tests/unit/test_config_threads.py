"""The shared CPU executor's size: one thread per two CPUs the process may use, at least
one; the environment overrides it, and a bad value names the variable."""

from __future__ import annotations

import pytest

from stream_ekyc import config
from stream_ekyc.config import ConfigError, Settings


@pytest.mark.parametrize("cpus, threads", [(1, 1), (2, 1), (3, 1), (4, 2), (16, 8)])
def test_default_is_half_the_usable_cpus(monkeypatch, tmp_path, cpus, threads):
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    assert config.default_analysis_threads() == threads
    assert Settings.from_env({}, data_dir=tmp_path).analysis_threads == threads


def test_environment_overrides_and_bad_values_name_the_variable(tmp_path):
    env = {"STREAM_EKYC_ANALYSIS_THREADS": "3"}
    assert Settings.from_env(env, data_dir=tmp_path).analysis_threads == 3
    for bad in ("0", "many", "-2"):
        with pytest.raises(ConfigError, match="STREAM_EKYC_ANALYSIS_THREADS"):
            Settings.from_env({"STREAM_EKYC_ANALYSIS_THREADS": bad}, data_dir=tmp_path)
