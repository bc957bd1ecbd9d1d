"""One live session: frames in → analysis off the event loop → guidance, colours, verdict out.

The pipeline knows nothing of aiortc beyond its track interface (``await track.recv()``
returning ``av.VideoFrame``) and a ``send(dict)`` callable for the data channel, so the
same class runs behind a real peer connection and in tests.

Backpressure: a reader task takes every decoded frame off the track as soon as it arrives
(aiortc's queues are unbounded, so nothing may stay in them) and keeps only the newest one
in a one-frame slot; the analysis loop takes from the slot, so when analysis is behind the
stale frames are dropped, and counted. CPU work (detection, signals, JPEG and video
encoding, the final fit) runs in the shared bounded executor.

Cost: the analysis works on the decoded frame's YUV planes (``vision.planes``) and converts
only small views to BGR (and detects the face on one frame in three while it is still,
``analysis.FrameAnalyzer``). From shortly before the first colour to the end of the scoring
window the reader passes ``window_fps`` frames a second to the slot (``analysis.ANALYSIS_FPS``,
the rate offline scoring analyses at too, so one calibration serves both); before that
only guidance (face fitting, ``fit_fps``) and the best-frame choice (the countdown,
``countdown_fps``) use the records, and it passes fewer: at those rates the analyzer detects
the face on every frame it gets, so guidance never answers from a held face, and the window
starts from a fresh detection. The others are counted as ``skipped``, not dropped. Under
load an analysed frame costs the server several times its analysis's own CPU time (the
event loop's and the executor's work around it, and the threads' contention), so this rate
is what sets a stream's cost against decoding it (docs/capacity.md).

The evidence video of a VP8 stream is the received frames themselves (``vp8_evidence``:
kept as they arrive through ``encoded_frame_tap``, muxed into WebM at the end, no decode,
no encode); for any other codec, or when the tap is unavailable, it is re-encoded to
H.264/MP4 at ``video_fps`` from the decoded frames, one encoder thread per session.

Clocks: frames are placed on the server's monotonic clock from their RTP timestamps
(``frame.time``) plus the smallest arrival offset seen so far, so network jitter does not
smear them; each colour's time is the moment the server sent it. The page's own display
timestamps (``ack``) are kept as hints in the algorithm packet, never trusted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Awaitable, Callable

import cv2
import numpy as np
import orjson

from . import challenge as challenge_mod
from .analysis import ANALYSIS_FPS, Cadence, FrameAnalyzer
from .challenge import Challenge, Step
from .liveness.decision import Verdict, decide
from .liveness.scorer import StreamingScorer
from .liveness.signals import FrameRecord, records_to_dicts
from .offline import BestFrameKeeper
from .session import OUTCOME, ExposureAdvisor, FitGate, user_reason
from .vision.planes import YuvFrame, as_frame
from .vp8_evidence import RTP_CLOCK, WEBM, Vp8FrameBuffer, mux_webm

log = logging.getLogger(__name__)

# what the page may report of its camera after an exposure request or the lock (``camera``)
CAMERA_REPORTS = frozenset({"adjusted", "at_limit", "failed", "unsupported", "locked"})


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):        # as orjson writes them: NaN and infinities as null
        return np.where(np.isfinite(o), o, None).tolist() if o.dtype.kind == "f" else o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON: {type(o).__name__}")


def packet_json(packet: dict[str, Any]) -> bytes:
    """The algorithm packet as compact JSON (UTF-8). orjson formats its thousands of floats
    several times faster than ``json`` (the same shortest round-trip digits, so the parsed
    packet is equal), numpy arrays included (``records_to_dicts(..., arrays=True)``);
    anything orjson refuses goes through ``json``."""
    try:
        return orjson.dumps(packet, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        return json.dumps(packet, separators=(",", ":"), default=_json_default).encode()


@dataclass(frozen=True)
class PipelineConfig:
    fit_timeout_s: float = 10.0      # face-fit must succeed within this
    fit_stable_s: float = 0.6        # guidance must say ok this long before flashing
    prepare_s: float = 1.5           # countdown (photosensitivity warning) before the first colour
    guidance_every_s: float = 0.5    # repeat guidance at most this often
    exposure_control: bool = True    # ask a page whose camera takes exposure constraints to meter on the face
    exposure_every_s: float = 0.6    # at most one exposure request this often (the camera settles in between)
    n_steps: int | None = None       # challenge length (None: random 6–10)
    record_video: bool = True
    max_audit_frames: int = 4
    video_queue: int = 12            # encoder backlog bound (frames); beyond it frames are skipped
    video_fps: float = 15.0          # evidence video frame rate (each 0.2-0.5 s colour spans >= 3 frames)
    fit_fps: float = 5.0             # analysis rate while fitting the face (guidance; 0: every frame)
    countdown_fps: float = 2.0       # analysis rate in the countdown (best-frame candidates under neutral light)
    window_fps: float = ANALYSIS_FPS  # analysis rate in the scoring window (0: every frame)
    window_margin_s: float = 0.1     # the window's rate applies from this long before the scorer's window


class FrameSlot:
    """A one-frame mailbox: put() replaces an unread frame (counted as dropped)."""

    def __init__(self) -> None:
        self._item: Any = None
        self._event = asyncio.Event()
        self.dropped = 0
        self.closed = False

    def put(self, item: Any) -> bool:
        dropped = self._item is not None
        if dropped:
            self.dropped += 1
        self._item = item
        self._event.set()
        return dropped

    def close(self) -> None:
        self.closed = True
        self._event.set()

    async def get(self, until: float | None = None) -> Any:
        """The newest item; None once closed, or if nothing came by ``until`` (loop time)."""
        timer = None
        try:
            while self._item is None:
                if self.closed:
                    return None
                if until is not None:
                    loop = asyncio.get_running_loop()
                    if loop.time() >= until:
                        return None
                    if timer is None:
                        timer = loop.call_at(until, self._event.set)
                self._event.clear()
                await self._event.wait()
        finally:
            if timer is not None:
                timer.cancel()
        item, self._item = self._item, None
        return item


@dataclass
class Evidence:
    best_jpeg: bytes | None = None
    best: dict[str, Any] | None = None
    best_image: np.ndarray | None = None     # the best frame's BGR pixels (for the face match)
    audit_jpegs: list[bytes] = field(default_factory=list)
    packet: bytes = b""                      # the algorithm packet, JSON (encoded off the event loop)
    video: bytes | None = None
    video_type: str = "video/mp4"            # video/webm (VP8 as received) or video/mp4 (re-encoded)


@dataclass
class PipelineResult:
    verdict: Verdict | None
    outcome: str                     # passed | failed | retry | aborted
    reason: str | None
    timings: dict[str, float]
    counts: dict[str, int]
    evidence: Evidence


class VideoRecorder:
    """Re-encodes the received frames of the challenge window to H.264/MP4 in the executor.

    The fallback for streams that are not VP8 (or when the encoded-frame tap is unavailable:
    aiortc exposes no encoded frames through its public API); the cost is measured by the
    load benchmark. At most ``fps`` frames a second are encoded (the decoded frames themselves,
    no copy), by one x264 thread: x264's own threads would run outside the bounded executor
    and multiply with the sessions. A bounded backlog keeps a slow encoder from growing
    memory: beyond it, frames are skipped and counted."""

    content_type = "video/mp4"

    def __init__(self, executor: Executor, max_backlog: int, fps: float = 30.0) -> None:
        self.executor = executor
        self.max_backlog = max_backlog
        self.fps = fps
        self.cadence = Cadence.at(fps)
        self._out = None
        self._buf = None
        self._stream = None
        self._t0: float | None = None
        self._pending: deque[asyncio.Future] = deque()
        self.skipped = 0
        self.frames = 0
        self.encode_s = 0.0

    def _open(self, width: int, height: int) -> None:
        import io

        import av

        self._buf = io.BytesIO()
        self._out = av.open(self._buf, mode="w", format="mp4")
        st = self._out.add_stream("libx264", rate=max(1, round(self.fps)))
        st.width, st.height, st.pix_fmt = width, height, "yuv420p"
        st.time_base = Fraction(1, 90000)
        st.codec_context.time_base = Fraction(1, 90000)
        st.options = {"preset": "ultrafast", "crf": "26", "tune": "zerolatency", "threads": "1"}
        self._stream = st

    def _encode(self, frame: Any, t: float) -> None:
        from av.video.frame import PictureType

        started = time.thread_time()
        if self._out is None:
            self._open(frame.width, frame.height)
        if self._t0 is None:
            self._t0 = t
        if frame.format.name != "yuv420p" or (frame.width, frame.height) != (self._stream.width,
                                                                             self._stream.height):
            frame = frame.reformat(format="yuv420p", width=self._stream.width, height=self._stream.height)
        # the decoded frame itself (the analysis only reads its planes): a new time stamp,
        # and no picture type, or x264 would make every received keyframe a keyframe
        frame.pts = int(round((t - self._t0) * 90000))
        frame.time_base = Fraction(1, 90000)
        frame.pict_type = PictureType.NONE
        for pkt in self._stream.encode(frame):
            self._out.mux(pkt)
        self.frames += 1
        self.encode_s += time.thread_time() - started

    def add(self, frame: Any, t: float) -> None:
        if not self.cadence.take(t):
            return
        while self._pending and self._pending[0].done():
            self._pending.popleft()
        if len(self._pending) >= self.max_backlog:
            self.skipped += 1
            return
        last = self._pending[-1] if self._pending else None
        loop = asyncio.get_running_loop()

        async def chained() -> None:
            if last is not None:
                await asyncio.shield(last)
            await loop.run_in_executor(self.executor, self._encode, frame, t)

        self._pending.append(asyncio.ensure_future(chained()))

    async def finish(self) -> bytes | None:
        for fut in list(self._pending):
            try:
                await fut
            except Exception:
                log.exception("video encoding failed")
                return None
        if self._out is None:
            return None

        def close() -> bytes:
            for pkt in self._stream.encode():
                self._out.mux(pkt)
            self._out.close()
            return self._buf.getvalue()

        return await asyncio.get_running_loop().run_in_executor(self.executor, close)


class RemuxRecorder:
    """The received VP8 frames of the window, muxed into WebM as they are, in the executor.

    ``buffer`` (filled by the encoded-frame tap since the stream began) keeps the frames from
    the last keyframe at or before the window start; ``finish`` takes them up to the window's
    end and muxes them. ``frames`` counts the frames muxed, ``mux_s`` the CPU time of the mux
    (thread time: the mux runs on one executor thread)."""

    content_type = WEBM

    def __init__(self, executor: Executor, buffer: Vp8FrameBuffer) -> None:
        self.executor = executor
        self.buffer = buffer
        self.frames = 0
        self.skipped = 0
        self.mux_s = 0.0
        self.first_ts: int | None = None      # RTP timestamp of the video's first frame

    async def finish(self, start: int, end: int) -> bytes | None:
        """The WebM file of the frames between RTP ticks ``start`` and ``end`` (None if the
        recording was abandoned or nothing was kept); the buffer is released either way."""
        frames = self.buffer.take(start, end)
        self.buffer.close()
        if not frames:
            return None

        def mux() -> tuple[bytes, float]:
            started = time.thread_time()
            data = mux_webm(frames)
            return data, time.thread_time() - started

        try:
            data, self.mux_s = await asyncio.get_running_loop().run_in_executor(self.executor, mux)
        except Exception:
            log.exception("video muxing failed")
            return None
        self.frames = len(frames)
        self.first_ts = frames[0].timestamp
        return data


class LivePipeline:
    def __init__(self, *, executor: Executor, send: Callable[[dict[str, Any]], None],
                 on_state: Callable[[str], Awaitable[None]] | None = None,
                 metrics: Any = None, config: PipelineConfig | None = None,
                 rng: random.Random | None = None, encoded: Vp8FrameBuffer | None = None) -> None:
        self.executor = executor
        # the received encoded frames (the caller's tap fills it); None: re-encode the evidence
        self.encoded = encoded
        self.send = send
        self.on_state = on_state
        self.metrics = metrics
        self.config = config or PipelineConfig()
        self.rng = rng                       # None: the OS CSPRNG (tests may seed)
        self.loop = asyncio.get_running_loop()
        self.slot = FrameSlot()
        self.analyzer = FrameAnalyzer(wide_first=False)
        self.state = "connected"
        self.received = 0
        self.analysed = 0
        # while fitting, at most fit_fps frames a second reach the analysis (then countdown_fps)
        self.cadence = Cadence.at(self.config.fit_fps)
        # from shortly before the scoring window, window_fps (what offline scoring analyses too);
        # the same cadence changes its period, so the rate has no seam where it changes
        self._window_period = Cadence.period_for(self.config.window_fps)
        self._window_from = math.inf         # session time from which the window's rate applies
        self.acks: list[dict[str, Any]] = []
        self.caps: dict[str, Any] = {}
        self.camera_reports: list[str] = []  # what the page said its camera did with exposure requests
        self.exposure = ExposureAdvisor()
        self.records: list[FrameRecord] = []
        self._offset: float | None = None    # server time − frame time (smallest seen)
        self._origin: float | None = None    # server time of the session clock's zero
        self._ended = asyncio.Event()
        self._aborted: str | None = None
        self._recorder: VideoRecorder | RemuxRecorder | None = None
        self._record_window: tuple[float, float] | None = None
        self.timings: dict[str, float] = {}
        self.latencies: deque[float] = deque(maxlen=2048)
        self.analysis_cpu_s = 0.0            # thread CPU time of the frame analysis (executor)

    # --- inputs ------------------------------------------------------------------------
    def on_message(self, raw: Any) -> None:
        """A data-channel message from the page (hints only)."""
        if not isinstance(raw, str) or len(raw) > 4096:
            return
        try:
            msg = json.loads(raw)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        kind = msg.get("type")
        if kind == "ack" and len(self.acks) < 64:
            self.acks.append({"step": msg.get("step"), "shown_at": msg.get("shown_at"),
                              "received": round(self.now(), 4)})
        elif kind == "hello" and isinstance(msg.get("caps"), dict):
            self.caps = {k: v for k, v in msg["caps"].items() if k in ("screen", "camera", "reduced_motion",
                                                                        "touch", "lang")}
        elif kind == "camera" and len(self.camera_reports) < 16:
            # only the codes the page sends (docs/protocol.md): nothing else reaches the packet
            got = msg.get("exposure")
            self.camera_reports.append(got if got in CAMERA_REPORTS else "other")
        elif kind == "bye":
            self.abort("applicant_left")

    def _exposure_settable(self) -> bool:
        """The page said its camera takes exposure constraints (``hello``: caps.camera.exposure)."""
        cam = self.caps.get("camera")
        return self.config.exposure_control and isinstance(cam, dict) and cam.get("exposure") is True

    def abort(self, why: str) -> None:
        if self._aborted is None:
            self._aborted = why
        self.slot.close()
        self._ended.set()

    def now(self) -> float:
        """Seconds on the session clock (0 = first frame)."""
        return self.loop.time() - (self._origin if self._origin is not None else self.loop.time())

    async def _read(self, track: Any) -> None:
        try:
            while True:
                frame = await track.recv()
                arrival = self.loop.time()
                self.received += 1
                if self.metrics:
                    self.metrics.frames_received.inc()
                ft = float(frame.time) if frame.time is not None else arrival
                off = arrival - ft
                if self._offset is None or off < self._offset:
                    self._offset = off
                    if isinstance(self._recorder, RemuxRecorder):
                        self._recorder.buffer.set_window(*self._rtp_window())
                if self._origin is None:
                    self._origin = ft + self._offset
                t = ft + self._offset - self._origin
                if isinstance(self._recorder, VideoRecorder) and self._record_window is not None:
                    lo, hi = self._record_window
                    if lo <= t <= hi:
                        self._recorder.add(frame, t)
                if t >= self._window_from and self.cadence.period != self._window_period:
                    self.cadence.period = self._window_period
                if not self.cadence.take(t):
                    continue
                if self.slot.put((frame, t, arrival)) and self.metrics:
                    self.metrics.frames_dropped.inc()
        except asyncio.CancelledError:
            raise
        except Exception:   # MediaStreamError: the track ended
            self.abort(self._aborted or "track_ended")

    def _rtp_window(self) -> tuple[int, int]:
        """The evidence window in RTP ticks: the frame time (RTP timestamp / 90 kHz) that the
        session clock's mapping places at each end, with the offset as it stands now."""
        assert self._record_window is not None and self._origin is not None and self._offset is not None
        shift = self._origin - self._offset
        lo, hi = self._record_window
        return math.floor((lo + shift) * RTP_CLOCK), math.ceil((hi + shift) * RTP_CLOCK)

    def _analyze(self, frame: Any, t: float) -> tuple[FrameRecord, YuvFrame]:
        started = time.thread_time()
        planes = YuvFrame.from_av(frame)
        rec = self.analyzer.analyze(t, planes)
        self.analysis_cpu_s += time.thread_time() - started   # one frame at a time per session
        return rec, planes

    async def _set_state(self, state: str) -> None:
        self.state = state
        self.timings[state] = round(self.now(), 4)
        self.send({"type": "state", "state": state})
        if self.on_state is not None:
            await self.on_state(state)

    # --- the session ---------------------------------------------------------------------
    async def run(self, track: Any) -> PipelineResult:
        reader = asyncio.ensure_future(self._read(track))
        try:
            return await self._run()
        finally:
            reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, Exception):
                pass

    async def _next_record(self, until: float | None = None) -> tuple[FrameRecord, YuvFrame] | None:
        """Analyse the newest frame (None when the session ended, or no frame came in time)."""
        item = await self.slot.get(until)
        if item is None:
            return None
        frame, t, arrival = item
        rec, img = await self.loop.run_in_executor(self.executor, self._analyze, frame, t)
        lat = self.loop.time() - arrival
        self.latencies.append(lat)
        self.analysed += 1
        if self.metrics:
            self.metrics.frames_analysed.inc()
            self.metrics.analysis_latency.observe(lat)
        return rec, img

    async def _run(self) -> PipelineResult:
        cfg = self.config
        await self._set_state("fitting")
        fit_deadline = self.loop.time() + cfg.fit_timeout_s
        gate = FitGate(cfg.fit_stable_s)
        last_code, last_sent = None, -1.0
        last_exposure = -math.inf
        audit: list[bytes] = []
        keeper: BestFrameKeeper | None = None
        while True:
            got = await self._next_record(until=fit_deadline)
            if got is None:
                if self._aborted:
                    return await self._finish(None, keeper, audit)
                break
            rec, img = got
            now = self.loop.time()
            code = gate.offer(rec, now)
            if rec.detected and now - last_exposure >= cfg.exposure_every_s and self._exposure_settable():
                step = self.exposure.advise(rec)
                if step:
                    self.send({"type": "exposure", "step": step, "ev": self.exposure.rules.step_ev})
                    last_exposure = now
            if now - last_exposure < cfg.exposure_every_s:
                gate.restart()    # the stable period starts again once the camera has settled
            if code != last_code or now - last_sent >= cfg.guidance_every_s:
                self.send({"type": "guidance", "code": code})
                last_code, last_sent = code, now
            if gate.fitted(now):
                audit.append(await self._jpeg(img))
                break
            if now >= fit_deadline:
                break
        if not gate.fitted(self.loop.time()):
            # never fitted: an honest retry with the last guidance as the reason
            reason = {"no_face": "no_face", "multiple_faces": "multiple_faces", "too_dark": "too_dark",
                      "too_bright": "too_bright", "hold_still": "moving_too_much",
                      "move_closer": "face_too_small", "move_back": "face_too_close"}.get(last_code or "",
                                                                                        "fit_timeout")
            verdict = Verdict("retry", 0.0, 0, [reason], None)
            await self._set_state("done")
            return await self._finish(verdict, keeper, audit)

        # --- challenge: colours revealed one at a time, each at the moment it starts ---
        self.cadence.period = Cadence.period_for(cfg.countdown_fps)
        await self._set_state("challenging")
        secret = challenge_mod.generate(start=0.0, n_steps=cfg.n_steps, rng=self.rng)
        self.send({"type": "prepare", "in_ms": int(cfg.prepare_s * 1000)})
        first_at = self.now() + cfg.prepare_s
        planned_end = first_at + (secret.end - secret.start)
        scorer_window = StreamingScorer(Challenge(tuple(Step(first_at + s.t, s.duration, s.rgb)
                                                        for s in secret.steps)))
        post = scorer_window.config.post_s
        if cfg.record_video:
            self._record_window = (first_at - 0.5, planned_end + post)
            if self.encoded is not None and self.encoded.usable and self._origin is not None:
                self._recorder = RemuxRecorder(self.executor, self.encoded)
                self.encoded.set_window(*self._rtp_window())
            else:
                if self.encoded is not None:
                    self.encoded.close()          # not VP8 (or nothing kept): re-encode
                self._recorder = VideoRecorder(self.executor, cfg.video_queue, cfg.video_fps)
        self._window_from = first_at - scorer_window.config.pre_s - cfg.window_margin_s
        keeper = BestFrameKeeper(scorer_window.challenge, keep_image=True)
        sent_steps: list[Step] = []
        runner = asyncio.ensure_future(self._show(secret, first_at, sent_steps))
        scorer: StreamingScorer | None = None
        n = len(secret.steps)
        last_progress = -1.0
        audit_times = [first_at + (planned_end - first_at) * f for f in (0.3, 0.75)] + [planned_end + 0.4]
        try:
            while True:
                if runner.done() and scorer is None:
                    runner.result()
                    # the challenge as actually shown: the server's send times
                    scorer = StreamingScorer(Challenge(tuple(sent_steps)))
                    for r in self.records:
                        scorer.add(r)
                    await self._set_state("scoring")
                close_at = (scorer.challenge.end if scorer else planned_end) + post
                if self.now() >= close_at and scorer is not None:
                    break
                got = await self._next_record(until=self._origin + close_at + 0.05 if self._origin else None)
                if got is None:
                    if self._aborted:
                        return await self._finish(None, keeper, audit)
                    continue
                rec, img = got
                self.records.append(rec)
                if len(self.records) > 2000:
                    self.records = self.records[-2000:]
                if scorer is not None:
                    scorer.add(rec)
                keeper.offer(rec, img)
                if audit_times and rec.t >= audit_times[0] and rec.face is not None \
                        and len(audit) < cfg.max_audit_frames:
                    audit_times.pop(0)
                    audit.append(await self._jpeg(img))
                progress = round(min(1.0, sum(1 for s in sent_steps if s.end <= rec.t) / n), 3)
                if progress != last_progress:
                    self.send({"type": "progress", "value": progress})
                    last_progress = progress
        finally:
            if not runner.done():
                runner.cancel()
        started = time.perf_counter()
        assert scorer is not None
        verdict = await self.loop.run_in_executor(self.executor, lambda: decide(scorer.features()))
        self.timings["decide_ms"] = round((time.perf_counter() - started) * 1000, 2)
        self.timings["verdict_after_window_ms"] = round((self.now() - (scorer.challenge.end + post)) * 1000, 1)
        await self._set_state("done")
        self._scored_challenge = scorer.challenge
        return await self._finish(verdict, keeper, audit)

    async def _show(self, secret: Challenge, first_at: float, sent: list[Step]) -> None:
        """Send each colour just in time; the schedule follows the server's clock."""
        for i, step in enumerate(secret.steps):
            at = first_at + (step.t - secret.start)
            delay = at - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
            t = self.now()
            self.send({"type": "colour", "step": i, "rgb": list(step.rgb), "duration_ms": int(step.duration * 1000)})
            if sent:
                prev = sent[-1]
                sent[-1] = Step(prev.t, round(t - prev.t, 4), prev.rgb)
            sent.append(Step(round(t, 4), step.duration, step.rgb))
        end_at = first_at + (secret.end - secret.start)
        delay = end_at - self.now()
        if delay > 0:
            await asyncio.sleep(delay)
        last = sent[-1]
        sent[-1] = Step(last.t, round(self.now() - last.t, 4), last.rgb)
        self.send({"type": "rest"})

    async def _jpeg(self, img: np.ndarray | YuvFrame) -> bytes:
        def enc() -> bytes:
            ok, buf = cv2.imencode(".jpg", as_frame(img).bgr(), [cv2.IMWRITE_JPEG_QUALITY, 90])
            return buf.tobytes() if ok else b""
        return await self.loop.run_in_executor(self.executor, enc)

    def _video_meta(self, ev: Evidence) -> dict[str, Any] | None:
        """What the stored video is, and where its time 0 is on the session clock."""
        rec = self._recorder
        if ev.video is None or rec is None:
            return None
        start: float | None = None
        if isinstance(rec, RemuxRecorder) and rec.first_ts is not None and self._origin is not None:
            start = rec.first_ts / RTP_CLOCK + (self._offset or 0.0) - self._origin
        elif isinstance(rec, VideoRecorder):
            start = rec._t0
        return {"content_type": ev.video_type, "frames": rec.frames,
                "start_s": None if start is None else round(start, 4)}

    async def _finish(self, verdict: Verdict | None, keeper: BestFrameKeeper | None,
                      audit: list[bytes]) -> PipelineResult:
        ev = Evidence(audit_jpegs=[a for a in audit if a][: self.config.max_audit_frames])
        if keeper is not None and keeper.image is not None:
            ev.best_image = await self.loop.run_in_executor(self.executor, keeper.best_bgr)
            ev.best_jpeg = await self._jpeg(ev.best_image)
            ev.best = keeper.to_dict()
        rec = self._recorder
        if isinstance(rec, RemuxRecorder):
            ev.video = await rec.finish(*self._rtp_window())
        elif rec is not None:
            ev.video = await rec.finish()
        if self.encoded is not None:
            if self.encoded.abandoned is not None:
                log.warning("evidence video: received frames past the %s cap, %s", self.encoded.abandoned,
                            "not stored" if isinstance(rec, RemuxRecorder) else "re-encoded instead")
            self.encoded.close()
        if rec is not None:
            ev.video_type = rec.content_type
        counts = {"received": self.received, "analysed": self.analysed, "dropped": self.slot.dropped,
                  "skipped": self.cadence.skipped,
                  "video_frames": rec.frames if rec else 0,
                  "video_skipped": rec.skipped if rec else 0,
                  # the received-frame buffer hit a cap (before the window: re-encoded instead)
                  "video_abandoned": int(self.encoded is not None and self.encoded.abandoned is not None),
                  "exposure_requests": self.exposure.requests,
                  "exposure_steps": self.exposure.net_steps}
        if isinstance(rec, VideoRecorder) and rec.frames:
            self.timings["video_encode_ms_per_frame"] = round(rec.encode_s * 1000 / rec.frames, 3)
        if isinstance(rec, RemuxRecorder) and rec.frames:
            self.timings["video_mux_ms"] = round(rec.mux_s * 1000, 3)
            self.timings["video_mux_ms_per_frame"] = round(rec.mux_s * 1000 / rec.frames, 4)
        if self.analysed:
            self.timings["analysis_cpu_ms"] = round(self.analysis_cpu_s * 1000, 1)
            self.timings["analysis_cpu_ms_per_frame"] = round(self.analysis_cpu_s * 1000 / self.analysed, 3)
        if self.latencies:
            lat = np.array(self.latencies)
            self.timings["analysis_latency_p50_ms"] = round(float(np.percentile(lat, 50)) * 1000, 2)
            self.timings["analysis_latency_p95_ms"] = round(float(np.percentile(lat, 95)) * 1000, 2)
        ch = getattr(self, "_scored_challenge", None)   # on the session clock, like the records
        packet: dict[str, Any] = {
            "version": 1,
            "challenge": ch.to_dict() if ch is not None else None,
            "acks": list(self.acks), "caps": dict(self.caps), "camera_reports": list(self.camera_reports),
            "records": None,
            "features": verdict.measured_features() if verdict else {},
            "quality": verdict.quality if verdict else {},
            "verdict": verdict.to_dict() if verdict else None,
            "timings": dict(self.timings), "counts": counts,
            "video": self._video_meta(ev),
        }
        records = list(self.records)

        def encode() -> tuple[bytes, float]:   # several ms for a session's records: not on the event loop
            started = time.thread_time()
            packet["records"] = records_to_dicts(records, arrays=True)
            data = packet_json(packet)
            return data, time.thread_time() - started

        ev.packet, spent = await self.loop.run_in_executor(self.executor, encode)
        self.timings["packet_cpu_ms"] = round(spent * 1000, 1)
        if verdict is None:
            return PipelineResult(None, "aborted", self._aborted, self.timings, counts, ev)
        outcome = OUTCOME[verdict.verdict]
        reason = user_reason(verdict.reasons) if verdict.verdict == "retry" else None
        msg: dict[str, Any] = {"type": "outcome", "result": outcome}
        if reason:
            msg["reason"] = reason
        self.send(msg)
        return PipelineResult(verdict, outcome, reason, self.timings, counts, ev)
