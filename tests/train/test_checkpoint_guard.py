"""A tampered or damaged model folder: every case is a fall-back to an older checkpoint or one clear
error, never a traceback and never code run (issue 17, finding 12; NaN weights)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from curate.errors import FacesmithError
from train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from train.checkpoint_guard import ModelFolderError, read_model_file

SHAPES = {"model/encoder/kernel": (3, 3), "model/decoder/bias": (4,), "opt/m": (4,)}


def arrays(value: float) -> dict[str, np.ndarray]:
    return {name: np.full(shape, value, np.float32) for name, shape in SHAPES.items()}


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """Two good checkpoints (10, then 20, the newest) and a model.json as training writes it."""
    save_checkpoint(tmp_path, 10, arrays(1.0), {"salt": 1, "config": {}, "phase": "rw"}, keep=5)
    save_checkpoint(tmp_path, 20, arrays(2.0), {"salt": 1, "config": {}, "phase": "rw"}, keep=5)
    (tmp_path / "model.json").write_text(json.dumps({
        "src": "src.duckdb", "dst": "dst.duckdb", "requested": {"resolution": 64},
        "structure": {"resolution": 64, "archi": "liae-ud", "ae_dims": 32, "e_dims": 16, "d_dims": 16,
                      "d_mask_dims": 16, "face_type": "whole_face"}}))
    return tmp_path


def newest(model_dir: Path) -> Path:
    return model_dir / "checkpoints" / "step-00000020"


def edit_state(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def tamper(model_dir: Path) -> None:
        path = newest(model_dir) / "state.json"
        state = json.loads(path.read_text())
        result = change(state)
        path.write_text(json.dumps(state if result is None else result))
    return tamper


def write_state(raw: bytes) -> Callable[[Path], None]:
    return lambda model_dir: (newest(model_dir) / "state.json").write_bytes(raw)


def replace_arrays(payload: bytes | Callable[[], bytes]) -> Callable[[Path], None]:
    """New arrays.npz bytes with a matching checksum: a tamperer can always recompute it."""
    def tamper(model_dir: Path) -> None:
        data = payload() if callable(payload) else payload
        (newest(model_dir) / "arrays.npz").write_bytes(data)
        edit_state(lambda state: state.update(arrays_sha256=hashlib.sha256(data).hexdigest()))(model_dir)
    return tamper


def npz(**named: np.ndarray) -> Callable[[], bytes]:
    def build() -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, **named)
        return buffer.getvalue()
    return build


def good_but(name: str, value: np.ndarray) -> Callable[[], bytes]:
    return npz(**{key.replace("/", "/"): array for key, array in {**arrays(2.0), name: value}.items()})


def truncated() -> bytes:
    return npz(**arrays(2.0))()[:200]


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/facesmith-tamper-ran",))


# Each tampers with the newest checkpoint; loading must fall back to step 10.
FALLS_BACK: dict[str, Callable[[Path], None]] = {
    "state not json": write_state(b"{not json"),
    "state a list": write_state(b"[1, 2]"),
    "state not utf-8": write_state(b"\xff\xfe\x00{"),
    "state nested deep": write_state(b"[" * 100_000 + b"]" * 100_000),
    "state huge": write_state(b" " * (17 * 2**20)),
    "schema a string": edit_state(lambda s: s.update(schema_version="1")),
    "schema true": edit_state(lambda s: s.update(schema_version=True)),
    "schema negative": edit_state(lambda s: s.update(schema_version=-1)),
    "step a float": edit_state(lambda s: s.update(step=2.5)),
    "salt huge": edit_state(lambda s: s.update(salt=2**70)),
    "salt a string": edit_state(lambda s: s.update(salt="x")),
    "checksum missing": edit_state(lambda s: s.pop("arrays_sha256")),
    "checksum not hex": edit_state(lambda s: s.update(arrays_sha256="../../etc")),
    "config a list": edit_state(lambda s: s.update(config=[1])),
    "phase a number": edit_state(lambda s: s.update(phase=3)),
    "state a folder": lambda m: (os.remove(newest(m) / "state.json"), os.mkdir(newest(m) / "state.json")),
    "arrays flipped": lambda m: (newest(m) / "arrays.npz").write_bytes(b"PK" + bytes(300)),
    "arrays truncated": replace_arrays(truncated),
    "arrays not a zip": replace_arrays(b"hello"),
    "arrays empty": replace_arrays(b""),
    "arrays pickled object": replace_arrays(good_but("opt/m", np.array([Exploit()], dtype=object))),
    "arrays of strings": replace_arrays(good_but("opt/m", np.array(["a", "b", "c", "d"]))),
    "arrays complex": replace_arrays(good_but("opt/m", np.zeros(4, np.complex64))),
    "weights NaN": replace_arrays(good_but("model/decoder/bias", np.array([0, np.nan, 0, 0], np.float32))),
    "weights infinite": replace_arrays(good_but("model/encoder/kernel", np.full((3, 3), np.inf, np.float32))),
    "weights wrong shape": replace_arrays(good_but("model/encoder/kernel", np.zeros((5, 5), np.float32))),
    "weights missing": replace_arrays(npz(**{"opt/m": np.zeros(4, np.float32)})),
    "arrays a folder": lambda m: (os.remove(newest(m) / "arrays.npz"), os.mkdir(newest(m) / "arrays.npz")),
}

# Each tampers with the pointer or the folder layout; loading takes the newest real checkpoint.
def _latest(raw: bytes) -> Callable[[Path], None]:
    return lambda model_dir: (model_dir / "checkpoints" / "LATEST").write_bytes(raw)


def _linked_checkpoint(model_dir: Path) -> None:
    outside = model_dir.parent / "elsewhere"
    shutil.copytree(newest(model_dir), outside / "step-00000099")
    os.symlink(outside / "step-00000099", model_dir / "checkpoints" / "step-00000099")
    (model_dir / "checkpoints" / "LATEST").write_text("step-00000099\n")


POINTER: dict[str, Callable[[Path], None]] = {
    "latest outside": _latest(b"../../../etc/passwd\n"),
    "latest a missing step": _latest(b"step-00000099\n"),
    "latest binary": _latest(os.urandom(64) + b"\x00" * 10_000),
    "latest a folder": lambda m: (os.remove(m / "checkpoints" / "LATEST"), os.mkdir(m / "checkpoints" / "LATEST")),
    "checkpoint linked from outside": _linked_checkpoint,
}


@pytest.mark.parametrize("case", sorted(FALLS_BACK))
def test_a_tampered_newest_checkpoint_falls_back_to_the_previous(model_dir, case):
    FALLS_BACK[case](model_dir)
    loaded = load_checkpoint(model_dir, expected=SHAPES)
    assert loaded.step == 10
    assert all(np.isfinite(array).all() for array in loaded.arrays.values())
    assert not Path("/tmp/facesmith-tamper-ran").exists()


@pytest.mark.parametrize("case", sorted(POINTER))
def test_a_tampered_pointer_or_layout_loads_the_newest_real_checkpoint(model_dir, case):
    POINTER[case](model_dir)
    assert load_checkpoint(model_dir, expected=SHAPES).step == 20


@pytest.mark.parametrize("case", ["weights NaN", "state a list", "arrays pickled object"])
def test_when_every_checkpoint_is_tampered_it_is_one_clear_error(model_dir, case):
    FALLS_BACK[case](model_dir)
    shutil.rmtree(model_dir / "checkpoints" / "step-00000010")
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(model_dir, expected=SHAPES)
    assert "no loadable checkpoint" in str(caught.value)


MODEL_FILES: dict[str, bytes] = {
    "not json": b"{oops",
    "a list": b"[]",
    "requested missing": json.dumps({"structure": {}}).encode(),
    "structure a string": json.dumps({"requested": {}, "structure": "liae"}).encode(),
    "dst a number": json.dumps({"requested": {}, "structure": {}, "dst": 3}).encode(),
    "nested deep": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("case", sorted(MODEL_FILES))
def test_a_tampered_model_file_is_one_clear_error(model_dir, case):
    (model_dir / "model.json").write_bytes(MODEL_FILES[case])
    with pytest.raises(ModelFolderError) as caught:
        read_model_file(model_dir / "model.json")
    assert "\n" not in str(caught.value) and "model" in str(caught.value)


def test_train_status_and_merge_on_a_tampered_model_file_are_one_line(model_dir, tmp_path):
    from tests.cli.helpers import assert_one_line_error, invoke

    (model_dir / "model.json").write_text(json.dumps({"requested": {}, "structure": "liae"}))
    (model_dir / "history.duckdb").write_bytes(b"")  # status needs one to get as far as model.json
    assert "'structure' is missing or not an object" in assert_one_line_error(
        invoke("train", "status", "--model-dir", model_dir))
    frames = tmp_path / "frames"
    frames.mkdir()
    assert "'structure'" in assert_one_line_error(
        invoke("merge", "run", "--model-dir", model_dir, "--frames", frames, "--out", tmp_path / "out"))


def test_resuming_a_model_whose_newest_weights_are_nan_uses_the_previous_checkpoint(tmp_path, tiny_model):
    from train.checkpoint import list_checkpoints
    from train.loop import close_session, open_session

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model, model_dir)
    steps = list_checkpoints(model_dir)
    assert len(steps) >= 2, steps
    folder = model_dir / "checkpoints" / f"step-{steps[0]:08d}"
    with np.load(folder / "arrays.npz") as archive:
        poisoned = {name: archive[name] for name in archive.files}
    name = next(key for key in poisoned if key.startswith("model/") and poisoned[key].dtype.kind == "f")
    poisoned[name] = np.full_like(poisoned[name], np.nan)
    buffer = io.BytesIO()
    np.savez(buffer, **poisoned)
    (folder / "arrays.npz").write_bytes(buffer.getvalue())
    state = json.loads((folder / "state.json").read_text())
    state["arrays_sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    (folder / "state.json").write_text(json.dumps(state))
    session = open_session(model_dir, {})
    try:
        assert session.iteration == steps[1]
        assert all(np.isfinite(array).all() for array in session.trainer.state_arrays().values())
    finally:
        close_session(session)


def test_errors_are_facesmith_errors():
    assert issubclass(ModelFolderError, FacesmithError) and issubclass(CheckpointError, FacesmithError)
