"""What every route of the web edge shares: bounded request bodies, the
client's address behind a trusted proxy, and the security headers.

Every public endpoint reads its body through :func:`read_body`, so an
oversized body is refused with 413 before it is parsed, and every response
carries :data:`SECURITY_HEADERS` (added by :func:`add_security_headers`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from functools import lru_cache

from fastapi import FastAPI, HTTPException, Request
from starlette.responses import Response

DEFAULT_BODY_LIMIT = 64 * 1024
"""Bytes a form or a small JSON body may have; webhooks pass their own limit."""

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data: https:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Cross-Origin-Opener-Policy": "same-origin",
}

DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "img-src 'self' data: https://fastapi.tiangolo.com; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
"""The API documentation pages (``/docs``, ``/redoc``) load Swagger UI and
ReDoc from a CDN, so they get a policy that allows exactly that."""


async def read_body(request: Request, limit: int = DEFAULT_BODY_LIMIT) -> bytes:
    """The raw request body, or 413 when it is longer than ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before anything is
    read; otherwise the body is read in chunks and refused as soon as it
    passes the limit (a chunked upload declares no length).
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise HTTPException(status_code=400, detail="bad Content-Length") from None
        if length > limit:
            raise HTTPException(status_code=413, detail=f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(status_code=413, detail=f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@lru_cache(maxsize=32)
def _networks(
    trusted: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted)


def _is_trusted(address: str, trusted: Sequence[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in _networks(tuple(trusted)))


def client_address(request: Request, trusted_proxies: Sequence[str]) -> str:
    """The client's IP address.

    The peer's address, unless the peer is one of ``trusted_proxies``: then
    ``X-Forwarded-For`` is read from the right, skipping trusted proxies, and
    the first address not trusted is the client (the leftmost entries can be
    written by anyone, so they are believed only through trusted hops).
    """
    peer = request.client.host if request.client else "unknown"
    if not trusted_proxies or not _is_trusted(peer, trusted_proxies):
        return peer
    forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a garbled header: fall back to what we saw
        if "%" in hop:
            # An IPv6 zone id: the library takes any text after the "%"
            # (controls, kilobytes), and no proxy forwards one. Garbled too.
            return peer
        if not _is_trusted(hop, trusted_proxies):
            return hop
    return hops[0] if hops else peer


def add_security_headers(app: FastAPI) -> None:
    """Every response gets :data:`SECURITY_HEADERS` (a route may set its own CSP)."""

    @app.middleware("http")
    async def _headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        if request.url.path in ("/docs", "/redoc"):
            response.headers.setdefault("Content-Security-Policy", DOCS_CSP)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response
