"""One self-contained HTML page for a faceset: numbers, plots and contact sheets, no external files."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from dataclasses import dataclass

from curate.faceset import FacesetReader, table_exists
from curate.fileio import write_atomically
from curate.reports.report import Report
from curate.reports.svg_plots import band_text, heatmap, histogram, scatter

THUMBNAIL = 96

_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#1a202c;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #cbd5e0}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #cbd5e0;padding:3px 8px;font-size:13px;text-align:left}
.plots{display:flex;flex-wrap:wrap;gap:12px}.sheet{display:flex;flex-wrap:wrap;gap:6px;margin:6px 0 14px}
figure{margin:0;width:%dpx}figure img{width:%dpx;height:%dpx;display:block}
figcaption{font-size:10px;word-break:break-all}figcaption b{display:block;font-weight:600}
.kept img{outline:3px solid #2f855a}.advice li{margin:4px 0}.stale{background:#fefcbf;padding:8px}
.files{columns:3 280px;font-size:12px;margin:6px 0 14px;padding-left:18px}.note{color:#5a6578;font-size:12px}
""" % (THUMBNAIL, THUMBNAIL, THUMBNAIL)


def html_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain HTML table; every header and cell is escaped text."""
    head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


_table = html_table


class _Thumbnails:
    """Aligned crops as small inline JPEGs, read once per face, captioned with their file name."""

    def __init__(self, database: Path, aligned_paths: dict[str, str], names: dict[str, str]) -> None:
        self.folder = Path(database).parent
        self.aligned_paths = aligned_paths
        self.names = names  # face_id -> 'path #face_index'
        self.cache: dict[str, str | None] = {}

    def data_uri(self, face_id: str) -> str | None:
        if face_id not in self.cache:
            path = self.aligned_paths.get(face_id)
            image = cv2.imread(str(self.folder / path)) if path else None
            if image is None:
                self.cache[face_id] = None
            else:
                small = cv2.resize(image, (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_AREA)
                ok, encoded = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 85])
                self.cache[face_id] = "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode() if ok else None
        return self.cache[face_id]

    def sheet(self, items: Iterable[tuple[str, str, bool]]) -> str:
        """(face_id, caption, highlighted) -> a row of thumbnails, each captioned with its file
        name and face index, then the caption (missing crops skipped)."""
        figures = []
        for face_id, caption, highlighted in items:
            uri = self.data_uri(face_id)
            if uri is None:
                continue
            css = ' class="kept"' if highlighted else ""
            name = self.names.get(face_id, face_id)
            figures.append(f'<figure{css} title="{escape(name)} ({escape(face_id)})"><img src="{uri}" alt="{escape(name)}">'
                           f"<figcaption><b>{escape(name)}</b>{escape(caption)}</figcaption></figure>")
        return f'<div class="sheet">{"".join(figures)}</div>' if figures else "<p>none</p>"


def _advice(side: str | None) -> str:
    if side == "dst":
        return ("A dst face the model cannot learn is a frame that will merge badly; excluding it (in 'facesmith "
                "curate review --model-dir') only stops training on it.")
    return ("Misaligned, occluded or other people's faces usually lead this list: exclude them in 'facesmith "
            "curate review --model-dir', or with 'facesmith train run --exclude-hardest K'.")


def hardest_faces_html(training_loss: dict[str, Any], element_id: str = "training-loss") -> str:
    """The faces a model learns worst (a HardestFaces document, curate.training_loss) as a contact
    sheet, each captioned with its loss and verdicts, and a table of the same; '' when there is none."""
    if not training_loss:
        return ""
    side, model = training_loss.get("side"), training_loss.get("model_dir")
    if training_loss.get("iteration") is None:
        return (f'<section id="{element_id}" class="training-loss"><h2>Training loss per face</h2><p>{escape(str(model))} has no '
                "per-face training loss yet: it is stored with each checkpoint.</p></section>")
    faces = training_loss["faces"]
    thumbnails = _Thumbnails(Path(training_loss["database"]), {f["face_id"]: f["aligned_path"] for f in faces},
                             {f["face_id"]: f"{f['path']} #{f['face_index']}" for f in faces})

    def caption(face: dict) -> str:
        ratio = "" if face["ratio"] is None else f" ({face['ratio']:.2f}x median)"
        trains = "trains" if face["trains"] else f"does not train: {face['status']}"
        return f"#{face['rank']} loss {face['loss']:.3f}{ratio}; {face['verdicts']}; {trains}"

    rows = [(f["rank"], f["face_id"], f"{f['path']} #{f['face_index']}", f"{f['loss']:.4f}",
             "-" if f["ratio"] is None else f"{f['ratio']:.2f}", f["seen"], "yes" if f["trains"] else "no",
             f["verdicts"], f["identity"] or "-", f["status"] or "-") for f in faces]
    return (f'<section id="{element_id}" class="training-loss"><h2>Faces the model learns worst ({escape(str(side))})</h2>'
            f'<p class="note">Running training loss per face (a moving average over the batches each face was in) '
            f"at iteration {training_loss['iteration']} of {escape(str(model))}; median "
            f"{training_loss['median']:.4f} over {training_loss['faces_with_loss']} faces. {escape(_advice(side))}</p>"
            + thumbnails.sheet((f["face_id"], caption(f), False) for f in faces)
            + _table(["rank", "face", "image #face", "training loss", "x median", "seen", "trains",
                      "quality verdicts", "identity", "why it does not train"], rows) + "</section>")


@dataclass(frozen=True)
class PageData:
    """What the page lists beyond the Report's numbers, read through the faceset reader."""

    names: dict[str, str]  # face_id -> 'path #face_index'
    aligned_paths: dict[str, str]
    rejected: list[tuple[str, str]]  # (path, reject reason), by path
    without_faces: list[str]  # images read fine but with no face found
    selected: list[str]  # face ids in pick order
    bands: dict[str, tuple]  # measure -> (bad_low, ok_low, ok_high, bad_high) most faces were checked with


def page_data(database: Path) -> PageData:
    with FacesetReader(Path(database)) as reader:
        table = reader.faces()
        connection = reader.connection
        rejected = connection.execute(
            "SELECT path, reject_reason FROM images WHERE status = 'rejected' ORDER BY path").fetchall()
        without = [path for (path,) in connection.execute(
            "SELECT path FROM images WHERE status = 'ok' AND face_count = 0 ORDER BY path").fetchall()]
        bands = {}
        for measure, *band in connection.execute(
                "SELECT measure, bad_low, ok_low, ok_high, bad_high FROM face_checks "
                "GROUP BY ALL ORDER BY count(*) DESC, measure").fetchall():
            bands.setdefault(measure, tuple(band))
        picked = reader.selected()
    return PageData(
        names={f: f"{path} #{index}" for f, path, index in zip(table.face_ids, table.paths, table.face_index.tolist())},
        aligned_paths=dict(zip(table.face_ids, table.aligned_paths, strict=True)),
        rejected=[(path, reason or "") for path, reason in rejected], without_faces=without,
        selected=sorted(picked, key=picked.get), bands=bands)


def _file_list(paths: Sequence[str], limit: int) -> str:
    shown = "".join(f"<li>{escape(p)}</li>" for p in paths[:limit])
    more = f'<p class="note">… and {len(paths) - limit} more (facesmith sql lists them all)</p>' if len(paths) > limit else ""
    return f'<ul class="files">{shown}</ul>{more}'


def _embedding_map(embeddings: np.ndarray, labels: list[str]) -> str:
    """PCA of the identity embeddings to 2-D: other people and outliers sit apart from the main group."""
    if len(embeddings) < 3:
        return scatter([], [], "identity map (PCA of embeddings)")
    centred = embeddings - embeddings.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    points = centred @ components[:2].T
    return scatter([tuple(map(float, p)) for p in points], labels, "identity map (PCA of embeddings)")


def _coverage_heatmap(coverage: dict[str, Any]) -> str:
    counts = coverage.get("counts") or []
    yaw_edges, pitch_edges = coverage.get("yaw_edges") or [], coverage.get("pitch_edges") or []
    columns = [f"{int(a)}" for a in yaw_edges[:-1]]
    rows = [f"{int(a)}" for a in pitch_edges[:-1]]
    # counts is [yaw][pitch]; draw pitch rows from looking up (top) to looking down
    grid = [[counts[c][r] for c in range(len(columns))] for r in reversed(range(len(rows)))]
    return heatmap(grid, list(reversed(rows)), columns, "faces per yaw × pitch cell",
                   x_label="yaw, ° (lower edge; > 0: turned towards image right)",
                   y_label="pitch, ° (> 0: looking up)")


def write_html_report(report: Report, out: Path, contact_limit: int = 60, list_limit: int = 200) -> Path:
    """Write the report page to `out` (atomically) and return the path.

    contact_limit: faces per contact sheet (the selection's sheet shows up to 4× as many);
    list_limit: file names per list of rejected files and of images without faces.
    """
    data = page_data(Path(report.database))
    with FacesetReader(Path(report.database)) as reader:
        connection = reader.connection
        table = reader.faces()
        labels = {face_id: label for face_id, (label, _, _) in reader.identity_labels().items()} \
            if report.identities else {}
        reasons = {face_id: reason for face_id, (label, _, reason) in reader.identity_labels().items()
                   if label != "main"} if report.identities else {}
        duplicate_rows = connection.execute(
            "SELECT group_id, face_id, keep, reason FROM duplicates ORDER BY group_id, keep DESC, face_id"
        ).fetchall() if report.duplicates and table_exists(connection, "duplicates") else []
        worst = connection.execute("""
            SELECT f.face_id, string_agg(c.measure || ' ' || c.verdict, ', ' ORDER BY c.measure) AS problems,
                   min(c.score) AS worst_score
            FROM faces f JOIN face_checks c USING (face_id) WHERE c.verdict <> 'ok'
            GROUP BY f.face_id ORDER BY worst_score, f.face_id LIMIT ?""", [contact_limit]).fetchall()
    thumbnails = _Thumbnails(Path(report.database), data.aligned_paths, data.names)

    sections = [f"<h1>facesmith faceset report</h1><p>{escape(report.database)}</p>"]
    if report.stale:
        sections.append(f'<p class="stale">Scanned again after these analyses ran: {escape(", ".join(report.stale))}. '
                        "Run <code>facesmith curate analyze</code> to refresh them.</p>")
    counts = list(report.counts.items()) + [(f"decided by hand: {kind}", number)
                                            for kind, number in report.decisions.items() if number]
    sections.append("<h2>Counts</h2>" + _table(["what", "number"], counts))
    sections.append('<h2>Advice</h2><ul class="advice">' +
                    "".join(f"<li>{escape(line)}</li>" for line in report.advice) + "</ul>")
    if report.rejects_by_reason:
        sections.append("<h2>Rejected files</h2>" + _table(["reason", "files"], report.rejects_by_reason.items()) +
                        _file_list([f"{path} — {reason}" for path, reason in data.rejected], list_limit))
    if data.without_faces:
        sections.append(f"<h2>Images without faces ({len(data.without_faces)})</h2>"
                        + _file_list(data.without_faces, list_limit))
    if report.verdicts:
        sections.append("<h2>Quality checks</h2>" + _table(
            ["measure", "ok", "warn", "bad", "bands"],
            [(m, v["ok"], v["warn"], v["bad"], band_text(data.bands[m]) if m in data.bands else "")
             for m, v in report.verdicts.items()]))
    plots = [histogram(h.edges, h.counts,
                       f"{h.measure} (median {h.median:.3g})" if h.median is not None else h.measure,
                       band=data.bands.get(h.measure))
             for h in report.histograms]
    sections.append('<h2>Distributions</h2><p class="note">Shaded: the ok (green), warn (yellow) and bad (red) '
                    'ranges of the quality check on that measure.</p><div class="plots">' + "".join(plots) + "</div>")
    lighting = report.coverage.get("lighting") or {}
    sections.append('<h2>Pose and lighting coverage</h2><div class="plots">' + _coverage_heatmap(report.coverage) +
                    "</div>" + (_table(["lighting", "faces"], lighting.items()) if lighting else ""))
    if report.selection:
        shown = data.selected[:4 * contact_limit]
        sections.append("<h2>Selection</h2>" + _table(
            ["selected", "of faces"], [(report.selection["selected"], report.selection["faces"])]) +
            _table(["excluded because", "faces"], report.selection["excluded_by_reason"].items()) +
            f"<h3>Selected faces in pick order ({len(shown)} of {len(data.selected)})</h3>" +
            thumbnails.sheet((face_id, f"pick {n}", False) for n, face_id in enumerate(shown, 1)))
    if report.duplicates:
        sections.append(f"<h2>Duplicates</h2><p>{report.duplicates['groups']} groups, "
                        f"{report.duplicates['faces_to_drop']} faces to drop (kept face outlined).</p>")
        groups: dict[str, list[tuple[str, str, bool]]] = {}
        for group_id, face_id, keep, reason in duplicate_rows:
            groups.setdefault(group_id, []).append((face_id, "kept" if keep else reason, keep))
        for members in list(groups.values())[:contact_limit // 3 or 1]:
            sections.append(thumbnails.sheet(members))
    if report.identities:
        ordered = [labels.get(face_id, "unanalysed") for face_id in table.face_ids]
        sections.append("<h2>Identities</h2>" + _table(["label", "faces"], report.identities["labels"].items()) +
                        '<div class="plots">' + _embedding_map(table.embeddings, ordered) + "</div>" +
                        "<h3>Other people and outliers</h3>" +
                        thumbnails.sheet((f, reasons.get(f, ""), False) for f in list(reasons)[:contact_limit]))
    sections.append(hardest_faces_html(report.training_loss))
    sections.append("<h2>Worst faces</h2>" + thumbnails.sheet((f, problems, False) for f, problems, _ in worst))
    page = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>facesmith report</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(sections)}</body></html>")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(out, page)
