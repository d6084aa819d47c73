"""The brand, dark mode, the preheader and the text part, through ``nurture init``
and ``nurture preview``.

One folder for the module (each command is a subprocess of a few seconds):
``init``'s commented ``[brand]`` table switched on in ``nurture.toml``, the
example's commented logo switched on in its sequence file, and a copy of the
example without a ``brand:`` block, which takes the project's brand.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.e2e.folders import EXAMPLE

NURTURE = [sys.executable, "-m", "nurture"]
WELCOME_PREHEADER = "Five short emails on how your customers really buy – and who I am."
CHECKLIST = "https://www.bergdesign.se/checklist"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [*NURTURE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def _uncomment_brand_table(config: str) -> str:
    """``init``'s commented ``[brand]`` table, switched on with a name and a colour."""
    head, table = config.split("# [brand]\n")
    lines = ["[brand]", *(line.removeprefix("# ") for line in table.splitlines())]
    kept = [line for line in lines if not line.startswith("logo_")]  # this project has no logo
    text = "\n".join(kept).replace('"Your Company"', '"Berg Design"')
    return head + text.replace('"#0b57d0"', '"#aa0000"') + "\n"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("brand")
    created = run("init", "shop", "--from", "Maja Berg <maja@bergdesign.se>", cwd=base)
    assert created.returncode == 0, created.stderr
    folder = base / "shop"
    config = folder / "nurture.toml"
    config.write_text(_uncomment_brand_table(config.read_text(encoding="utf-8")), encoding="utf-8")
    example = folder / EXAMPLE
    text = example.read_text(encoding="utf-8")
    # The example's own logo lines, switched on.
    example.write_text(re.sub(r"(?m)^  # (logo_\w+:)", r"  \1", text), encoding="utf-8")
    # The same series without a brand: block (and with its own id).
    plain = re.sub(r"(?m)^brand:\n(?:  .*\n)+", "", text).replace(
        "\nid: sales-process", "\nid: plain", 1
    )
    assert "brand:" not in plain
    (folder / "sequences" / "plain.yaml").write_text(plain, encoding="utf-8")
    welcome = folder / "templates" / "en" / "welcome.md"
    body = welcome.read_text(encoding="utf-8")
    welcome.write_text(
        body.replace("\nBest,", f"\nFirst, [the **checklist**]({CHECKLIST}).\n\nBest,", 1),
        encoding="utf-8",
    )
    for sequence in ("sales-process", "plain"):
        shown = run("preview", sequence, "--locale", "en", cwd=folder)
        assert shown.returncode == 0, shown.stderr
    return folder / "preview"


class Page(HTMLParser):
    """Every element with its attributes, the body's texts in order, and the
    text of the header cell."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.texts: list[str] = []
        self.header = ""
        self._in_body = self._in_header = False
        self.feed(path.read_text(encoding="utf-8"))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        self.elements.append((tag, values))
        self._in_body = self._in_body or tag == "body"
        if tag == "td":
            self._in_header = values.get("class") == "header"

    def handle_data(self, data: str) -> None:
        if self._in_body and data.strip():
            self.texts.append(data.strip())
        if self._in_header:
            self.header += data

    def first(self, tag: str, class_: str) -> dict[str, str]:
        return next(a for t, a in self.elements if t == tag and a.get("class") == class_)


def test_the_sequence_logo_and_colour_head_its_emails(shop: Path) -> None:
    welcome = Page(shop / "sales-process" / "welcome.en.html")
    logo = welcome.first("img", "logo")
    assert logo["src"] == "https://www.example.com/logo.png"
    assert (logo["alt"], logo["width"], logo["height"]) == ("Exempel AB", "160", "40")
    assert welcome.header.strip() == ""
    # The sequence's colour, not nurture.toml's.
    assert "solid #0f766e" in welcome.first("table", "container")["style"]
    offer = Page(shop / "sales-process" / "offer.en.html")
    assert "background-color: #0f766e" in offer.first("a", "button")["style"]
    assert "#aa0000" not in (shop / "sales-process" / "offer.en.html").read_text(encoding="utf-8")


def test_a_sequence_without_a_brand_takes_the_one_in_nurture_toml(shop: Path) -> None:
    welcome = Page(shop / "plain" / "welcome.en.html")
    assert welcome.header.strip() == "Berg Design"
    assert not any(tag == "img" for tag, _ in welcome.elements)
    assert "solid #aa0000" in welcome.first("table", "container")["style"]


def test_the_preheader_is_the_first_text_of_the_body(shop: Path) -> None:
    welcome = Page(shop / "plain" / "welcome.en.html")
    assert welcome.texts[0].startswith(WELCOME_PREHEADER)  # then invisible filler
    assert welcome.texts[1] == "Berg Design"  # the header comes after it
    hidden = welcome.first("div", "preheader")["style"]
    assert "display: none" in hidden and "mso-hide: all" in hidden


def test_dark_mode_and_phone_screens_are_declared(shop: Path) -> None:
    path = shop / "sales-process" / "welcome.en.html"
    page = Page(path)
    metas = {a.get("name"): a.get("content") for t, a in page.elements if t == "meta"}
    assert metas["color-scheme"] == metas["supported-color-schemes"] == "light dark"
    assert metas["viewport"] == "width=device-width, initial-scale=1"
    html = path.read_text(encoding="utf-8")
    assert ":root { color-scheme: light dark;" in html
    dark = html.split("@media (prefers-color-scheme: dark)")[1].split("</style>")[0]
    assert ".content, .content h1, .content h2 { color: #e6e7ea !important; }" in dark
    assert "@media (max-width: 620px)" in html
    assert "max-width: 600px" in page.first("table", "container")["style"]


def test_the_text_part_reads_links_as_label_then_url(shop: Path) -> None:
    text = (shop / "sales-process" / "welcome.en.txt").read_text(encoding="utf-8")
    assert f"First, the checklist ({CHECKLIST})." in text
    assert "Unsubscribe (http://localhost:8000/unsubscribe/" in text
    assert "](" not in text and "**" not in text and "##" not in text
