"""DeepFaceLab interop: APP15 segments, the restricted unpickler, metadata, import and export."""

from __future__ import annotations

import base64
import functools
import io
import os
import pickle
import pickletools
import random
import shutil
import subprocess
import warnings
import zlib
from pathlib import Path

import cv2
import duckdb
import numpy as np
import pytest

from curate.interop.dfl import (
    ALLOWED_GLOBALS,
    MAX_PAYLOAD,
    BadMetadataError,
    DflFaceMetadata,
    DflFaceRow,
    JpegStructureError,
    PayloadTooLargeError,
    UnsafeMetadataError,
    dfl_pickle,
    export_dfl,
    import_dfl_folder,
    read_app15,
    read_dfl_metadata,
    read_dfl_rows,
    safe_loads,
    write_app15,
)
from curate.errors import FacesmithError
from curate.scan.pipeline import ScanSettings, image_id_for, scan_folder
from curate.faceset import FacesetReader
from curate.store import FacesetStore
from tests.curate.conftest import load_bgr


def jpeg(seed: int = 0, size: int = 48) -> bytes:
    image = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return encoded.tobytes()


def markers(data: bytes) -> list[int]:
    """The marker codes of a JPEG's header segments, SOI to SOS (a small walker of the tests' own)."""
    assert data[:2] == b"\xff\xd8"
    found, position = [0xD8], 2
    while True:
        marker = data[position + 1]
        found.append(marker)
        if marker == 0xDA:
            return found
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")


def with_segment(data: bytes, marker: int, payload: bytes) -> bytes:
    """`data` with one more segment right after SOI."""
    segment = bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload
    return data[:2] + segment + data[2:]


def without_app0(data: bytes) -> bytes:
    assert data[2:4] == b"\xff\xe0"
    length = int.from_bytes(data[4:6], "big")
    return data[:2] + data[4 + length :]


def as_numpy1(payload: bytes) -> bytes:
    """A numpy 2 pickle spelled as numpy 1.x writes it ('numpy.core', not 'numpy._core').

    Protocols 0-3 name globals in text lines; 4-5 in length-prefixed strings inside a FRAME,
    which is dropped (framing is optional for the reader) so the lengths may change.
    """
    if payload[:2] in (b"\x80\x04", b"\x80\x05") and payload[2:3] == b"\x95":
        payload = payload[:2] + payload[11:]
    for new, old in ((b"numpy.core.multiarray", b"numpy._core.multiarray"),
                     (b"numpy.core.numeric", b"numpy._core.numeric")):
        payload = payload.replace(b"c" + old + b"\n", b"c" + new + b"\n")
        payload = payload.replace(b"\x8c" + bytes([len(old)]) + old, b"\x8c" + bytes([len(new)]) + new)
    assert b"numpy._core" not in payload
    pickletools.dis(payload, out=io.StringIO())  # still a well-formed pickle
    return payload


def dfl_like_dict() -> dict:
    """A dict shaped like the ones DFL's extractor and XSeg editor write."""
    rng = np.random.default_rng(7)
    landmarks = rng.uniform(20, 230, (68, 2))
    ok, mask = cv2.imencode(".png", np.full((32, 32), 255, np.uint8))
    assert ok
    return {
        "face_type": "whole_face",
        "landmarks": landmarks.tolist(),
        "eyebrows_expand_mod": 1.0,
        "source_filename": "00042.png",
        "source_rect": (101, 57, 388, 402),
        "source_landmarks": (landmarks * 1.7 + 40).tolist(),
        "image_to_face_mat": np.array([[0.5, 0.01, -20.0], [-0.01, 0.5, -15.0]]),
        "xseg_mask": mask,  # cv2.imencode's uint8 array, as DFL stores it
        "seg_ie_polys": {"polys": [
            {"type": 1, "pts": np.array([[1, 2], [30, 4], [15, 40]], np.float32)},
            {"type": 0, "pts": np.zeros((0, 2), np.float32)},
        ]},
        "pitch_yaw_roll": (np.float32(0.1), np.float32(-0.2), np.float32(0.0)),  # an older DFL key
    }


# -- APP15 segment ----------------------------------------------------------------------------


def test_app15_round_trip_keeps_the_image():
    plain = jpeg()
    payload = pickle.dumps({"a": 1}, protocol=4)
    tagged = write_app15(plain, payload)
    assert read_app15(plain) is None
    assert read_app15(tagged) == payload
    assert np.array_equal(cv2.imdecode(np.frombuffer(tagged, np.uint8), cv2.IMREAD_COLOR),
                          cv2.imdecode(np.frombuffer(plain, np.uint8), cv2.IMREAD_COLOR))
    assert len(tagged) == len(plain) + 4 + len(payload)


def test_app15_goes_after_the_last_app_segment():
    plain = jpeg()
    assert markers(plain)[:2] == [0xD8, 0xE0]  # OpenCV writes JFIF APP0 first
    app0_end = 4 + int.from_bytes(plain[4:6], "big")
    exif = b"\xff\xe1" + (2 + 26).to_bytes(2, "big") + b"Exif\x00\x00" + bytes(20)
    with_exif = plain[:app0_end] + exif + plain[app0_end:]
    assert markers(with_exif)[:4] == [0xD8, 0xE0, 0xE1, 0xDB]
    tagged = write_app15(with_exif, b"payload")
    assert markers(tagged)[:5] == [0xD8, 0xE0, 0xE1, 0xEF, 0xDB]
    assert read_app15(tagged) == b"payload"
    # an APPn after the quantisation tables (Adobe's APP14 sometimes is): the APP15 follows it
    dqt_end = app0_end + 4 + int.from_bytes(plain[app0_end + 2 : app0_end + 4], "big") - 2
    assert markers(plain)[2] == 0xDB
    adobe = b"\xff\xee" + (2 + 12).to_bytes(2, "big") + b"Adobe" + bytes(7)
    late_app = plain[:dqt_end] + adobe + plain[dqt_end:]
    order = markers(write_app15(late_app, b"x"))
    assert order.index(0xEF) == order.index(0xEE) + 1 and order.index(0xEE) > order.index(0xDB)

    no_app = without_app0(plain)
    assert 0xE0 not in markers(no_app)
    assert markers(write_app15(no_app, b"x"))[:2] == [0xD8, 0xEF]


def test_writing_again_replaces_the_segment_and_the_last_one_counts():
    once = write_app15(jpeg(), b"first")
    twice = write_app15(once, b"second")
    assert markers(twice).count(0xEF) == 1
    assert read_app15(twice) == b"second"
    # a file with two APP15 segments (not written by us): the last one wins, as in DFL's reader
    doubled = with_segment(once, 0xEF, b"zeroth")
    assert markers(doubled).count(0xEF) == 2
    assert read_app15(doubled) == b"first"


def test_payload_size_limit():
    biggest = os.urandom(MAX_PAYLOAD)
    assert MAX_PAYLOAD == 65533
    assert read_app15(write_app15(jpeg(), biggest)) == biggest
    with pytest.raises(PayloadTooLargeError, match="65534 bytes.*at most 65533"):
        write_app15(jpeg(), biggest + b"x")


@pytest.mark.parametrize("data, message", [
    (b"", "not a JPEG"),
    (b"\xff", "not a JPEG"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "not a JPEG"),
    (b"\xff\xd8", "truncated"),
    (b"\xff\xd8\xff", "truncated"),
    (b"\xff\xd8\xff\xe0", "truncated"),
    (b"\xff\xd8\xff\xe0\x00", "truncated"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "truncated"),
    (b"\xff\xd8\xff\xe0\x00\x01", "segment length 1"),
    (b"\xff\xd8\x00\x00\x00", "no marker at byte 2"),
    (b"\xff\xd8\xff\x00\x00\x02", "unexpected marker"),
])
def test_garbage_is_a_clear_error(data, message):
    with pytest.raises(JpegStructureError, match=message):
        read_app15(data)
    with pytest.raises(JpegStructureError):
        write_app15(data, b"x")


def test_every_truncation_and_random_damage_is_none_bytes_or_a_clear_error():
    tagged = write_app15(jpeg(), b"payload")
    header_end = tagged.index(b"\xff\xda") + 20
    for cut in range(header_end):
        try:
            read_app15(tagged[:cut])
        except JpegStructureError:
            pass
    rng = random.Random(4)
    outcomes = set()
    for _ in range(2000):
        damaged = bytearray(tagged)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(0, header_end)] = rng.randrange(256)
        damaged = bytes(damaged[: rng.randrange(2, len(damaged) + 1)])
        try:
            result = read_app15(damaged)
            outcomes.add("none" if result is None else "bytes")
        except JpegStructureError:
            outcomes.add("error")
    assert outcomes == {"none", "bytes", "error"}
    # fill bytes before a marker are allowed
    padded = tagged[:2] + b"\xff\xff" + tagged[2:]
    assert read_app15(padded) == b"payload"


# -- restricted unpickler ------------------------------------------------------------------------


PLAIN_VALUES = {
    "array": np.arange(6.0).reshape(2, 3),
    "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    "float32": np.arange(4, dtype=np.float32),
    "big_endian": np.arange(3, dtype=">i4"),
    "uint8": np.frombuffer(b"abc", np.uint8),
    "empty": np.zeros((0, 2), np.float32),
    "bools": np.array([True, False]),
    "scalar": np.float32(1.5),
    "int_scalar": np.int64(-3),
    "bool_scalar": np.bool_(True),
    "dtype": np.dtype("f4"),
    "bytes": b"\x00\xffxy",
    "bytearray": bytearray(b"q"),
    "set": {1, 2},
    "frozenset": frozenset({"a"}),
    "complex": 1 + 2j,
    "nested": [(1, None, True), {"k": [1.5, "s"]}],
}


def assert_same(loaded: dict, expected: dict) -> None:
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        if isinstance(value, np.ndarray):
            assert isinstance(loaded[key], np.ndarray) and loaded[key].dtype == value.dtype, key
            assert loaded[key].shape == value.shape and np.array_equal(loaded[key], value), key
        elif isinstance(value, np.generic):
            assert isinstance(loaded[key], np.generic) and loaded[key].dtype == value.dtype, key
            assert loaded[key] == value, key
        else:
            assert type(loaded[key]) is type(value) and loaded[key] == value, key


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_values_and_numpy_load_at_every_protocol(protocol):
    assert_same(safe_loads(pickle.dumps(PLAIN_VALUES, protocol=protocol)), PLAIN_VALUES)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_1_pickles_load(protocol):
    """DFL facesets were written by numpy 1.x, which names 'numpy.core.multiarray'."""
    payload = as_numpy1(pickle.dumps(PLAIN_VALUES, protocol=protocol))
    assert b"numpy.core.multiarray" in payload
    assert_same(safe_loads(payload), PLAIN_VALUES)


# Written by Python 3.6.15 with numpy 1.19.5 (the numpy DFL pins), zlib-compressed and base64'd:
#   data = {"face_type": "whole_face",
#           "landmarks": np.arange(136, dtype=np.float32).reshape(68, 2) * 1.5 + 10,
#           "eyebrows_expand_mod": 1.0, "source_filename": "00042.png",
#           "source_rect": np.array([101, 57, 388, 402]),
#           "source_landmarks": (np.arange(136, dtype=np.float64).reshape(68, 2) * 3 + 100).tolist(),
#           "image_to_face_mat": np.array([[0.5, 0.01, -20.0], [-0.01, 0.5, -15.0]]),
#           "xseg_mask": np.frombuffer(b"\x89PNG\r\n\x1a\nnot-really", np.uint8).reshape(-1, 1),
#           "seg_ie_polys": {"polys": [{"type": 1, "pts": np.array([[1, 2], [30, 4], [15, 40]], np.float32)},
#                                      {"type": 0, "pts": np.empty((0, 2), np.float32)}]},
#           "pitch_yaw_roll": (np.float32(0.25), np.float32(-0.5), np.float32(0.0))}
#   base64.b64encode(zlib.compress(pickle.dumps(data, protocol=p), 9))
NUMPY_1_19_PICKLES = {
    2: (
        'eNp1l4lyFFUUhjsby7AHEATBsAgDQghhMQgmkIBBRmJoEBtI6MxMOukhs53pniSTXZYhEWQTBEEwCIIgm1haWFJCJS/gI/AI'
        'vIGef2bOxSo0Vffnzzc3J1+Wy+0M5PeS5jXGa5rW4g9appuKW5RnePj9DjsWtkxQys9sCPujzRF/os2hgmA0GYmnSoOxhFUa'
        'SYbdkD+R8Kc8ZsIKxqKOm0gGXQ8VZnd5os3ZV6nIpx2jMUEzGGu2go7HiqJ4aKyRx9MDNM4Yk/ksbii6msanyaPThOM0UadJ'
        'Xl+eb6svP02TcyOb4emhKUY+xNfS1KHB4zRNp2KvryAzbRNNr6ur2/E3v2XCp7k0IzBkjzUcfIhWskXTKnjV87J5jQwgTiIu'
        'IW4iHiGecowOIs4jhhH3EE848qs1bRyvybxm8JrDq4TXEl4reJXzquBVyWsrrx286nnt5dXAK8DL5hXl5fLqqoYK4ggijRhC'
        'nEScRpxDXEBcQlxBXENcR9xE3EbcRdxHPEL8gvgN8TviKeIZx+hhxDHEIOIE4hTiLOI84iLiMuIqYhhxA3ELcQdxD/EQ8Rjx'
        'K+IJ4g/En9X8VWk1/P2q4VLApQhlDJdxKOO5TECZyGUyyhQu01CKucxAmcllFspsLnNQ5nKZhzKfSwnKAi6LUBZzWYKylMsy'
        'lOVcVqCs5LIKpYxLOcoaLutQ1nOpQNnAZSPKJi6VKFVctqBUc9mKso1LLcp2LjtQfFx2otRxqUfZxWU3yp4ammnzr/QbOs1y'
        'aXbAmM6/g1bKCiRiHY5pdcb5aJmRWDO9WVv1Usu8GVM4nFgywaeyJRS2ov6IRXMyB7GsrGxteWk82kpzjQmvdvHhc+ktu9DO'
        'nLN5Nh+e+Tq9jcNTeIxK7OxpCVXQApyWhTot4tNiv35OFmfOyUIYZlW0Dbl/R47m5cq5XKF38GUt0WmpS96AMfWVzav/LZY1'
        '0nJvI73rrd28L/tRXJ5nitVIKxjvH8jhA5sFr2TcILsb1O5Sxo2y+6DavYqxKbtNtbuMcdPmHG4aFryasV92+5sElwM/z+FA'
        'ieA1jAPyKQMvBK9lHJTZQTV7HeNmmd2sZq8HltmWmv0eY0tmW2p2BeMWmd2iZm9g3CqzW9Xs94Fltq1mb2Rsy2xbzd7EOCSz'
        'Q2r2B4wPyexDanYlsMxuU7OrGLfJ7DY1ezPjsMwOq9lbGEdkdkTNrgaW2VE1u4ZxVGZH1eytjGMyO6Zmb2Mcl9nxMsEfAjcJ'
        'PiO4Flg+Zfyl4O2MqSSHqV7wR8BiQo8E7wB+kcOJqYJ9jBMimIgL/hh4WPBfgncydsTbUd51wOLtKO9PgMXbUd71jF3xdpX3'
        'LmDxdpW3DizeSeW9m3FSvJPKew+weCeV96eM28W7XXnvBRbvduX9GbB4tytvg3GHeHco733A4t2hvPcDi3en8j7AuFO8O5V3'
        'A7B4dyrvRsYp8U4p74PA4p1S3iaweKeUdxPjLvHuUt5+YPHuUt4BYPHuVt5Bxt3i3a28m4HFu1t5W4x7xLtHebcAi3eP8m4F'
        'Fu8e5W0z7hXvXuUdAhbvXuV9CFi8+5R3G+M+8e5T3mFg8e5T3hHG/eLdr7yjwOLdn/O2jGm4mCL+Vn4AjWUeOc2I36WY3GVx'
        '3GWkUwJ3Wb6vIE1O7jZrqSAXt1lSp/b/vs06MrfZRk3eRoerumeMPKgdvd41crQqy9aODrxiI8/UxmwpHR2gTlxzKZ26XOoO'
        'ZC7hTsdqZUunjXpEsxeafTr1Q7PYl5emgZxmcjV9Ds3DOh2RR9QeOvqa7LGMLB4ORobq62oneeZ4ojF3ZcLyh8MpSkPiuE6D'
        'Lg0FjIm4a9khZJnxWDjl0Be9dMIoYpp992QjfentpVNeo5BZ5sH+tC/PKMAG16EzYn0W1ud0+grWBXjKPm8XQ2Nu9qofwLeB'
        'f+6jmcfhAW7xLXjKpQvQ+Vqniy5dCiR76Ruvfdqn2WrwZQy+otO3GKxh8FUeHDTNQDLEfzJETdMTSLmW46Fry3T6zqXhQNJy'
        'jMkQDLlB20z5O8xELBym6//z94YT9If9CQ99bxezb1HOt5JuwOymTj+k6ZZOt+1/v86PvfQjXr+j0900/aTTvdzrhbnfELqP'
        'lx/o9DBNj3T6+Tg9Tpb+AyBJUhA='
    ),
    4: (
        'eNqFlg1oG2UYxy/px9YPu67tcFSUiDKrbLXWOjoc/UqlsmCpHwhqZ3pJLrm0l9z1PpJcPtqAs1vgQNnewUSQCQNBUAqCIAxa'
        'BGEgiMJAEISKIAgDiyAMBPWfuzzsEQuW/vrPPXn7f39078hbb796ukfyv2pixOtKy0klbruGIrzuoqprSrw5EV6XJudTOdlc'
        's4R3LO/kDHc0qZvKaM7R7KxsmrIrvN64qST1vGWbTtIWV4TX4S8U3qF8KlhyRcSkt0U0lBAXxUtiJBaKzcfCW0I95HWk/E3x'
        'S+H0hGhcCt5v80JnxeLi4rm/8eX/iEm2SDTmIuGmcWRWkibBElBBHXjgGrgBtsFNcAvcBnvgDrgLwnOSdBj0gSEwDCLgBDgJ'
        'xsEkmALz4BxYAq+CZZAAKsgDG5RBHbwFtkADeOAdcBlcBdfA++AD8CG4AT4CH4NPwDb4DHwOvgA3wQ74EnwFboGvwTfgO3Ab'
        'fA9+AD+CPfAz+AX8Cu6A38Dv4A9wF/wJ/pqT6lIUf4OoVG9DdiA7kYeRXcgeZC+yD3kEeRQ5gBxCHkPejzyOHEY+gHwQ+RAy'
        'gnwY+QjyUeQJ5GPIx5FPIE8iTyGfRI4hx5FPI59BnkZOIs8gn0WeRU4hp5GzyDnkPPI55ALyeeQ5ZAz5AnIRuYR8Efky8pWo'
        'wEnxBhVXSZh60YorJQNHOJ7TU2Jhej848t4RS3dMnPh0VlPycq550MfGxibGR418Rng9rXdxrG2hdqpdzdOr9tDZbcdDvxfO'
        'Tt47r+rQAac1GlGC7aQzrbwQCvJyK33V/tZu9/6nnRcj+F6YeS1YhRe7/gvFn75eb03fmGHTZVq7zNeep7Vv8rVxWhvna1dm'
        'WtOV62wq01p5hU93W9NEhE0TtFtij02T1JvkvSnqTfHeFPUqvFehXoX3pqk3zXsz1JvhvRnqVXmvSr0q781Sb5b3rlLvKu9d'
        'pd413rtGvWu8V6NejffmqDfHe3PUm+e9eerN816denXea1CvMcanKzR9l09pN2OfTdcjren6Ep+Sw/o2n+61pmY/m5pkZhp8'
        'ep2m37KpRb4W97XI1+K+Fvla3NcmX5v72uRrc1+bfB3u65Cvw30d8nW4b4F8C9y3QL4F7lsg3wL3LZJvkfsWybfIfYvkW+K+'
        'JfItcd8S+Za4r0u+Lvd1ydflvi75uty3TL5l7lsm3zL3LZNvhftWyLfCfSvkW+G+VfKtct8q+Va5b5V8q9y3Rr417lsj3xr3'
        'rZHvBvfdIN8N7rtBvhvcd5N8N7nvJvlutnwV72g2J2dw19L9G1Y8Jx/0EROOtW35HzLp//2QCbaT9qYrQ58u/FS+MB08T+y2'
        'nnfo/SBHd/0Pna6SpWSwubV2wO4DsVCwu/MUv5JVD7qSRQcaS4sL93UPd+d1+5SpyJrm+jv0NjfIKnFD11xL1HArDF7h79K8'
        'cbb7975YyGszbOsAhzb/gjjYiB7H/arpjn+L/eZdD2nMNu9szV0cVKmXYpLa+G+DRA3+x6yjWF6fkbWTatyVi3FT1zShtnud'
        'VlLWZBMXUHUw2o76KbGF31ffCx6lnX8/Sv7jReGM/gMCur4z'
    ),
}


@pytest.mark.parametrize("protocol", [2, 4])
def test_pickles_written_by_numpy_1_19_load(protocol):
    payload = zlib.decompress(base64.b64decode(NUMPY_1_19_PICKLES[protocol]))
    assert b"numpy.core.multiarray" in payload and b"numpy._core" not in payload
    data = safe_loads(payload)
    assert data["landmarks"].dtype == np.float32 and data["source_rect"].dtype == np.int64
    assert [type(value) for value in data["pitch_yaw_roll"]] == [np.float32] * 3
    metadata = DflFaceMetadata.from_dict(data)
    assert np.array_equal(metadata.landmarks, np.arange(136).reshape(68, 2) * 1.5 + 10)
    assert np.array_equal(metadata.source_landmarks, np.arange(136).reshape(68, 2) * 3 + 100)
    assert np.array_equal(metadata.source_rect, [101, 57, 388, 402])
    assert np.array_equal(metadata.image_to_face_mat, [[0.5, 0.01, -20.0], [-0.01, 0.5, -15.0]])
    assert metadata.xseg_mask == b"\x89PNG\r\n\x1a\nnot-really"
    assert [(p.include, p.points.tolist()) for p in metadata.seg_ie_polys] == [
        (True, [[1, 2], [30, 4], [15, 40]]), (False, [])
    ]
    assert (metadata.face_type, metadata.source_filename, metadata.eyebrows_expand_mod) == (
        "whole_face", "00042.png", 1.0
    )
    assert metadata.other_keys == ("pitch_yaw_roll",)


def test_allowed_globals_are_exactly_these():
    numpy_names = {
        f"{core}.{name}" for core in ("numpy.core", "numpy._core")
        for name in ("multiarray._reconstruct", "multiarray.scalar", "numeric._frombuffer")
    }
    builtins = {f"{module}.{name}" for module in ("builtins", "__builtin__")
                for name in ("set", "frozenset", "bytes", "bytearray", "complex")}
    assert ALLOWED_GLOBALS == numpy_names | builtins | {"numpy.ndarray", "numpy.dtype", "_codecs.encode"}


class Reduce:
    """An object whose pickle calls `function(*arguments)` on load (what an attacker writes)."""

    def __init__(self, function, *arguments):
        self.function, self.arguments = function, arguments

    def __reduce__(self):
        return self.function, self.arguments


def attacks(marker: Path) -> dict[str, object]:
    command = f"touch {marker}"
    return {
        "os.system": Reduce(os.system, command),
        "builtins.open": Reduce(open, str(marker), "w"),
        "builtins.eval": Reduce(eval, f"open({str(marker)!r}, 'w').close()"),
        "builtins.exec": Reduce(exec, f"open({str(marker)!r}, 'w').close()"),
        "subprocess.Popen": Reduce(subprocess.Popen, ["touch", str(marker)]),
        "functools.partial": Reduce(functools.partial(os.system, command)),
    }


ATTACKS = ["os.system", "builtins.open", "builtins.eval", "builtins.exec", "subprocess.Popen", "functools.partial"]
REFUSED = {"os.system": os.system.__module__ + ".system", "builtins.open": "io.open"}
# Python 3's pickler writes some names as Python 2 knew them at protocols below 3.
PYTHON2_NAMES = {"builtins.eval": "__builtin__.eval", "builtins.exec": "__builtin__.exec",
                 "subprocess.Popen": "commands.Popen"}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("attack", ATTACKS)
def test_code_in_a_pickle_is_refused_and_never_runs(tmp_path, attack, protocol):
    marker = tmp_path / "ran"
    payload = pickle.dumps(
        {"face_type": "whole_face", "landmarks": np.zeros((68, 2)), "x": attacks(marker)[attack]},
        protocol=protocol,
    )
    with pytest.raises(UnsafeMetadataError, match="refused global") as raised:
        safe_loads(payload)
    refused = REFUSED.get(attack, attack)
    if protocol < 3:
        refused = PYTHON2_NAMES.get(refused, refused)
    assert f"refused global {refused}" in str(raised.value), str(raised.value)
    assert raised.value.reason == f"unsafe-metadata: refused global {refused}"
    assert "nothing in it was run" in str(raised.value)
    assert not marker.exists()

    # The control: plain pickle.loads of the same bytes does run the code.
    loaded = pickle.loads(payload)
    if attack == "subprocess.Popen":
        loaded["x"].wait()
    if attack == "builtins.open":
        loaded["x"].close()
    assert marker.exists()


@pytest.mark.parametrize("payload, refused", [
    (b"cos\nsystem\n(Vtouch MARKER\ntR.", "os.system"),
    (b"cbuiltins\neval\n(Vopen('MARKER', 'w')\ntR.", "builtins.eval"),
    (b"cbuiltins\nexec\n(Vopen('MARKER', 'w')\ntR.", "builtins.exec"),
    (b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR(Vtouch MARKER\ntR.", "builtins.getattr"),
    (b"cbuiltins\n__import__\n(Vos\ntR.", "builtins.__import__"),
    (b"c__builtin__\neval\n(Vopen('MARKER', 'w')\ntR.", "__builtin__.eval"),
    (b"ccopy_reg\n_reconstructor\n(cos\n_wrap_close\nc__builtin__\nobject\nNtR.", "copy_reg._reconstructor"),
    (b"ccopyreg\n_reconstructor\n(cbuiltins\nobject\ncbuiltins\nobject\nNtR.", "copyreg._reconstructor"),
    (b"cnumpy.testing._private.utils\nrunstring\n(Vopen('MARKER', 'w')\n(dtR.", "numpy.testing._private.utils.runstring"),
    (b"cnumpy\nload\n(VMARKER\ntR.", "numpy.load"),
    (b"cnumpy.core.multiarray\nfromfile\n(VMARKER\ntR.", "numpy.core.multiarray.fromfile"),
    (b"\x80\x04\x8c\x05posix\x8c\x06system\x93\x8c\x09touch ran\x85R.", "posix.system"),
    (b"\x80\x04\x8c\x05numpy\x8c\x0fndarray.__new__\x93.", "numpy.ndarray.__new__"),
    (b"\x80\x02cnumpy\nndarray.__reduce__\n.", "numpy.ndarray.__reduce__"),
    (b"(dp0\nVx\ncos\nsystem\n(Vtouch MARKER\ntRs.", "os.system"),
    (b"(Vtouch MARKER\nios\nsystem\n.", "os.system"),  # INST
])
def test_hand_written_attacks_are_refused(tmp_path, monkeypatch, payload, refused):
    monkeypatch.chdir(tmp_path)
    payload = payload.replace(b"MARKER", b"ran")
    with pytest.raises(UnsafeMetadataError) as raised:
        safe_loads(payload)
    assert raised.value.detail == f"refused global {refused}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("payload, message", [
    # _reconstruct of something other than ndarray
    (b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\ndtype\n(I0\ntVb\ntR.", "other than numpy.ndarray"),
    # bytes through a codec other than latin-1
    (b"c_codecs\nencode\n(Vabc\nVrot13\ntR.", "encode to 'rot13'"),
    # a bytearray of a given size (a cheap way to ask for gigabytes)
    (b"cbuiltins\nbytearray\n(I10000000000\ntR.", "bytearray from anything but bytes"),
    (b"P0\n.", "persistent id"),
])
def test_allowed_globals_used_badly_are_refused(payload, message):
    with pytest.raises(UnsafeMetadataError, match=message):
        safe_loads(payload)


def numpy_array_pickle(spec: str, state_flags: int, data: bytes, shape: tuple) -> bytes:
    """A protocol-0 ndarray pickle with a chosen dtype and dtype state flags."""
    dims = "".join(f"I{side}\n" for side in shape)
    return (
        "cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I0\ntVb\ntR"
        f"(I1\n({dims}tcnumpy\ndtype\n(V{spec}\nI00\nI01\ntR(I3\nV<\nNNNI-1\nI-1\nI{state_flags}\ntb"
        "I00\n"
    ).encode() + b"C" + bytes([len(data)]) + data + b"tb."


def test_numpy_state_is_never_trusted():
    # A float dtype whose state claims to hold Python objects (flag 1): numpy's own
    # __setstate__ would keep that flag; the array is built from the spec alone.
    values = np.arange(3.0)
    payload = numpy_array_pickle("f8", 0x3F, values.astype("<f8").tobytes(), (3,))
    loaded = safe_loads(payload)
    assert loaded.dtype == np.float64 and not loaded.dtype.hasobject
    assert np.array_equal(loaded, values)
    with pytest.raises(BadMetadataError, match="unsupported numpy dtype 'V8'"):
        safe_loads(numpy_array_pickle("V8", 0x3F, b"A" * 8, (1,)))
    with pytest.raises(BadMetadataError, match="holds 8 bytes"):
        safe_loads(numpy_array_pickle("f8", 0, b"A" * 8, (1000000000,)))


@pytest.mark.parametrize("value", [
    np.array(["text"]), np.array([1, None], dtype=object), np.zeros(2, dtype=[("a", "f4")]),
    np.array(["2020-01-01"], dtype="datetime64[D]"),
])
def test_numpy_arrays_other_than_numbers_are_refused(value):
    with pytest.raises(BadMetadataError, match="unsupported numpy dtype"):
        safe_loads(pickle.dumps(value, protocol=4))


@pytest.mark.parametrize("payload", [
    b"", b"garbage", b"\x80\x05", pickle.dumps({"a": 1})[:-3],
    b"\x80\x02cnumpy\nndarray\n(K\x05tq\x00\x81.",  # NEWOBJ on the ndarray stand-in
    b"cnumpy\ndtype\n(dVx\nI1\nsb.",  # BUILD setting attributes on a stand-in
    b"cnumpy\ndtype\n(N}Vx\nI1\nstb.",  # BUILD with slot state on a stand-in
    b"\x80\x05\x97.",  # an out-of-band buffer
])
def test_malformed_pickles_are_a_clear_error(payload):
    with pytest.raises(BadMetadataError, match="not a valid pickle"):
        safe_loads(payload)


def test_stand_ins_stay_inert_after_an_attempt_to_change_them():
    for payload in (b"cnumpy\ndtype\n(N}V__class__\ncbuiltins\nset\nstb.", b"c_codecs\nencode\n(N}V__call__\nI1\nstb."):
        with pytest.raises(BadMetadataError):
            safe_loads(payload)
    assert_same(safe_loads(pickle.dumps(PLAIN_VALUES, protocol=2)), PLAIN_VALUES)


def test_cycles_and_deep_nesting_are_refused():
    cyclic: list = []
    cyclic.append(cyclic)
    with pytest.raises(BadMetadataError, match="contains itself"):
        safe_loads(pickle.dumps(cyclic))
    deep: list = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(BadMetadataError, match="nested deeper"):
        safe_loads(pickle.dumps(deep))
    with pytest.raises(BadMetadataError, match="bare"):
        safe_loads(b"cnumpy\nndarray\n.")


def shared_dag(depth: int) -> list:
    """L0 = [], Lk = [Lk-1, Lk-1]: a few bytes pickled, 2**depth leaves walked as a tree."""
    node: list = []
    for _ in range(depth):
        node = [node, node]
    return node


def test_shared_references_are_finished_once_and_stay_shared():
    loaded = safe_loads(pickle.dumps(shared_dag(12), protocol=2))
    for _ in range(12):
        assert loaded[0] is loaded[1]
        loaded = loaded[0]
    assert loaded == []
    # 426 bytes naming 2**60 leaves: refused at once (np.asarray or repr would walk every leaf)
    payload = pickle.dumps(shared_dag(60), protocol=2)
    assert len(payload) < 600
    with pytest.raises(BadMetadataError, match="expands to more than 1000000 values"):
        safe_loads(payload)
    array = np.arange(4.0)
    loaded = safe_loads(pickle.dumps({"a": array, "b": array}, protocol=4))
    assert loaded["a"] is loaded["b"] and loaded["a"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_payloads_that_build_too_much_are_refused():
    with pytest.raises(BadMetadataError, match="more than 1000000 values"):
        safe_loads(pickle.dumps([0] * 1_000_001, protocol=4))
    # Arrays that each BUILD from one shared bytes object: 70 MiB of arrays from 100 KiB of pickle.
    reconstruct = np.zeros(1).__reduce__()[0]
    raw, dtype = bytes(2**16), np.dtype("f8")

    class SharedBytesArray:
        def __reduce__(self):
            return reconstruct, (np.ndarray, (0,), b"b"), (1, (2**13,), dtype, False, raw)

    payload = pickle.dumps([SharedBytesArray() for _ in range(1100)], protocol=2)
    assert len(payload) < 2**17
    with pytest.raises(BadMetadataError, match="more than 67108864 bytes|expands to more than"):
        safe_loads(payload)


# -- DFL metadata -----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_a_dfl_written_file_reads_back(tmp_path, protocol):
    data = dfl_like_dict()
    path = tmp_path / "00001_0.jpg"
    path.write_bytes(write_app15(jpeg(), as_numpy1(pickle.dumps(data, protocol=protocol))))
    metadata = read_dfl_metadata(path)
    assert metadata.face_type == "whole_face" and metadata.facesmith_face_type == "whole_face"
    assert metadata.landmarks.shape == (68, 2) and metadata.landmarks.dtype == np.float64
    assert np.allclose(metadata.landmarks, data["landmarks"])
    assert np.allclose(metadata.source_landmarks, data["source_landmarks"])
    assert np.array_equal(metadata.source_rect, [101, 57, 388, 402])
    assert np.array_equal(metadata.image_to_face_mat, data["image_to_face_mat"])
    assert metadata.source_filename == "00042.png"
    assert metadata.eyebrows_expand_mod == 1.0
    assert metadata.xseg_mask == data["xseg_mask"].tobytes()
    assert cv2.imdecode(np.frombuffer(metadata.xseg_mask, np.uint8), cv2.IMREAD_UNCHANGED).shape == (32, 32)
    assert [polygon.include for polygon in metadata.seg_ie_polys] == [True, False]
    assert metadata.seg_ie_polys[0].points.shape == (3, 2) and metadata.seg_ie_polys[1].points.shape == (0, 2)
    assert metadata.other_keys == ("pitch_yaw_roll",)


def test_optional_keys_may_be_missing():
    metadata = DflFaceMetadata.from_dict({"landmarks": [[1.0, 2.0]] * 68})
    assert metadata.face_type == "full_face"  # what DFL's reader assumes
    assert metadata.source_rect is None and metadata.image_to_face_mat is None and metadata.xseg_mask is None
    assert metadata.seg_ie_polys == () and metadata.eyebrows_expand_mod == 1.0


def test_arrays_must_hold_real_numbers():
    with pytest.raises(BadMetadataError, match="'landmarks' holds complex128 values"):
        DflFaceMetadata.from_dict({"landmarks": np.zeros((68, 2), complex)})


def test_older_polygon_layout():
    metadata = DflFaceMetadata.from_dict(
        {"landmarks": [[1.0, 2.0]] * 68, "seg_ie_polys": [(1, [[0, 0], [4, 0], [4, 4]])]}
    )
    assert metadata.seg_ie_polys[0].include and metadata.seg_ie_polys[0].points.shape == (3, 2)


def broken(**changes) -> dict:
    data = dfl_like_dict()
    for key, value in changes.items():
        if value is KeyError:
            del data[key]
        else:
            data[key] = value
    return data


@pytest.mark.parametrize("data, message", [
    ([1, 2, 3], "is a list, not a dict"),
    ({1: "x", "landmarks": []}, "keys that are not strings"),
    (broken(landmarks=KeyError), "no 'landmarks'"),
    (broken(landmarks=np.zeros((67, 2))), r"'landmarks' has shape \(67, 2\), expected \(68, 2\)"),
    (broken(landmarks=[["a", "b"]] * 68), "'landmarks' is not an array of numbers"),
    (broken(landmarks=[[1.0, 2.0]] * 67 + [[1.0]]), "'landmarks' is not an array of numbers"),
    (broken(landmarks=np.full((68, 2), np.nan)), "'landmarks' holds values that are not finite"),
    (broken(landmarks="0,0"), "'landmarks' is a str, not an array"),
    (broken(landmarks=np.array([["1"] * 2] * 68)), "unsupported numpy dtype 'U1'"),
    (broken(image_to_face_mat=np.eye(3)), r"'image_to_face_mat' has shape \(3, 3\)"),
    (broken(source_rect=(1, 2, 3)), r"'source_rect' has shape \(3,\)"),
    (broken(source_landmarks={"x": 1}), "'source_landmarks' is a dict"),
    (broken(face_type=3), "'face_type' is a int, not a face type name"),
    (broken(face_type=""), "'face_type' is not a face type name"),
    (broken(source_filename=b"x.png"), "'source_filename' is not a string"),
    (broken(eyebrows_expand_mod="1.0"), "'eyebrows_expand_mod' is not a finite number"),
    (broken(eyebrows_expand_mod=float("inf")), "'eyebrows_expand_mod' is not a finite number"),
    (broken(eyebrows_expand_mod=True), "'eyebrows_expand_mod' is not a finite number"),
    (broken(xseg_mask=12), "'xseg_mask' is not encoded image bytes"),
    (broken(xseg_mask=np.zeros(4, np.float32)), "'xseg_mask' is not encoded image bytes"),
    (broken(seg_ie_polys={"polys": [{"type": 2, "pts": [[0, 0]]}]}), "polygon of type 2"),
    (broken(seg_ie_polys={"polys": [{"type": 1, "pts": [[0, 0, 0]]}]}), r"'seg_ie_polys' has shape \(1, 3\)"),
    (broken(seg_ie_polys={"polys": "x"}), "polys is not a list"),
    (broken(seg_ie_polys=5), "neither a dict nor a list"),
])
def test_malformed_metadata_is_a_clear_error(tmp_path, data, message):
    path = tmp_path / "face.jpg"
    path.write_bytes(write_app15(jpeg(), pickle.dumps(data, protocol=4)))
    with pytest.raises(BadMetadataError, match=message) as raised:
        read_dfl_metadata(path)
    assert str(path) in str(raised.value)
    assert raised.value.reason.startswith("bad-metadata: ")


def test_read_dfl_metadata_errors_name_the_file(tmp_path):
    plain = tmp_path / "plain.jpg"
    plain.write_bytes(jpeg())
    assert read_dfl_metadata(plain) is None
    png = tmp_path / "face.png"
    cv2.imwrite(str(png), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(JpegStructureError, match=f"{png}: not a JPEG"):
        read_dfl_metadata(png)
    with pytest.raises(FacesmithError, match="cannot read"):
        read_dfl_metadata(tmp_path / "missing.jpg")
    unsafe = tmp_path / "unsafe.jpg"
    unsafe.write_bytes(write_app15(jpeg(), b"cos\nsystem\n(Vtouch ran\ntR."))
    with pytest.raises(UnsafeMetadataError, match=f"{unsafe}: unsafe DFL metadata, refused global os.system"):
        read_dfl_metadata(unsafe)


# -- export and import with real faces --------------------------------------------------------------


@pytest.fixture(scope="module")
def faceset(module_dirs, analyzer, obama_paths, biden_path) -> Path:
    """Four photos scanned at 128 px whole_face."""
    photos = module_dirs("photos")
    for path in [*obama_paths, biden_path]:
        shutil.copy(path, photos / path.name)
    database = module_dirs("faceset") / "faceset.duckdb"
    summary = scan_folder(photos, database, ScanSettings(resolution=128), analyzer=analyzer)
    assert summary.faces >= 4
    return database


def face_rows(database: Path) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as connection:
        return connection.execute(
            "SELECT f.face_id, i.path, f.bbox, f.landmarks68, f.image_to_face, f.aligned_path "
            "FROM faces f JOIN images i USING (image_id) ORDER BY f.face_id"
        ).fetchall()


@pytest.fixture(scope="module")
def exported(module_dirs, faceset) -> list[Path]:
    return export_dfl(faceset, module_dirs("export") / "aligned")


def test_export_writes_dfl_jpegs_that_read_back(faceset, exported):
    with FacesetReader(faceset) as reader:  # by default, the faces that train
        trainable = set(reader.trainable_ids())
    rows = [row for row in face_rows(faceset) if row[0] in trainable]
    assert len(rows) >= 4
    assert [path.name for path in exported] == [f"{n:05d}.jpg" for n in range(len(rows))]
    assert not list(exported[0].parent.glob(".*"))  # no temporary files left behind
    for path, (face_id, source, bbox, landmarks68, image_to_face, aligned_path) in zip(exported, rows):
        data = path.read_bytes()
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (128, 128, 3)
        crop = load_bgr(faceset.parent / aligned_path)
        assert np.abs(image.astype(int) - crop.astype(int)).mean() < 3  # the same crop, re-encoded
        # What DFL's reader needs: JFIF in APP0, the APP15 after it, a baseline SOF0.
        assert data[6:11] == b"JFIF\x00" and markers(data)[:3] == [0xD8, 0xE0, 0xEF] and 0xC0 in markers(data)

        metadata = read_dfl_metadata(path)
        matrix = np.reshape(image_to_face, (2, 3))
        source_landmarks = np.reshape(landmarks68, (68, 2))
        assert metadata.face_type == "whole_face"
        assert metadata.source_filename == source
        assert np.allclose(metadata.source_rect, bbox)
        assert np.allclose(metadata.source_landmarks, source_landmarks)
        assert np.allclose(metadata.image_to_face_mat, matrix)
        assert np.allclose(metadata.landmarks, source_landmarks @ matrix[:, :2].T + matrix[:, 2])
        assert metadata.eyebrows_expand_mod == 1.0
        assert metadata.landmarks.min() > -10 and metadata.landmarks.max() < 138  # inside the crop


def test_exported_metadata_is_what_dfl_with_numpy_1_loads(exported):
    """DFL pins numpy 1.x, which has no 'numpy._core': the arrays must name 'numpy.core'."""
    payload = read_app15(exported[0].read_bytes())
    assert payload[:2] == b"\x80\x03"  # protocol 3: any Python 3 reads it
    names = {argument for op, argument, _ in pickletools.genops(payload) if "GLOBAL" in op.name or op.name == "INST"}
    assert names == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    with warnings.catch_warnings():  # numpy 2 still loads 'numpy.core' names, perhaps with a warning
        warnings.simplefilter("ignore", DeprecationWarning)
        data = pickle.loads(payload)  # our own file: what DFL does with it
    assert set(data) == {"face_type", "landmarks", "eyebrows_expand_mod", "source_filename", "source_rect",
                         "source_landmarks", "image_to_face_mat"}
    # the types DFL's extractor writes: landmarks as lists, the rect and matrix as float arrays
    assert len(data["landmarks"]) == 68 and all(type(v) is float for point in data["landmarks"] for v in point)
    assert type(data["source_landmarks"]) is list
    assert data["source_rect"].dtype == np.float64 and data["source_rect"][[0, 2, 2, 0]].shape == (4,)
    assert data["image_to_face_mat"].shape == (2, 3)


def test_metadata_survives_our_own_writer():
    original = DflFaceMetadata.from_dict(dfl_like_dict())
    again = DflFaceMetadata.from_dict(safe_loads(dfl_pickle(original.to_dict())))
    for name in ("landmarks", "source_rect", "source_landmarks", "image_to_face_mat"):
        assert np.array_equal(getattr(again, name), getattr(original, name)), name
    assert again.xseg_mask == original.xseg_mask and again.source_filename == original.source_filename
    assert [(p.include, p.points.tolist()) for p in again.seg_ie_polys] == [
        (p.include, p.points.tolist()) for p in original.seg_ie_polys
    ]
    assert again.other_keys == ()  # keys we do not read are not written back


def test_import_of_an_exported_folder_matches(tmp_path, analyzer, faceset, exported):
    database = tmp_path / "imported.duckdb"
    summary = import_dfl_folder(exported[0].parent, database, ScanSettings(resolution=128), analyzer=analyzer)
    assert summary.files == len(exported) == summary.with_metadata
    assert summary.without_metadata == summary.rejected == 0 and summary.reasons == {}
    assert summary.scan.images_ok == len(exported)

    rows = {row.image_id: row for row in read_dfl_rows(database)}
    with duckdb.connect(str(database), read_only=True) as connection:
        images = dict(connection.execute("SELECT path, face_count FROM images").fetchall())
        detected = dict(connection.execute(
            "SELECT i.path, f.landmarks68 FROM faces f JOIN images i USING (image_id) WHERE f.face_index = 0"
        ).fetchall())
    for path, (face_id, source, bbox, landmarks68, image_to_face, _) in zip(exported, face_rows(faceset)):
        row = rows[image_id_for(path.name)]
        metadata = read_dfl_metadata(path)
        assert row.status == "ok" and row.reason is None
        assert row.face_type == "whole_face" and row.source_filename == source
        assert np.allclose(row.source_rect, bbox)
        assert np.allclose(row.source_landmarks, landmarks68)
        assert np.allclose(row.image_to_face, image_to_face)
        assert np.allclose(row.aligned_landmarks, metadata.landmarks.ravel())
        assert row.eyebrows_expand_mod == 1.0
        # the faces are found again in the 128 px crops, where the metadata says they are
        assert images[path.name] >= 1
        error = np.linalg.norm(np.reshape(detected[path.name], (68, 2)) - metadata.landmarks, axis=1).mean()
        assert error < 3.0, (path.name, error)  # about 1 px measured

    again = import_dfl_folder(exported[0].parent, database, ScanSettings(resolution=128), analyzer=analyzer)
    assert again.scan.images_processed == 0 and again.with_metadata == len(exported)
    assert len(read_dfl_rows(database)) == len(exported)


def test_export_follows_the_selection_or_given_ids(tmp_path, faceset):
    rows = face_rows(faceset)
    face_ids = [row[0] for row in rows]
    chosen = face_ids[-1]
    written = export_dfl(faceset, tmp_path / "given", face_ids=[chosen, face_ids[0]], quality=70)
    assert [read_dfl_metadata(path).source_filename for path in written] == [rows[-1][1], rows[0][1]]

    selected = tmp_path / "selected.duckdb"
    shutil.copy(faceset, selected)
    with FacesetStore(selected) as store:
        store.replace_analysis("selection", "selection", [
            (face_id, face_id == chosen, 1 if face_id == chosen else None, 0, 0, "front",
             "selected" if face_id == chosen else "duplicate", "neutral")
            for face_id in face_ids
        ], {})
    # crops are found relative to the database's folder
    shutil.copytree(faceset.parent / "faceset_aligned", tmp_path / "faceset_aligned")
    only = export_dfl(selected, tmp_path / "only")
    assert len(only) == 1 and read_dfl_metadata(only[0]).source_filename == rows[-1][1]
    every = export_dfl(selected, tmp_path / "every", all_faces=True)
    assert len(every) == len(face_ids)


def test_export_writes_past_a_leftover_temporary_file(tmp_path, faceset):
    out = tmp_path / "aligned"
    out.mkdir()
    (out / ".00000.jpg.tmp").mkdir()  # what a killed run or a second writer leaves at a fixed name
    written = export_dfl(faceset, out)
    assert written[0].name == "00000.jpg" and read_dfl_metadata(written[0]) is not None


def test_export_errors(tmp_path, faceset, exported):
    with pytest.raises(FacesmithError, match="no faceset"):
        export_dfl(tmp_path / "missing.duckdb", tmp_path / "out")
    with pytest.raises(FacesmithError, match="already holds JPEG files"):
        export_dfl(faceset, exported[0].parent)
    with pytest.raises(FacesmithError, match="1 face id\\(s\\) not in .*: nope"):
        export_dfl(faceset, tmp_path / "out", face_ids=["nope"])
    with pytest.raises(FacesmithError, match="quality"):
        export_dfl(faceset, tmp_path / "out", quality=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FacesmithError, match="not a folder"):
        export_dfl(faceset, tmp_path / "file")
    assert not (tmp_path / "out").exists()


def test_a_crafted_file_is_rejected_and_the_rest_imports(tmp_path, analyzer, exported):
    folder = tmp_path / "dfl"
    folder.mkdir()
    marker = tmp_path / "ran"
    good = exported[0].read_bytes()
    shutil.copy(exported[0], folder / "good_1.jpg")
    shutil.copy(exported[1], folder / "good_2.jpg")
    (folder / "crafted_system.jpg").write_bytes(
        write_app15(good, f"cos\nsystem\n(Vtouch {marker}\ntR.".encode())
    )
    (folder / "crafted_open.jpg").write_bytes(
        write_app15(good, pickle.dumps({"landmarks": Reduce(open, str(marker), "w")}, protocol=4))
    )
    (folder / "malformed.jpg").write_bytes(write_app15(good, pickle.dumps({"face_type": "whole_face"})))
    (folder / "not_pickle.jpg").write_bytes(write_app15(good, b"\x00garbage"))
    (folder / "plain.jpg").write_bytes(without_app0(jpeg(1, 64)))
    (folder / "broken_header.jpg").write_bytes(good[:30])
    (folder / "notes.txt").write_text("not an image")

    summary = import_dfl_folder(folder, tmp_path / "f.duckdb", ScanSettings(resolution=128), analyzer=analyzer)
    assert not marker.exists()
    rows = {row.image_id: row for row in read_dfl_rows(tmp_path / "f.duckdb")}
    by_name = {name: rows[image_id_for(name)] for name in sorted(path.name for path in folder.iterdir())}
    assert {name: (row.status, row.reason) for name, row in by_name.items()} == {
        "good_1.jpg": ("ok", None),
        "good_2.jpg": ("ok", None),
        "crafted_system.jpg": ("rejected", "unsafe-metadata: refused global os.system"),
        "crafted_open.jpg": ("rejected", "unsafe-metadata: refused global io.open"),
        "malformed.jpg": ("rejected", "bad-metadata: no 'landmarks'"),
        "not_pickle.jpg": ("rejected", by_name["not_pickle.jpg"].reason),
        "plain.jpg": ("no-metadata", "no APP15 segment"),
        "broken_header.jpg": ("rejected", by_name["broken_header.jpg"].reason),
        "notes.txt": ("no-metadata", "not a JPEG file"),
    }
    assert by_name["not_pickle.jpg"].reason.startswith("bad-metadata: not a valid pickle")
    assert by_name["broken_header.jpg"].reason.startswith("bad-jpeg: truncated JPEG")
    assert by_name["crafted_system.jpg"].face_type is None and by_name["crafted_system.jpg"].source_rect is None
    assert (summary.files, summary.with_metadata, summary.without_metadata, summary.rejected) == (9, 2, 2, 5)
    assert summary.reasons["unsafe-metadata: refused global os.system"] == 1
    # the pixels are still scanned: a file with unsafe metadata is a fine image
    with duckdb.connect(str(tmp_path / "f.duckdb"), read_only=True) as connection:
        statuses = dict(connection.execute("SELECT path, status FROM images").fetchall())
        faces = dict(connection.execute("SELECT path, face_count FROM images").fetchall())
    assert statuses["crafted_system.jpg"] == "ok" and faces["crafted_system.jpg"] >= 1
    assert statuses["broken_header.jpg"] == "rejected" and statuses["notes.txt"] == "rejected"
    assert DflFaceRow.from_row(by_name["good_1.jpg"].to_row()) == by_name["good_1.jpg"]


def test_import_refuses_a_missing_folder(tmp_path, analyzer):
    with pytest.raises(FacesmithError, match="not a folder"):
        import_dfl_folder(tmp_path / "nowhere", tmp_path / "f.duckdb", analyzer=analyzer)


# -- bounded before allocation (issue 17, findings 1 and 2) ------------------------------------


@pytest.mark.parametrize("opcode", [b"r", b"q", b"h", b"j"])
def test_memo_indices_past_the_payload_are_refused_before_the_memo_grows(opcode):
    # Six hostile bytes: None, then a memo slot 2**27 (2**30) far, which the C unpickler would
    # make room for first (~2 GiB, 16 GiB); refused before it runs.
    index = {b"r": 2**27, b"j": 2**30, b"q": 255, b"h": 200}[opcode]
    argument = index.to_bytes(4, "little") if opcode in (b"r", b"j") else bytes([index])
    payload = b"N" + opcode + argument + b"."
    with pytest.raises(BadMetadataError, match="memo index"):
        safe_loads(payload)


def test_declared_lengths_past_the_payload_are_refused():
    # BINBYTES8 declaring 2**40 bytes: the C unpickler allocates the declared size before reading.
    with pytest.raises(BadMetadataError, match="not a valid pickle"):
        safe_loads(b"\x80\x04\x8e" + (2**40).to_bytes(8, "little") + b"abc.")


@pytest.mark.parametrize("key", ["landmarks", "face_type"])
def test_a_shared_tree_is_refused_before_anything_expands_it(key):
    # 27 levels of [x, x]: a few hundred bytes naming 2**27 lists, which np.asarray (landmarks)
    # or repr (face_type) would each build or print in full.
    payload = pickle.dumps({"face_type": "whole_face", "landmarks": [[0.0, 0.0]] * 68, key: shared_dag(27)},
                           protocol=2)
    assert len(payload) < 1200
    with pytest.raises(BadMetadataError, match="expands to more than"):
        safe_loads(payload)


def test_a_face_type_of_the_wrong_type_is_named_not_printed():
    data = {"landmarks": [[0.0, 0.0]] * 68, "face_type": shared_dag(12)}
    with pytest.raises(BadMetadataError, match="'face_type' is a list"):
        DflFaceMetadata.from_dict(data)


def test_hostile_metadata_costs_its_own_row_only(tmp_path, analyzer, exported):
    folder = tmp_path / "dfl"
    folder.mkdir()
    good = exported[0].read_bytes()
    shutil.copy(exported[0], folder / "good_1.jpg")
    (folder / "memo_bomb.jpg").write_bytes(write_app15(good, b"Nr" + (2**27).to_bytes(4, "little") + b"."))
    landmarks = {"face_type": "whole_face", "landmarks": shared_dag(27)}
    (folder / "tree.jpg").write_bytes(write_app15(good, pickle.dumps(landmarks, protocol=2)))
    face_type = {"face_type": shared_dag(28), "landmarks": [[0.0, 0.0]] * 68}
    (folder / "face_type_tree.jpg").write_bytes(write_app15(good, pickle.dumps(face_type, protocol=2)))
    summary = import_dfl_folder(folder, tmp_path / "f.duckdb", ScanSettings(resolution=128), analyzer=analyzer)
    rows = {row.image_id: row for row in read_dfl_rows(tmp_path / "f.duckdb")}
    by_name = {name: rows[image_id_for(name)] for name in ("good_1.jpg", "memo_bomb.jpg", "tree.jpg",
                                                           "face_type_tree.jpg")}
    assert by_name["good_1.jpg"].status == "ok"
    for name in ("memo_bomb.jpg", "tree.jpg", "face_type_tree.jpg"):
        assert by_name[name].status == "rejected", (name, by_name[name])
        assert by_name[name].reason.startswith("bad-metadata"), by_name[name].reason
    assert (summary.files, summary.with_metadata, summary.rejected) == (4, 1, 3)


def test_a_huge_sparse_jpeg_costs_its_header_not_its_size(tmp_path, analyzer, exported):
    import resource

    folder = tmp_path / "dfl"
    folder.mkdir()
    shutil.copy(exported[0], folder / "good.jpg")
    with open(folder / "huge.jpg", "wb") as handle:  # a DFL face, then 3 GiB of nothing (sparse)
        handle.write(exported[0].read_bytes())
        handle.truncate(3 * 2**30)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    summary = import_dfl_folder(folder, tmp_path / "f.duckdb", ScanSettings(resolution=128), analyzer=analyzer)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before < 512 * 2**20
    rows = {row.image_id: row for row in read_dfl_rows(tmp_path / "f.duckdb")}
    assert rows[image_id_for("huge.jpg")].status == "ok"  # its metadata is in its first bytes
    assert summary.scan.rejected_by_reason == {"too-large": 1}
