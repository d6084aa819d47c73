"""A lone surrogate made by a template (``{{ '\\ud800' }}``) is a render error.

No UTF-8 can carry one, so no email can: the render refuses it at the
template's line (a subject or preheader at its key in the sequence file), so
``validate`` reports it, ``preview`` says so without a traceback and the
email fails at dispatch. What reaches a header some other way is refused by
the composer, before any transport writes the bytes.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nurture.core.loader import LoadedSequence, parse_sequence
from nurture.core.rendering import ComposedEmail, RenderedEmail, TemplateLibrary
from nurture.core.subscriber import Subscriber
from nurture.errors import Diagnostic, RenderError
from nurture.sending.composer import Composer
from tests.factories import sequence_dict
from tests.unit import test_rendering
from tests.unit.test_rendering import (
    ADDRESS,
    OFFER_HTML,
    render,
    sequence,
    validate,
    write,
)

NOW = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
LONE = "the email has text that is not valid Unicode (a lone surrogate U+{})"

# The rendering tests' folder (layout, en/welcome.md, en/offer.html), shared
# rather than written again here.
templates = test_rendering.templates


@pytest.mark.parametrize(
    ("files", "step", "where", "code"),
    [
        ({"en/welcome.md": "Hi {{ '\\ud800' }}"}, 0, "en/welcome.md:1", "D800"),
        ({"en/welcome.md": "Hi,\n\n{% set x = '\\udfff' %}said {{ x }}\n"}, 0,
         "en/welcome.md:3", "DFFF"),
        ({"en/offer.html": OFFER_HTML.replace("<h1>", "<h1>{{ '\\udcff' }}")}, 1,
         "en/offer.html:3", "DCFF"),
        ({"en/offer.txt": "Hi,\n{{ '\\ud801' }}\n"}, 1, "en/offer.txt:2", "D801"),
        # Markup is not looked at value by value: found in the whole email.
        ({"en/welcome.md": "Hi\n\n{{ '\\ud800'|safe }}"}, 0, "en/welcome.md:1", "D800"),
    ],
    ids=["markdown", "markdown-set", "html", "txt", "safe"],
)  # fmt: skip
def test_a_surrogate_in_a_template_names_the_template(
    templates: Path, files: dict[str, str], step: int, where: str, code: str
) -> None:
    write(templates, files)
    with pytest.raises(RenderError, match=re.escape(f"{where}:1: {LONE.format(code)}")):
        render(templates, step=step)
    file, line = where.split(":")
    expected = Diagnostic(str(templates / file), int(line), 1, LONE.format(code))
    assert validate(templates) == [expected]


@pytest.mark.parametrize("text", ["{{ '\\udc80' }}Hi", "\udc80Hi"], ids=["jinja", "literal"])
@pytest.mark.parametrize("field", ["subject", "preheader"])
def test_a_surrogate_in_a_subject_or_preheader_names_its_key(
    templates: Path, field: str, text: str
) -> None:
    steps: list[dict[str, Any]] = [s.model_dump() for s in sequence().steps]
    steps[1][field] = text
    seq = sequence(steps=steps)
    with pytest.raises(RenderError, match=rf"{field} of step 'offer': the email has text"):
        render(templates, step=1, seq=seq)
    positions = {("steps", 1, field): (31, 14)}
    message = f"{field} of step 'offer': {LONE.format('DC80')}"
    assert validate(templates, seq, positions=positions) == [
        Diagnostic("sequences/demo.yaml", 31, 14, message)
    ]


def test_other_text_beyond_ascii_is_fine(templates: Path) -> None:
    write(templates, {"en/welcome.md": "Hej {{ 'Åsa \\U0001F600 \\uFFFF \\u2603' }}"})
    email = render(templates)
    assert "Åsa \U0001f600 \uffff ☃" in email.text
    assert validate(templates) == []


def composer(templates: Path) -> Composer:
    library = TemplateLibrary(templates)
    return Composer(
        lambda: library,
        base_url="https://mail.example.se",
        secret_key="surrogate-test-secret-not-a-placeholder",
        postal_address=ADDRESS,
    )


def loaded(**overrides: Any) -> LoadedSequence:
    found, problems = parse_sequence(json.dumps(sequence_dict(**overrides)), "test-seq.yaml")
    assert found is not None, problems
    return found


def test_the_composer_refuses_what_the_bytes_could_not_carry(templates: Path) -> None:
    # The welcome template does not show the name: only the To header has it.
    # Left to the transport, writing the bytes raised inside the provider call.
    seq = loaded()
    subscriber = Subscriber(email="bo@example.com", name="Bo \udc80", given_first_name="Bo")
    with pytest.raises(RenderError, match=re.escape(f"{LONE.format('DC80')} in a header")):
        composer(templates)(seq, seq.sequence.steps[0], subscriber, "k1", NOW)
    named = replace(subscriber, name="Bo")
    fine = composer(templates)(seq, seq.sequence.steps[0], named, "k1", NOW)
    assert fine.raw.startswith(b"Subject: Hi\r\n")


def test_a_unicode_sender_domain_gives_an_ascii_message_id(templates: Path) -> None:
    # A Message-ID is 7-bit: with the domain as written, the outbox and SMTP
    # could not write the message (UnicodeEncodeError, recorded ``unknown``).
    seq = loaded(sender={"name": "Anna", "email": "anna@exämple.se"})
    subscriber = Subscriber(email="bo@example.com", name="Bo")
    composed = composer(templates)(seq, seq.sequence.steps[0], subscriber, "k1", NOW)
    assert composed.message_id == "<k1.welcome@xn--exmple-cua.se>"
    assert b"Message-ID: <k1.welcome@xn--exmple-cua.se>\r\n" in composed.raw


def test_unicode_problem_of_a_composed_email() -> None:
    rendered = RenderedEmail("Hi", "", "<p>Hi</p>", "Hi\n", {"X-Nurture-Step": "welcome"})
    composed = ComposedEmail(
        rendered, "Anna", "anna@example.com", None, "bo@example.com", "Bo", "<k@x>", NOW
    )
    assert composed.unicode_problem() is None
    bad = replace(rendered, headers={"X-Nurture-Step": "w\ud800"})
    assert composed.unicode_problem() is None
    assert replace(composed, rendered=bad).unicode_problem() == f"{LONE.format('D800')} in a header"
