"""The evidence video from the received VP8 frames: the buffer the receiver tap fills
(keyframe start, caps, window), the tap itself on a receiver-shaped object, and the WebM mux
of real VP8 frames decoded back."""

from __future__ import annotations

import io
import logging
import queue
from fractions import Fraction
from types import SimpleNamespace

import av
import numpy as np
import pytest

from stream_ekyc import encoded_frame_tap
from stream_ekyc.encoded_frame_tap import TappedQueue, tap_encoded_frames
from stream_ekyc.vp8_evidence import EncodedFrame, Vp8FrameBuffer, mux_webm, vp8_keyframe_size

TICK = 3000   # 30 fps at 90 kHz


def key(n: int = 0, size: int = 40) -> bytes:
    """A synthetic VP8 keyframe header (tag bit 0 clear, start code, 320x240) and padding."""
    return bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00]) + bytes([n % 256]) * (size - 10)


def inter(n: int = 0, size: int = 20) -> bytes:
    return bytes([0x31, 0x01, 0x00]) + bytes([n % 256]) * (size - 3)


def feed(buf: Vp8FrameBuffer, frames: list[tuple[int, bytes]], codec: str = "VP8") -> None:
    for ts, data in frames:
        buf(codec, ts, data)


def test_keyframe_header_parsing():
    assert vp8_keyframe_size(key()) == (320, 240)
    assert vp8_keyframe_size(inter()) is None
    assert vp8_keyframe_size(key()[:9]) is None
    broken = bytearray(key())
    broken[4] = 0
    assert vp8_keyframe_size(bytes(broken)) is None      # no start code: not a usable keyframe


def test_the_buffer_starts_at_a_keyframe_and_each_keyframe_restarts_it_before_the_window():
    buf = Vp8FrameBuffer()
    feed(buf, [(0, inter(0)), (TICK, inter(1))])          # no keyframe yet: not decodable alone
    assert buf.frames == [] and buf.undecodable == 2 and not buf.usable
    feed(buf, [(2 * TICK, key(2)), (3 * TICK, inter(3)), (4 * TICK, inter(4))])
    assert [f.timestamp for f in buf.frames] == [2 * TICK, 3 * TICK, 4 * TICK]
    assert [f.keyframe for f in buf.frames] == [True, False, False] and buf.usable
    assert buf.bytes == len(key()) + 2 * len(inter())
    feed(buf, [(5 * TICK, key(5)), (6 * TICK, inter(6))])  # a newer keyframe: the older run goes
    assert [f.timestamp for f in buf.frames] == [5 * TICK, 6 * TICK]
    assert buf.bytes == len(key()) + len(inter())


def test_the_window_keeps_the_last_keyframe_at_or_before_its_start_and_stops_at_its_end():
    buf = Vp8FrameBuffer(tail_margin=2 * TICK)
    feed(buf, [(0, key()), (TICK, inter())])
    buf.set_window(10 * TICK, 20 * TICK)
    for i in range(2, 30):
        buf("VP8", i * TICK, key(i) if i in (8, 10, 14) else inter(i))
    # keyframes at 8 and 10 (≤ start) restarted the run; the one at 14 is inside the window
    assert buf.frames[0].timestamp == 10 * TICK
    assert buf.frames[-1].timestamp == 22 * TICK            # the end plus the margin, no further
    assert buf.past_window == 7
    got = buf.take(10 * TICK, 20 * TICK)
    assert [f.timestamp for f in got] == [i * TICK for i in range(10, 21)]
    assert [f.keyframe for f in got] == [i in (10, 14) for i in range(10, 21)]
    # a later start (the clock mapping moved): still from the last keyframe at or before it
    got = buf.take(16 * TICK, 20 * TICK)
    assert got[0].timestamp == 14 * TICK and got[-1].timestamp == 20 * TICK
    # a start before the run's first keyframe: the run as kept
    assert buf.take(0, 12 * TICK)[0].timestamp == 10 * TICK
    buf.close()
    assert buf.frames == [] and buf.take(10 * TICK, 20 * TICK) == []
    buf("VP8", 30 * TICK, key())
    assert buf.frames == []                                 # closed: nothing is kept any more


@pytest.mark.parametrize("cap", ["frames", "bytes"])
def test_past_a_cap_the_recording_is_abandoned_not_grown(cap):
    buf = Vp8FrameBuffer(max_frames=10, max_bytes=10**9) if cap == "frames" else \
        Vp8FrameBuffer(max_frames=10**6, max_bytes=len(key()) + 5 * len(inter()))
    feed(buf, [(0, key())] + [(i * TICK, inter(i)) for i in range(1, 20)])
    assert buf.abandoned == cap
    assert buf.frames == [] and buf.bytes == 0 and not buf.usable
    feed(buf, [(20 * TICK, key())])                         # a later keyframe does not restart it
    assert buf.frames == [] and buf.take(0, 30 * TICK) == []


def test_another_codec_is_not_kept():
    buf = Vp8FrameBuffer()
    feed(buf, [(0, b"\x00\x00\x00\x01\x67" + b"h" * 30), (TICK, b"\x00\x00\x00\x01\x41" + b"p" * 20)], codec="H264")
    assert buf.codec == "H264" and buf.frames == [] and not buf.usable
    feed(buf, [(2 * TICK, key()), (3 * TICK, inter())])
    feed(buf, [(4 * TICK, b"\x00\x00\x00\x01\x41")], codec="H264")   # a switch drops the VP8 run
    assert buf.codec == "H264" and buf.frames == []


# --- the tap ---------------------------------------------------------------------------------

class FakeReceiver:
    """The two private attributes the tap relies on, as aiortc 1.16 names them."""

    def __init__(self) -> None:
        self._RTCRtpReceiver__decoder_queue = queue.Queue()
        self._RTCRtpReceiver__decoder_thread = None


def test_the_tap_forwards_every_item_and_copies_the_encoded_frames_to_the_sink():
    rx = FakeReceiver()
    got: list[tuple[str, int, bytes]] = []
    assert tap_encoded_frames(rx, lambda *a: got.append(a))
    q = rx._RTCRtpReceiver__decoder_queue
    assert isinstance(q, TappedQueue)
    codec = SimpleNamespace(name="VP8")
    frame = SimpleNamespace(data=b"abc", timestamp=3000)
    q.put((codec, frame))
    q.put(None)                                 # the decoder's stop signal goes through untouched
    assert q.get() == (codec, frame) and q.get() is None
    assert got == [("VP8", 3000, b"abc")]


def test_a_failing_sink_does_not_break_reception():
    rx = FakeReceiver()

    def boom(*_):
        raise RuntimeError("sink bug")

    assert tap_encoded_frames(rx, boom)
    q = rx._RTCRtpReceiver__decoder_queue
    q.put((SimpleNamespace(name="VP8"), SimpleNamespace(data=b"x", timestamp=0)))
    assert q.qsize() == 1 and q.sink_errors == 1


def test_without_the_private_queue_the_tap_warns_once_and_changes_nothing(monkeypatch, caplog):
    monkeypatch.setattr(encoded_frame_tap, "_warned", False)
    caplog.set_level(logging.WARNING, logger="stream_ekyc.encoded_frame_tap")
    other = SimpleNamespace(_decoder_queue=queue.Queue())    # a future aiortc's layout
    assert not tap_encoded_frames(other, lambda *a: None)
    assert not tap_encoded_frames(other, lambda *a: None)
    assert type(other._decoder_queue) is queue.Queue
    started = FakeReceiver()
    started._RTCRtpReceiver__decoder_thread = object()       # too late: the decoder reads the old queue
    assert not tap_encoded_frames(started, lambda *a: None)
    assert type(started._RTCRtpReceiver__decoder_queue) is queue.Queue
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "1.16.0" in warnings[0].getMessage()


def test_the_real_receiver_has_what_the_tap_relies_on():
    from aiortc import RTCRtpReceiver
    from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport
    from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport

    transport = RTCDtlsTransport(RTCIceTransport(RTCIceGatherer()), [RTCCertificate.generateCertificate()])
    rx = RTCRtpReceiver("video", transport)
    assert tap_encoded_frames(rx, lambda *a: None)
    assert isinstance(rx._RTCRtpReceiver__decoder_queue, TappedQueue)


# --- real VP8 frames through the buffer, muxed, decoded back ----------------------------------

def encode_vp8(n: int, w: int = 320, h: int = 240, key_every: int = 0) -> list[tuple[bytes, bool]]:
    """n frames of a moving gradient encoded with libvpx (realtime, like a browser)."""
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
    enc.time_base = Fraction(1, 30)
    enc.bit_rate = 500_000
    enc.gop_size = key_every or 3000
    enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    out: list[tuple[bytes, bool]] = []
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        img = np.stack([(xx + 4 * i) % 256, (yy + 2 * i) % 256, np.full_like(xx, 90)], -1).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [(bytes(p), p.is_keyframe) for p in enc.encode(frame)]
    out += [(bytes(p), p.is_keyframe) for p in enc.encode(None)]
    assert len(out) == n
    return out


def decode(webm: bytes) -> tuple[av.container.InputContainer, list[av.VideoFrame]]:
    c = av.open(io.BytesIO(webm))
    return c, list(c.decode(video=0))


def test_real_vp8_frames_are_muxed_as_they_are_and_decode_back_frame_by_frame():
    packets = encode_vp8(45, key_every=20)                  # keyframes at 0, 20, 40
    assert [i for i, (_, k) in enumerate(packets) if k] == [0, 20, 40]
    # the synthetic-tag rule agrees with the encoder's keyframe flags
    assert [vp8_keyframe_size(d) is not None for d, _ in packets] == [k for _, k in packets]
    base = 123_456                                          # RTP timestamps need not start at 0
    buf = Vp8FrameBuffer()
    for i, (data, _) in enumerate(packets[:10]):            # before the window is known
        buf("VP8", base + i * TICK, data)
    buf.set_window(base + 25 * TICK, base + 35 * TICK)
    for i, (data, _) in enumerate(packets[10:], start=10):
        buf("VP8", base + i * TICK, data)
    frames = buf.take(base + 25 * TICK, base + 35 * TICK)
    assert frames[0].timestamp == base + 20 * TICK          # the keyframe at 20 (≤ 25), to 35
    assert len(frames) == 16 and [f.data for f in frames] == [d for d, _ in packets[20:36]]

    webm = mux_webm(frames)
    assert webm[:4] == b"\x1a\x45\xdf\xa3"                  # EBML: a Matroska/WebM file
    c, decoded = decode(webm)
    assert c.format.name.startswith("matroska")
    st = c.streams.video[0]
    assert st.codec_context.name == "vp8" and (st.width, st.height) == (320, 240)
    assert len(decoded) == 16
    assert all((f.width, f.height) == (320, 240) for f in decoded)
    assert [round(f.time, 3) for f in decoded] == [round(i / 30, 3) for i in range(16)]
    assert c.duration / 1e6 == pytest.approx(16 / 30, abs=0.002)    # the last frame lasts one interval
    # the packets in the file are the received frames, byte for byte
    c2 = av.open(io.BytesIO(webm))
    assert [bytes(p) for p in c2.demux(video=0) if p.size] == [f.data for f in frames]
    # and decode to what the receiver's own decoder makes of the same frames
    dec = av.CodecContext.create("libvpx", "r")
    ref = [f for d, _ in packets[:36] for f in dec.decode(av.Packet(d))][20:]
    for a, b in zip(decoded, ref):
        assert np.array_equal(a.to_ndarray(format="yuv420p"), b.to_ndarray(format="yuv420p"))


def test_timestamps_are_kept_strictly_increasing_and_a_non_keyframe_start_is_refused():
    packets = encode_vp8(4)
    frames = [EncodedFrame(ts, d, k) for ts, (d, k) in zip((900, 900, 3900, 6900), packets)]
    c, decoded = decode(mux_webm(frames))
    times = [f.time for f in decoded]
    assert len(decoded) == 4 and all(b > a for a, b in zip(times, times[1:]))
    with pytest.raises(ValueError):
        mux_webm(frames[1:])
    with pytest.raises(ValueError):
        mux_webm([])
