"""Atomic file writes: a reader (or a killed run) sees the old file or the new one, never half."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

# '.<target name>.<pid>.<random>.tmp': the writer's process id lets a later run tell the leftovers of
# a killed writer (whose process is gone) from the live temporaries of one still writing.
_TEMPORARY = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$")


def temporary_path(path: Path) -> Path:
    """A fresh name beside `path` for write_atomically's temporary file (see _TEMPORARY)."""
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def create_exclusive(path: Path) -> int:
    """Open a new file for writing, failing if it exists; its mode is 0666 less the umask.

    tempfile.mkstemp creates files 0600 whatever the umask, and a rename keeps that mode, so every
    crop, report and frame written through it was private to its owner; os.open with 0o666 lets
    the kernel apply the user's umask, as for any file a program creates.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    return os.open(path, flags, 0o666)


def write_atomically(path: Path, data: bytes | str, durable: bool = False) -> Path:
    """Write `data` to a unique temporary file beside `path`, then rename it over `path`.

    The temporary name is unique, so threads or processes writing the same target never share
    one. `durable` also flushes the bytes to disk before the rename, for files that cannot be
    made again (checkpoints); crops and reports can be regenerated and skip that cost. The file
    gets the permissions the umask gives a new file. OSError (disk full, read-only folder, no
    permission) propagates; `curate.environment` words it for people.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    while True:
        temporary = temporary_path(path)
        try:
            descriptor = create_exclusive(temporary)
            break
        except FileExistsError:  # 32 random bits collided: draw again
            continue
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return True
    return True


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporary files that killed writers left in `folder`; returns how many.

    Only files named as write_atomically names them, whose writing process no longer runs: the
    temporaries of a writer still at work (this process included) are left alone.
    """
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        match = _TEMPORARY.match(name)
        if match is None or _process_alive(int(match.group(1))):
            continue
        try:
            os.unlink(Path(folder) / name)
            removed += 1
        except FileNotFoundError:
            continue
    return removed
