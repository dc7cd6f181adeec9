"""The Ray scan engine: same rows as the local engine, on a real local Ray instance (2 CPUs, loopback)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest

from curate.errors import FacesmithError
from curate.scan.pipeline import ScanSettings, scan_folder
from tests.curate.conftest import load_bgr

ray = pytest.importorskip("ray", reason="the ray extra is not installed")

from curate.scan.ray_engine import RayEngine, plan_resources, start_ray

SETTINGS = ScanSettings(resolution=128, batch_size=4)


def rows(database: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as connection:
        return connection.execute(sql).fetchall()


@pytest.fixture(scope="module")
def local_ray():
    """One private Ray instance for the module: 2 CPUs on 127.0.0.1, as CI has."""
    if ray.is_initialized():
        ray.shutdown()
    start_ray(None, 2)
    yield
    ray.shutdown()


@pytest.fixture()
def mixed_folder(tmp_path, obama_paths, biden_path, t1_path) -> Path:
    """Real faces (one person, another, a group of six) beside the hostile corpus."""
    from tests.hostile_corpus import build_hostile_corpus

    folder = tmp_path / "photos"
    build_hostile_corpus(folder / "hostile", good_image=load_bgr(obama_paths[0]))
    for path in (*obama_paths, biden_path, t1_path):
        shutil.copy(path, folder / path.name)
    yield folder
    for path in folder.rglob("*"):  # the corpus holds an unreadable file
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.mark.parametrize("cpus, gpus, actors", [(32, 4, None), (4, 4, None), (16, 1, 3), (2, 1, None)])
def test_plan_puts_actors_on_gpus_and_leaves_cpu_for_decoding(cpus, gpus, actors):
    plan = plan_resources(cpus=cpus, gpus=gpus, device="auto", actors=actors)
    assert plan.actors == (actors or gpus) and plan.device == "cuda"
    assert plan.actors * plan.actor_gpus <= gpus  # several actors may share a GPU, never oversubscribe
    assert cpus - plan.actors * plan.actor_cpus >= plan.decode_cpus > 0


def test_plan_without_gpus_decodes_in_the_actors():
    plan = plan_resources(cpus=2, gpus=0, device="auto")
    assert (plan.actors, plan.actor_gpus, plan.device, plan.analyzer_threads) == (2, 0.0, "cpu", 1)
    assert plan.decode_cpus == 0 and plan.actors * plan.actor_cpus <= 2
    assert plan_resources(cpus=8, gpus=2, device="cpu").device == "cpu"


@pytest.mark.parametrize("cpus, actors", [(2, None), (2, 4), (16, 3)])
def test_plan_with_decode_tasks_leaves_them_cpu(cpus, actors):
    plan = plan_resources(cpus=cpus, gpus=0, device="auto", actors=actors, decode_tasks=True)
    # Every actor placed, some CPU must be left, or no decode task could ever be scheduled.
    assert cpus - plan.actors * plan.actor_cpus >= plan.decode_cpus > 0


def test_plan_refuses_what_the_cluster_cannot_do():
    with pytest.raises(FacesmithError, match="no GPUs"):
        plan_resources(cpus=4, gpus=0, device="cuda")
    with pytest.raises(FacesmithError, match="at least 1"):
        plan_resources(cpus=0, gpus=0, device="auto")
    with pytest.raises(FacesmithError, match="at least 1 actor"):
        plan_resources(cpus=4, gpus=0, device="auto", actors=0)


@pytest.mark.parametrize("decode_tasks", [False, True], ids=["decode-in-actors", "decode-tasks"])
def test_ray_engine_writes_the_rows_the_local_engine_writes(local_ray, mixed_folder, tmp_path, analyzer,
                                                            decode_tasks):
    local_db = tmp_path / "local" / "faceset.duckdb"
    ray_db = tmp_path / "ray" / "faceset.duckdb"
    local = scan_folder(mixed_folder, local_db, SETTINGS, analyzer=analyzer)
    engine = RayEngine(keep_shards=True, decode_tasks=decode_tasks)
    on_ray = scan_folder(mixed_folder, ray_db, SETTINGS, analyzer=analyzer, engine=engine)

    assert on_ray.engine == "ray" and local.engine == "local"
    assert on_ray.faces == local.faces >= 9  # three Obama photos, Biden, six in t1 (minus none)
    assert on_ray.rejected_by_reason == local.rejected_by_reason and len(local.rejected_by_reason) >= 8
    assert (on_ray.images_ok, on_ray.images_rejected) == (local.images_ok, local.images_rejected)

    image_sql = "SELECT * EXCLUDE (run_id) FROM images ORDER BY image_id"
    assert rows(ray_db, image_sql) == rows(local_db, image_sql)
    check_sql = "SELECT * FROM face_checks ORDER BY face_id, measure"
    assert rows(ray_db, check_sql) == rows(local_db, check_sql)
    face_sql = "SELECT * EXCLUDE (embedding) FROM faces ORDER BY face_id"
    assert rows(ray_db, face_sql) == rows(local_db, face_sql)
    embeddings = [np.array([row[0] for row in rows(db, "SELECT embedding FROM faces ORDER BY face_id")])
                  for db in (local_db, ray_db)]
    # Same model and crops; batches may group faces differently, which moves the last float bits.
    np.testing.assert_allclose(embeddings[1], embeddings[0], atol=1e-5)

    for (path,) in rows(local_db, "SELECT aligned_path FROM faces"):
        assert (ray_db.parent / path).read_bytes() == (local_db.parent / path).read_bytes()
    settings, providers = rows(ray_db, "SELECT settings, providers FROM runs")[0]
    assert json.loads(settings)["engine"] == "ray" and "CPUExecutionProvider" in providers

    # The kept shards are plain Parquet that DuckDB reads: together they hold every row.
    shards = ray_db.parent / "faceset_shards" / on_ray.run_id
    with duckdb.connect() as connection:
        counted = {table: connection.execute(
            f"SELECT count(*) FROM read_parquet('{shards}/*.{table}.parquet')").fetchone()[0]
            for table in ("images", "faces", "face_checks")}
    assert counted == {"images": local.images_processed, "faces": local.faces,
                       "face_checks": len(rows(local_db, check_sql))}


def test_ray_engine_rescans_incrementally_and_cleans_up(local_ray, tmp_path, obama_paths, t1_path, analyzer):
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in (*obama_paths, t1_path):
        shutil.copy(path, folder / path.name)
    database = tmp_path / "db" / "faceset.duckdb"
    engine = RayEngine()
    first = scan_folder(folder, database, SETTINGS, analyzer=analyzer, engine=engine)
    assert first.images_ok == 4 and first.faces == 9
    assert not (database.parent / "faceset_shards").exists()  # every shard loaded, then deleted

    again = scan_folder(folder, database, SETTINGS, analyzer=analyzer, engine=engine)
    assert again.images_processed == 0 and again.images_unchanged == 4

    touched = folder / obama_paths[0].name
    later = time.time() + 5
    os.utime(touched, (later, later))  # same bytes, new mtime: only the mtime is stored
    shutil.copy(t1_path, folder / obama_paths[1].name)  # changed bytes: analysed again
    third = scan_folder(folder, database, SETTINGS, analyzer=analyzer, engine=engine)
    assert (third.images_unchanged, third.images_processed) == (3, 1)
    assert rows(database, f"SELECT face_count FROM images WHERE path = '{obama_paths[1].name}'") == [(6,)]
    assert rows(database, f"SELECT mtime_ns FROM images WHERE path = '{touched.name}'") == [
        (touched.stat().st_mtime_ns,)]
    assert rows(database, "SELECT count(*) FROM faces")[0][0] == 1 + 6 + 1 + 6


def test_cli_scan_with_the_ray_engine(local_ray, tmp_path, obama_paths):
    from typer.testing import CliRunner

    from facesmith.cli import app

    folder = tmp_path / "photos"
    folder.mkdir()
    for path in obama_paths:
        shutil.copy(path, folder / path.name)
    database = tmp_path / "faceset.duckdb"
    result = CliRunner().invoke(app, ["curate", "scan", str(folder), "--db", str(database), "--engine", "ray",
                                      "--resolution", "128", "--format", "json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["engine"] == "ray" and summary["images_ok"] == 3 and summary["faces"] == 3


def test_local_scan_never_imports_ray(tmp_path, obama_paths):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(obama_paths[0], folder / "one.jpg")
    script = (
        "import sys\n"
        "from facesmith.cli import app\n"
        f"args = ['curate', 'scan', {str(folder)!r}, '--db', {str(tmp_path / 'f.duckdb')!r}, '--format', 'json']\n"
        "try:\n"
        "    app(args, prog_name='facesmith')\n"
        "except SystemExit as stop:\n"
        "    assert stop.code in (0, None), stop.code\n"
        "print('RAY', [name for name in ('ray', 'pyarrow') if name in sys.modules])\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                               check=False)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().splitlines()[-1] == "RAY []"


class _Interrupt(Exception):
    pass


def test_an_interrupted_ray_scan_resumes_to_the_rows_of_an_uninterrupted_one(local_ray, tmp_path, obama_paths,
                                                                             t1_path, biden_path, analyzer):
    folder = tmp_path / "photos"
    folder.mkdir()
    sources = [*obama_paths, t1_path, biden_path]
    for index in range(12):
        shutil.copy(sources[index % len(sources)], folder / f"{index:02d}{sources[index % len(sources)].suffix}")
    reference = tmp_path / "reference" / "faceset.duckdb"
    scan_folder(folder, reference, SETTINGS, analyzer=analyzer)

    def interrupt_after_the_first_batch(done: int, total: int) -> None:
        if done:
            raise _Interrupt

    database = tmp_path / "db" / "faceset.duckdb"
    with pytest.raises(_Interrupt):
        scan_folder(folder, database, SETTINGS, analyzer=analyzer, engine=RayEngine(),
                    on_progress=interrupt_after_the_first_batch)
    committed = rows(database, "SELECT count(*) FROM images")[0][0]
    assert committed == SETTINGS.batch_size  # one shard loaded, in one transaction

    resumed = scan_folder(folder, database, SETTINGS, analyzer=analyzer, engine=RayEngine())
    assert resumed.images_processed == 12 - committed
    image_sql = "SELECT * EXCLUDE (run_id) FROM images ORDER BY image_id"
    assert rows(database, image_sql) == rows(reference, image_sql)
    face_sql = "SELECT * EXCLUDE (embedding) FROM faces ORDER BY face_id"
    assert rows(database, face_sql) == rows(reference, face_sql)
    assert [status for (status,) in rows(database, "SELECT status FROM runs ORDER BY started_at")] == [
        "interrupted", "done"]
    # Shards the interrupted run wrote but never loaded are gone with it.
    assert not (database.parent / "faceset_shards").exists()
