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


@pytest.mark.parametrize("cpus, arenas", [(1, 2), (2, 2), (4, 4), (16, 16)])
def test_malloc_arenas_default_to_one_per_cpu_at_least_two(monkeypatch, tmp_path, cpus, arenas):
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    assert Settings.from_env({}, data_dir=tmp_path).malloc_arenas == arenas


def test_malloc_arenas_from_the_environment(tmp_path):
    assert Settings.from_env({"STREAM_EKYC_MALLOC_ARENAS": "0"}, data_dir=tmp_path).malloc_arenas == 0
    assert Settings.from_env({"STREAM_EKYC_MALLOC_ARENAS": "3"}, data_dir=tmp_path).malloc_arenas == 3
    for bad in ("-1", "lots", "5000"):
        with pytest.raises(ConfigError, match="STREAM_EKYC_MALLOC_ARENAS"):
            Settings.from_env({"STREAM_EKYC_MALLOC_ARENAS": bad}, data_dir=tmp_path)
