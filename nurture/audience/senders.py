"""Who sign-up and leaving speak as: the sender of a confirmation email, the
name the pages go by, and where a subscriber can write.

A sign-up with some tags hears first from one sequence (:func:`sender_for`);
an unsubscribe or preferences page speaks for the sequence of the email its
link came from (:func:`sequence_brand`, :func:`sequence_contact`). None of it
is ever the tool's own name: subscribers never chose nurture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nurture.audience.enrollment import triggered_on_subscribe
from nurture.core.loader import LoadedSequence
from nurture.core.model import Sender

__all__ = ["page_brand", "sender_for", "sequence_brand", "sequence_contact"]


def _speaking_for(
    sequences: Mapping[str, LoadedSequence], tags: Sequence[str]
) -> LoadedSequence | None:
    """The sequence a sign-up with ``tags`` hears from first: the first enabled
    sequence (by id) the tags start, else the first enabled sequence with a
    trigger, else the first sequence; None when there is none."""
    ordered = [sequences[key] for key in sorted(sequences)]
    enabled = [loaded for loaded in ordered if loaded.sequence.enabled]
    for group in (
        [loaded for loaded in enabled if triggered_on_subscribe(loaded, tags)],
        [loaded for loaded in enabled if loaded.sequence.trigger is not None],
        ordered,
    ):
        if group:
            return group[0]
    return None


def sender_for(sequences: Mapping[str, LoadedSequence], tags: Sequence[str]) -> Sender | None:
    """Who confirmation emails come from: the sender of the sequence a sign-up
    with ``tags`` hears from first (see :func:`_speaking_for`)."""
    first = _speaking_for(sequences, tags)
    return None if first is None else first.sequence.sender


def page_brand(
    sequences: Mapping[str, LoadedSequence], tags: Sequence[str], project: str | None
) -> str:
    """The name the sign-up pages go by (their titles): the project's
    ``[brand]`` name, else the brand name of the sequence a sign-up with
    ``tags`` hears from first, else its sender's name; empty without any
    sequence. Never the tool's own name: subscribers never chose nurture."""
    return project or _name_of(_speaking_for(sequences, tags))


def sequence_brand(
    sequences: Mapping[str, LoadedSequence], sequence_id: str, project: str | None
) -> str:
    """The name the unsubscribe and preferences pages of an email of
    ``sequence_id`` go by: the one at the top of the email, that sequence's
    brand name, else the project's ``[brand]`` name (a sequence's own brand
    keys win, as in the email), else the sequence's sender's name; the
    project's name, or empty, for a sequence no longer loaded."""
    loaded = sequences.get(sequence_id)
    return _brand_name(loaded) or project or _name_of(loaded)


def sequence_contact(sequences: Mapping[str, LoadedSequence], sequence_id: str) -> str | None:
    """Where a subscriber whose emails of ``sequence_id`` the pages show can
    write: that sequence's sender's reply-to address (else its From), or,
    for a sequence no longer loaded, that of the first loaded one by id;
    None without any sequence."""
    loaded = sequences.get(sequence_id)
    if loaded is None and sequences:
        loaded = sequences[min(sequences)]
    if loaded is None:
        return None
    sender = loaded.sequence.sender
    return sender.reply_to or sender.email


def _brand_name(loaded: LoadedSequence | None) -> str | None:
    """The sequence's own ``brand.name``, if it sets one."""
    brand = None if loaded is None else loaded.sequence.brand
    return None if brand is None else brand.name


def _name_of(loaded: LoadedSequence | None) -> str:
    if loaded is None:
        return ""
    return _brand_name(loaded) or loaded.sequence.sender.name
