"""Checkpoints: atomic folders, a LATEST pointer, rotation, checksums, and no pickle on load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from train.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)


def _arrays(value: float) -> dict[str, np.ndarray]:
    return {"model/encoder/kernel": np.full((3, 3), value, np.float32), "opt/m": np.arange(4.0) * value}


def test_save_load_round_trip(tmp_path):
    save_checkpoint(tmp_path, 10, _arrays(1.5), {"salt": 2}, keep=3)
    loaded = load_checkpoint(tmp_path)
    assert loaded.step == 10 and loaded.state["salt"] == 2 and loaded.state["schema_version"] == 1
    np.testing.assert_array_equal(loaded.arrays["opt/m"], np.arange(4.0) * 1.5)


def test_rotation_keeps_the_newest_and_pinned(tmp_path):
    for step in (1, 2, 3, 4, 5):
        save_checkpoint(tmp_path, step, _arrays(step), {}, keep=2, pinned=frozenset({1}))
    assert list_checkpoints(tmp_path) == [5, 4, 1]
    assert load_checkpoint(tmp_path).step == 5
    assert load_checkpoint(tmp_path, step=1).arrays["model/encoder/kernel"][0, 0] == 1


def test_corrupt_newest_falls_back_to_the_previous(tmp_path):
    save_checkpoint(tmp_path, 1, _arrays(1), {}, keep=5)
    newest = save_checkpoint(tmp_path, 2, _arrays(2), {}, keep=5)
    data = bytearray((newest / "arrays.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (newest / "arrays.npz").write_bytes(bytes(data))
    assert load_checkpoint(tmp_path).step == 1


def test_partial_folder_from_a_killed_writer_is_ignored_and_cleaned(tmp_path):
    save_checkpoint(tmp_path, 1, _arrays(1), {}, keep=5)
    partial = tmp_path / "checkpoints" / ".step-00000002.partial-999"
    partial.mkdir()
    (partial / "arrays.npz").write_bytes(b"\x00" * 10)
    assert list_checkpoints(tmp_path) == [1]
    save_checkpoint(tmp_path, 3, _arrays(3), {}, keep=5)
    assert not partial.exists()


def test_pickled_arrays_are_refused_not_executed(tmp_path):
    folder = save_checkpoint(tmp_path, 1, _arrays(1), {}, keep=5)
    marker = tmp_path / "executed"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    # An attacker's archive: an object array (pickled) with a matching checksum in state.json.
    import hashlib
    import io
    buffer = io.BytesIO()
    np.savez(buffer, payload=np.array([Exploit()], dtype=object))
    (folder / "arrays.npz").write_bytes(buffer.getvalue())
    state = json.loads((folder / "state.json").read_text())
    state["arrays_sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    (folder / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path)
    assert not marker.exists()


def test_newer_schema_is_a_clear_error(tmp_path):
    folder = save_checkpoint(tmp_path, 1, _arrays(1), {}, keep=5)
    state = json.loads((folder / "state.json").read_text())
    state["schema_version"] = 99
    (folder / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="newer facesmith"):
        load_checkpoint(tmp_path)


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no loadable checkpoint"):
        load_checkpoint(tmp_path)
