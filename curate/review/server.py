"""Start the review app: bind the socket, build missing thumbnails in the background, serve with uvicorn."""

from __future__ import annotations

import errno
import ipaddress
import logging
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import duckdb

from curate.decisions import default_who
from curate.errors import FacesmithError
from curate.faceset import open_faceset
from curate.review.access import FacesetAccess
from curate.review.index_cache import fingerprint
from curate.review.security import Guard
from curate.review.thumbnails import ThumbnailCache, default_cache_dir, thumbnail_dir

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8765


class ReviewError(FacesmithError):
    """The review server cannot start as asked."""


@dataclass(frozen=True)
class ReviewAddress:
    """Where the server listens and the address a person opens."""

    host: str
    port: int
    url: str  # with the token when one is required
    token: str | None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int | None) -> socket.socket:
    """A listening socket on host:port; with no port, DEFAULT_PORT or else any free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    tries = [port] if port is not None else [DEFAULT_PORT, 0]
    for index, number in enumerate(tries):
        try:
            listener = socket.create_server((host.strip("[]"), number), family=family, reuse_port=False)
        except OSError as error:
            if error.errno == errno.EADDRINUSE and index + 1 < len(tries):
                continue
            if error.errno == errno.EADDRINUSE:
                raise ReviewError(f"port {number} on {host} is in use: pass another --port") from error
            raise ReviewError(f"cannot listen on {host}:{number}: {error.strerror or error}") from error
        # asyncio turns Nagle off only on sockets made with proto IPPROTO_TCP, and create_server's have
        # proto 0: without this every answer on a kept-alive connection (a browser's thumbnails) waited
        # ~40 ms for the client's delayed ACK. Accepted connections inherit the option on Linux.
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return listener
    raise ReviewError(f"cannot listen on {host}")  # unreachable: the loop returns or raises


def address_of(listener: socket.socket, host: str, token: str | None) -> ReviewAddress:
    port = listener.getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    return ReviewAddress(host, port, url, token)


def check_faceset(database: Path) -> None:
    """Fail now, with a clear message, on a file that is not a faceset (cheaply: a warm start
    must not pay for reading the faces)."""
    connection = open_faceset(database, read_only=True)
    try:
        fingerprint(connection)
    except duckdb.Error as error:
        raise ReviewError(f"{database} is not a faceset facesmith can review: {error}") from error
    finally:
        connection.close()


def build_thumbnails_in_background(access: FacesetAccess, cache: ThumbnailCache) -> threading.Thread:
    """Make every missing thumbnail on one thread, once the first page has its index and its first
    thumbnails (those, and any asked for before this thread reaches them, are made on request)."""
    def work() -> None:
        access.index_served.wait(timeout=15)
        time.sleep(2.0)
        try:
            summary = cache.build(sorted(access.crop_paths().items()), workers=1)
            logger.info("thumbnails: %s", summary.to_dict())
        except FacesmithError as error:  # a busy or vanished file: thumbnails come on demand instead
            logger.warning("thumbnails not built ahead: %s", error)

    thread = threading.Thread(target=work, name="review-thumbnails", daemon=True)
    thread.start()
    return thread


def serve(database: Path, host: str = LOOPBACK, port: int | None = None, cache_dir: Path | None = None,
          on_ready: Callable[[ReviewAddress], None] | None = None, build_ahead: bool = True,
          model_dir: Path | None = None) -> None:
    """Serve the review app for the faceset at `database` until interrupted.

    Loopback only unless `host` says otherwise; beyond loopback a random token is required in
    the URL. `on_ready` gets the address once the socket listens (the CLI prints it and opens a
    browser). `model_dir`: a model trained on the faceset, whose per-face training losses the page
    shows (read per request: the model may train on meanwhile). Raises ReviewError when the faceset
    or the address cannot be used.
    """
    import uvicorn

    from curate.review.app import ReviewSettings, create_app

    database = Path(database).resolve()
    check_faceset(database)
    token = None if is_loopback(host) else secrets.token_urlsafe(18)
    listener = bind(host, port)
    address = address_of(listener, host, token)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(database)
    cache = ThumbnailCache(thumbnail_dir(cache_dir))
    settings = ReviewSettings(database=database, cache_dir=cache_dir, who=default_who(),
                              guard=Guard.for_binding(host.strip("[]"), address.port, token),
                              model_dir=None if model_dir is None else Path(model_dir).resolve())
    access = FacesetAccess(database, cache_dir)
    app = create_app(settings, access)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            server_header=False, timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    if build_ahead:
        build_thumbnails_in_background(access, cache)
    if on_ready is not None:
        on_ready(address)  # the socket already listens: a browser opened now queues, it is not refused
    try:
        server.run(sockets=[listener])
    finally:
        listener.close()
