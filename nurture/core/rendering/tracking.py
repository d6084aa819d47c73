"""Click and open tracking in a rendered email: links rewritten, a pixel added.

Pure functions of strings. The caller gives :func:`track` a way to make the
tracked URL of one target (``/c/{token}``, signed by the shell) and, for open
tracking, the pixel's URL. Only absolute ``http(s)`` links are tracked: the
subscriber's own unsubscribe and preferences links, ``mailto:``, ``tel:`` and
jumps inside the email (``#top``) are left as they are.

The HTML of every email has gone through css-inline, whose serializer
(html5ever) always writes attribute values in double quotes with ``"`` and
``&`` escaped, and spliced values are escaped the same way; so one regular
expression finds every ``<a href>`` and ``<area href>`` exactly, much faster than
parsing the page again per email. The text part shows links as ``label (URL)``
(derived from the HTML) or as the author wrote them (a ``.txt`` sibling): every
whole occurrence of a tracked target is replaced there too.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable, Collection
from dataclasses import replace

from markupsafe import escape

from nurture.core.rendering.message import RenderedEmail

# <a ...> or <area ...> up to and including href="...": attributes before it
# are name="value" pairs (values never hold a raw double quote) or bare names.
_HREF = re.compile(
    r'(<(?:a|area)\b(?:\s+[^\s"\'>/=]+(?:="[^"]*")?)*?\s+href=")([^"]*)(")', re.IGNORECASE
)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def trackable(url: str, untracked: Collection[str]) -> bool:
    """Whether a link to ``url`` goes through click tracking."""
    if url in untracked:
        return False
    scheme = url.partition(":")[0].lower()
    return scheme in ("http", "https") and url[len(scheme) : len(scheme) + 3] == "://"


def track_links(
    html: str, text: str, tracked: Callable[[str], str], untracked: Collection[str]
) -> tuple[str, str, dict[str, str]]:
    """``html`` and ``text`` with every trackable link replaced by ``tracked(url)``.

    Returns the new HTML, the new text and the replacements made (original URL
    to tracked URL). ``tracked`` is called once per distinct URL.
    """
    made: dict[str, str] = {}

    def swap(found: re.Match[str]) -> str:
        url = html_lib.unescape(found.group(2)).strip()
        if not trackable(url, untracked):
            return found.group(0)
        target = made.get(url)
        if target is None:
            target = made[url] = tracked(url)
        return f"{found.group(1)}{escape(target)}{found.group(3)}"

    html = _HREF.sub(swap, html)
    if made:
        text = _text_with(text, made)
    return html, text, made


def _text_with(text: str, made: dict[str, str]) -> str:
    # Longest first, so a URL that starts another is not replaced inside it.
    # Plain searches, not a regular expression built per email: the offer
    # link differs in every email, and compiling costs more than the search.
    for url in sorted((url for url in made if url in text), key=len, reverse=True):
        out: list[str] = []
        start = 0
        while (at := text.find(url, start)) >= 0:
            end = at + len(url)
            out += (text[start:at], made[url]) if _whole(text, at, end) else (text[start:end],)
            start = end
        out.append(text[start:])
        text = "".join(out)
    return text


def _whole(text: str, at: int, end: int) -> bool:
    """Whether ``text[at:end]`` is a whole URL: not inside a longer word or path,
    and followed by space, a closing bracket or quote, sentence punctuation
    before space, or the end."""
    if at > 0 and (text[at - 1].isalnum() or text[at - 1] in "_/"):
        return False
    if end == len(text) or text[end].isspace() or text[end] in ")]>\"'":
        return True
    return text[end] in ".,;:!?" and (end + 1 == len(text) or text[end + 1].isspace())


def pixel_tag(url: str) -> str:
    """The invisible 1×1 image of open tracking."""
    return (
        f'<img src="{escape(url)}" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0">'
    )


def with_pixel(html: str, url: str) -> str:
    """``html`` with the open-tracking pixel at the end of its body."""
    tag = pixel_tag(url)
    ends = list(_BODY_END.finditer(html))
    if not ends:
        return html + tag
    at = ends[-1].start()
    return html[:at] + tag + html[at:]


def track(
    email: RenderedEmail,
    *,
    tracked: Callable[[str], str] | None,
    untracked: Collection[str],
    pixel_url: str | None = None,
) -> RenderedEmail:
    """``email`` with its links tracked (when ``tracked`` is given) and an open
    pixel (when ``pixel_url`` is)."""
    html, text = email.html, email.text
    if tracked is not None:
        html, text, _ = track_links(html, text, tracked, untracked)
    if pixel_url is not None:
        html = with_pixel(html, pixel_url)
    if html is email.html and text is email.text:
        return email
    return replace(email, html=html, text=text)
