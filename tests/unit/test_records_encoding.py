"""``records_to_dicts``: the algorithm packet's records, encoded for a whole session at once,
equal the one-record ``FrameRecord.to_dict`` key for key and value for value."""

from __future__ import annotations

import json

import numpy as np

from stream_ekyc.liveness.signals import MID_BINS, FaceGeometry, FrameRecord, records_to_dicts


def _records() -> list[FrameRecord]:
    rng = np.random.default_rng(7)
    lm = np.array([[280.0, 200.0], [360.0, 200.0], [320.0, 250.0], [290.0, 300.0], [350.0, 300.0]])
    out = []
    for i in range(12):
        t = 0.0667 * i + 1e-5 * i
        if i in (3, 9):      # no face: only the background (or nothing)
            out.append(FrameRecord(t=t, width=640, height=480, n_faces=0,
                                   background=None if i == 9 else rng.random(3)))
            continue
        mid = rng.random((MID_BINS, 3))
        if i % 4 == 1:
            mid[-5:] = np.nan                  # bins below the frame's edge
        face = FaceGeometry((250.123 + i, 150.456, 140.0, 180.0), lm + rng.normal(0, 1, lm.shape), 0.91234)
        out.append(FrameRecord(t=t, width=640, height=480, n_faces=1 + (i == 5), face=face,
                               patches=rng.random((30, 3)), quartiles=rng.random((4, 3)), skin=rng.random(3),
                               background=None if i == 7 else rng.random(3), midline=mid,
                               luma=123.4567, clipped=0.012345, crushed=0.0, sharpness=55.555,
                               detected=i % 3 == 0))
    return out


def test_equals_to_dict_record_by_record() -> None:
    recs = _records()
    fast = records_to_dicts(recs)
    slow = [r.to_dict() for r in recs]
    assert fast == slow
    # the same JSON text, key order included (JSON has no NaN: a missing bin is null)
    assert json.dumps(fast) == json.dumps(slow)
    assert any(b is None for row in fast[1]["midline"] for b in row)
    assert fast[3].get("face") is None and fast[9]["background"] is None
    back = [FrameRecord.from_dict(d) for d in fast]
    assert np.allclose(back[0].patches, recs[0].patches, atol=1e-6)


def test_empty_and_odd_records() -> None:
    assert records_to_dicts([]) == []
    recs = _records()
    recs[2].patches = np.zeros((10, 3))        # not what the analysis makes: the slow path keeps it right
    assert records_to_dicts(recs) == [r.to_dict() for r in recs]


def test_a_session_without_a_face_is_encoded_too() -> None:
    recs = [r for r in _records() if r.face is None]
    assert records_to_dicts(recs) == [r.to_dict() for r in recs]


def test_packet_json_equals_the_standard_encoder() -> None:
    """The packet encoder (orjson) gives JSON that parses to what ``json`` gives, nulls for
    bins not measured included, and takes the numpy scalars a packet may carry."""
    from stream_ekyc.pipeline import packet_json

    recs = records_to_dicts(_records())
    packet = {"version": 1, "records": recs, "acks": [], "caps": {"screen": {"w": 1280, "h": 800}},
              "timings": {"decide_ms": np.float64(4.25), "fitting": 0.1234},
              "counts": {"received": np.int64(170), "dropped": 0}, "verdict": None, "label": "é"}
    data = packet_json(packet)
    assert isinstance(data, bytes)
    plain = {**packet, "timings": {"decide_ms": 4.25, "fitting": 0.1234},
             "counts": {"received": 170, "dropped": 0}}
    assert json.loads(data) == json.loads(json.dumps(plain))
    assert list(json.loads(data)) == list(packet)            # key order kept
    assert json.loads(data)["records"][1]["midline"][-1] == [None, None, None]


def test_packet_json_falls_back_for_what_orjson_refuses() -> None:
    from stream_ekyc.pipeline import packet_json

    big = {"n": 1 << 70}                       # beyond 64 bits: orjson refuses, json does not
    assert json.loads(packet_json(big)) == big


def test_packet_records_as_arrays_are_the_same_json_text() -> None:
    """The live packet keeps the array fields as numpy rows (``arrays=True``); the bytes
    written are the lists' bytes exactly, nulls for bins not measured included, and the
    fallback encoder writes them the same way."""
    from stream_ekyc.pipeline import packet_json

    recs = _records()
    lists = {"version": 1, "records": records_to_dicts(recs)}
    rows = {"version": 1, "records": records_to_dicts(recs, arrays=True)}
    assert isinstance(rows["records"][0]["patches"], np.ndarray)
    assert packet_json(rows) == packet_json(lists)
    odd = _records()
    odd[2].patches = np.zeros((10, 3))         # the one-by-one path: plain lists either way
    assert packet_json({"records": records_to_dicts(odd, arrays=True)}) == \
        packet_json({"records": records_to_dicts(odd)})
    # what orjson refuses (an int beyond 64 bits) goes through json, arrays and all
    big = {**rows, "n": 1 << 70}
    assert json.loads(packet_json(big)) == json.loads(packet_json({**lists, "n": 1 << 70}))
