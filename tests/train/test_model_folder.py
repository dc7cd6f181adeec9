"""The model folder module: model.json, absolute facesets, old relative paths, checks before anything is built."""

from __future__ import annotations

import json

import pytest

from train.config import ConfigError, resolve_config
from train.model_folder import (
    ModelFolderError,
    open_model_folder,
    plan_session,
    read_model_folder,
    write_model_file,
)


def _facesets(root):
    (root / "data").mkdir()
    src, dst = root / "data" / "src.duckdb", root / "data" / "dst.duckdb"
    src.write_bytes(b"")
    dst.write_bytes(b"")
    return src, dst


def test_facesets_are_stored_absolute_and_a_model_resumes_from_another_directory(tmp_path, monkeypatch):
    src, dst = _facesets(tmp_path)
    monkeypatch.chdir(tmp_path / "data")
    plan = plan_session(tmp_path / "model", {"resolution": 64}, "src.duckdb", "dst.duckdb")
    assert plan.creating and plan.src == src and plan.dst == dst
    (tmp_path / "model").mkdir()
    write_model_file(tmp_path / "model", plan.src, plan.dst, plan.requested, plan.config)
    stored = json.loads((tmp_path / "model" / "model.json").read_text())
    assert stored["src"] == str(src) and stored["dst"] == str(dst)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    resumed = plan_session(tmp_path / "model", {})
    assert not resumed.creating and resumed.src == src and resumed.config.resolution == 64


def test_an_old_relative_faceset_path_is_found_or_named(tmp_path, monkeypatch):
    _facesets(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    config, _ = resolve_config({"resolution": 64})
    write_model_file(model, tmp_path / "data" / "src.duckdb", tmp_path / "data" / "dst.duckdb", {}, config)
    stored = json.loads((model / "model.json").read_text())
    stored.update(src="data/src.duckdb", dst="data/dst.duckdb")  # what facesmith wrote before
    (model / "model.json").write_text(json.dumps(stored))
    monkeypatch.chdir(tmp_path)  # the folder training started from
    assert read_model_folder(model).faceset("src") == tmp_path / "data" / "src.duckdb"
    monkeypatch.chdir(tmp_path / "data")  # "no faceset at src.duckdb" before
    assert read_model_folder(model).faceset("dst") == tmp_path / "data" / "dst.duckdb"  # beside the model
    moved = tmp_path / "moved"
    (tmp_path / "data").rename(moved)
    with pytest.raises(ModelFolderError, match="relative to the folder training started from.*give --src"):
        read_model_folder(model).faceset("src")
    # giving the facesets again moves the model to them
    plan = plan_session(model, {}, moved / "src.duckdb", moved / "dst.duckdb")
    assert plan.src == moved / "src.duckdb"


def test_checks_before_anything_is_created(tmp_path):
    src, dst = _facesets(tmp_path)
    with pytest.raises(ConfigError, match="batch_size must be <= 256"):
        plan_session(tmp_path / "m", {"batch_size": 300}, src, dst)
    with pytest.raises(ModelFolderError, match="no faceset at"):
        plan_session(tmp_path / "m", {}, src, tmp_path / "none.duckdb")
    with pytest.raises(ModelFolderError, match="give --src and --dst"):
        plan_session(tmp_path / "m", {})
    assert not (tmp_path / "m").exists()
    assert not open_model_folder(tmp_path / "m").exists


def test_a_broken_model_json_is_a_clear_error(tmp_path):
    from train.model_folder import DamagedModelFile

    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(DamagedModelFile, match="not valid JSON"):  # the checkpoint guard reads it
        open_model_folder(tmp_path)
    assert issubclass(ModelFolderError, DamagedModelFile)


def test_one_training_session_per_folder(tmp_path):
    """The trainer lets go of its history file between writes, so DuckDB's lock no longer keeps a
    second trainer out of a folder: the training lock does, and says which process holds it."""
    import os

    from train.model_folder import lock_for_training

    first = lock_for_training(tmp_path)
    with pytest.raises(ModelFolderError, match=f"being trained by process {os.getpid()}: one training session"):
        lock_for_training(tmp_path)
    first.release()
    lock_for_training(tmp_path).release()  # free again once released


def test_a_session_on_a_folder_another_process_trains_is_refused(tmp_path, training_facesets):
    import subprocess
    import sys

    from tests.train.conftest import TINY_OPTIONS
    from train.loop import open_session

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from train.model_folder import lock_for_training\n"
         f"lock = lock_for_training(Path({str(model_dir)!r})); print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ModelFolderError, match=f"being trained by process {holder.pid}"):
            open_session(model_dir, dict(TINY_OPTIONS), *training_facesets)
        assert sorted(path.name for path in model_dir.iterdir()) == [".training.lock"]  # nothing made
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0
