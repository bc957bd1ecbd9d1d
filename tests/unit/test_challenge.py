import collections
import json
import random

import numpy as np
import pytest

from stream_ekyc import challenge as C


def test_generated_challenges_obey_every_constraint():
    for seed in range(300):
        ch = C.generate(start=0.8, rng=random.Random(seed))
        C.validate(ch)  # raises on any violation
        assert C.MIN_STEPS <= len(ch.steps) <= C.MAX_STEPS
        assert ch.end - ch.start <= C.MAX_TOTAL_S + 1e-9
        for a, b in zip(ch.steps, ch.steps[1:]):
            assert a.rgb != b.rgb
            assert b.t == pytest.approx(a.t + a.duration, abs=1e-3)
        assert all(0.2 - 1e-9 <= s.duration <= 0.5 + 1e-9 for s in ch.steps)
        assert C.flash_count_max(ch.steps) <= 3.0
        assert ch.steps[0].t == pytest.approx(0.8)


def test_default_source_is_the_os_csprng(monkeypatch):
    used = []
    real = C.secrets.SystemRandom

    class Spy(real):
        def randrange(self, *a, **k):
            used.append(1)
            return super().randrange(*a, **k)

    monkeypatch.setattr(C.secrets, "SystemRandom", Spy)
    C.generate()
    assert used, "generate() must draw from secrets.SystemRandom by default"


def test_sequences_are_unpredictable_and_spread_over_the_palette():
    challenges = [C.generate() for _ in range(400)]
    # no two sessions share a challenge (colours and timing together: ~10^12 possibilities;
    # colours alone can collide by chance for the shortest sequences)
    assert len({c.steps for c in challenges}) == len(challenges)
    seqs = [tuple(s.rgb for s in c.steps) for c in challenges]
    counts = collections.Counter(c for s in seqs for c in s)
    assert set(counts) == set(C.PALETTE)
    total = sum(counts.values())
    for c in C.PALETTE:                          # roughly uniform: each 1/8 ± a wide margin
        assert 0.06 < counts[c] / total < 0.20
    # the next colour is not predictable from the current one: transitions spread too
    trans = collections.Counter((a, b) for s in seqs for a, b in zip(s, s[1:]))
    assert len(trans) == 8 * 7


def test_durations_vary_so_transition_times_are_secret_too():
    durs = [s.duration for _ in range(100) for s in C.generate().steps]
    assert min(durs) < 0.25 and max(durs) > 0.45
    assert len(set(durs)) > 20


def test_challenges_are_informative():
    for seed in range(100):
        ch = C.generate(rng=random.Random(seed))
        lin = C.srgb_to_linear(np.array([s.rgb for s in ch.steps]) / 255.0)
        assert np.linalg.matrix_rank(lin - lin.mean(axis=0), tol=1e-6) == 3


def test_flash_counter_flags_fast_black_white_alternation():
    steps = [C.Step(i * 0.1, 0.1, (255, 255, 255) if i % 2 else (0, 0, 0)) for i in range(10)]
    assert C.flash_count_max(steps) > 3
    with pytest.raises(C.ChallengeError):
        C.validate(C.Challenge(tuple(steps[:6])))


def test_json_round_trip_and_linear_rgb_lookup():
    ch = C.generate(start=1.0, rng=random.Random(3))
    back = C.from_dict(json.loads(ch.to_json()), strict=True)
    assert back == ch
    t = np.array([0.5, ch.steps[0].t + 0.01, ch.end + 0.01])
    s = ch.linear_rgb_at(t)
    assert np.isnan(s[0]).all() and np.isnan(s[2]).all()
    assert np.allclose(s[1], C.srgb_to_linear(np.array(ch.steps[0].rgb) / 255.0))


@pytest.mark.parametrize("obj, msg", [
    ([], "JSON object"),
    ({"version": 2, "steps": []}, "version"),
    ({"version": 1, "steps": []}, "non-empty"),
    ({"version": 1, "steps": [{"t": "a", "duration": 0.3, "rgb": [1, 2, 3]}]}, "numeric"),
    ({"version": 1, "steps": [{"t": 0, "duration": 0.3, "rgb": [1, 2]}]}, "three integers"),
    ({"version": 1, "steps": [{"t": 0, "duration": 0.3, "rgb": [1, 2, 300]}]}, "three integers"),
    ({"version": 1, "steps": [{"t": 0, "duration": -1, "rgb": [1, 2, 3]}]}, "duration"),
    ({"version": 1, "steps": [{"t": 1, "duration": 0.3, "rgb": [1, 2, 3]},
                              {"t": 0.5, "duration": 0.3, "rgb": [3, 2, 1]}]}, "back in time"),
])
def test_schema_errors_are_clear(obj, msg):
    with pytest.raises(C.ChallengeError, match=msg):
        C.from_dict(obj)
