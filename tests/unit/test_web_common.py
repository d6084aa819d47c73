"""The web edge's shared helpers: bounded bodies, the client address behind a
trusted proxy, security headers on every response."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from nurture.web.common import SECURITY_HEADERS, add_security_headers, client_address, read_body


def _app(trusted: list[str]) -> FastAPI:
    app = FastAPI()
    add_security_headers(app)

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, object]:
        body = await read_body(request, limit=10)
        return {"size": len(body), "client": client_address(request, trusted)}

    return app


def test_a_body_within_the_limit_is_read_and_a_longer_one_is_413() -> None:
    client = TestClient(_app([]))
    assert client.post("/echo", content=b"0123456789").json()["size"] == 10
    refused = client.post("/echo", content=b"0123456789A")
    assert refused.status_code == 413


def test_a_chunked_body_over_the_limit_is_refused() -> None:
    client = TestClient(_app([]))

    def chunks() -> object:
        yield b"012345"
        yield b"6789AB"

    assert client.post("/echo", content=chunks()).status_code == 413  # type: ignore[arg-type]


def test_forwarded_for_is_ignored_unless_the_peer_is_trusted() -> None:
    headers = {"X-Forwarded-For": "203.0.113.9"}
    untrusted = TestClient(_app([]), client=("198.51.100.7", 5000))
    assert untrusted.post("/echo", headers=headers).json()["client"] == "198.51.100.7"
    trusted = TestClient(_app(["198.51.100.0/24"]), client=("198.51.100.7", 5000))
    assert trusted.post("/echo", headers=headers).json()["client"] == "203.0.113.9"


def test_a_spoofed_leftmost_hop_is_not_believed() -> None:
    # The client wrote "1.2.3.4" itself; our proxy appended the address it saw.
    client = TestClient(_app(["10.0.0.0/8"]), client=("10.0.0.2", 5000))
    headers = {"X-Forwarded-For": "1.2.3.4, 203.0.113.9, 10.0.0.5"}
    assert client.post("/echo", headers=headers).json()["client"] == "203.0.113.9"


def test_a_garbled_forwarded_header_falls_back_to_the_peer() -> None:
    client = TestClient(_app(["10.0.0.0/8"]), client=("10.0.0.2", 5000))
    headers = {"X-Forwarded-For": "<script>"}
    assert client.post("/echo", headers=headers).json()["client"] == "10.0.0.2"


def test_every_response_carries_the_security_headers() -> None:
    response = TestClient(_app([])).post("/echo", content=b"x")
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value


def test_the_api_docs_may_load_swagger_ui_and_nothing_else_may() -> None:
    app = _app([])
    client = TestClient(app)
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "https://cdn.jsdelivr.net" in docs.headers["Content-Security-Policy"]
    other = client.post("/echo", content=b"x")
    assert "cdn.jsdelivr.net" not in other.headers["Content-Security-Policy"]


def test_a_forwarded_ipv6_zone_id_is_garbled_and_falls_back_to_the_peer() -> None:
    """ipaddress accepts any text after a zone's '%': it reached the consent
    record (controls, kilobytes) through a trusted proxy's header."""
    client = TestClient(_app(["10.0.0.0/8"]), client=("10.0.0.2", 5000))
    headers = {"X-Forwarded-For": "fe80::1%" + "A" * 3000 + "\x1b[31m"}
    assert client.post("/echo", headers=headers).json()["client"] == "10.0.0.2"
