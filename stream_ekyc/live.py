"""Live sessions: aiortc peer connections driving one ``LivePipeline`` each.

``LiveSessions`` is what the offer route calls (``api.app.LiveSessions`` protocol): it
answers the SDP offer, wires the video track and the ``ekyc`` data channel into a
pipeline, records every state transition, and when the pipeline ends stores the evidence
(best frame, audit frames, algorithm packet, video of the challenge window) in the media
store and the result in the records store. The video track's receiver is tapped for its
encoded frames (``encoded_frame_tap``), so a VP8 stream's evidence video is stored as
received (``challenge.webm``); any other codec's is re-encoded (``challenge.mp4``). Every
peer connection is closed at the end: its decoder threads would otherwise outlive the
session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from . import compare, idphoto
from .api.app import CLOCK, EXECUTOR, MEDIA, METRICS, SETTINGS, set_state
from .encoded_frame_tap import receiver_of, tap_encoded_frames
from .heap import HeapTrimmer
from .pipeline import LivePipeline, PipelineConfig, PipelineResult
from .stores.media import KIND_ID_PHOTO
from .vp8_evidence import WEBM, Vp8FrameBuffer

log = logging.getLogger(__name__)

_LOOPBACK = {"127.0.0.1", "::1"}
_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) ", re.MULTILINE)


class Busy(Exception):
    def __init__(self, retry_after_s: int = 5) -> None:
        super().__init__("at capacity")
        self.retry_after_s = retry_after_s


def loopback_only_sdp(sdp: str) -> str:
    """Drop every ICE candidate that is not a loopback address (development and tests)."""
    out = []
    for line in sdp.splitlines():
        m = _CANDIDATE.match(line + " ")
        if m and m.group(1) not in _LOOPBACK:
            continue
        out.append(line)
    return "\r\n".join(out) + "\r\n"


def restrict_ice_to_loopback() -> None:
    """Keep ICE on loopback (process-wide; development and tests only): aioice offers only
    127.0.0.1, and ignores connectivity checks from any other source address — otherwise a
    browser that also has other interfaces would make aioice learn a peer-reflexive
    candidate there and move the media to it."""
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []
    conn = aioice.ice.Connection
    if getattr(conn.request_received, "_loopback_only", False):
        return
    original = conn.request_received

    def request_received(self, message, addr, protocol):  # type: ignore[no-untyped-def]
        if addr[0] not in _LOOPBACK:
            return
        return original(self, message, addr, protocol)

    request_received._loopback_only = True  # type: ignore[attr-defined]
    conn.request_received = request_received  # type: ignore[method-assign]


class LiveSessions:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.settings = app[SETTINGS]
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._pcs: dict[str, RTCPeerConnection] = {}
        self._pipelines: dict[str, LivePipeline] = {}
        self.pipeline_config = PipelineConfig()
        self.heap = HeapTrimmer(app[EXECUTOR])
        if self.settings.ice_loopback_only:
            restrict_ice_to_loopback()

    def active_count(self) -> int:
        return len(self._tasks)

    def _configuration(self) -> RTCConfiguration:
        # always explicit: aiortc would otherwise reach for a public STUN server
        servers = [RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
                   for s in self.settings.ice_servers]
        return RTCConfiguration(iceServers=servers)

    async def start(self, session: dict[str, Any], offer_sdp: str, offer_type: str) -> tuple[str, str]:
        if self.active_count() >= self.settings.max_sessions:
            raise Busy(retry_after_s=5)
        sid = session["session_id"]
        if self.settings.ice_loopback_only:
            offer_sdp = loopback_only_sdp(offer_sdp)
        pc = RTCPeerConnection(self._configuration())
        ready: asyncio.Future[tuple[Any, Any]] = asyncio.get_running_loop().create_future()
        parts: dict[str, Any] = {}

        def maybe_ready() -> None:
            if "track" in parts and "channel" in parts and not ready.done():
                ready.set_result((parts["track"], parts["channel"]))

        record_encoded = self.pipeline_config.record_video and not self.settings.decode_only

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "video" and "track" not in parts:
                parts["track"] = track
                if record_encoded:
                    # before the receiver's decoder starts (aiortc starts it after this event)
                    receiver = receiver_of(pc, track)
                    encoded = Vp8FrameBuffer()
                    if receiver is not None and tap_encoded_frames(receiver, encoded):
                        parts["encoded"] = encoded
                maybe_ready()

        @pc.on("datachannel")
        def on_channel(channel: Any) -> None:
            if channel.label == "ekyc" and "channel" not in parts:
                parts["channel"] = channel
                early: list[Any] = []
                parts["early"] = early
                # keep what the page says before the pipeline exists (its hello comes first)
                channel.on("message", lambda m: early.append(m) if len(early) < 16 else None)
                maybe_ready()

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type=offer_type))
            if not any(t.kind == "video" for t in pc.getTransceivers()):
                raise ValueError("the offer has no video")
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as e:
            await pc.close()
            raise ValueError(f"malformed SDP offer: {type(e).__name__}") from None
        self._pcs[sid] = pc
        self._tasks[sid] = asyncio.ensure_future(self._session(sid, pc, ready, parts))
        return pc.localDescription.sdp, pc.localDescription.type

    async def _session(self, sid: str, pc: RTCPeerConnection, ready: asyncio.Future,
                       parts: dict[str, Any]) -> None:
        app = self.app
        result: PipelineResult | None = None
        try:
            try:
                track, channel = await asyncio.wait_for(ready, timeout=15.0)
            except asyncio.TimeoutError:
                await set_state(app, sid, "failed", expected=("created",), detail="no_media")
                return
            await set_state(app, sid, "connected", expected=("created",))
            if self.settings.decode_only:
                await self._decode_only(sid, pc, track, channel)
                return

            def send(msg: dict[str, Any]) -> None:
                if channel.readyState == "open":
                    channel.send(json.dumps(msg, separators=(",", ":")))

            async def on_state(state: str) -> None:
                if state != "done":   # done is recorded with the result below
                    prev = {"fitting": "connected", "challenging": "fitting", "scoring": "challenging"}[state]
                    await set_state(app, sid, state, expected=(prev,))

            pipeline = LivePipeline(executor=app[EXECUTOR], send=send, on_state=on_state,
                                    metrics=app[METRICS], config=self.pipeline_config,
                                    encoded=parts.get("encoded"))
            self._pipelines[sid] = pipeline
            channel.remove_all_listeners("message")
            for m in parts.get("early", []):
                pipeline.on_message(m)
            channel.on("message", pipeline.on_message)
            channel.on("close", lambda: pipeline.abort("channel_closed"))

            @pc.on("connectionstatechange")
            async def on_conn() -> None:
                if pc.connectionState in ("failed", "closed"):
                    pipeline.abort("connection_" + pc.connectionState)

            result = await pipeline.run(track)
            await self._store(sid, result)
        except asyncio.CancelledError:
            await set_state(app, sid, "failed", expected=("connected", "fitting", "challenging", "scoring"),
                            detail="shutdown")
            raise
        except Exception:
            log.exception("session pipeline failed")
            await set_state(app, sid, "failed", expected=("created", "connected", "fitting", "challenging",
                                                          "scoring"), detail="internal_error")
        finally:
            if "encoded" in parts:
                parts["encoded"].close()      # the receiver keeps calling it until closed
            self._pipelines.pop(sid, None)
            self._tasks.pop(sid, None)
            self._pcs.pop(sid, None)
            await pc.close()
            await self.heap.after_session()

    # --- benchmark baseline (STREAM_EKYC_DECODE_ONLY / serve --decode-only) -------------------
    async def _decode_only(self, sid: str, pc: RTCPeerConnection, track: Any, channel: Any,
                           max_s: float = 300.0) -> None:
        """Receive and decode every frame and discard it: no analysis, no colours, no verdict.
        The load benchmark's floor for the cost of a stream. Ends when the peer hangs up; the
        session is recorded as ``failed`` (detail ``decode_only``) with the frame counts."""
        loop = asyncio.get_running_loop()
        metrics = self.app[METRICS]
        ended = asyncio.Event()
        channel.on("close", ended.set)

        @pc.on("connectionstatechange")
        async def on_conn() -> None:
            if pc.connectionState in ("failed", "closed"):
                ended.set()

        async def consume() -> int:
            n = 0
            try:
                while True:
                    await track.recv()
                    n += 1
                    metrics.frames_received.inc()
            except asyncio.CancelledError:
                return n
            except Exception:   # MediaStreamError: the track ended
                return n

        started = loop.time()
        reader = asyncio.ensure_future(consume())
        waiter = asyncio.ensure_future(ended.wait())
        await asyncio.wait({reader, waiter}, timeout=max_s, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        reader.cancel()
        received = await reader
        result = {"decode_only": True, "verdict": None,
                  "counts": {"received": received, "analysed": 0, "dropped": 0},
                  "timings": {"stream_s": round(loop.time() - started, 3)}}
        await set_state(self.app, sid, "failed", expected=("connected",), detail="decode_only", result=result)

    async def _store(self, sid: str, result: PipelineResult) -> None:
        app, s = self.app, self.settings
        now = app[CLOCK]()
        delete_at = now + s.media_ttl_s
        media = app[MEDIA]
        ev = result.evidence
        stored: dict[str, Any] = {}
        items: list[tuple[str, str, bytes, str]] = []
        if ev.best_jpeg:
            items.append(("best_frame", "best.jpg", ev.best_jpeg, "image/jpeg"))
            stored["best_frame"] = True
        for i, jpg in enumerate(ev.audit_jpegs):
            items.append(("audit_frame", f"audit_{i}.jpg", jpg, "image/jpeg"))
        stored["audit_frames"] = len(ev.audit_jpegs)
        items.append(("packet", "packet.json", ev.packet, "application/json"))
        if ev.video:
            name = "challenge.webm" if ev.video_type == WEBM else "challenge.mp4"
            items.append(("video", name, ev.video, ev.video_type))
        await media.put_many(sid, items, delete_at)   # one deadline write, one seal hop, one check
        if result.verdict is None:
            await set_state(app, sid, "failed", expected=("connected", "fitting", "challenging", "scoring"),
                            detail=result.reason or "aborted")
            return
        v = result.verdict
        body = {"verdict": v.verdict, "confidence": v.confidence, "score": round(v.score, 4),
                "reasons": v.reasons, "lag_ms": None if v.lag_ms is None else round(v.lag_ms, 1),
                "outcome": result.outcome, "timings": result.timings, "counts": result.counts,
                "best_frame_quality": ev.best, "media": stored}
        # the face match: only ever after a live verdict (a spoof or retry never carries one)
        body["match"] = None
        if v.verdict == "live":
            try:
                body["match"] = await self._face_match(sid, ev.best_image)
            except Exception:   # the liveness result stands even if the comparison breaks
                log.exception("face match failed")
                body["match"] = {"similarity": None, "is_match": False, "error": "internal"}
        await set_state(app, sid, "done", expected=("fitting", "scoring"), result=body)

    # --- face match with the ID photo --------------------------------------------------------
    async def _face_match(self, sid: str, best_image: Any) -> dict[str, Any] | None:
        """``{similarity, is_match, threshold}`` of the best frame against the session's ID photo;
        None without an ID photo (none given, or already deleted). The ID photo's embedding was
        stored at intake; it is extracted here only if that object is missing. The CPU work runs
        in the shared executor."""
        app = self.app
        media = app[MEDIA]
        threshold = float(getattr(self.settings, "match_threshold", compare.DEFAULT_THRESHOLD))
        keys = [k for k in await media.list_session(sid) if k.split("/")[1] == KIND_ID_PHOTO]
        emb_key = next((k for k in keys if k.rsplit("/", 1)[1] == idphoto.EMBEDDING_NAME), None)
        photo_key = next((k for k in keys if k != emb_key), None)
        loop = asyncio.get_running_loop()
        blob = await media.get(emb_key) if emb_key else None
        id_emb = idphoto.embedding_from_bytes(blob) if blob else None
        if id_emb is None:
            data = await media.get(photo_key) if photo_key else None
            if data is None:
                return None
            try:
                id_emb = (await loop.run_in_executor(app[EXECUTOR], idphoto.check, data)).embedding
            except idphoto.IdPhotoError as e:
                return {"similarity": None, "is_match": False, "threshold": threshold, "error": f"id_photo_{e.code}"}
        return await loop.run_in_executor(app[EXECUTOR], compare.match_image, best_image, id_emb, threshold)

    async def shutdown(self) -> None:
        """Give in-flight sessions a clean end: those already scoring finish, others fail."""
        for sid, pipe in list(self._pipelines.items()):
            if pipe.state not in ("scoring",):
                pipe.abort("shutdown")
        tasks = list(self._tasks.values())
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=5.0)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for pc in list(self._pcs.values()):
            await pc.close()
