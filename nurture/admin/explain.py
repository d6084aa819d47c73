"""Why a subscriber got (or will get, or never gets) each email: the explain
timeline of the admin's subscriber page, its JSON and ``nurture explain``.

For every enrollment, one line per step of the sequence file the dispatcher
runs (the file as it is now; steps are matched by id, see
:mod:`nurture.core.decisions`), from the same functions the dispatcher and
``nurture simulate`` use:

* **Decided steps** come from the ledger: the recorded status, its reason
  (the ``when`` that was false, the render that failed, the unsubscribe that
  cancelled it), when it was decided and settled. Their timing — the wait,
  and the window, weekend, holiday or skip date that moved them — is
  recomputed with :func:`nurture.core.timing.due_at` from the same anchor
  the dispatcher used; when that no longer gives the recorded due time (the
  file was edited since) only the recorded time is shown, and says so.
* **The next step** is what :func:`~nurture.core.decisions.decide_next_step`
  answers at ``now``: due at a time, with the notes that moved it; due now;
  skipped at the next pass (the condition named); held; or an exit.
* **Later steps** are a projection by
  :func:`~nurture.core.simulation.timeline_from` (the loop ``simulate`` and
  ``plan`` run), marked as such: they assume nothing changes — no new event,
  no edit of the file, the subscriber's data as it is.
* Steps never reached say why: the enrollment ended (with its reason: goal
  reached, unsubscribed, completed), the address is blocked, or an edit put
  them before the subscriber's position.

This module reads the subscriber's file from the store and puts their
timelines together; one enrollment's timeline is :mod:`nurture.admin.timeline`.
Pure reading: nothing here writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine

from nurture.admin.timeline import EnrollmentExplain, StepLine, explain_enrollment
from nurture.core.loader import LoadedSequence
from nurture.core.planner import blocked_reason
from nurture.core.subscriber import Subscriber
from nurture.core.vocabulary import LEAVABLE, reason_names_status
from nurture.store import explain as store

__all__ = [
    "EnrollmentExplain",
    "Profile",
    "StepLine",
    "SubscriberExplain",
    "explain_enrollment",
    "explain_subscriber",
    "iso",
    "subscriber_id_of",
]


@dataclass(frozen=True)
class Profile:
    id: int
    email: str
    name: str
    first_name: str | None
    locale: str | None
    timezone: str | None
    status: str
    status_reason: str | None
    tags: tuple[str, ...]
    attributes: dict[str, Any]
    consent: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    suppressed: str | None

    @property
    def leavable(self) -> bool:
        """Whether an unsubscribe would change this subscriber."""
        return self.status in LEAVABLE

    @property
    def reason_names_status(self) -> bool:
        """Whether the status reason already says the status (``unsubscribed (...)``)."""
        return self.status_reason is not None and reason_names_status(
            self.status, self.status_reason
        )


@dataclass(frozen=True)
class SubscriberExplain:
    profile: Profile
    enrollments: tuple[EnrollmentExplain, ...]
    looked_at: datetime
    paused: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return explain_json(self)


# ------------------------------------------------------------------- the service


def explain_subscriber(
    engine: Engine, sequences: Mapping[str, LoadedSequence], subscriber_id: int, now: datetime
) -> SubscriberExplain | None:
    """The profile and the explain timeline of every enrollment, at ``now``;
    None when there is no such subscriber."""
    with engine.connect() as conn:
        found = store.subscriber_file(conn, subscriber_id, now)
    if found is None:
        return None
    row = found.row
    view = Subscriber.of(row)
    profile = Profile(
        row.id, row.email, row.name or "", row.first_name, row.locale, row.timezone,
        row.status, row.status_reason, tuple(row.tags or ()), dict(row.attributes or {}),
        {
            "source": row.consent_source, "at": row.consent_at, "ip": row.consent_ip,
            "form": row.consent_form, "user_agent": row.consent_user_agent,
            "text": row.consent_text,
        },
        row.created_at, row.updated_at, found.suppressed,
    )  # fmt: skip
    blocked = blocked_reason(
        row.status, row.email, {row.email: found.suppressed} if found.suppressed else {}
    )
    enrollments = tuple(
        explain_enrollment(
            record,
            sequences.get(record.sequence_id),
            replace(view, trigger_properties=record.trigger_properties),
            found.events,
            now,
            blocked=blocked,
            paused=found.paused.get(record.sequence_id),
        )
        for record in found.enrollments
    )
    return SubscriberExplain(profile, enrollments, now, found.paused)


def subscriber_id_of(engine: Engine, email: str) -> int | None:
    """The id of the subscriber stored under ``email`` (already normalised)."""
    with engine.connect() as conn:
        return store.subscriber_id_of(conn, email)


# ------------------------------------------------------------------------- JSON


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _line_json(line: StepLine, zone: ZoneInfo) -> dict[str, Any]:
    return {
        "step": line.step,
        "state": line.state,
        "at": iso(line.at),
        "at_local": line.at.astimezone(zone).isoformat() if line.at is not None else None,
        "why": line.why,
        "timing": line.timing,
        "projected": line.projected,
        "subject": line.subject,
        "send_id": line.send_id,
        "in_file": line.in_file,
    }


def explain_json(found: SubscriberExplain) -> dict[str, Any]:
    """The JSON of the API's explain and ``nurture explain --json``."""
    p = found.profile
    consent = {k: iso(v) if isinstance(v, datetime) else v for k, v in p.consent.items()}
    enrollments = []
    for e in found.enrollments:
        zone = ZoneInfo(e.zone)
        enrollments.append(
            {
                "id": e.id,
                "sequence": e.sequence_id,
                "version": e.version,
                "current_version": e.current_version,
                "status": e.status,
                "status_reason": e.status_reason,
                "position": e.position,
                "enrolled_at": iso(e.enrolled_at),
                "next_due_at": iso(e.next_due_at),
                "next_due_local": e.next_due_at.astimezone(zone).isoformat()
                if e.next_due_at is not None
                else None,
                "zone": e.zone,
                "notes": list(e.notes),
                "steps": [_line_json(line, zone) for line in e.steps],
            }
        )
    return {
        "subscriber": {
            "id": p.id,
            "email": p.email,
            "name": p.name,
            "locale": p.locale,
            "timezone": p.timezone,
            "status": p.status,
            "status_reason": p.status_reason,
            "tags": list(p.tags),
            "attributes": p.attributes,
            "consent": consent,
            "suppressed": p.suppressed,
        },
        "looked_at": iso(found.looked_at),
        "enrollments": enrollments,
    }
