"""Sample subscriber data for validate, preview and simulate (read from YAML files)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from nurture.core.files import MEGABYTE, FileRefused, read_text
from nurture.core.loader import SAMPLE_SUFFIX
from nurture.core.model import Sequence
from nurture.core.subscriber import Subscriber
from nurture.errors import Diagnostic, SequenceError


class SampleTrigger(BaseModel):
    """The app event a sample subscriber was enrolled by (``trigger.properties``)."""

    model_config = ConfigDict(extra="forbid")

    event: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


class SampleSubscriber(BaseModel):
    """One subscriber in a ``<sequence>.sample.yaml`` or ``--data`` file."""

    model_config = ConfigDict(extra="forbid")

    email: str = "sample@example.com"
    name: str = ""
    first_name: str | None = None
    locale: str | None = None
    timezone: str | None = None
    tags: list[str] = Field(default_factory=list)
    attributes: dict[str, Any] = Field(default_factory=dict)
    trigger: SampleTrigger | None = None
    """For a sequence triggered by an app event: that event, as if it was posted."""

    def to_subscriber(self) -> Subscriber:
        subscriber = Subscriber.of(self)
        if self.trigger is None:
            return subscriber
        return replace(subscriber, trigger_properties=dict(self.trigger.properties))


def builtin_samples(sequence: Sequence) -> list[Subscriber]:
    """Used when a sequence has no sample file: one subscriber in its own locale."""
    return [
        Subscriber(
            email="sample.subscriber@example.com",
            name="Sam Sample",
            locale=sequence.locale,
            timezone=sequence.timezone,
            tags=tuple(sequence.trigger.tags) if sequence.trigger else (),
            attributes={"company": "Sample Company"},
        )
    ]


MAX_SAMPLE_BYTES = MEGABYTE


def read_subscribers(path: Path, *, inside: Path | None = None) -> list[Subscriber]:
    """Read one subscriber (a mapping) or several (a list) from a YAML file.

    At most :data:`MAX_SAMPLE_BYTES`; with ``inside``, only a file in that
    folder (see :func:`nurture.core.files.read_text`).
    """
    try:
        data = YAML(typ="safe").load(read_text(path, limit=MAX_SAMPLE_BYTES, inside=inside))
    except FileRefused as exc:
        raise SequenceError([Diagnostic(str(path), exc.line, exc.column, exc.reason)]) from exc
    except (OSError, UnicodeDecodeError, YAMLError) as exc:
        raise SequenceError(
            [Diagnostic(str(path), 1, 1, f"cannot read sample data: {exc}")]
        ) from exc
    items = data if isinstance(data, list) else [data]
    subscribers: list[Subscriber] = []
    for index, item in enumerate(items):
        try:
            subscribers.append(SampleSubscriber.model_validate(item).to_subscriber())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise SequenceError(
                [Diagnostic(str(path), 1, 1, f"subscriber {index + 1}: {where}: {first['msg']}")]
            ) from exc
    return subscribers


def samples_for(sequence: Sequence, sequence_path: Path) -> list[Subscriber]:
    """``<id>.sample.yaml`` beside the sequence file, else the built-in sample."""
    sample = sequence_path.with_name(sequence.id + SAMPLE_SUFFIX)
    if sample.is_file():
        return read_subscribers(sample, inside=sequence_path.parent)
    return builtin_samples(sequence)
