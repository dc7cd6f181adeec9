"""The faceset database on real DuckDB files: schema, migrations, batch writes, the read-only door."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import duckdb
import pytest

from curate.errors import ReadOnlyQueryError, StoreError
from curate.records import FaceRecord, ImageRecord, QualityScores
from curate.store import SCHEMA_VERSION, FacesetStore, query_read_only
from tests.interrupts import CtrlCAsBeginReturns

# The columns other code (reports, train's sampler, merge checks) relies on; more may exist.
CONTRACT_COLUMNS = {
    "runs": ["run_id", "started_at", "backend", "providers", "settings"],
    "images": ["image_id", "path", "content_hash", "width", "height", "status", "reject_reason", "run_id"],
    "faces": [
        "face_id", "image_id", "face_index", "det_score", "bbox", "landmarks5", "landmarks68", "yaw",
        "pitch", "roll", "face_size", "sharpness", "motion_blur", "brightness", "contrast",
        "lighting_lr", "lighting_tb", "phash", "embedding", "aligned_path",
    ],
    "face_checks": ["face_id", "measure", "raw_value", "score", "verdict"],
    "meta": ["key", "value"],
    "duplicates": ["face_id", "group_id", "kind", "keep", "similarity", "phash_distance", "reason", "pose_delta",
                   "expression_delta", "light_delta"],
    "identities": ["face_id", "cluster", "label", "distance", "reason", "reliable"],
    "selection": ["face_id", "selected", "pick_order", "reason", "expression_bin"],
    "decisions": ["decision_id", "face_id", "content_hash", "face_index", "action", "value", "who", "decided_at", "why"],
}
TABLES = {
    "runs", "images", "faces", "face_checks", "meta", "analyses", "duplicates", "identities", "selection",
    "dfl_faces", "decisions",
}
VIEWS = {"rejected", "rejects_by_reason", "summary", "coverage", "lighting",
         "duplicate_groups", "identity_summary", "other_people", "selected_faces"}


def image(image_id: str = "img1", path: str = "a.jpg", status: str = "ok", faces: int = 1,
          content_hash: str = "aa") -> ImageRecord:
    return ImageRecord(
        image_id=image_id, path=path, content_hash=content_hash, bytes=1000, mtime_ns=1,
        width=640, height=480, format="JPEG", mode="RGB", status=status, reject_reason=None,
        face_count=faces, run_id="run1",
    )


def face(face_id: str, image_id: str = "img1", index: int = 0,
         bbox: tuple = (10.0, 20.0, 110.0, 140.0), yaw: float = 5.0) -> FaceRecord:
    quality = QualityScores(
        sharpness=120.0, motion_blur=0.1, brightness=0.5, shadows_clipped=0.0,
        highlights_clipped=0.0, contrast=0.2, lighting_lr=0.0, lighting_tb=0.0, color_cast=0.0,
        phash="0123456789abcdef",
    )
    return FaceRecord(
        face_id=face_id, image_id=image_id, face_index=index, det_score=0.9, bbox=bbox,
        landmarks5=[1.0] * 10, landmarks68=[2.0] * 136, yaw=yaw, pitch=-3.0, roll=1.0,
        face_size=100.0, quality=quality, embedding=[0.125] * 64, face_type="whole_face",
        resolution=256, image_to_face=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], aligned_path=f"aligned/{face_id}.jpg",
    )


def checks(face_id: str) -> list[tuple]:
    return [
        (face_id, "sharpness", 120.0, 0.9, 10.0, 50.0, None, None, "ok"),
        (face_id, "brightness", 0.5, 1.0, 0.05, 0.2, 0.8, 0.95, "ok"),
    ]


def query(database: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as connection:
        return connection.execute(sql).fetchall()


def table_names(database: Path) -> set[str]:
    return {name for (name,) in query(database, "SELECT table_name FROM information_schema.tables")}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def counts(database: Path) -> dict[str, int]:
    return {table: query(database, f"SELECT count(*) FROM {table}")[0][0] for table in sorted(TABLES)}


# -- schema and migrations -------------------------------------------------------------------


def test_new_file_gets_the_whole_schema(tmp_path):
    database = tmp_path / "faceset.duckdb"
    with FacesetStore(database) as store:
        assert store.schema_version() == SCHEMA_VERSION == 6
        assert store.meta("schema_version") == "6"

    kinds = dict(query(database, "SELECT table_name, table_type FROM information_schema.tables"))
    for name in TABLES:
        assert kinds.get(name) == "BASE TABLE", name
    for name in VIEWS:
        assert kinds.get(name) == "VIEW", name
    for table, expected in CONTRACT_COLUMNS.items():
        present = {
            name for (name,) in query(
                database, f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}'"
            )
        }
        missing = [column for column in expected if column not in present]
        assert not missing, f"{table} lacks {missing}"
    # every view can be read on an empty faceset
    for view in VIEWS:
        query(database, f"SELECT * FROM {view}")
    assert query(database, "SELECT images, faces, runs FROM summary") == [(0, 0, 0)]


def test_reopening_does_not_migrate_again(tmp_path, caplog):
    database = tmp_path / "faceset.duckdb"
    with caplog.at_level(logging.INFO, logger="curate.store"), FacesetStore(database) as store:
        store.write_batch([image()], [face("img1_00")], checks("img1_00"))
    assert any("migrated" in record.getMessage() for record in caplog.records)
    before = counts(database)
    assert before == {"face_checks": 2, "faces": 1, "images": 1, "meta": 1, "runs": 0,
                      "analyses": 0, "duplicates": 0, "identities": 0, "selection": 0,
                      "dfl_faces": 0, "decisions": 0}

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="curate.store"):
        for _ in range(2):
            with FacesetStore(database) as store:
                assert store.schema_version() == SCHEMA_VERSION
    assert not any("migrated" in record.getMessage() for record in caplog.records)
    assert counts(database) == before
    assert query(database, "SELECT key, value FROM meta") == [("schema_version", str(SCHEMA_VERSION))]


def test_a_version_1_file_is_migrated_forward_keeping_its_rows(tmp_path):
    """Make a true schema-1 file by running migration 1 alone, then open it with the store."""
    from curate.store import _MIGRATIONS

    database = tmp_path / "old.duckdb"
    with duckdb.connect(str(database)) as connection:
        for statement in _MIGRATIONS[1]:
            connection.execute(statement)
        connection.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    with FacesetStore(database) as store:
        store.write_batch([image()], [face("img1_00")], checks("img1_00"))
    with FacesetStore(database) as store:
        assert store.schema_version() == SCHEMA_VERSION
        store.replace_analysis("duplicates", "duplicates", [], {"threshold": 0.9})
    assert counts(database)["faces"] == 1
    assert query(database, "SELECT kind, faces FROM analyses") == [("duplicates", 1)]


def test_newer_schema_is_refused(tmp_path):
    database = tmp_path / "faceset.duckdb"
    FacesetStore(database).close()
    with duckdb.connect(str(database)) as connection:
        connection.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")

    with pytest.raises(StoreError, match="upgrade") as raised:
        FacesetStore(database)
    assert "99" in str(raised.value)
    # the refused store let go of the file and left the version alone
    assert query(database, "SELECT value FROM meta WHERE key = 'schema_version'") == [("99",)]


@pytest.mark.parametrize("existing", ["runs", "face_checks"])
def test_failed_migration_leaves_nothing_half_done(tmp_path, existing):
    """A clashing table makes migration 1 fail part-way; every statement before it is undone."""
    database = tmp_path / "foreign.duckdb"
    with duckdb.connect(str(database)) as connection:
        connection.execute(f"CREATE TABLE {existing} (sentinel INTEGER)")
        connection.execute(f"INSERT INTO {existing} VALUES (42)")

    with pytest.raises(StoreError, match="cannot migrate") as raised:
        FacesetStore(database)
    assert existing in str(raised.value)

    # opening read-only works while the exception (and its frames) are still alive: the file was released
    assert table_names(database) == {existing}
    assert query(database, f"SELECT sentinel FROM {existing}") == [(42,)]


def test_foreign_meta_table_is_a_store_error(tmp_path):
    database = tmp_path / "other_app.duckdb"
    with duckdb.connect(str(database)) as connection:
        connection.execute("CREATE TABLE meta (a INTEGER)")
    with pytest.raises(StoreError, match="not a faceset"):
        FacesetStore(database)
    assert table_names(database) == {"meta"}


def test_not_a_duckdb_file_is_a_store_error(tmp_path):
    database = tmp_path / "photo.duckdb"
    database.write_bytes(b"\xff\xd8\xff\xe0 not a database" * 100)
    with pytest.raises(StoreError, match="cannot open faceset"):
        FacesetStore(database)


# -- constraints and batch writes ---------------------------------------------------------


def test_status_check_constraint(tmp_path):
    database = tmp_path / "faceset.duckdb"
    FacesetStore(database).close()
    with duckdb.connect(str(database)) as connection:
        with pytest.raises(duckdb.ConstraintException):
            connection.execute(
                "INSERT INTO images (image_id, path, bytes, mtime_ns, status, face_count, run_id) "
                "VALUES ('x', 'x.jpg', 1, 1, 'weird', 0, 'run1')"
            )
        connection.execute(
            "INSERT INTO images (image_id, path, bytes, mtime_ns, status, face_count, run_id) "
            "VALUES ('y', 'y.jpg', 1, 1, 'rejected', 0, 'run1')"
        )
    with FacesetStore(database) as store, pytest.raises(StoreError, match="CHECK"):
        store.write_batch([image("z", "z.jpg", status="weird", faces=0)], [])
    assert query(database, "SELECT image_id, status FROM images") == [("y", "rejected")]


def test_write_batch_replaces_an_images_faces_and_checks(tmp_path):
    database = tmp_path / "faceset.duckdb"
    with FacesetStore(database) as store:
        store.write_batch(
            [image("img1", "a.jpg", faces=2), image("img2", "b.jpg")],
            [face("img1_00"), face("img1_01", index=1), face("img2_00", "img2")],
            checks("img1_00") + checks("img1_01") + checks("img2_00"),
        )
        first = store.connection.execute("SELECT count(*) FROM faces WHERE image_id = 'img1'").fetchone()
        assert first == (2,)

        # img1 re-scanned: now one different face; img2 is not in the batch and keeps its rows
        store.write_batch([image("img1", "a.jpg", faces=1, content_hash="bb")], [face("img1_00", yaw=30.0)],
                          checks("img1_00"))
    assert counts(database) == {"face_checks": 4, "faces": 2, "images": 2, "meta": 1, "runs": 0,
                                "analyses": 0, "duplicates": 0, "identities": 0, "selection": 0,
                                "dfl_faces": 0, "decisions": 0}
    assert query(database, "SELECT face_id, yaw FROM faces ORDER BY face_id") == [
        ("img1_00", 30.0), ("img2_00", 5.0)
    ]
    assert query(database, "SELECT DISTINCT face_id FROM face_checks ORDER BY 1") == [("img1_00",), ("img2_00",)]
    assert query(database, "SELECT content_hash, face_count FROM images WHERE image_id = 'img1'") == [("bb", 1)]


@pytest.mark.parametrize(
    "bad_faces, bad_checks",
    [
        # bbox is DOUBLE[4]: a 3-long list is rejected on the faces insert, after images were replaced
        ([face("img1_00", bbox=(1.0, 2.0, 3.0))], []),
        # a duplicate (face_id, measure) fails on the very last insert of the batch
        ([face("img1_00")], checks("img1_00") + checks("img1_00")[:1]),
    ],
    ids=["wrong-length-bbox", "duplicate-check"],
)
def test_failed_write_batch_keeps_the_previous_rows(tmp_path, bad_faces, bad_checks):
    database = tmp_path / "faceset.duckdb"
    with FacesetStore(database) as store:
        store.write_batch([image(faces=2)], [face("img1_00"), face("img1_01", index=1)],
                          checks("img1_00") + checks("img1_01"))
    snapshot = {
        table: query(database, f"SELECT * FROM {table} ORDER BY ALL") for table in ("images", "faces", "face_checks")
    }

    with FacesetStore(database) as store:
        with pytest.raises(StoreError, match="cannot write a batch"):
            store.write_batch([image(faces=1, content_hash="changed")], bad_faces, bad_checks)
        # the connection is usable again after the rollback
        store.write_batch([image("img9", "z.jpg", faces=0)], [])
    for table, rows in snapshot.items():
        now = query(database, f"SELECT * FROM {table} ORDER BY ALL")
        if table == "images":
            now = [row for row in now if row[0] != "img9"]
        assert now == rows, table


def _start_run(store: FacesetStore) -> None:
    store.start_run("run1", "/photos", "embedded", ["CPUExecutionProvider"], "cpu", {}, {}, "test")


def test_a_ctrl_c_as_a_batch_begins_leaves_no_transaction_open(tmp_path):
    """What a Ctrl-C leaves behind is rolled back, so the run's 'interrupted' mark written next is
    kept (it used to join the open transaction and vanish at close: 4 scans in 60 stayed 'running')."""
    database = tmp_path / "faceset.duckdb"
    with FacesetStore(database) as store:
        _start_run(store)
        store.write_batch([image("img1", "a.jpg", faces=0)], [])
        real, store.connection = store.connection, CtrlCAsBeginReturns(store.connection)
        with pytest.raises(KeyboardInterrupt):
            store.write_batch([image("img2", "b.jpg", faces=0)], [])
        assert store.connection.fired
        store.connection = real
        assert not store.roll_back_open_transaction()  # the batch's own handler rolled it back
        store.interrupt_run("run1", {"images_processed": 1})
    assert query(database, "SELECT status FROM runs") == [("interrupted",)]
    assert query(database, "SELECT image_id FROM images") == [("img1",)]


def test_a_transaction_left_open_is_rolled_back_before_the_run_is_marked(tmp_path):
    database = tmp_path / "faceset.duckdb"
    with FacesetStore(database) as store:
        _start_run(store)
        store.connection.execute("BEGIN TRANSACTION")
        store.connection.execute("DELETE FROM runs")  # a half-done write that must not land
        assert store.roll_back_open_transaction()
        assert not store.roll_back_open_transaction()
        store.interrupt_run("run1", {"images_processed": 0})
    assert query(database, "SELECT run_id, status FROM runs") == [("run1", "interrupted")]


# -- the read-only query door -------------------------------------------------------------


@pytest.fixture(scope="module")
def faceset(module_dirs) -> Path:
    database = module_dirs("readonly") / "faceset.duckdb"
    with FacesetStore(database) as store:
        store.write_batch(
            [image("img1", "a.jpg", faces=2), image("img2", "b.jpg", status="rejected", faces=0)],
            [face("img1_00"), face("img1_01", index=1, yaw=40.0)],
            checks("img1_00") + checks("img1_01"),
        )
    assert not Path(f"{database}.wal").exists()
    return database


def test_select_returns_columns_and_rows(faceset):
    result = query_read_only(faceset, "SELECT face_id, yaw FROM faces ORDER BY face_id")
    assert result.columns == ["face_id", "yaw"]
    assert result.rows == [("img1_00", 5.0), ("img1_01", 40.0)]
    assert query_read_only(faceset, "SELECT images, images_ok, images_rejected, faces FROM summary").rows == [
        (2, 1, 1, 2)
    ]


@pytest.mark.parametrize(
    "sql",
    ["DESCRIBE faces", "SHOW TABLES", "PRAGMA table_info('images')", "EXPLAIN SELECT * FROM faces",
     "SELECT * FROM coverage", "FROM rejects_by_reason"],
)
def test_read_statements_are_allowed(faceset, sql):
    result = query_read_only(faceset, sql)
    assert result.columns and result.rows


@pytest.mark.parametrize(
    "sql, kind",
    [
        ("INSERT INTO meta VALUES ('owner', 'me')", "INSERT"),
        ("UPDATE images SET status = 'rejected'", "UPDATE"),
        ("DELETE FROM images", "DELETE"),
        ("CREATE TABLE notes (a INTEGER)", "CREATE"),
        ("DROP TABLE faces", "DROP"),
        ("ALTER TABLE images ADD COLUMN note VARCHAR", "ALTER"),
        ("COPY images TO '{out}/copy.csv'", "COPY"),
        ("EXPORT DATABASE '{out}/export'", "EXPORT"),
        ("ATTACH '{out}/other.duckdb' AS other", "ATTACH"),
        ("INSTALL httpfs", "LOAD"),
        ("LOAD httpfs", "LOAD"),
        ("SET enable_external_access = true", "SET"),
        ("PRAGMA profiling_output = '{out}/profile.json'", "SET"),
        ("CHECKPOINT", "CALL"),
        ("SELECT 1; DELETE FROM images", "DELETE"),
        ("UPDATE EXTENSIONS", "UNKNOWN"),  # a type the duckdb Python enum does not name
        ("EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1", "EXPLAIN"),  # runs what it explains
        ("explain analyse select 1", "EXPLAIN"),
    ],
)
def test_write_statements_are_refused(faceset, tmp_path, sql, kind):
    sql = sql.format(out=tmp_path)
    before = sha256(faceset)
    listing = sorted(faceset.parent.iterdir())
    with pytest.raises(ReadOnlyQueryError, match="refused") as raised:
        query_read_only(faceset, sql)
    assert f"is a {kind} statement" in str(raised.value)
    assert sha256(faceset) == before
    assert sorted(faceset.parent.iterdir()) == listing
    assert list(tmp_path.iterdir()) == []  # COPY, EXPORT and ATTACH created nothing


def test_a_write_hidden_in_a_select_fails_on_the_read_only_file(faceset):
    before = sha256(faceset)
    with pytest.raises(ReadOnlyQueryError, match="read-only"):
        query_read_only(faceset, "WITH gone AS (DELETE FROM images RETURNING path) SELECT * FROM gone")
    assert sha256(faceset) == before
    assert query_read_only(faceset, "SELECT count(*) FROM images").rows == [(2,)]


@pytest.mark.parametrize(
    "sql",
    ["SELECT * FROM read_csv('/etc/passwd')", "SELECT content FROM read_text('/etc/hostname')",
     "SELECT * FROM glob('/etc/*')"],
)
def test_file_access_from_sql_is_disabled(faceset, sql):
    with pytest.raises(ReadOnlyQueryError, match="disabled"):
        query_read_only(faceset, sql)


def test_configuration_is_locked_so_logging_cannot_write_files(faceset, tmp_path):
    target = tmp_path / "log.txt"
    with pytest.raises(ReadOnlyQueryError, match="configuration"):
        query_read_only(faceset, f"SELECT * FROM enable_logging(storage='file', storage_path='{target}'); SELECT 1")
    assert not target.exists()


def test_missing_database_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="no faceset"):
        query_read_only(tmp_path / "absent.duckdb", "SELECT 1")
    assert not (tmp_path / "absent.duckdb").exists()


@pytest.mark.parametrize("sql", ["SELEC 1", "SELECT FROM WHERE", ""])
def test_unparsable_or_empty_query(faceset, sql):
    with pytest.raises(ReadOnlyQueryError):
        query_read_only(faceset, sql)


def test_query_errors_are_read_only_query_errors(faceset):
    with pytest.raises(ReadOnlyQueryError, match="query failed"):
        query_read_only(faceset, "SELECT no_such_column FROM faces")
