"""The brand: validated where it is written (the sequence file, ``nurture.toml``),
the sequence's keys over the project's, and what the layout makes of it."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from nurture.app.settings import load_settings
from nurture.core import rendering
from nurture.core.loader import parse_sequence
from nurture.core.model import Brand, merge_brands
from nurture.core.rendering import TemplateLibrary
from nurture.core.rendering.brand import DARK_CARD, LIGHT_CARD, contrast, readable_on
from nurture.core.subscriber import Subscriber
from nurture.errors import ConfigurationError
from tests.unit.test_file_format import GOOD
from tests.unit.test_rendering import (
    ADDRESS,
    LAYOUT,
    LINKS,
    OFFER_HTML,
    WELCOME_MD,
    sequence,
    write,
)

# GOOD's line 5 is `timezone:`; a brand block inserted before it starts there.
WITH_BRAND = GOOD.replace("timezone:", "brand:\n  name: Berg Design\n  {line}\ntimezone:")


def problems(line: str) -> list[str]:
    loaded, diagnostics = parse_sequence(WITH_BRAND.replace("{line}", line), "seq.yaml")
    assert (loaded is None) == bool(diagnostics)
    return [str(d) for d in diagnostics]


def test_a_good_brand_loads_with_its_colour_in_one_case() -> None:
    loaded, diagnostics = parse_sequence(
        WITH_BRAND.replace("{line}", 'colour: "#0F766E"'), "s.yaml"
    )
    assert diagnostics == [] and loaded is not None
    assert loaded.sequence.brand == Brand(name="Berg Design", colour="#0f766e")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            'colour: "#12345"',
            'seq.yaml:7:3: brand.colour: not a hex colour: write "#rrggbb" or "#rgb", '
            "such as \"#0b57d0\", got '#12345'",
        ),
        ("colour: blue", "seq.yaml:7:3: brand.colour: not a hex colour"),
        (
            "colour: #0b57d0",  # YAML: an empty value and a comment
            'seq.yaml:7:3: brand.colour: empty: write the colour in quotes, such as "#0b57d0"',
        ),
        (
            "logo_url: http://cdn.bergdesign.se/logo.png",
            "seq.yaml:7:3: brand.logo_url: must be an absolute https:// address",
        ),
        ("logo_url: //cdn.bergdesign.se/logo.png", "seq.yaml:7:3: brand.logo_url: must be"),
        ("logo_width: 160", "seq.yaml:5:1: brand: logo_width is for a logo: give logo_url too"),
        (
            "color: '#fff'",
            "seq.yaml:7:3: brand.color: unknown key 'color' — did you mean 'colour'?",
        ),
    ],
)
def test_a_bad_brand_is_named_at_its_line_and_column(line: str, message: str) -> None:
    [problem] = problems(line)
    assert problem.startswith(message), problem


def test_a_bad_brand_in_nurture_toml_names_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nurture.toml").write_text(
        'postal_address = "Berg Design AB"\n\n[brand]\nname = "Berg"\n  colour = "teal"\n'
        'logo_url = "http://cdn.bergdesign.se/logo.png"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError) as raised:
        load_settings(tmp_path)
    lines = str(raised.value).splitlines()
    assert lines[0].startswith(
        "nurture.toml:6:1: setting 'brand.logo_url' (in nurture.toml as logo_url under "
        "[brand], or NURTURE_BRAND as JSON): must be an absolute https:// address"
    )
    assert lines[1].startswith("nurture.toml:5:3: setting 'brand.colour' ")
    assert "not a hex colour" in lines[1]


def test_the_project_brand_is_read_from_nurture_toml(tmp_path: Path) -> None:
    (tmp_path / "nurture.toml").write_text(
        '[brand]\nname = "Berg Design"\ncolour = "#FFD400"\n', encoding="utf-8"
    )
    assert load_settings(tmp_path).brand == Brand(name="Berg Design", colour="#ffd400")


def test_the_sequence_brand_wins_key_by_key_and_a_logo_keeps_its_own_size() -> None:
    project = Brand(
        name="Berg Design",
        colour="#aa0000",
        logo_url="https://cdn.bergdesign.se/logo.png",
        logo_width=160,
        logo_alt="Berg Design logo",
    )
    assert merge_brands(Brand(colour="#0f766e"), project) == project.model_copy(
        update={"colour": "#0f766e"}
    )
    own_logo = Brand(logo_url="https://cdn.bergdesign.se/autumn.png")
    assert merge_brands(own_logo, project) == Brand(
        name="Berg Design", colour="#aa0000", logo_url="https://cdn.bergdesign.se/autumn.png"
    )
    assert merge_brands(None, project) == project
    assert merge_brands(own_logo, None) == own_logo


@pytest.mark.parametrize("colour", ["#ffd400", "#0b57d0", "#0a1f44", "#777", "#ffffff", "#000000"])
def test_link_colours_are_readable_on_both_cards(colour: str) -> None:
    assert contrast(readable_on(colour, LIGHT_CARD), LIGHT_CARD) >= 4.5
    assert contrast(readable_on(colour, DARK_CARD), DARK_CARD) >= 4.5
    assert readable_on("#0b57d0", LIGHT_CARD) == "#0b57d0"  # readable colours stay as they are


# -- the layout -------------------------------------------------------------------


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    root = tmp_path / "templates"
    root.mkdir()
    (root / "layout.html").write_text(LAYOUT.read_text(encoding="utf-8"), encoding="utf-8")
    return write(root, {"en/welcome.md": WELCOME_MD, "en/offer.html": OFFER_HTML})


class _Page(HTMLParser):
    """The attributes of every element by tag, and the text of the header cell."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.header_text = ""
        self._in_header = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        self.elements.append((tag, values))
        if tag == "td":
            self._in_header = values.get("class") == "header"

    def handle_data(self, data: str) -> None:
        if self._in_header:
            self.header_text += data

    def first(self, tag: str, class_: str | None = None) -> dict[str, str]:
        return next(
            attrs
            for name, attrs in self.elements
            if name == tag and (class_ is None or attrs.get("class") == class_)
        )


def render(
    templates: Path, brand: Brand | None = None, project: Brand | None = None, step: int = 0
) -> rendering.RenderedEmail:
    seq = sequence(brand=brand.model_dump(exclude_none=True) if brand else None)
    library = TemplateLibrary(templates, brand=project)
    subscriber = Subscriber(email="ada@example.com", name="Ada Lovelace")
    return library.render(seq, seq.steps[step], subscriber, LINKS, ADDRESS)


def test_the_header_shows_the_logo_at_its_given_size(templates: Path) -> None:
    logo = Brand(name="Berg Design", logo_url="https://cdn.bergdesign.se/logo.png", logo_width=160)
    page = _Page(render(templates, logo).html)
    img = page.first("img", "logo")
    assert img["src"] == "https://cdn.bergdesign.se/logo.png"
    assert img["alt"] == "Berg Design" and img["width"] == "160" and "height" not in img
    # Shrinks on a narrow screen, never grows past its width.
    assert "max-width: 100%" in img["style"] and "height: auto" in img["style"]
    assert page.header_text.strip() == ""  # the logo stands for the name


def test_without_a_logo_the_header_shows_the_name_in_the_brand_colour(templates: Path) -> None:
    email = render(templates, project=Brand(name="Berg Design", colour="#0f766e"), step=1)
    page = _Page(email.html)
    assert page.header_text.strip() == "Berg Design"
    assert "color: #0f766e" in page.first("td", "header")["style"]
    assert "border-top: 4px solid #0f766e" in page.first("table", "container")["style"]
    button = page.first("a", "button")["style"]
    assert "background-color: #0f766e" in button and "color: #ffffff" in button
    assert email.text.startswith("Berg Design\n\nStarter review\n")


def test_a_pale_brand_colour_gets_dark_button_text_and_readable_links(templates: Path) -> None:
    email = render(templates, Brand(name="Sol", colour="#ffd400"), step=1)
    page = _Page(email.html)
    button = page.first("a", "button")["style"]
    assert "background-color: #ffd400" in button and "color: #111111" in button
    [name_colour] = re.findall(r"[^-]color: (#[0-9a-f]{6})", page.first("td", "header")["style"])
    assert name_colour != "#ffd400" and contrast(name_colour, LIGHT_CARD) >= 4.5
    dark_mode = email.html.split("@media (prefers-color-scheme: dark)")[1].split("</style>")[0]
    assert ".header, .content a { color: #ffd400 !important; }" in dark_mode


def test_no_brand_means_no_header_and_the_default_colour(templates: Path) -> None:
    page = _Page(render(templates, step=1).html)
    assert not any(attrs.get("class") == "header" for _, attrs in page.elements)
    assert "border-top: 4px solid #0b57d0" in page.first("table", "container")["style"]


def test_the_layout_declares_light_and_dark_schemes(templates: Path) -> None:
    html = render(templates).html
    page = _Page(html)
    metas = {
        attrs.get("name"): attrs.get("content") for tag, attrs in page.elements if tag == "meta"
    }
    assert metas["color-scheme"] == "light dark"
    assert metas["supported-color-schemes"] == "light dark"
    assert ":root { color-scheme: light dark;" in html
    assert "@media (prefers-color-scheme: dark)" in html


def test_where_a_subscriber_can_write_is_the_senders_reply_to_else_its_address() -> None:
    from nurture.audience.senders import sequence_contact
    from nurture.core.loader import LoadedSequence

    def loaded(sequence_id: str, sender: str) -> LoadedSequence:
        text = GOOD.replace("id: demo", f"id: {sequence_id}").replace(
            "sender: {name: Anna, email: anna@example.com}", sender
        )
        found, diagnostics = parse_sequence(text, f"{sequence_id}.yaml")
        assert found is not None, diagnostics
        return found

    sequences = {
        "b-news": loaded("b-news", "sender: {name: Bo, email: bo@example.com}"),
        "a-offer": loaded(
            "a-offer", "sender: {name: Anna, email: anna@example.com, reply_to: svar@example.com}"
        ),
    }
    assert sequence_contact(sequences, "a-offer") == "svar@example.com"
    assert sequence_contact(sequences, "b-news") == "bo@example.com"
    # A sequence since removed: the first loaded one's, by id.
    assert sequence_contact(sequences, "gone") == "svar@example.com"
    assert sequence_contact({}, "gone") is None
