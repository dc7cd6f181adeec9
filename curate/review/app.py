"""The review app's HTTP routes (Starlette): the page, the face index, images by face id, decisions, training losses.

Every image is looked up by face id in the faceset (crop, thumbnail, source photo): no path
given by a client ever reaches the file system. A bad request is a 4xx JSON error, anything
unexpected a 500 JSON error; the server goes on either way.
"""

from __future__ import annotations

import gzip
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from curate.decisions import Decision, DecisionError
from curate.errors import FacesmithError, ReadOnlyQueryError, StoreError
from curate.faceset import DECISION_ACTIONS
from curate.review.access import FacesetAccess, FacesetBusy
from curate.review.security import Guard, GuardMiddleware
from curate.review.thumbnails import SAFE_FACE_ID, ThumbnailCache, thumbnail_dir
from curate.training_loss import FaceLosses, read_face_losses, side_of

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY = 2 * 1024 * 1024  # bytes of JSON a write may send
MAX_DECISIONS = 20_000  # per request: a lasso over a whole 10 000-face set, twice
MAX_TEXT = 500  # characters of a why, tag or WHERE clause value
MAX_WHERE = 4000  # characters of a WHERE clause
SOURCE_LONG_SIDE = 1600  # the side panel's source photo is scaled down to this


@dataclass(frozen=True)
class ReviewSettings:
    """What one review server serves, and to whom."""

    database: Path
    cache_dir: Path  # thumbnails and the face index, kept between starts
    who: str  # recorded with every decision
    guard: Guard
    model_dir: Path | None = None  # a model trained on this faceset: its per-face training losses are shown


class JsonError(HTTPException):
    """A request the app refuses, with the message the page shows."""


def _json(value: Any, status: int = 200, headers: dict | None = None) -> Response:
    # allow_nan=False: a NaN would make the page's JSON.parse fail; the index maps them to null.
    body = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(body, status, headers={"cache-control": "no-store", **(headers or {})},
                    media_type="application/json")


def create_app(settings: ReviewSettings, access: FacesetAccess | None = None) -> Starlette:
    """The Starlette application behind `facesmith curate review` (`access`: share the server's
    per-request door with other threads of the process, e.g. the thumbnail builder)."""
    access = access or FacesetAccess(settings.database, settings.cache_dir)
    thumbnails = ThumbnailCache(thumbnail_dir(settings.cache_dir))
    def crop_for(face_id: str) -> Path:
        if not SAFE_FACE_ID.match(face_id):
            raise JsonError(404, "no such face")
        path = access.crop_path(face_id)
        if path is None:
            raise JsonError(404, "no such face")
        return path

    def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})

    def faces(request: Request) -> Response:
        # The index is kept gzipped (memory and cache folder): sent as it is to any browser.
        started = time.perf_counter()
        data = access.index_gzip()
        headers = {"cache-control": "no-store", "vary": "Accept-Encoding",
                   "server-timing": f"index;dur={(time.perf_counter() - started) * 1000:.1f}"}
        if "gzip" in request.headers.get("accept-encoding", "").lower():
            return Response(data, media_type="application/json", headers={**headers, "content-encoding": "gzip"})
        return Response(gzip.decompress(data), media_type="application/json", headers=headers)

    def thumbnail(request: Request) -> Response:
        face_id = request.path_params["face_id"]
        data = thumbnails.get(face_id, crop_for(face_id))
        if data is None:
            raise JsonError(404, "the face's crop cannot be read")
        return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=3600"})

    def crop(request: Request) -> Response:
        path = crop_for(request.path_params["face_id"])
        if not path.is_file():
            raise JsonError(404, "the face's crop is missing")
        return FileResponse(path, media_type="image/jpeg", headers={"cache-control": "private, max-age=3600"})

    def face(request: Request) -> Response:
        detail = face_detail(access, request.path_params["face_id"])
        return _json({**detail, "training_loss": face_training_loss(access, settings.model_dir, detail["id"])})

    def source(request: Request) -> Response:
        return source_image(access, request.path_params["face_id"])

    def duplicates(request: Request) -> Response:
        return _json(duplicate_groups(access))

    def training_loss(request: Request) -> Response:
        return _json(training_loss_columns(access, settings.model_dir))

    def decision_log(request: Request) -> Response:
        with access.reader() as reader:
            return _json([row.to_dict() for row in reader.decision_log()])

    async def query(request: Request) -> Response:
        body = await _read_json(request)
        where = body.get("where") if isinstance(body, dict) else None
        if not isinstance(where, str) or not where.strip():
            raise JsonError(400, "give a WHERE condition, e.g. sharpness > 100 AND label = 'main'")
        if len(where) > MAX_WHERE:
            raise JsonError(400, f"the condition is longer than {MAX_WHERE} characters")
        started = time.perf_counter()
        try:
            result = await run_in_threadpool(access.query_where, where)
        except ReadOnlyQueryError as error:
            raise JsonError(400, str(error)) from error
        ids = [row[0] for row in result.rows if row and isinstance(row[0], str)]
        return _json({"ids": ids, "count": len(ids), "ms": round((time.perf_counter() - started) * 1000, 1)})

    async def decide(request: Request) -> Response:
        body = await _read_json(request)
        entries = body.get("decisions") if isinstance(body, dict) else None
        if not isinstance(entries, list) or not entries:
            raise JsonError(400, "give a list of decisions: {\"decisions\": [{\"face_id\": …, \"action\": …}]}")
        if len(entries) > MAX_DECISIONS:
            raise JsonError(413, f"at most {MAX_DECISIONS} decisions a request")
        decisions = [_decision(entry) for entry in entries]
        try:
            rows, statuses = await run_in_threadpool(access.record, decisions, settings.who)
        except DecisionError as error:
            raise JsonError(400, str(error)) from error
        return _json({"recorded": len(rows), "statuses": statuses})

    routes = [
        Route("/", page),
        Route("/api/faces", faces),
        Route("/api/faces/{face_id}", face),
        Route("/api/thumbnails/{face_id}", thumbnail),
        Route("/api/crops/{face_id}", crop),
        Route("/api/sources/{face_id}", source),
        Route("/api/duplicates", duplicates),
        Route("/api/training-loss", training_loss),
        Route("/api/decisions", decision_log, methods=["GET"]),
        Route("/api/decisions", decide, methods=["POST"]),
        Route("/api/query", query, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    async def http_error(request: Request, error: HTTPException) -> Response:
        return _json({"error": error.detail}, error.status_code, dict(error.headers or {}))

    async def busy(request: Request, error: FacesetBusy) -> Response:
        return _json({"error": str(error), "busy": True}, 503, {"retry-after": "1"})

    async def refused(request: Request, error: FacesmithError) -> Response:
        return _json({"error": str(error)}, 400)

    async def crashed(request: Request, error: Exception) -> Response:
        logger.exception("review request %s failed", request.url.path)
        return _json({"error": f"the server failed on this request: {type(error).__name__}"}, 500)

    return Starlette(
        routes=routes,
        middleware=[Middleware(GuardMiddleware, guard=settings.guard), Middleware(GZipMiddleware, minimum_size=2048)],
        exception_handlers={HTTPException: http_error, FacesetBusy: busy, FacesmithError: refused,
                            Exception: crashed},
    )


async def _read_json(request: Request) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise JsonError(413, f"the body is larger than {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_BODY:
            raise JsonError(413, f"the body is larger than {MAX_BODY} bytes")
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise JsonError(400, f"the body is not JSON: {error}") from error


def _text(entry: dict, key: str) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise JsonError(400, f"{key} must be text of at most {MAX_TEXT} characters")
    return value


def _decision(entry: Any) -> Decision:
    if not isinstance(entry, dict):
        raise JsonError(400, "each decision is an object with face_id and action")
    face_id, action = _text(entry, "face_id"), _text(entry, "action")
    if not face_id or action not in DECISION_ACTIONS:
        raise JsonError(400, f"each decision needs a face_id and an action ({', '.join(DECISION_ACTIONS)})")
    try:
        return Decision(face_id, action, _text(entry, "value"), _text(entry, "why"))
    except DecisionError as error:
        raise JsonError(400, str(error)) from error


def face_detail(access: FacesetAccess, face_id: str) -> dict[str, Any]:
    """Everything the side panel shows of one face."""
    if not SAFE_FACE_ID.match(face_id):
        raise JsonError(404, "no such face")
    with access.reader() as reader:
        connection = reader.connection
        row = connection.execute(
            "SELECT i.path, f.face_index, i.width, i.height, f.bbox, f.landmarks68, f.yaw, f.pitch, f.roll, "
            "f.face_size, f.det_score, i.content_hash FROM faces f JOIN images i USING (image_id) "
            "WHERE f.face_id = ?", [face_id]).fetchone()
        if row is None:
            raise JsonError(404, "no such face")
        path, index, width, height, bbox, landmarks, yaw, pitch, roll, size, det, content_hash = row
        checks = [dict(zip(("measure", "value", "score", "bad_low", "ok_low", "ok_high", "bad_high", "verdict"), r))
                  for r in connection.execute(
                      "SELECT measure, raw_value, score, bad_low, ok_low, ok_high, bad_high, verdict "
                      "FROM face_checks WHERE face_id = ? ORDER BY measure", [face_id]).fetchall()]
        duplicate = connection.execute(
            "SELECT group_id, kind, keep, similarity, phash_distance, reason FROM duplicates WHERE face_id = ?",
            [face_id]).fetchone()
        identity = connection.execute("SELECT label, distance, reason FROM identities WHERE face_id = ?",
                                      [face_id]).fetchone()
        selection = connection.execute("SELECT selected, pick_order, reason FROM selection WHERE face_id = ?",
                                       [face_id]).fetchone()
        log = [r.to_dict() for r in reader.decision_log() if r.face_id == face_id]
    # Whether it trains comes from the index (the reader's statuses, kept current by the access
    # layer): working the whole set's statuses out again for one face would hold up decisions.
    columns = access.index()["columns"]
    try:
        position = columns["id"].index(face_id)
    except ValueError as error:
        raise JsonError(404, "no such face") from error
    finite = (lambda v: None if v is None or v != v else round(float(v), 3))  # NaN -> null
    return {
        "id": face_id, "path": path, "index": index, "width": width, "height": height,
        "bbox": [finite(v) for v in bbox], "landmarks": [finite(v) for v in landmarks],
        "yaw": finite(yaw), "pitch": finite(pitch), "roll": finite(roll), "size": finite(size), "det": finite(det),
        "content_hash": content_hash,
        "checks": [{k: (finite(v) if isinstance(v, float) else v) for k, v in c.items()} for c in checks],
        "duplicate": dict(zip(("group", "kind", "keep", "similarity", "phash_bits", "reason"), duplicate))
        if duplicate else None,
        "identity": {"label": identity[0], "distance": round(identity[1], 3), "reason": identity[2]} if identity else None,
        "selection": dict(zip(("selected", "pick", "reason"), selection)) if selection else None,
        "trains": columns["trains"][position], "reason": columns["reason"][position],
        "reason_kinds": columns["reason_kinds"][position], "decided": columns["decided"][position],
        "decisions": log,
    }


def _face_losses(access: FacesetAccess, model_dir: Path) -> FaceLosses:
    """The model's per-face losses of the side this faceset trained as (read by path, curate's contract)."""
    return read_face_losses(model_dir, side_of(model_dir, access.database, access.role()))


def training_loss_columns(access: FacesetAccess, model_dir: Path | None) -> dict[str, Any]:
    """The page's training-loss columns: face ids with a running loss, hardest first, with the loss,
    its ratio to the median and its rank. {"available": false, "note": why} when there are none: no
    --model-dir, a model with no per-face loss yet, or a model file that training holds right now."""
    if model_dir is None:
        return {"available": False, "model_dir": None,
                "note": "start the app with --model-dir MODEL to see training losses"}
    try:
        losses = _face_losses(access, model_dir)
    except StoreError as error:
        return {"available": False, "model_dir": str(model_dir), "note": str(error)}
    ranked = losses.ranked()
    if not ranked:
        return {"available": False, "model_dir": str(model_dir),
                "note": f"{model_dir} has no per-face training loss yet (stored with each checkpoint)"}
    finite = (lambda v: None if v is None or v != v else round(float(v), 5))
    return {"available": True, "model_dir": str(model_dir), "side": losses.side, "iteration": losses.iteration,
            "median": finite(losses.median), "ids": [face.face_id for face in ranked],
            "loss": [finite(face.loss) for face in ranked], "ratio": [finite(losses.ratio(face.face_id)) for face in ranked],
            "seen": [face.seen for face in ranked]}


def face_training_loss(access: FacesetAccess, model_dir: Path | None, face_id: str) -> dict[str, Any] | None:
    """One face's running training loss for the side panel (None: no model, or no loss for this face)."""
    if model_dir is None:
        return None
    try:
        losses = _face_losses(access, model_dir)
    except StoreError:
        return None
    ranked = losses.ranked()
    face = losses.losses.get(face_id)
    if face is None:
        return None
    ratio = losses.ratio(face_id)
    return {"loss": round(face.loss, 5), "ratio": None if ratio is None else round(ratio, 3),
            "rank": ranked.index(face) + 1, "of": len(ranked), "seen": face.seen,
            "last_loss": round(face.last_loss, 5), "last_iteration": face.last_iteration,
            "iteration": losses.iteration, "side": losses.side}


def source_image(access: FacesetAccess, face_id: str) -> Response:
    """The photo a face came from, scaled to at most SOURCE_LONG_SIDE px; the page draws the box
    and landmarks over it from the face's source-pixel coordinates (header X-Source-Scale)."""
    if not SAFE_FACE_ID.match(face_id):
        raise JsonError(404, "no such face")
    with access.reader() as reader:
        try:
            (face,) = reader.training_faces(face_ids=[face_id])
        except FacesmithError as error:
            raise JsonError(404, "no such face") from error
        root = reader.info().source_root
    path = face.source_path
    import cv2  # here, not at import: the server starts faster without OpenCV and Pillow

    from curate.scan.ingest import Decoded, decode_bytes

    if path is None:
        raise JsonError(404, "the faceset does not record the scanned folder")
    # The stored path is relative to the scanned folder; one that climbs out of it is not served.
    if root is not None and not path.resolve().is_relative_to(Path(root).resolve()):
        raise JsonError(404, "the source photo lies outside the scanned folder")
    try:
        data = path.read_bytes() if path.is_file() else None
    except OSError:
        data = None
    if data is None:
        raise JsonError(404, "the source photo is no longer there")
    decoded = decode_bytes(data)
    if not isinstance(decoded, Decoded):
        raise JsonError(404, "the source photo cannot be decoded")
    image = decoded.image_bgr
    scale = min(1.0, SOURCE_LONG_SIDE / max(image.shape[:2]))
    if scale < 1.0:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 88])
    if not ok:
        raise JsonError(500, "the source photo cannot be encoded")
    return Response(encoded.tobytes(), media_type="image/jpeg",
                    headers={"x-source-scale": f"{scale:.6f}", "cache-control": "private, max-age=600"})


def duplicate_groups(access: FacesetAccess) -> list[dict[str, Any]]:
    """Every duplicate group, kept face first, each member with its distances to the kept face."""
    with access.reader() as reader:
        rows = reader.connection.execute(
            "SELECT d.group_id, d.face_id, d.kind, d.keep, d.similarity, d.phash_distance, d.pose_delta, "
            "d.expression_delta, d.light_delta, d.reason, i.path, f.face_index "
            "FROM duplicates d JOIN faces f USING (face_id) JOIN images i USING (image_id) "
            "ORDER BY d.group_id, d.keep DESC, d.face_id").fetchall()
    groups: dict[str, dict[str, Any]] = {}
    for group, face_id, kind, keep, similarity, bits, pose, expression, light, reason, path, index in rows:
        entry = groups.setdefault(group, {"group": group, "members": []})
        entry["members"].append({
            "id": face_id, "kind": kind, "keep": bool(keep), "path": path, "index": index,
            "similarity": None if similarity is None else round(float(similarity), 3), "phash_bits": bits,
            "pose_delta": None if pose is None else round(float(pose), 1),
            "expression_delta": None if expression is None else round(float(expression), 2),
            "light_delta": None if light is None else round(float(light), 3), "reason": reason})
    return sorted(groups.values(), key=lambda g: (-len(g["members"]), g["group"]))
