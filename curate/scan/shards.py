"""Parquet shards of scan rows: how engines that fan out hand their results to the faceset.

A shard is one analysed batch, three files that share a name and hold the rows of the DuckDB
tables of the same names, column for column:

    <faceset>_shards/<run_id>/<shard>.images.parquet
    <faceset>_shards/<run_id>/<shard>.faces.parquet
    <faceset>_shards/<run_id>/<shard>.face_checks.parquet

Workers write them (each file atomically: a reader sees all of it or nothing) and the process
that owns the faceset loads each shard in one transaction with DuckDB's `read_parquet`
(`FacesetStore.load_shard`). Importing this module needs pyarrow, which only the `ray` extra
installs.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.records import FaceRecord, ImageRecord
from curate.store import CHECK_COLUMNS, FACE_COLUMNS, IMAGE_COLUMNS

SHARD_TABLES = ("images", "faces", "face_checks")

_DOUBLES = pa.list_(pa.float64())

IMAGE_SCHEMA = pa.schema([
    ("image_id", pa.string()), ("path", pa.string()), ("content_hash", pa.string()),
    ("bytes", pa.int64()), ("mtime_ns", pa.int64()), ("width", pa.int32()), ("height", pa.int32()),
    ("format", pa.string()), ("mode", pa.string()), ("status", pa.string()),
    ("reject_reason", pa.string()), ("face_count", pa.int32()), ("run_id", pa.string()),
])
FACE_SCHEMA = pa.schema([
    ("face_id", pa.string()), ("image_id", pa.string()), ("face_index", pa.int32()),
    ("det_score", pa.float64()), ("bbox", _DOUBLES), ("landmarks5", _DOUBLES), ("landmarks68", _DOUBLES),
    ("yaw", pa.float64()), ("pitch", pa.float64()), ("roll", pa.float64()), ("face_size", pa.float64()),
    *((name, pa.float64()) for name in ("sharpness", "motion_blur", "brightness", "shadows_clipped",
                                        "highlights_clipped", "contrast", "lighting_lr", "lighting_tb",
                                        "color_cast")),
    ("phash", pa.string()), ("embedding", pa.list_(pa.float32())), ("face_type", pa.string()),
    ("resolution", pa.int32()), ("image_to_face", _DOUBLES), ("aligned_path", pa.string()),
])
CHECK_SCHEMA = pa.schema([
    ("face_id", pa.string()), ("measure", pa.string()),
    *((name, pa.float64()) for name in ("raw_value", "score", "bad_low", "ok_low", "ok_high", "bad_high")),
    ("verdict", pa.string()),
])
SCHEMAS = {"images": IMAGE_SCHEMA, "faces": FACE_SCHEMA, "face_checks": CHECK_SCHEMA}

# The shard columns must be the store's, in its order: loading selects them by name.
assert IMAGE_SCHEMA.names == [c.strip() for c in IMAGE_COLUMNS.split(",")]
assert FACE_SCHEMA.names == [c.strip() for c in FACE_COLUMNS.split(",")]
assert CHECK_SCHEMA.names == [c.strip() for c in CHECK_COLUMNS.split(",")]


@dataclass(frozen=True)
class Shard:
    """The three files of one shard."""

    directory: Path
    name: str

    def file(self, table: str) -> Path:
        return self.directory / f"{self.name}.{table}.parquet"

    def files(self) -> list[Path]:
        return [self.file(table) for table in SHARD_TABLES]

    def remove(self) -> None:
        for path in self.files():
            path.unlink(missing_ok=True)


def shard_root(database: Path) -> Path:
    """Where the shards of the faceset at `database` are written, one folder per run."""
    database = Path(database)
    return database.parent / f"{database.stem}_shards"


def write_shard(
    directory: Path, name: str, images: list[ImageRecord], faces: list[FaceRecord], checks: list[tuple]
) -> Shard:
    """Write one batch's rows as a shard; returns it once all three files are complete."""
    shard = Shard(Path(directory), name)
    shard.directory.mkdir(parents=True, exist_ok=True)
    rows = {"images": [image.to_row() for image in images], "faces": [face.to_row() for face in faces],
            "face_checks": [tuple(check) for check in checks]}
    for table, table_rows in rows.items():
        schema = SCHEMAS[table]
        columns = list(zip(*table_rows)) if table_rows else [[] for _ in schema.names]
        arrow = pa.table([pa.array(column, type=field.type) for column, field in zip(columns, schema)],
                         schema=schema)
        _write_parquet_atomically(arrow, shard.file(table))
    return shard


def _write_parquet_atomically(table: pa.Table, path: Path) -> None:
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(descriptor)
    try:
        pq.write_table(table, temporary, compression="zstd")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
