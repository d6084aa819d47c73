"""Sample subscriber data for validate, preview and simulate (read from YAML files).

A sample's time zone and locale get the checks a real subscriber's get
(:mod:`nurture.core.places`): the zone is used to compute due times and the
locale names template folders and ``preview``'s output files, so an unknown
zone or a locale such as ``../../x`` is a problem at its ``file:line:column``,
never a crash or a path outside the preview folder.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

from nurture.core.files import MEGABYTE, FileRefused
from nurture.core.loader import SAMPLE_SUFFIX, Positions, display_path, read_file, symlink_loop
from nurture.core.messages import reader_problem, unknown_key_message, yaml_problem
from nurture.core.model import Sequence
from nurture.core.places import check_locale, check_timezone
from nurture.core.subscriber import Subscriber
from nurture.core.yamltext import (
    MAX_DEPTH,
    first_surrogate,
    first_tag,
    safe_yaml,
    shape_problem,
    surrogate_message,
    tag_message,
    too_deep_brackets,
)
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

    @field_validator("email")
    @classmethod
    def _valid_email(cls, value: str) -> str:
        """An address a message can be built for, as a subscriber's must be:
        ``preview`` failed with a traceback on ``not-an-email``."""
        try:
            return validate_email(value.strip(), check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise ValueError(f"invalid email address {value!r}: {exc}") from exc

    @field_validator("name", "first_name")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        """A name goes into the To: header: one line, no control character."""
        if value is not None:
            if len(value) > _NAME_LIMIT:
                raise ValueError(f"longer than {_NAME_LIMIT} characters")
            bad = next((c for c in value if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)
            if bad is not None:
                raise ValueError(f"contains a control character or line break (U+{ord(bad):04X})")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str | None) -> str | None:
        """A blank zone is not given (the sequence's applies), as for subscribers."""
        given = _given(value)
        return None if given is None else check_timezone(given)

    @field_validator("locale")
    @classmethod
    def _known_locale(cls, value: str | None) -> str | None:
        """Normalised (``sv_se`` -> ``sv-SE``) like a subscriber's: a tag Babel
        knows can name no other folder than a locale's."""
        given = _given(value)
        return None if given is None else check_locale(given)

    def to_subscriber(self) -> Subscriber:
        subscriber = Subscriber.of(self)
        if self.trigger is None:
            return subscriber
        return replace(subscriber, trigger_properties=dict(self.trigger.properties))


def _given(value: str | None) -> str | None:
    """``value`` stripped, or None when it is missing or blank ("not given")."""
    if value is None:
        return None
    return value.strip() or None


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

MAX_SAMPLES = 50
"""The most sample subscribers one file may hold: ``validate`` renders every
step for each (2,000 took longer than 30 s)."""

_NAME_LIMIT = 200  # as a subscriber's name


def read_subscribers(path: Path, *, inside: Path | None = None) -> list[Subscriber]:
    """Read one subscriber (a mapping) or several (a list) from a YAML file.

    At most :data:`MAX_SAMPLE_BYTES`; with ``inside``, only a file in that
    folder (see :func:`nurture.core.files.read_text`). Raises SequenceError
    with every problem at its ``file:line:column``.
    """
    shown = display_path(path)  # as sequence files are shown
    try:
        text = read_file(path, limit=MAX_SAMPLE_BYTES, inside=inside)
    except FileRefused as exc:
        raise SequenceError([Diagnostic(shown, exc.line, exc.column, exc.reason)]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SequenceError([Diagnostic(shown, 1, 1, f"cannot read sample data: {exc}")]) from exc
    data = _load(text, shown)
    items = data if isinstance(data, list) else [data]
    if len(items) > MAX_SAMPLES:
        # Each sample renders every step in every locale in `validate`.
        many = f"at most {MAX_SAMPLES} sample subscribers; this file has {len(items):,}"
        raise SequenceError([Diagnostic(shown, 1, 1, many)])
    subscribers: list[Subscriber] = []
    errors: list[tuple[tuple[str | int, ...], str]] = []
    for index, item in enumerate(items):
        try:
            subscribers.append(SampleSubscriber.model_validate(item).to_subscriber())
        except ValidationError as exc:
            inside_list = (index,) if isinstance(data, list) else ()
            for error in exc.errors():
                loc = tuple(error["loc"])
                where = ".".join(str(part) for part in loc)
                message = str(error["msg"]).removeprefix("Value error, ")
                if error.get("type") == "extra_forbidden" and loc:
                    message = _unknown_key(str(loc[-1]), SampleSubscriber, loc[:-1])
                what = f"subscriber {index + 1}: " + (f"{where}: " if where else "")
                errors.append(((*inside_list, *loc), what + message))
    if errors:
        at = _positions(text)
        raise SequenceError([Diagnostic(shown, *at(where), message) for where, message in errors])
    return subscribers


def _unknown_key(key: str, model: type[BaseModel], parent: tuple[str | int, ...]) -> str:
    """An unknown key of a sample subscriber, with the nearest known one."""
    if parent == ("trigger",):
        model = SampleTrigger
    elif parent:
        return f"unknown key {key!r}"
    return unknown_key_message(key, list(model.model_fields))


def _load(text: str, shown: str) -> Any:
    """The sample file's values, or SequenceError at the place YAML goes wrong:
    as sequence files are read, too deep, alias bombs and tags are refused."""

    def refuse(line: int, column: int, message: str) -> SequenceError:
        return SequenceError([Diagnostic(shown, line, column, message)])

    deep = too_deep_brackets(text)
    if deep is not None:
        raise refuse(*deep, f"the file nests lists and mappings more than {MAX_DEPTH} deep")
    try:
        data = safe_yaml().load(text)
    except MarkedYAMLError as exc:
        line, column, problem = yaml_problem(exc, text)
        raise refuse(line, column, f"cannot read sample data: {problem}") from exc
    except ReaderError as exc:
        line, column, problem = reader_problem(exc, text)
        raise refuse(line, column, f"cannot read sample data: {problem}") from exc
    except RecursionError as exc:
        message = f"the file nests lists and mappings more than {MAX_DEPTH} deep"
        raise refuse(1, 1, message) from exc
    except (YAMLError, ValueError, TypeError, AttributeError, KeyError) as exc:
        raise refuse(1, 1, f"cannot read sample data: invalid YAML ({exc})") from exc
    tag = first_tag(text)
    if tag is not None:
        raise refuse(tag[0], tag[1], tag_message(tag[2]))
    shape = shape_problem(data)
    if shape is not None:
        raise refuse(1, 1, shape)
    surrogate = first_surrogate(data)
    if surrogate is not None:
        where, char = surrogate
        raise refuse(*_positions(text)(where), surrogate_message(char))
    return data


def _positions(text: str) -> Callable[[tuple[str | int, ...]], tuple[int, int]]:
    """Where a key path is in the sample file's ``text`` (1-based line, column).

    The text is parsed again, with positions, only when there is a problem to
    place: the round-trip loader's values (ordered maps, tagged scalars) are
    not what the samples should hold. (1, 1) when it cannot be parsed so.
    """
    try:
        root = YAML(typ="rt").load(text)
    except (YAMLError, ValueError, TypeError, AttributeError, KeyError, RecursionError):
        return lambda _: (1, 1)
    return Positions(root, text).of


def samples_for(sequence: Sequence, sequence_path: Path) -> list[Subscriber]:
    """``<id>.sample.yaml`` beside the sequence file, else the built-in sample."""
    sample = sequence_path.with_name(sequence.id + SAMPLE_SUFFIX)
    # A sample file in a symlink loop is reported, not silently replaced.
    if sample.is_file() or symlink_loop(sample):
        return read_subscribers(sample, inside=sequence_path.parent)
    return builtin_samples(sequence)
