"""What the live pipeline keeps of the page's data-channel messages (pure logic: no peer)."""

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

from stream_ekyc.pipeline import LivePipeline, PipelineConfig


def _pipeline_after(messages: list, config: PipelineConfig | None = None) -> LivePipeline:
    async def main() -> LivePipeline:
        with ThreadPoolExecutor(1) as ex:
            p = LivePipeline(executor=ex, send=lambda m: None, config=config)
            for m in messages:
                p.on_message(m if isinstance(m, str) else json.dumps(m))
            return p
    return asyncio.run(main())


def test_exposure_requests_only_for_a_page_that_can_follow_them():
    hello = {"type": "hello", "caps": {"camera": {"w": 640, "h": 480, "exposure": True}, "extra": "dropped"}}
    assert _pipeline_after([hello])._exposure_settable()
    assert "extra" not in _pipeline_after([hello]).caps
    assert not _pipeline_after([hello], PipelineConfig(exposure_control=False))._exposure_settable()
    for camera in ({"w": 640}, {"exposure": "yes"}, {"exposure": 1}, "camera"):
        assert not _pipeline_after([{"type": "hello", "caps": {"camera": camera}}])._exposure_settable()
    assert not _pipeline_after([])._exposure_settable()


def test_camera_reports_keep_known_codes_only_and_are_bounded():
    sent = ["adjusted", "locked", "Jane Doe, born 1970-01-01", 5, None, "at_limit"]
    p = _pipeline_after([{"type": "camera", "exposure": v} for v in sent] + ["not json", "[1, 2]"])
    assert p.camera_reports == ["adjusted", "locked", "other", "other", "other", "at_limit"]
    p = _pipeline_after([{"type": "camera", "exposure": "adjusted"}] * 40)
    assert p.camera_reports == ["adjusted"] * 16
