"""Ingest against real files on disk: discovery, hashing, conversions and every reject reason."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from curate.scan.ingest import (
    REJECT_REASONS,
    Decoded,
    FileEntry,
    IngestResult,
    Rejection,
    decode_bytes,
    read_image,
    walk_files,
)
from tests import hostile_corpus as corpus
from tests.hostile_corpus import Expectation, bomb_png_bytes, build_hostile_corpus, encode


@pytest.fixture(scope="module")
def corpus_dir(module_dirs) -> tuple[Path, dict[str, Expectation]]:
    directory = module_dirs("hostile")
    return directory, build_hostile_corpus(directory)


@pytest.fixture(scope="module")
def results(corpus_dir: tuple[Path, dict[str, Expectation]]) -> dict[str, IngestResult]:
    directory, _ = corpus_dir
    return {entry.rel_path: read_image(entry) for entry in walk_files(directory)}


def _decoded(results: dict[str, IngestResult], rel_path: str) -> Decoded:
    result = results[rel_path]
    assert result.decoded is not None, result.rejection
    return result.decoded


def _mean_bgr(image: np.ndarray, rows: slice, columns: slice) -> np.ndarray:
    return image[rows, columns].reshape(-1, 3).mean(axis=0)


def _assert_colour(image: np.ndarray, rows: slice, columns: slice, bgr: tuple[int, int, int],
                   tolerance: float = 12) -> None:
    mean = _mean_bgr(image, rows, columns)
    assert np.all(np.abs(mean - np.array(bgr)) <= tolerance), f"mean {mean} is not {bgr}"


def test_reason_codes_are_the_documented_set() -> None:
    assert set(REJECT_REASONS) == {
        "empty-file", "unreadable", "not-a-file", "symlink-loop", "broken-symlink",
        "not-an-image", "truncated", "too-large", "unsupported-mode", "decode-error", "unlistable",
        "analysis-error",
    }


def test_corpus_is_big_enough(corpus_dir: tuple[Path, dict[str, Expectation]]) -> None:
    _, expected = corpus_dir
    assert len(expected) >= 22
    assert {e.reason for e in expected.values() if e.status == "rejected"} <= set(REJECT_REASONS)


def test_walk_lists_exactly_the_expected_paths(
    corpus_dir: tuple[Path, dict[str, Expectation]], results: dict[str, IngestResult]
) -> None:
    # Hidden files, '.cache/' and the 'sub/back -> ..' loop are absent; 'x.jpg/inner.jpg' is found.
    _, expected = corpus_dir
    assert sorted(results) == sorted(expected)


def test_every_corpus_entry_ends_as_expected(
    corpus_dir: tuple[Path, dict[str, Expectation]], results: dict[str, IngestResult]
) -> None:
    _, expected = corpus_dir
    outcomes = {
        rel_path: Expectation(
            "ok" if result.decoded is not None else "rejected",
            result.rejection.reason if result.rejection is not None else None,
        )
        for rel_path, result in results.items()
    }
    mismatches = {
        rel_path: (outcomes.get(rel_path), expectation, results[rel_path].rejection)
        for rel_path, expectation in expected.items()
        if outcomes.get(rel_path) != expectation
    }
    assert not mismatches


def test_exactly_one_of_decoded_and_rejection(results: dict[str, IngestResult]) -> None:
    for rel_path, result in results.items():
        assert (result.decoded is None) != (result.rejection is None), rel_path
        if result.rejection is not None:
            assert result.rejection.reason in REJECT_REASONS
            assert result.rejection.detail


def test_decoded_images_are_bgr_uint8_with_matching_size(results: dict[str, IngestResult]) -> None:
    for rel_path, result in results.items():
        if result.decoded is None:
            continue
        image = result.decoded.image_bgr
        assert image.dtype == np.uint8, rel_path
        assert image.ndim == 3 and image.shape[2] == 3, rel_path
        assert image.flags.c_contiguous, rel_path
        assert (result.decoded.height, result.decoded.width) == image.shape[:2], rel_path


def test_content_hash_is_sha256_of_the_file_bytes(
    corpus_dir: tuple[Path, dict[str, Expectation]], results: dict[str, IngestResult]
) -> None:
    directory, _ = corpus_dir
    checked = 0
    for entry in walk_files(directory):
        result = results[entry.rel_path]
        if result.content_hash is None:
            assert entry.problem is not None or result.rejection is not None
            continue
        data = entry.abs_path.read_bytes()
        assert result.content_hash == hashlib.sha256(data).hexdigest(), entry.rel_path
        assert result.size == len(data) == entry.size, entry.rel_path
        checked += 1
    assert checked >= 20


def test_problem_paths_are_rejected_without_a_hash(results: dict[str, IngestResult]) -> None:
    for rel_path in ("x.jpg", "loop.jpg", "broken.jpg", "device.jpg"):
        if rel_path in results:
            assert results[rel_path].content_hash is None, rel_path


def test_rel_paths_are_storable_and_names_survive(results: dict[str, IngestResult]) -> None:
    for rel_path in results:
        rel_path.encode("utf-8")  # raises on lone surrogates, which DuckDB cannot store
    assert corpus.UNICODE_NAME in results
    if corpus.NON_UTF8_STORED in results:
        # The escaped name is only for storage; reading went through the real bytes.
        assert results[corpus.NON_UTF8_STORED].decoded is not None


def test_non_utf8_entry_keeps_the_real_path(
    corpus_dir: tuple[Path, dict[str, Expectation]],
) -> None:
    directory, expected = corpus_dir
    if corpus.NON_UTF8_STORED not in expected:
        pytest.skip("this file system refuses non-UTF-8 names")
    entry = next(e for e in walk_files(directory) if e.rel_path == corpus.NON_UTF8_STORED)
    assert os.fsencode(entry.abs_path.name) == corpus.NON_UTF8_NAME


def test_exif_orientation_is_applied_to_the_pixels(results: dict[str, IngestResult]) -> None:
    decoded = _decoded(results, corpus.EXIF_ROTATED)
    stored_width, stored_height = corpus.EXIF_STORED_SIZE
    assert (decoded.width, decoded.height) == (stored_height, stored_width)  # landscape -> portrait
    image = decoded.image_bgr
    # Stored top-left red and top-right green; turned 90° clockwise, red is top-right and green
    # bottom-right. A counter-clockwise turn or a transpose would put them elsewhere.
    _assert_colour(image, slice(2, 14), slice(-14, -2), corpus.RED_BGR, tolerance=30)
    _assert_colour(image, slice(-14, -2), slice(-14, -2), corpus.GREEN_BGR, tolerance=30)
    _assert_colour(image, slice(2, 14), slice(2, 14), (128, 128, 128), tolerance=30)


@pytest.mark.parametrize("rel_path", [corpus.GRAY16_PNG, corpus.GRAY16_PGM])
def test_16_bit_gray_is_scaled_not_clipped(results: dict[str, IngestResult], rel_path: str) -> None:
    decoded = _decoded(results, rel_path)
    assert decoded.mode in ("I;16", "I")
    image = decoded.image_bgr.astype(int)
    assert np.all(image[:, :8] == 255)  # 65535
    assert np.all(np.abs(image[:, 8:] - 128) <= 1)  # 32768 -> 127.5


def test_cmyk_jpeg_becomes_bgr(results: dict[str, IngestResult]) -> None:
    decoded = _decoded(results, corpus.CMYK_JPEG)
    assert decoded.mode == "CMYK"
    _assert_colour(decoded.image_bgr, slice(None), slice(None), corpus.RED_BGR)


def test_grayscale_jpeg_has_three_equal_channels(results: dict[str, IngestResult]) -> None:
    decoded = _decoded(results, corpus.GRAY_JPEG)
    assert decoded.mode == "L"
    image = decoded.image_bgr
    assert np.array_equal(image[:, :, 0], image[:, :, 1])
    assert np.array_equal(image[:, :, 1], image[:, :, 2])


def test_palette_png_becomes_bgr(results: dict[str, IngestResult]) -> None:
    decoded = _decoded(results, corpus.PALETTE_PNG)
    assert decoded.mode == "P"
    image = decoded.image_bgr
    _assert_colour(image, slice(None), slice(0, 8), corpus.RED_BGR, tolerance=0)
    _assert_colour(image, slice(0, 8), slice(8, 16), corpus.BLUE_BGR, tolerance=0)
    _assert_colour(image, slice(8, 16), slice(8, 16), (255, 255, 255), tolerance=0)


def test_transparent_palette_entry_becomes_black(results: dict[str, IngestResult]) -> None:
    image = _decoded(results, corpus.PALETTE_TRANSPARENT_PNG).image_bgr
    _assert_colour(image, slice(None), slice(0, 8), corpus.RED_BGR, tolerance=0)
    _assert_colour(image, slice(8, 16), slice(8, 16), (0, 0, 0), tolerance=0)


def test_rgba_is_composited_over_black(results: dict[str, IngestResult]) -> None:
    decoded = _decoded(results, corpus.RGBA_PNG)
    assert decoded.mode == "RGBA"
    image = decoded.image_bgr
    _assert_colour(image, slice(None), slice(0, 4), corpus.RED_BGR, tolerance=0)
    _assert_colour(image, slice(None), slice(4, 8), (0, 0, 128), tolerance=1)
    # Stored white under alpha 0: dropping alpha would show white.
    _assert_colour(image, slice(None), slice(8, 12), (0, 0, 0), tolerance=0)


def test_premultiplied_gray_alpha_tiff_is_converted(results: dict[str, IngestResult]) -> None:
    decoded = _decoded(results, corpus.PREMULTIPLIED_TIFF)
    assert decoded.mode == "La"
    assert np.all(decoded.image_bgr == 200)


@pytest.mark.parametrize("rel_path", [corpus.ANIMATED_GIF, corpus.ANIMATED_WEBP])
def test_animation_gives_its_first_frame(results: dict[str, IngestResult], rel_path: str) -> None:
    _assert_colour(_decoded(results, rel_path).image_bgr, slice(None), slice(None), corpus.RED_BGR)


def test_bomb_header_is_rejected_as_too_large(results: dict[str, IngestResult]) -> None:
    rejection = results[corpus.BOMB_PNG].rejection
    assert rejection is not None and rejection.reason == "too-large"


def test_pixel_limit_is_checked_before_decoding() -> None:
    data = bomb_png_bytes(5000, 5000)  # one scanline of data: decoding it would find it truncated
    limited = decode_bytes(data, max_pixels=1_000_000)
    assert isinstance(limited, Rejection) and limited.reason == "too-large"
    assert "5000×5000" in limited.detail
    allowed = decode_bytes(data, max_pixels=25_000_000)
    assert isinstance(allowed, Rejection) and allowed.reason == "truncated"


def test_good_image_is_decoded_faithfully() -> None:
    image_bgr = corpus.gradient_image(40, 30)
    data = encode(Image.fromarray(image_bgr[:, :, ::-1]), "PNG")
    decoded = decode_bytes(data)
    assert isinstance(decoded, Decoded)
    assert (decoded.format, decoded.mode, decoded.width, decoded.height) == ("PNG", "RGB", 40, 30)
    assert np.array_equal(decoded.image_bgr, image_bgr)


def _pillow_reference(data: bytes) -> np.ndarray:
    """What Pillow alone makes of a JPEG, as BGR: the yardstick for OpenCV's faster decode."""
    with Image.open(io.BytesIO(data)) as image:
        return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def _jpeg_variants(photo_bgr: np.ndarray) -> dict[str, bytes]:
    rgb = Image.fromarray(photo_bgr[:, :, ::-1])
    exif = Image.Exif()
    exif[0x0112] = 1  # orientation tag present, nothing to rotate
    return {
        "baseline 4:2:0": encode(rgb, "JPEG", quality=90),
        "progressive 4:4:4": encode(rgb, "JPEG", quality=95, progressive=True, subsampling=0),
        "grey": encode(rgb.convert("L"), "JPEG", quality=90),
        "exif orientation 1": encode(rgb, "JPEG", quality=85, exif=exif.tobytes()),
        "restart markers": cv2.imencode(".jpg", photo_bgr, [cv2.IMWRITE_JPEG_RST_INTERVAL, 4])[1].tobytes(),
        "odd size": encode(rgb.crop((0, 0, 333, 217)), "JPEG", quality=90),
        "bytes after the end marker": encode(rgb, "JPEG", quality=90) + b"trailing camera data",
    }


def test_jpegs_decode_to_exactly_the_pixels_pillow_gives(t1_path: Path, astronaut_path: Path) -> None:
    """Plain JPEGs take OpenCV's decoder (faster, no GIL); the pixels must not change with it."""
    photos = [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in (t1_path, astronaut_path)]
    cases = {"t1.jpg as shipped": t1_path.read_bytes()}
    for index, photo in enumerate(photos):
        cases.update({f"{name} ({index})": data for name, data in _jpeg_variants(photo).items()})
    for name, data in cases.items():
        decoded = decode_bytes(data)
        assert isinstance(decoded, Decoded), (name, decoded)
        reference = _pillow_reference(data)
        assert (decoded.height, decoded.width) == reference.shape[:2], name
        assert np.array_equal(decoded.image_bgr, reference), name


def test_a_jpeg_cut_short_is_still_truncated_not_padded(astronaut_path: Path) -> None:
    photo = cv2.imread(str(astronaut_path), cv2.IMREAD_COLOR)
    data = encode(Image.fromarray(photo[:, :, ::-1]), "JPEG", quality=90)
    for keep in (0.5, 0.9, 0.999):
        outcome = decode_bytes(data[: int(len(data) * keep)])
        assert isinstance(outcome, Rejection) and outcome.reason == "truncated", (keep, outcome)


def test_walk_is_sorted_and_deterministic(corpus_dir: tuple[Path, dict[str, Expectation]]) -> None:
    directory, _ = corpus_dir
    first = [entry.rel_path for entry in walk_files(directory)]
    second = [entry.rel_path for entry in walk_files(directory)]
    assert first == second
    assert first == sorted(first, key=lambda rel_path: rel_path.split("/"))


def test_walk_skips_hidden_and_excluded_paths(tmp_path: Path) -> None:
    for rel_path in ("a.jpg", "faceset.duckdb", "faceset.duckdb.wal", "aligned/face.jpg",
                     "aligned.jpg", ".hidden.jpg", ".git/objects/x.jpg", "b/.thumb.jpg", "b/c.jpg"):
        (tmp_path / rel_path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel_path).write_bytes(b"x")
    exclude = [tmp_path / "faceset.duckdb", tmp_path / "aligned"]
    listed = [entry.rel_path for entry in walk_files(tmp_path, exclude=exclude)]
    # The '.wal' companion of an excluded file goes too; 'aligned.jpg' is no companion of a folder.
    assert listed == ["a.jpg", "aligned.jpg", "b/c.jpg"]


def test_excluded_folder_not_yet_made_has_no_companions(tmp_path: Path) -> None:
    (tmp_path / "aligned.jpg").write_bytes(b"x")
    listed = [entry.rel_path for entry in walk_files(tmp_path, exclude=[tmp_path / "aligned"])]
    assert listed == ["aligned.jpg"]


def test_exclusion_matches_through_a_symlinked_root(tmp_path: Path) -> None:
    real_root = tmp_path / "real"
    (real_root / "aligned").mkdir(parents=True)
    (real_root / "aligned" / "face.jpg").write_bytes(b"x")
    (real_root / "a.jpg").write_bytes(b"x")
    linked_root = tmp_path / "linked"
    linked_root.symlink_to(real_root)
    listed = [e.rel_path for e in walk_files(linked_root, exclude=[real_root / "aligned",
                                                                    real_root / "db.duckdb"])]
    assert listed == ["a.jpg"]


def test_root_inside_an_excluded_folder_lists_nothing(tmp_path: Path) -> None:
    (tmp_path / "aligned" / "x").mkdir(parents=True)
    (tmp_path / "aligned" / "x" / "a.jpg").write_bytes(b"x")
    assert list(walk_files(tmp_path / "aligned" / "x", exclude=[tmp_path / "aligned"])) == []


def test_symlinked_directories_are_walked_once_real_path_first(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "real" / "f.jpg").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.jpg").write_bytes(b"x")
    (root / "a_link").symlink_to(root / "real")  # sorts before 'real' yet must not claim its files
    (root / "ext1").symlink_to(outside)
    (root / "ext2").symlink_to(outside)
    (root / "real" / "up").symlink_to(root)
    listed = [entry.rel_path for entry in walk_files(root)]
    assert listed == ["real/f.jpg", "ext1/o.jpg"]


def test_symlinked_file_is_followed(results: dict[str, IngestResult]) -> None:
    assert results["link_to_good.jpg"].content_hash == results["good_1.jpg"].content_hash


def test_file_vanished_after_listing_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "gone.jpg"
    path.write_bytes(b"\xff\xd8\xff")
    entry = next(iter(walk_files(tmp_path)))
    path.unlink()
    result = read_image(entry)
    assert result.rejection is not None and result.rejection.reason == "unreadable"
    assert result.content_hash is None


def test_directory_swapped_in_after_listing_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "d.jpg").mkdir()
    # As if it had been a file when listed.
    entry = FileEntry("d.jpg", tmp_path / "d.jpg", 0, 0, None)
    result = read_image(entry)
    assert result.rejection is not None and result.rejection.reason == "not-a-file"


def test_permission_denied_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "locked.jpg"
    path.write_bytes(b"\xff\xd8\xff")
    path.chmod(0)
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        pass
    else:
        pytest.skip("running with root or CAP_DAC_OVERRIDE: a mode-000 file is still readable")
    result = read_image(next(iter(walk_files(tmp_path))))
    assert result.rejection is not None and result.rejection.reason == "unreadable"


def test_empty_bytes_are_an_empty_file() -> None:
    outcome = decode_bytes(b"")
    assert isinstance(outcome, Rejection) and outcome.reason == "empty-file"


def _fuzz_inputs() -> list[bytes]:
    rng = np.random.default_rng(1234)
    small = Image.fromarray(corpus.gradient_image(24, 16)[:, :, ::-1])
    seeds = [encode(small, name) for name in ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "PPM")]
    prefixes = [seed[:16] for seed in seeds]
    inputs: list[bytes] = []
    for index in range(200):
        kind = index % 3
        if kind == 0:  # plain random bytes
            inputs.append(rng.integers(0, 256, int(rng.integers(1, 600)), dtype=np.uint8).tobytes())
        elif kind == 1:  # a real signature, then noise
            prefix = prefixes[int(rng.integers(len(prefixes)))]
            noise = rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
            inputs.append(prefix[: int(rng.integers(1, len(prefix) + 1))] + noise)
        else:  # a real file with a few bytes flipped and maybe cut short
            mutated = bytearray(seeds[int(rng.integers(len(seeds)))])
            for position in rng.integers(0, len(mutated), int(rng.integers(1, 8))):
                mutated[position] = int(rng.integers(0, 256))
            inputs.append(bytes(mutated[: int(rng.integers(1, len(mutated) + 1))]))
    return inputs


# Pillow warns about the corrupt EXIF and tags it meets; the point here is that nothing raises.
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_decode_bytes_never_raises_on_garbage() -> None:
    for data in _fuzz_inputs():
        outcome = decode_bytes(data)
        assert isinstance(outcome, (Decoded, Rejection))
        if isinstance(outcome, Rejection):
            assert outcome.reason in REJECT_REASONS
        else:
            assert outcome.image_bgr.dtype == np.uint8 and outcome.image_bgr.shape[2] == 3


def test_stored_names_are_one_to_one(tmp_path):
    """A raw 0xFF byte and the literal text '\\xff' must not share a stored name (nor an image id)."""
    from curate.scan.ingest import storable_name

    raw, literal = os.fsdecode(b"a\xff.jpg"), "a\\xff.jpg"
    assert storable_name(raw) != storable_name(literal)
    assert storable_name("plain.jpg") == "plain.jpg"
    (tmp_path / os.fsdecode(b"a\xff.jpg")).write_bytes(b"x")
    (tmp_path / literal).write_bytes(b"y")
    names = [entry.rel_path for entry in walk_files(tmp_path)]
    assert len(names) == len(set(names)) == 2


def test_a_file_with_a_known_hash_is_not_decoded(tmp_path):
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), np.full((40, 60, 3), 90, np.uint8))
    entry = next(walk_files(tmp_path))
    first = read_image(entry)
    assert first.decoded is not None
    again = read_image(entry, known_hash=first.content_hash)
    assert again.content_hash == first.content_hash and again.decoded is None and again.rejection is None
    other = read_image(entry, known_hash="0" * 64)
    assert other.decoded is not None


# -- bounded before reading (issue 17, findings 3 and 4) ---------------------------------------


def _peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def test_a_huge_sparse_file_is_too_large_and_never_read(tmp_path: Path) -> None:
    photo = tmp_path / "huge.jpg"
    with open(photo, "wb") as handle:  # 40 GiB of nothing: no disk blocks, a MemoryError to read
        handle.write(b"\xff\xd8\xff")
        handle.truncate(40 * 2**30)
    before = _peak_rss_bytes()
    [entry] = list(walk_files(tmp_path))
    result = read_image(entry)
    assert result.rejection is not None and result.rejection.reason == "too-large", result.rejection
    assert "not read" in result.rejection.detail
    assert result.content_hash is None and result.size == 40 * 2**30
    assert _peak_rss_bytes() - before < 256 * 2**20


def test_a_header_declaring_too_many_pixels_stops_the_read(tmp_path: Path) -> None:
    # A real PNG header declaring 60000×60000, then 2 MiB that a trusting reader would load.
    photo = tmp_path / "bomb.png"
    photo.write_bytes(bomb_png_bytes(60000, 60000) + os.urandom(2 * 2**20))
    [entry] = list(walk_files(tmp_path))
    result = read_image(entry)
    assert result.rejection is not None and result.rejection.reason == "too-large"
    assert "body not read" in result.rejection.detail
    limited = read_image(entry, max_bytes=2**20)  # and the byte limit, for any file
    assert limited.rejection is not None and "not read" in limited.rejection.detail


def _with_declared_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its SOF0 frame header claiming width × height."""
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[: sof + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[sof + 9 :]


def test_a_jpeg_cut_in_half_with_an_end_marker_appended_is_truncated(astronaut_path: Path) -> None:
    photo = cv2.imread(str(astronaut_path))
    rotated = Image.Exif()
    rotated[0x0112] = 6  # decoded by Pillow, not OpenCV
    variants = dict(_jpeg_variants(photo), rotated=encode(Image.fromarray(photo[:, :, ::-1]), "JPEG",
                                                          quality=90, exif=rotated.tobytes()))
    for name, data in variants.items():
        if name.startswith("progressive"):
            continue  # libjpeg shows what it has of a progressive file; its first scan is whole
        half = data[: len(data) // 2] + b"\xff\xd9"
        outcome = decode_bytes(half)
        assert isinstance(outcome, Rejection) and outcome.reason == "truncated", (name, outcome)
        # the whole file, and flat grey that is really in the picture, stay ok
        assert isinstance(decode_bytes(data), Decoded), name
    grey = np.full((64, 96, 3), 128, np.uint8)
    grey[:8, :8] = (0, 0, 255)
    ok, encoded = cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok and isinstance(decode_bytes(encoded.tobytes()), Decoded)


def test_a_tiny_jpeg_declaring_a_huge_size_is_truncated_not_decoded() -> None:
    ok, encoded = cv2.imencode(".jpg", np.full((16, 16, 3), 90, np.uint8))
    assert ok
    bomb = _with_declared_size(encoded.tobytes(), 9999, 9999)
    assert len(bomb) < 2000
    before = _peak_rss_bytes()
    outcome = decode_bytes(bomb)
    assert isinstance(outcome, Rejection) and outcome.reason == "truncated", outcome
    assert "most of the image is missing" in outcome.detail
    assert _peak_rss_bytes() - before < 100 * 2**20


# -- every file the walk meets gets a row (issue 17) ----------------------------------------------


def _make_deep_tree(root: Path, levels: int = 24) -> list[str]:
    """Folders of 200-character names, `levels` deep: a path far beyond PATH_MAX (4096), made one
    level at a time relative to the last (no call ever sees the whole path)."""
    names = [f"{index:02d}" + "d" * 198 for index in range(levels)]
    descriptor = os.open(root, os.O_RDONLY)
    try:
        for name in names:
            os.mkdir(name, dir_fd=descriptor)
            inner = os.open(name, os.O_RDONLY, dir_fd=descriptor)
            os.close(descriptor)
            descriptor = inner
        ok, encoded = cv2.imencode(".jpg", corpus.gradient_image())
        file_descriptor = os.open("deep.jpg", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=descriptor)
        os.write(file_descriptor, encoded.tobytes())
        os.close(file_descriptor)
    finally:
        os.close(descriptor)
    return names


def test_a_file_beyond_path_max_gets_its_own_row_and_is_read(tmp_path: Path) -> None:
    names = _make_deep_tree(tmp_path)
    deep_rel = "/".join([*names, "deep.jpg"])
    assert len(os.fsencode(str(tmp_path / deep_rel))) > 4096
    entries = list(walk_files(tmp_path))
    assert [entry.rel_path for entry in entries] == [deep_rel]
    result = read_image(entries[0])
    assert result.decoded is not None, result.rejection
    assert result.decoded.image_bgr.shape[:2] == corpus.gradient_image().shape[:2]


_WALK_AS_NOBODY = """
import json, os, sys
from curate.scan.ingest import walk_files  # imported as root: the interpreter's files may be root's only
os.setgid(65534)
os.setuid(65534)
print(json.dumps([[entry.rel_path, entry.problem] for entry in walk_files(sys.argv[1])]))
"""


def test_a_folder_that_cannot_be_listed_gets_a_row(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="unlistable-", dir="/tmp"))
    try:
        root.chmod(0o755)
        (root / "a.jpg").write_bytes(b"x")
        (root / "locked").mkdir()
        (root / "locked" / "inside.jpg").write_bytes(b"x")
        (root / "locked").chmod(0)
        if os.geteuid() == 0:  # root lists anything: walk as an ordinary user instead
            environment = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
            output = subprocess.run([sys.executable, "-c", _WALK_AS_NOBODY, str(root)], capture_output=True,
                                    text=True, env=environment, check=True).stdout
            listed = [tuple(item) for item in json.loads(output)]
        else:
            listed = [(entry.rel_path, entry.problem) for entry in walk_files(root)]
        assert listed == [("a.jpg", None), ("locked", "unlistable")]
    finally:
        (root / "locked").chmod(0o755)
        import shutil

        shutil.rmtree(root)
