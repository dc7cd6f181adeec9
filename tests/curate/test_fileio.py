"""Atomic writes keep the user's umask, and a later run removes only a dead writer's temporaries."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from curate.fileio import remove_stale_temporaries, temporary_path, write_atomically


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_written_files_follow_the_umask(tmp_path: Path, umask_022) -> None:
    target = write_atomically(tmp_path / "report.html", "<p>hello</p>")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    os.umask(0o077)
    private = write_atomically(tmp_path / "private.json", b"{}", durable=True)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_a_killed_writers_temporary_is_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    # A real process that ended: its pid names a temporary nobody will finish.
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True)
    dead_pid = int(child.stdout)
    dead = tmp_path / f".frame_0001.png.{dead_pid}.0123abcd.tmp"
    dead.write_bytes(b"half a frame")
    live = temporary_path(tmp_path / "frame_0002.png")  # this process: still writing
    live.write_bytes(b"being written")
    unrelated = tmp_path / ".notes.tmp"
    unrelated.write_bytes(b"not ours")
    assert remove_stale_temporaries(tmp_path) == 1
    assert not dead.exists() and live.exists() and unrelated.exists()
