"""Reading back stored sequence definitions (``sequence_version``).

Recorded by :func:`nurture.store.queries.remember_versions` whenever an
enrollment or a dispatch pass meets a version first; read here when a
sequence file is broken and a new subscriber must still be enrolled.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from nurture.store.tables import SequenceVersionRow


def latest_version(session: Session, sequence_id: str) -> tuple[str, dict[str, Any]] | None:
    """The most recently first-seen version of ``sequence_id`` and its definition."""
    row = session.exec(
        select(SequenceVersionRow)
        .where(SequenceVersionRow.sequence_id == sequence_id)
        .order_by(col(SequenceVersionRow.first_seen_at).desc(), col(SequenceVersionRow.version))
        .limit(1)
    ).first()
    return None if row is None else (row.version, dict(row.definition))
