"""Recording clicks on tracked links and opens of the tracking pixel.

A tracked link (``/c/{token}``) carries a token signed for its send and its
target URL (:func:`nurture.sending.composer.click_url`), so only URLs that were
in that email can be targets. Each genuine hit is stored as a ``clicked`` or
``opened`` event on its send, with its user agent and whether a machine most
likely made it (:func:`nurture.core.engagement.judge`); a bad token records
nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import Connection, Engine

from nurture.audience.events import record_event
from nurture.core.engagement import BURST, EarlierClick, Hit, Verdict, judge
from nurture.core.tokens import CLICK, verify
from nurture.core.vocabulary import EventKind
from nurture.store.engagement import clicks_between, mark_machine, send_by_key


@dataclass(frozen=True)
class Recorded:
    """What one hit was: its send key and, when its send exists, the verdict."""

    key: str
    verdict: Verdict | None


def read_click_token(
    secret_keys: Sequence[str], token: str, *, now: datetime
) -> tuple[str, str] | None:
    """The (send key, target URL) of a tracked link's token, or None.

    The target must be an absolute http(s) URL: only such links are tracked.
    """
    payload = verify(secret_keys, CLICK, token, now=now)
    if payload is None:
        return None
    key, url = payload.get("k"), payload.get("u")
    if not isinstance(key, str) or not isinstance(url, str):
        return None
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return key, url


def read_open_token(secret_keys: Sequence[str], token: str, *, now: datetime) -> str | None:
    """The send key of an open pixel's token, or None."""
    payload = verify(secret_keys, CLICK, token, now=now)
    if payload is None or payload.get("o") != 1:
        return None
    key = payload.get("k")
    return key if isinstance(key, str) else None


def record_click(
    engine: Engine,
    key: str,
    url: str,
    *,
    method: str,
    user_agent: str,
    now: datetime,
) -> Recorded:
    """Record a click on ``url`` in send ``key``'s email (nothing when the send
    is gone); earlier clicks of the same scanner burst are marked machine too.

    The click is written before the other clicks on the email are read, and on
    PostgreSQL under a lock on the send row: concurrent clicks on one email
    (a scanner following every link at once) are judged one after the other,
    each seeing those before it.
    """
    with engine.begin() as conn:
        send = send_by_key(conn, key, lock=True)
        if send is None:
            return Recorded(key, None)
        hit = Hit("click", method, user_agent, now, send.sent_at, url)
        alone = judge(hit)
        event_id = f"nurture:click:{uuid.uuid4().hex}"
        _record(
            conn, send, EventKind.CLICKED, now=now, event_id=event_id,
            payload={"url": url, "method": method.upper()},
            machine=alone.machine, user_agent=user_agent,
        )  # fmt: skip
        own: list[int] = []
        earlier: list[EarlierClick] = []
        for row in clicks_between(conn, send.id, now - BURST, now + BURST):
            if row.provider_event_id == event_id:
                own.append(row.id)
            else:
                earlier.append(
                    EarlierClick(row.id, row.occurred_at, str((row.payload or {}).get("url", "")))
                )
        verdict = judge(hit, earlier)
        if verdict.also_machine:
            mark_machine(conn, [*own, *verdict.also_machine])
    return Recorded(key, verdict)


def record_open(
    engine: Engine, key: str, *, method: str, user_agent: str, now: datetime
) -> Recorded:
    """Record an open of send ``key``'s email (nothing when the send is gone)."""
    with engine.begin() as conn:
        send = send_by_key(conn, key)
        if send is None:
            return Recorded(key, None)
        verdict = judge(Hit("open", method, user_agent, now, send.sent_at))
        _record(
            conn, send, EventKind.OPENED, now=now, event_id=None,
            payload={"method": method.upper()}, machine=verdict.machine, user_agent=user_agent,
        )  # fmt: skip
    return Recorded(key, verdict)


def _record(
    conn: Connection,
    send: Any,
    kind: EventKind,
    *,
    now: datetime,
    event_id: str | None,
    payload: dict[str, Any],
    machine: bool,
    user_agent: str,
) -> None:
    """One click or open of ``send``'s email, as an event of that send."""
    record_event(
        conn,
        kind=kind,
        subscriber_id=send.subscriber_id,
        send_id=send.id,
        sequence_id=send.sequence_id,
        step_id=send.step_id,
        occurred_at=now,
        received_at=now,
        provider_event_id=event_id,
        payload=payload,
        machine=machine,
        user_agent=user_agent,
    )
