"""The score command's contract: JSON on stdout and exit 0 whatever the verdict; exit 2
with one line on stderr for unusable input."""

import json
import random
import subprocess
import sys

import av
import numpy as np
import pytest

from stream_ekyc import challenge as C
from stream_ekyc.analysis import ANALYSIS_FPS

REQUIRED = {"verdict", "score", "confidence", "reasons", "lag_ms", "frames", "frames_with_face",
            "best_frame", "elapsed_ms"}


def run(*args):
    p = subprocess.run([sys.executable, "-m", "stream_ekyc.cli", *args], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    ch = C.generate(start=0.8, rng=random.Random(1))
    (d / "ch.json").write_text(ch.to_json())
    (d / "bad.json").write_text("{not json")
    (d / "schema.json").write_text(json.dumps({"version": 1, "steps": [{"t": 0, "rgb": [0, 0, 0]}]}))
    (d / "notvideo.webm").write_bytes(b"\x1aE\xdf\xa3 this is not a webm file" * 10)
    (d / "empty.mp4").write_bytes(b"")
    # an empty scene (a grey wall) recorded as real H.264: a valid video with no face
    with av.open(str(d / "wall.mp4"), "w") as out:
        st = out.add_stream("libx264", rate=30)
        st.width, st.height, st.pix_fmt = 320, 240, "yuv420p"
        rng = np.random.default_rng(0)
        for i in range(120):
            img = np.clip(120 + rng.normal(0, 3, (240, 320, 3)), 0, 255).astype(np.uint8)
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    return d


def test_empty_scene_scores_retry_no_face_with_exit_0(files):
    code, out, err = run("score", str(files / "wall.mp4"), "--challenge", str(files / "ch.json"))
    assert code == 0, err
    res = json.loads(out)
    assert REQUIRED <= set(res)
    assert res["verdict"] == "retry" and "no_face" in res["reasons"]
    assert res["frames"] == 120 and res["frames_with_face"] == 0
    # analysed at the rate the live pipeline analyses its scoring window: every other frame of 30 fps
    assert ANALYSIS_FPS == 15.0 and res["frames_analysed"] == 60
    assert res["best_frame"] is None


@pytest.mark.parametrize("video, chfile, needle", [
    ("notvideo.webm", "ch.json", "cannot"),
    ("empty.mp4", "ch.json", "cannot"),
    ("missing.webm", "ch.json", "cannot"),
    ("wall.mp4", "bad.json", "not valid JSON"),
    ("wall.mp4", "schema.json", "steps[0]"),
    ("wall.mp4", "nofile.json", "cannot read challenge"),
])
def test_bad_input_exits_2_with_one_line(files, video, chfile, needle):
    code, out, err = run("score", str(files / video), "--challenge", str(files / chfile))
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err


def test_usage_errors_exit_2_with_one_line():
    for args in ([], ["score"], ["score", "x.webm"], ["nonsense"]):
        code, out, err = run(*args)
        assert code == 2 and len(err.strip().splitlines()) == 1, (args, err)
