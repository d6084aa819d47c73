"""Rendering: templates, locales, escaping, text part, headers, validation."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import escape

from nurture.core import rendering
from nurture.core.model import Sequence
from nurture.core.rendering import Links, RenderedEmail, TemplateLibrary

# Unit tests of single pieces, imported from the module that owns them.
from nurture.core.rendering.links import hrefs, offer_url
from nurture.core.rendering.loader import locale_search_path
from nurture.core.rendering.placeholders import html_to_text
from nurture.core.rendering.templates import nesting_depth
from nurture.core.subscriber import Subscriber
from nurture.errors import Diagnostic, RenderError

LAYOUT = Path(__file__).resolve().parents[2] / "templates" / "layout.html"
ADDRESS = "Exempel AB, Storgatan 1, 111 22 Stockholm"
LINKS = Links(
    unsubscribe_url="https://nurture.example.com/u/tok-1",
    preferences_url="https://nurture.example.com/p/tok-1",
)
CHECKOUT = "https://shop.example.com/buy?ref=x#top"
TRACKED = (
    "https://shop.example.com/buy?ref=x&utm_source=nurture&utm_medium=email"
    "&utm_campaign=demo&utm_content=offer#top"
)

WELCOME_MD = """\
Hi {{ subscriber.first_name }},

Thanks for joining **{{ sequence.name }}**.

[Read more](https://example.com/more)
"""

OFFER_HTML = """\
{% extends "layout.html" %}
{% block content %}
<h1>{{ offer.name }}</h1>
<p>Hi {{ subscriber.name }}, only {{ offer.price }}.</p>
<p><a class="button" href="{{ offer.url }}">Buy</a></p>
{% endblock %}
"""


def sequence(**overrides: Any) -> Sequence:
    data: dict[str, Any] = {
        "version": 1,
        "id": "demo",
        "name": "Demo series",
        "sender": {"name": "Anna på Exempel AB", "email": "anna@example.com"},
        "locale": "en",
        "steps": [
            {
                "id": "welcome",
                "wait": 0,
                "subject": {"en": "Welcome, {{ subscriber.first_name }}", "sv": "Välkommen"},
                "preheader": "A short hello",
                "template": "welcome.md",
            },
            {
                "id": "offer",
                "wait": "2 days",
                "subject": "Your offer",
                "template": "offer.html",
                "offer": {
                    "name": {"en": "Starter review", "sv": "Startgenomgång"},
                    "price": "99 kr",
                    "checkout_url": CHECKOUT,
                },
            },
        ],
    }
    data.update(overrides)
    return Sequence.model_validate(data)


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    root = tmp_path / "templates"
    root.mkdir()
    shutil.copy(LAYOUT, root / "layout.html")
    return write(root, {"en/welcome.md": WELCOME_MD, "en/offer.html": OFFER_HTML})


def render(
    root: Path,
    subscriber: Subscriber | None = None,
    step: int = 0,
    seq: Sequence | None = None,
) -> RenderedEmail:
    seq = seq or sequence()
    subscriber = subscriber or Subscriber(email="ada@example.com", name="Ada Lovelace")
    return rendering.render(TemplateLibrary(root), seq, seq.steps[step], subscriber, LINKS, ADDRESS)


def validate(root: Path, seq: Sequence | None = None, **kwargs: Any) -> list[Diagnostic]:
    seq = seq or sequence()
    samples = [Subscriber(email="ada@example.com", name="Ada Lovelace", locale="en")]
    return rendering.check(
        TemplateLibrary(root), seq, samples, LINKS, ADDRESS, "sequences/demo.yaml", **kwargs
    )


# -- escaping and the sandbox ------------------------------------------------


@pytest.mark.parametrize("step", [0, 1], ids=["markdown", "html"])
def test_subscriber_data_is_escaped(templates: Path, step: int) -> None:
    name = "<script>alert(1)</script> Smith"
    email = render(templates, Subscriber(email="x@example.com", name=name), step=step)
    assert "<script>" not in email.html
    assert "&lt;script&gt;" in email.html


def test_markdown_in_subscriber_data_stays_text(templates: Path) -> None:
    email = render(templates, Subscriber(email="x@example.com", name="[Win](https://evil.example)"))
    assert "https://evil.example" not in hrefs(email.html)
    assert "[Win](https://evil.example)" in unescape(email.html)


def test_token_like_subscriber_data_leaks_nothing(templates: Path) -> None:
    # Values are spliced into a cached structure by token: a value that looks
    # like a token must come out as itself, not as another value.
    email = render(templates, Subscriber(email="x@example.com", name="nurtslot0z nurtslot1z"))
    assert "Hi nurtslot0z," in email.html


def test_templates_cannot_mutate_the_context(templates: Path) -> None:
    write(templates, {"en/welcome.md": "{{ subscriber.attributes.update({'a': 1}) }}\n"})
    with pytest.raises(RenderError, match="not allowed"):
        render(templates)


def test_subject_is_plain_text_on_one_line(templates: Path) -> None:
    seq = sequence()
    steps = [s.model_dump() for s in seq.steps]
    steps[0]["subject"] = "Tom & {{ subscriber.name }}"
    email = render(
        templates,
        Subscriber(email="x@example.com", name="Jerry\r\nBcc: all@example.com"),
        seq=sequence(steps=steps),
    )
    assert email.subject == "Tom & Jerry Bcc: all@example.com"


@pytest.mark.parametrize(
    ("html", "depth"),
    [
        ("<p>a<br>b<img src=x><br/></p><!-- <i><i> --><div><p>c</p></div>", 2),
        ("<div>" * 3 + "</div>" * 3 + "<b><i>x</i></b>", 3),
        ("</div></div><span>x</span>", 1),  # stray closing tags never go below zero
        ("<i>" * 40, 40),  # unclosed: counted as open (an upper bound)
    ],
)
def test_nesting_depth_counts_open_elements(html: str, depth: int) -> None:
    assert nesting_depth(html) == depth


@pytest.mark.parametrize("source", ["<i>" * 600 + "deep", "<div>" * 300 + "<b>" * 300 + "x"])
def test_html_nested_past_the_limit_is_a_render_error_not_a_crash(
    templates: Path, source: str
) -> None:
    # The CSS inliner overflows its stack (a segfault) some ten thousand
    # levels down; the limit refuses far earlier, with the template's name.
    write(templates, {"en/welcome.md": source})
    with pytest.raises(RenderError, match=r"en/welcome\.md:1:1: the HTML nests elements"):
        render(templates)


def test_a_megabyte_subject_fails_that_email_naming_the_step(templates: Path) -> None:
    seq = sequence()
    steps = [s.model_dump() for s in seq.steps]
    steps[0]["subject"] = "Hi {{ subscriber.name }}"
    seq = sequence(steps=steps)
    render(templates, Subscriber(email="x@example.com", name="N" * 990), seq=seq)  # fits
    huge = Subscriber(email="x@example.com", name="N" * 1_000_000)
    with pytest.raises(RenderError, match=r"subject of step 'welcome' is 1000003 characters"):
        render(templates, huge, seq=seq)
    steps[0]["preheader"] = "{{ 'x' * 2000 }}"
    with pytest.raises(RenderError, match=r"preheader of step 'welcome' is 2000 characters"):
        render(templates, seq=sequence(steps=steps))


@pytest.mark.parametrize(
    "files",
    [
        {"en/welcome.md": "{% include 'en/welcome.md' %}"},
        {"en/welcome.md": "{% include 'en/a.html' %}", "en/a.html": "{% include 'en/b.html' %}",
         "en/b.html": "{% include 'en/a.html' %}"},
        {"en/welcome.md": "{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}"},
    ],
)  # fmt: skip
def test_recursion_without_end_says_so(templates: Path, files: dict[str, str]) -> None:
    write(templates, files)
    with pytest.raises(RenderError, match="recursion without end"):
        render(templates)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("a link to nothing", "which does not exist"),
        ("a folder", "refused: a folder"),
        ("a link to itself", "a symlink loop"),
    ],
)
def test_a_template_that_cannot_be_read_is_an_error_not_a_fallback(
    templates: Path, kind: str, reason: str
) -> None:
    # A fallback file exists (the root folder): the broken English one must
    # not silently give English subscribers another file's words.
    write(templates, {"welcome.md": WELCOME_MD})
    broken = templates / "en" / "welcome.md"
    broken.unlink()
    if kind == "a link to nothing":
        broken.symlink_to("nowhere.md")
    elif kind == "a folder":
        broken.mkdir()
    else:
        broken.symlink_to("welcome.md")
    with pytest.raises(RenderError, match=rf"en/welcome\.md:1:1: .*{reason}"):
        render(templates)


# -- strict undefined and syntax errors: template:line ------------------------


def test_undefined_variable_names_template_and_line(templates: Path) -> None:
    write(templates, {"en/welcome.md": "Hello\n\n{{ subscriber.fist_name }}\n"})
    message = "subscriber has no field 'fist_name' — did you mean 'first_name'?"
    with pytest.raises(RenderError, match=r"en/welcome\.md:3:15: subscriber has no field"):
        render(templates)
    [problem] = validate(templates)
    assert problem.file == str(templates / "en" / "welcome.md")
    assert (problem.line, problem.column, problem.message) == (3, 15, message)


def test_undefined_in_the_layout_names_the_layout(templates: Path) -> None:
    layout = LAYOUT.read_text(encoding="utf-8")
    write(templates, {"layout.html": layout.replace("{{ t.reason }}", "{{ t.nothing }}")})
    line, column = next(
        (n, text.index("{{ t.reason }}") + len("{{ t.") + 1)
        for n, text in enumerate(layout.splitlines(), 1)
        if "{{ t.reason }}" in text
    )
    problems = validate(templates)
    message = "t has no field 'nothing'"
    assert Diagnostic(str(templates / "layout.html"), line, column, message) in problems


def test_syntax_error_names_template_and_line(templates: Path) -> None:
    write(
        templates, {"en/offer.html": '{% extends "layout.html" %}\n{% block content %}\n{% if %}'}
    )
    problems = validate(templates)
    assert [(p.file, p.line) for p in problems] == [(str(templates / "en" / "offer.html"), 3)]
    assert problems[0].message.startswith("syntax error")


def test_subject_error_points_into_the_sequence_file(templates: Path) -> None:
    seq = sequence()
    steps = [s.model_dump() for s in seq.steps]
    steps[1]["subject"] = "{{ nope }}"
    steps[0]["subject"] = {"en": "Hi", "sv": "Hej {{ nope }}"}
    positions = {("steps", 1, "subject"): (30, 14), ("steps", 0, "subject", "sv"): (9, 11)}
    write(templates, {"sv/welcome.md": "Hej\n"})  # so Swedish is validated too
    problems = validate(templates, sequence(steps=steps), positions=positions)
    assert [(p.file, p.line, p.column) for p in problems] == [
        ("sequences/demo.yaml", 9, 11),  # the Swedish text of a localized subject
        ("sequences/demo.yaml", 30, 14),
    ]
    assert "subject of step 'offer'" in problems[1].message


# -- locales ------------------------------------------------------------------


def test_search_path() -> None:
    assert locale_search_path("en-GB", "sv") == ("en-GB", "en", "sv", "")
    assert locale_search_path("sv_SE", "sv") == ("sv-SE", "sv", "")
    assert locale_search_path(None, "en") == ("en", "")
    assert locale_search_path("../../etc", "en") == ("en", "")  # never a path


@pytest.fixture
def bilingual(templates: Path) -> Path:
    return write(
        templates,
        {
            "sv/welcome.md": "Hej {{ subscriber.first_name }}!\n",
            "sv/layout.html": LAYOUT.read_text(encoding="utf-8").replace(
                "<body>", "<body><p>SVENSK LAYOUT</p>"
            ),
        },
    )


def test_subscriber_locale_picks_its_template_and_layout(bilingual: Path) -> None:
    email = render(bilingual, Subscriber(email="x@example.com", name="Karin", locale="sv"))
    assert "Hej Karin!" in email.html
    assert "SVENSK LAYOUT" in email.html
    assert email.subject == "Välkommen"
    assert "Avregistrera dig" in email.html  # the footer strings follow the locale
    assert '<html lang="sv" ' in email.html  # (the :root colour scheme is inlined after it)


def test_unknown_locale_falls_back_to_the_sequence_locale(bilingual: Path) -> None:
    email = render(bilingual, Subscriber(email="x@example.com", name="Hans", locale="de"))
    assert "Hi Hans," in email.html
    assert "SVENSK LAYOUT" not in email.html
    assert email.subject == "Welcome, Hans"
    assert "Unsubscribe" in email.html


def test_regional_locale_falls_back_to_its_language(bilingual: Path) -> None:
    email = render(bilingual, Subscriber(email="x@example.com", name="Ann", locale="en-GB"))
    assert "Hi Ann," in email.html
    assert '<html lang="en-GB" ' in email.html


def test_sequence_locale_folder_serves_other_languages(bilingual: Path) -> None:
    seq = sequence(locale="sv")
    email = render(bilingual, Subscriber(email="x@example.com", name="Hans", locale="de"), seq=seq)
    assert "Hej Hans!" in email.html
    assert email.subject == "Välkommen"


# -- offer link ------------------------------------------------------------------


def test_offer_url_adds_utm_and_keeps_query_and_fragment() -> None:
    assert offer_url(CHECKOUT, campaign="demo", content="offer") == TRACKED
    plain = offer_url("https://shop.example.com/buy", campaign="s", content="t")
    assert plain == (
        "https://shop.example.com/buy?utm_source=nurture&utm_medium=email"
        "&utm_campaign=s&utm_content=t"
    )
    own = offer_url("https://shop.example.com/?utm_source=ads", campaign="s", content="t")
    assert own.count("utm_source") == 1 and "utm_source=ads" in own


def test_offer_link_in_html(templates: Path) -> None:
    email = render(templates, step=1)
    assert TRACKED in hrefs(email.html)
    assert "Starter review" in email.html


# -- text part --------------------------------------------------------------------


def test_text_is_derived_from_html_with_links_and_footer(templates: Path) -> None:
    email = render(templates)
    assert email.text.startswith("Hi Ada,\n\nThanks for joining Demo series.")
    assert "Read more (https://example.com/more)" in email.text
    assert LINKS.unsubscribe_url in email.text
    assert email.text.rstrip().endswith(ADDRESS)
    assert "A short hello" not in email.text  # the hidden preheader


def test_links_in_the_text_part_read_label_then_url(templates: Path) -> None:
    body = (
        "## What's next\n\n"
        "Read __the guide__ or [**the checklist**](https://example.com/list), "
        "see <https://example.com/faq>, write to [anna@example.com](mailto:anna@example.com) "
        "or [jump back](#top).\n\n"
        "Signed, {{ subscriber.name }}\n"
    )
    write(templates, {"en/welcome.md": body})
    name = "[Win](https://evil.example) **now**"
    text = render(templates, Subscriber(email="x@example.com", name=name)).text
    assert text.startswith(
        "What's next\n\nRead the guide or the checklist (https://example.com/list), "
        "see https://example.com/faq, write to anna@example.com or jump back.\n\n"
    )
    assert f"Signed, {name}\n" in text  # a subscriber's text is never rewritten
    assert f"Unsubscribe ({LINKS.unsubscribe_url})" in text  # the layout's links too
    assert "](" not in text.replace(name, "") and "**" not in text.replace(name, "")
    assert "#" not in text.replace(name, "") and "__" not in text


def test_txt_sibling_is_used_and_gets_the_footer(templates: Path) -> None:
    write(templates, {"en/welcome.txt": "Plain {{ subscriber.first_name }} & {{ offer.url }}\n"})
    email = render(templates)
    tracked = offer_url(CHECKOUT, campaign="demo", content="welcome")
    assert email.text.startswith(f"Plain Ada & {tracked}\n")  # no HTML escaping
    assert email.text.endswith(f"\n-- \nUnsubscribe: {LINKS.unsubscribe_url}\n{ADDRESS}\n")


def test_txt_with_its_own_footer_is_kept(templates: Path) -> None:
    write(
        templates, {"en/welcome.txt": "Hi\n\nStop: {{ unsubscribe_url }}\n{{ postal_address }}\n"}
    )
    assert render(templates).text == f"Hi\n\nStop: {LINKS.unsubscribe_url}\n{ADDRESS}\n"


def test_txt_from_a_fallback_folder_is_not_used(bilingual: Path) -> None:
    # sv/welcome.md is Swedish; en/welcome.txt is English: not its text part.
    write(bilingual, {"en/welcome.txt": "English text\n"})
    email = render(bilingual, Subscriber(email="x@example.com", name="Karin", locale="sv"))
    assert "English text" not in email.text
    assert "Hej Karin!" in email.text


# -- CSS, preheader -------------------------------------------------------------------


def test_css_is_inlined(templates: Path) -> None:
    email = render(templates, step=1)
    assert '<a class="button" href="' in email.html
    assert "background-color: #0b57d0" in email.html.split('class="button"')[1].split(">")[0]
    assert "a.button" not in email.html  # the rule itself is gone
    assert "@media" in email.html  # media queries stay in <head>


def test_preheader_is_hidden_in_the_html(templates: Path) -> None:
    email = render(templates)
    assert email.preheader == "A short hello"
    assert 'style="display: none;' in email.html.split("A short hello")[0].rsplit("<div", 1)[1]


# -- caching is invisible -----------------------------------------------------------------


names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")),
    max_size=30,
)


@pytest.fixture(scope="module")
def shared_templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Module-scoped: hypothesis runs the test body many times per fixture.
    root = tmp_path_factory.mktemp("shared") / "templates"
    root.mkdir()
    shutil.copy(LAYOUT, root / "layout.html")
    return write(root, {"en/welcome.md": WELCOME_MD, "en/offer.html": OFFER_HTML})


@settings(max_examples=60, deadline=None)
@given(first=names, last=names)
def test_cached_structures_render_like_a_plain_render(
    shared_templates: Path, first: str, last: str
) -> None:
    # The fast path splices values into a cached, CSS-inlined structure; the
    # plain path renders, converts and inlines everything for this subscriber.
    library = TemplateLibrary(shared_templates)
    plain = TemplateLibrary(shared_templates, reuse_structures=False)
    seq = sequence()
    subscriber = Subscriber(email="x@example.com", name=f"{first} {last}", given_first_name=first)
    for step in seq.steps:
        email = library.render(seq, step, subscriber, LINKS, ADDRESS)
        reference = plain.render(seq, step, subscriber, LINKS, ADDRESS)
        assert unescape(email.html) == unescape(reference.html)
        assert email.text.split() == reference.text.split()


def test_filters_on_captured_output_fall_back_to_plain_rendering(templates: Path) -> None:
    # {% filter upper %} upper-cases the placeholder tokens too: the cached
    # structure would be wrong, so it must be detected and rendered plainly.
    body = '{% extends "layout.html" %}{% block content %}<p>{% filter upper %}Hi '
    body += "{{ subscriber.name }}{% endfilter %}</p>"
    write(templates, {"en/offer.html": body + '<a href="{{ offer.url }}">x</a>{% endblock %}'})
    library = TemplateLibrary(templates)
    seq = sequence()
    for name in ("Ada Lovelace", "Bob Smith"):
        subscriber = Subscriber(email="x@example.com", name=name)
        email = library.render(seq, seq.steps[1], subscriber, LINKS, ADDRESS)
        assert f"HI {name.upper()}" in email.html
        assert f"HI {name.upper()}" in email.text


def test_structures_vary_with_control_flow(templates: Path) -> None:
    body = "{% for tag in subscriber.tags %}- {{ tag }}\n{% endfor %}\nBye {{ subscriber.name }}\n"
    write(templates, {"en/welcome.md": body})
    library = TemplateLibrary(templates)
    seq = sequence()
    for tags in [("a",), ("b", "c"), (), ("<d>", "e", "f")]:
        subscriber = Subscriber(email="x@example.com", name="Ada", tags=tags)
        email = library.render(seq, seq.steps[0], subscriber, LINKS, ADDRESS)
        assert email.html.count("<li") == len(tags)
        assert all(str(escape(tag)) in email.html for tag in tags)


def test_markdown_may_hold_raw_html(templates: Path) -> None:
    write(templates, {"en/welcome.md": '<div class="note">Note for {{ subscriber.name }}</div>\n'})
    assert '<div class="note">Note for Ada Lovelace</div>' in render(templates).html


# -- headers and the message ----------------------------------------------------------


def test_pipeline_headers(templates: Path) -> None:
    headers = render(templates).headers
    assert headers["List-Unsubscribe"] == f"<{LINKS.unsubscribe_url}>"
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["List-Id"] == "Demo series <demo.nurture.example.com>"
    assert headers["X-Nurture-Sequence"] == "demo"
    assert headers["X-Nurture-Step"] == "welcome"


MESSAGE_ARGS: dict[str, Any] = {
    "sender_name": "Anna på Exempel AB",
    "sender_email": "anna@example.com",
    "to_email": "ada@example.com",
    "to_name": "Ada, Countess of Lovelace",
    "reply_to": "replies@example.com",
    "message_id": "<send-42.welcome@example.com>",
    "date": datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
}


def parse(data: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


@pytest.mark.parametrize("how", ["to_message", "to_bytes"])
def test_message_parses_back(templates: Path, how: str) -> None:
    seq = sequence(name="Säljprocessen: fem mejl")
    email = render(templates, Subscriber(email="x@example.com", name="Åsa"), seq=seq)
    if how == "to_message":
        data = email.to_message(**MESSAGE_ARGS).as_bytes(policy=policy.SMTP)
    else:
        data = email.to_bytes(**MESSAGE_ARGS)
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    message = parse(data)
    assert message.get_content_type() == "multipart/alternative"
    assert message["Subject"] == "Welcome, Åsa"
    sender = message["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == ("Anna på Exempel AB", "anna@example.com")
    assert message["To"].addresses[0].display_name == "Ada, Countess of Lovelace"
    assert message["Reply-To"].addresses[0].addr_spec == "replies@example.com"
    assert message["Message-ID"] == "<send-42.welcome@example.com>"
    assert message["Date"].datetime == MESSAGE_ARGS["date"]
    assert message["List-Unsubscribe"] == f"<{LINKS.unsubscribe_url}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Id"] == "Säljprocessen: fem mejl <demo.nurture.example.com>"
    assert message["X-Nurture-Step"] == "welcome"
    text, html = message.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert html.get_content_type() == "text/html"
    assert text.get_content_charset() == html.get_content_charset() == "utf-8"
    assert text.get_content().replace("\r\n", "\n") == email.text
    assert html.get_content().replace("\r\n", "\n").rstrip("\n") == email.html.rstrip("\n")


def test_to_bytes_encodes_headers_like_the_email_package() -> None:
    email = RenderedEmail(
        subject=" ".join(["Sista chansen: en genomgång för 4 900 kr"] * 3),
        preheader="",
        html="<p>x</p>",
        text="line one\n\n" + "long " * 40 + "\n.\nFrom here\n",
        headers={"List-Id": "Ärenden <x.nurture.example.com>", "X-Nurture-Step": "s"},
    )
    args = {**MESSAGE_ARGS, "to_name": 'Åsa "the boss" Öberg', "sender_name": "Anna (sales)"}
    ours = parse(email.to_bytes(**args))
    theirs = parse(email.to_message(**args).as_bytes(policy=policy.SMTP))
    for name in ("Subject", "From", "To", "List-Id", "X-Nurture-Step"):
        assert str(ours[name]) == str(theirs[name]), name
    assert ours.get_body(("plain",)).get_content() == theirs.get_body(("plain",)).get_content()
    # A literal that looks like an encoded word stays literal (the email
    # package would decode it).
    tricky = replace(email, subject="Use =?utf-8?q?x?= literally")
    assert parse(tricky.to_bytes(**args))["Subject"] == "Use =?utf-8?q?x?= literally"
    # So does a display name: as a quoted string it was decoded all the same,
    # CR LF and all, and the address header could not be read.
    name = "Eve =?utf-8?q?x=0D=0ABcc:_eve@evil.example?= (sales)"
    message = parse(email.to_bytes(**{**args, "to_name": name}))
    [to] = message["To"].addresses
    assert (to.display_name.replace(" ", ""), to.addr_spec) == (
        name.replace(" ", ""),
        MESSAGE_ARGS["to_email"],
    )
    assert message["Bcc"] is None


def test_message_needs_an_aware_date(templates: Path) -> None:
    email = render(templates)
    naive = {**MESSAGE_ARGS, "date": datetime(2026, 3, 2, 9, 30)}
    with pytest.raises(ValueError, match="aware"):
        email.to_message(**naive)
    with pytest.raises(ValueError, match="aware"):
        email.to_bytes(**naive)


def test_html_to_text_collapses_self_links() -> None:
    html = '<p><a href="https://x.example/">https://x.example/</a></p>'
    assert html_to_text(html) == "https://x.example/\n"
    spaced = '<p>See<a href="https://x.example/"> the <b>docs</b> </a>now.</p>'
    assert html_to_text(spaced) == "See the docs (https://x.example/) now.\n"


def test_html_to_text_folds_the_padding_of_a_table_around_links() -> None:
    # inscriptis pads a table's lines to its widest one: the spaces around a
    # link fold into one (and a link at a line's start gets none before it).
    html = (
        "<table><tr><td>" + "word " * 2000 + "</td></tr>"
        '<tr><td>See   <a href="https://x.example/">the docs</a>   now.</td></tr>'
        '<tr><td><a href="https://y.example/">https://y.example/</a> first</td></tr>'
        '<tr><td>two <a href="https://a.example/">a</a> <a href="#top">top</a></td></tr>'
        "</table>"
    )
    lines = html_to_text(html).splitlines()
    assert "See the docs (https://x.example/) now." in lines
    assert "https://y.example/ first" in lines
    assert "two a (https://a.example/) top" in lines


def test_html_to_text_decodes_entities_once() -> None:
    # A subscriber literally named "&lt" is escaped once by Jinja2 and must
    # come back as "&lt" in the text part, not as "<" (found by hypothesis).
    html = (
        '<p>Hi &amp;lt and &amp;amp; &lt;b&gt; <a href="https://x.example/?a=1&amp;b=2">go</a></p>'
    )
    assert html_to_text(html) == "Hi &lt and &amp; <b> go (https://x.example/?a=1&b=2)\n"


# -- validation ---------------------------------------------------------------------------


def test_valid_templates_have_no_problems(bilingual: Path) -> None:
    assert validate(bilingual) == []


def test_html_outside_the_layout_fails_validation_and_rendering(templates: Path) -> None:
    write(templates, {"en/offer.html": '<p><a href="{{ offer.url }}">Buy</a></p>\n'})
    [problem] = validate(templates)
    assert problem.file == str(templates / "en" / "offer.html")
    # Named for what to do, not for its consequence (no footer).
    assert 'must start with {% extends "layout.html" %}' in problem.message
    assert "no unsubscribe link" not in problem.message
    with pytest.raises(RenderError, match="no unsubscribe link"):
        render(templates, step=1)


def test_layout_without_postal_address_fails(templates: Path) -> None:
    layout = LAYOUT.read_text(encoding="utf-8").replace("{{ postal_address }}", "")
    write(templates, {"layout.html": layout})
    problems = validate(templates)
    assert problems and all("no postal address" in p.message for p in problems)
    assert not any("unsubscribe" in p.message for p in problems)


def test_http_link_is_reported_at_its_line(templates: Path) -> None:
    write(templates, {"en/welcome.md": "Hi\n\nSee [this](http://example.com/x).\n"})
    [problem] = validate(templates)
    assert (problem.file, problem.line) == (str(templates / "en" / "welcome.md"), 3)
    assert "not https" in problem.message


def test_localhost_links_from_links_are_allowed(templates: Path) -> None:
    local = Links("http://localhost:8000/u/t", "http://localhost:8000/p/t")
    seq = sequence()
    samples = [Subscriber(email="a@example.com")]
    library = TemplateLibrary(templates)
    assert rendering.check(library, seq, samples, local, ADDRESS, "s.yaml") == []


def test_missing_template_is_reported_in_the_sequence_file(templates: Path) -> None:
    (templates / "en" / "offer.html").unlink()
    [problem] = validate(
        templates, positions=lambda key: (40, 15) if key[-1] == "template" else (1, 1)
    )
    assert (problem.file, problem.line, problem.column) == ("sequences/demo.yaml", 40, 15)
    assert "'offer.html' not found" in problem.message


def test_offer_email_must_link_to_the_offer(templates: Path) -> None:
    write(templates, {"en/offer.html": OFFER_HTML.replace("{{ offer.url }}", CHECKOUT)})
    [problem] = validate(templates)
    assert "{{ offer.url }}" in problem.message


def test_every_locale_folder_is_validated(bilingual: Path) -> None:
    write(bilingual, {"sv/welcome.md": "Hej {{ subscriber.efternamn }}\n"})
    [problem] = validate(bilingual)
    assert problem.file == str(bilingual / "sv" / "welcome.md")


# -- where validate points: the link itself, the layout once ---------------------------------

UNSUBSCRIBE_LINK = '<a href="{{ unsubscribe_url }}">{{ t.unsubscribe }}</a>'


def where(path: Path, text: str, occurrence: int = 1) -> tuple[str, int, int]:
    """(file, line, column) of the ``occurrence``-th ``text`` in ``path``."""
    source = path.read_text(encoding="utf-8")
    index = -1
    for _ in range(occurrence):
        index = source.index(text, index + 1)
    before = source[:index]
    return str(path), before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


def places(problems: list[Diagnostic]) -> list[tuple[str, int, int]]:
    return [(p.file, p.line, p.column) for p in problems]


@pytest.mark.parametrize(
    ("source", "link"),
    [
        # "#" first appears in the heading's "##"
        ("## Tips (en)\n\nRead on.\n\n[Book a class](#)\n", "[Book a class]"),
        # the address first appears as plain text, then as the link
        ("See http://example.com/x today.\n\nOr [go](http://example.com/x).\n", "[go]"),
        ("Prices on /pricing.\n\n- [Pricing](/pricing)\n", "[Pricing]"),
        ("Step #1.\n\n[Book][b] now.\n\n[b]: #\n", "[b]: #"),
        ("Mail http://example.com/y.\n\n<http://example.com/y>\n", "<http://example.com/y>"),
        ("Text [a [nested] label](/x) and /x\n", "[a [nested]"),
        ("/x and <p><a class='b' href='/x'>x</a></p>\n", "<a class='b'"),
        ("Escaped \\# then [here](\\#).\n", "[here]"),
    ],
    ids=["heading", "plain-text", "list", "reference", "autolink", "nested", "raw-html", "escape"],
)
def test_a_bad_link_in_markdown_is_reported_at_the_link(
    templates: Path, source: str, link: str
) -> None:
    write(templates, {"en/welcome.md": source})
    problems = validate(templates)
    assert places(problems) == [where(templates / "en" / "welcome.md", link)], problems
    assert "absolute https://" in problems[0].message or "not https" in problems[0].message


def test_a_bad_link_in_html_is_reported_at_the_link(templates: Path) -> None:
    offer = OFFER_HTML.replace(
        "<h1>", '<p style="color: #333">#1 offer, see /faq</p>\n<h1>'
    ).replace(
        "{% endblock %}", '<p><a href="#">Top</a> · <a\n  href="/faq">FAQ</a></p>\n{% endblock %}'
    )
    write(templates, {"en/offer.html": offer})
    path = templates / "en" / "offer.html"
    assert sorted(places(validate(templates))) == sorted(
        [where(path, '<a href="#">'), where(path, "<a\n")]
    )


def test_a_link_from_a_value_is_found_by_the_text_around_it(templates: Path) -> None:
    offer = OFFER_HTML.replace(
        "{% endblock %}",
        '{% set page = "faq" %}<p>faq</p>\n<p><a href="/help/{{ page }}">Help</a></p>\n'
        "{% endblock %}",
    )
    write(templates, {"en/offer.html": offer})
    path = templates / "en" / "offer.html"
    assert places(validate(templates)) == [where(path, '<a href="/help/')]


def test_a_bad_link_in_the_layout_is_reported_once_at_the_layout(bilingual: Path) -> None:
    write(bilingual, {"en/welcome.md": "## Hello\n\n" + WELCOME_MD})
    for name in ("layout.html", "sv/layout.html"):
        path = bilingual / name
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace("</body>", '<p><a href="#">Top</a></p>\n</body>'), "utf-8")
    problems = validate(bilingual)
    assert sorted(set(places(problems))) == sorted(
        [
            where(bilingual / "layout.html", '<a href="#">'),
            where(bilingual / "sv" / "layout.html", '<a href="#">'),
        ]
    )
    assert len(problems) == 2  # once per layout, not per template and locale


@pytest.mark.parametrize(
    ("link", "why"),
    [
        (f"<!-- {UNSUBSCRIBE_LINK} -->", "inside an HTML comment"),
        ('<a href="{{ unsubscribe_url }}" style="display:none">x</a>', "is hidden"),
        (
            '<a style="color: red; DISPLAY : None !important" href="{{ unsubscribe_url }}">x</a>',
            "is hidden",
        ),
        (
            '<span style="visibility: hidden"><b><a href="{{ unsubscribe_url }}">x</a></b></span>',
            "is hidden",
        ),
        ('<div hidden><p>Bye: <a href="{{ unsubscribe_url }}">x</a></p></div>', "is hidden"),
        (
            '<a class="gone" href="{{ unsubscribe_url }}">x</a>'
            "<style>.gone { display: none }</style>",
            "is hidden",
        ),
    ],
    ids=["comment", "display-none", "important", "ancestor-visibility", "hidden-attr", "css-class"],
)
def test_an_unsubscribe_link_no_reader_sees_does_not_count(
    bilingual: Path, link: str, why: str
) -> None:
    for name in ("layout.html", "sv/layout.html"):
        path = bilingual / name
        path.write_text(path.read_text(encoding="utf-8").replace(UNSUBSCRIBE_LINK, link), "utf-8")
    problems = validate(bilingual)
    # At the link, once per layout: not once per template and locale.
    assert sorted(set(places(problems))) == sorted(
        [tag_of(bilingual / "layout.html"), tag_of(bilingual / "sv" / "layout.html")]
    ), problems
    assert all(why in p.message and "unsubscribe link" in p.message for p in problems), problems
    assert len(validate(bilingual)) == len(set(validate(bilingual))) == 2


def tag_of(path: Path, needle: str = "unsubscribe_url") -> tuple[str, int, int]:
    """Where the ``<a`` tag holding ``needle`` starts."""
    source = path.read_text(encoding="utf-8")
    index = source.rindex("<a", 0, source.index(needle))
    before = source[:index]
    return str(path), before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


@pytest.mark.parametrize(
    "link",
    [
        f"<p hidden>Not this one</p><p style='display: none'>nor this</p>{UNSUBSCRIBE_LINK}",
        f"<!--[if !mso]><!-->{UNSUBSCRIBE_LINK}<!--<![endif]-->",
        f"<!-- {UNSUBSCRIBE_LINK} -->{UNSUBSCRIBE_LINK}",
        f"<p style='display:none'>x<p>{UNSUBSCRIBE_LINK}",  # the second <p> closes the first
    ],
    ids=["hidden-siblings", "revealed-comment", "commented-copy", "implied-end"],
)
def test_a_shown_unsubscribe_link_next_to_hidden_things_counts(templates: Path, link: str) -> None:
    path = templates / "layout.html"
    path.write_text(path.read_text(encoding="utf-8").replace(UNSUBSCRIBE_LINK, link), "utf-8")
    assert validate(templates) == []


@pytest.mark.parametrize(
    ("old", "missing"),
    [(UNSUBSCRIBE_LINK, "no unsubscribe link"), ("{{ postal_address }}", "no postal address")],
)
def test_a_footer_the_layout_lacks_is_reported_once_at_its_footer(
    bilingual: Path, old: str, missing: str
) -> None:
    layouts = [bilingual / "layout.html", bilingual / "sv" / "layout.html"]
    for path in layouts:
        path.write_text(path.read_text(encoding="utf-8").replace(old, ""), "utf-8")
    # Two templates, each in two locales: the problem is the layouts', once each.
    problems = validate(bilingual)
    footers = [where(path, '<td class="footer">') for path in layouts]
    assert sorted(set(places(problems))) == sorted(footers), problems
    assert all(missing in p.message for p in problems)
    assert len(validate(bilingual)) == 2


def test_a_postal_address_no_reader_sees_does_not_count(templates: Path) -> None:
    path = templates / "layout.html"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace("<p>{{ postal_address }}</p>", "<p><!-- {{ postal_address }} --></p>"),
        "utf-8",
    )
    [problem] = validate(templates)
    assert "postal address" in problem.message and "comment" in problem.message
    assert problem.file == str(path)
