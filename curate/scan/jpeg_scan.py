"""JPEG checks the decoders skip: does the scan data hold every block the header declares?

libjpeg (behind both Pillow and OpenCV) treats scan data that stops early as a warning: it fills
the missing blocks with flat grey and reports success, so a photo cut in half with an
end-of-image marker appended decodes "fine", half grey. Two checks catch that here:

- `too_few_bytes`: a Huffman-coded JPEG spends at least one bit on every 8×8 block, so a file
  can never hold more than 512 pixels per byte; a 1.4 KB file declaring 9999×9999 is mostly
  missing, whatever the decoder says.
- `scan_data_ends_early`: walks the Huffman codes of a sequential JPEG's scan, counting blocks
  without decoding them, and says whether the data ran out before the last block. It costs a few
  hundred milliseconds a photo in Python, so the scan runs it only on images whose last block
  decoded to the exact grey that libjpeg fills with.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

# Pixels a Huffman-coded JPEG can hold per byte of file: one bit per 8×8 block at the very least.
MAX_PIXELS_PER_BYTE = 512
FILL_GREY = 128  # what libjpeg's missing blocks decode to: all coefficients zero, level-shifted

_SOF_HUFFMAN_SEQUENTIAL = {0xC0, 0xC1}  # baseline, extended sequential
_SOF_ARITHMETIC = {0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_SOF_ALL = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7} | _SOF_ARITHMETIC
_STANDALONE = {0x01, *range(0xD0, 0xD8)}


@dataclass
class _Layout:
    sof: int = 0
    width: int = 0
    height: int = 0
    components: dict[int, tuple[int, int]] = field(default_factory=dict)  # id -> (h, v) sampling
    order: list[int] = field(default_factory=list)  # component ids in frame order
    huffman: dict[tuple[int, int], tuple[list[int], bytes]] = field(default_factory=dict)  # (class, id) -> counts, symbols
    restart_interval: int = 0
    scan_components: list[tuple[int, int, int]] = field(default_factory=list)  # (id, dc table, ac table)
    data_start: int = 0  # offset of the first scan's entropy-coded data


def _layout(data: bytes) -> _Layout | None:
    """The frame, tables and first scan of a JPEG's header; None when it cannot be walked."""
    if data[:2] != b"\xff\xd8":
        return None
    layout, position, size = _Layout(), 2, len(data)
    while position + 4 <= size:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:
            position += 1
            continue
        if marker in _STANDALONE:
            position += 2
            continue
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        body = data[position + 4 : position + 2 + length]
        if length < 2 or len(body) != length - 2:
            return None
        if marker in _SOF_ALL and len(body) >= 6:
            layout.sof = marker
            layout.height, layout.width = struct.unpack(">HH", body[1:5])
            count = body[5]
            for index in range(count):
                entry = body[6 + 3 * index : 9 + 3 * index]
                if len(entry) < 3:
                    return None
                layout.components[entry[0]] = (entry[1] >> 4, entry[1] & 15)
                layout.order.append(entry[0])
        elif marker == 0xC4:
            offset = 0
            while offset + 17 <= len(body):
                table_class, table_id = body[offset] >> 4, body[offset] & 15
                counts = list(body[offset + 1 : offset + 17])
                symbols = body[offset + 17 : offset + 17 + sum(counts)]
                layout.huffman[(table_class, table_id)] = (counts, symbols)
                offset += 17 + sum(counts)
        elif marker == 0xDD and len(body) >= 2:
            (layout.restart_interval,) = struct.unpack(">H", body[:2])
        elif marker == 0xDA:
            count = body[0] if body else 0
            for index in range(count):
                entry = body[1 + 2 * index : 3 + 2 * index]
                if len(entry) < 2:
                    return None
                layout.scan_components.append((entry[0], entry[1] >> 4, entry[1] & 15))
            layout.data_start = position + 2 + length
            return layout
        elif marker == 0xD9:
            return None
        position += 2 + length
    return None


def too_few_bytes(data: bytes) -> str | None:
    """Why `data` cannot hold the pixels its header declares, or None when it can (or is not a
    Huffman-coded JPEG, whose arithmetic-coded cousins may spend less than a bit a block)."""
    layout = _layout(data)
    if layout is None or not layout.sof or layout.sof in _SOF_ARITHMETIC:
        return None
    pixels = layout.width * layout.height
    if pixels <= MAX_PIXELS_PER_BYTE * len(data):
        return None
    return (f"declares {layout.width}×{layout.height} but holds {len(data)} bytes: at least "
            f"{-(-pixels // MAX_PIXELS_PER_BYTE)} are needed, so most of the image is missing")


def ends_in_fill_grey(pixels: np.ndarray) -> bool:
    """Whether the last pixels of the last row are exactly libjpeg's fill grey (all channels):
    the cheap sign that makes a scan walk worth doing."""
    tail = pixels[-1, -8:]
    return bool(tail.size) and bool((tail == FILL_GREY).all())


def _lookup(counts: list[int], symbols: bytes) -> list[int] | None:
    """A 65536-entry table from the next 16 bits to (code length << 8 | symbol); 0: no code."""
    table = np.zeros(1 << 16, dtype=np.int32)
    code, index = 0, 0
    for length in range(1, 17):
        for _ in range(counts[length - 1]):
            if index >= len(symbols) or code >= (1 << length):
                return None
            start = code << (16 - length)
            table[start : start + (1 << (16 - length))] = (length << 8) | symbols[index]
            code += 1
            index += 1
        code <<= 1
    return table.tolist()


def _segments(data: bytes, start: int) -> list[bytes]:
    """The entropy-coded data from `start`, unstuffed, split at restart markers, up to the first
    other marker (end of image, next scan) or the end of the file."""
    segments, current, position, size = [], bytearray(), start, len(data)
    while position < size:
        next_marker = data.find(b"\xff", position)
        if next_marker < 0 or next_marker + 1 >= size:
            current += data[position:]
            break
        current += data[position:next_marker]
        follower = data[next_marker + 1]
        if follower == 0x00:
            current.append(0xFF)
            position = next_marker + 2
        elif follower == 0xFF:
            position = next_marker + 1
        elif 0xD0 <= follower <= 0xD7:
            segments.append(bytes(current))
            current = bytearray()
            position = next_marker + 2
        else:
            break
    segments.append(bytes(current))
    return segments


def scan_data_ends_early(data: bytes) -> bool | None:
    """True when the first scan's data runs out (or stops making sense) before its last block;
    False when every block is there; None for layouts this walk does not cover (progressive,
    arithmetic, lossless, components in separate scans)."""
    layout = _layout(data)
    if layout is None or layout.sof not in _SOF_HUFFMAN_SEQUENTIAL or not layout.components:
        return None
    if len(layout.scan_components) != len(layout.components) or layout.width == 0 or layout.height == 0:
        return None
    tables: dict[tuple[int, int], list[int]] = {}
    blocks: list[tuple[list[int], list[int]]] = []  # (dc, ac) lookup per block of one MCU
    h_max = max(h for h, _ in layout.components.values())
    v_max = max(v for _, v in layout.components.values())
    for component, dc_id, ac_id in layout.scan_components:
        if component not in layout.components:
            return None
        for key in ((0, dc_id), (1, ac_id)):
            if key not in tables:
                if key not in layout.huffman:
                    return None
                lookup = _lookup(*layout.huffman[key])
                if lookup is None:
                    return None
                tables[key] = lookup
        h, v = layout.components[component] if len(layout.scan_components) > 1 else (1, 1)
        blocks += [(tables[(0, dc_id)], tables[(1, ac_id)])] * (h * v)
    if len(layout.scan_components) > 1:
        mcus = -(-layout.width // (8 * h_max)) * -(-layout.height // (8 * v_max))
    else:
        mcus = -(-layout.width // 8) * -(-layout.height // 8)
    interval = layout.restart_interval or mcus
    remaining = mcus
    for segment in _segments(data, layout.data_start):
        wanted = min(interval, remaining)
        if not _walk(segment, blocks, wanted):
            return True
        remaining -= wanted
        if remaining == 0:
            return False
    return remaining > 0


def _walk(segment: bytes, blocks: list[tuple[list[int], list[int]]], mcus: int) -> bool:
    """Whether `segment` holds `mcus` MCUs of Huffman codes (values skipped, never decoded)."""
    padded = segment + b"\x00\x00\x00\x00"
    words = np.frombuffer(padded, dtype=np.uint8).astype(np.uint32)
    windows = ((words[:-3] << 24) | (words[1:-2] << 16) | (words[2:-1] << 8) | words[3:]).tolist()
    bits = len(segment) * 8
    position = 0
    for _ in range(mcus):
        for dc, ac in blocks:
            if position >= bits:
                return False
            entry = dc[(windows[position >> 3] >> (16 - (position & 7))) & 0xFFFF]
            if not entry:
                return False
            position += (entry >> 8) + (entry & 15)
            k = 1
            while k < 64:
                if position >= bits:
                    return False
                entry = ac[(windows[position >> 3] >> (16 - (position & 7))) & 0xFFFF]
                if not entry:
                    return False
                position += entry >> 8
                run_size = entry & 0xFF
                if run_size == 0:
                    break
                size = run_size & 15
                k += 16 if size == 0 else (run_size >> 4) + 1
                position += size
            if k > 64:
                return False
    return position <= bits
