"""A copy of every encoded frame an aiortc receiver re-assembles, taken before decoding.

aiortc has no public API for the encoded frames it receives: ``RTCRtpReceiver`` decodes
them inside its own decoder thread and exposes only decoded ``av.VideoFrame`` objects. This
module relies on aiortc internals, checked against **aiortc 1.16.0**
(``aiortc/rtcrtpreceiver.py``):

- ``RTCRtpReceiver.__init__`` creates a private ``queue.Queue`` ``self.__decoder_queue``
  (mangled name ``_RTCRtpReceiver__decoder_queue``);
- ``_handle_rtp_packet`` (a coroutine on the event loop) re-assembles each encoded frame in
  its jitter buffer, maps its RTP timestamp (90 kHz for video; unwrapped, 0 at the first
  frame — the same number the decoder gives the decoded frame as ``pts``) and calls
  ``put((codec, JitterFrame(data, timestamp)))`` on that queue; ``__stop_decoder`` puts
  ``None``;
- ``receive()`` starts the decoder thread with that queue object as its input; aiortc calls
  it after the ``track`` event, when DTLS is up (``RTCPeerConnection.__connect``).

``tap_encoded_frames`` swaps that queue, before the decoder thread exists, for a
``TappedQueue`` whose ``put`` does what the original did and also hands
``(codec name, timestamp, frame bytes)`` to a sink. Nothing is copied (the bytes object is
shared with the decoder, and immutable). It is fail-safe: when the private attribute is
missing or not a plain ``queue.Queue`` (another aiortc), or the decoder thread has already
started, nothing is changed, one warning is logged (once per process) and it returns False,
so the caller keeps its decoded-frame path.
"""

from __future__ import annotations

import logging
import queue
from typing import Any, Callable

log = logging.getLogger(__name__)

#: ``sink(codec_name, rtp_timestamp, data)``, called on the event loop thread for every
#: re-assembled frame. It must be O(1) and never block: it runs inside aiortc's packet path.
EncodedFrameSink = Callable[[str, int, bytes], None]

CHECKED_AIORTC = "1.16.0"
_QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"
_THREAD_ATTR = "_RTCRtpReceiver__decoder_thread"

_warned = False


class TappedQueue(queue.Queue[Any]):
    """The decoder's input queue, reporting each encoded frame to ``sink`` as it is queued."""

    def __init__(self, sink: EncodedFrameSink) -> None:
        super().__init__()
        self.sink = sink
        self.sink_errors = 0

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)     # unbounded: never blocks
        if item is None:                      # the decoder's stop signal
            return
        try:
            codec, frame = item
            self.sink(codec.name, int(frame.timestamp), frame.data)
        except Exception:   # the evidence copy must never break reception
            self.sink_errors += 1
            if self.sink_errors == 1:
                log.exception("encoded frame tap: the sink failed; its frames are incomplete")


def _warn(why: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning("encoded frame tap unavailable (%s; checked against aiortc %s): the evidence "
                    "video is re-encoded from the decoded frames", why, CHECKED_AIORTC)


def tap_encoded_frames(receiver: Any, sink: EncodedFrameSink) -> bool:
    """Route a copy of ``receiver``'s encoded frames to ``sink``; False (and nothing changed)
    when this aiortc does not look like the one checked. Call it in the ``track`` event
    handler, before the receiver's decoder thread starts."""
    current = getattr(receiver, _QUEUE_ATTR, None)
    if type(current) is not queue.Queue:
        _warn(f"no plain queue at RTCRtpReceiver.{_QUEUE_ATTR}")
        return False
    if not hasattr(receiver, _THREAD_ATTR):
        _warn(f"no RTCRtpReceiver.{_THREAD_ATTR}")
        return False
    if getattr(receiver, _THREAD_ATTR) is not None:
        _warn("the decoder thread had already started")
        return False
    if current.qsize():
        _warn("frames were already queued")
        return False
    setattr(receiver, _QUEUE_ATTR, TappedQueue(sink))
    return True


def receiver_of(pc: Any, track: Any) -> Any | None:
    """The ``RTCRtpReceiver`` of ``track`` on peer connection ``pc`` (None if not found)."""
    for transceiver in pc.getTransceivers():
        receiver = getattr(transceiver, "receiver", None)
        if receiver is not None and getattr(receiver, "track", None) is track:
            return receiver
    return None
