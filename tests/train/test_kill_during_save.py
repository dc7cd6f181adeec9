"""A training process killed with SIGKILL in the middle of writing a checkpoint leaves a loadable model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tests.train.conftest import TINY_OPTIONS
from train.checkpoint import list_checkpoints, load_checkpoint
from train.loop import close_session, open_session, run_training

REPO = Path(__file__).resolve().parents[2]

# The child trains with a checkpoint every iteration. From the third save on, it pauses half-way
# through writing arrays.npz, so the parent can kill it at a known point inside a save.
_CHILD = """
import json, sys, time
from pathlib import Path
import train.checkpoint as checkpoint
from train.loop import open_session, run_training

model_dir, src, dst, options = Path(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
plain_write = checkpoint._write_file
saves = []

def slow_write(path, data):
    if path.name != "arrays.npz":
        return plain_write(path, data)
    saves.append(path)
    if len(saves) < 3:
        return plain_write(path, data)
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
        (model_dir / "paused-in-save").write_text(str(path))
        time.sleep(60)
        handle.write(data[len(data) // 2:])

checkpoint._write_file = slow_write
session = open_session(model_dir, options, Path(src), Path(dst))
run_training(session, max_iterations=1000)
"""


def _partials(model_dir: Path) -> list[Path]:
    return list((model_dir / "checkpoints").glob(".step-*.partial-*/arrays.npz"))


def test_sigkill_during_a_save_leaves_the_previous_checkpoint_loadable(tmp_path, training_facesets):
    src, dst = training_facesets
    model_dir = tmp_path / "model"
    options = dict(TINY_OPTIONS, save_every=1)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(model_dir), str(src), str(dst), json.dumps(options)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not (model_dir / "paused-in-save").exists():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the child never reached its third save"
            time.sleep(0.05)
        # the child is now inside its pause: half of arrays.npz is on disk
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
        child.stderr.close()

    assert child.returncode == -signal.SIGKILL
    assert _partials(model_dir), "the kill did not land inside a save"
    complete = list_checkpoints(model_dir)
    assert complete and complete[0] >= 1
    checkpoint = load_checkpoint(model_dir)
    assert checkpoint.step == complete[0]
    assert all(np.all(np.isfinite(array)) for array in checkpoint.arrays.values())

    session = open_session(model_dir, {}, src, dst)
    try:
        assert session.iteration == checkpoint.step
        outcome = run_training(session, max_iterations=2)
    finally:
        close_session(session)
    assert outcome.iteration == checkpoint.step + 2
    assert not _partials(model_dir)  # the next save cleans what the killed writer left
