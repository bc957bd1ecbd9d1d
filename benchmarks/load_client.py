"""Synthetic applicants for the load benchmark: aiortc clients with a face that answers the
colours the server sends, like a real face.

Assets (``prepare_assets``): for one simulator seed, the bona fide face of
``simulate.Session`` is rendered under each of the 8 palette colours and the rest colour
(a few frames each, with the simulator's motion, noise and camera; auto-exposure locked so
every colour is seen with the same exposure), then pre-encoded to VP8 as one short chain
per colour (keyframe first, then inter frames playing the variants back and forth). At run
time the client only packetizes: it sends the chain of the colour currently *lit on the
face*, restarting at the chain's keyframe whenever that colour changes (a decodable
stream: the server's decoder never sees a frame whose reference it lacks). So client CPU
stays small, and the server receives a real 640x480 30 fps VP8 stream.

A colour reaches the face after a genuine latency (drawn per session, 50-150 ms). Attacks:
``replay`` plays a recorded face that answers a different, earlier colour sequence (its own
random schedule), ``static`` never answers, ``late`` answers this session's colours 0.5 s
late.

Run as a process by ``load.py``::

    python benchmarks/load_client.py --url http://127.0.0.1:PORT --spec spec.json --out out.jsonl

``spec.json``: {"slots": [{"kind", "assets", "rounds", "start_delay_s", "lag_s"}...],
"timeout_s", "decode_only_s", "fps"}. One JSON line per finished session goes to ``--out``,
and a final ``{"type": "rusage"}`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import pickle
import random
import resource
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

REST = "rest"
KINDS = ("bona_fide", "replay", "static", "late")
SEGMENT_S = 10.0            # simulator time given to each colour (motion/ambient use t mod this)
LATE_LAG_S = 0.5


def colour_key(rgb: Any) -> str:
    return "%d,%d,%d" % tuple(int(v) for v in rgb)


# ======================================================================================
# Assets: rendered with the simulator's physics, pre-encoded per colour
# ======================================================================================

def render_palette(seed: int, size: tuple[int, int] = (640, 480), fps: float = 30.0,
                   variants: int = 6) -> tuple[dict[str, list[np.ndarray]], dict[str, Any]]:
    """BGR frames of the seed's live face lit by each palette colour (and the rest colour):
    ``variants`` frames each, at the same instants of the head's motion for every colour."""
    import simulate as sim
    from stream_ekyc import challenge as chmod

    # no nod or turn: a variant set replayed back and forth must look like a still applicant;
    # these clients claim no exposure control (hello), so the simulator's model of it is off
    ov: dict[str, Any] = {"size": list(size), "fps": float(fps), "ae_mode": "locked",
                          "nod": [0.0, 1.0, 0.0, "pitch"], "exposure_control": False}
    s = sim.Session("bona_fide", seed, ov)
    if s.p["wb_mode"] == "auto":      # grey-world AWB would chase the colours; fix it
        s.p["wb_mode"] = "daylight"
    colours: list[tuple[str, tuple[int, int, int]]] = [(REST, tuple(s.p["rest_rgb"]))]
    colours += [(colour_key(c), c) for c in chmod.PALETTE]
    lin = lambda rgb: chmod.srgb_to_linear(np.array(rgb, float) / 255.0)  # noqa: E731
    # segment i shows colour i for the whole of [i*D, (i+1)*D); segment 0 is the rest colour
    steps = [(i * SEGMENT_S, (i + 1) * SEGMENT_S, lin(rgb)) for i, (_, rgb) in enumerate(colours) if i > 0]
    sig = sim.ScreenSignal(lin(colours[0][1]), steps)
    s.sig_obj = s.sig_real = s.sig_bg = sig
    # every colour sees the same head motion and ambient: the simulator's clock, modulo D
    cls = type(s)
    s._obj_motion = lambda t: cls._obj_motion(s, math.fmod(t, SEGMENT_S))
    s._shake = lambda t: cls._shake(s, math.fmod(t, SEGMENT_S))
    s._ambient_rows = lambda t0, t1: cls._ambient_rows(s, np.fmod(t0, SEGMENT_S), np.fmod(t1, SEGMENT_S))
    offsets = 1.0 + np.arange(variants) * (2.0 / fps)     # two frame intervals apart
    s.times = np.concatenate([i * SEGMENT_S + offsets for i in range(len(colours))])
    s.duration = SEGMENT_S
    frames = [img for _, img in s.frames()]
    out = {key: frames[i * variants:(i + 1) * variants] for i, (key, _) in enumerate(colours)}
    return out, {"seed": seed, "rest_rgb": list(colours[0][1]), "size": list(size), "fps": fps,
                 "face_region_px": s.meta()["face_region_px"]}


def _pingpong(n: int, length: int) -> list[int]:
    cyc = list(range(n)) + list(range(n - 2, 0, -1)) if n > 1 else [0]
    return [cyc[i % len(cyc)] for i in range(length)]


def encode_chain(images: list[np.ndarray], length: int, fps: float, bitrate: int) -> list[bytes]:
    """One VP8 chain: a keyframe, then inter frames; the encoder is aiortc's configuration
    (libvpx realtime, CBR)."""
    import av

    h, w = images[0].shape[:2]
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = w, h
    codec.bit_rate = bitrate
    codec.pix_fmt = "yuv420p"
    codec.time_base = Fraction(1, int(round(fps)))
    codec.gop_size = 3000
    codec.qmin, codec.qmax = 2, 56
    codec.options = {"bufsize": str(bitrate), "cpu-used": "-6", "deadline": "realtime", "lag-in-frames": "0",
                     "minrate": str(bitrate), "maxrate": str(bitrate), "noise-sensitivity": "4",
                     "overshoot-pct": "15", "partitions": "0", "static-thresh": "1", "undershoot-pct": "100"}
    codec.thread_count = 1
    yuv = [av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p") for img in images]
    out: list[bytes] = []
    for i, k in enumerate(_pingpong(len(images), length)):
        f = av.VideoFrame.from_ndarray(yuv[k].to_ndarray(), format="yuv420p")
        f.pts = i
        f.time_base = codec.time_base
        out.append(b"".join(bytes(p) for p in codec.encode(f)))
    out[-1] += b"".join(bytes(p) for p in codec.encode(None))
    return out


def prepare_assets(seed: int, path: Path, size: tuple[int, int] = (640, 480), fps: float = 30.0,
                   variants: int = 6, bitrate: int = 1_000_000) -> dict[str, Any]:
    """Render and encode one seed's face; pickle {chains: {colour: [VP8 frame bytes]}, meta}."""
    frames, meta = render_palette(seed, size, fps, variants)
    chains = {}
    for key, imgs in frames.items():
        # the rest colour is held for seconds: a longer chain (a keyframe every 2 s)
        length = int(round(fps * (2.0 if key == REST else 1.0)))
        chains[key] = encode_chain(imgs, length, fps, bitrate)
    meta["bytes_per_s"] = int(sum(len(b) for b in chains[REST]) / 2.0)
    assets = {"chains": chains, "meta": meta}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(assets, protocol=pickle.HIGHEST_PROTOCOL))
    tmp.replace(path)
    return meta


def preview_frames(seed: int, **kw: Any) -> dict[str, list[np.ndarray]]:
    return render_palette(seed, **kw)[0]


# ======================================================================================
# The client
# ======================================================================================

class FaceTrack:
    """Pre-encoded VP8 frames (``av.Packet``) paced at ``fps`` that follow ``lit``: the
    colour currently lighting the face."""

    def __init__(self, chains: dict[str, list[bytes]], fps: float) -> None:
        self.chains = chains
        self.fps = fps
        self.lit = REST
        self._cur = REST
        self._i = 0
        self.n = 0
        self.t0: float | None = None

    def set_lit(self, key: str) -> None:
        self.lit = key if key in self.chains else REST

    async def recv(self) -> Any:
        import av

        if self.t0 is None:
            self.t0 = time.monotonic()
        due = self.t0 + self.n / self.fps
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if self.lit != self._cur:
            self._cur, self._i = self.lit, 0
        chain = self.chains[self._cur]
        if self._i >= len(chain):
            self._i = 0                     # back to the chain's keyframe
        pkt = av.Packet(chain[self._i])
        pkt.pts = int(round(self.n * 90000 / self.fps))
        pkt.time_base = Fraction(1, 90000)
        self._i += 1
        self.n += 1
        return pkt


def make_track(chains: dict[str, list[bytes]], fps: float) -> Any:
    from aiortc.mediastreams import MediaStreamTrack

    class _Track(MediaStreamTrack):
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self.face = FaceTrack(chains, fps)

        async def recv(self) -> Any:
            return await self.face.recv()

    return _Track()


async def run_session(http: Any, url: str, assets: dict[str, Any], kind: str, lag_s: float,
                      timeout_s: float, decode_only_s: float | None, rng: random.Random) -> dict[str, Any]:
    """One applicant from session creation to outcome (or timeout)."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from stream_ekyc import challenge as chmod
    from stream_ekyc.live import loopback_only_sdp

    loop = asyncio.get_running_loop()
    res: dict[str, Any] = {"type": "session", "kind": kind, "lag_s": round(lag_s, 3),
                           "seed": assets["meta"]["seed"], "t_start": time.time()}
    t0 = time.monotonic()
    mark = lambda name: res.__setitem__(name, round(time.monotonic() - t0, 4))  # noqa: E731
    async with http.post(url + "/demo/session", json={}) as r:
        if r.status != 201:
            res.update(error=f"create {r.status}", outcome=None)
            return res
        s = await r.json()
    res["session_id"] = s["session_id"]
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    track = make_track(assets["chains"], assets["meta"]["fps"])
    face = track.face
    outcome: asyncio.Future[dict[str, Any]] = loop.create_future()
    ch = pc.createDataChannel("ekyc", ordered=True)
    colours = 0
    pending: list[asyncio.TimerHandle] = []

    def light(key: str) -> None:
        face.set_lit(key)

    def show(key: str, delay: float) -> None:
        if kind == "static":
            return
        pending.append(loop.call_later(max(0.0, delay), light, key))

    @ch.on("message")
    def on_message(raw: Any) -> None:
        nonlocal colours
        try:
            msg = json.loads(raw)
        except (TypeError, ValueError):
            return
        t = msg.get("type")
        if t == "colour":
            colours += 1
            if colours == 1:
                mark("t_first_colour")
            ch.send(json.dumps({"type": "ack", "step": msg.get("step"), "rgb": msg.get("rgb"),
                                "shown_at": round((time.monotonic() - t0) * 1000, 1)}))
            if kind in ("bona_fide", "late"):
                show(colour_key(msg["rgb"]), lag_s)
        elif t == "rest":
            mark("t_rest")
            if kind in ("bona_fide", "late"):
                show(REST, lag_s)
        elif t == "state":
            mark("t_" + str(msg.get("state")))
        elif t == "outcome" and not outcome.done():
            mark("t_outcome")
            outcome.set_result(msg)

    @ch.on("open")
    def on_open() -> None:
        mark("t_channel_open")
        w, h = assets["meta"]["size"]
        ch.send(json.dumps({"type": "hello", "page_time": 0,
                            "caps": {"screen": {"w": 1280, "h": 800, "dpr": 1},
                                     "camera": {"w": w, "h": h, "fps": assets["meta"]["fps"]},
                                     "reduced_motion": False, "touch": False, "lang": "en"}}))

    replay_task: asyncio.Task[None] | None = None

    async def replay_schedule(first_in: float) -> None:
        # a recording of an earlier session: its own colours, at its own times
        await asyncio.sleep(first_in)
        ch_ = chmod.generate(start=0.0, rng=rng)
        shown = res.setdefault("own_steps", [])
        for step in ch_.steps:
            shown.append([round(time.monotonic() - t0, 3), list(step.rgb)])
            face.set_lit(colour_key(step.rgb))
            await asyncio.sleep(step.duration)
        face.set_lit(REST)

    try:
        pc.addTrack(track)
        await pc.setLocalDescription(await pc.createOffer())
        offer = loopback_only_sdp(pc.localDescription.sdp)
        mark("t_offer")
        async with http.post(f"{url}/v1/sessions/{s['session_id']}/offer",
                             json={"sdp": offer, "type": "offer", "consent": {"privacy": True, "min_age": True}},
                             headers={"Authorization": "Bearer " + s["client_token"]}) as r:
            if r.status != 200:
                res.update(error=f"offer {r.status}: {(await r.text())[:200]}", outcome=None)
                return res
            ans = await r.json()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=ans["sdp"], type=ans["type"]))
        mark("t_answer")
        if kind == "replay" or decode_only_s is not None:
            # the decode-only baseline sends the same kind of stream (colour changes included)
            replay_task = asyncio.ensure_future(replay_schedule(rng.uniform(2.0, 4.0)))
        if decode_only_s is not None:
            await asyncio.sleep(decode_only_s)
            res["outcome"] = "streamed"
        else:
            try:
                msg = await asyncio.wait_for(outcome, timeout_s)
                res["outcome"] = msg.get("result")
                res["reason"] = msg.get("reason")
            except asyncio.TimeoutError:
                res["outcome"] = None
                res["error"] = "timeout"
    except Exception as e:   # a client error is a result, not a crash of the whole process
        res["outcome"] = res.get("outcome")
        res["error"] = f"{type(e).__name__}: {e}"[:200]
    finally:
        for h in pending:
            h.cancel()
        if replay_task is not None:
            replay_task.cancel()
        res["frames_sent"] = face.n
        mark("t_close")
        await pc.close()
    res["colours"] = colours
    return res


async def run_slots(url: str, spec: dict[str, Any], out_path: Path) -> None:
    import aiohttp

    from stream_ekyc.live import restrict_ice_to_loopback

    restrict_ice_to_loopback()
    cache: dict[str, dict[str, Any]] = {}
    for slot in spec["slots"]:
        p = slot["assets"]
        if p not in cache:
            cache[p] = pickle.loads(Path(p).read_bytes())
    out = out_path.open("a", buffering=1)
    timeout_s = float(spec.get("timeout_s", 20.0))
    decode_only_s = spec.get("decode_only_s")

    async def slot_loop(i: int, slot: dict[str, Any], http: Any) -> None:
        rng = random.Random(slot.get("seed", i))
        await asyncio.sleep(float(slot.get("start_delay_s", 0.0)))
        for r in range(int(slot.get("rounds", 1))):
            lag = slot.get("lag_s")
            if lag is None:
                lag = LATE_LAG_S if slot["kind"] == "late" else rng.uniform(0.05, 0.15)
            res = await run_session(http, url, cache[slot["assets"]], slot["kind"], float(lag),
                                    timeout_s, decode_only_s, rng)
            res.update(slot=slot.get("id", i), round=r)
            out.write(json.dumps(res) + "\n")
            await asyncio.sleep(float(slot.get("gap_s", 0.2)))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        await asyncio.gather(*(slot_loop(i, s, http) for i, s in enumerate(spec["slots"])))
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out.write(json.dumps({"type": "rusage", "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
                          "maxrss_mb": round(ru.ru_maxrss / 1024, 1)}) + "\n")
    out.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="load-benchmark client process")
    ap.add_argument("--url", required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if not a.url.startswith("http://127.0.0.1:"):
        print("load_client: error: the server must be on http://127.0.0.1", file=sys.stderr)
        return 2
    spec = json.loads(Path(a.spec).read_text())
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run_slots(a.url, spec, Path(a.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
