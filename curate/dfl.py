"""DeepFaceLab interop: read and write the metadata DFL keeps in aligned JPEGs, import and export folders.

DFL stores a face's metadata as `pickle.dumps(dict)` in the JPEG's APP15 segment
(../shared/SAEHD.md §9). `pickle.loads` on a file from someone else runs whatever the file asks
for, so this module never calls it: `safe_loads` resolves only the few globals that plain values
and numpy arrays need, to stand-ins written here, and builds the arrays itself from validated
bytes. Everything else is refused before anything runs.
"""

from __future__ import annotations

import io
import logging
import math
import pickle
import pickletools
import re
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from curate.align import transform_points
from curate.backends.base import FaceAnalyzer
from curate.errors import FacesmithError
from curate.faceset import open_faceset, table_exists
from curate.fileio import write_atomically
from curate.ingest import FileEntry, walk_files
from curate.progress import ProgressCallback
from curate.scan import (
    ScanSettings,
    ScanSummary,
    default_aligned_dir,
    faceset_own_files,
    image_id_for,
    scan_folder,
)
from curate.store import DFL_FACE_COLUMNS, FacesetStore

logger = logging.getLogger(__name__)

# -- errors ---------------------------------------------------------------------------------


class DflError(FacesmithError):
    """A DFL aligned file that cannot be read as asked; `reason` is the short form stored per file."""

    code = "dfl-error"

    def __init__(self, detail: str, path: Path | None = None) -> None:
        self.detail = detail
        self.path = path
        super().__init__(f"{path}: {self._message()}" if path is not None else self._message())

    def _message(self) -> str:
        return self.detail

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.detail}"

    def at(self, path: Path) -> DflError:
        """The same error, naming the file it came from."""
        return type(self)(self.detail, path)


class JpegStructureError(DflError):
    """The bytes are not a JPEG, or its marker segments are truncated or corrupt."""

    code = "bad-jpeg"


class PayloadTooLargeError(DflError):
    """A metadata payload does not fit one JPEG segment (16-bit length)."""

    code = "too-large"


class BadMetadataError(DflError):
    """The APP15 payload is not a valid pickle of a DFL metadata dict (wrong keys, types, shapes)."""

    code = "bad-metadata"

    def _message(self) -> str:
        return f"bad DFL metadata: {self.detail}"


class UnsafeMetadataError(DflError):
    """The APP15 payload asks for a global (a function or class) outside the allowed few:
    loading it with plain pickle could run code. Nothing in it was run."""

    code = "unsafe-metadata"

    def _message(self) -> str:
        return (
            f"unsafe DFL metadata, {self.detail}: DFL metadata may hold only plain values and numpy "
            "arrays; nothing in it was run"
        )

    @classmethod
    def refused_global(cls, module: str, name: str) -> UnsafeMetadataError:
        return cls(f"refused global {module}.{name}")


# -- JPEG APP15 segment -----------------------------------------------------------------------

_SOI = b"\xff\xd8"
_APP0, _APP15, _SOS, _EOI = 0xE0, 0xEF, 0xDA, 0xD9
# Markers that stand alone, without a length field: TEM and RST0-7 (SOI/EOI are handled apart).
_STANDALONE = {0x01, *range(0xD0, 0xD8)}
# The segment length is 16 bits and counts its own two bytes.
MAX_PAYLOAD = 0xFFFF - 2


@dataclass(frozen=True)
class _Segment:
    marker: int
    start: int  # offset of the 0xFF that opens the segment
    end: int  # offset just past the segment
    payload_start: int  # offset of the data after the length field (== end for standalone markers)


def _header_segments(data: bytes) -> tuple[list[_Segment], int]:
    """The marker segments between SOI and the first SOS (or EOI), and the offset where the
    rest of the file (the SOS segment and the entropy-coded data) begins."""
    if len(data) < 2 or data[:2] != _SOI:
        raise JpegStructureError("not a JPEG file (no start-of-image marker)")
    size = len(data)
    segments: list[_Segment] = []
    position = 2
    while True:
        if position >= size:
            raise JpegStructureError("truncated JPEG: the file ends before the image data")
        if data[position] != 0xFF:
            raise JpegStructureError(f"corrupt JPEG: no marker at byte {position}")
        start = position
        while position < size and data[position] == 0xFF:  # fill bytes may pad a marker
            position += 1
        if position >= size:
            raise JpegStructureError("truncated JPEG: the file ends inside a marker")
        marker = data[position]
        position += 1
        if marker in (_SOS, _EOI):
            return segments, start
        if marker in _STANDALONE:
            segments.append(_Segment(marker, start, position, position))
            continue
        if marker == 0x00 or marker == 0xD8:
            raise JpegStructureError(f"corrupt JPEG: unexpected marker 0x{marker:02X} at byte {start}")
        if position + 2 > size:
            raise JpegStructureError("truncated JPEG: the file ends inside a segment length")
        (length,) = struct.unpack(">H", data[position : position + 2])
        if length < 2:
            raise JpegStructureError(f"corrupt JPEG: segment length {length} at byte {position}")
        end = position + length
        if end > size:
            raise JpegStructureError(
                f"truncated JPEG: a segment of {length} bytes at byte {position} runs past the end"
            )
        segments.append(_Segment(marker, start, end, position + 2))
        position = end


def read_app15(jpeg_bytes: bytes) -> bytes | None:
    """The APP15 payload of a JPEG, or None when it has none.

    Walks the marker segments from SOI up to the first SOS. When several APP15 segments exist
    the last one counts (as in DFL's reader). Raises JpegStructureError for bytes that are not
    a JPEG or whose header segments are truncated or corrupt.
    """
    segments, _ = _header_segments(bytes(jpeg_bytes))
    found = [segment for segment in segments if segment.marker == _APP15]
    if not found:
        return None
    last = found[-1]
    return bytes(jpeg_bytes[last.payload_start : last.end])


def write_app15(jpeg_bytes: bytes, payload: bytes) -> bytes:
    """The JPEG with `payload` as its only APP15 segment, placed after the last other APPn
    segment (right after SOI when there is none); every other byte is kept as it was."""
    if len(payload) > MAX_PAYLOAD:
        raise PayloadTooLargeError(
            f"metadata of {len(payload)} bytes does not fit a JPEG segment (at most {MAX_PAYLOAD})"
        )
    data = bytes(jpeg_bytes)
    segments, body_start = _header_segments(data)
    kept = [segment for segment in segments if segment.marker != _APP15]
    after = 0
    for index, segment in enumerate(kept):
        if _APP0 <= segment.marker <= _APP15:
            after = index + 1
    new_segment = b"\xff" + bytes([_APP15]) + struct.pack(">H", len(payload) + 2) + bytes(payload)
    parts = [_SOI]
    parts += [data[segment.start : segment.end] for segment in kept[:after]]
    parts.append(new_segment)
    parts += [data[segment.start : segment.end] for segment in kept[after:]]
    parts.append(data[body_start:])
    return b"".join(parts)


# -- restricted unpickler -----------------------------------------------------------------------
#
# The globals numpy's pickles name, in numpy 1.x ('numpy.core') and 2.x ('numpy._core'):
#   ndarray  -> _reconstruct(numpy.ndarray, (0,), b'b') then BUILD with
#               (version, shape, dtype, is_fortran, raw bytes)
#   ndarray, protocol 5 -> numeric._frombuffer(buffer, dtype, shape, order)
#   dtype    -> numpy.dtype('f8', False, True) then BUILD with (3, '<', None, None, None, -1, -1, 0)
#   scalar   -> multiarray.scalar(dtype, raw bytes)
# Protocols 0-2 spell bytes as _codecs.encode(text, 'latin1') (b'' as bytes()), and sets,
# bytearrays and complex numbers through builtins, which Python 3's pickler writes
# '__builtin__' at protocols < 3.
#
# None of these resolve to numpy itself: each resolves to a stand-in below that only records
# its arguments. The tree is then walked and each array built with np.frombuffer from raw bytes
# whose length matches a plain numeric dtype, so no numpy code ever sees attacker-chosen state
# (numpy's own __setstate__ trusts its input, e.g. the dtype flags).

_NUMPY_CORE = ("numpy.core", "numpy._core")
_MAX_DEPTH = 64  # containers nested deeper than any DFL dict: refused
_MAX_VALUES = 1_000_000  # values in one payload (a DFL dict holds a few hundred)
_MAX_ARRAY_BYTES = 64 * 2**20  # numpy array bytes built from one payload (a DFL dict: ~3 KiB)
_DTYPE_SPEC = re.compile(r"[biufc]\d{1,2}")  # bool, ints, floats, complex: all a face needs


class _Stand:
    """A value the unpickler hands out for an allowed global: no attributes can be set on it."""

    __slots__ = ()


class _NdarrayClass(_Stand):
    """Stands for numpy.ndarray; only valid as the first argument of _reconstruct."""

    __slots__ = ()


class _Pending:
    """Base of the records the stand-ins return; BUILD may give each its state once."""

    __slots__ = ("has_state", "state")

    def __init__(self) -> None:
        self.state: Any = None
        self.has_state = False

    def __setstate__(self, state: Any) -> None:
        if self.has_state:
            raise BadMetadataError("an object's state is set twice")
        self.state = state
        self.has_state = True


class _PendingDtype(_Pending):
    __slots__ = ("spec",)

    def __init__(self, spec: str) -> None:
        super().__init__()
        self.spec = spec

    def build(self) -> np.dtype:
        if not isinstance(self.spec, str) or not _DTYPE_SPEC.fullmatch(self.spec):
            raise BadMetadataError(f"unsupported numpy dtype {self.spec!r} (only plain numbers)")
        byte_order = "="
        if self.has_state:
            state = self.state
            if (
                not isinstance(state, tuple) or len(state) < 8 or state[0] not in (3, 4)
                or state[1] not in ("<", ">", "|", "=") or any(item is not None for item in state[2:5])
            ):
                raise BadMetadataError(f"unsupported numpy dtype state for {self.spec!r}")
            byte_order = "=" if state[1] == "|" else state[1]
        try:
            return np.dtype(byte_order + self.spec)
        except TypeError as error:
            raise BadMetadataError(f"unsupported numpy dtype {self.spec!r}") from error


class _PendingArray(_Pending):
    """_reconstruct's empty array, waiting for BUILD's (version, shape, dtype, fortran, bytes)."""

    __slots__ = ()

    def build(self) -> np.ndarray:
        if not self.has_state:
            raise BadMetadataError("a numpy array without data")
        state = self.state
        if not isinstance(state, tuple) or len(state) != 5 or state[0] != 1:
            raise BadMetadataError("unsupported numpy array state")
        _, shape, dtype, fortran, raw = state
        if not isinstance(fortran, (bool, int)):
            raise BadMetadataError("unsupported numpy array state")
        return _array_from_bytes(raw, dtype, shape, "F" if fortran else "C")


class _PendingFromBuffer(_Pending):
    __slots__ = ("arguments",)

    def __init__(self, arguments: tuple) -> None:
        super().__init__()
        self.arguments = arguments

    def build(self) -> np.ndarray:
        if self.has_state or len(self.arguments) != 4:
            raise BadMetadataError("unsupported numpy buffer array")
        raw, dtype, shape, order = self.arguments
        if order not in ("C", "F"):
            raise BadMetadataError(f"unsupported array order {order!r}")
        return _array_from_bytes(raw, dtype, shape, order)


class _PendingScalar(_Pending):
    __slots__ = ("dtype", "raw")

    def __init__(self, dtype: Any, raw: Any) -> None:
        super().__init__()
        self.dtype = dtype
        self.raw = raw

    def build(self) -> np.generic:
        if self.has_state:
            raise BadMetadataError("unsupported numpy scalar state")
        return _array_from_bytes(self.raw, self.dtype, (), "C")[()]


def _array_from_bytes(raw: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    if not isinstance(dtype, _PendingDtype):
        raise BadMetadataError("a numpy array without a numpy dtype")
    resolved = dtype.build()
    if not isinstance(raw, (bytes, bytearray)):
        raise BadMetadataError("numpy array data is not raw bytes")
    if not isinstance(shape, tuple) or not all(
        isinstance(side, int) and not isinstance(side, bool) and side >= 0 for side in shape
    ):
        raise BadMetadataError(f"bad numpy array shape {shape!r}")
    count = math.prod(shape)
    if count * resolved.itemsize != len(raw):
        raise BadMetadataError(
            f"numpy array data holds {len(raw)} bytes, its shape {shape} and dtype {resolved} need "
            f"{count * resolved.itemsize}"
        )
    return np.frombuffer(bytes(raw), dtype=resolved).reshape(shape, order=order).copy(order="C")


class _Reconstruct(_Stand):
    """numpy's multiarray._reconstruct: the empty array an ndarray pickle starts from."""

    __slots__ = ()

    def __call__(self, subtype: Any, shape: Any, typecode: Any) -> _PendingArray:
        if not isinstance(subtype, _NdarrayClass):
            raise UnsafeMetadataError("refused an array of a type other than numpy.ndarray")
        return _PendingArray()


class _FromBuffer(_Stand):
    __slots__ = ()

    def __call__(self, *arguments: Any) -> _PendingFromBuffer:
        return _PendingFromBuffer(arguments)


class _Scalar(_Stand):
    __slots__ = ()

    def __call__(self, dtype: Any, raw: Any = None) -> _PendingScalar:
        return _PendingScalar(dtype, raw)


class _Dtype(_Stand):
    __slots__ = ()

    def __call__(self, spec: Any, align: Any = False, copy: Any = False) -> _PendingDtype:
        return _PendingDtype(spec)


class _Latin1Encode(_Stand):
    """_codecs.encode as protocols 0-2 use it: text to bytes, one byte per code point."""

    __slots__ = ()

    def __call__(self, text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise UnsafeMetadataError(f"refused _codecs.encode to {encoding!r}")
        return text.encode("latin-1")


class _Bytearray(_Stand):
    """builtins.bytearray from bytes or latin-1 text only (never a size: no huge allocations)."""

    __slots__ = ()

    def __call__(self, source: Any = b"", encoding: Any = None) -> bytearray:
        if isinstance(source, (bytes, bytearray)) and encoding is None:
            return bytearray(source)
        if isinstance(source, str) and encoding in ("latin1", "latin-1"):
            return bytearray(source, "latin-1")
        raise UnsafeMetadataError("refused builtins.bytearray from anything but bytes")


class _Bytes(_Stand):
    """builtins.bytes as protocols 0-2 use it: bytes() for b'' (never a size)."""

    __slots__ = ()

    def __call__(self, *arguments: Any) -> bytes:
        if arguments:
            raise UnsafeMetadataError("refused builtins.bytes with arguments")
        return b""


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _NdarrayClass(),
    ("numpy", "dtype"): _Dtype(),
    **{(f"{core}.multiarray", "_reconstruct"): _Reconstruct() for core in _NUMPY_CORE},
    **{(f"{core}.multiarray", "scalar"): _Scalar() for core in _NUMPY_CORE},
    **{(f"{core}.numeric", "_frombuffer"): _FromBuffer() for core in _NUMPY_CORE},
    ("_codecs", "encode"): _Latin1Encode(),
    **{(builtins, "bytes"): _Bytes() for builtins in ("builtins", "__builtin__")},
    **{(builtins, "bytearray"): _Bytearray() for builtins in ("builtins", "__builtin__")},
    **{(builtins, "set"): set for builtins in ("builtins", "__builtin__")},
    **{(builtins, "frozenset"): frozenset for builtins in ("builtins", "__builtin__")},
    **{(builtins, "complex"): complex for builtins in ("builtins", "__builtin__")},
}

ALLOWED_GLOBALS: frozenset[str] = frozenset(f"{module}.{name}" for module, name in _ALLOWED_GLOBALS)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise UnsafeMetadataError.refused_global(module, name)
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeMetadataError("refused a persistent id")


def safe_loads(payload: bytes) -> Any:
    """Unpickle plain data: dict, list, tuple, set, str, bytes, numbers, bool, None and numpy
    arrays, scalars and dtypes of plain numbers (as numpy 1.x or 2.x pickle them).

    Any other global (os.system, builtins.eval, functools.partial, copyreg._reconstructor, …)
    raises UnsafeMetadataError naming it, before anything is called; a payload that is not a
    pickle of such values raises BadMetadataError.
    """
    try:
        loaded = _RestrictedUnpickler(io.BytesIO(bytes(payload))).load()
        return _Finisher().finish(loaded, 0)
    except DflError:
        raise
    except Exception as error:  # the unpickler raises many kinds on malformed input
        raise BadMetadataError(f"not a valid pickle ({type(error).__name__}: {error})") from error


class _Finisher:
    """Walks the loaded tree once, building the pending numpy values and refusing the stand-ins.

    Pickle's memo lets a few bytes name one object many times (L1 = [L0, L0], L2 = [L1, L1], …:
    a 600-byte payload can describe 2**60 leaves), so each object is finished once and shared
    references stay shared, as plain pickle would give them. Caps on the values and array bytes
    built bound the work whatever the payload; a value that contains itself is refused.
    """

    def __init__(self) -> None:
        self.done: dict[int, Any] = {}  # id(loaded object) -> its finished value
        self.active: set[int] = set()  # ids of the containers being finished (cycle check)
        self.values = 0
        self.array_bytes = 0

    def _count(self, values: int) -> None:
        self.values += values
        if self.values > _MAX_VALUES:
            raise BadMetadataError(f"more than {_MAX_VALUES} values")

    def finish(self, value: Any, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise BadMetadataError(f"values nested deeper than {_MAX_DEPTH} levels")
        if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
            return value
        key = id(value)
        if key in self.done:
            return self.done[key]
        if key in self.active:
            raise BadMetadataError("a value that contains itself")
        self.active.add(key)
        self._count(1)
        finished = self._build(value, depth)
        self.active.discard(key)
        self.done[key] = finished
        return finished

    def _build(self, value: Any, depth: int) -> Any:
        if isinstance(value, bytearray):
            return value
        if isinstance(value, _PendingDtype):
            return value.build()
        if isinstance(value, (_PendingArray, _PendingFromBuffer, _PendingScalar)):
            built = value.build()
            self.array_bytes += built.nbytes
            if self.array_bytes > _MAX_ARRAY_BYTES:
                raise BadMetadataError(f"numpy arrays of more than {_MAX_ARRAY_BYTES} bytes in all")
            return built
        if isinstance(value, dict):
            self._count(2 * len(value))
            return {self.finish(key, depth + 1): self.finish(item, depth + 1) for key, item in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            self._count(len(value))
            items = [self.finish(item, depth + 1) for item in value]
            return items if isinstance(value, list) else type(value)(items)
        if isinstance(value, _Stand):
            raise BadMetadataError(f"a bare {type(value).__name__.strip('_')} in the metadata")
        raise BadMetadataError(f"unsupported value of type {type(value).__name__}")


# -- DFL metadata ---------------------------------------------------------------------------------

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
        if not isinstance(face_type, str) or not 0 < len(face_type) <= 64:
            raise BadMetadataError(f"'face_type' is not a face type name: {face_type!r:.40}")
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


# -- import -----------------------------------------------------------------------------------

DflStatus = Literal["ok", "no-metadata", "rejected"]


@dataclass(frozen=True)
class DflFaceRow:
    """One aligned file of an imported DFL folder: its metadata as read, or why there is none."""

    image_id: str  # the file's images row
    status: DflStatus
    reason: str | None  # why 'no-metadata' or 'rejected' (e.g. 'unsafe-metadata: refused global os.system')
    face_type: str | None = None  # DFL's face type name
    source_filename: str | None = None
    source_rect: list[float] | None = None  # 4 floats: left, top, right, bottom, frame pixels
    source_landmarks: list[float] | None = None  # 136 floats, (x, y) pairs, frame pixels
    aligned_landmarks: list[float] | None = None  # 136 floats, (x, y) pairs, aligned pixels
    image_to_face: list[float] | None = None  # 6 floats: 2×3 affine, frame px -> aligned px
    eyebrows_expand_mod: float | None = None

    @classmethod
    def from_metadata(cls, image_id: str, metadata: DflFaceMetadata) -> DflFaceRow:
        def flat(array: np.ndarray | None) -> list[float] | None:
            return None if array is None else [float(v) for v in array.ravel()]

        return cls(
            image_id=image_id, status="ok", reason=None, face_type=metadata.face_type,
            source_filename=metadata.source_filename, source_rect=flat(metadata.source_rect),
            source_landmarks=flat(metadata.source_landmarks), aligned_landmarks=flat(metadata.landmarks),
            image_to_face=flat(metadata.image_to_face_mat), eyebrows_expand_mod=metadata.eyebrows_expand_mod,
        )

    def to_row(self) -> tuple:
        return (
            self.image_id, self.face_type, self.source_filename, self.source_rect, self.source_landmarks,
            self.aligned_landmarks, self.image_to_face, self.eyebrows_expand_mod, self.status, self.reason,
        )

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> DflFaceRow:
        (image_id, face_type, source_filename, source_rect, source_landmarks, aligned_landmarks,
         image_to_face, eyebrows_expand_mod, status, reason) = row
        return cls(
            image_id=image_id, status=status, reason=reason, face_type=face_type,
            source_filename=source_filename, source_rect=source_rect, source_landmarks=source_landmarks,
            aligned_landmarks=aligned_landmarks, image_to_face=image_to_face,
            eyebrows_expand_mod=eyebrows_expand_mod,
        )


def read_dfl_rows(database: Path) -> list[DflFaceRow]:
    """Every dfl_faces row of a faceset, by image_id."""
    connection = open_faceset(database, read_only=True)
    try:
        rows = connection.execute(f"SELECT {DFL_FACE_COLUMNS} FROM dfl_faces ORDER BY image_id").fetchall()
    finally:
        connection.close()
    return [DflFaceRow.from_row(row) for row in rows]


@dataclass(frozen=True)
class DflImportSummary:
    folder: str
    database: str
    files: int  # files found in the folder
    with_metadata: int  # status 'ok'
    without_metadata: int  # status 'no-metadata'
    rejected: int  # status 'rejected': unsafe or malformed metadata, corrupt JPEG header
    reasons: dict[str, int]  # reason -> files, for 'no-metadata' and 'rejected' rows
    faces: int  # faces the scan found in the aligned images
    scan: ScanSummary

    def to_dict(self) -> dict:
        return asdict(self)


def _dfl_row(entry: FileEntry) -> DflFaceRow:
    """Read one file's DFL metadata; every failure becomes the row's status and reason."""
    image_id = image_id_for(entry.rel_path)
    if entry.problem:
        return DflFaceRow(image_id, "no-metadata", f"not read: {entry.problem}")
    try:
        with open(entry.abs_path, "rb") as handle:
            if handle.read(2) != _SOI:
                return DflFaceRow(image_id, "no-metadata", "not a JPEG file")
            data = _SOI + handle.read()
    except OSError as error:
        return DflFaceRow(image_id, "no-metadata", f"unreadable: {error.strerror or error}")
    try:
        metadata = parse_dfl_metadata(data)
    except DflError as error:
        logger.warning("%s: %s", entry.rel_path, error)
        return DflFaceRow(image_id, "rejected", error.reason)
    if metadata is None:
        return DflFaceRow(image_id, "no-metadata", "no APP15 segment")
    return DflFaceRow.from_metadata(image_id, metadata)


def import_dfl_folder(
    folder: Path,
    database: Path,
    settings: ScanSettings = ScanSettings(),
    analyzer: FaceAnalyzer | None = None,
    aligned_dir: Path | None = None,
    on_progress: ProgressCallback | None = None,
) -> DflImportSummary:
    """Import a DFL aligned folder: scan its images like any folder (faces, embeddings,
    quality, …) and store each file's DFL metadata in `dfl_faces`.

    Metadata is read with `safe_loads`: a file whose pickle asks for code, or whose dict is
    malformed, gets status 'rejected' and the reason; nothing in it runs and the other files
    import as usual. A JPEG without APP15 gets status 'no-metadata'.
    """
    folder, database = Path(folder), Path(database)
    if not folder.is_dir():
        raise FacesmithError(f"not a folder: {folder}")
    aligned_dir = Path(aligned_dir) if aligned_dir else default_aligned_dir(database)
    scan = scan_folder(folder, database, settings, analyzer, aligned_dir, on_progress)
    # The same files the scan saw (it leaves out the faceset's own files in the same way).
    rows = [_dfl_row(entry) for entry in walk_files(folder, exclude=faceset_own_files(database, aligned_dir))]
    with FacesetStore(database) as store:
        store.write_dfl_faces([row.to_row() for row in rows])
    statuses = Counter(row.status for row in rows)
    reasons = Counter(row.reason for row in rows if row.reason)
    return DflImportSummary(
        folder=str(folder), database=str(database), files=len(rows),
        with_metadata=statuses["ok"], without_metadata=statuses["no-metadata"],
        rejected=statuses["rejected"], reasons=dict(sorted(reasons.items())), faces=scan.faces, scan=scan,
    )


# -- export ---------------------------------------------------------------------------------

_FACES_QUERY = """
    SELECT f.face_id, i.path, f.bbox, f.landmarks68, f.image_to_face, f.face_type, f.aligned_path
    FROM faces f JOIN images i USING (image_id)
"""


@dataclass(frozen=True, eq=False)
class _ExportFace:
    face_id: str
    crop_path: Path
    metadata: DflFaceMetadata


def _faces_to_export(connection: Any, face_ids: Sequence[str] | None, all_faces: bool) -> list[str]:
    if face_ids is not None:
        return list(dict.fromkeys(face_ids))
    has_selection = not all_faces and table_exists(connection, "selection")
    if has_selection and connection.execute("SELECT count(*) FROM selection").fetchone()[0]:
        rows = connection.execute(
            "SELECT face_id FROM selection WHERE selected ORDER BY pick_order NULLS LAST, face_id"
        ).fetchall()
    else:
        rows = connection.execute("SELECT face_id FROM faces ORDER BY face_id").fetchall()
    return [face_id for (face_id,) in rows]


def export_metadata(
    source_path: str, bbox: Sequence[float], landmarks68: Sequence[float], image_to_face: Sequence[float],
    face_type: str,
) -> DflFaceMetadata:
    """DFL metadata for one of our faces (the flat DuckDB columns: bbox 4, landmarks68 136,
    image_to_face 6), with the landmarks carried into the aligned crop."""
    if face_type not in DFL_FACE_TYPES:
        raise FacesmithError(f"face type {face_type!r} has no DFL equivalent")
    landmarks = np.asarray(landmarks68, dtype=np.float64).reshape(68, 2)
    matrix = np.asarray(image_to_face, dtype=np.float64).reshape(2, 3)
    return DflFaceMetadata(
        face_type=DFL_FACE_TYPES[face_type],
        landmarks=transform_points(matrix, landmarks),
        source_filename=source_path,
        source_rect=np.asarray(bbox, dtype=np.float64).reshape(4),
        source_landmarks=landmarks,
        image_to_face_mat=matrix,
        eyebrows_expand_mod=1.0,
    )


def export_dfl(
    database: Path,
    out_dir: Path,
    face_ids: Sequence[str] | None = None,
    quality: int = 90,
    all_faces: bool = False,
    on_progress: ProgressCallback | None = None,
) -> list[Path]:
    """Write faces as DFL aligned JPEGs `<out_dir>/00000.jpg`, `00001.jpg`, …; returns the paths.

    Faces: `face_ids` in that order; else the selection's chosen faces (in pick order) when a
    selection was made and `all_faces` is False; else every face (by face_id). Each file is the
    face's aligned crop re-encoded at `quality` (DFL's extractor uses 90) with DFL's metadata
    dict in APP15, written under a temporary name and renamed. `out_dir` must hold no JPEGs yet, so that an
    export never mixes with an older one.
    """
    database, out_dir = Path(database), Path(out_dir)
    if not 1 <= int(quality) <= 100:
        raise FacesmithError(f"JPEG quality must be in 1..100, got {quality}")
    connection = open_faceset(database, read_only=True)
    try:
        chosen = _faces_to_export(connection, face_ids, all_faces)
        rows = {row[0]: row for row in connection.execute(
            _FACES_QUERY + " WHERE list_contains(?, f.face_id)", [chosen]
        ).fetchall()} if chosen else {}
    finally:
        connection.close()
    missing = [face_id for face_id in chosen if face_id not in rows]
    if missing:
        raise FacesmithError(
            f"{len(missing)} face id(s) not in {database}: {', '.join(missing[:5])}"
            + (" …" if len(missing) > 5 else "")
        )
    faces = []
    for face_id in chosen:
        _, source_path, bbox, landmarks68, image_to_face, face_type, aligned_path = rows[face_id]
        crop_path = database.parent / aligned_path
        if not crop_path.is_file():
            raise FacesmithError(f"the aligned crop of face {face_id} is missing: {crop_path}")
        faces.append(_ExportFace(
            face_id, crop_path, export_metadata(source_path, bbox, landmarks68, image_to_face, face_type)
        ))
    if out_dir.exists() and not out_dir.is_dir():
        raise FacesmithError(f"not a folder: {out_dir}")
    if out_dir.is_dir() and any(path.suffix.lower() in (".jpg", ".jpeg") for path in out_dir.iterdir()):
        raise FacesmithError(f"{out_dir} already holds JPEG files: export into an empty folder")
    out_dir.mkdir(parents=True, exist_ok=True)

    written: list[Path] = []
    if on_progress:
        on_progress(0, len(faces))
    for number, face in enumerate(faces):
        crop = cv2.imdecode(np.fromfile(face.crop_path, dtype=np.uint8), cv2.IMREAD_COLOR)
        if crop is None:
            raise FacesmithError(f"cannot decode the aligned crop of face {face.face_id}: {face.crop_path}")
        target = out_dir / f"{number:05d}.jpg"
        write_atomically(target, encode_dfl_jpeg(crop, face.metadata, quality))
        written.append(target)
        if on_progress:
            on_progress(number + 1, len(faces))
    logger.info("exported %d faces to %s", len(written), out_dir)
    return written
