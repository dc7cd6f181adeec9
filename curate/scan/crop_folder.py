"""One faceset per aligned-crop folder: a marker file names the owner, and any other faceset is refused.

Crops are named by face id, which comes from the image's path relative to the scanned folder, so
two facesets sharing a crop folder (`faces.duckdb` and `faces.db` both default to `faces_aligned/`)
write the same names for the same relative paths: the second scan silently replaced the first
faceset's crops, and a row of one person pointed at another's face. Scans also delete crops they
no longer need, which in a shared folder are someone else's.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from curate.environment import environment_errors
from curate.errors import StoreError
from curate.fileio import write_atomically

MARKER = ".facesmith-faceset"  # hidden: never scanned, never taken for a crop


def _faceset_id(store: Any) -> str:
    """The faceset's own id, made on its first scan and kept in its meta table (moves with the file)."""
    stored = store.meta("faceset_id")
    if stored is None:
        stored = uuid.uuid4().hex
        store.require_meta("faceset_id", stored, "faceset id")
    return stored


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise StoreError(f"{path} is not a facesmith crop-folder marker ({error}): remove it if the "
                         "folder holds no other faceset's crops") from error
    return document if isinstance(document, dict) else {}


def claim_crop_folder(aligned_dir: Path, store: Any, database: Path, has_faces: bool) -> None:
    """Make sure `aligned_dir` holds this faceset's crops only; mark it on first use.

    A folder without a marker is claimed when it holds no crops yet, or when this faceset already
    has rows (a faceset made before markers existed). A folder marked for another faceset, or
    holding crops while this faceset has none, is refused with a StoreError.
    """
    marker_path = Path(aligned_dir) / MARKER
    owner = _faceset_id(store)
    marker = _read_marker(marker_path)
    if marker is not None:
        if marker.get("faceset_id") == owner:
            return
        raise StoreError(
            f"{aligned_dir} holds the aligned crops of another faceset ({marker.get('database', 'unknown')}); "
            f"crops of two facesets would overwrite each other: give {database} its own folder with "
            "--aligned, or another --db name"
        )
    holds_crops = any(path.suffix.lower() == ".jpg" for path in Path(aligned_dir).iterdir())
    if holds_crops and not has_faces:
        raise StoreError(
            f"{aligned_dir} already holds aligned crops that are not {database}'s; crops of two facesets "
            "would overwrite each other: give it its own folder with --aligned, or another --db name"
        )
    document = {"faceset_id": owner, "database": str(Path(database).resolve())}
    with environment_errors("mark the aligned crop folder", aligned_dir):
        write_atomically(marker_path, json.dumps(document, indent=1) + "\n")
