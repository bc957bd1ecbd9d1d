"""A small Prometheus registry (text exposition format 0.0.4), no dependency.

Nothing here is module-level state: each application builds its own ``Metrics`` and
renders it at ``/metrics``. Metric updates happen on the event loop or from worker
threads; a lock per metric keeps them consistent.
"""

from __future__ import annotations

import math
import re
import threading
from typing import Callable, Iterable, Mapping, Sequence

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

LabelValues = tuple[str, ...]


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(float(x))


def _labels_text(names: Sequence[str], values: Sequence[str], extra: tuple[str, str] | None = None) -> str:
    pairs = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        pairs.append(f'{extra[0]}="{_escape(extra[1])}"')
    return "{" + ",".join(pairs) + "}" if pairs else ""


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_: str, labels: Sequence[str] = ()):
        if not _NAME.match(name):
            raise ValueError(f"bad metric name {name!r}")
        for lab in labels:
            if not _LABEL.match(lab) or lab.startswith("__") or lab == "le":
                raise ValueError(f"bad label name {lab!r}")
        self.name = name
        self.help = help_
        self.label_names = tuple(labels)
        self._lock = threading.Lock()

    def _key(self, labels: Mapping[str, str]) -> LabelValues:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name}: labels {sorted(labels)} != {sorted(self.label_names)}")
        return tuple(str(labels[n]) for n in self.label_names)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help.replace(chr(10), ' ')}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_: str, labels: Sequence[str] = ()):
        super().__init__(name, help_, labels)
        self._values: dict[LabelValues, float] = {}
        if not self.label_names:
            self._values[()] = 0.0

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels_text(self.label_names, k)} {_fmt(v)}" for k, v in items]


class Gauge(_Metric):
    kind = "gauge"

    def __init__(self, name: str, help_: str, labels: Sequence[str] = (),
                 callback: Callable[[], float | Mapping[LabelValues, float]] | None = None):
        super().__init__(name, help_, labels)
        self._values: dict[LabelValues, float] = {}
        self._callback = callback
        if not self.label_names and callback is None:
            self._values[()] = 0.0

    def set_callback(self, callback: Callable[[], float | Mapping[LabelValues, float]] | None) -> None:
        """Read the value(s) when rendering: a number, or {label values tuple: number}."""
        self._callback = callback

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)

    def value(self, **labels: str) -> float:
        return self._current().get(self._key(labels), 0.0)

    def _current(self) -> dict[LabelValues, float]:
        if self._callback is not None:
            try:
                got = self._callback()
            except Exception:  # a failing callback must not break /metrics
                return {}
            if isinstance(got, Mapping):
                return {tuple(map(str, k)): float(v) for k, v in got.items()}
            return {(): float(got)}
        with self._lock:
            return dict(self._values)

    def samples(self) -> list[str]:
        return [f"{self.name}{_labels_text(self.label_names, k)} {_fmt(v)}"
                for k, v in sorted(self._current().items())]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_: str, buckets: Iterable[float], labels: Sequence[str] = ()):
        super().__init__(name, help_, labels)
        b = sorted(float(x) for x in buckets)
        if not b or any(math.isinf(x) or math.isnan(x) for x in b) or len(set(b)) != len(b):
            raise ValueError("buckets must be distinct finite numbers")
        self.buckets = tuple(b)
        self._data: dict[LabelValues, tuple[list[int], float, int]] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            counts, total, n = self._data.get(key, ([0] * len(self.buckets), 0.0, 0))
            for i, ub in enumerate(self.buckets):
                if value <= ub:
                    counts[i] += 1
            self._data[key] = (counts, total + value, n + 1)

    def count(self, **labels: str) -> int:
        got = self._data.get(self._key(labels))
        return got[2] if got else 0

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted((k, (list(c), s, n)) for k, (c, s, n) in self._data.items())
        if not items and not self.label_names:
            items = [((), ([0] * len(self.buckets), 0.0, 0))]
        out = []
        for key, (counts, total, n) in items:
            for ub, c in zip(self.buckets, counts):
                out.append(f"{self.name}_bucket{_labels_text(self.label_names, key, ('le', _fmt(ub)))} {c}")
            out.append(f"{self.name}_bucket{_labels_text(self.label_names, key, ('le', '+Inf'))} {n}")
            out.append(f"{self.name}_sum{_labels_text(self.label_names, key)} {_fmt(total)}")
            out.append(f"{self.name}_count{_labels_text(self.label_names, key)} {n}")
        return out


class Registry:
    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def register(self, metric: _Metric) -> _Metric:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} registered twice")
        self._metrics[metric.name] = metric
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for m in self._metrics.values():
            lines += m.header()
            lines += m.samples()
        return "\n".join(lines) + "\n"


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0)
LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


SESSION_STATES = ("created", "connected", "fitting", "challenging", "scoring", "done", "failed", "expired")
ACTIVE_SESSION_STATES = SESSION_STATES[:5]
VERDICTS = ("live", "spoof", "retry")  # the engine's verdicts (others are counted as they come)


class Metrics:
    """The service's metrics; one per application.

    Session states (the live module and the API update these):
      * ``sessions`` gauge {state}: sessions currently in each non-final state; the API
        refreshes it from the records store when ``/metrics`` is scraped;
      * ``session_transitions`` counter {state}: transitions into each state.
    """

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.sessions: Gauge = r.register(Gauge(
            "stream_ekyc_sessions", "Sessions currently in each non-final state", ["state"]))  # type: ignore[assignment]
        self.session_transitions: Counter = r.register(Counter(
            "stream_ekyc_session_transitions_total", "Session state transitions, by new state", ["state"]))  # type: ignore[assignment]
        self.live_sessions: Gauge = r.register(Gauge(
            "stream_ekyc_live_sessions", "Sessions with an open peer connection in this process"))  # type: ignore[assignment]
        self.verdicts: Counter = r.register(Counter(
            "stream_ekyc_verdicts_total", "Verdicts given, by verdict", ["verdict"]))  # type: ignore[assignment]
        self.frames_received: Counter = r.register(Counter(
            "stream_ekyc_frames_received_total", "Video frames received from peers"))  # type: ignore[assignment]
        self.frames_analysed: Counter = r.register(Counter(
            "stream_ekyc_frames_analysed_total", "Video frames analysed"))  # type: ignore[assignment]
        self.frames_dropped: Counter = r.register(Counter(
            "stream_ekyc_frames_dropped_total", "Video frames dropped because analysis was behind"))  # type: ignore[assignment]
        self.analysis_latency: Histogram = r.register(Histogram(
            "stream_ekyc_analysis_latency_seconds", "Time to analyse one frame (queue + CPU)",
            LATENCY_BUCKETS))  # type: ignore[assignment]
        self.loop_lag: Histogram = r.register(Histogram(
            "stream_ekyc_event_loop_lag_seconds", "How late the event loop wakes a scheduled sleep",
            LAG_BUCKETS))  # type: ignore[assignment]
        self.loop_lag_last: Gauge = r.register(Gauge(
            "stream_ekyc_event_loop_lag_last_seconds", "The last event-loop lag measured"))  # type: ignore[assignment]
        self.http_requests: Counter = r.register(Counter(
            "stream_ekyc_http_requests_total", "HTTP requests, by route and status", ["route", "status"]))  # type: ignore[assignment]

        for state in SESSION_STATES:
            self.session_transitions.inc(0, state=state)
            if state in ACTIVE_SESSION_STATES:
                self.sessions.set(0, state=state)
        for verdict in VERDICTS:
            self.verdicts.inc(0, verdict=verdict)

    def render(self) -> str:
        return self.registry.render()
