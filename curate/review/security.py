"""The review server's guards, as one ASGI middleware in front of every route.

- **Host**: only the names the server was started for (127.0.0.1, localhost, [::1] or the
  --host given) are answered, so a web page that rebinds its own domain to 127.0.0.1 (DNS
  rebinding) cannot read the faceset.
- **Token**: when the server listens beyond loopback (--host), every request must carry the
  token printed in the URL: as `?token=`, as the `X-Facesmith-Token` header, or as the cookie the
  page receives on its first load (HttpOnly, SameSite=Strict, so other sites never send it).
- **Writes**: POST needs the `X-Facesmith-Request` header (a cross-origin page cannot add a
  custom header without a CORS preflight, which this server never grants), an Origin, when the
  browser sends one, equal to the server's own, and a JSON body.
- Every answer carries a strict Content-Security-Policy (scripts, styles and images from the
  server itself only) and never leaks the token in a Referer.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

TOKEN_COOKIE = "facesmith_token"
TOKEN_HEADER = "x-facesmith-token"
REQUEST_HEADER = "x-facesmith-request"
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}

SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


@dataclass(frozen=True)
class Guard:
    """What the middleware allows."""

    hosts: frozenset[str]  # accepted Host header values (name:port); empty: any (bound to all addresses)
    token: str | None  # required on every request when set

    @classmethod
    def for_binding(cls, host: str, port: int, token: str | None) -> "Guard":
        names = set(LOOPBACK_NAMES)
        if host in ("0.0.0.0", "::", ""):
            return cls(frozenset(), token)  # any name reaches it: the token is the guard
        names.add(f"[{host}]" if ":" in host and not host.startswith("[") else host)
        return cls(frozenset(f"{name}:{port}" for name in names), token)


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class GuardMiddleware:
    """Refuses what the Guard does not allow, before any route runs; adds the security headers."""

    def __init__(self, app, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        set_cookie = self._token_from_query(scope) is not None and self.guard.token is not None

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                if set_cookie and refusal is None:
                    headers.append((b"set-cookie", f"{TOKEN_COOKIE}={self.guard.token}; Path=/; HttpOnly; "
                                                   f"SameSite=Strict".encode()))
                message = {**message, "headers": headers}
            await send(message)

        if refusal is not None:
            status, text = refusal
            body = ('{"error": "%s"}' % text).encode()
            await send_with_headers({"type": "http.response.start", "status": status,
                                     "headers": [(b"content-type", b"application/json"),
                                                 (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send_with_headers)

    def _token_from_query(self, scope: dict) -> str | None:
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        return values[0] if values else None

    def _has_token(self, scope: dict) -> bool:
        expected = self.guard.token or ""
        offered = [self._token_from_query(scope), _header(scope, TOKEN_HEADER.encode())]
        cookie = _header(scope, b"cookie")
        if cookie:
            try:
                morsel = SimpleCookie(cookie).get(TOKEN_COOKIE)
            except Exception:  # http.cookies raises CookieError on malformed input
                morsel = None
            offered.append(morsel.value if morsel else None)
        return any(value is not None and hmac.compare_digest(value.encode(), expected.encode())
                   for value in offered)

    def _refusal(self, scope: dict) -> tuple[int, str] | None:
        host = _header(scope, b"host")
        if self.guard.hosts and (host or "").lower() not in self.guard.hosts:
            return 400, "unknown host: open the address the server printed"
        if self.guard.token is not None and not self._has_token(scope):
            return 403, "this server needs the token from the address it printed"
        if scope["method"] in WRITE_METHODS:
            if _header(scope, REQUEST_HEADER.encode()) is None:
                return 403, "writes need the X-Facesmith-Request header"
            origin = _header(scope, b"origin")
            if origin is not None and origin.lower() != f"http://{(host or '').lower()}":
                return 403, "cross-origin writes are refused"
            content_type = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
            if content_type != "application/json":
                return 415, "writes take a JSON body"
        return None
