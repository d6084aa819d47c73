"""The sequence file format (version 1), as a pydantic model.

The field names here are the public contract that marketers' files and tooling
rely on: keep them. Every model forbids unknown keys so a typo is an error at
its line, not a silently ignored setting. The JSON Schema published at
``schemas/sequence.schema.json`` is generated from these classes. The timing
rules a step carries (wait, send window, skip dates) are in
:mod:`nurture.core.schedule`.
"""

from __future__ import annotations

import re
from datetime import time
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from nurture.core.places import check_locale, check_timezone
from nurture.core.schedule import (
    WAIT_SCHEMA,
    Delay,
    LocalTime,
    SendWindow,
    SkipDates,
    Strict,
    parse_time,
)

SLUG = r"^[a-z0-9][a-z0-9_-]*$"
ID_LIMIT = 100
_LOCALE_TAG = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")
"""The longest sequence or step id: the database's columns hold 100."""
TEMPLATE_NAME_LIMIT = 200
"""The longest template name (a path inside ``templates/``)."""
_HEX_COLOUR = re.compile(r"^#([0-9a-f]{3}|[0-9a-f]{6})$")


Localized = str | dict[str, str]
"""A text, or a mapping of locale to text (for sequences written in several languages)."""


def localized(value: Localized, locale: str, default_locale: str) -> str:
    """Pick ``value`` for ``locale``, falling back to its language, then the default."""
    if isinstance(value, str):
        return value
    for candidate in (locale, locale.split("-")[0].split("_")[0], default_locale):
        if candidate in value:
            return value[candidate]
    return next(iter(value.values()))


def _parse_wait(value: Any) -> Delay:
    return Delay.parse(value)


class Sender(Strict):
    """Who the email is from; ``reply_to`` defaults to ``email``."""

    name: str = Field(min_length=1)
    email: str
    reply_to: str | None = None

    @field_validator("email", "reply_to")
    @classmethod
    def _valid_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return validate_email(value, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise ValueError(f"invalid email address {value!r}: {exc}") from exc


class Brand(Strict):
    """How the emails look: the name or logo at the top, and the brand colour.

    Given in a sequence file (``brand:``) or for every sequence in
    ``nurture.toml`` (``[brand]``); a sequence's keys win over the project's,
    the logo's size and text going with the logo they describe (see
    :func:`merge_brands`). Nothing is fetched: ``logo_width`` and
    ``logo_height`` are written into the ``<img>`` as given.
    """

    name: str | None = Field(
        default=None, min_length=1, description="Shown at the top when there is no logo."
    )
    logo_url: Annotated[
        str | None,
        WithJsonSchema(
            {
                "type": "string",
                "pattern": "^https://",
                "description": "Absolute https:// address of the logo image (PNG or JPEG).",
            }
        ),
    ] = None
    logo_width: int | None = Field(
        default=None,
        ge=1,
        le=520,
        description="Width to show the logo at, in pixels (half the image's own width for "
        "sharp high-density screens); without it the logo shows at its own size.",
    )
    logo_height: int | None = Field(
        default=None, ge=1, le=400, description="Height to show the logo at, in pixels."
    )
    logo_alt: str | None = Field(
        default=None,
        min_length=1,
        description="Text shown when images are blocked; defaults to the brand name.",
    )
    colour: Annotated[
        str | None,
        WithJsonSchema(
            {
                "type": "string",
                "pattern": "^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$",
                "description": 'Hex colour, quoted: "#0b57d0" or "#06c"; used for the top '
                "bar, buttons and links.",
            }
        ),
    ] = None

    @field_validator("logo_url")
    @classmethod
    def _https_logo(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.netloc:
            raise ValueError(
                f"must be an absolute https:// address (mail clients block images over "
                f"http), got {value!r}"
            )
        return value

    @field_validator("colour", mode="before")
    @classmethod
    def _hex_colour(cls, value: Any) -> str:
        if value is None:
            # YAML reads an unquoted `colour: #0b57d0` as an empty value and a comment.
            raise ValueError(
                'empty: write the colour in quotes, such as "#0b57d0" (YAML reads an '
                "unquoted # as the start of a comment)"
            )
        text = str(value).strip().lower()
        if not isinstance(value, str) or not _HEX_COLOUR.match(text):
            raise ValueError(
                f'not a hex colour: write "#rrggbb" or "#rgb", such as "#0b57d0", got {value!r}'
            )
        return text

    @model_validator(mode="after")
    def _logo_details_need_a_logo(self) -> Brand:
        details = [key for key in ("logo_width", "logo_height", "logo_alt") if getattr(self, key)]
        if details and self.logo_url is None:
            verb = "is" if len(details) == 1 else "are"
            raise ValueError(f"{', '.join(details)} {verb} for a logo: give logo_url too")
        return self


_LOGO_KEYS = ("logo_url", "logo_width", "logo_height", "logo_alt")


def merge_brands(own: Brand | None, project: Brand | None) -> Brand | None:
    """A sequence's brand over the project's, key by key.

    The logo's size and alt text belong to the logo they were written for, so
    a sequence with its own ``logo_url`` takes none of them from the project.
    """
    if own is None or project is None:
        return own or project
    taken = {key: getattr(own, key) for key in Brand.model_fields if getattr(own, key) is not None}
    inherited = {
        key: getattr(project, key)
        for key in Brand.model_fields
        if key not in taken and not (own.logo_url is not None and key in _LOGO_KEYS)
    }
    return Brand.model_construct(**inherited, **taken)


TRIGGER_EVENT_PATTERN = r"^[a-z][a-z0-9_.-]{0,99}$"
"""What an app event's name may be (``trial_started``); also checked by the API."""


class Trigger(Strict):
    """Who is enrolled automatically: on ``event`` when they carry every tag.

    ``subscribed`` (the default) enrolls on sign-up or import; any other name
    (``trial_started``) is an app event posted to ``POST /api/v1/events``, whose
    properties templates and ``when`` conditions read as ``trigger.properties``.
    """

    event: str = Field(default="subscribed", pattern=TRIGGER_EVENT_PATTERN)
    tags: list[str] = Field(default_factory=list)

    @property
    def on_subscribe(self) -> bool:
        return self.event == "subscribed"


class Goal(Strict):
    """Reaching the goal ends the sequence (status converted)."""

    event: Annotated[
        Literal["purchased"],
        # Editors must accept the old spelling too, or they would flag files
        # that nurture itself loads.
        WithJsonSchema(
            {
                "type": "string",
                "enum": ["purchased", "purchase"],
                "description": "The event that reaches the goal ('purchase' is an old "
                "spelling of 'purchased').",
            }
        ),
    ] = "purchased"
    product: str | None = Field(default=None, description="Without it, any purchase counts.")

    @field_validator("event", mode="before")
    @classmethod
    def _old_spelling(cls, value: object) -> object:
        # Before event kinds had one vocabulary (nurture.core.vocabulary.EventKind)
        # the goal was spelled `purchase`; existing files keep loading.
        return "purchased" if value == "purchase" else value


class Offer(Strict):
    """The entry-level offer: what it is, what it costs, where to buy it."""

    name: Localized
    price: str = Field(min_length=1)
    checkout_url: str
    description: str | None = None

    @field_validator("checkout_url")
    @classmethod
    def _https(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.netloc:
            raise ValueError(f"checkout_url must be an absolute https:// URL, got {value!r}")
        return value


class Step(Strict):
    """One email of the sequence."""

    id: str = Field(
        pattern=SLUG, max_length=ID_LIMIT, description="Stable id: the identity of the step."
    )
    wait: Annotated[Delay, WAIT_SCHEMA]
    at: LocalTime | None = Field(default=None, description="Local time of day, 'HH:MM'.")
    when: str | None = Field(
        default=None, description="Sandboxed Jinja expression; false skips the step."
    )
    subject: Localized = Field(
        description="Jinja template for the subject; a string, or a mapping of locale to string."
    )
    preheader: Localized | None = Field(default=None, description="Inbox preview text.")
    template: str = Field(min_length=1)
    send_window: SendWindow | None = None
    skip_dates: SkipDates | None = None
    offer: Offer | None = None

    @field_validator("wait", mode="before")
    @classmethod
    def _wait(cls, value: Any) -> Delay:
        return _parse_wait(value)

    @field_validator("at", mode="before")
    @classmethod
    def _at(cls, value: Any) -> time | None:
        return None if value is None else parse_time(value)

    @field_validator("template")
    @classmethod
    def _template_kind(cls, value: str) -> str:
        if not value.endswith((".html", ".md")):
            raise ValueError(f"template {value!r} must be a .html or .md file")
        if value.startswith("/") or ".." in value.split("/"):
            raise ValueError(f"template {value!r} must be a path inside templates/")
        if len(value) > TEMPLATE_NAME_LIMIT:
            # Also keeps every name within what a file system can look up
            # (a 300-character one ended in "File name too long").
            raise ValueError(f"a template name is at most {TEMPLATE_NAME_LIMIT} characters")
        return value


MAX_STEPS = 100
"""The most steps one sequence may have: a nurture series is a handful of
emails, and a file of thousands (generated by mistake) took seconds to check."""


class Sequence(Strict):
    """A nurture sequence: one file, one series of emails ending in an offer."""

    version: Literal[1] = Field(description="Format version of this file.")
    id: str = Field(
        pattern=SLUG,
        max_length=ID_LIMIT,
        description="Stable slug; the identity of the sequence.",
    )
    enabled: bool = Field(
        default=True,
        description="false: nobody is enrolled and nothing is sent (validate, preview and "
        "simulate still work); `nurture init` writes its example this way.",
    )
    name: str = Field(min_length=1)
    description: str | None = None
    sender: Sender
    brand: Brand | None = Field(
        default=None,
        description="The name or logo at the top of every email and the brand colour; "
        "keys left out come from [brand] in nurture.toml.",
    )
    locale: str = Field(default="en", description="Default content locale.")
    timezone: str = Field(default="UTC", description="Used when a subscriber has none.")
    trigger: Trigger | None = None
    send_window: SendWindow | None = None
    skip_dates: SkipDates | None = None
    goal: Goal | None = None
    steps: list[Step] = Field(
        min_length=1,
        max_length=MAX_STEPS,
        description=f"The emails, in order; at most {MAX_STEPS}.",
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        # The same check as for subscribers and `simulate --tz` (bug: this one
        # used to accept "localtime" and "Factory").
        return check_timezone(value)

    @field_validator("locale")
    @classmethod
    def _locale(cls, value: str) -> str:
        # Kept as written (step texts are keyed by this exact tag), so it must be
        # written as the tag it names: "en_US.UTF-8" or "und" passed the check,
        # then templates were looked up in no locale folder at all.
        tag = check_locale(value)
        if tag != value.replace("_", "-"):  # sv_SE is sv-SE as written; en_US.UTF-8 is not
            raise ValueError(f"write the locale {value!r} as the tag {tag!r}")
        # "sr@latin" is Babel's, but names no template folder.
        if not _LOCALE_TAG.fullmatch(value.replace("_", "-")):
            raise ValueError(f"write the locale {value!r} as a tag such as sv or en-GB")
        return value

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Sequence:
        # Cross-field rules. The loader passes a list in the validation context
        # to collect them with their paths (so each names its own line);
        # anywhere else the first one raises.
        problems = sequence_problems(self)
        sink = info.context.get("problems") if isinstance(info.context, dict) else None
        if isinstance(sink, list):
            sink.extend(problems)
        elif problems:
            path, message = problems[0]
            raise ValueError(f"{'.'.join(str(p) for p in path)}: {message}")
        return self

    def window_for(self, step: Step) -> SendWindow | None:
        return step.send_window if step.send_window is not None else self.send_window

    def skip_dates_for(self, step: Step) -> SkipDates | None:
        return step.skip_dates if step.skip_dates is not None else self.skip_dates

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    @property
    def offer_step(self) -> Step:
        return self.steps[-1]


Path = tuple[str | int, ...]


def sequence_problems(seq: Sequence) -> list[tuple[Path, str]]:
    """Rules that span fields, each with the path of the key to blame."""
    problems: list[tuple[Path, str]] = []
    index_of: dict[str, int] = {}
    for i, step in enumerate(seq.steps):
        if step.id in index_of:
            problems.append(
                (
                    ("steps", i, "id"),
                    f"duplicate step id {step.id!r} (first at step {index_of[step.id] + 1})",
                )
            )
        else:
            index_of[step.id] = i
        window = seq.window_for(step)
        if step.at is not None and window is not None and not window.contains(step.at):
            problems.append(
                (
                    ("steps", i, "at"),
                    f"at {step.at:%H:%M} is outside the send window "
                    f"{window.start:%H:%M}-{window.end:%H:%M}",
                )
            )
        for field in ("subject", "preheader"):
            value = getattr(step, field)
            if isinstance(value, dict) and seq.locale not in value:
                problems.append(
                    (("steps", i, field), f"no text for the sequence's locale {seq.locale!r}")
                )
    last = len(seq.steps) - 1
    if seq.steps[last].offer is None:
        problems.append(
            (
                ("steps", last),
                f"the sequence must end in an offer step: give the last step "
                f"{seq.steps[last].id!r} an 'offer' with name, price and an https checkout_url",
            )
        )
    return problems
