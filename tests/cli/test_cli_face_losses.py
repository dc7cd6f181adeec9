"""The faces a model cannot learn, shown where curation happens: `curate report --model-dir` (terminal,
JSON, HTML), `merge report` (terminal, JSON, HTML) and the review app (API), each beside the faces'
quality verdicts; and taken out of the next session by `train run --exclude-hardest` or by a decision
made in the review app. The model is the shared `noisy_model` (one src crop replaced by noise)."""

from __future__ import annotations

import json
import shutil

from starlette.testclient import TestClient

from curate.faceset import FacesetReader
from curate.review.app import ReviewSettings, create_app
from curate.review.security import Guard
from curate.training_loss import read_face_losses
from tests.cli.helpers import assert_one_line_error, flat, invoke

BASE = "http://127.0.0.1:8765"
WRITE = {"X-Facesmith-Request": "review"}


def review_client(database, cache, model_dir=None) -> TestClient:
    settings = ReviewSettings(database=database, cache_dir=cache, who="tester",
                              guard=Guard.for_binding("127.0.0.1", 8765, None), model_dir=model_dir)
    return TestClient(create_app(settings), base_url=BASE, raise_server_exceptions=False)


def test_curate_report_lists_the_hardest_faces_with_their_verdicts(tmp_path, noisy_model):
    model_dir, src, _, noisy = noisy_model
    result = invoke("curate", "report", "--db", src, "--model-dir", model_dir, "--hardest", "3", "--format", "json")
    assert result.exit_code == 0, result.output
    loss = json.loads(result.stdout)["training_loss"]
    assert (loss["side"], loss["iteration"], len(loss["faces"])) == ("src", 80, 3)
    first = loss["faces"][0]
    assert first["face_id"] == noisy and first["rank"] == 1 and first["ratio"] > 1.2 and first["trains"]
    assert {"verdicts", "bad", "warn", "identity", "status", "path", "seen"} <= set(first)
    assert loss["faces"][0]["loss"] > loss["faces"][1]["loss"] > loss["faces"][2]["loss"]

    page = tmp_path / "report.html"
    result = invoke("curate", "report", "--db", src, "--model-dir", model_dir, "--html", page)
    assert result.exit_code == 0, result.output
    text = flat(result.stdout)
    assert "faces the model learns worst" in text and noisy in text
    html = page.read_text()
    section = html[html.index('id="training-loss"'):]
    section = section[:section.index("</section>")]
    assert f"{first['path']} #0" in section and noisy in section and section.count("data:image/jpeg") >= 3
    assert "loss " in section and "x median" in section


def test_merge_report_lists_each_sides_hardest_faces(tmp_path, noisy_model):
    model_dir, _, _, noisy = noisy_model
    result = invoke("merge", "report", "--model-dir", model_dir, "--hardest", "2", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["hardest"]["src"]["faces"][0]["face_id"] == noisy and report["hardest_notes"] == []
    assert report["hardest"]["dst"]["side"] == "dst" and len(report["hardest"]["dst"]["faces"]) == 2
    page = tmp_path / "training.html"
    result = invoke("merge", "report", "--model-dir", model_dir, "--html", page)
    assert result.exit_code == 0, result.output
    assert "src faces the model learns worst" in flat(result.stdout) and noisy in flat(result.stdout)
    html = page.read_text()
    assert 'id="training-loss-src"' in html and 'id="training-loss-dst"' in html
    assert noisy in html[html.index('id="training-loss-src"'):html.index('id="training-loss-dst"')]


def test_review_app_shows_training_losses(tmp_path, noisy_model):
    model_dir, src, dst, noisy = noisy_model
    client = review_client(src, tmp_path / "cache", model_dir)
    columns = client.get("/api/training-loss").json()
    assert columns["available"] and columns["side"] == "src" and columns["iteration"] == 80
    assert columns["ids"][0] == noisy and columns["ratio"][0] > 1.2
    assert columns["loss"] == sorted(columns["loss"], reverse=True) and len(columns["ids"]) == len(columns["seen"])
    detail = client.get(f"/api/faces/{noisy}").json()
    assert detail["training_loss"]["rank"] == 1 and detail["training_loss"]["seen"] > 0
    assert detail["checks"]  # the quality verdicts sit beside it in the same panel
    assert client.get("/api/training-loss").status_code == 200
    # the dst faceset under the same model reads the dst side; without --model-dir there is nothing
    assert review_client(dst, tmp_path / "cache_dst", model_dir).get("/api/training-loss").json()["side"] == "dst"
    plain = review_client(src, tmp_path / "cache_plain")
    assert plain.get("/api/training-loss").json()["available"] is False
    assert plain.get(f"/api/faces/{noisy}").json()["training_loss"] is None


def test_exclude_hardest_and_a_review_decision_leave_faces_out_of_the_next_session(tmp_path, noisy_model):
    model_dir, src, dst, noisy = noisy_model
    model_copy = tmp_path / "model"
    shutil.copytree(model_dir, model_copy)
    src_copy = tmp_path / "src" / "faceset.duckdb"
    shutil.copytree(src.parent, src_copy.parent)
    before = read_face_losses(model_copy, "src")
    second = before.ranked()[1].face_id
    # a person excludes the second-hardest face in the review app
    response = review_client(src_copy, tmp_path / "cache", model_copy).post(
        "/api/decisions", json={"decisions": [{"face_id": second, "action": "exclude", "why": "looks odd"}]},
        headers=WRITE)
    assert response.status_code == 200, response.text

    result = invoke("train", "run", "--model-dir", model_copy, "--src", src_copy, "--dst", dst, "--iterations", "4",
                    "--exclude-hardest", "1", "--check-every", "0", "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["iteration"] == 84
    assert [face["face_id"] for face in summary["excluded_hardest"]] == [noisy]
    assert "hardest training loss" in summary["excluded_hardest"][0]["why"]
    with FacesetReader(src_copy) as reader:
        trainable = set(reader.trainable_ids())
    assert noisy not in trainable and second not in trainable
    after = read_face_losses(model_copy, "src")
    assert after.iteration == 84
    # neither face trained in the new session: their running losses are carried over untouched ...
    for face_id in (noisy, second):
        assert after.losses[face_id] == before.losses[face_id]
    # ... while the faces that still train were seen 4 iterations x 4 faces more
    assert sum(f.seen for f in after.losses.values()) - sum(f.seen for f in before.losses.values()) == 16


def test_bad_uses_are_one_line_errors(tmp_path, noisy_model, training_facesets):
    _, src, dst, _ = noisy_model
    result = invoke("train", "run", "--model-dir", tmp_path / "new", "--src", src, "--dst", dst,
                    "--exclude-hardest", "2", "--iterations", "1")
    assert "has no training history yet" in assert_one_line_error(result)
    assert not (tmp_path / "new").exists()
    result = invoke("curate", "report", "--db", src, "--model-dir", tmp_path / "nowhere")
    assert "no training history" in assert_one_line_error(result)
    result = invoke("curate", "review", "--db", src, "--model-dir", tmp_path / "nowhere", "--no-browser")
    assert "is not a model folder" in assert_one_line_error(result)
