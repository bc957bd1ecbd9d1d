"""The evidence video exactly as the applicant's browser encoded it: the received VP8 frames
from the last keyframe at or before the evidence window to the window's end, muxed into WebM
(no decode, no encode).

``Vp8FrameBuffer`` is the sink of ``encoded_frame_tap``: it is called on the event loop for
every received frame, so it does O(1) work and never blocks. It always holds a decodable run
(a keyframe, then the frames after it), bounded in bytes and frames: past either cap the
recording is abandoned for the session (``abandoned`` says which cap), never grown. Before
the window is known each keyframe restarts the run; once it is known (``set_window``, in RTP
ticks), a keyframe at or before the window start still restarts it, later frames are
appended, and frames past the window's end (plus a margin for the clock mapping's drift)
are not kept. ``take`` trims the run to the final window.

``mux_webm`` runs in an executor: it writes the frames as they are, with the RTP timestamps
(90 kHz, relative to the first frame) as the packets' times.
"""

from __future__ import annotations

import io
import statistics
from fractions import Fraction
from typing import NamedTuple, Sequence

VP8 = "VP8"
RTP_CLOCK = 90000
WEBM = "video/webm"


class EncodedFrame(NamedTuple):
    timestamp: int     # RTP ticks (90 kHz)
    data: bytes        # one whole VP8 frame, payload descriptors removed
    keyframe: bool


def vp8_keyframe_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a VP8 keyframe's header (RFC 6386 § 9.1: frame tag bit 0 is 0 for
    a keyframe, then the start code 9d 01 2a and two 14-bit sizes); None for an inter frame or
    anything that is not a well-formed keyframe."""
    if len(data) < 10 or data[0] & 1 or data[3:6] != b"\x9d\x01\x2a":
        return None
    w = (data[6] | data[7] << 8) & 0x3FFF
    h = (data[8] | data[9] << 8) & 0x3FFF
    return (w, h) if w and h else None


class Vp8FrameBuffer:
    """One session's received VP8 frames: a keyframe and the frames after it, bounded."""

    def __init__(self, max_bytes: int = 16 << 20, max_frames: int = 1800,
                 tail_margin: int = RTP_CLOCK // 2) -> None:
        self.max_bytes = max_bytes
        self.max_frames = max_frames          # 60 s at 30 fps
        self.tail_margin = tail_margin        # ticks kept past the window's end until take()
        self.frames: list[EncodedFrame] = []
        self.bytes = 0
        self.codec: str | None = None         # the codec of the last frame seen
        self.abandoned: str | None = None     # "bytes" | "frames": a cap was hit, nothing is kept
        self.closed = False
        self.seen = 0                         # frames offered
        self.undecodable = 0                  # VP8 frames with no keyframe before them
        self.past_window = 0                  # frames after the window's end
        self._window: tuple[int, int] | None = None

    # --- the tap's sink (event loop thread; O(1)) ------------------------------------------
    def __call__(self, codec_name: str, timestamp: int, data: bytes) -> None:
        if self.closed or self.abandoned is not None:
            return
        self.seen += 1
        if codec_name != VP8:
            if self.codec != codec_name:
                self.codec = codec_name
                self._clear()
            return
        self.codec = VP8
        key = vp8_keyframe_size(data) is not None
        win = self._window
        if win is not None and timestamp > win[1] + self.tail_margin:
            self.past_window += 1
            return
        if key and (win is None or timestamp <= win[0]):
            self._clear()                     # a later start that is still early enough
        elif not self.frames:
            self.undecodable += 1
            return
        if len(self.frames) >= self.max_frames or self.bytes + len(data) > self.max_bytes:
            self.abandoned = "frames" if len(self.frames) >= self.max_frames else "bytes"
            self._clear()
            return
        self.frames.append(EncodedFrame(timestamp, data, key))
        self.bytes += len(data)

    def _clear(self) -> None:
        self.frames = []
        self.bytes = 0

    # --- the pipeline's side -----------------------------------------------------------------
    @property
    def usable(self) -> bool:
        """VP8 frames are being kept (the stream is VP8, no cap was hit, a keyframe came)."""
        return not self.closed and self.abandoned is None and self.codec == VP8 and bool(self.frames)

    def set_window(self, start: int, end: int) -> None:
        """The evidence window in RTP ticks; may be called again as the clock mapping settles."""
        self._window = (start, end)

    def take(self, start: int, end: int) -> list[EncodedFrame]:
        """The kept frames from the last keyframe at or before ``start`` (or the first kept
        keyframe, if none is that early) to ``end``; empty if nothing usable is kept."""
        if not self.usable:
            return []
        frames = self.frames
        first = 0
        for i, f in enumerate(frames):
            if f.timestamp > end:
                frames = frames[:i]
                break
            if f.keyframe and f.timestamp <= start:
                first = i
        return frames[first:]

    def close(self) -> None:
        """Stop keeping frames and let go of those kept."""
        self.closed = True
        self._clear()


def mux_webm(frames: Sequence[EncodedFrame]) -> bytes:
    """The frames as a WebM file with one VP8 stream, no decode, no encode. The first frame
    must be a keyframe; the stream's size is that keyframe's (the size the decoder gives its
    frames). Times are the RTP timestamps relative to the first frame (kept strictly
    increasing); each frame lasts until the next, the last one the typical frame interval."""
    import av

    if not frames:
        raise ValueError("no frames")
    size = vp8_keyframe_size(frames[0].data)
    if size is None:
        raise ValueError("the first frame is not a VP8 keyframe")
    tb = Fraction(1, RTP_CLOCK)
    t0 = frames[0].timestamp
    pts: list[int] = []
    for f in frames:
        t = f.timestamp - t0
        pts.append(t if not pts or t > pts[-1] else pts[-1] + RTP_CLOCK // 1000)
    steps = [b - a for a, b in zip(pts, pts[1:])]
    typical = int(statistics.median(steps)) if steps else RTP_CLOCK // 30
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="webm") as out:
        stream = out.add_mux_stream("vp8", width=size[0], height=size[1], time_base=tb)
        for i, f in enumerate(frames):
            pkt = av.Packet(f.data)
            pkt.stream = stream
            pkt.time_base = tb
            pkt.pts = pkt.dts = pts[i]
            pkt.duration = steps[i] if i < len(steps) else typical
            pkt.is_keyframe = f.keyframe
            out.mux(pkt)
    return buf.getvalue()
