"""Environment failures (disk full, read-only folder, no permission) as one-line errors that say what to do.

A failure of the machine is not a verdict on the user's data: a crop that cannot be written must
stop the run (and leave the photo to be done again), never mark the photo bad. Every stage turns
such OSErrors and database I/O errors into an EnvironmentFailure here, so the message names the
path, the cause and the remedy once, in the same words everywhere. The DuckDB connection helpers
every store shares live here too: waiting out another process's lock, and a guarded transaction.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from curate.errors import FacesmithError

logger = logging.getLogger(__name__)

# errno -> (cause, what to do). The remedies say "then run it again" because every writer here
# resumes: scans skip what they committed, training resumes from its checkpoint.
_REMEDIES: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device", "free space on that disk (or write elsewhere), then run it again"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota (or write elsewhere), then run it again"),
    errno.EFBIG: ("file size limit reached", "raise the file size limit (ulimit -f) or write elsewhere, then run it again"),
    errno.EROFS: ("the file system is read-only", "choose a writable folder (or remount it read-write), then run it again"),
    errno.EACCES: ("permission denied", "make the folder writable for you (or choose another), then run it again"),
    errno.EPERM: ("operation not permitted", "make the folder writable for you (or choose another), then run it again"),
    errno.EIO: ("input/output error", "check the disk (dmesg, fsck), then run it again"),
    errno.EMFILE: ("too many open files", "raise the open-file limit (ulimit -n), then run it again"),
    errno.ENOMEM: ("out of memory", "close other programs or use smaller batches, then run it again"),
}

# DuckDB reports file-system failures as text inside its IOException; these phrases map back to errno.
_DATABASE_PHRASES: tuple[tuple[str, int], ...] = (
    ("no space left on device", errno.ENOSPC),
    ("disk quota exceeded", errno.EDQUOT),
    ("file too large", errno.EFBIG),
    ("read-only file system", errno.EROFS),
    ("permission denied", errno.EACCES),
    ("input/output error", errno.EIO),
    ("too many open files", errno.EMFILE),
)


class EnvironmentFailure(FacesmithError):
    """The machine, not the data, stopped the work: a full disk, a read-only folder, no permission.

    `errno` is the operating system's code when known. Work already committed stays; the message
    says what to do before running again.
    """

    def __init__(self, message: str, error_number: int | None = None) -> None:
        super().__init__(message)
        self.errno = error_number


def is_environment_error(error: BaseException) -> bool:
    """Whether `error` is a failure of the machine (see _REMEDIES) rather than of one input file."""
    if isinstance(error, EnvironmentFailure):
        return True
    if isinstance(error, OSError):
        return error.errno in _REMEDIES
    return _database_errno(error) is not None


def _database_errno(error: BaseException) -> int | None:
    try:
        import duckdb
    except ImportError:  # pragma: no cover - duckdb is a dependency
        return None
    if not isinstance(error, duckdb.Error):
        return None
    text = str(error).lower()
    for phrase, number in _DATABASE_PHRASES:
        if phrase in text:
            return number
    if isinstance(error, duckdb.OutOfMemoryException):
        return errno.ENOMEM
    return None


def describe(error: BaseException, action: str, path: Path | str | None = None) -> EnvironmentFailure:
    """One line: "cannot <action> <path>: <cause>; <what to do>"."""
    number = error.errno if isinstance(error, OSError) else _database_errno(error)
    if isinstance(error, EnvironmentFailure):
        return error
    where = path if path is not None else getattr(error, "filename", None)
    cause, remedy = _REMEDIES.get(number, (None, "check the disk and the folder's permissions, then run it again"))
    if cause is None:
        cause = _first_line(getattr(error, "strerror", None) or str(error))
    place = f" {where}" if where else ""
    return EnvironmentFailure(f"cannot {action}{place}: {cause}; {remedy}", number)


@contextmanager
def environment_errors(action: str, path: Path | str | None = None) -> Iterator[None]:
    """Turn OSErrors and DuckDB I/O errors raised inside the block into an EnvironmentFailure."""
    try:
        yield
    except EnvironmentFailure:
        raise
    except OSError as error:
        raise describe(error, action, path) from error
    except Exception as error:
        if _database_errno(error) is None:
            raise
        raise describe(error, action, path) from error


def _first_line(text: str) -> str:
    """The first line of a message, without DuckDB's 'IO Error: ' style prefix."""
    line = str(text).strip().splitlines()[0] if str(text).strip() else "unknown error"
    return re.sub(r"^[A-Za-z ]+Error: ", "", line)


def check_writable_folder(folder: Path, what: str) -> None:
    """Fail early, with the remedy, when `folder` cannot take a new file (read-only, no permission).

    A probe file is created and removed: asking os.access would miss read-only mounts seen by
    root and ACLs.
    """
    from curate.fileio import create_exclusive, temporary_path

    probe = temporary_path(Path(folder) / "write-probe")
    try:
        descriptor = create_exclusive(probe)
    except OSError as error:
        raise describe(error, f"write {what} in", folder) from error
    os.close(descriptor)
    probe.unlink(missing_ok=True)


def is_lock_conflict(error: BaseException) -> bool:
    """Whether a DuckDB error is another process's lock on the file (not a damaged file)."""
    text = str(error).lower()
    return "lock" in text and ("conflicting" in text or "could not set" in text or "held" in text)


def connect_when_free(path: Path | str, read_only: bool, wait: float, config: dict | None = None):
    """duckdb.connect(path), retried for up to `wait` seconds while another process holds the file's
    lock: writers that open the file only for their moment (the trainer's history) and brief readers
    then take turns instead of failing. Other errors, and a lock still held after `wait`, raise."""
    import duckdb

    deadline = time.monotonic() + wait
    pause = 0.02
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=config or {})
        except duckdb.Error as error:
            if not is_lock_conflict(error) or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)


@contextmanager
def guarded_transaction(connection) -> Iterator:
    """BEGIN … COMMIT on a DuckDB connection, rolled back on any error or interruption; the caller
    words the error. BEGIN is inside the guarded block: DuckDB's execute looks for a pending Ctrl-C,
    so the KeyboardInterrupt can come out of the very call that opened the transaction, and one left
    open takes in whatever the connection writes next, to lose it at close (a scan's run then stayed
    'running' after Ctrl-C in 4 of 60 tries)."""
    import duckdb

    try:
        connection.execute("BEGIN TRANSACTION")
        yield connection
        connection.execute("COMMIT")
    except BaseException as error:
        try:
            connection.execute("ROLLBACK")
        except (duckdb.Error, RuntimeError) as rollback_error:
            # After an I/O failure DuckDB may have aborted the transaction itself (or closed the
            # database): the first error is the one that says what happened.
            logger.debug("rollback after %s failed too: %s", type(error).__name__, rollback_error)
        raise


def lock_hint(error: BaseException, writer: str = "a scan, import or analysis",
              remedy: str = "stop it (a scan resumes where it stopped)") -> str:
    """DuckDB's lock conflict, said with what to do: while one process writes a DuckDB file no
    other may open it, not even to read. Other errors: their own text."""
    text = str(error)
    if "lock" not in text.lower():
        return text
    match = re.search(r"PID (\d+)", text)
    holder = f"process {match.group(1)}" if match else "another process"
    return (f"it is being written by {holder}: its lock is held by {writer} until it ends; wait for "
            f"that to finish, or {remedy}, then run this again")
