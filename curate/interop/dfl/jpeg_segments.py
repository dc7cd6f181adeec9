"""JPEG header segments: read and write the APP15 segment where DFL keeps a face's metadata."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from curate.interop.dfl.errors import JpegStructureError, PayloadTooLargeError


SOI = b"\xff\xd8"
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
    if len(data) < 2 or data[:2] != SOI:
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
    parts = [SOI]
    parts += [data[segment.start : segment.end] for segment in kept[:after]]
    parts.append(new_segment)
    parts += [data[segment.start : segment.end] for segment in kept[after:]]
    parts.append(data[body_start:])
    return b"".join(parts)
