"""A person's decisions on faces: appended to the faceset's `decisions` table, listed, moved to another faceset.

Decisions never delete or move a file: they are rows (who, when, what, why), append-only, and the
latest per face wins (curate.faceset.fold_decisions). Every stage honours them through
curate.faceset.FacesetReader. A decision names its face by face_id and also by the image's content
hash and the face's index in it, so a decision file exported from one faceset applies to another
faceset holding the same images under other names.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from curate.environment import guarded_transaction
from curate.errors import FacesmithError, StoreError
from curate.faceset import DECISION_ACTIONS, DECISION_COLUMNS, LABEL_VALUES, DecisionRow, FacesetReader
from curate.fileio import write_atomically
from curate.store import FacesetStore


class DecisionError(FacesmithError):
    """A decision that cannot be recorded: unknown face, action or value."""


@dataclass(frozen=True)
class Decision:
    """One decision to record, before it has an id and a time."""

    face_id: str
    action: str  # one of DECISION_ACTIONS
    value: str | None = None  # label: main | other-person | None; tag/untag: the tag; keeper: None or 'off'
    why: str | None = None

    def __post_init__(self) -> None:
        if self.action not in DECISION_ACTIONS:
            raise DecisionError(f"unknown decision {self.action!r}: use one of {', '.join(DECISION_ACTIONS)}")
        if self.action == "label" and self.value is not None and self.value not in LABEL_VALUES:
            raise DecisionError(f"a face is labelled {' or '.join(LABEL_VALUES)} (or no value for automatic), "
                                f"not {self.value!r}")
        if self.action in ("tag", "untag") and not (self.value or "").strip():
            raise DecisionError(f"{self.action} needs the tag's text")
        if self.action == "keeper" and self.value not in (None, "off"):
            raise DecisionError("keeper takes no value (or 'off' to undo it)")


def default_who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a container
        return "unknown"


def record_decisions(database: Path, decisions: Sequence[Decision], who: str | None = None) -> list[DecisionRow]:
    """Append `decisions` (in order) to the faceset at `database` in one transaction; return the rows."""
    if not decisions:
        return []
    who = who or default_who()
    with FacesetStore(Path(database)) as store:
        connection = store.connection
        face_ids = sorted({decision.face_id for decision in decisions})
        known = {face_id: (digest, index) for face_id, digest, index in connection.execute(
            "SELECT f.face_id, i.content_hash, f.face_index FROM faces f JOIN images i USING (image_id) "
            "WHERE list_contains(?, f.face_id)", [face_ids]).fetchall()}
        unknown = [face_id for face_id in face_ids if face_id not in known]
        if unknown:
            raise DecisionError(f"no face {unknown[0]} in {database}"
                                + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
        now = datetime.now(timezone.utc)
        try:
            with guarded_transaction(connection):
                first = int(connection.execute(
                    "SELECT coalesce(max(decision_id), 0) + 1 FROM decisions").fetchone()[0])
                rows = [DecisionRow(first + n, d.face_id, known[d.face_id][0], known[d.face_id][1], d.action,
                                    d.value, who, now, d.why) for n, d in enumerate(decisions)]
                connection.executemany(
                    f"INSERT INTO decisions ({', '.join(DECISION_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(DECISION_COLUMNS))})",
                    [row.to_row() for row in rows])
        except BaseException as error:
            if isinstance(error, Exception) and not isinstance(error, FacesmithError):
                raise StoreError(f"cannot record decisions in {database}: {error}") from error
            raise
    return rows


def list_decisions(database: Path) -> list[DecisionRow]:
    """Every decision of the faceset at `database`, oldest first."""
    with FacesetReader(database) as reader:
        return reader.decision_log()


def export_decisions(database: Path, out: Path) -> int:
    """Write every decision to a JSON file that `apply_decisions` reads; returns how many."""
    rows = list_decisions(database)
    document = {"tool": "facesmith", "kind": "decisions", "decisions": [row.to_dict() for row in rows]}
    write_atomically(Path(out), json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return len(rows)


@dataclass(frozen=True)
class ApplySummary:
    read: int  # decisions in the file
    applied: int  # recorded in the target faceset
    unmatched: int  # no face with that image content and index in the target

    def to_dict(self) -> dict:
        return {"read": self.read, "applied": self.applied, "unmatched": self.unmatched}


def apply_decisions(source: Path, database: Path, who: str | None = None) -> ApplySummary:
    """Record the decisions of an exported file in the faceset at `database`, matching each face by
    its image's content hash and its index in the image (face ids differ between facesets)."""
    try:
        document = json.loads(Path(source).read_text(encoding="utf-8"))
        entries = document["decisions"] if document.get("kind") == "decisions" else None
    except (OSError, ValueError, AttributeError, KeyError) as error:
        raise DecisionError(f"{source} is not a facesmith decisions file: {error}") from error
    if not isinstance(entries, list):
        raise DecisionError(f"{source} is not a facesmith decisions file")
    with FacesetReader(database) as reader:
        by_content = {(digest, int(index)): face_id for face_id, digest, index in reader.connection.execute(
            "SELECT f.face_id, i.content_hash, f.face_index FROM faces f JOIN images i USING (image_id)").fetchall()}
    decisions, unmatched = [], 0
    for entry in entries:
        if not isinstance(entry, dict):
            raise DecisionError(f"{source}: a decision must be an object, got {entry!r:.60}")
        face_id = by_content.get((entry.get("content_hash"), entry.get("face_index")))
        if face_id is None:
            unmatched += 1
            continue
        why = entry.get("why")
        origin = f"applied from {Path(source).name} (decided by {entry.get('who')} at {entry.get('decided_at')})"
        decisions.append(Decision(face_id, str(entry.get("action")), entry.get("value"),
                                  f"{why}; {origin}" if why else origin))
    record_decisions(database, decisions, who)
    return ApplySummary(len(entries), len(decisions), unmatched)
