"""The scan pipeline: walk a folder, decode in threads, analyse faces in batches, store each batch."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

import cv2
import numpy as np

from curate import __version__
from curate.faces.align import (
    FACE_TYPES,
    aligned_face_size,
    arcface_crop,
    face_transform,
    hull_mask,
    transform_points,
    warp_face,
)
from curate.faces.backends.base import FaceAnalyzer
from curate.environment import (
    EnvironmentFailure,
    check_writable_folder,
    describe,
    environment_errors,
    is_environment_error,
)
from curate.faceset import check_role
from curate.errors import FacesmithError, Interrupted
from curate.fileio import write_atomically
from curate.scan.crop_folder import claim_crop_folder
from curate.limits import DEFAULT_MAX_FILE_BYTES
from curate.scan.ingest import (
    DEFAULT_MAX_PIXELS,
    FileEntry,
    IngestResult,
    Rejection,
    read_image,
    storable_name,
    walk_files,
)
from curate.faces.pose import estimate_pose
from curate.progress import ProgressCallback
from curate.faces.quality import FaceGeometry, check_rows, frame_edge_share, geometry_check_rows, measure_all
from curate.records import FaceRecord, ImageRecord, LocatedFace
from curate.faces.runtimes import RUNTIMES
from curate.store import FacesetStore, FileState

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class ScanSettings:
    """Everything that changes what a scan writes; stored with each run."""

    face_type: str = "whole_face"
    resolution: int = 256
    backend: str = "embedded"  # embedded | insightface
    models_dir: str | None = None  # insightface packs live in models_dir/pack/
    pack: str = "buffalo_l"
    device: str = "auto"  # auto | cpu | cuda
    runtime: str = "auto"  # the embedder's: auto | onnxruntime | openvino (see curate.faces.runtimes)
    batch_size: int = 16  # images per inference batch and per database transaction
    workers: int = 2  # decoding threads
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_FILE_BYTES  # larger files are rejected 'too-large' unread
    det_max_side: int = 640
    det_threshold: float = 0.6
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if self.backend not in ("embedded", "insightface"):
            raise FacesmithError(f"unknown backend {self.backend!r}: use embedded or insightface")
        if self.device not in ("auto", "cpu", "cuda"):
            raise FacesmithError(f"unknown device {self.device!r}: use auto, cpu or cuda")
        if self.runtime not in RUNTIMES:
            raise FacesmithError(f"unknown runtime {self.runtime!r}: use {', '.join(RUNTIMES)}")
        if self.face_type not in FACE_TYPES:
            raise FacesmithError(f"unknown face type {self.face_type!r}: use one of {', '.join(FACE_TYPES)}")
        if not 32 <= self.resolution <= 2048 or self.resolution % 2:
            raise FacesmithError(f"resolution must be an even number of pixels in 32..2048, got {self.resolution}")
        if self.batch_size < 1 or self.workers < 1:
            raise FacesmithError("batch size and workers must be at least 1")
        if self.max_bytes < 1 or self.max_pixels < 1:
            raise FacesmithError("the file size and pixel limits must be at least 1")


@dataclass(frozen=True)
class ScanSummary:
    run_id: str
    root: str
    database: str
    images_found: int
    images_unchanged: int
    images_processed: int
    images_ok: int
    images_rejected: int
    images_removed: int  # rows of files no longer under the root, deleted by this scan
    faces: int
    rejected_by_reason: dict[str, int]
    seconds: float
    images_per_second: float
    backend: str
    device: str
    providers: list[str] = field(default_factory=list)
    engine: str = "local"

    def to_dict(self) -> dict:
        return asdict(self)


def analyzer_for_faceset(database: Path, device: str | None = None) -> FaceAnalyzer:
    """The backend (and its models, detector settings) that last scanned the faceset at `database`.

    Later stages use it so faces are found, aligned and embedded exactly as the faceset's were:
    embeddings of different backends are not comparable.
    """
    from curate.faceset import open_faceset

    connection = open_faceset(Path(database))
    try:
        row = connection.execute("SELECT settings FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()
    finally:
        connection.close()
    stored = json.loads(row[0]) if row else {}
    keys = ("backend", "models_dir", "pack", "device", "runtime", "det_max_side", "det_threshold")
    settings = ScanSettings(**{key: stored[key] for key in keys if key in stored})
    if device is not None:
        settings = replace(settings, device=device)
    return make_analyzer(settings)


def make_analyzer(settings: ScanSettings, threads: int | None = None) -> FaceAnalyzer:
    """The backend a scan asked for; insightface needs a user-supplied model folder.

    threads: the embedder's CPU threads (None: onnxruntime's default, one per core); engines that
    run several analysers side by side give each its share.
    """
    if settings.backend == "embedded":
        from curate.faces.backends.embedded import EmbeddedFaceAnalyzer

        return EmbeddedFaceAnalyzer(settings.device, settings.det_max_side, settings.det_threshold,
                                    threads=threads, runtime=settings.runtime)
    from curate.faces.backends.insightface_pack import DEFAULT_MODELS_DIR, InsightFacePack

    # ScanSettings admits only these two backends.
    return InsightFacePack(settings.models_dir or DEFAULT_MODELS_DIR, settings.pack, settings.device,
                           det_threshold=settings.det_threshold, runtime=settings.runtime)


def default_aligned_dir(database: Path) -> Path:
    return database.parent / f"{database.stem}_aligned"


def faceset_own_files(database: Path, aligned_dir: Path) -> list[Path]:
    """The faceset's own files, never scanned even when they sit inside the scanned folder."""
    return [database.resolve(), Path(f"{database}.wal").resolve(), aligned_dir.resolve()]


def image_id_for(rel_path: str) -> str:
    """Stable id from the relative path, so an interrupted scan re-creates identical rows."""
    return hashlib.sha1(rel_path.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _needs_scan(entry: FileEntry, known: FileState | None) -> bool:
    return known is None or known.bytes != entry.size or known.mtime_ns != entry.mtime_ns


@dataclass(frozen=True)
class PreparedImage:
    """Everything a worker thread works out for one file; only the embeddings are left to do."""

    entry: FileEntry
    result: IngestResult
    unchanged: bool  # same bytes as the stored row: only the mtime needs remembering
    faces: list[FaceRecord]  # embedding still empty
    checks: list[tuple]
    embedding_crops: list[np.ndarray]  # 112×112 ArcFace crops, one per face


class ImagePreparer:
    """The per-file work of a scan, run in worker threads: decode, locate faces, then pose,
    alignment, crop, quality for each face. Holds no mutable state, so threads share one."""

    def __init__(
        self, settings: ScanSettings, analyzer: FaceAnalyzer, known: dict[str, FileState],
        aligned_dir: Path, database_dir: Path,
    ) -> None:
        self.settings = settings
        self.analyzer = analyzer
        self.known = known
        self.aligned_dir = aligned_dir
        self.database_dir = database_dir

    def __call__(self, entry: FileEntry) -> PreparedImage:
        previous = self.known.get(entry.rel_path)
        result, unchanged = decode_entry(entry, previous.content_hash if previous else None,
                                         self.settings.max_pixels, self.settings.max_bytes)
        return self.analyse(entry, result, unchanged)

    def analyse(self, entry: FileEntry, result: IngestResult, unchanged: bool) -> PreparedImage:
        """Locate and measure the faces of one decoded file (nothing to do for rejects and
        unchanged files)."""
        if unchanged or result.decoded is None:
            return PreparedImage(entry, _without_pixels(result), unchanged, [], [], [])
        image = result.decoded.image_bgr
        image_id = image_id_for(entry.rel_path)
        faces, checks, crops = [], [], []
        try:
            for face_index, located in enumerate(self.analyzer.locate(image)):
                record, face_checks = self._build(image_id, image, face_index, located)
                faces.append(record)
                checks.extend(face_checks)
                crops.append(arcface_crop(image, located.landmarks5))
        except EnvironmentFailure:
            raise  # the machine failed, not the image: stop the scan, leave the photo to be done again
        except Exception as error:  # one odd image must not end a days-long scan: record it instead
            if is_environment_error(error):
                raise describe(error, f"analyse {entry.rel_path}") from error
            logger.warning("analysis of %s failed: %s", entry.rel_path, error, exc_info=logger.isEnabledFor(logging.DEBUG))
            rejection = Rejection("analysis-error", f"{type(error).__name__}: {error}")
            return PreparedImage(entry, replace(result, decoded=None, rejection=rejection), False, [], [], [])
        return PreparedImage(entry, _without_pixels(result), False, faces, checks, crops)

    def _build(
        self, image_id: str, image_bgr: np.ndarray, face_index: int, face: LocatedFace
    ) -> tuple[FaceRecord, list[tuple]]:
        settings = self.settings
        pose = estimate_pose(face.landmarks68)
        # solvePnP can fail on degenerate landmarks: store no pose (NULL) and frame as frontal.
        yaw, pitch, roll = (value if np.isfinite(value) else None for value in (pose.yaw, pose.pitch, pose.roll))
        matrix = face_transform(face.landmarks68, settings.face_type, settings.resolution, yaw or 0.0)
        crop = warp_face(image_bgr, matrix, settings.resolution)
        mask = hull_mask(transform_points(matrix, face.landmarks68), settings.resolution)
        scores = measure_all(crop, mask)
        face_size = aligned_face_size(matrix, settings.resolution)
        face_id = f"{image_id}_{face_index:02d}"
        crop_path = self.aligned_dir / f"{face_id}.jpg"
        ok, encoded = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, settings.jpeg_quality])
        if not ok:
            raise FacesmithError(f"cannot encode the aligned crop of {face_id}")
        with environment_errors("write an aligned crop to", self.aligned_dir):
            write_atomically(crop_path, encoded.tobytes())
        record = FaceRecord(
            face_id=face_id,
            image_id=image_id,
            face_index=face_index,
            det_score=float(face.det_score),
            bbox=tuple(float(v) for v in face.bbox),
            landmarks5=[float(v) for v in np.asarray(face.landmarks5).ravel()],
            landmarks68=[float(v) for v in np.asarray(face.landmarks68).ravel()],
            yaw=yaw,
            pitch=pitch,
            roll=roll,
            face_size=face_size,
            quality=scores,
            embedding=[],
            face_type=settings.face_type,
            resolution=settings.resolution,
            image_to_face=[float(v) for v in matrix.ravel()],
            aligned_path=os.path.relpath(crop_path, self.database_dir).replace(os.sep, "/"),
        )
        height, width = image_bgr.shape[:2]
        geometry = FaceGeometry(frame_edge=frame_edge_share(face.landmarks68, width, height),
                                alignment=pose.fit_error, detection=float(face.det_score))
        return record, check_rows(face_id, scores, face_size) + geometry_check_rows(face_id, geometry)


def decode_entry(entry: FileEntry, known_hash: str | None, max_pixels: int,
                 max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> tuple[IngestResult, bool]:
    """Read and decode one file; the flag says its bytes equal the stored row's (`known_hash`)."""
    result = read_image(entry, max_pixels, known_hash, max_bytes)
    return result, bool(known_hash and result.content_hash == known_hash)


def _without_pixels(result: IngestResult) -> IngestResult:
    """The ingest result minus its decoded pixels, which can be large and are no longer needed."""
    if result.decoded is None:
        return result
    return replace(result, decoded=replace(result.decoded, image_bgr=np.zeros((0, 0, 3), np.uint8)))


def _in_order(
    pool: ThreadPoolExecutor, work: Callable[[FileEntry], PreparedImage], entries: list[FileEntry],
    window: int,
) -> Iterator[PreparedImage]:
    """Run `work` over entries in the pool, at most `window` ahead, yielding in input order."""
    pending: deque[Future[PreparedImage]] = deque()
    upcoming = iter(entries)
    for entry in upcoming:
        pending.append(pool.submit(work, entry))
        if len(pending) >= window:
            break
    while pending:
        future = pending.popleft()
        for entry in upcoming:
            pending.append(pool.submit(work, entry))
            break
        yield future.result()


@dataclass(frozen=True)
class BatchRecords:
    """The rows one batch of prepared images adds to the faceset."""

    images: list[ImageRecord]
    faces: list[FaceRecord]
    checks: list[tuple]
    touched: list[tuple[str, int]]  # (image_id, new mtime_ns) of files whose bytes did not change


def assemble_batch(batch: list[PreparedImage], analyzer: FaceAnalyzer, run_id: str) -> BatchRecords:
    """Embed the batch's faces in one call and turn each prepared image into its rows."""
    crops = [crop for prepared in batch for crop in prepared.embedding_crops]
    embeddings = iter(analyzer.embed(crops)) if crops else iter(())
    records = BatchRecords([], [], [], [])
    for prepared in batch:
        entry, result = prepared.entry, prepared.result
        image_id = image_id_for(entry.rel_path)
        if prepared.unchanged:
            records.touched.append((image_id, entry.mtime_ns))
            continue
        row = dict(
            image_id=image_id, path=entry.rel_path,
            content_hash=result.content_hash, bytes=result.size, mtime_ns=entry.mtime_ns,
            width=None, height=None, format=None, mode=None, status="rejected",
            reject_reason=None, face_count=0, run_id=run_id,
        )
        if result.decoded is None:
            row["reject_reason"] = result.rejection.reason if result.rejection else "decode-error"
        else:
            decoded = result.decoded
            row.update(width=decoded.width, height=decoded.height, format=decoded.format,
                       mode=decoded.mode, status="ok", face_count=len(prepared.faces))
            records.faces.extend(replace(face, embedding=[float(v) for v in next(embeddings)])
                                 for face in prepared.faces)
            records.checks.extend(prepared.checks)
        records.images.append(ImageRecord(**row))
    return records


@dataclass(frozen=True)
class BatchOutcome:
    """What an engine reports for one batch it has committed to the faceset."""

    files: int  # entries of the to-do list this batch covered
    images_ok: int
    faces: int
    rejected_by_reason: dict[str, int]
    touched: int  # files whose bytes did not change (only their mtime was updated)
    faces_by_image: dict[str, list[str]]  # image_id -> face_ids, of every image (re)written
    providers: tuple[str, ...]  # onnxruntime providers the analyser used

    @classmethod
    def of(cls, records: BatchRecords, providers: Sequence[str]) -> "BatchOutcome":
        faces_by_image: dict[str, list[str]] = {image.image_id: [] for image in records.images}
        for face in records.faces:
            faces_by_image[face.image_id].append(face.face_id)
        reasons = Counter(image.reject_reason for image in records.images if image.status == "rejected")
        return cls(
            files=len(records.images) + len(records.touched),
            images_ok=sum(image.status == "ok" for image in records.images),
            faces=len(records.faces),
            rejected_by_reason=dict(reasons),
            touched=len(records.touched),
            faces_by_image=faces_by_image,
            providers=tuple(providers),
        )


@dataclass(frozen=True)
class ScanJob:
    """What an engine needs to analyse and commit the files of one run."""

    settings: ScanSettings
    store: FacesetStore
    known: dict[str, FileState]  # rows already in the faceset, by relative path
    aligned_dir: Path
    database: Path
    run_id: str
    analyzer: FaceAnalyzer | None  # the driver's analyser; engines that fan out build their own

    @property
    def database_dir(self) -> Path:
        """Aligned paths are stored relative to it."""
        return self.database.parent


class ScanEngine(Protocol):
    """Runs the per-file work of a scan and commits it batch by batch (each batch in one
    transaction, so a killed scan resumes); yields what each committed batch held."""

    name: str

    def run(self, job: ScanJob, todo: list[FileEntry]) -> Iterator[BatchOutcome]: ...


class LocalEngine:
    """Threads on this machine: decode and per-face work in a pool, the embedder batched in the
    calling thread, rows written straight to the faceset."""

    name = "local"

    def run(self, job: ScanJob, todo: list[FileEntry]) -> Iterator[BatchOutcome]:
        analyzer = job.analyzer
        assert analyzer is not None  # scan_folder builds one whenever there is work
        preparer = ImagePreparer(job.settings, analyzer, job.known, job.aligned_dir, job.database_dir)
        batch_size = job.settings.batch_size
        with ThreadPoolExecutor(job.settings.workers, thread_name_prefix="scan") as pool:
            stream = _in_order(pool, preparer, todo, batch_size * 2)
            while batch := [item for _, item in zip(range(batch_size), stream)]:
                records = assemble_batch(batch, analyzer, job.run_id)
                write_records(job.store, records)
                yield BatchOutcome.of(records, analyzer.providers)


def write_records(store: FacesetStore, records: BatchRecords) -> None:
    for image_id, mtime_ns in records.touched:
        store.touch(image_id, mtime_ns)
    store.write_batch(records.images, records.faces, records.checks)


def scan_folder(
    root: Path,
    database: Path,
    settings: ScanSettings = ScanSettings(),
    analyzer: FaceAnalyzer | None = None,
    aligned_dir: Path | None = None,
    on_progress: ProgressCallback | None = None,
    engine: ScanEngine | None = None,
    role: str | None = None,
) -> ScanSummary:
    """Scan every file under `root` into the faceset at `database`; returns the run's summary.

    `role` (src or dst, see curate.faceset) is stored with the faceset when given; a faceset
    that was never given one is a src.

    Only files that are new or changed since the last scan (size or mtime differ) are read, so a
    re-scan is cheap and a scan killed at any point resumes where it stopped: each batch of
    images and their faces is committed in one transaction, and crops are written atomically
    before their rows, so a killed batch is simply done again. `engine` runs the per-file work
    (default: `LocalEngine`, threads on this machine; `curate.scan.ray_engine.RayEngine` fans it out).
    """
    started = time.perf_counter()
    engine = engine or LocalEngine()
    root = Path(root)
    if role is not None:
        check_role(role)
    if not root.is_dir():
        raise FacesmithError(f"not a folder: {root}")
    database = Path(database)
    aligned_dir = Path(aligned_dir) if aligned_dir else default_aligned_dir(database)
    with environment_errors("create the folder for", database.parent):
        database.parent.mkdir(parents=True, exist_ok=True)
    with environment_errors("create the aligned crop folder", aligned_dir):
        aligned_dir.mkdir(parents=True, exist_ok=True)
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]
    entries = list(walk_files(root, exclude=faceset_own_files(database, aligned_dir)))

    source_root = storable_name(str(root.resolve()))
    with FacesetStore(database) as store:
        # One faceset mirrors one folder: rows are keyed by paths relative to it.
        store.require_meta("source_root", source_root, "source folder")
        # Checked on every run, work or not: a re-scan with other settings must not record a run
        # row that later stages (merge's detector) would take as the faceset's backend.
        store.require_meta("backend", analyzer.name if analyzer else settings.backend, "backend")
        store.require_meta("face_type", settings.face_type, "face type")
        store.require_meta("resolution", str(settings.resolution), "resolution")
        if role is not None:
            store.set_meta("role", role)
        known = store.file_states()
        # Before any crop is written or removed: the folder must be this faceset's alone.
        claim_crop_folder(aligned_dir, store, database, has_faces=any(known.values()))
        _remove_torn_writes(aligned_dir)
        present = {entry.rel_path for entry in entries}
        vanished = [state.image_id for path, state in known.items() if path not in present]
        store.delete_images(vanished)
        for image_id in vanished:
            _remove_crops(aligned_dir, image_id, keep=set())
        todo = [entry for entry in entries if _needs_scan(entry, known.get(entry.rel_path))]
        if todo:
            check_writable_folder(aligned_dir, "aligned crops")
        if todo and analyzer is None:
            analyzer = make_analyzer(settings)
        backend = analyzer.name if analyzer else settings.backend
        providers = list(analyzer.providers) if analyzer else []
        if analyzer:
            store.require_meta("backend", analyzer.name, "backend")
            store.require_meta("embedding_dim", str(analyzer.embedding_dim), "embedding size")
        store.start_run(
            run_id, source_root, backend, providers, settings.device,
            [asdict(model) for model in analyzer.models] if analyzer else [],
            {**asdict(settings), "engine": engine.name}, __version__,
        )
        job = ScanJob(settings, store, known, aligned_dir, database, run_id, analyzer)
        known_ids = {state.image_id for state in known.values()}
        counts: Counter[str] = Counter()
        reasons: Counter[str] = Counter()

        def summarise() -> ScanSummary:
            seconds = time.perf_counter() - started
            return ScanSummary(
                run_id=run_id,
                root=str(root),
                database=str(database),
                images_found=len(entries),
                images_unchanged=len(entries) - len(todo) + counts["touched"],
                images_processed=counts["files"] - counts["touched"],
                images_ok=counts["ok"],
                images_rejected=counts["rejected"],
                images_removed=len(vanished),
                faces=counts["faces"],
                rejected_by_reason=dict(sorted(reasons.items())),
                seconds=round(seconds, 3),
                images_per_second=round(counts["files"] / seconds, 2) if seconds > 0 else 0.0,
                backend=backend,
                device=settings.device,
                providers=providers,
                engine=engine.name,
            )

        if on_progress:
            on_progress(0, len(todo))
        try:
            for outcome in engine.run(job, todo) if todo else ():
                counts.update(ok=outcome.images_ok, faces=outcome.faces, touched=outcome.touched,
                              files=outcome.files, rejected=sum(outcome.rejected_by_reason.values()))
                reasons.update(outcome.rejected_by_reason)
                providers.extend(p for p in outcome.providers if p not in providers)
                for image_id, face_ids in outcome.faces_by_image.items():
                    # A re-analysed image may have fewer faces than before.
                    if image_id in known_ids:
                        _remove_crops(aligned_dir, image_id, keep=set(face_ids))
                if on_progress:
                    on_progress(counts["files"], len(todo))
        except BaseException as error:
            _roll_back_open_batch(store)
            partial = _as_committed(store, run_id, summarise())
            _record_interruption(store, run_id, partial)
            if isinstance(error, KeyboardInterrupt):
                raise ScanInterrupted(partial, len(todo) - partial.images_processed - counts["touched"]) from None
            raise
        summary = summarise()
        store.finish_run(run_id, summary.to_dict())
    return summary


class ScanInterrupted(Interrupted):
    """Ctrl-C stopped a scan: every committed batch is kept; running it again continues."""

    def __init__(self, summary: ScanSummary, left: int) -> None:
        self.summary = summary
        super().__init__(
            f"scan interrupted: {summary.images_processed} images saved in {summary.database} "
            f"({summary.faces} faces), {left} left; run the same command again to continue"
        )


def _roll_back_open_batch(store: FacesetStore) -> None:
    """A batch that a Ctrl-C left half-written is dropped before the run is counted and marked:
    left open, it would hold the run's 'interrupted' mark too, and lose it at close."""
    try:
        if store.roll_back_open_transaction():
            logger.debug("rolled back a batch the interruption left open")
    except Exception as error:  # a database that can no longer be written: reported by the caller
        logger.debug("cannot roll back an open batch: %s", error)


def _as_committed(store: FacesetStore, run_id: str, summary: ScanSummary) -> ScanSummary:
    """The summary with the images and faces this run committed, counted in the faceset: Ctrl-C
    can land after a batch's commit and before the engine reports it."""
    try:
        images, faces = store.connection.execute(
            "SELECT count(*), coalesce(sum(face_count), 0) FROM images WHERE run_id = ?", [run_id]).fetchone()
    except Exception as error:  # a database that cannot answer keeps the engine's own counts
        logger.debug("cannot count run %s's rows: %s", run_id, error)
        return summary
    return replace(summary, images_processed=int(images), faces=int(faces))


def _record_interruption(store: FacesetStore, run_id: str, summary: ScanSummary) -> None:
    """Mark the run 'interrupted' with what it saved; a database that can no longer be written
    (the reason the scan stopped, perhaps) leaves it 'running', which the next scan corrects."""
    try:
        store.interrupt_run(run_id, summary.to_dict())
    except Exception as error:  # the original error is the one to report
        logger.debug("could not mark run %s interrupted: %s", run_id, error)


def _remove_torn_writes(aligned_dir: Path) -> None:
    """Temporary files of crops whose write a killed scan never finished (see write_atomically).

    Safe only while this process holds the faceset: DuckDB's lock on the database means no other
    scan of it is writing crops now.
    """
    for leftover in aligned_dir.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)


def _remove_crops(aligned_dir: Path, image_id: str, keep: set[str]) -> None:
    """Delete an image's aligned crops except those of the faces in `keep`."""
    for crop in aligned_dir.glob(f"{image_id}_*.jpg"):
        if crop.stem not in keep:
            crop.unlink(missing_ok=True)
