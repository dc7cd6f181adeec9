"""`facesmith merge run|check|options`, `facesmith verify` and `train run --check-every` on real files."""

from __future__ import annotations

import json
import re

import cv2

from tests.cli.helpers import assert_one_line_error, invoke
from tests.cli.test_cli_train import TINY_FLAGS


def test_merge_run_then_verify(tmp_path, tiny_model, dst_frames):
    out = tmp_path / "merged"
    result = invoke("merge", "run", "--model-dir", tiny_model, "--frames", dst_frames, "--out", out,
                    "--color-transfer", "lct", "--erode", "10", "--blur", "20", "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["merged"] == summary["frames"] >= 4 and summary["model_iteration"] == 30
    assert 'color_transfer = "lct"' in (out / "merge_settings.toml").read_text()
    verified = invoke("verify", out / "t1.png", "--format", "json")
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout)[0]["synthetic"] is True


def test_a_merge_in_a_new_process_shows_no_framework_start_up_chatter(tmp_path, tiny_model, dst_frames):
    """TensorFlow 2.21 prints its oneDNN notice through absl whatever TF_CPP_MIN_LOG_LEVEL says; the
    first import of the framework (device selection, keras) filters it, and real messages still show."""
    import os
    import subprocess
    import sys

    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-m", "facesmith", "merge", "preview", "--model-dir", str(tiny_model),
                             "--frames", str(dst_frames), "--out", str(tmp_path / "preview.png")],
                            capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr
    assert cv2.imread(str(tmp_path / "preview.png")) is not None
    for chatter in ("oneDNN", "absl::InitializeLog", "port.cc", "cpu_feature_guard"):
        assert chatter not in result.stderr, result.stderr


def test_verify_an_ordinary_photo_exits_2(dst_frames):
    result = invoke("verify", dst_frames / "einstein.png", "--format", "json")
    assert result.exit_code == 2 and json.loads(result.stdout)[0]["synthetic"] is False


def test_verify_a_corrupt_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert_one_line_error(invoke("verify", bad))


def test_merge_bad_option_is_one_line(tmp_path, tiny_model, dst_frames):
    result = invoke("merge", "run", "--model-dir", tiny_model, "--frames", dst_frames, "--out", tmp_path / "o",
                    "--mode", "sideways")
    assert "mode must be one of" in assert_one_line_error(result)


def test_merge_check_table(tiny_model):
    result = invoke("merge", "check", "--model-dir", tiny_model)
    assert result.exit_code == 0, result.output
    assert "held-out src loss" in result.stdout and "identity similarity" in result.stdout
    assert "merge quality" in result.stdout


def test_merge_check_bad_option_is_refused_before_tensorflow(tiny_model):
    result = invoke("merge", "check", "--model-dir", tiny_model, "--check-rule", "vibes")
    assert "check_rule must be one of" in assert_one_line_error(result)


def test_merge_options_json():
    rows = json.loads(invoke("merge", "options", "--format", "json").stdout)
    assert {"mode", "mask_mode", "erode", "color_transfer"} <= {row["option"] for row in rows}


def test_train_with_merge_checks(tmp_path, training_facesets):
    src, dst = training_facesets
    model_dir = tmp_path / "model"
    result = invoke("train", "run", "--model-dir", model_dir, "--src", src, "--dst", dst, "--iterations", "4",
                    "--check-every", "2", "--validation-share", "0.3", "--check-weight-sharpness", "0.2",
                    *TINY_FLAGS)
    assert result.exit_code == 0, result.output
    # one line per check on the terminal: iteration, score, change since the best check, verdict
    lines = [line for line in result.stderr.splitlines() if line.startswith("merge check ")]
    assert len(lines) == 2 and lines[0].startswith("merge check 2: quality 0.") and "vs best 2)" in lines[0]
    assert re.search(r"merge check 4: quality 0\.\d+ \([+-]\d\.\d+ vs best [24]\).* \[ok\]$", lines[1]), lines[1]
    # every score and the contact sheet in TensorBoard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(model_dir / "tensorboard"), size_guidance={"tensors": 0, "images": 0}).Reload()
    tags = events.Tags()
    stored = set(tags["tensors"]) | set(tags["scalars"])
    from merge.checks import TENSORBOARD_SCALARS, read_checks

    measured = {name for name in TENSORBOARD_SCALARS if read_checks(model_dir)[-1][name] is not None}
    assert {"quality_score", "identity_component", "expression_component", "loss_component"} <= measured
    assert {f"merge_check/{name}" for name in measured} <= stored, stored  # NaN (not measured) is left out
    # scalars written by tensorboard's own writer (every backend) or by tf.summary (as tensors)
    tag = "merge_check/quality_score"
    series = events.Scalars(tag) if tag in tags["scalars"] else events.Tensors(tag)
    assert [event.step for event in series] == [2, 4]
    assert "merge_check/contact_sheet" in set(tags["tensors"]) | set(tags["images"])
    # the weight given is kept by the model for later on-demand checks
    assert "check_weight_sharpness" in invoke("sql", "--db", model_dir / "model.duckdb",
                                              "SELECT value FROM meta WHERE key = 'merge_check_options'").stdout
    checks = json.loads(invoke("sql", "--db", model_dir / "model.duckdb",
                               "SELECT iteration, frames FROM merge_checks ORDER BY iteration",
                               "--format", "json").stdout)
    assert [row["iteration"] for row in checks] == [2, 4] and all(row["frames"] >= 1 for row in checks)
    assert cv2.imread(str(model_dir / "merge_checks" / "check_0000004.png")) is not None
    status = json.loads(invoke("train", "status", "--model-dir", model_dir, "--format", "json").stdout)
    assert status["best_iteration"] in (2, 4) and status["flag"] is None


def test_verify_a_mix_of_labelled_and_unlabelled_files_exits_2(tmp_path, tiny_model, dst_frames):
    out = tmp_path / "merged"
    assert invoke("merge", "run", "--model-dir", tiny_model, "--frames", dst_frames, "--out", out).exit_code == 0
    result = invoke("verify", out / "t1.png", dst_frames / "einstein.png", "--format", "json")
    assert result.exit_code == 2, result.output
    assert [row["synthetic"] for row in json.loads(result.stdout)] == [True, False]
