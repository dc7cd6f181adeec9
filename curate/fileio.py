"""Atomic file writes: a reader (or a killed run) sees the old file or the new one, never half."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, data: bytes | str, durable: bool = False) -> Path:
    """Write `data` to a unique temporary file beside `path`, then rename it over `path`.

    The temporary name is unique, so threads or processes writing the same target never share
    one. `durable` also flushes the bytes to disk before the rename, for files that cannot be
    made again (checkpoints); crops and reports can be regenerated and skip that cost.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
