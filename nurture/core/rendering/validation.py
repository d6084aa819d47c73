"""Checking a sequence's emails before they are sent: ``nurture validate``.

Every step is rendered for every sample subscriber in every locale the
templates offer; the footer, every link and the offer link are checked. A
template that is empty, or an ``.html`` one that does not extend the layout,
is refused before that (:func:`check`).

:func:`sparse_warnings` renders every step once more for a subscriber who gave
only an email address, and warns where a subject, a preheader or the first
line of the body shows an empty value (``Hi ,``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace

from jinja2 import nodes

from nurture.core.model import Sequence
from nurture.core.rendering.compiled import KeyPath, RenderFailure, RenderPlan
from nurture.core.rendering.links import Links, examine_footer, hrefs, link_problem, offer_url
from nurture.core.rendering.loader import LAYOUT
from nurture.core.rendering.message import RenderedEmail
from nurture.core.rendering.placeholders import EMPTY_MARK
from nurture.core.rendering.templates import TemplateLibrary, text_key
from nurture.core.subscriber import Subscriber
from nurture.errors import Diagnostic

Positions = Mapping[KeyPath, tuple[int, int]] | Callable[[KeyPath], tuple[int, int]]


def check(
    library: TemplateLibrary,
    sequence: Sequence,
    subscribers: list[Subscriber],
    links: Links,
    postal_address: str,
    sequence_file: str,
    *,
    positions: Positions | None = None,
) -> list[Diagnostic]:
    """Render every step for every sample subscriber in every locale; list the problems.

    ``positions`` maps a key path such as ``("steps", 2, "template")`` to its
    (line, column) in ``sequence_file``; ``LoadedSequence.positions.of`` fits.
    Without samples, one made-up subscriber is used.
    """

    def at(key: KeyPath) -> tuple[int, int]:
        return _position(positions, key)

    found: dict[Diagnostic, None] = {}  # ordered, without repeats
    samples = subscribers or [Subscriber(email="sample@example.com", name="Sam Sample")]
    locales = library.locales_for(sequence)
    for index, step in enumerate(sequence.steps):
        try:
            library.plan(step.template, None, sequence.locale)
        except RenderFailure as failure:
            key = ("steps", index, "template")
            found[Diagnostic(sequence_file, *at(key), failure.diagnostic.message)] = None
            continue
        offer_link = None
        if step.offer is not None:
            offer_link = offer_url(step.offer.checkout_url, campaign=sequence.id, content=step.id)
        for locale in locales:
            structure = _structure_problems(library, step.template, locale, sequence.locale)
            if structure:
                found.update(dict.fromkeys(structure))
                continue  # rendering it would only add noise (a missing footer)
            for sample in samples:
                try:
                    email, plan = library.render_with_plan(
                        sequence,
                        step,
                        replace(sample, locale=locale),
                        links,
                        postal_address,
                        check_footer=False,
                    )
                except RenderFailure as failure:
                    problem = failure.diagnostic
                    if failure.key is not None:
                        problem = Diagnostic(sequence_file, *at(failure.key), problem.message)
                    found[problem] = None
                    continue
                for problem in _email_problems(
                    library, plan, email, links, postal_address, offer_link
                ):
                    found[problem] = None
    return list(found)


def _email_problems(
    library: TemplateLibrary,
    plan: RenderPlan,
    email: RenderedEmail,
    links: Links,
    postal_address: str,
    offer_link: str | None,
) -> list[Diagnostic]:
    problems: list[Diagnostic] = []
    footer = examine_footer(email.html, links, postal_address)
    if footer is not None:  # the layout's, once: not at each template that uses it
        where = library.footer_place(plan, unseen_link=footer.unseen_link)
        problems.append(Diagnostic(*where, footer.message))
    targets = hrefs(email.html)
    for href in dict.fromkeys(targets):
        problem = link_problem(href, links)
        if problem:
            for place in library.link_places(plan, href):
                problems.append(Diagnostic(*place, problem))
    if offer_link is not None and offer_link not in targets:
        message = (
            "the offer email does not link to the offer: link to {{ offer.url }} "
            "(the checkout address with tracking added)"
        )
        problems.append(Diagnostic(plan.source, 1, 1, message))
    return problems


def _position(positions: Positions | None, key: KeyPath) -> tuple[int, int]:
    if positions is None:
        return 1, 1
    if isinstance(positions, Mapping):  # the deepest key it knows
        for end in range(len(key), 0, -1):
            if key[:end] in positions:
                return positions[key[:end]]
        return 1, 1
    return positions(key)


_COMMENTS = re.compile(r"{#.*?#}", re.S)
EXTENDS_LAYOUT = f'{{% extends "{LAYOUT}" %}}'


def _structure_problems(
    library: TemplateLibrary, template: str, locale: str, default_locale: str
) -> list[Diagnostic]:
    """An empty body, or an ``.html`` body that is not put into the layout: the
    email would be only the footer (or only the body, without the footer)."""
    try:
        plan = library.plan(template, locale, default_locale)
    except RenderFailure:
        return []  # reported by the render with the step's key
    parsed = library.body_structure(plan)
    if parsed is None:
        return []  # unreadable or a syntax error: the render says where
    source, tree = parsed
    if not _COMMENTS.sub("", source).strip():
        return [
            Diagnostic(
                plan.source, 1, 1,
                "the template is empty: the email would be only the footer; write "
                "the email here, or remove the step",
            )
        ]  # fmt: skip
    if plan.markdown:
        return []  # put into the layout for you
    if tree.find(nodes.Extends) is None:
        return [
            Diagnostic(
                plan.source, 1, 1,
                f"an .html template must start with {EXTENDS_LAYOUT} and put the email "
                "inside {% block content %} ... {% endblock %} (the layout adds the "
                "unsubscribe link and the postal address)",
            )
        ]  # fmt: skip
    content = next((b for b in tree.find_all(nodes.Block) if b.name == "content"), None)
    if content is None or not _has_output(content):
        line = content.lineno if content is not None else 1
        return [
            Diagnostic(
                plan.source, line, 1,
                "the email is empty: write it inside {% block content %} ... "
                "{% endblock %} (outside a block, an extending template shows nothing)",
            )
        ]  # fmt: skip
    return []


def _has_output(block: nodes.Block) -> bool:
    """Whether the block writes anything but white space."""
    for output in block.find_all(nodes.Output):
        for node in output.nodes:
            if not isinstance(node, nodes.TemplateData) or node.data.strip():
                return True
    return False


SPARSE_SUBSCRIBER = Subscriber(email="sparse.sample@example.com")
"""Someone who gave only an email address: no name, no tags, no attributes."""

_FALLBACK = (
    'write {{ subscriber.first_name or "there" }}, or put that part inside '
    "{% if subscriber.first_name %} ... {% endif %}"
)


def sparse_warnings(
    library: TemplateLibrary,
    sequence: Sequence,
    links: Links,
    postal_address: str,
    sequence_file: str,
    *,
    positions: Positions | None = None,
) -> list[Diagnostic]:
    """Where a subscriber with only an email address would read an empty value
    (``Your trial is live,``, ``Hi ,``) in a subject, a preheader or the first
    line of an email, or would not get the email at all (a render that fails)."""
    found: dict[Diagnostic, None] = {}
    who = "a subscriber with only an email address (no name, no attributes)"
    for index, step in enumerate(sequence.steps):
        for locale in library.locales_for(sequence):
            person = replace(SPARSE_SUBSCRIBER, locale=locale)
            try:
                lines = library.first_lines(sequence, step, person, links, postal_address)
            except RenderFailure as failure:
                problem = failure.diagnostic
                if failure.key is not None:
                    where = _position(positions, failure.key)
                    problem = Diagnostic(sequence_file, *where, problem.message)
                message = f"for {who}, this email cannot be rendered: {problem.message}"
                found[replace(problem, message=message)] = None
                continue
            for field in ("subject", "preheader"):
                text = getattr(lines, field)
                value = getattr(step, field)
                if EMPTY_MARK not in text or value is None:
                    continue
                key = ("steps", index, field, *text_key(value, lines.plan.locale, sequence.locale))
                message = (
                    f"the {field} of step {step.id!r} reads {_shown(text)!r} for {who}: "
                    f"a value in it is empty; {_FALLBACK}"
                )
                found[Diagnostic(sequence_file, *_position(positions, key), message)] = None
            if EMPTY_MARK in lines.first_line:
                file, line = library.locate(lines.plan, _needles(lines.first_line))
                message = (
                    f"the first line of step {step.id!r} reads {_shown(lines.first_line)!r} "
                    f"for {who}: a value in it is empty; {_FALLBACK}"
                )
                found[Diagnostic(file, line, 1, message)] = None
    return list(found)


def _shown(text: str) -> str:
    return " ".join(text.replace(EMPTY_MARK, "").split())


def _needles(line: str) -> tuple[str, ...]:
    """Text around the empty value, to find the template line it is written on."""
    before = line.split(EMPTY_MARK)[0].strip()
    words = before.split()
    return (words[-1],) if words else ("{{",)
