"""DFL's aligned-face metadata as a typed record: parse it safely, check it, write it back as DFL does."""

from __future__ import annotations

import math
import pickle
import pickletools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from curate.interop.dfl.errors import BadMetadataError, DflError
from curate.interop.dfl.jpeg_segments import read_app15, write_app15
from curate.interop.dfl.safe_pickle import safe_loads
from curate.errors import FacesmithError


# facesmith face type -> DFL's name for it (facelib's FaceType strings).
DFL_FACE_TYPES: dict[str, str] = {
    "half": "half_face",
    "mid_full": "midfull_face",
    "full": "full_face",
    "whole_face": "whole_face",
    "head": "head",
}
FACESMITH_FACE_TYPES: dict[str, str] = {dfl: ours for ours, dfl in DFL_FACE_TYPES.items()}

_KNOWN_KEYS = {
    "face_type", "landmarks", "source_filename", "source_rect", "source_landmarks",
    "image_to_face_mat", "eyebrows_expand_mod", "xseg_mask", "seg_ie_polys",
}


@dataclass(frozen=True, eq=False)
class SegPolygon:
    """One XSeg editor polygon."""

    include: bool  # DFL's type 1 = include, 0 = exclude
    points: np.ndarray  # (N, 2) float64, aligned-image pixels


@dataclass(frozen=True, eq=False)
class DflFaceMetadata:
    """The metadata of one DFL aligned face (the pickled dict of its APP15 segment), validated."""

    face_type: str  # DFL's name: half_face, midfull_face, full_face, whole_face, head, …
    landmarks: np.ndarray  # (68, 2) float64, aligned-image pixels, iBUG layout
    source_filename: str | None  # the frame the face was cut from
    source_rect: np.ndarray | None  # (4,) float64: left, top, right, bottom in frame pixels
    source_landmarks: np.ndarray | None  # (68, 2) float64, frame pixels
    image_to_face_mat: np.ndarray | None  # (2, 3) float64 affine, frame pixels -> aligned pixels
    eyebrows_expand_mod: float = 1.0
    xseg_mask: bytes | None = None  # the XSeg mask as an encoded PNG or JPEG
    seg_ie_polys: tuple[SegPolygon, ...] = ()
    other_keys: tuple[str, ...] = ()  # keys present but not read (legacy DFL ones)

    @property
    def facesmith_face_type(self) -> str | None:
        """Our name for the face type; None for DFL-only types (no_align variants, mark_only)."""
        return FACESMITH_FACE_TYPES.get(self.face_type)

    @classmethod
    def from_dict(cls, data: Any) -> DflFaceMetadata:
        """Validate an unpickled DFL dict; BadMetadataError names the first key that is wrong."""
        if not isinstance(data, dict):
            raise BadMetadataError(f"the payload is a {type(data).__name__}, not a dict")
        if not all(isinstance(key, str) for key in data):
            raise BadMetadataError("the metadata has keys that are not strings")
        if "landmarks" not in data:
            raise BadMetadataError("no 'landmarks'")
        face_type = data.get("face_type", "full_face")  # DFL's reader assumes full_face when absent
        if not isinstance(face_type, str):
            # The type, never repr(): a crafted value can take minutes to print.
            raise BadMetadataError(f"'face_type' is a {type(face_type).__name__}, not a face type name")
        if not 0 < len(face_type) <= 64:
            raise BadMetadataError(f"'face_type' is not a face type name: {face_type[:40]!r}")
        source_filename = data.get("source_filename")
        if source_filename is not None and not isinstance(source_filename, str):
            raise BadMetadataError("'source_filename' is not a string")
        return cls(
            face_type=face_type,
            landmarks=_float_array(data["landmarks"], (68, 2), "landmarks"),
            source_filename=source_filename,
            source_rect=_optional_array(data, "source_rect", (4,)),
            source_landmarks=_optional_array(data, "source_landmarks", (68, 2)),
            image_to_face_mat=_optional_array(data, "image_to_face_mat", (2, 3)),
            eyebrows_expand_mod=_number(data.get("eyebrows_expand_mod", 1.0), "eyebrows_expand_mod"),
            xseg_mask=_mask_bytes(data.get("xseg_mask")),
            seg_ie_polys=_polygons(data.get("seg_ie_polys")),
            other_keys=tuple(sorted(set(data) - _KNOWN_KEYS)),
        )

    def to_dict(self) -> dict[str, Any]:
        """The dict in the types DFL's own extractor writes: landmarks as lists of floats,
        source_rect and image_to_face_mat as float64 arrays (DFL's sort by rect size indexes
        source_rect as an array), xseg_mask as cv2.imencode's uint8 array."""
        data: dict[str, Any] = {
            "face_type": self.face_type,
            "landmarks": self.landmarks.tolist(),
            "eyebrows_expand_mod": float(self.eyebrows_expand_mod),
        }
        optional = {
            "source_filename": self.source_filename,
            "source_rect": self.source_rect,
            "source_landmarks": None if self.source_landmarks is None else self.source_landmarks.tolist(),
            "image_to_face_mat": self.image_to_face_mat,
            "xseg_mask": None if self.xseg_mask is None else np.frombuffer(self.xseg_mask, np.uint8).copy(),
            "seg_ie_polys": {"polys": [
                {"type": int(polygon.include), "pts": polygon.points.tolist()} for polygon in self.seg_ie_polys
            ]} if self.seg_ie_polys else None,
        }
        # DFL drops None values before writing; absent keys read back as their defaults.
        data.update({key: value for key, value in optional.items() if value is not None})
        return data


def _float_array(value: Any, shape: tuple[int, ...], key: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise BadMetadataError(f"{key!r} holds {value.dtype} values, not numbers")
    elif not isinstance(value, (list, tuple)):
        raise BadMetadataError(f"{key!r} is a {type(value).__name__}, not an array")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise BadMetadataError(f"{key!r} is not an array of numbers") from error
    if array.shape != shape:
        raise BadMetadataError(f"{key!r} has shape {array.shape}, expected {shape}")
    if not np.isfinite(array).all():
        raise BadMetadataError(f"{key!r} holds values that are not finite")
    return array


def _optional_array(data: dict, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
    value = data.get(key)
    return None if value is None else _float_array(value, shape, key)


def _number(value: Any, key: str) -> float:
    if isinstance(value, np.generic) and value.dtype.kind in "iuf":
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadMetadataError(f"{key!r} is not a finite number")
    return float(value)


def _mask_bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, np.ndarray) and value.dtype == np.uint8:  # DFL keeps cv2.imencode's array
        return value.tobytes()
    raise BadMetadataError("'xseg_mask' is not encoded image bytes")


def _polygons(value: Any) -> tuple[SegPolygon, ...]:
    if value is None:
        return ()
    if isinstance(value, dict):
        items = value.get("polys", [])
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise BadMetadataError("'seg_ie_polys' polys is not a list of polygons")
        pairs = [(item.get("type"), item.get("pts")) for item in items]
    elif isinstance(value, list):  # the older DFL layout: [(type, points), …]
        if not all(isinstance(item, (list, tuple)) and len(item) == 2 for item in value):
            raise BadMetadataError("'seg_ie_polys' is not a list of (type, points)")
        pairs = [tuple(item) for item in value]
    else:
        raise BadMetadataError("'seg_ie_polys' is neither a dict nor a list")
    polygons = []
    for kind, points in pairs:
        if isinstance(kind, np.generic):
            kind = kind.item()
        if isinstance(kind, (bool, float)) or kind not in (0, 1):
            raise BadMetadataError(f"'seg_ie_polys' has a polygon of type {kind!r} (0 or 1 expected)")
        polygons.append(SegPolygon(include=bool(kind), points=_points(points)))
    return tuple(polygons)


def _points(value: Any) -> np.ndarray:
    """An (N, 2) polygon, N >= 0."""
    if isinstance(value, np.ndarray) and value.ndim == 2:
        count = value.shape[0]
    elif isinstance(value, (list, tuple)):
        count = len(value)
    else:
        count = -1  # _float_array names the wrong type or shape
    if count == 0:
        return np.zeros((0, 2), dtype=np.float64)
    return _float_array(value, (count, 2), "seg_ie_polys")


def parse_dfl_metadata(jpeg_bytes: bytes) -> DflFaceMetadata | None:
    """The DFL metadata in a JPEG's bytes; None when it has no APP15 segment."""
    payload = read_app15(jpeg_bytes)
    if payload is None:
        return None
    return DflFaceMetadata.from_dict(safe_loads(payload))


def read_dfl_metadata(path: Path) -> DflFaceMetadata | None:
    """The DFL metadata of an aligned JPEG file; None when the JPEG has no APP15 segment.

    Raises JpegStructureError (not a JPEG, corrupt header), UnsafeMetadataError (the pickle
    asks for code; nothing runs) or BadMetadataError (not a valid DFL dict), each naming the file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise FacesmithError(f"cannot read {path}: {error.strerror or error}") from error
    try:
        return parse_dfl_metadata(data)
    except DflError as error:
        raise error.at(path) from error


def dfl_pickle(data: dict[str, Any]) -> bytes:
    """`pickle.dumps(data)` as DFL's numpy 1.x can load it.

    numpy 2 pickles arrays through 'numpy._core.multiarray._reconstruct', a module numpy 1.x
    lacks; numpy 1.x names it 'numpy.core.multiarray' (which numpy 2 still loads). Protocol 3
    (DFL runs Python 3.6+) writes each global as one text line, so the names are respelled at
    the GLOBAL opcodes that pickletools finds, leaving every other byte as it was.
    """
    payload = pickle.dumps(data, protocol=3)
    parts, copied = [], 0
    for opcode, argument, position in pickletools.genops(payload):
        if opcode.name == "GLOBAL" and argument.startswith("numpy._core."):
            module, name = argument.split(" ", 1)
            line = f"c{module}\n{name}\n".encode()
            if payload[position : position + len(line)] != line:
                raise FacesmithError(f"unexpected pickle layout at byte {position}")
            numpy1_module = "numpy.core." + module.removeprefix("numpy._core.")
            parts += [payload[copied:position], f"c{numpy1_module}\n{name}\n".encode()]
            copied = position + len(line)
    parts.append(payload[copied:])
    return b"".join(parts)


def encode_dfl_jpeg(image_bgr: np.ndarray, metadata: DflFaceMetadata, quality: int = 90) -> bytes:
    """A DFL aligned JPEG: the image at `quality` with the metadata dict pickled in APP15."""
    ok, encoded = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise FacesmithError("cannot encode the aligned face as JPEG")
    return write_app15(encoded.tobytes(), dfl_pickle(metadata.to_dict()))
