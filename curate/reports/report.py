"""The numbers behind every faceset report, read from the database (never recomputed scores)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np

from curate.faceset import FacesetReader, table_exists
from curate.training_loss import DEFAULT_HARDEST, HARD_RATIO, HardestFaces, hardest_faces

if TYPE_CHECKING:
    from curate.analysis.coverage import CoverageSettings

HISTOGRAM_MEASURES = ("sharpness", "brightness", "contrast", "face_size", "yaw", "pitch")


@dataclass(frozen=True)
class Histogram:
    measure: str
    edges: list[float]  # len(counts) + 1 bin edges
    counts: list[int]
    median: float | None


@dataclass(frozen=True)
class Report:
    """Everything a report shows; `to_dict()` is the --format json document."""

    database: str
    role: str  # src or dst
    counts: dict[str, int]  # images, faces, … and trainable (eligible), selected, decided_by_hand
    rejects_by_reason: dict[str, int]
    verdicts: dict[str, dict[str, int]]  # measure -> {ok, warn, bad}
    duplicates: dict[str, Any]
    identities: dict[str, Any]
    selection: dict[str, Any]
    coverage: dict[str, Any]  # the faces that can train (src: main identity, no duplicate, no bad verdict)
    advice: list[str]
    histograms: list[Histogram]
    analyses: dict[str, dict[str, Any]]  # kind -> when, faces then, parameters
    stale: list[str] = field(default_factory=list)  # analyses older than the newest scan
    coverage_all: dict[str, Any] = field(default_factory=dict)  # every face, for context
    warnings: list[str] = field(default_factory=list)  # the latest selection's warnings
    decisions: dict[str, int] = field(default_factory=dict)  # faces per standing hand decision
    # with --model-dir: the faces the model learns worst (curate.training_loss.HardestFaces.to_dict())
    training_loss: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rows(connection: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[tuple]:
    return connection.execute(sql, params or []).fetchall()


def _histogram(measure: str, values: np.ndarray, bins: int = 20) -> Histogram:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Histogram(measure, [], [], None)
    if measure in ("sharpness", "face_size"):  # span decades: bin on a log scale
        positive = finite[finite > 0]
        if positive.size == 0:
            return Histogram(measure, [], [], None)
        edges = np.geomspace(positive.min(), positive.max() * 1.0001, bins + 1)
        counts, _ = np.histogram(positive, edges)
    else:
        counts, edges = np.histogram(finite, bins)
    return Histogram(measure, [float(e) for e in edges], [int(c) for c in counts], float(np.median(finite)))


def _as_utc(moment: datetime) -> datetime:
    # TIMESTAMPTZ values come back in the session's time zone; a naive one is taken as UTC.
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def stale_kinds(analysed_at: Mapping[str, datetime], newest_scan: datetime | None) -> list[str]:
    """The analyses that ran before the newest finished scan, compared as instants: ISO strings
    order wrongly across UTC offsets (a daylight-saving change, another machine's zone)."""
    if newest_scan is None:
        return []
    scanned = _as_utc(newest_scan)
    return [kind for kind, when in analysed_at.items() if _as_utc(when) < scanned]


def build_report(database: Path, coverage_settings: "CoverageSettings | None" = None,
                 model_dir: Path | None = None, hardest: int = DEFAULT_HARDEST) -> Report:
    """Read a faceset and summarise it: counts, rejects, quality, duplicates, identities, coverage.

    Coverage and advice count the faces that can train (curate.faceset.FacesetReader: for a src
    faceset the main identity's faces that are no dropped duplicate and have no bad verdict; for a
    dst faceset every face); the whole set's grid is beside it for context. With `model_dir` (a
    model trained on this faceset), the `hardest` faces it learns worst, with their verdicts."""
    from curate.analysis.coverage import CoverageSettings, advice, coverage

    coverage_settings = coverage_settings or CoverageSettings()
    with FacesetReader(database) as reader:
        connection = reader.connection
        role = reader.role
        counts = dict(zip(
            ["images", "images_ok", "images_rejected", "images_without_faces", "faces"],
            _rows(connection, """SELECT count(*), count(*) FILTER (status = 'ok'),
                                        count(*) FILTER (status = 'rejected'),
                                        count(*) FILTER (status = 'ok' AND face_count = 0),
                                        (SELECT count(*) FROM faces) FROM images""")[0],
        ))
        rejects = dict(_rows(connection, """SELECT reject_reason, count(*) FROM images
                                            WHERE status = 'rejected' GROUP BY 1 ORDER BY 2 DESC, 1"""))
        verdicts: dict[str, dict[str, int]] = {}
        for measure, verdict, number in _rows(connection, "SELECT measure, verdict, count(*) FROM face_checks GROUP BY ALL ORDER BY ALL"):
            verdicts.setdefault(measure, {"ok": 0, "warn": 0, "bad": 0})[verdict] = number
        analyses, analysed_at = {}, {}
        if table_exists(connection, "analyses"):
            for kind, when, faces, parameters in _rows(connection, "SELECT kind, analysed_at, faces, parameters FROM analyses"):
                analyses[kind] = {"analysed_at": when.isoformat(), "faces": faces, "parameters": parameters}
                analysed_at[kind] = when
        newest_scan = _rows(connection, "SELECT max(finished_at) FROM runs WHERE status = 'done'")[0][0]
        stale = stale_kinds(analysed_at, newest_scan)
        duplicates = _duplicates_summary(connection) if "duplicates" in analyses else {}
        identities = _identities_summary(connection) if "identities" in analyses else {}
        selection = _selection_summary(connection) if "selection" in analyses else {}
        table = reader.faces()
        eligible = reader.statuses(use_selection=False)
        decisions = reader.decisions()
        selected = len(reader.selected())
    trainable = np.array([status.trains for status in eligible], bool)
    counts["trainable"] = int(trainable.sum())
    counts["selected"] = selected
    counts["decided_by_hand"] = sum(1 for decided in decisions.values() if decided.any)
    grid = coverage(table, coverage_settings, include=trainable)
    whole = coverage(table, coverage_settings)
    histograms = [_histogram(name, getattr(table, name)) for name in HISTOGRAM_MEASURES]
    warnings = list(json.loads(analyses["selection"]["parameters"]).get("warnings", [])) \
        if "selection" in analyses and analyses["selection"]["parameters"] else []
    who = "faces of the main identity that can train" if role == "src" else "dst faces (all of them train)"
    context = f"{who}: {counts['trainable']} of {counts['faces']}"
    if selected:
        context += f", {selected} selected"
    lines = advice(grid)
    if role == "src" and counts["trainable"] < counts["faces"]:
        lines = [context + "; the advice below counts these faces only", *lines]
    training_loss = hardest_faces(model_dir, database, hardest) if model_dir is not None else None
    if training_loss is not None:
        lines.extend(training_loss_advice(training_loss))
    return Report(
        database=str(database), role=role, counts=counts, rejects_by_reason=rejects, verdicts=verdicts,
        duplicates=duplicates, identities=identities, selection=selection,
        coverage=grid.to_dict(), advice=lines, histograms=histograms,
        analyses=analyses, stale=stale, coverage_all=whole.to_dict(), warnings=warnings,
        decisions=_decision_counts(decisions),
        training_loss=training_loss.to_dict() if training_loss is not None else {},
    )


def training_loss_advice(hardest: HardestFaces, ratio: float = HARD_RATIO) -> list[str]:
    """One line about the faces the model learns worst, for the advice list."""
    if hardest.iteration is None:
        return [f"{hardest.model_dir} has no per-face training loss yet: it is stored with each checkpoint"]
    hard = [face for face in hardest.faces if face.trains and face.ratio is not None and face.ratio >= ratio]
    if not hard:
        return []
    flagged = sum(1 for face in hard if face.bad or face.status or (face.identity or "main").split()[0] != "main")
    return [f"{len(hard)} {hardest.side} face(s) still train with a loss at least {ratio:g}x the median at "
            f"iteration {hardest.iteration} ({flagged} of them with a bad verdict or another identity): look at "
            f"them ('curate review --model-dir'); exclude them there, or with 'train run --exclude-hardest K'"]


def _decision_counts(decisions: Mapping[str, Any]) -> dict[str, int]:
    """Faces per standing hand decision: excluded, included, labelled, keeper, tagged."""
    counts = {"excluded": 0, "included": 0, "labelled": 0, "keeper": 0, "tagged": 0}
    for decided in decisions.values():
        if decided.inclusion == "exclude":
            counts["excluded"] += 1
        elif decided.inclusion == "include":
            counts["included"] += 1
        counts["labelled"] += decided.label is not None
        counts["keeper"] += decided.keeper
        counts["tagged"] += bool(decided.tags)
    return counts


def _duplicates_summary(connection: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    by_kind = dict(_rows(connection, "SELECT kind, count(*) FILTER (NOT keep) FROM duplicates GROUP BY 1 ORDER BY 1"))
    groups = _rows(connection, """
        SELECT group_id, any_value(kind) FILTER (keep) AS kind, count(*) AS members,
               list(face_id ORDER BY keep DESC, face_id) AS faces
        FROM duplicates GROUP BY group_id ORDER BY members DESC, group_id""")
    return {
        "groups": len(groups),
        "faces_to_drop": int(sum(by_kind.values())),
        "by_kind": by_kind,
        "largest_groups": [{"kept": g, "kind": k, "members": m, "faces": f} for g, k, m, f in groups[:20]],
    }


def _identities_summary(connection: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    labels = dict(_rows(connection, "SELECT label, count(*) FROM identities GROUP BY 1 ORDER BY 1"))
    flagged = _rows(connection, """SELECT face_id, label, round(distance, 3), reason FROM identities
                                   WHERE label <> 'main' ORDER BY distance DESC, face_id LIMIT 50""")
    clusters = _rows(connection, "SELECT count(DISTINCT cluster) FILTER (cluster >= 0) FROM identities")[0][0]
    return {"labels": labels, "clusters": clusters,
            "flagged": [{"face_id": f, "label": l, "distance": d, "reason": r} for f, l, d, r in flagged]}


def _selection_summary(connection: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    from collections import Counter

    from curate.analysis.selection import reason_category

    rows = _rows(connection, "SELECT selected, reason FROM selection")
    excluded = Counter(reason_category(reason) for selected, reason in rows if not selected)
    return {"selected": sum(1 for selected, _ in rows if selected), "faces": len(rows),
            "excluded_by_reason": dict(sorted(excluded.items(), key=lambda item: (-item[1], item[0])))}
