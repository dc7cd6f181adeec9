"""Scan on Ray: Ray Data decodes on CPU workers, face analysis runs in an actor pool (one actor
per GPU, or CPU actors), and each analysed batch comes back as a Parquet shard that the faceset
loads in one transaction.

Only `scan_folder(..., engine=RayEngine(...))` imports this module, so the default path never
imports Ray (the `ray` extra installs it). Results equal the local engine's: both run the same
`decode_entry`, `ImagePreparer.analyse` and `assemble_batch`; only where they run differs.

On a cluster, every node must see the scanned folder, the faceset's folder (aligned crops and
shards are written beside the database) and, for insightface, the model folder, at the same paths.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.errors import FacesmithError
from curate.scan.ingest import Decoded, FileEntry, IngestResult, Rejection
from curate.scan.pipeline import (
    BatchOutcome,
    ImagePreparer,
    PreparedImage,
    ScanJob,
    ScanSettings,
    assemble_batch,
    decode_entry,
    make_analyzer,
)
from curate.scan.shards import Shard, shard_root, write_shard

logger = logging.getLogger(__name__)

_ENTRY_SCHEMA = pa.schema([
    ("rel_path", pa.string()), ("abs_path", pa.binary()), ("size", pa.int64()),
    ("mtime_ns", pa.int64()), ("problem", pa.string()), ("known_hash", pa.string()),
])
_DECODED_SCHEMA = pa.schema([
    *_ENTRY_SCHEMA,
    ("content_hash", pa.string()), ("read_size", pa.int64()), ("unchanged", pa.bool_()),
    ("reason", pa.string()), ("detail", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
    ("format", pa.string()), ("mode", pa.string()),
    ("pixels", pa.large_binary()),  # (height, width, 3) uint8 BGR, row-major; empty when not decoded
])
_MANIFEST_SCHEMA = pa.schema([("shard_dir", pa.string()), ("shard", pa.string()),
                              ("touched", pa.string()), ("outcome", pa.string())])


@dataclass(frozen=True)
class RayPlan:
    """How the work is spread: what one analysis actor asks of the cluster, and how many run."""

    actors: int
    actor_cpus: float
    actor_gpus: float
    decode_cpus: float  # per decode task; 0 when the actors decode their own files
    analyzer_threads: int | None  # embedder threads inside one actor
    device: str  # the analysers' device: cuda on GPU actors

    def describe(self) -> str:
        kind = f"{self.actors} GPU actor(s)" if self.actor_gpus else f"{self.actors} CPU actor(s)"
        decoding = f"decode tasks {self.decode_cpus:g} CPU each" if self.decode_cpus else "decoding in the actors"
        return f"{kind}, {self.actor_cpus:g} CPU each; {decoding}"


def plan_resources(cpus: float, gpus: float, device: str, actors: int | None = None,
                   decode_tasks: bool | None = None) -> RayPlan:
    """The actor pool for a cluster with `cpus` and `gpus` (pure, so it is tested directly).

    With GPUs (and the scan not asking for the CPU): one actor per GPU, or `actors` sharing them
    (a GPU actor still does landmarks, alignment and quality on its CPU, so a fast GPU may want two
    or more), and decode tasks on the CPUs left after the actors' equal shares: frames are decoded
    on CPUs that would otherwise wait for the GPUs.
    Without GPUs: one single-threaded actor per CPU that decodes its own files. Handing decoded
    pixels from decode tasks to actors goes through Ray's shared-memory object store, ~6 MB per
    1080p frame written and page-faulted in again, and on CPUs alone that costs more than it
    gains (tools/bench_ray.py, 500 photos on 2 CPUs: 0.70 of the local engine's throughput with
    decode tasks, 0.82 without). `decode_tasks` overrides the choice either way.
    """
    if cpus < 1:
        raise FacesmithError(f"the Ray cluster offers {cpus:g} CPUs; a scan needs at least 1")
    if actors is not None and actors < 1:
        raise FacesmithError(f"the actor pool needs at least 1 actor, got {actors}")
    if gpus >= 1 and device != "cpu":
        count = actors or int(gpus)
        gpu_share = min(1.0, int(gpus) / count)
        if decode_tasks is False:
            return RayPlan(count, min(4.0, cpus / count), gpu_share, 0.0, None, "cuda")
        actor_cpus = min(4.0, (cpus - 1.0) / count) if cpus >= 2 else (cpus * 0.75) / count
        return RayPlan(count, actor_cpus, gpu_share, min(1.0, cpus * 0.25), None, "cuda")
    if device == "cuda":
        raise FacesmithError("--device cuda: the Ray cluster has no GPUs")
    count = actors or max(1, int(cpus))
    share = min(1.0, cpus / count)
    if decode_tasks:
        # Each actor leaves a quarter of its share, so decode tasks can always be scheduled.
        return RayPlan(count, 0.75 * share, 0.0, 0.25 * share, 1, "cpu")
    return RayPlan(count, share, 0.0, 0.0, 1, "cpu")


class RayEngine:
    """`scan_folder`'s engine on Ray: a running cluster at `address`, or a local instance.

    num_cpus: CPUs of the local instance this engine starts (None: every core); ignored with
    an address. actors: analysis actors (None: one per GPU, else one per CPU). keep_shards:
    leave the Parquet shards after loading them (otherwise each is deleted once committed).
    decode_tasks: decode in separate Ray tasks (True) or in the analysis actors (False); None
    lets `plan_resources` choose (tasks when the actors hold GPUs).
    When Ray is already initialised in this process, that instance is used and left running.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, actors: int | None = None,
                 keep_shards: bool = False, decode_tasks: bool | None = None) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.actors = actors
        self.keep_shards = keep_shards
        self.decode_tasks = decode_tasks
        self.load_seconds = 0.0  # time the last run spent loading shards into the faceset

    def run(self, job: ScanJob, todo: list[FileEntry]) -> Iterator[BatchOutcome]:
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            start_ray(self.address, self.num_cpus)
        try:
            yield from self._run(job, todo)
        finally:
            if started_here:
                ray.shutdown()

    def _run(self, job: ScanJob, todo: list[FileEntry]) -> Iterator[BatchOutcome]:
        import ray
        import ray.data

        resources = ray.cluster_resources()
        plan = plan_resources(resources.get("CPU", 0.0), resources.get("GPU", 0.0), job.settings.device,
                              self.actors, self.decode_tasks)
        logger.info("ray engine: %s", plan.describe())
        self.load_seconds = 0.0
        root = shard_root(job.database)
        _remove_unfinished_shards(root, job)
        directory = root / job.run_id
        batch_size = job.settings.batch_size
        blocks = [_entry_table(todo[start:start + batch_size], job)
                  for start in range(0, len(todo), batch_size)]
        settings = replace(job.settings, device=plan.device)
        dataset = ray.data.from_arrow(blocks)
        if plan.decode_cpus:
            dataset = dataset.map_batches(_decode_files, batch_format="pyarrow", batch_size=None,
                                          fn_kwargs={"max_pixels": settings.max_pixels,
                                                     "max_bytes": settings.max_bytes},
                                          num_cpus=plan.decode_cpus)
        dataset = (
            dataset.map_batches(
                _FaceAnalysisActor, batch_format="pyarrow", batch_size=batch_size,
                fn_constructor_kwargs={"setup": _ActorSetup(settings, plan.analyzer_threads, job.aligned_dir,
                                                            job.database_dir, directory, job.run_id)},
                compute=ray.data.ActorPoolStrategy(size=min(plan.actors, len(blocks))),
                num_cpus=plan.actor_cpus, num_gpus=plan.actor_gpus,
            )
        )
        for manifest in dataset.iter_rows():
            shard = Shard(Path(manifest["shard_dir"]), manifest["shard"])
            touched = [tuple(pair) for pair in json.loads(manifest["touched"])]
            loading = time.perf_counter()
            job.store.load_shard(shard, touched)
            self.load_seconds += time.perf_counter() - loading
            if not self.keep_shards:
                shard.remove()
            outcome = json.loads(manifest["outcome"])
            yield BatchOutcome(**{**outcome, "providers": tuple(outcome["providers"])})
        if not self.keep_shards:
            for folder in (directory, root):  # empty once every shard is loaded
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()


def start_ray(address: str | None, num_cpus: int | None) -> None:
    """Join the cluster at `address`, or start a private instance on loopback; quiet Ray Data."""
    import ray
    import ray.data

    # Ray's C++ core logs at error level about actor arguments Ray Data itself manages; only
    # fatal messages are worth a user's attention here (an explicit setting is respected).
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    else:
        # A private instance on loopback: nothing is exposed, nothing needs the network. "local"
        # starts a new one even when `ray start` left a cluster on this machine, which a bare
        # ray.init() would join instead.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, _node_ip_address="127.0.0.1")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI draws its own bar from the shards that arrive
    context.print_on_execution_start = False


def _remove_unfinished_shards(root: Path, job: ScanJob) -> None:
    """Shards of runs that were killed: their files are scanned again, so the shards are waste."""
    if not root.is_dir():
        return
    interrupted = {row[0] for row in job.store.connection.execute(
        "SELECT run_id FROM runs WHERE status = 'interrupted'").fetchall()}
    for folder in root.iterdir():
        if folder.name in interrupted:
            shutil.rmtree(folder, ignore_errors=True)


def _entry_table(entries: list[FileEntry], job: ScanJob) -> pa.Table:
    known = job.known
    rows = {
        "rel_path": [entry.rel_path for entry in entries],
        # Bytes, not text: a file name need not be valid UTF-8.
        "abs_path": [os.fsencode(entry.abs_path) for entry in entries],
        "size": [entry.size for entry in entries],
        "mtime_ns": [entry.mtime_ns for entry in entries],
        "problem": [entry.problem for entry in entries],
        "known_hash": [known[entry.rel_path].content_hash if entry.rel_path in known else None
                       for entry in entries],
    }
    return pa.table(rows, schema=_ENTRY_SCHEMA)


def _entry(row: dict) -> FileEntry:
    return FileEntry(row["rel_path"], Path(os.fsdecode(row["abs_path"])), row["size"], row["mtime_ns"],
                     row["problem"])


def _decode_files(table: pa.Table, max_pixels: int, max_bytes: int) -> pa.Table:
    """Ray Data task: read and decode a block of files (runs on any CPU worker)."""
    columns: dict[str, list] = {name: [] for name in _DECODED_SCHEMA.names}
    for row in table.to_pylist():
        result, unchanged = decode_entry(_entry(row), row["known_hash"], max_pixels, max_bytes)
        decoded, rejection = result.decoded, result.rejection
        values = {**row, "content_hash": result.content_hash, "read_size": result.size, "unchanged": unchanged,
                  "reason": rejection.reason if rejection else None,
                  "detail": rejection.detail if rejection else None,
                  "width": decoded.width if decoded else None, "height": decoded.height if decoded else None,
                  "format": decoded.format if decoded else None, "mode": decoded.mode if decoded else None,
                  "pixels": decoded.image_bgr.tobytes() if decoded else b""}
        for name, value in values.items():
            columns[name].append(value)
    return pa.table(columns, schema=_DECODED_SCHEMA)


def _ingest_result(row: dict) -> IngestResult:
    """The decode task's row back as the IngestResult the local engine would have had."""
    decoded = rejection = None
    if row["reason"] is not None:
        rejection = Rejection(row["reason"], row["detail"] or "")
    elif row["pixels"]:
        pixels = np.frombuffer(row["pixels"], np.uint8).reshape(row["height"], row["width"], 3)
        decoded = Decoded(pixels, row["width"], row["height"], row["format"], row["mode"])
    return IngestResult(row["content_hash"], row["read_size"], decoded, rejection)


@dataclass(frozen=True)
class _ActorSetup:
    settings: ScanSettings
    threads: int | None
    aligned_dir: Path
    database_dir: Path
    shard_dir: Path
    run_id: str


class _FaceAnalysisActor:
    """Ray Data actor: one analyser for its lifetime; each call analyses a batch of decoded
    files, writes their rows as a shard and returns a one-row manifest."""

    def __init__(self, setup: _ActorSetup) -> None:
        self.analyzer = make_analyzer(setup.settings, threads=setup.threads)
        self.preparer = ImagePreparer(setup.settings, self.analyzer, {}, setup.aligned_dir, setup.database_dir)
        self.shard_dir = setup.shard_dir
        self.run_id = setup.run_id
        self.max_pixels = setup.settings.max_pixels
        self.max_bytes = setup.settings.max_bytes

    def _prepare(self, row: dict) -> PreparedImage:
        entry = _entry(row)
        if "pixels" in row:  # decoded by a decode task
            return self.preparer.analyse(entry, _ingest_result(row), row["unchanged"])
        return self.preparer.analyse(entry, *decode_entry(entry, row["known_hash"], self.max_pixels,
                                                          self.max_bytes))

    def __call__(self, table: pa.Table) -> pa.Table:
        prepared = [self._prepare(row) for row in table.to_pylist()]
        records = assemble_batch(prepared, self.analyzer, self.run_id)
        shard = write_shard(self.shard_dir, uuid.uuid4().hex[:12], records.images, records.faces, records.checks)
        outcome = BatchOutcome.of(records, self.analyzer.providers)
        return pa.table({"shard_dir": [str(shard.directory)], "shard": [shard.name],
                         "touched": [json.dumps(records.touched)], "outcome": [json.dumps(asdict(outcome))]},
                        schema=_MANIFEST_SCHEMA)
