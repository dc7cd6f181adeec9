"""A model folder's training report: status, loss curve, merge checks and events, as data and as one HTML page."""

from __future__ import annotations

import base64
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from curate.errors import FacesmithError
from curate.fileio import write_atomically
from curate.reports.html import hardest_faces_html, html_table
from curate.training_loss import DEFAULT_HARDEST, hardest_faces
from curate.reports.svg_plots import line_chart
from merge.checks import read_checks
from train.history import ModelHistory
from train.model_folder import read_model_folder
from train.status import training_status

MAX_LOSS_POINTS = 2000  # the loss curve is averaged into at most this many points
MAX_CONTACT_SHEETS = 6  # the newest checks' sheets embedded in the HTML page
MAX_EVENTS = 200  # the newest events listed on the HTML page (the terminal and JSON get them all)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# How people read the merge_checks columns (terminal and HTML); CSV and JSON keep the stored names.
COLUMN_LABELS: dict[str, str] = {
    "quality_score": "quality",
    "identity_component": "identity",
    "expression_component": "expression",
    "sharpness_component": "sharpness",
    "artefact_component": "artefacts",
    "loss_component": "loss (score)",
    "validation_src_loss": "held-out src loss",
    "train_src_loss": "training src loss",
    "generalisation_gap": "gap",
    "identity_similarity": "identity cosine",
    "dst_identity_similarity": "dst identity cosine",
    "src_identity_similarity": "src identity cosine",
    "expression_error": "expression error",
    "sharpness_ratio": "sharpness ratio",
    "artefact_score": "clipped share",
    "best_iteration": "best",
    "validation_dst_loss": "held-out dst loss",
    "train_dst_loss": "training dst loss",
    "training_loss": "training loss (interval)",
    "checked_at": "checked at",
}
# The columns a terminal (and the page's table) has room for, in the order a reader compares them:
# the score that decides, its components (0..1, higher is better), then the losses and the verdict.
CHECK_COLUMNS = ("iteration", "quality_score", "identity_component", "expression_component", "sharpness_component",
                 "artefact_component", "validation_src_loss", "train_src_loss", "generalisation_gap", "overtraining",
                 "best_iteration")
# The quality chart: the score and each component, per check.
QUALITY_SERIES = (("quality", "quality_score"), ("identity", "identity_component"),
                  ("expression", "expression_component"), ("sharpness", "sharpness_component"),
                  ("artefacts", "artefact_component"), ("held-out loss", "loss_component"))


@dataclass(frozen=True)
class TrainingReport:
    """Everything the terminal and HTML reports show; read from the model folder, never recomputed there."""

    model_dir: str
    status: dict[str, Any]  # train.status.TrainStatus.to_dict()
    checks: list[dict[str, Any]]  # merge_checks rows, oldest first (None where a measure was not taken)
    advice: list[str]
    overtraining: bool  # the newest merge check's verdict (the training loop's flag when no check ran)
    best_iteration: int | None
    warning: str | None  # the overtraining detail when flagged
    loss_iterations: list[int]  # (P,) P <= MAX_LOSS_POINTS: the last iteration of each averaged stretch
    src_loss: list[float]  # (P,) mean training loss over each stretch; NaN where no step had a finite loss
    dst_loss: list[float]  # (P,)
    events: list[dict[str, Any]]  # {"iteration", "kind", "detail"} of every event the model logged, oldest first
    # side -> the faces the model learns worst in that side's faceset (curate.training_loss.HardestFaces.to_dict());
    # a side is absent when its faceset cannot be read, with the reason in hardest_notes
    hardest: dict[str, dict[str, Any]] = field(default_factory=dict)
    hardest_notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check_table(self, columns: Sequence[str] = CHECK_COLUMNS) -> tuple[list[str], list[list[Any]]]:
        """(headers for people, one row of raw values per merge check) for the chosen `merge_checks` columns."""
        headers = [COLUMN_LABELS.get(column, column.replace("_", " ")) for column in columns]
        return headers, [[check.get(column) for column in columns] for check in self.checks]


def downsample_losses(iterations: np.ndarray, losses: np.ndarray,
                      limit: int = MAX_LOSS_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Average consecutive stretches of a loss history down to at most `limit` points.

    iterations: (N,) int64, ascending; losses: (N, K) float64 with NaN for missing. Returns
    ((P,) the last iteration of each stretch, (P, K) the mean of its finite losses, NaN if none).
    Means rather than every n-th point, so a long run's curve shows the trend, not one noisy step.
    """
    if len(iterations) <= limit:
        return iterations, losses
    starts = np.linspace(0, len(iterations), limit + 1).astype(np.int64)
    finite = np.isfinite(losses)
    sums = np.add.reduceat(np.where(finite, losses, 0.0), starts[:-1], axis=0)
    counts = np.add.reduceat(finite.astype(np.int64), starts[:-1], axis=0)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return iterations[starts[1:] - 1], means


def _advice(model_dir: Path, status: dict[str, Any], checks: list[dict[str, Any]], overtraining: bool,
            best_iteration: int | None) -> list[str]:
    lines = []
    if overtraining:
        if best_iteration in status["checkpoints"]:
            lines.append(f"Held-out quality keeps worsening while the training loss falls: merge with iteration "
                         f"{best_iteration}'s checkpoint ('facesmith merge run --step {best_iteration}'), or add "
                         "more varied src faces before training on.")
        else:
            lines.append(f"Held-out quality keeps worsening while the training loss falls; iteration "
                         f"{best_iteration} was best but its checkpoint is not kept: add more varied src faces "
                         "before training on.")
    else:
        # The training-loss trend says 'keep training' even while overtraining, so it only speaks when clear.
        lines.append(f"Training loss: {status['advice']}")
    if not checks:
        lines.append(f"No merge checks yet: run 'facesmith merge check --model-dir {model_dir}' or train with "
                     "--check-every N (the model must hold out faces).")
    else:
        last = checks[-1]
        identity, baseline = last.get("identity_similarity"), last.get("dst_identity_similarity")
        if identity is not None and baseline is not None and identity <= baseline:
            lines.append(f"At iteration {last['iteration']} the merged faces are no closer to the src identity than "
                         f"the dst faces were ({identity:.3f} vs {baseline:.3f}): the model has not learned the "
                         "src face yet.")
    if status["rollbacks"]:
        lines.append(f"{len(status['rollbacks'])} rollback(s) after a loss collapse, the last {status['rollbacks'][-1]}.")
    return lines


def hardest_by_side(model_dir: Path, count: int = DEFAULT_HARDEST) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Each side's hardest faces, read through its faceset as model.json names it; a faceset that is
    gone or unreadable leaves its side out with a note, the rest of the report still stands."""
    folder = read_model_folder(model_dir)
    found, notes = {}, []
    for side in ("src", "dst"):
        try:
            found[side] = hardest_faces(model_dir, folder.faceset(side), count, side=side).to_dict()
        except FacesmithError as error:
            notes.append(f"{side} faces by training loss not shown: {error}")
    return found, notes


def training_report(model_dir: Path, hardest: int = DEFAULT_HARDEST) -> TrainingReport:
    """Read a model folder's status, loss history, merge checks, events and hardest faces (TensorFlow
    never imported): `hardest` faces per side, with their quality verdicts from each faceset.

    Raises train.loop.TrainingError when `model_dir` is not a model folder.
    """
    model_dir = Path(model_dir)
    status = training_status(model_dir).to_dict()
    checks = read_checks(model_dir)
    with ModelHistory(model_dir, read_only=True) as history:
        iterations, losses, _ = history.losses()
        events = [{"iteration": iteration, "kind": kind, "detail": detail}
                  for iteration, kind, detail in history.events()]
    loss_iterations, mean_losses = downsample_losses(iterations, losses)
    hard, hard_notes = hardest_by_side(model_dir, hardest)
    if checks:
        # The newest check is the latest word: an on-demand check updates no training-loop flag.
        last = checks[-1]
        overtraining, best_iteration = bool(last["overtraining"]), last["best_iteration"]
        warning = last["detail"] if overtraining else None
    else:
        overtraining, best_iteration, warning = bool(status["flag"]), status["best_iteration"], status["flag"]
    return TrainingReport(
        model_dir=str(model_dir), status=status, checks=checks,
        advice=_advice(model_dir, status, checks, overtraining, best_iteration),
        overtraining=overtraining, best_iteration=best_iteration, warning=warning,
        loss_iterations=[int(i) for i in loss_iterations],
        src_loss=[float(v) for v in mean_losses[:, 0]], dst_loss=[float(v) for v in mean_losses[:, 1]],
        events=events, hardest=hard, hardest_notes=hard_notes)


# -- HTML -------------------------------------------------------------------------------------

_STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:24px auto;padding:0 24px;color:#1a202c;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #cbd5e0}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #cbd5e0;padding:3px 6px;font-size:13px;text-align:left;
vertical-align:top;overflow-wrap:anywhere}
table.checks{table-layout:fixed;width:100%}table.checks td,table.checks th{font-size:12px}
table.events{table-layout:fixed;width:100%}table.events col.iteration{width:90px}table.events col.kind{width:110px}
.overtraining{background:#c53030;color:#fff;padding:12px 16px;font-size:16px;margin:12px 0;overflow-wrap:anywhere}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots svg{max-width:100%;height:auto}
.sheets{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
figure{margin:0}figure img{display:block;image-rendering:pixelated}
figcaption{font-size:12px;margin-top:4px;overflow-wrap:anywhere}figcaption ol{margin:2px 0 0;padding-left:20px}
.advice li{margin:4px 0}p.note{font-size:12px;color:#4a5568}
.training-loss .sheet{display:flex;flex-wrap:wrap;gap:6px;margin:6px 0 14px}.training-loss figure{width:96px}
.training-loss figure img{width:96px;height:96px;image-rendering:auto}.training-loss figcaption{font-size:10px}
.training-loss figcaption b{display:block;font-weight:600}
"""


def _cell(value: Any) -> str:
    """A table cell for people: '-' for missing measures, 4 significant digits, minutes for times."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def _png_data_uri(path: Path) -> str | None:
    """The file as a data: URI, or None when it is missing or not a PNG (a sheet may have been deleted)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(PNG_SIGNATURE):
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _contact_sheets(model_dir: Path, checks: list[dict[str, Any]], limit: int) -> str:
    """The newest sheets, each at its own pixel size, captioned with its iteration, score and frame names."""
    figures = []
    for check in reversed(checks):
        if len(figures) == limit:
            break
        uri = _png_data_uri(model_dir / check["contact_sheet"]) if check.get("contact_sheet") else None
        if uri is None:
            continue
        score = check.get("quality_score")
        title = f"iteration {check['iteration']}" + ("" if score is None else f", quality {score:.3f}")
        names = [name for name in (check.get("frame_names") or "").splitlines() if name]
        listing = ("<ol>" + "".join(f"<li>{escape(name)}</li>" for name in names) + "</ol>") if names else ""
        figures.append(f'<figure class="sheet"><img src="{uri}" alt="{escape(title)}: dst, swapped and merged '
                       f'face of each held-out frame"><figcaption>{escape(title)}: dst | swapped | merged{listing}'
                       "</figcaption></figure>")
    return f'<div class="sheets">{"".join(figures)}</div>' if figures else "<p>none</p>"


def _checks_table(report: TrainingReport) -> str:
    headers, rows = report.check_table()
    head = "".join(f"<th>{escape(header)}</th>" for header in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(_cell(value))}</td>" for value in row) + "</tr>" for row in rows)
    return f'<table class="checks"><tr>{head}</tr>{body}</table>'


def _events_table(events: list[dict[str, Any]], limit: int) -> str:
    if not events:
        return "<p>none</p>"
    shown = events[-limit:]
    note = (f'<p class="note">the newest {limit} of {len(events)} events; '
            "'facesmith merge report --format json' lists them all</p>") if len(events) > limit else ""
    body = "".join(f"<tr><td>{e['iteration']}</td><td>{escape(e['kind'])}</td><td>{escape(e['detail'])}</td></tr>"
                   for e in reversed(shown))
    return (f'{note}<table class="events"><colgroup><col class="iteration"><col class="kind"><col></colgroup>'
            f"<tr><th>iteration</th><th>kind</th><th>detail</th></tr>{body}</table>")


def write_training_html(report: TrainingReport, out: Path, log_x: bool = False,
                        contact_limit: int = MAX_CONTACT_SHEETS) -> Path:
    """Write the report as one self-contained HTML page to `out` (atomically) and return the path.

    Charts are inline SVG and contact sheets data URIs, so the page can be mailed or archived alone.
    Laid out for a 1280 px wide window: nothing is wider than the 1200 px column.
    """
    status, checks = report.status, report.checks
    best = report.best_iteration
    check_iterations = [check["iteration"] for check in checks]
    markers = [(float(i), f"merge check at {i}") for i in check_iterations]
    highlight = (float(best), f"best {best}") if best is not None else None
    last = checks[-1] if checks else {}

    def number(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    sections = [f"<h1>facesmith training report</h1><p>{escape(report.model_dir)}</p>"]
    if report.overtraining:
        sections.append(
            '<div class="overtraining" role="alert"><strong>OVERTRAINING</strong> — merged held-out frames get '
            f"worse while training loss still falls; best iteration so far: {'-' if best is None else best}."
            f"<br>{escape(report.warning or '')}</div>")
    sections.append(html_table(["what", "value"], [
        ("phase", status["phase"]),
        ("iteration", status["iteration"]),
        ("ms / iteration", number(status["ms_per_iteration"], 1)),
        ("loss src / dst", f"{number(status['src_loss'], 4)} / {number(status['dst_loss'], 4)}"),
        ("best iteration", "-" if best is None else best),
        ("decided by", {"quality": "merge-quality score", "heldout-loss": "held-out src loss"}.get(
            last.get("rule") or "", "-")),
        ("last merge-quality score", number(last.get("quality_score"), 3)),
        ("overtraining", report.warning or "none"),
        ("checkpoints", ", ".join(str(step) for step in status["checkpoints"]) or "-"),
        ("model", f"{status['architecture']}, {status['resolution']} px, {status['sessions']} session(s)"),
    ]))
    sections.append('<h2>Advice</h2><ul class="advice">' +
                    "".join(f"<li>{escape(line)}</li>" for line in report.advice) + "</ul>")
    loss_chart = line_chart(
        {"src loss": (report.loss_iterations, report.src_loss), "dst loss": (report.loss_iterations, report.dst_loss)},
        "training loss", markers=markers, highlight=highlight, log_x=log_x, width=1100, height=320)
    sections.append(f'<h2 id="loss">Training loss</h2><div class="plots">{loss_chart}</div>')

    def measure(column: str) -> list[float]:
        return [math.nan if check.get(column) is None else float(check[column]) for check in checks]

    quality_chart = line_chart(
        {label: (check_iterations, measure(column)) for label, column in QUALITY_SERIES},
        "merge-quality score and its components at each check (0..1, higher is better)", highlight=highlight,
        dots=True, width=1100, height=300, y_range=(0.0, 1.0))
    heldout_chart = line_chart(
        {"held-out src": (check_iterations, measure("validation_src_loss")),
         "training src": (check_iterations, measure("train_src_loss"))},
        "src loss at each merge check: held-out vs training faces", highlight=highlight, dots=True,
        width=1100, height=260)
    sections.append(f'<h2 id="quality">Merge checks</h2><div class="plots">{quality_chart}{heldout_chart}</div>'
                    f'<section id="merge-checks">{_checks_table(report)}</section>'
                    '<p class="note">Every stored measure of every check (raw cosines, errors, ratios, dst losses, '
                    "the verdict's detail): 'facesmith merge report --format csv'.</p>")
    sections.append(f'<h2>Contact sheets (newest {contact_limit})</h2><section id="contact-sheets">'
                    f"{_contact_sheets(Path(report.model_dir), checks, contact_limit)}</section>")
    for side in ("src", "dst"):
        if side in report.hardest:
            sections.append(hardest_faces_html(report.hardest[side], f"training-loss-{side}"))
    sections.extend(f'<p class="note">{escape(note)}</p>' for note in report.hardest_notes)
    sections.append(f'<h2>Events</h2><section id="events">{_events_table(report.events, MAX_EVENTS)}</section>')
    page = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>facesmith training report"
            f"</title><style>{_STYLE}</style></head><body>{''.join(sections)}</body></html>")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(out, page)


__all__ = ["TrainingReport", "downsample_losses", "training_report", "write_training_html"]
