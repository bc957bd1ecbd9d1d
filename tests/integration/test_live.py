"""The live pipeline behind the real API, over a real WebRTC connection on 127.0.0.1:
an aiortc client plays the applicant's camera and page."""

from __future__ import annotations

import asyncio
import json
import time
from fractions import Fraction
from typing import Any

import av
import cv2
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

from stream_ekyc.api.app import LIVE, MEDIA, RECORDS
from stream_ekyc.live import LiveSessions, loopback_only_sdp
from stream_ekyc.pipeline import PipelineConfig

from .conftest import auth, serve


class FrameTrack(VideoStreamTrack):
    """Plays a list of BGR images at ``fps`` in real time, looping."""

    def __init__(self, images: list[np.ndarray], fps: float = 30.0):
        super().__init__()
        self.images = images
        self.fps = fps
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
        frame.pts = int(self.i * 90000 / self.fps)
        frame.time_base = Fraction(1, 90000)
        self.i += 1
        return frame


async def run_client(h, key: str, images: list[np.ndarray], timeout: float = 40.0) -> dict[str, Any]:
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

    pc.addTrack(FrameTrack(images))
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
    return {"session": s, "outcome": outcome, "messages": messages, "status": body}


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
        res = await run_client(h, key, face_frames())
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
        r = await h.client.get(f"/v1/sessions/{sid}/best-frame", headers=auth(key))
        assert r.status == 200 and r.content_type == "image/jpeg"
        assert (await r.read())[:2] == b"\xff\xd8"
        counts = st["result"]["counts"]
        assert counts["received"] >= counts["analysed"] > 20
        assert h.app[LIVE].active_count() == 0


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
