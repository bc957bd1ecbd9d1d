"""The live pipeline behind the real API, over a real WebRTC connection on 127.0.0.1:
an aiortc client plays the applicant's camera and page."""

from __future__ import annotations

import asyncio
import io
import json
import time
from fractions import Fraction
from typing import Any

import av
import cv2
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription, VideoStreamTrack

from stream_ekyc.analysis import ANALYSIS_FPS
from stream_ekyc.api.app import LIVE, MEDIA, RECORDS
from stream_ekyc.live import LiveSessions, loopback_only_sdp
from stream_ekyc.pipeline import PipelineConfig

from .conftest import auth, serve


class FrameTrack(VideoStreamTrack):
    """Plays a list of BGR images at ``fps`` in real time, looping; with ``key_every`` the
    sender's encoder is asked for a keyframe every that many frames (as a browser sends one
    when the receiver asks)."""

    def __init__(self, images: list[np.ndarray], fps: float = 30.0, key_every: int = 0):
        super().__init__()
        self.images = images
        self.fps = fps
        self.key_every = key_every
        self.i = 0
        self.t0: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self.t0 is None:
            self.t0 = time.monotonic()
        due = self.t0 + self.i / self.fps
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        img = self.images[self.i % len(self.images)]
        frame = av.VideoFrame.from_ndarray(img, format="bgr24")
        if self.key_every and self.i % self.key_every == 0:
            frame = frame.reformat(format="yuv420p")    # aiortc passes a yuv420p frame as it is
            frame.pict_type = av.video.frame.PictureType.I
        frame.pts = int(self.i * 90000 / self.fps)
        frame.time_base = Fraction(1, 90000)
        self.i += 1
        return frame


async def run_client(h, key: str, images: list[np.ndarray], timeout: float = 40.0,
                     key_every: int = 0, codec: str | None = None) -> dict[str, Any]:
    s = await h.create_session(key)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    messages: list[tuple[float, dict]] = []
    done = asyncio.get_running_loop().create_future()
    ch = pc.createDataChannel("ekyc", ordered=True)

    @ch.on("message")
    def on_message(raw: str) -> None:
        msg = json.loads(raw)
        messages.append((time.monotonic(), msg))
        if msg["type"] == "colour":
            ch.send(json.dumps({"type": "ack", "step": msg["step"], "shown_at": 0}))
        if msg["type"] == "outcome" and not done.done():
            done.set_result(msg)

    @ch.on("open")
    def on_open() -> None:
        ch.send(json.dumps({"type": "hello", "caps": {"screen": {"w": 1280, "h": 800}}}))

    sender = pc.addTrack(FrameTrack(images, key_every=key_every))
    if codec is not None:   # offer only this codec (a browser that prefers it)
        caps = RTCRtpSender.getCapabilities("video").codecs
        transceiver = next(t for t in pc.getTransceivers() if t.sender is sender)
        transceiver.setCodecPreferences([c for c in caps if c.mimeType == f"video/{codec}"])
    await pc.setLocalDescription(await pc.createOffer())
    offer = loopback_only_sdp(pc.localDescription.sdp)
    r = await h.client.post(f"/v1/sessions/{s['session_id']}/offer",
                            json={"sdp": offer, "type": "offer", "consent": {"privacy": True, "min_age": True}},
                            headers=auth(s["client_token"]))
    assert r.status == 200, await r.text()
    ans = await r.json()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=ans["sdp"], type=ans["type"]))
    try:
        outcome = await asyncio.wait_for(done, timeout)
    finally:
        await pc.close()
    # the session reaches its final state shortly after the outcome message
    for _ in range(100):
        r = await h.client.get(f"/v1/sessions/{s['session_id']}", headers=auth(key))
        body = await r.json()
        if body["status"] in ("done", "failed"):
            break
        await asyncio.sleep(0.1)
    return {"session": s, "outcome": outcome, "messages": messages, "status": body, "answer": ans["sdp"]}


def face_frames(n: int = 60) -> list[np.ndarray]:
    from skimage import data

    # the astronaut's face is ~90 px wide at (180, 63): crop around it and enlarge ~2.4x
    face = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)[10:250, 105:345]
    face = cv2.resize(face, (360, 360))
    frames = []
    rng = np.random.default_rng(0)
    for i in range(n):
        img = np.full((480, 640, 3), 110, np.uint8)
        img[60:420, 140:500] = face
        img = np.clip(img.astype(np.int16) + rng.integers(-2, 3, img.shape), 0, 255).astype(np.uint8)
        frames.append(img)
    return frames


@pytest.fixture
def live_settings(make_settings):
    return make_settings(ice_loopback_only=True, max_sessions=4)


async def test_a_replayed_face_fails_and_the_session_keeps_its_evidence(live_settings):
    async with serve(live_settings, live_factory=LiveSessions) as h:
        _, key = await h.new_app()
        images = face_frames()
        res = await run_client(h, key, images, key_every=30)     # a VP8 keyframe every second
        assert "VP8/90000" in res["answer"]
        kinds = [m["type"] for _, m in res["messages"]]
        assert kinds[0] == "state" and "guidance" in kinds and "prepare" in kinds
        colours = [(t, m) for t, m in res["messages"] if m["type"] == "colour"]
        assert 6 <= len(colours) <= 10
        # just in time: each colour arrives on its own, spaced by the previous step's duration
        for (t0, m0), (t1, _) in zip(colours, colours[1:]):
            assert t1 - t0 >= m0["duration_ms"] / 1000 * 0.5
        assert [m["step"] for _, m in colours] == list(range(len(colours)))
        assert res["outcome"]["result"] in ("failed", "retry")     # a still picture never passes
        assert "score" not in res["outcome"]
        st = res["status"]
        assert st["status"] == "done"
        assert st["result"]["verdict"] in ("spoof", "retry")
        states = [e["state"] for e in st["events"]]
        assert states[:6] == ["created", "connected", "fitting", "challenging", "scoring", "done"]
        sid = res["session"]["session_id"]
        kinds = {o["kind"] for o in await h.app[RECORDS].media_objects(sid)}
        assert {"best_frame", "packet", "video"} <= kinds
        packet_key = next(o["key"] for o in await h.app[RECORDS].media_objects(sid) if o["kind"] == "packet")
        packet = json.loads(await h.app[MEDIA].get(packet_key))
        assert packet["caps"] == {"screen": {"w": 1280, "h": 800}}      # the page's hello is kept
        assert len(packet["acks"]) == len(colours)
        assert packet["challenge"]["steps"] and len(packet["records"]) > 20
        # the countdown at fit_fps, the scoring window at the offline scorer's rate (ANALYSIS_FPS)
        gaps = np.diff([r["t"] for r in packet["records"]])
        assert gaps.min() >= 1 / ANALYSIS_FPS - 0.011 and np.median(gaps) < 1 / ANALYSIS_FPS + 0.02
        r = await h.client.get(f"/v1/sessions/{sid}/best-frame", headers=auth(key))
        assert r.status == 200 and r.content_type == "image/jpeg"
        assert (await r.read())[:2] == b"\xff\xd8"
        counts = st["result"]["counts"]
        assert counts["received"] >= counts["analysed"] > 20
        assert h.app[LIVE].active_count() == 0

        # the evidence video: the VP8 frames as received, muxed into WebM, no re-encoding
        video_obj = next(o for o in await h.app[RECORDS].media_objects(sid) if o["kind"] == "video")
        assert video_obj["key"].endswith("/challenge.webm") and video_obj["content_type"] == "video/webm"
        container = av.open(io.BytesIO(await h.app[MEDIA].get(video_obj["key"])))
        assert container.format.name.startswith("matroska")
        stream = container.streams.video[0]
        assert stream.codec_context.name == "vp8" and (stream.width, stream.height) == (640, 480)
        frames = list(container.decode(video=0))
        timings = st["result"]["timings"]
        assert counts["video_frames"] == len(frames) and counts["video_abandoned"] == 0
        assert "video_encode_ms_per_frame" not in timings and timings["video_mux_ms_per_frame"] > 0
        # the analysis's own thread CPU time (the load benchmark's analysis share)
        assert timings["analysis_cpu_ms"] > 0 and timings["analysis_cpu_ms_per_frame"] > 0
        assert timings["packet_cpu_ms"] > 0
        meta = packet["video"]
        assert meta["content_type"] == "video/webm" and meta["frames"] == len(frames)
        # on the session clock: from the last keyframe at or before the window's start (the
        # first colour less 0.5 s) to the window's end (the last colour's end plus the
        # scorer's 0.6 s), every frame of it at 30 fps
        steps = packet["challenge"]["steps"]
        start, end = steps[0]["t"] - 0.5, steps[-1]["t"] + steps[-1]["duration"] + 0.6
        times = [meta["start_s"] + f.time for f in frames]
        assert frames[0].key_frame and start - 1.1 < times[0] <= start + 0.05
        assert end - 0.15 < times[-1] <= end + 0.1
        assert all(0 < b - a < 0.1 for a, b in zip(times, times[1:]))
        assert len(frames) >= 0.9 * 30 * (times[-1] - times[0])
        assert all((f.width, f.height) == (640, 480) for f in frames)
        # the pictures are the applicant's: the sent face, up to the sender's compression
        sent = images[0].astype(np.int16)
        for f in frames[:: max(1, len(frames) // 5)]:
            assert np.abs(f.to_ndarray(format="bgr24").astype(np.int16) - sent).mean() < 8


async def test_an_empty_scene_gets_retry_no_face(live_settings):
    async with serve(live_settings, live_factory=LiveSessions) as h:
        h.app[LIVE].pipeline_config = PipelineConfig(fit_timeout_s=2.0)
        _, key = await h.new_app()
        wall = [np.full((480, 640, 3), 120, np.uint8) for _ in range(10)]
        res = await run_client(h, key, wall)
        assert res["outcome"] == {"type": "outcome", "result": "retry", "reason": "no_face"}
        assert res["status"]["result"]["verdict"] == "retry"
        assert "challenging" not in [e["state"] for e in res["status"]["events"]]
        guid = {m["code"] for _, m in res["messages"] if m["type"] == "guidance"}
        assert guid == {"no_face"}


async def test_an_h264_stream_has_its_evidence_video_re_encoded_to_mp4(live_settings):
    async with serve(live_settings, live_factory=LiveSessions) as h:
        _, key = await h.new_app()
        res = await run_client(h, key, face_frames(), codec="H264")
        assert "H264/90000" in res["answer"] and "VP8/90000" not in res["answer"]
        st = res["status"]
        assert st["status"] == "done"
        sid = res["session"]["session_id"]
        video_obj = next(o for o in await h.app[RECORDS].media_objects(sid) if o["kind"] == "video")
        assert video_obj["key"].endswith("/challenge.mp4") and video_obj["content_type"] == "video/mp4"
        container = av.open(io.BytesIO(await h.app[MEDIA].get(video_obj["key"])))
        assert container.streams.video[0].codec_context.name == "h264"
        frames = list(container.decode(video=0))
        counts, timings = st["result"]["counts"], st["result"]["timings"]
        assert counts["video_frames"] == len(frames) > 20 and counts["video_abandoned"] == 0
        assert timings["video_encode_ms_per_frame"] > 0 and "video_mux_ms" not in timings
