"""The session simulator: determinism, encoding, challenge files and physics sanity."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

av = pytest.importorskip("av")
pytest.importorskip("skimage")
simulate = pytest.importorskip("simulate")

from stream_ekyc import challenge as C  # noqa: E402

SMALL = (320, 240)
# nuisances that are not under test held still: exposure and white balance locked, steady
# ambient, no head drift
QUIET = dict(ae_mode="locked", wb_mode="fixed", ambient_drift_per_s=0.0, ambient_wobble=[0.0, 3.0, 0.0],
             flicker_depth=0.0, ambient_ratio=0.5, drift_px_s=0.0, nod=[0.0, 1.0, 0.0, "pitch"])


def _seed_with_black_and_white(start: int = 0) -> int:
    for seed in range(start, start + 200):
        rgbs = {s.rgb for s in C.generate(start=1.0, rng=random.Random(seed)).steps}
        if (0, 0, 0) in rgbs and (255, 255, 255) in rgbs:
            return seed
    raise AssertionError("no seed with both black and white steps")


def _linear_means(frames, box):
    x0, y0, x1, y1 = box
    return np.array([C.srgb_to_linear(f[y0:y1, x0:x1].astype(np.float64) / 255.0).mean() for _, f in frames])


def _face_box(meta):
    x0, y0, x1, y1 = meta["face_region_px"]
    w, h = x1 - x0, y1 - y0
    return x0 + w // 4, y0 + h // 4, x1 - w // 4, y1 - h // 4


def _step_means(times, y, ch, lag, rgb):
    sel = np.zeros(len(times), bool)
    for s in ch.steps:
        if s.rgb == rgb:
            sel |= (times > s.t + lag + 0.04) & (times < s.end + lag - 0.02)
    assert sel.any()
    return float(y[sel].mean())


def _best_lag(times, y, ch):
    best, best_lag = -2.0, None
    for lag in np.arange(0.0, 1.3, 0.01):
        x = ch.linear_rgb_at(times - lag).mean(axis=-1)
        ok = ~np.isnan(x)
        if ok.sum() < 8 or np.std(x[ok]) == 0:
            continue
        c = np.corrcoef(x[ok], y[ok])[0, 1]
        if c > best:
            best, best_lag = c, float(lag)
    return best, best_lag


def test_same_seed_same_frames_and_shared_nuisances():
    f1, ch1, m1 = simulate.render_frames("bona_fide", 3, size=SMALL)
    f2, ch2, m2 = simulate.render_frames("bona_fide", 3, size=SMALL)
    assert ch1 == ch2 and m1 == m2
    assert len(f1) == len(f2) == m1["n_frames"]
    assert all(a[0] == b[0] and np.array_equal(a[1], b[1]) for a, b in zip(f1, f2))
    assert f1[0][0] == 0.0 and f1[0][1].shape == (240, 320, 3) and f1[0][1].dtype == np.uint8
    f3, ch3, m3 = simulate.render_frames("print", 3, size=SMALL)
    assert ch3 == ch1
    for k in ("photo", "fps", "codec", "frame_pts", "ambient_ratio", "display_lag_s", "bitrate"):
        assert m3[k] == m1[k], k
    assert not np.array_equal(f3[5][1], f1[5][1])


@pytest.mark.parametrize("species", simulate.SPECIES)
def test_every_species_encodes_a_readable_file(species, tmp_path):
    r = simulate.render_session(species, 11, tmp_path, size=SMALL)
    meta = json.loads(r.meta.read_text())
    assert r.video.name == f"{species}-11.{'mp4' if meta['codec'] == 'h264' else 'webm'}"
    with av.open(str(r.video)) as c:
        st = c.streams.video[0]
        frames = list(c.decode(st))
        tb = st.time_base
    assert len(frames) == meta["n_frames"]
    assert (frames[0].width, frames[0].height) == tuple(meta["resolution"]) == SMALL
    assert [f.pts for f in frames] == meta["frame_pts"]
    assert abs(float(frames[-1].pts * tb) - meta["last_pts_s"]) < 1e-3
    assert meta["last_pts_s"] < meta["duration_s"] + 1e-6
    obj = json.loads(r.challenge.read_text())
    ch = C.from_dict(obj, strict=True)
    assert obj == ch.to_dict()
    assert meta["species"] == species and meta["seed"] == 11
    assert 0.8 <= ch.start <= 1.5


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_same_seed_same_bytes(codec, tmp_path):
    a = simulate.render_session("replay", 5, tmp_path / "a", size=SMALL, codec=codec)
    b = simulate.render_session("replay", 5, tmp_path / "b", size=SMALL, codec=codec)
    assert a.video.read_bytes() == b.video.read_bytes()
    assert a.meta.read_text() == b.meta.read_text()


def test_bona_fide_face_responds_background_much_less():
    seed = _seed_with_black_and_white()
    frames, ch, meta = simulate.render_frames("bona_fide", seed, size=SMALL, **QUIET)
    times = np.array([t for t, _ in frames])
    face = _linear_means(frames, _face_box(meta))
    lag = meta["display_lag_s"]
    w, b = _step_means(times, face, ch, lag, (255, 255, 255)), _step_means(times, face, ch, lag, (0, 0, 0))
    assert w > 1.15 * b
    assert meta["background_region_px"] is not None
    bg = _linear_means(frames, meta["background_region_px"])
    bw, bb = _step_means(times, bg, ch, lag, (255, 255, 255)), _step_means(times, bg, ch, lag, (0, 0, 0))
    assert (bw / bb - 1) < 0.25 * (w / b - 1)
    corr, est = _best_lag(times, face, ch)
    assert corr > 0.8 and abs(est - lag) <= 0.05


def test_injected_static_does_not_respond():
    seed = _seed_with_black_and_white()
    frames, ch, meta = simulate.render_frames("injected_static", seed, size=SMALL, **QUIET)
    times = np.array([t for t, _ in frames])
    face = _linear_means(frames, _face_box(meta))
    lag = meta["display_lag_s"]
    w, b = _step_means(times, face, ch, lag, (255, 255, 255)), _step_means(times, face, ch, lag, (0, 0, 0))
    assert abs(w / b - 1) < 0.03


def test_late_responds_only_after_its_lag():
    seed = _seed_with_black_and_white()
    frames, ch, meta = simulate.render_frames("late", seed, size=SMALL, **QUIET)
    assert 0.4 <= meta["lag_s"] <= 1.0
    times = np.array([t for t, _ in frames])
    face = _linear_means(frames, _face_box(meta))
    corr, est = _best_lag(times, face, ch)
    assert corr > 0.8 and est >= 0.4 and abs(est - meta["lag_s"]) <= 0.05
    # until the first step's response arrives (>= 0.4 s) the face stays at its rest level:
    # any wobble is small next to the response to the flashes
    lag = meta["lag_s"]
    response = _step_means(times, face, ch, lag, (255, 255, 255)) / _step_means(times, face, ch, lag, (0, 0, 0)) - 1
    first = ch.steps[0].t
    pre = face[(times > first - 0.3) & (times < first)]
    early = face[(times > first) & (times < first + 0.38)]
    assert response > 0.15
    assert pre.size and early.size and np.all(np.abs(early / pre.mean() - 1) < 0.2 * response)


def test_cli(tmp_path):
    rc = simulate.main(["--species", "injected_other", "--seeds", "2", "--out", str(tmp_path),
                        "--size", "160x120", "--fps", "15", "--codec", "h264"])
    assert rc == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["injected_other-2.challenge.json", "injected_other-2.meta.json", "injected_other-2.mp4"]
    meta = json.loads((tmp_path / "injected_other-2.meta.json").read_text())
    assert meta["fps"] == 15.0 and meta["resolution"] == [160, 120]
    other = C.from_dict(meta["other_challenge"], strict=True)
    assert other != C.from_dict(json.loads((tmp_path / "injected_other-2.challenge.json").read_text()))
    for bad in (["--species", "nope", "--seeds", "1", "--out", str(tmp_path)],
                ["--species", "print", "--seeds", "3-1", "--out", str(tmp_path)],
                ["--species", "print", "--seeds", "1", "--out", str(tmp_path), "--size", "abc"]):
        p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "simulate.py"), *bad],
                           capture_output=True, text=True)
        assert p.returncode == 2
        assert len(p.stderr.strip().splitlines()) == 1 and not p.stdout


@pytest.mark.parametrize("size", [(640, 480), (1280, 720), (320, 240)])
def test_framing_shows_the_neck_the_page_asks_for(size):
    # the page flashes only once its fit guidance is satisfied, and it asks to move back
    # until the neck under the chin is in view; the simulator frames every session (of any
    # species: they share the framing) as such a compliant applicant, even for the seeds
    # that draw the largest faces
    from stream_ekyc.analysis import FrameAnalyzer
    from stream_ekyc.liveness.signals import NECK_BINS
    from stream_ekyc.session import guidance
    from stream_ekyc.vision.planes import YuvFrame

    big = [s for s in range(200) if simulate.draw_nuisance(s)["face_frac"] > 0.52][:3]
    assert len(big) == 3
    for seed in big:
        session = simulate.Session("bona_fide", seed, {"size": size})
        t, bgr = next(iter(session.frames()))
        rec = FrameAnalyzer(detect_every=1).analyze(t, YuvFrame.from_bgr(bgr))
        assert rec.face is not None and rec.n_faces == 1, seed
        assert np.isfinite(rec.midline[NECK_BINS]).sum() >= 2, seed
        assert guidance(rec, None) not in ("move_back", "move_closer", "centre_face"), (seed, guidance(rec, None))


def test_page_exposure_control_meters_the_face_and_changes_nothing_else():
    # a seed whose first frame clips the face under whole-frame metering (ae_target high)
    base = dict(QUIET, ae_target=0.3, ambient_ratio=0.3)
    off_frames, _, off = simulate.render_frames("bona_fide", 3, size=SMALL, exposure_control=False, **base)
    on_frames, _, on = simulate.render_frames("bona_fide", 3, size=SMALL, exposure_control=True, **base)
    assert "exposure_steps" not in off and on["exposure_steps"] < 0
    # the page stepped the gain down in half stops and locked it there
    ratio = on["ae_gain"][0] / off["ae_gain"][0]
    assert ratio == pytest.approx(2.0 ** (0.5 * on["exposure_steps"]))
    assert len(set(on["ae_gain"])) == 1
    # every drawn parameter but the switch itself is the same
    drop = ("exposure_control", "exposure_steps", "ae_gain")
    assert {k: v for k, v in off.items() if k not in drop} == {k: v for k, v in on.items() if k not in drop}
    # and the face is no longer clipped: fewer face pixels at the sensor limit
    x0, y0, x1, y1 = _face_box(on)
    clip = lambda frames: float(np.mean(frames[0][1][y0:y1, x0:x1].max(axis=-1) >= 250))
    assert clip(on_frames) < clip(off_frames)


def test_exposure_control_is_drawn_on_its_own_stream():
    draws = [simulate.draw_nuisance(s) for s in range(200)]
    share = np.mean([d["exposure_control"] for d in draws])
    assert 0.4 < share < 0.6
    # the switch is the last draw, from a stream of its own: the rest does not depend on it
    for d in draws[:20]:
        assert list(d)[-1] == "exposure_control"
