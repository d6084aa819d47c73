"""Whether a click or an open was a person or a machine.

Link scanners (Barracuda, Proofpoint, Mimecast, Microsoft Defender's Safe
Links) fetch every link of an email as it is delivered, and image proxies
(Gmail's, Apple Mail Privacy Protection) fetch pixels before or without anyone
reading. Those hits are kept (with their user agent) but marked ``machine`` and
not counted as engagement. A hit is a machine's when:

- its user agent is empty or names a known scanner, proxy, crawler or HTTP
  library (:data:`MACHINE_AGENTS`; for opens also :data:`PROXY_AGENTS`);
- it is a ``HEAD`` request (a browser following a link sends ``GET``);
- it came within :data:`AFTER_SENT` of the email being sent (delivery-time
  scanning; nobody reads and clicks that fast), or before the send was even
  confirmed (``sent_at`` not yet written: the email is just going out);
- it is a click that, with the other clicks on the same email within
  :data:`BURST`, hits :data:`BURST_LINKS` or more different links (a scanner
  follows every link at once; the earlier clicks of the burst become machine
  clicks too).

Pure: the caller gives the times, including now.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

AFTER_SENT = timedelta(seconds=10)
"""A hit this soon after the send was settled is delivery-time scanning."""

BURST = timedelta(seconds=3)
"""Clicks on one email this close together form one burst."""

BURST_LINKS = 2
"""Different links hit in one burst that make it a scanner's."""

MACHINE_AGENTS = re.compile(
    r"barracuda|proofpoint|mimecast|safelinks|safe ?links|defender|microsoft office|"
    r"ms-office|msoffice|trendmicro|trend micro|symantec|forcepoint|sophos|fortiguard|"
    r"(?<!cu)bot\b|bot/|spider|crawl|slurp|scanner|headless|phantomjs|facebookexternalhit|"
    r"python-requests|python-urllib|python/|aiohttp|httpx|curl|wget|go-http-client|java/|"
    r"okhttp|libwww|apache-httpclient|axios|node-fetch|googleimageproxy|yahoomailproxy|"
    r"ymailproxy|feedfetcher|whatsapp/",
    re.IGNORECASE,
)
"""User agents of link scanners, crawlers, proxies and HTTP libraries."""

PROXY_AGENTS = re.compile(r"^mozilla/5\.0$", re.IGNORECASE)
"""For opens: the bare ``Mozilla/5.0`` of Apple Mail Privacy Protection's
prefetch (a real browser names itself in more detail)."""


@dataclass(frozen=True)
class Hit:
    """One request to a tracked link or pixel."""

    kind: str  # "click" or "open"
    method: str
    user_agent: str
    at: datetime
    sent_at: datetime | None
    url: str | None = None


@dataclass(frozen=True)
class EarlierClick:
    """A click already recorded on the same email."""

    event_id: int
    at: datetime
    url: str


@dataclass(frozen=True)
class Verdict:
    machine: bool
    reason: str | None
    also_machine: tuple[int, ...] = ()
    """Earlier clicks (event ids) that this hit shows were a machine's too."""


def agent_reason(user_agent: str, kind: str) -> str | None:
    """Why ``user_agent`` is a machine's, or None."""
    agent = user_agent.strip()
    if not agent:
        return "no user agent"
    found = MACHINE_AGENTS.search(agent)
    if found:
        return f"user agent names {found.group(0).lower()!r}"
    if kind == "open" and PROXY_AGENTS.match(agent):
        return "user agent of an image proxy"
    return None


def judge(hit: Hit, earlier: Sequence[EarlierClick] = ()) -> Verdict:
    """Whether ``hit`` was a machine's, why, and which ``earlier`` clicks on the
    same email it shows were a machine's too."""
    burst: tuple[int, ...] = ()
    urls: set[str] = set()
    if hit.kind == "click" and hit.url is not None:
        near = [click for click in earlier if abs(hit.at - click.at) <= BURST]
        urls = {hit.url, *(click.url for click in near)}
        if len(urls) >= BURST_LINKS:
            burst = tuple(click.event_id for click in near)
    reason = agent_reason(hit.user_agent, hit.kind)
    if reason is None and hit.method.upper() == "HEAD":
        reason = "HEAD request"
    if reason is None and hit.sent_at is None:
        reason = "before the send was confirmed"
    elif reason is None and hit.sent_at is not None and hit.at - hit.sent_at <= AFTER_SENT:
        reason = f"within {AFTER_SENT.seconds} s of sending"
    if reason is None and burst:
        reason = f"{len(urls)} links of the email within {BURST.seconds} s"
    return Verdict(reason is not None, reason, burst)
