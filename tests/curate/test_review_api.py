"""The review app's HTTP API on a real analysed faceset: index, images by face id, decisions, the
guarded WHERE filter, and the server's guards (host, token, cross-origin writes, bad requests)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import duckdb
import numpy as np
import pytest
from starlette.testclient import TestClient

from curate.decisions import Decision, list_decisions
from curate.faceset import FacesetReader
from curate.review.app import ReviewSettings, create_app
from curate.review.index import embedding_map
from curate.review.security import Guard
from curate.scan.pipeline import default_aligned_dir

BASE = "http://127.0.0.1:8765"
WRITE = {"X-Facesmith-Request": "review"}


def copy_faceset(source: Path, folder: Path) -> Path:
    """A writable copy of a faceset: the database and its crops (the photos stay where they are)."""
    folder.mkdir(parents=True, exist_ok=True)
    database = folder / "faceset.duckdb"
    shutil.copyfile(source, database)
    shutil.copytree(default_aligned_dir(source), default_aligned_dir(database))
    return database


@pytest.fixture()
def faceset(analysed_faceset, tmp_path) -> Path:
    return copy_faceset(analysed_faceset, tmp_path / "set")


def client_for(database: Path, host: str = "127.0.0.1", token: str | None = None, base: str = BASE) -> TestClient:
    settings = ReviewSettings(database=database, cache_dir=database.parent / "review_cache", who="tester",
                              guard=Guard.for_binding(host, 8765, token))
    return TestClient(create_app(settings), base_url=base, raise_server_exceptions=False)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_index_shows_every_face_with_the_readers_statuses(faceset):
    response = client_for(faceset).get("/api/faces")
    assert response.status_code == 200
    index = response.json()
    columns = index["columns"]
    with FacesetReader(faceset) as reader:
        statuses = reader.statuses()
        labels = reader.identity_labels()
        dropped = reader.dropped_duplicates()
        picked = reader.selected()
    assert columns["id"] == [s.face_id for s in statuses]
    assert columns["trains"] == [s.trains for s in statuses]
    assert columns["reason"] == [s.reason for s in statuses]
    assert any(columns["trains"]) and not all(columns["trains"])
    assert columns["label"] == [labels[f][0] for f in columns["id"]]
    assert {f for f, keep, group in zip(columns["id"], columns["keep"], columns["group"]) if group and not keep} == set(dropped)
    assert {f: p for f, p in zip(columns["id"], columns["pick"]) if p is not None} == picked
    # every column has one entry per face; the verdict strings one letter per measure
    assert all(len(values) == len(statuses) for values in columns.values())
    assert all(len(v) == len(index["measures"]) and set(v) <= set("owb-") for v in columns["verdicts"])
    assert index["faceset"]["faces"] == len(statuses) and index["faceset"]["images_rejected"] == 1
    assert all(-1.0 <= v <= 1.0 for v in columns["x"] + columns["y"])
    assert "default-src 'none'" in response.headers["content-security-policy"]


def test_thumbnails_and_crops_are_served_by_face_id_only(faceset):
    client = client_for(faceset)
    face_id = client.get("/api/faces").json()["columns"]["id"][0]
    response = client.get(f"/api/thumbnails/{face_id}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (128, 128, 3) and image.std() > 5
    assert (faceset.parent / "review_cache" / "thumbnails_128" / f"{face_id}.jpg").read_bytes() == response.content  # cached
    crop = client.get(f"/api/crops/{face_id}")
    assert crop.status_code == 200 and cv2.imdecode(np.frombuffer(crop.content, np.uint8), cv2.IMREAD_COLOR).shape[0] == 128
    for bad in ["nope_00", "..%2Ffaceset.duckdb", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "a" * 300]:
        for route in ("thumbnails", "crops", "sources", "faces"):
            answer = client.get(f"/api/{route}/{bad}")
            assert answer.status_code == 404, (route, bad)
            assert b"DUCK" not in answer.content and b"root:" not in answer.content
    assert client.get("/static/../faceset.duckdb").status_code == 404
    assert client.get("/static/%2e%2e/app.py").status_code == 404


def test_face_detail_and_source_photo(faceset):
    client = client_for(faceset)
    columns = client.get("/api/faces").json()["columns"]
    face_id = columns["id"][columns["path"].index("t1.jpg")]
    detail = client.get(f"/api/faces/{face_id}").json()
    assert detail["path"] == "t1.jpg" and len(detail["landmarks"]) == 136 and len(detail["bbox"]) == 4
    assert detail["width"] == 1280 and {c["verdict"] for c in detail["checks"]} <= {"ok", "warn", "bad"}
    assert detail["trains"] == columns["trains"][columns["id"].index(face_id)]
    source = client.get(f"/api/sources/{face_id}")
    assert source.status_code == 200
    photo = cv2.imdecode(np.frombuffer(source.content, np.uint8), cv2.IMREAD_COLOR)
    scale = float(source.headers["x-source-scale"])
    assert photo.shape[1] == round(1280 * scale) and 0 < scale <= 1
    # a stored path that climbs out of the scanned folder is never read
    with duckdb.connect(str(faceset)) as connection:
        connection.execute("UPDATE images SET path = '../../../etc/passwd' WHERE path = 't1.jpg'")
    assert client.get(f"/api/sources/{face_id}").status_code == 404


def test_decisions_are_recorded_and_the_reader_honours_them(faceset):
    client = client_for(faceset)
    columns = client.get("/api/faces").json()["columns"]
    training = [f for f, t in zip(columns["id"], columns["trains"]) if t]
    other = [f for f, label in zip(columns["id"], columns["label"]) if label in ("other-person", "outlier")]
    assert training and other
    answer = client.post("/api/decisions", headers=WRITE, json={"decisions": [
        {"face_id": training[0], "action": "exclude", "why": "eyes closed"},
        {"face_id": other[0], "action": "include"},
        {"face_id": other[0], "action": "tag", "value": "check later"}]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["recorded"] == 3
    statuses = dict(zip(body["statuses"]["id"], body["statuses"]["trains"]))
    assert statuses == {training[0]: False, other[0]: True}
    rows = list_decisions(faceset)
    assert [(r.face_id, r.action, r.who) for r in rows] == [
        (training[0], "exclude", "tester"), (other[0], "include", "tester"), (other[0], "tag", "tester")]
    with FacesetReader(faceset) as reader:
        by_id = {s.face_id: s for s in reader.statuses()}
    assert not by_id[training[0]].trains and by_id[training[0]].reasons[0].kind == "decision"
    assert "eyes closed" in by_id[training[0]].reason
    assert by_id[other[0]].trains
    again = client.get("/api/faces").json()["columns"]
    position = again["id"].index(training[0])
    assert again["inclusion"][position] == "exclude" and not again["trains"][position]
    assert again["tags"][again["id"].index(other[0])] == ["check later"]
    detail = client.get(f"/api/faces/{training[0]}").json()
    assert not detail["trains"] and detail["reason"] == by_id[training[0]].reason and detail["decided"]
    assert [d["action"] for d in detail["decisions"]] == ["exclude"]
    log = client.get("/api/decisions").json()
    assert [entry["action"] for entry in log] == ["exclude", "include", "tag"]


def test_writes_need_the_header_same_origin_and_json(faceset):
    client = client_for(faceset)
    face_id = client.get("/api/faces").json()["columns"]["id"][0]
    body = {"decisions": [{"face_id": face_id, "action": "exclude"}]}
    before = digest(faceset)
    assert client.post("/api/decisions", json=body).status_code == 403  # no custom header
    refused = client.post("/api/decisions", json=body, headers={**WRITE, "Origin": "http://evil.example"})
    assert refused.status_code == 403 and "cross-origin" in refused.json()["error"]
    form = client.post("/api/decisions", headers=WRITE, content=b"decisions=1",
                       )  # no JSON content type
    assert form.status_code == 415
    assert list_decisions(faceset) == [] and digest(faceset) == before
    same_origin = client.post("/api/decisions", json=body, headers={**WRITE, "Origin": BASE})
    assert same_origin.status_code == 200


def test_bad_requests_get_4xx_and_the_server_goes_on(faceset):
    client = client_for(faceset)
    face_id = client.get("/api/faces").json()["columns"]["id"][0]
    post = lambda **kwargs: client.post("/api/decisions", headers={**WRITE, "Content-Type": "application/json"}, **kwargs)  # noqa: E731
    cases = [
        post(content=b"{not json"), post(content=b"\xff\xfe"), post(json=[1, 2]), post(json={"decisions": []}),
        post(json={"decisions": [{"face_id": face_id, "action": "delete-file"}]}),
        post(json={"decisions": [{"face_id": "no_such_face", "action": "exclude"}]}),
        post(json={"decisions": [{"face_id": face_id, "action": "label", "value": "somebody"}]}),
        post(json={"decisions": [{"face_id": face_id, "action": "tag"}]}),
        post(json={"decisions": [{"face_id": face_id, "action": "exclude", "why": "x" * 5000}]}),
        post(json={"decisions": ["exclude"]}),
        client.post("/api/query", headers=WRITE, json={"where": ""}),
        client.post("/api/query", headers=WRITE, json={"where": 42}),
    ]
    assert [c.status_code for c in cases] == [400] * len(cases), [c.text for c in cases]
    assert all(isinstance(c.json()["error"], str) for c in cases)
    big = post(content=b"[" + b"1," * 1_500_000 + b"1]")
    assert big.status_code == 413
    assert client.get("/api/nothing-here").status_code == 404
    assert client.post("/api/faces", headers=WRITE, json={}).status_code == 405
    assert list_decisions(faceset) == []
    assert client.get("/api/faces").status_code == 200  # still serving


def test_where_filter_goes_through_the_read_only_door(faceset):
    client = client_for(faceset)
    with duckdb.connect(str(faceset), read_only=True) as connection:
        main = {f for (f,) in connection.execute("SELECT face_id FROM identities WHERE label = 'main'").fetchall()}
        sharp = {f for (f,) in connection.execute("SELECT face_id FROM faces WHERE sharpness > 100").fetchall()}
    before = digest(faceset)
    answer = client.post("/api/query", headers=WRITE, json={"where": "label = 'main'"})
    assert answer.status_code == 200 and set(answer.json()["ids"]) == main and main
    answer = client.post("/api/query", headers=WRITE, json={"where": "sharpness > 100 -- a comment"})
    assert set(answer.json()["ids"]) == sharp
    for attack in ["1=1); DELETE FROM faces; SELECT (1", "1=1); DROP TABLE decisions; --",
                   "face_id IN (SELECT * FROM read_csv('/etc/passwd'))",
                   "1=1); ATTACH '/tmp/x.duckdb' AS x; SELECT (1", "1=1); COPY faces TO '/tmp/leak.csv'; SELECT (1",
                   "nonsense column = 3"]:
        refused = client.post("/api/query", headers=WRITE, json={"where": attack})
        assert refused.status_code == 400, attack
        assert refused.json()["error"]
    assert digest(faceset) == before and not Path("/tmp/leak.csv").exists()
    with duckdb.connect(str(faceset), read_only=True) as connection:
        assert connection.execute("SELECT count(*) FROM faces").fetchone()[0] == len(
            client.get("/api/faces").json()["columns"]["id"])


def test_beyond_loopback_the_token_is_required(faceset):
    client = client_for(faceset, host="0.0.0.0", token="s3cret-token", base="http://192.0.2.7:8765")
    assert client.get("/api/faces").status_code == 403
    assert client.get("/api/faces", params={"token": "wrong"}).status_code == 403
    page = client.get("/", params={"token": "s3cret-token"})
    assert page.status_code == 200 and "facesmith review" in page.text
    assert "HttpOnly" in page.headers["set-cookie"] and "SameSite=Strict" in page.headers["set-cookie"]
    # the client now holds the cookie: requests without the token in the URL pass
    assert client.get("/api/faces").status_code == 200
    fresh = client_for(faceset, host="0.0.0.0", token="s3cret-token", base="http://192.0.2.7:8765")
    assert fresh.get("/api/faces", headers={"X-Facesmith-Token": "s3cret-token"}).status_code == 200
    assert fresh.get("/api/thumbnails/x", headers={"Cookie": "facesmith_token=nope"}).status_code == 403
    assert fresh.get("/api/faces", headers={"Cookie": 'bad"cookie;;=='}).status_code == 403


def test_only_the_servers_own_host_names_are_answered(faceset):
    assert client_for(faceset).get("/api/faces", headers={"Host": "127.0.0.1:8765"}).status_code == 200
    assert client_for(faceset).get("/api/faces", headers={"Host": "localhost:8765"}).status_code == 200
    rebound = client_for(faceset).get("/api/faces", headers={"Host": "attacker.example:8765"})
    assert rebound.status_code == 400  # DNS rebinding: another site's name pointed at 127.0.0.1
    assert client_for(faceset).get("/", headers={"Host": "127.0.0.1:9999"}).status_code == 400


def test_a_faceset_held_by_a_writer_answers_busy_then_recovers(faceset):
    client = client_for(faceset)
    assert client.get("/api/faces").status_code == 200
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
                               "sys.stdin.read()", str(faceset)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        busy = client.get("/api/faces")
        assert busy.status_code == 503 and busy.json()["busy"] and busy.headers["retry-after"] == "1"
        face_id = "whatever_00"
        write = client.post("/api/decisions", headers=WRITE, json={"decisions": [{"face_id": face_id, "action": "exclude"}]})
        assert write.status_code == 503
    finally:
        holder.communicate("", timeout=30)
    assert client.get("/api/faces").status_code == 200


def test_duplicate_groups_put_the_keeper_first(faceset):
    groups = client_for(faceset).get("/api/duplicates").json()
    with duckdb.connect(str(faceset), read_only=True) as connection:
        stored = connection.execute("SELECT count(DISTINCT group_id), count(*) FROM duplicates").fetchone()
    assert (len(groups), sum(len(g["members"]) for g in groups)) == stored and groups
    for group in groups:
        assert group["members"][0]["keep"] and group["members"][0]["id"] == group["group"]
        assert not any(m["keep"] for m in group["members"][1:])
        assert all(m["similarity"] is not None for m in group["members"][1:] if m["kind"] == "near")


def test_embedding_map_is_deterministic_and_separates_people():
    rng = np.random.default_rng(3)
    centre_a, centre_b = rng.standard_normal(128), rng.standard_normal(128)
    embeddings = np.vstack([centre_a + 0.1 * rng.standard_normal((40, 128)),
                            centre_b + 0.1 * rng.standard_normal((10, 128))]).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    points = embedding_map(embeddings)
    assert points.shape == (50, 2) and np.abs(points).max() <= 1.0 + 1e-9
    assert np.array_equal(points, embedding_map(embeddings.copy()))
    gap = np.linalg.norm(points[:40].mean(axis=0) - points[40:].mean(axis=0))
    spread = max(points[:40].std(axis=0).max(), points[40:].std(axis=0).max())
    assert gap > 5 * spread
    assert embedding_map(embeddings[:2]).shape == (2, 2)


def test_the_index_is_kept_between_starts_and_follows_the_faceset(faceset, tmp_path):
    from curate.analysis.identities import analyze_identities
    from curate.review.access import FacesetAccess

    cache = tmp_path / "cache"
    first = FacesetAccess(faceset, cache)
    built = first.index()
    assert list(cache.glob("index-*.json.gz")) and list(cache.glob("crops-*.json"))
    # a warm start: the stored index is served and no face is read from the database
    warm = FacesetAccess(faceset, cache)
    assert warm.index() == built and warm._faces is None
    assert warm.crop_paths() == first.crop_paths() and warm._faces is None
    # decisions patch the index in memory; the patched one equals one built from scratch
    columns = built["columns"]
    face_ids = [f for f, t in zip(columns["id"], columns["trains"]) if t][:2]
    warm.record([Decision(face_ids[0], "exclude", why="test"), Decision(face_ids[1], "label", "other-person"),
                 Decision(face_ids[1], "tag", "look again")], "tester")
    patched = warm.index()
    assert patched == FacesetAccess(faceset, tmp_path / "fresh").index()
    assert patched["faceset"]["decisions"] == 3 and not patched["columns"]["trains"][columns["id"].index(face_ids[0])]
    assert FacesetAccess(faceset, cache).index() == patched  # and it was stored
    # an analysis run by another command changes the fingerprint: the index is built again
    analyze_identities(faceset, pin_image="biden.jpg")
    again = warm.index()
    with FacesetReader(faceset) as reader:
        labels = reader.identity_labels()
    assert again["columns"]["label"] == [labels[f][0] for f in again["columns"]["id"]] != columns["label"]
    # a torn file in the cache is ignored and replaced
    for stored in cache.glob("index-*.json.gz"):
        stored.write_bytes(b"\x1f\x8b torn")
    assert FacesetAccess(faceset, cache).index() == again


def test_the_listening_socket_hands_out_connections_without_nagle():
    """Kept-alive answers (a browser's thumbnails) must not wait for the client's delayed ACK: every
    accepted connection has TCP_NODELAY, which asyncio does not set on create_server's sockets."""
    import socket

    from curate.review.server import bind

    listener = bind("127.0.0.1", 0)
    try:
        with socket.create_connection(listener.getsockname()) as client:
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
                assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # the option is ours
    finally:
        listener.close()
