"""Links in an email: the subscriber's own URLs, the tracked offer link, the
compliance footer, and the rules every link must follow.

Pure functions of strings. The caller (the shell) builds :class:`Links` from the
base URL and signed tokens; rendering puts them into the template context and
the ``List-*`` headers, checks the footer of every email
(:func:`footer_problem`, :func:`with_text_footer`), and validation checks every
link (:func:`hrefs`, :func:`link_problem`) and that a reader sees the footer
(:func:`examine_footer`).
"""

from __future__ import annotations

import html as html_lib
from contextlib import suppress
from dataclasses import dataclass
from email.header import Header
from functools import lru_cache
from html.parser import HTMLParser
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit, urlunsplit

from markupsafe import escape

UTM_SOURCE = "nurture"
UTM_MEDIUM = "email"
REF_PARAMETER = "nurture_ref"


@dataclass(frozen=True)
class Links:
    """The per-subscriber URLs of one email, built by the caller (signed tokens)."""

    unsubscribe_url: str
    preferences_url: str
    unsubscribe_mailto: str | None = None
    """``mailto:`` URI for unsubscribing by email, when a mailbox takes requests."""
    offer_ref: str | None = None
    """The signed ``nurture_ref`` the offer link carries (the send it came from),
    so a checkout can report the purchase back."""

    def offer(self, url: str) -> str:
        """The offer link ``url`` with this email's ``nurture_ref``, when it has one."""
        return url if self.offer_ref is None else with_query(url, REF_PARAMETER, self.offer_ref)


@lru_cache(maxsize=4096)
def offer_url(checkout_url: str, *, campaign: str, content: str) -> str:
    """``checkout_url`` with UTM parameters naming the sequence and the step.

    The existing query string is kept byte for byte (a shop may sign it), and the
    fragment is kept. A ``utm_*`` parameter the marketer already put in the URL
    wins over ours: it is an explicit choice, ours is only a default.
    """
    parts = urlsplit(checkout_url)
    present = {key for key, _ in parse_qsl(parts.query, keep_blank_values=True)}
    ours = [
        (key, value)
        for key, value in (
            ("utm_source", UTM_SOURCE),
            ("utm_medium", UTM_MEDIUM),
            ("utm_campaign", campaign),
            ("utm_content", content),
        )
        if key not in present
    ]
    query = "&".join(part for part in (parts.query, urlencode(ours)) if part)
    return urlunsplit(parts._replace(query=query))


_SLOT = "nurtureslot"


@lru_cache(maxsize=4096)
def _query_slot(url: str, name: str) -> tuple[str, str]:
    """``url`` split around where the value of ``name`` goes, once per URL: the
    offer link gets a different ``nurture_ref`` in every email, and splitting
    and joining the URL each time cost more than signing the ref."""
    parts = urlsplit(url)
    query = "&".join(part for part in (parts.query, urlencode([(name, _SLOT)])) if part)
    head = urlunsplit(parts._replace(query=query, fragment=""))
    return head[: -len(_SLOT)], f"#{parts.fragment}" if parts.fragment else ""


def with_query(url: str, name: str, value: str) -> str:
    """``url`` with ``name=value`` added to its query (kept byte for byte), before
    any fragment."""
    before, after = _query_slot(url, name)
    return before + quote_plus(value) + after


def list_headers(
    links: Links, *, sequence_id: str, sequence_name: str, sender_email: str, step_id: str
) -> dict[str, str]:
    """The headers the pipeline (never a template) adds to every email.

    - ``List-Unsubscribe`` with the https URL and ``List-Unsubscribe-Post:
      List-Unsubscribe=One-Click``: RFC 8058 one-click unsubscribe, which Gmail and
      Yahoo require of bulk senders; the mail client POSTs to the URL, so the
      unsubscribe endpoint must accept POST without a confirmation page. (RFC 2369
      defines the header itself.) When a mailbox takes requests, its ``mailto:``
      URI follows the https one, for clients that only unsubscribe by email
      (RFC 2369 section 2: a list of URIs, in order of preference).
    - ``List-Id``: RFC 2919, so mail clients can filter and users can recognise the
      series. The id lives under the *sender's* domain, which the business
      controls (RFC 2919 section 3) and which, unlike the base URL, is the same in
      development and production, so filters keep working.
    - ``X-Nurture-Sequence`` / ``X-Nurture-Step``: lets provider events and
      bounces be traced back to a step without parsing the body.
    """
    unsubscribe = f"<{links.unsubscribe_url}>"
    if links.unsubscribe_mailto:
        unsubscribe += f", <{links.unsubscribe_mailto}>"
    return {
        "List-Unsubscribe": unsubscribe,
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Id": list_id(sequence_id, sequence_name, sender_email),
        "X-Nurture-Sequence": sequence_id,
        "X-Nurture-Step": step_id,
    }


@lru_cache(maxsize=256)
def list_id(sequence_id: str, sequence_name: str, sender_email: str) -> str:
    """The RFC 2919 ``List-Id`` value: ``<name> <sequence-id.nurture.sender-domain>``."""
    domain = sender_email.rpartition("@")[2].lower()
    with suppress(UnicodeError):  # not a valid IDN: keep it, the header still parses
        domain = domain.encode("idna").decode("ascii")
    return f"{_phrase(sequence_name)} <{sequence_id}.nurture.{domain}>"


_SPECIALS = frozenset('()<>@,;:\\".[]')


def _phrase(text: str) -> str:
    """An RFC 5322 phrase for ``text``: encoded word, quoted string or atoms.

    Pre-encoded here (rather than left to the email package) because the same
    headers go to HTTP APIs such as SendGrid's, which expect ASCII values.
    """
    text = " ".join(text.replace('"', "'").split())
    if not text.isascii():
        # RFC 2047 section 5 (3) allows encoded words in a phrase.
        return Header(text, "utf-8").encode(maxlinelen=998)
    if any(char in _SPECIALS for char in text):
        return '"' + text.replace("\\", "\\\\") + '"'
    return text


class _HrefCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("a", "area"):
            for name, value in attrs:
                if name == "href" and value is not None:
                    self.found.append(value.strip())


def hrefs(html: str) -> list[str]:
    """Every link target (``<a href>``, ``<area href>``) in ``html``, unescaped."""
    collector = _HrefCollector()
    collector.feed(html)
    collector.close()
    return collector.found


def link_problem(href: str, links: Links) -> str | None:
    """Why ``href`` must not be in an email, or None when it is fine.

    Only absolute https links and ``mailto:`` are allowed: plain http is
    rewritten or flagged by mail clients and leaks the click, and a relative link
    has nothing to be relative to in an inbox. The subscriber's own unsubscribe
    and preferences URLs are exempt because the base URL is ``http://localhost``
    in development.
    """
    if href in (links.unsubscribe_url, links.preferences_url):
        return None
    parts = urlsplit(href)
    scheme = parts.scheme.lower()
    if scheme == "mailto":
        return None
    if scheme == "https" and parts.netloc:
        return None
    if scheme == "http":
        return f"link {href!r} is not https: use an https:// address"
    return f"link {href!r} is not an absolute https:// address"


def _appears(html: str, value: str, before: str = "", after: str = "") -> bool:
    """Whether ``value`` is in ``html``, escaped as rendering splices values in
    (markupsafe) or as html5ever serializes them (pages css-inline parsed)."""
    if f"{before}{escape(value)}{after}" in html:
        return True
    amp = value.replace("&", "&amp;").replace("\xa0", "&nbsp;")
    text, attribute = amp.replace("<", "&lt;").replace(">", "&gt;"), amp.replace('"', "&quot;")
    return f"{before}{text}{after}" in html or f"{before}{attribute}{after}" in html


def footer_problem(html: str, links: Links, postal_address: str) -> str | None:
    """What the HTML lacks of the legally required footer, or None.

    Every marketing email must carry an unsubscribe link and the sender's
    postal address (CAN-SPAM, 15 U.S.C. 7704(a)(5); the EU ePrivacy Directive,
    article 13, requires the opt-out in every message). Checked on every email,
    not only by ``nurture validate``: it is two substring searches.
    """
    missing = []
    if not _appears(html, links.unsubscribe_url, 'href="', '"'):
        missing.append("no unsubscribe link (an href equal to unsubscribe_url)")
    if not _appears(html, postal_address):
        missing.append("no postal address")
    if not missing:
        return None
    return f"the email has {' and '.join(missing)}: the layout's footer must show them"


_HIDING_STYLES = {"display": ("none",), "visibility": ("hidden", "collapse"), "mso-hide": ("all",)}
_NOT_SHOWN = frozenset({"script", "style", "template", "title"})
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
     "source", "track", "wbr"}
)  # fmt: skip
_CLOSES_P = frozenset(
    {"address", "article", "aside", "blockquote", "div", "dl", "fieldset", "footer", "form",
     "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "main", "nav", "ol", "p", "pre",
     "section", "table", "ul"}
)  # fmt: skip
# An element these open ends the one of the same group still open, up to a boundary:
# a second <li> ends the first, but not the <li> of the list around its own list.
_SIBLINGS = (
    (frozenset({"li"}), frozenset({"ul", "ol"})),
    (frozenset({"dt", "dd"}), frozenset({"dl"})),
    (frozenset({"tr"}), frozenset({"table", "thead", "tbody", "tfoot"})),
    (frozenset({"td", "th"}), frozenset({"tr", "table"})),
    (frozenset({"thead", "tbody", "tfoot"}), frozenset({"table"})),
    (frozenset({"option"}), frozenset({"select", "datalist"})),
)


def _hidden_by(attrs: list[tuple[str, str | None]]) -> bool:
    """Whether an element with ``attrs`` is hidden from readers: the ``hidden``
    attribute, or ``display: none``, ``visibility: hidden`` or (Outlook's)
    ``mso-hide: all`` in its style."""
    for name, value in attrs:
        if name == "hidden":
            return True
        if name == "style" and value:
            for declaration in value.split(";"):
                prop, _, setting = declaration.partition(":")
                words = setting.lower().replace("!important", " ").split()
                if words and words[0] in _HIDING_STYLES.get(prop.strip().lower(), ()):
                    return True
    return False


class _FooterScan(HTMLParser):
    """What a reader of the HTML sees of the footer: whether the unsubscribe
    link is shown, hidden or inside a comment, and the text shown."""

    def __init__(self, unsubscribe_url: str, postal_address: str) -> None:
        super().__init__(convert_charrefs=True)
        self.url = unsubscribe_url
        self.postal = postal_address
        self.open: list[tuple[str, bool]] = []  # (tag, hidden) of the open elements
        self.link: set[str] = set()  # "shown", "hidden", "comment"
        self.postal_commented = False
        self.shown: list[str] = []  # the text a reader sees

    def _hidden(self) -> bool:
        return bool(self.open) and self.open[-1][1]

    def _close_implied(self, tag: str) -> None:
        if tag in _CLOSES_P:
            self._close_to("p", frozenset({"button", "td", "th", "li", "table"}))
        for group, boundary in _SIBLINGS:
            if tag in group:
                for sibling in group:
                    self._close_to(sibling, boundary)

    def _close_to(self, tag: str, boundary: frozenset[str]) -> None:
        for index in range(len(self.open) - 1, -1, -1):
            name = self.open[index][0]
            if name == tag:
                del self.open[index:]
                return
            if name in boundary:
                return

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._close_implied(tag)
        hidden = self._hidden() or _hidden_by(attrs) or tag in _NOT_SHOWN
        if tag in ("a", "area"):
            href = next((v for k, v in attrs if k == "href" and v is not None), None)
            if href is not None and href.strip() == self.url:
                self.link.add("hidden" if hidden else "shown")
        if tag not in _VOID:
            self.open.append((tag, hidden))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID and self.open and self.open[-1][0] == tag:
            self.open.pop()

    def handle_endtag(self, tag: str) -> None:
        self._close_to(tag, frozenset())

    def handle_data(self, data: str) -> None:
        if not self._hidden():
            self.shown.append(data)

    def handle_comment(self, data: str) -> None:
        text = html_lib.unescape(data)
        if self.url in text:
            self.link.add("comment")
        if self.postal in text:
            self.postal_commented = True


@dataclass(frozen=True)
class FooterProblem:
    """What a reader would miss of the legally required footer."""

    message: str
    unseen_link: bool
    """The unsubscribe link is written but no reader sees it (hidden, or inside
    an HTML comment): it is where to look, rather than the footer."""


def examine_footer(html: str, links: Links, postal_address: str) -> FooterProblem | None:
    """:func:`footer_problem` as a reader sees the HTML, for ``nurture validate``
    (which the registry also runs before a sequence goes live): an unsubscribe
    link or postal address inside an HTML comment, or hidden (on the element or
    one around it: the ``hidden`` attribute, ``display: none``, ``visibility:
    hidden``, ``mso-hide: all``), does not count. It parses the HTML: too slow
    for every email sent, where :func:`footer_problem` looks for the text."""
    scan = _FooterScan(links.unsubscribe_url, postal_address)
    scan.feed(html)
    scan.close()
    missing: list[str] = []
    unseen: list[str] = []
    if "shown" not in scan.link:
        if "hidden" in scan.link:
            unseen.append(
                "the unsubscribe link is hidden (display: none, visibility: hidden, mso-hide: all "
                "or the hidden attribute, on it or an element around it), so no reader sees it"
            )
        elif "comment" in scan.link:
            unseen.append(
                "the unsubscribe link is inside an HTML comment (<!-- -->), so no reader sees it"
            )
        else:
            missing.append("no unsubscribe link (an href equal to unsubscribe_url)")
    shown = " ".join("".join(scan.shown).split())
    if " ".join(postal_address.split()) not in shown:
        if _appears(html, postal_address) or scan.postal_commented:
            unseen.append(
                "the postal address is hidden or inside an HTML comment, so no reader sees it"
            )
        else:
            missing.append("no postal address")
    if not missing and not unseen:
        return None
    parts = [*([f"the email has {' and '.join(missing)}"] if missing else []), *unseen]
    message = f"{'; '.join(parts)}: the layout's footer must show them"
    return FooterProblem(message, unseen_link=bool(scan.link) and "shown" not in scan.link)


def with_text_footer(text: str, links: Links, postal_address: str, unsubscribe_label: str) -> str:
    """``text`` ending in a newline, with a standard footer when it lacks the
    unsubscribe URL or the postal address (a hand-written .txt may)."""
    text = text.rstrip() + "\n"
    if links.unsubscribe_url in text and postal_address in text:
        return text
    return f"{text}\n-- \n{unsubscribe_label}: {links.unsubscribe_url}\n{postal_address}\n"
